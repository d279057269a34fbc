//! Metronome's HTTP API (`/v1`), a compatible subset (axum), over a
//! [`JobsBackend`]: a Metronome user's `curl` scripts and clients work as
//! they are. Its gRPC twin is [`grpc`], served on the same port.
//!
//! | route | answer |
//! |---|---|
//! | `GET /ping` | `pong` |
//! | `GET /v1/info` | berth's: `{"name", "version", "frameworkId", "address"}` |
//! | `GET /v1/jobs` (`?embed=`) | `[job, ...]`, by id |
//! | `POST /v1/jobs` | 201, the JobSpec (its `schedules` with `nextRunAt`) |
//! | `GET /v1/jobs/{id}` (`?embed=`) | the job |
//! | `PUT /v1/jobs/{id}` | 200, the JobSpec; a body without `schedules` keeps them |
//! | `DELETE /v1/jobs/{id}` (`?stopCurrentJobRuns=true`) | 200, the JobSpec removed; 409 while runs are active without it |
//! | `GET /v1/jobs/{id}/runs` | `[run, ...]`, the active runs, oldest first |
//! | `POST /v1/jobs/{id}/runs` | 201, the run started |
//! | `GET /v1/jobs/{id}/runs/{runId}` | the run, active or from the history |
//! | `POST /v1/jobs/{id}/runs/{runId}/actions/stop` | 200, the run being killed |
//! | `GET /v1/jobs/{id}/schedules` | `[schedule, ...]` with `nextRunAt` |
//! | `POST /v1/jobs/{id}/schedules` | 201, the schedule added |
//! | `GET /v1/jobs/{id}/schedules/{scheduleId}` | the schedule with `nextRunAt` |
//! | `PUT /v1/jobs/{id}/schedules/{scheduleId}` | 200, the schedule replaced |
//! | `DELETE /v1/jobs/{id}/schedules/{scheduleId}` | 200, no body |
//! | `GET /v1/secrets`, `PUT\|DELETE /v1/secrets/{path}` | berth's secret store ([`secrets`]) |
//!
//! `embed` (repeatable, or comma-separated, as Metronome takes it):
//! `activeRuns` (the runs, as `GET .../runs/{runId}`), `schedules` (with
//! `nextRunAt`), `history` (`successCount`, `failureCount`,
//! `lastSuccessAt`, `lastFailureAt`, `successfulFinishedRuns` and
//! `failedFinishedRuns`: `[{"id", "createdAt", "finishedAt", "tasks"}]`
//! with berth's `status`, `reason`, `exitCode`; missed and skipped ticks
//! are among the failed), `historySummary` (the counts and last times).
//! Any other value is refused (400), and so is any query parameter a
//! route does not take: nothing asked for is ignored.
//!
//! A run (`render::run`) is Metronome's `{"id", "jobId", "status",
//! "createdAt", "completedAt", "tasks": [{"id", "status", "startedAt",
//! "completedAt"}]}` with berth's `reason`, `trigger` (`{"type":
//! "schedule", "scheduleId", "tick"}`, `{"type": "manual"}`, `{"type":
//! "dependency", "parents": [{"jobId", "runId"}]}`), `exitCode`,
//! `startedAt` (its first task running), `finishedAt`, and per task
//! `index`, `attempt`, `agentId`, `exitCode`, `message`, `runningAt`.
//! Statuses are Metronome's (`INITIAL`, `STARTING`, `ACTIVE`, `SUCCESS`,
//! `FAILED`) and berth's `MISSED` and `SKIPPED`. Times are
//! `2026-12-07T16:25:00.000+0000`, UTC.
//!
//! Bodies: JSON (`application/json`, `*+json`, or no content type) or
//! YAML (`application/yaml`, berth's); over [`MAX_BODY_BYTES`] 413, any
//! other type 415, text that does not parse 400 `{"message": "Invalid
//! JSON", "details": [{"path": "/", "errors"}]}` (`Invalid YAML` for
//! YAML) with the line and column; read strictly, so a key given twice
//! and YAML's NaN, infinities and tags are such errors too.
//! A PUT body's `id` must be the path's, or absent. `POST .../runs` takes
//! no body (Metronome's run overrides are refused, 422).
//!
//! Errors: 422 `{"message": "Object is not valid", "details": [{"path",
//! "errors"}]}`, 404 and 409 `{"message"}` (the framework's words, e.g.
//! `Job 'x' does not exist`), 400 for a malformed job id in the path, 503
//! when the framework cannot answer (not the active instance, storage
//! failed).
//!
//! Not served: Metronome's `/v0` scheduled-jobs API, `/v1/runs` (every
//! job's runs), `/v1/queue`, `/v1/metrics`, run overrides.

use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::job::JobDef;
use crate::state::{Op, Outcome};

mod backend;
pub mod grpc;
mod render;
mod request;
mod runs;
mod secrets;
mod text;

use request::{
    Params, Refusal, body_value, failed, id_and_body, job_id, message, op_failed, reply,
    unexpected, unknown_job,
};

pub use backend::{BackendError, FrameworkInfo, JobsBackend};

#[cfg(test)]
mod tests;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY_BYTES: usize = 1024 * 1024;

/// A handler's answer.
type Answer = Result<Response, Refusal>;

/// A request's query pairs.
type Pairs = Query<Vec<(String, String)>>;

/// The API's routes over `backend`.
pub fn router<B: JobsBackend>(backend: Arc<B>) -> Router {
    Router::new()
        .route("/ping", get(|| async { "pong" }))
        .route("/v1/info", get(info::<B>))
        .route("/v1/jobs", get(list_jobs::<B>).post(create_job::<B>))
        .route(
            "/v1/jobs/{id}",
            get(get_job::<B>).put(put_job::<B>).delete(delete_job::<B>),
        )
        .route(
            "/v1/jobs/{id}/runs",
            get(runs::list::<B>).post(runs::start::<B>),
        )
        .route("/v1/jobs/{id}/runs/{run}", get(runs::one::<B>))
        .route(
            "/v1/jobs/{id}/runs/{run}/actions/stop",
            post(runs::stop::<B>),
        )
        .route(
            "/v1/jobs/{id}/schedules",
            get(runs::schedules::<B>).post(runs::add_schedule::<B>),
        )
        .route(
            "/v1/jobs/{id}/schedules/{schedule}",
            get(runs::schedule::<B>)
                .put(runs::put_schedule::<B>)
                .delete(runs::remove_schedule::<B>),
        )
        .route("/v1/secrets", get(secrets::list::<B>))
        .route(
            "/v1/secrets/{*path}",
            axum::routing::put(secrets::put::<B>).delete(secrets::remove::<B>),
        )
        .fallback(|| async { message(StatusCode::NOT_FOUND, "no such resource").into_response() })
        .with_state(backend)
}

async fn info<B: JobsBackend>(State(b): State<Arc<B>>) -> Answer {
    let i = b.info().await.map_err(failed)?;
    Ok(reply(
        StatusCode::OK,
        json!({
            "name": "berth-jobs",
            "version": env!("CARGO_PKG_VERSION"),
            "frameworkId": i.framework_id,
            "address": i.address,
        }),
    ))
}

async fn list_jobs<B: JobsBackend>(State(b): State<Arc<B>>, Query(q): Pairs) -> Answer {
    let embed = Params::new(q, &["embed"])?.embed()?;
    let mut jobs = b.jobs().await.map_err(failed)?;
    jobs.sort_by(|x, y| x.def.id.cmp(&y.def.id));
    let list = jobs.iter().map(|j| render::job(j, embed)).collect();
    Ok(reply(StatusCode::OK, Value::Array(list)))
}

async fn create_job<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Query(q): Pairs,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    Params::new(q, &[])?;
    let v = body_value(&headers, body).await?;
    let def = JobDef::from_value(&v).map_err(|e| op_failed(e.into()))?;
    job_change(&*b, Op::Create(def), StatusCode::CREATED).await
}

/// Applies a job's creation or update, answering with its JobSpec.
async fn job_change<B: JobsBackend>(b: &B, op: Op, status: StatusCode) -> Answer {
    match b.apply(op).await.map_err(failed)? {
        Outcome::Job(j) => {
            // The schedules with their next ticks (berth's `nextRunAt`).
            let mut v = render::job_spec(&j.def);
            if !j.def.schedules.is_empty() {
                v["schedules"] = render::schedules(&j);
            }
            Ok(reply(status, v))
        }
        _ => Err(unexpected("a job's change")),
    }
}

async fn get_job<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path(id): Path<String>,
    Query(q): Pairs,
) -> Answer {
    let id = job_id(&id)?;
    let embed = Params::new(q, &["embed"])?.embed()?;
    match b.job(id.clone()).await.map_err(failed)? {
        Some(j) => Ok(reply(StatusCode::OK, render::job(&j, embed))),
        None => Err(unknown_job(&id)),
    }
}

async fn put_job<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path(id): Path<String>,
    Query(q): Pairs,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    let (id, v) = id_and_body(&id, q, &headers, body).await?;
    let op = text::update(Some(&id), v).map_err(|e| op_failed(e.into()))?;
    job_change(&*b, op, StatusCode::OK).await
}

async fn delete_job<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path(id): Path<String>,
    Query(q): Pairs,
) -> Answer {
    let id = job_id(&id)?;
    let stop_runs = Params::new(q, &["stopCurrentJobRuns"])?.flag("stopCurrentJobRuns", false)?;
    // Metronome answers with the definition removed: read it first (the
    // removal itself says whether the job exists).
    let before = b.job(id.clone()).await.map_err(failed)?;
    match b
        .apply(Op::Remove {
            id: id.clone(),
            stop_runs,
        })
        .await
        .map_err(failed)?
    {
        Outcome::Removed => Ok(reply(
            StatusCode::OK,
            before.map_or_else(
                || json!({ "id": id.as_str() }),
                |j| render::job_spec(&j.def),
            ),
        )),
        _ => Err(unexpected("a job's removal")),
    }
}
