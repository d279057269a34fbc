//! Cron schedules: expressions (5 fields, or 6 with seconds first) in an
//! IANA time zone, the next tick after a time under berth's daylight-saving
//! rule, the ticks due at a moment with the missed-schedule policy, and
//! [`Timers`], the structure that finds the next due schedule without
//! scanning every job.
//!
//! OWNED BY THE SCHEDULE HELPER: the signatures below are the contract the
//! rest of the crate uses; the bodies are to be written.

use std::time::Duration;

use crate::job::MissedPolicy;
use crate::time::Timestamp;

/// A cron expression compiled in its time zone.
#[derive(Clone, Debug)]
pub struct Cron {
    _private: (),
}

/// Why an expression or a time zone is refused (the message names the
/// problem; the caller adds the field's path).
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum CronError {
    /// The expression does not parse.
    #[error("{0}")]
    Expression(String),
    /// The time zone is not an IANA zone.
    #[error("{0}")]
    Zone(String),
}

impl Cron {
    /// Compiles `expr` in `timezone`.
    ///
    /// # Errors
    /// [`CronError`] with a readable message quoting the bad value.
    pub fn parse(expr: &str, timezone: &str) -> Result<Cron, CronError> {
        let _ = (expr, timezone);
        Err(CronError::Expression("not written yet".into()))
    }

    /// The first tick strictly after `after`, or `None` when the
    /// expression never fires again.
    #[must_use]
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let _ = after;
        None
    }
}

/// What the ticks due at `now` come to, for one schedule whose next
/// unhandled tick is `next` (see [`due`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// Ticks to run now, oldest first.
    pub run: Vec<Timestamp>,
    /// Ticks recorded as missed (at most a bound; see `missed_more`).
    pub missed: Vec<Timestamp>,
    /// Missed ticks beyond those listed.
    pub missed_more: u64,
    /// The next tick not handled yet (after `now`), `None` if none.
    pub next: Option<Timestamp>,
}

/// The ticks of `cron` from `next` (inclusive) up to `now` (inclusive):
/// those within `deadline` of `now` run; older ones follow `policy`.
#[must_use]
pub fn due(
    cron: &Cron,
    next: Timestamp,
    now: Timestamp,
    deadline: Duration,
    policy: MissedPolicy,
) -> Due {
    let _ = (cron, next, now, deadline, policy);
    Due {
        run: Vec::new(),
        missed: Vec::new(),
        missed_more: 0,
        next: None,
    }
}

/// Timers keyed by `K`: each key has at most one due time; the earliest is
/// found in `O(log n)`.
#[derive(Clone, Debug)]
pub struct Timers<K: Ord + Clone> {
    _keys: std::collections::BTreeMap<K, Timestamp>,
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            _keys: std::collections::BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone> Timers<K> {
    /// Sets `key`'s due time (replacing the one it had).
    pub fn set(&mut self, key: K, at: Timestamp) {
        let _ = (key, at);
    }

    /// Removes `key`'s timer.
    pub fn remove(&mut self, key: &K) {
        let _ = key;
    }

    /// The earliest due time, if any.
    #[must_use]
    pub fn earliest(&self) -> Option<Timestamp> {
        None
    }

    /// Removes and returns the keys due at `now` (due time `<= now`),
    /// earliest first.
    pub fn pop_due(&mut self, now: Timestamp) -> Vec<(K, Timestamp)> {
        let _ = now;
        Vec::new()
    }

    /// How many keys have a timer.
    #[must_use]
    pub fn len(&self) -> usize {
        0
    }

    /// Whether no key has a timer.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
