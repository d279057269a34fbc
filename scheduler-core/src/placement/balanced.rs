//! [`Strategy::BalancedFill`](super::Strategy::BalancedFill): the rules
//! shared by [`pack`](super::pack) and [`Placer`](super::Placer), and
//! `pack`'s brute-force version of it.
//!
//! The strategy keeps a small *active set* of at most [`ACTIVE`] recently
//! opened nodes and a *pool* of the other used nodes, filed in classes by
//! their room (buckets of their larger free share of cpu and memory) and
//! the shape of their free vector (the memory part of the free cpu and
//! memory shares); each class offers its most recently filed node. For
//! each task in turn:
//!
//! 1. among the active nodes and the pool's class heads that fit it and
//!    that it would not unbalance (see [`fill_strands`]), the cheapest by
//!    [`fill_cost`] — best fit; ties to the first in that order (active
//!    nodes in activation order, then the classes in order);
//! 2. else the empty node with the best
//!    [`tetris_open_score`](super::tetris_open_score): large, and shaped
//!    like the task, so that nodes of complementary shapes fill side by
//!    side (ties to the lowest index). It joins the active set;
//! 3. else the cheapest candidate of step 1 that fits, balanced or not;
//! 4. else any used node that fits, lowest index first.
//!
//! A task placed on a pooled node files that node anew (head of its new
//! class). A node joining a full active set evicts the active node with
//! the least room (`Σ free/capacity`, ties to the earliest activated) into
//! the pool, or among the empty nodes if it runs nothing. Steps 1 and 3
//! look at no more than `ACTIVE + CLASSES` nodes and step 2 at one node
//! per distinct node capacity, whatever the cluster size; step 4 scans
//! every node and happens only when no empty node fits the task.

// Vector arithmetic over the four scalar dimensions indexes several arrays
// with the same `k`; an index loop says that most plainly.
#![allow(clippy::needless_range_loop)]

use super::{
    DIMS, PRESSED, Packing, Vector, capacities, scalar_slack, tetris_open_score, tetris_weights,
    vector,
};
use crate::resources::Resources;

/// Size of the active set.
pub(crate) const ACTIVE: usize = 16;
/// A placement unbalances a node if, among the pressed dimensions, its
/// least free room (in units of the demand mix) ends below σ times the
/// free share of its most pressed ones (see [`fill_strands`]).
pub(crate) const FILL_SIGMA: f64 = 0.5;
/// How strongly [`fill_strands`] singles out the most pressed dimensions:
/// the free share of each counts times its weight to this power, so a
/// dimension pressed less than the most pressed one barely counts (its
/// free room is not protected: leaving it over does not cost nodes).
pub(crate) const FILL_POWER: i32 = 32;
/// A node whose pressed dimensions are all at most this share free is
/// never unbalanced: it is nearly full.
pub(crate) const FULL: f64 = 0.1;
/// Shape buckets of the pool.
pub(crate) const SHAPES: usize = 8;
/// Upper limits of the room buckets of the pool (the last is open).
pub(crate) const ROOMS: [f64; 3] = [0.02, 0.1, 0.3];
/// Pool classes: room buckets × shape buckets.
pub(crate) const CLASSES: usize = SHAPES * (ROOMS.len() + 1);

/// Pressure weights with the task counted as placed: the demand mix that
/// balance is measured against.
pub(crate) fn fill_weights(placed: &Vector, d: &Vector, total: &Vector) -> [f64; DIMS] {
    let mut p = *placed;
    for k in 0..DIMS {
        p[k] = p[k].saturating_add(d[k]);
    }
    tetris_weights(&p, total)
}

/// Whether placing `d` on a node with capacity `cap` and `free >= d`
/// would unbalance it. Over the pressed dimensions (weight at least 0.1),
/// let `lo` be the least free share divided by its weight (free room in
/// units of the demand mix) and `hi` the most free share times its weight
/// to the power [`FILL_POWER`] (the free share of the most pressed
/// dimensions). The placement unbalances the node if afterwards `lo <
/// σ·hi` ([`FILL_SIGMA`]), by more than before, while some pressed
/// dimension is more than [`FULL`] free: the node would run out of a
/// dimension while the most pressed one, which decides how many nodes are
/// needed, is left free on it.
pub(crate) fn fill_strands(cap: &Vector, free: &Vector, d: &Vector, w: &[f64; DIMS]) -> bool {
    let (mut alo, mut ahi, mut blo, mut bhi) = (f64::INFINITY, 0.0_f64, f64::INFINITY, 0.0_f64);
    let mut room: f64 = 0.0;
    for k in 0..DIMS {
        if cap[k] == 0 || w[k] < PRESSED {
            continue;
        }
        let c = cap[k] as f64;
        let after = free[k].saturating_sub(d[k]) as f64 / c;
        room = room.max(after);
        let before = free[k] as f64 / c;
        let p = w[k].powi(FILL_POWER);
        alo = alo.min(after / w[k]);
        ahi = ahi.max(after * p);
        blo = blo.min(before / w[k]);
        bhi = bhi.max(before * p);
    }
    if room <= FULL {
        return false;
    }
    let deficit_after = (FILL_SIGMA * ahi - alo).max(0.0);
    let deficit_before = (FILL_SIGMA * bhi - blo).max(0.0);
    deficit_after > 0.0 && deficit_after > deficit_before
}

/// Cost of placing `d` on a node (lower is better): the weighted share
/// left free afterwards, `Σ w·(free − d)/capacity` (best fit).
pub(crate) fn fill_cost(cap: &Vector, free: &Vector, d: &Vector, w: &[f64; DIMS]) -> f64 {
    let mut s = 0.0;
    for k in 0..DIMS {
        if cap[k] > 0 {
            s += w[k] * (free[k].saturating_sub(d[k]) as f64 / cap[k] as f64);
        }
    }
    s
}

/// Room left on a node, `Σ free/capacity`: the active node with the least
/// is evicted first.
pub(crate) fn fill_room(cap: &Vector, free: &Vector) -> f64 {
    scalar_slack(free, cap)
}

/// The free share of cpu and memory of a node (0 where it has none).
fn shares(cap: &Vector, free: &Vector) -> (f64, f64) {
    let share = |k: usize| {
        if cap[k] == 0 {
            0.0
        } else {
            free[k] as f64 / cap[k] as f64
        }
    };
    (share(0), share(1))
}

/// The shape bucket of a cpu and memory pair: the memory share of the
/// two, in [`SHAPES`] equal steps.
fn shape(cpu: f64, mem: f64) -> usize {
    if cpu + mem <= 0.0 {
        return 0;
    }
    ((mem / (cpu + mem) * SHAPES as f64) as usize).min(SHAPES - 1)
}

/// The pool class of a node: room bucket (of its larger free share of
/// cpu and memory) × shape bucket.
pub(crate) fn fill_class(cap: &Vector, free: &Vector) -> usize {
    let (c, m) = shares(cap, free);
    let room = ROOMS.iter().filter(|&&r| c.max(m) >= r).count();
    room * SHAPES + shape(c, m)
}

/// The cheapest of `active` (positions in activation order) that `ok`
/// accepts; ties to the earliest.
pub(crate) fn cheapest(
    active: &[u32],
    ok: impl Fn(usize) -> bool,
    cost: impl Fn(usize) -> f64,
) -> Option<usize> {
    let mut best: Option<(f64, usize)> = None;
    for &i in active {
        let i = i as usize;
        if ok(i) {
            let c = cost(i);
            if best.is_none_or(|(b, _)| c < b) {
                best = Some((c, i));
            }
        }
    }
    best.map(|(_, i)| i)
}

/// Which active node to evict: the one with the least [`fill_room`], ties
/// to the earliest; its place in `active`.
pub(crate) fn victim(active: &[u32], room: impl Fn(usize) -> f64) -> usize {
    let mut best = (f64::INFINITY, 0);
    for (j, &i) in active.iter().enumerate() {
        let r = room(i as usize);
        if r < best.0 {
            best = (r, j);
        }
    }
    best.1
}

/// [`Strategy::BalancedFill`](super::Strategy::BalancedFill) by brute
/// force: the reference the [`Placer`](super::Placer) is checked against.
/// The pool's class tops and the empty nodes are found by scanning every
/// bin.
pub(super) fn pack_balanced(bins: &[Resources], items: &[Resources]) -> Packing {
    let (caps, total, largest) = capacities(bins);
    let n = bins.len();
    let mut remaining: Vec<Resources> = bins.to_vec();
    let mut free = caps.clone();
    let mut used = vec![false; n];
    let mut active: Vec<u32> = Vec::new();
    let mut is_active = vec![false; n];
    // When each used, inactive bin entered the pool.
    let mut pooled = vec![0u64; n];
    let mut clock = 0u64;
    let mut placed = [0u64; DIMS];
    let mut assignments = Vec::with_capacity(items.len());
    for item in items {
        let d = vector(item);
        let w = fill_weights(&placed, &d, &total);
        let fits = |i: usize| remaining[i].contains(item);
        let balanced = |i: usize| !fill_strands(&caps[i], &free[i], &d, &w);
        let cost = |i: usize| fill_cost(&caps[i], &free[i], &d, &w);
        let mut top: [Option<usize>; CLASSES] = [None; CLASSES];
        for i in 0..n {
            if used[i] && !is_active[i] {
                let c = fill_class(&caps[i], &free[i]);
                if top[c].is_none_or(|t| pooled[i] > pooled[t]) {
                    top[c] = Some(i);
                }
            }
        }
        let candidates: Vec<u32> = active
            .iter()
            .copied()
            .chain(top.iter().flatten().map(|&i| i as u32))
            .collect();
        let chosen = cheapest(&candidates, |i| fits(i) && balanced(i), cost)
            .or_else(|| {
                let mut best: Option<(f64, usize)> = None;
                for i in 0..n {
                    if !used[i] && !is_active[i] && fits(i) {
                        let score = tetris_open_score(&caps[i], &d, &w, &largest);
                        if best.is_none_or(|(b, _)| score > b) {
                            best = Some((score, i));
                        }
                    }
                }
                best.map(|(_, i)| i)
            })
            .or_else(|| cheapest(&candidates, fits, cost))
            .or_else(|| (0..n).find(|&i| used[i] && fits(i)));
        let Some(i) = chosen else {
            assignments.push(None);
            continue;
        };
        if used[i] && !is_active[i] {
            // A pooled node stays in the pool, filed anew.
            clock += 1;
            pooled[i] = clock;
        } else if !is_active[i] {
            if active.len() == ACTIVE {
                let j = victim(&active, |a| fill_room(&caps[a], &free[a]));
                let out = active.remove(j) as usize;
                is_active[out] = false;
                clock += 1;
                pooled[out] = clock;
            }
            active.push(i as u32);
            is_active[i] = true;
        }
        remaining[i] = remaining[i].saturating_sub(item);
        for k in 0..DIMS {
            free[i][k] -= d[k];
            placed[k] = placed[k].saturating_add(d[k]);
        }
        used[i] = true;
        assignments.push(Some(i));
    }
    Packing {
        assignments,
        remaining,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::placement::tests::r;
    use crate::placement::{Strategy, pack};

    #[test]
    fn opens_the_largest_node_and_fills_it_first() {
        let bins = [
            r("cpus:4;mem:4000"),
            r("cpus:16;mem:16000"),
            r("cpus:8;mem:8000"),
        ];
        let items = vec![r("cpus:1;mem:1000"); 17];
        let p = pack(&bins, &items, Strategy::BalancedFill);
        // The largest bin takes the first 16, then the next largest opens.
        assert!(p.assignments[..16].iter().all(|a| *a == Some(1)));
        assert_eq!(p.assignments[16], Some(2));
        assert_eq!(p.remaining[1], Resources::empty());
        // Best fit would have started on the smallest bin.
        assert_eq!(
            pack(&bins, &items[..1], Strategy::BestFit).assignments,
            [Some(0)]
        );
    }

    #[test]
    fn opens_a_node_shaped_like_the_task() {
        // Same size, complementary shapes.
        let bins = [r("cpus:16;mem:4000"), r("cpus:4;mem:16000")];
        let p = pack(
            &bins,
            &[r("cpus:0.5;mem:3000"), r("cpus:5;mem:200")],
            Strategy::BalancedFill,
        );
        // The memory-heavy task opens the memory-rich bin; the cpu-heavy
        // one does not fit there and opens the other.
        assert_eq!(p.assignments, [Some(1), Some(0)]);
    }

    #[test]
    fn protects_the_most_pressed_dimension() {
        let cap = [10_000, 10_000, 0, 0];
        let free = [8_000, 3_000, 0, 0];
        let cpu_pressed = [1.0, 0.5, 0.0, 0.0];
        // Using up the memory would leave 80% of the cpu, the dimension
        // that decides the node count, with nothing to run.
        assert!(fill_strands(&cap, &free, &[0, 2_500, 0, 0], &cpu_pressed));
        // Taking cpu keeps the node in balance.
        assert!(!fill_strands(&cap, &free, &[2_500, 0, 0, 0], &cpu_pressed));
        // If memory is the most pressed, using it up is what we want.
        let mem_pressed = [0.5, 1.0, 0.0, 0.0];
        assert!(!fill_strands(&cap, &free, &[0, 2_500, 0, 0], &mem_pressed));
        // A nearly full node is never refused.
        let nearly = [900, 600, 0, 0];
        assert!(!fill_strands(&cap, &nearly, &[0, 550, 0, 0], &cpu_pressed));
    }

    #[test]
    fn evicts_into_the_pool_and_reuses_it() {
        // More bins than the active set: the first bins opened are
        // evicted into the pool, and small tasks later fill their gaps.
        let bins = vec![r("cpus:4;mem:4000"); ACTIVE + 4];
        let mut items = vec![r("cpus:3;mem:3000"); ACTIVE + 4];
        items.extend(vec![r("cpus:0.5;mem:500"); 2 * (ACTIVE + 4)]);
        let p = pack(&bins, &items, Strategy::BalancedFill);
        assert!(p.assignments.iter().all(Option::is_some));
        assert!(p.remaining.iter().all(|left| *left == Resources::empty()));
    }

    #[test]
    fn ports_are_checked_and_choices_deterministic() {
        let bins = [r("cpus:8;ports:[80-80]"), r("cpus:4;ports:[81-81]")];
        let items = [r("cpus:1;ports:[81-81]"), r("cpus:1;ports:[81-81]")];
        let p = pack(&bins, &items, Strategy::BalancedFill);
        assert_eq!(p.assignments, [Some(1), None]);
        let w = crate::workload::heterogeneous(50, 500, 3);
        let bins: Vec<Resources> = w.nodes.iter().map(|n| n.resources()).collect();
        let items: Vec<Resources> = w.tasks.iter().map(|t| t.resources()).collect();
        assert_eq!(
            pack(&bins, &items, Strategy::BalancedFill),
            pack(&bins, &items, Strategy::BalancedFill)
        );
    }
}
