//! Test harness for berth's end-to-end tests: an in-process cluster (one
//! master, any number of agents) on ephemeral loopback ports, a master that
//! can be restarted on the same port and data directory, and a TCP proxy
//! that can cut an agent off from its master.
//!
//! Everything binds 127.0.0.1:0 and lives in a temporary directory that is
//! removed when the [`Cluster`] is dropped.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use berth_proto as pb;
use berth_scheduler_core::Resources;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, oneshot};
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

/// A master running in this process.
#[derive(Debug)]
pub struct MasterHandle {
    /// Where it listens.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<Result<(), berth_master::MasterError>>>,
}

impl MasterHandle {
    /// Starts a master on `addr` (port 0 for any).
    ///
    /// # Errors
    /// If the port cannot be bound.
    pub async fn start(
        addr: SocketAddr,
        config: berth_master::MasterConfig,
    ) -> anyhow::Result<Self> {
        let listener = bind_retrying(addr).await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(berth_master::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            stop: Some(stop),
            join: Some(join),
        })
    }

    /// Stops the master gracefully and waits for it.
    ///
    /// # Errors
    /// If the master returned an error.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            tokio::time::timeout(Duration::from_secs(20), join)
                .await
                .context("master did not stop within 20 s")???;
        }
        Ok(())
    }
}

impl Drop for MasterHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// An agent running in this process.
#[derive(Debug)]
pub struct AgentHandle {
    /// Address of its log API.
    pub addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<Result<(), berth_agent::AgentError>>>,
}

impl AgentHandle {
    /// Starts an agent with `config` (its advertise address is set to the
    /// listener's).
    ///
    /// # Errors
    /// If the port cannot be bound.
    pub async fn start(mut config: berth_agent::AgentConfig) -> anyhow::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        config.advertise_address = Some(addr.to_string());
        let (stop, stopped) = oneshot::channel::<()>();
        let join = tokio::spawn(berth_agent::run(listener, config, async move {
            let _ = stopped.await;
        }));
        Ok(Self {
            addr,
            stop: Some(stop),
            join: Some(join),
        })
    }

    /// Stops the agent (it kills its tasks) and waits for it.
    ///
    /// # Errors
    /// If the agent returned an error.
    pub async fn stop(&mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(join) = self.join.take() {
            tokio::time::timeout(Duration::from_secs(20), join)
                .await
                .context("agent did not stop within 20 s")???;
        }
        Ok(())
    }
}

impl Drop for AgentHandle {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Agent settings tuned for fast tests: fixed resources, quick resends.
#[must_use]
pub fn fast_agent_config(
    master: &str,
    work_dir: std::path::PathBuf,
    resources: &str,
) -> berth_agent::AgentConfig {
    let mut c = berth_agent::AgentConfig::new(vec![master.to_string()], work_dir);
    c.resources = Some(
        resources
            .parse::<Resources>()
            .expect("test resources are valid"),
    );
    c.default_kill_grace = Duration::from_secs(1);
    c.master_timeout = Duration::from_secs(3);
    c.status_retry_initial = Duration::from_millis(500);
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
        let master = MasterHandle::start(
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
        let agent = AgentHandle::start(fast_agent_config(master, work, resources)).await?;
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
            MasterHandle::start(addr, fast_master_config(self.dir.path().join("master"))).await?;
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
