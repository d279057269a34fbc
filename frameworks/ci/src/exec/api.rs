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
//! | `GET /ci/v1/pipelines/{id}/jobs/{job}/log?full=true` | the whole log, however long |
//!
//! A log longer than the runner's `max_log_bytes` stops there, followed by
//! one line saying where it was cut and that `?full=true` has all of it
//! (see [`super::log`]); offsets count the bytes served, marker included.
//!
//! and, with [`repos_router`], the registered repositories
//! ([`super::repos`]):
//!
//! | method and path | what |
//! |---|---|
//! | `GET /ci/v1/repos` | every registered repository ([`RepoView`], never its secret) |
//! | `POST /ci/v1/repos` | register one ([`NewRepo`]); 201 with its view, 400 with the reason, 409 if it is registered already |
//! | `GET /ci/v1/repos/{id}` | one repository |
//! | `DELETE /ci/v1/repos/{id}` | unregister it (its pipelines stay) |
//! | `POST /ci/v1/repos/{id}/hook` | a push webhook ([`HookReply`]) |
//!
//! The webhook takes `{"ref": "refs/heads/main" or "main", "sha": "..."}`
//! or GitLab's push event (`ref`, `checkout_sha` / `after`), with the
//! repository's secret in `X-Berth-Token` (or GitLab's `X-Gitlab-Token`).
//! It answers 201 with a new pipeline, 200 with the pipeline the commit
//! had already, 202 with the reason when it ignores the push (a branch not
//! watched, a tag, a deleted branch), 401 without the right secret, 403
//! when the repository has no secret, 404 for an unknown repository, 400
//! for a bad body or a commit not on the branch, 422 when the commit has no
//! pipeline (its reason is remembered) and 502 when fetching fails.
//!
//! Errors are JSON `{"error": "..."}` with 404 for unknown pipelines and
//! jobs, 409 for an action the pipeline's state does not allow, 410 for a
//! log the expiry sweep deleted. A job's `artifacts_expired` and
//! `log_expired` say what the sweep deleted.

use axum::Json;
use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::Serialize;

use super::repos::{HookOutcome, NewRepo, RepoError, RepoView, Repos};
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
    /// The newer pipeline of the same branch that auto-canceled it.
    #[serde(default)]
    pub auto_canceled_by: Option<u64>,
}

/// One job of a pipeline.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct JobView {
    /// The job's name.
    pub name: String,
    /// Its stage.
    pub stage: String,
    /// Its status (GitLab's names; `waiting_for_resource` for a pending job
    /// whose resource group another job holds).
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
    /// A newer pipeline of the same branch may cancel it.
    #[serde(default)]
    pub interruptible: bool,
    /// Its resource group.
    #[serde(default)]
    pub resource_group: Option<String>,
    /// Its artifacts expired and were deleted.
    #[serde(default)]
    pub artifacts_expired: bool,
    /// Its latest log expired and was deleted.
    #[serde(default)]
    pub log_expired: bool,
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
            auto_canceled_by: rec.auto_canceled_by,
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
            .enumerate()
            .map(|(i, ((planned, state), node))| {
                let end = state.attempts.last().and_then(|a| a.end.as_ref());
                let status = if state.status == JobStatus::Pending && rec.is_waiting_for_resource(i)
                {
                    "waiting_for_resource"
                } else {
                    state.status.as_str()
                };
                let attempts = state.attempts.len();
                JobView {
                    name: planned.name.clone(),
                    stage: planned.stage.clone(),
                    status: status.to_string(),
                    attempts: state.attempts.len(),
                    failure_reason: end.and_then(|e| e.reason).map(|r| r.as_str().to_string()),
                    message: end.map(|e| e.message.clone()).unwrap_or_default(),
                    exit_code: end.and_then(|e| e.exit_code),
                    allow_failure: node.allow_failure.any,
                    interruptible: planned.interruptible,
                    resource_group: planned.resource_group.clone(),
                    artifacts_expired: rec.expired.artifacts_expired(i, attempts),
                    log_expired: rec.expired.log_expired(i, attempts),
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

/// `?offset=N&full=true`.
#[derive(Debug, serde::Deserialize)]
struct LogQuery {
    #[serde(default)]
    offset: u64,
    /// The whole log, not cut at `max_log_bytes`.
    #[serde(default)]
    full: bool,
}

async fn log(
    State(handle): State<RunnerHandle>,
    Path((id, job)): Path<(u64, String)>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    axum::extract::Query(query): axum::extract::Query<LogQuery>,
) -> Result<Response, ApiError> {
    let rec = record(&handle, id).await?;
    let Some(index) = rec.state.find(&job) else {
        return Err(RunError::NoSuchJob(id, job).into());
    };
    let state = &rec.state.jobs()[index];
    let attempts = state.attempts.len();
    if rec.expired.log_expired(index, attempts) {
        return Err(ApiError(
            StatusCode::GONE,
            format!("the log of job {job:?} of pipeline {id} expired and was deleted"),
        ));
    }
    let finished = state.status.is_finished() || state.status == JobStatus::Manual;
    let headers = [
        (
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        ),
        (
            axum::http::HeaderName::from_static("x-berth-job-finished"),
            if finished { "true" } else { "false" },
        ),
    ];
    let internal = |e: std::io::Error| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string());
    if attempts == 0 {
        return Ok((StatusCode::OK, headers, Vec::new()).into_response());
    }
    let path = handle.log_path(id, index, attempts);
    if query.full {
        // However long it is: streamed from the file.
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((StatusCode::OK, headers, Vec::new()).into_response());
            }
            Err(e) => return Err(internal(e)),
        };
        let len = file.metadata().await.map_err(internal)?.len();
        file.seek(std::io::SeekFrom::Start(query.offset.min(len)))
            .await
            .map_err(internal)?;
        let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(
            file.take(len.saturating_sub(query.offset)),
        ));
        return Ok((StatusCode::OK, headers, body).into_response());
    }
    let limit = handle.max_log_bytes();
    let offset = query.offset;
    let part = tokio::task::spawn_blocking(move || super::log::read_part(&path, offset, limit))
        .await
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
        .map_err(internal)?;
    let location = format!("is at GET {}?full=true", uri.path());
    let bytes =
        part.into_bytes(|limit, total| super::log::marker_line(limit, total, finished, &location));
    Ok((StatusCode::OK, headers, bytes).into_response())
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> ApiError {
        let status = match &e {
            RepoError::Invalid(_) => StatusCode::BAD_REQUEST,
            RepoError::Duplicate { .. } => StatusCode::CONFLICT,
            RepoError::NoSuchRepo(_) => StatusCode::NOT_FOUND,
            RepoError::Unauthorized(_) => StatusCode::UNAUTHORIZED,
            RepoError::NoSecret(_) => StatusCode::FORBIDDEN,
            RepoError::NoPipeline { .. } => StatusCode::UNPROCESSABLE_ENTITY,
            RepoError::Fetch(_) => StatusCode::BAD_GATEWAY,
            RepoError::Run(RunError::Stopped) => StatusCode::SERVICE_UNAVAILABLE,
            RepoError::Store(_)
            | RepoError::Source(_)
            | RepoError::Run(_)
            | RepoError::Other(_) => StatusCode::INTERNAL_SERVER_ERROR,
        };
        ApiError(status, e.to_string())
    }
}

/// What `POST /ci/v1/repos/{id}/hook` answers.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct HookReply {
    /// The commit's pipeline (new or earlier).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pipeline: Option<u64>,
    /// The pipeline is new.
    #[serde(default)]
    pub created: bool,
    /// Why the push was ignored.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ignored: Option<String>,
}

/// The registered repositories' routes (see the table above).
pub fn repos_router(repos: Repos) -> Router {
    Router::new()
        .route("/ci/v1/repos", get(list_repos).post(add_repo))
        .route("/ci/v1/repos/{id}", get(show_repo).delete(remove_repo))
        .route("/ci/v1/repos/{id}/hook", post(hook))
        .with_state(repos)
}

async fn list_repos(State(repos): State<Repos>) -> Result<Json<Vec<RepoView>>, ApiError> {
    Ok(Json(repos.list().await?))
}

async fn add_repo(
    State(repos): State<Repos>,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<RepoView>), ApiError> {
    let new: NewRepo = serde_json::from_slice(&body).map_err(|e| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("the body is not a repository to add: {e}"),
        )
    })?;
    Ok((StatusCode::CREATED, Json(repos.add(new).await?)))
}

async fn show_repo(
    State(repos): State<Repos>,
    Path(id): Path<u64>,
) -> Result<Json<RepoView>, ApiError> {
    Ok(Json(repos.get(id).await?))
}

async fn remove_repo(
    State(repos): State<Repos>,
    Path(id): Path<u64>,
) -> Result<Json<RepoView>, ApiError> {
    Ok(Json(repos.remove(id).await?))
}

async fn hook(
    State(repos): State<Repos>,
    Path(id): Path<u64>,
    headers: axum::http::HeaderMap,
    body: axum::body::Bytes,
) -> Result<(StatusCode, Json<HookReply>), ApiError> {
    let token = ["x-berth-token", "x-gitlab-token"]
        .iter()
        .find_map(|name| headers.get(*name))
        .map(|v| v.to_str().unwrap_or_default());
    let reply = match repos.hook(id, token, &body).await? {
        HookOutcome::Created(pipeline) => (
            StatusCode::CREATED,
            HookReply {
                pipeline: Some(pipeline),
                created: true,
                ignored: None,
            },
        ),
        HookOutcome::Existing(pipeline) => (
            StatusCode::OK,
            HookReply {
                pipeline: Some(pipeline),
                created: false,
                ignored: None,
            },
        ),
        HookOutcome::Ignored(why) => (
            StatusCode::ACCEPTED,
            HookReply {
                pipeline: None,
                created: false,
                ignored: Some(why),
            },
        ),
    };
    Ok((reply.0, Json(reply.1)))
}
