//! The job framework's gRPC API, `berth.jobs.v1.Jobs`
//! (`proto/proto/berth/jobs/v1/jobs.proto`): the twin of the HTTP API in
//! [`super`], over the same [`JobsBackend`], served on the same port
//! ([`router`] gives axum routes to merge with [`super::router`]'s; gRPC
//! is HTTP/2, and `axum::serve` speaks both).
//!
//! | RPC | HTTP twin |
//! |---|---|
//! | `ListJobs` | `GET /v1/jobs?embed=activeRuns,schedules,historySummary` (`include_history`: `history`) |
//! | `GetJob` | `GET /v1/jobs/{id}` with the same embeds |
//! | `CreateJob` | `POST /v1/jobs` |
//! | `UpdateJob` | `PUT /v1/jobs/{id}` (the definition's `id` names the job) |
//! | `RemoveJob` | `DELETE /v1/jobs/{id}?stopCurrentJobRuns=` |
//! | `StartRun` | `POST /v1/jobs/{id}/runs` |
//! | `GetRun` | `GET /v1/jobs/{id}/runs/{runId}` |
//! | `KillRun` | `POST /v1/jobs/{id}/runs/{runId}/actions/stop` |
//! | `ListRuns` | `GET /v1/jobs/{id}/runs` (`include_history`: the finished runs too) |
//! | `PutSchedule` | `POST /v1/jobs/{id}/schedules`, or `PUT .../schedules/{scheduleId}` when it exists |
//! | `RemoveSchedule` | `DELETE /v1/jobs/{id}/schedules/{scheduleId}` |
//!
//! Definitions travel as text (JSON or YAML), read and checked as the HTTP
//! API reads a body (`api/text.rs`). Times are milliseconds since the
//! epoch. Errors ([`convert::status`]): an invalid definition or argument
//! → `INVALID_ARGUMENT` (the message names each field by its path), an
//! unknown job, run or schedule → `NOT_FOUND`, the framework's 409s →
//! `ALREADY_EXISTS` for a creation (a job, a schedule) and
//! `FAILED_PRECONDITION` otherwise (active runs, a run not active), the
//! backend unavailable → `UNAVAILABLE`.

use std::sync::Arc;

use berth_proto::jobs::v1 as pb;
use berth_scheduler_core::error::quoted;
use tonic::{Request, Response, Status};

use super::{JobsBackend, MAX_BODY_BYTES, text};
use crate::job::{JobDef, JobId, ParseError};
use crate::run::RunId;
use crate::state::{JobStatus, Op, OpError, Outcome};

pub mod convert;

#[cfg(test)]
mod tests;

pub use convert::status;
use convert::{Creation, op_status};

/// Implements `berth.jobs.v1.Jobs` over a backend.
#[derive(Debug)]
pub struct JobsApi<B> {
    backend: Arc<B>,
}

impl<B> Clone for JobsApi<B> {
    fn clone(&self) -> Self {
        JobsApi {
            backend: self.backend.clone(),
        }
    }
}

impl<B: JobsBackend> JobsApi<B> {
    /// The API of `backend`.
    pub fn new(backend: Arc<B>) -> JobsApi<B> {
        JobsApi { backend }
    }
}

/// The gRPC API as axum routes (`/berth.jobs.v1.Jobs/*`), to merge with
/// the HTTP API's routes and serve on the same port.
pub fn router<B: JobsBackend>(backend: Arc<B>) -> axum::Router {
    use tonic::server::NamedService as _;
    type Server<B> = pb::jobs_server::JobsServer<JobsApi<B>>;
    axum::Router::new().route_service(
        &format!("/{}/{{*rest}}", Server::<B>::NAME),
        Server::new(JobsApi::new(backend)),
    )
}

fn invalid(m: &str) -> Status {
    berth_proto::bounded_status(Status::invalid_argument(m))
}

/// A job id from a request.
fn job_id(s: &str) -> Result<JobId, Status> {
    JobId::new(s).map_err(|why| invalid(&format!("invalid job id {}: {why}", quoted(s))))
}

/// A definition's text as JSON values: size and syntax checked, as the
/// HTTP API checks a body.
fn definition(d: Option<pb::Definition>) -> Result<serde_json::Value, Status> {
    let d = d.unwrap_or_default();
    if d.text.len() > MAX_BODY_BYTES {
        return Err(invalid(&format!(
            "the definition is larger than {MAX_BODY_BYTES} bytes"
        )));
    }
    let yaml = match pb::DefinitionFormat::try_from(d.format) {
        Ok(pb::DefinitionFormat::Unspecified | pb::DefinitionFormat::Json) => false,
        Ok(pb::DefinitionFormat::Yaml) => true,
        Err(_) => {
            return Err(invalid(&format!("unknown definition format {}", d.format)));
        }
    };
    text::parse(&d.text, yaml).map_err(|e| match e {
        ParseError::Invalid(i) => op_status(i.into(), Creation::No),
        other => invalid(&other.to_string()),
    })
}

type Reply<T> = Result<Response<T>, Status>;

impl<B: JobsBackend> JobsApi<B> {
    /// The job `id`, or `NOT_FOUND`.
    async fn existing(&self, id: &str) -> Result<JobStatus, Status> {
        let id = job_id(id)?;
        self.backend
            .job(id.clone())
            .await
            .map_err(|e| status(e, Creation::No))?
            .ok_or_else(|| {
                op_status(
                    OpError::NotFound(format!("Job '{id}' does not exist")),
                    Creation::No,
                )
            })
    }

    async fn apply(&self, op: Op) -> Result<Outcome, Status> {
        let creation = match op {
            Op::Create(_) | Op::AddSchedule(..) => Creation::Yes,
            _ => Creation::No,
        };
        self.backend
            .apply(op)
            .await
            .map_err(|e| status(e, creation))
    }

    async fn job_change(&self, op: Op) -> Reply<pb::Job> {
        match self.apply(op).await? {
            Outcome::Job(j) => Ok(Response::new(convert::job(&j, false))),
            _ => Err(unexpected("a job's change")),
        }
    }

    async fn run_change(&self, op: Op) -> Reply<pb::Run> {
        match self.apply(op).await? {
            Outcome::Run(r) => Ok(Response::new(convert::run(&r))),
            _ => Err(unexpected("a run's change")),
        }
    }
}

fn unexpected(what: &str) -> Status {
    Status::internal(format!("the framework answered {what} with something else"))
}

fn invalid_def(e: crate::error::Invalid) -> Status {
    op_status(e.into(), Creation::No)
}

#[tonic::async_trait]
impl<B: JobsBackend> pb::jobs_server::Jobs for JobsApi<B> {
    async fn list_jobs(
        &self,
        request: Request<pb::ListJobsRequest>,
    ) -> Reply<pb::ListJobsResponse> {
        let history = request.into_inner().include_history;
        let mut jobs = self
            .backend
            .jobs()
            .await
            .map_err(|e| status(e, Creation::No))?;
        jobs.sort_by(|x, y| x.def.id.cmp(&y.def.id));
        Ok(Response::new(pb::ListJobsResponse {
            jobs: jobs.iter().map(|j| convert::job(j, history)).collect(),
        }))
    }

    async fn get_job(&self, request: Request<pb::GetJobRequest>) -> Reply<pb::Job> {
        let req = request.into_inner();
        let j = self.existing(&req.job_id).await?;
        Ok(Response::new(convert::job(&j, req.include_history)))
    }

    async fn create_job(&self, request: Request<pb::CreateJobRequest>) -> Reply<pb::Job> {
        let v = definition(request.into_inner().definition)?;
        let def = JobDef::from_value(&v).map_err(invalid_def)?;
        self.job_change(Op::Create(def)).await
    }

    async fn update_job(&self, request: Request<pb::UpdateJobRequest>) -> Reply<pb::Job> {
        let v = definition(request.into_inner().definition)?;
        let op = text::update(None, v).map_err(invalid_def)?;
        self.job_change(op).await
    }

    async fn remove_job(
        &self,
        request: Request<pb::RemoveJobRequest>,
    ) -> Reply<pb::RemoveJobResponse> {
        let req = request.into_inner();
        let op = Op::Remove {
            id: job_id(&req.job_id)?,
            stop_runs: req.stop_current_job_runs,
        };
        match self.apply(op).await? {
            Outcome::Removed => Ok(Response::new(pb::RemoveJobResponse {})),
            _ => Err(unexpected("a job's removal")),
        }
    }

    async fn start_run(&self, request: Request<pb::StartRunRequest>) -> Reply<pb::Run> {
        let id = job_id(&request.into_inner().job_id)?;
        self.run_change(Op::StartRun(id)).await
    }

    async fn get_run(&self, request: Request<pb::GetRunRequest>) -> Reply<pb::Run> {
        let req = request.into_inner();
        let id = job_id(&req.job_id)?;
        let found = self
            .backend
            .run(id.clone(), RunId(req.run_id.clone()))
            .await
            .map_err(|e| status(e, Creation::No))?;
        match found {
            Some(r) => Ok(Response::new(convert::run(&r))),
            None => Err(op_status(
                OpError::NotFound(format!(
                    "Run {} of job '{id}' does not exist",
                    quoted(&req.run_id)
                )),
                Creation::No,
            )),
        }
    }

    async fn kill_run(&self, request: Request<pb::KillRunRequest>) -> Reply<pb::Run> {
        let req = request.into_inner();
        let id = job_id(&req.job_id)?;
        self.run_change(Op::KillRun(id, RunId(req.run_id))).await
    }

    async fn list_runs(
        &self,
        request: Request<pb::ListRunsRequest>,
    ) -> Reply<pb::ListRunsResponse> {
        let req = request.into_inner();
        let j = self.existing(&req.job_id).await?;
        let finished = if req.include_history {
            j.history.iter().map(convert::run).collect()
        } else {
            Vec::new()
        };
        Ok(Response::new(pb::ListRunsResponse {
            active: j.active.iter().map(convert::run).collect(),
            finished,
        }))
    }

    async fn put_schedule(
        &self,
        request: Request<pb::PutScheduleRequest>,
    ) -> Reply<pb::PutScheduleResponse> {
        let req = request.into_inner();
        let j = self.existing(&req.job_id).await?;
        let v = definition(req.definition)?;
        let s = text::schedule(None, v).map_err(invalid_def)?;
        // Replaced when it exists; a schedule added meanwhile by another
        // client makes the addition ALREADY_EXISTS, not a silent replace.
        let created = !j.def.schedules.iter().any(|x| x.id == s.id);
        let op = if created {
            Op::AddSchedule(j.def.id.clone(), s)
        } else {
            Op::ReplaceSchedule(j.def.id.clone(), s)
        };
        let Outcome::Schedule(s) = self.apply(op).await? else {
            return Err(unexpected("a schedule's change"));
        };
        let now = self.backend.job(j.def.id.clone()).await.ok().flatten();
        Ok(Response::new(pb::PutScheduleResponse {
            schedule: Some(convert::schedule(&s, now.as_ref())),
            created,
        }))
    }

    async fn remove_schedule(
        &self,
        request: Request<pb::RemoveScheduleRequest>,
    ) -> Reply<pb::RemoveScheduleResponse> {
        let req = request.into_inner();
        let id = job_id(&req.job_id)?;
        match self.apply(Op::RemoveSchedule(id, req.schedule_id)).await? {
            Outcome::ScheduleRemoved => Ok(Response::new(pb::RemoveScheduleResponse {})),
            _ => Err(unexpected("a schedule's removal")),
        }
    }
}
