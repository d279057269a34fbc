//! Blue/green: launch B at full size beside A (the router keeps all
//! traffic on A), wait until every B instance counts, optionally serve B
//! on the preview port and wait for `promote`, switch the router to B in
//! one step, keep A for `keepOldSeconds` (an instant switch back: cancel
//! the deployment, `DELETE /v2/deployments/ID` or `berth service
//! deployments cancel APP`, whose revert finds A still running and switches
//! to it at once, see [`Deployment::switch_back`]), then kill A.
//!
//! If B is not all healthy within the progress deadline: with
//! `autoRevert`, B's instances are killed and the deployment ends rolled
//! back (A never stopped serving); without it, it fails and leaves B
//! running for inspection.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::{Action, Deployment, Instance, State};
use crate::app::BlueGreen as Settings;
use crate::time::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
enum Phase {
    Launch,
    WaitHealthy,
    Preview,
    KeepOld { since: Timestamp },
    StopOld,
    RollingBack,
}

/// A blue/green deployment's progress.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct BlueGreen {
    preview_port: Option<u16>,
    keep_old: Duration,
    phase: Phase,
    pub(super) rolling_back: Option<String>,
}

impl BlueGreen {
    pub(super) fn new(s: &Settings) -> BlueGreen {
        BlueGreen {
            preview_port: s.preview_port,
            keep_old: s.keep_old,
            phase: Phase::Launch,
            rolling_back: None,
        }
    }

    pub(super) fn step_index(&self) -> usize {
        match self.phase {
            Phase::Launch | Phase::WaitHealthy => 0,
            Phase::Preview => 1,
            Phase::KeepOld { .. } => 2,
            Phase::StopOld => 3,
            Phase::RollingBack => 4,
        }
    }

    pub(super) fn step_name(&self) -> String {
        match self.phase {
            Phase::Launch | Phase::WaitHealthy => "launch the new version".into(),
            Phase::Preview => "preview (waiting for promote)".into(),
            Phase::KeepOld { .. } => "switched; keeping the old version".into(),
            Phase::StopOld => "stop the old version".into(),
            Phase::RollingBack => "roll back".into(),
        }
    }

    pub(super) fn step(
        &mut self,
        d: &mut Deployment,
        observed: &[Instance],
        now: Timestamp,
        actions: &mut Vec<Action>,
    ) {
        let Some((from, to)) = d.two_versions("blue/green", actions) else {
            return;
        };
        let new = d.live_of(observed, to.version);
        let old: Vec<&Instance> = observed
            .iter()
            .filter(|i| i.version != to.version)
            .collect();
        if self.phase == Phase::Launch {
            actions.push(Action::SetWeights([(from.version, 100)].into()));
            let missing = to.instances.saturating_sub(new.len() as u32);
            if missing > 0 {
                actions.push(Action::Launch {
                    version: to.version,
                    count: missing,
                });
            }
            self.phase = Phase::WaitHealthy;
        }
        let counted = new.iter().filter(|i| to.counts(i, now)).count() as u32;
        match self.phase {
            Phase::Launch => {}
            Phase::WaitHealthy => {
                if counted >= to.instances {
                    d.last_progress = now;
                    if let Some(port) = self.preview_port {
                        actions.push(Action::Preview {
                            version: to.version,
                            port,
                        });
                        self.phase = Phase::Preview;
                        d.state = State::Paused;
                    } else {
                        self.switch(d, now, actions);
                    }
                } else if d.deadline_passed(&to, now) {
                    let why = format!(
                        "{counted} of {} new instances became healthy within {}s",
                        to.instances,
                        to.progress_deadline.map_or(0, |p| p.as_secs())
                    );
                    if to.auto_revert {
                        actions.push(Action::RollBack {
                            to_version: from.version,
                            why: why.clone(),
                        });
                        for i in new {
                            d.kill(i, false, actions);
                        }
                        self.rolling_back = Some(why);
                        self.phase = Phase::RollingBack;
                    } else {
                        d.fail(why, actions);
                    }
                }
            }
            Phase::Preview => {
                if d.promoted {
                    d.promoted = false;
                    d.state = State::Running;
                    self.switch(d, now, actions);
                }
            }
            Phase::KeepOld { since } => {
                if now.since(since) >= self.keep_old {
                    for i in &old {
                        let h = from.healthy(i);
                        d.kill(i, h, actions);
                    }
                    self.phase = Phase::StopOld;
                }
            }
            Phase::StopOld => {}
            Phase::RollingBack => {
                let b_left = observed.iter().any(|i| i.version == to.version);
                if !b_left {
                    actions.push(Action::Finished);
                    d.state = State::RolledBack(self.rolling_back.clone().unwrap_or_default());
                }
                return;
            }
        }
        if self.phase == Phase::StopOld && old.is_empty() {
            actions.push(Action::Finished);
            d.state = State::Succeeded;
        }
    }

    fn switch(&mut self, d: &Deployment, now: Timestamp, actions: &mut Vec<Action>) {
        if let Some(to) = &d.to {
            actions.push(Action::Switch {
                to_version: to.version,
            });
        }
        self.phase = Phase::KeepOld { since: now };
    }
}
