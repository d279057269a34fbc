//! The daemons: three `berth master` processes (`--id N --peers …`, each
//! its own `--data-dir`) and two `berth agent` processes, started, signalled
//! and restarted with the same arguments, their stderr appended to
//! `logs/<name>.log`.

use std::ffi::OsString;
use std::fs::OpenOptions;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;

use super::net::Net;
use super::{Config, Variant, Violation, observe};

/// Masters and agents of every campaign.
pub(crate) const MASTERS: usize = 3;
pub(crate) const AGENTS: usize = 2;
/// What each agent offers: room for far more than 8 tasks at once.
const AGENT_RESOURCES: &str = "cpus:8;mem:8192";

/// Where a process runs: in the host's network namespace or another.
#[derive(Debug, Clone)]
pub(crate) enum Place {
    Host,
    Ns(String),
}

impl Place {
    /// A command that runs `program` here (`ip netns exec` execs it, so
    /// the child's pid is the program's and signals reach it).
    pub(crate) fn command(&self, program: &Path) -> Command {
        match self {
            Self::Host => Command::new(program),
            Self::Ns(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", ns]).arg(program);
                c
            }
        }
    }
}

/// What does not change during a campaign: addresses, places, paths.
#[derive(Debug)]
pub(crate) struct Topology {
    pub(crate) berth: PathBuf,
    /// One file per run, one line per real execution of its task.
    pub(crate) marks: PathBuf,
    /// Each run's stdout and stderr (`NAME.stdout`, `NAME.stderr`), for
    /// looking into a violation with `--keep`.
    pub(crate) outputs: PathBuf,
    /// Masters' API addresses; master `i` has Raft id `i + 1`.
    pub(crate) masters: Vec<String>,
    /// Agents' API addresses (what they advertise).
    pub(crate) agents: Vec<String>,
    /// Where `berth run`s run.
    pub(crate) clients: Place,
}

impl Topology {
    /// The masters as `berth run --master` and agents take them.
    pub(crate) fn master_list(&self) -> String {
        self.masters.join(",")
    }

    /// The Raft id of the master at index `i`.
    pub(crate) fn raft_id(i: usize) -> u64 {
        u64::try_from(i + 1).unwrap_or(u64::MAX)
    }

    /// The index of the master with Raft id `id`, if it is one of ours.
    pub(crate) fn master_index(&self, id: u64) -> Option<usize> {
        let i = usize::try_from(id).ok()?.checked_sub(1)?;
        (i < self.masters.len()).then_some(i)
    }
}

/// One daemon process, restartable with the same arguments.
#[derive(Debug)]
pub(crate) struct Daemon {
    pub(crate) name: String,
    place: Place,
    berth: PathBuf,
    args: Vec<OsString>,
    log: PathBuf,
    child: Option<Child>,
    frozen: bool,
}

impl Daemon {
    fn start(&mut self) -> anyhow::Result<()> {
        let mut log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .with_context(|| format!("cannot open {}", self.log.display()))?;
        writeln!(
            log,
            "== campaign: {} started at {:.3}",
            self.name,
            super::now()
        )?;
        let child = self
            .place
            .command(&self.berth)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .with_context(|| format!("cannot start {}", self.name))?;
        self.child = Some(child);
        self.frozen = false;
        Ok(())
    }

    fn pid(&self) -> Option<Pid> {
        self.child
            .as_ref()
            .and_then(|c| i32::try_from(c.id()).ok())
            .map(Pid::from_raw)
    }

    /// Whether it runs (started and not killed by the campaign).
    pub(crate) fn is_up(&self) -> bool {
        self.child.is_some()
    }

    /// SIGKILL, and reap it.
    pub(crate) fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.frozen = false;
    }

    /// SIGSTOP: it keeps its sockets open and answers nothing.
    pub(crate) fn freeze(&mut self) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        kill(pid, Signal::SIGSTOP).with_context(|| format!("SIGSTOP {}", self.name))?;
        self.frozen = true;
        Ok(())
    }

    /// SIGCONT after [`Daemon::freeze`].
    pub(crate) fn thaw(&mut self) -> anyhow::Result<()> {
        let pid = self
            .pid()
            .with_context(|| format!("{} is not running", self.name))?;
        kill(pid, Signal::SIGCONT).with_context(|| format!("SIGCONT {}", self.name))?;
        self.frozen = false;
        Ok(())
    }

    /// Starts it again with the same arguments (same data or work dir).
    pub(crate) fn restart(&mut self) -> anyhow::Result<()> {
        self.kill();
        self.start()
    }

    /// If it ended by itself (the campaign did not kill it), how.
    fn exited(&mut self) -> Option<String> {
        let status = self.child.as_mut()?.try_wait().ok()??;
        self.child = None;
        Some(status.to_string())
    }

    /// SIGTERM, then SIGKILL if it is not gone within `grace`.
    async fn stop(&mut self, grace: Duration) {
        let Some(pid) = self.pid() else { return };
        if self.frozen {
            let _ = kill(pid, Signal::SIGCONT);
        }
        let _ = kill(pid, Signal::SIGTERM);
        let deadline = tokio::time::Instant::now() + grace;
        while tokio::time::Instant::now() < deadline {
            if self
                .child
                .as_mut()
                .is_none_or(|c| c.try_wait().ok().flatten().is_some())
            {
                self.child = None;
                return;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        self.kill();
    }

    /// The last `n` lines of its log, without terminal colours.
    fn log_tail(&self, n: usize) -> String {
        let text = super::strip_ansi(&std::fs::read_to_string(&self.log).unwrap_or_default());
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(n)..].join("\n")
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let (Some(pid), true) = (self.pid(), self.frozen) {
            let _ = kill(pid, Signal::SIGCONT);
        }
        self.kill();
    }
}

/// The running cluster. Fields drop in order: daemons before the network
/// they live in.
#[derive(Debug)]
pub(crate) struct Cluster {
    pub(crate) topo: Arc<Topology>,
    pub(crate) masters: Vec<Daemon>,
    pub(crate) agents: Vec<Daemon>,
    pub(crate) net: Option<Net>,
    /// Exits the campaign did not cause, seen so far.
    exits: Vec<Violation>,
}

impl Cluster {
    /// Starts the masters and agents of `config`'s variant and waits until
    /// a leader is elected and both agents are registered.
    ///
    /// # Errors
    /// When a daemon cannot be started or the cluster does not form
    /// within 60 s (with the daemons' log tails).
    pub(crate) async fn start(config: &Config, dir: &Path) -> anyhow::Result<Self> {
        let logs = dir.join("logs");
        let marks = dir.join("marks");
        let outputs = dir.join("runs");
        for d in [&logs, &marks, &outputs] {
            std::fs::create_dir_all(d).with_context(|| format!("cannot create {}", d.display()))?;
        }
        // The partitions variant listens on bridge addresses, which issue
        // 12's safe default refuses without `--insecure`.
        let partitions = config.variant == Variant::Partitions;
        let insecure_master = partitions && has_flag(&config.berth, "master", "--insecure");
        let insecure_agent = partitions && has_flag(&config.berth, "agent", "--insecure");
        let (net, masters, agents, clients) = match config.variant {
            Variant::Processes => {
                let masters = (0..MASTERS)
                    .map(|_| format!("127.0.0.1:{}", crate::free_port()))
                    .collect();
                let agents = (0..AGENTS)
                    .map(|_| format!("127.0.0.1:{}", crate::free_port()))
                    .collect();
                (None, masters, agents, Place::Host)
            }
            Variant::Partitions => {
                let mut nodes: Vec<(String, u8)> = Vec::new();
                for i in 0..MASTERS {
                    nodes.push((master_node(i), 11 + u8::try_from(i)?));
                }
                for i in 0..AGENTS {
                    nodes.push((agent_node(i), 21 + u8::try_from(i)?));
                }
                nodes.push(("cli".into(), 30));
                let named: Vec<(&str, u8)> = nodes.iter().map(|(n, o)| (n.as_str(), *o)).collect();
                let net = Net::create(&named)?;
                let masters = (0..MASTERS)
                    .map(|i| format!("{}:5050", net.node(&master_node(i)).ip))
                    .collect();
                let agents = (0..AGENTS)
                    .map(|i| format!("{}:5051", net.node(&agent_node(i)).ip))
                    .collect();
                let clients = Place::Ns(net.node("cli").ns.clone());
                (Some(net), masters, agents, clients)
            }
        };
        let topo = Arc::new(Topology {
            berth: config.berth.clone(),
            marks,
            outputs,
            masters,
            agents,
            clients,
        });
        let place = |node: String| match &net {
            Some(n) => Place::Ns(n.node(&node).ns.clone()),
            None => Place::Host,
        };
        let peers: Vec<String> = topo
            .masters
            .iter()
            .enumerate()
            .map(|(i, a)| format!("{}={a}", Topology::raft_id(i)))
            .collect();
        let mut master_daemons = Vec::new();
        for (i, addr) in topo.masters.iter().enumerate() {
            let mut args: Vec<OsString> = vec![
                "master".into(),
                "--id".into(),
                Topology::raft_id(i).to_string().into(),
                "--peers".into(),
                peers.join(",").into(),
                "--listen".into(),
                addr.into(),
                "--data-dir".into(),
                dir.join(format!("master-{}", i + 1)).into(),
                "--max-completed-tasks".into(),
                "100000".into(),
            ];
            if let Some(t) = config.agent_ping_timeout {
                args.extend([
                    "--agent-ping-timeout".into(),
                    t.as_secs_f64().to_string().into(),
                ]);
            }
            if insecure_master {
                args.push("--insecure".into());
            }
            master_daemons.push(Daemon {
                name: format!("master-{}", i + 1),
                place: place(master_node(i)),
                berth: config.berth.clone(),
                args,
                log: logs.join(format!("master-{}.log", i + 1)),
                child: None,
                frozen: false,
            });
        }
        let mut agent_daemons = Vec::new();
        for (i, addr) in topo.agents.iter().enumerate() {
            let mut args: Vec<OsString> = vec![
                "agent".into(),
                "--master".into(),
                topo.master_list().into(),
                "--listen".into(),
                addr.into(),
                "--work-dir".into(),
                dir.join(format!("agent-{i}")).into(),
                "--resources".into(),
                AGENT_RESOURCES.into(),
                "--no-docker".into(),
                // Ends tasks left at the campaign's end (SIGTERM); a
                // SIGKILL, the fault, leaves them running as always.
                "--kill-tasks-on-shutdown".into(),
            ];
            if insecure_agent {
                args.push("--insecure".into());
            }
            agent_daemons.push(Daemon {
                name: format!("agent-{i}"),
                place: place(agent_node(i)),
                berth: config.berth.clone(),
                args,
                log: logs.join(format!("agent-{i}.log")),
                child: None,
                frozen: false,
            });
        }
        let mut cluster = Self {
            topo,
            masters: master_daemons,
            agents: agent_daemons,
            net,
            exits: Vec::new(),
        };
        for d in cluster.masters.iter_mut().chain(cluster.agents.iter_mut()) {
            d.start()?;
        }
        if observe::wait_healthy(&mut cluster, Duration::from_secs(60))
            .await
            .is_err()
        {
            bail!(
                "the cluster did not form within 60 s; the daemons' logs end:\n{}",
                cluster.log_tails(30)
            );
        }
        Ok(cluster)
    }

    /// The masters that run and are not frozen, as (index, address).
    pub(crate) fn live_masters(&self) -> Vec<(usize, String)> {
        self.masters
            .iter()
            .enumerate()
            .filter(|(_, d)| d.is_up() && !d.frozen)
            .map(|(i, _)| (i, self.topo.masters[i].clone()))
            .collect()
    }

    /// Records daemons that ended without the campaign killing them and
    /// starts them again (so one crash does not end the campaign).
    pub(crate) fn reap(&mut self) {
        for d in self.masters.iter_mut().chain(self.agents.iter_mut()) {
            if let Some(status) = d.exited() {
                let tail = d.log_tail(15);
                // The campaign sends SIGTERM only when it ends: a daemon
                // that says so was signalled by something else on this
                // machine (a stray `kill` of a reused pid, say).
                let why = if tail.contains("shutting down") {
                    " after a SIGTERM or SIGINT the campaign did not send"
                } else {
                    ""
                };
                self.exits.push(Violation::new(
                    "daemon",
                    format!(
                        "{} exited by itself ({status}){why}; its log ends:\n{tail}",
                        d.name
                    ),
                ));
                if let Err(e) = d.start() {
                    self.exits.push(Violation::new(
                        "daemon",
                        format!("{} could not be started again: {e:#}", d.name),
                    ));
                }
            }
        }
    }

    /// Every exit the campaign did not cause.
    pub(crate) fn unexpected_exits(&mut self) -> Vec<Violation> {
        self.reap();
        std::mem::take(&mut self.exits)
    }

    /// The last `n` lines of every daemon's log.
    pub(crate) fn log_tails(&self, n: usize) -> String {
        let mut out = String::new();
        for d in self.masters.iter().chain(&self.agents) {
            out.push_str(&format!(
                "== {} ({})\n{}\n",
                d.name,
                d.log.display(),
                d.log_tail(n)
            ));
        }
        out
    }

    /// Stops everything gracefully (agents first, which kill their tasks),
    /// then removes the network.
    pub(crate) async fn shutdown(mut self) {
        for a in &mut self.agents {
            a.stop(Duration::from_secs(10)).await;
        }
        for m in &mut self.masters {
            m.stop(Duration::from_secs(10)).await;
        }
        if let Some(net) = self.net.as_mut()
            && let Err(e) = net.heal_all()
        {
            eprintln!("campaign: healing links at the end: {e:#}");
        }
    }
}

/// The network node of master `i`.
pub(crate) fn master_node(i: usize) -> String {
    format!("m{}", i + 1)
}

/// The network node of agent `i`.
pub(crate) fn agent_node(i: usize) -> String {
    format!("a{i}")
}

/// Whether `berth SUB` has `flag` (builds from before a flag have none).
fn has_flag(berth: &Path, sub: &str, flag: &str) -> bool {
    Command::new(berth)
        .args([sub, "--help"])
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).contains(flag))
}
