//! The CI framework's HTTP/JSON API, for `berth ci` commands and the UI:
//!
//! | method and path | what |
//! |---|---|
//! | `GET /ci/v1/pipelines` | every pipeline, newest first (summaries) |
//! | `GET /ci/v1/pipelines/{id}` | one pipeline with its jobs |
//! | `POST /ci/v1/pipelines/{id}/cancel` | cancel it |
//! | `POST /ci/v1/pipelines/{id}/retry` | retry its failed and canceled jobs |
//! | `POST /ci/v1/pipelines/{id}/jobs/{job}/play` | start a manual job |
//! | `GET /ci/v1/pipelines/{id}/jobs/{job}/log` | the job's latest log (masked) |
//!
//! Errors are JSON `{"error": "..."}` with 404 for unknown pipelines and
//! jobs, 409 for an action the pipeline's state does not allow.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::runner::{PipelineRecord, RunError, RunnerHandle};

/// A pipeline in a list.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PipelineSummary {
    /// Its id.
    pub id: u64,
    /// The project.
    pub project: String,
    /// The branch or tag.
    pub ref_name: String,
    /// The commit.
    pub sha: String,
    /// What started it.
    pub source: String,
    /// Its status (GitLab's names).
    pub status: String,
    /// Some job failed but was allowed to.
    pub warnings: bool,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// When it finished (ms since the epoch).
    pub finished_ms: Option<u64>,
}

/// One job of a pipeline.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct JobView {
    /// The job's name.
    pub name: String,
    /// Its stage.
    pub stage: String,
    /// Its status.
    pub status: String,
    /// Attempts so far.
    pub attempts: usize,
    /// The latest attempt's failure reason (GitLab's name), if it failed.
    pub failure_reason: Option<String>,
    /// The latest attempt's message.
    pub message: String,
    /// The latest attempt's exit code.
    pub exit_code: Option<i32>,
    /// Its failure does not fail the pipeline.
    pub allow_failure: bool,
}

/// A pipeline with its jobs.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct PipelineView {
    /// The summary.
    #[serde(flatten)]
    pub summary: PipelineSummary,
    /// Its stages, in order.
    pub stages: Vec<String>,
    /// Its jobs, in plan order.
    pub jobs: Vec<JobView>,
}

impl PipelineSummary {
    /// The summary of a stored pipeline.
    pub fn of(rec: &PipelineRecord) -> PipelineSummary {
        PipelineSummary {
            id: rec.id,
            project: rec.project.clone(),
            ref_name: rec.ref_name.clone(),
            sha: rec.sha.clone(),
            source: rec.source.clone(),
            status: rec.status().as_str().to_string(),
            warnings: rec.state.has_warnings(),
            created_ms: rec.created_ms,
            finished_ms: rec.finished_ms,
        }
    }
}

impl PipelineView {
    /// The view of a stored pipeline.
    pub fn of(rec: &PipelineRecord) -> PipelineView {
        let jobs = rec
            .plan
            .jobs
            .iter()
            .zip(rec.state.jobs())
            .zip(rec.state.nodes())
            .map(|((planned, state), node)| {
                let end = state.attempts.last().and_then(|a| a.end.as_ref());
                JobView {
                    name: planned.name.clone(),
                    stage: planned.stage.clone(),
                    status: state.status.as_str().to_string(),
                    attempts: state.attempts.len(),
                    failure_reason: end.and_then(|e| e.reason).map(|r| r.as_str().to_string()),
                    message: end.map(|e| e.message.clone()).unwrap_or_default(),
                    exit_code: end.and_then(|e| e.exit_code),
                    allow_failure: node.allow_failure.any,
                }
            })
            .collect();
        PipelineView {
            summary: PipelineSummary::of(rec),
            stages: rec.plan.stages.clone(),
            jobs,
        }
    }
}

struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, Json(serde_json::json!({ "error": self.1 }))).into_response()
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        let status = match &e {
            RunError::NoSuchPipeline(_) | RunError::NoSuchJob(..) => StatusCode::NOT_FOUND,
            RunError::State(_) => StatusCode::CONFLICT,
            RunError::Invalid(_) | RunError::NoPipeline(_) | RunError::Mask(_) => {
                StatusCode::BAD_REQUEST
            }
            RunError::Stopped => StatusCode::SERVICE_UNAVAILABLE,
            RunError::Store(_) | RunError::Source(_) | RunError::Other(_) => {
                StatusCode::INTERNAL_SERVER_ERROR
            }
        };
        ApiError(status, e.to_string())
    }
}

/// The API's routes.
pub fn router(handle: RunnerHandle) -> Router {
    Router::new()
        .route("/ci/v1/pipelines", get(list))
        .route("/ci/v1/pipelines/{id}", get(show))
        .route("/ci/v1/pipelines/{id}/cancel", post(cancel))
        .route("/ci/v1/pipelines/{id}/retry", post(retry))
        .route("/ci/v1/pipelines/{id}/jobs/{job}/play", post(play))
        .route("/ci/v1/pipelines/{id}/jobs/{job}/log", get(log))
        .with_state(handle)
}

async fn record(handle: &RunnerHandle, id: u64) -> Result<PipelineRecord, ApiError> {
    handle
        .get(id)
        .await?
        .ok_or_else(|| RunError::NoSuchPipeline(id).into())
}

async fn list(State(handle): State<RunnerHandle>) -> Result<Json<Vec<PipelineSummary>>, ApiError> {
    let mut all: Vec<PipelineSummary> = handle
        .list()
        .await?
        .iter()
        .map(PipelineSummary::of)
        .collect();
    all.sort_by_key(|s| std::cmp::Reverse(s.id));
    Ok(Json(all))
}

async fn show(
    State(handle): State<RunnerHandle>,
    Path(id): Path<u64>,
) -> Result<Json<PipelineView>, ApiError> {
    Ok(Json(PipelineView::of(&record(&handle, id).await?)))
}

async fn cancel(
    State(handle): State<RunnerHandle>,
    Path(id): Path<u64>,
) -> Result<Json<PipelineView>, ApiError> {
    handle.cancel(id).await?;
    Ok(Json(PipelineView::of(&record(&handle, id).await?)))
}

async fn retry(
    State(handle): State<RunnerHandle>,
    Path(id): Path<u64>,
) -> Result<Json<PipelineView>, ApiError> {
    handle.retry(id).await?;
    Ok(Json(PipelineView::of(&record(&handle, id).await?)))
}

async fn play(
    State(handle): State<RunnerHandle>,
    Path((id, job)): Path<(u64, String)>,
) -> Result<Json<PipelineView>, ApiError> {
    handle.play(id, &job).await?;
    Ok(Json(PipelineView::of(&record(&handle, id).await?)))
}

async fn log(
    State(handle): State<RunnerHandle>,
    Path((id, job)): Path<(u64, String)>,
) -> Result<Response, ApiError> {
    let rec = record(&handle, id).await?;
    let index = rec.state.find(&job).ok_or(RunError::NoSuchJob(id, job))?;
    let attempts = rec.state.jobs()[index].attempts.len();
    if attempts == 0 {
        return Ok((StatusCode::OK, String::new()).into_response());
    }
    let path = handle.log_path(id, index, attempts);
    match tokio::fs::read(&path).await {
        Ok(bytes) => Ok((
            StatusCode::OK,
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            )],
            bytes,
        )
            .into_response()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            Ok((StatusCode::OK, String::new()).into_response())
        }
        Err(e) => Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
    }
}
