//! [`JobsBackend`]: what the HTTP and gRPC APIs need of the framework. The
//! running framework implements it (`serve::handle`: store, then answer).

use std::future::Future;

use crate::job::JobId;
use crate::run::{Run, RunId};
use crate::state::{JobStatus, Op, OpError, Outcome};

/// Why the backend could not answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The operation was refused; nothing changed (see
    /// [`OpError::status`]).
    #[error(transparent)]
    Op(#[from] OpError),
    /// The framework cannot answer now: not the active instance, storage
    /// failed (HTTP 503). The message is shown to the client.
    #[error("{0}")]
    Unavailable(String),
}

/// Who answers (`GET /v1/info`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameworkInfo {
    /// The framework id, once subscribed.
    pub framework_id: Option<String>,
    /// This instance's API address.
    pub address: Option<String>,
}

/// The framework as the APIs see it.
pub trait JobsBackend: Send + Sync + 'static {
    /// Every job.
    fn jobs(&self) -> impl Future<Output = Result<Vec<JobStatus>, BackendError>> + Send;

    /// One job.
    fn job(
        &self,
        id: JobId,
    ) -> impl Future<Output = Result<Option<JobStatus>, BackendError>> + Send;

    /// One run of a job, active or kept in its history; `Ok(None)` when
    /// the job or the run is unknown.
    fn run(
        &self,
        job: JobId,
        run: RunId,
    ) -> impl Future<Output = Result<Option<Run>, BackendError>> + Send;

    /// Applies an operation, answering once it is stored.
    fn apply(&self, op: Op) -> impl Future<Output = Result<Outcome, BackendError>> + Send;

    /// Who answers.
    fn info(&self) -> impl Future<Output = Result<FrameworkInfo, BackendError>> + Send;

    /// The paths of the secrets stored (never their values).
    fn secret_paths(&self) -> impl Future<Output = Result<Vec<String>, BackendError>> + Send;
}
