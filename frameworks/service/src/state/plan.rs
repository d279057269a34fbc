//! [`PlanView`]: what an operation would do (`berth service plan FILE`, as
//! `nomad job plan`), computed from the [`Applied`] without committing it.

use std::collections::BTreeSet;

use serde::Serialize;
use serde_json::Value;

use super::{Applied, DeploymentId, Effect};
use crate::app::{AppDefinition, CanaryStep, Strategy};
use crate::time::Timestamp;

/// What an operation would do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PlanView {
    /// The app.
    pub app: String,
    /// What would change.
    pub effect: Effect,
    /// The version it would make, if it makes one.
    pub new_version: Option<String>,
    /// Top-level fields of the definition that would change (Marathon
    /// names), sorted.
    pub changed_fields: Vec<String>,
    /// The deployment's strategy (`rolling`, `blueGreen`, `canary`,
    /// `scale`, `stop`), if it starts one.
    pub strategy: Option<&'static str>,
    /// The deployment's steps, in order.
    pub steps: Vec<String>,
    /// Instances the deployment would start (from the definitions; what
    /// runs may differ).
    pub instances_started: u32,
    /// Instances it would stop.
    pub instances_stopped: u32,
    /// The running deployment it would cancel.
    pub cancels: Option<DeploymentId>,
}

pub(super) fn view(a: &Applied) -> PlanView {
    let o = &a.outcome;
    let before = a.before.as_ref().filter(|b| !b.removing());
    let run = a
        .after
        .as_ref()
        .and_then(|s| s.deployment.as_ref())
        .filter(|d| o.deployment.as_ref() == Some(&d.id));
    let before_def = before.map(|b| &b.current.definition);
    let after_def = a
        .after
        .as_ref()
        .filter(|s| !s.removing())
        .map(|s| &s.current.definition);
    let (mut started, mut stopped) = (0, 0);
    let (mut strategy, mut steps) = (None, Vec::new());
    if let Some(run) = run {
        let from_n = run.plan.from.as_ref().map_or(0, |t| t.instances);
        let to_n = run.plan.to.as_ref().map_or(0, |t| t.instances);
        let view = run.plan.view(&[], Timestamp(0));
        strategy = Some(view.strategy);
        match (&run.plan.from, &run.plan.to) {
            (Some(f), Some(t)) if f.version == t.version => {
                started = to_n.saturating_sub(from_n);
                stopped = from_n.saturating_sub(to_n);
            }
            _ => {
                started = to_n;
                stopped = from_n;
            }
        }
        steps = match (view.strategy, after_def) {
            ("canary", Some(d)) | ("blueGreen", Some(d)) => strategy_steps(d),
            _ => vec![view.step],
        };
    }
    PlanView {
        app: o.app.to_string(),
        effect: o.effect,
        new_version: o
            .current
            .as_ref()
            .filter(|_| o.new_version)
            .map(|v| v.version.to_string()),
        changed_fields: changed_fields(before_def, after_def),
        strategy,
        steps,
        instances_started: started,
        instances_stopped: stopped,
        cancels: o.ended.clone(),
    }
}

fn strategy_steps(d: &AppDefinition) -> Vec<String> {
    match &d.deployment.strategy {
        Strategy::Canary(c) => c
            .steps
            .iter()
            .map(|s| match s {
                CanaryStep::Weight(w) => format!("weight {w}"),
                CanaryStep::Pause(Some(p)) => format!("pause {}s", p.as_secs()),
                CanaryStep::Pause(None) => "pause until promoted".to_string(),
            })
            .collect(),
        Strategy::BlueGreen(bg) => {
            let mut v = vec!["launch the new version".to_string()];
            if let Some(p) = bg.preview_port {
                v.push(format!("preview on port {p} until promoted"));
            }
            v.push("switch traffic".into());
            v.push(format!("keep the old version {}s", bg.keep_old.as_secs()));
            v.push("stop the old version".into());
            v
        }
        Strategy::Rolling => vec!["replace instances".into()],
    }
}

fn changed_fields(a: Option<&AppDefinition>, b: Option<&AppDefinition>) -> Vec<String> {
    let obj = |d: Option<&AppDefinition>| match d.map(AppDefinition::to_marathon_json) {
        Some(Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    };
    let (a, b) = (obj(a), obj(b));
    let keys: BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    keys.into_iter()
        .filter(|k| a.get(*k) != b.get(*k))
        .cloned()
        .collect()
}
