//! Metronome's JSON shapes of jobs (with their embeds), schedules and
//! runs, with berth's own fields beside Metronome's. Times are
//! [`Timestamp`]'s Display (`2026-12-07T16:25:00.000+0000`), absent ones
//! `null`.

use serde_json::{Map, Value, json};

use super::request::Embed;
use crate::job::{JobDef, ScheduleDef};
use crate::run::{Run, RunStatus, RunTask, Trigger};
use crate::state::JobStatus;
use crate::time::Timestamp;

fn ts(t: Option<Timestamp>) -> Value {
    t.map_or(Value::Null, |t| Value::String(t.to_string()))
}

fn object(v: Value) -> Map<String, Value> {
    match v {
        Value::Object(m) => m,
        _ => Map::new(),
    }
}

/// A job's definition as Metronome's JobSpec; berth's inline schedules
/// are shown too when it has any (what was posted is what is answered).
pub(super) fn job_spec(def: &JobDef) -> Value {
    let mut m = object(def.to_json());
    m.entry("id")
        .or_insert_with(|| Value::String(def.id.to_string()));
    if !def.schedules.is_empty() {
        let list = def.schedules.iter().map(|s| schedule(s, None)).collect();
        m.insert("schedules".into(), Value::Array(list));
    }
    Value::Object(m)
}

/// A schedule; with `next` (the job's next ticks known) Metronome's
/// `nextRunAt` (`null` when disabled or never again).
pub(super) fn schedule(s: &ScheduleDef, next: Option<&JobStatus>) -> Value {
    let mut m = object(s.to_json());
    m.entry("id").or_insert_with(|| Value::String(s.id.clone()));
    if let Some(j) = next {
        let at = j.next_ticks.get(&s.id).copied().flatten();
        m.insert("nextRunAt".into(), ts(at));
    }
    Value::Object(m)
}

/// A job's schedules with their next ticks.
pub(super) fn schedules(j: &JobStatus) -> Value {
    Value::Array(
        j.def
            .schedules
            .iter()
            .map(|s| schedule(s, Some(j)))
            .collect(),
    )
}

/// A job as `GET /v1/jobs[/{id}]` renders it: the JobSpec and what
/// `embed` asks for.
pub(super) fn job(j: &JobStatus, embed: Embed) -> Value {
    let mut m = object(j.def.to_json());
    m.entry("id")
        .or_insert_with(|| Value::String(j.def.id.to_string()));
    m.remove("schedules");
    if embed.schedules {
        m.insert("schedules".into(), schedules(j));
    }
    if embed.active_runs {
        m.insert(
            "activeRuns".into(),
            Value::Array(j.active.iter().map(run).collect()),
        );
    }
    if embed.history {
        m.insert("history".into(), history(j));
    }
    if embed.history_summary {
        m.insert("historySummary".into(), Value::Object(summary(j)));
    }
    Value::Object(m)
}

/// Metronome's history summary: counts and the last times.
fn summary(j: &JobStatus) -> Map<String, Value> {
    object(json!({
        "successCount": j.success_count,
        "failureCount": j.failure_count,
        "lastSuccessAt": ts(j.last_success_at),
        "lastFailureAt": ts(j.last_failure_at),
    }))
}

/// Metronome's history: the summary and the finished runs kept, split
/// into successful and failed (failed, missed and skipped), newest first.
pub(super) fn history(j: &JobStatus) -> Value {
    let mut m = summary(j);
    let (ok, failed): (Vec<&Run>, Vec<&Run>) = j
        .history
        .iter()
        .partition(|r| r.status == RunStatus::Success);
    let finished = |list: Vec<&Run>| Value::Array(list.into_iter().map(finished_run).collect());
    m.insert("successfulFinishedRuns".into(), finished(ok));
    m.insert("failedFinishedRuns".into(), finished(failed));
    Value::Object(m)
}

/// A finished run in a history: Metronome's `{"id", "createdAt",
/// "finishedAt", "tasks"}`, and berth's `status`, `reason`, `exitCode`,
/// `startedAt`, `trigger`.
fn finished_run(r: &Run) -> Value {
    json!({
        "id": r.id.as_str(),
        "createdAt": r.created_at.to_string(),
        "finishedAt": ts(r.finished_at),
        "tasks": r.tasks.iter().map(|t| t.task_id.as_str()).collect::<Vec<_>>(),
        "status": r.status.name(),
        "reason": r.reason,
        "exitCode": r.exit_code(),
        "startedAt": ts(r.started_at),
        "trigger": trigger(&r.trigger),
    })
}

/// A run: Metronome's `{"id", "jobId", "status", "createdAt",
/// "completedAt", "tasks"}` and berth's `reason`, `trigger`, `exitCode`,
/// `startedAt`, `finishedAt`.
pub(super) fn run(r: &Run) -> Value {
    json!({
        "id": r.id.as_str(),
        "jobId": r.job.as_str(),
        "status": r.status.name(),
        "createdAt": r.created_at.to_string(),
        "completedAt": ts(r.finished_at),
        "tasks": r.tasks.iter().map(task).collect::<Vec<_>>(),
        "reason": r.reason,
        "trigger": trigger(&r.trigger),
        "exitCode": r.exit_code(),
        "startedAt": ts(r.started_at),
        "finishedAt": ts(r.finished_at),
        "completions": r.spec.completions,
        "parallelism": r.spec.parallelism,
    })
}

/// A run's task: Metronome's `{"id", "status", "startedAt",
/// "completedAt"}` (`startedAt` is its launch, as Metronome's staging
/// time) and berth's `index`, `attempt`, `agentId`, `exitCode`, `message`,
/// `runningAt`.
fn task(t: &RunTask) -> Value {
    json!({
        "id": t.task_id,
        "status": t.state,
        "startedAt": ts(t.launched_at.or(t.started_at)),
        "completedAt": ts(t.finished_at),
        "index": t.index,
        "attempt": t.attempt,
        "agentId": t.agent_id,
        "exitCode": t.exit_code,
        "message": t.message,
        "runningAt": ts(t.started_at),
    })
}

/// What started a run: `{"type": "schedule", "scheduleId", "tick"}`,
/// `{"type": "manual"}` or `{"type": "dependency", "parents": [{"jobId",
/// "runId"}]}`.
fn trigger(t: &Trigger) -> Value {
    match t {
        Trigger::Schedule { schedule, tick } => json!({
            "type": "schedule",
            "scheduleId": schedule,
            "tick": tick.to_string(),
        }),
        Trigger::Manual => json!({ "type": "manual" }),
        Trigger::Dependency { parents } => json!({
            "type": "dependency",
            "parents": parents
                .iter()
                .map(|(j, r)| json!({ "jobId": j.as_str(), "runId": r.as_str() }))
                .collect::<Vec<_>>(),
        }),
    }
}
