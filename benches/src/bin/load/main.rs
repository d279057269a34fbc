//! End-to-end load: simulated agents and SDK frameworks against a group of
//! three masters over real gRPC on loopback.
//!
//! ```sh
//! cargo run --release -p berth-benches --bin load -- \
//!     --agents 10000 --frameworks 100 --seconds 30
//! # masters as separate `berth master` processes (per-master RSS and CPU):
//! cargo build --release -p berth-cli
//! cargo run --release -p berth-benches --bin load -- --berth target/release/berth
//! ```
//!
//! The run:
//!
//! 1. starts three masters with their data in a fresh temporary directory
//!    (under `--data-dir`, default the system temp directory): in this
//!    process (`berth_master::run`; then RSS and CPU are the whole
//!    process's, generator included) or, with `--berth PATH`, as three
//!    `berth master` processes; waits for a leader that commits;
//! 2. connects `--agents` simulated agents ([`agents`]: tokio tasks that
//!    speak the agent protocol, sharing one HTTP/2 connection per
//!    `--agents-per-connection`) and waits until all are registered;
//! 3. subscribes `--frameworks` frameworks through the SDK ([`frameworks`]),
//!    each keeping up to `--in-flight` short tasks (`--task-ms`, default
//!    0–100 ms) launched;
//! 4. after `--warmup` seconds, measures for `--seconds`: launches (tasks
//!    the master accepted), TASK_RUNNING and TASK_FINISHED received,
//!    offer→launch latency, masters' RSS and CPU, load average;
//! 5. drains: frameworks launch nothing more, and the run waits until every
//!    launched task has reached its framework as FINISHED and every
//!    agent's updates are acknowledged; then it prints the report (and
//!    with `--json` one JSON line).
//!
//! `--smoke` is a small run (50 agents, 4 frameworks, 3 s) for the tests.
//! A watchdog ends the process if the run takes longer than its budget.
//!
//! Results and the machine they came from are in docs/benchmarks.md.

mod frameworks;

use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, bail};
use berth_proto as pb;
use berth_scheduler_core::Resources;
use berth_sdk::FrameworkConfig;
use clap::Parser;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use berth_benches::agents::{self, Fleet, SimAgent};
use berth_benches::cluster::{self, Cluster};
use berth_benches::stats::{self, C, Counters, Rss, Snapshot, quantile};

use crate::frameworks::{FrameworkResult, Phase, Workload};

/// Longest refuse filter and status resend delay accepted, in seconds.
const MAX_SECONDS: f64 = 3600.0;
/// How long the master keeps a framework whose stream was lost.
const FRAMEWORK_FAILOVER_TIMEOUT: Duration = Duration::from_secs(300);
/// Longest task duration accepted, in milliseconds.
const MAX_TASK_MS: u64 = 3_600_000;

/// End-to-end load on a three-master berth cluster over gRPC on loopback:
/// simulated agents, SDK frameworks launching short tasks.
#[derive(Debug, Parser)]
#[command(name = "load")]
struct Args {
    /// Simulated agents.
    #[arg(long, default_value_t = 10_000)]
    agents: usize,
    /// Frameworks.
    #[arg(long, default_value_t = 100)]
    frameworks: usize,
    /// Masters in the Raft group.
    #[arg(long, default_value_t = 3)]
    masters: usize,
    /// Measured seconds.
    #[arg(long, default_value_t = 30)]
    seconds: u64,
    /// Seconds of load before the measurement starts.
    #[arg(long, default_value_t = 5)]
    warmup: u64,
    /// Tasks each framework keeps launched and not yet terminal.
    #[arg(long, default_value_t = 50)]
    in_flight: usize,
    /// Resources of each task.
    #[arg(long, default_value = "cpus:0.1;mem:32")]
    task_resources: String,
    /// Task durations in milliseconds, uniform in MIN-MAX (or one value).
    #[arg(long, default_value = "0-100", value_parser = parse_ms_range)]
    task_ms: (u64, u64),
    /// Resources each agent advertises.
    #[arg(
        long,
        default_value = "cpus:16;mem:65536;disk:100000;ports:[31000-32000]"
    )]
    agent_resources: String,
    /// Agents sharing one HTTP/2 connection to a master.
    #[arg(long, default_value_t = 100)]
    agents_per_connection: usize,
    /// Seconds a declined offer (and an accepted offer's remainder) is not
    /// offered to the same framework again.
    #[arg(long, default_value_t = 1.0)]
    refuse: f64,
    /// Most offers one framework holds at once (the masters'
    /// `--offer-limit`; default: the masters' default, 4).
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    offer_limit: Option<u64>,
    /// Frameworks never suppress offers: they decline what they cannot
    /// use even when they have no room for tasks. By default a framework
    /// suppresses offers when it has `--in-flight` tasks in flight and
    /// revives when at least half of that room is free again, as a Mesos
    /// framework should.
    #[arg(long)]
    no_suppress: bool,
    /// First resend delay of an unacknowledged status update, in seconds
    /// (the agent's default, as in Mesos, is 10).
    #[arg(long, default_value_t = berth_agent::DEFAULT_STATUS_RETRY_INITIAL.as_secs_f64())]
    status_retry: f64,
    /// Agents report TASK_STARTING before TASK_RUNNING, as `berth agent`
    /// does (one more committed update per task).
    #[arg(long)]
    send_starting: bool,
    /// Run the masters as `berth master` processes of this binary instead
    /// of in this process.
    #[arg(long)]
    berth: Option<PathBuf>,
    /// Directory to create the run's temporary directory in (default: the
    /// system temp directory).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Seconds to wait for every agent to register.
    #[arg(long, default_value_t = 180)]
    register_timeout: u64,
    /// Seconds to wait, after the measurement, for the tasks in flight to
    /// finish and their updates to be acknowledged.
    #[arg(long, default_value_t = 60)]
    drain_timeout: u64,
    /// Also print the results as one JSON object on the last line.
    #[arg(long)]
    json: bool,
    /// A small run for the tests: 3 masters, 50 agents, 4 frameworks, 1 s
    /// warmup, 3 s measured, 20 tasks in flight per framework (overrides
    /// those options).
    #[arg(long)]
    smoke: bool,
}

/// The validated settings of a run.
#[derive(Debug)]
struct Plan {
    args: Args,
    template: pb::TaskInfo,
    agent_resources: pb::Resources,
    refuse: Duration,
    status_retry: Duration,
    offer_limit: Option<usize>,
}

fn parse_ms_range(s: &str) -> Result<(u64, u64), String> {
    let (lo, hi) = s.split_once('-').unwrap_or((s, s));
    let parse = |v: &str| {
        v.trim()
            .parse::<u64>()
            .map_err(|_| format!("{v:?} is not a whole number of milliseconds"))
    };
    let (lo, hi) = (parse(lo)?, parse(hi)?);
    if lo > hi {
        return Err(format!("the range {s:?} is empty (MIN must be <= MAX)"));
    }
    if hi > MAX_TASK_MS {
        return Err(format!("task durations are limited to {MAX_TASK_MS} ms"));
    }
    Ok((lo, hi))
}

fn seconds(name: &str, s: f64, zero_ok: bool) -> anyhow::Result<Duration> {
    if !s.is_finite() || s < 0.0 || (s == 0.0 && !zero_ok) || s > MAX_SECONDS {
        bail!(
            "--{name} must be {} and at most {MAX_SECONDS} seconds, got {s}",
            if zero_ok { "0 or more" } else { "positive" }
        );
    }
    Ok(Duration::from_secs_f64(s))
}

impl Plan {
    fn new(mut args: Args) -> anyhow::Result<Plan> {
        if args.smoke {
            args.masters = 3;
            args.agents = 50;
            args.frameworks = 4;
            args.warmup = 1;
            args.seconds = 3;
            args.in_flight = 20;
            args.agents_per_connection = 10;
            args.offer_limit = Some(4);
        }
        for (name, v) in [
            ("agents", args.agents),
            ("frameworks", args.frameworks),
            ("masters", args.masters),
            ("in-flight", args.in_flight),
            ("agents-per-connection", args.agents_per_connection),
        ] {
            if v == 0 {
                bail!("--{name} must be at least 1");
            }
        }
        if args.agents > 1_000_000 || args.frameworks > 100_000 || args.masters > 7 {
            bail!("at most 1,000,000 agents, 100,000 frameworks and 7 masters");
        }
        if args.seconds == 0 {
            bail!("--seconds must be at least 1");
        }
        berth_benches::at_most_a_day(&[
            ("seconds", args.seconds),
            ("warmup", args.warmup),
            ("register-timeout", args.register_timeout),
            ("drain-timeout", args.drain_timeout),
        ])?;
        let refuse = seconds("refuse", args.refuse, true)?;
        let status_retry = seconds("status-retry", args.status_retry, false)?;
        let template = berth_sdk::shell_task("template", "load", "true", &args.task_resources)
            .context("--task-resources")?;
        let agent: Resources = args
            .agent_resources
            .parse()
            .map_err(|e| anyhow::anyhow!("--agent-resources: {e}"))?;
        let agent_resources = pb::convert::resources_to_proto(&agent);
        berth_benches::check_berth(args.berth.as_deref())?;
        let offer_limit = args
            .offer_limit
            .map(|n| usize::try_from(n).unwrap_or(usize::MAX));
        Ok(Plan {
            args,
            template,
            agent_resources,
            refuse,
            status_retry,
            offer_limit,
        })
    }

    /// Seconds the whole run may take before the watchdog ends it.
    fn budget(&self) -> u64 {
        let a = &self.args;
        cluster::LEADER_TIMEOUT.as_secs()
            + a.register_timeout
            + 60 // subscriptions
            + a.warmup
            + a.seconds
            + a.drain_timeout
            + 30 // agents stopping
            + cluster::STOP_TIMEOUT.as_secs() * a.masters as u64
            + 30
    }
}

fn main() -> anyhow::Result<()> {
    let plan = Plan::new(Args::parse())?;
    berth_benches::watchdog("load", plan.budget());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(plan))
}

/// What a run measured.
#[derive(Debug)]
struct Report {
    registration: Duration,
    subscription: Duration,
    window: Snapshot,
    seconds: f64,
    latencies: Vec<Duration>,
    leader: usize,
    leader_stable: bool,
    rss: Vec<Option<Rss>>,
    leader_cpu: Option<Duration>,
    process_cpu: Option<Duration>,
    load_average: String,
    drained: bool,
    totals: Snapshot,
    pending_updates: i64,
    left_in_flight: usize,
    first_errors: Vec<String>,
}

async fn run(plan: Plan) -> anyhow::Result<()> {
    let a = &plan.args;
    let base = berth_benches::run_base(a.data_dir.as_deref())?;
    println!("# load");
    berth_benches::print_cpu();
    println!(
        "masters:    {} {}",
        a.masters,
        match &a.berth {
            Some(p) => format!("`berth master` processes ({})", p.display()),
            None => "in this process (RSS and CPU below are the whole process's)".into(),
        }
    );
    println!(
        "agents:     {} × {} ({} per connection), status resend after {:?}{}",
        a.agents,
        a.agent_resources,
        a.agents_per_connection,
        plan.status_retry,
        if a.send_starting {
            ", TASK_STARTING sent"
        } else {
            ""
        }
    );
    println!(
        "frameworks: {} × up to {} tasks in flight of {} for {}–{} ms; refuse {:?}; {}",
        a.frameworks,
        a.in_flight,
        a.task_resources,
        a.task_ms.0,
        a.task_ms.1,
        plan.refuse,
        if a.no_suppress {
            "never suppress".to_string()
        } else {
            format!(
                "suppress when full, revive at {} free",
                frameworks::revive_at(a.in_flight)
            )
        }
    );
    println!(
        "offer limit: {}",
        plan.offer_limit.map_or_else(
            || "the masters' default".to_string(),
            |n| format!("{n} per framework")
        )
    );
    println!(
        "phases:     {} s warmup + {} s measured, then drain",
        a.warmup, a.seconds
    );
    println!("load avg:   {} (before)", berth_benches::load_average());

    let mut cluster = match &a.berth {
        Some(berth) => Cluster::processes(a.masters, berth, &base, plan.offer_limit)?,
        None => Cluster::in_process(a.masters, &base, plan.offer_limit).await?,
    };
    let result = measure(&plan, &mut cluster).await;
    let dir = cluster.path();
    cluster.stop().await;
    let report = result.with_context(|| format!("the run's files were in {}", dir.display()))?;
    print_report(&plan, &report);
    Ok(())
}

async fn measure(plan: &Plan, cluster: &mut Cluster) -> anyhow::Result<Report> {
    let a = &plan.args;
    let started = Instant::now();
    let leader = cluster.wait_for_leader().await?;
    eprintln!(
        "{} masters at {:?}: master {} leads after {:.1} s",
        a.masters,
        cluster.addrs,
        leader + 1,
        started.elapsed().as_secs_f64()
    );
    // The leader first: nobody needs a redirect to find it.
    let mut masters = vec![cluster.addrs[leader].clone()];
    masters.extend(
        cluster
            .addrs
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != leader)
            .map(|(_, m)| m.clone()),
    );

    let counters = Arc::new(Counters::default());
    let run_id = u32::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_secs() & 0xffff_ffff),
    )
    .unwrap_or(0);
    let fleet = Arc::new(Fleet::new(
        masters.clone(),
        plan.agent_resources.clone(),
        a.send_starting,
        plan.status_retry,
        a.agents_per_connection,
        a.agents,
        Arc::clone(&counters),
        run_id,
    ));

    // 1. Agents.
    let (stop_agents, agents_stopped) = watch::channel(false);
    let started = Instant::now();
    let mut agents = JoinSet::new();
    for i in 0..a.agents {
        agents.spawn(SimAgent::new(i, Arc::clone(&fleet)).run(agents_stopped.clone()));
    }
    let deadline = started + Duration::from_secs(a.register_timeout);
    let mut next_note = started + Duration::from_secs(5);
    while counters.get(C::AgentsRegistered) < a.agents as u64 {
        if Instant::now() >= deadline {
            let _ = stop_agents.send(true);
            bail!(
                "only {} of {} agents registered within {} s",
                counters.get(C::AgentsRegistered),
                a.agents,
                a.register_timeout
            );
        }
        if let Err(e) = cluster.alive() {
            bail!("{e}");
        }
        if Instant::now() >= next_note {
            eprintln!(
                "  {} of {} agents registered",
                counters.get(C::AgentsRegistered),
                a.agents
            );
            next_note += Duration::from_secs(5);
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let registration = started.elapsed();
    eprintln!(
        "{} agents registered in {:.1} s",
        a.agents,
        registration.as_secs_f64()
    );

    // 2. Frameworks.
    let started = Instant::now();
    let mut subscribing = JoinSet::new();
    for i in 0..a.frameworks {
        let masters = masters.clone();
        subscribing.spawn(async move {
            // A failover timeout, so that a leader change (the stream
            // lost until the SDK re-subscribes) does not remove it.
            let config = FrameworkConfig::new(format!("load-{i}"))
                .failover_timeout(FRAMEWORK_FAILOVER_TIMEOUT);
            (i, berth_sdk::subscribe(masters, config).await)
        });
    }
    let mut subscribed = Vec::with_capacity(a.frameworks);
    while let Some(joined) = subscribing.join_next().await {
        let (i, result) = joined?;
        let (framework, events) =
            result.with_context(|| format!("framework {i} could not subscribe"))?;
        subscribed.push((i, framework, events));
    }
    let subscription = started.elapsed();
    eprintln!(
        "{} frameworks subscribed in {:.1} s",
        a.frameworks,
        subscription.as_secs_f64()
    );

    // 3. Load: warmup, then the measured window.
    let window_start = Instant::now() + Duration::from_secs(a.warmup);
    let window_end = window_start + Duration::from_secs(a.seconds);
    let window: frameworks::Window = Arc::new(OnceLock::new());
    let _ = window.set((window_start, window_end));
    let work = Arc::new(Workload {
        template: plan.template.clone(),
        duration_ms: a.task_ms,
        in_flight: a.in_flight,
        suppress: !a.no_suppress,
        refuse: plan.refuse,
        counters: Arc::clone(&counters),
        window,
    });
    let (phase_tx, phase_rx) = watch::channel(Phase::Launch);
    let (drained_tx, mut drained_rx) = mpsc::unbounded_channel();
    let mut loops = JoinSet::new();
    for (i, framework, events) in subscribed {
        loops.spawn(frameworks::run(
            i,
            framework,
            events,
            Arc::clone(&work),
            phase_rx.clone(),
            drained_tx.clone(),
        ));
    }
    drop(drained_tx);

    tokio::time::sleep_until(window_start).await;
    let before = counters.snapshot();
    let leader_cpu_before = cluster.cpu_time(leader);
    let process_cpu_before = stats::cpu_time(None);
    eprintln!("measuring for {} s", a.seconds);
    tokio::time::sleep_until(window_end).await;
    let after = counters.snapshot();
    let leader_cpu = cluster
        .cpu_time(leader)
        .zip(leader_cpu_before)
        .map(|(b, a)| b.saturating_sub(a));
    let process_cpu = stats::cpu_time(None)
        .zip(process_cpu_before)
        .map(|(b, a)| b.saturating_sub(a));
    let rss: Vec<Option<Rss>> = (0..cluster.addrs.len()).map(|i| cluster.rss(i)).collect();
    let load_average = berth_benches::load_average();
    let leader_stable = cluster.leader().await == Some(leader);

    // 4. Drain.
    eprintln!("draining");
    let _ = phase_tx.send(Phase::Drain);
    let deadline = Instant::now() + Duration::from_secs(a.drain_timeout);
    let mut drained_frameworks = 0;
    let drained = loop {
        while drained_rx.try_recv().is_ok() {
            drained_frameworks += 1;
        }
        if drained_frameworks == a.frameworks && counters.pending_updates() == 0 {
            break true;
        }
        if Instant::now() >= deadline {
            eprintln!(
                "drain incomplete after {} s: {drained_frameworks} of {} frameworks without tasks in flight, {} updates unacknowledged",
                a.drain_timeout,
                a.frameworks,
                counters.pending_updates()
            );
            break false;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let _ = phase_tx.send(Phase::Stop);
    let mut latencies = Vec::new();
    let mut left_in_flight = 0;
    let mut first_errors = Vec::new();
    while let Some(joined) = loops.join_next().await {
        let r: FrameworkResult = joined?;
        latencies.extend(r.latencies);
        left_in_flight += r.left_in_flight;
        first_errors.extend(r.first_error);
    }
    latencies.sort_unstable();
    let totals = counters.snapshot();
    let pending_updates = counters.pending_updates();
    berth_benches::agents::stop(&stop_agents, &mut agents).await;
    Ok(Report {
        registration,
        subscription,
        window: after.since(&before),
        seconds: a.seconds as f64,
        latencies,
        leader,
        leader_stable,
        rss,
        leader_cpu,
        process_cpu,
        load_average,
        drained,
        totals,
        pending_updates,
        left_in_flight,
        first_errors,
    })
}

/// Errors of any kind: failed calls, lost streams, unexpected task states
/// and agent protocol surprises.
fn errors(s: &Snapshot) -> u64 {
    s.get(C::CallErrors)
        + s.get(C::FrameworkErrors)
        + s.get(C::Unexpected)
        + s.get(C::AgentErrors)
        + s.get(C::AgentReconnects)
}

fn mib(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn print_report(plan: &Plan, r: &Report) {
    let a = &plan.args;
    let w = &r.window;
    let ms = |d: Duration| format!("{:.1}", d.as_secs_f64() * 1000.0);
    let per_s = |c: C| w.get(c) as f64 / r.seconds;
    let rss_text = |x: Option<Rss>| {
        x.map_or_else(
            || "?".to_string(),
            |x| format!("{:.0} / {:.0}", mib(x.current_kib), mib(x.peak_kib)),
        )
    };
    let followers: Vec<String> = (0..r.rss.len())
        .filter(|i| *i != r.leader)
        .map(|i| rss_text(r.rss[i]))
        .collect();
    let (leader_label, followers_text) = if plan.args.berth.is_some() {
        ("leader RSS MiB (now / peak)", followers.join(", "))
    } else {
        ("process RSS MiB (now / peak)", "in process".to_string())
    };
    let p50 = quantile(&r.latencies, 0.50);
    let p99 = quantile(&r.latencies, 0.99);
    let max = r.latencies.last().copied().unwrap_or_default();
    let launches = w.get(C::Launched);

    println!();
    println!(
        "registration: {} agents in {:.1} s; subscription: {} frameworks in {:.1} s",
        a.agents,
        r.registration.as_secs_f64(),
        a.frameworks,
        r.subscription.as_secs_f64()
    );
    println!(
        "window:       {} offers ({:.2} per launch), {} declined, {} accept calls, {} suppress / {} revive; {} updates sent, {} resent, {} acks ({} duplicate)",
        w.get(C::Offers),
        w.get(C::Offers) as f64 / launches.max(1) as f64,
        w.get(C::OffersDeclined),
        w.get(C::AcceptCalls),
        w.get(C::Suppresses),
        w.get(C::Revives),
        w.get(C::UpdatesSent),
        w.get(C::UpdatesResent),
        w.get(C::AcksApplied),
        w.get(C::AcksIgnored)
    );
    if let Some(cpu) = r.leader_cpu {
        println!(
            "leader CPU:   {:.1} s in {} s ({:.0}% of one core), {:.0} µs per launch",
            cpu.as_secs_f64(),
            a.seconds,
            cpu.as_secs_f64() / r.seconds * 100.0,
            cpu.as_secs_f64() * 1e6 / launches.max(1) as f64
        );
    }
    if let Some(cpu) = r.process_cpu {
        println!(
            "this process: {:.1} s CPU in {} s{}",
            cpu.as_secs_f64(),
            a.seconds,
            if plan.args.berth.is_some() {
                " (agents and frameworks)"
            } else {
                " (masters, agents and frameworks)"
            }
        );
    }
    if !r.leader_stable {
        println!("note:         leadership changed during the run");
    }
    println!(
        "drain:        {}; {} launched, {} finished, {} other end, {} terminal updates acknowledged, {} updates unacknowledged, {} tasks left in flight",
        if r.drained { "complete" } else { "INCOMPLETE" },
        r.totals.get(C::Launched),
        r.totals.get(C::Finished),
        r.totals.get(C::Unexpected),
        r.totals.get(C::TerminalAcked),
        r.pending_updates,
        r.left_in_flight
    );
    for e in r.first_errors.iter().take(5) {
        println!("error:        {e}");
    }
    println!();
    println!(
        "| agents | frameworks | launches | launches/s | running/s | finished/s | offer→launch p50 / p99 / max ms | {leader_label} | followers RSS MiB | load avg | errors |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|---:|");
    println!(
        "| {} | {} | {} | {:.0} | {:.0} | {:.0} | {} / {} / {} | {} | {} | {} | {} |",
        a.agents,
        a.frameworks,
        launches,
        per_s(C::Launched),
        per_s(C::Running),
        per_s(C::Finished),
        ms(p50),
        ms(p99),
        ms(max),
        rss_text(r.rss.get(r.leader).copied().flatten()),
        followers_text,
        r.load_average,
        errors(&r.totals)
    );
    if a.json {
        let json = serde_json::json!({
            "agents": a.agents,
            "frameworks": a.frameworks,
            "masters": a.masters,
            "separate_masters": plan.args.berth.is_some(),
            "seconds": a.seconds,
            "offer_limit": plan.offer_limit,
            "suppress": !a.no_suppress,
            "registration_s": r.registration.as_secs_f64(),
            "subscription_s": r.subscription.as_secs_f64(),
            "agents_registered": r.totals.get(C::AgentsRegistered),
            "launches": launches,
            "launches_per_s": per_s(C::Launched),
            "running_per_s": per_s(C::Running),
            "finished_per_s": per_s(C::Finished),
            "offers": w.get(C::Offers),
            "latency_samples": r.latencies.len(),
            "offer_to_launch_ms": {
                "p50": p50.as_secs_f64() * 1000.0,
                "p99": p99.as_secs_f64() * 1000.0,
                "max": max.as_secs_f64() * 1000.0,
            },
            "rss_kib": r.rss.iter().map(|x| x.map(|x| serde_json::json!({
                "current": x.current_kib, "peak": x.peak_kib,
            }))).collect::<Vec<_>>(),
            "leader": r.leader + 1,
            "leader_stable": r.leader_stable,
            "leader_cpu_s": r.leader_cpu.map(|d| d.as_secs_f64()),
            "load_average": r.load_average,
            "errors": errors(&r.totals),
            "first_errors": r.first_errors.iter().take(5).collect::<Vec<_>>(),
            "updates_resent": r.totals.get(C::UpdatesResent),
            "drained": r.drained,
            "total_launched": r.totals.get(C::Launched),
            "total_runs_received": r.totals.get(C::RunsReceived),
            "total_running": r.totals.get(C::Running),
            "total_finished": r.totals.get(C::Finished),
            "total_other_end": r.totals.get(C::Unexpected),
            "total_terminal_acked": r.totals.get(C::TerminalAcked),
            "pending_updates": r.pending_updates,
            "left_in_flight": r.left_in_flight,
        });
        println!("{json}");
    }
}
