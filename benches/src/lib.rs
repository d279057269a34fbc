//! What the benchmark binaries share: a description of the machine they
//! ran on, printed with every result, in-process masters ([`MasterGroup`])
//! and the operator client with its call timeout ([`CALL_TIMEOUT`]).

use std::time::Duration;

/// Masters of one Raft group in this process ([`berth_local`], the
/// launcher `berth dev` and the tests use too).
pub use berth_local::MasterGroup;

/// Stops `group`, waiting up to `limit` for each master; a master that
/// fails to stop cleanly is reported on stderr (a benchmark's result
/// stands without it).
pub async fn stop_masters(group: &mut MasterGroup, limit: Duration) {
    for (id, failure) in group.stop(limit).await {
        eprintln!("master {id}: {failure}");
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
