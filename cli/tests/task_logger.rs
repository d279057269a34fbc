//! A process task with masked values, run by a real `berth agent`: its
//! output goes through the masking threads of its `berth task-supervisor`
//! process, so neither its sandbox files nor the agent's log API (`berth
//! task log`) ever hold the values, and the task keeps writing, masked,
//! while the agent is SIGKILLed and restarted; its exit status, recorded
//! by the supervisor, is reported after the restart.
#![allow(clippy::unwrap_used)]

use berth_tests::ChildProcess;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use berth_proto as pb;
use berth_sdk::{Event, FrameworkConfig};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");
const SECRET: &str = "zq-logger-secret-7781";

fn agent(master: &str, work: &Path) -> ChildProcess {
    berth_tests::berth_agent(
        BERTH,
        master,
        work,
        &["--no-docker", "--resources", "cpus:2;mem:1024"],
    )
}

fn read(path: &Path) -> String {
    String::from_utf8_lossy(&std::fs::read(path).unwrap_or_default()).into_owned()
}

/// Waits until `path` holds `needle`.
async fn wait_for_text(path: &Path, needle: &str) -> String {
    let t0 = Instant::now();
    loop {
        let text = read(path);
        if text.contains(needle) {
            return text;
        }
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "{} never held {needle:?}:\n{text}",
            path.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn masked_output_survives_an_agent_sigkill_and_is_never_stored() {
    let dir = tempfile::tempdir().unwrap();
    let work = std::path::absolute(dir.path().join("agent")).unwrap();
    let (_master, master_addr) = berth_tests::berth_master(BERTH, &dir.path().join("master"));
    let mut agent_proc = agent(&master_addr, &work);

    let config = FrameworkConfig::new("task-logger").failover_timeout(Duration::from_secs(300));
    let (fw, mut events) = berth_sdk::subscribe(vec![master_addr.clone()], config)
        .await
        .unwrap();
    // The value split across two writes; ten lines a second until `go`
    // exists; then its last words on both streams.
    let mut task = berth_sdk::shell_task(
        "masked",
        "masked",
        "printf 'split zq-logger-'; sleep 0.3; printf 'secret-7781 done\\n'; \
         i=0; while [ ! -f go ]; do i=$((i+1)); echo \"tick $i $TOKEN\"; sleep 0.1; done; \
         echo \"after $TOKEN\"; echo \"stderr $TOKEN\" >&2; printf \"last $TOKEN\"; exit 3",
        "cpus:0.1;mem:16",
    )
    .unwrap();
    if let Some(c) = task.command.as_mut() {
        c.env.insert("TOKEN".into(), SECRET.into());
    }
    task.masked_values = vec![SECRET.into()];
    // A value that cannot be masked is refused at accept, naming only its
    // position.
    let mut bad = task.clone();
    bad.task_id = "bad".into();
    bad.masked_values = vec!["short".into()];
    let offers = berth_tests::next_matching(&mut events, Duration::from_secs(60), |e| match e {
        Event::Offers(o) => Some(o),
        _ => None,
    })
    .await
    .unwrap();
    let err = fw
        .accept(
            vec![berth_sdk::OfferId::new(offers[0].id.clone()).unwrap()],
            vec![bad],
            None,
        )
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("masked_values[0] has 5 characters; masked values need at least 8"),
        "{err}"
    );
    // A refused accept leaves the offer as it was.
    fw.accept(
        vec![berth_sdk::OfferId::new(offers[0].id.clone()).unwrap()],
        vec![task],
        None,
    )
    .await
    .unwrap();
    berth_tests::next_matching(&mut events, Duration::from_secs(60), |e| match e {
        Event::Update(st) if berth_tests::task_state(&st) == pb::TaskState::TaskRunning => Some(()),
        Event::Update(st) if berth_tests::task_state(&st).is_terminal() => {
            panic!("ended early: {st:?}")
        }
        _ => None,
    })
    .await
    .unwrap();
    let sandbox = work.join("sandboxes").join(fw.id()).join("masked");
    let stdout = sandbox.join("stdout");
    wait_for_text(&stdout, "tick 2 ").await;

    // SIGKILL the agent: the task's supervisor is a process of its own and
    // goes on writing, masked.
    agent_proc.0.kill().unwrap();
    agent_proc.0.wait().unwrap();
    let before = read(&stdout).matches("tick").count();
    wait_for_text(&stdout, &format!("tick {} ", before + 5)).await;

    let _agent = agent(&master_addr, &work);
    std::fs::write(sandbox.join("go"), b"").unwrap();
    let end = berth_tests::next_matching(&mut events, Duration::from_secs(60), |e| match e {
        Event::Update(st) if berth_tests::task_state(&st).is_terminal() => Some(st),
        _ => None,
    })
    .await
    .unwrap();
    assert_eq!(end.task_id, "masked");
    assert_eq!(end.exit_code, Some(3), "{end:?}");
    assert_eq!(berth_tests::task_state(&end), pb::TaskState::TaskFailed);

    // All of it is in the files by the time the end is reported, masked.
    let out = read(&stdout);
    let err = read(&sandbox.join("stderr"));
    assert!(
        out.starts_with("split [MASKED] done\ntick 1 [MASKED]\n"),
        "{out}"
    );
    assert!(out.ends_with("after [MASKED]\nlast [MASKED]"), "{out}");
    assert!(err.contains("stderr [MASKED]\n"), "{err}");
    let ticks = out.matches("tick").count();
    assert_eq!(out.matches("[MASKED]").count(), ticks + 3, "{out}");
    assert!(!out.contains(SECRET) && !err.contains(SECRET));
    assert!(!out.contains("zq-"), "no part of the value either: {out}");

    // The agent's log API serves the same masked text.
    for (args, want) in [
        (vec!["task", "log", "masked"], out.clone()),
        (vec!["task", "log", "masked", "--stderr"], err.clone()),
    ] {
        let shown = Command::new(BERTH)
            .args(&args)
            .args(["--master", &master_addr])
            .output()
            .unwrap();
        assert!(shown.status.success(), "{shown:?}");
        assert_eq!(String::from_utf8_lossy(&shown.stdout), want, "{args:?}");
    }
}
