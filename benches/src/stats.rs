//! Counters shared by the simulated agents and frameworks, and readings of
//! the machine and of processes (`/proc`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

/// What the generator counts. Agents and frameworks add to these from many
/// tasks; the main task reads them (a snapshot at the start and end of the
/// measured window gives the window's share).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum C {
    /// Agents that completed their first registration.
    AgentsRegistered,
    /// Agent streams that ended or failed after registration.
    AgentReconnects,
    /// `RunTask` messages received by agents (new tasks).
    RunsReceived,
    /// Status updates sent for the first time.
    UpdatesSent,
    /// Status updates sent again (resend timer or re-registration).
    UpdatesResent,
    /// Acknowledgements that removed an update from an agent's queue.
    AcksApplied,
    /// Acknowledgements of nothing in the queue (duplicates).
    AcksIgnored,
    /// Terminal updates acknowledged: a task an agent is done with.
    TerminalAcked,
    /// Kill requests received by agents (none expected).
    KillsReceived,
    /// Protocol surprises on the agent side: an invalid or unexpected
    /// message, a stream that failed, a registration refused.
    AgentErrors,
    /// Offers received by frameworks.
    Offers,
    /// Offers declined.
    OffersDeclined,
    /// Accept calls (one per offer used).
    AcceptCalls,
    /// Tasks the master recorded as launched (accept answered).
    Launched,
    /// Tasks whose first TASK_RUNNING reached their framework.
    Running,
    /// Tasks whose TASK_FINISHED reached their framework.
    Finished,
    /// Tasks that ended in another terminal state (FAILED, LOST, ...) or
    /// reported a state a short task should not (UNREACHABLE, ...).
    Unexpected,
    /// Failed framework calls (accept, decline, suppress, revive).
    CallErrors,
    /// Suppress calls (a framework full).
    Suppresses,
    /// Revive calls (room again).
    Revives,
    /// Framework event streams lost (`Event::Disconnected`) or ended.
    FrameworkErrors,
}

impl C {
    const COUNT: usize = C::FrameworkErrors as usize + 1;
}

/// A set of [`C`] counters, plus the gauge of unacknowledged updates.
#[derive(Debug, Default)]
pub struct Counters {
    values: [AtomicU64; C::COUNT],
    /// Status updates queued on agents and not acknowledged yet.
    pending_updates: AtomicI64,
}

/// The counters at one moment.
#[derive(Debug, Clone, Copy, Default)]
pub struct Snapshot([u64; C::COUNT]);

impl Snapshot {
    pub fn get(&self, c: C) -> u64 {
        self.0[c as usize]
    }

    /// What was counted between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Snapshot) -> Snapshot {
        let mut out = [0; C::COUNT];
        for (i, v) in out.iter_mut().enumerate() {
            *v = self.0[i].saturating_sub(earlier.0[i]);
        }
        Snapshot(out)
    }
}

impl Counters {
    pub fn add(&self, c: C, n: u64) {
        self.values[c as usize].fetch_add(n, Ordering::Relaxed);
    }

    pub fn inc(&self, c: C) {
        self.add(c, 1);
    }

    pub fn get(&self, c: C) -> u64 {
        self.values[c as usize].load(Ordering::Relaxed)
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut out = [0; C::COUNT];
        for (v, a) in out.iter_mut().zip(&self.values) {
            *v = a.load(Ordering::Relaxed);
        }
        Snapshot(out)
    }

    /// Adds `delta` to the number of unacknowledged updates.
    pub fn pending_changed(&self, delta: i64) {
        if delta != 0 {
            self.pending_updates.fetch_add(delta, Ordering::Relaxed);
        }
    }

    pub fn pending_updates(&self) -> i64 {
        self.pending_updates.load(Ordering::Relaxed)
    }
}

/// The `q` quantile (nearest rank) of sorted `values`; zero when empty.
pub fn quantile(values: &[Duration], q: f64) -> Duration {
    if values.is_empty() {
        return Duration::ZERO;
    }
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// Resident set of a process, from `/proc/<pid>/status`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Rss {
    /// `VmRSS`, KiB.
    pub current_kib: u64,
    /// `VmHWM` (peak), KiB.
    pub peak_kib: u64,
}

/// The resident set of process `pid` (`None`: this process).
pub fn rss(pid: Option<u32>) -> Option<Rss> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/status"),
        None => "/proc/self/status".to_owned(),
    };
    let status = std::fs::read_to_string(path).ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = status.lines().find(|l| l.starts_with(name))?;
        line.split_whitespace().nth(1)?.parse().ok()
    };
    Some(Rss {
        current_kib: field("VmRSS:")?,
        peak_kib: field("VmHWM:")?,
    })
}

/// A resident set as `current / peak` MiB (`?` when unknown).
pub fn mib(r: Option<Rss>) -> String {
    r.map_or_else(
        || "?".into(),
        |r| {
            format!(
                "{:.0} / {:.0}",
                r.current_kib as f64 / 1024.0,
                r.peak_kib as f64 / 1024.0
            )
        },
    )
}

/// Seconds of an optional duration (NaN when unknown).
pub fn secs(d: Option<Duration>) -> f64 {
    d.map_or(f64::NAN, |d| d.as_secs_f64())
}

/// CPU time (user + system) a process has used so far, from
/// `/proc/<pid>/stat` (`None`: this process). Linux reports it in clock
/// ticks of `USER_HZ`, which is 100 on every mainstream configuration.
pub fn cpu_time(pid: Option<u32>) -> Option<Duration> {
    let path = match pid {
        Some(p) => format!("/proc/{p}/stat"),
        None => "/proc/self/stat".to_owned(),
    };
    let stat = std::fs::read_to_string(path).ok()?;
    // The command name (field 2) may contain spaces; count from after it.
    let rest = stat.rsplit_once(')')?.1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the line, 12 and 13 here.
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// A small, fast pseudo-random generator (xorshift64*), seeded per
/// framework so runs are repeatable; good enough for task durations.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        // Never zero: xorshift would stay at zero.
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in `lo..=hi` (`lo` when `hi < lo`).
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        lo + self.next_u64() % (hi - lo + 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_by_nearest_rank() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(quantile(&v, 0.5), Duration::from_millis(50));
        assert_eq!(quantile(&v, 0.99), Duration::from_millis(99));
        assert_eq!(quantile(&v, 1.0), Duration::from_millis(100));
        assert_eq!(quantile(&[], 0.5), Duration::ZERO);
    }

    #[test]
    fn snapshots_subtract() {
        let c = Counters::default();
        c.add(C::Launched, 5);
        let a = c.snapshot();
        c.add(C::Launched, 7);
        c.inc(C::Finished);
        let d = c.snapshot().since(&a);
        assert_eq!(d.get(C::Launched), 7);
        assert_eq!(d.get(C::Finished), 1);
        assert_eq!(d.get(C::Running), 0);
    }

    #[test]
    fn rng_stays_in_range() {
        let mut r = Rng::new(0);
        let mut seen = [false; 5];
        for _ in 0..1000 {
            let v = r.between(10, 14);
            assert!((10..=14).contains(&v));
            seen[(v - 10) as usize] = true;
        }
        assert!(seen.iter().all(|s| *s));
        assert_eq!(r.between(3, 3), 3);
        assert_eq!(r.between(5, 2), 5);
    }

    #[test]
    fn this_process_has_a_resident_set_and_cpu_time() {
        let r = rss(None).expect("linux /proc");
        assert!(r.current_kib > 0 && r.peak_kib >= r.current_kib);
        assert!(cpu_time(None).is_some());
    }
}
