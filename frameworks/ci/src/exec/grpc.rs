//! The CI framework's gRPC API, `berth.ci.v1.Ci` (`proto/proto/ci.proto`):
//! the twin of the HTTP/JSON API in [`super::api`], on top of the same
//! [`RunnerHandle`]. Every call goes through the operations of
//! [`super::api`] (the views built from the stored record, the trigger's
//! validation, which log a viewer reads and what of it) and converts their
//! result into messages, so both APIs show the same thing and refuse the
//! same input with the same message.
//!
//! | RPC | HTTP twin |
//! |---|---|
//! | `ListPipelines` | `GET /ci/v1/pipelines` |
//! | `GetPipeline` | `GET /ci/v1/pipelines/{id}` |
//! | `TriggerPipeline` | `POST /ci/v1/pipelines` |
//! | `CancelPipeline` | `POST /ci/v1/pipelines/{id}/cancel` |
//! | `RetryPipeline` | `POST /ci/v1/pipelines/{id}/retry` |
//! | `PlayJob` | `POST /ci/v1/pipelines/{id}/jobs/{job}/play` |
//! | `RetryJob` | `POST /ci/v1/pipelines/{id}/jobs/{job}/retry` |
//! | `FollowJobLog` (server stream) | `GET /ci/v1/pipelines/{id}/jobs/{job}/log?offset=N` polled |
//!
//! Errors: [`ErrorKind`] `NotFound` → `NOT_FOUND`, `BadRequest` →
//! `INVALID_ARGUMENT`, `Conflict` → `FAILED_PRECONDITION`, `Unavailable` →
//! `UNAVAILABLE`, `Internal` → `INTERNAL`, and `Gone` (a log the expiry
//! sweep deleted, HTTP 410) → `NOT_FOUND` (the job's `log_expired` says
//! why); see [`status`].
//!
//! `FollowJobLog` follows one attempt (the latest when none is given,
//! waiting for the first while the job has not started): it sends the
//! log from the offset in chunks of at most [`CHUNK`] bytes as it grows,
//! cut at `max_log_bytes` with the same marker line as the HTTP log unless
//! `full`, and ends once the attempt has ended and its whole log was sent.
//! When the server shuts down (the `shutdown` token given to [`router`]
//! is cancelled) an open stream ends at once with `UNAVAILABLE`, so that
//! a follower does not hold the server's graceful shutdown.
//!
//! [`router`] serves it as axum routes, to merge with the HTTP API's on
//! one port (gRPC is HTTP/2; `axum::serve` speaks both).

use std::pin::Pin;
use std::time::Duration;

use berth_sdk::proto::ci::v1 as pb;
use futures::Stream;
use tokio_util::sync::CancellationToken;
use tonic::{Code, Request, Response, Status};

use super::api::{self, ApiError, ErrorKind, JobView, PipelineSummary, PipelineView, Trigger};
use super::environments::{self, Deployment, EnvironmentView};
use super::runner::RunnerHandle;
use crate::reports::TestSummary;

/// Largest piece of a log in one `JobLogChunk`.
pub const CHUNK: u64 = 64 * 1024;

/// How often a followed log is read again while it does not change.
const POLL: Duration = Duration::from_millis(200);

/// Where the marker line of a cut log says the whole log is.
const FULL_LOG: &str = "is sent by FollowJobLog with full = true";

/// Implements `berth.ci.v1.Ci` over a runner.
#[derive(Debug, Clone)]
pub struct CiService {
    handle: RunnerHandle,
    shutdown: CancellationToken,
}

impl CiService {
    /// The service of the runner behind `handle`; its log streams end
    /// when `shutdown` is cancelled.
    pub fn new(handle: RunnerHandle, shutdown: CancellationToken) -> CiService {
        CiService { handle, shutdown }
    }
}

/// The gRPC API as axum routes (`/berth.ci.v1.Ci/*`), to merge with the
/// HTTP API's routes and serve on the same port. Cancel `shutdown` when
/// the server starts its graceful shutdown: open `FollowJobLog` streams
/// then end (with `UNAVAILABLE`) instead of keeping it waiting.
pub fn router(handle: RunnerHandle, shutdown: CancellationToken) -> axum::Router {
    use tonic::server::NamedService as _;
    type Server = pb::ci_server::CiServer<CiService>;
    axum::Router::new().route_service(
        &format!("/{}/{{*rest}}", Server::NAME),
        Server::new(CiService::new(handle, shutdown)),
    )
}

/// What an open log stream gets when the server shuts down.
fn shutting_down() -> Status {
    Status::unavailable("the CI framework is shutting down; follow the log again once it is back")
}

/// The gRPC status of an API error: its kind's code, its message (cut to
/// what a gRPC trailer carries, `berth_proto::bounded_status`). A log
/// the expiry sweep deleted (HTTP 410 Gone) is `NOT_FOUND`: gRPC has no
/// "gone", and the job's `log_expired` tells it from an unknown job.
pub fn status(e: ApiError) -> Status {
    let code = match e.kind {
        ErrorKind::NotFound => Code::NotFound,
        ErrorKind::BadRequest => Code::InvalidArgument,
        ErrorKind::Conflict => Code::FailedPrecondition,
        ErrorKind::Unavailable | ErrorKind::BadGateway => Code::Unavailable,
        ErrorKind::Internal => Code::Internal,
        ErrorKind::Gone => Code::NotFound,
        ErrorKind::Unauthenticated => Code::Unauthenticated,
        ErrorKind::Forbidden => Code::PermissionDenied,
        ErrorKind::Unprocessable => Code::FailedPrecondition,
        ErrorKind::TooLarge => Code::ResourceExhausted,
    };
    berth_proto::bounded_status(Status::new(code, e.message))
}

fn summary_message(s: &PipelineSummary) -> pb::PipelineSummary {
    pb::PipelineSummary {
        id: s.id,
        project: s.project.clone(),
        ref_name: s.ref_name.clone(),
        sha: s.sha.clone(),
        source: s.source.clone(),
        status: s.status.clone(),
        warnings: s.warnings,
        created_ms: s.created_ms,
        finished_ms: s.finished_ms,
        auto_canceled_by: s.auto_canceled_by,
        source_expired: s.source_expired,
        parent_pipeline: s.parent.as_ref().map(|p| p.pipeline),
        parent_job: s.parent.as_ref().map(|p| p.job.clone()),
        children: s.children.clone(),
    }
}

fn job_message(j: &JobView) -> pb::Job {
    pb::Job {
        name: j.name.clone(),
        stage: j.stage.clone(),
        status: j.status.clone(),
        attempts: u32::try_from(j.attempts).unwrap_or(u32::MAX),
        failure_reason: j.failure_reason.clone(),
        message: j.message.clone(),
        exit_code: j.exit_code,
        allow_failure: j.allow_failure,
        manual: j.manual,
        waiting_for_resource: j.waiting_for_resource,
        interruptible: j.interruptible,
        resource_group: j.resource_group.clone(),
        artifacts_expired: j.artifacts_expired,
        log_expired: j.log_expired,
        stuck: j.stuck.clone(),
        child_pipeline: j.child_pipeline,
        child_status: j.child_status.clone(),
        tests: j.tests.as_ref().map(tests_message),
        coverage: j.coverage,
        dotenv: j.dotenv.clone(),
        report_notices: j.report_notices.clone(),
        environment: j.environment.as_ref().map(|e| pb::JobEnvironment {
            name: e.name.clone(),
            url: e.url.clone(),
            action: e.action.clone(),
            on_stop: e.on_stop.clone(),
        }),
    }
}

fn tests_message(t: &TestSummary) -> pb::TestSummary {
    pb::TestSummary {
        total: t.total,
        passed: t.passed,
        failed: t.failed,
        errored: t.errored,
        skipped: t.skipped,
        failures: t
            .failures
            .iter()
            .map(|f| pb::FailedTest {
                name: f.name.clone(),
                message: f.message.clone(),
                errored: f.errored,
            })
            .collect(),
    }
}

fn deployment_message(d: &Deployment) -> pb::Deployment {
    pb::Deployment {
        pipeline: d.pipeline,
        job: d.job.clone(),
        sha: d.sha.clone(),
        ref_name: d.ref_name.clone(),
        finished_ms: d.finished_ms,
        url: d.url.clone(),
    }
}

fn environment_message(e: &EnvironmentView) -> pb::EnvironmentInfo {
    pb::EnvironmentInfo {
        name: e.name.clone(),
        project: e.project.clone(),
        project_key: e.project_key.clone(),
        state: e.state.clone(),
        last_deployment: e.last_deployment.as_ref().map(deployment_message),
        stopped_by: e.stopped_by.as_ref().map(deployment_message),
        stop_job: e.stop_job.clone(),
    }
}

/// The message of a pipeline view (the view is built from the record once,
/// by [`PipelineView::of`], for both APIs).
pub fn pipeline_message(view: &PipelineView) -> pb::Pipeline {
    pb::Pipeline {
        summary: Some(summary_message(&view.summary)),
        stages: view.stages.clone(),
        jobs: view.jobs.iter().map(job_message).collect(),
        tests: view.tests.as_ref().map(tests_message),
        coverage: view.coverage,
    }
}

fn reply(view: Result<PipelineView, ApiError>) -> Result<Response<pb::Pipeline>, Status> {
    view.map(|v| Response::new(pipeline_message(&v)))
        .map_err(status)
}

type LogStream = Pin<Box<dyn Stream<Item = Result<pb::JobLogChunk, Status>> + Send>>;

#[tonic::async_trait]
impl pb::ci_server::Ci for CiService {
    async fn list_environments(
        &self,
        _request: Request<pb::ListEnvironmentsRequest>,
    ) -> Result<Response<pb::ListEnvironmentsResponse>, Status> {
        let all = environments::list_environments(&self.handle)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListEnvironmentsResponse {
            environments: all.iter().map(environment_message).collect(),
        }))
    }

    async fn stop_environment(
        &self,
        request: Request<pb::StopEnvironmentRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        let req = request.into_inner();
        reply(environments::stop_environment(&self.handle, &req.name, req.project.as_deref()).await)
    }

    async fn list_pipelines(
        &self,
        request: Request<pb::ListPipelinesRequest>,
    ) -> Result<Response<pb::ListPipelinesResponse>, Status> {
        let req = request.into_inner();
        // Proto3 zeros: no limit given (the default), no `before`.
        let query = api::ListQuery {
            limit: (req.limit != 0).then_some(req.limit as usize),
            before: (req.before != 0).then_some(req.before),
        };
        let all = api::list_pipelines(&self.handle, query)
            .await
            .map_err(status)?;
        Ok(Response::new(pb::ListPipelinesResponse {
            pipelines: all.iter().map(summary_message).collect(),
        }))
    }

    async fn get_pipeline(
        &self,
        request: Request<pb::GetPipelineRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        reply(api::pipeline(&self.handle, request.into_inner().id).await)
    }

    async fn trigger_pipeline(
        &self,
        request: Request<pb::TriggerPipelineRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        let req = request.into_inner();
        let trigger = Trigger {
            repository: req.repository,
            reference: req.reference,
            dirty: req.dirty,
            variables: req
                .variables
                .into_iter()
                .map(|v| api::TriggerVariable {
                    name: v.name,
                    value: v.value,
                    masked: v.masked,
                })
                .collect(),
        };
        reply(api::trigger_pipeline(&self.handle, &trigger).await)
    }

    async fn cancel_pipeline(
        &self,
        request: Request<pb::CancelPipelineRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        reply(api::cancel_pipeline(&self.handle, request.into_inner().id).await)
    }

    async fn retry_pipeline(
        &self,
        request: Request<pb::RetryPipelineRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        reply(api::retry_pipeline(&self.handle, request.into_inner().id).await)
    }

    async fn play_job(
        &self,
        request: Request<pb::PlayJobRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        let req = request.into_inner();
        reply(api::play_job(&self.handle, req.pipeline, &req.job).await)
    }

    async fn retry_job(
        &self,
        request: Request<pb::RetryJobRequest>,
    ) -> Result<Response<pb::Pipeline>, Status> {
        let req = request.into_inner();
        reply(api::retry_job(&self.handle, req.pipeline, &req.job).await)
    }

    type FollowJobLogStream = LogStream;

    async fn follow_job_log(
        &self,
        request: Request<pb::FollowJobLogRequest>,
    ) -> Result<Response<Self::FollowJobLogStream>, Status> {
        let req = request.into_inner();
        let attempt = req.attempt.map(|a| a as usize);
        // An unknown pipeline, job or attempt fails the call itself.
        api::log_target(&self.handle, req.pipeline, &req.job, attempt)
            .await
            .map_err(status)?;
        let follow = Follow {
            shutdown: self.shutdown.clone(),
            changes: self.handle.changes(),
            handle: self.handle.clone(),
            pipeline: req.pipeline,
            job: req.job,
            attempt,
            offset: req.offset,
            full: req.full,
            done: false,
        };
        let stream = futures::stream::unfold(follow, |mut follow| async move {
            let item = follow.next().await?;
            Some((item, follow))
        });
        Ok(Response::new(Box::pin(stream)))
    }
}

/// One `FollowJobLog` in progress.
struct Follow {
    handle: RunnerHandle,
    /// Cancelled when the server shuts down: the stream ends.
    shutdown: CancellationToken,
    changes: tokio::sync::watch::Receiver<u64>,
    pipeline: u64,
    job: String,
    /// The attempt followed; `None` until the job has one.
    attempt: Option<usize>,
    offset: u64,
    full: bool,
    done: bool,
}

impl Follow {
    /// The next chunk; `None` once the attempt has ended and everything
    /// was sent.
    async fn next(&mut self) -> Option<Result<pb::JobLogChunk, Status>> {
        while !self.done {
            if self.shutdown.is_cancelled() {
                self.done = true;
                return Some(Err(shutting_down()));
            }
            let target =
                match api::log_target(&self.handle, self.pipeline, &self.job, self.attempt).await {
                    Ok(target) => target,
                    Err(e) => {
                        self.done = true;
                        return Some(Err(status(e)));
                    }
                };
            if target.attempt > 0 {
                // Follow this attempt to its end, even if a retry starts.
                self.attempt = Some(target.attempt);
            }
            // `finished` was observed before the read: when it is true,
            // this read reaches the end of the whole log.
            let data = match api::read_log(
                &self.handle,
                &target,
                self.offset,
                self.full,
                FULL_LOG,
                CHUNK,
            )
            .await
            {
                Ok(data) => data,
                Err(e) => {
                    self.done = true;
                    return Some(Err(status(e)));
                }
            };
            if !data.is_empty() {
                let chunk = pb::JobLogChunk {
                    attempt: u32::try_from(target.attempt).unwrap_or(u32::MAX),
                    offset: self.offset,
                    data,
                };
                self.offset += chunk.data.len() as u64;
                return Some(Ok(chunk));
            }
            if target.finished {
                self.done = true;
                break;
            }
            // Wait for the log to grow or the pipeline to change (a log cut
            // back by a resumed collection grows again: read again then).
            tokio::select! {
                () = self.shutdown.cancelled() => {}
                () = tokio::time::sleep(POLL) => {}
                changed = self.changes.changed() => {
                    if changed.is_err() {
                        // The runner stopped; the next read says so.
                        tokio::time::sleep(POLL).await;
                    }
                }
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipeline_summary_says_what_the_http_view_says() {
        let view = PipelineSummary {
            id: 7,
            project: "app".into(),
            ref_name: "main".into(),
            sha: "a".repeat(40),
            source: "push".into(),
            status: "success".into(),
            warnings: true,
            created_ms: 1,
            finished_ms: Some(2),
            auto_canceled_by: Some(9),
            source_expired: true,
            parent: Some(super::super::api::ParentView {
                pipeline: 3,
                job: "kid".into(),
            }),
            children: vec![8],
        };
        let message = summary_message(&view);
        assert_eq!(message.id, 7);
        assert_eq!(message.parent_pipeline, Some(3));
        assert_eq!(message.parent_job.as_deref(), Some("kid"));
        assert_eq!(message.children, [8]);
        assert!(message.warnings && message.source_expired);
        assert_eq!(message.finished_ms, Some(2));
        assert_eq!(message.auto_canceled_by, Some(9));
        let fresh = summary_message(&PipelineSummary {
            source_expired: false,
            ..view
        });
        assert!(!fresh.source_expired);
    }

    #[test]
    fn a_job_message_says_what_the_http_view_says() {
        let view = JobView {
            name: "build".into(),
            stage: "test".into(),
            status: "success".into(),
            attempts: 2,
            failure_reason: None,
            message: String::new(),
            exit_code: Some(0),
            allow_failure: false,
            interruptible: true,
            resource_group: Some("prod".into()),
            artifacts_expired: true,
            log_expired: true,
            manual: false,
            waiting_for_resource: false,
            tests: None,
            coverage: Some(83.5),
            dotenv: vec!["VERSION".into()],
            report_notices: Vec::new(),
            environment: None,
            stuck: Some("This job is stuck because no agent has the tags [gpu]".into()),
            child_pipeline: Some(4),
            child_status: Some("failed".into()),
        };
        let message = job_message(&view);
        assert_eq!(message.coverage, Some(83.5));
        assert_eq!(message.dotenv, ["VERSION"]);
        assert!(
            message
                .stuck
                .as_deref()
                .is_some_and(|s| s.contains("[gpu]"))
        );
        assert_eq!(message.child_pipeline, Some(4));
        assert_eq!(message.child_status.as_deref(), Some("failed"));
        assert!(message.artifacts_expired);
        assert!(message.log_expired);
        assert_eq!(message.attempts, 2);
        assert_eq!(message.resource_group.as_deref(), Some("prod"));
        let fresh = job_message(&JobView {
            artifacts_expired: false,
            log_expired: false,
            ..view
        });
        assert!(!fresh.artifacts_expired && !fresh.log_expired);
    }

    #[test]
    fn an_expired_log_is_not_found() {
        let gone = status(ApiError {
            kind: ErrorKind::Gone,
            message: "the log expired".into(),
        });
        assert_eq!(gone.code(), Code::NotFound);
        assert_eq!(gone.message(), "the log expired");
    }
}
