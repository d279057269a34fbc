//! The service framework bench's `--smoke` run: one in-process master, 20
//! simulated agents, the framework in process, 10 apps of 3 instances, 10
//! instances failed. Checks what the run did, not how fast: every
//! instance ran, every failed one was replaced by its next attempt, and
//! the framework and its stored state agree.

mod common;

use std::process::Output;

fn service_scale(args: &[&str]) -> Output {
    common::run(env!("CARGO_BIN_EXE_service_scale"), args)
}

#[test]
fn smoke_run_deploys_replaces_failed_instances_and_reports() {
    let out = service_scale(&["--smoke", "--json"]);
    let (r, line, stdout, stderr) = common::json_result(&out);
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {line}"))
    };
    assert_eq!((n("apps"), n("instances")), (10, 3), "{line}");
    // Every instance ran, on the agents and per the framework's API.
    assert_eq!(n("running_at_end"), 30, "{line}");
    assert_eq!(n("api_running"), 30, "{line}");
    // Every failure was replaced by the instance's next attempt.
    assert_eq!(n("failed"), 10, "{line}");
    assert_eq!(n("replaced"), 10, "{line}");
    assert_eq!(n("unreplaced"), 0, "{line}");
    assert_eq!(n("other_ends"), 0, "{line}\n{stderr}");
    let p50 = r["failure_to_running_ms"]["p50"].as_f64().unwrap_or(-1.0);
    let max = r["failure_to_running_ms"]["max"].as_f64().unwrap_or(-1.0);
    assert!(p50 > 0.0 && max >= p50, "{line}");
    // 10 apps, their versions and deployments' history, 30 instance
    // records, the framework id: all in the store.
    assert!(n("kv_entries") >= 41, "{line}");
    assert!(n("kv_bytes") > 0, "{line}");
    assert!(
        stdout.contains("| agents | apps × instances | all running s |"),
        "{stdout}"
    );
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let out = service_scale(&["--apps", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--apps must be at least 1"), "{stderr}");
    let out = service_scale(&["--fail-rate", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--fail-rate"), "{stderr}");
}
