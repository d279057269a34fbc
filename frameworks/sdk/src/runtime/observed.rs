//! [`Observed`]: what the runtime knows of the cluster, and how events and
//! the outcomes of its own calls change it. Pure: no IO, time is an
//! argument.

use std::collections::BTreeMap;
use std::time::Instant;

use berth_proto as pb;

use super::decide::{Intent, Prior};
use crate::Event;

/// The reason the master gives its answers to a reconciliation.
pub const REASON_RECONCILIATION: pb::TaskReason = pb::TaskReason::Reconciliation;

/// Where one task stands, as far as the runtime knows.
#[derive(Debug, Clone, PartialEq)]
pub enum TaskPhase {
    /// Known not to exist in the cluster: never launched, its launch was
    /// refused, or a reconciliation answered `TASK_UNKNOWN` for it. It may
    /// be launched (again, with the same id).
    NotLaunched,
    /// A launch of it may or may not have happened (the accept's outcome is
    /// unknown, or the framework restarted after saving that it was about
    /// to launch it). It is reconciled, never launched, until an answer
    /// says which.
    Unknown,
    /// The cluster has it; `status` is its last update (`None` until the
    /// first arrives after the accept).
    Launched {
        /// Its last status update.
        status: Option<pb::TaskStatus>,
    },
    /// It reached a terminal state (or the cluster lost it); it is never
    /// launched again under this id.
    Ended {
        /// The update that ended it.
        status: pb::TaskStatus,
    },
}

/// What the runtime knows of one task.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskView {
    /// Where it stands.
    pub phase: TaskPhase,
    /// When a reconciliation was last asked about it on the current
    /// subscription, if one was.
    pub reconcile_asked: Option<Instant>,
    /// Answers still due (on this stream) to the reconciliations the
    /// runtime asked about it.
    pub answers_due: u32,
    /// How many of those were asked before its latest launch: an answer of
    /// `TASK_UNKNOWN` among them is about before that launch, not news.
    pub stale_answers: u32,
    /// When a kill was last sent for it on the current subscription.
    pub kill_sent: Option<Instant>,
    /// Launches of it the master refused outright, and the last reason.
    pub refusals: u32,
    /// Why the master refused its last launch.
    pub last_refusal: Option<String>,
    /// Taken over from an earlier run of the framework (see
    /// [`Observed::adopt`]) rather than launched by this one: reconciled
    /// until an update about it arrives.
    pub adopted: bool,
}

impl TaskView {
    fn new(phase: TaskPhase) -> Self {
        TaskView {
            phase,
            reconcile_asked: None,
            answers_due: 0,
            stale_answers: 0,
            kill_sent: None,
            refusals: 0,
            last_refusal: None,
            adopted: false,
        }
    }

    /// Whether the cluster has (or may have) the task running.
    #[must_use]
    pub fn is_live(&self) -> bool {
        matches!(self.phase, TaskPhase::Launched { .. } | TaskPhase::Unknown)
    }
}

/// What an update means to the framework, as [`Observed::update`] sorts it.
#[derive(Debug, Clone, PartialEq)]
pub enum UpdateMeaning {
    /// News about one of the runtime's tasks: hand it to the framework.
    Report,
    /// Bookkeeping only (a reconciliation answer that a launch of unknown
    /// outcome did not happen, or an answer about an older launch): the
    /// framework need not see it.
    Internal,
}

/// The runtime's observed state: the offers it holds, what it knows of
/// each task, and what it last told the master (suppression, pending
/// work). Changed only by the `on_*`/`*_sent` methods, so that a test can
/// replay any sequence of events and outcomes without a master.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    /// Whether a subscription is live (calls can be made).
    pub subscribed: bool,
    /// Offers held, by id, in arrival order of their ids' first sight.
    pub offers: Vec<pb::Offer>,
    /// Per task id.
    pub tasks: BTreeMap<String, TaskView>,
    /// Offers are suppressed, as far as the runtime knows.
    pub suppressed: bool,
    /// Whether [`Observed::suppressed`] is known: not after a
    /// (re-)subscription, since a master may keep a framework's
    /// suppression across it (the same leader) or drop it (a new leader);
    /// the next decision then says which it wants.
    pub suppression_known: bool,
    /// The pending work last published (`None`: never).
    pub published_pending: Option<Vec<pb::PendingTask>>,
}

impl Observed {
    /// A fresh state: not subscribed, nothing known.
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// What is known of `task_id`.
    #[must_use]
    pub fn task(&self, task_id: &str) -> Option<&TaskView> {
        self.tasks.get(task_id)
    }

    fn entry(&mut self, task_id: &str, default: TaskPhase) -> &mut TaskView {
        self.tasks
            .entry(task_id.to_owned())
            .or_insert_with(|| TaskView::new(default))
    }

    /// Follows an event other than [`Event::Update`] (see
    /// [`Observed::update`]).
    ///
    /// A (re-)subscription voids every offer, forgets the answers asked for
    /// on the old stream (they will not come) and the kills and
    /// reconciliations sent there (so they are sent again), and assumes
    /// whether offers are suppressed is no longer known (the next decision
    /// suppresses or revives). A disconnect voids the offers.
    pub fn on_event(&mut self, event: &Event) {
        match event {
            Event::Subscribed { .. } => {
                self.subscribed = true;
                self.offers.clear();
                self.suppressed = false;
                self.suppression_known = false;
                for view in self.tasks.values_mut() {
                    view.answers_due = 0;
                    view.stale_answers = 0;
                    view.reconcile_asked = None;
                    view.kill_sent = None;
                }
            }
            Event::Disconnected | Event::Error(_) => {
                self.subscribed = false;
                self.offers.clear();
            }
            Event::Offers(offers) => {
                for offer in offers {
                    if !self.offers.iter().any(|o| o.id == offer.id) {
                        self.offers.push(offer.clone());
                    }
                }
            }
            Event::Rescind { offer_id } => self.offers.retain(|o| &o.id != offer_id),
            Event::Update(status) => {
                self.update(status);
            }
            Event::Failure { .. } => {}
        }
    }

    /// Follows a status update and says whether the framework should see
    /// it.
    ///
    /// An answer to a reconciliation (reason `RECONCILIATION`) counts
    /// against the answers due. `TASK_UNKNOWN` means the master does not
    /// have the task: for a task of unknown launch outcome, that the launch
    /// did not happen (it may be launched again); for a launched task, that
    /// the cluster lost it (it ends). An update about a task the runtime
    /// never heard of is recorded (as launched, or ended), so that a task
    /// the framework no longer wants is killed.
    pub fn update(&mut self, status: &pb::TaskStatus) -> UpdateMeaning {
        let state = pb::TaskState::try_from(status.state).unwrap_or(pb::TaskState::Unspecified);
        let view = self.entry(&status.task_id, TaskPhase::NotLaunched);
        let mut stale = false;
        if status.reason() == REASON_RECONCILIATION && view.answers_due > 0 {
            view.answers_due -= 1;
            if view.stale_answers > 0 {
                view.stale_answers -= 1;
                stale = true;
            }
        }
        if state == pb::TaskState::TaskUnknown {
            if stale {
                return UpdateMeaning::Internal;
            }
            return match view.phase {
                TaskPhase::Unknown => {
                    view.phase = TaskPhase::NotLaunched;
                    UpdateMeaning::Internal
                }
                TaskPhase::Launched { .. } => {
                    view.phase = TaskPhase::Ended {
                        status: status.clone(),
                    };
                    UpdateMeaning::Report
                }
                TaskPhase::NotLaunched | TaskPhase::Ended { .. } => UpdateMeaning::Internal,
            };
        }
        if let TaskPhase::Ended { .. } = view.phase {
            // A duplicate, or a late answer about a task that ended:
            // nothing changes, but the framework sees duplicates as the
            // SDK delivers them.
            return UpdateMeaning::Report;
        }
        view.phase = if state.is_terminal() {
            TaskPhase::Ended {
                status: status.clone(),
            }
        } else {
            TaskPhase::Launched {
                status: Some(status.clone()),
            }
        };
        UpdateMeaning::Report
    }

    /// Records that a reconciliation was asked about `task_ids` at `now`
    /// (the call succeeded): an answer each is due. A task not known yet
    /// (one the framework may have launched before it restarted) is of
    /// unknown launch outcome from now on.
    pub fn reconcile_sent(&mut self, task_ids: &[String], now: Instant) {
        for id in task_ids {
            let view = self.entry(id, TaskPhase::Unknown);
            view.answers_due += 1;
            view.reconcile_asked = Some(now);
        }
    }

    /// Records that asking about `task_ids` failed at `now`: it is asked
    /// again after the retry interval (or the next subscription).
    pub fn reconcile_failed(&mut self, task_ids: &[String], now: Instant) {
        for id in task_ids {
            self.entry(id, TaskPhase::Unknown).reconcile_asked = Some(now);
        }
    }

    /// Records that `offer_id` was used or declined: it is no longer held.
    pub fn offers_spent(&mut self, offer_ids: &[String]) {
        self.offers.retain(|o| !offer_ids.contains(&o.id));
    }

    /// Records that a launch of `task_ids` is being sent: answers asked
    /// about them before now are about an older launch.
    pub fn launch_sent(&mut self, task_ids: &[String]) {
        for id in task_ids {
            let view = self.entry(id, TaskPhase::NotLaunched);
            view.stale_answers = view.answers_due;
        }
    }

    /// Records the outcome of a launch of `task_ids`.
    pub fn launch_done(&mut self, task_ids: &[String], outcome: &LaunchOutcome) {
        for id in task_ids {
            let view = self.entry(id, TaskPhase::NotLaunched);
            match outcome {
                LaunchOutcome::Launched(ids) if ids.contains(id) => {
                    // An update may have arrived first; keep what it said.
                    if matches!(view.phase, TaskPhase::NotLaunched | TaskPhase::Unknown) {
                        view.phase = TaskPhase::Launched { status: None };
                    }
                }
                LaunchOutcome::Launched(_) | LaunchOutcome::NotSent => {}
                LaunchOutcome::Refused(why) => {
                    view.refusals += 1;
                    view.last_refusal = Some(why.clone());
                }
                LaunchOutcome::Unknown => {
                    if view.phase == TaskPhase::NotLaunched {
                        view.phase = TaskPhase::Unknown;
                        view.reconcile_asked = None;
                    }
                }
            }
        }
    }

    /// Records that the runtime gave up on `task_id` with `status` (a
    /// synthesized `TASK_ERROR`).
    pub fn give_up(&mut self, status: &pb::TaskStatus) {
        self.entry(&status.task_id, TaskPhase::NotLaunched).phase = TaskPhase::Ended {
            status: status.clone(),
        };
    }

    /// Records that a kill of `task_id` was sent at `now`.
    pub fn kill_sent(&mut self, task_id: &str, now: Instant) {
        if let Some(view) = self.tasks.get_mut(task_id) {
            view.kill_sent = Some(now);
        }
    }

    /// Takes over what an earlier run of the framework knew, as `intent`
    /// says: a wanted task of [`Prior::Launched`] and a task to stop that
    /// the runtime has not heard of are taken as launched (so a task to
    /// stop is killed, and a `TASK_UNKNOWN` answer about either ends it).
    pub fn adopt(&mut self, intent: &Intent) {
        let launched = intent
            .tasks
            .iter()
            .filter(|w| w.prior == Prior::Launched)
            .map(|w| w.task.task_id.as_str())
            .chain(intent.stop.iter().map(|(id, _)| id.as_str()));
        for id in launched {
            if !self.tasks.contains_key(id) {
                let mut view = TaskView::new(TaskPhase::Launched { status: None });
                view.adopted = true;
                self.tasks.insert(id.to_owned(), view);
            }
        }
    }

    /// Forgets tasks that ended or were never launched and that `wanted`
    /// no longer names, so the state does not grow without bound.
    pub fn forget_unwanted(&mut self, wanted: impl Fn(&str) -> bool) {
        self.tasks.retain(|id, view| {
            wanted(id) || matches!(view.phase, TaskPhase::Launched { .. } | TaskPhase::Unknown)
        });
    }
}

/// How a launch (an accept call) ended, as the runtime tells
/// [`Observed::launch_done`].
#[derive(Debug, Clone, PartialEq)]
pub enum LaunchOutcome {
    /// The master answered; these task ids were launched (the others of
    /// the call were not).
    Launched(Vec<String>),
    /// The master refused the call, for this reason; nothing was
    /// launched.
    Refused(String),
    /// The call was never sent (not subscribed); nothing was launched.
    NotSent,
    /// The call may or may not have taken effect
    /// ([`SdkError::outcome_unknown`](crate::SdkError::outcome_unknown), or
    /// `FAILED_PRECONDITION`: the task may exist already).
    Unknown,
}

#[cfg(test)]
mod tests {
    use super::super::tests::{ids, status};
    use super::*;

    #[test]
    fn an_unknown_launch_is_not_launched_after_a_fresh_unknown_answer() {
        let now = Instant::now();
        let mut o = Observed::new();
        o.launch_sent(&ids(&["t"]));
        o.launch_done(&ids(&["t"]), &LaunchOutcome::Unknown);
        assert_eq!(o.task("t").unwrap().phase, TaskPhase::Unknown);
        o.reconcile_sent(&ids(&["t"]), now);
        let answer = status("t", pb::TaskState::TaskUnknown, REASON_RECONCILIATION);
        assert_eq!(o.update(&answer), UpdateMeaning::Internal);
        assert_eq!(o.task("t").unwrap().phase, TaskPhase::NotLaunched);
        assert_eq!(o.task("t").unwrap().answers_due, 0);
    }

    #[test]
    fn an_answer_asked_before_a_launch_does_not_undo_it() {
        let now = Instant::now();
        let mut o = Observed::new();
        // Asked (restart), then relaunched before the answer came.
        o.reconcile_sent(&ids(&["t"]), now);
        o.launch_sent(&ids(&["t"]));
        o.launch_done(&ids(&["t"]), &LaunchOutcome::Unknown);
        let old = status("t", pb::TaskState::TaskUnknown, REASON_RECONCILIATION);
        assert_eq!(o.update(&old), UpdateMeaning::Internal);
        assert_eq!(o.task("t").unwrap().phase, TaskPhase::Unknown);
        // A running answer settles it.
        let running = status("t", pb::TaskState::TaskRunning, REASON_RECONCILIATION);
        assert_eq!(o.update(&running), UpdateMeaning::Report);
        assert!(matches!(
            o.task("t").unwrap().phase,
            TaskPhase::Launched { status: Some(_) }
        ));
    }

    #[test]
    fn unknown_for_a_launched_task_ends_it_and_terminal_updates_stick() {
        let mut o = Observed::new();
        o.launch_sent(&ids(&["a", "b"]));
        o.launch_done(&ids(&["a", "b"]), &LaunchOutcome::Launched(ids(&["a"])));
        assert_eq!(
            o.task("a").unwrap().phase,
            TaskPhase::Launched { status: None }
        );
        assert_eq!(o.task("b").unwrap().phase, TaskPhase::NotLaunched);
        let gone = status("a", pb::TaskState::TaskUnknown, REASON_RECONCILIATION);
        assert_eq!(o.update(&gone), UpdateMeaning::Report);
        assert!(matches!(
            o.task("a").unwrap().phase,
            TaskPhase::Ended { .. }
        ));
        // A late running update does not bring it back.
        o.update(&status(
            "a",
            pb::TaskState::TaskRunning,
            pb::TaskReason::Unspecified,
        ));
        assert!(matches!(
            o.task("a").unwrap().phase,
            TaskPhase::Ended { .. }
        ));
    }

    #[test]
    fn an_update_before_the_accept_answer_is_kept() {
        let mut o = Observed::new();
        o.launch_sent(&ids(&["a"]));
        o.update(&status(
            "a",
            pb::TaskState::TaskFinished,
            pb::TaskReason::Unspecified,
        ));
        o.launch_done(&ids(&["a"]), &LaunchOutcome::Launched(ids(&["a"])));
        assert!(matches!(
            o.task("a").unwrap().phase,
            TaskPhase::Ended { .. }
        ));
    }

    #[test]
    fn subscribing_voids_offers_and_forgets_answers_due() {
        let now = Instant::now();
        let mut o = Observed::new();
        o.on_event(&Event::Offers(vec![pb::Offer {
            id: "o1".into(),
            ..Default::default()
        }]));
        o.suppressed = true;
        o.reconcile_sent(&ids(&["t"]), now);
        o.kill_sent("t", now);
        o.on_event(&Event::Subscribed {
            framework_id: "f".into(),
            master_id: "m".into(),
            resubscribed: true,
        });
        assert!(o.subscribed && o.offers.is_empty() && !o.suppression_known);
        let t = o.task("t").unwrap();
        assert_eq!(
            (t.answers_due, t.reconcile_asked, t.kill_sent),
            (0, None, None)
        );
        o.on_event(&Event::Offers(vec![pb::Offer {
            id: "o2".into(),
            ..Default::default()
        }]));
        o.on_event(&Event::Disconnected);
        assert!(!o.subscribed && o.offers.is_empty());
    }

    #[test]
    fn forgetting_keeps_live_tasks() {
        let mut o = Observed::new();
        o.update(&status(
            "live",
            pb::TaskState::TaskRunning,
            pb::TaskReason::Unspecified,
        ));
        o.update(&status(
            "done",
            pb::TaskState::TaskFinished,
            pb::TaskReason::Unspecified,
        ));
        o.launch_done(&ids(&["never"]), &LaunchOutcome::Refused("no".into()));
        o.forget_unwanted(|_| false);
        assert_eq!(o.tasks.keys().collect::<Vec<_>>(), ["live"]);
    }
}
