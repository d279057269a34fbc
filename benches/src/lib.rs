//! What the benchmark binaries share: a description of the machine they
//! ran on, printed with every result, and in-process masters.

use std::path::Path;
use std::time::Duration;

use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Full masters (`berth_master::run`) running in this process on
/// 127.0.0.1, each with its own data directory.
#[derive(Debug)]
pub struct LocalMasters {
    /// API addresses, by Raft id - 1.
    pub addrs: Vec<String>,
    stops: Vec<oneshot::Sender<()>>,
    joins: Vec<JoinHandle<Result<(), berth_master::MasterError>>>,
}

impl LocalMasters {
    /// Starts `n` masters with their data directories `master-<id>` in
    /// `dir`. Every listener is bound first, so that each master is given
    /// the full peer list (one master alone gets none). `tune` adjusts each
    /// master's settings.
    pub async fn start(
        n: usize,
        dir: &Path,
        tune: impl Fn(&mut berth_master::MasterConfig),
    ) -> std::io::Result<LocalMasters> {
        let mut listeners = Vec::new();
        for _ in 0..n {
            listeners.push(tokio::net::TcpListener::bind("127.0.0.1:0").await?);
        }
        let addrs: Vec<String> = listeners
            .iter()
            .map(|l| l.local_addr().map(|a| a.to_string()))
            .collect::<Result<_, _>>()?;
        let peers: Vec<(u64, String)> = if n == 1 {
            Vec::new()
        } else {
            (1u64..).zip(addrs.iter().cloned()).collect()
        };
        let mut stops = Vec::new();
        let mut joins = Vec::new();
        for (id, listener) in (1u64..).zip(listeners) {
            let mut config = berth_master::MasterConfig::new(dir.join(format!("master-{id}")));
            config.id = id;
            config.peers = peers.clone();
            tune(&mut config);
            let (stop, stopped) = oneshot::channel::<()>();
            joins.push(tokio::spawn(berth_master::run(
                listener,
                config,
                async move {
                    let _ = stopped.await;
                },
            )));
            stops.push(stop);
        }
        Ok(LocalMasters {
            addrs,
            stops,
            joins,
        })
    }

    /// Stops every master, waiting up to `timeout` for each; a master that
    /// fails to stop cleanly is reported on stderr.
    pub async fn stop(mut self, timeout: Duration) {
        for stop in self.stops.drain(..) {
            let _ = stop.send(());
        }
        for (i, join) in self.joins.drain(..).enumerate() {
            match tokio::time::timeout(timeout, join).await {
                Ok(Ok(Ok(()))) => {}
                Ok(Ok(Err(e))) => eprintln!("master {} stopped with an error: {e}", i + 1),
                Ok(Err(e)) => eprintln!("master {} panicked: {e}", i + 1),
                Err(_) => eprintln!("master {} did not stop within {timeout:?}", i + 1),
            }
        }
    }
}

/// The number of CPUs this process may use.
pub fn cpu_count() -> usize {
    std::thread::available_parallelism().map_or(1, std::num::NonZeroUsize::get)
}

/// The CPU model, from `/proc/cpuinfo`.
pub fn cpu_model() -> String {
    std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split_once(':'))
                .map(|(_, v)| v.trim().to_string())
        })
        .unwrap_or_else(|| "unknown cpu".into())
}

/// `/proc/loadavg`'s three load averages; other work on the machine shows
/// here.
pub fn load_average() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .ok()
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|| "unknown".into())
}

/// How long one operator call of the bench binaries may take (connecting
/// included).
pub const CALL_TIMEOUT: Duration = Duration::from_secs(5);

/// An operator client connected to the master at `addr` (no Nagle delay).
pub async fn operator(
    addr: &str,
) -> anyhow::Result<berth_proto::operator_client::OperatorClient<tonic::transport::Channel>> {
    use anyhow::Context as _;
    let channel = tonic::transport::Endpoint::from_shared(berth_proto::endpoint_uri(addr))?
        .tcp_nodelay(true)
        .connect_timeout(CALL_TIMEOUT)
        .connect()
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    Ok(berth_proto::operator_client::OperatorClient::new(channel))
}

/// `msg` as a request that gives up after [`CALL_TIMEOUT`].
pub fn request<T>(msg: T) -> tonic::Request<T> {
    let mut r = tonic::Request::new(msg);
    r.set_timeout(CALL_TIMEOUT);
    r
}
