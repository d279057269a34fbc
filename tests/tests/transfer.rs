//! The agent's fetcher and uploader end to end: an in-process cluster with
//! a process-containerizer agent, and a small HTTP file server on
//! 127.0.0.1 that serves the fetched files and receives the uploads.

use std::path::PathBuf;
use std::time::{Duration, Instant};

use berth_proto as pb;
use berth_proto::output_upload::When;
use berth_sdk::{Event, Events, Framework, FrameworkConfig};
use berth_tests::files::{FileServer, tar_gz, tar_gz_entries};
use berth_tests::{Cluster, init_logging};

struct Setup {
    cluster: Cluster,
    fw: Framework,
    events: Events,
    server: FileServer,
    /// Updates read while waiting for another task's.
    backlog: Vec<pb::TaskStatus>,
}

async fn setup(name: &str) -> anyhow::Result<Setup> {
    init_logging();
    let mut cluster = Cluster::start(&[]).await?;
    cluster
        .add_agent_with("cpus:4;mem:2048", |c| {
            c.fetch_timeout = Duration::from_secs(120);
            c.upload_timeout = Duration::from_secs(30);
        })
        .await?;
    cluster.wait_agents(1, Duration::from_secs(10)).await?;
    let config = FrameworkConfig::new(name).failover_timeout(Duration::from_secs(60));
    let (fw, events) = berth_sdk::subscribe(vec![cluster.master_addr()], config).await?;
    Ok(Setup {
        cluster,
        fw,
        events,
        server: FileServer::start().await?,
        backlog: Vec::new(),
    })
}

impl Setup {
    fn sandbox(&self, task: &str) -> PathBuf {
        self.cluster
            .dir
            .path()
            .join("agent-0/sandboxes")
            .join(self.fw.id())
            .join(task)
    }

    /// Launches `tasks` on the next offer (which must hold them all).
    async fn launch(&mut self, tasks: Vec<pb::TaskInfo>) -> anyhow::Result<()> {
        let offers =
            berth_tests::next_matching(&mut self.events, Duration::from_secs(15), |e| match e {
                Event::Offers(o) if !o.is_empty() => Some(o),
                _ => None,
            })
            .await?;
        let launched = self
            .fw
            .accept(
                vec![offers[0].id.clone()],
                tasks.clone(),
                Some(Duration::ZERO),
            )
            .await?;
        anyhow::ensure!(launched.len() == tasks.len(), "launched {launched:?}");
        Ok(())
    }

    /// Waits for the first update of `task` that `pick` accepts.
    async fn wait_update(
        &mut self,
        task: &str,
        mut pick: impl FnMut(&pb::TaskStatus) -> bool,
    ) -> anyhow::Result<pb::TaskStatus> {
        if let Some(i) = self
            .backlog
            .iter()
            .position(|st| st.task_id == task && pick(st))
        {
            return Ok(self.backlog.remove(i));
        }
        let backlog = &mut self.backlog;
        berth_tests::next_matching(&mut self.events, Duration::from_secs(60), |e| match e {
            Event::Update(st) if st.task_id == task => pick(&st).then_some(st),
            Event::Update(st) => {
                backlog.push(st);
                None
            }
            _ => None,
        })
        .await
    }

    async fn wait_end(&mut self, task: &str) -> anyhow::Result<pb::TaskStatus> {
        self.wait_update(task, |st| berth_tests::task_state(st).is_terminal())
            .await
    }
}

fn task(id: &str, shell: &str) -> anyhow::Result<pb::TaskInfo> {
    Ok(berth_sdk::shell_task(id, id, shell, "cpus:0.1;mem:32")?)
}

fn uri(url: String, output_path: &str, extract: bool) -> pb::FetchUri {
    pb::FetchUri {
        url,
        output_path: output_path.into(),
        extract,
        ..Default::default()
    }
}

fn output(url: String, paths: &[&str], exclude: &[&str], when: When) -> pb::OutputUpload {
    pb::OutputUpload {
        url,
        paths: paths.iter().map(ToString::to_string).collect(),
        exclude: exclude.iter().map(ToString::to_string).collect(),
        when: when as i32,
        name: String::new(),
    }
}

/// A port nothing listens on.
fn dead_port() -> anyhow::Result<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(l.local_addr()?.port())
}

/// A task reads what was fetched and extracted before it started (an
/// executable script, a tar.gz unpacked into a directory, a file:// copy),
/// an optional missing URI is skipped; a required URI that is missing fails
/// its task with FETCH_FAILED and the command never runs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetched_uris_are_in_the_sandbox_before_the_command_starts() -> anyhow::Result<()> {
    let mut s = setup("fetch").await?;
    s.server.serve(
        "src.tar.gz",
        tar_gz(&[
            ("dir/hello.txt", b"hello from the archive\n", 0o644),
            ("bin/run", b"#!/bin/sh\necho ran-from-archive\n", 0o755),
        ]),
    );
    s.server
        .serve("tool.sh", b"#!/bin/sh\necho tool-ran\n".to_vec());
    let local = tempfile::tempdir()?;
    let local_file = local.path().join("notes.txt");
    std::fs::write(&local_file, "local notes\n")?;

    let mut reader = task(
        "reader",
        "./tool.sh && src/bin/run && cat src/dir/hello.txt etc/notes.txt && test ! -e cache",
    )?;
    let mut tool = uri(s.server.url("/files/tool.sh"), "", false);
    tool.executable = true;
    let mut cache = uri(s.server.url("/files/cache.tgz"), "cache", true);
    cache.optional = true;
    if let Some(c) = reader.command.as_mut() {
        c.uris = vec![
            uri(s.server.url("/files/src.tar.gz"), "src", true),
            tool,
            cache,
            uri(
                format!("file://{}", local_file.display()),
                "etc/notes.txt",
                false,
            ),
        ];
    }
    let mut missing = task("missing", "touch ran")?;
    if let Some(c) = missing.command.as_mut() {
        c.uris = vec![uri(s.server.url("/files/nope.tgz"), "", true)];
    }
    s.launch(vec![reader, missing]).await?;

    let end = s.wait_end("reader").await?;
    let sandbox = s.sandbox("reader");
    let stderr = std::fs::read_to_string(sandbox.join("stderr"))?;
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskFinished,
        "{end:?}\nstderr: {stderr}"
    );
    let stdout = std::fs::read_to_string(sandbox.join("stdout"))?;
    assert_eq!(
        stdout,
        "tool-ran\nran-from-archive\nhello from the archive\nlocal notes\n"
    );
    assert!(
        stderr.contains(&format!(
            "berth: fetched {} to tool.sh (24 bytes)",
            s.server.url("/files/tool.sh")
        )),
        "{stderr}"
    );
    assert!(stderr.contains("extracted 2 entries"), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "berth: skipped optional {}: not found (HTTP 404 Not Found)",
            s.server.url("/files/cache.tgz")
        )),
        "{stderr}"
    );
    // The download itself is not left in the sandbox.
    let leftovers: Vec<_> = std::fs::read_dir(&sandbox)?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".berth-fetch"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");

    let end = s.wait_end("missing").await?;
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskFailed,
        "{end:?}"
    );
    assert_eq!(end.reason, "FETCH_FAILED");
    assert!(
        end.message.contains(&s.server.url("/files/nope.tgz")) && end.message.contains("404"),
        "{}",
        end.message
    );
    assert!(
        !s.sandbox("missing").join("ran").exists(),
        "the command must not run after a failed fetch"
    );
    let stderr = std::fs::read_to_string(s.sandbox("missing").join("stderr"))?;
    assert!(stderr.contains("berth: cannot fetch"), "{stderr}");
    Ok(())
}

/// Outputs whose `when` matches are archived (exactly the matched files,
/// excludes honoured) and uploaded before the terminal update, which
/// carries their results; an upload to a dead port is an error result, not
/// a change of state; outputs matching nothing report it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outputs_are_uploaded_when_their_when_matches() -> anyhow::Result<()> {
    let mut s = setup("upload").await?;
    let make = "mkdir -p build/tmp build/lib && echo app > build/app && echo junk > build/tmp/x.o \
                && echo lib > build/lib/l.so && ln -s app build/link && echo r > report.txt \
                && echo log > other.log";
    let dead = format!("http://127.0.0.1:{}/upload/dead", dead_port()?);
    let mut good = task("good", make)?;
    good.outputs = vec![
        pb::OutputUpload {
            name: "artifacts".into(),
            ..output(
                s.server.url("/upload/good-artifacts"),
                &["build/", "*.txt"],
                &["build/tmp", "**/*.so"],
                When::OnSuccess,
            )
        },
        output(
            s.server.url("/upload/good-on-failure"),
            &["**"],
            &[],
            When::OnFailure,
        ),
        output(dead.clone(), &["report.txt"], &[], When::Always),
    ];
    let mut bad = task("bad", &format!("{make} && exit 3"))?;
    bad.outputs = vec![
        output(
            s.server.url("/upload/bad-on-success"),
            &["**"],
            &[],
            When::OnSuccess,
        ),
        output(
            s.server.url("/upload/bad-on-failure"),
            &["*.log"],
            &[],
            When::OnFailure,
        ),
        output(
            s.server.url("/upload/bad-nothing"),
            &["nope/**"],
            &[],
            When::Always,
        ),
    ];
    s.launch(vec![good, bad]).await?;

    let end = s.wait_end("good").await?;
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskFinished,
        "{end:?}"
    );
    assert_eq!(end.outputs.len(), 2, "{:?}", end.outputs);
    let artifacts = &end.outputs[0];
    assert_eq!(artifacts.name, "artifacts");
    assert!(artifacts.ok, "{artifacts:?}");
    assert_eq!(artifacts.files, 3, "build/app, build/link, report.txt");
    let uploads = s.server.uploads();
    let up = uploads
        .get("good-artifacts")
        .ok_or_else(|| anyhow::anyhow!("no upload received: {uploads:?}"))?;
    assert_eq!(up.content_type, "application/gzip");
    assert_eq!(artifacts.bytes, up.body.len() as u64);
    let entries = tar_gz_entries(&up.body)?;
    let mut names: Vec<&str> = entries.iter().map(|(n, _, _)| n.as_str()).collect();
    names.sort_unstable();
    assert_eq!(
        names,
        [
            "build",
            "build/app",
            "build/lib",
            "build/link",
            "report.txt"
        ]
    );
    let app = entries.iter().find(|(n, _, _)| n == "build/app");
    assert_eq!(app.map(|(_, _, c)| c.as_slice()), Some(&b"app\n"[..]));
    let link = entries.iter().find(|(n, _, _)| n == "build/link");
    assert_eq!(link.map(|(_, k, _)| *k), Some(tar::EntryType::Symlink));
    assert!(!uploads.contains_key("good-on-failure"));
    let dead_result = &end.outputs[1];
    assert_eq!(dead_result.url, dead);
    assert!(!dead_result.ok);
    assert!(
        dead_result.error.contains("request failed"),
        "{dead_result:?}"
    );
    let stderr = std::fs::read_to_string(s.sandbox("good").join("stderr"))?;
    assert!(
        stderr.contains("berth: uploaded artifacts (3 files,"),
        "{stderr}"
    );
    assert!(
        stderr.contains("berth: cannot upload outputs[2]"),
        "{stderr}"
    );

    let end = s.wait_end("bad").await?;
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskFailed,
        "{end:?}"
    );
    assert_eq!(end.exit_code, Some(3));
    assert_eq!(end.outputs.len(), 2, "{:?}", end.outputs);
    assert!(end.outputs[0].ok, "{:?}", end.outputs[0]);
    assert_eq!(end.outputs[0].files, 1);
    assert!(!end.outputs[1].ok);
    assert_eq!(end.outputs[1].error, "no files matched");
    let uploads = s.server.uploads();
    assert!(!uploads.contains_key("bad-on-success"));
    assert!(!uploads.contains_key("bad-nothing"));
    let entries = tar_gz_entries(&uploads["bad-on-failure"].body)?;
    assert_eq!(
        entries
            .iter()
            .map(|(n, _, _)| n.as_str())
            .collect::<Vec<_>>(),
        ["other.log"]
    );
    Ok(())
}

/// A kill while the agent waits on a server that never answers cancels the
/// fetch: TASK_KILLED long before the fetch timeout, the command never ran.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kill_during_a_stalled_fetch_ends_the_task_killed() -> anyhow::Result<()> {
    let mut s = setup("stall").await?;
    let mut stalled = task("stalled", "touch ran")?;
    if let Some(c) = stalled.command.as_mut() {
        c.uris = vec![uri(s.server.url("/stall"), "x", false)];
    }
    s.launch(vec![stalled]).await?;
    let starting = s
        .wait_update("stalled", |st| {
            berth_tests::task_state(st) == pb::TaskState::TaskStarting
        })
        .await?;
    assert!(starting.message.contains("fetching"), "{starting:?}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !s.server.requests().iter().any(|r| r == "/stall") {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the fetch never reached the server"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let started = Instant::now();
    s.fw.kill("stalled", None).await?;
    let end = s.wait_end("stalled").await?;
    let took = started.elapsed();
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskKilled,
        "{end:?}"
    );
    assert_eq!(end.reason, "KILLED_BY_REQUEST");
    assert!(end.message.contains("while fetching"), "{}", end.message);
    // The fetch timeout is 120 s; a kill that waited for it would take that.
    assert!(took < Duration::from_secs(60), "the kill took {took:?}");
    assert!(!s.sandbox("stalled").join("ran").exists());
    Ok(())
}
