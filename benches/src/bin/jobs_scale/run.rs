//! One run: the phases of the module docs of `main`.

use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use anyhow::{Context, bail};
use berth_benches::agents::{Fleet, SimAgent};
use berth_benches::cluster::Cluster;
use berth_benches::framework::Framework;
use berth_benches::http;
use berth_benches::stats::{C, Counters};
use berth_proto as pb;
use berth_scheduler_core::Resources;
use serde_json::json;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinSet;
use tokio::time::Instant;

use crate::Args;
use crate::report::{self, Report};
use crate::spread::Spread;
use crate::tracker::Tracker;

/// How often the bench looks at the tracker while it waits.
const POLL: Duration = Duration::from_millis(50);
/// The framework's name with the masters.
const NAME: &str = "jobs-scale";
/// How long one job's creation may take: a framework behind on its runs
/// answers late, and the bench reports how late rather than giving up.
const CREATE_TIMEOUT: Duration = Duration::from_secs(600);

type Shared = Arc<Mutex<Tracker>>;

fn lock(t: &Shared) -> std::sync::MutexGuard<'_, Tracker> {
    t.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Now, in ms since the epoch.
pub(crate) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// Sleeps until the wall-clock time `at_ms`.
async fn sleep_until_ms(at_ms: i64) {
    let wait = u64::try_from(at_ms - now_ms()).unwrap_or(0);
    tokio::time::sleep(Duration::from_millis(wait)).await;
}

pub(crate) async fn run(a: Args) -> anyhow::Result<()> {
    let base = berth_benches::run_base(a.data_dir.as_deref())?;
    let spread = Spread::new(a.jobs, a.runs_per_minute)?;
    report::header(&a, &spread);
    let mut cluster = match &a.berth {
        Some(berth) => Cluster::processes(a.masters, berth, &base, None)?,
        None => Cluster::in_process(a.masters, &base, None).await?,
    };
    let dir = cluster.path();
    let result = measure(&a, spread, &mut cluster).await;
    cluster.stop().await;
    let report = result.with_context(|| format!("the run's files were in {}", dir.display()))?;
    report::print(&a, &report);
    Ok(())
}

async fn measure(a: &Args, spread: Spread, cluster: &mut Cluster) -> anyhow::Result<Report> {
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
        .reporting(events_tx),
    );
    let tracker: Shared = Arc::new(Mutex::new(Tracker::default()));
    let follower = {
        let tracker = Arc::clone(&tracker);
        tokio::spawn(async move {
            while let Some(e) = events_rx.recv().await {
                lock(&tracker).on_event(&e);
            }
        })
    };
    let (stop_agents, agents_stopped) = watch::channel(false);
    let mut agents = JoinSet::new();
    let started = Instant::now();
    for i in 0..a.agents {
        let agent = SimAgent::new(i, Arc::clone(&fleet));
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
        Some(berth) => {
            let log = a
                .framework_log
                .clone()
                .unwrap_or_else(|| cluster.path().join("jobs.log"));
            start_process(berth, &masters, &log)?
        }
        None => start_in_process(&masters).await?,
    };
    let result = phases(a, spread, cluster, leader, &mut fw, &tracker, &mut report).await;
    report.end_rss = fw.rss();
    fw.stop().await;
    berth_benches::agents::stop(&stop_agents, &mut agents).await;
    follower.abort();
    result?;
    report.agent_errors = counters.get(C::AgentErrors);
    let t = lock(&tracker);
    report.again = t.again;
    report.unreadable = t.unreadable;
    report.other_ends = t.other_ends;
    report.finished = t.finished;
    Ok(report)
}

/// `berth jobs serve` of the binary `berth`; its log (`BERTH_LOG=warn`,
/// or `$JOBS_SCALE_LOG`) goes to `log`.
fn start_process(
    berth: &std::path::Path,
    masters: &[String],
    log: &std::path::Path,
) -> anyhow::Result<Framework> {
    let args: Vec<String> = [
        "jobs",
        "serve",
        "--name",
        NAME,
        "--instance",
        "bench",
        "--listen",
        "127.0.0.1:0",
        "--master",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .chain([masters.join(",")])
    .collect();
    let level = std::env::var("JOBS_SCALE_LOG").unwrap_or_else(|_| "warn".into());
    Framework::process(berth, &args, &level, log)
}

/// The job framework on this process's runtime.
async fn start_in_process(masters: &[String]) -> anyhow::Result<Framework> {
    let masters = masters.to_vec();
    Framework::in_process(move |listener, shutdown| {
        let config = berth_jobs::serve::ServeConfig {
            masters,
            name: NAME.into(),
            holder: "bench".into(),
            listen: listener
                .local_addr()
                .unwrap_or_else(|_| ([127, 0, 0, 1], 0).into()),
        };
        berth_jobs::serve::serve(config, listener, shutdown)
    })
    .await
}

fn delta(after: Option<Duration>, before: Option<Duration>) -> Option<Duration> {
    Some(after?.saturating_sub(before?))
}

/// The framework's phases: create, measure, drain, checks.
async fn phases(
    a: &Args,
    spread: Spread,
    cluster: &mut Cluster,
    leader: usize,
    fw: &mut Framework,
    tracker: &Shared,
    report: &mut Report,
) -> anyhow::Result<()> {
    wait_until_subscribed(fw).await?;
    // Settled: the framework registered and idle.
    tokio::time::sleep(Duration::from_secs(1)).await;
    report.idle_rss = fw.rss();

    // 3. Create.
    eprintln!("creating {} jobs", a.jobs);
    let cpu_before = fw.cpu_time();
    let started = Instant::now();
    let creating = tokio::spawn(create_all(
        fw.api,
        spread,
        a.duration_ms,
        a.create_concurrency,
    ));
    let deadline = started + Duration::from_secs(a.create_timeout);
    while !creating.is_finished() {
        if Instant::now() >= deadline {
            creating.abort();
            bail!("creating {} jobs took over {} s", a.jobs, a.create_timeout);
        }
        fw.alive()?;
        cluster.alive().map_err(anyhow::Error::msg)?;
        tokio::time::sleep(POLL).await;
    }
    report.create = started.elapsed();
    report.create_latencies = creating.await.context("the creating task")??;
    report.create_cpu = delta(fw.cpu_time(), cpu_before);
    report.created_rss = fw.rss();
    (report.kv_entries_created, report.kv_bytes_created) =
        cluster.namespace_size(berth_jobs::serve::NAMESPACE).await?;
    eprintln!(
        "{} jobs created in {:.1} s",
        a.jobs,
        report.create.as_secs_f64()
    );

    // 4. The measured window, from a whole second on.
    let window_ms = i64::try_from(a.window_secs() * 1000).unwrap_or(i64::MAX);
    let from_ms = (now_ms() / 1000 + 2) * 1000;
    let to_ms = from_ms + window_ms;
    report.window = (from_ms, to_ms);
    report.expected = spread.ticks_between(
        u64::try_from(from_ms / 1000).unwrap_or(0),
        u64::try_from(to_ms / 1000).unwrap_or(0),
    );
    sleep_until_ms(from_ms).await;
    eprintln!(
        "measuring {} s ({} ticks due)",
        a.window_secs(),
        report.expected
    );
    let cpu_before = fw.cpu_time();
    let master_cpu_before = cluster.cpu_time(leader);
    let mut next_note = from_ms + 30_000;
    let mut peak_rss = fw.rss().map_or(0, |r| r.current_kib);
    while now_ms() < to_ms {
        fw.alive()?;
        cluster.alive().map_err(anyhow::Error::msg)?;
        peak_rss = peak_rss.max(fw.rss().map_or(0, |r| r.current_kib));
        if now_ms() >= next_note {
            let t = lock(tracker);
            let done = t.ticked_between(from_ms, now_ms()).len();
            eprintln!(
                "  {done} runs started of ticks in the first {:.0} s; {} tasks running",
                (now_ms() - from_ms) as f64 / 1000.0,
                t.running()
            );
            next_note += 30_000;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    report.window_cpu = delta(fw.cpu_time(), cpu_before);
    report.master_cpu = delta(cluster.cpu_time(leader), master_cpu_before);
    report.window_rss = fw.rss();
    report.window_peak_rss_kib = peak_rss;
    report.master_rss = cluster.rss(leader);

    // 5. The window's last runs start (and then run their time; other
    // jobs' runs go on meanwhile).
    let deadline = Instant::now() + Duration::from_secs(a.drain_timeout);
    while (lock(tracker).ticked_between(from_ms, to_ms).len() as u64) < report.expected
        && Instant::now() < deadline
    {
        fw.alive()?;
        tokio::time::sleep(POLL).await;
    }
    tokio::time::sleep(Duration::from_millis(a.duration_ms + 500)).await;
    report.started = lock(tracker).ticked_between(from_ms, to_ms);

    // 6. What the framework says: the window's runs all finished (their
    // last updates may still be on their way), and its state's size.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let asked = Instant::now();
        let (status, body) = http::call(
            fw.api,
            "GET",
            "/v1/jobs?embed=history&embed=activeRuns",
            None,
        )
        .await?;
        report.list_time = asked.elapsed();
        report.list_bytes = body.len();
        if status != 200 {
            bail!(
                "GET /v1/jobs: {status} {}",
                body.chars().take(300).collect::<String>()
            );
        }
        let jobs: serde_json::Value =
            serde_json::from_str(&body).context("GET /v1/jobs: the answer is not JSON")?;
        report.api = report::count_history(&jobs, from_ms, to_ms)?;
        if report.api.active == 0 || Instant::now() >= deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    (report.kv_entries_end, report.kv_bytes_end) =
        cluster.namespace_size(berth_jobs::serve::NAMESPACE).await?;
    report.load_average = berth_benches::load_average();
    Ok(())
}

/// Waits until the framework is the active instance and has its
/// framework id from the masters.
async fn wait_until_subscribed(fw: &mut Framework) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        fw.alive()?;
        match http::json(fw.api, "GET", "/v1/info").await {
            Ok((200, info)) if info["frameworkId"].is_string() => return Ok(()),
            Ok(_) | Err(_) if Instant::now() < deadline => {}
            Ok((status, body)) => bail!("GET /v1/info: {status} {body}"),
            Err(e) => return Err(e),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// The definition of job `i`.
fn job(i: u64, spread: &Spread, duration_ms: u64) -> serde_json::Value {
    json!({
        "id": format!("scale-{i:05}"),
        "labels": {"duration_ms": duration_ms.to_string()},
        "run": {"cmd": "true", "cpus": 0.01, "mem": 8},
        "schedules": [{
            "id": "tick",
            "cron": spread.cron(i),
            "timezone": "UTC",
            "concurrencyPolicy": "ALLOW",
        }],
    })
}

/// Creates every job, `concurrency` at a time; each request's time, in
/// the jobs' order.
async fn create_all(
    api: std::net::SocketAddr,
    spread: Spread,
    duration_ms: u64,
    concurrency: usize,
) -> anyhow::Result<Vec<Duration>> {
    let mut next = 0;
    let mut latencies = vec![Duration::ZERO; usize::try_from(spread.jobs).unwrap_or(0)];
    let mut posting = JoinSet::new();
    loop {
        while posting.len() < concurrency && next < spread.jobs {
            let body = job(next, &spread, duration_ms);
            let i = next;
            posting.spawn(async move {
                let asked = Instant::now();
                let answer =
                    http::call_within(CREATE_TIMEOUT, api, "POST", "/v1/jobs", Some(&body)).await;
                (i, asked.elapsed(), answer)
            });
            next += 1;
        }
        let Some(done) = posting.join_next().await else {
            return Ok(latencies);
        };
        let (i, took, answer) = done?;
        let (status, body) = answer?;
        if status != 201 {
            bail!(
                "POST /v1/jobs (job {i}): {status} {}",
                body.chars().take(300).collect::<String>()
            );
        }
        if let Some(slot) = usize::try_from(i).ok().and_then(|i| latencies.get_mut(i)) {
            *slot = took;
        }
    }
}
