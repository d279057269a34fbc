//! One run: the phases of the module docs of `main`, and the report.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::{Context, bail};
use berth_benches::agents::{Command, Fleet, SimAgent};
use berth_benches::cluster::Cluster;
use berth_benches::stats::{Counters, Rng, Rss, mib, quantile, secs};
use berth_proto as pb;
use berth_scheduler_core::Resources;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Args;
use crate::framework::{self, Framework};
use crate::tracker::Tracker;
use berth_benches::http;

/// How often the bench looks at the tracker while it waits.
const POLL: Duration = Duration::from_millis(20);

/// What a run measured.
#[derive(Debug, Default)]
struct Report {
    registration: Duration,
    /// From the first deployment request until every instance ran.
    all_running: Duration,
    /// ... until every deployment request was answered.
    requests_answered: Duration,
    /// ... until the framework had no deployment left.
    deployments_done: Option<Duration>,
    deploy_cpu: Option<Duration>,
    steady_cpu: Option<Duration>,
    steady_rss: Option<Rss>,
    fail_seconds: f64,
    fail_cpu: Option<Duration>,
    latencies: Vec<Duration>,
    failed: u64,
    unreplaced: usize,
    other_ends: u64,
    running_at_end: usize,
    api_running: u64,
    kv_entries: usize,
    kv_bytes: u64,
    end_rss: Option<Rss>,
    load_average: String,
}

type Shared = Arc<Mutex<Tracker>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let base = berth_benches::run_base(a.data_dir.as_deref())?;
    println!("# service_scale");
    berth_benches::print_cpu();
    println!(
        "masters:    {} {}",
        a.masters,
        match &a.berth {
            Some(p) => format!("`berth master` processes ({})", p.display()),
            None => "in this process".into(),
        }
    );
    println!(
        "framework:  {}",
        if a.berth.is_some() {
            "`berth service serve --no-router` process (CPU and RSS below are its own)"
        } else {
            "in this process (CPU and RSS below are the whole process's)"
        }
    );
    println!(
        "agents:     {} × {}; apps: {} × {} instances (cpus 0.01, mem 16, one port, no health check, backoffSeconds {})",
        a.agents, a.agent_resources, a.apps, a.instances, a.backoff_seconds
    );
    println!("failures:   {} at {}/s", a.failures, a.fail_rate);
    println!("load avg:   {} (before)", berth_benches::load_average());

    let mut cluster = match &a.berth {
        Some(berth) => Cluster::processes(a.masters, berth, &base, None)?,
        None => Cluster::in_process(a.masters, &base, None).await?,
    };
    let dir = cluster.path();
    let result = measure(&a, &mut cluster).await;
    cluster.stop().await;
    let report = result.with_context(|| format!("the run's files were in {}", dir.display()))?;
    print_report(&a, &report);
    Ok(())
}

async fn measure(a: &Args, cluster: &mut Cluster) -> anyhow::Result<Report> {
    let mut report = Report::default();
    let leader = cluster.wait_for_leader().await?;
    let masters = cluster.leader_first(leader);

    // 1. Agents.
    let agent: Resources = a
        .agent_resources
        .parse()
        .map_err(|e| anyhow::anyhow!("--agent-resources: {e}"))?;
    let counters = Arc::new(Counters::default());
    let (events_tx, mut events_rx) = mpsc::unbounded_channel();
    let fleet = Arc::new(
        Fleet::new(
            masters.clone(),
            pb::convert::resources_to_proto(&agent),
            false,
            berth_agent::DEFAULT_STATUS_RETRY_INITIAL,
            a.agents_per_connection,
            a.agents,
            Arc::clone(&counters),
            std::process::id(),
        )
        .services(events_tx),
    );
    let tracker: Shared = Arc::new(Mutex::new(Tracker::default()));
    let follower = {
        let tracker = Arc::clone(&tracker);
        tokio::spawn(async move {
            while let Some(e) = events_rx.recv().await {
                lock(&tracker).on_event(e);
            }
        })
    };
    let (stop_agents, agents_stopped) = watch::channel(false);
    let mut agents = JoinSet::new();
    let mut commands = Vec::with_capacity(a.agents);
    let started = Instant::now();
    for i in 0..a.agents {
        let (tx, rx) = mpsc::unbounded_channel();
        commands.push(tx);
        let agent = SimAgent::new(i, Arc::clone(&fleet)).commands(rx);
        agents.spawn(agent.run(agents_stopped.clone()));
    }
    report.registration = cluster
        .wait_registered(
            &counters,
            a.agents,
            started,
            Duration::from_secs(a.register_timeout),
        )
        .await?;

    // 2. The framework.
    let mut fw = match &a.berth {
        Some(berth) => framework::process(berth, &masters, &cluster.path())?,
        None => framework::in_process(&masters).await?,
    };
    let result = phases(a, cluster, &mut fw, &tracker, &commands, &mut report).await;
    report.end_rss = fw.rss();
    fw.stop().await;
    berth_benches::agents::stop(&stop_agents, &mut agents).await;
    follower.abort();
    result?;
    let t = lock(&tracker);
    report.other_ends = t.other_ends;
    report.running_at_end = t.running();
    Ok(report)
}

/// The framework's phases: deploy, steady, failures, checks.
async fn phases(
    a: &Args,
    cluster: &mut Cluster,
    fw: &mut Framework,
    tracker: &Shared,
    commands: &[mpsc::UnboundedSender<Command>],
    report: &mut Report,
) -> anyhow::Result<()> {
    let total = a.apps * a.instances as usize;
    wait_until_active(fw).await?;

    // 3. Deploy.
    eprintln!("deploying {} apps of {} instances", a.apps, a.instances);
    let cpu_before = fw.cpu_time();
    let started = Instant::now();
    let deploying = tokio::spawn(deploy_all(
        fw.api,
        a.apps,
        a.instances,
        a.backoff_seconds,
        a.deploy_concurrency,
    ));
    let deadline = started + Duration::from_secs(a.deploy_timeout);
    let mut next_note = started + Duration::from_secs(10);
    let mut answered = None;
    loop {
        let running = lock(tracker).running();
        if running >= total {
            break;
        }
        if answered.is_none() && deploying.is_finished() {
            answered = Some(started.elapsed());
        }
        if Instant::now() >= deadline {
            bail!(
                "{running} of {total} instances ran within {} s",
                a.deploy_timeout
            );
        }
        if Instant::now() >= next_note {
            eprintln!(
                "  {running} of {total} running after {:.0} s",
                started.elapsed().as_secs_f64()
            );
            next_note += Duration::from_secs(10);
        }
        fw.alive()?;
        cluster.alive().map_err(anyhow::Error::msg)?;
        tokio::time::sleep(POLL).await;
    }
    report.all_running = started.elapsed();
    deploying.await.context("the deploying task")??;
    report.requests_answered = answered.unwrap_or_else(|| started.elapsed());
    eprintln!(
        "{total} instances running after {:.1} s",
        report.all_running.as_secs_f64()
    );
    report.deployments_done = wait_deployments_done(fw, started, Duration::from_secs(120)).await;
    report.deploy_cpu = delta(fw.cpu_time(), cpu_before);

    // 4. Steady.
    eprintln!("steady for {} s", a.steady_seconds);
    let cpu_before = fw.cpu_time();
    tokio::time::sleep(Duration::from_secs(a.steady_seconds)).await;
    report.steady_cpu = delta(fw.cpu_time(), cpu_before);
    report.steady_rss = fw.rss();

    // 5. Failures.
    eprintln!("failing {} instances at {}/s", a.failures, a.fail_rate);
    let cpu_before = fw.cpu_time();
    let started = Instant::now();
    let every = Duration::from_secs_f64(1.0 / a.fail_rate);
    let mut rng = Rng::new(u64::from(std::process::id()));
    for n in 0..a.failures {
        tokio::time::sleep_until(started + every.mul_f64(n as f64)).await;
        let Some((task, agent)) = lock(tracker).pick(&mut rng) else {
            bail!("no running instance left to fail after {n} failures");
        };
        if commands[agent].send(Command::Fail(task)).is_err() {
            bail!("agent {agent} stopped");
        }
        fw.alive()?;
    }
    report.fail_seconds = started.elapsed().as_secs_f64();
    let deadline = Instant::now() + Duration::from_secs(a.replace_timeout);
    while lock(tracker).waiting() > 0 && Instant::now() < deadline {
        tokio::time::sleep(POLL).await;
    }
    report.fail_cpu = delta(fw.cpu_time(), cpu_before);
    {
        let mut t = lock(tracker);
        report.unreplaced = t.waiting();
        report.failed = t.failed;
        report.latencies = std::mem::take(&mut t.latencies);
        report.latencies.sort_unstable();
    }

    // 6. What the framework says (its last updates may be on their way
    // from the agents still), and its stored state.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let (status, apps) = http::json(fw.api, "GET", "/v2/apps").await?;
        if status != 200 {
            bail!("GET /v2/apps: {status}");
        }
        report.api_running = apps["apps"]
            .as_array()
            .map(|l| l.iter().filter_map(|a| a["tasksRunning"].as_u64()).sum())
            .unwrap_or(0);
        if report.api_running >= total as u64 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    (report.kv_entries, report.kv_bytes) = cluster
        .namespace_size(berth_service::serve::store::NAMESPACE)
        .await?;
    report.load_average = berth_benches::load_average();
    Ok(())
}

fn delta(after: Option<Duration>, before: Option<Duration>) -> Option<Duration> {
    Some(after?.saturating_sub(before?))
}

/// Waits until the framework answers as the active instance.
async fn wait_until_active(fw: &mut Framework) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        fw.alive()?;
        match http::json(fw.api, "GET", "/v2/info").await {
            Ok((200, info)) if info["elected"] == true => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => {}
            Ok((status, body)) => bail!("GET /v2/info: {status} {body}"),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The definition of app `n`.
fn app(n: usize, instances: u32, backoff: u64) -> serde_json::Value {
    json!({
        "id": format!("/scale/app-{n:05}"),
        "cmd": "sleep 1000000",
        "cpus": 0.01,
        "mem": 16,
        "instances": instances,
        "backoffSeconds": backoff,
        "portDefinitions": [{"port": 0}],
    })
}

/// Posts every app, `concurrency` at a time.
async fn deploy_all(
    api: std::net::SocketAddr,
    apps: usize,
    instances: u32,
    backoff: u64,
    concurrency: usize,
) -> anyhow::Result<()> {
    let mut next = 0;
    let mut posting = JoinSet::new();
    loop {
        while posting.len() < concurrency && next < apps {
            let body = app(next, instances, backoff);
            posting.spawn(async move { http::call(api, "POST", "/v2/apps", Some(&body)).await });
            next += 1;
        }
        let Some(done) = posting.join_next().await else {
            return Ok(());
        };
        let (status, body) = done??;
        if status != 201 {
            bail!(
                "POST /v2/apps: {status} {}",
                body.chars().take(300).collect::<String>()
            );
        }
    }
}

/// Waits (up to `limit`) until `GET /v2/deployments` is empty; the time
/// since `started`.
async fn wait_deployments_done(
    fw: &Framework,
    started: Instant,
    limit: Duration,
) -> Option<Duration> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Ok((200, list)) = http::json(fw.api, "GET", "/v2/deployments").await
            && list.as_array().is_some_and(Vec::is_empty)
        {
            return Some(started.elapsed());
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    None
}

fn print_report(a: &Args, r: &Report) {
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    let p50 = quantile(&r.latencies, 0.50);
    let p99 = quantile(&r.latencies, 0.99);
    let max = r.latencies.last().copied().unwrap_or_default();
    let total = a.apps * a.instances as usize;
    let steady = secs(r.steady_cpu) / a.steady_seconds.max(1) as f64 * 100.0;
    let failing = secs(r.fail_cpu) / r.fail_seconds.max(1e-9) * 100.0;
    println!();
    println!(
        "registration:  {} agents in {:.1} s",
        a.agents,
        r.registration.as_secs_f64()
    );
    println!(
        "deploy:        {total} instances running {:.1} s after the first request; requests answered after {:.1} s; no deployment left after {}; framework CPU {:.1} s",
        r.all_running.as_secs_f64(),
        r.requests_answered.as_secs_f64(),
        r.deployments_done.map_or_else(
            || "(still some)".into(),
            |d| format!("{:.1} s", d.as_secs_f64())
        ),
        secs(r.deploy_cpu)
    );
    println!(
        "steady:        framework CPU {:.2} s in {} s ({steady:.1}% of one core); RSS MiB (now / peak) {}",
        secs(r.steady_cpu),
        a.steady_seconds,
        mib(r.steady_rss)
    );
    println!(
        "failures:      {} failed in {:.1} s, {} replaced, {} not replaced in time; framework CPU {:.1} s ({failing:.0}% of one core, replacements included)",
        r.failed,
        r.fail_seconds,
        r.latencies.len(),
        r.unreplaced,
        secs(r.fail_cpu)
    );
    println!(
        "end:           {} running on agents, {} per the API; {} other task ends; state in the store: {} keys, {:.2} MiB; RSS MiB {}; load avg {}",
        r.running_at_end,
        r.api_running,
        r.other_ends,
        r.kv_entries,
        r.kv_bytes as f64 / 1024.0 / 1024.0,
        mib(r.end_rss),
        r.load_average
    );
    println!();
    println!(
        "| agents | apps × instances | all running s | failure→running p50 / p99 / max ms | steady CPU % | RSS MiB | store MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} × {} | {:.1} | {:.0} / {:.0} / {:.0} | {steady:.1} | {} | {:.2} |",
        a.agents,
        a.apps,
        a.instances,
        r.all_running.as_secs_f64(),
        ms(p50),
        ms(p99),
        ms(max),
        mib(r.steady_rss),
        r.kv_bytes as f64 / 1024.0 / 1024.0
    );
    if a.json {
        let rss = |x: Option<Rss>| x.map(|x| json!({"current": x.current_kib, "peak": x.peak_kib}));
        let line = json!({
            "agents": a.agents,
            "apps": a.apps,
            "instances": a.instances,
            "separate_framework": a.berth.is_some(),
            "all_running_s": r.all_running.as_secs_f64(),
            "requests_answered_s": r.requests_answered.as_secs_f64(),
            "deployments_done_s": r.deployments_done.map(|d| d.as_secs_f64()),
            "deploy_cpu_s": r.deploy_cpu.map(|d| d.as_secs_f64()),
            "steady_cpu_s": r.steady_cpu.map(|d| d.as_secs_f64()),
            "steady_seconds": a.steady_seconds,
            "steady_rss_kib": rss(r.steady_rss),
            "end_rss_kib": rss(r.end_rss),
            "failed": r.failed,
            "replaced": r.latencies.len(),
            "unreplaced": r.unreplaced,
            "fail_cpu_s": r.fail_cpu.map(|d| d.as_secs_f64()),
            "failure_to_running_ms": {"p50": ms(p50), "p99": ms(p99), "max": ms(max)},
            "running_at_end": r.running_at_end,
            "api_running": r.api_running,
            "other_ends": r.other_ends,
            "kv_entries": r.kv_entries,
            "kv_bytes": r.kv_bytes,
        });
        println!("{line}");
    }
}
