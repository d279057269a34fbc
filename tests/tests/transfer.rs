//! The agent's fetcher and uploader end to end: an in-process cluster with
//! a process-containerizer agent, and a small HTTP file server on
//! 127.0.0.1 that serves the fetched files and receives the uploads.
//!
//! Covered: fetched URIs (extracted, executable, optional, a missing one
//! failing the task), uploaded outputs (globs, excludes, `when`, a dead
//! port), a kill during a stalled fetch, and fetches and uploads riding
//! out a file server that is stopped, restarted, answers 503 and breaks a
//! download off (a 403 is not retried).

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

/// A cluster whose agent retries failed transfers for 2 s (a dead port
/// fails soon).
async fn setup(name: &str) -> anyhow::Result<Setup> {
    setup_with(name, Duration::from_secs(2)).await
}

async fn setup_with(name: &str, transfer_retry: Duration) -> anyhow::Result<Setup> {
    init_logging();
    let mut cluster = Cluster::start(&[]).await?;
    cluster
        .add_agent_with("cpus:4;mem:2048", |c| {
            c.fetch_timeout = Duration::from_secs(120);
            c.upload_timeout = Duration::from_secs(30);
            c.transfer_retry = transfer_retry;
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
                vec![berth_sdk::OfferId::new(offers[0].id.clone())?],
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
    assert_eq!(end.reason(), pb::TaskReason::FetchFailed);
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
    // Tried again for the agent's 2 s, then given up.
    assert!(
        dead_result.error.contains("(gave up after"),
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
    s.fw.kill(&berth_sdk::TaskId::new("stalled").unwrap(), None)
        .await?;
    let end = s.wait_end("stalled").await?;
    let took = started.elapsed();
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskKilled,
        "{end:?}"
    );
    assert_eq!(end.reason(), pb::TaskReason::KilledByRequest);
    assert!(end.message.contains("while fetching"), "{}", end.message);
    // The fetch timeout is 120 s; a kill that waited for it would take that.
    assert!(took < Duration::from_secs(60), "the kill took {took:?}");
    assert!(!s.sandbox("stalled").join("ran").exists());
    Ok(())
}

/// Reads a sandbox file, empty when it is not there yet.
fn read_text(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

/// A file server that is stopped (connections refused), then answers 503
/// and breaks a download off halfway does not fail the tasks that use it
/// meanwhile: their fetches and uploads are tried again until it is back,
/// the fetched file is whole and each upload arrives whole. A definite
/// refusal (403) is not tried again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transfers_ride_out_a_restarting_file_server() -> anyhow::Result<()> {
    let mut s = setup_with("outage", Duration::from_secs(60)).await?;
    let data: Vec<u8> = (0..200_000u32).flat_map(u32::to_le_bytes).collect();
    s.server.serve("data.bin", data.clone());
    s.server.stop().await;

    let mut fetcher = task("fetcher", "wc -c < data.bin > size.txt")?;
    if let Some(c) = fetcher.command.as_mut() {
        c.uris = vec![uri(s.server.url("/files/data.bin"), "data.bin", false)];
    }
    fetcher.outputs = vec![output(
        s.server.url("/upload/fetcher"),
        &["size.txt"],
        &[],
        When::Always,
    )];
    let mut maker = task("maker", "echo made > made.txt")?;
    maker.outputs = vec![output(
        s.server.url("/upload/maker"),
        &["made.txt"],
        &[],
        When::OnSuccess,
    )];
    s.launch(vec![fetcher, maker]).await?;

    // Both meet the closed port and say, once, that they try again.
    let deadline = Instant::now() + Duration::from_secs(30);
    for (task, what) in [
        (
            "fetcher",
            format!("berth: fetching {}", s.server.url("/files/data.bin")),
        ),
        (
            "maker",
            format!(
                "berth: uploading outputs[0] to {}",
                s.server.url("/upload/maker")
            ),
        ),
    ] {
        let path = s.sandbox(task).join("stderr");
        while !read_text(&path).contains("trying again for up to 60s") {
            anyhow::ensure!(
                Instant::now() < deadline,
                "{task} never said it retries: {}",
                read_text(&path)
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let log = read_text(&path);
        assert!(log.contains(&what), "{log}");
        assert!(log.contains("Connection refused"), "{log}");
    }
    // The outage lasts a few attempts; then the server is back, but the
    // next two requests get 503 and the next download breaks off halfway.
    tokio::time::sleep(Duration::from_secs(3)).await;
    s.server
        .answer_next(axum::http::StatusCode::SERVICE_UNAVAILABLE, 2);
    s.server.cut_next(1);
    s.server.restart().await?;

    let end = s.wait_end("fetcher").await?;
    let stderr = read_text(&s.sandbox("fetcher").join("stderr"));
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskFinished,
        "{end:?}\n{stderr}"
    );
    assert_eq!(stderr.matches("trying again").count(), 1, "{stderr}");
    let fetched = std::fs::read(s.sandbox("fetcher").join("data.bin"))?;
    assert!(
        fetched == data,
        "the fetched file differs ({} bytes)",
        fetched.len()
    );
    let leftovers: Vec<_> = std::fs::read_dir(s.sandbox("fetcher"))?
        .filter_map(Result::ok)
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".berth-fetch"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    assert!(end.outputs[0].ok, "{:?}", end.outputs);
    let end = s.wait_end("maker").await?;
    assert_eq!(
        berth_tests::task_state(&end),
        pb::TaskState::TaskFinished,
        "{end:?}"
    );
    assert!(end.outputs[0].ok, "{:?}", end.outputs);

    let uploads = s.server.uploads();
    let size = tar_gz_entries(&uploads["fetcher"].body)?;
    assert_eq!(size[0].2, b"800000\n");
    let made = tar_gz_entries(&uploads["maker"].body)?;
    assert_eq!(made[0].2, b"made\n");
    // The download was asked for more than once: refused, 503 or cut, and
    // whole at last.
    let gets = s
        .server
        .requests()
        .iter()
        .filter(|r| *r == "/files/data.bin")
        .count();
    assert!(gets >= 2, "{gets} downloads");

    // A definite refusal is reported at once, not tried again.
    s.server.answer_next(axum::http::StatusCode::FORBIDDEN, 1);
    let mut refused = task("refused", "echo x > x.txt")?;
    refused.outputs = vec![output(
        s.server.url("/upload/refused"),
        &["x.txt"],
        &[],
        When::Always,
    )];
    let started = Instant::now();
    s.launch(vec![refused]).await?;
    let end = s.wait_end("refused").await?;
    assert_eq!(
        end.outputs[0].error, "HTTP 403 Forbidden",
        "{:?}",
        end.outputs
    );
    assert!(started.elapsed() < Duration::from_secs(20));
    let stderr = read_text(&s.sandbox("refused").join("stderr"));
    assert!(!stderr.contains("trying again"), "{stderr}");
    assert!(!s.server.uploads().contains_key("refused"));
    Ok(())
}
