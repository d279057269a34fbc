use std::collections::BTreeMap;

use proptest::prelude::*;

use super::*;

fn all(_: usize) -> bool {
    true
}

fn idle(_: usize) -> u64 {
    0
}

fn two_versions(w1: u32, w2: u32, seed: u64) -> Picker {
    Picker::new(
        vec![("v1".into(), w1, vec![0, 1]), ("v2".into(), w2, vec![2, 3])],
        seed,
    )
}

fn version_of(backend: usize) -> &'static str {
    if backend < 2 { "v1" } else { "v2" }
}

#[test]
fn a_95_5_split_is_exact_over_each_window() {
    let mut picker = two_versions(95, 5, 7);
    let mut counts = BTreeMap::new();
    for _ in 0..1000 {
        let b = picker.pick(Scope::Weighted, None, &all, &idle).unwrap();
        *counts.entry(version_of(b)).or_insert(0) += 1;
    }
    assert_eq!(counts["v1"], 950);
    assert_eq!(counts["v2"], 50);
}

#[test]
fn smooth_weights_interleave_the_minority_version() {
    let mut picker = two_versions(3, 1, 0);
    let seq: Vec<_> = (0..8)
        .map(|_| version_of(picker.pick(Scope::Weighted, None, &all, &idle).unwrap()))
        .collect();
    // One v2 in every four picks, never two in a row.
    for window in seq.chunks(4) {
        assert_eq!(window.iter().filter(|v| **v == "v2").count(), 1, "{seq:?}");
    }
}

#[test]
fn weight_zero_gets_nothing_and_a_switch_is_immediate() {
    let mut picker = two_versions(0, 100, 3);
    for _ in 0..100 {
        let b = picker.pick(Scope::Weighted, None, &all, &idle).unwrap();
        assert_eq!(version_of(b), "v2");
    }
}

#[test]
fn all_weights_zero_means_no_backend() {
    let mut picker = two_versions(0, 0, 0);
    assert_eq!(picker.pick(Scope::Weighted, None, &all, &idle), None);
}

#[test]
fn preview_scope_ignores_weights() {
    let mut picker = two_versions(100, 0, 0);
    for _ in 0..10 {
        let b = picker.pick(Scope::Only("v2"), None, &all, &idle).unwrap();
        assert_eq!(version_of(b), "v2");
    }
    assert_eq!(picker.pick(Scope::Only("v3"), None, &all, &idle), None);
}

#[test]
fn a_retry_prefers_the_failed_version_then_falls_back() {
    let mut picker = two_versions(1, 99, 0);
    // Backend 0 failed: the other v1 backend comes next.
    let b = picker
        .pick(Scope::Weighted, Some("v1"), &|b| b != 0, &idle)
        .unwrap();
    assert_eq!(b, 1);
    // Both v1 backends failed: a v2 one.
    let b = picker
        .pick(Scope::Weighted, Some("v1"), &|b| b > 1, &idle)
        .unwrap();
    assert_eq!(version_of(b), "v2");
    // Everything tried: none.
    assert_eq!(
        picker.pick(Scope::Weighted, Some("v1"), &|_| false, &idle),
        None
    );
}

#[test]
fn a_version_whose_backends_are_all_excluded_gives_way() {
    let mut picker = two_versions(99, 1, 0);
    for _ in 0..10 {
        let b = picker
            .pick(Scope::Weighted, None, &|b| b >= 2, &idle)
            .unwrap();
        assert_eq!(version_of(b), "v2");
    }
}

#[test]
fn least_outstanding_wins_and_ties_rotate() {
    let backends = [10, 11, 12];
    let mut cursor = 0;
    let load = |b: usize| if b == 11 { 0 } else { 5 };
    assert_eq!(
        least_outstanding(&backends, &all, &load, &mut cursor),
        Some(11)
    );
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(least_outstanding(&backends, &all, &idle, &mut cursor).unwrap());
    }
    assert_eq!(seen, vec![12, 10, 11, 12, 10, 11]);
    assert_eq!(least_outstanding(&[], &all, &idle, &mut cursor), None);
}

#[test]
fn the_same_seed_gives_the_same_sequence() {
    let run = |seed| {
        let mut picker = two_versions(2, 1, seed);
        (0..30)
            .map(|_| picker.pick(Scope::Weighted, None, &all, &idle).unwrap())
            .collect::<Vec<_>>()
    };
    assert_eq!(run(42), run(42));
}

proptest! {
    /// Over one full window of `sum(weights)` picks, each version gets
    /// exactly its weight, for any weights and seed.
    #[test]
    fn each_window_matches_the_weights(
        weights in proptest::collection::vec(0u32..20, 1..6),
        seed in any::<u64>(),
    ) {
        let versions: Vec<_> = weights
            .iter()
            .enumerate()
            .map(|(i, &w)| (format!("v{i}"), w, vec![i]))
            .collect();
        let mut picker = Picker::new(versions, seed);
        let total: u32 = weights.iter().sum();
        let mut counts = vec![0u32; weights.len()];
        for _ in 0..total {
            let b = picker.pick(Scope::Weighted, None, &all, &idle).unwrap();
            counts[b] += 1;
        }
        prop_assert_eq!(counts, weights.clone());
        if total == 0 {
            prop_assert_eq!(picker.pick(Scope::Weighted, None, &all, &idle), None);
        }
    }
}
