//! One step of an app's deployment, carried out on the instances: the
//! planner ([`crate::deploy::step`]) says what to do, this applies it to
//! [`Instances`] and returns what the caller keeps (the new plan, the
//! router's split, whether it ended). Pure.

use std::collections::BTreeMap;

use crate::deploy::{self, Action, Deployment, RouterStats, State};
use crate::run::instances::Instances;
use crate::time::Timestamp;

/// How an app's traffic is split while a deployment runs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Traffic {
    /// Percent per config version; empty: every healthy instance alike.
    pub weights: BTreeMap<Timestamp, u8>,
    /// A version served alone on a preview port (blue/green).
    pub preview: Option<(Timestamp, u16)>,
}

/// What one step did.
#[derive(Clone, Debug, PartialEq)]
pub struct Steered {
    /// The deployment after the step.
    pub deployment: Deployment,
    /// Whether the planner changed anything (plan, instances, traffic).
    pub changed: bool,
    /// Set when the deployment ended with this state.
    pub ended: Option<State>,
    /// What happened worth telling (roll-backs, failures), in order.
    pub events: Vec<String>,
}

/// Steps `deployment` of `app` once: creates the instances it launches
/// (ids from `new_id`), kills or drains those it removes, and moves the
/// app's `traffic` as it says.
pub fn steer(
    app: &str,
    deployment: &Deployment,
    instances: &mut Instances,
    traffic: &mut Traffic,
    stats: &RouterStats,
    new_id: &mut dyn FnMut() -> String,
    now: Timestamp,
) -> Steered {
    let observed = instances.planner_view(app);
    let (next, actions) = deploy::step(deployment, &observed, stats, now);
    let mut out = Steered {
        changed: next != *deployment || !actions.is_empty(),
        deployment: next,
        ended: None,
        events: Vec::new(),
    };
    for action in actions {
        match action {
            Action::Launch { version, count } => {
                let ids: Vec<String> = (0..count).map(|_| new_id()).collect();
                instances.create(app, version, &ids, now);
            }
            Action::Kill { instance, drain } => instances.kill(&instance, drain, now),
            Action::SetWeights(w) => traffic.weights = w,
            Action::Switch { to_version } => {
                traffic.weights = [(to_version, 100)].into();
            }
            Action::Preview { version, port } => traffic.preview = Some((version, port)),
            Action::RollBack { to_version, why } => {
                out.events
                    .push(format!("rolling back to version {to_version}: {why}"));
            }
            Action::Finished => {
                traffic.weights.clear();
                traffic.preview = None;
                out.ended = Some(out.deployment.state.clone());
            }
            Action::Failed { why } => {
                out.events.push(format!("deployment failed: {why}"));
                out.ended = Some(out.deployment.state.clone());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
