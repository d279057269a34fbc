//! [`ServiceBackend`]: what the HTTP API needs of the framework. The
//! runtime implements it over the running framework (persist, then
//! answer); [`super::InMemory`] implements it over a
//! [`crate::state::Services`] held in memory, as the reference behaviour.

use std::future::Future;

use crate::app::{AppId, AppVersion};
use crate::deploy::{DeploymentView, Instance, InstanceState, Target};
use crate::error::OpError;
use crate::run::instances::TaskFailure;
use crate::state::{
    AppState, Cause, DeploymentId, FinishedDeployment, OpOutcome, PlanView, Request,
    RunningDeployment, Services,
};
use crate::time::Timestamp;

/// Why the backend could not answer.
#[derive(Debug, thiserror::Error)]
pub enum BackendError {
    /// The operation was refused; nothing changed (Marathon's status, see
    /// [`OpError::status`]).
    #[error(transparent)]
    Op(#[from] OpError),
    /// The framework cannot answer now: not the active instance, storage
    /// failed (HTTP 503). The message is shown to the client.
    #[error("{0}")]
    Unavailable(String),
}

/// Instance counts of an app, as Marathon's `tasksStaged` & co.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TaskCounts {
    /// Launched, not running yet.
    pub staged: u32,
    /// Running (healthy or not).
    pub running: u32,
    /// Running and passing health checks.
    pub healthy: u32,
    /// Running and failing health checks.
    pub unhealthy: u32,
}

/// An app as GET /v2/apps shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppStatus {
    /// The current version.
    pub version: AppVersion,
    /// The running deployment.
    pub deployment: Option<DeploymentId>,
    /// Its instances, counted.
    pub counts: TaskCounts,
    /// Its last failed attempt (Marathon's `lastTaskFailure`).
    pub last_failure: Option<LastFailure>,
}

/// An app's last failed attempt, with where it ran.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LastFailure {
    /// The failure.
    pub task: TaskFailure,
    /// The agent's host name (empty if unknown).
    pub host: String,
}

/// One instance, as GET /v2/tasks shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct InstanceInfo {
    /// The instance's (task's) id.
    pub id: String,
    /// Its app.
    pub app: AppId,
    /// The agent's host name (empty while staging).
    pub host: String,
    /// The agent's id (empty while staging).
    pub agent_id: String,
    /// Host ports, in the app's port order.
    pub ports: Vec<u16>,
    /// The app's service ports.
    pub service_ports: Vec<u16>,
    /// Its state.
    pub state: InstanceState,
    /// Health: `None` when the app has no health checks.
    pub healthy: Option<bool>,
    /// The config version it runs.
    pub version: Timestamp,
    /// When it was launched.
    pub staged_at: Timestamp,
    /// When it started running.
    pub started_at: Option<Timestamp>,
}

/// A running deployment, as GET /v2/deployments shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DeploymentInfo {
    /// Its id.
    pub id: DeploymentId,
    /// Its app.
    pub app: AppId,
    /// What started it.
    pub cause: Cause,
    /// The version it goes from.
    pub from: Option<Timestamp>,
    /// The version it goes to (`None`: removal).
    pub to: Option<Timestamp>,
    /// When it started.
    pub started_at: Timestamp,
    /// Where it stands, over the observed instances.
    pub view: DeploymentView,
    /// The app's last failed attempt since the deployment started: why
    /// it may be waiting (boxed: rarely there).
    pub last_failure: Option<Box<LastFailure>>,
}

/// Who answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FrameworkInfo {
    /// The framework id the master gave, once subscribed.
    pub framework_id: Option<String>,
    /// Whether this instance is the active one.
    pub elected: bool,
    /// The active instance's HTTP address, if known.
    pub leader: Option<String>,
}

/// The framework as the HTTP API sees it. Every method may fail with
/// [`BackendError::Unavailable`]; `apply` persists before it answers.
pub trait ServiceBackend: Send + Sync + 'static {
    /// The apps (not those being removed), by id.
    fn apps(&self) -> impl Future<Output = Result<Vec<AppStatus>, BackendError>> + Send;

    /// One app; `None` when unknown (or being removed).
    fn app(
        &self,
        id: &AppId,
    ) -> impl Future<Output = Result<Option<AppStatus>, BackendError>> + Send;

    /// An app's kept versions, oldest first; `None` when the app is
    /// unknown.
    fn versions(
        &self,
        id: &AppId,
    ) -> impl Future<Output = Result<Option<Vec<AppVersion>>, BackendError>> + Send;

    /// Applies an operation: checked, persisted, then answered.
    fn apply(&self, req: Request) -> impl Future<Output = Result<OpOutcome, BackendError>> + Send;

    /// What an operation would do; changes nothing.
    fn plan(&self, req: Request) -> impl Future<Output = Result<PlanView, BackendError>> + Send;

    /// Instances of one app, or of all apps.
    fn instances(
        &self,
        app: Option<&AppId>,
    ) -> impl Future<Output = Result<Vec<InstanceInfo>, BackendError>> + Send;

    /// The running deployments.
    fn deployments(&self)
    -> impl Future<Output = Result<Vec<DeploymentInfo>, BackendError>> + Send;

    /// One deployment, running or finished (while its app keeps it in its
    /// history); `None` when unknown.
    fn deployment(
        &self,
        id: &DeploymentId,
    ) -> impl Future<Output = Result<Option<OneDeployment>, BackendError>> + Send;

    /// Who answers.
    fn info(&self) -> impl Future<Output = Result<FrameworkInfo, BackendError>> + Send;
}

/// An app as GET /v2/apps shows it, its instances counted from
/// `observed` (the planner's view of them).
#[must_use]
pub fn app_status(st: &AppState, observed: &[Instance]) -> AppStatus {
    let mut counts = TaskCounts::default();
    let target = Target::of(&st.current);
    for i in observed {
        if i.state == InstanceState::Staging {
            counts.staged += 1;
            continue;
        }
        counts.running += 1;
        if target.health_checks {
            if target.healthy(i) {
                counts.healthy += 1;
            } else {
                counts.unhealthy += 1;
            }
        }
    }
    AppStatus {
        version: st.current.clone(),
        deployment: st.deployment.as_ref().map(|d| d.id.clone()),
        counts,
        last_failure: None,
    }
}

/// A running deployment as GET /v2/deployments shows it, at `now`.
#[must_use]
pub fn deployment_info(
    st: &AppState,
    d: &RunningDeployment,
    observed: &[Instance],
    now: Timestamp,
) -> DeploymentInfo {
    DeploymentInfo {
        id: d.id.clone(),
        app: st.id().clone(),
        cause: d.cause,
        from: d.from,
        to: d.to,
        started_at: d.started_at,
        view: d.plan.view(observed, now),
        last_failure: None,
    }
}

/// One deployment, as `GET /v2/deployments/{id}` (berth's) shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum OneDeployment {
    /// Still running.
    Running(DeploymentInfo),
    /// Ended, with how.
    Finished(FinishedDeployment),
}

/// Deployment `id` among `services`' running ones and their histories;
/// `observed` gives an app's instances, for a running one's view.
pub fn find_deployment(
    services: &Services,
    id: &DeploymentId,
    observed: impl Fn(&AppState) -> Vec<Instance>,
    now: Timestamp,
) -> Option<OneDeployment> {
    if let Some((st, d)) = services.deployment(id) {
        return Some(OneDeployment::Running(deployment_info(
            st,
            d,
            &observed(st),
            now,
        )));
    }
    services
        .all()
        .flat_map(|st| st.history.iter())
        .find(|f| f.id == *id)
        .cloned()
        .map(OneDeployment::Finished)
}
