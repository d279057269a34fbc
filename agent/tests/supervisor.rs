//! The process containerizer with real task supervisors: this test binary
//! is its own supervisor program (run with the argument `task-supervisor`
//! it does what `berth task-supervisor` does), so the tests exec real
//! supervisor processes without the `berth` binary. Hence no libtest
//! harness (`harness = false`): `main` runs the tests one after another
//! and fails the binary if any fails.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_agent::containerizer::process::ProcessContainerizer;
use berth_agent::containerizer::{
    Command, ContainerId, Containerizer, LaunchSpec, Launched, RecoverRecord, Termination,
};
use berth_agent::supervisor::{EXIT_FILE, SUPERVISOR_FILE, TaskSupervisor};

const SECRET: &str = "sv-secret-value-42";

fn supervised() -> ProcessContainerizer {
    ProcessContainerizer::with_supervisor(TaskSupervisor::Program {
        program: std::env::current_exe().expect("the test binary"),
        args: vec!["task-supervisor".into()],
    })
}

fn spec(dir: &Path, task: &str, command: Command) -> LaunchSpec {
    LaunchSpec {
        container_id: ContainerId::random(),
        framework_id: "fw-1".into(),
        task_id: task.into(),
        agent_id: "agent-1".into(),
        sandbox: dir.join("sandboxes/fw-1").join(task),
        sandbox_prepared: false,
        command,
        env: HashMap::from([("TOKEN".to_owned(), SECRET.to_owned())]),
        resources: "cpus:0.1;mem:16".parse().expect("resources"),
        container: None,
        masked_values: Vec::new(),
    }
}

fn sh(s: &str) -> Command {
    Command::Shell(s.to_owned())
}

fn record(l: &Launched, s: &LaunchSpec) -> RecoverRecord {
    RecoverRecord {
        container_id: l.container_id.clone(),
        framework_id: s.framework_id.clone(),
        task_id: s.task_id.clone(),
        pid: l.pid,
        pgid: l.pgid,
        sandbox: s.sandbox.clone(),
        masked_values: s.masked_values.clone(),
    }
}

fn read(path: PathBuf) -> String {
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

async fn wait_for(what: &str, mut done: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !done() {
        assert!(
            t0.elapsed() < Duration::from_secs(20),
            "{what} never happened"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn gone(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).map_or(true, |s| {
        s.rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state == "Z" || state == "X")
    })
}

async fn exit_codes_and_signals_are_recorded() {
    let dir = tempfile::tempdir().unwrap();
    let c = supervised();
    for (task, command, want) in [
        ("ok", sh("echo hi; exit 0"), Termination::Exited(0)),
        ("three", sh("echo err >&2; exit 3"), Termination::Exited(3)),
        (
            "usr1",
            sh("kill -USR1 $$; sleep 5"),
            Termination::Signaled(10),
        ),
        // The shell's own "not found".
        (
            "sh-missing",
            sh("no-such-command-xyz"),
            Termination::Exited(127),
        ),
    ] {
        let s = spec(dir.path(), task, command);
        let sandbox = s.sandbox.clone();
        let l = c.launch(s).await.unwrap();
        assert_eq!(l.pid, l.pgid);
        let t = c.wait(&l.container_id).await.unwrap();
        assert_eq!(t, want, "{task}");
        let rec = read(sandbox.join(EXIT_FILE));
        let expected = match want {
            Termination::Exited(code) => format!(r#""status":"exited","code":{code}}}"#),
            Termination::Signaled(sig) => format!(r#""status":"signaled","signal":{sig}}}"#),
            _ => unreachable!(),
        };
        assert!(rec.ends_with(&expected), "{task}: {rec}");
        assert!(rec.contains(&l.container_id.0), "{rec}");
        assert!(!sandbox.join(".berth-exit.tmp").exists());
        // The supervisor is gone and its lock free.
        let lock = std::fs::File::open(sandbox.join(SUPERVISOR_FILE)).unwrap();
        assert!(lock.try_lock().is_ok(), "{task}: the lock is still held");
        c.cleanup(&l.container_id).await;
    }
    let out = read(dir.path().join("sandboxes/fw-1/ok/stdout"));
    assert_eq!(out, "hi\n");
    let err = read(dir.path().join("sandboxes/fw-1/three/stderr"));
    assert_eq!(err, "err\n");
}

async fn a_program_that_cannot_start_has_the_shells_exit_code() {
    let dir = tempfile::tempdir().unwrap();
    let c = supervised();
    let missing = spec(
        dir.path(),
        "missing",
        Command::Argv(vec!["/no/such/program-xyz".into()]),
    );
    let err = c.launch(missing).await.unwrap_err();
    assert_eq!(err.exit_code(), Some(127), "{err}");
    assert!(err.to_string().contains("No such file"), "{err}");
    assert!(err.to_string().contains("/no/such/program-xyz"), "{err}");

    // A file that is not executable: 126.
    let script = dir.path().join("not-executable.sh");
    std::fs::write(&script, "#!/bin/sh\nexit 0\n").unwrap();
    let s = spec(
        dir.path(),
        "noexec",
        Command::Argv(vec![script.display().to_string()]),
    );
    let err = c.launch(s).await.unwrap_err();
    assert_eq!(err.exit_code(), Some(126), "{err}");
    assert!(err.to_string().contains("Permission denied"), "{err}");
}

async fn kills_report_the_signal_and_the_escalation() {
    let dir = tempfile::tempdir().unwrap();
    let c = supervised();
    let s = spec(
        dir.path(),
        "term",
        sh("echo ready; while true; do sleep 0.05; done"),
    );
    let stdout = s.sandbox.join("stdout");
    let l = c.launch(s).await.unwrap();
    wait_for("the task's first line", || {
        std::fs::read_to_string(&stdout).is_ok_and(|o| o.contains("ready"))
    })
    .await;
    let t = c
        .destroy(&l.container_id, Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(t, Termination::Signaled(15));
    assert_eq!(t.exit_code(), Some(143));

    let s = spec(
        dir.path(),
        "stubborn",
        sh("trap '' TERM; sleep 60 & echo $! > bg.pid; echo ready; wait"),
    );
    let sandbox = s.sandbox.clone();
    let l = c.launch(s).await.unwrap();
    wait_for("the task's first line", || {
        std::fs::read_to_string(sandbox.join("stdout")).is_ok_and(|o| o.contains("ready"))
    })
    .await;
    let bg: i32 = read(sandbox.join("bg.pid")).trim().parse().unwrap();
    let t0 = Instant::now();
    let t = c
        .destroy(&l.container_id, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert_eq!(t, Termination::Signaled(9));
    assert_eq!(t.exit_code(), Some(137));
    wait_for("the background process's end", || gone(bg)).await;
    // A kill after the end signals nothing (the group's id may be reused)
    // and gives the same answer.
    assert_eq!(
        c.destroy(&l.container_id, Duration::ZERO).await.unwrap(),
        Termination::Signaled(9)
    );
}

async fn a_task_that_ends_while_nobody_watches_is_reported_with_its_status() {
    let dir = tempfile::tempdir().unwrap();
    // The first agent launches two tasks and "dies" (its containerizer is
    // dropped); the supervisors go on.
    let first = supervised();
    let early = spec(dir.path(), "early", sh("echo early; exit 6"));
    let late = spec(
        dir.path(),
        "late",
        sh("echo before; while [ ! -f go ]; do sleep 0.05; done; echo after; exit 5"),
    );
    let le = first.launch(early.clone()).await.unwrap();
    let ll = first.launch(late.clone()).await.unwrap();
    drop(first);
    // The early one ends before anybody watches again.
    wait_for("the early task's exit record", || {
        early.sandbox.join(EXIT_FILE).exists()
    })
    .await;

    let second = supervised();
    let adopted = second
        .recover(vec![record(&le, &early), record(&ll, &late)])
        .await
        .unwrap();
    assert_eq!(
        adopted,
        vec![le.container_id.clone(), ll.container_id.clone()]
    );
    assert_eq!(
        second.wait(&le.container_id).await.unwrap(),
        Termination::Exited(6)
    );
    std::fs::write(late.sandbox.join("go"), b"").unwrap();
    assert_eq!(
        second.wait(&ll.container_id).await.unwrap(),
        Termination::Exited(5)
    );
    assert_eq!(read(late.sandbox.join("stdout")), "before\nafter\n");

    // A record of another container (an earlier run's) is not taken.
    let third = supervised();
    let mut stranger = record(&le, &early);
    stranger.container_id = ContainerId::random();
    assert!(third.recover(vec![stranger]).await.unwrap().is_empty());
}

async fn masked_output_is_whole_and_masked_when_the_end_is_reported() {
    let dir = tempfile::tempdir().unwrap();
    let c = supervised();
    let mut s = spec(
        dir.path(),
        "masked",
        sh(
            "printf 'a sv-secret-'; sleep 0.2; printf 'value-42 b\\n'; echo \"err $TOKEN\" >&2; \
            sleep 600 & printf \"tail $TOKEN\"; exit 4",
        ),
    );
    s.masked_values = vec![SECRET.into()];
    let sandbox = s.sandbox.clone();
    let l = c.launch(s).await.unwrap();
    // The background sleep would hold the pipes open: the supervisor kills
    // it with the group before it records the end.
    assert_eq!(
        c.wait(&l.container_id).await.unwrap(),
        Termination::Exited(4)
    );
    assert_eq!(read(sandbox.join("stdout")), "a [MASKED] b\ntail [MASKED]");
    assert_eq!(read(sandbox.join("stderr")), "err [MASKED]\n");
}

async fn a_killed_supervisor_leaves_a_task_that_is_adopted_by_its_start_time() {
    let dir = tempfile::tempdir().unwrap();
    let first = supervised();
    let s = spec(
        dir.path(),
        "orphan",
        sh("while [ ! -f go ]; do sleep 0.05; done; exit 2"),
    );
    let l = first.launch(s.clone()).await.unwrap();
    drop(first);
    let info = read(s.sandbox.join(SUPERVISOR_FILE));
    let info: serde_json::Value = serde_json::from_str(&info).unwrap();
    let supervisor = i32::try_from(info["supervisor_pid"].as_i64().unwrap()).unwrap();
    assert_eq!(info["task_pid"].as_i64(), Some(i64::from(l.pid)));
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(supervisor),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    wait_for("the supervisor's end", || gone(supervisor)).await;

    // The task runs on; it is the same process (same start time), so it is
    // adopted, but how it ends cannot be known any more.
    let second = supervised();
    assert_eq!(
        second.recover(vec![record(&l, &s)]).await.unwrap(),
        vec![l.container_id.clone()]
    );
    std::fs::write(s.sandbox.join("go"), b"").unwrap();
    assert_eq!(
        second.wait(&l.container_id).await.unwrap(),
        Termination::Unknown
    );
    // Once gone, it is not adopted again.
    let third = supervised();
    assert!(
        third
            .recover(vec![record(&l, &s)])
            .await
            .unwrap()
            .is_empty()
    );
}

type Test = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;

fn main() {
    if std::env::args().nth(1).as_deref() == Some("task-supervisor") {
        std::process::exit(berth_agent::supervisor::run_program());
    }
    let tests: &[(&str, Test)] = &[
        ("exit_codes_and_signals_are_recorded", || {
            Box::pin(exit_codes_and_signals_are_recorded())
        }),
        (
            "a_program_that_cannot_start_has_the_shells_exit_code",
            || Box::pin(a_program_that_cannot_start_has_the_shells_exit_code()),
        ),
        ("kills_report_the_signal_and_the_escalation", || {
            Box::pin(kills_report_the_signal_and_the_escalation())
        }),
        (
            "a_task_that_ends_while_nobody_watches_is_reported_with_its_status",
            || Box::pin(a_task_that_ends_while_nobody_watches_is_reported_with_its_status()),
        ),
        (
            "masked_output_is_whole_and_masked_when_the_end_is_reported",
            || Box::pin(masked_output_is_whole_and_masked_when_the_end_is_reported()),
        ),
        (
            "a_killed_supervisor_leaves_a_task_that_is_adopted_by_its_start_time",
            || Box::pin(a_killed_supervisor_leaves_a_task_that_is_adopted_by_its_start_time()),
        ),
    ];
    // As libtest: names to run (substrings), `--skip NAME` to leave out;
    // other flags are ignored.
    let (mut filter, mut skip) = (Vec::new(), Vec::new());
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        if a == "--skip" {
            skip.extend(args.next());
        } else if !a.starts_with('-') {
            filter.push(a);
        }
    }
    let mut failed = Vec::new();
    let mut ran = 0;
    for (name, test) in tests {
        let wanted = filter.is_empty() || filter.iter().any(|f| name.contains(f.as_str()));
        if !wanted || skip.iter().any(|s| name.contains(s.as_str())) {
            continue;
        }
        ran += 1;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime");
        let result =
            std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| runtime.block_on(test())));
        runtime.shutdown_timeout(Duration::from_secs(1));
        match result {
            Ok(()) => println!("test {name} ... ok"),
            Err(_) => {
                println!("test {name} ... FAILED");
                failed.push(*name);
            }
        }
    }
    println!(
        "\ntest result: {}. {} passed; {} failed; {} filtered out",
        if failed.is_empty() { "ok" } else { "FAILED" },
        ran - failed.len(),
        failed.len(),
        tests.len() - ran
    );
    if !failed.is_empty() {
        std::process::exit(101);
    }
}
