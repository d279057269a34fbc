//! Schedules: each tick makes exactly one run, through lost writes and a
//! new instance reading the store back; missed ticks follow the policy;
//! the concurrency policies; the starting deadline.

use std::time::Duration;

use berth_proto::TaskState;

use super::{Store, T0, id, job, schedule, update};
use crate::job::{ConcurrencyPolicy, MissedPolicy};
use crate::run::{RunId, RunStatus};
use crate::state::{Jobs, Op};
use crate::time::Timestamp;

fn secs(s: u64) -> Duration {
    Duration::from_secs(s)
}

/// A job `every2` firing every 2 s, created at `T0`, stored.
fn every_two_seconds(policy: MissedPolicy, deadline: u64) -> (Jobs, Store) {
    let mut jobs = Jobs::default();
    let mut store = Store::default();
    let mut def = job("every2");
    let mut s = schedule("tick", "*/2 * * * * *");
    s.missed = policy;
    s.starting_deadline = secs(deadline);
    def.schedules = vec![s];
    // Every missed tick stays in the history, to be counted.
    def.history.failed = 1000;
    jobs.apply(&Op::Create(def), T0, 1).expect("created");
    store.write(&mut jobs);
    (jobs, store)
}

/// Every run (active or kept) of `every2`, by id.
fn runs(jobs: &Jobs, at: Timestamp) -> Vec<(String, RunStatus)> {
    let st = jobs.status(&id("every2"), at).expect("the job");
    let mut all: Vec<(String, RunStatus)> = st
        .active
        .iter()
        .chain(st.history.iter())
        .map(|r| (r.id.to_string(), r.status))
        .collect();
    all.sort_by(|a, b| a.0.cmp(&b.0));
    all
}

#[test]
fn a_due_tick_makes_one_run_written_with_the_cursor_that_passed_it() {
    let (mut jobs, _) = every_two_seconds(MissedPolicy::RunOnce, 60);
    let tick = T0.plus(secs(2));
    assert_eq!(jobs.next_wakeup(), Some(tick));
    jobs.advance(tick);
    let txns = jobs.take_writes();
    assert_eq!(txns.len(), 1, "one transaction: {txns:?}");
    let keys: Vec<&str> = txns[0].iter().map(|(k, _)| k.as_str()).collect();
    let run = RunId::of_tick("tick", tick);
    assert_eq!(keys, ["meta/every2", &format!("run/every2/{run}")]);
    assert_eq!(jobs.next_wakeup(), Some(T0.plus(secs(4))));
}

#[test]
fn a_tick_whose_write_was_lost_makes_the_same_run_once_on_the_next_instance() {
    let (mut jobs, store) = every_two_seconds(MissedPolicy::RunOnce, 60);
    let tick = T0.plus(secs(2));
    jobs.advance(tick);
    let first = runs(&jobs, tick);
    // The instance dies before writing: the next one reads the store back.
    let mut next = store.load();
    let mut store = store;
    next.advance(tick.plus(Duration::from_millis(500)));
    assert_eq!(runs(&next, tick), first, "the same run, by its id");
    store.write(&mut next);
    // And after that write, a third instance makes no second run.
    let mut third = store.load();
    third.advance(tick.plus(Duration::from_millis(900)));
    assert_eq!(runs(&third, tick), first);
    assert_eq!(third.take_writes().len(), 0);
}

#[test]
fn ticks_found_late_within_the_deadline_all_run_once() {
    let (jobs, store) = every_two_seconds(MissedPolicy::Skip, 60);
    drop(jobs);
    // Down for 9 s (a failover): ticks at +2, +4, +6, +8 run late.
    let mut back = store.load();
    back.advance(T0.plus(secs(9)));
    let ids: Vec<String> = runs(&back, T0).into_iter().map(|(id, _)| id).collect();
    let expected: Vec<String> = [2, 4, 6, 8]
        .iter()
        .map(|s| RunId::of_tick("tick", T0.plus(secs(*s))).to_string())
        .collect();
    assert_eq!(ids, expected);
}

#[test]
fn missed_ticks_follow_the_policy() {
    // Down for 60 s with a 10 s deadline: ticks +2..+48 are missed, +50..+60
    // are within the deadline.
    let late = T0.plus(secs(60));
    let count = |policy| {
        let (_, store) = every_two_seconds(policy, 10);
        let mut back = store.load();
        back.advance(late);
        let all = runs(&back, late);
        let ran = all.iter().filter(|(_, s)| !s.is_finished()).count();
        let missed = all.iter().filter(|(_, s)| *s == RunStatus::Missed).count();
        (ran, missed)
    };
    // Within the deadline: 50, 52, 54, 56, 58, 60 run in every case.
    assert_eq!(count(MissedPolicy::Skip), (6, 24));
    assert_eq!(count(MissedPolicy::RunOnce), (7, 23));
    assert_eq!(count(MissedPolicy::RunAll { max: 3 }), (9, 21));
}

#[test]
fn a_missed_tick_says_why() {
    let (_, store) = every_two_seconds(MissedPolicy::Skip, 10);
    let mut back = store.load();
    let late = T0.plus(secs(30));
    back.advance(late);
    let st = back.status(&id("every2"), late).expect("job");
    let missed = st
        .history
        .iter()
        .find(|r| r.status == RunStatus::Missed)
        .expect("a missed tick");
    assert!(
        missed
            .reason
            .contains("past startingDeadlineSeconds (10 s)"),
        "{}",
        missed.reason
    );
}

#[test]
fn forbid_skips_a_tick_while_a_run_is_active_and_replace_stops_it() {
    for (policy, expect) in [
        (ConcurrencyPolicy::Forbid, RunStatus::Skipped),
        (ConcurrencyPolicy::Replace, RunStatus::Failed),
    ] {
        let mut jobs = Jobs::default();
        let mut def = job("every2");
        let mut s = schedule("tick", "*/2 * * * * *");
        s.concurrency = policy;
        def.schedules = vec![s];
        jobs.apply(&Op::Create(def), T0, 1).expect("created");
        jobs.advance(T0.plus(secs(2)));
        let first = RunId::of_tick("tick", T0.plus(secs(2)));
        let task = jobs.run(&id("every2"), &first).expect("run").tasks[0]
            .task_id
            .clone();
        jobs.launching(std::slice::from_ref(&task), T0.plus(secs(2)));
        update(
            &mut jobs,
            &task,
            TaskState::TaskRunning,
            None,
            T0.plus(secs(2)),
        );
        jobs.advance(T0.plus(secs(4)));
        let second = RunId::of_tick("tick", T0.plus(secs(4)));
        match policy {
            ConcurrencyPolicy::Forbid => {
                let skipped = jobs.run(&id("every2"), &second).expect("recorded");
                assert_eq!(skipped.status, expect);
                assert!(skipped.reason.contains("FORBID"), "{}", skipped.reason);
            }
            _ => {
                assert_eq!(jobs.to_stop().len(), 1, "the old run's task is killed");
                update(
                    &mut jobs,
                    &task,
                    TaskState::TaskKilled,
                    None,
                    T0.plus(secs(4)),
                );
                let old = jobs.run(&id("every2"), &first).expect("kept");
                assert_eq!(old.status, expect);
                assert!(old.reason.contains("replaced by run"), "{}", old.reason);
                let new = jobs.run(&id("every2"), &second).expect("the new run");
                assert!(!new.status.is_finished());
            }
        }
    }
}

#[test]
fn a_tick_run_not_started_within_the_deadline_is_missed() {
    let (mut jobs, _) = every_two_seconds(MissedPolicy::RunOnce, 5);
    let tick = T0.plus(secs(2));
    jobs.advance(tick);
    let run = RunId::of_tick("tick", tick);
    jobs.advance(tick.plus(secs(5)));
    assert!(
        jobs.run(&id("every2"), &run)
            .is_some_and(|r| !r.status.is_finished())
    );
    jobs.advance(tick.plus(secs(6)));
    let r = jobs.run(&id("every2"), &run).expect("recorded");
    assert_eq!(r.status, RunStatus::Missed);
    assert!(r.reason.contains("startingDeadlineSeconds"), "{}", r.reason);
}

#[test]
fn an_update_keeps_an_unchanged_schedules_cursor_and_restarts_a_changed_one() {
    let (mut jobs, _) = every_two_seconds(MissedPolicy::RunOnce, 60);
    let st = jobs.status(&id("every2"), T0).expect("job");
    let cursor = st.next_ticks.get("tick").copied().flatten();
    assert_eq!(cursor, Some(T0.plus(secs(2))));
    let mut def = st.def.clone();
    def.description = "changed".into();
    jobs.apply(
        &Op::Update {
            def: def.clone(),
            keep_schedules: false,
        },
        T0.plus(secs(10)),
        1,
    )
    .expect("updated");
    let kept = jobs.status(&id("every2"), T0).expect("job").next_ticks["tick"];
    assert_eq!(kept, cursor, "due ticks are not lost by an update");
    def.schedules[0].cron = "*/5 * * * * *".into();
    jobs.apply(
        &Op::Update {
            def,
            keep_schedules: false,
        },
        T0.plus(secs(10)),
        1,
    )
    .expect("updated");
    let moved = jobs.status(&id("every2"), T0).expect("job").next_ticks["tick"];
    assert_eq!(moved, Some(T0.plus(secs(15))));
}

#[test]
fn a_disabled_schedule_does_not_fire() {
    let mut jobs = Jobs::default();
    let mut def = job("every2");
    let mut s = schedule("tick", "*/2 * * * * *");
    s.enabled = false;
    def.schedules = vec![s];
    jobs.apply(&Op::Create(def), T0, 1).expect("created");
    assert_eq!(jobs.next_wakeup(), None);
    jobs.advance(T0.plus(secs(60)));
    assert!(runs(&jobs, T0).is_empty());
}
