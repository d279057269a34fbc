//! Raft commit benchmark: commands committed per second and commit latency
//! through a group of in-process masters on loopback.
//!
//! ```sh
//! cargo run --release -p berth-benches --bin raft_bench -- \
//!     --masters 3,1 --clients 1,16,64 --seconds 10
//! ```
//!
//! For each group size in `--masters` it starts that many full masters
//! (`berth_master::run`) on 127.0.0.1 with their data directories in a
//! fresh temporary directory (under `--data-dir`, default the system temp
//! directory; it must be a real disk for the fsyncs to cost what they
//! cost), waits for a leader, and then, for each client count in
//! `--clients`, runs that many concurrent clients against the leader for
//! `--warmup` + `--seconds` seconds. Each client has its own gRPC
//! connection and sends operator `SetWeight` calls for its own role, one at
//! a time; a call returns once its command is committed by a quorum and
//! applied by the leader. Only calls that complete inside the measured
//! window count. It prints one row per (masters, clients): commits per
//! second and latency p50 / p99 / max.
//!
//! The whole run is bounded: a watchdog ends the process if it takes
//! longer than its budget (startup, every phase and shutdown, with margin).
//!
//! Results and the machine they came from are in docs/benchmarks.md.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::bail;
use berth_benches::{operator, request};
use berth_proto as pb;
use clap::Parser;

/// How long a new group may take to elect a leader that commits.
const LEADER_TIMEOUT: Duration = Duration::from_secs(30);
/// How long stopping a master may take.
const STOP_TIMEOUT: Duration = Duration::from_secs(20);

/// Commands committed per second and commit latency through a Raft group
/// of in-process berth masters on loopback.
#[derive(Debug, Parser)]
#[command(name = "raft_bench")]
struct Args {
    /// Group sizes to measure, one group after the other (e.g. `3` or `3,1`).
    #[arg(long, value_delimiter = ',', default_value = "3")]
    masters: Vec<usize>,
    /// Numbers of concurrent clients, one phase each.
    #[arg(long, value_delimiter = ',', default_value = "1,16,64")]
    clients: Vec<usize>,
    /// Measured seconds per phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Unmeasured seconds at the start of each phase.
    #[arg(long, default_value_t = 2)]
    warmup: u64,
    /// Directory to create the masters' temporary data directories in
    /// (default: the system temp directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// One row of the result table.
#[derive(Debug)]
struct Row {
    masters: usize,
    clients: usize,
    commits: usize,
    seconds: f64,
    p50: Duration,
    p99: Duration,
    max: Duration,
    errors: usize,
    /// Log entries the leader applied during the phase, warmup included,
    /// and calls that succeeded in that time (they should be equal).
    entries: u64,
    calls: usize,
    /// Whether leadership stayed with the same master in the same term.
    stable: bool,
    /// Median cost of one durable 4 KiB write in the data directory just
    /// before and just after the phase (the disk is the usual bottleneck,
    /// and a shared virtual disk varies).
    fsync_before: Duration,
    fsync_after: Duration,
}

/// Masters running in this process, and their data.
#[derive(Debug)]
struct Group {
    addrs: Vec<String>,
    masters: berth_benches::MasterGroup,
    dir: tempfile::TempDir,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if args.masters.is_empty() || args.masters.contains(&0) {
        bail!("--masters needs group sizes of 1 or more");
    }
    if args.clients.is_empty() || args.clients.contains(&0) {
        bail!("--clients needs client counts of 1 or more");
    }
    if args.seconds == 0 {
        bail!("--seconds must be at least 1");
    }

    // Watchdog: the run ends by itself even if something hangs.
    let per_phase = args.warmup + args.seconds + 15;
    let budget = args.masters.len() as u64
        * (LEADER_TIMEOUT.as_secs()
            + STOP_TIMEOUT.as_secs()
            + 10
            + per_phase * args.clients.len() as u64);
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(budget));
        eprintln!("raft_bench: still running after {budget} s; giving up");
        std::process::exit(2);
    });

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(bench(args))
}

async fn bench(args: Args) -> anyhow::Result<()> {
    let base = args.data_dir.clone().unwrap_or_else(std::env::temp_dir);
    std::fs::create_dir_all(&base)?;
    let base = base.canonicalize()?;
    println!("# raft_bench");
    println!(
        "cpu:        {} × {}",
        berth_benches::cpu_count(),
        berth_benches::cpu_model()
    );
    println!(
        "data dir:   {} (filesystem: {})",
        base.display(),
        filesystem_of(&base)
    );
    let defaults = berth_master::MasterConfig::new("/");
    println!(
        "raft:       tick {:?}, election {} ticks, heartbeat {} ticks, snapshot every {} entries",
        defaults.raft_tick,
        defaults.election_ticks,
        defaults.heartbeat_ticks,
        defaults.snapshot_every
    );
    println!(
        "phases:     {} s warmup + {} s measured; command: operator SetWeight, one role per client",
        args.warmup, args.seconds
    );
    println!("load avg:   {} (before)", berth_benches::load_average());
    let probe = fsync_probe(&base, 200)?;
    println!(
        "fsync:      4 KiB write + fdatasync in the data dir, {} runs: p50 {:.2} ms, p99 {:.2} ms",
        probe.len(),
        quantile(&probe, 0.50).as_secs_f64() * 1000.0,
        quantile(&probe, 0.99).as_secs_f64() * 1000.0
    );
    println!();

    let mut rows = Vec::new();
    for &masters in &args.masters {
        let mut group = start_group(masters, &base).await?;
        let started = Instant::now();
        let leader = wait_for_leader(&group.addrs).await?;
        eprintln!(
            "{masters} master(s) at {:?} in {}: master {} leads after {:.1} s",
            group.addrs,
            group.dir.path().display(),
            leader + 1,
            started.elapsed().as_secs_f64()
        );
        let result = async {
            for &clients in &args.clients {
                let row = phase(
                    group.dir.path(),
                    &group.addrs,
                    leader,
                    masters,
                    clients,
                    &args,
                )
                .await?;
                eprintln!("  {}", fmt_row(&row));
                if row.entries != row.calls as u64 {
                    eprintln!(
                        "  note: the leader applied {} entries for {} successful calls",
                        row.entries, row.calls
                    );
                }
                if !row.stable {
                    eprintln!("  note: leadership changed during this phase");
                }
                rows.push(row);
            }
            anyhow::Ok(())
        }
        .await;
        berth_benches::stop_masters(&mut group.masters, STOP_TIMEOUT).await;
        result?;
    }

    println!("load avg:   {} (after)", berth_benches::load_average());
    println!();
    println!(
        "| masters | clients | commits | commits/s | p50 ms | p99 ms | max ms | errors | fsync ms before / after |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for row in &rows {
        println!("{}", fmt_row(row));
    }
    Ok(())
}

fn fmt_row(row: &Row) -> String {
    let ms = |d: Duration| format!("{:.2}", d.as_secs_f64() * 1000.0);
    format!(
        "| {} | {} | {} | {:.0} | {} | {} | {} | {} | {} / {} |",
        row.masters,
        row.clients,
        row.commits,
        row.commits as f64 / row.seconds,
        ms(row.p50),
        ms(row.p99),
        ms(row.max),
        row.errors,
        ms(row.fsync_before),
        ms(row.fsync_after)
    )
}

/// Starts `n` masters in a fresh directory under `base`.
async fn start_group(n: usize, base: &Path) -> anyhow::Result<Group> {
    let dir = tempfile::Builder::new()
        .prefix("berth-raft-bench-")
        .tempdir_in(base)?;
    let masters = berth_benches::MasterGroup::start(n, dir.path(), |_| {}).await?;
    Ok(Group {
        addrs: masters.addrs.clone(),
        masters,
        dir,
    })
}

/// The leader's Raft id and term as `addr` sees them, and the leader's
/// applied index when `addr` is the leader.
async fn members(
    client: &mut pb::operator_client::OperatorClient<tonic::transport::Channel>,
) -> anyhow::Result<(u64, u64, u64)> {
    let list = client
        .list_members(request(pb::Empty {}))
        .await?
        .into_inner();
    let applied = list
        .members
        .iter()
        .find(|m| m.id == list.answered_by)
        .map_or(0, |m| m.index);
    Ok((list.leader_id, list.term, applied))
}

/// Waits until some master leads and commits a command; returns its index
/// in `addrs`.
async fn wait_for_leader(addrs: &[String]) -> anyhow::Result<usize> {
    let deadline = Instant::now() + LEADER_TIMEOUT;
    let mut last_error = String::from("no leader yet");
    while Instant::now() < deadline {
        for (i, addr) in addrs.iter().enumerate() {
            let Ok(mut client) = operator(addr).await else {
                continue;
            };
            let leader_id = match members(&mut client).await {
                Ok((leader_id, _, _)) => leader_id,
                Err(e) => {
                    last_error = e.to_string();
                    continue;
                }
            };
            if leader_id != i as u64 + 1 {
                continue;
            }
            // The leader answers once it has taken over (its no-op barrier
            // committed).
            let probe = pb::SetWeightRequest {
                role: "bench-probe".into(),
                weight: 1.0,
            };
            match client.set_weight(request(probe)).await {
                Ok(_) => return Ok(i),
                Err(e) => last_error = e.to_string(),
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    bail!("no leader within {LEADER_TIMEOUT:?}: {last_error}")
}

/// What one client saw in one phase.
#[derive(Debug, Default)]
struct ClientResult {
    /// Latencies of calls completed inside the measured window.
    latencies: Vec<Duration>,
    /// Successful calls, warmup included.
    calls: usize,
    errors: usize,
    first_error: Option<String>,
}

async fn phase(
    data_dir: &Path,
    addrs: &[String],
    leader: usize,
    masters: usize,
    clients: usize,
    args: &Args,
) -> anyhow::Result<Row> {
    let addr = &addrs[leader];
    let fsync_before = quantile(&fsync_probe(data_dir, 50)?, 0.5);
    let mut admin = operator(addr).await?;
    let (leader_before, term_before, applied_before) = members(&mut admin).await?;

    // Connect every client before the clock starts.
    let mut conns = Vec::with_capacity(clients);
    for _ in 0..clients {
        conns.push(operator(addr).await?);
    }
    let start = Instant::now() + Duration::from_millis(100);
    let window_start = start + Duration::from_secs(args.warmup);
    let end = window_start + Duration::from_secs(args.seconds);
    let tasks: Vec<tokio::task::JoinHandle<ClientResult>> = conns
        .into_iter()
        .enumerate()
        .map(|(c, mut client)| {
            tokio::spawn(async move {
                let role = format!("bench-{c}");
                let mut out = ClientResult::default();
                tokio::time::sleep_until(start.into()).await;
                let mut i = 0u64;
                while Instant::now() < end {
                    i += 1;
                    let req = pb::SetWeightRequest {
                        role: role.clone(),
                        // Alternating weights, so every command changes state.
                        weight: 1.0 + (i % 2) as f64,
                    };
                    let sent = Instant::now();
                    let result = client.set_weight(request(req)).await;
                    let done = Instant::now();
                    match result {
                        Ok(_) => {
                            out.calls += 1;
                            if sent >= window_start && done <= end {
                                out.latencies.push(done - sent);
                            }
                        }
                        Err(e) => {
                            out.errors += 1;
                            out.first_error.get_or_insert_with(|| e.to_string());
                            tokio::time::sleep(Duration::from_millis(10)).await;
                        }
                    }
                }
                out
            })
        })
        .collect();

    let mut latencies = Vec::new();
    let mut calls = 0;
    let mut errors = 0;
    for task in tasks {
        let r = task.await?;
        latencies.extend(r.latencies);
        calls += r.calls;
        errors += r.errors;
        if let Some(e) = r.first_error {
            eprintln!("  client error: {e}");
        }
    }
    let (leader_after, term_after, applied_after) = members(&mut admin).await?;
    let fsync_after = quantile(&fsync_probe(data_dir, 50)?, 0.5);
    latencies.sort_unstable();
    Ok(Row {
        masters,
        clients,
        commits: latencies.len(),
        seconds: args.seconds as f64,
        p50: quantile(&latencies, 0.50),
        p99: quantile(&latencies, 0.99),
        max: latencies.last().copied().unwrap_or_default(),
        errors,
        entries: applied_after.saturating_sub(applied_before),
        calls,
        stable: leader_before == leader_after && term_before == term_after,
        fsync_before,
        fsync_after,
    })
}

/// The `q` quantile (nearest rank) of sorted `values`; zero when empty.
fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Times `n` synchronous 4 KiB writes (write + fdatasync) in `dir`: what
/// one durable write costs on this disk right now, for context.
fn fsync_probe(dir: &Path, n: usize) -> anyhow::Result<Vec<Duration>> {
    use std::io::Write as _;
    let file = tempfile::NamedTempFile::new_in(dir)?;
    let mut f = file.as_file();
    let block = [0x5au8; 4096];
    let mut times = Vec::with_capacity(n);
    for _ in 0..n {
        let t = Instant::now();
        f.write_all(&block)?;
        f.sync_data()?;
        times.push(t.elapsed());
    }
    times.sort_unstable();
    Ok(times)
}

/// The filesystem type `path` lives on (Linux `/proc/mounts`), so a
/// tmpfs data directory, whose fsyncs cost nothing, is visible in the output.
fn filesystem_of(path: &Path) -> String {
    let Ok(mounts) = std::fs::read_to_string("/proc/mounts") else {
        return "unknown".into();
    };
    mounts
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let (dev, mount, fs) = (f.next()?, f.next()?, f.next()?);
            path.starts_with(mount)
                .then(|| (mount.len(), format!("{fs} on {dev}")))
        })
        .max_by_key(|(len, _)| *len)
        .map_or_else(|| "unknown".into(), |(_, fs)| fs)
}
