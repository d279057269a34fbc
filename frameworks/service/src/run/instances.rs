//! The instances of every app: the slots deployments create, each kept
//! running by launching one attempt after another. Pure: time is an
//! argument, statuses come in as data, and [`Instances::intent`] says what
//! the SDK runtime should run and stop.
//!
//! A slot's life:
//!
//! - **Created** by a deployment's `Launch` ([`Instances::create`]), for a
//!   config version of its app. Its next attempt is wanted at once.
//! - **Launched**: the runtime is about to launch the attempt's task
//!   ([`Instances::launching`], from `before_launch`); the slot holds its
//!   [`Run`] from then on. Statuses update the run; `TASK_RUNNING` with
//!   the agent's health verdict makes the instance healthy (or not).
//! - **Ended** (any terminal state): a failure. The next attempt is wanted
//!   after the app's backoff (`backoffSeconds × backoffFactor^(n−1)`, at
//!   most `maxLaunchDelaySeconds`; reset once an attempt got healthy, or
//!   running when the app has no health check).
//! - **Unhealthy**: the agent says its health check failed: the instance
//!   is no longer healthy (not routed, not counted). The agent kills the
//!   task after `maxConsecutiveFailures` failures in a row (never for 0);
//!   that end is a failure, and the slot moves on to its next attempt
//!   after the backoff, as Marathon does.
//! - **Unreachable** (its agent is partitioned): kept as it is for
//!   `unreachableStrategy.inactiveAfterSeconds`, then replaced by a new
//!   attempt. The old task is remembered until `expungeAfterSeconds` after
//!   it became unreachable: if it comes back running by then, the slot
//!   takes it back and the replacement is killed (Marathon's default
//!   `killSelection`, the youngest goes). Once expunged it is forgotten
//!   and killed if it ever comes back. With `unreachableStrategy:
//!   "disabled"` it is never replaced. Remembered tasks are not stored: a
//!   framework that failed over kills them when they come back.
//! - **Killed** by a deployment's `Kill`: with `drain`, first only taken
//!   out of the router ([`Instances::drained`] ends the drain), then its
//!   task is killed; the slot goes when the task's end arrives.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_proto as pb;
use berth_sdk::runtime::{Place, Wanted};
use berth_sdk::{AgentId, TaskId};

use crate::app::{AppVersion, Backoff, UnreachableStrategy};
use crate::deploy::{Instance, InstanceState};
use crate::run::task::{host_ports, instance_task};
use crate::time::Timestamp;

/// The current attempt of a slot, once launched.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Run {
    /// Its task.
    pub task_id: String,
    /// The agent it was launched on.
    pub agent_id: String,
    /// The host ports it got, in the app's port order.
    pub ports: Vec<u16>,
    /// The last state reported; `None` before the first status.
    pub state: Option<pb::TaskState>,
    /// Since when it has been healthy without interruption.
    pub healthy_since: Option<Timestamp>,
    /// Since when its agent has been unreachable.
    pub unreachable_since: Option<Timestamp>,
    /// Whether its readiness check passed (apps with one).
    pub ready: bool,
}

/// The last attempt of an app that failed: ended without being killed, or
/// killed for failing its health check (Marathon's `lastTaskFailure`).
/// Kept in memory only: a restarted framework starts without one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskFailure {
    /// The failed task.
    pub task_id: String,
    /// The agent it ran on (empty if it never reached one).
    pub agent_id: String,
    /// Its last state (`TaskRunning` when its health check failed).
    pub state: pb::TaskState,
    /// Why, for people: the agent's message, the exit code.
    pub message: String,
    /// The config version it ran.
    pub version: Timestamp,
    /// When the failure was seen.
    pub at: Timestamp,
}

impl TaskFailure {
    fn of(
        status: &pb::TaskStatus,
        run: &Run,
        state: pb::TaskState,
        version: Timestamp,
        at: Timestamp,
    ) -> TaskFailure {
        let message = match (status.message.is_empty(), status.exit_code) {
            (false, _) => status.message.clone(),
            (true, Some(code)) => format!("exited with status {code}"),
            (true, None) => state.as_str_name().to_owned(),
        };
        TaskFailure {
            task_id: run.task_id.clone(),
            agent_id: run.agent_id.clone(),
            state,
            message,
            version,
            at,
        }
    }
}

/// Where a slot is in being killed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Killing {
    /// Out of the router, its in-flight requests finishing, since then.
    Draining(Timestamp),
    /// Its task is to be killed; the slot goes when the task has ended.
    Now,
}

/// One instance of an app.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Slot {
    /// The app's id.
    pub app: String,
    /// The config version it runs.
    pub version: Timestamp,
    /// The attempt to launch next, or the one running.
    pub attempt: u32,
    /// When the slot was created (Marathon's `killSelection` order).
    pub created_at: Timestamp,
    /// The current attempt, once launched.
    pub run: Option<Run>,
    /// Attempts that ended in a row without getting healthy.
    pub failures: u32,
    /// The next attempt is not launched before then (backoff).
    pub not_before: Timestamp,
    /// Being killed, if it is.
    pub killing: Option<Killing>,
}

/// What a status update meant.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Seen {
    /// Not a task of any slot (an old attempt, a stray): nothing changed.
    Unknown,
    /// The instance's state changed; the deployments should look again.
    Changed {
        /// The instance.
        instance: String,
    },
    /// A killed instance's task ended: the slot is gone.
    Gone {
        /// The instance.
        instance: String,
    },
}

/// A task replaced after its agent was unreachable for
/// `inactiveAfterSeconds`, not yet expunged.
#[derive(Clone, Debug, PartialEq, Eq)]
struct Inactive {
    /// The slot it ran for.
    slot: String,
    /// Its run as it was when replaced.
    run: Run,
    /// When it is expunged: forgotten, and killed if it comes back.
    expunge_at: Timestamp,
}

/// Every app's instances.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Instances {
    slots: BTreeMap<String, Slot>,
    /// Tasks to kill that no slot runs any more (unhealthy, replaced after
    /// an unreachable agent), with their agent.
    strays: BTreeMap<String, String>,
    /// Replaced tasks of unreachable agents that the slot takes back if
    /// they come back running before they are expunged, by task id.
    inactive: BTreeMap<String, Inactive>,
    /// Slots whose stored record is out of date (changed or gone).
    dirty: std::collections::BTreeSet<String>,
    /// The slots of each app (an index of `slots`, so that one app's work
    /// does not scan every app's instances).
    by_app: BTreeMap<String, BTreeSet<String>>,
    /// The last failed attempt of each app, by app id.
    failures: BTreeMap<String, TaskFailure>,
}

/// The delay before attempt number `failures + 1` after `failures` ended
/// in a row.
#[must_use]
pub fn backoff(policy: &Backoff, failures: u32) -> Duration {
    if failures == 0 {
        return Duration::ZERO;
    }
    let factor = policy.factor.to_f64().max(1.0);
    let exp = i32::try_from(failures - 1).unwrap_or(i32::MAX);
    let secs = policy.initial.as_secs_f64() * factor.powi(exp);
    let max = policy.max_launch_delay.as_secs_f64();
    Duration::from_secs_f64(if secs.is_finite() { secs.min(max) } else { max })
}

/// The instance id of a task id made by [`crate::run::task::task_id`].
fn instance_of(task_id: &str) -> Option<&str> {
    let mut parts = task_id.rsplitn(3, '.');
    let _attempt = parts.next()?;
    parts.next()
}

impl Instances {
    /// Every slot, by instance id.
    #[must_use]
    pub fn slots(&self) -> &BTreeMap<String, Slot> {
        &self.slots
    }

    /// The slots of `app`, by instance id.
    pub fn of_app<'a>(&'a self, app: &'a str) -> impl Iterator<Item = (&'a String, &'a Slot)> {
        self.by_app
            .get(app)
            .into_iter()
            .flatten()
            .filter_map(|id| self.slots.get_key_value(id))
    }

    /// The app of the slot whose attempt `task_id` is, if there is one.
    #[must_use]
    pub fn app_of_task(&self, task_id: &str) -> Option<&str> {
        let slot = self.slots.get(instance_of(task_id)?)?;
        Some(slot.app.as_str())
    }

    /// The last failed attempt of `app`, if one failed.
    #[must_use]
    pub fn last_failure(&self, app: &str) -> Option<&TaskFailure> {
        self.failures.get(app)
    }

    /// Forgets `app`'s last failure (the app is gone).
    pub fn forget_failure(&mut self, app: &str) {
        self.failures.remove(app);
    }

    /// Puts back a slot read from the store.
    pub fn restore(&mut self, id: String, slot: Slot) {
        self.insert(id, slot);
    }

    /// Adds (or replaces) slot `id`, keeping the index by app.
    fn insert(&mut self, id: String, slot: Slot) {
        if let Some(old) = self.slots.get(&id)
            && old.app != slot.app
        {
            self.unindex(&id);
        }
        self.by_app
            .entry(slot.app.clone())
            .or_default()
            .insert(id.clone());
        self.slots.insert(id, slot);
    }

    /// Removes slot `id` and its place in the index.
    fn remove(&mut self, id: &str) {
        self.unindex(id);
        self.slots.remove(id);
    }

    fn unindex(&mut self, id: &str) {
        let Some(app) = self.slots.get(id).map(|s| s.app.clone()) else {
            return;
        };
        if let Some(ids) = self.by_app.get_mut(&app) {
            ids.remove(id);
            if ids.is_empty() {
                self.by_app.remove(&app);
            }
        }
    }

    /// The slots whose stored record must be written again (`Some`) or
    /// deleted (`None`) since the last call.
    pub fn take_dirty(&mut self) -> Vec<(String, Option<&Slot>)> {
        let dirty = std::mem::take(&mut self.dirty);
        dirty
            .into_iter()
            .map(|id| {
                let slot = self.slots.get(&id);
                (id, slot)
            })
            .collect()
    }

    /// Creates slots `ids` of `app` at config `version`.
    pub fn create(&mut self, app: &str, version: Timestamp, ids: &[String], now: Timestamp) {
        for id in ids {
            self.dirty.insert(id.clone());
            if self.slots.contains_key(id) {
                continue;
            }
            let slot = Slot {
                app: app.to_owned(),
                version,
                attempt: 1,
                created_at: now,
                run: None,
                failures: 0,
                not_before: now,
                killing: None,
            };
            self.insert(id.clone(), slot);
        }
    }

    /// Starts killing `instance`: draining first, or at once.
    pub fn kill(&mut self, instance: &str, drain: bool, now: Timestamp) {
        self.dirty.insert(instance.to_owned());
        if let Some(s) = self.slots.get_mut(instance) {
            let live = s.run.as_ref().is_some_and(|r| !ended(r.state));
            s.killing = Some(if drain && live {
                Killing::Draining(now)
            } else {
                Killing::Now
            });
            if !live {
                // Nothing runs: the slot goes at once.
                if let Some(run) = s.run.take()
                    && run.state.is_none()
                {
                    // Launched, never heard of: kill it if it shows up.
                    self.strays.insert(run.task_id, run.agent_id);
                }
                self.remove(instance);
            }
        }
    }

    /// A draining instance has no request in flight any more (or its drain
    /// timed out): its task is killed now.
    pub fn drained(&mut self, instance: &str) {
        if let Some(s) = self.slots.get_mut(instance)
            && matches!(s.killing, Some(Killing::Draining(_)))
        {
            s.killing = Some(Killing::Now);
            self.dirty.insert(instance.to_owned());
        }
    }

    /// The runtime is about to launch `tasks`: their slots hold them now.
    pub fn launching<'v>(
        &mut self,
        tasks: &[pb::TaskInfo],
        versions: &dyn Fn(&str, Timestamp) -> Option<&'v AppVersion>,
    ) {
        for t in tasks {
            let Some(id) = instance_of(&t.task_id) else {
                continue;
            };
            let Some(slot) = self.slots.get_mut(id) else {
                continue;
            };
            self.dirty.insert(id.to_owned());
            let ports = host_ports_of(t, versions(&slot.app, slot.version));
            slot.run = Some(Run {
                task_id: t.task_id.clone(),
                agent_id: t.agent_id.clone(),
                ports,
                state: None,
                healthy_since: None,
                unreachable_since: None,
                ready: false,
            });
        }
    }

    /// A status update of one of the framework's tasks.
    pub fn on_status(
        &mut self,
        status: &pb::TaskStatus,
        backoff_of: &dyn Fn(&str) -> Backoff,
        health_checked: &dyn Fn(&str) -> bool,
        now: Timestamp,
    ) -> Seen {
        let state = pb::TaskState::try_from(status.state).unwrap_or(pb::TaskState::Unspecified);
        if self.strays.contains_key(&status.task_id) {
            if ended(Some(state)) {
                self.strays.remove(&status.task_id);
            }
            return Seen::Unknown;
        }
        if self.inactive.contains_key(&status.task_id) {
            return self.inactive_status(status, state, now);
        }
        let Some(id) = instance_of(&status.task_id).map(str::to_owned) else {
            return Seen::Unknown;
        };
        let Some(slot) = self.slots.get_mut(&id) else {
            return Seen::Unknown;
        };
        let Some(run) = slot.run.as_mut().filter(|r| r.task_id == status.task_id) else {
            return Seen::Unknown;
        };
        run.state = Some(state);
        if !status.agent_id.is_empty() {
            run.agent_id.clone_from(&status.agent_id);
        }
        if ended(Some(state)) {
            self.dirty.insert(id.clone());
            if slot.killing.is_some() {
                self.remove(&id);
                return Seen::Gone { instance: id };
            }
            let failure = TaskFailure::of(status, run, state, slot.version, now);
            self.failures.insert(slot.app.clone(), failure);
            slot.failures = slot.failures.saturating_add(1);
            slot.not_before = now.plus(backoff(&backoff_of(&slot.app), slot.failures));
            slot.run = None;
            slot.attempt += 1;
            return Seen::Changed { instance: id };
        }
        if state == pb::TaskState::TaskUnreachable {
            run.unreachable_since.get_or_insert(now);
            run.healthy_since = None;
            return Seen::Changed { instance: id };
        }
        run.unreachable_since = None;
        if state == pb::TaskState::TaskRunning {
            let checked = health_checked(&slot.app);
            match status.healthy {
                Some(true) => {
                    run.healthy_since.get_or_insert(now);
                    if slot.failures != 0 {
                        slot.failures = 0;
                        self.dirty.insert(id.clone());
                    }
                }
                // Failing its health check: no longer healthy (routed,
                // counted). The agent kills it after the app's
                // `maxConsecutiveFailures` failures in a row (never for 0);
                // that end is a failure like any other, relaunched after
                // the backoff.
                Some(false) => run.healthy_since = None,
                None if !checked => {
                    run.healthy_since.get_or_insert(now);
                    if slot.failures != 0 {
                        slot.failures = 0;
                        self.dirty.insert(id.clone());
                    }
                }
                None => {}
            }
        }
        Seen::Changed { instance: id }
    }

    /// A status of a task replaced after its agent was unreachable, not
    /// yet expunged: running again, its slot takes it back and the
    /// replacement is killed (or it is killed when its slot is gone or
    /// being killed); ended, it is forgotten.
    fn inactive_status(
        &mut self,
        status: &pb::TaskStatus,
        state: pb::TaskState,
        now: Timestamp,
    ) -> Seen {
        if ended(Some(state)) {
            self.inactive.remove(&status.task_id);
            return Seen::Unknown;
        }
        if state != pb::TaskState::TaskRunning {
            return Seen::Unknown;
        }
        let Some(back) = self.inactive.remove(&status.task_id) else {
            return Seen::Unknown;
        };
        let Some(slot) = self
            .slots
            .get_mut(&back.slot)
            .filter(|s| s.killing.is_none())
        else {
            self.strays.insert(back.run.task_id, back.run.agent_id);
            return Seen::Unknown;
        };
        if let Some(replacement) = slot.run.take() {
            self.strays
                .insert(replacement.task_id, replacement.agent_id);
        }
        // The slot's next attempt stays past the replacement's, so that no
        // task id is used twice.
        let mut run = back.run;
        run.state = Some(state);
        run.unreachable_since = None;
        match status.healthy {
            Some(true) => {
                run.healthy_since.get_or_insert(now);
            }
            Some(false) => run.healthy_since = None,
            None => {}
        }
        slot.run = Some(run);
        slot.not_before = now;
        self.dirty.insert(back.slot.clone());
        Seen::Changed {
            instance: back.slot,
        }
    }

    /// Replaces the attempts whose agent has been unreachable for longer
    /// than their app allows, and expunges replaced ones past
    /// `expungeAfterSeconds`; call before [`Instances::intent`].
    pub fn replace_unreachable(
        &mut self,
        strategy_of: &dyn Fn(&str) -> UnreachableStrategy,
        now: Timestamp,
    ) {
        let expunged: Vec<String> = self
            .inactive
            .iter()
            .filter(|(_, i)| now >= i.expunge_at)
            .map(|(task, _)| task.clone())
            .collect();
        for task in expunged {
            if let Some(i) = self.inactive.remove(&task) {
                self.strays.insert(task, i.run.agent_id);
            }
        }
        for (id, slot) in &mut self.slots {
            let Some(run) = &slot.run else { continue };
            let Some(since) = run.unreachable_since else {
                continue;
            };
            let UnreachableStrategy::Enabled {
                inactive_after,
                expunge_after,
            } = strategy_of(&slot.app)
            else {
                continue;
            };
            if now.since(since) < inactive_after || slot.killing.is_some() {
                continue;
            }
            if let Some(run) = slot.run.take() {
                let expunge_at = since.plus(expunge_after);
                if now < expunge_at {
                    let inactive = Inactive {
                        slot: id.clone(),
                        run,
                        expunge_at,
                    };
                    self.inactive.insert(inactive.run.task_id.clone(), inactive);
                } else {
                    self.strays.insert(run.task_id, run.agent_id);
                }
            }
            self.dirty.insert(id.clone());
            slot.attempt += 1;
            slot.not_before = now;
        }
    }

    /// What the SDK runtime should run and stop now. `versions` gives an
    /// app's config version; `places` an agent's view by id, for the
    /// placement rules.
    ///
    /// Called before every decision of the runtime, so linear in the
    /// slots: a task known to be launched (a status came) is never
    /// launched again, so it is wanted by its id and agent alone, without
    /// building its whole task; the agents of an app's other instances
    /// are looked up only for a task to place.
    pub fn intent<'v>(
        &self,
        versions: &dyn Fn(&str, Timestamp) -> Option<&'v AppVersion>,
        places: &BTreeMap<String, Place>,
        now: Timestamp,
    ) -> (Vec<Wanted>, Vec<(TaskId, Option<AgentId>)>) {
        let mut wanted = Vec::new();
        let mut stop = Vec::new();
        let stop_task = |stop: &mut Vec<(TaskId, Option<AgentId>)>, task: &str, agent: &str| {
            if let Ok(t) = TaskId::new(task) {
                stop.push((t, AgentId::new(agent).ok()));
            }
        };
        for (task, agent) in &self.strays {
            stop_task(&mut stop, task, agent);
        }
        // Not to be killed while they may still come back.
        for (task, i) in &self.inactive {
            wanted.push(Wanted::launched(pb::TaskInfo {
                task_id: task.clone(),
                agent_id: i.run.agent_id.clone(),
                ..Default::default()
            }));
        }
        // Slots of one app share a few versions: look each up once.
        let mut known: std::collections::HashMap<(&str, Timestamp), Option<&'v AppVersion>> =
            std::collections::HashMap::new();
        for (id, slot) in &self.slots {
            if slot.killing == Some(Killing::Now) {
                if let Some(run) = &slot.run {
                    stop_task(&mut stop, &run.task_id, &run.agent_id);
                }
                continue;
            }
            let version = *known
                .entry((slot.app.as_str(), slot.version))
                .or_insert_with(|| versions(&slot.app, slot.version));
            let Some(version) = version else {
                continue;
            };
            match &slot.run {
                Some(run) if run.state.is_some() => {
                    wanted.push(Wanted::launched(pb::TaskInfo {
                        task_id: run.task_id.clone(),
                        agent_id: run.agent_id.clone(),
                        ..Default::default()
                    }));
                }
                Some(_) => {
                    let (task, _) = instance_task(version, id, slot.attempt, Vec::new());
                    wanted.push(Wanted::recovered(task));
                }
                None if now >= slot.not_before => {
                    let others: Vec<Place> = self
                        .of_app(&slot.app)
                        .filter(|(other, _)| *other != id)
                        .filter_map(|(_, s)| s.run.as_ref())
                        .filter_map(|r| places.get(&r.agent_id).cloned())
                        .collect();
                    let (task, placement) = instance_task(version, id, slot.attempt, others);
                    wanted.push(Wanted::new(task).placement(placement));
                }
                None => {}
            }
        }
        (wanted, stop)
    }

    /// The instances of `app` as the deployment planner sees them.
    /// `checked` says whether a version has health checks (without them,
    /// a running instance is healthy).
    #[must_use]
    pub fn planner_view(&self, app: &str) -> Vec<Instance> {
        self.of_app(app)
            .filter(|(_, s)| s.killing.is_none())
            .map(|(id, s)| {
                let run = s.run.as_ref();
                let state = match run.and_then(|r| r.state) {
                    Some(pb::TaskState::TaskRunning)
                        if run.is_some_and(|r| r.healthy_since.is_some() && r.ready) =>
                    {
                        InstanceState::Ready
                    }
                    Some(pb::TaskState::TaskRunning)
                        if run.is_some_and(|r| r.healthy_since.is_some()) =>
                    {
                        InstanceState::Healthy
                    }
                    Some(pb::TaskState::TaskRunning) => InstanceState::Running,
                    _ => InstanceState::Staging,
                };
                Instance {
                    id: id.clone(),
                    version: s.version,
                    state,
                    healthy_since: run.and_then(|r| r.healthy_since),
                    launched_at: s.created_at,
                    agent: run.map(|r| r.agent_id.clone()).unwrap_or_default(),
                }
            })
            .collect()
    }

    /// The healthy attempts of `app` whose readiness check has not passed
    /// yet: (instance, its run).
    pub fn unready<'a>(&'a self, app: &'a str) -> impl Iterator<Item = (&'a String, &'a Run)> {
        self.of_app(app)
            .filter(|(_, s)| s.killing.is_none())
            .filter_map(|(id, s)| Some((id, s.run.as_ref()?)))
            .filter(|(_, r)| r.healthy_since.is_some() && !r.ready)
    }

    /// Task `task_id`'s readiness check passed. A later attempt starts
    /// unready again.
    pub fn mark_ready(&mut self, task_id: &str) {
        let Some(id) = instance_of(task_id) else {
            return;
        };
        if let Some(run) = self
            .slots
            .get_mut(id)
            .and_then(|s| s.run.as_mut())
            .filter(|r| r.task_id == task_id)
        {
            run.ready = true;
        }
    }

    /// The earliest time a waiting slot's next attempt falls due after
    /// `now`, for the framework's timer.
    #[must_use]
    pub fn next_due(&self, now: Timestamp) -> Option<Timestamp> {
        self.slots
            .values()
            .filter(|s| s.run.is_none() && s.killing.is_none() && s.not_before > now)
            .map(|s| s.not_before)
            .min()
    }
}

/// Whether a task in `state` has ended (`None`: no status yet).
fn ended(state: Option<pb::TaskState>) -> bool {
    use pb::TaskState as S;
    matches!(
        state,
        Some(
            S::TaskFinished
                | S::TaskFailed
                | S::TaskKilled
                | S::TaskLost
                | S::TaskError
                | S::TaskUnknown
        )
    )
}

/// The host ports a launched task got, in its app's port order.
fn host_ports_of(task: &pb::TaskInfo, version: Option<&AppVersion>) -> Vec<u16> {
    let env = task.command.as_ref().map(|c| &c.env);
    let dynamic: Vec<u16> = (0..)
        .map_while(|i| env.and_then(|e| e.get(&format!("PORT{i}")))?.parse().ok())
        .collect();
    let Some(v) = version else { return dynamic };
    let mut next = dynamic.into_iter();
    host_ports(&v.definition)
        .into_iter()
        .filter_map(|p| p.or_else(|| next.next()))
        .collect()
}

#[cfg(test)]
mod tests;
