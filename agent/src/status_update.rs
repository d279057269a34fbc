//! The status-update manager: reliable, ordered delivery of a task's status
//! updates to the master, with Mesos's semantics.
//!
//! One ordered queue per task; only the head is in flight. The head is
//! resent with exponential backoff until an acknowledgement with its uuid
//! arrives; then it is dropped and the next update goes out at once. On
//! every (re-)registration all heads are resent immediately. By default a
//! head is resent every 10 s: the backoff starts at Mesos's first resend
//! delay and is capped at the same value
//! ([`crate::DEFAULT_STATUS_RETRY_INITIAL`],
//! [`crate::STATUS_RETRY_MAX`]).
//!
//! This is a pure data structure: no IO, no clock. Callers pass `now` and
//! send what the methods return.

use std::collections::{BTreeMap, VecDeque};
use std::time::{Duration, Instant};

use berth_proto as pb;

/// Identifies a task on the agent: `(framework_id, task_id)`.
pub type TaskKey = (String, String);

#[derive(Debug)]
struct Queue {
    updates: VecDeque<pb::StatusUpdate>,
    /// When the head is to be (re)sent next.
    next_send: Instant,
    /// The delay before the following resend.
    backoff: Duration,
}

/// The result of an acknowledgement.
// `Acked` holds the next update inline: an outcome is returned once and
// never stored, so its size costs nothing, and boxing would change callers.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum AckOutcome {
    /// The uuid is not the head of the task's queue (or there is no queue):
    /// nothing changed.
    Ignored,
    /// The head was acknowledged and dropped.
    Acked {
        /// The acknowledged update's state.
        state: pb::TaskState,
        /// The next update, to send now.
        next: Option<pb::StatusUpdate>,
    },
}

/// Per-task queues of unacknowledged status updates. See the module docs.
#[derive(Debug)]
pub struct StatusUpdateManager {
    queues: BTreeMap<TaskKey, Queue>,
    initial: Duration,
    max: Duration,
}

impl StatusUpdateManager {
    /// A manager whose resend delay starts at `initial` and doubles up to
    /// `max`.
    #[must_use]
    pub fn new(initial: Duration, max: Duration) -> Self {
        StatusUpdateManager {
            queues: BTreeMap::new(),
            initial,
            max: max.max(initial),
        }
    }

    /// Queues `update` for its task. Returns it when it became the head (the
    /// caller sends it now); it then counts as sent at `now`.
    pub fn push(&mut self, update: pb::StatusUpdate, now: Instant) -> Option<pb::StatusUpdate> {
        let key = key_of(&update);
        let initial = self.initial;
        let q = self.queues.entry(key).or_insert_with(|| Queue {
            updates: VecDeque::new(),
            next_send: now,
            backoff: initial,
        });
        q.updates.push_back(update);
        if q.updates.len() == 1 {
            q.next_send = now + initial;
            q.backoff = initial;
            q.updates.front().cloned()
        } else {
            None
        }
    }

    /// Handles an acknowledgement of `uuid` for a task.
    pub fn ack(&mut self, key: &TaskKey, uuid: &[u8], now: Instant) -> AckOutcome {
        let Some(q) = self.queues.get_mut(key) else {
            return AckOutcome::Ignored;
        };
        let matches = q
            .updates
            .front()
            .and_then(|u| u.status.as_ref())
            .is_some_and(|s| s.uuid == uuid);
        if !matches {
            return AckOutcome::Ignored;
        }
        let state = q
            .updates
            .pop_front()
            .and_then(|u| u.status)
            .map_or(pb::TaskState::Unspecified, |s| s.state());
        let next = q.updates.front().cloned();
        if next.is_some() {
            q.next_send = now + self.initial;
            q.backoff = self.initial;
        } else {
            self.queues.remove(key);
        }
        AckOutcome::Acked { state, next }
    }

    /// Heads whose resend time has come; each is rescheduled with a doubled
    /// delay (capped).
    pub fn due(&mut self, now: Instant) -> Vec<pb::StatusUpdate> {
        let mut out = Vec::new();
        for q in self.queues.values_mut() {
            if q.next_send <= now
                && let Some(head) = q.updates.front()
            {
                q.backoff = (q.backoff * 2).min(self.max);
                q.next_send = now + q.backoff;
                out.push(head.clone());
            }
        }
        out
    }

    /// Every head, for resending right after a (re-)registration; the
    /// backoff starts over.
    pub fn resend_all(&mut self, now: Instant) -> Vec<pb::StatusUpdate> {
        let initial = self.initial;
        self.queues
            .values_mut()
            .filter_map(|q| {
                q.next_send = now + initial;
                q.backoff = initial;
                q.updates.front().cloned()
            })
            .collect()
    }

    /// The task's unacknowledged updates, oldest (the head) first; empty
    /// if it has none. For checkpointing the queue after each push or ack.
    #[must_use]
    pub fn queue(&self, key: &TaskKey) -> Vec<pb::StatusUpdate> {
        self.queues
            .get(key)
            .map(|q| q.updates.iter().cloned().collect())
            .unwrap_or_default()
    }

    /// Re-creates the task's queue after a restart, replacing any queue it
    /// has: `updates` oldest first, as [`Self::queue`] returned them. The
    /// head is due at once (the next [`Self::due`] returns it), then
    /// resent with the usual doubling backoff. Updates that belong to
    /// another task are left out: they could never be acknowledged through
    /// this queue and would block it. An empty list (after that) leaves the
    /// task with no queue.
    pub fn restore(&mut self, key: TaskKey, updates: Vec<pb::StatusUpdate>, now: Instant) {
        let updates: VecDeque<_> = updates.into_iter().filter(|u| key_of(u) == key).collect();
        if updates.is_empty() {
            self.queues.remove(&key);
            return;
        }
        self.queues.insert(
            key,
            Queue {
                updates,
                next_send: now,
                backoff: self.initial,
            },
        );
    }

    /// Whether the task has unacknowledged updates.
    #[must_use]
    pub fn has_pending(&self, key: &TaskKey) -> bool {
        self.queues.contains_key(key)
    }

    /// Whether no update at all is unacknowledged.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.queues.is_empty()
    }

    /// Number of unacknowledged updates over all tasks.
    #[must_use]
    pub fn len(&self) -> usize {
        self.queues.values().map(|q| q.updates.len()).sum()
    }

    /// The earliest time a head is due for a resend.
    #[must_use]
    pub fn next_deadline(&self) -> Option<Instant> {
        self.queues.values().map(|q| q.next_send).min()
    }
}

fn key_of(u: &pb::StatusUpdate) -> TaskKey {
    (
        u.framework_id.clone(),
        u.status
            .as_ref()
            .map(|s| s.task_id.clone())
            .unwrap_or_default(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const S: Duration = Duration::from_secs(1);

    fn update(fw: &str, task: &str, state: pb::TaskState, n: u8) -> pb::StatusUpdate {
        pb::StatusUpdate {
            framework_id: fw.into(),
            status: Some(pb::TaskStatus {
                task_id: task.into(),
                state: state as i32,
                uuid: vec![n; 16],
                ..Default::default()
            }),
        }
    }

    fn uuid(u: &pb::StatusUpdate) -> Vec<u8> {
        u.status.as_ref().unwrap().uuid.clone()
    }

    fn key(fw: &str, t: &str) -> TaskKey {
        (fw.into(), t.into())
    }

    #[test]
    fn only_head_in_flight_and_in_order() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(S, 10 * S);
        let a = update("f", "t", pb::TaskState::TaskStarting, 1);
        let b = update("f", "t", pb::TaskState::TaskRunning, 2);
        let c = update("f", "t", pb::TaskState::TaskFinished, 3);
        assert_eq!(m.push(a.clone(), t0), Some(a.clone()));
        assert_eq!(m.push(b.clone(), t0), None);
        assert_eq!(m.push(c.clone(), t0), None);
        // Another task has its own queue.
        let x = update("f", "other", pb::TaskState::TaskStarting, 9);
        assert_eq!(m.push(x.clone(), t0), Some(x));
        assert_eq!(m.len(), 4);

        let out = m.ack(&key("f", "t"), &uuid(&a), t0);
        assert_eq!(
            out,
            AckOutcome::Acked {
                state: pb::TaskState::TaskStarting,
                next: Some(b.clone())
            }
        );
        let out = m.ack(&key("f", "t"), &uuid(&b), t0);
        assert_eq!(
            out,
            AckOutcome::Acked {
                state: pb::TaskState::TaskRunning,
                next: Some(c.clone())
            }
        );
        let out = m.ack(&key("f", "t"), &uuid(&c), t0);
        assert_eq!(
            out,
            AckOutcome::Acked {
                state: pb::TaskState::TaskFinished,
                next: None
            }
        );
        assert!(!m.has_pending(&key("f", "t")));
        assert!(m.has_pending(&key("f", "other")));
    }

    #[test]
    fn wrong_uuid_and_non_head_are_ignored() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(S, 10 * S);
        let a = update("f", "t", pb::TaskState::TaskStarting, 1);
        let b = update("f", "t", pb::TaskState::TaskRunning, 2);
        m.push(a.clone(), t0);
        m.push(b.clone(), t0);
        assert_eq!(m.ack(&key("f", "t"), &[7; 16], t0), AckOutcome::Ignored);
        assert_eq!(m.ack(&key("f", "t"), &uuid(&b), t0), AckOutcome::Ignored);
        assert_eq!(m.ack(&key("f", "nope"), &uuid(&a), t0), AckOutcome::Ignored);
        assert_eq!(m.ack(&key("g", "t"), &uuid(&a), t0), AckOutcome::Ignored);
        assert_eq!(m.len(), 2);
        // The head is still a and still resent.
        assert_eq!(m.due(t0 + S), vec![a]);
    }

    #[test]
    fn resends_with_doubling_backoff_until_acked() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(S, 4 * S);
        let a = update("f", "t", pb::TaskState::TaskStarting, 1);
        m.push(a.clone(), t0);
        m.push(update("f", "t", pb::TaskState::TaskRunning, 2), t0);
        assert!(m.due(t0).is_empty());
        assert!(m.due(t0 + S / 2).is_empty());
        assert_eq!(m.next_deadline(), Some(t0 + S));
        // Sent at t0; resent after 1 s, then 2 s, then 4 s, then 4 s (cap).
        let t1 = t0 + S;
        assert_eq!(m.due(t1), vec![a.clone()]);
        assert!(m.due(t1 + S).is_empty());
        let t2 = t1 + 2 * S;
        assert_eq!(m.due(t2), vec![a.clone()]);
        assert!(m.due(t2 + 3 * S).is_empty());
        let t3 = t2 + 4 * S;
        assert_eq!(m.due(t3), vec![a.clone()]);
        let t4 = t3 + 4 * S;
        assert_eq!(m.due(t4), vec![a.clone()]);
        // Ack: next goes out at once (returned), with a fresh backoff.
        let AckOutcome::Acked { next: Some(b), .. } = m.ack(&key("f", "t"), &uuid(&a), t4) else {
            panic!("expected next update");
        };
        assert!(m.due(t4 + S / 2).is_empty());
        assert_eq!(m.due(t4 + S), vec![b]);
    }

    #[test]
    fn queue_lists_the_unacked_updates_in_order() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(S, 10 * S);
        assert!(m.queue(&key("f", "t")).is_empty());
        let a = update("f", "t", pb::TaskState::TaskStarting, 1);
        let b = update("f", "t", pb::TaskState::TaskRunning, 2);
        let c = update("f", "t", pb::TaskState::TaskFinished, 3);
        let x = update("f", "x", pb::TaskState::TaskRunning, 4);
        m.push(a.clone(), t0);
        m.push(b.clone(), t0);
        m.push(x.clone(), t0);
        assert_eq!(m.queue(&key("f", "t")), vec![a.clone(), b.clone()]);
        m.push(c.clone(), t0);
        assert_eq!(
            m.queue(&key("f", "t")),
            vec![a.clone(), b.clone(), c.clone()]
        );
        // Resending changes nothing.
        let _ = m.due(t0 + S);
        assert_eq!(
            m.queue(&key("f", "t")),
            vec![a.clone(), b.clone(), c.clone()]
        );
        m.ack(&key("f", "t"), &uuid(&a), t0);
        assert_eq!(m.queue(&key("f", "t")), vec![b.clone(), c.clone()]);
        m.ack(&key("f", "t"), &uuid(&b), t0);
        m.ack(&key("f", "t"), &uuid(&c), t0);
        assert!(m.queue(&key("f", "t")).is_empty());
        assert_eq!(m.queue(&key("f", "x")), vec![x]);
        assert!(m.queue(&key("g", "t")).is_empty());
    }

    #[test]
    fn restore_recreates_a_queue_whose_head_is_due_at_once() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(S, 10 * S);
        let a = update("f", "t", pb::TaskState::TaskRunning, 1);
        let b = update("f", "t", pb::TaskState::TaskFinished, 2);
        m.restore(key("f", "t"), vec![a.clone(), b.clone()], t0);
        assert!(m.has_pending(&key("f", "t")));
        assert_eq!(m.len(), 2);
        assert_eq!(m.queue(&key("f", "t")), vec![a.clone(), b.clone()]);
        assert_eq!(m.next_deadline(), Some(t0));
        // Due at once, then with the usual backoff.
        assert_eq!(m.due(t0), vec![a.clone()]);
        assert!(m.due(t0 + S).is_empty());
        assert_eq!(m.due(t0 + 2 * S), vec![a.clone()]);
        // Acks work as for pushed updates; a push goes behind the queue.
        let c = update("f", "t", pb::TaskState::TaskFinished, 3);
        assert_eq!(m.push(c.clone(), t0), None);
        assert_eq!(
            m.ack(&key("f", "t"), &uuid(&a), t0),
            AckOutcome::Acked {
                state: pb::TaskState::TaskRunning,
                next: Some(b.clone())
            }
        );
        assert_eq!(m.queue(&key("f", "t")), vec![b, c]);
    }

    #[test]
    fn restore_replaces_drops_foreign_and_empty_queues() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(S, 10 * S);
        let a = update("f", "t", pb::TaskState::TaskRunning, 1);
        let b = update("f", "t", pb::TaskState::TaskFinished, 2);
        m.push(a.clone(), t0);
        // Replaces the existing queue.
        m.restore(key("f", "t"), vec![b.clone()], t0);
        assert_eq!(m.queue(&key("f", "t")), vec![b.clone()]);
        // An update of another task is left out.
        let foreign = update("f", "other", pb::TaskState::TaskRunning, 3);
        m.restore(key("f", "u"), vec![foreign.clone()], t0);
        assert!(!m.has_pending(&key("f", "u")));
        assert!(!m.has_pending(&key("f", "other")));
        m.restore(key("f", "t"), vec![foreign, a.clone()], t0);
        assert_eq!(m.queue(&key("f", "t")), vec![a]);
        // Empty: no queue at all, so the manager is drained.
        m.restore(key("f", "t"), Vec::new(), t0);
        assert!(!m.has_pending(&key("f", "t")));
        assert!(m.is_empty());
        assert_eq!(m.next_deadline(), None);
        m.restore(key("f", "v"), Vec::new(), t0);
        assert!(m.is_empty());
    }

    #[test]
    fn resend_all_returns_every_head_and_resets_backoff() {
        let t0 = Instant::now();
        let mut m = StatusUpdateManager::new(S, 10 * S);
        let a = update("f", "a", pb::TaskState::TaskRunning, 1);
        let b = update("f", "b", pb::TaskState::TaskRunning, 2);
        m.push(a.clone(), t0);
        m.push(b.clone(), t0);
        m.push(update("f", "b", pb::TaskState::TaskFinished, 3), t0);
        let _ = m.due(t0 + S);
        let _ = m.due(t0 + 3 * S);
        let t = t0 + 4 * S;
        let mut heads = m.resend_all(t);
        heads.sort_by_key(|u| u.status.as_ref().unwrap().task_id.clone());
        assert_eq!(heads, vec![a, b]);
        assert!(m.due(t + S / 2).is_empty());
        assert_eq!(m.due(t + S).len(), 2);
        assert!(!m.is_empty());
    }
}
