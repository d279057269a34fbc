//! The job framework's schedules at the scale bar of issue 15: 10,000 job
//! definitions with cron schedules in mixed time zones.
//!
//! `cargo bench -p berth-benches --bench jobs_timers` runs them; CI only
//! compiles them. Measured: parsing the 10,000 schedules, computing each
//! one's next tick, and firing ticks from a [`Timers`] holding all 10,000
//! (`pop_due` of the earliest, then the fired schedule's next tick and
//! `set`: the scheduler's loop, which never scans all jobs), with and
//! without the next-tick computation. Memory per `Cron` and per timer entry
//! is printed once (the resident set's growth while 100,000 of each are
//! built, and `size_of`). Figures and the machine are in
//! docs/benchmarks.md.

use std::hint::black_box;
use std::time::{Duration, Instant};

use berth_jobs::Timestamp;
use berth_jobs::schedule::{Cron, Timers};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const JOBS: usize = 10_000;

const ZONES: [&str; 7] = [
    "UTC",
    "Europe/Berlin",
    "America/New_York",
    "Asia/Tokyo",
    "Australia/Lord_Howe",
    "America/Sao_Paulo",
    "Asia/Kolkata",
];

/// 10,000 varied (expression, zone) pairs: steps, fixed daily times, week
/// days, last day of the month, aliases, seconds.
fn schedules() -> Vec<(String, &'static str)> {
    (0..JOBS)
        .map(|i| {
            let (m, h) = (i % 60, (i / 60) % 24);
            let expr = match i % 8 {
                0 => format!("*/{} * * * *", 1 + i % 30),
                1 => format!("{m} {h} * * *"),
                2 => format!("{} {m} */{} * * *", i % 60, 1 + i % 6),
                3 => format!("{m} {h} * * MON-FRI"),
                4 => format!("{m} {h} L * *"),
                5 => "@hourly".to_owned(),
                6 => format!("{m} {h} 1,15 * *"),
                _ => format!("*/{} * * * * *", 5 + i % 55),
            };
            (expr, ZONES[i % ZONES.len()])
        })
        .collect()
}

fn parse_all(s: &[(String, &'static str)]) -> Vec<Cron> {
    s.iter()
        .map(|(e, z)| Cron::parse(e, z).expect("the generated schedules are valid"))
        .collect()
}

/// 2026-12-07T16:25:00Z.
const NOW: Timestamp = Timestamp::from_secs(1_796_660_700);

fn parse_and_next(c: &mut Criterion) {
    let s = schedules();
    let crons = parse_all(&s);
    let mut group = c.benchmark_group("jobs_schedules_10k");
    group.throughput(Throughput::Elements(JOBS as u64));
    group.bench_function("parse", |b| b.iter(|| black_box(parse_all(&s))));
    group.bench_function("next_tick", |b| {
        b.iter(|| {
            crons
                .iter()
                .filter_map(|c| c.next_after(black_box(NOW)))
                .max()
        });
    });
    group.finish();
}

/// Timers for every schedule at its next tick after [`NOW`].
fn timers(crons: &[Cron]) -> Timers<usize> {
    let mut t = Timers::default();
    for (i, c) in crons.iter().enumerate() {
        if let Some(at) = c.next_after(NOW) {
            t.set(i, at);
        }
    }
    t
}

/// Fires ticks from `t` until at least `n`: the earliest due keys, each
/// rescheduled by `next`. Returns how many fired.
fn fire(t: &mut Timers<usize>, n: usize, next: &impl Fn(usize, Timestamp) -> Timestamp) -> usize {
    let mut fired = 0;
    while fired < n {
        let Some(now) = t.earliest() else { break };
        for (key, at) in t.pop_due(now) {
            t.set(key, next(key, at));
            fired += 1;
        }
    }
    fired
}

/// Time per 1,000 fired ticks (ticks due together fire together, so an
/// iteration fires at least 1,000 and the time is scaled to 1,000).
fn per_thousand(
    t: &mut Timers<usize>,
    next: &impl Fn(usize, Timestamp) -> Timestamp,
    iters: u64,
) -> Duration {
    let start = Instant::now();
    let mut fired = 0u64;
    for _ in 0..iters {
        fired += fire(t, 1000, next) as u64;
    }
    let spent = start.elapsed();
    spent.mul_f64((iters * 1000) as f64 / fired.max(1) as f64)
}

fn fire_and_reschedule(c: &mut Criterion) {
    let crons = parse_all(&schedules());
    let mut group = c.benchmark_group("jobs_timers_10k");
    group.throughput(Throughput::Elements(1000));
    let mut t = timers(&crons);
    let next = |k: usize, at: Timestamp| {
        crons[k]
            .next_after(at)
            .unwrap_or(Timestamp(at.0 + 3_600_000))
    };
    group.bench_function("pop_due_next_tick_set_per_1000_fired", |b| {
        b.iter_custom(|iters| per_thousand(&mut t, &next, iters));
    });
    let mut t = timers(&crons);
    let fixed = |k: usize, at: Timestamp| Timestamp(at.0 + 60_000 + (k as i64 % 1000));
    group.bench_function("pop_due_set_only_per_1000_fired", |b| {
        b.iter_custom(|iters| per_thousand(&mut t, &fixed, iters));
    });
    group.finish();
}

/// The resident set now, in bytes (`/proc/self/statm`, 4 KiB pages);
/// `None` off Linux.
fn rss() -> Option<i64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: i64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// The resident set's growth while `build` runs, divided by `n`.
fn rss_per<T>(n: usize, build: impl FnOnce() -> T) -> (T, Option<f64>) {
    let before = rss();
    let built = build();
    let grew = rss().zip(before).map(|(a, b)| (a - b) as f64 / n as f64);
    (built, grew)
}

/// Memory per schedule and per timer entry, printed once: the resident
/// set's growth while 100,000 of each are built (ten copies of the 10,000
/// schedules, so the pages are many), before any other bench runs.
fn memory(_: &mut Criterion) {
    const COPIES: usize = 10;
    let s = schedules();
    let (crons, per_cron) = rss_per(JOBS * COPIES, || {
        let mut v = Vec::with_capacity(JOBS * COPIES);
        for _ in 0..COPIES {
            v.extend(s.iter().map(|(e, z)| Cron::parse(e, z).expect("valid")));
        }
        v
    });
    let (t, per_timer) = rss_per(JOBS * COPIES, || {
        let mut t = Timers::default();
        for (i, c) in crons.iter().enumerate() {
            if let Some(at) = c.next_after(NOW) {
                t.set(i, at);
            }
        }
        t
    });
    let show = |b: Option<f64>| b.map_or("unknown".to_owned(), |b| format!("{b:.0} B"));
    println!(
        "memory: per Cron {} resident (size_of {} B, inside it); per Timers<usize> entry {} resident; {} timers",
        show(per_cron),
        size_of::<Cron>(),
        show(per_timer),
        t.len(),
    );
    black_box((crons, t));
}

criterion_group!(benches, memory, parse_and_next, fire_and_reschedule);
criterion_main!(benches);
