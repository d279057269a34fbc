//! The simulator's `--smoke` run, as CI runs it: every strategy reports,
//! the SVG is written, file workloads are read and bad ones refused.
//! Nothing here is timed.

use std::process::{Command, Output};

fn sim(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_sim"))
        .args(args)
        .output()
        .expect("the sim binary runs")
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
    for s in ["first-fit", "best-fit", "worst-fit", "tetris"] {
        assert!(
            stdout.contains(&format!("| {s} | 3,000 / 3,000 |")),
            "{stdout}"
        );
    }
    assert!(stdout.contains("lower bound"), "{stdout}");
    let plot = std::fs::read_to_string(&svg).expect("svg written");
    assert!(plot.starts_with("<svg") && plot.trim_end().ends_with("</svg>"));
    assert_eq!(plot.matches("<polyline").count(), 8);
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
