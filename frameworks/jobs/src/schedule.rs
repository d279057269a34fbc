//! Cron schedules: expressions (5 fields, or 6 with seconds first) in an
//! IANA time zone, the next tick after a time under berth's daylight-saving
//! rule, the ticks due at a moment with the missed-schedule policy, and
//! [`Timers`], the structure that finds the next due schedule without
//! scanning every job.
//!
//! # The daylight-saving rule
//!
//! A schedule names wall-clock times in its zone; each matching wall-clock
//! time fires once, except as said for a repeated hour:
//!
//! - A time that does not occur (the clock springs forward over it: 02:30
//!   on 2026-03-08 in `America/New_York`) fires once, at the first instant
//!   after the gap (03:00 local). Several such times of one schedule in the
//!   same gap (02:00, 02:15, 02:30, 02:45) collapse into that one instant,
//!   and so does a tick at the gap's end itself (03:00): nothing fires twice
//!   at one instant.
//! - A time that occurs twice (the clock falls back: 01:30 on 2026-11-01 in
//!   `America/New_York`) fires once, at its first occurrence, for a
//!   schedule whose hour field leaves out some hour (`30 1 * * *`,
//!   `0 */2 * * *`).
//! - A schedule whose hour field covers every hour (`*/2 * * * * *`,
//!   `*/15 * * * *`, `@hourly`, `0-23`) fires by elapsed time through a
//!   repeated hour, at both occurrences, as Vixie cron runs wildcard-hour
//!   jobs: an every-2-seconds job ticks every 2 seconds across both
//!   transitions, never stops for an hour and never fires twice at one
//!   instant.
//!
//! croner (the field matcher) has its own daylight-saving choices, keyed on
//! whether the seconds, minute and hour fields are single values: it skips
//! a nonexistent time of a `0,30 2 * * *` schedule and fires a repeated
//! `30 1,13 * * *` twice. [`Cron`] therefore asks croner only about wall
//! clock times and applies the rule above itself.

use std::time::Duration;

use crate::job::MissedPolicy;
use crate::time::Timestamp;

mod cron;
#[cfg(test)]
mod tests;

pub use cron::Cron;

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
