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
//!   at one instant. This holds for every schedule, those over every hour
//!   too: `7 * * * *` fires at 01:07, at 03:00 (for 02:07) and at 03:07 that
//!   day, so no scheduled wall-clock time goes without a run.
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

mod cron;
mod due;
#[cfg(test)]
mod tests;
mod timers;

pub use cron::Cron;
pub use due::{Due, MAX_ENUMERATED, MAX_LISTED_MISSED, due};
pub use timers::Timers;

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
