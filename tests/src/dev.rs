//! `berth dev` as a child process of a test, and reading the HTTP answers
//! of what it serves.

use std::ffi::OsString;
use std::io::{BufRead as _, BufReader};
use std::path::Path;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::time::{Duration, Instant};

/// A `berth dev` child process on ephemeral ports (master, agent, service
/// API, router admin, job API), its data in a temporary directory, killed when
/// dropped.
#[derive(Debug)]
pub struct BerthDev {
    /// The process.
    pub child: Child,
    /// The master's address, from the banner.
    pub master: String,
    /// The service framework's API (`http://…`), from the banner.
    pub service: String,
    /// The job framework's API (`http://…`), from the banner.
    pub jobs: String,
    berth: String,
    _dir: tempfile::TempDir,
}

impl BerthDev {
    /// Starts `berth dev` (the binary at `berth`) with `--resources
    /// resources` and its agent's tasks killed when it stops, with `path`
    /// as its `PATH` when given (its agent's process tasks inherit it);
    /// returns once its agent has registered.
    ///
    /// # Panics
    /// If it does not start, print its addresses or register its agent
    /// within 30 s.
    #[must_use]
    pub fn start(berth: &str, resources: &str, path: Option<OsString>) -> BerthDev {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut cmd = Command::new(berth);
        cmd.args(["dev", "--listen", "127.0.0.1:0"])
            .args(["--agent-listen", "127.0.0.1:0"])
            .args(["--service-listen", "127.0.0.1:0"])
            .args(["--router-admin", "127.0.0.1:0"])
            .args(["--jobs-listen", "127.0.0.1:0"])
            .arg("--data-dir")
            .arg(dir.path().join("berth"))
            .args(["--resources", resources, "--kill-tasks-on-shutdown"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        let mut child = cmd.spawn().expect("berth dev starts");
        let stdout = child.stdout.take().expect("piped stdout");
        // Keep reading stdout for the life of the child, so it never writes
        // to a closed pipe; hand the addresses over once seen.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                for name in ["master:", "service:", "jobs:"] {
                    if let Some(rest) = line.trim().strip_prefix(name)
                        && let Some(addr) = rest.split_whitespace().next()
                    {
                        let _ = tx.send(addr.to_string());
                    }
                }
            }
        });
        let master = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("berth dev prints the master address");
        let service = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("berth dev prints the service framework's address");
        let jobs = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("berth dev prints the job framework's address");
        let dev = BerthDev {
            child,
            master,
            service,
            jobs,
            berth: berth.to_owned(),
            _dir: dir,
        };
        dev.wait_for_agent();
        dev
    }

    /// `berth ARGS` with `BERTH_MASTER`, `BERTH_SERVICE` and `BERTH_JOBS`
    /// set to this cluster's.
    ///
    /// # Panics
    /// If the binary cannot be run.
    #[must_use]
    pub fn berth(&self, args: &[&str]) -> Output {
        Command::new(&self.berth)
            .args(args)
            .env("BERTH_MASTER", &self.master)
            .env("BERTH_SERVICE", &self.service)
            .env("BERTH_JOBS", &self.jobs)
            .output()
            .expect("berth runs")
    }

    fn wait_for_agent(&self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let out = self.berth(&["node", "list", "--json"]);
            if out.status.success()
                && String::from_utf8_lossy(&out.stdout).contains("\"connected\": true")
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("the agent of berth dev did not register within 30 s");
    }

    /// Sends SIGTERM and waits for the exit.
    ///
    /// # Panics
    /// If it has not stopped within 30 s.
    pub fn terminate(&mut self) -> ExitStatus {
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

impl Drop for BerthDev {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// `PATH` with `dir` first.
#[must_use]
pub fn path_with(dir: &Path) -> OsString {
    let rest = std::env::var_os("PATH").unwrap_or_default();
    std::env::join_paths(std::iter::once(dir.to_path_buf()).chain(std::env::split_paths(&rest)))
        .unwrap_or(rest)
}
