//! Tests of [`Cron`]: parsing and its refusals, next ticks, and the
//! daylight-saving rule across real transitions in several zones.

use chrono::{NaiveDate, TimeZone as _};
use chrono_tz::Tz;

use super::*;
use crate::time::Timestamp;

/// The instant of UTC wall-clock time `y-m-d h:mi:s`.
fn utc(y: i32, m: u32, d: u32, h: u32, mi: u32, s: u32) -> Timestamp {
    let t = NaiveDate::from_ymd_opt(y, m, d)
        .and_then(|d| d.and_hms_opt(h, mi, s))
        .expect("valid test date");
    Timestamp::from_secs(t.and_utc().timestamp())
}

/// The local wall-clock time of `t` in `zone`, as `YYYY-MM-DD HH:MM:SS +ZZZZ`.
fn local(zone: &str, t: Timestamp) -> String {
    let tz: Tz = zone.parse().expect("test zone");
    let c = t.to_chrono().expect("in range").with_timezone(&tz);
    c.format("%Y-%m-%d %H:%M:%S %z").to_string()
}

fn cron(expr: &str, zone: &str) -> Cron {
    Cron::parse(expr, zone).unwrap_or_else(|e| panic!("{expr} in {zone}: {e}"))
}

/// Every tick in `[from, to]` (from exclusive), checked strictly increasing.
fn ticks(c: &Cron, from: Timestamp, to: Timestamp) -> Vec<Timestamp> {
    let mut out = Vec::new();
    let mut at = from;
    while let Some(t) = c.next_after(at) {
        assert!(t > at, "{} after {} is not later", t, at);
        if t > to {
            break;
        }
        out.push(t);
        at = t;
    }
    out
}

fn err(expr: &str, zone: &str) -> String {
    Cron::parse(expr, zone).expect_err(expr).to_string()
}

#[test]
fn parses_five_and_six_fields_aliases_and_extensions() {
    for expr in [
        "*/15 * * * *",
        "0 30 2 * * *",
        "@daily",
        "@HOURLY",
        "@weekly",
        "@yearly",
        "0 9 L * *",
        "0 9 15W * *",
        "0 9 * * 1#2",
        "0 9 * * 5L",
        "0 9 ? JAN-MAR MON-FRI",
        "0 0 13 * +FRI",
        "  5 4 * * *  ",
    ] {
        cron(expr, "UTC");
    }
    assert_eq!(cron("  5 4 * * *  ", "UTC").expr(), "5 4 * * *");
    assert_eq!(cron("@daily", "Europe/Berlin").timezone(), "Europe/Berlin");
    // Five fields tick at second 0; six take the seconds first. L: the
    // last day of February 2027. 1#2: the second Monday of January 2027 is
    // the 11th. +: Friday the 13th (August 2027), not Fridays or 13ths.
    let from = utc(2026, 12, 7, 16, 25, 10);
    let cases = [
        ("* * * * *", utc(2026, 12, 7, 16, 26, 0)),
        ("*/20 * * * * *", utc(2026, 12, 7, 16, 25, 20)),
        ("@daily", utc(2026, 12, 8, 0, 0, 0)),
        ("0 9 L 2 *", utc(2027, 2, 28, 9, 0, 0)),
        ("0 9 * 1 1#2", utc(2027, 1, 11, 9, 0, 0)),
        ("0 0 13 * +FRI", utc(2027, 8, 13, 0, 0, 0)),
    ];
    for (expr, next) in cases {
        assert_eq!(cron(expr, "UTC").next_after(from), Some(next), "{expr}");
    }
}

#[test]
fn refuses_bad_expressions_and_zones_with_readable_messages() {
    let e = err("*/0 * * * *", "UTC");
    assert!(
        e.starts_with("\"*/0 * * * *\" is not a valid cron expression: "),
        "{e}"
    );
    let e = err("0 0 0 1 1 * 2030", "UTC");
    assert!(e.contains("7 fields") && e.contains("year"), "{e}");
    assert!(err("* * * *", "UTC").contains("4 field(s)"));
    assert!(err("* * * * * * * *", "UTC").contains("8 field(s)"));
    assert!(err("", "UTC").contains("it is empty"));
    assert!(err("@reboot", "UTC").contains("aliases are"));
    assert!(err("61 * * * *", "UTC").starts_with("\"61 * * * *\" is not a valid"));
    assert!(err("* * * * MOO", "UTC").contains("is not a valid cron expression"));
    let e = err("0 0 30 2 *", "UTC");
    assert!(e.contains("never fires"), "{e}");
    assert!(err("0 0 31 4,6,9,11 *", "UTC").contains("never fires"));
    assert!(err("0 0 30 2 +MON", "UTC").contains("never fires"));
    // Feb 29 fires (in leap years).
    assert_eq!(
        cron("0 0 29 2 *", "UTC").next_after(utc(2026, 12, 7, 0, 0, 0)),
        Some(utc(2028, 2, 29, 0, 0, 0))
    );
    let e = err("@daily", "Mars/Olympus_Mons");
    assert_eq!(
        e,
        "\"Mars/Olympus_Mons\" is not an IANA time zone (such as \"Europe/Berlin\", \"America/New_York\" or \"UTC\")"
    );
    assert!(matches!(
        Cron::parse("@daily", "europe/berlin"),
        Err(CronError::Zone(_))
    ));
    assert!(matches!(
        Cron::parse("x", "UTC"),
        Err(CronError::Expression(_))
    ));
    // A long value is quoted cut short.
    let long = "9".repeat(500);
    assert!(err(&long, "UTC").len() < 250);
}

#[test]
fn next_is_strictly_after_even_within_a_second() {
    let c = cron("*/2 * * * * *", "UTC");
    let t = utc(2026, 12, 7, 16, 25, 10);
    assert_eq!(c.next_after(t), Some(utc(2026, 12, 7, 16, 25, 12)));
    assert_eq!(
        c.next_after(Timestamp(t.0 - 1)),
        Some(t),
        "a tick 1 ms later"
    );
    assert_eq!(
        c.next_after(Timestamp(t.0 + 999)),
        Some(utc(2026, 12, 7, 16, 25, 12))
    );
    // Zones: 09:00 in Berlin in December is 08:00 UTC, in New York 14:00.
    let from = utc(2026, 12, 7, 0, 0, 0);
    for (zone, hour) in [("Europe/Berlin", 8), ("America/New_York", 14)] {
        let next = cron("0 9 * * *", zone).next_after(from);
        assert_eq!(next, Some(utc(2026, 12, 7, hour, 0, 0)), "{zone}");
    }
}

/// The ticks of `expr` in `zone` on local day `y-m-d`, as local times.
fn ticks_on_local_day(expr: &str, zone: &str, y: i32, m: u32, d: u32) -> Vec<String> {
    let c = cron(expr, zone);
    let tz: Tz = zone.parse().expect("zone");
    let day = NaiveDate::from_ymd_opt(y, m, d).expect("date");
    let start = tz
        .from_local_datetime(&day.and_hms_opt(0, 0, 0).expect("midnight"))
        .earliest()
        .expect("midnight occurs");
    let end = tz
        .from_local_datetime(
            &day.succ_opt()
                .expect("next day")
                .and_hms_opt(0, 0, 0)
                .expect("midnight"),
        )
        .earliest()
        .expect("midnight occurs");
    ticks(
        &c,
        Timestamp(Timestamp::from_chrono(&start).0 - 1),
        Timestamp(Timestamp::from_chrono(&end).0 - 1),
    )
    .into_iter()
    .map(|t| local(zone, t))
    .collect()
}

/// Each case: an expression, a zone, a local day, the ticks that day.
type DayCase = (
    &'static str,
    &'static str,
    (i32, u32, u32),
    &'static [&'static str],
);

fn assert_days(cases: &[DayCase]) {
    for &(expr, zone, (y, m, d), want) in cases {
        let got = ticks_on_local_day(expr, zone, y, m, d);
        assert_eq!(got, want, "{expr} in {zone} on {y}-{m}-{d}");
    }
}

#[test]
fn a_nonexistent_time_fires_once_at_the_end_of_the_gap() {
    const NY: &str = "America/New_York";
    // The days around it are untouched. Several nonexistent times collapse
    // into one instant, with the tick at the gap's end itself; croner alone
    // would skip `0,30 2 * * *`. A weekday schedule fires on its day only.
    assert_days(&[
        (
            "30 2 * * *",
            NY,
            (2026, 3, 8),
            &["2026-03-08 03:00:00 -0400"],
        ),
        (
            "0 30 2 * * *",
            "Europe/Berlin",
            (2026, 3, 29),
            &["2026-03-29 03:00:00 +0200"],
        ),
        (
            "30 2 * * *",
            NY,
            (2026, 3, 9),
            &["2026-03-09 02:30:00 -0400"],
        ),
        (
            "0,15,30,45 2,3 * * *",
            NY,
            (2026, 3, 8),
            &[
                "2026-03-08 03:00:00 -0400",
                "2026-03-08 03:15:00 -0400",
                "2026-03-08 03:30:00 -0400",
                "2026-03-08 03:45:00 -0400",
            ],
        ),
        (
            "0,30 2 * * *",
            "Europe/Berlin",
            (2026, 3, 29),
            &["2026-03-29 03:00:00 +0200"],
        ),
        (
            "30 2 * * SUN",
            NY,
            (2026, 3, 8),
            &["2026-03-08 03:00:00 -0400"],
        ),
        ("30 2 * * MON", NY, (2026, 3, 8), &[]),
        (
            "7 0-3 * * *",
            NY,
            (2026, 3, 8),
            &[
                "2026-03-08 00:07:00 -0500",
                "2026-03-08 01:07:00 -0500",
                "2026-03-08 03:00:00 -0400",
                "2026-03-08 03:07:00 -0400",
            ],
        ),
    ]);
}

#[test]
fn a_repeated_time_fires_once_at_its_first_occurrence() {
    // Two hours listed: still once each; croner alone fires 01:30 twice.
    assert_days(&[
        (
            "30 1 * * *",
            "America/New_York",
            (2026, 11, 1),
            &["2026-11-01 01:30:00 -0400"],
        ),
        (
            "0 30 2 * * *",
            "Europe/Berlin",
            (2026, 10, 25),
            &["2026-10-25 02:30:00 +0200"],
        ),
        (
            "30 1,13 * * *",
            "America/New_York",
            (2026, 11, 1),
            &["2026-11-01 01:30:00 -0400", "2026-11-01 13:30:00 -0500"],
        ),
    ]);
    // A schedule every minute of hour 1 only: 60 ticks, not 120.
    assert_eq!(
        ticks_on_local_day("* 1 * * *", "America/New_York", 2026, 11, 1).len(),
        60
    );
}

#[test]
fn a_schedule_over_every_hour_fires_by_elapsed_time_through_a_repeated_hour() {
    assert!(cron("*/15 * * * *", "UTC").fires_every_hour());
    assert!(cron("@hourly", "UTC").fires_every_hour());
    assert!(!cron("* */2 * * *", "UTC").fires_every_hour());
    assert_eq!(
        ticks_on_local_day("0 * * * *", "America/New_York", 2026, 11, 1)[..4],
        [
            "2026-11-01 00:00:00 -0400",
            "2026-11-01 01:00:00 -0400",
            "2026-11-01 01:00:00 -0500",
            "2026-11-01 02:00:00 -0500"
        ]
    );
    assert_eq!(
        ticks_on_local_day("0 * * * *", "America/New_York", 2026, 11, 1).len(),
        25
    );
    assert_eq!(
        ticks_on_local_day("*/15 * * * *", "Europe/Berlin", 2026, 10, 25).len(),
        25 * 4
    );
    assert_eq!(
        ticks_on_local_day("*/15 * * * *", "Europe/Berlin", 2026, 3, 29).len(),
        23 * 4
    );
    // The gap's rule holds over every hour too: 02:07 fires at 03:00.
    assert_eq!(
        ticks_on_local_day("7 * * * *", "America/New_York", 2026, 3, 8)[1..4],
        [
            "2026-03-08 01:07:00 -0500",
            "2026-03-08 03:00:00 -0400",
            "2026-03-08 03:07:00 -0400"
        ]
    );
}

/// Every tick of `expr` over 4 hours around `transition` is `step_ms`
/// after the one before.
fn assert_steady(expr: &str, zone: &str, transition: Timestamp, step_ms: i64) {
    let c = cron(expr, zone);
    let from = Timestamp(transition.0 - 2 * 3_600_000);
    let to = Timestamp(transition.0 + 2 * 3_600_000);
    let all = ticks(&c, from, to);
    assert_eq!(
        all.len() as i64,
        4 * 3_600_000 / step_ms,
        "{expr} in {zone} around {transition}"
    );
    for pair in all.windows(2) {
        assert_eq!(
            pair[1].0 - pair[0].0,
            step_ms,
            "{expr} in {zone}: {} then {}",
            local(zone, pair[0]),
            local(zone, pair[1])
        );
    }
}

#[test]
fn an_every_two_seconds_schedule_ticks_steadily_across_both_transitions() {
    // New York: 2026-03-08 07:00Z (02:00 EST -> 03:00 EDT) and
    // 2026-11-01 06:00Z (02:00 EDT -> 01:00 EST). Berlin: 2026-03-29 01:00Z
    // and 2026-10-25 01:00Z. Lord Howe moves by 30 minutes: 2026-10-04
    // 02:00 -> 02:30 (+10:30 -> +11, 15:30Z the day before) and 2026-04-05
    // 02:00 -> 01:30 (15:00Z the day before).
    let every_2s = "*/2 * * * * *";
    let cases = [
        (every_2s, "America/New_York", utc(2026, 3, 8, 7, 0, 0), 2000),
        (
            every_2s,
            "America/New_York",
            utc(2026, 11, 1, 6, 0, 0),
            2000,
        ),
        (every_2s, "Europe/Berlin", utc(2026, 3, 29, 1, 0, 0), 2000),
        (every_2s, "Europe/Berlin", utc(2026, 10, 25, 1, 0, 0), 2000),
        (
            every_2s,
            "Australia/Lord_Howe",
            utc(2026, 10, 3, 15, 30, 0),
            2000,
        ),
        (
            every_2s,
            "Australia/Lord_Howe",
            utc(2026, 4, 4, 15, 0, 0),
            2000,
        ),
        (
            "*/15 * * * *",
            "America/New_York",
            utc(2026, 11, 1, 6, 0, 0),
            900_000,
        ),
        (
            "0 * * * *",
            "Europe/Berlin",
            utc(2026, 10, 25, 1, 0, 0),
            3_600_000,
        ),
    ];
    for (expr, zone, transition, step_ms) in cases {
        assert_steady(expr, zone, transition, step_ms);
    }
}

#[test]
fn a_half_hour_shift_follows_the_same_rule() {
    assert_eq!(
        ticks_on_local_day("15 2 * * *", "Australia/Lord_Howe", 2026, 10, 4),
        ["2026-10-04 02:30:00 +1100"]
    );
    assert_eq!(
        ticks_on_local_day("45 1 * * *", "Australia/Lord_Howe", 2026, 4, 5),
        ["2026-04-05 01:45:00 +1100"]
    );
    // Every 10 minutes over the repeated half hour: both occurrences.
    assert_eq!(
        ticks_on_local_day("*/10 * * * *", "Australia/Lord_Howe", 2026, 4, 5).len(),
        24 * 6 + 3
    );
}
