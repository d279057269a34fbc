//! Following a run (`berth job run --wait`) and reading its tasks' output
//! (`--wait`, `berth job logs`).
//!
//! `--wait` polls `GET /v1/jobs/{id}/runs/{run}` every [`POLL`] until
//! the run's status is final, and exits with [`exit_for`] of it; a
//! framework it cannot reach (restarting, failing over) is asked again for
//! [`UNREACHABLE_PATIENCE`]. Meanwhile, each task the run JSON names with
//! an agent (`tasks[].id`, `tasks[].agentId`) is looked up in the masters'
//! task list (its agent's address and its framework id, as `berth service
//! logs` does) and its stdout and stderr are streamed from the agent
//! ([`crate::task_log`]) to ours, each line prefixed with `[INDEX]` when
//! the run has several indexes. When the masters cannot be asked, that is
//! said once and the run is still followed to its end. Once it ended, the
//! streams get [`DRAIN`] to deliver the rest of the output.

use std::collections::{BTreeMap, BTreeSet};
use std::io::Write;
use std::time::Duration;

use anyhow::{Context as _, bail};
use berth_proto as pb;
use serde_json::Value;
use tokio::task::JoinHandle;

use super::{JobsOpts, ask, render};
use crate::task_log::{LogSource, stream_log_from};

/// How often the run is asked for.
const POLL: Duration = Duration::from_millis(500);
/// How long `--wait` asks again a framework it cannot reach (a restart or
/// a failover of the framework while the run goes on).
const UNREACHABLE_PATIENCE: Duration = Duration::from_secs(60);
/// How long the output streams may go on after the run ended.
const DRAIN: Duration = Duration::from_secs(10);

/// What `berth job run --wait` follows.
pub(crate) struct Follow<'a> {
    pub(crate) opts: &'a JobsOpts,
    pub(crate) job: &'a str,
    pub(crate) run: &'a str,
    /// Where the tasks are found for their output; `None` with
    /// `--no-logs`.
    pub(crate) masters: Option<Vec<String>>,
    pub(crate) timeout: Duration,
}

/// The exit code of a run with status `status` (see
/// [`super::RUN_EXIT_CODES_HELP`]); `None` while it has not ended.
pub(crate) fn exit_for(status: &str, run: &Value) -> Option<u8> {
    match status {
        "SUCCESS" => Some(0),
        "FAILED" => Some(
            render::exit_code(run)
                .and_then(|c| u8::try_from(c).ok())
                .filter(|c| *c != 0)
                .unwrap_or(1),
        ),
        "MISSED" | "SKIPPED" => Some(1),
        _ => None,
    }
}

/// One task of a run, as its JSON names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct TaskRef {
    pub(crate) id: String,
    pub(crate) index: u64,
    pub(crate) attempt: u64,
    pub(crate) agent_id: String,
}

/// The run's tasks, in its order.
pub(crate) fn tasks_of(run: &Value) -> Vec<TaskRef> {
    run["tasks"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|t| {
            Some(TaskRef {
                id: t["id"].as_str().filter(|s| !s.is_empty())?.to_owned(),
                index: t["index"].as_u64().unwrap_or(0),
                attempt: t["attempt"].as_u64().unwrap_or(0),
                agent_id: t["agentId"].as_str().unwrap_or("").to_owned(),
            })
        })
        .collect()
}

/// Whether the run has several indexes: its lines are then prefixed.
pub(crate) fn several_indexes(run: &Value) -> bool {
    let tasks = tasks_of(run);
    let completions = [
        &run["completions"],
        &run["run"]["completions"],
        &run["spec"]["completions"],
    ]
    .iter()
    .find_map(|v| v.as_u64());
    completions.is_some_and(|c| c > 1) || tasks.iter().any(|t| t.index > 0)
}

/// The latest attempt of each index (or of `index` alone).
pub(crate) fn latest_attempts(run: &Value, index: Option<u32>) -> anyhow::Result<Vec<TaskRef>> {
    let id = run["id"].as_str().unwrap_or("?");
    let mut latest: BTreeMap<u64, TaskRef> = BTreeMap::new();
    for t in tasks_of(run) {
        let newer = latest.get(&t.index).is_none_or(|l| t.attempt >= l.attempt);
        if newer {
            latest.insert(t.index, t);
        }
    }
    if latest.is_empty() {
        bail!("run {id} has no tasks yet (it waits for resources, or was not run)");
    }
    match index {
        None => Ok(latest.into_values().collect()),
        Some(i) => match latest.remove(&u64::from(i)) {
            Some(t) => Ok(vec![t]),
            None => {
                let have: Vec<String> = latest.keys().map(ToString::to_string).collect();
                bail!(
                    "run {id} has no task with index {i} (its indexes: {})",
                    have.join(", ")
                )
            }
        },
    }
}

/// Writes whole lines to `out`, each behind `prefix` (bytes as they come
/// when the prefix is empty).
pub(crate) struct Prefixed<W: Write> {
    out: W,
    prefix: String,
    partial: Vec<u8>,
}

impl<W: Write> Prefixed<W> {
    pub(crate) fn new(out: W, prefix: String) -> Self {
        Prefixed {
            out,
            prefix,
            partial: Vec::new(),
        }
    }

    /// Writes a last line that did not end, ending it.
    pub(crate) fn finish(&mut self) -> std::io::Result<()> {
        if self.partial.is_empty() {
            return Ok(());
        }
        let mut line = self.prefix.as_bytes().to_vec();
        line.append(&mut self.partial);
        line.push(b'\n');
        self.out.write_all(&line)?;
        self.out.flush()
    }
}

impl<W: Write> Write for Prefixed<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        if self.prefix.is_empty() {
            self.out.write_all(buf)?;
            return Ok(buf.len());
        }
        let mut rest = buf;
        let mut lines = Vec::new();
        while let Some(end) = rest.iter().position(|&b| b == b'\n') {
            lines.extend_from_slice(self.prefix.as_bytes());
            lines.append(&mut self.partial);
            lines.extend_from_slice(&rest[..=end]);
            rest = &rest[end + 1..];
        }
        self.partial.extend_from_slice(rest);
        if !lines.is_empty() {
            self.out.write_all(&lines)?;
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.out.flush()
    }
}

/// Where a task's log is read: its agent's address and its framework.
struct Located {
    agent_address: String,
    framework_id: String,
    task_id: String,
}

/// Finds the tasks in the masters' list (active and recently completed).
async fn locate(masters: &[String], ids: &[&str]) -> anyhow::Result<BTreeMap<String, Located>> {
    let client = crate::ClientOpts {
        master: masters.to_vec(),
        json: false,
    };
    let tasks = crate::admin::list_tasks(&client, true, None)
        .await
        .context("cannot ask the masters where the run's tasks run")?;
    Ok(tasks
        .into_iter()
        .filter(|t| ids.contains(&t.task_id.as_str()))
        .map(|t| {
            (
                t.task_id.clone(),
                Located {
                    agent_address: t.agent_address,
                    framework_id: t.framework_id,
                    task_id: t.task_id,
                },
            )
        })
        .collect())
}

/// Every agent's address, by agent id (agents without one left out).
async fn agent_addresses(
    client: &crate::ClientOpts,
) -> anyhow::Result<std::collections::HashMap<String, String>> {
    Ok(crate::client::operator(client)
        .await?
        .list_agents(pb::Empty {})
        .await
        .map_err(|e| anyhow::anyhow!("{}", e.message()))?
        .into_inner()
        .agents
        .into_iter()
        .filter_map(|a| {
            let address = a.info.map(|i| i.address).filter(|x| !x.is_empty())?;
            Some((a.id, address))
        })
        .collect())
}

/// Streams one task's `files` (each to its writer), prefixed.
async fn stream_task(
    at: Located,
    files: Vec<(pb::LogFile, Box<dyn Write + Send>)>,
    prefix: String,
    follow: bool,
) -> anyhow::Result<()> {
    let source = LogSource {
        agent_address: &at.agent_address,
        framework_id: &at.framework_id,
        task_id: &at.task_id,
    };
    let streams = files.into_iter().map(|(file, out)| {
        let prefix = prefix.clone();
        async move {
            let mut out = Prefixed::new(out, prefix);
            let result = stream_log_from(&source, file, 0, follow, &mut out).await;
            let finished = out.finish().map_err(anyhow::Error::from);
            result.and(finished)
        }
    });
    for result in futures::future::join_all(streams).await {
        result.with_context(|| format!("the output of task {}", at.task_id))?;
    }
    Ok(())
}

fn prefix_of(t: &TaskRef, several: bool) -> String {
    if several {
        format!("[{}] ", t.index)
    } else {
        String::new()
    }
}

/// `berth job logs`: the tasks' stdout (or stderr), one after the other,
/// or all at once when followed.
///
/// A task the masters no longer list (they keep only the latest completed
/// tasks) is read from the agent the run recorded (`agentId`), as long as
/// that agent keeps its sandbox, with `framework_id` (the job framework's).
pub(crate) async fn print_logs(
    masters: &[String],
    tasks: &[TaskRef],
    follow: bool,
    stderr: bool,
    framework_id: Option<&str>,
) -> anyhow::Result<()> {
    let ids: Vec<&str> = tasks.iter().map(|t| t.id.as_str()).collect();
    let mut found = locate(masters, &ids).await?;
    if let Some(fw) = framework_id
        && tasks.iter().any(|t| !found.contains_key(&t.id))
    {
        let client = crate::ClientOpts {
            master: masters.to_vec(),
            json: false,
        };
        let agents = agent_addresses(&client)
            .await
            .context("cannot ask the masters for the agents' addresses")?;
        for t in tasks {
            if found.contains_key(&t.id) {
                continue;
            }
            if let Some(address) = agents.get(&t.agent_id) {
                found.insert(
                    t.id.clone(),
                    Located {
                        agent_address: address.clone(),
                        framework_id: fw.to_owned(),
                        task_id: t.id.clone(),
                    },
                );
            }
        }
    }
    let several = tasks.len() > 1;
    let file = if stderr {
        pb::LogFile::Stderr
    } else {
        pb::LogFile::Stdout
    };
    let mut streams = Vec::new();
    for t in tasks {
        let Some(at) = found.remove(&t.id) else {
            bail!(
                "cannot find task {}: the masters no longer list it and its agent is unknown or gone (a task waiting for resources has no agent yet)",
                t.id
            );
        };
        let out: Box<dyn Write + Send> = Box::new(crate::out::Stdout);
        let stream = stream_task(at, vec![(file, out)], prefix_of(t, several), follow);
        if follow {
            streams.push(stream);
        } else {
            stream.await?;
        }
    }
    for result in futures::future::join_all(streams).await {
        result?;
    }
    Ok(())
}

/// The streams started by `--wait`.
struct Streams {
    masters: Vec<String>,
    started: BTreeSet<String>,
    running: Vec<JoinHandle<()>>,
}

impl Streams {
    /// Starts streaming the tasks that have an agent and are not streamed
    /// yet; `Err` when the masters cannot be asked.
    async fn start_new(&mut self, run: &Value) -> anyhow::Result<()> {
        let several = several_indexes(run);
        let new: Vec<TaskRef> = tasks_of(run)
            .into_iter()
            .filter(|t| !t.agent_id.is_empty() && !self.started.contains(&t.id))
            .collect();
        if new.is_empty() {
            return Ok(());
        }
        let ids: Vec<&str> = new.iter().map(|t| t.id.as_str()).collect();
        let mut found = locate(&self.masters, &ids).await?;
        for t in new {
            // Not listed yet: asked again at the next poll.
            let Some(at) = found.remove(&t.id) else {
                continue;
            };
            if t.attempt > 0 {
                eprintln!(
                    "berth: index {} restarted (attempt {}): task {}",
                    t.index, t.attempt, t.id
                );
            }
            self.started.insert(t.id.clone());
            let files: Vec<(pb::LogFile, Box<dyn Write + Send>)> = vec![
                (pb::LogFile::Stdout, Box::new(crate::out::Stdout)),
                (pb::LogFile::Stderr, Box::new(std::io::stderr())),
            ];
            let stream = stream_task(at, files, prefix_of(&t, several), true);
            self.running.push(tokio::spawn(async move {
                if let Err(e) = stream.await {
                    eprintln!("berth: {e:#}");
                }
            }));
        }
        Ok(())
    }

    /// Lets the streams deliver the rest, for [`DRAIN`] at most.
    async fn drain(mut self) {
        let all = futures::future::join_all(self.running.iter_mut());
        if tokio::time::timeout(DRAIN, all).await.is_err() {
            eprintln!(
                "berth: the tasks' output did not end within {} s of the run's end; not waiting for the rest",
                DRAIN.as_secs()
            );
        }
        for handle in self.running {
            handle.abort();
        }
    }
}

/// Follows a run to its end; its exit code ([`exit_for`], or 2 when
/// `timeout` passed first).
pub(crate) async fn wait(f: Follow<'_>) -> anyhow::Result<u8> {
    let deadline = tokio::time::Instant::now() + f.timeout;
    let path = format!("/v1/jobs/{}/runs/{}", f.job, f.run);
    let mut streams = f.masters.map(|masters| Streams {
        masters,
        started: BTreeSet::new(),
        running: Vec::new(),
    });
    let mut last = String::new();
    let mut unreachable_since: Option<tokio::time::Instant> = None;
    loop {
        let v = match ask(f.opts, "GET", &path, None).await {
            Ok(v) => {
                unreachable_since = None;
                v
            }
            // Not a refusal: the framework restarting or failing over.
            Err(e)
                if e.downcast_ref::<super::Refused>().is_none()
                    && unreachable_since.is_none_or(|t| t.elapsed() < UNREACHABLE_PATIENCE) =>
            {
                if unreachable_since.is_none() {
                    eprintln!(
                        "berth: {e:#}; trying again for {} s",
                        UNREACHABLE_PATIENCE.as_secs()
                    );
                    unreachable_since = Some(tokio::time::Instant::now());
                }
                tokio::time::sleep(POLL).await;
                continue;
            }
            Err(e) => return Err(e),
        };
        let status = v["status"].as_str().unwrap_or("UNKNOWN").to_owned();
        if status != last {
            last.clone_from(&status);
            if exit_for(&status, &v).is_none() {
                eprintln!("berth: run {} is {status}", f.run);
            }
        }
        if let Some(s) = streams.as_mut()
            && let Err(e) = s.start_new(&v).await
        {
            eprintln!("berth: {e:#}; following the run without its output");
            streams = None;
        }
        if let Some(code) = exit_for(&status, &v) {
            if let Some(s) = streams {
                s.drain().await;
            }
            if f.opts.json {
                super::print_json(&v)?;
            }
            let reason = v["reason"]
                .as_str()
                .filter(|r| !r.is_empty())
                .map(|r| format!(": {r}"))
                .unwrap_or_default();
            let exit = render::exit_code(&v)
                .map(|c| format!(" (exit code {c})"))
                .unwrap_or_default();
            eprintln!("berth: run {} {status}{reason}{exit}", f.run);
            return Ok(code);
        }
        if tokio::time::Instant::now() >= deadline {
            eprintln!(
                "berth: run {} is still {status} after {} s; it goes on (`berth job kill {} {}` stops it)",
                f.run,
                f.timeout.as_secs(),
                f.job,
                f.run
            );
            return Ok(2);
        }
        tokio::time::sleep(POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_run_exits_with_its_result() {
        let failed = json!({"status": "FAILED", "exitCode": 3});
        assert_eq!(exit_for("FAILED", &failed), Some(3));
        let from_task = json!({"tasks": [{"exitCode": 0}, {"exitCode": 42}]});
        assert_eq!(exit_for("FAILED", &from_task), Some(42));
        assert_eq!(exit_for("FAILED", &json!({})), Some(1), "no code: 1");
        assert_eq!(exit_for("FAILED", &json!({"exitCode": 0})), Some(1));
        assert_eq!(exit_for("FAILED", &json!({"exitCode": 300})), Some(1));
        assert_eq!(exit_for("FAILED", &json!({"exitCode": -9})), Some(1));
        assert_eq!(exit_for("SUCCESS", &json!({})), Some(0));
        assert_eq!(exit_for("MISSED", &json!({})), Some(1));
        assert_eq!(exit_for("SKIPPED", &json!({})), Some(1));
        for s in ["INITIAL", "STARTING", "ACTIVE", "UNKNOWN"] {
            assert_eq!(exit_for(s, &json!({})), None, "{s}");
        }
    }

    fn run_with(tasks: Value) -> Value {
        json!({"id": "r1", "tasks": tasks})
    }

    #[test]
    fn the_latest_attempt_of_each_index_is_read() {
        let run = run_with(json!([
            {"id": "j.r1.0.0", "index": 0, "attempt": 0, "agentId": "a1"},
            {"id": "j.r1.1.0", "index": 1, "attempt": 0},
            {"id": "j.r1.0.1", "index": 0, "attempt": 1, "agentId": "a2"},
            {"index": 2},
        ]));
        let ids = |v: Vec<TaskRef>| v.into_iter().map(|t| t.id).collect::<Vec<_>>();
        assert_eq!(
            ids(latest_attempts(&run, None).unwrap()),
            ["j.r1.0.1", "j.r1.1.0"]
        );
        assert_eq!(ids(latest_attempts(&run, Some(1)).unwrap()), ["j.r1.1.0"]);
        let e = latest_attempts(&run, Some(5)).unwrap_err().to_string();
        assert_eq!(e, "run r1 has no task with index 5 (its indexes: 0, 1)");
        let e = latest_attempts(&run_with(json!([])), None).unwrap_err();
        assert!(e.to_string().starts_with("run r1 has no tasks yet"), "{e}");
        assert!(several_indexes(&run));
        assert!(!several_indexes(&run_with(
            json!([{"id": "t", "index": 0}])
        )));
        assert!(several_indexes(
            &json!({"completions": 3, "tasks": [{"id": "t", "index": 0}]})
        ));
    }

    #[test]
    fn lines_are_prefixed_whole() {
        let mut p = Prefixed::new(Vec::new(), "[1] ".into());
        p.write_all(b"one\ntw").unwrap();
        p.write_all(b"o\n\nthree").unwrap();
        p.finish().unwrap();
        assert_eq!(
            String::from_utf8(p.out).unwrap(),
            "[1] one\n[1] two\n[1] \n[1] three\n"
        );
        let mut p = Prefixed::new(Vec::new(), String::new());
        p.write_all(b"as is").unwrap();
        p.finish().unwrap();
        assert_eq!(p.out, b"as is");
    }
}
