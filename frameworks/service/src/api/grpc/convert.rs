//! The messages of `berth.service.v1` built from the backend's views, and
//! the gRPC status of its errors.

use berth_proto::service::v1 as pb;
use tonic::{Code, Status};

use crate::api::{
    AppStatus, BackendError, DeploymentInfo, InstanceInfo, LastFailure, OneDeployment,
};
use crate::app::AppVersion;
use crate::deploy::{DeploymentView, InstanceState, State};
use crate::error::OpError;
use crate::state::{Cause, DeploymentId, Effect, FinishedDeployment, OpOutcome, Outcome, PlanView};
use crate::time::Timestamp;

/// The gRPC code of a refused operation (see the module docs of
/// [`super`]).
#[must_use]
pub fn op_code(e: &OpError) -> Code {
    match e {
        OpError::Invalid(_) => Code::InvalidArgument,
        OpError::UnknownApp(_) | OpError::UnknownVersion { .. } | OpError::UnknownDeployment(_) => {
            Code::NotFound
        }
        OpError::Exists(_) => Code::AlreadyExists,
        OpError::Locked { .. } | OpError::DependedOn { .. } | OpError::NotPaused { .. } => {
            Code::FailedPrecondition
        }
        OpError::DuplicateDeploymentId(_) => Code::Internal,
    }
}

/// The gRPC status of a backend error, its message cut to what a trailer
/// carries. An invalid definition's message names every field by its
/// path (`invalid app definition: /instances: ...; /cmd: ...`), an
/// unknown version its request field (`/version: App ...`).
#[must_use]
pub fn status(e: BackendError) -> Status {
    let s = match e {
        BackendError::Op(op @ OpError::UnknownVersion { .. }) => {
            Status::new(op_code(&op), format!("/version: {op}"))
        }
        BackendError::Op(op) => Status::new(op_code(&op), op.to_string()),
        BackendError::Unavailable(m) => Status::unavailable(m),
    };
    berth_proto::bounded_status(s)
}

/// A refused operation's status.
pub(super) fn op_status(e: OpError) -> Status {
    status(BackendError::Op(e))
}

fn ts(t: Timestamp) -> String {
    t.to_string()
}

fn count(n: usize) -> u32 {
    u32::try_from(n).unwrap_or(u32::MAX)
}

pub(super) fn app(a: &AppStatus) -> pb::App {
    pb::App {
        id: a.version.definition.id.to_string(),
        version: ts(a.version.version),
        definition_json: a.version.to_marathon_json().to_string(),
        instances: a.version.definition.instances,
        tasks_staged: a.counts.staged,
        tasks_running: a.counts.running,
        tasks_healthy: a.counts.healthy,
        tasks_unhealthy: a.counts.unhealthy,
        deployment_id: a.deployment.as_ref().map(|d| d.as_str().to_owned()),
        last_task_failure: a.last_failure.as_ref().map(task_failure),
    }
}

fn task_failure(f: &LastFailure) -> pb::TaskFailure {
    pb::TaskFailure {
        task_id: f.task.task_id.clone(),
        host: f.host.clone(),
        state: f.task.state.as_str_name().to_owned(),
        message: f.task.message.clone(),
        version: ts(f.task.version),
        timestamp: ts(f.task.at),
    }
}

pub(super) fn app_version(v: &AppVersion) -> pb::AppVersion {
    pb::AppVersion {
        app_id: v.definition.id.to_string(),
        version: ts(v.version),
        definition_json: v.to_marathon_json().to_string(),
    }
}

fn effect(e: Effect) -> pb::Effect {
    match e {
        // Progress and Finish are the runtime's own steps, never the
        // answer to a caller's change: shown as "nothing changed".
        Effect::None | Effect::Progress | Effect::Finish => pb::Effect::None,
        Effect::Start => pb::Effect::Start,
        Effect::Scale => pb::Effect::Scale,
        Effect::Restart => pb::Effect::Restart,
        Effect::Stop => pb::Effect::Stop,
        Effect::Promote => pb::Effect::Promote,
        Effect::Cancel => pb::Effect::Cancel,
        Effect::Drop => pb::Effect::Drop,
    }
}

pub(super) fn change(o: &OpOutcome) -> pb::ChangeResult {
    pb::ChangeResult {
        app_id: o.app.to_string(),
        effect: effect(o.effect) as i32,
        version: ts(o.current.as_ref().map_or(o.at, |v| v.version)),
        deployment_id: o.deployment.as_ref().map(|d| d.as_str().to_owned()),
        ended_deployment_id: o.ended.as_ref().map(|d| d.as_str().to_owned()),
    }
}

pub(super) fn plan(p: &PlanView) -> pb::Plan {
    pb::Plan {
        app_id: p.app.clone(),
        effect: effect(p.effect) as i32,
        new_version: p.new_version.clone(),
        changed_fields: p.changed_fields.clone(),
        strategy: p.strategy.map(str::to_owned),
        steps: p.steps.clone(),
        instances_started: p.instances_started,
        instances_stopped: p.instances_stopped,
        cancels: p.cancels.as_ref().map(|d| d.as_str().to_owned()),
    }
}

fn cause(c: Cause) -> pb::Cause {
    match c {
        Cause::Add => pb::Cause::Add,
        Cause::Update => pb::Cause::Update,
        Cause::Scale => pb::Cause::Scale,
        Cause::Restart => pb::Cause::Restart,
        Cause::Rollback => pb::Cause::Rollback,
        Cause::Remove => pb::Cause::Remove,
        Cause::Revert => pb::Cause::Revert,
    }
}

fn progress(v: &DeploymentView, last_failure: Option<&LastFailure>) -> pb::Progress {
    let (state, why) = match &v.state {
        State::Running => (pb::ProgressState::Running, None),
        State::Paused => (pb::ProgressState::Paused, None),
        State::Succeeded => (pb::ProgressState::Succeeded, None),
        State::Failed(w) => (pb::ProgressState::Failed, Some(w.clone())),
        State::RolledBack(w) => (pb::ProgressState::RolledBack, Some(w.clone())),
    };
    pb::Progress {
        strategy: v.strategy.to_owned(),
        step_index: count(v.step_index),
        step: v.step.clone(),
        old_instances: count(v.old_instances),
        new_instances: count(v.new_instances),
        old_healthy: count(v.old_healthy),
        new_healthy: count(v.new_healthy),
        state: state as i32,
        why: why.or_else(|| v.why.clone()),
        last_failure: last_failure.map(task_failure),
    }
}

pub(super) fn running(d: &DeploymentInfo) -> pb::Deployment {
    pb::Deployment {
        id: d.id.as_str().to_owned(),
        app_id: d.app.to_string(),
        cause: cause(d.cause) as i32,
        from_version: d.from.map(ts),
        to_version: d.to.map(ts),
        started_at: ts(d.started_at),
        progress: Some(progress(&d.view, d.last_failure.as_deref())),
        finished: None,
    }
}

fn id_text(d: &DeploymentId) -> String {
    d.as_str().to_owned()
}

pub(super) fn finished(f: &FinishedDeployment) -> pb::Deployment {
    let (state, why, by) = match &f.result {
        Outcome::Succeeded => (pb::OutcomeState::Succeeded, None, None),
        Outcome::Failed { why } => (pb::OutcomeState::Failed, Some(why.clone()), None),
        Outcome::RolledBack { why } => (pb::OutcomeState::RolledBack, Some(why.clone()), None),
        Outcome::Superseded { by } => (pb::OutcomeState::Superseded, None, Some(id_text(by))),
        Outcome::Cancelled { by } => (pb::OutcomeState::Cancelled, None, by.as_ref().map(id_text)),
    };
    pb::Deployment {
        id: id_text(&f.id),
        app_id: String::new(),
        cause: cause(f.cause) as i32,
        from_version: f.from.map(ts),
        to_version: f.to.map(ts),
        started_at: ts(f.started_at),
        progress: None,
        finished: Some(pb::Finished {
            finished_at: ts(f.finished_at),
            state: state as i32,
            why,
            by,
        }),
    }
}

pub(super) fn deployment(d: &OneDeployment) -> pb::Deployment {
    match d {
        OneDeployment::Running(d) => running(d),
        OneDeployment::Finished(f) => finished(f),
    }
}

pub(super) fn instance(i: &InstanceInfo) -> pb::Instance {
    let state = match i.state {
        InstanceState::Staging => pb::InstanceState::Staging,
        InstanceState::Running => pb::InstanceState::Running,
        InstanceState::Healthy => pb::InstanceState::Healthy,
        InstanceState::Ready => pb::InstanceState::Ready,
    };
    pb::Instance {
        id: i.id.clone(),
        app_id: i.app.to_string(),
        host: i.host.clone(),
        agent_id: i.agent_id.clone(),
        ports: i.ports.iter().map(|&p| u32::from(p)).collect(),
        service_ports: i.service_ports.iter().map(|&p| u32::from(p)).collect(),
        state: state as i32,
        healthy: i.healthy,
        version: ts(i.version),
        staged_at: ts(i.staged_at),
        started_at: i.started_at.map(ts),
    }
}
