//! [`Timestamp`]: a point in time as whole milliseconds since the Unix
//! epoch, UTC. The pure core never reads a clock; callers pass timestamps
//! in. Rendered as Metronome renders times (`2026-12-07T16:25:00.000+0000`).

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z (negative before it).
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// The timestamp `ms` milliseconds after the epoch.
    #[must_use]
    pub const fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }

    /// The timestamp `s` seconds after the epoch.
    #[must_use]
    pub const fn from_secs(s: i64) -> Timestamp {
        Timestamp(s.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    #[must_use]
    pub const fn millis(self) -> i64 {
        self.0
    }

    /// `self + d`, saturating.
    #[must_use]
    pub fn plus(self, d: Duration) -> Timestamp {
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// How long after `earlier` this is (zero if it is not after).
    #[must_use]
    pub fn since(self, earlier: Timestamp) -> Duration {
        let ms = self.0.saturating_sub(earlier.0).max(0);
        Duration::from_millis(u64::try_from(ms).unwrap_or(0))
    }

    /// The wall clock now.
    #[must_use]
    pub fn now() -> Timestamp {
        let ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
        Timestamp(ms)
    }

    /// As a chrono time (`None` out of chrono's range).
    #[must_use]
    pub fn to_chrono(self) -> Option<chrono::DateTime<chrono::Utc>> {
        chrono::DateTime::from_timestamp_millis(self.0)
    }

    /// From a chrono time.
    #[must_use]
    pub fn from_chrono<Tz: chrono::TimeZone>(t: &chrono::DateTime<Tz>) -> Timestamp {
        Timestamp(t.timestamp_millis())
    }

    /// The compact UTC form used in run ids: `20261207162500` (seconds;
    /// milliseconds are appended as `.123` when not zero).
    #[must_use]
    pub fn compact(self) -> String {
        match self.to_chrono() {
            Some(t) if self.0.rem_euclid(1000) == 0 => t.format("%Y%m%d%H%M%S").to_string(),
            Some(t) => t.format("%Y%m%d%H%M%S.%3f").to_string(),
            None => self.0.to_string(),
        }
    }
}

impl fmt::Display for Timestamp {
    /// Metronome's form: `2026-12-07T16:25:00.000+0000`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.to_chrono() {
            Some(t) => write!(f, "{}", t.format("%Y-%m-%dT%H:%M:%S%.3f+0000")),
            None => write!(f, "{}", self.0),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_as_metronome_and_compact() {
        let t = Timestamp::from_secs(1_796_660_700); // 2026-12-07T16:25:00Z
        assert_eq!(t.to_string(), "2026-12-07T16:25:00.000+0000");
        assert_eq!(t.compact(), "20261207162500");
        assert_eq!(Timestamp(t.0 + 5).compact(), "20261207162500.005");
        assert_eq!(
            t.plus(Duration::from_secs(1)).since(t),
            Duration::from_secs(1)
        );
        assert_eq!(t.since(t.plus(Duration::from_secs(1))), Duration::ZERO);
    }
}
