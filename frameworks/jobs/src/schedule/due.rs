//! [`due`]: the ticks of one schedule that fell due by a moment, split into
//! those that run and those recorded as missed under the job's
//! [`MissedPolicy`].
//!
//! The work is bounded. At most [`MAX_ENUMERATED`] ticks are stepped
//! through from `next` before the deadline's cutoff; past that (a schedule
//! every second missed for weeks) the latest ticks before the cutoff are
//! found by searching back from it in growing windows, the ticks between
//! are not counted, and [`Due::missed_more_at_least`] says `missed_more` is
//! a lower bound. The ticks within the deadline all run and are all
//! listed: the deadline bounds them (a deadline of an hour on an
//! every-second schedule lists 3,600).

use std::collections::VecDeque;
use std::time::Duration;

use super::Cron;
use crate::job::MissedPolicy;
use crate::time::Timestamp;

/// The most missed ticks [`Due::missed`] lists (the latest ones).
pub const MAX_LISTED_MISSED: usize = 100;

/// The most ticks stepped through before the cutoff before the count of
/// missed ticks becomes a lower bound.
pub const MAX_ENUMERATED: usize = 1_000_000;

/// What the ticks due at `now` come to, for one schedule whose next
/// unhandled tick is `next` (see [`due`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Due {
    /// Ticks to run now, oldest first.
    pub run: Vec<Timestamp>,
    /// Ticks recorded as missed, oldest first (the latest
    /// [`MAX_LISTED_MISSED`] of them; see `missed_more`).
    pub missed: Vec<Timestamp>,
    /// Missed ticks beyond those listed (older than all of them).
    pub missed_more: u64,
    /// `missed_more` is a lower bound: more than [`MAX_ENUMERATED`] ticks
    /// were missed and those between were not counted.
    pub missed_more_at_least: bool,
    /// The next tick not handled yet (after `now`), `None` if none.
    pub next: Option<Timestamp>,
}

/// The ticks of `cron` from `next` (inclusive) up to `now` (inclusive):
/// those within `deadline` of `now` (`now - tick <= deadline`) run; older
/// ones are missed and follow `policy`: `Skip` records them all as missed,
/// `RunOnce` runs the latest of them, `RunAll { max }` the latest `max`
/// (at most [`MAX_ENUMERATED`] less [`MAX_LISTED_MISSED`]), and the others
/// are recorded as missed. `run` is ascending (the missed
/// ticks that run come before the ticks within the deadline).
#[must_use]
pub fn due(
    cron: &Cron,
    next: Timestamp,
    now: Timestamp,
    deadline: Duration,
    policy: MissedPolicy,
) -> Due {
    due_bounded(cron, next, now, deadline, policy, MAX_ENUMERATED)
}

/// [`due`] with the enumeration bound as a parameter (tests use a small
/// one).
pub(super) fn due_bounded(
    cron: &Cron,
    next: Timestamp,
    now: Timestamp,
    deadline: Duration,
    policy: MissedPolicy,
    max_enumerated: usize,
) -> Due {
    let deadline_ms = i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX);
    // Ticks before `cutoff` are missed.
    let cutoff = Timestamp(now.0.saturating_sub(deadline_ms));
    let missed_run = match policy {
        MissedPolicy::Skip => 0,
        MissedPolicy::RunOnce => 1,
        MissedPolicy::RunAll { max } => usize::try_from(max).unwrap_or(usize::MAX),
    }
    .min(max_enumerated.saturating_sub(MAX_LISTED_MISSED));
    let keep = MAX_LISTED_MISSED + missed_run;

    // The first tick at or after `next`.
    let mut tick = cron.next_after(Timestamp(next.0.saturating_sub(1)));
    let mut missed = Latest::new(keep);
    let mut at_least = false;
    let mut stepped = 0usize;
    while let Some(t) = tick.filter(|&t| t < cutoff && t <= now) {
        if stepped == max_enumerated {
            at_least = latest_before(cron, t, cutoff, &mut missed, max_enumerated);
            tick = cron.next_after(Timestamp(cutoff.0 - 1));
            break;
        }
        missed.push(t);
        stepped += 1;
        tick = cron.next_after(t);
    }

    let mut run: Vec<Timestamp> = Vec::new();
    let mut missed_ticks: Vec<Timestamp> = missed.ticks.into();
    let runs_from_missed = missed_run.min(missed_ticks.len());
    run.extend(missed_ticks.drain(missed_ticks.len() - runs_from_missed..));
    let recorded = missed.total - runs_from_missed as u64;
    let listed_from = missed_ticks.len().saturating_sub(MAX_LISTED_MISSED);
    missed_ticks.drain(..listed_from);
    let missed_more = recorded - missed_ticks.len() as u64;

    while let Some(t) = tick.filter(|&t| t <= now) {
        run.push(t);
        tick = cron.next_after(t);
    }
    Due {
        run,
        missed: missed_ticks,
        missed_more,
        missed_more_at_least: at_least,
        next: tick,
    }
}

/// The latest `keep` ticks pushed, and how many were pushed.
struct Latest {
    ticks: VecDeque<Timestamp>,
    keep: usize,
    total: u64,
}

impl Latest {
    fn new(keep: usize) -> Latest {
        Latest {
            ticks: VecDeque::with_capacity(keep.min(1024)),
            keep,
            total: 0,
        }
    }

    fn push(&mut self, t: Timestamp) {
        if self.keep == 0 {
            self.total += 1;
            return;
        }
        if self.ticks.len() == self.keep {
            self.ticks.pop_front();
        }
        self.ticks.push_back(t);
        self.total += 1;
    }
}

/// Finds the latest ticks before `cutoff` when stepping from `from` (a
/// tick not counted yet) would take too long: windows ending at the cutoff,
/// starting after the average spacing of the ticks seen so far times twice
/// the ticks wanted, doubling until they hold enough ticks (halving when
/// one holds more than `max_enumerated`). Adds them to `missed`; returns
/// whether ticks between were left uncounted (always, unless the window
/// reached back to `from`). After 64 windows it keeps the last one's.
fn latest_before(
    cron: &Cron,
    from: Timestamp,
    cutoff: Timestamp,
    missed: &mut Latest,
    max_enumerated: usize,
) -> bool {
    let listed = i64::try_from(missed.ticks.len()).unwrap_or(i64::MAX).max(1);
    let first = missed.ticks.front().copied().unwrap_or(from);
    let spacing = ((from.0 - first.0) / listed).max(1000);
    let wanted = i64::try_from(missed.keep.max(1)).unwrap_or(i64::MAX);
    let mut span = spacing.saturating_mul(wanted).saturating_mul(2);
    let mut found: Vec<Timestamp> = Vec::new();
    let mut exact = false;
    for _ in 0..64 {
        let start = Timestamp(cutoff.0.saturating_sub(span).max(from.0 - 1));
        let reached_from = start.0 < from.0;
        found.clear();
        let mut tick = cron.next_after(start);
        let mut too_many = false;
        while let Some(t) = tick.filter(|&t| t < cutoff) {
            if found.len() == max_enumerated {
                too_many = true;
                break;
            }
            found.push(t);
            tick = cron.next_after(t);
        }
        exact = reached_from && !too_many;
        if too_many {
            span /= 2;
        } else if found.len() >= missed.keep || reached_from {
            break;
        } else {
            span = span.saturating_mul(2);
        }
    }
    for t in found {
        missed.push(t);
    }
    !exact
}

#[cfg(test)]
mod tests;
