//! Rolling deployments (Marathon's `upgradeStrategy`, with Nomad's minimum
//! healthy time, progress deadline and auto-revert), scale and stop. See
//! the parent module for the rules.

use serde::{Deserialize, Serialize};

use super::{Action, Deployment, Instance, State, kill_order};
use crate::time::Timestamp;

/// A rolling replacement's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Rolling {
    /// Whether the first step computed the strategy below.
    initialized: bool,
    /// `ceil(instances × minimumHealthCapacity)`.
    pub(super) min_healthy: u32,
    /// `floor(instances × (1 + maximumOverCapacity))`, plus one in
    /// Marathon's special case.
    pub(super) max_capacity: u32,
    /// The fewest healthy instances kills may leave:
    /// `min(minHealthy, healthy instances at the start)`.
    floor: u32,
    /// New instances launched (Marathon's `instancesStarted`).
    started: u32,
    /// Old instances this plan may kill so far.
    kill_credits: u32,
    /// Old instances killed so far.
    kills: u32,
    /// New instances that counted (each lets one old one go, once).
    counted: std::collections::BTreeSet<String>,
    /// Why the plan is going back to A, once it is.
    pub(super) reverting: Option<String>,
}

impl Rolling {
    pub(super) fn step_name(&self) -> String {
        if self.reverting.is_some() {
            "revert to the previous version".into()
        } else {
            "replace instances".into()
        }
    }

    pub(super) fn step(
        &mut self,
        d: &mut Deployment,
        observed: &[Instance],
        now: Timestamp,
        actions: &mut Vec<Action>,
    ) {
        let Some((from, to)) = d.two_versions("rolling", actions) else {
            return;
        };
        let n = to.instances;
        let killed = d.killed.clone();
        let is_new = |i: &&Instance| i.version == to.version;
        let live = |i: &&Instance| !killed.contains(&i.id);
        let healthy = |i: &Instance| {
            if i.version == to.version {
                to.counts(i, now)
            } else {
                from.healthy(i)
            }
        };
        if !self.initialized {
            // Marathon's computeRestartStrategy, over the live instances.
            let current: Vec<&Instance> = observed.iter().filter(live).collect();
            let healthy_all = current.iter().filter(|i| healthy(i)).count() as u32;
            self.min_healthy = to.min_healthy_count();
            self.max_capacity = to.max_capacity();
            let mut kill_now = healthy_all.saturating_sub(self.min_healthy);
            if self.min_healthy == self.max_capacity && self.max_capacity <= healthy_all {
                self.max_capacity += 1;
            }
            let current_n = current.len() as u32;
            if n < current_n {
                kill_now = kill_now.max(current_n - n);
            }
            self.kill_credits = kill_now;
            self.floor = self.min_healthy.min(healthy_all);
            self.started = current.iter().filter(|i| i.version == to.version).count() as u32;
            self.initialized = true;
        }
        for i in observed.iter().filter(is_new).filter(live) {
            if to.counts(i, now) && self.counted.insert(i.id.clone()) {
                self.kill_credits += 1;
                d.last_progress = now;
            }
        }
        // Kill what is owed: unhealthy first; a healthy one only while
        // minHealthy stay healthy. The budget is also recomputed as
        // Marathon computes it at the start (healthy − minHealthy), so that
        // an old instance that recovers does not stall the plan.
        let old_live = kill_order(observed.iter().filter(|i| !is_new(i)).filter(live), &from);
        let mut healthy_now = observed.iter().filter(live).filter(|i| healthy(i)).count() as u32;
        self.kill_credits = self
            .kill_credits
            .max(self.kills + healthy_now.saturating_sub(self.min_healthy));
        // Unhealthy old instances also go when they block launches (Marathon
        // decommissions an old instance that fails during an upgrade).
        let old_present = observed.iter().filter(|i| !is_new(i)).count() as u32;
        let mut blocked = if old_present + self.started >= self.max_capacity {
            n.saturating_sub(self.started)
        } else {
            0
        };
        let mut to_kill = Vec::new();
        for i in old_live {
            let h = from.healthy(i);
            if self.kills < self.kill_credits {
                if h {
                    if healthy_now <= self.floor {
                        break;
                    }
                    healthy_now -= 1;
                }
                self.kills += 1;
            } else if !h && blocked > 0 {
                blocked -= 1;
            } else {
                break;
            }
            to_kill.push((i, h));
        }
        for (i, h) in to_kill {
            d.kill(i, h, actions);
        }
        // Launch within capacity (old instances hold it until they end).
        let left = self.max_capacity.saturating_sub(old_present + self.started);
        let launch = left.min(n.saturating_sub(self.started));
        if launch > 0 {
            self.started += launch;
            actions.push(Action::Launch {
                version: to.version,
                count: launch,
            });
        }
        let new_counted = observed
            .iter()
            .filter(is_new)
            .filter(live)
            .filter(|i| to.counts(i, now))
            .count() as u32;
        if self.started >= n && new_counted >= n && old_present == 0 {
            actions.push(Action::Finished);
            d.state = match self.reverting.take() {
                Some(why) => State::RolledBack(why),
                None => State::Succeeded,
            };
            return;
        }
        if d.deadline_passed(&to, now) {
            let why = format!(
                "no new instance became healthy within {}s",
                to.progress_deadline.map_or(0, |p| p.as_secs())
            );
            if self.reverting.is_some() {
                d.fail(format!("reverting: {why}"), actions);
            } else if to.auto_revert {
                actions.push(Action::RollBack {
                    to_version: from.version,
                    why: why.clone(),
                });
                d.from = Some(to);
                d.to = Some(from);
                d.last_progress = now;
                *self = Rolling {
                    reverting: Some(why),
                    ..Rolling::default()
                };
                self.step(d, observed, now, actions);
            } else {
                d.fail(why, actions);
            }
        }
    }
}

/// A scale (or start) of one config version.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Scale {
    initialized: bool,
    /// The most instances that counted at once so far.
    counted: u32,
}

impl Scale {
    pub(super) fn step(
        &mut self,
        d: &mut Deployment,
        observed: &[Instance],
        now: Timestamp,
        actions: &mut Vec<Action>,
    ) {
        let Some(to) = d.to.clone() else {
            return stop(d, observed, actions);
        };
        let n = to.instances;
        let mine = d.live_of(observed, to.version);
        if !self.initialized {
            self.initialized = true;
            let have = mine.len() as u32;
            if have < n {
                actions.push(Action::Launch {
                    version: to.version,
                    count: n - have,
                });
            } else {
                let extra = (have - n) as usize;
                let order = kill_order(mine.iter().copied(), &to);
                for i in order.into_iter().take(extra) {
                    let h = to.healthy(i);
                    d.kill(i, h, actions);
                }
            }
        }
        let counted = mine.iter().filter(|i| to.counts(i, now)).count() as u32;
        if counted > self.counted {
            self.counted = counted;
            d.last_progress = now;
        }
        let killed_present = observed.iter().any(|i| d.killed.contains(&i.id));
        if counted >= n && !killed_present {
            actions.push(Action::Finished);
            d.state = State::Succeeded;
        } else if d.deadline_passed(&to, now) {
            d.fail(
                format!(
                    "only {counted} of {n} instances became healthy within {}s",
                    to.progress_deadline.map_or(0, |p| p.as_secs())
                ),
                actions,
            );
        }
    }
}

/// Removing the app: kill every instance, done when none is left.
pub(super) fn stop(d: &mut Deployment, observed: &[Instance], actions: &mut Vec<Action>) {
    let targets: Vec<Instance> = observed.to_vec();
    for i in &targets {
        let h = d.from.as_ref().is_some_and(|f| f.healthy(i));
        d.kill(i, h, actions);
    }
    if observed.is_empty() {
        actions.push(Action::Finished);
        d.state = State::Succeeded;
    }
}
