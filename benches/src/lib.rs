//! What the benchmark binaries share: a description of the machine they
//! ran on, printed with every result, in-process masters ([`MasterGroup`])
//! and the operator client with its call timeout ([`CALL_TIMEOUT`]); for
//! the end-to-end binaries (`load`, `service_scale`, `jobs_scale`),
//! simulated agents ([`agents`]), masters in this process or as `berth
//! master` processes ([`cluster`]), counters and `/proc` readings
//! ([`stats`]), the framework under test ([`framework`]) and a small HTTP
//! client for its API ([`http`]).

use std::time::Duration;

pub mod agents;
pub mod cluster;
pub mod framework;
pub mod http;
pub mod stats;

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

/// Ends the process (exit code 2) if it still runs after `budget`
/// seconds: a benchmark that hangs must not hang CI.
pub fn watchdog(name: &'static str, budget: u64) {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(budget));
        eprintln!("{name}: still running after {budget} s; giving up");
        std::process::exit(2);
    });
}

/// Refuses any of `options` (`--name`, seconds) above a day.
///
/// # Errors
/// Names the first option above a day.
pub fn at_most_a_day(options: &[(&str, u64)]) -> anyhow::Result<()> {
    for (name, v) in options {
        if *v > 24 * 3600 {
            anyhow::bail!("--{name} must be at most a day");
        }
    }
    Ok(())
}

/// Refuses a `--berth` binary that does not exist.
///
/// # Errors
/// When `berth` is given and is not a file.
pub fn check_berth(berth: Option<&std::path::Path>) -> anyhow::Result<()> {
    match berth {
        Some(b) if !b.is_file() => anyhow::bail!("--berth {}: no such file", b.display()),
        _ => Ok(()),
    }
}

/// The directory a run's temporary directory goes in: `data_dir`, or the
/// system temp directory; created, as an absolute path.
///
/// # Errors
/// When it cannot be created.
pub fn run_base(data_dir: Option<&std::path::Path>) -> anyhow::Result<std::path::PathBuf> {
    let base = data_dir.map_or_else(std::env::temp_dir, std::path::Path::to_path_buf);
    std::fs::create_dir_all(&base)?;
    Ok(base.canonicalize()?)
}

/// Prints the machine's line of a report's header.
pub fn print_cpu() {
    println!("cpu:        {} × {}", cpu_count(), cpu_model());
}
