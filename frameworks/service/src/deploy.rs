//! The deployment planner: a pure state machine that takes an app from
//! version A (with its running instances) to version B.
//!
//! [`step`]`(plan, observed, router_stats, now) -> (plan', actions)` is
//! called whenever something changed (an instance's state, router
//! statistics, a timer); it reads no clock and does no IO. The runtime
//! executes the [`Action`]s.
//!
//! ## The runtime's contract
//!
//! - `Launch { version, count }` creates `count` instance slots of
//!   `version`. The runtime keeps each slot running (relaunching a failed
//!   one with the app's backoff) until it is killed, and reports it in
//!   `observed` from then on (`Staging` until it runs).
//! - `Kill { instance, drain }` removes that slot: with `drain` the router
//!   stops sending it new requests and the kill waits for in-flight ones.
//!   The instance stays in `observed` until its task has ended.
//! - An instance's `version` is the config version it runs
//!   ([`crate::app::AppVersion::config_version`]); a scale-only change keeps
//!   it.
//! - `SetWeights` / `Switch` tell the router how to split an app's traffic
//!   between versions; without weights (rolling deployments) the router
//!   spreads over all healthy instances. After `Finished` the weights may
//!   be dropped: only one version is left.
//! - Health: an instance counts as healthy in state `Healthy` or `Ready`,
//!   or `Running` when its version has no health checks; a new instance
//!   counts toward the deployment once it has been healthy (and `Ready`,
//!   when the version has readiness checks) for `minHealthySeconds`, from
//!   `healthy_since`.
//!
//! ## Strategies
//!
//! - **Rolling** (`rolling.rs`): Marathon's `TaskReplaceActor`:
//!   `minHealthy = ceil(instances × minimumHealthCapacity)`,
//!   `maxCapacity = floor(instances × (1 + maximumOverCapacity))`; kill
//!   `healthy − minHealthy` old instances at once (unhealthy ones first),
//!   plus any beyond `instances`; when `minHealthy == maxCapacity` allow one
//!   extra instance; launch while old + started < maxCapacity; every new
//!   instance that counts lets one more old instance go. berth adds a
//!   guard: a healthy instance is never killed if that would leave fewer
//!   than `minHealthy` healthy (or fewer than were healthy at the start,
//!   when that was already below `minHealthy`; Marathon relies on its
//!   counters instead);
//!   the kill budget is recomputed every step as `healthy − minHealthy`
//!   (Marathon computes it once), so an old instance that recovers lets
//!   the plan go on; and an unhealthy old instance is killed when capacity
//!   blocks a launch (Marathon decommissions old instances that fail).
//!   The progress deadline restarts whenever a new instance counts; past
//!   it, with `autoRevert`, the plan becomes a rolling deployment back to A
//!   (`RollBack` first), else it fails. A revert that misses its deadline
//!   fails.
//! - **Scale / start / stop** (`rolling.rs`): launch or kill the
//!   difference (kill order: unhealthy first, then `killSelection`).
//! - **Blue/green** (`bluegreen.rs`) and **canary** (`canary.rs`): see
//!   those modules.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::app::{AppVersion, Fraction, KillSelection, Strategy};
use crate::time::Timestamp;

mod bluegreen;
mod canary;
mod rolling;

#[cfg(test)]
mod tests;

/// The lifecycle state of an instance, as the runtime observes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub enum InstanceState {
    /// Launched, not yet running (waiting for an offer, pulling, starting).
    Staging,
    /// Running; not (or no longer) passing its health checks.
    Running,
    /// Running and passing its health checks.
    Healthy,
    /// Healthy and passing its readiness checks.
    Ready,
}

/// One instance of the app, of any version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Instance {
    /// The instance's id.
    pub id: String,
    /// The config version it runs.
    pub version: Timestamp,
    /// Its state.
    pub state: InstanceState,
    /// Since when it has been healthy (and ready, with readiness checks)
    /// without interruption; `None` when it is not.
    pub healthy_since: Option<Timestamp>,
    /// When it was launched (for `killSelection`).
    pub launched_at: Timestamp,
    /// The agent it runs on (empty while staging).
    pub agent: String,
}

/// The router's measurements of one version over the last analysis
/// interval.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStats {
    /// Requests answered (or failed).
    pub requests: u64,
    /// Errors: 5xx answers, connection failures, timeouts.
    pub errors: u64,
    /// The 99th percentile latency, if there were requests.
    pub p99: Option<Duration>,
}

/// The router's measurements, per config version.
pub type RouterStats = BTreeMap<Timestamp, VersionStats>;

/// What the runtime should do.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Action {
    /// Create `count` more instances of `version`.
    Launch {
        /// The config version.
        version: Timestamp,
        /// How many.
        count: u32,
    },
    /// Remove one instance; with `drain`, after its in-flight requests.
    Kill {
        /// The instance's id.
        instance: String,
        /// Drain it through the router first.
        drain: bool,
    },
    /// Split the app's traffic: percent per version (summing to 100).
    SetWeights(BTreeMap<Timestamp, u8>),
    /// Send all traffic to `to_version`, atomically.
    Switch {
        /// The version to serve.
        to_version: Timestamp,
    },
    /// Serve `version` alone on the preview `port` (blue/green).
    Preview {
        /// The version to preview.
        version: Timestamp,
        /// The preview port.
        port: u16,
    },
    /// The deployment is going back to `to_version`.
    RollBack {
        /// The stable version.
        to_version: Timestamp,
        /// Why.
        why: String,
    },
    /// The deployment ended (see [`DeploymentView::state`] for how).
    Finished,
    /// The deployment failed and stopped where it was.
    Failed {
        /// Why.
        why: String,
    },
}

/// What the planner needs of one app version.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Target {
    /// The config version instances carry.
    pub version: Timestamp,
    /// `instances`.
    pub instances: u32,
    /// `minimumHealthCapacity` (parts per million).
    pub minimum_health_capacity: u32,
    /// `maximumOverCapacity` (parts per million).
    pub maximum_over_capacity: u32,
    /// Whether it has health checks.
    pub health_checks: bool,
    /// Whether it has readiness checks.
    pub readiness_checks: bool,
    /// `killSelection`: youngest first?
    pub youngest_first: bool,
    /// `minHealthySeconds`.
    pub min_healthy: Duration,
    /// `progressDeadlineSeconds` (`None`: no deadline).
    pub progress_deadline: Option<Duration>,
    /// `autoRevert`.
    pub auto_revert: bool,
}

impl Target {
    /// The planner's view of an app version.
    pub fn of(v: &AppVersion) -> Target {
        let d = &v.definition;
        Target {
            version: v.config_version(),
            instances: d.instances,
            minimum_health_capacity: d.upgrade_strategy.minimum_health_capacity.ppm(),
            maximum_over_capacity: d.upgrade_strategy.maximum_over_capacity.ppm(),
            health_checks: !d.health_checks.is_empty(),
            readiness_checks: !d.readiness_checks.is_empty(),
            youngest_first: d.kill_selection == KillSelection::YoungestFirst,
            min_healthy: d.deployment.min_healthy,
            progress_deadline: d.deployment.progress_deadline,
            auto_revert: d.deployment.auto_revert,
        }
    }

    /// Whether `i` (of this version) passes its health checks.
    pub fn healthy(&self, i: &Instance) -> bool {
        match i.state {
            InstanceState::Healthy | InstanceState::Ready => true,
            InstanceState::Running => !self.health_checks,
            InstanceState::Staging => false,
        }
    }

    /// Whether `i` (of this version) counts toward a deployment at `now`:
    /// healthy, ready when there are readiness checks, for `min_healthy`.
    pub fn counts(&self, i: &Instance, now: Timestamp) -> bool {
        let ready = !self.readiness_checks || i.state == InstanceState::Ready;
        self.healthy(i)
            && ready
            && i.healthy_since
                .is_some_and(|s| now.since(s) >= self.min_healthy)
    }

    fn min_healthy_count(&self) -> u32 {
        Fraction::from_ppm(self.minimum_health_capacity).ceil_mul(self.instances)
    }

    fn max_capacity(&self) -> u32 {
        self.instances.saturating_add(
            Fraction::from_ppm(self.maximum_over_capacity).floor_mul(self.instances),
        )
    }
}

/// How a deployment is going.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum State {
    /// Working.
    Running,
    /// Waiting for `promote`.
    Paused,
    /// Done: B runs.
    Succeeded,
    /// Stopped where it was.
    Failed(String),
    /// Went back to A (done).
    RolledBack(String),
}

/// The strategy's own progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Plan {
    Rolling(rolling::Rolling),
    Scale(rolling::Scale),
    Stop,
    BlueGreen(bluegreen::BlueGreen),
    Canary(canary::Canary),
}

/// One deployment in progress (or ended): serializable, so the runtime
/// can store it and resume after a failover.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// Version A, if the app had one.
    pub from: Option<Target>,
    /// Version B; `None` when the app is being removed.
    pub to: Option<Target>,
    /// How it is going.
    pub state: State,
    /// When it started.
    pub started_at: Timestamp,
    /// The last time a new instance counted (or the start).
    pub last_progress: Timestamp,
    /// Instances this deployment has killed.
    pub killed: BTreeSet<String>,
    /// Set by [`Deployment::promote`], consumed by the next step.
    pub promoted: bool,
    plan: Plan,
}

/// Why `promote` was refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum PromoteError {
    /// Nothing waits for a promote.
    #[error("the deployment is not paused; nothing to promote")]
    NotPaused,
}

impl Deployment {
    /// A deployment from `from` (`None`: the app is new) to `to` (`None`:
    /// remove the app), starting at `now`. Same config version: a scale;
    /// otherwise B's `deployment.strategy` decides.
    pub fn new(from: Option<&AppVersion>, to: Option<&AppVersion>, now: Timestamp) -> Deployment {
        let from_t = from.map(Target::of);
        let to_t = to.map(Target::of);
        let plan = match (&from_t, to) {
            (_, None) => Plan::Stop,
            (Some(a), Some(b)) if a.version != b.config_version() => {
                match &b.definition.deployment.strategy {
                    Strategy::Rolling => Plan::Rolling(rolling::Rolling::default()),
                    Strategy::BlueGreen(bg) => Plan::BlueGreen(bluegreen::BlueGreen::new(bg)),
                    Strategy::Canary(c) => Plan::Canary(canary::Canary::new(c)),
                }
            }
            _ => Plan::Scale(rolling::Scale::default()),
        };
        Deployment {
            from: from_t,
            to: to_t,
            state: State::Running,
            started_at: now,
            last_progress: now,
            killed: BTreeSet::new(),
            promoted: false,
            plan,
        }
    }

    /// The deployment that reverts a cancelled one, from `from` back to
    /// `to`. Like [`Deployment::new`], except that a blue/green or canary
    /// `to` switches back in one step: it starts whatever `to` lacks beside
    /// `from`, sends all traffic to `to` once every instance counts, then
    /// stops `from` at once (no canary steps, preview or kept old version:
    /// `to` is the version that ran before).
    pub fn switch_back(from: &AppVersion, to: &AppVersion, now: Timestamp) -> Deployment {
        let mut d = Deployment::new(Some(from), Some(to), now);
        if matches!(d.plan, Plan::BlueGreen(_) | Plan::Canary(_)) {
            let instant = crate::app::BlueGreen {
                preview_port: None,
                keep_old: Duration::ZERO,
            };
            d.plan = Plan::BlueGreen(bluegreen::BlueGreen::new(&instant));
        }
        d
    }

    /// Whether the deployment has ended.
    pub fn is_done(&self) -> bool {
        matches!(
            self.state,
            State::Succeeded | State::Failed(_) | State::RolledBack(_)
        )
    }

    /// When the window of router statistics that the next canary
    /// analysis judges began: the last analysis, or the moment the canary
    /// first got a share of the traffic. `None` when no analysis is due
    /// (not a canary, no traffic share yet, at 100%, rolling back). The
    /// runtime passes [`step`] the statistics since this moment.
    pub fn analysis_window(&self) -> Option<Timestamp> {
        match &self.plan {
            Plan::Canary(c) => c.analysis_window(),
            _ => None,
        }
    }

    /// Lets a paused deployment go on (a canary's `{"pause": null}`, a
    /// blue/green preview) at the next step.
    pub fn promote(&mut self) -> Result<(), PromoteError> {
        if self.state != State::Paused {
            return Err(PromoteError::NotPaused);
        }
        self.promoted = true;
        Ok(())
    }

    /// Kills `i` once (no-op if already killed).
    fn kill(&mut self, i: &Instance, drain: bool, actions: &mut Vec<Action>) {
        if self.killed.insert(i.id.clone()) {
            actions.push(Action::Kill {
                instance: i.id.clone(),
                drain,
            });
        }
    }

    /// Whether the progress deadline of `t` has passed at `now`.
    fn deadline_passed(&self, t: &Target, now: Timestamp) -> bool {
        t.progress_deadline
            .is_some_and(|d| now.since(self.last_progress) > d)
    }

    fn fail(&mut self, why: String, actions: &mut Vec<Action>) {
        actions.push(Action::Failed { why: why.clone() });
        self.state = State::Failed(why);
    }

    /// The versions a `kind` deployment goes from and to (cloned); fails
    /// the deployment when it lacks either.
    fn two_versions(&mut self, kind: &str, actions: &mut Vec<Action>) -> Option<(Target, Target)> {
        if let (Some(from), Some(to)) = (&self.from, &self.to) {
            return Some((from.clone(), to.clone()));
        }
        self.fail(format!("a {kind} deployment needs two versions"), actions);
        None
    }

    /// The instances of `version` among `observed` that are not being
    /// killed.
    fn live_of<'a>(&self, observed: &'a [Instance], version: Timestamp) -> Vec<&'a Instance> {
        observed
            .iter()
            .filter(|i| i.version == version && !self.killed.contains(&i.id))
            .collect()
    }

    /// What the deployment looks like now.
    pub fn view(&self, observed: &[Instance], now: Timestamp) -> DeploymentView {
        let new_v = self.to.as_ref().map(|t| t.version);
        let (mut old, mut new, mut old_h, mut new_h) = (0, 0, 0, 0);
        for i in observed {
            if Some(i.version) == new_v {
                new += 1;
                if self.to.as_ref().is_some_and(|t| t.counts(i, now)) {
                    new_h += 1;
                }
            } else {
                old += 1;
                if self.from.as_ref().is_some_and(|t| t.healthy(i)) {
                    old_h += 1;
                }
            }
        }
        let (strategy, step_index, step) = match &self.plan {
            Plan::Rolling(r) => ("rolling", 0, r.step_name()),
            Plan::Scale(_) => ("scale", 0, "scale".to_string()),
            Plan::Stop => ("stop", 0, "stop instances".to_string()),
            Plan::BlueGreen(b) => ("blueGreen", b.step_index(), b.step_name()),
            Plan::Canary(c) => ("canary", c.step, c.step_name()),
        };
        let why = match &self.state {
            State::Failed(w) | State::RolledBack(w) => Some(w.clone()),
            _ => match &self.plan {
                Plan::Rolling(r) => r.reverting.clone(),
                Plan::BlueGreen(b) => b.rolling_back.clone(),
                Plan::Canary(c) => c.rolling_back.clone(),
                _ => None,
            },
        };
        DeploymentView {
            strategy,
            step_index,
            step,
            old_instances: old,
            new_instances: new,
            old_healthy: old_h,
            new_healthy: new_h,
            state: self.state.clone(),
            why,
        }
    }
}

/// A deployment as the API and CLI show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct DeploymentView {
    /// `rolling`, `scale`, `stop`, `blueGreen` or `canary`.
    pub strategy: &'static str,
    /// The current step's index.
    pub step_index: usize,
    /// The current step's name, e.g. `weight 25`.
    pub step: String,
    /// Instances of other versions than B.
    pub old_instances: usize,
    /// Instances of B.
    pub new_instances: usize,
    /// Healthy instances of A.
    pub old_healthy: usize,
    /// Instances of B that count (healthy, ready, for the minimum time).
    pub new_healthy: usize,
    /// How it is going.
    pub state: State,
    /// Why it failed or is rolling back.
    pub why: Option<String>,
}

/// One step of the planner: the new plan and what to do. Pure.
pub fn step(
    plan: &Deployment,
    observed: &[Instance],
    router_stats: &RouterStats,
    now: Timestamp,
) -> (Deployment, Vec<Action>) {
    let mut d = plan.clone();
    let mut actions = Vec::new();
    if d.is_done() {
        return (d, actions);
    }
    let mut inner = std::mem::replace(&mut d.plan, Plan::Stop);
    match &mut inner {
        Plan::Rolling(r) => r.step(&mut d, observed, now, &mut actions),
        Plan::Scale(s) => s.step(&mut d, observed, now, &mut actions),
        Plan::Stop => rolling::stop(&mut d, observed, &mut actions),
        Plan::BlueGreen(b) => b.step(&mut d, observed, now, &mut actions),
        Plan::Canary(c) => c.step(&mut d, observed, router_stats, now, &mut actions),
    }
    d.plan = inner;
    (d, actions)
}

/// Instances in kill order: unhealthy first, then by `killSelection`
/// (youngest or oldest first; ties by id, higher ids counting as younger).
fn kill_order<'a>(instances: impl Iterator<Item = &'a Instance>, t: &Target) -> Vec<&'a Instance> {
    let mut v: Vec<&Instance> = instances.collect();
    v.sort_by(|a, b| {
        let oldest_first = a.launched_at.cmp(&b.launched_at).then(a.id.cmp(&b.id));
        let age = if t.youngest_first {
            oldest_first.reverse()
        } else {
            oldest_first
        };
        t.healthy(a).cmp(&t.healthy(b)).then(age)
    });
    v
}
