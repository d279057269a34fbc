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

/// Keeps an app without a running deployment at its instance count, as
/// Marathon's scale check does: creates the slots missing (of its current
/// config `version`) or kills the extra ones (`youngest_first` or oldest
/// first, those not running first). Returns whether anything changed.
pub fn keep_count(
    app: &str,
    version: Timestamp,
    wanted: u32,
    youngest_first: bool,
    instances: &mut Instances,
    new_id: &mut dyn FnMut() -> String,
    now: Timestamp,
) -> bool {
    let mut live: Vec<(String, bool, Timestamp)> = instances
        .of_app(app)
        .filter(|(_, s)| s.killing.is_none())
        .map(|(id, s)| {
            let running = s.run.as_ref().is_some_and(|r| r.healthy_since.is_some());
            (id.clone(), running, s.created_at)
        })
        .collect();
    let have = u32::try_from(live.len()).unwrap_or(u32::MAX);
    if have < wanted {
        let ids: Vec<String> = (have..wanted).map(|_| new_id()).collect();
        instances.create(app, version, &ids, now);
        return true;
    }
    if have > wanted {
        // Not running first, then by age as killSelection says.
        live.sort_by(|a, b| {
            // Ids break ties of age: a later id is younger.
            let age = if youngest_first {
                (b.2, &b.0).cmp(&(a.2, &a.0))
            } else {
                (a.2, &a.0).cmp(&(b.2, &b.0))
            };
            a.1.cmp(&b.1).then(age)
        });
        for (id, _, _) in live.into_iter().take((have - wanted) as usize) {
            instances.kill(&id, true, now);
        }
        return true;
    }
    false
}
