//! The simulator's `--smoke` run, as CI runs it: every strategy reports on
//! every smoke workload, the packing guards pass (and can fail), the SVG is
//! written, file workloads are read and bad ones refused. Nothing here is
//! timed.

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(args)
        .output()
        .expect("the sim binary runs")
}

/// The strategies the run reports, from its `strategies:` line.
fn strategies(stdout: &str) -> Vec<String> {
    let line = stdout
        .lines()
        .find_map(|l| l.strip_prefix("strategies: "))
        .expect("a strategies: line");
    line.split(", ").map(str::to_owned).collect()
}

#[test]
fn smoke_reports_every_strategy_and_writes_the_plot() {
    let dir = tempfile::tempdir().expect("temp dir");
    let svg = dir.path().join("plot.svg");
    let out = sim(&["--smoke", "--svg", svg.to_str().expect("utf-8 path")]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let names = strategies(&stdout);
    for s in ["first-fit", "best-fit", "worst-fit", "tetris"] {
        assert!(names.iter().any(|n| n == s), "{names:?}");
    }
    for s in &names {
        assert!(
            stdout.contains(&format!("| {s} | 3,000 / 3,000 |")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("lower bound"), "{stdout}");
    assert!(stdout.contains("online/offline gap"), "{stdout}");
    // Every trace preset ran, with a table row per strategy.
    for preset in ["google", "alibaba", "mixed"] {
        let section = stdout
            .split("# sim: ")
            .find(|s| s.starts_with(&format!("trace-like {preset},")))
            .unwrap_or_else(|| panic!("no trace:{preset} section in {stdout}"));
        for s in &names {
            assert!(section.contains(&format!("| {s} | ")), "{section}");
        }
    }
    assert!(stdout.contains("packing guards: "), "{stdout}");
    let plot = std::fs::read_to_string(&svg).expect("svg written");
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    // Two lines (utilization and time) per strategy.
    assert_eq!(plot.matches("<polyline").count(), 2 * names.len());
}

#[test]
fn smoke_guards_fail_outside_their_range() {
    // Every guard's upper limit lowered to 0.5: no packing uses fewer
    // nodes than its lower bound, so every checked ratio is outside.
    let out = sim(&["--smoke", "--smoke-max-ratio", "0.5"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stdout}");
    assert!(stderr.contains("packing guards failed"), "{stderr}");
    assert!(
        stderr.contains("tetris online ratio on heterogeneous is 1."),
        "{stderr}"
    );
    assert!(stderr.contains(", 0.500]"), "{stderr}");
    assert!(
        stderr.contains("offline ratio on trace:alibaba is "),
        "{stderr}"
    );
}

#[test]
fn one_trace_workload_with_a_strategy() {
    let out = sim(&[
        "--workload",
        "trace:google",
        "--nodes",
        "50",
        "--strategy",
        "tetris",
        "--repeat",
        "1",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        stdout.contains("# sim: trace-like google, 50 nodes, filled to 80%, seed 1"),
        "{stdout}"
    );
    assert!(stdout.contains("| tetris | "), "{stdout}");
    let out = sim(&["--workload", "trace:borg"]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("unknown trace preset"), "{stderr}");
}

#[test]
fn file_workloads() {
    let dir = tempfile::tempdir().expect("temp dir");
    let json = dir.path().join("w.json");
    std::fs::write(
        &json,
        r#"{"nodes": [{"id": "n1", "cpus": 4, "mem": 1024, "attributes": {"zone": "a"}}],
            "tasks": [{"id": "t1", "cpus": 1, "mem": 100},
                      {"id": "t2", "cpus": 1, "mem": 100,
                       "constraints": [{"attribute": "zone", "op": "==", "value": "b"}]}]}"#,
    )
    .expect("write");
    let arg = format!("file:{}", json.display());
    let out = sim(&["--workload", &arg, "--strategy", "tetris"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("| tetris | 1 / 2 |"), "{stdout}");
    assert!(
        stdout.contains("t2: no node fits: 1 filtered by constraints (1 by zone == b)"),
        "{stdout}"
    );

    let (nodes, tasks) = (dir.path().join("n.csv"), dir.path().join("t.csv"));
    std::fs::write(&nodes, "id,cpus,mem\nn1,4,1024\n").expect("write");
    std::fs::write(&tasks, "id,cpus,mem\nt1,1,100\nt2,8,100\n").expect("write");
    let arg = format!("file:{},{}", nodes.display(), tasks.display());
    let out = sim(&["--workload", &arg, "--strategy", "first-fit"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(
        stdout.contains("t2: no node fits: 1 short on cpus"),
        "{stdout}"
    );

    std::fs::write(
        &json,
        "{\"nodes\": [{\"id\": \"n1\",\n \"cpus\": -4, \"mem\": 1}]}",
    )
    .expect("write");
    let out = sim(&["--workload", &format!("file:{}", json.display())]);
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("line 2"), "{stderr}");
    assert!(stderr.contains("must not be negative"), "{stderr}");

    let out = sim(&["--strategy", "random"]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown strategy"));
}
