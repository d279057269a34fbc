//! Offer packing for framework SDKs: place task requests into offers.
//!
//! [`pack`] is a greedy, deterministic bin-packer. Items are placed in the
//! order given; each goes to a bin (offer) whose remaining resources contain
//! it — scalars and exact ports alike — chosen by the [`Strategy`].

use serde::{Deserialize, Serialize};

use crate::resources::{Resources, ScalarKind};

/// How [`pack`] chooses among the bins that fit an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// The first bin (lowest index) that fits.
    FirstFit,
    /// The bin left with the least slack after placing (tightest packing).
    BestFit,
    /// The bin left with the most slack after placing (spreading).
    WorstFit,
}

/// The result of [`pack`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Packing {
    /// For each item, the index of its bin, or `None` if no bin fits it.
    pub assignments: Vec<Option<usize>>,
    /// What is left of each bin.
    pub remaining: Vec<Resources>,
}

/// Slack of `left` relative to `bin`: the sum over scalar dimensions (and
/// port count) of `left / bin`, skipping dimensions the bin does not have.
fn slack(left: &Resources, bin: &Resources) -> f64 {
    let mut s = 0.0;
    for k in ScalarKind::ALL {
        let cap = bin.scalar(k).milli();
        if cap > 0 {
            s += left.scalar(k).milli() as f64 / cap as f64;
        }
    }
    let ports = bin.ports.count();
    if ports > 0 {
        s += left.ports.count() as f64 / ports as f64;
    }
    s
}

/// Places each item into a bin that contains it, using `strategy`; ties go
/// to the lowest bin index. Deterministic.
pub fn pack(bins: &[Resources], items: &[Resources], strategy: Strategy) -> Packing {
    let mut remaining: Vec<Resources> = bins.to_vec();
    let mut assignments = Vec::with_capacity(items.len());
    for item in items {
        let mut best: Option<(usize, f64, Resources)> = None;
        for (i, left) in remaining.iter().enumerate() {
            let Some(after) = left.checked_sub(item) else {
                continue;
            };
            if strategy == Strategy::FirstFit {
                best = Some((i, 0.0, after));
                break;
            }
            let score = slack(&after, &bins[i]);
            let better = match &best {
                None => true,
                Some((_, s, _)) => match strategy {
                    Strategy::BestFit => score < *s,
                    Strategy::WorstFit => score > *s,
                    Strategy::FirstFit => false,
                },
            };
            if better {
                best = Some((i, score, after));
            }
        }
        match best {
            Some((i, _, after)) => {
                remaining[i] = after;
                assignments.push(Some(i));
            }
            None => assignments.push(None),
        }
    }
    Packing {
        assignments,
        remaining,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Resources {
        s.parse().unwrap()
    }

    #[test]
    fn first_fit() {
        let bins = [r("cpus:1;mem:100"), r("cpus:4;mem:400")];
        let items = [r("cpus:2"), r("cpus:1"), r("cpus:1"), r("cpus:8")];
        let p = pack(&bins, &items, Strategy::FirstFit);
        assert_eq!(p.assignments, [Some(1), Some(0), Some(1), None]);
        assert_eq!(p.remaining, [r("mem:100"), r("cpus:1;mem:400")]);
    }

    #[test]
    fn best_and_worst_fit() {
        let bins = [
            r("cpus:4;mem:400"),
            r("cpus:2;mem:200"),
            r("cpus:8;mem:800"),
        ];
        let items = [r("cpus:2;mem:200")];
        assert_eq!(
            pack(&bins, &items, Strategy::BestFit).assignments,
            [Some(1)]
        );
        // Slack is normalized per bin: bin 2 keeps 3/4, bin 0 keeps 1/2.
        assert_eq!(
            pack(&bins, &items, Strategy::WorstFit).assignments,
            [Some(2)]
        );
        // Ties go to the lowest index.
        let same = [r("cpus:2"), r("cpus:2")];
        assert_eq!(
            pack(&same, &[r("cpus:1")], Strategy::BestFit).assignments,
            [Some(0)]
        );
        assert_eq!(
            pack(&same, &[r("cpus:1")], Strategy::WorstFit).assignments,
            [Some(0)]
        );
    }

    #[test]
    fn ports_are_exact() {
        let bins = [r("cpus:4;ports:[8000-8010]"), r("cpus:4;ports:[9000-9010]")];
        let items = [
            r("cpus:1;ports:[9005-9005]"),
            r("cpus:1;ports:[9005-9005]"),
            r("cpus:1;ports:[8000-8001]"),
        ];
        let p = pack(&bins, &items, Strategy::FirstFit);
        assert_eq!(p.assignments, [Some(1), None, Some(0)]);
        assert_eq!(p.remaining[1], r("cpus:3;ports:[9000-9004,9006-9010]"));
    }

    #[test]
    fn empty_inputs() {
        let p = pack(&[], &[r("cpus:1")], Strategy::BestFit);
        assert_eq!(p.assignments, [None]);
        assert!(p.remaining.is_empty());
        let p = pack(&[r("cpus:1")], &[], Strategy::WorstFit);
        assert!(p.assignments.is_empty());
        assert_eq!(p.remaining, [r("cpus:1")]);
        // An empty item fits anywhere.
        assert_eq!(
            pack(&[r("cpus:1")], &[Resources::empty()], Strategy::FirstFit).assignments,
            [Some(0)]
        );
    }
}
