//! The routes under one job: its runs (`/v1/jobs/{id}/runs...`) and its
//! schedules (`/v1/jobs/{id}/schedules...`); see the table in [`super`].

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use berth_scheduler_core::error::quoted;
use serde_json::Value;

use super::request::{
    Params, Refusal, failed, id_and_body, invalid_at, job_id, op_failed, optional_body, reply,
    unexpected, unknown_job,
};
use super::{Answer, JobsBackend, Pairs, render, text};
use crate::job::JobId;
use crate::run::RunId;
use crate::state::{JobStatus, Op, OpError, Outcome};

/// The job `id` names, or 404.
async fn existing<B: JobsBackend>(b: &B, id: &str) -> Result<JobStatus, Refusal> {
    let id = job_id(id)?;
    b.job(id.clone())
        .await
        .map_err(failed)?
        .ok_or_else(|| unknown_job(&id))
}

/// The message of an unknown run (404).
fn unknown_run(job: &JobId, run: &str) -> Refusal {
    op_failed(OpError::NotFound(format!(
        "Run {} of job '{job}' does not exist",
        quoted(run)
    )))
}

/// The message of an unknown schedule (404).
fn unknown_schedule(job: &JobId, schedule: &str) -> Refusal {
    op_failed(OpError::NotFound(format!(
        "Schedule {} of job '{job}' does not exist",
        quoted(schedule)
    )))
}

/// The run of an operation's outcome.
fn run_answer(status: StatusCode, o: Outcome, what: &str) -> Answer {
    match o {
        Outcome::Run(r) => Ok(reply(status, render::run(&r))),
        _ => Err(unexpected(what)),
    }
}

pub(super) async fn list<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path(id): Path<String>,
    Query(q): Pairs,
) -> Answer {
    Params::new(q, &[])?;
    let j = existing(&*b, &id).await?;
    let list = j.active.iter().map(render::run).collect();
    Ok(reply(StatusCode::OK, Value::Array(list)))
}

pub(super) async fn start<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path(id): Path<String>,
    Query(q): Pairs,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let id = job_id(&id)?;
    Params::new(q, &[])?;
    match optional_body(&headers, body).await? {
        None | Some(Value::Null) => {}
        Some(Value::Object(m)) if m.is_empty() => {}
        Some(_) => {
            return Err(invalid_at(
                "/",
                "berth does not take run overrides: POST an empty body (or {})",
            ));
        }
    }
    let o = b.apply(Op::StartRun(id)).await.map_err(failed)?;
    run_answer(StatusCode::CREATED, o, "a run's start")
}

pub(super) async fn one<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path((id, run)): Path<(String, String)>,
    Query(q): Pairs,
) -> Answer {
    let id = job_id(&id)?;
    Params::new(q, &[])?;
    match b
        .run(id.clone(), RunId(run.clone()))
        .await
        .map_err(failed)?
    {
        Some(r) => Ok(reply(StatusCode::OK, render::run(&r))),
        None => Err(unknown_run(&id, &run)),
    }
}

pub(super) async fn stop<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path((id, run)): Path<(String, String)>,
    Query(q): Pairs,
) -> Answer {
    let id = job_id(&id)?;
    Params::new(q, &[])?;
    let o = b.apply(Op::KillRun(id, RunId(run))).await.map_err(failed)?;
    run_answer(StatusCode::OK, o, "a run's kill")
}

pub(super) async fn schedules<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path(id): Path<String>,
    Query(q): Pairs,
) -> Answer {
    Params::new(q, &[])?;
    let j = existing(&*b, &id).await?;
    Ok(reply(StatusCode::OK, render::schedules(&j)))
}

pub(super) async fn schedule<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path((id, schedule)): Path<(String, String)>,
    Query(q): Pairs,
) -> Answer {
    Params::new(q, &[])?;
    let j = existing(&*b, &id).await?;
    match j.def.schedules.iter().find(|s| s.id == schedule) {
        Some(s) => Ok(reply(StatusCode::OK, render::schedule(s, Some(&j)))),
        None => Err(unknown_schedule(&j.def.id, &schedule)),
    }
}

/// Adds (`schedule` `None`) or replaces the schedule in `v`, answering
/// with its next tick when the job can be read again (without it
/// otherwise: the change is made).
async fn change_schedule<B: JobsBackend>(
    b: &B,
    id: JobId,
    schedule: Option<&str>,
    v: Value,
) -> Answer {
    let s = text::schedule(schedule, v).map_err(|e| op_failed(e.into()))?;
    let (op, status) = match schedule {
        None => (Op::AddSchedule(id.clone(), s), StatusCode::CREATED),
        Some(_) => (Op::ReplaceSchedule(id.clone(), s), StatusCode::OK),
    };
    let Outcome::Schedule(s) = b.apply(op).await.map_err(failed)? else {
        return Err(unexpected("a schedule's change"));
    };
    let job = b.job(id).await.ok().flatten();
    Ok(reply(status, render::schedule(&s, job.as_ref())))
}

pub(super) async fn add_schedule<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path(id): Path<String>,
    Query(q): Pairs,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let (id, v) = id_and_body(&id, q, &headers, body).await?;
    change_schedule(&*b, id, None, v).await
}

pub(super) async fn put_schedule<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path((id, schedule)): Path<(String, String)>,
    Query(q): Pairs,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let (id, v) = id_and_body(&id, q, &headers, body).await?;
    change_schedule(&*b, id, Some(&schedule), v).await
}

pub(super) async fn remove_schedule<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path((id, schedule)): Path<(String, String)>,
    Query(q): Pairs,
) -> Answer {
    let id = job_id(&id)?;
    Params::new(q, &[])?;
    match b
        .apply(Op::RemoveSchedule(id, schedule))
        .await
        .map_err(failed)?
    {
        Outcome::ScheduleRemoved => Ok(StatusCode::OK.into_response()),
        _ => Err(unexpected("a schedule's removal")),
    }
}
