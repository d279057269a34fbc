//! The CI framework's HTTP/JSON API, for `berth ci` commands and the UI:
//!
//! | method and path | what |
//! |---|---|
//! | `GET /ci/v1/pipelines?limit=N&before=ID` | pipelines, newest first (summaries): at most `limit` (default 100, at most 1000) whose ids are below `before` (all when absent) |
//! | `POST /ci/v1/pipelines` | run a repository on this machine ([`Trigger`]) |
//! | `GET /ci/v1/pipelines/{id}` | one pipeline with its jobs |
//! | `POST /ci/v1/pipelines/{id}/cancel` | cancel it |
//! | `POST /ci/v1/pipelines/{id}/retry` | retry its failed and canceled jobs |
//! | `POST /ci/v1/pipelines/{id}/jobs/{job}/play` | start a manual job |
//! | `POST /ci/v1/pipelines/{id}/jobs/{job}/retry` | run one finished job (failed, canceled or passed) again; 409 while it is still to run or running |
//! | `GET /ci/v1/pipelines/{id}/jobs/{job}/log?offset=N` | the job's latest log (masked), from byte N; header `x-berth-job-finished: true` once the job has ended and its whole log is stored |
//! | `GET /ci/v1/pipelines/{id}/jobs/{job}/log?full=true` | the whole log, however long |
//! | `GET /ci/v1/pipelines/{id}/jobs/{job}/log?attempt=N` | the log of attempt N (from 1) instead of the latest |
//! | `GET /ci/v1/environments` | every project's environments: state, last deployment, stop job ([`super::environments`]) |
//! | `POST /ci/v1/environments/{name}/stop?project=P` | play (or run again) the environment's stop job; `project` when several projects have the name |
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
//! jobs, 400 for bad input (a body that is not the expected JSON, whatever
//! its content type; a path or query parameter that does not parse, such
//! as `/ci/v1/pipelines/abc` or `?offset=-1`), 409 for an action the pipeline's state does not
//! allow, 410 for a log the expiry sweep deleted. A job's
//! `artifacts_expired` and `log_expired`, and a pipeline's
//! `source_expired`, say what the sweep deleted.
//!
//! The operations themselves (the views, trigger validation, which log a
//! viewer reads and what of it) are the public functions below, shared
//! with the gRPC API ([`super::grpc`]); an [`ApiError`] carries an
//! [`ErrorKind`] each API maps to its own codes, and the same message.

use std::path::PathBuf;
use std::sync::Arc;

use axum::Json;
use axum::Router;
use axum::extract::{FromRequest, FromRequestParts, Request, State};
use axum::http::StatusCode;
use axum::http::request::Parts;
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use berth_proto::{bounded_message, quoted};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::repos::{HookOutcome, NewRepo, RepoError, RepoView, Repos};
use super::runner::{
    DEFAULT_LIST_LIMIT, MAX_LIST_LIMIT, PipelineRecord, RunError, RunnerHandle, Submission,
};
use super::source;
use super::state::JobStatus;
use crate::reports::TestSummary;
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
    /// Its source archive expired and was deleted: a job retried or played
    /// now fails with `missing_dependency_failure`.
    #[serde(default)]
    pub source_expired: bool,
    /// For a child pipeline: the parent pipeline and its trigger job.
    #[serde(default)]
    pub parent: Option<ParentView>,
    /// The child pipelines its trigger jobs created, oldest first.
    #[serde(default)]
    pub children: Vec<u64>,
}

/// The trigger job that created a child pipeline.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct ParentView {
    /// The parent pipeline.
    pub pipeline: u64,
    /// Its trigger job's name.
    pub job: String,
}

/// One job of a pipeline.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
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
    /// A manual job (`when: manual`): it runs when played.
    #[serde(default)]
    pub manual: bool,
    /// Pending, but another job holds its resource group (its `status`
    /// says `waiting_for_resource` too).
    #[serde(default)]
    pub waiting_for_resource: bool,
    /// Pending, and no agent has its `tags`: why (GitLab's "This job is
    /// stuck because ...").
    #[serde(default)]
    pub stuck: Option<String>,
    /// A trigger job: the child pipeline of its latest attempt.
    #[serde(default)]
    pub child_pipeline: Option<u64>,
    /// That child pipeline's status (filled by [`pipeline`]).
    #[serde(default)]
    pub child_status: Option<String>,
    /// Its `reports:junit` results (latest attempt).
    #[serde(default)]
    pub tests: Option<TestSummary>,
    /// Its `coverage:` percentage (latest attempt).
    #[serde(default)]
    pub coverage: Option<f64>,
    /// The names of the dotenv variables it passes on.
    #[serde(default)]
    pub dotenv: Vec<String>,
    /// What went wrong reading its reports (bad dotenv lines, broken
    /// JUnit files, files not found).
    #[serde(default)]
    pub report_notices: Vec<String>,
    /// Its deployment environment.
    #[serde(default)]
    pub environment: Option<JobEnvironment>,
}

/// A job's `environment`, as planned (variables expanded).
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct JobEnvironment {
    /// The environment's name.
    pub name: String,
    /// Its URL.
    pub url: Option<String>,
    /// `start`, `prepare`, `stop`, `verify` or `access`.
    pub action: String,
    /// The job that stops it.
    pub on_stop: Option<String>,
}

/// A pipeline with its jobs.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq)]
pub struct PipelineView {
    /// The summary.
    #[serde(flatten)]
    pub summary: PipelineSummary,
    /// Its stages, in order.
    pub stages: Vec<String>,
    /// Its jobs, in plan order.
    pub jobs: Vec<JobView>,
    /// Its jobs' test results, summed.
    #[serde(default)]
    pub tests: Option<TestSummary>,
    /// The average coverage of its jobs that have one.
    #[serde(default)]
    pub coverage: Option<f64>,
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
            source_expired: rec.expired.source,
            parent: rec.family.parent.map(|p| ParentView {
                pipeline: p.pipeline,
                // The name is the parent's; the child knows its index.
                job: String::new(),
            }),
            children: rec.family.children.iter().map(|c| c.pipeline).collect(),
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
                let waiting = state.status == JobStatus::Pending && rec.is_waiting_for_resource(i);
                let status = if waiting {
                    "waiting_for_resource"
                } else {
                    state.status.as_str()
                };
                let attempts = state.attempts.len();
                // Reports of an earlier attempt are not this one's.
                let reports = rec
                    .reports
                    .get(&i)
                    .filter(|r| r.attempt == attempts && attempts > 0);
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
                    manual: planned.when == crate::When::Manual,
                    waiting_for_resource: waiting,
                    tests: reports.and_then(|r| r.tests.clone()),
                    coverage: reports.and_then(|r| r.coverage),
                    dotenv: reports
                        .map(|r| r.dotenv.keys().cloned().collect())
                        .unwrap_or_default(),
                    report_notices: reports.map(|r| r.notices.clone()).unwrap_or_default(),
                    environment: planned.environment.as_ref().map(|e| JobEnvironment {
                        name: e.name.clone(),
                        url: e.url.clone(),
                        action: e.action.clone(),
                        on_stop: e.on_stop.clone(),
                    }),
                    stuck: (state.status == JobStatus::Pending)
                        .then(|| rec.stuck_reason(i).map(str::to_string))
                        .flatten(),
                    child_pipeline: rec.family.latest_child(i),
                    child_status: None,
                }
            })
            .collect::<Vec<JobView>>();
        let tests = crate::reports::pipeline_tests(jobs.iter().filter_map(|j| j.tests.as_ref()));
        let coverage = crate::reports::pipeline_coverage(jobs.iter().filter_map(|j| j.coverage));
        PipelineView {
            summary: PipelineSummary::of(rec),
            stages: rec.plan.stages.clone(),
            jobs,
            tests,
            coverage,
        }
    }
}

/// What kind of failure an API call ended with; the HTTP API and the gRPC
/// API each map it to their own code.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// No such pipeline, job or attempt (HTTP 404, gRPC `NOT_FOUND`).
    NotFound,
    /// The input is invalid (HTTP 400, gRPC `INVALID_ARGUMENT`).
    BadRequest,
    /// The pipeline's state does not allow it (HTTP 409, gRPC
    /// `FAILED_PRECONDITION`).
    Conflict,
    /// The runner has stopped (HTTP 503, gRPC `UNAVAILABLE`).
    Unavailable,
    /// Deleted by the expiry sweep (HTTP 410, gRPC `NOT_FOUND`).
    Gone,
    /// A webhook's secret is wrong or missing (HTTP 401, gRPC
    /// `UNAUTHENTICATED`).
    Unauthenticated,
    /// Not allowed at all, e.g. a webhook for a repository registered
    /// without a secret (HTTP 403, gRPC `PERMISSION_DENIED`).
    Forbidden,
    /// Understood but cannot be done, e.g. a commit with no pipeline
    /// (HTTP 422, gRPC `FAILED_PRECONDITION`).
    Unprocessable,
    /// A repository could not be fetched (HTTP 502, gRPC `UNAVAILABLE`).
    BadGateway,
    /// A request body over [`MAX_BODY_BYTES`] (HTTP 413, gRPC
    /// `RESOURCE_EXHAUSTED`).
    TooLarge,
    /// Something failed on the server (HTTP 500, gRPC `INTERNAL`).
    Internal,
}

/// A failed API call: its kind and the message both APIs give.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct ApiError {
    /// What kind of failure.
    pub kind: ErrorKind,
    /// The readable message.
    pub message: String,
}

impl ApiError {
    pub(crate) fn new(kind: ErrorKind, message: impl Into<String>) -> ApiError {
        ApiError {
            kind,
            message: message.into(),
        }
    }

    fn bad(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorKind::BadRequest, message)
    }

    fn internal(message: impl std::fmt::Display) -> ApiError {
        ApiError::new(ErrorKind::Internal, message.to_string())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status = match self.kind {
            ErrorKind::NotFound => StatusCode::NOT_FOUND,
            ErrorKind::BadRequest => StatusCode::BAD_REQUEST,
            ErrorKind::Conflict => StatusCode::CONFLICT,
            ErrorKind::Unavailable => StatusCode::SERVICE_UNAVAILABLE,
            ErrorKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
            ErrorKind::Gone => StatusCode::GONE,
            ErrorKind::Unauthenticated => StatusCode::UNAUTHORIZED,
            ErrorKind::Forbidden => StatusCode::FORBIDDEN,
            ErrorKind::Unprocessable => StatusCode::UNPROCESSABLE_ENTITY,
            ErrorKind::BadGateway => StatusCode::BAD_GATEWAY,
            ErrorKind::TooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        };
        (status, Json(serde_json::json!({ "error": self.message }))).into_response()
    }
}

impl From<RunError> for ApiError {
    fn from(e: RunError) -> ApiError {
        let kind = match &e {
            RunError::NoSuchPipeline(_) | RunError::NoSuchJob(..) => ErrorKind::NotFound,
            RunError::State(_) => ErrorKind::Conflict,
            RunError::Invalid(_) | RunError::NoPipeline(_) | RunError::Mask(_) => {
                ErrorKind::BadRequest
            }
            RunError::Stopped => ErrorKind::Unavailable,
            RunError::Store(_) | RunError::Source(_) | RunError::Other(_) => ErrorKind::Internal,
        };
        ApiError::new(kind, e.to_string())
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
        .route("/ci/v1/pipelines/{id}/jobs/{job}/retry", post(retry_one))
        .route("/ci/v1/pipelines/{id}/jobs/{job}/log", get(log))
        .route("/ci/v1/environments", get(environments))
        .route("/ci/v1/environments/{name}/stop", post(stop_environment))
        .with_state(handle)
}

/// A path parameter (axum's `Path`) that answers one that does not parse
/// with the API's JSON 400 instead of axum's plain text.
struct JsonPath<T>(T);

impl<S: Send + Sync, T: DeserializeOwned + Send> FromRequestParts<S> for JsonPath<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| JsonPath(value))
            .map_err(|e| ApiError::bad(bounded_message(&e.body_text())))
    }
}

/// Longest repository path or reference a trigger may name, in bytes
/// (Linux's `PATH_MAX`).
pub const MAX_TRIGGER_PATH_BYTES: usize = 4096;

/// The largest request body the API reads (axum's default limit).
pub const MAX_BODY_BYTES: usize = 2 * 1024 * 1024;

/// A request body (axum's `Bytes`, limited to [`MAX_BODY_BYTES`]) that
/// answers one too large or unreadable with the API's JSON error instead
/// of axum's plain text.
struct Body(axum::body::Bytes);

impl<S: Send + Sync> FromRequest<S> for Body {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        axum::body::Bytes::from_request(req, state)
            .await
            .map(Body)
            .map_err(|e| {
                if e.status() == StatusCode::PAYLOAD_TOO_LARGE {
                    ApiError::new(
                        ErrorKind::TooLarge,
                        format!(
                            "the request body is over the {MAX_BODY_BYTES} bytes this API reads"
                        ),
                    )
                } else {
                    ApiError::bad(bounded_message(&format!(
                        "cannot read the request body: {}",
                        e.body_text()
                    )))
                }
            })
    }
}

/// A query string (axum's `Query`) that answers one that does not parse
/// with the API's JSON 400 instead of axum's plain text.
struct JsonQuery<T>(T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for JsonQuery<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Query(value)| JsonQuery(value))
            .map_err(|e| ApiError::bad(bounded_message(&e.body_text())))
    }
}

async fn record(handle: &RunnerHandle, id: u64) -> Result<Arc<PipelineRecord>, ApiError> {
    handle
        .get(id)
        .await?
        .ok_or_else(|| RunError::NoSuchPipeline(id).into())
}

/// Which page of pipelines to list: `GET /ci/v1/pipelines?limit=&before=`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
pub struct ListQuery {
    /// How many at most ([`DEFAULT_LIST_LIMIT`] when absent; 1 to
    /// [`MAX_LIST_LIMIT`]).
    #[serde(default)]
    pub limit: Option<usize>,
    /// Only pipelines whose ids are below this one (the next page starts
    /// below the last id of this one).
    #[serde(default)]
    pub before: Option<u64>,
}

/// Pipelines, newest first: one page of at most `query.limit` below
/// `query.before`. A limit of 0 or above [`MAX_LIST_LIMIT`] is refused.
/// Read without the runner's loop, without copying any plan.
pub async fn list_pipelines(
    handle: &RunnerHandle,
    query: ListQuery,
) -> Result<Vec<PipelineSummary>, ApiError> {
    let limit = query.limit.unwrap_or(DEFAULT_LIST_LIMIT);
    if limit == 0 || limit > MAX_LIST_LIMIT {
        return Err(ApiError::bad(format!(
            "limit {limit} is out of range: give 1 to {MAX_LIST_LIMIT}"
        )));
    }
    Ok(handle
        .list_page(limit, query.before)
        .iter()
        .map(|rec| PipelineSummary::of(rec))
        .collect())
}

/// Pipeline `id` with its jobs.
pub async fn pipeline(handle: &RunnerHandle, id: u64) -> Result<PipelineView, ApiError> {
    let rec = record(handle, id).await?;
    let mut view = PipelineView::of(&rec);
    for job in &mut view.jobs {
        if let Some(child) = job.child_pipeline
            && let Some(child) = handle.get(child).await?
        {
            job.child_status = Some(child.status().as_str().to_string());
        }
    }
    if let Some(link) = rec.family.parent
        && let Some(parent) = &mut view.summary.parent
        && let Some(up) = handle.get(link.pipeline).await?
    {
        parent.job = up
            .plan
            .jobs
            .get(link.job)
            .map(|j| j.name.clone())
            .unwrap_or_default();
    }
    Ok(view)
}

/// Checks a trigger and runs the pipeline of its repository; returns the
/// new pipeline. Refused, with nothing created: a relative repository path,
/// `dirty` with `reference`, a variable name that is not one, a repository
/// or reference that cannot be read, no `.gitlab-ci.yml`, a pipeline file
/// with errors, a masked value that cannot be masked.
pub async fn trigger_pipeline(
    handle: &RunnerHandle,
    trigger: &Trigger,
) -> Result<PipelineView, ApiError> {
    let path = std::path::PathBuf::from(&trigger.repository);
    if !path.is_absolute() {
        return Err(ApiError::bad(format!(
            "repository {} must be an absolute path",
            quoted(&trigger.repository)
        )));
    }
    if trigger.repository.len() > MAX_TRIGGER_PATH_BYTES {
        return Err(ApiError::bad(format!(
            "repository {} is longer than {MAX_TRIGGER_PATH_BYTES} bytes",
            quoted(&trigger.repository)
        )));
    }
    if let Some(r) = &trigger.reference
        && (r.len() > MAX_TRIGGER_PATH_BYTES || r.chars().any(char::is_control))
    {
        return Err(ApiError::bad(format!(
            "reference {} must be at most {MAX_TRIGGER_PATH_BYTES} bytes without control characters",
            quoted(r)
        )));
    }
    if trigger.dirty && trigger.reference.is_some() {
        return Err(ApiError::bad("dirty and reference exclude each other"));
    }
    for v in &trigger.variables {
        if !crate::is_name(&v.name) {
            return Err(ApiError::bad(format!(
                "{} is not a variable name",
                quoted(&v.name)
            )));
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
    .map_err(ApiError::internal)?
    .map_err(|e| ApiError::bad(e.to_string()))?;
    let text = text.ok_or_else(|| {
        ApiError::bad(format!(
            "{} has no .gitlab-ci.yml",
            quoted(&trigger.repository)
        ))
    })?;
    let definition =
        String::from_utf8(text).map_err(|_| ApiError::bad(".gitlab-ci.yml is not UTF-8 text"))?;
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
    pipeline(handle, id).await
}

/// Cancels pipeline `id`; returns it as it is then.
pub async fn cancel_pipeline(handle: &RunnerHandle, id: u64) -> Result<PipelineView, ApiError> {
    handle.cancel(id).await?;
    pipeline(handle, id).await
}

/// Retries pipeline `id`'s failed and canceled jobs; returns it.
pub async fn retry_pipeline(handle: &RunnerHandle, id: u64) -> Result<PipelineView, ApiError> {
    handle.retry(id).await?;
    pipeline(handle, id).await
}

/// Retries job `job` of pipeline `id` (a new attempt of a job that has
/// ended; what its failure skipped waits for it again); returns the
/// pipeline. A job still to run or running is a [`ErrorKind::Conflict`].
pub async fn retry_job(
    handle: &RunnerHandle,
    id: u64,
    job: &str,
) -> Result<PipelineView, ApiError> {
    handle.retry_job(id, job).await?;
    pipeline(handle, id).await
}

/// Plays manual job `job` of pipeline `id`; returns the pipeline.
pub async fn play_job(handle: &RunnerHandle, id: u64, job: &str) -> Result<PipelineView, ApiError> {
    handle.play(id, job).await?;
    pipeline(handle, id).await
}

/// The log a viewer reads: one attempt of a job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogTarget {
    /// The job's index in the pipeline.
    pub job: usize,
    /// The attempt (from 1); 0 when the job has not started.
    pub attempt: usize,
    /// The stored log; `None` when the job has not started.
    pub path: Option<PathBuf>,
    /// The log will not grow: the attempt has ended (for the latest
    /// attempt, asked for without a number: the job has ended, or is a
    /// manual job not played) and its whole log is stored — its collection
    /// read both streams to their end, or gave up after repeated errors
    /// and ended the log with a line saying so (see
    /// [`RunnerHandle::is_log_whole`]).
    pub finished: bool,
}

/// Which log of job `job` of pipeline `id` a viewer reads: attempt
/// `attempt` (from 1), or the latest.
pub async fn log_target(
    handle: &RunnerHandle,
    id: u64,
    job: &str,
    attempt: Option<usize>,
) -> Result<LogTarget, ApiError> {
    let rec = record(handle, id).await?;
    let index = rec
        .state
        .find(job)
        .ok_or_else(|| RunError::NoSuchJob(id, job.to_string()))?;
    let state = &rec.state.jobs()[index];
    let (number, ended) = match attempt {
        None => (
            state.attempts.len(),
            state.status.is_finished() || state.status == JobStatus::Manual,
        ),
        Some(n) => {
            let ran = n
                .checked_sub(1)
                .and_then(|i| state.attempts.get(i))
                .ok_or_else(|| {
                    ApiError::new(
                        ErrorKind::NotFound,
                        format!(
                            "job {} of pipeline {id} has no attempt {n} (it has {})",
                            quoted(job),
                            state.attempts.len()
                        ),
                    )
                })?;
            (n, ran.end.is_some())
        }
    };
    if rec.expired.log_expired(index, number) {
        return Err(ApiError::new(
            ErrorKind::Gone,
            format!(
                "the log of job {} of pipeline {id} expired and was deleted",
                quoted(job)
            ),
        ));
    }
    let Some(task) = number.checked_sub(1).and_then(|i| state.attempts.get(i)) else {
        return Ok(LogTarget {
            job: index,
            attempt: 0,
            path: None,
            finished: ended,
        });
    };
    // Observed after the record: once this is true, the file holds the
    // whole log (or all of it that could be collected, and a line saying
    // the rest could not be).
    let whole = ended && handle.is_log_whole(id, index, number, &task.task_id).await;
    Ok(LogTarget {
        job: index,
        attempt: number,
        path: Some(handle.log_path(id, index, number)),
        finished: whole,
    })
}

/// What a viewer gets of `target`'s log from `offset`: at most `max`
/// bytes, masked (logs are stored masked), and, unless `full`, cut at the
/// runner's `max_log_bytes` with the marker line saying the whole log
/// `location` (e.g. `is at GET ...?full=true`).
pub async fn read_log(
    handle: &RunnerHandle,
    target: &LogTarget,
    offset: u64,
    full: bool,
    location: &str,
    max: u64,
) -> Result<Vec<u8>, ApiError> {
    let Some(path) = target.path.clone() else {
        return Ok(Vec::new());
    };
    let limit = if full {
        u64::MAX
    } else {
        handle.max_log_bytes()
    };
    let part = tokio::task::spawn_blocking(move || {
        super::log::read_part_at_most(&path, offset, limit, max)
    })
    .await
    .map_err(ApiError::internal)?
    .map_err(ApiError::internal)?;
    let finished = target.finished;
    Ok(part.into_bytes(|limit, total| super::log::marker_line(limit, total, finished, location)))
}

async fn list(
    State(handle): State<RunnerHandle>,
    JsonQuery(query): JsonQuery<ListQuery>,
) -> Result<Json<Vec<PipelineSummary>>, ApiError> {
    Ok(Json(list_pipelines(&handle, query).await?))
}

async fn trigger(
    State(handle): State<RunnerHandle>,
    Body(body): Body,
) -> Result<Json<PipelineView>, ApiError> {
    // Parsed here, not by axum's `Json`, so that every bad body (wrong
    // content type, not JSON, a field missing or of the wrong type) gets
    // the API's 400 with a JSON error.
    let trigger: Trigger = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body is not a pipeline trigger: {e}")))?;
    Ok(Json(trigger_pipeline(&handle, &trigger).await?))
}

async fn show(
    State(handle): State<RunnerHandle>,
    JsonPath(id): JsonPath<u64>,
) -> Result<Json<PipelineView>, ApiError> {
    Ok(Json(pipeline(&handle, id).await?))
}

async fn cancel(
    State(handle): State<RunnerHandle>,
    JsonPath(id): JsonPath<u64>,
) -> Result<Json<PipelineView>, ApiError> {
    Ok(Json(cancel_pipeline(&handle, id).await?))
}

async fn retry(
    State(handle): State<RunnerHandle>,
    JsonPath(id): JsonPath<u64>,
) -> Result<Json<PipelineView>, ApiError> {
    Ok(Json(retry_pipeline(&handle, id).await?))
}

async fn retry_one(
    State(handle): State<RunnerHandle>,
    JsonPath((id, job)): JsonPath<(u64, String)>,
) -> Result<Json<PipelineView>, ApiError> {
    Ok(Json(retry_job(&handle, id, &job).await?))
}

async fn environments(
    State(handle): State<RunnerHandle>,
) -> Result<Json<Vec<super::environments::EnvironmentView>>, ApiError> {
    super::environments::list_environments(&handle)
        .await
        .map(Json)
}

#[derive(Debug, serde::Deserialize)]
struct StopQuery {
    project: Option<String>,
}

async fn stop_environment(
    State(handle): State<RunnerHandle>,
    JsonPath(name): JsonPath<String>,
    JsonQuery(query): JsonQuery<StopQuery>,
) -> Result<Json<PipelineView>, ApiError> {
    super::environments::stop_environment(&handle, &name, query.project.as_deref())
        .await
        .map(Json)
}

async fn play(
    State(handle): State<RunnerHandle>,
    JsonPath((id, job)): JsonPath<(u64, String)>,
) -> Result<Json<PipelineView>, ApiError> {
    Ok(Json(play_job(&handle, id, &job).await?))
}

/// `?offset=N&full=true&attempt=N`.
#[derive(Debug, serde::Deserialize)]
struct LogQuery {
    #[serde(default)]
    offset: u64,
    /// The whole log, not cut at `max_log_bytes`.
    #[serde(default)]
    full: bool,
    /// This attempt's log (from 1), not the latest.
    #[serde(default)]
    attempt: Option<usize>,
}

async fn log(
    State(handle): State<RunnerHandle>,
    JsonPath((id, job)): JsonPath<(u64, String)>,
    axum::extract::OriginalUri(uri): axum::extract::OriginalUri,
    JsonQuery(query): JsonQuery<LogQuery>,
) -> Result<Response, ApiError> {
    let target = log_target(&handle, id, &job, query.attempt).await?;
    let headers = [
        (
            axum::http::header::CONTENT_TYPE,
            "text/plain; charset=utf-8",
        ),
        (
            axum::http::HeaderName::from_static("x-berth-job-finished"),
            if target.finished { "true" } else { "false" },
        ),
    ];
    let Some(path) = target.path.clone() else {
        return Ok((StatusCode::OK, headers, Vec::new()).into_response());
    };
    if query.full {
        // However long it is: streamed from the file.
        use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _};
        let mut file = match tokio::fs::File::open(&path).await {
            Ok(f) => f,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Ok((StatusCode::OK, headers, Vec::new()).into_response());
            }
            Err(e) => return Err(ApiError::internal(e)),
        };
        let len = file.metadata().await.map_err(ApiError::internal)?.len();
        file.seek(std::io::SeekFrom::Start(query.offset.min(len)))
            .await
            .map_err(ApiError::internal)?;
        let body = axum::body::Body::from_stream(tokio_util::io::ReaderStream::new(
            file.take(len.saturating_sub(query.offset)),
        ));
        return Ok((StatusCode::OK, headers, body).into_response());
    }
    let location = format!("is at GET {}?full=true", uri.path());
    let bytes = read_log(&handle, &target, query.offset, false, &location, u64::MAX).await?;
    Ok((StatusCode::OK, headers, bytes).into_response())
}

impl From<RepoError> for ApiError {
    fn from(e: RepoError) -> ApiError {
        let kind = match &e {
            RepoError::Invalid(_) => ErrorKind::BadRequest,
            RepoError::Duplicate { .. } => ErrorKind::Conflict,
            RepoError::NoSuchRepo(_) => ErrorKind::NotFound,
            RepoError::Unauthorized(_) => ErrorKind::Unauthenticated,
            RepoError::NoSecret(_) => ErrorKind::Forbidden,
            RepoError::NoPipeline { .. } => ErrorKind::Unprocessable,
            RepoError::Fetch(_) => ErrorKind::BadGateway,
            RepoError::Run(RunError::Stopped) => ErrorKind::Unavailable,
            RepoError::Store(_)
            | RepoError::Source(_)
            | RepoError::Run(_)
            | RepoError::Other(_) => ErrorKind::Internal,
        };
        ApiError::new(kind, e.to_string())
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
    Body(body): Body,
) -> Result<(StatusCode, Json<RepoView>), ApiError> {
    let new: NewRepo = serde_json::from_slice(&body)
        .map_err(|e| ApiError::bad(format!("the body is not a repository to add: {e}")))?;
    Ok((StatusCode::CREATED, Json(repos.add(new).await?)))
}

async fn show_repo(
    State(repos): State<Repos>,
    JsonPath(id): JsonPath<u64>,
) -> Result<Json<RepoView>, ApiError> {
    Ok(Json(repos.get(id).await?))
}

async fn remove_repo(
    State(repos): State<Repos>,
    JsonPath(id): JsonPath<u64>,
) -> Result<Json<RepoView>, ApiError> {
    Ok(Json(repos.remove(id).await?))
}

async fn hook(
    State(repos): State<Repos>,
    JsonPath(id): JsonPath<u64>,
    headers: axum::http::HeaderMap,
    Body(body): Body,
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
