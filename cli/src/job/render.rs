//! What `berth job` prints from the job framework's Metronome JSON: the
//! jobs table, one job's text, the runs table, schedules.
//!
//! Reading is lenient: a field that is missing or of another type shows
//! as `-`, never as an error (the JSON itself is printed with `--json`).
//! A run's trigger is read from `trigger` as text (`manual`) or as an
//! object (`{"type": "schedule", "schedule": "nightly"}`); its start from
//! `startedAt` or else `createdAt`, its end from `finishedAt` or
//! Metronome's `completedAt`; its exit code from `exitCode` or else the
//! last non-zero `exitCode` of its tasks. The history is Metronome's
//! `successfulFinishedRuns` and `failedFinishedRuns` (status SUCCESS and
//! FAILED unless an entry has its own `status`), and berth's `runs` when
//! present.

use std::collections::BTreeSet;

use serde_json::Value;

use crate::table::render;

/// The history rows shown by `berth job show` (all by `berth job runs`).
const SHOWN_HISTORY: usize = 10;

/// A field's text, or `-`.
fn text(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.clone(),
        Value::Number(n) => n.to_string(),
        Value::Bool(b) => b.to_string(),
        _ => "-".to_owned(),
    }
}

/// Milliseconds since the epoch of an RFC 3339 time in UTC
/// (`2026-12-07T16:25:00.123Z`; Metronome's `+0000` and `+00:00` taken
/// for `Z`), or of a number of milliseconds.
pub(crate) fn millis(v: &Value) -> Option<i64> {
    if let Some(n) = v.as_i64() {
        return Some(n);
    }
    let s = v.as_str()?;
    let utc = s
        .strip_suffix("+0000")
        .or_else(|| s.strip_suffix("+00:00"))
        .map_or_else(|| s.to_owned(), |t| format!("{t}Z"));
    let t = berth_service::Timestamp::parse_rfc3339(&utc).ok()?;
    i64::try_from(t.millis()).ok()
}

/// A time as `2026-12-07 16:25:00Z` (whole seconds), or `-`.
pub(crate) fn time_text(v: &Value) -> String {
    let Some(ms) = millis(v).and_then(|ms| u64::try_from(ms).ok()) else {
        return text(v);
    };
    let full = berth_service::Timestamp::from_millis(ms).to_string();
    // `2026-12-07T16:25:00.123Z`
    match (full.get(..10), full.get(11..19)) {
        (Some(date), Some(time)) => format!("{date} {time}Z"),
        _ => full,
    }
}

/// Now, in milliseconds since the epoch.
fn now_millis() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// One run, as the tables read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct RunRow {
    pub(crate) id: String,
    pub(crate) status: String,
    pub(crate) trigger: String,
    /// Milliseconds since the epoch, for sorting.
    pub(crate) started: Option<i64>,
    pub(crate) started_text: String,
    pub(crate) duration: String,
    pub(crate) exit: String,
    pub(crate) reason: String,
}

/// A run's trigger as text (see the module docs).
fn trigger_text(v: &Value) -> String {
    match v {
        Value::String(s) if !s.is_empty() => s.to_lowercase(),
        Value::Object(o) => {
            let kind = o.get("type").and_then(Value::as_str).map(str::to_lowercase);
            match (kind, o.get("schedule").and_then(Value::as_str)) {
                (_, Some(s)) => format!("schedule {s}"),
                (Some(k), None) => k,
                (None, None) if o.contains_key("parents") => "dependency".to_owned(),
                (None, None) => "-".to_owned(),
            }
        }
        _ => "-".to_owned(),
    }
}

/// The run's exit code (see the module docs).
pub(crate) fn exit_code(run: &Value) -> Option<i64> {
    run["exitCode"].as_i64().or_else(|| {
        run["tasks"]
            .as_array()
            .into_iter()
            .flatten()
            .rev()
            .find_map(|t| t["exitCode"].as_i64().filter(|c| *c != 0))
    })
}

/// A run's row; `status` when the run has none of its own.
pub(crate) fn run_row(run: &Value, status: &str, now: i64) -> RunRow {
    let start_v = if run["startedAt"].is_null() {
        &run["createdAt"]
    } else {
        &run["startedAt"]
    };
    let end_v = if run["finishedAt"].is_null() {
        &run["completedAt"]
    } else {
        &run["finishedAt"]
    };
    let started = millis(start_v);
    let status = run["status"].as_str().unwrap_or(status).to_owned();
    let finished = matches!(status.as_str(), "SUCCESS" | "FAILED" | "MISSED" | "SKIPPED");
    let end = millis(end_v).or((!finished).then_some(now));
    let duration = match (started, end) {
        #[allow(clippy::cast_precision_loss, reason = "a duration in seconds")]
        (Some(s), Some(e)) => crate::admin::duration_text((e - s) as f64 / 1000.0),
        _ => "-".to_owned(),
    };
    RunRow {
        id: text(&run["id"]),
        status,
        trigger: trigger_text(&run["trigger"]),
        started,
        started_text: time_text(start_v),
        duration,
        exit: exit_code(run).map_or_else(|| "-".to_owned(), |c| c.to_string()),
        reason: text(&run["reason"]),
    }
}

/// The history's runs, newest first.
pub(crate) fn history_rows(history: &Value, now: i64) -> Vec<RunRow> {
    let mut seen = BTreeSet::new();
    let mut rows = Vec::new();
    for (key, status) in [
        ("runs", "-"),
        ("successfulFinishedRuns", "SUCCESS"),
        ("failedFinishedRuns", "FAILED"),
    ] {
        for r in history[key].as_array().into_iter().flatten() {
            let row = run_row(r, status, now);
            if seen.insert(row.id.clone()) {
                rows.push(row);
            }
        }
    }
    rows.sort_by(|a, b| b.started.cmp(&a.started).then_with(|| b.id.cmp(&a.id)));
    rows
}

fn runs_rendered(rows: &[RunRow]) -> String {
    let cells: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.id.clone(),
                r.status.clone(),
                r.trigger.clone(),
                r.started_text.clone(),
                r.duration.clone(),
                r.exit.clone(),
                r.reason.clone(),
            ]
        })
        .collect();
    render(
        &[
            "RUN", "STATUS", "TRIGGER", "STARTED", "DURATION", "EXIT", "REASON",
        ],
        &cells,
    )
}

/// `berth job runs`: the active runs, then the history.
pub(crate) fn runs_table(active: &Value, history: &Value) -> String {
    runs_table_at(active, history, now_millis())
}

fn runs_table_at(active: &Value, history: &Value, now: i64) -> String {
    let mut rows: Vec<RunRow> = active
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| run_row(r, "-", now))
        .collect();
    rows.sort_by_key(|r| std::cmp::Reverse(r.started));
    rows.extend(history_rows(history, now));
    runs_rendered(&rows)
}

/// A schedule's cron and time zone: `0 2 * * * (Europe/Paris)`.
fn cron_text(s: &Value) -> String {
    let tz = s["timezone"].as_str().unwrap_or("UTC");
    format!("{} ({tz})", s["cron"].as_str().unwrap_or("?"))
}

/// One schedule on a line: `nightly: 0 2 * * * (UTC), next 2026-12-08
/// 02:00:00Z` (`disabled` instead of the next tick when it is).
pub(crate) fn schedule_line(s: &Value) -> String {
    let next = if s["enabled"] == Value::Bool(false) {
        "disabled".to_owned()
    } else {
        format!("next {}", time_text(&s["nextRunAt"]))
    };
    format!("{}: {}, {next}", text(&s["id"]), cron_text(s))
}

/// `berth job schedule list`.
pub(crate) fn schedules_table(schedules: &Value) -> String {
    let rows: Vec<Vec<String>> = schedules
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                text(&s["id"]),
                text(&s["cron"]),
                s["timezone"].as_str().unwrap_or("UTC").to_owned(),
                time_text(&s["nextRunAt"]),
                text(&s["enabled"]),
                text(&s["concurrencyPolicy"]),
            ]
        })
        .collect();
    render(
        &[
            "SCHEDULE",
            "CRON",
            "TIMEZONE",
            "NEXT",
            "ENABLED",
            "CONCURRENCY",
        ],
        &rows,
    )
}

/// `berth job list`.
pub(crate) fn jobs_table(jobs: &Value) -> String {
    let rows: Vec<Vec<String>> = jobs
        .as_array()
        .into_iter()
        .flatten()
        .map(|j| {
            let schedules: Vec<String> = j["schedules"]
                .as_array()
                .into_iter()
                .flatten()
                .map(cron_text)
                .collect();
            let summary = if j["historySummary"].is_object() {
                &j["historySummary"]
            } else {
                &j["history"]
            };
            vec![
                text(&j["id"]),
                if schedules.is_empty() {
                    "-".to_owned()
                } else {
                    schedules.join(", ")
                },
                j["activeRuns"]
                    .as_array()
                    .map_or_else(|| "-".to_owned(), |a| a.len().to_string()),
                time_text(&summary["lastSuccessAt"]),
                time_text(&summary["lastFailureAt"]),
            ]
        })
        .collect();
    render(
        &["ID", "SCHEDULES", "ACTIVE", "LAST SUCCESS", "LAST FAILURE"],
        &rows,
    )
}

/// What a job's tasks run: the command, the arguments or the image.
fn command_text(run: &Value) -> String {
    let image = run["docker"]["image"].as_str();
    let what = if let Some(cmd) = run["cmd"].as_str() {
        format!("sh -c {}", berth_scheduler_core::quoted(cmd))
    } else if let Some(args) = run["args"].as_array() {
        let args: Vec<String> = args.iter().map(text).collect();
        args.join(" ")
    } else {
        "the image's command".to_owned()
    };
    match image {
        Some(image) => format!("{what} in {image}"),
        None => what,
    }
}

/// Indents every line of `text`.
fn indented(text: &str) -> String {
    text.lines().map(|l| format!("  {l}\n")).collect()
}

/// `berth job show`.
pub(crate) fn job_text(job: &Value) -> String {
    job_text_at(job, now_millis())
}

fn job_text_at(job: &Value, now: i64) -> String {
    let run = &job["run"];
    let mut out = format!("job {}", text(&job["id"]));
    if let Some(d) = job["description"].as_str().filter(|d| !d.is_empty()) {
        out.push_str(&format!(": {d}"));
    }
    out.push('\n');
    out.push_str(&format!("  runs:      {}\n", command_text(run)));
    out.push_str(&format!(
        "  resources: cpus {}, mem {} MiB, disk {} MiB\n",
        text(&run["cpus"]),
        text(&run["mem"]),
        text(&run["disk"])
    ));
    if run["completions"].as_u64().is_some_and(|c| c > 1)
        || run["parallelism"].as_u64().is_some_and(|p| p > 1)
    {
        out.push_str(&format!(
            "  tasks:     {} completions, {} at once\n",
            text(&run["completions"]),
            text(&run["parallelism"])
        ));
    }
    let restart = &run["restart"];
    if restart.is_object() {
        let deadline = restart["activeDeadlineSeconds"]
            .as_u64()
            .map(|s| format!(", deadline {s} s"))
            .unwrap_or_default();
        out.push_str(&format!(
            "  restart:   {}{deadline}\n",
            text(&restart["policy"])
        ));
    }
    let schedules: Vec<&Value> = job["schedules"].as_array().into_iter().flatten().collect();
    if schedules.is_empty() {
        out.push_str("schedules: none (runs by hand or after its dependencies)\n");
    } else {
        out.push_str("schedules:\n");
        for s in schedules {
            out.push_str(&format!("  {}\n", schedule_line(s)));
        }
    }
    let mut active: Vec<RunRow> = job["activeRuns"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| run_row(r, "-", now))
        .collect();
    if active.is_empty() {
        out.push_str("active runs: none\n");
    } else {
        active.sort_by_key(|r| std::cmp::Reverse(r.started));
        out.push_str("active runs:\n");
        out.push_str(&indented(&runs_rendered(&active)));
    }
    let history = history_rows(&job["history"], now);
    let h = &job["history"];
    let counts = if h["successCount"].is_number() || h["failureCount"].is_number() {
        format!(
            " ({} succeeded, {} failed in all)",
            text(&h["successCount"]),
            text(&h["failureCount"])
        )
    } else {
        String::new()
    };
    if history.is_empty() {
        out.push_str(&format!("history: none{counts}\n"));
    } else {
        let shown = history.len().min(SHOWN_HISTORY);
        out.push_str(&format!(
            "history, newest first{}{counts}:\n",
            if shown < history.len() {
                format!(" ({shown} of {}; `berth job runs` has all)", history.len())
            } else {
                String::new()
            }
        ));
        out.push_str(&indented(&runs_rendered(&history[..shown])));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// 2026-12-07T16:13:20Z.
    const NOW: i64 = 1_796_660_000_000;

    #[test]
    fn times_are_read_and_shown_in_utc() {
        let t = json!("2026-12-07T16:25:00.123Z");
        let ms = millis(&t).unwrap();
        assert_eq!(ms % 1000, 123);
        assert_eq!(time_text(&t), "2026-12-07 16:25:00Z");
        assert_eq!(time_text(&json!(ms)), "2026-12-07 16:25:00Z");
        assert_eq!(millis(&json!("1970-01-01T00:00:01+00:00")), Some(1000));
        assert_eq!(millis(&json!("1970-01-01T00:00:01.250+0000")), Some(1250));
        assert_eq!(millis(&json!("1970-01-01T00:00:00.5Z")), Some(500));
        assert_eq!(
            millis(&json!("2000-03-01T00:00:00Z")),
            Some(951_868_800_000)
        );
        assert_eq!(millis(&json!("2026-13-01T00:00:00Z")), None);
        assert_eq!(millis(&json!("2026-12-07 16:25:00")), None);
        assert_eq!(time_text(&Value::Null), "-");
        assert_eq!(time_text(&json!("soon")), "soon");
    }

    #[test]
    fn the_jobs_table_shows_schedules_active_runs_and_last_results() {
        let jobs = json!([
            {"id": "backup", "schedules": [{"id": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Paris"}],
             "activeRuns": [{"id": "r1"}],
             "historySummary": {"lastSuccessAt": "2026-12-06T01:00:00.000Z", "lastFailureAt": null}},
            {"id": "adhoc", "schedules": [], "activeRuns": []},
        ]);
        assert_eq!(
            jobs_table(&jobs),
            "ID      SCHEDULES                 ACTIVE  LAST SUCCESS          LAST FAILURE\n\
             backup  0 2 * * * (Europe/Paris)  1       2026-12-06 01:00:00Z  -\n\
             adhoc   -                         0       -                     -\n"
        );
    }

    #[test]
    fn runs_show_trigger_duration_exit_code_and_reason() {
        let active = json!([{"id": "20261207162500-nightly", "status": "ACTIVE",
            "trigger": {"type": "schedule", "schedule": "nightly"},
            "createdAt": NOW - 65_000, "tasks": []}]);
        let history = json!({
            "successfulFinishedRuns": [{"id": "a", "createdAt": "2026-12-06T10:00:00.000Z",
                                        "finishedAt": "2026-12-06T10:00:07.000Z"}],
            "failedFinishedRuns": [{"id": "b", "createdAt": "2026-12-06T11:00:00.000Z",
                                    "completedAt": "2026-12-06T11:02:00.000Z", "trigger": "MANUAL",
                                    "reason": "task failed", "tasks": [{"exitCode": 0}, {"exitCode": 3}]},
                                   {"id": "c", "status": "MISSED", "createdAt": "2026-12-05T11:00:00.000Z",
                                    "reason": "starting deadline passed"}],
        });
        let t = runs_table_at(&active, &history, NOW);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(
            lines[0].split_whitespace().collect::<Vec<_>>(),
            [
                "RUN", "STATUS", "TRIGGER", "STARTED", "DURATION", "EXIT", "REASON"
            ]
        );
        let cells = |i: usize| {
            lines[i]
                .split("  ")
                .map(str::trim)
                .filter(|c| !c.is_empty())
                .collect::<Vec<_>>()
        };
        assert_eq!(
            cells(1)[..3],
            ["20261207162500-nightly", "ACTIVE", "schedule nightly"]
        );
        assert_eq!(cells(1)[4..], ["1m05s", "-", "-"]);
        assert_eq!(
            cells(2),
            [
                "b",
                "FAILED",
                "manual",
                "2026-12-06 11:00:00Z",
                "2m00s",
                "3",
                "task failed"
            ]
        );
        assert_eq!(
            cells(3),
            ["a", "SUCCESS", "-", "2026-12-06 10:00:00Z", "7s", "-", "-"]
        );
        assert_eq!(
            cells(4),
            [
                "c",
                "MISSED",
                "-",
                "2026-12-05 11:00:00Z",
                "-",
                "-",
                "starting deadline passed"
            ]
        );
        assert_eq!(lines.len(), 5);
    }

    #[test]
    fn a_job_is_shown_with_schedules_runs_and_history() {
        let job = json!({"id": "backup", "description": "nightly dump",
            "run": {"cmd": "pg_dump > x", "cpus": 0.5, "mem": 128, "disk": 0,
                    "docker": {"image": "postgres:16"}, "completions": 3, "parallelism": 2,
                    "restart": {"policy": "ON_FAILURE", "activeDeadlineSeconds": 600}},
            "schedules": [{"id": "nightly", "cron": "0 2 * * *", "nextRunAt": "2026-12-08T02:00:00.000Z"},
                          {"id": "off", "cron": "0 3 * * *", "timezone": "UTC", "enabled": false}],
            "activeRuns": [],
            "history": {"successCount": 4, "failureCount": 1, "successfulFinishedRuns": [], "failedFinishedRuns": []}});
        assert_eq!(
            job_text_at(&job, NOW),
            "job backup: nightly dump\n  \
             runs:      sh -c \"pg_dump > x\" in postgres:16\n  \
             resources: cpus 0.5, mem 128 MiB, disk 0 MiB\n  \
             tasks:     3 completions, 2 at once\n  \
             restart:   ON_FAILURE, deadline 600 s\n\
             schedules:\n  \
             nightly: 0 2 * * * (UTC), next 2026-12-08 02:00:00Z\n  \
             off: 0 3 * * * (UTC), disabled\n\
             active runs: none\n\
             history: none (4 succeeded, 1 failed in all)\n"
        );
        let many: Vec<Value> = (0..12)
            .map(|i| json!({"id": format!("r{i:02}"), "createdAt": NOW - 1000 * i}))
            .collect();
        let job = json!({"id": "x", "run": {"args": ["echo", "hi"]},
            "history": {"successfulFinishedRuns": many}});
        let t = job_text_at(&job, NOW);
        assert!(t.contains("  runs:      echo hi\n"), "{t}");
        assert!(
            t.contains("history, newest first (10 of 12; `berth job runs` has all):\n"),
            "{t}"
        );
        assert!(
            t.contains("  r00 ") && t.contains("  r09 ") && !t.contains("r10"),
            "{t}"
        );
    }

    #[test]
    fn schedules_are_tabled() {
        let s = json!([{"id": "nightly", "cron": "0 2 * * *", "timezone": "Europe/Paris",
                        "nextRunAt": "2026-12-08T01:00:00Z", "enabled": true, "concurrencyPolicy": "ALLOW"}]);
        assert_eq!(
            schedules_table(&s),
            "SCHEDULE  CRON       TIMEZONE      NEXT                  ENABLED  CONCURRENCY\n\
             nightly   0 2 * * *  Europe/Paris  2026-12-08 01:00:00Z  true     ALLOW\n"
        );
        assert_eq!(schedules_table(&json!([])).lines().count(), 1);
    }
}
