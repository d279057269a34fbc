//! [`decide`]: the pure function from (intent, observed, now) to actions.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use berth_proto as pb;

use super::observed::{Observed, TaskPhase};
use super::spread::Placement;
use crate::{
    AgentId, OfferId, PackPlan, Strategy, TaskId, pack_offers, pending_tasks, task_resources,
};

/// What the framework knew of a wanted task before the runtime started:
/// whether an earlier run of it may have launched the task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Prior {
    /// Never launched: launch it when it fits.
    #[default]
    New,
    /// An earlier run saved that a launch was about to be sent (see
    /// [`Scheduler::before_launch`](super::Scheduler::before_launch)) and
    /// never heard of it since. The task is reconciled first and launched
    /// only if the master does not have it.
    MaybeLaunched,
    /// An earlier run saw the task in the cluster (an update came). The
    /// task is reconciled first and never launched again: if the master no
    /// longer has it, the answer (`TASK_UNKNOWN`) ends it and is reported
    /// to [`Scheduler::on_update`](super::Scheduler::on_update).
    Launched,
}

/// Where a task may be placed, beyond fitting the offer's resources.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Constraint {
    /// The offer's agent carries the tag: an attribute of that name, or
    /// the tag among the comma-separated values of its `tags` attribute
    /// (how `berth agent --attributes` spells a list of tags).
    Tag(String),
}

impl Constraint {
    /// Whether an agent with `attributes` (an offer's) satisfies the
    /// constraint.
    #[must_use]
    pub fn allows(&self, attributes: &[pb::Attribute]) -> bool {
        match self {
            Constraint::Tag(tag) => attributes.iter().any(|a| {
                a.name == *tag || (a.name == "tags" && a.value.split(',').any(|v| v.trim() == tag))
            }),
        }
    }
}

/// One task the framework wants to run.
#[derive(Debug, Clone, PartialEq)]
pub struct Wanted {
    /// The task; its `task_id` is its identity. A task id is launched at
    /// most once: to run the same work again (a retry), want a task with a
    /// new id.
    pub task: pb::TaskInfo,
    /// What an earlier run of the framework knew of it.
    pub prior: Prior,
    /// Where it may be placed: every constraint must allow the offer.
    pub constraints: Vec<Constraint>,
    /// Placed alone and spread over agents, with host ports and the
    /// framework's rule ([`super::spread`]), instead of packed.
    pub placement: Option<Placement>,
}

impl Wanted {
    /// A task never launched before.
    #[must_use]
    pub fn new(task: pb::TaskInfo) -> Self {
        Wanted {
            task,
            prior: Prior::New,
            constraints: Vec::new(),
            placement: None,
        }
    }

    /// A task that may have been launched by an earlier run of the
    /// framework ([`Prior::MaybeLaunched`]).
    #[must_use]
    pub fn recovered(task: pb::TaskInfo) -> Self {
        Wanted::new(task).prior(Prior::MaybeLaunched)
    }

    /// A task an earlier run of the framework saw in the cluster
    /// ([`Prior::Launched`]).
    #[must_use]
    pub fn launched(task: pb::TaskInfo) -> Self {
        Wanted::new(task).prior(Prior::Launched)
    }

    /// Sets what an earlier run knew of the task.
    #[must_use]
    pub fn prior(mut self, prior: Prior) -> Self {
        self.prior = prior;
        self
    }

    /// Places the task by the spread pass ([`super::spread`]) instead of
    /// packing it.
    #[must_use]
    pub fn placement(mut self, placement: Placement) -> Self {
        self.placement = Some(placement);
        self
    }

    /// Adds placement constraints.
    #[must_use]
    pub fn constraints(mut self, constraints: impl IntoIterator<Item = Constraint>) -> Self {
        self.constraints.extend(constraints);
        self
    }
}

/// What the framework wants running now: its intent. Tasks come first to
/// last in launch priority. A task the cluster runs that the intent no
/// longer names is killed.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Intent {
    /// The wanted tasks, in priority order.
    pub tasks: Vec<Wanted>,
    /// Tasks the framework wants gone that an earlier run may have left
    /// running, as `(task id, agent id)` (agent id may be empty): each is
    /// reconciled if the runtime does not know it, killed while it runs,
    /// and its end reported. Name here what the framework has asked to
    /// stop until that end arrives; a task the runtime saw itself is
    /// killed whether named here or not.
    pub stop: Vec<(TaskId, Option<AgentId>)>,
}

impl Intent {
    /// An intent of `tasks`.
    #[must_use]
    pub fn new(tasks: Vec<Wanted>) -> Self {
        Intent {
            tasks,
            stop: Vec::new(),
        }
    }

    /// Adds tasks to stop ([`Intent::stop`]).
    #[must_use]
    pub fn stopping(mut self, tasks: impl IntoIterator<Item = (TaskId, Option<AgentId>)>) -> Self {
        self.stop.extend(tasks);
        self
    }

    /// Whether the intent wants `task_id` running.
    #[must_use]
    pub fn wants(&self, task_id: &str) -> bool {
        self.tasks.iter().any(|w| w.task.task_id == task_id)
    }

    /// Whether the intent names `task_id`, as wanted or as to stop.
    #[must_use]
    pub fn names(&self, task_id: &str) -> bool {
        self.wants(task_id) || self.stop.iter().any(|(id, _)| id.as_str() == task_id)
    }

    /// The ids of the wanted tasks, for lookups in a loop ([`Intent::wants`]
    /// is linear).
    pub(crate) fn wanted_ids(&self) -> HashSet<&str> {
        self.tasks.iter().map(|w| w.task.task_id.as_str()).collect()
    }

    /// The ids the intent names, wanted or to stop, for lookups in a loop
    /// ([`Intent::names`] is linear).
    pub(crate) fn named_ids(&self) -> HashSet<&str> {
        let mut ids = self.wanted_ids();
        ids.extend(self.stop.iter().map(|(id, _)| id.as_str()));
        ids
    }
}

/// How [`decide`] turns the gap into actions; the same for the life of a
/// runtime.
///
/// Start from [`Policy::default`] and change it with the builder-style
/// setters; the fields are private and the struct `#[non_exhaustive]`, so a
/// new knob is not a breaking change.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub struct Policy {
    /// How tasks are packed into offers.
    pub(crate) strategy: Strategy,
    /// The decline filter while tasks wait (`None`: the master's default
    /// of 5 s).
    pub(crate) refuse: Option<Duration>,
    /// The decline filter when no task waits.
    pub(crate) idle_refuse: Duration,
    /// How long a reconciliation may go unanswered before it is asked
    /// again.
    pub(crate) reconcile_retry: Duration,
    /// How long a killed task may go on before the kill is sent again.
    pub(crate) kill_retry: Duration,
    /// The grace between SIGTERM and SIGKILL of a kill (`None`: the task's
    /// own).
    pub(crate) kill_grace: Option<Duration>,
    /// Launches of one task the master may refuse outright before the
    /// runtime gives up on it (reports `TASK_ERROR`).
    pub(crate) max_refusals: u32,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            strategy: Strategy::FirstFit,
            refuse: None,
            idle_refuse: Duration::from_secs(60),
            reconcile_retry: Duration::from_secs(30),
            kill_retry: Duration::from_secs(30),
            kill_grace: None,
            max_refusals: 3,
        }
    }
}

impl Policy {
    /// Sets how tasks are packed into offers (default
    /// [`Strategy::FirstFit`]).
    #[must_use]
    pub fn strategy(mut self, strategy: Strategy) -> Self {
        self.strategy = strategy;
        self
    }

    /// Sets the decline filter while tasks wait (default `None`: the
    /// master's default of 5 s).
    #[must_use]
    pub fn refuse(mut self, refuse: Option<Duration>) -> Self {
        self.refuse = refuse;
        self
    }

    /// Sets the decline filter when no task waits (default 60 s).
    #[must_use]
    pub fn idle_refuse(mut self, refuse: Duration) -> Self {
        self.idle_refuse = refuse;
        self
    }

    /// Sets how long a reconciliation may go unanswered before it is asked
    /// again (default 30 s).
    #[must_use]
    pub fn reconcile_retry(mut self, retry: Duration) -> Self {
        self.reconcile_retry = retry;
        self
    }

    /// Sets how long a killed task may go on before the kill is sent again
    /// (default 30 s).
    #[must_use]
    pub fn kill_retry(mut self, retry: Duration) -> Self {
        self.kill_retry = retry;
        self
    }

    /// Sets the grace between SIGTERM and SIGKILL of a kill (default
    /// `None`: the task's own).
    #[must_use]
    pub fn kill_grace(mut self, grace: Option<Duration>) -> Self {
        self.kill_grace = grace;
        self
    }

    /// Sets how many launches of one task the master may refuse outright
    /// before the runtime gives up on it and reports `TASK_ERROR` (default
    /// 3).
    #[must_use]
    pub fn max_refusals(mut self, refusals: u32) -> Self {
        self.max_refusals = refusals;
        self
    }
}

/// One thing the runtime does on the framework's behalf.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// Ask the master about these `(task id, agent id)` pairs (agent id may
    /// be empty); the answers come as updates.
    Reconcile {
        /// The tasks to ask about, by id.
        tasks: Vec<(TaskId, Option<AgentId>)>,
    },
    /// Kill a task the framework no longer wants.
    Kill {
        /// The task.
        task_id: TaskId,
        /// SIGTERM to SIGKILL (`None`: the task's own).
        grace: Option<Duration>,
    },
    /// Give up on a task: it cannot be launched (invalid, or refused
    /// [`Policy::max_refusals`] times). The runtime reports `status` (a
    /// `TASK_ERROR` from the framework itself) to the framework as if it
    /// were an update.
    GiveUp {
        /// The status to report.
        status: pb::TaskStatus,
    },
    /// Launch `tasks` in one offer (one accept call). The framework's
    /// [`Scheduler::before_launch`](super::Scheduler::before_launch) runs
    /// first.
    Launch {
        /// The offer.
        offer_id: OfferId,
        /// The tasks, each with the offer's agent id.
        tasks: Vec<pb::TaskInfo>,
    },
    /// Decline offers, filtering them for `refuse`.
    Decline {
        /// The offers.
        offer_ids: Vec<OfferId>,
        /// The filter (`None`: the master's default).
        refuse: Option<Duration>,
    },
    /// Publish the tasks that wait and why (empty: none waits).
    PublishPending {
        /// The pending work.
        tasks: Vec<pb::PendingTask>,
    },
    /// Stop offers: nothing waits.
    Suppress,
    /// Resume offers: tasks wait.
    Revive,
}

/// What [`decide`] returns.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Decision {
    /// The actions, in the order to execute them.
    pub actions: Vec<Action>,
    /// When to decide again even if nothing happens (a retry falls due).
    pub wake_at: Option<Instant>,
}

/// The actions that close the gap between `intent` and `observed` at
/// `now`. Pure and deterministic.
///
/// In this order:
/// 1. reconcile the tasks whose launch outcome is unknown (and, after a
///    restart, the wanted tasks that may have been launched), once per
///    subscription and again after [`Policy::reconcile_retry`];
/// 2. kill the launched tasks the intent no longer names (again after
///    [`Policy::kill_retry`]);
/// 3. give up on wanted tasks that are invalid or were refused
///    [`Policy::max_refusals`] times;
/// 4. pack the wanted tasks known not to be launched into the held offers
///    and launch them, one action per offer;
/// 5. decline the offers that got nothing ([`Policy::refuse`] while tasks
///    wait, [`Policy::idle_refuse`] when none does);
/// 6. publish the tasks that fit in no offer, with why, when that changed;
/// 7. suppress offers when no task waits, revive them when one does (after
///    a re-subscription, whichever applies, once: the master may or may not
///    have kept the framework's suppression).
///
/// A task of unknown launch outcome is never launched: only an answer
/// that the master does not have it makes it launchable again. Nothing is
/// decided while not subscribed.
#[must_use]
pub fn decide(intent: &Intent, observed: &Observed, policy: &Policy, now: Instant) -> Decision {
    let mut decision = Decision::default();
    if !observed.subscribed {
        return decision;
    }
    let wake = |at: Instant, d: &mut Decision| {
        d.wake_at = Some(d.wake_at.map_or(at, |w| w.min(at)));
    };

    // 1. Reconcile.
    let mut ask = Vec::new();
    let due = |asked: Option<Instant>| asked.is_none_or(|t| now >= t + policy.reconcile_retry);
    // The agent the intent names for a task: a wanted task's first.
    let mut agents: HashMap<&str, &str> = intent
        .stop
        .iter()
        .map(|(t, a)| (t.as_str(), a.as_ref().map_or("", AgentId::as_str)))
        .collect();
    agents.extend(
        intent
            .tasks
            .iter()
            .map(|w| (w.task.task_id.as_str(), w.task.agent_id.as_str())),
    );
    let agent_of = |id: &str| agents.get(id).map_or_else(String::new, |a| (*a).to_owned());
    let unseen = intent
        .tasks
        .iter()
        .filter(|w| w.prior != Prior::New)
        .map(|w| w.task.task_id.as_str())
        .chain(intent.stop.iter().map(|(id, _)| id.as_str()));
    for id in unseen {
        if observed.task(id).is_none() {
            ask.push((id.to_owned(), agent_of(id)));
        }
    }
    for (id, view) in &observed.tasks {
        let unanswered = match &view.phase {
            TaskPhase::Unknown => true,
            // Adopted from an earlier run, and not heard of since.
            TaskPhase::Launched { status: None } => view.adopted,
            _ => false,
        };
        if !unanswered {
            continue;
        }
        if due(view.reconcile_asked) {
            ask.push((id.clone(), agent_of(id)));
        } else if let Some(t) = view.reconcile_asked {
            wake(t + policy.reconcile_retry, &mut decision);
        }
    }
    if !ask.is_empty() {
        ask.sort();
        ask.dedup();
        let retry = now + policy.reconcile_retry;
        wake(retry, &mut decision);
        // Ids the master could not take cannot be asked about (a wanted
        // task with one is given up on below).
        let tasks = ask
            .into_iter()
            .filter_map(|(task, agent)| Some((TaskId::new(task).ok()?, AgentId::new(agent).ok())))
            .collect();
        decision.actions.push(Action::Reconcile { tasks });
    }

    // 2. Kill.
    let wanted = intent.wanted_ids();
    for (id, view) in &observed.tasks {
        if !matches!(view.phase, TaskPhase::Launched { .. }) || wanted.contains(id.as_str()) {
            continue;
        }
        match view.kill_sent {
            Some(t) if now < t + policy.kill_retry => wake(t + policy.kill_retry, &mut decision),
            _ => {
                // Known from the master's updates: a valid id.
                if let Ok(task_id) = TaskId::new(id.as_str()) {
                    decision.actions.push(Action::Kill {
                        task_id,
                        grace: policy.kill_grace,
                    });
                }
                wake(now + policy.kill_retry, &mut decision);
            }
        }
    }

    // 3. Give up; collect the tasks that wait.
    let mut waiting: Vec<&Wanted> = Vec::new();
    for w in &intent.tasks {
        let id = &w.task.task_id;
        let launchable = match observed.task(id) {
            None => w.prior == Prior::New,
            Some(view) => view.phase == TaskPhase::NotLaunched,
        };
        if !launchable {
            continue;
        }
        let refusals = observed.task(id).map_or(0, |v| v.refusals);
        let why = match invalid(w) {
            Some(why) => Some(why),
            None if refusals >= policy.max_refusals => Some(format!(
                "the master refused its launch {refusals} times, last: {}",
                observed
                    .task(id)
                    .and_then(|v| v.last_refusal.as_deref())
                    .unwrap_or("no reason given")
            )),
            None => None,
        };
        match why {
            Some(message) => decision.actions.push(Action::GiveUp {
                status: given_up(&w.task, message),
            }),
            None => waiting.push(w),
        }
    }

    // 4.–6. Launch, decline, publish.
    let still_waiting = if observed.offers.is_empty() {
        waiting.len()
    } else {
        let Some(plan) = place(&observed.offers, &waiting, policy.strategy) else {
            // Every task's resources were checked above: packing cannot fail.
            return decision;
        };
        for (offer_id, tasks) in plan.launches {
            decision.actions.push(Action::Launch { offer_id, tasks });
        }
        let idle = plan.unplaced.is_empty();
        if !plan.unused.is_empty() {
            decision.actions.push(Action::Decline {
                offer_ids: plan.unused,
                refuse: if idle {
                    Some(policy.idle_refuse)
                } else {
                    policy.refuse
                },
            });
        }
        let pending = pending_tasks(&observed.offers, &plan.unplaced).unwrap_or_default();
        if observed.published_pending.as_ref() != Some(&pending)
            && !(pending.is_empty() && observed.published_pending.is_none())
        {
            decision
                .actions
                .push(Action::PublishPending { tasks: pending });
        }
        plan.unplaced.len()
    };
    if still_waiting == 0
        && observed.offers.is_empty()
        && observed
            .published_pending
            .as_ref()
            .is_some_and(|p| !p.is_empty())
    {
        decision
            .actions
            .push(Action::PublishPending { tasks: Vec::new() });
    }

    // 7. Suppress or revive.
    // After a (re-)subscription the master's view is not known: say it.
    let known = observed.suppression_known;
    if still_waiting == 0 && (!observed.suppressed || !known) {
        decision.actions.push(Action::Suppress);
    } else if still_waiting > 0 && (observed.suppressed || !known) {
        decision.actions.push(Action::Revive);
    }
    decision
}

/// The `TASK_ERROR` the runtime reports for a task it gave up on.
fn given_up(task: &pb::TaskInfo, message: String) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: task.task_id.clone(),
        state: pb::TaskState::TaskError as i32,
        message,
        source: pb::StatusSource::Master as i32,
        reason: pb::TaskReason::TaskInvalid as i32,
        ..Default::default()
    }
}

/// Why the master would refuse `w`'s task outright, if it would: its own
/// fields, its resources, the least a task may ask for. The same rules the
/// master checks, so a task that breaks them is given up on without a
/// round trip. A task placed by the spread pass is checked as it will be
/// sent: with the health check's port it gets at placement.
fn invalid(w: &Wanted) -> Option<String> {
    let placed;
    let task = match w.placement.as_ref().and_then(|p| p.health_port) {
        Some(_) => {
            let mut t = w.task.clone();
            if let Some(check) = t.health_check.as_mut() {
                for port in [
                    check.http.as_mut().map(|h| &mut h.port),
                    check.tcp.as_mut().map(|t| &mut t.port),
                ]
                .into_iter()
                .flatten()
                {
                    if *port == 0 {
                        *port = 1;
                    }
                }
            }
            placed = t;
            &placed
        }
        None => &w.task,
    };
    if let Err(e) = berth_proto::task::validate_task(task) {
        return Some(e.to_string());
    }
    let resources = match task_resources(task) {
        Ok(r) => r,
        Err(e) => return Some(e.to_string()),
    };
    berth_proto::minimums::check_task_minimums(&task.task_id, &resources, task.container.is_some())
        .err()
        .map(|e| e.to_string())
}

/// Places the waiting tasks into `offers`: first those with a
/// [`Placement`], one by one and spread ([`super::spread`]); then packs the
/// constrained ones, each
/// set of equal constraints into the offers that satisfy them, then the
/// others into the offers left. An offer is used by one set only (one
/// accept per offer). `None` if a task's resources are invalid.
fn place(offers: &[pb::Offer], waiting: &[&Wanted], strategy: Strategy) -> Option<PackPlan> {
    // Spread tasks first: they are placed one by one, and the offers they
    // use are used up.
    let super::spread::Spread {
        mut launches,
        used,
        mut unplaced,
    } = super::spread::place_spread(offers, waiting);
    let mut left: Vec<pb::Offer> = offers
        .iter()
        .filter(|o| !used.contains(&o.id))
        .cloned()
        .collect();
    let mut groups: Vec<(&[Constraint], Vec<pb::TaskInfo>)> = Vec::new();
    let mut free = Vec::new();
    for w in waiting {
        if w.placement.is_some() {
            continue;
        }
        if w.constraints.is_empty() {
            free.push(w.task.clone());
        } else if let Some((_, tasks)) = groups
            .iter_mut()
            .find(|(c, _)| *c == w.constraints.as_slice())
        {
            tasks.push(w.task.clone());
        } else {
            groups.push((w.constraints.as_slice(), vec![w.task.clone()]));
        }
    }
    for (constraints, tasks) in groups {
        let fitting: Vec<pb::Offer> = left
            .iter()
            .filter(|o| constraints.iter().all(|c| c.allows(&o.attributes)))
            .cloned()
            .collect();
        let plan = pack_offers(&fitting, tasks, strategy).ok()?;
        left.retain(|o| !plan.launches.iter().any(|(id, _)| *id == o.id));
        launches.extend(plan.launches);
        unplaced.extend(plan.unplaced);
    }
    let plan = pack_offers(&left, free, strategy).ok()?;
    launches.extend(plan.launches);
    unplaced.extend(plan.unplaced);
    Some(PackPlan {
        launches,
        unused: plan.unused,
        unplaced,
    })
}

/// The ids of `tasks`.
pub(crate) fn task_ids(tasks: &[pb::TaskInfo]) -> Vec<String> {
    tasks.iter().map(|t| t.task_id.clone()).collect()
}
