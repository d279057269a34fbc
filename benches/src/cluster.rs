//! The three masters: in this process (`crate::MasterGroup`, as
//! `raft_bench` does) or
//! as `berth master` processes, with their data in a temporary directory.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{operator, request};
use anyhow::{Context, bail};
use berth_proto as pb;

use crate::stats::{self, Rss};

/// How long a new group may take to elect a leader that commits.
pub const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stopping a master may take.
pub const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// A `berth master` process, killed when dropped.
#[derive(Debug)]
struct Daemon(Child);

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[derive(Debug)]
enum Masters {
    InProcess(crate::MasterGroup),
    Processes(Vec<Daemon>),
}

/// The masters of one run.
#[derive(Debug)]
pub struct Cluster {
    /// API addresses, by Raft id - 1.
    pub addrs: Vec<String>,
    masters: Masters,
    pub dir: tempfile::TempDir,
}

/// Master settings for the run. Agents are pinged every 2 s (the default)
/// and have 15 s to answer; offers last 60 s.
fn tuning(config: &mut berth_master::MasterConfig) {
    config.agent_ping_interval = Duration::from_secs(2);
    config.agent_ping_timeout = Duration::from_secs(15);
}

impl Cluster {
    /// Starts `n` masters in this process.
    pub async fn in_process(
        n: usize,
        base: &Path,
        offer_limit: Option<usize>,
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("berth-load-")
            .tempdir_in(base)?;
        let masters = crate::MasterGroup::start(n, dir.path(), |config| {
            tuning(config);
            if offer_limit.is_some() {
                config.offer_limit = offer_limit;
            }
        })
        .await?;
        Ok(Cluster {
            addrs: masters.addrs.clone(),
            masters: Masters::InProcess(masters),
            dir,
        })
    }

    /// Starts `n` `berth master` processes of the binary `berth`; their
    /// logs (`BERTH_LOG=warn`) go to `master-<id>.log` in the run's
    /// directory.
    pub fn processes(
        n: usize,
        berth: &Path,
        base: &Path,
        offer_limit: Option<usize>,
    ) -> anyhow::Result<Cluster> {
        let dir = tempfile::Builder::new()
            .prefix("berth-load-")
            .tempdir_in(base)?;
        let mut addrs = Vec::new();
        for _ in 0..n {
            // The port is free now; the master binds it a moment later.
            let port = std::net::TcpListener::bind("127.0.0.1:0")?
                .local_addr()?
                .port();
            addrs.push(format!("127.0.0.1:{port}"));
        }
        let peers: Vec<String> = addrs
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", i + 1))
            .collect();
        let mut daemons = Vec::new();
        for (id, addr) in (1u64..).zip(&addrs) {
            let log = std::fs::File::create(dir.path().join(format!("master-{id}.log")))?;
            let mut cmd = Command::new(berth);
            cmd.arg("master")
                .args(["--id", &id.to_string(), "--listen", addr])
                .arg("--data-dir")
                .arg(dir.path().join(format!("master-{id}")))
                .args(["--agent-ping-interval", "2", "--agent-ping-timeout", "15"])
                .env("BERTH_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log);
            if n > 1 {
                cmd.args(["--peers", &peers.join(",")]);
            }
            if let Some(limit) = offer_limit {
                cmd.args(["--offer-limit", &limit.to_string()]);
            }
            let child = cmd
                .spawn()
                .with_context(|| format!("cannot start {}", berth.display()))?;
            daemons.push(Daemon(child));
        }
        Ok(Cluster {
            addrs,
            masters: Masters::Processes(daemons),
            dir,
        })
    }

    /// The process id of master `index`, when it is a process.
    fn pid(&self, index: usize) -> Option<u32> {
        match &self.masters {
            Masters::Processes(d) => d.get(index).map(|d| d.0.id()),
            Masters::InProcess(_) => None,
        }
    }

    /// The resident set of master `index` (of this whole process for
    /// in-process masters).
    pub fn rss(&self, index: usize) -> Option<Rss> {
        match &self.masters {
            Masters::Processes(_) => stats::rss(Some(self.pid(index)?)),
            Masters::InProcess(_) => stats::rss(None),
        }
    }

    /// CPU time used by master `index` so far (separate processes only).
    pub fn cpu_time(&self, index: usize) -> Option<Duration> {
        stats::cpu_time(Some(self.pid(index)?))
    }

    /// Whether every master process is still running (always true in
    /// process).
    pub fn alive(&mut self) -> Result<(), String> {
        if let Masters::Processes(daemons) = &mut self.masters {
            for (i, d) in daemons.iter_mut().enumerate() {
                if let Ok(Some(status)) = d.0.try_wait() {
                    return Err(format!("master {} exited: {status}", i + 1));
                }
            }
        }
        Ok(())
    }

    /// Waits until some master leads and commits a write; returns its
    /// index in `addrs`.
    pub async fn wait_for_leader(&mut self) -> anyhow::Result<usize> {
        let deadline = Instant::now() + LEADER_TIMEOUT;
        let mut last_error = String::from("no leader yet");
        while Instant::now() < deadline {
            if let Err(e) = self.alive() {
                bail!("{e}; see the logs in {}", self.dir.path().display());
            }
            for (i, addr) in self.addrs.iter().enumerate() {
                match leads_and_commits(addr, i as u64 + 1).await {
                    Ok(true) => return Ok(i),
                    Ok(false) => {}
                    Err(e) => last_error = e.to_string(),
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("no leader within {LEADER_TIMEOUT:?}: {last_error}")
    }

    /// The index of the current leader as the masters see it, if any.
    pub async fn leader(&self) -> Option<usize> {
        for addr in &self.addrs {
            let Ok(mut client) = operator(addr).await else {
                continue;
            };
            if let Ok(l) = client.get_leader(request(pb::Empty {})).await {
                let id = l.into_inner().raft_id;
                if id != 0 {
                    return usize::try_from(id - 1).ok();
                }
            }
        }
        None
    }

    /// Stops every master.
    pub async fn stop(self) {
        match self.masters {
            Masters::InProcess(mut m) => crate::stop_masters(&mut m, STOP_TIMEOUT).await,
            // Dropping kills them.
            Masters::Processes(daemons) => drop(daemons),
        }
    }

    /// The masters' addresses, the leader (index `leader`) first.
    pub fn leader_first(&self, leader: usize) -> Vec<String> {
        let mut masters = vec![self.addrs[leader].clone()];
        masters.extend(
            (0..self.addrs.len())
                .filter(|i| *i != leader)
                .map(|i| self.addrs[i].clone()),
        );
        masters
    }

    /// Waits until `agents` agents have registered (per `counters`), at
    /// most `limit` since `started`; returns how long it took since then.
    ///
    /// # Errors
    /// When they did not in time, or a master stopped.
    pub async fn wait_registered(
        &mut self,
        counters: &crate::stats::Counters,
        agents: usize,
        started: tokio::time::Instant,
        limit: Duration,
    ) -> anyhow::Result<Duration> {
        use crate::stats::C;
        while counters.get(C::AgentsRegistered) < agents as u64 {
            if started.elapsed() >= limit {
                bail!(
                    "only {} of {agents} agents registered within {} s",
                    counters.get(C::AgentsRegistered),
                    limit.as_secs()
                );
            }
            self.alive().map_err(anyhow::Error::msg)?;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let took = started.elapsed();
        eprintln!("{agents} agents registered in {:.1} s", took.as_secs_f64());
        Ok(took)
    }

    /// Where the run's data and logs are.
    pub fn path(&self) -> PathBuf {
        self.dir.path().to_path_buf()
    }

    /// What key-value namespace `namespace` holds: its keys, and their
    /// keys' and values' bytes.
    ///
    /// # Errors
    /// When the store cannot be read.
    pub async fn namespace_size(&self, namespace: &str) -> anyhow::Result<(usize, u64)> {
        let kv = berth_sdk::kv::KvClient::connect(
            self.addrs.clone(),
            namespace,
            berth_sdk::kv::KvOptions::default(),
        )
        .await?;
        let (entries, _) = kv.list("").await?;
        let bytes = entries
            .iter()
            .map(|e| (e.key.len() + e.value.len()) as u64)
            .sum();
        Ok((entries.len(), bytes))
    }
}

/// Whether the master at `addr` (Raft id `id`) leads and has taken over
/// (its no-op barrier committed, so it answers writes).
async fn leads_and_commits(addr: &str, id: u64) -> anyhow::Result<bool> {
    let mut client = operator(addr).await?;
    let leader = client.get_leader(request(pb::Empty {})).await?.into_inner();
    if leader.raft_id != id {
        return Ok(false);
    }
    let probe = pb::SetWeightRequest {
        role: "load-probe".into(),
        weight: 1.0,
    };
    client.set_weight(request(probe)).await?;
    Ok(true)
}
