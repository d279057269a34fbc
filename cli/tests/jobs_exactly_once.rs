//! The job framework's exactly-once schedules through failures, as
//! Jepsen tested Chronos, with real processes: three `berth master`s, two
//! agents and two `berth jobs serve` instances (one active, one standby).
//! A job fires every 2 s; each run appends its tick, run id, attempt and
//! start time to a file. During the test the active framework instance,
//! the leading master and an agent are SIGKILLed (and started again), two
//! times each. Afterwards:
//!
//! - every tick of the window made exactly one run (the framework's runs
//!   of the schedule are exactly the window's ticks, none twice, none
//!   missing);
//! - every tick's run appended its line: once, or once per attempt when
//!   its task was lost with an agent and restarted (each such extra line
//!   is an attempt the framework recorded);
//! - every run started within [`TOLERANCE`] of its tick: 2 s plus the
//!   longest outage (a framework takeover: the lease's 10 s time to live
//!   and its reading back).
//!
//! The schedule's `startingDeadlineSeconds` (60 s) is longer than any
//! outage here, so ticks that fell due during one run late rather than
//! being recorded as missed (the missed-schedule policy's own behaviour
//! is unit-tested in `berth-jobs`).

use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use berth_tests::http::{json as http_json, request};
use berth_tests::{ChildProcess, free_port};
use serde_json::{Value, json};

mod common;
use common::service::until;
use common::{BERTH, TermOnDrop, agent_with, leader, log_file, master, signal};

/// How late a run may start after its tick: the tick interval plus the
/// longest outage (a takeover within the lease's 10 s and its load).
const TOLERANCE: Duration = Duration::from_secs(30);
/// Time between two faults.
const CALM: Duration = Duration::from_secs(14);

/// `berth jobs serve` instance `name`, its API on `listen`.
fn jobs_serve(addrs: &[String], dir: &Path, name: &str, listen: SocketAddr) -> ChildProcess {
    ChildProcess(
        Command::new(BERTH)
            .args(["jobs", "serve", "--master", &addrs.join(",")])
            .args(["--instance", name, "--listen", &listen.to_string()])
            .stdout(Stdio::null())
            .stderr(log_file(dir, &format!("jobs-{name}")))
            .spawn()
            .expect("berth jobs serve starts"),
    )
}

/// Agent `n`, its tasks killed when it is stopped at the end.
fn agent(addrs: &[String], dir: &Path, n: usize) -> TermOnDrop {
    TermOnDrop(agent_with(
        addrs,
        dir,
        n,
        &["--resources", "cpus:4;mem:4096", "--kill-tasks-on-shutdown"],
    ))
}

/// The job: every 2 s, appending `tick run attempt start` to `file`.
fn job(file: &Path) -> Value {
    json!({
        "id": "tick",
        "run": {
            "cmd": format!(
                "echo \"$BERTH_JOB_TICK $BERTH_JOB_RUN_ID $BERTH_JOB_ATTEMPT $(date +%s.%N)\" >> {}",
                file.display()
            ),
            "cpus": 0.01,
            "mem": 16,
            "restart": {"policy": "ON_FAILURE", "backoffLimit": 3, "backoffSeconds": 1}
        },
        "successfulRunsHistoryLimit": 1000,
        "failedRunsHistoryLimit": 1000,
        "schedules": [{
            "id": "every2",
            "cron": "*/2 * * * * *",
            "timezone": "UTC",
            "startingDeadlineSeconds": 60,
            "concurrencyPolicy": "ALLOW"
        }]
    })
}

/// The API of whichever instance is active.
async fn active_api(apis: &[SocketAddr]) -> Option<SocketAddr> {
    for api in apis {
        if matches!(request(*api, "GET", "/ping", None).await, Ok((200, _))) {
            return Some(*api);
        }
    }
    None
}

/// Parses a time (RFC 3339, or Metronome's `…T…000+0000`) to seconds
/// since the epoch.
fn epoch(text: &str) -> Option<f64> {
    chrono::DateTime::parse_from_rfc3339(text)
        .or_else(|_| chrono::DateTime::parse_from_str(text, "%Y-%m-%dT%H:%M:%S%.3f%z"))
        .ok()
        .map(|t| t.timestamp_millis() as f64 / 1000.0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_tick_runs_exactly_once_through_kills_of_the_framework_a_master_and_an_agent()
-> anyhow::Result<()> {
    let dir = tempfile::tempdir()?;
    let d = dir.path();
    let file = d.join("ticks.txt");
    let addrs: Vec<String> = (0..3)
        .map(|_| format!("127.0.0.1:{}", free_port()))
        .collect();
    let mut masters: Vec<Option<ChildProcess>> =
        (1..=3).map(|id| Some(master(id, &addrs, d))).collect();
    let mut agents = vec![Some(agent(&addrs, d, 0)), Some(agent(&addrs, d, 1))];
    let apis: Vec<SocketAddr> = (0..2)
        .map(|_| format!("127.0.0.1:{}", free_port()).parse())
        .collect::<Result<_, _>>()?;
    let names = ["a", "b"];
    let mut instances = vec![Some(jobs_serve(&addrs, d, "a", apis[0]))];
    until(Duration::from_secs(30), d, "instance a active", || async {
        matches!(request(apis[0], "GET", "/ping", None).await, Ok((200, _))).then_some(())
    })
    .await;
    instances.push(Some(jobs_serve(&addrs, d, "b", apis[1])));
    // The framework reads its clock between these two: a tick in between
    // may or may not be the schedule's first.
    let creating = common::unix_now();
    let (status, created) = http_json(apis[0], "POST", "/v1/jobs", Some(&job(&file))).await?;
    anyhow::ensure!(status == 201, "POST /v1/jobs: {status} {created}");
    let created = common::unix_now();

    // The faults, each followed by a calm spell.
    let mut faults = Vec::new();
    for round in 0..2 {
        tokio::time::sleep(CALM).await;
        // The active framework instance.
        let api = until(Duration::from_secs(30), d, "an active instance", || {
            active_api(&apis)
        })
        .await;
        let ix = apis.iter().position(|a| *a == api).unwrap_or(0);
        instances[ix] = None; // SIGKILL (ChildProcess's drop)
        faults.push(format!(
            "{:.1} kill framework {}",
            common::unix_now(),
            names[ix]
        ));
        // The other instance takes over (within the lease's time to live);
        // only then does the killed one come back, as the new standby, so
        // each kill is a failover between the two.
        let other = apis[1 - ix];
        until(
            Duration::from_secs(40),
            d,
            "the standby taking over",
            || async {
                matches!(request(other, "GET", "/ping", None).await, Ok((200, _))).then_some(())
            },
        )
        .await;
        faults.push(format!(
            "{:.1} framework {} took over",
            common::unix_now(),
            names[1 - ix]
        ));
        instances[ix] = Some(jobs_serve(&addrs, d, names[ix], apis[ix]));
        tokio::time::sleep(CALM).await;
        // The leading master.
        if let Some(id) = leader(&addrs).await {
            let ix = usize::try_from(id)? - 1;
            if let Some(m) = &masters[ix] {
                signal(m, "KILL");
            }
            masters[ix] = None;
            faults.push(format!("{:.1} kill master {id}", common::unix_now()));
            tokio::time::sleep(Duration::from_secs(3)).await;
            masters[ix] = Some(master(id, &addrs, d));
        }
        tokio::time::sleep(CALM).await;
        // An agent: SIGKILL (its tasks outlive it) and a restart on the
        // same work directory, which recovers them.
        let n = round % 2;
        if let Some(a) = agents[n].take() {
            signal(&a.0, "KILL");
            std::mem::forget(a); // already dead: no SIGTERM wait
        }
        faults.push(format!("{:.1} kill agent {n}", common::unix_now()));
        tokio::time::sleep(Duration::from_secs(3)).await;
        agents[n] = Some(agent(&addrs, d, n));
    }
    tokio::time::sleep(CALM).await;

    // End the window: the schedule is disabled through the active instance.
    let api = until(Duration::from_secs(30), d, "an active instance", || {
        active_api(&apis)
    })
    .await;
    let off = json!({"id": "every2", "cron": "*/2 * * * * *", "timezone": "UTC",
                     "startingDeadlineSeconds": 60, "enabled": false});
    let disabling = common::unix_now();
    let (status, body) =
        http_json(api, "PUT", "/v1/jobs/tick/schedules/every2", Some(&off)).await?;
    anyhow::ensure!(status == 200, "disabling the schedule: {status} {body}");
    let disabled = common::unix_now();

    // Wait for the runs to end, then read the framework's record of them.
    let history = until(Duration::from_secs(60), d, "every run ended", || async {
        let api = active_api(&apis).await?;
        let (status, j) = http_json(
            api,
            "GET",
            "/v1/jobs/tick?embed=activeRuns&embed=history",
            None,
        )
        .await
        .ok()?;
        let idle = j["activeRuns"].as_array().is_some_and(Vec::is_empty);
        (status == 200 && idle).then_some(j)
    })
    .await;
    let mut runs: BTreeMap<String, Value> = BTreeMap::new();
    for side in ["successfulFinishedRuns", "failedFinishedRuns"] {
        for r in history["history"][side].as_array().into_iter().flatten() {
            let id = r["id"].as_str().unwrap_or_default().to_owned();
            assert!(
                runs.insert(id.clone(), r.clone()).is_none(),
                "run {id} twice"
            );
        }
    }

    // The window's ticks: every tick after the job was created and before
    // the schedule was being disabled must have run; ticks in the moments
    // of those two requests may or may not have.
    let ticks = |from: f64, to: f64| -> BTreeSet<i64> {
        let first = (from / 2.0).floor() as i64 * 2 + 2;
        (0..)
            .map(|i| first + 2 * i)
            .take_while(|t| (*t as f64) <= to)
            .collect()
    };
    let required = ticks(created, disabling);
    let allowed = ticks(creating, disabled);
    // The ticks the framework made runs of (every run of the schedule).
    let mut by_tick: BTreeMap<i64, Vec<String>> = BTreeMap::new();
    for (id, r) in &runs {
        let tick = r["trigger"]["tick"]
            .as_str()
            .and_then(epoch)
            .ok_or_else(|| anyhow::anyhow!("run {id} has no tick: {r}"))?;
        by_tick
            .entry(tick.round() as i64)
            .or_default()
            .push(id.clone());
    }
    let made: BTreeSet<i64> = by_tick.keys().copied().collect();
    let twice: Vec<_> = by_tick.iter().filter(|(_, ids)| ids.len() > 1).collect();
    assert!(twice.is_empty(), "ticks with two runs: {twice:?}");
    let missing: Vec<_> = required.difference(&made).collect();
    let extra: Vec<_> = made.difference(&allowed).collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "ticks without a run: {missing:?}; runs outside the window: {extra:?}; faults: {faults:?}\n{}",
        common::log_tails(d)
    );
    let statuses: BTreeMap<String, usize> = runs.values().fold(BTreeMap::new(), |mut m, r| {
        *m.entry(r["status"].as_str().unwrap_or("?").to_owned())
            .or_default() += 1;
        m
    });
    assert_eq!(
        statuses.get("SUCCESS").copied().unwrap_or(0),
        runs.len(),
        "runs that did not succeed: {statuses:?}"
    );

    // The file: one line per tick, or one per attempt the framework made.
    let text = std::fs::read_to_string(&file)?;
    let mut lines: BTreeMap<i64, Vec<(String, u32, f64)>> = BTreeMap::new();
    for line in text.lines() {
        let parts: Vec<&str> = line.split_whitespace().collect();
        let [tick, run, attempt, started] = parts[..] else {
            panic!("a line of the wrong shape: {line:?}");
        };
        let tick = epoch(tick).ok_or_else(|| anyhow::anyhow!("bad tick in {line:?}"))?;
        lines.entry(tick.round() as i64).or_default().push((
            run.to_owned(),
            attempt.parse()?,
            started.parse()?,
        ));
    }
    let mut worst = 0.0f64;
    let mut retried = 0;
    for tick in &made {
        let got = lines.get(tick).cloned().unwrap_or_default();
        assert!(
            !got.is_empty(),
            "tick {tick} ran no task (its run: {:?})",
            by_tick.get(tick)
        );
        let attempts: BTreeSet<u32> = got.iter().map(|(_, a, _)| *a).collect();
        assert_eq!(
            attempts.len(),
            got.len(),
            "an attempt of tick {tick} ran twice: {got:?}"
        );
        if got.len() > 1 {
            retried += 1;
            let run = &by_tick[tick][0];
            let (_, r) = http_json(api, "GET", &format!("/v1/jobs/tick/runs/{run}"), None).await?;
            let recorded = r["tasks"].as_array().map_or(0, Vec::len);
            assert!(
                recorded >= got.len(),
                "tick {tick}: {got:?} but the run records {r}"
            );
        }
        let start = got.iter().map(|(_, _, s)| *s).fold(f64::MAX, f64::min);
        let late = start - *tick as f64;
        worst = worst.max(late);
        assert!(
            late <= TOLERANCE.as_secs_f64(),
            "tick {tick} started {late:.1} s late; faults: {faults:?}"
        );
    }
    let ghosts: Vec<_> = lines.keys().filter(|t| !made.contains(t)).collect();
    assert!(
        ghosts.is_empty(),
        "lines of ticks without a run: {ghosts:?}"
    );
    eprintln!(
        "{} ticks, each run exactly once; {retried} restarted after an agent loss; \
         latest start {worst:.1} s after its tick; faults: {faults:?}",
        made.len()
    );
    drop(instances);
    drop(agents);
    Ok(())
}
