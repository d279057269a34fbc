//! Tests of [`due`](super::due): the policies, the deadline's edge, the
//! bound on listed and enumerated ticks, and a property test against
//! stepping every tick.

use std::time::Duration;

use proptest::prelude::*;

use super::*;

const T0: Timestamp = Timestamp::from_secs(1_796_660_700); // 2026-12-07T16:25:00Z

fn every_minute() -> Cron {
    Cron::parse("* * * * *", "UTC").expect("valid")
}

fn min(n: i64) -> Timestamp {
    Timestamp(T0.0 + n * 60_000)
}

#[test]
fn within_the_deadline_ticks_run_and_older_ones_follow_the_policy() {
    let c = every_minute();
    // Ticks at minutes 0..=10; now is minute 10 plus 30 s; deadline 3 min:
    // minutes 8, 9, 10 run (minute 7 is 3.5 min old), 0..=7 are missed.
    let now = Timestamp(min(10).0 + 30_000);
    let deadline = Duration::from_secs(180);
    let d = due(&c, min(0), now, deadline, MissedPolicy::Skip);
    assert_eq!(d.run, [min(8), min(9), min(10)]);
    assert_eq!(d.missed, (0..=7).map(min).collect::<Vec<_>>());
    assert_eq!((d.missed_more, d.missed_more_at_least), (0, false));
    assert_eq!(d.next, Some(min(11)));

    let d = due(&c, min(0), now, deadline, MissedPolicy::RunOnce);
    assert_eq!(d.run, [min(7), min(8), min(9), min(10)]);
    assert_eq!(d.missed, (0..=6).map(min).collect::<Vec<_>>());

    let d = due(&c, min(0), now, deadline, MissedPolicy::RunAll { max: 3 });
    assert_eq!(d.run, (5..=10).map(min).collect::<Vec<_>>());
    assert_eq!(d.missed, (0..=4).map(min).collect::<Vec<_>>());

    let d = due(&c, min(0), now, deadline, MissedPolicy::RunAll { max: 100 });
    assert_eq!(d.run, (0..=10).map(min).collect::<Vec<_>>());
    assert!(d.missed.is_empty());
}

#[test]
fn the_deadline_edge_runs_and_next_is_inclusive_only_when_a_tick() {
    let c = every_minute();
    // Exactly `deadline` old: runs.
    let d = due(
        &c,
        min(0),
        min(2),
        Duration::from_secs(120),
        MissedPolicy::Skip,
    );
    assert_eq!(d.run, [min(0), min(1), min(2)]);
    // `next` between ticks: the first tick after it.
    let d = due(
        &c,
        Timestamp(min(0).0 + 1),
        min(2),
        Duration::ZERO,
        MissedPolicy::Skip,
    );
    assert_eq!((d.run, d.missed), (vec![min(2)], vec![min(1)]));
    // Nothing due yet.
    let d = due(&c, min(5), min(4), Duration::ZERO, MissedPolicy::RunOnce);
    assert_eq!(
        d,
        Due {
            run: vec![],
            missed: vec![],
            missed_more: 0,
            missed_more_at_least: false,
            next: Some(min(5)),
        }
    );
}

#[test]
fn missed_lists_the_latest_and_counts_the_rest() {
    let c = every_minute();
    let now = min(1000);
    let d = due(&c, min(0), now, Duration::ZERO, MissedPolicy::RunOnce);
    assert_eq!(d.run, [min(999), min(1000)]);
    assert_eq!(d.missed.len(), MAX_LISTED_MISSED);
    assert_eq!(d.missed.first(), Some(&min(899)));
    assert_eq!(d.missed.last(), Some(&min(998)));
    assert_eq!((d.missed_more, d.missed_more_at_least), (899, false));
}

#[test]
fn past_the_enumeration_bound_the_latest_are_found_and_the_count_is_a_lower_bound() {
    let c = every_minute();
    let now = min(100_000);
    let bound = 1000;
    let d = due_bounded(
        &c,
        min(0),
        now,
        Duration::ZERO,
        MissedPolicy::RunAll { max: 5 },
        bound,
    );
    assert_eq!(d.run, (99_995..=100_000).map(min).collect::<Vec<_>>());
    assert_eq!(d.missed, (99_895..99_995).map(min).collect::<Vec<_>>());
    assert!(d.missed_more_at_least);
    assert!(d.missed_more >= bound as u64, "{}", d.missed_more);
    assert!(d.missed_more < 99_895);
    assert_eq!(d.next, Some(min(100_001)));
    // Just over the bound, the window reaches back: exact again.
    let d = due_bounded(
        &c,
        min(0),
        min(1100),
        Duration::ZERO,
        MissedPolicy::Skip,
        bound,
    );
    assert_eq!((d.missed_more, d.missed_more_at_least), (1000, false));
    assert_eq!(d.missed.first(), Some(&min(1000)));
}

fn any_policy() -> impl Strategy<Value = MissedPolicy> {
    prop_oneof![
        Just(MissedPolicy::Skip),
        Just(MissedPolicy::RunOnce),
        (0u32..8).prop_map(|max| MissedPolicy::RunAll { max }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(64))]

    /// Every tick from `next` to `now` appears exactly once across `run`,
    /// `missed` and `missed_more`; `run` ascends; the policy is kept.
    #[test]
    fn every_tick_is_accounted_for_once(
        expr in prop::sample::select(vec!["*/7 * * * * *", "* * * * *", "*/5 1,2 * * *", "0 30 2 * * *"]),
        zone in prop::sample::select(vec!["UTC", "America/New_York", "Europe/Berlin"]),
        start in 0i64..(366 * 86_400),
        len in 0i64..(3 * 3600),
        deadline in 0u64..7200,
        policy in any_policy(),
        bound in prop::sample::select(vec![300usize, MAX_ENUMERATED]),
    ) {
        let c = Cron::parse(expr, zone).expect("valid");
        let next = Timestamp(utc_2026() + start * 1000);
        let now = Timestamp(next.0 + len * 1000);
        let deadline = Duration::from_secs(deadline);
        let d = due_bounded(&c, next, now, deadline, policy, bound);

        let mut all = Vec::new();
        let mut t = c.next_after(Timestamp(next.0 - 1));
        while let Some(x) = t.filter(|&x| x <= now) {
            all.push(x);
            t = c.next_after(x);
        }
        prop_assert_eq!(d.next, t);
        prop_assert!(d.run.windows(2).all(|w| w[0] < w[1]));
        prop_assert!(d.missed.windows(2).all(|w| w[0] < w[1]));
        let cutoff = now.0 - i64::try_from(deadline.as_millis()).unwrap_or(i64::MAX);
        let missed_total = all.iter().filter(|x| x.0 < cutoff).count();
        let within: Vec<_> = all.iter().copied().filter(|x| x.0 >= cutoff).collect();
        let runs_from_missed = match policy {
            MissedPolicy::Skip => 0,
            MissedPolicy::RunOnce => 1,
            MissedPolicy::RunAll { max } => max as usize,
        }.min(missed_total);
        // The missed that run are the latest missed; then all within.
        let expected_run: Vec<_> = all[missed_total - runs_from_missed..].to_vec();
        prop_assert_eq!(&d.run, &expected_run);
        prop_assert!(d.run.ends_with(&within));
        let recorded = &all[..missed_total - runs_from_missed];
        if d.missed_more_at_least {
            prop_assert!(missed_total > bound);
            prop_assert!(recorded.ends_with(&d.missed));
            prop_assert!(d.missed.len() as u64 + d.missed_more <= recorded.len() as u64);
        } else {
            prop_assert_eq!(d.missed.len() as u64 + d.missed_more, recorded.len() as u64);
            prop_assert!(recorded.ends_with(&d.missed));
            prop_assert_eq!(d.missed.len(), recorded.len().min(MAX_LISTED_MISSED));
        }
    }
}

/// 2026-01-01T00:00:00Z in milliseconds.
fn utc_2026() -> i64 {
    1_767_225_600_000
}
