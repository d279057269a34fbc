//! The job framework bench's `--smoke` run: one in-process master, 10
//! simulated agents, the framework in process, 40 cron jobs firing 240
//! runs a minute for 24 s measured. Checks what the run did, not how
//! fast: every tick of the window ran exactly once and succeeded, per the
//! agents and per the framework's history, and the stored state holds
//! the jobs.

mod common;

use std::process::Output;

fn jobs_scale(args: &[&str]) -> Output {
    common::run(env!("CARGO_BIN_EXE_jobs_scale"), args)
}

#[test]
fn smoke_run_fires_every_tick_once_and_reports() {
    let out = jobs_scale(&["--smoke", "--json"]);
    let (r, line, stdout, stderr) = common::json_result(&out);
    let n = |k: &str| {
        r[k].as_u64()
            .unwrap_or_else(|| panic!("{k} missing in {line}"))
    };
    assert_eq!((n("jobs"), n("runs_per_minute")), (40, 240), "{line}");
    // 24 s at 4 ticks a second.
    assert_eq!(n("expected"), 96, "{line}");
    // Every tick of the window ran on an agent, once.
    assert_eq!(n("started"), 96, "{line}\n{stderr}");
    assert_eq!(n("started_twice"), 0, "{line}");
    assert_eq!(n("unreadable"), 0, "{line}");
    assert_eq!(n("other_ends"), 0, "{line}");
    let per_minute: u64 = r["per_minute"]
        .as_array()
        .map(|m| m.iter().filter_map(serde_json::Value::as_u64).sum())
        .unwrap_or(0);
    assert_eq!(per_minute, 96, "{line}");
    // The framework's history agrees: all succeeded, none missed.
    let api = |k: &str| r["api"][k].as_u64().unwrap_or(u64::MAX);
    assert_eq!(api("success"), 96, "{line}");
    for k in ["failed", "missed", "skipped", "active"] {
        assert_eq!(api(k), 0, "{k}: {line}");
    }
    let late = |k: &str| r["late_ms"][k].as_f64().unwrap_or(-1.0);
    assert!(late("p50") > 0.0 && late("max") >= late("p99"), "{line}");
    // Each job's definition and its cursors are stored.
    assert!(n("kv_entries_created") >= 80, "{line}");
    assert!(n("kv_bytes_end") > 0, "{line}");
    assert!(
        stdout.contains("| jobs | runs/min | create s |"),
        "{stdout}"
    );
}

#[test]
fn bad_arguments_are_refused_with_a_reason() {
    let out = jobs_scale(&["--jobs", "10000", "--runs-per-minute", "999"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("must be a divisor of 60 s"), "{stderr}");
    let out = jobs_scale(&["--minutes", "0"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("--minutes"), "{stderr}");
}
