//! Placement: which node (or offer) each task goes to.
//!
//! - [`pack`] is a greedy, deterministic bin-packer for framework SDKs.
//!   Items are placed in the order given; each goes to a bin (offer) whose
//!   remaining resources contain it — scalars and exact ports alike —
//!   chosen by the [`Strategy`]. It scans every bin for every item.
//! - [`Placer`] makes the same decisions (for Tetris, up to ties within
//!   floating-point rounding) for the simulator at 10,000 nodes without
//!   scanning every node: nodes sit in a tree of per-subtree summaries
//!   (free and capacity ranges per dimension, attribute masks) searched
//!   best-first; balanced fill keeps its own small indexes instead (an
//!   active set, pool lists, empty nodes per capacity), so its cost per
//!   task does not grow with the cluster. It adds node attributes and task
//!   [`Constraint`]s, but not ports.
//! - [`explain`] and [`Unplaced`] say why a task fits nowhere: how many
//!   nodes were short on each dimension and how many each constraint
//!   filtered out; [`Unplaced::describe`] says it about offers, as the
//!   SDK's packing helper and `berth run` do.
//! - [`lower_bound`], [`stranded`] and [`Utilization`] measure packing
//!   quality.
//! - [`repack`] and [`repack_workload`] pack offline (every task known up
//!   front, in an order they choose); [`defragment`] plans the moves that
//!   empty whole nodes.
//!
//! # Strategies
//!
//! First, best and worst fit score a node by its *slack* after placing:
//! the sum over dimensions of `left / capacity` (ports count as one more
//! dimension in [`pack`]). [`Strategy::Tetris`] scores with the task's
//! demand vector against the node's free vector, both normalized by the
//! node's capacity, in the manner of Tetris (Grandl et al., SIGCOMM 2014),
//! and keeps nodes closed until needed:
//!
//! 1. Dimension weights `w` follow pressure: the share of each dimension's
//!    total capacity already placed, scaled so the most pressed dimension
//!    weighs 1 (all 1 before anything is placed). A dimension nobody asks
//!    for (disk in most workloads) stops steering placement.
//! 2. Among nodes that already run a task and fit it, pick the lowest
//!    `Σ w·left/cap − β · align`, where `align = Σ w²·(d/cap)(free/cap) /
//!    |w·d/cap|` is the projection of the node's free vector on the task's
//!    demand direction (β = 2). The first term is best fit; the second
//!    sends a task to where its own dominant dimensions are free, so no
//!    dimension is left stranded (free cpu on a node whose memory is gone).
//!    A used node is skipped at this step if the task would strand it:
//!    leave its least free pressed dimension (weight at least 0.1) under
//!    σ = 0.15 times its most free one (itself over 10% free), and more
//!    lopsided than before — say memory nearly gone with half the cpu
//!    free. That memory is kept for the cpu-heavy tasks that can use the
//!    cpu.
//! 3. Only if no used node qualifies, open an empty node: the one whose
//!    capacity, normalized by the largest capacity in the cluster,
//!    maximizes `|c| · cos(d, c)^4` — large, and shaped like the task (a
//!    cpu-heavy task opens a cpu-rich machine), so the nodes in use
//!    complement each other.
//! 4. If no empty node fits either, the best used node after all, stranded
//!    or not.
//!
//! Tetris scores the scalar dimensions only: in [`pack`] ports are checked
//! for fit but do not count in its score. Ties go to the lowest bin index.
//! Deterministic.
//!
//! [`Strategy::BalancedFill`] is the online strategy for the fewest nodes.
//! Tasks arrive one at a time and each is placed at once; the strategy
//! fills few nodes at a time and keeps each node's free vector in
//! balance with the demand mix, so that nodes fill up in every dimension
//! that decides the node count:
//!
//! - Candidates are a small *active set* (the last 16 nodes opened) and
//!   one node per *pool* class, the pool holding every other used node,
//!   classed by its room and by the shape of its free vector (its most
//!   recently filed node stands for each class). Among the candidates
//!   that fit, the best fit (least weighted share left free) that does
//!   not *unbalance* the node: run it short of some dimension while the
//!   most pressed dimension (weights as Tetris's, counting the task) is
//!   left well free on it.
//! - Only when no candidate qualifies, open an empty node: large and
//!   shaped like the task, as Tetris opens one, so the open nodes
//!   complement each other (a memory-heavy task opens a memory-rich
//!   node).
//! - Then any candidate that fits; then any used node that fits.
//!
//! Tasks on used nodes first and best fit make few nodes run at a time;
//! the balance test keeps the dimension that decides the node count from
//! being stranded. Ports are checked for fit in [`pack`] but not scored.
//! Deterministic; [`Placer`] makes exactly [`pack`]'s choices (same
//! arithmetic on the same candidates), and its cost per task is bounded
//! by the active set and the pool classes, not the number of nodes
//! (details in `placement/balanced.rs`).

// Vector arithmetic over the four scalar dimensions indexes several arrays
// with the same `k`; an index loop says that most plainly.
#![allow(clippy::needless_range_loop)]

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::resources::{Resources, ScalarKind};
use crate::workload::Constraint;

mod balanced;
mod defrag;
mod placer;
mod quality;
mod repack;

pub use defrag::{DefragError, DefragGoal, DefragPlan, Move, defragment};
pub use placer::{NodeIndex, Placer, ReleaseError};
pub use quality::{Utilization, lower_bound, median, smallest, stranded};
pub use repack::{RepackResult, repack, repack_workload};

/// How [`pack`] and [`Placer`] choose among the bins that fit an item.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Strategy {
    /// The first bin (lowest index) that fits.
    FirstFit,
    /// The bin left with the least slack after placing (tightest packing).
    BestFit,
    /// The bin left with the most slack after placing (spreading).
    WorstFit,
    /// Multi-resource alignment with fragmentation awareness, filling used
    /// bins before opening new ones (see the module documentation).
    Tetris,
    /// Online packing for the fewest nodes: a small set of active nodes
    /// kept in balance with the demand mix, used nodes reused before
    /// empty ones, empty ones opened largest first (see the module
    /// documentation).
    BalancedFill,
}

impl Strategy {
    /// Every strategy, in the order the simulator reports them.
    pub const ALL: [Strategy; 5] = [
        Strategy::FirstFit,
        Strategy::BestFit,
        Strategy::WorstFit,
        Strategy::Tetris,
        Strategy::BalancedFill,
    ];

    /// `first-fit`, `best-fit`, `worst-fit`, `tetris` or `balanced-fill`.
    pub const fn name(self) -> &'static str {
        match self {
            Strategy::FirstFit => "first-fit",
            Strategy::BestFit => "best-fit",
            Strategy::WorstFit => "worst-fit",
            Strategy::Tetris => "tetris",
            Strategy::BalancedFill => "balanced-fill",
        }
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Strategy {
    type Err = String;

    /// Parses [`Strategy::name`].
    fn from_str(s: &str) -> Result<Strategy, String> {
        Strategy::ALL
            .into_iter()
            .find(|k| k.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown strategy {} (known: first-fit, best-fit, worst-fit, tetris, balanced-fill)",
                    crate::error::quoted(s)
                )
            })
    }
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
    let mut s = scalar_slack(&vector(left), &vector(bin));
    let ports = bin.ports.count();
    if ports > 0 {
        s += left.ports.count() as f64 / ports as f64;
    }
    s
}

/// Places each item into a bin that contains it, using `strategy`; ties go
/// to the lowest bin index. Deterministic.
pub fn pack(bins: &[Resources], items: &[Resources], strategy: Strategy) -> Packing {
    match strategy {
        Strategy::Tetris => return pack_tetris(bins, items),
        Strategy::BalancedFill => return balanced::pack_balanced(bins, items),
        _ => {}
    }
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
                    Strategy::FirstFit | Strategy::Tetris | Strategy::BalancedFill => false,
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

/// The bins' capacities, their sum and their per-dimension maximum.
pub(crate) fn capacities(bins: &[Resources]) -> (Vec<Vector>, Vector, Vector) {
    let caps: Vec<Vector> = bins.iter().map(vector).collect();
    let mut total = [0u64; DIMS];
    let mut largest = [0u64; DIMS];
    for c in &caps {
        for k in 0..DIMS {
            total[k] = total[k].saturating_add(c[k]);
            largest[k] = largest[k].max(c[k]);
        }
    }
    (caps, total, largest)
}

/// [`Strategy::Tetris`] by brute force: the reference the [`Placer`] is
/// checked against.
fn pack_tetris(bins: &[Resources], items: &[Resources]) -> Packing {
    let (caps, total, largest) = capacities(bins);
    let mut placed = [0u64; DIMS];
    let mut used = vec![false; bins.len()];
    let mut remaining: Vec<Resources> = bins.to_vec();
    let mut assignments = Vec::with_capacity(items.len());
    for item in items {
        let d = vector(item);
        let w = tetris_weights(&placed, &total);
        // (cost, index) of the best used bin, of the best empty one and of
        // the best used bin that the item would leave stranded.
        let mut best_used: Option<(f64, usize)> = None;
        let mut best_empty: Option<(f64, usize)> = None;
        let mut best_stranding: Option<(f64, usize)> = None;
        for (i, left) in remaining.iter().enumerate() {
            if !left.contains(item) {
                continue;
            }
            if used[i] {
                let free = vector(left);
                let cost = tetris_cost(&caps[i], &free, &d, &w);
                let best = if tetris_strands(&caps[i], &free, &d, &w) {
                    &mut best_stranding
                } else {
                    &mut best_used
                };
                if best.is_none_or(|(c, _)| cost < c) {
                    *best = Some((cost, i));
                }
            } else {
                let cost = -tetris_open_score(&caps[i], &d, &w, &largest);
                if best_empty.is_none_or(|(c, _)| cost < c) {
                    best_empty = Some((cost, i));
                }
            }
        }
        match best_used.or(best_empty).or(best_stranding) {
            Some((_, i)) => {
                remaining[i] = remaining[i].saturating_sub(item);
                used[i] = true;
                for k in 0..DIMS {
                    placed[k] = placed[k].saturating_add(d[k]);
                }
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

// ---------------------------------------------------------------------------
// Scoring shared by `pack` and `Placer`. The same arithmetic in the same
// order, so both make the same choice.

/// Scalar dimensions: cpus, mem, disk, gpus (the order of
/// [`ScalarKind::ALL`]).
pub(crate) const DIMS: usize = 4;

/// Milli-units per scalar dimension.
pub(crate) type Vector = [u64; DIMS];

/// The scalar part of `r` as a [`Vector`].
pub(crate) fn vector(r: &Resources) -> Vector {
    let mut v = [0u64; DIMS];
    for (k, kind) in ScalarKind::ALL.into_iter().enumerate() {
        v[k] = r.scalar(kind).milli();
    }
    v
}

/// `Σ left/cap` over the dimensions the bin has.
pub(crate) fn scalar_slack(left: &Vector, cap: &Vector) -> f64 {
    let mut s = 0.0;
    for k in 0..DIMS {
        if cap[k] > 0 {
            s += left[k] as f64 / cap[k] as f64;
        }
    }
    s
}

/// Weight of the alignment term of [`Strategy::Tetris`].
pub(crate) const TETRIS_BETA: f64 = 2.0;
/// Exponent of the cosine when [`Strategy::Tetris`] opens a node.
pub(crate) const TETRIS_GAMMA: i32 = 4;
/// [`Strategy::Tetris`] avoids leaving a used node with its least free
/// pressed dimension below this share of its most free one.
pub(crate) const TETRIS_SIGMA: f64 = 0.15;
/// Dimensions weighing less than this do not count for stranding.
pub(crate) const PRESSED: f64 = 0.1;

/// Whether placing `d` on a used node would strand capacity there: among
/// the pressed dimensions (weight at least 0.1), the least free fraction
/// left would be under σ = 0.15 times the most free one (itself above
/// 0.1), by more than before the placement. A placement that makes a
/// lopsided node less lopsided is never refused.
pub(crate) fn tetris_strands(cap: &Vector, free: &Vector, d: &Vector, w: &[f64; DIMS]) -> bool {
    let (mut alo, mut ahi, mut blo, mut bhi) = (f64::INFINITY, 0.0_f64, f64::INFINITY, 0.0_f64);
    for k in 0..DIMS {
        if cap[k] == 0 || w[k] < PRESSED {
            continue;
        }
        let c = cap[k] as f64;
        let before = free[k] as f64 / c;
        let after = free[k].saturating_sub(d[k]) as f64 / c;
        alo = alo.min(after);
        ahi = ahi.max(after);
        blo = blo.min(before);
        bhi = bhi.max(before);
    }
    if ahi <= 0.1 {
        return false;
    }
    let deficit_after = (TETRIS_SIGMA * ahi - alo).max(0.0);
    let deficit_before = (TETRIS_SIGMA * bhi - blo).max(0.0);
    deficit_after > 0.0 && deficit_after > deficit_before
}

/// Pressure weights: `placed/total` per dimension, scaled so the largest
/// is 1; all 1 (where there is capacity) before anything is placed.
pub(crate) fn tetris_weights(placed: &Vector, total: &Vector) -> [f64; DIMS] {
    let mut p = [0.0; DIMS];
    let mut max: f64 = 0.0;
    for k in 0..DIMS {
        if total[k] > 0 {
            p[k] = placed[k] as f64 / total[k] as f64;
            max = max.max(p[k]);
        }
    }
    for k in 0..DIMS {
        p[k] = if total[k] == 0 {
            0.0
        } else if max > 0.0 {
            p[k] / max
        } else {
            1.0
        };
    }
    p
}

/// Cost of placing demand `d` on a used node with capacity `cap` and
/// `free >= d`: weighted slack after placing minus β times the alignment
/// of the free vector with the demand. Lower is better.
pub(crate) fn tetris_cost(cap: &Vector, free: &Vector, d: &Vector, w: &[f64; DIMS]) -> f64 {
    let mut slack = 0.0;
    let mut num = 0.0;
    let mut den = 0.0;
    for k in 0..DIMS {
        if cap[k] == 0 {
            continue;
        }
        let c = cap[k] as f64;
        let left = free[k].saturating_sub(d[k]) as f64 / c;
        slack += w[k] * left;
        let dh = d[k] as f64 / c;
        let fh = free[k] as f64 / c;
        num += w[k] * w[k] * (dh * fh);
        let wd = w[k] * dh;
        den += wd * wd;
    }
    let align = if den > 0.0 { num / den.sqrt() } else { 0.0 };
    slack - TETRIS_BETA * align
}

/// How much [`Strategy::Tetris`] wants to open an empty node of capacity
/// `cap` for demand `d`: `|c|·cos(d, c)^γ` with both normalized by the
/// cluster's `largest` capacity per dimension and weighted. Higher is
/// better.
pub(crate) fn tetris_open_score(
    cap: &Vector,
    d: &Vector,
    w: &[f64; DIMS],
    largest: &Vector,
) -> f64 {
    let (mut dot, mut dd, mut cc) = (0.0, 0.0, 0.0);
    for k in 0..DIMS {
        if largest[k] == 0 {
            continue;
        }
        let m = largest[k] as f64;
        let a = w[k] * (d[k] as f64 / m);
        let b = w[k] * (cap[k] as f64 / m);
        dot += a * b;
        dd += a * a;
        cc += b * b;
    }
    let norm_c = cc.sqrt();
    if dd == 0.0 || cc == 0.0 {
        return norm_c;
    }
    let cos = dot / (dd.sqrt() * norm_c);
    norm_c * cos.powi(TETRIS_GAMMA)
}

// ---------------------------------------------------------------------------
// Explanations

/// Per resource dimension, how many nodes were short on it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct DimensionCounts {
    /// Nodes with less free cpu than asked.
    pub cpus: usize,
    /// Nodes with less free memory than asked.
    pub mem: usize,
    /// Nodes with less free disk than asked.
    pub disk: usize,
    /// Nodes with fewer free gpus than asked.
    pub gpus: usize,
    /// Nodes (offers) without every asked port free.
    pub ports: usize,
}

impl DimensionCounts {
    /// The count of one scalar dimension.
    pub fn scalar(&self, kind: ScalarKind) -> usize {
        match kind {
            ScalarKind::Cpus => self.cpus,
            ScalarKind::Mem => self.mem,
            ScalarKind::Disk => self.disk,
            ScalarKind::Gpus => self.gpus,
        }
    }

    pub(crate) fn scalar_mut(&mut self, kind: ScalarKind) -> &mut usize {
        match kind {
            ScalarKind::Cpus => &mut self.cpus,
            ScalarKind::Mem => &mut self.mem,
            ScalarKind::Disk => &mut self.disk,
            ScalarKind::Gpus => &mut self.gpus,
        }
    }

    /// `(name, count)` for every dimension, ports last.
    pub fn iter(&self) -> impl Iterator<Item = (&'static str, usize)> + '_ {
        ScalarKind::ALL
            .into_iter()
            .map(|k| (k.name(), self.scalar(k)))
            .chain(std::iter::once(("ports", self.ports)))
    }
}

/// Why a task fits on no node: a summary over every node.
///
/// A node that fails a constraint is counted once, under the first of the
/// task's constraints it fails, and not looked at further. Every other
/// node is counted under each dimension it is short on, so a node short on
/// both cpu and memory counts in both (the dimension counts can add up to
/// more than the number of nodes). The [`Display`](fmt::Display) form is a
/// sentence: `no node fits: 9,812 short on mem, 188 short on cpus, 0
/// filtered by constraints`.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Unplaced {
    /// Nodes looked at.
    pub nodes: usize,
    /// Nodes that did fit (0 when the task really could not be placed).
    pub fit: usize,
    /// Nodes short on each dimension.
    pub per_dimension: DimensionCounts,
    /// Nodes filtered out by each of the task's constraints, in the task's
    /// order.
    pub per_constraint: Vec<(Constraint, usize)>,
}

/// What [`explain`] returns: the same summary as [`Unplaced`].
pub type Explanation = Unplaced;

impl Unplaced {
    /// Nodes filtered out by any constraint.
    pub fn filtered(&self) -> usize {
        self.per_constraint.iter().map(|(_, n)| n).sum()
    }
}

/// `9812` as `9,812`.
pub(crate) fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
}

impl Unplaced {
    /// The summary as a sentence about `noun`s instead of nodes, e.g.
    /// `no offer fits: 1 short on mem` for `describe("offer")` (the plural
    /// adds an `s`). Unlike the [`Display`](fmt::Display) form, it leaves
    /// out "0 filtered by constraints" when the task has no constraints, so
    /// it claims nothing about constraints that were never checked.
    pub fn describe(&self, noun: &str) -> String {
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = self.write_sentence(&mut out, noun, !self.per_constraint.is_empty());
        out
    }

    fn write_sentence(&self, f: &mut dyn fmt::Write, noun: &str, constraints: bool) -> fmt::Result {
        if self.nodes == 0 {
            return write!(f, "no {noun} fits: there are no {noun}s");
        }
        if self.fit > 0 {
            write!(
                f,
                "{} of {} {noun}s fit",
                thousands(self.fit),
                thousands(self.nodes)
            )?;
        } else {
            write!(f, "no {noun} fits")?;
        }
        let mut dims: Vec<(&str, usize)> =
            self.per_dimension.iter().filter(|(_, n)| *n > 0).collect();
        // Most common shortage first; ties in dimension order.
        dims.sort_by_key(|d| std::cmp::Reverse(d.1));
        let mut sep = ": ";
        for (name, n) in dims {
            write!(f, "{sep}{} short on {name}", thousands(n))?;
            sep = ", ";
        }
        if !constraints {
            return Ok(());
        }
        write!(
            f,
            "{sep}{} filtered by constraints",
            thousands(self.filtered())
        )?;
        let named: Vec<String> = self
            .per_constraint
            .iter()
            .filter(|(_, n)| *n > 0)
            .map(|(c, n)| format!("{} by {c}", thousands(*n)))
            .collect();
        if !named.is_empty() {
            write!(f, " ({})", named.join(", "))?;
        }
        Ok(())
    }
}

impl fmt::Display for Unplaced {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.write_sentence(f, "node", true)
    }
}

/// Why `item` fits in none of `bins` (or in how many it does fit): per
/// dimension, the number of bins without enough of it left. Bins have no
/// attributes here, so nothing is filtered by constraints.
pub fn explain(bins: &[Resources], item: &Resources) -> Explanation {
    let mut out = Unplaced {
        nodes: bins.len(),
        ..Unplaced::default()
    };
    for bin in bins {
        let mut fits = true;
        for kind in ScalarKind::ALL {
            if bin.scalar(kind) < item.scalar(kind) {
                *out.per_dimension.scalar_mut(kind) += 1;
                fits = false;
            }
        }
        if !bin.ports.contains(&item.ports) {
            out.per_dimension.ports += 1;
            fits = false;
        }
        if fits {
            out.fit += 1;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Parses a resource string (test input).
    pub(super) fn r(s: &str) -> Resources {
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

    #[test]
    fn strategy_names() {
        for s in Strategy::ALL {
            assert_eq!(s.name().parse::<Strategy>(), Ok(s));
            assert_eq!(s.to_string(), s.name());
        }
        assert!(
            "best"
                .parse::<Strategy>()
                .unwrap_err()
                .contains("first-fit")
        );
    }

    #[test]
    fn tetris_fills_used_bins_first() {
        let bins = [
            r("cpus:8;mem:800"),
            r("cpus:8;mem:800"),
            r("cpus:4;mem:400"),
        ];
        let items = [
            r("cpus:1;mem:100"),
            r("cpus:1;mem:100"),
            r("cpus:6;mem:600"),
        ];
        let p = pack(&bins, &items, Strategy::Tetris);
        // The first item opens the largest bin (lowest index among equals),
        // the second joins it, the third fills it exactly.
        assert_eq!(p.assignments, [Some(0), Some(0), Some(0)]);
        assert_eq!(p.remaining[0], Resources::empty());
        // Best fit would have put the first item on the small bin.
        assert_eq!(
            pack(&bins, &items[..1], Strategy::BestFit).assignments,
            [Some(2)]
        );
        // A third item that would use up bin 0's cpu and leave 5/8 of its
        // memory stranded opens another bin instead...
        let strand = [items[0].clone(), items[1].clone(), r("cpus:6;mem:100")];
        assert_eq!(
            pack(&bins, &strand, Strategy::Tetris).assignments,
            [Some(0), Some(0), Some(1)]
        );
        // ... unless there is none to open.
        assert_eq!(
            pack(&bins[..1], &strand, Strategy::Tetris).assignments,
            [Some(0), Some(0), Some(0)]
        );
    }

    #[test]
    fn tetris_aligns_demand_with_free_shape() {
        let bins = [r("cpus:10;mem:1000"), r("cpus:10;mem:1000")];
        let items = [
            r("cpus:4;mem:700"), // opens bin 0: free cpus 6, mem 300
            r("cpus:7;mem:400"), // no room in bin 0: opens bin 1: free 3, 600
            // Both bins are now 90% free in sum, so best fit ties; Tetris
            // sends a memory-heavy item where memory is free...
            r("cpus:0.2;mem:200"),
            // ... and a cpu-heavy one where cpu is free.
            r("cpus:2;mem:20"),
        ];
        let p = pack(&bins, &items, Strategy::Tetris);
        assert_eq!(p.assignments, [Some(0), Some(1), Some(1), Some(0)]);
        let bf = pack(&bins, &items, Strategy::BestFit);
        assert_eq!(bf.assignments[2], Some(0));
    }

    #[test]
    fn explain_counts_each_short_dimension() {
        let bins = [
            r("cpus:1;mem:100;ports:[80-80]"),
            r("cpus:4;mem:10"),
            r("cpus:4;mem:400;ports:[81-81]"),
        ];
        let e = explain(&bins, &r("cpus:2;mem:50;ports:[80-80]"));
        assert_eq!(e.nodes, 3);
        assert_eq!(e.fit, 0);
        assert_eq!(
            e.per_dimension,
            DimensionCounts {
                cpus: 1,
                mem: 1,
                ports: 2,
                ..DimensionCounts::default()
            }
        );
        assert_eq!(
            e.to_string(),
            "no node fits: 2 short on ports, 1 short on cpus, 1 short on mem, 0 filtered by constraints"
        );
        let e = explain(&bins, &r("cpus:1"));
        assert_eq!(e.fit, 3);
        assert_eq!(e.to_string(), "3 of 3 nodes fit: 0 filtered by constraints");
        assert_eq!(
            explain(&[], &r("cpus:1")).to_string(),
            "no node fits: there are no nodes"
        );
    }

    #[test]
    fn unplaced_sentence() {
        let u = Unplaced {
            nodes: 10_000,
            fit: 0,
            per_dimension: DimensionCounts {
                cpus: 188,
                mem: 9_812,
                ..DimensionCounts::default()
            },
            per_constraint: Vec::new(),
        };
        assert_eq!(
            u.to_string(),
            "no node fits: 9,812 short on mem, 188 short on cpus, 0 filtered by constraints"
        );
        assert_eq!(
            u.describe("offer"),
            "no offer fits: 9,812 short on mem, 188 short on cpus"
        );
        assert_eq!(
            Unplaced::default().describe("offer"),
            "no offer fits: there are no offers"
        );
        let zoned = Unplaced {
            nodes: 3,
            fit: 1,
            per_constraint: vec![(
                Constraint {
                    attribute: "zone".into(),
                    op: crate::workload::ConstraintOp::Equals,
                    value: "b".into(),
                },
                2,
            )],
            ..Unplaced::default()
        };
        assert_eq!(
            zoned.describe("node"),
            "1 of 3 nodes fit: 2 filtered by constraints (2 by zone == b)"
        );
        assert_eq!(zoned.describe("node"), zoned.to_string());
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
    }
}
