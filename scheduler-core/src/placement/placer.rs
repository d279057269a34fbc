//! [`Placer`]: [`pack`](super::pack)'s decisions without scanning every
//! node.
//!
//! Nodes sit in buckets of [`BUCKET`] at the leaves of a complete binary
//! tree. Every tree node summarizes its subtree: per dimension the range
//! of free capacity (over the nodes the strategy scores) and of capacity,
//! the range of `Σ free/capacity`, the deepest free vector along six
//! directions of the cpu–memory plane (so that a subtree where cpu is free
//! on one node and memory on another is seen not to fit a task needing
//! both), the capacity range of its empty nodes, and masks of the node
//! attributes present. A search descends only into subtrees that might
//! hold a node that fits:
//!
//! - first fit walks the tree left to right (nodes in index order) and
//!   stops at the first node that fits;
//! - best fit, worst fit and Tetris search best-first: subtrees wait in a
//!   heap under a lower bound of the cost of any node inside them, single
//!   nodes under their exact cost, so the first node out of the heap is
//!   the cheapest. Tetris's search among used nodes also prunes subtrees
//!   where the task would certainly strand every node, then opens a node
//!   the same way, then (cluster full) takes any used node.
//!
//! For first, best and worst fit the bounds are exact lower bounds in
//! floating point too (monotone rounding; a 1e-9 margin where sums are
//! reassociated), so the choice is exactly [`pack`](super::pack)'s, ties to
//! the lowest index included. Tetris's bounds multiply by reciprocals, so
//! a tie within rounding (1e-9) may go to another node than `pack`'s.
//!
//! After a placement only the node's bucket and its ancestors are
//! recomputed: O(log n). A search touches O(log n) tree nodes when the
//! bounds are tight, which they are when similar nodes sit next to each
//! other: best fit, worst fit and Tetris order the leaves by capacity and
//! then by free space (first fit keeps index order, which defines it), and
//! restore that order from time to time.

// Vector arithmetic over the four scalar dimensions indexes several arrays
// with the same `k`; an index loop says that most plainly.
#![allow(clippy::needless_range_loop)]

use std::cmp::Ordering;
use std::collections::{BinaryHeap, HashMap};

use super::{
    DIMS, PRESSED, Strategy, TETRIS_SIGMA, Unplaced, Vector, scalar_slack, tetris_cost,
    tetris_open_score, tetris_strands, tetris_weights,
};
use crate::resources::{Resources, Scalar, ScalarKind};
use crate::workload::{ConstraintOp, Node, Task};

/// Nodes per tree leaf. A leaf is scanned linearly.
pub const BUCKET: usize = 8;

/// Margin for bounds computed with reassociated floating-point sums.
const MARGIN: f64 = 1e-9;

/// Directions in the plane of free cpu and memory (normalized by the
/// largest node) along which each subtree keeps its deepest free vector,
/// for pruning subtrees where every dimension is free somewhere but no
/// single node has them all.
const DIRS: usize = 6;

/// Search work, in multiples of the number of nodes, after which the
/// leaves are put back in order (see `Placer::reorder`).
const REORDER_WORK: usize = 64;

/// The index of a node in the slice given to [`Placer::new`].
pub type NodeIndex = usize;

/// [`Placer::release`] was asked to free what is not there.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ReleaseError {
    /// No node has this index.
    #[error("no node {0}")]
    UnknownNode(NodeIndex),
    /// The node runs no task, or releasing would exceed its capacity.
    #[error("node {0} does not hold that much")]
    NotPlaced(NodeIndex),
}

/// Summary of the nodes below one tree node.
#[derive(Clone, Copy, Debug)]
struct Summary {
    /// Real nodes (the last bucket may be partly padding).
    real: u32,
    /// Nodes the strategy scores: all real nodes, or for Tetris the used
    /// ones.
    scored: u32,
    /// Nodes running no task.
    empty: u32,
    /// Lowest node index (tie-break order of the best-first search).
    min_idx: u32,
    /// Bit k: some node has no capacity in dimension k.
    zero_cap: u8,
    /// Attribute pairs present on some node / on every node.
    any_mask: u64,
    all_mask: u64,
    /// Capacity range per dimension (`cmin_pos` over nonzero capacities;
    /// `u64::MAX` if none).
    cmax: Vector,
    cmin_pos: Vector,
    /// `1/cmax` and `1/cmin_pos` (0 where undefined), for Tetris's bounds.
    inv_cmax: [f64; DIMS],
    inv_cmin: [f64; DIMS],
    /// Free range per dimension over the scored nodes.
    fmin: Vector,
    fmax: Vector,
    /// Range of `Σ free/capacity` over the scored nodes.
    a_min: f64,
    a_max: f64,
    /// Capacity range over the empty nodes.
    emin: Vector,
    emax: Vector,
    /// Per direction, the largest `min(cpu/cos, mem/sin)` of the scored
    /// nodes' normalized free vectors.
    dir: [f64; DIRS],
}

impl Summary {
    const NONE: Summary = Summary {
        real: 0,
        scored: 0,
        empty: 0,
        min_idx: u32::MAX,
        zero_cap: 0,
        any_mask: 0,
        all_mask: u64::MAX,
        cmax: [0; DIMS],
        cmin_pos: [u64::MAX; DIMS],
        inv_cmax: [0.0; DIMS],
        inv_cmin: [0.0; DIMS],
        fmin: [u64::MAX; DIMS],
        fmax: [0; DIMS],
        a_min: f64::INFINITY,
        a_max: f64::NEG_INFINITY,
        emin: [u64::MAX; DIMS],
        emax: [0; DIMS],
        dir: [f64::NEG_INFINITY; DIRS],
    };

    fn merge(a: &Summary, b: &Summary) -> Summary {
        let mut s = Summary {
            real: a.real + b.real,
            scored: a.scored + b.scored,
            empty: a.empty + b.empty,
            min_idx: a.min_idx.min(b.min_idx),
            zero_cap: a.zero_cap | b.zero_cap,
            any_mask: a.any_mask | b.any_mask,
            all_mask: a.all_mask & b.all_mask,
            a_min: a.a_min.min(b.a_min),
            a_max: a.a_max.max(b.a_max),
            ..Summary::NONE
        };
        for k in 0..DIMS {
            s.cmax[k] = a.cmax[k].max(b.cmax[k]);
            s.cmin_pos[k] = a.cmin_pos[k].min(b.cmin_pos[k]);
            // The reciprocal of the larger capacity (0 only if no node has
            // any: a zero here would make the alignment bound vanish).
            s.inv_cmax[k] = if a.cmax[k] >= b.cmax[k] {
                a.inv_cmax[k]
            } else {
                b.inv_cmax[k]
            };
            s.inv_cmin[k] = a.inv_cmin[k].max(b.inv_cmin[k]);
            s.fmin[k] = a.fmin[k].min(b.fmin[k]);
            s.fmax[k] = a.fmax[k].max(b.fmax[k]);
            s.emin[k] = a.emin[k].min(b.emin[k]);
            s.emax[k] = a.emax[k].max(b.emax[k]);
        }
        for j in 0..DIRS {
            s.dir[j] = a.dir[j].max(b.dir[j]);
        }
        s
    }
}

/// An entry of the best-first search: a subtree and a lower bound on the
/// cost of any node in it.
#[derive(Clone, Copy, Debug)]
struct Entry {
    /// A lower bound on the cost of the nodes of a subtree, or a node's
    /// cost.
    key: f64,
    /// The lowest node index below (tie-break).
    min_idx: u32,
    /// A tree index, or a node position with [`NODE`] set.
    tree: u32,
}

/// Marks an [`Entry`] that is a single node (its position).
const NODE: usize = 1 << 31;

impl PartialEq for Entry {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == Ordering::Equal
    }
}

impl Eq for Entry {}

impl PartialOrd for Entry {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Entry {
    /// Reversed, so that `BinaryHeap` pops the lowest bound first, and
    /// among equal bounds the lowest node index.
    fn cmp(&self, other: &Self) -> Ordering {
        other
            .key
            .total_cmp(&self.key)
            .then(other.min_idx.cmp(&self.min_idx))
            .then(other.tree.cmp(&self.tree))
    }
}

/// A task constraint resolved against the interned attributes.
#[derive(Clone, Copy, Debug)]
struct Compiled {
    equals: bool,
    key: Option<u32>,
    value: Option<u32>,
    /// The (key, value) pair's id if some node has it.
    pair: Option<u32>,
}

/// What a search looks for.
#[derive(Debug)]
struct Query {
    d: Vector,
    constraints: Vec<Compiled>,
    /// Tetris weights.
    w: [f64; DIMS],
    /// The demand's depth along each direction.
    t: [f64; DIRS],
    /// The demand as `f64`.
    df: [f64; DIMS],
}

/// Which nodes a search considers.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Phase {
    /// Tetris: the used nodes the task would not strand.
    Guarded,
    /// The scored nodes: all, or for Tetris the used ones.
    Scored,
    /// Empty nodes, for Tetris to open one.
    Open,
}

/// The indexed placer of the simulator: places tasks on nodes one at a
/// time with a [`Strategy`], in O(log n) per task when node shapes repeat.
///
/// ```
/// use berth_scheduler_core::placement::{Placer, Strategy};
/// use berth_scheduler_core::workload::heterogeneous;
///
/// let w = heterogeneous(100, 1_000, 7);
/// let mut placer = Placer::new(&w.nodes, Strategy::Tetris);
/// let placed = w.tasks.iter().filter(|t| placer.place(t).is_ok()).count();
/// assert_eq!(placed, 1_000);
/// ```
#[derive(Debug, Clone)]
pub struct Placer {
    strategy: Strategy,
    /// Per position (leaf order): node index, capacity, free, task count
    /// and attribute mask.
    node_at: Vec<u32>,
    cap: Vec<Vector>,
    free: Vec<Vector>,
    tasks: Vec<u32>,
    mask: Vec<u64>,
    /// Per node index: its position and its attributes (interned, sorted).
    pos_of: Vec<u32>,
    attr_start: Vec<u32>,
    attr_pairs: Vec<(u32, u32)>,
    keys: HashMap<String, u32>,
    values: HashMap<String, u32>,
    pairs: HashMap<(u32, u32), u32>,
    total: Vector,
    largest: Vector,
    placed: Vector,
    used: usize,
    /// Number of tree leaves (a power of two); `tree[1]` is the root and
    /// leaf `b` is `tree[leaves + b]`.
    leaves: usize,
    tree: Vec<Summary>,
    heap: BinaryHeap<Entry>,
    /// Search effort (tree entries and nodes looked at) since the leaves
    /// were last put in order.
    work: usize,
    /// `(cos, sin)` of each pruning direction.
    dirs: [(f64, f64); DIRS],
    /// `work` that triggers a reorder.
    reorder_after: usize,
    /// The indexes of balanced fill, which keeps no tree.
    fill: Option<Box<fill::Fill>>,
}

impl Placer {
    /// A placer over `nodes`, all empty.
    pub fn new(nodes: &[Node], strategy: Strategy) -> Placer {
        let n = nodes.len();
        let mut p = Placer {
            strategy,
            node_at: Vec::with_capacity(n),
            cap: Vec::with_capacity(n),
            free: Vec::with_capacity(n),
            tasks: Vec::with_capacity(n),
            mask: Vec::with_capacity(n),
            pos_of: vec![0; n],
            attr_start: Vec::with_capacity(n + 1),
            attr_pairs: Vec::new(),
            keys: HashMap::new(),
            values: HashMap::new(),
            pairs: HashMap::new(),
            total: [0; DIMS],
            largest: [0; DIMS],
            placed: [0; DIMS],
            used: 0,
            leaves: 0,
            tree: Vec::new(),
            heap: BinaryHeap::new(),
            work: 0,
            dirs: [(0.0, 0.0); DIRS],
            reorder_after: REORDER_WORK * n.max(64),
            fill: None,
        };
        for (j, d) in p.dirs.iter_mut().enumerate() {
            let theta = (j + 1) as f64 * std::f64::consts::FRAC_PI_2 / (DIRS + 1) as f64;
            *d = (theta.cos(), theta.sin());
        }
        for (i, node) in nodes.iter().enumerate() {
            let c = super::vector(&node.resources());
            p.node_at.push(i as u32);
            p.cap.push(c);
            p.free.push(c);
            p.tasks.push(0);
            for k in 0..DIMS {
                p.total[k] = p.total[k].saturating_add(c[k]);
                p.largest[k] = p.largest[k].max(c[k]);
            }
            p.attr_start.push(p.attr_pairs.len() as u32);
            let mut m = 0u64;
            let start = p.attr_pairs.len();
            for (key, value) in &node.attributes {
                let next = p.keys.len() as u32;
                let k = *p.keys.entry(key.clone()).or_insert(next);
                let next = p.values.len() as u32;
                let v = *p.values.entry(value.clone()).or_insert(next);
                let next = p.pairs.len() as u32;
                let id = *p.pairs.entry((k, v)).or_insert(next);
                if id < 64 {
                    m |= 1 << id;
                }
                p.attr_pairs.push((k, v));
            }
            p.attr_pairs[start..].sort_unstable();
            p.mask.push(m);
        }
        p.attr_start.push(p.attr_pairs.len() as u32);
        if strategy == Strategy::BalancedFill {
            p.fill = Some(Box::new(fill::Fill::new(&p.cap)));
            p.pos_of = (0..n as u32).collect();
            return p;
        }
        p.leaves = n.div_ceil(BUCKET).next_power_of_two().max(1);
        p.tree = vec![Summary::NONE; 2 * p.leaves];
        p.reorder();
        p
    }

    /// Puts the leaves in order and rebuilds the tree. First fit keeps
    /// index order (it defines first fit). The others group nodes by
    /// capacity, largest first, and within a capacity by the Z-order of
    /// their free cpu and memory fractions, so that each subtree covers a
    /// small box of the free space and its bounds are tight. Placements
    /// move nodes out of that order over time; [`Placer::try_place`] calls
    /// this again once searches have done about `REORDER_WORK × n` work
    /// since the last time, so the rebuild (O(n log n)) costs at most a
    /// fraction of the searching it saves. Any order gives the same
    /// choices (for Tetris, up to ties within rounding); only the speed
    /// differs.
    fn reorder(&mut self) {
        self.work = 0;
        if self.fill.is_some() {
            // Balanced fill keeps nodes in index order and has no tree.
            return;
        }
        let n = self.len();
        if self.strategy != Strategy::FirstFit {
            let mut keyed: Vec<(Vector, u32, u32, usize)> = (0..n)
                .map(|pos| {
                    let (c, f) = (&self.cap[pos], &self.free[pos]);
                    // Largest first: complement the capacity for an
                    // ascending sort.
                    let shape = [!c[0], !c[1], !c[2], !c[3]];
                    (shape, zorder(f, c), self.node_at[pos], pos)
                })
                .collect();
            keyed.sort_unstable();
            let perm: Vec<usize> = keyed.into_iter().map(|(_, _, _, pos)| pos).collect();
            self.node_at = perm.iter().map(|&p| self.node_at[p]).collect();
            self.cap = perm.iter().map(|&p| self.cap[p]).collect();
            self.free = perm.iter().map(|&p| self.free[p]).collect();
            self.tasks = perm.iter().map(|&p| self.tasks[p]).collect();
            self.mask = perm.iter().map(|&p| self.mask[p]).collect();
        }
        for (pos, &i) in self.node_at.iter().enumerate() {
            self.pos_of[i as usize] = pos as u32;
        }
        for b in 0..self.leaves {
            self.tree[self.leaves + b] = self.leaf_summary(b);
        }
        for i in (1..self.leaves).rev() {
            self.tree[i] = Summary::merge(&self.tree[2 * i], &self.tree[2 * i + 1]);
        }
    }

    /// The strategy.
    pub fn strategy(&self) -> Strategy {
        self.strategy
    }

    /// Number of nodes.
    pub fn len(&self) -> usize {
        self.node_at.len()
    }

    /// Whether there are no nodes.
    pub fn is_empty(&self) -> bool {
        self.node_at.is_empty()
    }

    /// Places `task` on a node chosen by the strategy and takes its demand
    /// from that node.
    ///
    /// # Errors
    /// [`Unplaced`] if no node fits, saying why (this scans every node).
    pub fn place(&mut self, task: &Task) -> Result<NodeIndex, Unplaced> {
        self.try_place(task).ok_or_else(|| self.explain(task))
    }

    /// [`Placer::place`] without the explanation: `None` if no node fits.
    pub fn try_place(&mut self, task: &Task) -> Option<NodeIndex> {
        if self.strategy == Strategy::BalancedFill {
            let pos = self.fill_place(task)?;
            self.take(pos, &super::vector(&task.resources()));
            return Some(pos);
        }
        if self.work > self.reorder_after {
            self.reorder();
        }
        let q = self.query(task)?;
        let pos = match self.strategy {
            Strategy::FirstFit => self.first_fit(&q),
            Strategy::BestFit | Strategy::WorstFit => self.best_first(&q, Phase::Scored),
            Strategy::Tetris => self
                .best_first(&q, Phase::Guarded)
                .or_else(|| self.best_first(&q, Phase::Open))
                .or_else(|| self.best_first(&q, Phase::Scored)),
            Strategy::BalancedFill => self.fill_place(task),
        }?;
        self.take(pos, &q.d);
        Some(self.node_at[pos] as usize)
    }

    /// Why `task` fits on no node right now (or on how many it does).
    pub fn explain(&self, task: &Task) -> Unplaced {
        let d = super::vector(&task.resources());
        let compiled: Vec<Compiled> = task.constraints.iter().map(|c| self.compile(c)).collect();
        let mut out = Unplaced {
            nodes: self.len(),
            per_constraint: task.constraints.iter().map(|c| (c.clone(), 0)).collect(),
            ..Unplaced::default()
        };
        for pos in 0..self.len() {
            if let Some(i) = compiled.iter().position(|c| !self.node_matches(pos, c)) {
                out.per_constraint[i].1 += 1;
                continue;
            }
            let mut fits = true;
            for (k, kind) in ScalarKind::ALL.into_iter().enumerate() {
                if self.free[pos][k] < d[k] {
                    *out.per_dimension.scalar_mut(kind) += 1;
                    fits = false;
                }
            }
            if fits {
                out.fit += 1;
            }
        }
        out
    }

    /// Gives `task`'s demand back to `node` (the task ended or moved).
    ///
    /// # Errors
    /// [`ReleaseError`] if there is no such node, it runs no task, or the
    /// release would leave it with more than its capacity; nothing changes.
    pub fn release(&mut self, node: NodeIndex, task: &Task) -> Result<(), ReleaseError> {
        let pos = *self
            .pos_of
            .get(node)
            .ok_or(ReleaseError::UnknownNode(node))? as usize;
        let d = super::vector(&task.resources());
        if self.tasks[pos] == 0 || (0..DIMS).any(|k| self.free[pos][k] + d[k] > self.cap[pos][k]) {
            return Err(ReleaseError::NotPlaced(node));
        }
        for k in 0..DIMS {
            self.free[pos][k] += d[k];
            self.placed[k] = self.placed[k].saturating_sub(d[k]);
        }
        self.tasks[pos] -= 1;
        if self.tasks[pos] == 0 {
            self.used -= 1;
        }
        if self.fill.is_some() {
            self.fill_released(pos);
        } else {
            self.refresh(pos / BUCKET);
        }
        Ok(())
    }

    /// Free resources of `node` (zero for an unknown node).
    pub fn free(&self, node: NodeIndex) -> Resources {
        self.pos_of
            .get(node)
            .map(|&p| resources(&self.free[p as usize]))
            .unwrap_or_default()
    }

    /// Capacity of `node` (zero for an unknown node).
    pub fn capacity(&self, node: NodeIndex) -> Resources {
        self.pos_of
            .get(node)
            .map(|&p| resources(&self.cap[p as usize]))
            .unwrap_or_default()
    }

    /// Number of tasks on `node`.
    pub fn tasks_on(&self, node: NodeIndex) -> u32 {
        self.pos_of.get(node).map_or(0, |&p| self.tasks[p as usize])
    }

    /// Nodes running at least one task.
    pub fn nodes_used(&self) -> usize {
        self.used
    }

    /// Sum of every node's capacity.
    pub fn total_capacity(&self) -> Resources {
        resources(&self.total)
    }

    /// Sum of the demands placed (and not released).
    pub fn allocated(&self) -> Resources {
        resources(&self.placed)
    }

    /// `(capacity, free, tasks)` of every node, in node index order.
    pub fn nodes(&self) -> impl Iterator<Item = (Resources, Resources, u32)> + '_ {
        self.pos_of.iter().map(|&p| {
            let p = p as usize;
            (
                resources(&self.cap[p]),
                resources(&self.free[p]),
                self.tasks[p],
            )
        })
    }

    /// Bytes of heap memory held by the placer (capacities of its vectors
    /// and maps; map overhead estimated from their capacity).
    pub fn heap_bytes(&self) -> usize {
        use std::mem::size_of;
        let map = |cap: usize, entry: usize| cap * (entry + 1);
        self.node_at.capacity() * size_of::<u32>()
            + (self.cap.capacity() + self.free.capacity()) * size_of::<Vector>()
            + self.tasks.capacity() * size_of::<u32>()
            + self.mask.capacity() * size_of::<u64>()
            + self.attr_start.capacity() * size_of::<u32>()
            + self.attr_pairs.capacity() * size_of::<(u32, u32)>()
            + self.pos_of.capacity() * size_of::<u32>()
            + self.keys.keys().map(String::capacity).sum::<usize>()
            + self.values.keys().map(String::capacity).sum::<usize>()
            + map(self.keys.capacity(), size_of::<(String, u32)>())
            + map(self.values.capacity(), size_of::<(String, u32)>())
            + map(self.pairs.capacity(), size_of::<((u32, u32), u32)>())
            + self.tree.capacity() * size_of::<Summary>()
            + self.heap.capacity() * size_of::<Entry>()
            + self.fill.as_ref().map_or(0, |f| f.heap_bytes())
    }

    // -- internals ----------------------------------------------------------

    fn query(&self, task: &Task) -> Option<Query> {
        let constraints: Vec<Compiled> = task.constraints.iter().map(|c| self.compile(c)).collect();
        // An equality no node can satisfy: nothing to search.
        if constraints.iter().any(|c| c.equals && c.pair.is_none()) {
            return None;
        }
        let w = if self.strategy == Strategy::Tetris {
            tetris_weights(&self.placed, &self.total)
        } else {
            [0.0; DIMS]
        };
        let d = super::vector(&task.resources());
        let t = self.depths(&d);
        Some(Query {
            d,
            constraints,
            w,
            t,
            df: d.map(|v| v as f64),
        })
    }

    /// `min(cpu/cos, mem/sin)` of `v` normalized by the largest node, per
    /// direction. Monotone in `v`, so a node that fits a demand is at least
    /// as deep as the demand along every direction.
    fn depths(&self, v: &Vector) -> [f64; DIRS] {
        let norm = |k: usize| {
            if self.largest[k] == 0 {
                None
            } else {
                Some(v[k] as f64 / self.largest[k] as f64)
            }
        };
        let (x, y) = (norm(0), norm(1));
        let mut out = [f64::INFINITY; DIRS];
        for (j, &(cos, sin)) in self.dirs.iter().enumerate() {
            if let Some(x) = x {
                out[j] = out[j].min(x / cos);
            }
            if let Some(y) = y {
                out[j] = out[j].min(y / sin);
            }
        }
        out
    }

    fn compile(&self, c: &crate::workload::Constraint) -> Compiled {
        let key = self.keys.get(&c.attribute).copied();
        let value = self.values.get(&c.value).copied();
        let pair = match (key, value) {
            (Some(k), Some(v)) => self.pairs.get(&(k, v)).copied(),
            _ => None,
        };
        Compiled {
            equals: c.op == ConstraintOp::Equals,
            key,
            value,
            pair,
        }
    }

    fn node_matches(&self, pos: usize, c: &Compiled) -> bool {
        let same = match (c.key, c.value) {
            (Some(k), Some(v)) => {
                let i = self.node_at[pos] as usize;
                let attrs =
                    &self.attr_pairs[self.attr_start[i] as usize..self.attr_start[i + 1] as usize];
                attrs.iter().any(|&(ak, av)| ak == k && av == v)
            }
            _ => false,
        };
        same == c.equals
    }

    /// Whether the subtree may hold a node for `q` in `phase`.
    fn may_fit(&self, s: &Summary, q: &Query, phase: Phase) -> bool {
        let range = match phase {
            Phase::Scored | Phase::Guarded => {
                if s.scored == 0 || (0..DIRS).any(|j| s.dir[j] < q.t[j]) {
                    return false;
                }
                &s.fmax
            }
            Phase::Open => {
                if s.empty == 0 {
                    return false;
                }
                &s.emax
            }
        };
        if (0..DIMS).any(|k| range[k] < q.d[k]) {
            return false;
        }
        if phase == Phase::Guarded && !self.may_not_strand(s, q) {
            return false;
        }
        q.constraints.iter().all(|c| match c.pair {
            Some(id) if id < 64 => {
                let bit = 1u64 << id;
                if c.equals {
                    s.any_mask & bit != 0
                } else {
                    s.all_mask & bit == 0
                }
            }
            _ => true,
        })
    }

    /// Whether the node at `pos` takes `q` in `phase`.
    fn fits(&self, pos: usize, q: &Query, phase: Phase) -> bool {
        let used = self.tasks[pos] > 0;
        let eligible = match phase {
            Phase::Guarded => used,
            Phase::Scored => self.strategy != Strategy::Tetris || used,
            Phase::Open => !used,
        };
        eligible
            && (0..DIMS).all(|k| self.free[pos][k] >= q.d[k])
            && q.constraints.iter().all(|c| self.node_matches(pos, c))
    }

    /// Whether a fitting node at `pos` is one `phase` may choose: in the
    /// guarded phase, one the task would not strand.
    fn accepts(&self, pos: usize, q: &Query, phase: Phase) -> bool {
        phase != Phase::Guarded || !tetris_strands(&self.cap[pos], &self.free[pos], &q.d, &q.w)
    }

    /// Whether the subtree may hold a used node that `q` would not strand
    /// (see `tetris_strands`). A node is spared if afterwards (i) every
    /// pressed dimension is at most 10% free, or (ii) the least free is at
    /// least σ times the most free, or (iii) it is less lopsided than
    /// before, which needs `σ · max δ >= min δ` over the pressed
    /// dimensions, `δ = demand / capacity`. Each is checked against the
    /// subtree's free and capacity ranges, so `false` is certain.
    fn may_not_strand(&self, s: &Summary, q: &Query) -> bool {
        let (mut max_alo, mut min_ahi) = (0.0_f64, f64::INFINITY);
        let (mut max_dhi, mut min_dlo) = (0.0_f64, f64::INFINITY);
        let mut any = false;
        for k in 0..DIMS {
            if q.w[k] < PRESSED || s.cmax[k] == 0 {
                continue;
            }
            if s.zero_cap & (1 << k) != 0 {
                // Nodes without this dimension press on fewer: no claim.
                return true;
            }
            any = true;
            let (cmax, cmin) = (s.cmax[k] as f64, s.cmin_pos[k] as f64);
            max_alo = max_alo.max(s.fmin[k].saturating_sub(q.d[k]) as f64 / cmax);
            min_ahi = min_ahi.min(s.fmax[k].saturating_sub(q.d[k]) as f64 / cmin);
            max_dhi = max_dhi.max(q.df[k] / cmin);
            min_dlo = min_dlo.min(q.df[k] / cmax);
        }
        !any
            || max_alo <= 0.1
            || min_ahi >= TETRIS_SIGMA * max_alo
            // Real-arithmetic bound: leave room for rounding.
            || TETRIS_SIGMA * max_dhi * (1.0 + 1e-9) + 1e-12 >= min_dlo
    }

    /// Cost of putting `q` on the node at `pos` (lower is better).
    fn cost(&self, pos: usize, q: &Query, phase: Phase) -> f64 {
        let (cap, free) = (&self.cap[pos], &self.free[pos]);
        match (self.strategy, phase) {
            (Strategy::Tetris, Phase::Open) => -tetris_open_score(cap, &q.d, &q.w, &self.largest),
            (Strategy::Tetris, _) => tetris_cost(cap, free, &q.d, &q.w),
            (Strategy::WorstFit, _) => -scalar_slack(&after(free, &q.d), cap),
            _ => scalar_slack(&after(free, &q.d), cap),
        }
    }

    /// A lower bound on the cost of any fitting node below `s`: exact in
    /// floating point for first, best and worst fit (and equal to the
    /// cost when every node below is alike), within rounding for Tetris.
    fn bound(&self, s: &Summary, q: &Query, phase: Phase) -> f64 {
        let d = &q.d;
        match (self.strategy, phase) {
            (Strategy::Tetris, Phase::Open) => {
                let (mut dot, mut dd, mut lo, mut hi) = (0.0, 0.0, 0.0, 0.0);
                for k in 0..DIMS {
                    if self.largest[k] == 0 {
                        continue;
                    }
                    let m = self.largest[k] as f64;
                    let a = q.w[k] * (d[k] as f64 / m);
                    let bh = q.w[k] * (s.emax[k] as f64 / m);
                    let bl = q.w[k] * (s.emin[k] as f64 / m);
                    dot += a * bh;
                    dd += a * a;
                    hi += bh * bh;
                    lo += bl * bl;
                }
                let (norm_hi, norm_lo) = (hi.sqrt(), lo.sqrt());
                let score = if dd == 0.0 || lo == 0.0 {
                    norm_hi
                } else {
                    let cos = dot / (dd.sqrt() * norm_lo);
                    norm_hi * cos.powi(super::TETRIS_GAMMA)
                };
                -score
            }
            (Strategy::Tetris, _) => {
                // As `tetris_cost`, with the free range and the capacity
                // range of the subtree; multiplications by reciprocals
                // round differently, which the margin covers.
                let (mut slack, mut num, mut den) = (0.0, 0.0, 0.0);
                for k in 0..DIMS {
                    let w = q.w[k];
                    if w == 0.0 {
                        continue;
                    }
                    if s.zero_cap & (1 << k) == 0 {
                        slack += w * (s.fmin[k].saturating_sub(d[k]) as f64 * s.inv_cmax[k]);
                    }
                    let ic = s.inv_cmin[k];
                    num += w * w * ((q.df[k] * ic) * (s.fmax[k] as f64 * ic));
                    let wd = w * (q.df[k] * s.inv_cmax[k]);
                    den += wd * wd;
                }
                let align = if den > 0.0 { num / den.sqrt() } else { 0.0 };
                slack - super::TETRIS_BETA * align
            }
            (Strategy::WorstFit, _) => {
                // Upper bounds on the slack, negated.
                let mut mono = 0.0;
                let mut sub = 0.0;
                for k in 0..DIMS {
                    if s.cmin_pos[k] != u64::MAX {
                        mono += s.fmax[k].saturating_sub(d[k]) as f64 / s.cmin_pos[k] as f64;
                    }
                    if d[k] > 0 && s.cmax[k] > 0 {
                        sub += d[k] as f64 / s.cmax[k] as f64;
                    }
                }
                let ub = mono.min(s.a_max - sub + MARGIN);
                -ub
            }
            _ => {
                let mut mono = 0.0;
                let mut sub = 0.0;
                for k in 0..DIMS {
                    if s.zero_cap & (1 << k) == 0 && s.cmax[k] > 0 {
                        mono += s.fmin[k].saturating_sub(d[k]) as f64 / s.cmax[k] as f64;
                    }
                    if d[k] > 0 && s.cmin_pos[k] != u64::MAX {
                        sub += d[k] as f64 / s.cmin_pos[k] as f64;
                    }
                }
                mono.max(s.a_min - sub - MARGIN)
            }
        }
    }

    /// Positions of bucket `b`.
    fn bucket(&self, b: usize) -> std::ops::Range<usize> {
        let start = (b * BUCKET).min(self.len());
        start..(start + BUCKET).min(self.len())
    }

    /// The leftmost fitting node, in index order.
    fn first_fit(&self, q: &Query) -> Option<usize> {
        let mut stack = vec![1usize];
        while let Some(i) = stack.pop() {
            if !self.may_fit(&self.tree[i], q, Phase::Scored) {
                continue;
            }
            if i >= self.leaves {
                let b = i - self.leaves;
                if let Some(pos) = self.bucket(b).find(|&p| self.fits(p, q, Phase::Scored)) {
                    return Some(pos);
                }
            } else {
                stack.push(2 * i + 1);
                stack.push(2 * i);
            }
        }
        None
    }

    /// The cheapest node `phase` accepts (ties to the lowest index),
    /// best-first: subtrees wait in a heap under a lower bound of their
    /// nodes' costs, nodes under their exact cost, so nodes come out of the
    /// heap cheapest first and the first accepted one is the answer.
    fn best_first(&mut self, q: &Query, phase: Phase) -> Option<usize> {
        let mut heap = std::mem::take(&mut self.heap);
        heap.clear();
        let root = &self.tree[1];
        if self.may_fit(root, q, phase) {
            let key = self.bound(root, q, phase);
            heap.push(Entry {
                key,
                min_idx: root.min_idx,
                tree: 1,
            });
        }
        let mut found = None;
        // A subtree just expanded hands its better child straight to the
        // next round (a dive) unless the heap holds something better.
        let mut dive: Option<Entry> = None;
        loop {
            let e = match dive.take() {
                Some(e) if heap.peek().is_none_or(|top| e >= *top) => e,
                Some(e) => {
                    heap.push(e);
                    heap.pop().unwrap_or(e)
                }
                None => match heap.pop() {
                    Some(e) => e,
                    None => break,
                },
            };
            self.work += 1;
            let i = e.tree as usize;
            if i & NODE != 0 {
                // A node, and nothing left is cheaper.
                found = Some(i & !NODE);
                break;
            } else if i >= self.leaves {
                self.work += BUCKET;
                for pos in self.bucket(i - self.leaves) {
                    if self.fits(pos, q, phase) && self.accepts(pos, q, phase) {
                        heap.push(Entry {
                            key: self.cost(pos, q, phase),
                            min_idx: self.node_at[pos],
                            tree: (pos | NODE) as u32,
                        });
                    }
                }
            } else {
                let mut children = [2 * i, 2 * i + 1].map(|child| {
                    let s = &self.tree[child];
                    self.may_fit(s, q, phase).then(|| Entry {
                        key: self.bound(s, q, phase),
                        min_idx: s.min_idx,
                        tree: child as u32,
                    })
                });
                // Entry's order is reversed: the greater one is better.
                if let [Some(a), Some(b)] = &children
                    && b > a
                {
                    children.swap(0, 1);
                }
                let [first, second] = children;
                dive = first;
                if let Some(other) = second {
                    if dive.is_none() {
                        dive = Some(other);
                    } else {
                        heap.push(other);
                    }
                }
            }
        }
        self.heap = heap;
        found
    }

    fn take(&mut self, pos: usize, d: &Vector) {
        for k in 0..DIMS {
            self.free[pos][k] -= d[k];
            self.placed[k] = self.placed[k].saturating_add(d[k]);
        }
        if self.tasks[pos] == 0 {
            self.used += 1;
        }
        self.tasks[pos] += 1;
        if self.fill.is_none() {
            self.refresh(pos / BUCKET);
        }
    }

    fn refresh(&mut self, b: usize) {
        let mut i = self.leaves + b;
        self.tree[i] = self.leaf_summary(b);
        i /= 2;
        while i >= 1 {
            self.tree[i] = Summary::merge(&self.tree[2 * i], &self.tree[2 * i + 1]);
            i /= 2;
        }
    }

    fn leaf_summary(&self, b: usize) -> Summary {
        let mut s = Summary::NONE;
        for pos in self.bucket(b) {
            let (cap, free) = (&self.cap[pos], &self.free[pos]);
            s.real += 1;
            s.min_idx = s.min_idx.min(self.node_at[pos]);
            s.any_mask |= self.mask[pos];
            s.all_mask &= self.mask[pos];
            for k in 0..DIMS {
                s.cmax[k] = s.cmax[k].max(cap[k]);
                if cap[k] == 0 {
                    s.zero_cap |= 1 << k;
                } else {
                    s.cmin_pos[k] = s.cmin_pos[k].min(cap[k]);
                }
            }
            for k in 0..DIMS {
                if s.cmax[k] > 0 {
                    s.inv_cmax[k] = 1.0 / s.cmax[k] as f64;
                }
                if s.cmin_pos[k] != u64::MAX {
                    s.inv_cmin[k] = 1.0 / s.cmin_pos[k] as f64;
                }
            }
            let used = self.tasks[pos] > 0;
            if !used {
                s.empty += 1;
                for k in 0..DIMS {
                    s.emin[k] = s.emin[k].min(cap[k]);
                    s.emax[k] = s.emax[k].max(cap[k]);
                }
            }
            if self.strategy != Strategy::Tetris || used {
                s.scored += 1;
                for k in 0..DIMS {
                    s.fmin[k] = s.fmin[k].min(free[k]);
                    s.fmax[k] = s.fmax[k].max(free[k]);
                }
                let a = scalar_slack(free, cap);
                s.a_min = s.a_min.min(a);
                s.a_max = s.a_max.max(a);
                let depth = self.depths(free);
                for j in 0..DIRS {
                    s.dir[j] = s.dir[j].max(depth[j]);
                }
            }
        }
        s
    }
}

/// `free - d` per dimension (the caller checked `free >= d`).
fn after(free: &Vector, d: &Vector) -> Vector {
    let mut a = [0u64; DIMS];
    for k in 0..DIMS {
        a[k] = free[k].saturating_sub(d[k]);
    }
    a
}

/// Interleaved bits of the free cpu and memory fractions: nodes close in
/// Z-order have similar free vectors.
fn zorder(free: &Vector, cap: &Vector) -> u32 {
    let frac = |k: usize| {
        if cap[k] == 0 {
            0
        } else {
            // free <= cap, so this is at most 0xFFFF.
            (u128::from(free[k]) * 0xFFFF / u128::from(cap[k])) as u32
        }
    };
    let (x, y) = (frac(0), frac(1));
    let mut z = 0u32;
    for bit in 0..16 {
        z |= ((x >> bit) & 1) << (2 * bit + 1);
        z |= ((y >> bit) & 1) << (2 * bit);
    }
    z
}

fn resources(v: &Vector) -> Resources {
    let mut r = Resources::empty();
    for (k, kind) in ScalarKind::ALL.into_iter().enumerate() {
        *r.scalar_mut(kind) = Scalar::from_milli_saturating(v[k]);
    }
    r
}

mod fill;
#[cfg(test)]
mod tests;
