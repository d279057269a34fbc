//! The APIs' way into the running framework: every call is a [`Req`] sent
//! to the framework's task, which answers from its state (a change once it
//! is stored).

use tokio::sync::{mpsc, oneshot};

use crate::api::{BackendError, FrameworkInfo, JobsBackend};
use crate::job::JobId;
use crate::run::{Run, RunId};
use crate::state::{JobStatus, Op, Outcome};

/// A call of the API, with where to answer.
#[derive(Debug)]
pub enum Req {
    /// Every job.
    Jobs(oneshot::Sender<Vec<JobStatus>>),
    /// One job.
    Job(JobId, oneshot::Sender<Option<JobStatus>>),
    /// One run.
    Run(JobId, RunId, oneshot::Sender<Option<Run>>),
    /// An operation (boxed: a definition is large), answered once stored.
    Apply(Box<Op>, oneshot::Sender<Result<Outcome, BackendError>>),
    /// Who answers.
    Info(oneshot::Sender<FrameworkInfo>),
}

/// A [`JobsBackend`] that asks the running framework.
#[derive(Debug, Clone)]
pub struct Handle {
    tx: mpsc::Sender<Req>,
}

impl Handle {
    /// A handle sending to `tx`.
    #[must_use]
    pub fn new(tx: mpsc::Sender<Req>) -> Self {
        Handle { tx }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Req,
    ) -> Result<T, BackendError> {
        let (reply, rx) = oneshot::channel();
        let gone = || BackendError::Unavailable("the job framework is not running".into());
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}

impl JobsBackend for Handle {
    async fn jobs(&self) -> Result<Vec<JobStatus>, BackendError> {
        self.ask(Req::Jobs).await
    }

    async fn job(&self, id: JobId) -> Result<Option<JobStatus>, BackendError> {
        self.ask(|r| Req::Job(id, r)).await
    }

    async fn run(&self, job: JobId, run: RunId) -> Result<Option<Run>, BackendError> {
        self.ask(|r| Req::Run(job, run, r)).await
    }

    async fn apply(&self, op: Op) -> Result<Outcome, BackendError> {
        self.ask(|r| Req::Apply(Box::new(op), r)).await?
    }

    async fn info(&self) -> Result<FrameworkInfo, BackendError> {
        self.ask(Req::Info).await
    }
}
