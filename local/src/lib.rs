//! berth masters and agents inside one process.
//!
//! `berth dev` and `berth ci run` (a master and an agent), the end-to-end
//! tests (`berth-tests`: a master with agents, Raft groups of masters) and
//! the benchmarks (`raft_bench` and `load`: groups of masters) all start
//! their in-process daemons here, so there is one way to start, address and
//! stop them.
//!
//! A daemon is [`berth_master::run`] or [`berth_agent::run`] on a listener
//! the caller bound, spawned as a tokio task and stopped through its
//! shutdown future: the same graceful shutdown SIGTERM gives the `berth`
//! binary (an agent stops its task supervision, a master steps down).
//! Dropping a [`Daemon`] asks it to stop and does not wait.
//!
//! ```no_run
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let dir = tempfile::tempdir()?;
//! let mut group = berth_local::MasterGroup::start(3, dir.path(), |_| {}).await?;
//! println!("masters at {:?}", group.addrs);
//! for (id, failure) in group.stop(std::time::Duration::from_secs(20)).await {
//!     eprintln!("master {id}: {failure}");
//! }
//! # Ok(())
//! # }
//! ```

use std::future::Future;
use std::net::SocketAddr;
use std::path::Path;
use std::time::Duration;

use berth_agent::{AgentConfig, AgentError};
use berth_master::{MasterConfig, MasterError};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A master or an agent running in this process as a tokio task.
#[derive(Debug)]
pub struct Daemon<E> {
    /// Where it listens.
    pub addr: SocketAddr,
    what: &'static str,
    stop_limit: Option<Duration>,
    stop: Option<oneshot::Sender<()>>,
    join: Option<JoinHandle<Result<(), E>>>,
}

/// A master running in this process.
pub type Master = Daemon<MasterError>;
/// An agent running in this process.
pub type Agent = Daemon<AgentError>;

/// Why a daemon did not stop cleanly.
#[derive(Debug, thiserror::Error)]
pub enum StopError<E: std::error::Error + 'static> {
    /// It returned an error.
    #[error("{what} stopped with an error: {source}")]
    Failed {
        /// `"master"` or `"agent"`.
        what: &'static str,
        /// What it returned.
        #[source]
        source: E,
    },
    /// Its task panicked or was cancelled.
    #[error("{what} panicked or was cancelled: {reason}")]
    Panicked {
        /// `"master"` or `"agent"`.
        what: &'static str,
        /// The join error's text.
        reason: String,
    },
    /// It did not stop within its limit (it goes on running).
    #[error("{what} did not stop within {limit:?}")]
    Timeout {
        /// `"master"` or `"agent"`.
        what: &'static str,
        /// The limit it was given.
        limit: Duration,
    },
}

impl<E: std::error::Error + Send + 'static> Daemon<E> {
    fn spawn<F>(
        addr: SocketAddr,
        what: &'static str,
        run: impl FnOnce(oneshot::Receiver<()>) -> F,
    ) -> Self
    where
        F: Future<Output = Result<(), E>> + Send + 'static,
    {
        let (stop, stopped) = oneshot::channel::<()>();
        Self {
            addr,
            what,
            stop_limit: None,
            stop: Some(stop),
            join: Some(tokio::spawn(run(stopped))),
        }
    }

    /// The same daemon, with [`Daemon::stop`] waiting at most `limit`
    /// (without one it waits as long as the daemon takes, as SIGTERM
    /// does).
    #[must_use]
    pub fn with_stop_limit(mut self, limit: Duration) -> Self {
        self.stop_limit = Some(limit);
        self
    }

    /// Asks the daemon to stop gracefully and waits for it. A second call
    /// returns at once.
    ///
    /// # Errors
    /// If it returned an error, panicked, or did not stop within its limit.
    pub async fn stop(&mut self) -> Result<(), StopError<E>> {
        self.signal_stop();
        let Some(join) = self.join.take() else {
            return Ok(());
        };
        let joined = match self.stop_limit {
            Some(limit) => match tokio::time::timeout(limit, join).await {
                Ok(joined) => joined,
                Err(_) => {
                    return Err(StopError::Timeout {
                        what: self.what,
                        limit,
                    });
                }
            },
            None => join.await,
        };
        ended(self.what, joined)
    }

    /// Waits until the daemon ends by itself, without asking it to stop (a
    /// master or agent ends on its own only when it fails, e.g. on a failed
    /// durable write); returns how it ended. Pending forever once it was
    /// stopped or waited for.
    ///
    /// # Errors
    /// If it returned an error or panicked.
    pub async fn wait(&mut self) -> Result<(), StopError<E>> {
        let Some(join) = self.join.as_mut() else {
            return std::future::pending().await;
        };
        let joined = join.await;
        self.join = None;
        self.stop = None;
        ended(self.what, joined)
    }

    /// Asks the daemon to stop without waiting for it.
    fn signal_stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }

    /// Whether its task has ended (stopped, failed or panicked).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.join.as_ref().is_none_or(JoinHandle::is_finished)
    }
}

/// How a daemon's task ended, as [`Daemon::stop`] and [`Daemon::wait`]
/// report it.
fn ended<E: std::error::Error + 'static>(
    what: &'static str,
    joined: Result<Result<(), E>, tokio::task::JoinError>,
) -> Result<(), StopError<E>> {
    match joined {
        Ok(Ok(())) => Ok(()),
        Ok(Err(source)) => Err(StopError::Failed { what, source }),
        Err(e) => Err(StopError::Panicked {
            what,
            reason: e.to_string(),
        }),
    }
}

impl<E> Drop for Daemon<E> {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// Starts a master on `listener` with `config`.
///
/// # Errors
/// If the listener has no local address.
pub fn master(listener: TcpListener, config: MasterConfig) -> std::io::Result<Master> {
    let addr = listener.local_addr()?;
    Ok(Daemon::spawn(addr, "master", |stopped| {
        berth_master::run(listener, config, async move {
            let _ = stopped.await;
        })
    }))
}

/// Starts an agent on `listener` with `config` (its advertise address is
/// the caller's to set).
///
/// # Errors
/// If the listener has no local address.
pub fn agent(listener: TcpListener, config: AgentConfig) -> std::io::Result<Agent> {
    let addr = listener.local_addr()?;
    Ok(Daemon::spawn(addr, "agent", |stopped| {
        berth_agent::run(listener, config, async move {
            let _ = stopped.await;
        })
    }))
}

/// Listeners bound on 127.0.0.1 for the masters of one Raft group, bound
/// before any master starts so that each is started knowing every
/// member's address.
#[derive(Debug)]
pub struct GroupListeners {
    /// `(raft id, "127.0.0.1:port")` of every member.
    pub peers: Vec<(u64, String)>,
    listeners: Vec<(u64, TcpListener)>,
}

impl GroupListeners {
    /// Binds a free port of 127.0.0.1 for each of `ids`.
    ///
    /// # Errors
    /// If a port cannot be bound.
    pub async fn bind(ids: &[u64]) -> std::io::Result<GroupListeners> {
        let mut listeners = Vec::with_capacity(ids.len());
        let mut peers = Vec::with_capacity(ids.len());
        for id in ids {
            let listener = TcpListener::bind("127.0.0.1:0").await?;
            peers.push((*id, listener.local_addr()?.to_string()));
            listeners.push((*id, listener));
        }
        Ok(GroupListeners { peers, listeners })
    }

    /// Starts a master on each listener with the configuration `config`
    /// makes for its id (given the group's `peers`).
    ///
    /// # Errors
    /// If a listener has no local address.
    pub fn start(
        self,
        mut config: impl FnMut(u64, &[(u64, String)]) -> MasterConfig,
    ) -> std::io::Result<Vec<(u64, Master)>> {
        let peers = self.peers;
        self.listeners
            .into_iter()
            .map(|(id, listener)| Ok((id, master(listener, config(id, &peers))?)))
            .collect()
    }
}

/// Masters 1..=n of one Raft group in this process, each with its data
/// directory `master-<id>` under one directory.
#[derive(Debug)]
pub struct MasterGroup {
    /// API addresses, by Raft id - 1.
    pub addrs: Vec<String>,
    masters: Vec<Master>,
}

impl MasterGroup {
    /// Starts `n` masters with their data directories `master-<id>` in
    /// `dir`. A group of one is started with no peer list (a single
    /// master, as `berth master` without `--peers`). `tune` adjusts each
    /// master's settings.
    ///
    /// # Errors
    /// If a port cannot be bound.
    pub async fn start(
        n: usize,
        dir: &Path,
        tune: impl Fn(&mut MasterConfig),
    ) -> std::io::Result<MasterGroup> {
        let ids: Vec<u64> = (1..).take(n).collect();
        let listeners = GroupListeners::bind(&ids).await?;
        let addrs = listeners.peers.iter().map(|(_, a)| a.clone()).collect();
        let masters = listeners.start(|id, peers| {
            let mut config = MasterConfig::new(dir.join(format!("master-{id}")));
            config.id = id;
            if n > 1 {
                config.peers = peers.to_vec();
            }
            tune(&mut config);
            config
        })?;
        Ok(MasterGroup {
            addrs,
            masters: masters.into_iter().map(|(_, m)| m).collect(),
        })
    }

    /// Stops every master (all are asked at once, then each is waited for
    /// up to `limit`); returns which did not stop cleanly, by Raft id, and
    /// why (nothing when all did).
    pub async fn stop(&mut self, limit: Duration) -> Vec<(u64, StopError<MasterError>)> {
        for master in &mut self.masters {
            master.signal_stop();
        }
        let mut failures = Vec::new();
        for (id, master) in (1u64..).zip(&mut self.masters) {
            master.stop_limit = Some(limit);
            if let Err(e) = master.stop().await {
                failures.push((id, e));
            }
        }
        failures
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_group_starts_and_stops_cleanly() {
        let dir = tempfile::tempdir().unwrap();
        let mut group = MasterGroup::start(3, dir.path(), |c| {
            c.raft_tick = Duration::from_millis(20);
        })
        .await
        .unwrap();
        assert_eq!(group.addrs.len(), 3);
        // Every master wrote its data directory: they run, with the ids
        // and directories the docs promise.
        for id in 1..=3 {
            let data = dir.path().join(format!("master-{id}"));
            let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
            while !data.exists() {
                assert!(tokio::time::Instant::now() < deadline, "{data:?} missing");
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
        assert!(group.masters.iter().all(|m| !m.is_finished()));
        let failures = group.stop(Duration::from_secs(20)).await;
        assert!(failures.is_empty(), "{failures:?}");
        assert!(group.masters.iter().all(Daemon::is_finished));
        // A second stop is a no-op.
        assert!(group.stop(Duration::from_secs(1)).await.is_empty());
    }

    #[tokio::test]
    async fn wait_returns_when_a_daemon_fails_by_itself() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut m = master(listener, MasterConfig::new(file)).unwrap();
        let err = tokio::time::timeout(Duration::from_secs(20), m.wait())
            .await
            .expect("a master that cannot open its data ends by itself")
            .unwrap_err();
        assert!(
            matches!(err, StopError::Failed { what: "master", .. }),
            "{err}"
        );
        // Once it ended, stop has nothing left to wait for.
        m.stop().await.unwrap();
    }

    #[tokio::test]
    async fn a_master_that_fails_reports_its_error() {
        let dir = tempfile::tempdir().unwrap();
        // A data directory that is a file: the master cannot open its
        // storage and returns an error.
        let file = dir.path().join("not-a-dir");
        std::fs::write(&file, b"x").unwrap();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut m = master(listener, MasterConfig::new(file))
            .unwrap()
            .with_stop_limit(Duration::from_secs(20));
        let err = m.stop().await.unwrap_err();
        assert!(
            matches!(err, StopError::Failed { what: "master", .. }),
            "{err}"
        );
    }
}
