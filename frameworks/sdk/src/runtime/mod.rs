//! The framework runtime: say what should run, and let the runtime make it
//! so.
//!
//! Writing a framework on the bare SDK means handling every event and every
//! call's failure yourself: which offers are void after a re-subscription,
//! whether an accept that timed out launched its tasks, when to suppress.
//! The runtime does that for you, in the shape of neon's storage
//! controller reconciler and Nomad's plan:
//!
//! ```text
//!  your code ──► Intent (the tasks you want, each with spec and id)
//!                  │
//!  events ──► Observed (offers held, last statuses, launches not yet
//!                  │    confirmed, reconciliations in flight)
//!                  ▼
//!     decide(intent, observed, policy, now) -> Decision { actions }   pure
//!                  │
//!                  ▼
//!         Runtime::run executes the actions (the only part with IO)
//! ```
//!
//! - [`Intent`]: the [`Wanted`] tasks, in launch priority order. A task id
//!   is launched at most once; a launched task the intent stops naming is
//!   killed. Retrying work means wanting a task with a new id.
//! - [`Observed`]: what the runtime knows, changed only by events and the
//!   outcomes of its own calls (pure methods, replayable in tests).
//! - [`decide`]: the pure function; [`Action`]s to reconcile, kill, give
//!   up, launch into offers, decline with a filter, publish pending work,
//!   suppress, revive. Its unit tests assert the exact actions.
//! - [`Runtime`]: subscribes (through [`subscribe`]),
//!   feeds events into [`Observed`], calls [`decide`] and executes the
//!   actions with the [`Framework`] handle, and calls the
//!   framework's [`Scheduler`] hooks.
//!
//! # Guarantees
//!
//! - **No task is launched twice.** An accept whose outcome is unknown
//!   ([`SdkError::outcome_unknown`](crate::SdkError::outcome_unknown), or
//!   `FAILED_PRECONDITION`: the task may exist already) is not sent again:
//!   the task is reconciled, and launched again only after the master
//!   answers `TASK_UNKNOWN` for it to a question asked after that launch.
//!   The runtime subscribes partition-aware for that answer.
//! - **State is saved before the actions that depend on it.**
//!   [`Scheduler::before_launch`] runs (and must have saved that the tasks
//!   may be launched) before their accept is sent; [`Scheduler::on_update`]
//!   runs (and must have saved what the update changed) before the update
//!   is acknowledged and before the next decision. A hook that fails stops
//!   the runtime with [`RuntimeError::Framework`]: fail closed.
//! - **A restart is not a special path.** Give the tasks you saved as
//!   possibly launched as [`Wanted::recovered`]: they are reconciled before
//!   anything else and launched only if the master does not have them. The
//!   framework id ([`Scheduler::on_subscribed`]) and a non-zero failover
//!   timeout let the new process resume the old framework; the SDK then
//!   also asks the master for all its tasks, and tasks the intent does not
//!   name are killed.
//! - **Re-subscription** (master failover) voids held offers, forgets
//!   answers due on the old stream, sends kills and reconciliations again
//!   and says again whether offers are to be suppressed (a master may keep
//!   a framework's suppression across a re-subscription, a new leader
//!   does not).
//! - **Acknowledgements** are the runtime's: an update is acknowledged
//!   after [`Scheduler::on_update`] returned `Ok`, never before, so an
//!   update whose effects could not be saved is sent again by its agent.
//!
//! What it is not: it does not store anything itself, and it does not
//! choose task ids, retries or backoff for you; the intent does.
//!
//! # Example
//!
//! ```no_run
//! use berth_sdk::runtime::{Control, Intent, Runtime, Scheduler, Wanted};
//! use berth_sdk::{BoxError, FrameworkConfig, proto, shell_task};
//!
//! /// Runs one task to its end.
//! struct Once {
//!     task: proto::TaskInfo,
//!     ended: bool,
//! }
//!
//! impl Scheduler for Once {
//!     fn intent(&self) -> Intent {
//!         let tasks = if self.ended { vec![] } else { vec![Wanted::new(self.task.clone())] };
//!         Intent::new(tasks)
//!     }
//!     async fn on_update(&mut self, status: &proto::TaskStatus) -> Result<Control, BoxError> {
//!         self.ended = status.state().is_terminal();
//!         Ok(if self.ended { Control::Teardown } else { Control::Continue })
//!     }
//!     async fn before_launch(&mut self, _tasks: &[proto::TaskInfo]) -> Result<(), BoxError> {
//!         Ok(()) // a framework that survives restarts saves the ids here
//!     }
//! }
//!
//! # async fn run() -> Result<(), Box<dyn std::error::Error>> {
//! let task = shell_task("once-1", "once", "echo hi", "cpus:0.1;mem:32")?;
//! let runtime = Runtime::new(vec!["127.0.0.1:5050".into()], FrameworkConfig::new("once"));
//! runtime.run(&mut Once { task, ended: false }).await?;
//! # Ok(())
//! # }
//! ```
//!
//! `examples/runtime_jobs.rs` is a complete framework on the runtime.

mod decide;
mod observed;
pub mod spread;
#[cfg(test)]
mod tests;

use std::future::Future;
use std::time::Instant;

use berth_proto as pb;
use tokio::task::JoinSet;

pub use decide::{Action, Constraint, Decision, Intent, Policy, Prior, Wanted, decide};
pub use observed::{
    LaunchOutcome, Observed, REASON_RECONCILIATION, TaskPhase, TaskView, UpdateMeaning,
};
pub use spread::{Place, Placement, Rule};

use crate::error::{BoxError, RuntimeError};
use crate::{
    AgentId, ErrorKind, Event, Framework, FrameworkConfig, OfferId, Roles, SdkError, TaskId,
    subscribe,
};

/// Most events followed between two decisions.
const EVENT_BATCH: usize = 256;

/// What the framework wants the runtime to do next, as its hooks say.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Control {
    /// Go on.
    Continue,
    /// Stop the runtime and leave the framework registered: its tasks run
    /// on for the failover timeout, for a new process to resume.
    Stop,
    /// Tear the framework down (the master kills all its tasks) and stop.
    Teardown,
}

/// How [`Runtime::run`] ended without an error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stopped {
    /// [`Control::Stop`]: the framework stays registered.
    Left,
    /// [`Control::Teardown`]: the framework is gone.
    TornDown,
}

/// The framework's side of the runtime: its intent and its hooks.
///
/// The hooks run on the runtime's task, one at a time; while one runs, no
/// action is executed. Updates are delivered at least once: `on_update`
/// must accept the same update twice.
pub trait Scheduler: Send {
    /// The tasks the framework wants now. Called before every decision;
    /// cheap to call.
    fn intent(&self) -> Intent;

    /// A status update of one of the framework's tasks (or a `TASK_ERROR`
    /// of a task the runtime gave up on, see [`Action::GiveUp`]). Save what
    /// it changes before returning `Ok`: the update is acknowledged after.
    ///
    /// # Errors
    /// Any error stops the runtime ([`RuntimeError::Framework`]); the
    /// update is not acknowledged.
    fn on_update(
        &mut self,
        status: &pb::TaskStatus,
    ) -> impl Future<Output = Result<Control, BoxError>> + Send;

    /// `tasks` are about to be launched. Save that they may be running
    /// before returning `Ok` (after a restart, want them with
    /// [`Wanted::recovered`]).
    ///
    /// # Errors
    /// Any error stops the runtime; nothing is launched.
    fn before_launch(
        &mut self,
        tasks: &[pb::TaskInfo],
    ) -> impl Future<Output = Result<(), BoxError>> + Send;

    /// Subscribed (again) as `framework_id`; save it to resume the
    /// framework after a restart. The default does nothing.
    ///
    /// # Errors
    /// Any error stops the runtime.
    fn on_subscribed(
        &mut self,
        framework_id: &str,
    ) -> impl Future<Output = Result<(), BoxError>> + Send {
        let _ = framework_id;
        async { Ok(()) }
    }

    /// Completes when the intent changed for a reason of the framework's
    /// own (an API call, a timer), or when it wants to stop. Must be
    /// cancel-safe: the runtime drops it whenever an event comes first, so
    /// it should only wait (receive from a channel, sleep until a timer)
    /// and keep what it received; do the work in
    /// [`Scheduler::on_changed`]. The default never completes.
    fn changed(&mut self) -> impl Future<Output = Control> + Send {
        std::future::pending()
    }

    /// Runs after [`Scheduler::changed`] completed with
    /// [`Control::Continue`], and is never cancelled: handle what `changed`
    /// received (a request, a timer that fell due) and save what it
    /// changes before returning. The next decision follows. The default
    /// does nothing.
    ///
    /// # Errors
    /// Any error stops the runtime.
    fn on_changed(&mut self) -> impl Future<Output = Result<Control, BoxError>> + Send {
        async { Ok(Control::Continue) }
    }
}

/// Runs a [`Scheduler`] against a berth cluster; see the
/// [module docs](self).
#[derive(Debug, Clone)]
pub struct Runtime {
    masters: Vec<String>,
    config: FrameworkConfig,
    policy: Policy,
}

/// The settings of `config` the caller made explicitly that the runtime
/// overrides (partition awareness off, automatic acknowledgement on).
fn overridden(config: &FrameworkConfig) -> Vec<&'static str> {
    let mut out = Vec::new();
    if !config.partition_aware && config.explicit.contains(&"partition_aware") {
        out.push("partition_aware");
    }
    if config.auto_acknowledge && config.explicit.contains(&"auto_acknowledge") {
        out.push("auto_acknowledge");
    }
    out
}

/// Reports which step of the loop an error of the framework came from.
fn framework_error(during: &'static str) -> impl FnOnce(BoxError) -> RuntimeError {
    move |source| RuntimeError::Framework { during, source }
}

impl Runtime {
    /// A runtime for the framework `config` describes, reaching the
    /// cluster through `masters`. The runtime subscribes partition-aware
    /// (it needs `TASK_UNKNOWN` to tell a launch that did not happen) and
    /// acknowledges updates itself; those two settings of `config` are
    /// overridden, and a warning names each one the caller set otherwise.
    #[must_use]
    pub fn new(masters: Vec<String>, config: FrameworkConfig) -> Self {
        for setting in overridden(&config) {
            tracing::warn!(
                "the framework runtime overrides FrameworkConfig::{setting}: it subscribes \
                 partition-aware and acknowledges updates itself"
            );
        }
        Runtime {
            masters,
            config: config.partition_aware(true).auto_acknowledge(false),
            policy: Policy::default(),
        }
    }

    /// Uses `policy` instead of [`Policy::default`].
    #[must_use]
    pub fn policy(mut self, policy: Policy) -> Self {
        self.policy = policy;
        self
    }

    /// Subscribes and runs `scheduler` until a hook says stop, the
    /// framework is removed, or a hook fails.
    ///
    /// # Errors
    /// [`RuntimeError::Sdk`] if the subscription cannot be made or the
    /// teardown fails; [`RuntimeError::Removed`] if the master removed the
    /// framework; [`RuntimeError::Framework`] if a hook failed.
    pub async fn run<S: Scheduler>(self, scheduler: &mut S) -> Result<Stopped, RuntimeError> {
        self.connect().await?.run(scheduler).await
    }

    /// Subscribes, without running anything yet: a framework that must
    /// know it reached the cluster before it goes on (and its framework
    /// id) connects first, then [`Connected::run`]s.
    ///
    /// # Errors
    /// [`RuntimeError::Sdk`] if the subscription cannot be made (for a
    /// stored framework id the masters removed, its kind is
    /// [`SdkError::Removed`]).
    pub async fn connect(self) -> Result<Connected, RuntimeError> {
        let (framework, events) = subscribe(self.masters.clone(), self.config.clone()).await?;
        Ok(Connected {
            framework,
            events,
            policy: self.policy,
            call_timeout: self.config.call_timeout,
        })
    }
}

/// A subscribed [`Runtime`], not running yet (see [`Runtime::connect`]).
#[derive(Debug)]
pub struct Connected {
    framework: Framework,
    events: crate::Events,
    policy: Policy,
    call_timeout: std::time::Duration,
}

impl Connected {
    /// The framework id the masters gave (or resumed).
    #[must_use]
    pub fn framework_id(&self) -> String {
        self.framework.id()
    }

    /// Tears the framework down without running it (the master kills its
    /// tasks).
    ///
    /// # Errors
    /// [`RuntimeError::Sdk`] if the teardown fails.
    pub async fn teardown(self) -> Result<(), RuntimeError> {
        Ok(self.framework.teardown().await?)
    }

    /// Runs `scheduler` until a hook says stop, the framework is removed,
    /// or a hook fails; see [`Runtime::run`].
    ///
    /// # Errors
    /// As [`Runtime::run`].
    pub async fn run<S: Scheduler>(self, scheduler: &mut S) -> Result<Stopped, RuntimeError> {
        let Connected {
            framework,
            mut events,
            policy,
            call_timeout,
        } = self;
        let mut exec = Executor {
            framework,
            policy,
            observed: Observed::new(),
            acks: JoinSet::new(),
        };
        let result = exec.run(scheduler, &mut events).await;
        exec.finish_acks(call_timeout).await;
        match result? {
            Control::Teardown => {
                exec.framework.teardown().await?;
                Ok(Stopped::TornDown)
            }
            Control::Stop | Control::Continue => Ok(Stopped::Left),
        }
    }
}

/// The state of one run: the handle, the observed state, acks in flight.
struct Executor {
    framework: Framework,
    policy: Policy,
    observed: Observed,
    acks: JoinSet<()>,
}

impl Executor {
    /// The loop: decide, execute, wait for an event, a change of intent,
    /// or a retry falling due. Returns how the framework asked to stop.
    async fn run<S: Scheduler>(
        &mut self,
        scheduler: &mut S,
        events: &mut crate::Events,
    ) -> Result<Control, RuntimeError> {
        loop {
            let (control, again, wake_at) = self.step(scheduler).await?;
            if control != Control::Continue {
                return Ok(control);
            }
            if again {
                continue;
            }
            let sleep = async {
                match wake_at {
                    Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                    None => std::future::pending().await,
                }
            };
            let control = tokio::select! {
                event = events.next() => match event {
                    Some(event) => self.on_events(scheduler, events, event).await?,
                    None => return Err(RuntimeError::Ended),
                },
                control = scheduler.changed() => match control {
                    Control::Continue => scheduler
                        .on_changed()
                        .await
                        .map_err(framework_error("handling a change of its own"))?,
                    other => other,
                },
                () = sleep => Control::Continue,
            };
            if control != Control::Continue {
                return Ok(control);
            }
            while let Some(done) = self.acks.try_join_next() {
                drop(done);
            }
        }
    }

    /// Decides once and executes the decision. Returns what a hook asked,
    /// whether to decide again at once (an action changed what is
    /// known), and when to wake up for a retry.
    async fn step<S: Scheduler>(
        &mut self,
        scheduler: &mut S,
    ) -> Result<(Control, bool, Option<Instant>), RuntimeError> {
        let intent = scheduler.intent();
        let named = intent.named_ids();
        self.observed.forget_unwanted(|id| named.contains(id));
        drop(named);
        self.observed.adopt(&intent);
        let decision = decide(&intent, &self.observed, &self.policy, Instant::now());
        let mut again = false;
        for action in decision.actions {
            tracing::debug!(?action, "executing");
            match action {
                Action::Reconcile { tasks } => self.reconcile(tasks).await,
                Action::Kill { task_id, grace } => {
                    if let Err(e) = self.framework.kill(&task_id, grace).await {
                        tracing::warn!(task_id = %task_id, error = %e, "kill failed; sent again later");
                    }
                    self.observed.kill_sent(task_id.as_str(), Instant::now());
                }
                Action::GiveUp { status } => {
                    tracing::warn!(task_id = %status.task_id, reason = %status.message, "giving up on a task");
                    self.observed.give_up(&status);
                    again = true;
                    let control = scheduler
                        .on_update(&status)
                        .await
                        .map_err(framework_error("handling a task it gave up on"))?;
                    if control != Control::Continue {
                        return Ok((control, false, None));
                    }
                }
                Action::Launch { offer_id, tasks } => {
                    again = true;
                    self.launch(scheduler, offer_id, tasks).await?;
                }
                Action::Decline { offer_ids, refuse } => {
                    let spent: Vec<String> = offer_ids.iter().map(ToString::to_string).collect();
                    self.observed.offers_spent(&spent);
                    if let Err(e) = self.framework.decline(offer_ids, refuse).await {
                        tracing::debug!(error = %e, "decline failed; the offers expire");
                    }
                }
                Action::PublishPending { tasks } => {
                    if let Err(e) = self.framework.update_pending(tasks.clone()).await {
                        tracing::debug!(error = %e, "publishing pending work failed");
                    }
                    self.observed.published_pending = Some(tasks);
                }
                Action::Suppress => match self.framework.suppress(Roles::All).await {
                    Ok(()) => {
                        self.observed.suppressed = true;
                        self.observed.suppression_known = true;
                    }
                    Err(e) => tracing::debug!(error = %e, "suppress failed"),
                },
                Action::Revive => match self.framework.revive(Roles::All).await {
                    Ok(()) => {
                        self.observed.suppressed = false;
                        self.observed.suppression_known = true;
                    }
                    Err(e) => tracing::debug!(error = %e, "revive failed"),
                },
            }
        }
        Ok((Control::Continue, again, decision.wake_at))
    }

    async fn reconcile(&mut self, tasks: Vec<(TaskId, Option<AgentId>)>) {
        let ids: Vec<String> = tasks.iter().map(|(t, _)| t.to_string()).collect();
        match self.framework.reconcile(tasks).await {
            Ok(()) => self.observed.reconcile_sent(&ids, Instant::now()),
            Err(e) => {
                tracing::debug!(error = %e, "reconcile failed; asked again later");
                self.observed.reconcile_failed(&ids, Instant::now());
            }
        }
    }

    /// Saves, then sends one launch, and records its outcome.
    async fn launch<S: Scheduler>(
        &mut self,
        scheduler: &mut S,
        offer_id: OfferId,
        tasks: Vec<pb::TaskInfo>,
    ) -> Result<(), RuntimeError> {
        scheduler
            .before_launch(&tasks)
            .await
            .map_err(framework_error("saving a launch"))?;
        let ids = decide::task_ids(&tasks);
        self.observed.launch_sent(&ids);
        self.observed.offers_spent(&[offer_id.to_string()]);
        let refuse = self.policy.refuse;
        let outcome = match self.framework.accept(vec![offer_id], tasks, refuse).await {
            Ok(launched) => {
                LaunchOutcome::Launched(launched.into_iter().map(String::from).collect())
            }
            Err(SdkError::Removed(why)) => return Err(RuntimeError::Removed(why)),
            Err(SdkError::NotSubscribed) => LaunchOutcome::NotSent,
            Err(e) if e.outcome_unknown() || e.kind() == ErrorKind::Conflict => {
                tracing::info!(tasks = ?ids, error = %e, "launch outcome unknown; reconciling");
                LaunchOutcome::Unknown
            }
            Err(e) => {
                tracing::info!(tasks = ?ids, error = %e, "launch refused");
                LaunchOutcome::Refused(e.to_string())
            }
        };
        self.observed.launch_done(&ids, &outcome);
        Ok(())
    }

    /// Follows `first` and the events that have arrived already (up to
    /// [`EVENT_BATCH`]) before the next decision: with many agents, offers
    /// and updates come in bursts, and a decision looks at every task.
    async fn on_events<S: Scheduler>(
        &mut self,
        scheduler: &mut S,
        events: &mut crate::Events,
        first: Event,
    ) -> Result<Control, RuntimeError> {
        let mut control = self.on_event(scheduler, first).await?;
        for _ in 1..EVENT_BATCH {
            if control != Control::Continue {
                break;
            }
            let Some(event) = events.try_next() else {
                break;
            };
            control = self.on_event(scheduler, event).await?;
        }
        Ok(control)
    }

    /// Follows one event; hands updates to the framework and acknowledges
    /// them after.
    async fn on_event<S: Scheduler>(
        &mut self,
        scheduler: &mut S,
        event: Event,
    ) -> Result<Control, RuntimeError> {
        match event {
            Event::Update(status) => {
                let control = match self.observed.update(&status) {
                    UpdateMeaning::Report => scheduler
                        .on_update(&status)
                        .await
                        .map_err(framework_error("handling an update"))?,
                    UpdateMeaning::Internal => Control::Continue,
                };
                if !status.uuid.is_empty() {
                    let framework = self.framework.clone();
                    self.acks.spawn(async move {
                        if let Err(e) = framework.acknowledge(&status).await {
                            tracing::debug!(task_id = %status.task_id, error = %e, "acknowledgement failed; the agent resends");
                        }
                    });
                }
                Ok(control)
            }
            Event::Error(why) => {
                self.observed.on_event(&Event::Error(why.clone()));
                Err(RuntimeError::Removed(why))
            }
            Event::Subscribed {
                ref framework_id, ..
            } => {
                let id = framework_id.clone();
                self.observed.on_event(&event);
                scheduler
                    .on_subscribed(&id)
                    .await
                    .map_err(framework_error("saving the framework id"))?;
                Ok(Control::Continue)
            }
            other => {
                self.observed.on_event(&other);
                Ok(Control::Continue)
            }
        }
    }

    /// Lets acknowledgements in flight finish, within `limit`.
    async fn finish_acks(&mut self, limit: std::time::Duration) {
        let acks = &mut self.acks;
        let all = async { while acks.join_next().await.is_some() {} };
        if tokio::time::timeout(limit, all).await.is_err() {
            tracing::debug!("acknowledgements still in flight; their agents resend");
            self.acks.abort_all();
        }
    }
}
