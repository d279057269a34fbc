//! How the jobs' schedules are spread so that together they fire a given
//! number of runs per minute, evenly: every job fires once per period of
//! `T` seconds (`T = jobs × 60 / runs per minute`), job `i` at the
//! seconds `e` (since the epoch, UTC) with `e mod T = i mod T`. With `T` a
//! divisor of 60, or 60 times a divisor of 60, that is one six-field cron
//! expression per job (with a range step, `10-59/20`: croner refuses
//! `10/20`); every second of a period has the same number of jobs, give
//! or take one.

use anyhow::bail;

/// The period and the cron expressions of one spread.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Spread {
    /// Jobs.
    pub(crate) jobs: u64,
    /// Seconds between two ticks of one job.
    pub(crate) period: u64,
}

/// Periods (seconds) a six-field cron expression can step by evenly
/// within a minute or an hour.
const DIVISORS_OF_60: [u64; 12] = [1, 2, 3, 4, 5, 6, 10, 12, 15, 20, 30, 60];

impl Spread {
    /// `jobs` firing `runs_per_minute` together.
    ///
    /// # Errors
    /// When the period is not a whole number of seconds that divides a
    /// minute, or a whole number of minutes that divides an hour.
    pub(crate) fn new(jobs: u64, runs_per_minute: u64) -> anyhow::Result<Spread> {
        if jobs == 0 || runs_per_minute == 0 {
            bail!("--jobs and --runs-per-minute must be at least 1");
        }
        let seconds = jobs * 60;
        let period = seconds / runs_per_minute;
        let fits = seconds.is_multiple_of(runs_per_minute)
            && (DIVISORS_OF_60.contains(&period)
                || (period.is_multiple_of(60) && DIVISORS_OF_60.contains(&(period / 60))));
        if !fits {
            bail!(
                "--jobs {jobs} at --runs-per-minute {runs_per_minute} means each job fires every \
                 {:.2} s; it must be a divisor of 60 s or 60 s times a divisor of 60 (e.g. 10,000 \
                 jobs at 1,000 a minute: every 600 s)",
                seconds as f64 / runs_per_minute as f64
            );
        }
        Ok(Spread { jobs, period })
    }

    /// Job `i`'s cron expression (seconds first).
    pub(crate) fn cron(&self, i: u64) -> String {
        let slot = i % self.period;
        if self.period <= 60 {
            return match self.period {
                1 => "* * * * * *".into(),
                60 => format!("{slot} * * * * *"),
                p => format!("{slot}-59/{p} * * * * *"),
            };
        }
        let (second, minute, step) = (slot % 60, slot / 60, self.period / 60);
        match step {
            1 => format!("{second} * * * * *"),
            60 => format!("{second} {minute} * * * *"),
            s => format!("{second} {minute}-59/{s} * * * *"),
        }
    }

    /// How many ticks (of all jobs) fall in the epoch seconds `from..to`.
    pub(crate) fn ticks_between(&self, from: u64, to: u64) -> u64 {
        (from..to).map(|e| self.jobs_at(e)).sum()
    }

    /// How many jobs tick at epoch second `e`.
    fn jobs_at(&self, e: u64) -> u64 {
        let slot = e % self.period;
        // Jobs i < jobs with i mod period == slot.
        if slot >= self.jobs {
            0
        } else {
            (self.jobs - 1 - slot) / self.period + 1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use berth_jobs::schedule::Cron;
    use berth_jobs::time::Timestamp;

    /// Every job's expression parses, fires every `period` seconds at the
    /// seconds its slot says, and the ticks per second are as counted.
    fn check(jobs: u64, rpm: u64) {
        let s = Spread::new(jobs, rpm).expect("a spread");
        assert_eq!(s.period, jobs * 60 / rpm);
        let from = 1_796_000_000u64; // a whole hour is not needed
        let mut per_second = std::collections::BTreeMap::<u64, u64>::new();
        for i in 0..jobs {
            let cron = Cron::parse(&s.cron(i), "UTC").expect("parses");
            let mut at = Timestamp((from as i64 - 1) * 1000);
            for _ in 0..3 {
                let next = cron.next_after(at).expect("fires");
                let e = (next.0 / 1000) as u64;
                assert_eq!(e % s.period, i % s.period, "job {i}: {}", s.cron(i));
                if e < from + 2 * s.period {
                    *per_second.entry(e).or_default() += 1;
                }
                at = next;
            }
        }
        for e in from..from + 2 * s.period {
            assert_eq!(
                per_second.get(&e).copied().unwrap_or(0),
                s.jobs_at(e),
                "second {e}"
            );
        }
        assert_eq!(s.ticks_between(from, from + s.period), jobs);
        assert_eq!(s.ticks_between(from, from + 60 * s.period), 60 * jobs);
        // A minute has the rate, give or take one tick a second.
        let minute = s.ticks_between(from + 7, from + 67);
        assert!(
            minute.abs_diff(rpm) <= 60,
            "{minute} in a minute, not {rpm}"
        );
    }

    #[test]
    fn spreads_fire_as_counted() {
        check(10_000, 1000);
        check(40, 240);
        check(7, 420);
        check(60, 1);
        check(3, 3);
    }

    #[test]
    fn periods_a_cron_cannot_step_by_are_refused() {
        for (jobs, rpm) in [(10_000, 999), (7, 60), (0, 10), (10, 0), (700, 10)] {
            assert!(Spread::new(jobs, rpm).is_err(), "{jobs} at {rpm}");
        }
        assert_eq!(
            Spread::new(10_000, 1000).map(|s| s.cron(661)).ok(),
            Some("1 1-59/10 * * * *".into())
        );
    }
}
