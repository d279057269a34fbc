use proptest::prelude::*;

use super::*;

#[test]
fn buckets_tile_the_range() {
    assert_eq!(lower_bound(0), 0);
    for b in 0..BUCKETS - 1 {
        assert_eq!(upper_bound(b), lower_bound(b + 1), "bucket {b}");
        assert!(lower_bound(b) < upper_bound(b));
    }
    assert_eq!(bucket_of(0), 0);
    assert_eq!(bucket_of(15), 0);
    assert_eq!(bucket_of(16), 1);
    assert_eq!(bucket_of(u64::MAX), BUCKETS - 1);
}

#[test]
fn quantiles_of_known_values() {
    let h = AtomicHistogram::default();
    for ms in 1..=100u64 {
        h.record(Duration::from_millis(ms));
    }
    let s = h.snapshot();
    assert_eq!(s.count(), 100);
    assert_eq!(s.sum_micros, (1..=100u64).sum::<u64>() * 1000);
    let p50 = s.quantile(0.5).unwrap();
    assert!(p50 >= Duration::from_millis(50) && p50 <= Duration::from_micros(56_250));
    let p99 = s.quantile(0.99).unwrap();
    assert!(p99 >= Duration::from_millis(99) && p99 <= Duration::from_micros(111_375));
    assert_eq!(Histogram::default().quantile(0.5), None);
    assert_eq!(s.quantile(0.0), None);
    assert_eq!(s.quantile(f64::NAN), None);
}

#[test]
fn since_subtracts_an_earlier_snapshot() {
    let h = AtomicHistogram::default();
    h.record(Duration::from_millis(1));
    let first = h.snapshot();
    h.record(Duration::from_millis(500));
    h.record(Duration::from_millis(500));
    let interval = h.snapshot().since(&first);
    assert_eq!(interval.count(), 2);
    assert!(interval.quantile(0.01).unwrap() >= Duration::from_millis(500));
    assert_eq!(first.since(&h.snapshot()).count(), 0);
}

#[test]
fn octave_counts_are_cumulative_powers_of_two() {
    let h = AtomicHistogram::default();
    h.record(Duration::from_micros(100));
    h.record(Duration::from_millis(3));
    let octaves = h.snapshot().octave_counts();
    assert_eq!(octaves.len(), 30);
    assert_eq!(octaves[0], (128e-6, 1));
    let at_4ms = octaves
        .iter()
        .find(|(le, _)| (*le - 4.096e-3).abs() < 1e-9)
        .unwrap();
    assert_eq!(at_4ms.1, 2);
    assert!(
        octaves
            .windows(2)
            .all(|w| w[0].1 <= w[1].1 && w[0].0 < w[1].0)
    );
}

proptest! {
    /// Every value falls in a bucket whose bounds hold it, and the bucket is
    /// at most 1/8 wider than its lower bound (above 16 µs).
    #[test]
    fn a_value_lies_in_its_bucket(v in 0u64..(1 << 40)) {
        let b = bucket_of(v);
        prop_assert!(lower_bound(b) <= v);
        prop_assert!(v < upper_bound(b) || b == BUCKETS - 1);
        if (16..1 << 38).contains(&v) {
            prop_assert!((upper_bound(b) - lower_bound(b)) * 8 <= lower_bound(b));
        }
    }

    /// A quantile from the histogram is within one bucket of the exact one.
    #[test]
    fn quantile_is_within_bucket_precision(
        values in proptest::collection::vec(16u64..10_000_000, 1..300),
        q in 0.01f64..=1.0,
    ) {
        let h = AtomicHistogram::default();
        for &v in &values {
            h.record(Duration::from_micros(v));
        }
        let mut sorted = values.clone();
        sorted.sort_unstable();
        let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
        let exact = sorted[rank - 1];
        let got = h.snapshot().quantile(q).unwrap().as_micros() as u64;
        prop_assert!(got > exact);
        prop_assert!(got <= exact + exact / 8 + 1);
    }
}
