//! [`Time`]: a point in time passed in by the caller.
//!
//! scheduler-core never reads a clock. The caller picks an epoch (the master
//! uses its own monotonic start, tests use zero) and hands `Time` values to
//! every call that needs "now".

use std::ops::Add;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since an arbitrary epoch chosen by the caller.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Time(u64);

impl Time {
    /// The epoch.
    pub const ZERO: Time = Time(0);

    /// A time `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Time {
        Time(ms)
    }

    /// Milliseconds since the epoch.
    pub const fn as_millis(self) -> u64 {
        self.0
    }

    /// How long after `earlier` this time is; zero if `earlier` is later.
    pub fn saturating_duration_since(self, earlier: Time) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl Add<Duration> for Time {
    type Output = Time;

    /// Adds whole milliseconds of `d` (sub-millisecond parts are dropped),
    /// saturating at `u64::MAX` milliseconds.
    fn add(self, d: Duration) -> Time {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Time(self.0.saturating_add(ms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arithmetic() {
        let t = Time::from_millis(1_000);
        assert_eq!((t + Duration::from_secs(5)).as_millis(), 6_000);
        assert_eq!(
            (t + Duration::from_secs(5)).saturating_duration_since(t),
            Duration::from_secs(5)
        );
        assert_eq!(Time::ZERO.saturating_duration_since(t), Duration::ZERO);
        assert_eq!(
            Time::from_millis(u64::MAX - 1) + Duration::MAX,
            Time::from_millis(u64::MAX)
        );
        assert!(Time::ZERO < t);
    }

    #[test]
    fn serde_is_plain_number() {
        let t = Time::from_millis(42);
        assert_eq!(serde_json::to_string(&t).unwrap(), "42");
        assert_eq!(serde_json::from_str::<Time>("42").unwrap(), t);
    }
}
