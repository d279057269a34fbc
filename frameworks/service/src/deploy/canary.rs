//! Canary: the router keeps all traffic on A (`SetWeights`) while B's
//! instances start; then the steps run in order:
//!
//! - `{"weight": w}`: have `max(1, ceil(instances × w / 100))` instances
//!   of B counting (all of them at 100), then send `w`% of requests to B.
//!   At 100 the router switches to B and A is killed (drained).
//!   A keeps its full size until the 100% step.
//! - `{"pause": s}` waits `s` seconds; `{"pause": null}` waits for
//!   `promote`.
//!
//! While B receives traffic (and before the 100% step), every analysis
//! interval the planner compares B with A on the router's statistics
//! (passed in, counted since [`Deployment::analysis_window`]: the last
//! analysis, or since B first got traffic): once B had at least `minRequests`
//! requests, B fails when its error rate is above `maxErrorRate`, its p99
//! above `maxP99LatencyMs`, its error rate above A's × `maxErrorRateOverStable`
//! (and more than one point above A's), or its p99 above A's ×
//! `maxP99OverStable`. A failure rolls back: all traffic to A, B's
//! instances killed; the deployment ends rolled back. B's instances not
//! counting within the progress deadline roll back too (with
//! `autoRevert`; otherwise the deployment fails and stays where it is).

use serde::{Deserialize, Serialize};

use super::{Action, Deployment, Instance, RouterStats, State, Target, VersionStats};
use crate::app::{Analysis, Canary as Settings, CanaryStep};
use crate::time::Timestamp;

/// A canary deployment's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Canary {
    steps: Vec<CanaryStep>,
    analysis: Analysis,
    /// The current step.
    pub(super) step: usize,
    started: bool,
    step_started: Timestamp,
    /// B's current share of traffic.
    weight: u8,
    /// B instances launched so far.
    launched: u32,
    last_analysis: Timestamp,
    stopping_old: bool,
    pub(super) rolling_back: Option<String>,
}

impl Canary {
    pub(super) fn new(s: &Settings) -> Canary {
        Canary {
            steps: s.steps.clone(),
            analysis: s.analysis,
            step: 0,
            started: false,
            step_started: Timestamp::default(),
            weight: 0,
            launched: 0,
            last_analysis: Timestamp::default(),
            stopping_old: false,
            rolling_back: None,
        }
    }

    /// See [`Deployment::analysis_window`].
    pub(super) fn analysis_window(&self) -> Option<Timestamp> {
        (self.weight > 0 && self.weight < 100 && self.rolling_back.is_none())
            .then_some(self.last_analysis)
    }

    pub(super) fn step_name(&self) -> String {
        if self.rolling_back.is_some() {
            return "roll back".into();
        }
        match self.steps.get(self.step) {
            Some(CanaryStep::Weight(w)) => format!("weight {w}"),
            Some(CanaryStep::Pause(Some(d))) => format!("pause {}s", d.as_secs()),
            Some(CanaryStep::Pause(None)) => "pause until promote".into(),
            None => "done".into(),
        }
    }

    pub(super) fn step(
        &mut self,
        d: &mut Deployment,
        observed: &[Instance],
        stats: &RouterStats,
        now: Timestamp,
        actions: &mut Vec<Action>,
    ) {
        let Some((from, to)) = d.two_versions("canary", actions) else {
            return;
        };
        let new = d.live_of(observed, to.version);
        if self.rolling_back.is_some() {
            if !observed.iter().any(|i| i.version == to.version) {
                actions.push(Action::Finished);
                d.state = State::RolledBack(self.rolling_back.clone().unwrap_or_default());
            }
            return;
        }
        if !self.started {
            self.started = true;
            self.step_started = now;
            self.launched = new.len() as u32;
            actions.push(Action::SetWeights(
                [(from.version, 100), (to.version, 0)].into(),
            ));
        }
        if self.weight > 0
            && self.weight < 100
            && now.since(self.last_analysis) >= self.analysis.interval
        {
            self.last_analysis = now;
            if let Some(why) = verdict(
                &self.analysis,
                stats.get(&to.version),
                stats.get(&from.version),
            ) {
                return self.roll_back(d, &new, &from, why, actions);
            }
        }
        let counted = new.iter().filter(|i| to.counts(i, now)).count() as u32;
        // Run steps until one has to wait.
        while let Some(step) = self.steps.get(self.step).copied() {
            match step {
                CanaryStep::Weight(w) => {
                    let want = if w >= 100 {
                        to.instances
                    } else {
                        to.instances
                            .saturating_mul(u32::from(w))
                            .div_ceil(100)
                            .max(1)
                    };
                    if self.launched < want {
                        actions.push(Action::Launch {
                            version: to.version,
                            count: want - self.launched,
                        });
                        self.launched = want;
                    }
                    if counted < want {
                        if d.deadline_passed(&to, now) {
                            let why = format!(
                                "{counted} of {want} canary instances became healthy within {}s",
                                to.progress_deadline.map_or(0, |p| p.as_secs())
                            );
                            if to.auto_revert {
                                return self.roll_back(d, &new, &from, why, actions);
                            }
                            d.fail(why, actions);
                        }
                        return;
                    }
                    d.last_progress = now;
                    if w >= 100 {
                        if !self.stopping_old {
                            actions.push(Action::Switch {
                                to_version: to.version,
                            });
                            self.weight = 100;
                            self.stopping_old = true;
                            for i in observed.iter().filter(|i| i.version != to.version) {
                                let h = from.healthy(i);
                                d.kill(i, h, actions);
                            }
                        }
                        if observed.iter().all(|i| i.version == to.version) {
                            self.step += 1;
                            continue;
                        }
                        return;
                    }
                    if self.weight == 0 {
                        self.last_analysis = now;
                    }
                    self.weight = w;
                    actions.push(Action::SetWeights(
                        [(from.version, 100 - w), (to.version, w)].into(),
                    ));
                }
                CanaryStep::Pause(Some(p)) => {
                    if now.since(self.step_started) < p {
                        return;
                    }
                }
                CanaryStep::Pause(None) => {
                    if !d.promoted {
                        d.state = State::Paused;
                        return;
                    }
                    d.promoted = false;
                    d.state = State::Running;
                }
            }
            self.step += 1;
            self.step_started = now;
        }
        actions.push(Action::Finished);
        d.state = State::Succeeded;
    }

    fn roll_back(
        &mut self,
        d: &mut Deployment,
        new: &[&Instance],
        from: &Target,
        why: String,
        actions: &mut Vec<Action>,
    ) {
        actions.push(Action::Switch {
            to_version: from.version,
        });
        actions.push(Action::RollBack {
            to_version: from.version,
            why: why.clone(),
        });
        for i in new {
            d.kill(i, true, actions);
        }
        d.state = State::Running;
        self.weight = 0;
        self.rolling_back = Some(why);
    }
}

fn rate(s: &VersionStats) -> f64 {
    if s.requests == 0 {
        0.0
    } else {
        s.errors as f64 / s.requests as f64
    }
}

/// Why the canary fails the analysis, if it does.
fn verdict(
    a: &Analysis,
    canary: Option<&VersionStats>,
    stable: Option<&VersionStats>,
) -> Option<String> {
    let c = canary?;
    if c.requests < a.min_requests.max(1) {
        return None;
    }
    let cr = rate(c);
    let max = a.max_error_rate.to_f64();
    if cr > max {
        return Some(format!(
            "canary error rate {:.1}% is above {:.1}% ({} of {} requests)",
            cr * 100.0,
            max * 100.0,
            c.errors,
            c.requests
        ));
    }
    if let (Some(limit), Some(p99)) = (a.max_p99_latency, c.p99)
        && p99 > limit
    {
        return Some(format!(
            "canary p99 latency {}ms is above {}ms",
            p99.as_millis(),
            limit.as_millis()
        ));
    }
    let s = stable.filter(|s| s.requests >= a.min_requests.max(1))?;
    let sr = rate(s);
    if let Some(ratio) = a.max_error_rate_over_stable
        && cr > sr * ratio.to_f64()
        && cr > sr + 0.01
    {
        return Some(format!(
            "canary error rate {:.1}% is more than {}× the stable version's {:.1}%",
            cr * 100.0,
            ratio.to_f64(),
            sr * 100.0
        ));
    }
    if let (Some(ratio), Some(cp), Some(sp)) = (a.max_p99_over_stable, c.p99, s.p99)
        && cp.as_secs_f64() > sp.as_secs_f64() * ratio.to_f64()
    {
        return Some(format!(
            "canary p99 latency {}ms is more than {}× the stable version's {}ms",
            cp.as_millis(),
            ratio.to_f64(),
            sp.as_millis()
        ));
    }
    None
}
