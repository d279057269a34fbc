//! [`Framework`]: the handle for scheduler calls.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::future::Future;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_proto as pb;
use tokio::sync::watch;

use crate::connection::Client;
use crate::{AgentId, FrameworkConfig, OfferId, Role, SdkError, TaskId};

/// The state of the link to the master, shared by the handle, the event
/// stream and the background driver.
// One instance per framework, behind a mutex: size does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug)]
pub(crate) enum Link {
    /// Subscribed: calls go to `client` with `stream_id`.
    Connected {
        client: Client,
        stream_id: String,
        master_uri: String,
        master_id: String,
    },
    /// The stream was lost; the driver is re-subscribing.
    Disconnected,
    /// The framework is gone for good (removed, torn down, or the event
    /// stream was dropped).
    Removed(String),
}

/// Whether the driver should keep going; see [`Framework::teardown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Normal operation.
    Running,
    /// A teardown call is in flight: a lost stream is expected, not a
    /// reason to re-subscribe yet.
    TearingDown,
    /// Stop the driver: the framework was torn down.
    Stopped,
}

/// What [`Framework`] handles, [`Events`](crate::Events) and the driver
/// share.
#[derive(Debug)]
pub(crate) struct Shared {
    pub(crate) config: FrameworkConfig,
    pub(crate) framework_id: String,
    link: Mutex<Link>,
    /// Counts changes of `link`, so that a call made on one link ends when
    /// that link is lost instead of waiting for its timeout.
    link_changes: watch::Sender<u64>,
    acknowledged: AtomicU64,
    /// Automatic acknowledgements queued but not yet sent.
    pub(crate) acks_queued: AtomicUsize,
    /// Tells the driver to stop (teardown).
    pub(crate) phase: watch::Sender<Phase>,
    /// The pending set last given to [`Framework::update_pending`], for
    /// the driver to publish again after a re-subscription.
    pending: Mutex<Published>,
    /// The tasks believed live: launched through this handle, or reported
    /// in a non-terminal state, and not reported ended since; task id to
    /// agent id (empty until known). The driver reconciles them after a
    /// re-subscription.
    live: Mutex<HashMap<String, String>>,
}

/// The pending set last published (or attempted), and a counter of
/// publications so the driver can tell a newer one from the one it sent.
#[derive(Debug, Default)]
struct Published {
    generation: u64,
    /// `None` until the first [`Framework::update_pending`].
    tasks: Option<Vec<pb::PendingTask>>,
}

impl Shared {
    pub(crate) fn new(config: FrameworkConfig, framework_id: String, link: Link) -> Self {
        Shared {
            config,
            framework_id,
            link: Mutex::new(link),
            link_changes: watch::Sender::new(0),
            acknowledged: AtomicU64::new(0),
            acks_queued: AtomicUsize::new(0),
            phase: watch::Sender::new(Phase::Running),
            pending: Mutex::new(Published::default()),
            live: Mutex::new(HashMap::new()),
        }
    }

    fn live(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.live
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Follows a status update: a task in a terminal state is no longer
    /// live, any other is.
    pub(crate) fn track(&self, status: &pb::TaskStatus) {
        let ended = pb::TaskState::try_from(status.state).is_ok_and(|s| s.is_terminal());
        let mut live = self.live();
        if ended {
            live.remove(&status.task_id);
        } else {
            live.insert(status.task_id.clone(), status.agent_id.clone());
        }
    }

    /// The tasks believed live, as a reconciliation asks about them.
    pub(crate) fn live_tasks(&self) -> Vec<pb::ReconcileTask> {
        let mut tasks: Vec<pb::ReconcileTask> = self
            .live()
            .iter()
            .map(|(task_id, agent_id)| pb::ReconcileTask {
                task_id: task_id.clone(),
                agent_id: agent_id.clone(),
            })
            .collect();
        tasks.sort_by(|a, b| a.task_id.cmp(&b.task_id));
        tasks
    }

    fn published(&self) -> MutexGuard<'_, Published> {
        self.pending
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records `tasks` as the pending set, filling in `since` of each task
    /// without one: the time the task first appeared in a published set,
    /// or `now` (seconds since the Unix epoch). Returns the set to send.
    fn remember_pending(&self, mut tasks: Vec<pb::PendingTask>, now: f64) -> Vec<pb::PendingTask> {
        let mut published = self.published();
        let before: HashMap<&str, f64> = published
            .tasks
            .iter()
            .flatten()
            .map(|t| (t.task_id.as_str(), t.since))
            .collect();
        for t in &mut tasks {
            if t.since == 0.0 {
                t.since = before.get(t.task_id.as_str()).copied().unwrap_or(now);
            }
        }
        published.generation += 1;
        published.tasks = Some(tasks.clone());
        tasks
    }

    /// The pending set to publish again after a re-subscription, with its
    /// generation; `None` if the framework never published one.
    pub(crate) fn pending_snapshot(&self) -> Option<(u64, Vec<pb::PendingTask>)> {
        let published = self.published();
        published
            .tasks
            .clone()
            .map(|tasks| (published.generation, tasks))
    }

    /// The generation of the last pending set.
    pub(crate) fn pending_generation(&self) -> u64 {
        self.published().generation
    }

    fn lock(&self) -> MutexGuard<'_, Link> {
        // The lock is never held across a panic-prone section; recover from
        // poisoning rather than propagate it.
        self.link
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Waits (at most `limit`) until queued automatic acknowledgements
    /// have been sent.
    pub(crate) async fn drain_acks(&self, limit: Duration) {
        let deadline = tokio::time::Instant::now() + limit;
        while self.acks_queued.load(Ordering::Acquire) > 0 {
            if tokio::time::Instant::now() >= deadline {
                tracing::debug!("gave up waiting for queued acknowledgements");
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    pub(crate) fn set_link(&self, link: Link) {
        let mut guard = self.lock();
        // Removal is final.
        if !matches!(*guard, Link::Removed(_)) {
            *guard = link;
            self.link_changes.send_modify(|n| *n = n.wrapping_add(1));
        }
    }
}

/// Which of the framework's roles a [`Framework::suppress`] or
/// [`Framework::revive`] is about.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Roles {
    /// Every role the framework subscribed with.
    All,
    /// These roles only (an empty list changes nothing).
    Only(Vec<Role>),
}

impl Roles {
    /// The roles as the wire says them: all is the empty list.
    fn into_wire(self) -> Vec<String> {
        match self {
            Roles::All => Vec::new(),
            Roles::Only(roles) => roles.into_iter().map(String::from).collect(),
        }
    }

    /// Whether the call would change nothing (no role named).
    fn is_none(&self) -> bool {
        matches!(self, Roles::Only(roles) if roles.is_empty())
    }
}

impl From<Role> for Roles {
    fn from(role: Role) -> Self {
        Roles::Only(vec![role])
    }
}

/// A cheap, cloneable handle for calls to the master on behalf of one
/// subscribed framework. Safe to use from many tasks at once.
///
/// Every call carries the framework id and the current stream id. While the
/// SDK re-subscribes after a disconnect, calls fail fast with
/// [`SdkError::NotSubscribed`]; after the framework was removed they fail
/// with [`SdkError::Removed`]. Calls are not retried by the SDK: an
/// `ACCEPT` that timed out may or may not have launched its tasks, so the
/// caller decides (reconciliation tells).
#[derive(Clone)]
pub struct Framework {
    pub(crate) shared: Arc<Shared>,
}

impl fmt::Debug for Framework {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Framework")
            .field("id", &self.shared.framework_id)
            .field("name", &self.shared.config.name)
            .field("subscribed", &self.is_subscribed())
            .finish_non_exhaustive()
    }
}

fn filters(refuse: Option<Duration>) -> Option<pb::Filters> {
    Some(pb::Filters {
        refuse_seconds: refuse.map(|d| d.as_secs_f64()),
    })
}

impl Framework {
    /// The framework id assigned (or confirmed) by the master.
    pub fn id(&self) -> String {
        self.shared.framework_id.clone()
    }

    /// Whether the SDK currently holds a live subscription.
    pub fn is_subscribed(&self) -> bool {
        matches!(*self.shared.lock(), Link::Connected { .. })
    }

    /// The address of the master serving the current subscription, if any.
    pub fn master(&self) -> Option<String> {
        match &*self.shared.lock() {
            Link::Connected { master_uri, .. } => Some(master_uri.clone()),
            _ => None,
        }
    }

    /// The id the current master reported in `SUBSCRIBED`, if subscribed.
    pub fn master_id(&self) -> Option<String> {
        match &*self.shared.lock() {
            Link::Connected { master_id, .. } => Some(master_id.clone()),
            _ => None,
        }
    }

    /// The number of status updates acknowledged so far, automatically or
    /// through [`Framework::acknowledge`].
    pub fn acknowledged(&self) -> u64 {
        self.shared.acknowledged.load(Ordering::Relaxed)
    }

    /// The client and header for a call, or why there is none, with a
    /// receiver that sees every later change of the link (taken under the link's lock, which changes are made
    /// under, so none is missed and none before is seen).
    fn watched_link(&self) -> Result<(Client, pb::CallHeader, watch::Receiver<u64>), SdkError> {
        let guard = self.shared.lock();
        let changes = self.shared.link_changes.subscribe();
        match &*guard {
            Link::Connected {
                client, stream_id, ..
            } => Ok((
                client.clone(),
                pb::CallHeader {
                    framework_id: self.shared.framework_id.clone(),
                    stream_id: stream_id.clone(),
                },
                changes,
            )),
            Link::Disconnected => Err(SdkError::NotSubscribed),
            Link::Removed(why) => Err(SdkError::Removed(why.clone())),
        }
    }

    /// Runs one unary call with the current header and the call timeout.
    /// It ends early with [`SdkError::ConnectionLost`] when the link it was
    /// made on changes (the stream was lost: the master may be frozen, and
    /// the driver is already re-subscribing elsewhere).
    async fn call<T, F, Fut>(&self, f: F) -> Result<T, SdkError>
    where
        F: FnOnce(Client, Option<pb::CallHeader>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let (client, header, mut changes) = self.watched_link()?;
        let timeout = self.shared.config.call_timeout;
        tokio::select! {
            answer = tokio::time::timeout(timeout, f(client, Some(header))) => match answer {
                Err(_) => Err(SdkError::Timeout(timeout)),
                Ok(Err(status)) => Err(status.into()),
                Ok(Ok(response)) => Ok(response.into_inner()),
            },
            _ = changes.changed() => Err(SdkError::ConnectionLost),
        }
    }

    /// Accepts `offer_ids` (all from one agent) and launches `tasks` in
    /// them; the unused remainder is filtered for `refuse` (`None`: the
    /// master's default of 5 s). Returns the ids of the tasks the master
    /// recorded as launched; their updates follow as
    /// [`Event::Update`](crate::Event::Update).
    ///
    /// Offers received before the last [`Event::Disconnected`](crate::Event::Disconnected)
    /// are void; accepting them fails with [`ErrorKind::Invalid`](crate::ErrorKind::Invalid).
    ///
    /// # Errors
    /// [`SdkError::Rpc`] of [`ErrorKind::Invalid`](crate::ErrorKind::Invalid)
    /// for unknown, rescinded or foreign offers and tasks that do not fit
    /// (nothing is launched); [`ErrorKind::Conflict`](crate::ErrorKind::Conflict)
    /// for a stale subscription or a task id in use; see [`SdkError`].
    pub async fn accept(
        &self,
        offer_ids: Vec<OfferId>,
        tasks: Vec<pb::TaskInfo>,
        refuse: Option<Duration>,
    ) -> Result<Vec<TaskId>, SdkError> {
        let offer_ids: Vec<String> = offer_ids.into_iter().map(String::from).collect();
        // Live from before the call, so that an update arriving before the
        // answer finds them; forgotten again if they were not launched.
        let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
        {
            let mut live = self.shared.live();
            for t in &tasks {
                live.entry(t.task_id.clone())
                    .or_insert_with(|| t.agent_id.clone());
            }
        }
        let operations = if tasks.is_empty() {
            Vec::new()
        } else {
            vec![pb::Operation {
                operation: Some(pb::operation::Operation::Launch(pb::Launch { tasks })),
            }]
        };
        let reply = self
            .call(move |mut c, header| async move {
                c.accept(pb::AcceptRequest {
                    header,
                    offer_ids,
                    operations,
                    filters: filters(refuse),
                })
                .await
            })
            .await;
        let launched: HashSet<&str> = match &reply {
            Ok(r) => r.launched_task_ids.iter().map(String::as_str).collect(),
            // The tasks may have been launched: they stay live, so the
            // reconciliation after the next re-subscription asks about them.
            Err(e) if e.outcome_unknown() => ids.iter().map(String::as_str).collect(),
            Err(_) => HashSet::new(),
        };
        {
            let mut live = self.shared.live();
            for id in ids.iter().filter(|id| !launched.contains(id.as_str())) {
                live.remove(id);
            }
        }
        // The master launches only valid task ids: one that is not cannot
        // have been launched.
        Ok(reply?
            .launched_task_ids
            .into_iter()
            .filter_map(|id| TaskId::new(id).ok())
            .collect())
    }

    /// Declines `offer_ids`; the resources are not offered to this
    /// framework again for `refuse` (`None`: the master's default of 5 s).
    ///
    /// # Errors
    /// See [`SdkError`].
    pub async fn decline(
        &self,
        offer_ids: Vec<OfferId>,
        refuse: Option<Duration>,
    ) -> Result<(), SdkError> {
        let offer_ids: Vec<String> = offer_ids.into_iter().map(String::from).collect();
        self.call(move |mut c, header| async move {
            c.decline(pb::DeclineRequest {
                header,
                offer_ids,
                filters: filters(refuse),
            })
            .await
        })
        .await?;
        Ok(())
    }

    /// Clears decline filters and resumes offers for `roles`.
    ///
    /// # Errors
    /// See [`SdkError`].
    pub async fn revive(&self, roles: Roles) -> Result<(), SdkError> {
        if roles.is_none() {
            return Ok(());
        }
        let roles = roles.into_wire();
        self.call(move |mut c, header| async move {
            c.revive(pb::ReviveRequest { header, roles }).await
        })
        .await?;
        Ok(())
    }

    /// Stops offers for `roles` until [`Framework::revive`].
    ///
    /// # Errors
    /// See [`SdkError`].
    pub async fn suppress(&self, roles: Roles) -> Result<(), SdkError> {
        if roles.is_none() {
            return Ok(());
        }
        let roles = roles.into_wire();
        self.call(move |mut c, header| async move {
            c.suppress(pb::SuppressRequest { header, roles }).await
        })
        .await?;
        Ok(())
    }

    /// Kills a task, with `grace` between SIGTERM and SIGKILL (`None`: the
    /// task's own kill grace period).
    ///
    /// # Errors
    /// See [`SdkError`].
    pub async fn kill(&self, task_id: &TaskId, grace: Option<Duration>) -> Result<(), SdkError> {
        let task_id = task_id.as_str().to_owned();
        self.call(move |mut c, header| async move {
            c.kill(pb::KillRequest {
                header,
                task_id,
                grace_period_seconds: grace.map(|d| d.as_secs_f64()),
            })
            .await
        })
        .await?;
        Ok(())
    }

    /// Acknowledges a status update. A no-op for updates without a uuid
    /// (generated by the master). Needed only with
    /// [`FrameworkConfig::auto_acknowledge`] off; acknowledging twice is
    /// harmless.
    ///
    /// # Errors
    /// See [`SdkError`]. An update that could not be acknowledged is resent
    /// by its agent.
    pub async fn acknowledge(&self, status: &pb::TaskStatus) -> Result<(), SdkError> {
        if status.uuid.is_empty() {
            return Ok(());
        }
        let agent_id = status.agent_id.clone();
        let task_id = status.task_id.clone();
        let uuid = status.uuid.clone();
        self.call(move |mut c, header| async move {
            c.acknowledge(pb::AcknowledgeRequest {
                header,
                agent_id,
                task_id,
                uuid,
            })
            .await
        })
        .await?;
        self.shared.acknowledged.fetch_add(1, Ordering::Relaxed);
        Ok(())
    }

    /// Explicit reconciliation: asks for the latest state of each task,
    /// with the agent it runs on where known. An empty list is implicit
    /// reconciliation, as [`Framework::reconcile_all`]. Answers arrive as
    /// [`Event::Update`](crate::Event::Update)s from the master.
    ///
    /// # Errors
    /// See [`SdkError`].
    pub async fn reconcile(&self, tasks: Vec<(TaskId, Option<AgentId>)>) -> Result<(), SdkError> {
        let tasks = tasks
            .into_iter()
            .map(|(task_id, agent_id)| pb::ReconcileTask {
                task_id: task_id.into(),
                agent_id: agent_id.map(String::from).unwrap_or_default(),
            })
            .collect();
        self.call(move |mut c, header| async move {
            c.reconcile(pb::ReconcileRequest { header, tasks }).await
        })
        .await?;
        Ok(())
    }

    /// Implicit reconciliation: the master sends the latest state of every
    /// non-terminal task of this framework. The SDK already reconciles after
    /// every [`Event::Subscribed`](crate::Event::Subscribed) with
    /// `resubscribed: true` unless
    /// [`FrameworkConfig::reconcile_on_resubscribe`](crate::FrameworkConfig::reconcile_on_resubscribe)
    /// is off; call this when you turned it off, or to ask at any other time.
    ///
    /// # Errors
    /// See [`SdkError`].
    pub async fn reconcile_all(&self) -> Result<(), SdkError> {
        self.reconcile(Vec::new()).await
    }

    /// Publishes the framework's pending work: the tasks it wants to run
    /// but could not place, with why (see
    /// [`pending_tasks`](crate::pending_tasks), which builds them from a
    /// [`PackPlan`](crate::PackPlan)). The list replaces the one published
    /// before; an empty list clears it. Operators see it with
    /// `berth task pending`.
    ///
    /// A task without `since` keeps the time it first appeared in a
    /// published list (or gets the current time). The SDK remembers the
    /// last list and publishes it again after every re-subscription (the
    /// master holds pending work in its leader's memory only, so a new
    /// leader starts without it), also when this call failed with
    /// [`SdkError::NotSubscribed`].
    ///
    /// # Errors
    /// [`SdkError::Rpc`] of [`ErrorKind::Invalid`](crate::ErrorKind::Invalid) for an invalid list (over
    /// 10,000 tasks, a repeated or invalid task id, invalid resources, a
    /// reason over 4 KiB, counts that do not add up); the previous list
    /// stays. See [`SdkError`].
    pub async fn update_pending(&self, tasks: Vec<pb::PendingTask>) -> Result<(), SdkError> {
        let tasks = self.shared.remember_pending(tasks, unix_now());
        self.call(move |mut c, header| async move {
            c.update_pending(pb::UpdatePendingRequest { header, tasks })
                .await
        })
        .await?;
        Ok(())
    }

    /// Removes the framework: the master kills all its tasks and forgets
    /// it. On success the event stream ends and every later call fails
    /// with [`SdkError::Removed`]. Automatic acknowledgements already
    /// queued are sent first.
    ///
    /// # Errors
    /// See [`SdkError`].
    pub async fn teardown(&self) -> Result<(), SdkError> {
        self.shared
            .drain_acks(self.shared.config.call_timeout)
            .await;
        self.shared.phase.send_replace(Phase::TearingDown);
        let result = self
            .call(|mut c, header| async move { c.teardown(pb::TeardownRequest { header }).await })
            .await;
        if result.is_ok() {
            self.shared
                .set_link(Link::Removed("the framework was torn down".to_owned()));
            self.shared.phase.send_replace(Phase::Stopped);
        } else {
            self.shared.phase.send_replace(Phase::Running);
        }
        result.map(|_| ())
    }
}

/// Seconds since the Unix epoch, now.
fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(id: &str) -> pb::PendingTask {
        pb::PendingTask {
            task_id: id.into(),
            ..Default::default()
        }
    }

    #[test]
    fn pending_tasks_keep_their_since_across_publications() {
        let shared = Shared::new(FrameworkConfig::new("t"), "fw".into(), Link::Disconnected);
        assert_eq!(shared.pending_snapshot(), None);
        let sent = shared.remember_pending(vec![task("a")], 100.0);
        assert_eq!(sent[0].since, 100.0);
        let mut given = task("c");
        given.since = 42.0;
        let sent = shared.remember_pending(vec![task("a"), task("b"), given], 200.0);
        let since: Vec<f64> = sent.iter().map(|t| t.since).collect();
        assert_eq!(since, [100.0, 200.0, 42.0]);
        let (generation, tasks) = shared.pending_snapshot().unwrap();
        assert_eq!(generation, 2);
        assert_eq!(tasks, sent);
        // An empty list is remembered too: it must reach a master that
        // still holds the older one.
        shared.remember_pending(Vec::new(), 300.0);
        assert_eq!(shared.pending_snapshot(), Some((3, Vec::new())));
        assert_eq!(shared.pending_generation(), 3);
    }
}
