//! The HTTP API's way into the running framework: every call is a
//! [`Req`] sent to the framework's task, which answers from its state (a
//! write once it is stored).

use tokio::sync::{mpsc, oneshot};

use crate::api::{
    AppStatus, BackendError, DeploymentInfo, FrameworkInfo, InstanceInfo, OneDeployment,
    ServiceBackend,
};
use crate::app::{AppId, AppVersion};
use crate::state::{DeploymentId, OpOutcome, PlanView, Request};

/// A call of the API, with where to answer.
#[derive(Debug)]
pub enum Req {
    /// Every app.
    Apps(oneshot::Sender<Vec<AppStatus>>),
    /// One app.
    App(AppId, oneshot::Sender<Option<AppStatus>>),
    /// An app's kept versions.
    Versions(AppId, oneshot::Sender<Option<Vec<AppVersion>>>),
    /// An operation, answered once stored.
    Apply(Request, oneshot::Sender<Result<OpOutcome, BackendError>>),
    /// What an operation would do.
    Plan(Request, oneshot::Sender<Result<PlanView, BackendError>>),
    /// Instances of one app or all.
    Instances(Option<AppId>, oneshot::Sender<Vec<InstanceInfo>>),
    /// The running deployments.
    Deployments(oneshot::Sender<Vec<DeploymentInfo>>),
    /// One deployment, running or finished.
    Deployment(DeploymentId, oneshot::Sender<Option<OneDeployment>>),
    /// Who answers.
    Info(oneshot::Sender<FrameworkInfo>),
}

/// A [`ServiceBackend`] that asks the running framework.
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
        let gone = || BackendError::Unavailable("the service framework is not running".into());
        self.tx.send(make(reply)).await.map_err(|_| gone())?;
        rx.await.map_err(|_| gone())
    }
}

impl ServiceBackend for Handle {
    async fn apps(&self) -> Result<Vec<AppStatus>, BackendError> {
        self.ask(Req::Apps).await
    }

    async fn app(&self, id: &AppId) -> Result<Option<AppStatus>, BackendError> {
        self.ask(|r| Req::App(id.clone(), r)).await
    }

    async fn versions(&self, id: &AppId) -> Result<Option<Vec<AppVersion>>, BackendError> {
        self.ask(|r| Req::Versions(id.clone(), r)).await
    }

    async fn apply(&self, req: Request) -> Result<OpOutcome, BackendError> {
        self.ask(|r| Req::Apply(req, r)).await?
    }

    async fn plan(&self, req: Request) -> Result<PlanView, BackendError> {
        self.ask(|r| Req::Plan(req, r)).await?
    }

    async fn instances(&self, app: Option<&AppId>) -> Result<Vec<InstanceInfo>, BackendError> {
        self.ask(|r| Req::Instances(app.cloned(), r)).await
    }

    async fn deployments(&self) -> Result<Vec<DeploymentInfo>, BackendError> {
        self.ask(Req::Deployments).await
    }

    async fn deployment(&self, id: &DeploymentId) -> Result<Option<OneDeployment>, BackendError> {
        self.ask(|r| Req::Deployment(id.clone(), r)).await
    }

    async fn info(&self) -> Result<FrameworkInfo, BackendError> {
        self.ask(Req::Info).await
    }
}
