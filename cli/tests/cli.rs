//! Tests of the real `berth` binary: `berth dev` as a child process, then
//! admin commands and `berth run` against it.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A `berth dev` child process, stopped with SIGTERM on drop.
struct Dev {
    child: Child,
    master: String,
    _dir: tempfile::TempDir,
}

impl Dev {
    fn start() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut child = Command::new(BERTH)
            .args([
                "dev",
                "--listen",
                "127.0.0.1:0",
                "--agent-listen",
                "127.0.0.1:0",
            ])
            .arg("--data-dir")
            .arg(dir.path().join("berth"))
            .args([
                "--resources",
                "cpus:2;mem:1024;disk:1000;ports:[31000-31100]",
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth dev starts");
        let stdout = child.stdout.take().expect("piped stdout");
        let mut master = None;
        for line in BufReader::new(stdout).lines() {
            let line = line.expect("utf-8 output");
            if let Some(rest) = line.trim().strip_prefix("master:") {
                master = rest.split_whitespace().next().map(str::to_string);
                break;
            }
        }
        let master = master.expect("berth dev prints the master address");
        let dev = Self {
            child,
            master,
            _dir: dir,
        };
        dev.wait_for_agent();
        dev
    }

    fn berth(&self, args: &[&str]) -> Output {
        Command::new(BERTH)
            .args(args)
            .env("BERTH_MASTER", &self.master)
            .output()
            .expect("berth runs")
    }

    fn wait_for_agent(&self) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            let out = self.berth(&["node", "list", "--json"]);
            if out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("\"connected\": true")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the agent of berth dev did not register within 20 s");
    }

    fn terminate(&mut self) -> std::process::ExitStatus {
        let _ = Command::new("kill")
            .args(["-TERM", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().expect("wait") {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "berth dev did not stop on SIGTERM within 30 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Dev {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn dev_runs_a_command_and_reports_its_exit_code() {
    let mut dev = Dev::start();

    let out = dev.berth(&["run", "--", "sh", "-c", "echo hi; exit 3"]);
    assert_eq!(text(&out.stdout), "hi\n", "stderr: {}", text(&out.stderr));
    assert_eq!(out.status.code(), Some(3), "stderr: {}", text(&out.stderr));

    let out = dev.berth(&["run", "--", "echo", "hello"]);
    assert_eq!(text(&out.stdout), "hello\n");
    assert!(out.status.success());

    let out = dev.berth(&["run", "--", "sh", "-c", "echo to-stderr >&2"]);
    assert_eq!(
        text(&out.stderr)
            .lines()
            .filter(|l| *l == "to-stderr")
            .count(),
        1,
        "{}",
        text(&out.stderr)
    );

    // The admin commands see the agent and the finished tasks.
    let out = dev.berth(&["node", "list"]);
    assert!(out.status.success());
    let nodes = text(&out.stdout);
    assert!(nodes.starts_with("ID"), "{nodes}");
    assert!(
        nodes.contains("ACTIVE") && nodes.contains("cpus:2;mem:1024"),
        "{nodes}"
    );

    let out = dev.berth(&["task", "list", "--all"]);
    let tasks = text(&out.stdout);
    assert!(
        tasks.contains("FINISHED") && tasks.contains("FAILED"),
        "{tasks}"
    );
    let failed_id = tasks
        .lines()
        .find(|l| l.contains("FAILED"))
        .and_then(|l| l.split_whitespace().next())
        .expect("a failed task row")
        .to_string();
    let out = dev.berth(&["task", "log", &failed_id]);
    assert_eq!(text(&out.stdout), "hi\n");

    let out = dev.berth(&["state", "--json"]);
    let state: serde_json::Value = serde_json::from_slice(&out.stdout).expect("state is JSON");
    assert_eq!(state["agents"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        state["frameworks"].as_array().map(Vec::len),
        Some(0),
        "berth run tears its framework down"
    );

    let status = dev.terminate();
    assert!(
        status.success(),
        "berth dev exits 0 on SIGTERM, got {status:?}"
    );
}

#[test]
fn malformed_arguments_get_specific_errors() {
    let cases: &[(&[&str], &str)] = &[
        (&["run", "--cpus", "-1", "--", "true"], "negative"),
        (&["run", "--cpus", "NaN", "--", "true"], "finite"),
        (&["run", "--mem", "1e300", "--", "true"], "large"),
        (&["run"], "required"),
        (&["agent", "--resources", "cpus:x"], "cpus"),
        (&["agent", "--resources", "bogus:1"], "unknown resource"),
        (&["agent", "--reserve", "cpus:1"], "ROLE=RESOURCES"),
        (&["master", "--agent-ping-timeout", "-3"], "positive"),
        (&["master", "--listen", "nowhere"], "invalid"),
        (&["task", "log"], "required"),
    ];
    for (args, needle) in cases {
        let out = Command::new(BERTH)
            .args(*args)
            .output()
            .expect("berth runs");
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        let err = text(&out.stderr);
        assert!(
            err.contains(needle),
            "{args:?}: {err:?} does not mention {needle:?}"
        );
    }
    // A master that is not there is a plain error, not a hang or a panic.
    let out = Command::new(BERTH)
        .args(["node", "list", "--master", "127.0.0.1:1"])
        .output()
        .expect("berth runs");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("cannot reach master"),
        "{}",
        text(&out.stderr)
    );
}
