//! [`Cron`]: a cron expression compiled in an IANA time zone, and its next
//! tick under berth's daylight-saving rule (see the [module docs](super)).
//!
//! croner matches the fields; it is only ever asked about wall-clock times
//! (it walks a `DateTime<Utc>` whose clock stands for the local wall clock,
//! which has no daylight saving), and this module maps wall-clock times to
//! instants itself, so the rule does not depend on croner's own choices.
//! For schedules that fire every hour, croner's zone-aware search is used
//! as well to find the instants of the repeated hour's second occurrence.

use std::str::FromStr as _;

use berth_scheduler_core::error::quoted;
use chrono::{DateTime, LocalResult, NaiveDateTime, TimeZone as _, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};

use super::CronError;
use crate::time::Timestamp;

/// How many wall-clock matches one [`Cron::next_after`] looks at before it
/// gives up (only reached by a schedule that matches every second of a
/// repeated hour, each of whose first occurrences lies behind).
const MAX_WALK_STEPS: u32 = 20_000;

/// The longest gap in a zone's wall clock that is searched for its end
/// (Samoa skipped a whole day in 2011).
const MAX_GAP_SECONDS: i64 = 72 * 3600;

/// A cron expression compiled in its time zone.
#[derive(Clone, Debug)]
pub struct Cron {
    expr: String,
    pattern: croner::Cron,
    zone: Tz,
    /// Every hour of the day is in the hour field: the schedule fires by
    /// elapsed time through a repeated hour (both occurrences).
    every_hour: bool,
}

impl Cron {
    /// Compiles `expr` in `timezone`.
    ///
    /// `expr` has 5 fields (minute, hour, day of month, month, day of week;
    /// the tick is at second 0) or 6 (seconds first), or is one of
    /// `@yearly`, `@annually`, `@monthly`, `@weekly`, `@daily`, `@hourly`.
    /// Names (`MON`, `JAN`), lists, ranges and steps are accepted, and
    /// croner's extensions: `L` (last day of the month, or last given
    /// weekday of the month: `5L`), `W` (nearest weekday: `15W`), `#`
    /// (nth weekday: `1#2`), `?` (same as `*` in the day fields) and a
    /// leading `+` on the day-of-week field (day of month AND day of week
    /// must both match, instead of cron's OR). A 7-field form (with years)
    /// is refused. `timezone` is an IANA zone name as the tz database
    /// spells it (`Europe/Berlin`, `UTC`, `America/New_York`).
    ///
    /// # Errors
    /// [`CronError`] with a readable message quoting the bad value; an
    /// expression that can never fire (`0 0 30 2 *`) is refused too.
    pub fn parse(expr: &str, timezone: &str) -> Result<Cron, CronError> {
        let zone = Tz::from_str(timezone).map_err(|_| {
            CronError::Zone(format!(
                "{} is not an IANA time zone (such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\")",
                quoted(timezone)
            ))
        })?;
        let invalid = |why: &str| {
            CronError::Expression(format!(
                "{} is not a valid cron expression: {why}",
                quoted(expr)
            ))
        };
        let trimmed = expr.trim();
        let fields = trimmed.split_whitespace().count();
        if trimmed.starts_with('@') {
            let known = [
                "@yearly",
                "@annually",
                "@monthly",
                "@weekly",
                "@daily",
                "@hourly",
            ];
            if !known.iter().any(|k| k.eq_ignore_ascii_case(trimmed)) {
                return Err(invalid(
                    "the aliases are @yearly, @annually, @monthly, @weekly, @daily and @hourly",
                ));
            }
        } else if trimmed.is_empty() {
            return Err(invalid("it is empty"));
        } else if fields == 7 {
            return Err(invalid(
                "it has 7 fields; a year field is not supported (5 fields, or 6 with seconds first)",
            ));
        } else if fields != 5 && fields != 6 {
            return Err(invalid(&format!(
                "it has {fields} field(s); expected 5 (minute hour day-of-month month day-of-week) or 6 (seconds first)"
            )));
        }
        let parser = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build();
        let pattern = parser.parse(trimmed).map_err(|e| invalid(&why(&e)))?;
        let every_hour = pattern.pattern.hours.values().len() == 24;
        let cron = Cron {
            expr: trimmed.to_owned(),
            pattern,
            zone,
            every_hour,
        };
        if !cron.can_fire() {
            return Err(invalid(
                "it never fires (no date matches its day-of-month, month and day-of-week fields)",
            ));
        }
        Ok(cron)
    }

    /// The expression as given (trimmed).
    #[must_use]
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone's IANA name.
    #[must_use]
    pub fn timezone(&self) -> &'static str {
        self.zone.name()
    }

    /// Whether the schedule fires by elapsed time through a repeated hour
    /// (its hour field covers every hour of the day).
    #[must_use]
    pub fn fires_every_hour(&self) -> bool {
        self.every_hour
    }

    /// The first tick strictly after `after`, or `None` when the
    /// expression never fires again (past the year 5000, or `after` out of
    /// chrono's range). Ticks are whole seconds.
    #[must_use]
    pub fn next_after(&self, after: Timestamp) -> Option<Timestamp> {
        let by_wall = self.next_by_wall_clock(after);
        if !self.every_hour {
            return by_wall;
        }
        match (by_wall, self.next_by_elapsed_time(after)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Whether some date matches the day and month fields (croner searches
    /// up to the year 5000 and gives up on a date that never comes).
    fn can_fire(&self) -> bool {
        let start = NaiveDateTime::new(
            chrono::NaiveDate::from_ymd_opt(2000, 1, 1).unwrap_or_default(),
            chrono::NaiveTime::MIN,
        );
        self.next_wall(start).is_some()
    }

    /// The first wall-clock time strictly after `wall` (whole seconds) that
    /// the fields match.
    fn next_wall(&self, wall: NaiveDateTime) -> Option<NaiveDateTime> {
        let as_utc = Utc.from_utc_datetime(&wall);
        self.pattern
            .find_next_occurrence(&as_utc, false)
            .ok()
            .map(|t| t.naive_utc())
    }

    /// The first tick after `after` counting each matching wall-clock time
    /// once: at its instant, at its first instant when it occurs twice, at
    /// the end of the gap when it does not occur.
    fn next_by_wall_clock(&self, after: Timestamp) -> Option<Timestamp> {
        let utc: DateTime<Utc> = after.to_chrono()?;
        // Whole seconds: the walk is exclusive of this second, and a tick
        // is never inside it after `after` (ticks are whole seconds).
        let mut cursor = utc
            .with_timezone(&self.zone)
            .naive_local()
            .with_nanosecond_zero();
        for _ in 0..MAX_WALK_STEPS {
            let wall = self.next_wall(cursor)?;
            let at = match self.zone.from_local_datetime(&wall) {
                LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => Timestamp::from_chrono(&t),
                LocalResult::None => self.gap_end(wall)?,
            };
            if at > after {
                return Some(at);
            }
            cursor = wall;
        }
        None
    }

    /// The first instant after `after` whose wall-clock time matches, either
    /// occurrence of a repeated time (croner's search in the zone, for
    /// schedules that fire every hour).
    fn next_by_elapsed_time(&self, after: Timestamp) -> Option<Timestamp> {
        let mut from = after.to_chrono()?.with_timezone(&self.zone);
        // croner treats instants within a second of its start as not behind
        // it; step past any answer that is not strictly after `after`.
        for _ in 0..4 {
            let t = self.pattern.find_next_occurrence(&from, false).ok()?;
            let at = Timestamp::from_chrono(&t);
            if at > after {
                return Some(at);
            }
            from = t;
        }
        None
    }

    /// The first instant after the gap in the wall clock that `wall` (a
    /// time that does not occur) falls in.
    fn gap_end(&self, wall: NaiveDateTime) -> Option<Timestamp> {
        let occurs =
            |t: NaiveDateTime| !matches!(self.zone.from_local_datetime(&t), LocalResult::None);
        // Grow the step until a time that occurs, then halve back to the
        // first second that does: within the window every time before the
        // gap's end does not occur and every time after it does.
        let mut low = 0i64;
        let mut high = 60i64;
        while !occurs(wall + chrono::Duration::seconds(high)) {
            low = high;
            high *= 2;
            if high > MAX_GAP_SECONDS {
                return None;
            }
        }
        while high - low > 1 {
            let mid = low + (high - low) / 2;
            if occurs(wall + chrono::Duration::seconds(mid)) {
                high = mid;
            } else {
                low = mid;
            }
        }
        match self
            .zone
            .from_local_datetime(&(wall + chrono::Duration::seconds(high)))
        {
            LocalResult::Single(t) | LocalResult::Ambiguous(t, _) => {
                Some(Timestamp::from_chrono(&t))
            }
            LocalResult::None => None,
        }
    }
}

/// croner's error as the reason of our message.
fn why(e: &croner::errors::CronError) -> String {
    use croner::errors::CronError as E;
    match e {
        E::EmptyPattern => "it is empty".to_owned(),
        E::InvalidPattern(m) | E::IllegalCharacters(m) | E::ComponentError(m) => m.clone(),
        other => other.to_string(),
    }
}

/// Dropping the sub-second part of a wall-clock time.
trait WholeSeconds {
    fn with_nanosecond_zero(self) -> Self;
}

impl WholeSeconds for NaiveDateTime {
    fn with_nanosecond_zero(self) -> Self {
        use chrono::Timelike as _;
        self.with_nanosecond(0).unwrap_or(self)
    }
}
