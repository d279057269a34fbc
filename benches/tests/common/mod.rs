//! What the benches' smoke tests share: running a bench binary with
//! `--smoke --json` and reading its JSON result line.

use std::process::{Command, Output};

/// Runs the bench binary at `path` with `args`.
pub fn run(path: &str, args: &[&str]) -> Output {
    Command::new(path)
        .args(args)
        .output()
        .expect("the bench binary runs")
}

/// A successful run's last JSON line: the parsed result, the line, and the
/// run's stdout and stderr (for failure messages).
pub fn json_result(out: &Output) -> (serde_json::Value, String, String, String) {
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stdout}\n{stderr}");
    let line = stdout
        .lines()
        .rev()
        .find(|l| l.starts_with('{'))
        .unwrap_or_else(|| panic!("no JSON line in\n{stdout}\n{stderr}"))
        .to_owned();
    let r = serde_json::from_str(&line).expect("valid JSON");
    (r, line, stdout, stderr)
}
