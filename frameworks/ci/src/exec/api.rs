//! The CI framework's HTTP/JSON API, for `berth ci` commands and the UI:
//!
//! | method and path | what |
//! |---|---|
//! | `GET /ci/v1/pipelines` | every pipeline, newest first (summaries) |
//! | `POST /ci/v1/pipelines` | run a repository on this machine ([`Trigger`]) |
//! | `GET /ci/v1/pipelines/{id}` | one pipeline with its jobs |
//! | `POST /ci/v1/pipelines/{id}/cancel` | cancel it |
//! | `POST /ci/v1/pipelines/{id}/retry` | retry its failed and canceled jobs |
//! | `POST /ci/v1/pipelines/{id}/jobs/{job}/play` | start a manual job |
//! | `GET /ci/v1/pipelines/{id}/jobs/{job}/log?offset=N` | the job's latest log (masked), from byte N; header `x-berth-job-finished: true` once the job has ended |
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

use super::runner::{PipelineRecord, RunError, RunnerHandle, Submission};
use super::source;
use super::state::JobStatus;
use crate::{PipelineSource, SecretVariable};

/// `POST /ci/v1/pipelines`: run the pipeline of a repository on the CI
/// framework's machine.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct Trigger {
    /// Absolute path of the repository (or a project directory in it).
    pub repository: String,
    /// Branch, tag or commit; HEAD when absent.
    #[serde(default)]
    pub reference: Option<String>,
    /// Run the working tree with its uncommitted changes.
    #[serde(default)]
    pub dirty: bool,
    /// Pipeline variables.
    #[serde(default)]
    pub variables: Vec<TriggerVariable>,
}

/// A variable given with a [`Trigger`].
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct TriggerVariable {
    /// Its name.
    pub name: String,
    /// Its value.
    pub value: String,
    /// Mask its value in logs.
    #[serde(default)]
    pub masked: bool,
}

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
        .route("/ci/v1/pipelines", get(list).post(trigger))
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

async fn trigger(
    State(handle): State<RunnerHandle>,
    Json(trigger): Json<Trigger>,
) -> Result<Json<PipelineView>, ApiError> {
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let path = std::path::PathBuf::from(&trigger.repository);
    if !path.is_absolute() {
        return Err(bad(format!(
            "repository {:?} must be an absolute path",
            trigger.repository
        )));
    }
    if trigger.dirty && trigger.reference.is_some() {
        return Err(bad("dirty and reference exclude each other".into()));
    }
    for v in &trigger.variables {
        if !crate::is_name(&v.name) {
            return Err(bad(format!("{:?} is not a variable name", v.name)));
        }
    }
    let reference = trigger.reference.clone();
    let dirty = trigger.dirty;
    let (revision, text) = tokio::task::spawn_blocking(move || {
        let rev = source::resolve(&path, reference.as_deref(), dirty)?;
        let text = source::read_file(&rev, ".gitlab-ci.yml")?;
        Ok::<_, source::SourceError>((rev, text))
    })
    .await
    .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
    .map_err(|e| bad(e.to_string()))?;
    let text = text.ok_or_else(|| bad(format!("{} has no .gitlab-ci.yml", trigger.repository)))?;
    let definition =
        String::from_utf8(text).map_err(|_| bad(".gitlab-ci.yml is not UTF-8 text".into()))?;
    let id = handle
        .submit(Submission {
            revision,
            definition,
            source: PipelineSource::Api,
            variables: trigger
                .variables
                .iter()
                .map(|v| SecretVariable {
                    name: v.name.clone(),
                    value: v.value.clone(),
                    masked: v.masked,
                })
                .collect(),
        })
        .await?;
    Ok(Json(PipelineView::of(&record(&handle, id).await?)))
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

/// `?offset=N`.
#[derive(Debug, serde::Deserialize)]
struct LogQuery {
    #[serde(default)]
    offset: u64,
}

async fn log(
    State(handle): State<RunnerHandle>,
    Path((id, job)): Path<(u64, String)>,
    axum::extract::Query(query): axum::extract::Query<LogQuery>,
) -> Result<Response, ApiError> {
    let rec = record(&handle, id).await?;
    let index = rec.state.find(&job).ok_or(RunError::NoSuchJob(id, job))?;
    let state = &rec.state.jobs()[index];
    let attempts = state.attempts.len();
    let finished = if state.status.is_finished() || state.status == JobStatus::Manual {
        "true"
    } else {
        "false"
    };
    let bytes = if attempts == 0 {
        Vec::new()
    } else {
        let path = handle.log_path(id, index, attempts);
        match tokio::fs::read(&path).await {
            Ok(bytes) => bytes,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())),
        }
    };
    let from = usize::try_from(query.offset)
        .unwrap_or(usize::MAX)
        .min(bytes.len());
    Ok((
        StatusCode::OK,
        [
            (
                axum::http::header::CONTENT_TYPE,
                "text/plain; charset=utf-8",
            ),
            (
                axum::http::HeaderName::from_static("x-berth-job-finished"),
                finished,
            ),
        ],
        bytes[from..].to_vec(),
    )
        .into_response())
}
