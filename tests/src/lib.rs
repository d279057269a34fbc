//! Test harness for berth's end-to-end tests: an in-process cluster (one
//! master, any number of agents) on ephemeral loopback ports, a master that
//! can be restarted on the same port and data directory, and a TCP proxy
//! that can cut an agent off from its master.
//!
//! Everything binds 127.0.0.1:0 and lives in a temporary directory that is
//! removed when the [`Cluster`] is dropped. [`files`] is an HTTP file
//! server for the fetcher and uploader tests.
//!
//! Also here: [`RaftCluster`] (several in-process masters as one Raft
//! group with a shared fault-injecting transport; masters stopped, started
//! and joined), [`Proxy`] (the TCP proxy), raw gRPC frameworks
//! ([`subscribe_raw`], for input the SDK would refuse to build), helpers
//! that start real `berth master` and `berth agent` processes, and
//! [`campaign`], the fault campaign of issue 12 (`docs/fault-campaign.md`).

pub mod campaign;
pub mod dev;
pub mod files;
pub mod http;

pub use dev::{BerthDev, path_with};
pub use http::dechunk;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use berth_proto as pb;
use berth_scheduler_core::Resources;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Mutex;
use tokio::task::JoinHandle;
use tonic::transport::Channel;

/// Master settings tuned for fast tests.
#[must_use]
pub fn fast_master_config(data_dir: std::path::PathBuf) -> berth_master::MasterConfig {
    let mut c = berth_master::MasterConfig::new(data_dir);
    c.agent_ping_interval = Duration::from_millis(200);
    c.agent_ping_timeout = Duration::from_secs(2);
    c.heartbeat_interval = Duration::from_millis(500);
    c.allocation_interval = Duration::from_millis(200);
    c.offer_timeout = Some(Duration::from_secs(30));
    c.default_refuse = Duration::from_millis(500);
    c
}

/// A child process (a `berth` binary a test started), killed and reaped
/// when dropped, also when the test panics.
#[derive(Debug)]
pub struct ChildProcess(pub std::process::Child);

impl Drop for ChildProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `berth master` (the binary at `berth`) alone on a free port of
/// 127.0.0.1, its data under `data_dir`, quiet; returns it and its address.
///
/// # Panics
/// If the binary cannot be started.
#[must_use]
pub fn berth_master(berth: &str, data_dir: &std::path::Path) -> (ChildProcess, String) {
    let addr = format!("127.0.0.1:{}", free_port());
    let child = std::process::Command::new(berth)
        .args(["master", "--listen", &addr])
        .arg("--data-dir")
        .arg(data_dir)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("berth master starts");
    (ChildProcess(child), addr)
}

/// Starts `berth agent` (the binary at `berth`) attached to `master`,
/// listening on a free port, its files under `work_dir`, with `args`
/// added (resources and the like), quiet.
///
/// # Panics
/// If the binary cannot be started.
#[must_use]
pub fn berth_agent(
    berth: &str,
    master: &str,
    work_dir: &std::path::Path,
    args: &[&str],
) -> ChildProcess {
    let child = std::process::Command::new(berth)
        .args(["agent", "--master", master, "--listen", "127.0.0.1:0"])
        .arg("--work-dir")
        .arg(work_dir)
        .args(args)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("berth agent starts");
    ChildProcess(child)
}

/// A status's state (`Unspecified` for a number this build does not know).
#[must_use]
pub fn task_state(s: &pb::TaskStatus) -> pb::TaskState {
    pb::TaskState::try_from(s.state).unwrap_or(pb::TaskState::Unspecified)
}

/// Every file under `dir`, at any depth (directories that cannot be read
/// are passed over).
#[must_use]
pub fn files_under(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let Ok(entries) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in entries.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

mod ports;
pub use ports::free_port;
mod repos;
pub use repos::{dir_files, git, git_repo, git_repo_of_dir};

/// A master or an agent running in this process ([`berth_local`], the
/// launcher `berth dev` and the benchmarks use too).
pub use berth_local::{Daemon, StopError};
/// A master running in this process.
pub type MasterHandle = berth_local::Master;
/// An agent running in this process.
pub type AgentHandle = berth_local::Agent;

/// How long the harness waits for a daemon to stop before failing the
/// test.
const STOP_LIMIT: Duration = Duration::from_secs(20);

/// Starts a master on `addr` (port 0 for any), retrying the bind briefly
/// while a just-stopped master releases the port.
///
/// # Errors
/// If the port cannot be bound.
pub async fn start_master(
    addr: SocketAddr,
    config: berth_master::MasterConfig,
) -> anyhow::Result<MasterHandle> {
    let listener = bind_retrying(addr).await?;
    start_master_on(listener, config)
}

/// Starts a master on an already bound listener.
///
/// # Errors
/// If the listener has no local address.
pub fn start_master_on(
    listener: TcpListener,
    config: berth_master::MasterConfig,
) -> anyhow::Result<MasterHandle> {
    Ok(berth_local::master(listener, config)?.with_stop_limit(STOP_LIMIT))
}

/// Starts an agent with `config` on a free port of 127.0.0.1 (its
/// advertise address is set to the listener's).
///
/// # Errors
/// If the port cannot be bound.
pub async fn start_agent(mut config: berth_agent::AgentConfig) -> anyhow::Result<AgentHandle> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    config.advertise_address = Some(listener.local_addr()?.to_string());
    Ok(berth_local::agent(listener, config)?.with_stop_limit(STOP_LIMIT))
}

/// Agent settings tuned for fast tests: fixed resources, quick resends.
#[must_use]
pub fn fast_agent_config(
    master: &str,
    work_dir: std::path::PathBuf,
    resources: &str,
) -> berth_agent::AgentConfig {
    fast_agent_config_multi(vec![master.to_string()], work_dir, resources)
}

/// [`fast_agent_config`] for an agent that knows several masters (it
/// cycles through them and follows leader redirects).
#[must_use]
pub fn fast_agent_config_multi(
    masters: Vec<String>,
    work_dir: std::path::PathBuf,
    resources: &str,
) -> berth_agent::AgentConfig {
    let mut c = berth_agent::AgentConfig::new(masters, work_dir);
    c.resources = Some(
        resources
            .parse::<Resources>()
            .expect("test resources are valid"),
    );
    c.default_kill_grace = Duration::from_secs(1);
    c.master_timeout = Duration::from_secs(3);
    c.status_retry_initial = Duration::from_millis(500);
    // Tests end by stopping their agents: leave no task behind. These
    // agents run process tasks only (the Docker tests set their own).
    c.kill_tasks_on_shutdown = true;
    c.docker = false;
    c
}

/// A master and agents in one process, with a temporary data directory.
#[derive(Debug)]
pub struct Cluster {
    /// The master.
    pub master: MasterHandle,
    /// The agents.
    pub agents: Vec<AgentHandle>,
    /// Temporary directory holding every data and work directory.
    pub dir: tempfile::TempDir,
}

impl Cluster {
    /// Starts a master and one agent per entry of `agent_resources`.
    ///
    /// # Errors
    /// If anything fails to start.
    pub async fn start(agent_resources: &[&str]) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let master = start_master(
            "127.0.0.1:0".parse()?,
            fast_master_config(dir.path().join("master")),
        )
        .await?;
        let mut cluster = Self {
            master,
            agents: Vec::new(),
            dir,
        };
        for r in agent_resources {
            let addr = cluster.master.addr.to_string();
            cluster.add_agent(&addr, r).await?;
        }
        Ok(cluster)
    }

    /// Starts another agent attached to `master` (the master's address, or a
    /// proxy in front of it).
    ///
    /// # Errors
    /// If it fails to start.
    pub async fn add_agent(
        &mut self,
        master: &str,
        resources: &str,
    ) -> anyhow::Result<&AgentHandle> {
        let work = self.dir.path().join(format!("agent-{}", self.agents.len()));
        let agent = start_agent(fast_agent_config(master, work, resources)).await?;
        self.agents.push(agent);
        Ok(self.agents.last().expect("just pushed"))
    }

    /// Starts another agent from a [`fast_agent_config`] adjusted by
    /// `adjust` (e.g. to enable Docker).
    ///
    /// # Errors
    /// If it fails to start.
    pub async fn add_agent_with(
        &mut self,
        resources: &str,
        adjust: impl FnOnce(&mut berth_agent::AgentConfig),
    ) -> anyhow::Result<&AgentHandle> {
        let work = self.dir.path().join(format!("agent-{}", self.agents.len()));
        let mut config = fast_agent_config(&self.master_addr(), work, resources);
        adjust(&mut config);
        let agent = start_agent(config).await?;
        self.agents.push(agent);
        Ok(self.agents.last().expect("just pushed"))
    }

    /// The master's address as "host:port".
    #[must_use]
    pub fn master_addr(&self) -> String {
        self.master.addr.to_string()
    }

    /// Stops the master and starts it again on the same port and data.
    ///
    /// # Errors
    /// If it fails to stop or start.
    pub async fn restart_master(&mut self) -> anyhow::Result<()> {
        let addr = self.master.addr;
        self.master.stop().await?;
        self.master =
            start_master(addr, fast_master_config(self.dir.path().join("master"))).await?;
        Ok(())
    }

    /// An operator client.
    ///
    /// # Errors
    /// If the master cannot be reached.
    pub async fn operator(&self) -> anyhow::Result<pb::operator_client::OperatorClient<Channel>> {
        let ch = Channel::from_shared(pb::endpoint_uri(&self.master_addr()))?
            .connect()
            .await?;
        Ok(pb::operator_client::OperatorClient::new(ch))
    }

    /// Waits until `n` agents are registered and connected.
    ///
    /// # Errors
    /// If that does not happen within `timeout`.
    pub async fn wait_agents(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<pb::AgentView>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Ok(mut op) = self.operator().await
                && let Ok(list) = op.list_agents(pb::Empty {}).await
            {
                let agents = list.into_inner().agents;
                if agents.iter().filter(|a| a.connected).count() >= n {
                    return Ok(agents);
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{n} agents did not connect within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Binds `addr`, retrying briefly while a just-closed listener releases it.
async fn bind_retrying(addr: SocketAddr) -> anyhow::Result<TcpListener> {
    let mut last = None;
    for _ in 0..50 {
        match TcpListener::bind(addr).await {
            Ok(l) => return Ok(l),
            Err(e) => last = Some(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    Err(last.map_or_else(|| anyhow::anyhow!("bind failed"), Into::into))
        .with_context(|| format!("bind {addr}"))
}

/// A TCP proxy on 127.0.0.1 that forwards to a target until it is cut.
///
/// Cutting closes every open connection and refuses new ones (accepted and
/// closed at once), which is what a network partition looks like to both
/// ends once their keepalives or pings fail.
#[derive(Debug)]
pub struct Proxy {
    /// The proxy's own address.
    pub addr: SocketAddr,
    cut: Arc<AtomicBool>,
    conns: Arc<Mutex<Vec<JoinHandle<()>>>>,
    accept: JoinHandle<()>,
}

impl Proxy {
    /// Starts a proxy to `target`.
    ///
    /// # Errors
    /// If it cannot bind.
    pub async fn start(target: SocketAddr) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let cut = Arc::new(AtomicBool::new(false));
        let conns: Arc<Mutex<Vec<JoinHandle<()>>>> = Arc::default();
        let accept = {
            let (cut, conns) = (Arc::clone(&cut), Arc::clone(&conns));
            tokio::spawn(async move {
                while let Ok((mut inbound, _)) = listener.accept().await {
                    if cut.load(Ordering::SeqCst) {
                        drop(inbound);
                        continue;
                    }
                    let handle = tokio::spawn(async move {
                        if let Ok(mut outbound) = TcpStream::connect(target).await {
                            let _ =
                                tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                        }
                    });
                    conns.lock().await.push(handle);
                }
            })
        };
        Ok(Self {
            addr,
            cut,
            conns,
            accept,
        })
    }

    /// Cuts the link: closes open connections, refuses new ones.
    pub async fn cut(&self) {
        self.cut.store(true, Ordering::SeqCst);
        for c in self.conns.lock().await.drain(..) {
            c.abort();
        }
    }

    /// Restores the link.
    pub fn restore(&self) {
        self.cut.store(false, Ordering::SeqCst);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A raw scheduler client, for tests that send what the SDK would refuse
/// to.
///
/// # Errors
/// If the master cannot be reached.
pub async fn raw_scheduler(
    addr: &str,
) -> anyhow::Result<pb::scheduler_client::SchedulerClient<Channel>> {
    let ch = Channel::from_shared(pb::endpoint_uri(addr))?
        .connect()
        .await?;
    Ok(pb::scheduler_client::SchedulerClient::new(ch))
}

/// A framework speaking raw gRPC, to send what the SDK would not (bad
/// input, an offer id from another master's term) to a master of the
/// test's choosing.
#[derive(Debug)]
pub struct RawFramework {
    /// Its scheduler client.
    pub client: pb::scheduler_client::SchedulerClient<Channel>,
    /// The header of its calls (framework id and stream id).
    pub header: pb::CallHeader,
    /// Its event stream, after SUBSCRIBED.
    pub events: tonic::Streaming<pb::Event>,
}

/// Subscribes a raw framework (`id` empty for a new one) with a 60 s
/// failover timeout and reads its SUBSCRIBED event.
///
/// # Errors
/// If the master refuses or the first event is not SUBSCRIBED.
pub async fn subscribe_raw(addr: &str, id: &str, name: &str) -> anyhow::Result<RawFramework> {
    let mut client = raw_scheduler(addr).await?;
    let mut events = client
        .subscribe(pb::SubscribeRequest {
            framework: Some(pb::FrameworkInfo {
                id: id.to_string(),
                name: name.to_string(),
                failover_timeout_seconds: 60.0,
                ..Default::default()
            }),
        })
        .await?
        .into_inner();
    let Some(pb::Event {
        event: Some(pb::event::Event::Subscribed(sub)),
    }) = events.message().await?
    else {
        bail!("first event is not SUBSCRIBED");
    };
    Ok(RawFramework {
        client,
        header: pb::CallHeader {
            framework_id: sub.framework_id,
            stream_id: sub.stream_id,
        },
        events,
    })
}

/// The next OFFERS event of a raw framework (15 s at most).
///
/// # Errors
/// On timeout or when the stream ends.
pub async fn next_offers(fw: &mut RawFramework) -> anyhow::Result<Vec<pb::Offer>> {
    loop {
        let ev = tokio::time::timeout(Duration::from_secs(15), fw.events.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("stream ended"))?;
        if let Some(pb::event::Event::Offers(o)) = ev.event {
            return Ok(o.offers);
        }
    }
}

/// Waits for the next event matching `pick`, up to `timeout`.
///
/// # Errors
/// On timeout or when the stream ends.
pub async fn next_matching<T>(
    events: &mut berth_sdk::Events,
    timeout: Duration,
    mut pick: impl FnMut(berth_sdk::Event) -> Option<T>,
) -> anyhow::Result<T> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let ev = tokio::time::timeout_at(deadline, events.next())
            .await
            .context("timed out waiting for an event")?
            .context("event stream ended")?;
        if let Some(t) = pick(ev) {
            return Ok(t);
        }
    }
}

/// Initializes test logging once (RUST_LOG-style filter in `BERTH_TEST_LOG`).
pub fn init_logging() {
    let filter = std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::new(filter))
        .with_test_writer()
        .try_init();
}

// ---------------------------------------------------------------------------
// Raft clusters
// ---------------------------------------------------------------------------

/// Raft timing of a [`RaftCluster`]: short ticks so elections take well
/// under a second.
#[derive(Debug, Clone)]
pub struct RaftSettings {
    /// Length of one Raft tick.
    pub tick: Duration,
    /// Ticks without a leader before an election (randomized by raft-rs in
    /// `[election_ticks, 2 * election_ticks)`).
    pub election_ticks: usize,
    /// Ticks between the leader's heartbeats.
    pub heartbeat_ticks: usize,
    /// `MasterConfig::snapshot_every`.
    pub snapshot_every: u64,
    /// `MasterConfig::agent_ping_timeout`.
    pub agent_ping_timeout: Duration,
}

impl Default for RaftSettings {
    fn default() -> Self {
        Self {
            tick: Duration::from_millis(50),
            election_ticks: 10,
            heartbeat_ticks: 2,
            snapshot_every: 10_000,
            agent_ping_timeout: Duration::from_secs(5),
        }
    }
}

impl RaftSettings {
    /// The (lower bound of the) election timeout: `tick * election_ticks`.
    #[must_use]
    pub fn election_timeout(&self) -> Duration {
        self.tick
            .saturating_mul(u32::try_from(self.election_ticks).unwrap_or(u32::MAX))
    }
}

/// Masters of a Raft group in this process, each on its own fixed loopback
/// port and data directory, sharing one [`berth_master::raft::transport::Faults`]
/// so tests can cut links between them; plus agents that know every
/// master.
#[derive(Debug)]
pub struct RaftCluster {
    /// Timing every master runs with.
    pub settings: RaftSettings,
    /// Fault injection shared by every master's Raft transport.
    pub faults: berth_master::raft::transport::Faults,
    /// Every member's address, by Raft id (running or stopped).
    pub addrs: std::collections::BTreeMap<u64, SocketAddr>,
    /// The masters running now, by Raft id.
    pub masters: std::collections::BTreeMap<u64, MasterHandle>,
    /// The agents.
    pub agents: Vec<AgentHandle>,
    /// Temporary directory holding every data and work directory.
    pub dir: tempfile::TempDir,
    /// The bootstrap membership, as (id, address).
    peers: Vec<(u64, String)>,
}

impl RaftCluster {
    /// Starts masters `ids` as one Raft group (ports chosen up front, so
    /// every master is started knowing every address) and one agent per
    /// entry of `agent_resources`, attached to all masters.
    ///
    /// # Errors
    /// If anything fails to start.
    pub async fn start(
        ids: &[u64],
        agent_resources: &[&str],
        settings: RaftSettings,
    ) -> anyhow::Result<Self> {
        let dir = tempfile::tempdir()?;
        let listeners = berth_local::GroupListeners::bind(ids).await?;
        let mut addrs = std::collections::BTreeMap::new();
        for (id, addr) in &listeners.peers {
            addrs.insert(*id, addr.parse()?);
        }
        let peers = listeners.peers.clone();
        let mut cluster = Self {
            settings,
            faults: berth_master::raft::transport::Faults::default(),
            addrs,
            masters: std::collections::BTreeMap::new(),
            agents: Vec::new(),
            dir,
            peers,
        };
        for (id, master) in listeners.start(|id, _| cluster.config(id, false))? {
            cluster
                .masters
                .insert(id, master.with_stop_limit(STOP_LIMIT));
        }
        for r in agent_resources {
            cluster.add_agent(r).await?;
        }
        Ok(cluster)
    }

    /// The configuration master `id` runs with.
    #[must_use]
    pub fn config(&self, id: u64, join: bool) -> berth_master::MasterConfig {
        let mut c = fast_master_config(self.data_dir(id));
        c.id = id;
        // A joining master knows nobody, as `berth master --join` without
        // `--peers`: it learns the group from the members that reach it.
        if !join {
            c.peers.clone_from(&self.peers);
            if !self.peers.iter().any(|(p, _)| *p == id)
                && let Some(addr) = self.addrs.get(&id)
            {
                c.peers.push((id, addr.to_string()));
            }
        }
        c.raft_tick = self.settings.tick;
        c.election_ticks = self.settings.election_ticks;
        c.heartbeat_ticks = self.settings.heartbeat_ticks;
        c.snapshot_every = self.settings.snapshot_every;
        c.agent_ping_timeout = self.settings.agent_ping_timeout;
        c.join = join;
        c.raft_faults = self.faults.clone();
        c
    }

    /// Data directory of master `id`.
    #[must_use]
    pub fn data_dir(&self, id: u64) -> std::path::PathBuf {
        self.dir.path().join(format!("master-{id}"))
    }

    /// The election timeout the masters run with.
    #[must_use]
    pub fn election_timeout(&self) -> Duration {
        self.settings.election_timeout()
    }

    /// Address of master `id` as "host:port".
    ///
    /// # Panics
    /// If `id` is not a member.
    #[must_use]
    pub fn addr(&self, id: u64) -> String {
        self.addrs[&id].to_string()
    }

    /// Every master's address, running or not.
    #[must_use]
    pub fn addresses(&self) -> Vec<String> {
        self.addrs.values().map(ToString::to_string).collect()
    }

    /// Starts another agent attached to every master.
    ///
    /// # Errors
    /// If it fails to start.
    pub async fn add_agent(&mut self, resources: &str) -> anyhow::Result<&AgentHandle> {
        let work = self.agent_dir(self.agents.len());
        let agent = start_agent(fast_agent_config_multi(self.addresses(), work, resources)).await?;
        self.agents.push(agent);
        Ok(self.agents.last().expect("just pushed"))
    }

    /// Work directory of agent `i`.
    #[must_use]
    pub fn agent_dir(&self, i: usize) -> std::path::PathBuf {
        self.dir.path().join(format!("agent-{i}"))
    }

    /// Stops master `id` gracefully (its data stays).
    ///
    /// # Errors
    /// If it is not running or returned an error.
    pub async fn stop(&mut self, id: u64) -> anyhow::Result<()> {
        let mut m = self
            .masters
            .remove(&id)
            .with_context(|| format!("master {id} is not running"))?;
        Ok(m.stop().await?)
    }

    /// Starts master `id` again on its port and data directory.
    ///
    /// # Errors
    /// If it is running already or cannot bind.
    pub async fn start_master(&mut self, id: u64) -> anyhow::Result<()> {
        if self.masters.contains_key(&id) {
            bail!("master {id} is running");
        }
        let addr = *self
            .addrs
            .get(&id)
            .with_context(|| format!("master {id} is not a member"))?;
        let handle = start_master(addr, self.config(id, false)).await?;
        self.masters.insert(id, handle);
        Ok(())
    }

    /// Starts a new master `id` with an empty data directory that waits to
    /// be added to the group (`join`); returns its address. It is not a
    /// member until the leader adds it (operator `AddMember`).
    ///
    /// # Errors
    /// If `id` is taken or it cannot bind.
    pub async fn start_joining(&mut self, id: u64) -> anyhow::Result<String> {
        if self.addrs.contains_key(&id) {
            bail!("master {id} exists");
        }
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        self.addrs.insert(id, addr);
        let handle = start_master_on(listener, self.config(id, true))?;
        self.masters.insert(id, handle);
        Ok(addr.to_string())
    }

    /// An operator client of master `id` (connected lazily, so it can be
    /// made for a master that is down).
    ///
    /// # Errors
    /// If the address is invalid.
    pub fn operator(
        &self,
        id: u64,
    ) -> anyhow::Result<pb::operator_client::OperatorClient<Channel>> {
        let ch = Channel::from_shared(pb::endpoint_uri(&self.addr(id)))?
            .connect_timeout(Duration::from_secs(1))
            .timeout(Duration::from_secs(5))
            .connect_lazy();
        Ok(pb::operator_client::OperatorClient::new(ch))
    }

    /// The master among `among` that leads and serves: Raft elected it and
    /// its core took over (GetLeader answers with its own master id). Polls
    /// until one does.
    ///
    /// # Errors
    /// If none does within `timeout`.
    pub async fn leader_among(&self, among: &[u64], timeout: Duration) -> anyhow::Result<u64> {
        let deadline = tokio::time::Instant::now() + timeout;
        let clients: Vec<(u64, _)> = among
            .iter()
            .map(|id| Ok((*id, self.operator(*id)?)))
            .collect::<anyhow::Result<_>>()?;
        loop {
            for (id, op) in &clients {
                let mut op = op.clone();
                if let Ok(Ok(info)) =
                    tokio::time::timeout(Duration::from_millis(500), op.get_leader(pb::Empty {}))
                        .await
                {
                    let info = info.into_inner();
                    if info.raft_id == *id && !info.master_id.is_empty() {
                        return Ok(*id);
                    }
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("no master of {among:?} led within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The serving leader among the running masters.
    ///
    /// # Errors
    /// If none leads within `timeout`.
    pub async fn leader(&self, timeout: Duration) -> anyhow::Result<u64> {
        let running: Vec<u64> = self.masters.keys().copied().collect();
        self.leader_among(&running, timeout).await
    }

    /// Waits until `n` agents are registered and connected to the leader.
    ///
    /// # Errors
    /// If that does not happen within `timeout`.
    pub async fn wait_agents(
        &self,
        n: usize,
        timeout: Duration,
    ) -> anyhow::Result<Vec<pb::AgentView>> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            let leader = self.leader(left).await?;
            if let Ok(list) = self.operator(leader)?.list_agents(pb::Empty {}).await {
                let agents = list.into_inner().agents;
                if agents.iter().filter(|a| a.connected).count() >= n {
                    return Ok(agents);
                }
            }
            if tokio::time::Instant::now() > deadline {
                bail!("{n} agents did not connect within {timeout:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

/// Wraps `message` in a request carrying `berth-read: stale`, so any
/// master answers from its own (possibly stale) registry.
///
/// # Panics
/// Never: the metadata value is a constant.
pub fn stale<T>(message: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(message);
    r.metadata_mut()
        .insert("berth-read", "stale".parse().expect("valid metadata"));
    r
}

// ---------------------------------------------------------------------------
// Log capture
// ---------------------------------------------------------------------------

/// A tracing event recorded by [`init_logging_with_capture`].
#[derive(Debug, Clone)]
pub struct CapturedEvent {
    /// The event's target (module path).
    pub target: String,
    /// Its message.
    pub message: String,
    /// Its other fields, formatted with `Debug`.
    pub fields: std::collections::BTreeMap<String, String>,
}

static CAPTURED: std::sync::Mutex<Vec<CapturedEvent>> = std::sync::Mutex::new(Vec::new());

struct CaptureLayer;

struct FieldVisitor<'a>(&'a mut CapturedEvent);

impl tracing::field::Visit for FieldVisitor<'_> {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0.message = format!("{value:?}");
        } else {
            self.0
                .fields
                .insert(field.name().to_string(), format!("{value:?}"));
        }
    }
}

impl<S: tracing::Subscriber> tracing_subscriber::Layer<S> for CaptureLayer {
    fn on_event(
        &self,
        event: &tracing::Event<'_>,
        _ctx: tracing_subscriber::layer::Context<'_, S>,
    ) {
        let mut captured = CapturedEvent {
            target: event.metadata().target().to_string(),
            message: String::new(),
            fields: std::collections::BTreeMap::new(),
        };
        event.record(&mut FieldVisitor(&mut captured));
        CAPTURED
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push(captured);
    }
}

/// Like [`init_logging`], and also records every `berth_master` event at
/// INFO or above for [`captured`]. Use it in a test binary whose tests all
/// call it (the first call in the process installs the subscriber).
pub fn init_logging_with_capture() {
    use tracing_subscriber::Layer as _;
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    let filter = std::env::var("BERTH_TEST_LOG").unwrap_or_else(|_| "warn".into());
    let fmt = tracing_subscriber::fmt::layer()
        .with_test_writer()
        .with_filter(tracing_subscriber::EnvFilter::new(filter));
    let capture = CaptureLayer.with_filter(
        tracing_subscriber::filter::Targets::new()
            .with_target("berth_master", tracing::Level::INFO),
    );
    let _ = tracing_subscriber::registry()
        .with(fmt)
        .with(capture)
        .try_init();
}

/// The events recorded so far (see [`init_logging_with_capture`]) that
/// `pick` selects.
pub fn captured(mut pick: impl FnMut(&CapturedEvent) -> bool) -> Vec<CapturedEvent> {
    CAPTURED
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .iter()
        .filter(|e| pick(e))
        .cloned()
        .collect()
}

// ---------------------------------------------------------------------------
// Docker
// ---------------------------------------------------------------------------

pub use berth_proto::testing::TEST_IMAGE;

/// Whether the Docker tests can run: a daemon answers and [`TEST_IMAGE`]
/// exists (built once if missing, by
/// [`berth_proto::testing::ensure_test_image`]). Without a daemon a test
/// under CI (`CI` set) must fail, so this panics there; elsewhere it prints
/// a notice and returns false, and the test returns early.
///
/// # Panics
/// Under CI when there is no usable daemon or the image cannot be built.
#[must_use]
pub fn docker_ready(test: &str) -> bool {
    match berth_proto::testing::ensure_test_image() {
        Ok(()) => true,
        Err(e) => {
            assert!(
                std::env::var_os("CI").is_none(),
                "{test}: CI is set but Docker is not usable: {e}"
            );
            eprintln!("skipping {test}: {e}");
            false
        }
    }
}

/// Runs `docker` with `args` and returns its trimmed stdout, or `None`
/// when it fails.
#[must_use]
pub fn docker(args: &[&str]) -> Option<String> {
    let out = std::process::Command::new("docker")
        .args(args)
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// Force-removes every container carrying `berth.owner=<owner>` (test
/// cleanup).
pub fn remove_owned_containers(owner: &str) {
    let filter = format!("label=berth.owner={owner}");
    if let Some(ids) = docker(&["ps", "-aq", "--filter", &filter]) {
        for id in ids.lines().filter(|l| !l.is_empty()) {
            let _ = docker(&["rm", "-f", id]);
        }
    }
}
