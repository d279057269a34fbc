//! `berth dev` with `berth ci serve` next to it, for the CI process tests.

use std::path::Path;
use std::process::{Command, Stdio};

use berth_tests::{ChildProcess, free_port};

use super::BERTH;

/// Runs `berth ARGS`: its exit code and its stdout then stderr.
pub fn berth(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BERTH).args(args).output().expect("berth runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

/// `berth ci run DIR` with process jobs on its own small cluster, and
/// `extra` arguments: its exit code and its stdout then stderr.
pub fn ci_run(dir: &Path, extra: &[&str]) -> (Option<i32>, String) {
    let mut args = vec![
        "ci",
        "run",
        dir.to_str().expect("a UTF-8 path"),
        "--no-docker",
        "--resources",
        "cpus:4;mem:4096;disk:10000",
    ];
    args.extend_from_slice(extra);
    berth(&args)
}

/// `berth dev` and `berth ci serve` next to it, with their data in `dir`;
/// returns them once the CI framework answers, and its URL.
pub fn start_ci_daemon(dir: &Path) -> (ChildProcess, ChildProcess, String) {
    let server = format!("http://127.0.0.1:{}", free_port());
    let (dev, master) = start_dev(dir);
    let serve = ChildProcess(
        Command::new(BERTH)
            .args(["ci", "serve", "--log-retention", "30d", "--master", &master])
            .arg("--listen")
            .arg(server.trim_start_matches("http://"))
            // A relative data directory, as the default one is.
            .args(["--data-dir", "ci"])
            .current_dir(dir)
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth ci serve starts"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let (code, _) = berth(&["ci", "list", "--server", &server]);
        if code == Some(0) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "berth ci serve did not answer"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    (dev, serve, server)
}

/// `berth dev` alone (a master and an agent), with its data in `dir`;
/// returns it once its master answers, and the master's address.
pub fn start_dev(dir: &Path) -> (ChildProcess, String) {
    let master = format!("127.0.0.1:{}", free_port());
    let agent = format!("127.0.0.1:{}", free_port());
    let dev = ChildProcess(
        Command::new(BERTH)
            .args(["dev", "--listen", &master, "--agent-listen", &agent])
            // Other tests' berth dev may run at once: no fixed ports.
            .args([
                "--service-listen",
                "127.0.0.1:0",
                "--router-admin",
                "127.0.0.1:0",
                "--jobs-listen",
                "127.0.0.1:0",
            ])
            .args(["--no-docker", "--resources", "cpus:4;mem:4096;disk:10000"])
            .arg("--kill-tasks-on-shutdown")
            .arg("--data-dir")
            .arg(dir.join("dev"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth dev starts"),
    );
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while berth(&["framework", "list", "--master", &master]).0 != Some(0) {
        assert!(
            std::time::Instant::now() < deadline,
            "berth dev did not answer"
        );
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    (dev, master)
}
