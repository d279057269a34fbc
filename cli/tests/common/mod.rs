//! Helpers the process tests share: real `berth` daemons with their logs
//! in a directory, and the operator API's view of the masters.
#![allow(dead_code)] // each test binary uses a part

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_proto as pb;
use berth_tests::ChildProcess;

pub mod ci;
pub mod service;

pub const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// Where a daemon's log goes: `<dir>/<name>.log`, for [`log_tails`].
pub fn log_file(dir: &Path, name: &str) -> Stdio {
    std::fs::File::create(dir.join(format!("{name}.log")))
        .map(Stdio::from)
        .unwrap_or_else(|_| Stdio::null())
}

/// The last lines of every daemon's log in `dir`, for a failure message.
pub fn log_tails(dir: &Path) -> String {
    let mut out = String::new();
    let Ok(entries) = std::fs::read_dir(dir) else {
        return out;
    };
    let mut logs: Vec<_> = entries
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    for log in logs {
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        out.push_str(&format!("== {}\n", log.display()));
        for line in &lines[lines.len().saturating_sub(25)..] {
            out.push_str(line);
            out.push('\n');
        }
    }
    out
}

pub fn master(id: u64, addrs: &[String], dir: &Path) -> ChildProcess {
    let peers: Vec<String> = addrs
        .iter()
        .enumerate()
        .map(|(i, a)| format!("{}={a}", i + 1))
        .collect();
    ChildProcess(
        Command::new(BERTH)
            .args([
                "master",
                "--id",
                &id.to_string(),
                "--peers",
                &peers.join(","),
            ])
            .args([
                "--listen",
                &addrs[usize::try_from(id).expect("small id") - 1],
            ])
            .arg("--data-dir")
            .arg(dir.join(format!("master-{id}")))
            .args([
                "--max-completed-tasks",
                "5000",
                "--agent-ping-interval",
                "0.5",
            ])
            .stdout(Stdio::null())
            .stderr(log_file(dir, &format!("master-{id}")))
            .spawn()
            .expect("berth master starts"),
    )
}

pub async fn operator(
    addr: &str,
) -> Option<pb::operator_client::OperatorClient<tonic::transport::Channel>> {
    let ch = tonic::transport::Channel::from_shared(pb::endpoint_uri(addr))
        .ok()?
        .connect_timeout(Duration::from_millis(300))
        .connect()
        .await
        .ok()?;
    Some(pb::operator_client::OperatorClient::new(ch))
}

/// The Raft id of the leader, as any live master sees it.
pub async fn leader(addrs: &[String]) -> Option<u64> {
    for a in addrs {
        if let Some(mut op) = operator(a).await
            && let Ok(l) = op.get_leader(pb::Empty {}).await
        {
            let l = l.into_inner();
            if l.raft_id != 0 {
                return Some(l.raft_id);
            }
        }
    }
    None
}

/// The master that says it leads (it took over and serves), with its view.
pub async fn leading(addrs: &[String]) -> Option<(usize, pb::LeaderInfo)> {
    for (i, a) in addrs.iter().enumerate() {
        if let Some(mut op) = operator(a).await
            && let Ok(Ok(l)) =
                tokio::time::timeout(Duration::from_millis(500), op.get_leader(pb::Empty {})).await
        {
            let l = l.into_inner();
            if l.leading_since > 0.0 {
                return Some((i, l));
            }
        }
    }
    None
}

pub fn unix_now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

pub fn signal(child: &ChildProcess, sig: &str) {
    let status = Command::new("kill")
        .args([&format!("-{sig}"), &child.0.id().to_string()])
        .status()
        .expect("kill runs");
    assert!(status.success(), "kill -{sig}");
}

pub fn agent(addrs: &[String], dir: &Path, n: usize) -> ChildProcess {
    agent_with(addrs, dir, n, &["--resources", "cpus:16;mem:16384"])
}

/// Agent `n` with `args` (its resources and the like).
pub fn agent_with(addrs: &[String], dir: &Path, n: usize, args: &[&str]) -> ChildProcess {
    ChildProcess(
        Command::new(BERTH)
            .args([
                "agent",
                "--master",
                &addrs.join(","),
                "--listen",
                "127.0.0.1:0",
            ])
            .arg("--work-dir")
            .arg(dir.join(format!("agent-{n}")))
            .args(args)
            .stdout(Stdio::null())
            .stderr(log_file(dir, &format!("agent-{n}")))
            .spawn()
            .expect("berth agent starts"),
    )
}

/// A daemon stopped with SIGTERM when dropped (also when the test
/// panics), given 10 s to end before the SIGKILL of [`ChildProcess`]'s
/// drop: an agent started with `--kill-tasks-on-shutdown` then leaves no
/// task behind.
pub struct TermOnDrop(pub ChildProcess);

impl Drop for TermOnDrop {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-TERM", &self.0.0.id().to_string()])
            .status();
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < deadline {
            if matches!(self.0.0.try_wait(), Ok(Some(_))) {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}
