//! `berth ci run` through the real binary: bad input, logs cut at
//! `--max-log-bytes`, the progress display on a terminal; and `berth ci
//! serve` driven by the client commands (log cuts, auto-cancel, registered
//! repositories). The pipeline scenarios (artifacts, `needs`,
//! `parallel:matrix`, allowed failures, manual jobs, cancel, masked secrets,
//! Docker jobs) run the example repositories, in `ci_examples.rs`.
//!
//! Also: `berth ci serve` stopped by SIGTERM within its grace with a
//! `FollowJobLog` and a stuck request open, `berth ci logs` of a whole
//! pipeline (sections, and prefixed lines of two jobs running together),
//! `berth ci retry PIPELINE/JOB` of a failing job until the pipeline
//! passes, and `berth ci run --master` leaving no `berth-ci` framework
//! behind.

use berth_tests::{ChildProcess, free_port};
use common::ci::{berth, start_ci_daemon, start_dev};
use std::path::Path;
use std::process::{Command, Stdio};

mod common;
use common::ci::ci_run;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A repository with these files, committed on `main`.
fn repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    berth_tests::git_repo(files)
}

#[test]
fn bad_pipelines_and_repositories_exit_2_with_the_reason() {
    let bad = repo(&[(".gitlab-ci.yml", "build:\n  scirpt: make\n")]);
    let (code, out) = ci_run(bad.path(), &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("did you mean `script`"), "{out}");

    let plain = tempfile::tempdir().expect("tempdir");
    let (code, out) = ci_run(plain.path(), &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("is not a git repository"), "{out}");

    let empty = repo_without_pipeline();
    let (code, out) = ci_run(empty.path(), &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("has no .gitlab-ci.yml"), "{out}");

    let (code, out) = ci_run(empty.path(), &["--var", "BAD-NAME=x"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("is not a variable name"), "{out}");

    let short = repo(&[(".gitlab-ci.yml", "job:\n  script: [echo hi]\n")]);
    let (code, out) = ci_run(short.path(), &["--secret", "T=short"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(out.contains("need at least 8"), "{out}");

    let (code, out) = ci_run(short.path(), &["--play", "nope"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("--play \"nope\": .gitlab-ci.yml has no job"),
        "{out}"
    );

    for flag in ["--log-retention", "--source-retention"] {
        for (bad, why) in [("0", "at least 1 second"), ("soon", "not a duration")] {
            let (code, out) = berth(&["ci", "serve", flag, bad]);
            assert_eq!(code, Some(2), "{flag} {out}");
            assert!(out.contains(why), "{flag} {out}");
        }
    }
}

/// On a terminal, `berth ci run` draws one live line per job (indicatif)
/// instead of the plain lines: run under `script`, which gives it a
/// pseudo-terminal.
#[test]
fn on_a_terminal_progress_is_drawn_as_one_line_per_job() {
    if Command::new("script").arg("--version").output().is_err() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but `script` (util-linux) is missing"
        );
        eprintln!("skipping: no `script` command to give berth a terminal");
        return;
    }
    let repo = repo(&[(
        ".gitlab-ci.yml",
        "compile:\n  stage: build\n  script: [sleep 1, echo compiled]\nbroken:\n  stage: build\n  allow_failure: true\n  script: [exit 3]\nship:\n  stage: deploy\n  when: manual\n  script: [echo shipping]\n",
    )]);
    let command = format!(
        "{BERTH} ci run {} --no-docker --resources 'cpus:4;mem:4096;disk:10000'",
        repo.path().display()
    );
    let out = Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("script runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let lines = screen_lines(&text);
    // The bars' final lines: mark, name, stage, status, time.
    let finals = [
        ("✔ compile", "success"),
        ("! broken", "failed"),
        ("▶ ship", "manual"),
    ];
    for (start, status) in finals {
        assert!(
            lines
                .iter()
                .any(|l| l.starts_with(start) && l.contains(status)),
            "no line {start:?} … {status:?} in:\n{}",
            lines.join("\n")
        );
    }
    // While it ran: a spinner and the elapsed time.
    assert!(
        lines
            .iter()
            .any(|l| l.contains("compile") && l.contains("running") && l.ends_with('s')),
        "{}",
        lines.join("\n")
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("! broken") && l.contains("script_failure")),
        "the failure's reason: {}",
        lines.join("\n")
    );
    // Not the plain lines.
    assert!(!text.contains("  success    compile"), "{text}");
    assert!(
        text.contains("pipeline #1: success (with allowed failures)"),
        "{text}"
    );
}

fn repo_without_pipeline() -> tempfile::TempDir {
    repo(&[("README", "no pipeline\n")])
}

/// `berth ci serve` as a daemon next to `berth dev`, driven by the client
/// commands: trigger, logs -f, show, play, cancel, list; SIGTERM stops it.
#[test]
fn the_ci_daemon_is_driven_by_the_client_commands() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_dev, mut serve, server) = start_ci_daemon(dir.path());
    let repo = repo(&[(
        ".gitlab-ci.yml",
        "build:\n  stage: build\n  script:\n    - echo step one\n    - sleep 1\n    - echo step two\nship:\n  stage: deploy\n  when: manual\n  script: [echo shipping]\n",
    )]);
    let path = repo.path().to_str().expect("utf-8 path");
    let (code, out) = berth(&["ci", "trigger", path, "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("pipeline #1:"), "{out}");

    // -f follows the log until the job has ended.
    let (code, out) = berth(&["ci", "logs", "-f", "1", "build", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("step one"), "{out}");
    assert!(out.contains("step two"), "{out}");
    assert!(out.contains("Job succeeded"), "{out}");

    let (code, out) = berth(&["ci", "show", "1", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("build") && out.contains("success"), "{out}");
    assert!(out.contains("manual"), "{out}");

    let (code, out) = berth(&["ci", "play", "1", "ship", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    let (code, out) = berth(&["ci", "logs", "-f", "1", "ship", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("shipping"), "{out}");

    let (code, out) = berth(&["ci", "cancel", "99", "--server", &server]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no pipeline 99"), "{out}");
    // PIPELINE/JOB as for logs and retry; the job once and only once.
    let (code, out) = berth(&["ci", "play", "1/build", "--server", &server]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not a manual job"), "{out}");
    for (args, needle) in [
        (&["1"][..], "which job? give PIPELINE/JOB"),
        (&["1/ship", "ship"][..], "the job is given twice"),
    ] {
        let mut argv = vec!["ci", "play"];
        argv.extend_from_slice(args);
        argv.extend_from_slice(&["--server", &server]);
        let (code, out) = berth(&argv);
        assert_eq!(code, Some(2), "{out}");
        assert!(out.contains(needle), "{out}");
    }

    let (code, out) = berth(&["ci", "list", "--json", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    let list: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(list[0]["status"], "success", "{out}");

    // The gRPC API on the same port.
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        use berth_proto::ci::v1 as ci;
        let mut client = ci::ci_client::CiClient::connect(server.clone())
            .await
            .expect("gRPC on the API's port");
        let listed = client
            .list_pipelines(ci::ListPipelinesRequest::default())
            .await
            .expect("ListPipelines")
            .into_inner();
        assert_eq!(listed.pipelines.len(), 1);
        assert_eq!(listed.pipelines[0].status, "success");
        let shown = client
            .get_pipeline(ci::GetPipelineRequest { id: 1 })
            .await
            .expect("GetPipeline")
            .into_inner();
        let jobs: Vec<(&str, &str)> = shown
            .jobs
            .iter()
            .map(|j| (j.name.as_str(), j.status.as_str()))
            .collect();
        assert_eq!(jobs, [("build", "success"), ("ship", "success")]);
        let err = client
            .get_pipeline(ci::GetPipelineRequest { id: 99 })
            .await
            .expect_err("no pipeline 99");
        assert_eq!(err.code(), tonic::Code::NotFound);
        assert_eq!(err.message(), "no pipeline 99");
    });

    // SIGTERM: a graceful stop.
    let _ = Command::new("kill")
        .args(["-TERM", &serve.0.id().to_string()])
        .status();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(20);
    let status = loop {
        if let Some(status) = serve.0.try_wait().expect("wait") {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "serve ignored SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    assert!(status.success(), "{status:?}");
}

/// Sends SIGTERM to `child` and waits (at most `bound`) for it to exit;
/// returns its status and how long it took.
fn terminate(
    child: &mut std::process::Child,
    bound: std::time::Duration,
) -> (std::process::ExitStatus, std::time::Duration) {
    let signalled = std::time::Instant::now();
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    loop {
        if let Some(status) = child.try_wait().expect("wait") {
            return (status, signalled.elapsed());
        }
        assert!(
            signalled.elapsed() < bound,
            "still running {bound:?} after SIGTERM"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
}

/// SIGTERM stops `berth ci serve` within its grace (10 s) whatever its
/// clients do: a gRPC `FollowJobLog` open on a long job ends at once with
/// UNAVAILABLE, and a request whose body never comes is left behind when
/// the grace is over.
#[test]
fn the_ci_daemon_stops_on_sigterm_with_a_log_follower_and_a_stuck_request_open() {
    use std::time::Duration;
    let dir = tempfile::tempdir().expect("tempdir");
    let (mut dev, mut serve, server) = start_ci_daemon(dir.path());
    let repo = repo(&[(
        ".gitlab-ci.yml",
        "long:\n  script:\n    - echo long-started\n    - sleep 120\n",
    )]);
    let path = repo.path().to_str().expect("utf-8 path");
    let (code, out) = berth(&["ci", "trigger", path, "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    let runtime = tokio::runtime::Runtime::new().expect("a runtime");
    runtime.block_on(async {
        use berth_proto::ci::v1 as ci;
        use tokio::io::AsyncWriteExt as _;
        let mut client = ci::ci_client::CiClient::connect(server.clone())
            .await
            .expect("gRPC on the API's port");
        let mut stream = client
            .follow_job_log(ci::FollowJobLogRequest {
                pipeline: 1,
                job: "long".into(),
                ..Default::default()
            })
            .await
            .expect("FollowJobLog")
            .into_inner();
        let mut seen = Vec::new();
        let started = async {
            while !String::from_utf8_lossy(&seen).contains("long-started") {
                let chunk = stream.message().await.expect("a chunk").expect("more");
                seen.extend_from_slice(&chunk.data);
            }
        };
        tokio::time::timeout(Duration::from_secs(60), started)
            .await
            .expect("the job prints");
        // A request whose body never comes: the server waits for it.
        let mut stuck = tokio::net::TcpStream::connect(server.trim_start_matches("http://"))
            .await
            .expect("connect");
        stuck
            .write_all(
                b"POST /ci/v1/pipelines HTTP/1.1\r\nhost: ci\r\ncontent-type: application/json\r\ncontent-length: 100\r\n\r\n{\"repo",
            )
            .await
            .expect("a partial request");
        // Its headers reach the server before the signal does.
        let answer = client
            .list_pipelines(ci::ListPipelinesRequest::default())
            .await
            .expect("ListPipelines");
        assert_eq!(answer.into_inner().pipelines.len(), 1);

        let signalled = std::time::Instant::now();
        let _ = Command::new("kill")
            .args(["-TERM", &serve.0.id().to_string()])
            .status();
        // The log stream ends at once, as unavailable.
        let end = tokio::time::timeout(Duration::from_secs(5), async {
            loop {
                match stream.message().await {
                    Ok(Some(_)) => continue,
                    other => return other,
                }
            }
        })
        .await
        .expect("the log stream ends when the server shuts down");
        let end = end.expect_err("ended as unavailable, not as finished");
        assert_eq!(end.code(), tonic::Code::Unavailable, "{end:?}");
        // The process stops once the grace is over, the stuck request
        // still open.
        let deadline = signalled + Duration::from_secs(20);
        let exit = loop {
            if let Some(exit) = serve.0.try_wait().expect("wait") {
                break exit;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "berth ci serve still runs 20 s after SIGTERM"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let took = signalled.elapsed();
        assert!(exit.success(), "{exit:?}");
        assert!(
            took >= Duration::from_secs(9),
            "the stuck request held the server until the grace was over: {took:?}"
        );
        drop(stuck);
    });
    // The long job goes with `berth dev`.
    let (status, _) = terminate(&mut dev.0, Duration::from_secs(30));
    assert!(status.success(), "{status:?}");
}

/// The section headers (`== … ==` lines) of `berth ci logs PIPELINE`.
fn headers(out: &str) -> Vec<&str> {
    out.lines().filter(|l| l.starts_with("== ")).collect()
}

/// `berth ci logs [-f] PIPELINE` prints every job's log in sections, and
/// `berth ci retry PIPELINE/JOB` runs one failed job again (its script
/// fails while a marker file is absent, and creates it): the pipeline then
/// passes. Bad `PIPELINE[/JOB]` arguments are usage errors (exit 2), an
/// unknown pipeline or job exits 1 with the reason.
#[test]
fn ci_logs_shows_a_whole_pipeline_and_ci_retry_reruns_one_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_dev, _serve, server) = start_ci_daemon(dir.path());
    let marks = tempfile::tempdir().expect("tempdir");
    let mark_var = format!("MARK={}", marks.path().display());
    let repo = repo(&[(
        ".gitlab-ci.yml",
        "build:\n  stage: build\n  script: [echo build-output]\ntest:\n  stage: test\n  script:\n    - echo test-output\n    - if [ -e \"$MARK/failed-once\" ]; then echo second-try; else touch \"$MARK/failed-once\"; echo first-try; exit 1; fi\ndeploy:\n  stage: deploy\n  script: [echo deploy-output]\n",
    )]);
    let path = repo.path().to_str().expect("utf-8 path");
    let (code, out) = berth(&[
        "ci", "trigger", path, "--var", &mark_var, "--server", &server,
    ]);
    assert_eq!(code, Some(0), "{out}");

    // Followed to its end; exit 0 although it failed.
    let (code, out) = berth(&["ci", "logs", "-f", "1", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(
        headers(&out),
        [
            "== build (stage build, attempt 1) ==",
            "== test (stage test, attempt 1) ==",
            "== pipeline #1: failed ==",
        ],
        "{out}"
    );
    let lines: Vec<&str> = out.lines().collect();
    let at = |line: &str| {
        lines
            .iter()
            .position(|l| *l == line)
            .unwrap_or_else(|| panic!("no line {line:?} in:\n{out}"))
    };
    assert!(at("build-output") < at("== test (stage test, attempt 1) =="));
    assert!(at("== test (stage test, attempt 1) ==") < at("first-try"));
    assert!(!out.contains("deploy-output"), "{out}");

    // Retrying: a job that never ran, unknown jobs and bad arguments.
    let (code, out) = berth(&["ci", "retry", "1/deploy", "--server", &server]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("berth: job \"deploy\" is skipped; only a finished job"),
        "{out}"
    );
    let (code, out) = berth(&["ci", "retry", "1/nope", "--server", &server]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("pipeline 1 has no job \"nope\""), "{out}");
    let (code, out) = berth(&["ci", "retry", "99/test", "--server", &server]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no pipeline 99"), "{out}");
    for (args, why) in [
        (vec!["retry", "x/test"], "\"x\" is not a pipeline id"),
        (vec!["retry", "1/"], "no job name after \"1/\""),
        (vec!["logs", "1/build", "build"], "the job is given twice"),
        (vec!["logs", "one"], "\"one\" is not a pipeline id"),
        (vec!["logs", "1", ""], "the job name is empty"),
    ] {
        let mut all = vec!["ci"];
        all.extend(args.iter().copied());
        all.extend(["--server", server.as_str()]);
        let (code, out) = berth(&all);
        assert_eq!(code, Some(2), "{args:?}: {out}");
        assert!(out.contains(why), "{args:?}: {out}");
        assert!(out.contains("try '--help'"), "{args:?}: {out}");
    }
    let (code, out) = berth(&["ci", "show", "1", "--json", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    let view: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(view["status"], "failed", "nothing changed: {out}");
    assert_eq!(view["jobs"][1]["attempts"], 1, "{out}");

    let (code, out) = berth(&["ci", "retry", "1/test", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("pipeline #1:") && out.contains("running"),
        "{out}"
    );
    // Following the retried job waits for its new attempt and shows that.
    let (code, out) = berth(&["ci", "logs", "-f", "1/test", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.lines().any(|l| l == "second-try"), "{out}");
    assert!(!out.lines().any(|l| l == "first-try"), "{out}");
    let (code, followed) = berth(&["ci", "logs", "-f", "1", "--server", &server]);
    assert_eq!(code, Some(0), "{followed}");
    assert_eq!(
        headers(&followed),
        [
            "== build (stage build, attempt 1) ==",
            "== test (stage test, attempt 1) ==",
            "== test (stage test, attempt 2) ==",
            "== deploy (stage deploy, attempt 1) ==",
            "== pipeline #1: success ==",
        ],
        "{followed}"
    );
    let (code, out) = berth(&["ci", "show", "1", "--json", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    let view: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(view["status"], "success", "{out}");
    let attempts: Vec<(&str, u64)> = view["jobs"]
        .as_array()
        .expect("jobs")
        .iter()
        .map(|j| {
            (
                j["name"].as_str().unwrap_or(""),
                j["attempts"].as_u64().unwrap_or(0),
            )
        })
        .collect();
    assert_eq!(attempts, [("build", 1), ("test", 2), ("deploy", 1)]);
    // Afterwards, without -f: the same sections, the same bytes (the jobs
    // ran one at a time).
    let (code, out) = berth(&["ci", "logs", "1", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out, followed);
    let test2 = out
        .split("== test (stage test, attempt 2) ==\n")
        .nth(1)
        .and_then(|rest| rest.split("\n== ").next())
        .expect("test's second section");
    assert!(test2.lines().any(|l| l == "second-try"), "{test2}");
    assert!(!test2.lines().any(|l| l == "first-try"), "{test2}");

    // One job: PIPELINE/JOB and PIPELINE JOB alike, the latest attempt.
    let (code, one) = berth(&["ci", "logs", "1/test", "--server", &server]);
    assert_eq!(code, Some(0), "{one}");
    assert!(one.lines().any(|l| l == "second-try"), "{one}");
    assert!(!one.contains("== "), "no sections for one job: {one}");
    let (code, two) = berth(&["ci", "logs", "-f", "1", "test", "--server", &server]);
    assert_eq!(code, Some(0), "{two}");
    assert_eq!(one, two);

    // Errors exit 1 with the reason.
    let (code, out) = berth(&["ci", "logs", "99", "--server", &server]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("berth: no pipeline 99"), "{out}");
    let (code, out) = berth(&["ci", "logs", "-f", "1/nope", "--server", &server]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("pipeline 1 has no job \"nope\""), "{out}");
    let (code, out) = berth(&["ci", "logs", "1", "--server", "http://127.0.0.1:1"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("cannot reach the CI framework"), "{out}");
}

/// `berth ci logs -f PIPELINE` with two jobs running at the same time: one
/// job's log is the open section, the other's lines are prefixed with
/// `[job] ` (both jobs wait for a file the test creates once it has seen
/// their first lines, so they surely overlap).
#[test]
fn ci_logs_follow_prefixes_the_lines_of_jobs_running_at_the_same_time() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_dev, _serve, server) = start_ci_daemon(dir.path());
    let marks = tempfile::tempdir().expect("tempdir");
    let go = marks.path().join("go");
    let job = |name: &str| {
        format!(
            "{name}:\n  stage: test\n  script:\n    - echo {name}-first\n    - while [ ! -e {go} ]; do sleep 0.1; done\n    - echo {name}-second\n",
            go = go.display()
        )
    };
    let repo = repo(&[(
        ".gitlab-ci.yml",
        &format!("{}{}", job("left"), job("right")),
    )]);
    let path = repo.path().to_str().expect("utf-8 path");
    let (code, out) = berth(&["ci", "trigger", path, "--server", &server]);
    assert_eq!(code, Some(0), "{out}");

    let mut child = Command::new(BERTH)
        .args(["ci", "logs", "-f", "1", "--server", &server])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("berth ci logs starts");
    let stdout = child.stdout.take().expect("piped stdout");
    let follower = ChildProcess(child);
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    let reader = std::thread::spawn(move || {
        use std::io::BufRead as _;
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut lines: Vec<String> = Vec::new();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    let first = |lines: &[String], name: &str| {
        lines
            .iter()
            .any(|l| *l == format!("{name}-first") || *l == format!("[{name}] {name}-first"))
    };
    while !(first(&lines, "left") && first(&lines, "right")) {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(_) => panic!("both jobs' first lines did not show:\n{}", lines.join("\n")),
        }
    }
    std::fs::write(&go, "").expect("go");
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("berth ci logs -f did not end:\n{}", lines.join("\n"))
            }
        }
    }
    reader.join().expect("reader");
    let mut follower = follower;
    let status = follower.0.wait().expect("wait");
    let text = lines.join("\n");
    assert!(status.success(), "{status:?}: {text}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("== pipeline #1: success =="),
        "{text}"
    );
    // One job has the section, the other only prefixed lines.
    let sectioned: Vec<&str> = ["left", "right"]
        .into_iter()
        .filter(|name| lines.contains(&format!("== {name} (stage test, attempt 1) ==")))
        .collect();
    assert_eq!(sectioned.len(), 1, "{text}");
    let open = sectioned[0];
    let other = if open == "left" { "right" } else { "left" };
    for line in ["first", "second"] {
        assert!(lines.contains(&format!("{open}-{line}")), "{text}");
        assert!(
            lines.contains(&format!("[{other}] {other}-{line}")),
            "{text}"
        );
        assert!(!lines.contains(&format!("{other}-{line}")), "{text}");
    }
    assert!(
        lines
            .iter()
            .filter(|l| l.contains(&format!("{other}-")))
            .all(|l| l.starts_with(&format!("[{other}] "))),
        "every line of {other} is prefixed: {text}"
    );
}

/// The frameworks the master at `master` knows, by name.
fn framework_names(master: &str) -> Vec<String> {
    let (code, out) = berth(&["framework", "list", "--json", "--master", master]);
    assert_eq!(code, Some(0), "{out}");
    let list: Vec<serde_json::Value> = serde_json::from_str(&out).expect("JSON");
    list.iter()
        .map(|f| f["name"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// `berth ci run --master` on a running cluster tears its CI framework
/// down however the run ends: passed, failed, canceled by Ctrl-C, and
/// given up by a second Ctrl-C (its running job is killed with it).
#[test]
fn berth_ci_run_on_a_cluster_leaves_no_framework_behind() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_dev, master) = start_dev(dir.path());
    let run = |repo: &Path| {
        Command::new(BERTH)
            .args(["ci", "run"])
            .arg(repo)
            .args(["--master", &master])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("berth runs")
    };
    let output = |child: std::process::Child| {
        let out = child.wait_with_output().expect("berth ends");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.code(), text)
    };

    for (pipeline, exit) in [
        ("ok:\n  script: [echo fine]\n", 0),
        ("bad:\n  script: [exit 3]\n", 1),
    ] {
        let repo = repo(&[(".gitlab-ci.yml", pipeline)]);
        let (code, out) = output(run(repo.path()));
        assert_eq!(code, Some(exit), "{out}");
        let names = framework_names(&master);
        assert!(
            !names.iter().any(|n| n == "berth-ci"),
            "after a run that exited {exit}: {names:?}"
        );
    }

    // Ctrl-C while a job runs; and Ctrl-C twice, which stops waiting for
    // the job to end: the teardown kills it.
    let slow = repo(&[(
        ".gitlab-ci.yml",
        "slow:\n  script: [echo slow-started, sleep 300]\n",
    )]);
    for interrupts in [1, 2] {
        let child = run(slow.path());
        let pid = child.id().to_string();
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (_, tasks) = berth(&["task", "list", "--json", "--master", &master]);
            if tasks.contains("TASK_RUNNING") {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the slow job never ran: {tasks}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
        for _ in 0..interrupts {
            let _ = Command::new("kill").args(["-INT", &pid]).status();
            std::thread::sleep(std::time::Duration::from_millis(300));
        }
        let (code, out) = output(child);
        assert_eq!(code, Some(1), "{interrupts} Ctrl-C: {out}");
        let names = framework_names(&master);
        assert!(
            !names.iter().any(|n| n == "berth-ci"),
            "after {interrupts} Ctrl-C: {names:?}"
        );
        let (_, tasks) = berth(&["task", "list", "--json", "--master", &master]);
        assert!(
            !tasks.contains("TASK_RUNNING"),
            "a job outlived its framework: {tasks}"
        );
    }
}

/// `--max-log-bytes`: a failed job's log is printed up to the limit, then
/// a line that says where it was cut and where the whole log is.
#[test]
fn berth_ci_run_cuts_long_logs_of_failed_jobs() {
    let repo = repo(&[(
        ".gitlab-ci.yml",
        "noisy:\n  script:\n    - i=0; while [ $i -lt 200 ]; do printf 0123456789; i=$((i+1)); done; echo\n    - echo the-end; exit 1\n",
    )]);
    let (code, out) = ci_run(repo.path(), &["--max-log-bytes", "300"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("[berth] log cut at 300 bytes; the full log ("),
        "{out}"
    );
    assert!(
        out.contains("bytes) is not kept (run with --data-dir to keep it)"),
        "{out}"
    );
    assert!(!out.contains("the-end"), "past the cut: {out}");

    let data = tempfile::tempdir().expect("tempdir");
    let dir = data.path().to_str().expect("utf-8 path");
    let (code, out) = ci_run(repo.path(), &["--max-log-bytes", "300", "--data-dir", dir]);
    assert_eq!(code, Some(1), "{out}");
    let stored = data.path().join("ci/logs/1/0-1.log");
    let whole = std::fs::read_to_string(&stored).expect("the whole log is kept");
    assert!(whole.contains("the-end"), "{whole}");
    assert!(
        out.contains(&format!(
            "[berth] log cut at 300 bytes; the full log ({} bytes) is at {}\n",
            whole.len(),
            stored.display()
        )),
        "{out}"
    );

    for bad in ["0", "-5", "lots"] {
        let (code, out) = ci_run(repo.path(), &[&format!("--max-log-bytes={bad}")]);
        assert_eq!(code, Some(2), "{out}");
        assert!(
            out.contains("is not a number of bytes of at least 1"),
            "{out}"
        );
    }
}

/// `berth ci serve --max-log-bytes` cuts the logs it serves, `berth ci logs
/// --full` gets them whole, and `berth ci show` says which pipeline
/// auto-canceled an older one of the same branch.
#[test]
fn the_ci_daemon_cuts_logs_and_auto_cancels_superseded_pipelines() {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = format!("http://127.0.0.1:{}", free_port());
    let (_dev, master) = start_dev(dir.path());
    let (code, out) = berth(&["ci", "serve", "--max-log-bytes", "0"]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("is not a number of bytes of at least 1"),
        "{out}"
    );
    let _serve = ChildProcess(
        Command::new(BERTH)
            .args(["ci", "serve", "--master", &master, "--listen"])
            .arg(server.trim_start_matches("http://"))
            .args(["--max-log-bytes", "300", "--data-dir"])
            .arg(dir.path().join("ci"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth ci serve starts"),
    );
    let wait = |what: &str, args: &[&str], done: &dyn Fn(&str) -> bool| -> String {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let (code, out) = berth(args);
            if code == Some(0) && done(&out) {
                return out;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "timed out waiting for {what}: {out}"
            );
            std::thread::sleep(std::time::Duration::from_millis(200));
        }
    };
    wait(
        "berth ci serve",
        &["ci", "list", "--server", &server],
        &|_| true,
    );
    let repo = repo(&[(
        ".gitlab-ci.yml",
        "noisy:\n  interruptible: true\n  script:\n    - i=0; while [ $i -lt 200 ]; do printf 0123456789; i=$((i+1)); done; echo\n    - sleep 60\n",
    )]);
    berth_tests::git(repo.path(), &["checkout", "-q", "-b", "feature"]);
    let path = repo.path().to_str().expect("utf-8 path");
    let (code, out) = berth(&["ci", "trigger", path, "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    // Cut while the job runs.
    let log_args = ["ci", "logs", "1", "noisy", "--server", &server];
    let out = wait("the cut log", &log_args, &|out| {
        out.contains("[berth] log cut")
    });
    assert!(
        out.contains("[berth] log cut at 300 bytes; the full log (")
            && out.contains("bytes so far) is at GET /ci/v1/pipelines/1/jobs/noisy/log?full=true"),
        "{out}"
    );

    // A newer pipeline of the branch auto-cancels the first.
    let (code, out) = berth(&["ci", "trigger", path, "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    let show = ["ci", "show", "1", "--server", &server];
    let out = wait("the auto-cancel", &show, &|out| {
        out.contains("pipeline #1") && out.contains(" canceled")
    });
    assert!(out.contains("(auto-canceled by #2)"), "{out}");

    // -f shows the marker once and ends with the job; --full has it all.
    let (code, out) = berth(&["ci", "logs", "-f", "1", "noisy", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.matches("[berth] log cut").count(), 1, "{out}");
    assert!(!out.contains("Job cancelled"), "past the cut: {out}");
    // (The last lines arrive as the task ends.)
    let full = ["ci", "logs", "--full", "1", "noisy", "--server", &server];
    let out = wait("the whole log", &full, &|out| {
        out.contains("ERROR: Job cancelled")
    });
    assert!(!out.contains("[berth] log cut"), "{out}");
    assert!(out.contains(&"0123456789".repeat(200)), "{out}");
    let (code, out) = berth(&["ci", "cancel", "2", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
}

/// The pipelines `berth ci list --json` shows.
fn ci_list(server: &str) -> Vec<serde_json::Value> {
    let (code, out) = berth(&["ci", "list", "--json", "--server", server]);
    assert_eq!(code, Some(0), "{out}");
    serde_json::from_str(&out).expect("JSON")
}

/// Waits (up to 60 s) until `berth ci list` shows a pipeline for `sha`.
fn wait_for_pipeline_of(server: &str, sha: &str) -> Vec<serde_json::Value> {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let list = ci_list(server);
        if list.iter().any(|p| p["sha"] == sha) {
            return list;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "no pipeline for {sha}: {list:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
}

fn head_of(dir: &Path) -> String {
    let out = Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(["rev-parse", "HEAD"])
        .output()
        .expect("git runs");
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// A registered repository through the real binary: `berth ci repo add`
/// runs its head, a new commit is found by polling and shows in `berth ci
/// list`, the secret never shows, bad input is refused with the reason.
#[test]
fn a_registered_repository_is_polled_through_the_cli() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_dev, _serve, server) = start_ci_daemon(dir.path());
    let repo = repo(&[(".gitlab-ci.yml", "build:\n  script: [echo built]\n")]);
    let path = repo.path().to_str().expect("utf-8 path");
    let secret = "cli-webhook-secret-0123456789";
    let secret_file = dir.path().join("secret");
    std::fs::write(&secret_file, format!("{secret}\n")).expect("secret file");
    let secret_arg = secret_file.to_str().expect("utf-8 path");

    // Bad input: the reason, and nothing stored.
    let (code, out) = berth(&[
        "ci", "repo", "add", path, "--branch", "nope", "--server", &server,
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("branch \"nope\" does not exist"), "{out}");
    let (code, out) = berth(&[
        "ci",
        "repo",
        "add",
        path,
        "--poll-interval",
        "0s",
        "--server",
        &server,
    ]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("from 1 s to 86400 s"), "{out}");
    let (code, out) = berth(&[
        "ci",
        "repo",
        "add",
        path,
        "--poll-interval",
        "soon",
        "--server",
        &server,
    ]);
    assert_eq!(code, Some(2), "clap refuses it: {out}");
    assert!(out.contains("not a duration"), "{out}");
    let (code, out) = berth(&["ci", "repo", "list", "--json", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert_eq!(out.trim(), "[]");

    let (code, out) = berth(&[
        "ci",
        "repo",
        "add",
        path,
        "--poll-interval",
        "1s",
        "--secret-file",
        secret_arg,
        "--server",
        &server,
    ]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("repository #1"), "{out}");
    assert!(out.contains("/ci/v1/repos/1/hook"), "{out}");
    assert!(!out.contains(secret), "{out}");

    let first = head_of(repo.path());
    let list = wait_for_pipeline_of(&server, &first);
    assert_eq!(list.len(), 1, "{list:?}");
    assert_eq!(list[0]["source"], "push");

    std::fs::write(repo.path().join("README"), "new\n").expect("write");
    berth_tests::git(repo.path(), &["add", "."]);
    berth_tests::git(repo.path(), &["commit", "-q", "-m", "second"]);
    let second = head_of(repo.path());
    let list = wait_for_pipeline_of(&server, &second);
    assert_eq!(list.len(), 2, "{list:?}");
    assert_eq!(list[0]["ref_name"], "main");

    let (code, out) = berth(&["ci", "list", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains(&second[..8]), "{out}");
    let (code, out) = berth(&["ci", "repo", "list", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("WEBHOOK") && out.contains("yes"), "{out}");
    assert!(!out.contains(secret), "{out}");
    let (code, out) = berth(&["ci", "repo", "show", "1", "--json", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains(secret), "{out}");
    let view: serde_json::Value = serde_json::from_str(&out).expect("JSON");
    assert_eq!(view["heads"]["main"], second.as_str());

    let (code, out) = berth(&["ci", "repo", "remove", "1", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("removed"), "{out}");
    let (code, out) = berth(&["ci", "repo", "remove", "1", "--server", &server]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no repository 1"), "{out}");
    assert_eq!(ci_list(&server).len(), 2, "the pipelines stay");
}

/// What a terminal shows of the bars, roughly: colour codes dropped, cursor
/// moves and carriage returns taken as line breaks, and each line cut
/// where a bar's mark or spinner starts (the bars' lines are padded to the
/// terminal's width, so one may wrap into the next).
fn screen_lines(raw: &str) -> Vec<String> {
    const MARKS: &str = "✔✘!▶·◷⊘»⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏⠁";
    let mut out = String::new();
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\x1b' && chars.peek() == Some(&'[') {
            chars.next();
            let end = chars.by_ref().find(char::is_ascii_alphabetic);
            if end != Some('m') {
                out.push('\n');
            }
        } else if c == '\r' {
            out.push('\n');
        } else {
            if MARKS.contains(c) {
                out.push('\n');
            }
            out.push(c);
        }
    }
    out.lines()
        .map(|l| l.trim().to_string())
        .filter(|l| !l.is_empty())
        .collect()
}

/// A job killed at its `timeout` says so in its log (as GitLab's runner
/// does), not that it was cancelled, and its `after_script` sees
/// `CI_JOB_STATUS=failed`.
#[test]
fn a_job_past_its_timeout_says_it_timed_out() {
    let repo = repo(&[(
        ".gitlab-ci.yml",
        "slow:\n  timeout: 2s\n  script:\n    - sleep 30\n  after_script:\n    - echo \"after sees $CI_JOB_STATUS\"\n",
    )]);
    let (code, out) = ci_run(repo.path(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("job_execution_timeout"), "{out}");
    assert!(
        out.contains("ERROR: Job failed: execution took longer than 2 seconds"),
        "{out}"
    );
    assert!(out.contains("after sees failed"), "{out}");
    assert!(!out.contains("cancelled"), "{out}");
}
