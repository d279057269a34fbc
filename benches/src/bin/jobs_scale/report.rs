//! What a run measured, its report (a text table and a JSON line), and
//! the window's runs as the framework's history tells them.

use std::time::Duration;

use anyhow::bail;
use berth_benches::stats::{Rss, mib, quantile, secs};
use serde_json::{Value, json};

use crate::Args;
use crate::spread::Spread;
use crate::tracker::Started;

/// The window's runs per the framework's API, by status.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub(crate) struct ApiRuns {
    pub(crate) success: u64,
    pub(crate) failed: u64,
    pub(crate) missed: u64,
    pub(crate) skipped: u64,
    /// Still active.
    pub(crate) active: u64,
    /// A few reasons of runs that did not succeed.
    pub(crate) reasons: Vec<String>,
}

/// What a run measured.
#[derive(Debug, Default)]
pub(crate) struct Report {
    pub(crate) registration: Duration,
    pub(crate) idle_rss: Option<Rss>,
    pub(crate) create: Duration,
    /// Each creation's time, in the jobs' order.
    pub(crate) create_latencies: Vec<Duration>,
    pub(crate) create_cpu: Option<Duration>,
    pub(crate) created_rss: Option<Rss>,
    pub(crate) kv_entries_created: usize,
    pub(crate) kv_bytes_created: u64,
    /// The measured window, ms since the epoch.
    pub(crate) window: (i64, i64),
    /// Ticks due in the window.
    pub(crate) expected: u64,
    /// The window's runs that ran on an agent.
    pub(crate) started: Vec<Started>,
    pub(crate) window_cpu: Option<Duration>,
    pub(crate) window_rss: Option<Rss>,
    pub(crate) window_peak_rss_kib: u64,
    pub(crate) master_cpu: Option<Duration>,
    pub(crate) master_rss: Option<Rss>,
    pub(crate) api: ApiRuns,
    pub(crate) list_time: Duration,
    pub(crate) list_bytes: usize,
    pub(crate) kv_entries_end: usize,
    pub(crate) kv_bytes_end: u64,
    pub(crate) end_rss: Option<Rss>,
    pub(crate) again: u64,
    pub(crate) unreadable: u64,
    pub(crate) other_ends: u64,
    pub(crate) finished: u64,
    pub(crate) agent_errors: u64,
    pub(crate) load_average: String,
}

/// The tick of a run id of a schedule (`YYYYmmddHHMMSS[.fff]-<schedule>`),
/// ms since the epoch.
fn tick_of(run_id: &str) -> Option<i64> {
    let stamp = run_id.get(..14)?;
    let t = chrono::NaiveDateTime::parse_from_str(stamp, "%Y%m%d%H%M%S").ok()?;
    let ms = match run_id.as_bytes().get(14) {
        Some(b'.') => run_id.get(15..18)?.parse::<i64>().ok()?,
        _ => 0,
    };
    Some(t.and_utc().timestamp_millis() + ms)
}

/// Counts the runs whose tick is in `from_ms..to_ms` in `GET
/// /v1/jobs?embed=history&embed=activeRuns`'s answer.
///
/// # Errors
/// When the answer is not a list of jobs with those embeds.
pub(crate) fn count_history(jobs: &Value, from_ms: i64, to_ms: i64) -> anyhow::Result<ApiRuns> {
    let Some(jobs) = jobs.as_array() else {
        bail!("GET /v1/jobs: not a list");
    };
    let mut out = ApiRuns::default();
    let in_window = |run: &Value| {
        run["id"]
            .as_str()
            .and_then(tick_of)
            .is_some_and(|t| (from_ms..to_ms).contains(&t))
    };
    for job in jobs {
        let (Some(active), Some(ok), Some(failed)) = (
            job["activeRuns"].as_array(),
            job["history"]["successfulFinishedRuns"].as_array(),
            job["history"]["failedFinishedRuns"].as_array(),
        ) else {
            bail!("GET /v1/jobs: a job without activeRuns or history: {job}");
        };
        out.active += active.iter().filter(|r| in_window(r)).count() as u64;
        out.success += ok.iter().filter(|r| in_window(r)).count() as u64;
        for run in failed.iter().filter(|r| in_window(r)) {
            match run["status"].as_str() {
                Some("MISSED") => out.missed += 1,
                Some("SKIPPED") => out.skipped += 1,
                _ => out.failed += 1,
            }
            if out.reasons.len() < 3 {
                out.reasons.push(format!(
                    "{} {}: {} {}",
                    job["id"],
                    run["id"],
                    run["status"],
                    run["reason"].as_str().unwrap_or("")
                ));
            }
        }
    }
    Ok(out)
}

/// The report's header: the machine and the run's shape.
pub(crate) fn header(a: &Args, spread: &Spread) {
    println!("# jobs_scale");
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
            "`berth jobs serve` process (CPU and RSS below are its own)"
        } else {
            "in this process (CPU and RSS below are the whole process's)"
        }
    );
    println!(
        "agents:     {} × {}; jobs: {} (cpus 0.01, mem 8, tasks of {} ms), each firing every {} s: {} runs a minute; {} minutes measured",
        a.agents,
        a.agent_resources,
        a.jobs,
        a.duration_ms,
        spread.period,
        a.runs_per_minute,
        a.minutes
    );
    println!("load avg:   {} (before)", berth_benches::load_average());
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// The mean of `values`, ms.
fn mean_ms(values: &[Duration]) -> f64 {
    if values.is_empty() {
        return 0.0;
    }
    values.iter().map(|d| ms(*d)).sum::<f64>() / values.len() as f64
}

/// Runs started per minute of the window (by when their task ran).
fn per_minute(r: &Report) -> Vec<u64> {
    let (from, to) = r.window;
    let minutes = usize::try_from((to - from + 59_999) / 60_000).unwrap_or(0);
    let mut out = vec![0u64; minutes];
    for s in &r.started {
        let i = usize::try_from((s.running_ms - from).max(0) / 60_000).unwrap_or(0);
        if let Some(n) = out.get_mut(i.min(minutes.saturating_sub(1))) {
            *n += 1;
        }
    }
    out
}

pub(crate) fn print(a: &Args, r: &Report) {
    let mut late: Vec<Duration> = r.started.iter().map(Started::late).collect();
    late.sort_unstable();
    let (p50, p99) = (quantile(&late, 0.50), quantile(&late, 0.99));
    let max = late.last().copied().unwrap_or_default();
    let tenth = r.create_latencies.len() / 10;
    let first = mean_ms(&r.create_latencies[..tenth]);
    let last = mean_ms(&r.create_latencies[r.create_latencies.len() - tenth..]);
    let per_job = |after: Option<Rss>| -> Option<f64> {
        let (b, a) = (r.idle_rss?, after?);
        let jobs = r.create_latencies.len().max(1) as f64;
        Some((a.current_kib as f64 - b.current_kib as f64) * 1024.0 / jobs)
    };
    let mem_per_job = per_job(r.created_rss);
    let window_s = (r.window.1 - r.window.0) as f64 / 1000.0;
    let started = r.started.len() as u64;
    let cpu_per_run_ms = secs(r.window_cpu) * 1000.0 / started.max(1) as f64;
    let cpu_pct = secs(r.window_cpu) / window_s * 100.0;
    let missing = r.expected.saturating_sub(started);
    let minutes = per_minute(r);
    println!();
    println!(
        "registration:  {} agents in {:.1} s",
        a.agents,
        r.registration.as_secs_f64()
    );
    println!(
        "create:        {} jobs in {:.1} s ({:.0}/s); request mean {first:.1} ms for the first tenth, {last:.1} ms for the last; framework CPU {:.1} s; RSS MiB {} idle → {} ({:.0} bytes per job); store: {} keys, {:.2} MiB",
        a.jobs,
        r.create.as_secs_f64(),
        a.jobs as f64 / r.create.as_secs_f64().max(1e-9),
        secs(r.create_cpu),
        mib(r.idle_rss),
        mib(r.created_rss),
        mem_per_job.unwrap_or(f64::NAN),
        r.kv_entries_created,
        r.kv_bytes_created as f64 / 1024.0 / 1024.0
    );
    println!(
        "window:        {window_s:.0} s: {} ticks due, {started} runs ran ({missing} never), per minute {minutes:?}; late after the tick p50 {:.0} ms, p99 {:.0} ms, max {:.0} ms",
        r.expected,
        ms(p50),
        ms(p99),
        ms(max)
    );
    println!(
        "framework:     CPU {:.1} s ({cpu_pct:.1}% of one core, {cpu_per_run_ms:.2} ms per run); RSS MiB {} (peak in the window {:.0}); leading master CPU {:.1} s, RSS MiB {}",
        secs(r.window_cpu),
        mib(r.window_rss),
        r.window_peak_rss_kib as f64 / 1024.0,
        secs(r.master_cpu),
        mib(r.master_rss)
    );
    println!(
        "api:           the window's runs: {} succeeded, {} failed, {} missed, {} skipped, {} still active; GET /v1/jobs?embed=history,activeRuns {:.0} ms, {:.1} MiB",
        r.api.success,
        r.api.failed,
        r.api.missed,
        r.api.skipped,
        r.api.active,
        ms(r.list_time),
        r.list_bytes as f64 / 1024.0 / 1024.0
    );
    for reason in &r.api.reasons {
        println!("               {reason}");
    }
    println!(
        "end:           {} tasks finished on agents, {} ended otherwise, {} runs started twice, {} unreadable, {} agent errors; store: {} keys, {:.2} MiB; RSS MiB {}; load avg {}",
        r.finished,
        r.other_ends,
        r.again,
        r.unreadable,
        r.agent_errors,
        r.kv_entries_end,
        r.kv_bytes_end as f64 / 1024.0 / 1024.0,
        mib(r.end_rss),
        r.load_average
    );
    println!();
    println!(
        "| jobs | runs/min | create s | bytes/job (RSS) | runs ran / due | late p50 / p99 / max ms | CPU ms/run | RSS MiB | store MiB |"
    );
    println!("|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    println!(
        "| {} | {} | {:.1} | {:.0} | {started} / {} | {:.0} / {:.0} / {:.0} | {cpu_per_run_ms:.2} | {} | {:.2} |",
        a.jobs,
        a.runs_per_minute,
        r.create.as_secs_f64(),
        mem_per_job.unwrap_or(f64::NAN),
        r.expected,
        ms(p50),
        ms(p99),
        ms(max),
        mib(r.window_rss),
        r.kv_bytes_end as f64 / 1024.0 / 1024.0
    );
    if a.json {
        let rss = |x: Option<Rss>| x.map(|x| json!({"current": x.current_kib, "peak": x.peak_kib}));
        let line = json!({
            "jobs": a.jobs,
            "runs_per_minute": a.runs_per_minute,
            "separate_framework": a.berth.is_some(),
            "create_s": r.create.as_secs_f64(),
            "create_ms_first_tenth": first,
            "create_ms_last_tenth": last,
            "create_cpu_s": r.create_cpu.map(|d| d.as_secs_f64()),
            "idle_rss_kib": rss(r.idle_rss),
            "created_rss_kib": rss(r.created_rss),
            "bytes_per_job": mem_per_job,
            "kv_entries_created": r.kv_entries_created,
            "kv_bytes_created": r.kv_bytes_created,
            "window_s": window_s,
            "expected": r.expected,
            "started": started,
            "per_minute": minutes,
            "late_ms": {"p50": ms(p50), "p99": ms(p99), "max": ms(max)},
            "window_cpu_s": r.window_cpu.map(|d| d.as_secs_f64()),
            "cpu_ms_per_run": cpu_per_run_ms,
            "window_rss_kib": rss(r.window_rss),
            "master_cpu_s": r.master_cpu.map(|d| d.as_secs_f64()),
            "api": {
                "success": r.api.success,
                "failed": r.api.failed,
                "missed": r.api.missed,
                "skipped": r.api.skipped,
                "active": r.api.active,
            },
            "list_ms": ms(r.list_time),
            "list_bytes": r.list_bytes,
            "kv_entries_end": r.kv_entries_end,
            "kv_bytes_end": r.kv_bytes_end,
            "end_rss_kib": rss(r.end_rss),
            "finished": r.finished,
            "other_ends": r.other_ends,
            "started_twice": r.again,
            "unreadable": r.unreadable,
            "agent_errors": r.agent_errors,
        });
        println!("{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ticks_are_read_from_run_ids() {
        assert_eq!(tick_of("20261207171000-tick"), Some(1_796_663_400_000));
        assert_eq!(tick_of("20261207171000.250-tick"), Some(1_796_663_400_250));
        assert_eq!(tick_of("manual"), None);
    }

    #[test]
    fn the_windows_runs_are_counted_by_status() {
        let run = |id: &str, status: &str| json!({"id": id, "status": status, "reason": "why"});
        let jobs = json!([
            {"id": "a", "activeRuns": [run("20261207171001-tick", "ACTIVE")],
             "history": {"successfulFinishedRuns": [run("20261207171000-tick", "SUCCESS"),
                                                    run("20261207170000-tick", "SUCCESS")],
                         "failedFinishedRuns": [run("20261207171002-tick", "MISSED")]}},
            {"id": "b", "activeRuns": [],
             "history": {"successfulFinishedRuns": [],
                         "failedFinishedRuns": [run("20261207171003-tick", "FAILED"),
                                                run("20261207171004-tick", "SKIPPED")]}},
        ]);
        let from = 1_796_663_400_000;
        let c = count_history(&jobs, from, from + 60_000).expect("counts");
        assert_eq!(
            (c.success, c.failed, c.missed, c.skipped, c.active),
            (1, 1, 1, 1, 1)
        );
        assert_eq!(c.reasons.len(), 3);
        assert!(count_history(&json!([{"id": "x"}]), from, from + 1).is_err());
    }
}
