//! `berth service logs ID [--instance INSTANCE] [--follow] [--stderr]
//! [--tail N]`: an app's instance's stdout or stderr.
//!
//! The service framework names the app's instances (`GET
//! /v2/apps/{id}/tasks`: an instance's id is its task's id) and its
//! framework id (`GET /v2/info`); the master's operator API gives the
//! task's agent address (`ListTasks`, as `berth task log`); the log is
//! read from the agent with `Agent.ReadLog` ([`crate::task_log`], which
//! rides out agent restarts).
//!
//! Without `--instance`, an app with one instance shows it; with several,
//! the newest running one (staging ones last), saying on stderr which one
//! and how to choose another. `--tail N` reads the file to its end and
//! keeps only the last N lines (in memory: N lines, plus a last line not
//! ended yet), then with `--follow` goes on from there.

use std::collections::VecDeque;
use std::io::Write;

use anyhow::{Context as _, bail};
use berth_proto as pb;
use serde_json::Value;

use crate::task_log::{LogSource, stream_log_from};

/// One instance of the app as `/v2/apps/{id}/tasks` shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Instance {
    /// Its (task) id.
    pub(crate) id: String,
    /// Not running yet.
    pub(crate) staging: bool,
    /// When it was launched (RFC 3339: sorts as text).
    pub(crate) staged_at: String,
}

/// The instances of a `{"tasks": [...]}` answer.
pub(crate) fn instances_of(tasks: &Value) -> Vec<Instance> {
    tasks["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(Instance {
                id: t["id"].as_str()?.to_owned(),
                staging: t["state"].as_str() == Some("TASK_STAGING"),
                staged_at: t["stagedAt"].as_str().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// The instance to show: `given` (an id, or a unique prefix of one), or
/// the newest running one; with it, a note for stderr when the choice
/// was made among several.
pub(crate) fn choose(
    app: &str,
    list: &[Instance],
    given: Option<&str>,
) -> anyhow::Result<(String, Option<String>)> {
    let ids = || {
        let mut ids: Vec<&str> = list.iter().map(|i| i.id.as_str()).collect();
        ids.sort_unstable();
        ids.join(", ")
    };
    if let Some(given) = given {
        if given.is_empty() {
            bail!("the instance id is empty");
        }
        if list.iter().any(|i| i.id == given) {
            return Ok((given.to_owned(), None));
        }
        let matching: Vec<&Instance> = list.iter().filter(|i| i.id.starts_with(given)).collect();
        return match matching.as_slice() {
            [one] => Ok((one.id.clone(), None)),
            [] if list.is_empty() => bail!("app {app} has no instances"),
            [] => bail!(
                "app {app} has no instance {} (its instances: {})",
                berth_proto::quoted(given),
                ids()
            ),
            many => bail!(
                "{} names {} instances of app {app}; give more of the id",
                berth_proto::quoted(given),
                many.len()
            ),
        };
    }
    let best = list
        .iter()
        .max_by(|a, b| (!a.staging, &a.staged_at).cmp(&(!b.staging, &b.staged_at)));
    let Some(best) = best else {
        bail!("app {app} has no instances");
    };
    let note = (list.len() > 1).then(|| {
        format!(
            "app {app} has {} instances; showing {} (choose one with --instance: {})",
            list.len(),
            best.id,
            ids()
        )
    });
    Ok((best.id.clone(), note))
}

/// Keeps the last `n` lines written to it (a last line without its
/// newline counts as one).
#[derive(Debug)]
pub(crate) struct Tail {
    n: usize,
    lines: VecDeque<Vec<u8>>,
    partial: Vec<u8>,
}

impl Tail {
    pub(crate) fn new(n: usize) -> Tail {
        Tail {
            n,
            lines: VecDeque::new(),
            partial: Vec::new(),
        }
    }

    /// The kept lines, in order.
    pub(crate) fn into_bytes(mut self) -> Vec<u8> {
        if !self.partial.is_empty() {
            self.lines.push_back(std::mem::take(&mut self.partial));
        }
        while self.lines.len() > self.n {
            self.lines.pop_front();
        }
        self.lines.into_iter().flatten().collect()
    }
}

impl Write for Tail {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let mut rest = buf;
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            let mut line = std::mem::take(&mut self.partial);
            line.extend_from_slice(&rest[..=end]);
            rest = &rest[end + 1..];
            self.lines.push_back(line);
            if self.lines.len() > self.n {
                self.lines.pop_front();
            }
        }
        self.partial.extend_from_slice(rest);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What `berth service logs` was asked.
#[derive(Debug)]
pub(crate) struct LogsArgs {
    pub(crate) app: String,
    pub(crate) instance: Option<String>,
    pub(crate) follow: bool,
    pub(crate) stderr: bool,
    pub(crate) tail: Option<usize>,
    pub(crate) master: Vec<String>,
}

/// Runs `berth service logs`; `get` asks the service framework's HTTP API
/// (a path, answered with its JSON or Marathon's error).
pub(crate) async fn logs<F, Fut>(args: LogsArgs, get: F) -> anyhow::Result<()>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<Value>>,
{
    let app = format!("/{}", args.app.trim_matches('/'));
    let tasks = get(format!("/v2/apps{app}/tasks")).await?;
    let (task_id, note) = choose(&app, &instances_of(&tasks), args.instance.as_deref())?;
    if let Some(note) = note {
        eprintln!("berth: {note}");
    }
    let info = get("/v2/info".to_owned()).await?;
    let Some(framework_id) = info["frameworkId"].as_str().map(str::to_owned) else {
        bail!("the service framework has not registered with the masters yet; try again");
    };
    let client = crate::ClientOpts {
        master: args.master,
        json: false,
    };
    let tasks = crate::admin::list_tasks(&client, true, Some(framework_id.clone()))
        .await
        .context("cannot ask the masters where the instance runs")?;
    let Some(task) = tasks.iter().find(|t| t.task_id == task_id) else {
        bail!(
            "instance {task_id} has no task on the cluster yet (it is waiting for an offer); try again"
        );
    };
    let source = LogSource {
        agent_address: &task.agent_address,
        framework_id: &task.framework_id,
        task_id: &task.task_id,
    };
    let file = if args.stderr {
        pb::LogFile::Stderr
    } else {
        pb::LogFile::Stdout
    };
    let mut out: Box<dyn Write + Send> = Box::new(crate::out::Stdout);
    let start = match args.tail {
        None => 0,
        Some(n) => {
            let mut tail = Tail::new(n);
            let end = stream_log_from(&source, file, 0, false, &mut tail).await?;
            out.write_all(&tail.into_bytes())
                .and_then(|()| out.flush())
                .context("cannot write the instance's output")?;
            if !args.follow {
                return Ok(());
            }
            end
        }
    };
    stream_log_from(&source, file, start, args.follow, &mut out).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn inst(id: &str, staging: bool, at: &str) -> Instance {
        Instance {
            id: id.into(),
            staging,
            staged_at: at.into(),
        }
    }

    #[test]
    fn the_tail_keeps_the_last_lines() {
        let mut t = Tail::new(2);
        t.write_all(b"one\ntw").unwrap();
        t.write_all(b"o\nthree\nfo").unwrap();
        assert_eq!(t.into_bytes(), b"three\nfo");
        let mut t = Tail::new(2);
        t.write_all(b"one\ntwo\nthree\n").unwrap();
        assert_eq!(t.into_bytes(), b"two\nthree\n");
        let mut t = Tail::new(0);
        t.write_all(b"one\ntwo").unwrap();
        assert!(t.into_bytes().is_empty());
        let mut t = Tail::new(5);
        t.write_all(b"a\n\nb\n").unwrap();
        assert_eq!(t.into_bytes(), b"a\n\nb\n", "blank lines count");
    }

    #[test]
    fn tasks_are_read_from_marathons_json() {
        let v = json!({"tasks": [
            {"id": "a.1", "state": "TASK_RUNNING", "stagedAt": "2026-01-01T00:00:00.000Z"},
            {"id": "a.2", "state": "TASK_STAGING", "stagedAt": "2026-01-02T00:00:00.000Z"},
            {"state": "TASK_RUNNING"},
        ]});
        assert_eq!(
            instances_of(&v),
            [
                inst("a.1", false, "2026-01-01T00:00:00.000Z"),
                inst("a.2", true, "2026-01-02T00:00:00.000Z")
            ]
        );
    }

    #[test]
    fn the_newest_running_instance_is_chosen_and_said() {
        let list = [
            inst("web.b", false, "2026-01-02T00:00:00.000Z"),
            inst("web.a", false, "2026-01-01T00:00:00.000Z"),
            inst("web.c", true, "2026-01-03T00:00:00.000Z"),
        ];
        let (id, note) = choose("/web", &list, None).unwrap();
        assert_eq!(id, "web.b");
        let note = note.unwrap();
        assert!(
            note.contains("3 instances") && note.contains("web.a, web.b, web.c"),
            "{note}"
        );
        let (id, note) = choose("/web", &list[1..2], None).unwrap();
        assert_eq!((id.as_str(), note), ("web.a", None));
        let e = choose("/web", &[], None).unwrap_err().to_string();
        assert_eq!(e, "app /web has no instances");
    }

    #[test]
    fn a_given_instance_is_an_id_or_a_unique_prefix() {
        let list = [
            inst("web.ab", false, ""),
            inst("web.ac", false, ""),
            inst("web.b", false, ""),
        ];
        assert_eq!(choose("/web", &list, Some("web.ac")).unwrap().0, "web.ac");
        assert_eq!(choose("/web", &list, Some("web.b")).unwrap().0, "web.b");
        let e = choose("/web", &list, Some("web.a"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("names 2 instances"), "{e}");
        let e = choose("/web", &list, Some("db")).unwrap_err().to_string();
        assert!(
            e.contains("no instance \"db\"") && e.contains("web.ab, web.ac, web.b"),
            "{e}"
        );
        assert!(choose("/web", &list, Some("")).is_err());
    }
}
