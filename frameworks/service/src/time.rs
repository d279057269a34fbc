//! [`Timestamp`]: a point in time as whole milliseconds since the Unix
//! epoch. The pure core never reads a clock; callers pass timestamps in.
//! App versions are timestamps too, rendered as Marathon renders them
//! (`2024-05-01T12:00:00.000Z`).

use std::fmt;
use std::time::Duration;

use berth_scheduler_core::error::quoted;
use serde::{Deserialize, Serialize};

/// Milliseconds since 1970-01-01T00:00:00Z.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub u64);

impl Timestamp {
    /// The timestamp `ms` milliseconds after the epoch.
    pub const fn from_millis(ms: u64) -> Timestamp {
        Timestamp(ms)
    }

    /// The timestamp `s` seconds after the epoch.
    pub const fn from_secs(s: u64) -> Timestamp {
        Timestamp(s.saturating_mul(1000))
    }

    /// Milliseconds since the epoch.
    pub const fn millis(self) -> u64 {
        self.0
    }

    /// `self + d`, saturating.
    pub fn plus(self, d: Duration) -> Timestamp {
        let ms = u64::try_from(d.as_millis()).unwrap_or(u64::MAX);
        Timestamp(self.0.saturating_add(ms))
    }

    /// Parses Marathon's version format, RFC 3339 in UTC
    /// (`2015-02-11T09:31:21.218Z`; fractions beyond milliseconds are cut,
    /// the fraction may be absent). The error quotes the input.
    pub fn parse_rfc3339(s: &str) -> Result<Timestamp, String> {
        let bad = || {
            format!(
                "{} is not a UTC time like 2015-02-11T09:31:21.218Z",
                quoted(s)
            )
        };
        let b = s.as_bytes();
        if b.len() < 20 || b.last() != Some(&b'Z') {
            return Err(bad());
        }
        let num = |from: usize, to: usize| -> Option<u64> {
            let part = s.get(from..to)?;
            if part.bytes().all(|c| c.is_ascii_digit()) {
                part.parse().ok()
            } else {
                None
            }
        };
        let seps = [(4, b'-'), (7, b'-'), (10, b'T'), (13, b':'), (16, b':')];
        if seps.iter().any(|(i, c)| b[*i] != *c) {
            return Err(bad());
        }
        let fields = (
            num(0, 4),
            num(5, 7),
            num(8, 10),
            num(11, 13),
            num(14, 16),
            num(17, 19),
        );
        let (Some(y), Some(mo), Some(d), Some(h), Some(mi), Some(sec)) = fields else {
            return Err(bad());
        };
        let ms = match &s[19..s.len() - 1] {
            "" => 0,
            frac => {
                let digits = frac.strip_prefix('.').ok_or_else(bad)?;
                if digits.is_empty()
                    || digits.len() > 9
                    || !digits.bytes().all(|c| c.is_ascii_digit())
                {
                    return Err(bad());
                }
                let mut three: String = digits.chars().take(3).collect();
                while three.len() < 3 {
                    three.push('0');
                }
                three.parse::<u64>().map_err(|_| bad())?
            }
        };
        if !(1970..=9999).contains(&y) || !(1..=12).contains(&mo) || h > 23 || mi > 59 || sec > 59 {
            return Err(bad());
        }
        if d < 1 || d > days_in_month(y, mo) {
            return Err(bad());
        }
        let days = days_from_civil(y, mo, d);
        Ok(Timestamp(
            ((days * 86_400 + h * 3600 + mi * 60 + sec) * 1000) + ms,
        ))
    }

    /// The time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(self.0.saturating_sub(earlier.0))
    }
}

impl fmt::Display for Timestamp {
    /// RFC 3339 in UTC with milliseconds, as Marathon writes versions.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0 % 1000;
        let secs = self.0 / 1000;
        let days = secs / 86_400;
        let rem = secs % 86_400;
        let (y, m, d) = civil_from_days(days);
        write!(
            f,
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem / 60) % 60,
            rem % 60
        )
    }
}

fn days_in_month(y: u64, m: u64) -> u64 {
    let leap = (y.is_multiple_of(4) && !y.is_multiple_of(100)) || y.is_multiple_of(400);
    match m {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days from 1970-01-01 to the date (the inverse of [`civil_from_days`];
/// years from 1970 on).
fn days_from_civil(y: u64, m: u64, d: u64) -> u64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y / 400;
    let yoe = y % 400;
    let mp = if m > 2 { m - 3 } else { m + 9 };
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// The proleptic Gregorian date of the day `days` after 1970-01-01.
fn civil_from_days(days: u64) -> (u64, u64, u64) {
    // Shift the epoch to 0000-03-01 so that leap days end a year; eras are
    // 400-year cycles of 146,097 days.
    let z = days + 719_468;
    let era = z / 146_097;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + u64::from(m <= 2);
    (y, m, d)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc3339_like_marathon() {
        assert_eq!(Timestamp(0).to_string(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(1_423_647_081_218).to_string(),
            "2015-02-11T09:31:21.218Z"
        );
        // A leap day.
        assert_eq!(
            Timestamp::from_secs(951_782_400).to_string(),
            "2000-02-29T00:00:00.000Z"
        );
    }

    #[test]
    fn parses_what_it_renders() {
        for ms in [0, 1_423_647_081_218, 951_782_400_000, 4_102_444_799_999] {
            let t = Timestamp(ms);
            assert_eq!(Timestamp::parse_rfc3339(&t.to_string()), Ok(t));
        }
        assert_eq!(
            Timestamp::parse_rfc3339("2015-02-11T09:31:21Z"),
            Ok(Timestamp(1_423_647_081_000))
        );
        assert_eq!(
            Timestamp::parse_rfc3339("2015-02-11T09:31:21.2Z"),
            Ok(Timestamp(1_423_647_081_200))
        );
        for bad in [
            "",
            "2015-02-11",
            "2015-02-11T09:31:21.218",
            "2015-02-30T09:31:21.218Z",
            "2015-13-11T09:31:21.218Z",
            "2015-02-11T24:31:21.218Z",
            "2015-02-11T09:31:21.Z",
            "2015-02-11 09:31:21.218Z",
            "+015-02-11T09:31:21.218Z",
            "2015-02-11T09:31:21.218+01:00",
        ] {
            assert!(Timestamp::parse_rfc3339(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn arithmetic_saturates() {
        let t = Timestamp::from_secs(10);
        assert_eq!(t.plus(Duration::from_secs(5)), Timestamp::from_secs(15));
        assert_eq!(t.since(Timestamp::from_secs(20)), Duration::ZERO);
        assert_eq!(
            Timestamp(u64::MAX).plus(Duration::from_secs(1)),
            Timestamp(u64::MAX)
        );
    }
}
