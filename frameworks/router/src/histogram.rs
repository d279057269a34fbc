//! Latency histograms with log-linear buckets, and their percentile math.
//!
//! Values are microseconds. Below 16 µs everything shares bucket 0; from
//! there each power of two is cut into 8 equal buckets, so a bucket's width
//! is at most 1/8 of its lower bound: a percentile read from the histogram
//! (a bucket's upper bound) is never below the true value and at most 12.5%
//! above it. Values of 2^38 µs (about 76 hours) and more share the last
//! bucket. Counters are cumulative; subtracting two snapshots gives the
//! histogram of the interval between them.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

const SUB_BITS: u32 = 3;
const SUBS: usize = 1 << SUB_BITS;
const MIN_EXP: u32 = 4;
const MAX_EXP: u32 = 37;
/// The number of buckets.
pub const BUCKETS: usize = 1 + (MAX_EXP - MIN_EXP + 1) as usize * SUBS + 1;

/// The bucket a value (µs) falls in.
pub fn bucket_of(micros: u64) -> usize {
    if micros < (1 << MIN_EXP) {
        return 0;
    }
    let exp = 63 - micros.leading_zeros();
    if exp > MAX_EXP {
        return BUCKETS - 1;
    }
    let sub = ((micros >> (exp - SUB_BITS)) as usize) & (SUBS - 1);
    1 + (exp - MIN_EXP) as usize * SUBS + sub
}

/// The smallest value (µs) of a bucket.
pub fn lower_bound(bucket: usize) -> u64 {
    match bucket {
        0 => 0,
        b if b >= BUCKETS - 1 => 1 << (MAX_EXP + 1),
        b => {
            let (exp, sub) = split(b);
            ((SUBS + sub) as u64) << (exp - SUB_BITS)
        }
    }
}

/// The first value (µs) past a bucket; `u64::MAX` for the last one.
pub fn upper_bound(bucket: usize) -> u64 {
    match bucket {
        0 => 1 << MIN_EXP,
        b if b >= BUCKETS - 1 => u64::MAX,
        b => {
            let (exp, sub) = split(b);
            ((SUBS + sub + 1) as u64) << (exp - SUB_BITS)
        }
    }
}

fn split(bucket: usize) -> (u32, usize) {
    let k = bucket - 1;
    (MIN_EXP + (k / SUBS) as u32, k % SUBS)
}

/// A histogram that many tasks record into at once.
#[derive(Debug)]
pub struct AtomicHistogram {
    buckets: Box<[AtomicU64]>,
    sum_micros: AtomicU64,
}

impl Default for AtomicHistogram {
    fn default() -> Self {
        AtomicHistogram {
            buckets: (0..BUCKETS).map(|_| AtomicU64::new(0)).collect(),
            sum_micros: AtomicU64::new(0),
        }
    }
}

impl AtomicHistogram {
    /// Records one duration.
    pub fn record(&self, value: Duration) {
        let micros = u64::try_from(value.as_micros()).unwrap_or(u64::MAX);
        self.buckets[bucket_of(micros)].fetch_add(1, Ordering::Relaxed);
        self.sum_micros.fetch_add(micros, Ordering::Relaxed);
    }

    /// The counts so far.
    pub fn snapshot(&self) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .map(|b| b.load(Ordering::Relaxed))
                .collect(),
            sum_micros: self.sum_micros.load(Ordering::Relaxed),
        }
    }
}

/// Cumulative counts per bucket, at one moment.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Histogram {
    /// Count per bucket ([`BUCKETS`] of them).
    pub buckets: Vec<u64>,
    /// The sum of all recorded values, µs.
    pub sum_micros: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            buckets: vec![0; BUCKETS],
            sum_micros: 0,
        }
    }
}

impl Histogram {
    /// How many values were recorded.
    pub fn count(&self) -> u64 {
        self.buckets.iter().sum()
    }

    /// The `q`-quantile (0 < q ≤ 1), as the upper bound of the bucket it
    /// falls in; `None` when empty or `q` is out of range.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        let total = self.count();
        if total == 0 || !(q > 0.0 && q <= 1.0) {
            return None;
        }
        // The rank of the quantile, 1-based: ceil(q * total), at least 1.
        let rank = ((q * total as f64).ceil() as u64).clamp(1, total);
        let mut seen = 0;
        for (bucket, &count) in self.buckets.iter().enumerate() {
            seen += count;
            if seen >= rank {
                return Some(Duration::from_micros(upper_bound(bucket)));
            }
        }
        None
    }

    /// The counts recorded after `earlier` (a snapshot of the same
    /// histogram); counters that went backwards count as 0.
    pub fn since(&self, earlier: &Histogram) -> Histogram {
        Histogram {
            buckets: self
                .buckets
                .iter()
                .zip(earlier.buckets.iter().chain(std::iter::repeat(&0)))
                .map(|(now, then)| now.saturating_sub(*then))
                .collect(),
            sum_micros: self.sum_micros.saturating_sub(earlier.sum_micros),
        }
    }

    /// Adds another histogram's counts to this one.
    pub fn add(&mut self, other: &Histogram) {
        for (mine, theirs) in self.buckets.iter_mut().zip(&other.buckets) {
            *mine += theirs;
        }
        self.sum_micros += other.sum_micros;
    }

    /// Cumulative counts at the powers of two from 2^7 µs to 2^36 µs, for
    /// Prometheus's `le` buckets: `(le in seconds, count ≤ le)`.
    pub fn octave_counts(&self) -> Vec<(f64, u64)> {
        let mut out = Vec::new();
        let mut cumulative = 0;
        for (bucket, &count) in self.buckets.iter().enumerate().take(BUCKETS - 1) {
            cumulative += count;
            let upper = upper_bound(bucket);
            if upper.is_power_of_two() && (1 << 7..=1 << 36).contains(&upper) {
                out.push((upper as f64 / 1e6, cumulative));
            }
        }
        out
    }
}

#[cfg(test)]
mod tests;
