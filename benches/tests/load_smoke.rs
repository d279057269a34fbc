//! The load generator's `--smoke` run, as CI runs it: three in-process
//! masters, 50 simulated agents, 4 SDK frameworks for 3 s. Checks what
//! the run did, not how fast: every agent registered, tasks launched, and
//! after the drain every launched task reached its framework as FINISHED
//! with its terminal update acknowledged back to its agent, with no errors.

mod common;

use std::process::Output;

fn load(args: &[&str]) -> Output {
    common::run(env!("CARGO_BIN_EXE_load"), args)
}

#[test]
fn smoke_run_launches_finishes_and_acknowledges_every_task() {
    let out = load(&["--smoke", "--json"]);
    let (r, line, stdout, stderr) = common::json_result(&out);
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {line}"))
    };

    assert_eq!(n("agents"), 50, "{line}");
    assert_eq!(n("frameworks"), 4, "{line}");
    assert_eq!(n("agents_registered"), 50, "{line}");
    assert!(n("launches") > 0, "nothing launched in the window: {line}");
    assert!(n("latency_samples") > 0, "{line}");
    assert_eq!(r["drained"], true, "{line}\n{stderr}");
    let launched = n("total_launched");
    assert!(launched >= n("launches"), "{line}");
    // Every launched task reached its agent, ran and finished ...
    assert_eq!(n("total_runs_received"), launched, "{line}");
    assert_eq!(n("total_running"), launched, "{line}");
    assert_eq!(n("total_finished"), launched, "{line}");
    // ... and each agent got the acknowledgement of its terminal update.
    assert_eq!(n("total_terminal_acked"), launched, "{line}");
    assert_eq!(n("pending_updates"), 0, "{line}");
    assert_eq!(n("left_in_flight"), 0, "{line}");
    assert_eq!(n("total_other_end"), 0, "{line}");
    assert_eq!(n("errors"), 0, "{line}\n{stderr}");
    assert_eq!(r["leader_stable"], true, "{line}");
    // The table is printed too.
    assert!(
        stdout.contains("| agents | frameworks | launches |"),
        "{stdout}"
    );
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let out = load(&["--agents", "0"]);
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("--agents must be at least 1"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = load(&["--task-ms", "100-5"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("MIN must be <= MAX"));
    let out = load(&["--task-resources", "cpus:-1"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--task-resources"));
    let out = load(&["--refuse", "NaN"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("--refuse"));
}
