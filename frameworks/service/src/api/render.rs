//! Marathon's JSON shapes of apps, tasks and deployments.

use serde_json::{Map, Value, json};

use super::backend::{AppStatus, DeploymentInfo, InstanceInfo, LastFailure};
use crate::app::AppId;
use crate::deploy::InstanceState;
use crate::state::{DeploymentId, OpOutcome};
use crate::time::Timestamp;

/// An app as GET /v2/apps renders it: the definition, `version`,
/// `versionInfo`, task counts and `deployments: [{"id"}]`.
pub(super) fn app(a: &AppStatus) -> Value {
    let mut v = a.version.to_marathon_json();
    if let Value::Object(m) = &mut v {
        m.insert("tasksStaged".into(), json!(a.counts.staged));
        m.insert("tasksRunning".into(), json!(a.counts.running));
        m.insert("tasksHealthy".into(), json!(a.counts.healthy));
        m.insert("tasksUnhealthy".into(), json!(a.counts.unhealthy));
        m.insert("deployments".into(), deployment_ids(a.deployment.as_ref()));
    }
    v
}

fn deployment_ids(d: Option<&DeploymentId>) -> Value {
    Value::Array(d.map(|d| json!({ "id": d.as_str() })).into_iter().collect())
}

/// Marathon's `{"deploymentId": …, "version": …}` after a change.
pub(super) fn deployment_result(o: &OpOutcome) -> Value {
    let version = o.current.as_ref().map_or(o.at, |v| v.version);
    json!({
        "deploymentId": o.deployment.as_ref().map(DeploymentId::as_str),
        "version": version.to_string(),
    })
}

fn ts(t: Timestamp) -> Value {
    json!(t.to_string())
}

/// A task as GET /v2/tasks renders it.
pub(super) fn task(i: &InstanceInfo) -> Value {
    let mut m = Map::new();
    m.insert("id".into(), json!(i.id));
    m.insert("appId".into(), json!(i.app.to_string()));
    m.insert("host".into(), json!(i.host));
    m.insert("slaveId".into(), json!(i.agent_id));
    m.insert("ports".into(), json!(i.ports));
    m.insert("servicePorts".into(), json!(i.service_ports));
    let state = match i.state {
        InstanceState::Staging => "TASK_STAGING",
        _ => "TASK_RUNNING",
    };
    m.insert("state".into(), json!(state));
    m.insert("stagedAt".into(), ts(i.staged_at));
    if let Some(s) = i.started_at {
        m.insert("startedAt".into(), ts(s));
    }
    m.insert("version".into(), ts(i.version));
    if let Some(h) = i.healthy {
        m.insert(
            "healthCheckResults".into(),
            json!([{ "alive": h, "taskId": i.id }]),
        );
    }
    m.insert("role".into(), json!("*"));
    Value::Object(m)
}

/// Marathon's `lastTaskFailure` of app `app`.
pub(super) fn last_failure(app: &AppId, f: &LastFailure) -> Value {
    json!({
        "appId": app.to_string(),
        "host": f.host,
        "message": f.task.message,
        "state": f.task.state.as_str_name(),
        "taskId": f.task.task_id,
        "timestamp": f.task.at.to_string(),
        "version": f.task.version.to_string(),
    })
}

/// A deployment as GET /v2/deployments renders it, with berth's own
/// progress under `berth`.
pub(super) fn deployment(d: &DeploymentInfo) -> Value {
    let action = match (d.from, d.to, d.view.strategy) {
        (None, _, _) => "StartApplication",
        (_, None, _) => "StopApplication",
        (_, _, "scale") => "ScaleApplication",
        _ => "RestartApplication",
    };
    let app = d.app.to_string();
    let version = d.to.unwrap_or(d.started_at);
    json!({
        "id": d.id.as_str(),
        "version": version.to_string(),
        "affectedApps": [app],
        "affectedPods": [],
        "steps": [{ "actions": [{ "action": action, "app": app }] }],
        "currentActions": [{ "action": action, "app": app, "readinessCheckResults": [] }],
        "currentStep": 1,
        "totalSteps": 1,
        "berth": {
            "cause": d.cause,
            "startedAt": d.started_at.to_string(),
            "strategy": d.view.strategy,
            "step": d.view.step,
            "stepIndex": d.view.step_index,
            "oldInstances": d.view.old_instances,
            "newInstances": d.view.new_instances,
            "oldHealthy": d.view.old_healthy,
            "newHealthy": d.view.new_healthy,
            "state": d.view.state,
            "why": d.view.why,
            "lastFailure": d.last_failure.as_deref().map(|f| last_failure(&d.app, f)),
        },
    })
}
