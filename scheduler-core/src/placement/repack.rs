//! The offline repack: every task is known up front and may be placed in
//! any order, so the packer chooses the order.
//!
//! [`repack`] packs items into bins (offers: ports must fit too) and
//! [`repack_workload`] packs simulator tasks onto nodes (task constraints
//! against node attributes). Both run the same greedy:
//!
//! 1. **Nodes are opened largest first.** "Largest" is measured against
//!    the demand: a node's size is `Σ_k cap_k / uncovered_k`, where
//!    `uncovered_k` is the demand of dimension `k` not yet covered by the
//!    capacity of the nodes already in the order. Once a dimension's demand
//!    is covered it stops counting, so after memory is covered the order
//!    continues by cpu alone. This is the order the per-dimension
//!    [`lower_bound`](super::lower_bound) counts in.
//! 2. **Tasks are grouped into shape bins.** Two axes are chosen: the two
//!    dimensions with the highest demand relative to capacity (cpu and
//!    memory in practice). On them a task is `(x, y)`, each normalized by
//!    the total demand of its dimension; its shape is `u = x / (x + y)`,
//!    cut into `SHAPES` bins, and its size `x + y`. Within a bin tasks
//!    wait largest first. Tasks with different constraints sit in
//!    different bins, and a node only takes from the bins whose
//!    constraints it satisfies.
//! 3. **Each open node is filled until nothing fits.** The next task comes
//!    from the shape bins that keep the node's free vector in proportion
//!    to the remaining demand: if the node has relatively more free cpu
//!    than the demand still to place (`u_free > u_rest`), cpu-heavy tasks,
//!    and the further off, the heavier — the target shape is `u_free +
//!    κ·(u_free − u_rest)` with κ = `KAPPA`. Among the bins within
//!    `WINDOW` of the target it takes the largest task that fits (a
//!    binary search on size in each bin, then a short scan); if none fits
//!    there, the largest that fits in the non-empty bin nearest to it.
//! 4. **The dimension with nothing to spare is filled everywhere.** The
//!    nodes from here on that are needed to cover the remaining demand in
//!    every dimension (in the opening order) hold it with room to spare in
//!    some dimensions — memory, say, if cpu decides the bound. Each node
//!    keeps its share of that spare room out of the proportion of step 3
//!    (`u_free` is taken over free space minus that reserve), so nodes end
//!    full in cpu with the spare memory spread over them, rather than full
//!    in memory with cpu left over that no remaining task can use.
//! 5. **Tasks that only large nodes can hold are not left behind.** A task
//!    that fits no node later in the order (per-dimension maximum of their
//!    capacities) is due by the last node that could hold it. Before a
//!    node's fill, due tasks are placed on it, largest first, while the
//!    nodes up to their deadline have less than `LATE_SHARE` of their
//!    capacity to spare for them.
//! 6. **Leftovers.** Any task still unplaced after every node was opened
//!    (a scan gave up early, or it fits nowhere) is tried once more on
//!    each node, used nodes first, by first fit over a tree of
//!    per-dimension maxima of free space; if none holds it, its assignment
//!    is `None`.
//!
//! The balance is on two axes; other dimensions (disk, say) are only
//! checked for fit. Cost: O(n log n) to sort the tasks and O(N log N) to
//! order the nodes, then O(log n) per placement (binary searches in a few
//! bins, a union-find to skip placed tasks) plus at most `SHAPES` failed
//! bin probes per node and constraint class. Deterministic: ties go to the
//! lowest index.

// Vector arithmetic over the four scalar dimensions indexes several arrays
// with the same `k`; an index loop says that most plainly.
#![allow(clippy::needless_range_loop)]

use std::collections::HashMap;

use super::defrag::FitTree;
use super::{DIMS, NodeIndex, Packing, Vector, vector};
use crate::resources::{PortRanges, Resources, Scalar, ScalarKind};
use crate::workload::{Constraint, Node, Task};
use late::Deadlines;

/// Shape bins: the range of `u = x / (x + y)` is cut into this many equal
/// parts (one bit each in a `u64` mask).
const SHAPES: usize = 64;

/// How far past the node's own shape the next task's shape aims, in units
/// of the node's deviation from the remaining demand's shape.
const KAPPA: f64 = 1.0;

/// Shape bins on either side of the target shape among which the largest
/// task that fits is taken.
const WINDOW: usize = 2;

/// Tasks looked at in a shape bin, per size band, before giving up on the
/// bin for the node being filled.
const SCAN: usize = 8;

/// Relative margin on the size bounds of a bin search, so rounding never
/// hides a task that fits.
const MARGIN: f64 = 1e-9;

/// What [`repack_workload`] decided.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepackResult {
    /// For each task, in the order given, the index of its node in the
    /// node slice, or `None` if it fits on no node.
    pub assignments: Vec<Option<NodeIndex>>,
    /// Nodes that run at least one task.
    pub nodes_used: usize,
    /// For each node, in the order given: its capacity, what is left free
    /// and how many tasks it runs — what
    /// [`Placer::nodes`](super::Placer::nodes) yields, so
    /// [`stranded`](super::stranded) applies.
    pub nodes: Vec<(Resources, Resources, u32)>,
}

impl RepackResult {
    /// The number of tasks placed.
    pub fn placed(&self) -> usize {
        self.assignments.iter().flatten().count()
    }

    /// The sum of the placed tasks' demands (capacity minus free, over all
    /// nodes).
    pub fn allocated(&self) -> Resources {
        let mut out = Resources::empty();
        for (cap, free, _) in &self.nodes {
            out += cap.saturating_sub(free);
        }
        out
    }

    /// `(capacity, free, tasks)` per node, as [`Placer::nodes`](super::Placer::nodes)
    /// yields them.
    pub fn nodes(&self) -> impl Iterator<Item = (Resources, Resources, u32)> + '_ {
        self.nodes.iter().cloned()
    }
}

/// Packs all `items` into `bins` (say, the resources of the offers a
/// framework holds) with the offline greedy of the module documentation;
/// ports must fit exactly as in [`pack`](super::pack), checked with
/// [`Resources::contains`]. Items that fit in no bin get `None`. The result
/// does not depend on the order of `items` except through ties, and is
/// deterministic.
pub fn repack(bins: &[Resources], items: &[Resources]) -> Packing {
    let caps: Vec<Vector> = bins.iter().map(vector).collect();
    let demands: Vec<Vector> = items.iter().map(vector).collect();
    let mut rules = Ports {
        items,
        ports: bins.iter().map(|b| b.ports.clone()).collect(),
    };
    let classes = vec![0; items.len()];
    let out = Engine::new(&caps, &demands, &classes, 1, &mut rules).run();
    let remaining = out
        .free
        .iter()
        .zip(rules.ports)
        .map(|(f, ports)| to_resources(f).with_ports(ports))
        .collect();
    Packing {
        assignments: out.assignments,
        remaining,
    }
}

/// Packs all `tasks` onto `nodes` with the offline greedy of the module
/// documentation, respecting each task's constraints against the node's
/// attributes ([`Constraint::matches`]). Tasks that fit on no node they
/// may run on get `None`. Deterministic.
pub fn repack_workload(nodes: &[Node], tasks: &[&Task]) -> RepackResult {
    let caps: Vec<Vector> = nodes.iter().map(|n| vector(&n.resources())).collect();
    let demands: Vec<Vector> = tasks.iter().map(|t| vector(&t.resources())).collect();
    // One class per distinct list of constraints.
    let mut ids: HashMap<&[Constraint], u32> = HashMap::new();
    let mut lists: Vec<&[Constraint]> = Vec::new();
    let classes: Vec<u32> = tasks
        .iter()
        .map(|t| {
            *ids.entry(t.constraints.as_slice()).or_insert_with(|| {
                lists.push(t.constraints.as_slice());
                (lists.len() - 1) as u32
            })
        })
        .collect();
    let mut rules = Constraints {
        nodes,
        lists: &lists,
    };
    let out = Engine::new(&caps, &demands, &classes, lists.len(), &mut rules).run();
    let nodes_used = out.count.iter().filter(|&&c| c > 0).count();
    let nodes = caps
        .iter()
        .zip(&out.free)
        .zip(&out.count)
        .map(|((c, f), &n)| (to_resources(c), to_resources(f), n))
        .collect();
    RepackResult {
        assignments: out.assignments,
        nodes_used,
        nodes,
    }
}

/// The scalars of `v` as [`Resources`] (no ports).
pub(crate) fn to_resources(v: &Vector) -> Resources {
    let mut r = Resources::empty();
    for (k, kind) in ScalarKind::ALL.into_iter().enumerate() {
        *r.scalar_mut(kind) = Scalar::from_milli_saturating(v[k]);
    }
    r
}

/// Whether `free` holds `d` in every scalar dimension.
fn holds(free: &Vector, d: &Vector) -> bool {
    (0..DIMS).all(|k| free[k] >= d[k])
}

// ---------------------------------------------------------------------------
// What the greedy needs to know beyond the scalars

/// The rules beyond scalar capacity: which class of items a bin accepts,
/// and per item anything else that must fit (ports).
trait Rules {
    /// Whether bin `bin` accepts items of class `class`.
    fn allows(&self, class: u32, bin: usize) -> bool;
    /// Whether item `item` fits on `bin` beyond its scalars.
    fn fits(&self, item: usize, bin: usize) -> bool;
    /// Records `item` on `bin` (beyond its scalars).
    fn place(&mut self, item: usize, bin: usize);
}

/// [`repack`]: one class; ports must be free on the bin.
struct Ports<'a> {
    items: &'a [Resources],
    ports: Vec<PortRanges>,
}

impl Rules for Ports<'_> {
    fn allows(&self, _class: u32, _bin: usize) -> bool {
        true
    }

    fn fits(&self, item: usize, bin: usize) -> bool {
        let want = &self.items[item].ports;
        want.is_empty() || self.ports[bin].contains(want)
    }

    fn place(&mut self, item: usize, bin: usize) {
        let want = &self.items[item].ports;
        if !want.is_empty() {
            self.ports[bin] = self.ports[bin].difference(want);
        }
    }
}

/// [`repack_workload`]: a class per list of constraints, which must all
/// match the node's attributes.
struct Constraints<'a> {
    nodes: &'a [Node],
    lists: &'a [&'a [Constraint]],
}

impl Rules for Constraints<'_> {
    fn allows(&self, class: u32, bin: usize) -> bool {
        let attributes = &self.nodes[bin].attributes;
        self.lists[class as usize]
            .iter()
            .all(|c| c.matches(attributes))
    }

    fn fits(&self, _item: usize, _bin: usize) -> bool {
        true
    }

    fn place(&mut self, _item: usize, _bin: usize) {}
}

// ---------------------------------------------------------------------------
// The greedy

/// What [`Engine::run`] returns.
struct Outcome {
    assignments: Vec<Option<usize>>,
    free: Vec<Vector>,
    count: Vec<u32>,
}

/// The state of one repack.
struct Engine<'a, R> {
    caps: &'a [Vector],
    demands: &'a [Vector],
    class: &'a [u32],
    classes: usize,
    rules: &'a mut R,
    free: Vec<Vector>,
    count: Vec<u32>,
    assignments: Vec<Option<usize>>,
    /// The two balance axes (dimension indexes); the second may be absent.
    axes: [Option<usize>; 2],
    /// `1 / total demand` on each axis.
    scale: [f64; 2],
    /// Demand not yet placed, projected on the axes.
    rest: [f64; 2],
    /// Items by group (class × shape bin), largest first; each group ends
    /// with a sentinel position.
    order: Vec<u32>,
    /// The size of the item at each position (0 at sentinels).
    size: Vec<f64>,
    /// Union-find over positions: `next[p] == p` while `p` is unplaced (or
    /// a sentinel), else a later position.
    next: Vec<u32>,
    /// First position of each group; `start[g + 1] - 1` is its sentinel.
    start: Vec<u32>,
    /// Unplaced items per group.
    alive: Vec<u32>,
    /// Per class, the shape bins with unplaced items.
    mask: Vec<u64>,
    /// The items only the nodes early in the opening order can hold.
    late: Deadlines,
    /// Capacity, projected on the axes, of the nodes before each position
    /// of the opening order.
    prefix: Vec<[f64; 2]>,
}

impl<'a, R: Rules> Engine<'a, R> {
    fn new(
        caps: &'a [Vector],
        demands: &'a [Vector],
        class: &'a [u32],
        classes: usize,
        rules: &'a mut R,
    ) -> Self {
        let mut demand = [0u64; DIMS];
        let mut capacity = [0u64; DIMS];
        for d in demands {
            for k in 0..DIMS {
                demand[k] = demand[k].saturating_add(d[k]);
            }
        }
        for c in caps {
            for k in 0..DIMS {
                capacity[k] = capacity[k].saturating_add(c[k]);
            }
        }
        // The two most pressed dimensions with demand: demand over
        // capacity, highest first (dimension order on ties).
        let mut dims: Vec<(f64, usize)> = (0..DIMS)
            .filter(|&k| demand[k] > 0)
            .map(|k| (demand[k] as f64 / capacity[k].max(1) as f64, k))
            .collect();
        dims.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let axes = [dims.first().map(|d| d.1), dims.get(1).map(|d| d.1)];
        let scale = axes.map(|a| a.map_or(0.0, |k| 1.0 / demand[k] as f64));
        let mut engine = Engine {
            caps,
            demands,
            class,
            classes,
            rules,
            free: caps.to_vec(),
            count: vec![0; caps.len()],
            assignments: vec![None; demands.len()],
            axes,
            scale,
            rest: [0.0; 2],
            order: Vec::new(),
            size: Vec::new(),
            next: Vec::new(),
            start: Vec::new(),
            alive: Vec::new(),
            mask: Vec::new(),
            late: Deadlines::default(),
            prefix: Vec::new(),
        };
        engine.group();
        engine
    }

    /// `(x, y)`: `v` on the balance axes, normalized by the demand.
    fn project(&self, v: &Vector) -> [f64; 2] {
        let mut p = [0.0; 2];
        for i in 0..2 {
            if let Some(k) = self.axes[i] {
                p[i] = v[k] as f64 * self.scale[i];
            }
        }
        p
    }

    /// The shape bin of `u` in `[0, 1]`.
    fn bin_of(u: f64) -> usize {
        ((u * SHAPES as f64) as usize).min(SHAPES - 1)
    }

    /// The group (class × shape bin) of `item`, and its size.
    fn group_key(&self, item: usize) -> (usize, f64) {
        let [x, y] = self.project(&self.demands[item]);
        let s = x + y;
        let u = if s > 0.0 { x / s } else { 0.0 };
        (self.class[item] as usize * SHAPES + Self::bin_of(u), s)
    }

    /// Sorts the items into groups (class × shape bin), largest first.
    fn group(&mut self) {
        let n = self.demands.len();
        for d in self.demands {
            let [x, y] = self.project(d);
            self.rest[0] += x;
            self.rest[1] += y;
        }
        let groups = self.classes * SHAPES;
        self.mask = vec![0; self.classes];
        let mut keyed: Vec<(u32, f64, u32)> = (0..n)
            .map(|i| {
                let (g, s) = self.group_key(i);
                (g as u32, s, i as u32)
            })
            .collect();
        keyed.sort_unstable_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
        self.order = Vec::with_capacity(n + groups);
        self.size = Vec::with_capacity(n + groups);
        self.start = Vec::with_capacity(groups + 1);
        self.alive = vec![0; groups];
        let mut it = keyed.into_iter().peekable();
        for g in 0..groups {
            self.start.push(self.order.len() as u32);
            while let Some(&(_, s, i)) = it.peek().filter(|e| e.0 as usize == g) {
                self.order.push(i);
                self.size.push(s);
                self.alive[g] += 1;
                it.next();
            }
            // The sentinel.
            self.order.push(u32::MAX);
            self.size.push(0.0);
            if self.alive[g] > 0 {
                self.mask[g / SHAPES] |= 1 << (g % SHAPES);
            }
        }
        self.start.push(self.order.len() as u32);
        self.next = (0..self.order.len() as u32).collect();
    }

    /// The first unplaced position at or after `p` (its group's sentinel
    /// if none).
    fn find(&mut self, mut p: usize) -> usize {
        while self.next[p] as usize != p {
            let up = self.next[p] as usize;
            self.next[p] = self.next[up];
            p = up;
        }
        p
    }

    fn run(mut self) -> Outcome {
        let order = self.node_order();
        self.late = Deadlines::new(self.caps, self.demands, &order);
        self.prefix = Vec::with_capacity(order.len() + 1);
        let mut sum = [0.0; 2];
        self.prefix.push(sum);
        for &b in &order {
            let c = self.project(&self.caps[b]);
            sum = [sum[0] + c[0], sum[1] + c[1]];
            self.prefix.push(sum);
        }
        let mut left = self.demands.len();
        for (p, &bin) in order.iter().enumerate() {
            if left == 0 {
                break;
            }
            left -= self.place_late(p, bin);
            left -= self.fill(p, bin);
        }
        if left > 0 {
            self.leftovers(&order);
        }
        Outcome {
            assignments: self.assignments,
            free: self.free,
            count: self.count,
        }
    }

    /// Places on `bin`, at position `p` of the opening order, the items
    /// that only nodes up to some later position can hold while the
    /// capacity of the nodes between is short of what they need; returns
    /// how many it placed.
    fn place_late(&mut self, p: usize, bin: usize) -> usize {
        let mut placed = 0;
        self.late.advance(p);
        while let Some(j) = self.late.tight(p) {
            // The largest unplaced item due by group `j` that fits `bin`
            // (items wait largest first in each group).
            let mut best: Option<(f64, usize)> = None;
            for g in self.late.first..=j {
                let mut looked = 0;
                let start = self.late.cursor[g];
                for &item in &self.late.items[g][start..] {
                    if self.assignments[item].is_some() {
                        continue;
                    }
                    if self.fits(item, bin) && self.rules.allows(self.class[item], bin) {
                        let s: f64 = self.project(&self.demands[item]).iter().sum();
                        if best.is_none_or(|(bs, _)| s > bs) {
                            best = Some((s, item));
                        }
                        break;
                    }
                    looked += 1;
                    if looked == SCAN {
                        break;
                    }
                }
            }
            let Some((_, item)) = best else {
                break;
            };
            let pos = self.position_of(item);
            self.take(pos, bin);
            placed += 1;
        }
        placed
    }

    /// The bins largest first, measured against the demand not yet covered
    /// by the bins before (see the module documentation).
    fn node_order(&self) -> Vec<usize> {
        let mut demand = [0u64; DIMS];
        for d in self.demands {
            for k in 0..DIMS {
                demand[k] = demand[k].saturating_add(d[k]);
            }
        }
        let mut uncovered = demand;
        let mut rest: Vec<usize> = (0..self.caps.len()).collect();
        let mut order = Vec::with_capacity(rest.len());
        while !rest.is_empty() {
            let open = (0..DIMS).any(|k| uncovered[k] > 0);
            let mut w = [0.0; DIMS];
            for k in 0..DIMS {
                let basis = if open { uncovered[k] } else { demand[k] };
                if basis > 0 {
                    w[k] = 1.0 / basis as f64;
                }
            }
            let key =
                |i: &usize| -> f64 { (0..DIMS).map(|k| w[k] * self.caps[*i][k] as f64).sum() };
            let mut keyed: Vec<(f64, usize)> = rest.iter().map(|i| (key(i), *i)).collect();
            keyed.sort_unstable_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
            rest.clear();
            let mut it = keyed.into_iter();
            for (_, i) in it.by_ref() {
                order.push(i);
                if !open {
                    continue;
                }
                let mut newly_covered = false;
                for k in 0..DIMS {
                    if uncovered[k] > 0 {
                        uncovered[k] = uncovered[k].saturating_sub(self.caps[i][k]);
                        newly_covered |= uncovered[k] == 0;
                    }
                }
                if newly_covered {
                    break;
                }
            }
            rest.extend(it.map(|(_, i)| i));
        }
        order
    }

    /// Whether `item` fits on `bin` now (scalars and rules; not the class).
    fn fits(&self, item: usize, bin: usize) -> bool {
        holds(&self.free[bin], &self.demands[item]) && self.rules.fits(item, bin)
    }

    /// The position of `item` in `order` (it is unplaced).
    fn position_of(&self, item: usize) -> usize {
        let (g, s) = self.group_key(item);
        let (lo, hi) = (self.start[g] as usize, self.start[g + 1] as usize - 1);
        // Same size: a short run, in item order.
        let first = lo + self.size[lo..hi].partition_point(|&v| v > s);
        (first..hi)
            .find(|&p| self.order[p] as usize == item)
            .unwrap_or_else(|| unreachable!("every item has a position in its group"))
    }

    /// Places the item at position `pos` on `bin`.
    fn take(&mut self, pos: usize, bin: usize) {
        let item = self.order[pos] as usize;
        let d = self.demands[item];
        for k in 0..DIMS {
            self.free[bin][k] -= d[k];
        }
        self.count[bin] += 1;
        self.assignments[item] = Some(bin);
        self.rules.place(item, bin);
        self.late.placed(item, &d, &self.assignments);
        let [x, y] = self.project(&d);
        self.rest[0] = (self.rest[0] - x).max(0.0);
        self.rest[1] = (self.rest[1] - y).max(0.0);
        self.next[pos] = pos as u32 + 1;
        let g = self.group_of(pos);
        self.alive[g] -= 1;
        if self.alive[g] == 0 {
            self.mask[g / SHAPES] &= !(1 << (g % SHAPES));
        }
    }

    /// The group of position `pos`.
    fn group_of(&self, pos: usize) -> usize {
        self.start.partition_point(|&s| s as usize <= pos) - 1
    }

    /// What of `bin`'s capacity (projected on the axes) should stay free
    /// when it is full: the nodes from position `p` on that are needed to
    /// cover the remaining demand in every dimension hold it with some
    /// dimensions to spare; each node keeps its share of that spare room,
    /// so that the dimension with none to spare is filled everywhere.
    fn reserve(&self, p: usize, bin: usize) -> [f64; 2] {
        let prefix = &self.prefix;
        let n = prefix.len() - 1;
        let rest = self.rest;
        let covers = |e: usize| (0..2).all(|k| prefix[e][k] - prefix[p][k] >= rest[k]);
        // The first end position (exclusive) that covers the rest.
        let mut lo = p + 1;
        let mut hi = n;
        if !covers(hi) {
            return [0.0; 2];
        }
        while lo < hi {
            let mid = (lo + hi) / 2;
            if covers(mid) {
                hi = mid;
            } else {
                lo = mid + 1;
            }
        }
        let mut rho = [0.0; 2];
        for k in 0..2 {
            let room = prefix[lo][k] - prefix[p][k];
            rho[k] = if room > 0.0 { rest[k] / room } else { 0.0 };
        }
        let top = rho[0].max(rho[1]);
        if top <= 0.0 {
            return [0.0; 2];
        }
        let cap = self.project(&self.caps[bin]);
        [cap[0] * (1.0 - rho[0] / top), cap[1] * (1.0 - rho[1] / top)]
    }

    /// Fills `bin`, at position `p` of the opening order, until no task
    /// fits; returns how many it took.
    fn fill(&mut self, p: usize, bin: usize) -> usize {
        let eligible: Vec<usize> = (0..self.classes)
            .filter(|&c| self.mask[c] != 0 && self.rules.allows(c as u32, bin))
            .collect();
        let reserve = self.reserve(p, bin);
        self.fill_from(bin, &eligible, reserve)
    }

    /// Fills `bin` from the classes `pools` until nothing in them fits,
    /// keeping `reserve` (projected) free if the tasks allow; returns how
    /// many it took.
    fn fill_from(&mut self, bin: usize, pools: &[usize], reserve: [f64; 2]) -> usize {
        // Per class, the shape bins found to hold nothing that fits this
        // node (it only gets fuller, so they stay that way).
        let mut dead = vec![0u64; pools.len()];
        let mut taken = 0;
        let window = WINDOW;
        let mut candidates: Vec<(f64, usize, usize)> = Vec::new();
        loop {
            let union = pools
                .iter()
                .zip(&dead)
                .fold(0u64, |m, (&p, &d)| m | (self.mask[p] & !d));
            if union == 0 {
                return taken;
            }
            let free = self.project(&self.free[bin]);
            let (target, high) = self.target(free, reserve);
            let lo = target.saturating_sub(window);
            let hi = (target + window).min(SHAPES - 1);
            let in_window =
                if hi == 63 { u64::MAX } else { (2u64 << hi) - 1 } & !((1u64 << lo) - 1);
            let shapes = if union & in_window != 0 {
                union & in_window
            } else {
                1u64 << nearest(union, target, high)
            };
            candidates.clear();
            for (e, &p) in pools.iter().enumerate() {
                let mut m = self.mask[p] & !dead[e] & shapes;
                while m != 0 {
                    let b = m.trailing_zeros() as usize;
                    m &= m - 1;
                    let g = p * SHAPES + b;
                    let head = self.find(self.start[g] as usize);
                    let bound = self.size[head].min(Self::size_bounds(b, free).0);
                    candidates.push((bound, e, b));
                }
            }
            candidates.sort_unstable_by(|x, y| {
                y.0.total_cmp(&x.0)
                    .then(x.2.abs_diff(target).cmp(&y.2.abs_diff(target)))
                    .then(x.1.cmp(&y.1))
                    .then(x.2.cmp(&y.2))
            });
            let mut best: Option<(f64, usize)> = None;
            for &(bound, e, b) in &candidates {
                if best.is_some_and(|(s, _)| s >= bound) {
                    break;
                }
                match self.search(pools[e] * SHAPES + b, b, free, bin) {
                    Some(pos) => {
                        let s = self.size[pos];
                        if best.is_none_or(|(bs, _)| s > bs) {
                            best = Some((s, pos));
                        }
                    }
                    None => dead[e] |= 1 << b,
                }
            }
            if let Some((_, pos)) = best {
                self.take(pos, bin);
                taken += 1;
            }
        }
    }

    /// `(s_hi, s_lo)` for shape bin `b` and projected free space `free`:
    /// items of the bin have u in `[u0, u1]`, so `x = s·u <= free x` and
    /// `y = s·(1 − u) <= free y`. Sizes above `s_hi` fit for no u in the
    /// bin; sizes up to `s_lo` fit for every u (on the axes).
    fn size_bounds(b: usize, free: [f64; 2]) -> (f64, f64) {
        let u0 = b as f64 / SHAPES as f64;
        let u1 = (b + 1) as f64 / SHAPES as f64;
        let bound = |num: f64, den: f64| if den > 0.0 { num / den } else { f64::INFINITY };
        let s_hi = bound(free[0], u0).min(bound(free[1], 1.0 - u1)) * (1.0 + MARGIN);
        let s_lo = bound(free[0], u1).min(bound(free[1], 1.0 - u0));
        (s_hi, s_lo)
    }

    /// The shape bin to take the next task from for a node with `free`
    /// (projected), and whether to prefer higher shapes on a tie.
    fn target(&self, free: [f64; 2], reserve: [f64; 2]) -> (usize, bool) {
        let rest = self.rest[0] + self.rest[1];
        let u_rest = if rest > 0.0 { self.rest[0] / rest } else { 0.5 };
        let free = [
            (free[0] - reserve[0]).max(0.0),
            (free[1] - reserve[1]).max(0.0),
        ];
        let total = free[0] + free[1];
        let u_free = if total > 0.0 { free[0] / total } else { u_rest };
        let u = (u_free + KAPPA * (u_free - u_rest)).clamp(0.0, 1.0);
        (Self::bin_of(u), u_free >= u_rest)
    }

    /// The position of the largest unplaced item of group `g` (shape bin
    /// `b`) that fits on `bin`, whose projected free space is `free`.
    fn search(&mut self, g: usize, b: usize, free: [f64; 2], bin: usize) -> Option<usize> {
        let (lo, hi) = (self.start[g] as usize, self.start[g + 1] as usize - 1);
        let (s_hi, s_lo) = Self::size_bounds(b, free);
        let mut p = self.find(lo + self.size[lo..hi].partition_point(|&v| v > s_hi));
        for band in 0..2 {
            let mut looked = 0;
            while p < hi && looked < SCAN {
                let item = self.order[p] as usize;
                if self.fits(item, bin) {
                    return Some(p);
                }
                looked += 1;
                p = self.find(p + 1);
            }
            if p >= hi || band == 1 {
                break;
            }
            // Skip the rest of the band of sizes that may or may not fit.
            let q = lo + self.size[lo..hi].partition_point(|&v| v > s_lo);
            if q > p {
                p = self.find(q);
            }
        }
        None
    }

    /// Tries each unplaced item once more on every bin, used bins first
    /// (in the opening order), largest items first: the first bin that
    /// holds it, found in a tree of per-dimension maxima of free space.
    fn leftovers(&mut self, order: &[usize]) {
        let mut items: Vec<(f64, usize)> = (0..self.demands.len())
            .filter(|&i| self.assignments[i].is_none())
            .map(|i| (self.project(&self.demands[i]).iter().sum(), i))
            .collect();
        items.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let used = order.iter().filter(|&&b| self.count[b] > 0);
        let empty = order.iter().filter(|&&b| self.count[b] == 0);
        let bins: Vec<usize> = used.chain(empty).copied().collect();
        let mut tree = FitTree::new(&bins, &self.free);
        for (_, item) in items {
            let class = self.class[item];
            let rules = &*self.rules;
            let found = tree.first_fit(&self.demands[item], &self.free, |b| {
                rules.fits(item, b) && rules.allows(class, b)
            });
            if let Some(bin) = found {
                let pos = self.position_of(item);
                self.take(pos, bin);
                tree.update(bin, &self.free);
            }
        }
    }
}

/// The set bit of `mask` (non-zero) nearest to bit `t`; on a tie the
/// higher one if `high`.
fn nearest(mask: u64, t: usize, high: bool) -> usize {
    let below = if t >= 63 {
        mask
    } else {
        mask & ((2u64 << t) - 1)
    };
    let above = mask & !((1u64 << t) - 1);
    let down = (below != 0).then(|| 63 - below.leading_zeros() as usize);
    let up = (above != 0).then(|| above.trailing_zeros() as usize);
    match (down, up) {
        (Some(d), Some(u)) => {
            let (dd, du) = (t - d, u - t);
            if du < dd || (du == dd && high) { u } else { d }
        }
        (Some(d), None) => d,
        (None, Some(u)) => u,
        (None, None) => unreachable!("the mask is not empty"),
    }
}

mod late;

#[cfg(test)]
mod tests;
