//! [`Strategy::BalancedFill`](super::Strategy::BalancedFill) in the
//! [`Placer`]: the rules of `placement/balanced.rs` with indexes in place
//! of `pack`'s scans, so that a placement looks at a bounded number of
//! nodes whatever the cluster size.
//!
//! - The active set is a short vector scanned whole (at most
//!   [`ACTIVE`] nodes), and so are the pool's class heads.
//! - The pool is one doubly linked list per class, most recently filed
//!   first: a class's candidate is its list's head, found in O(1); moving
//!   a node between lists (a placement or a release changed its free
//!   vector) is O(1).
//! - Empty nodes are kept per distinct capacity in ordered sets of
//!   indexes; opening a node scores the first fitting node of each set.
//!   Opening is rare (one task in tens) and so are node shapes.
//! - Constraints filter candidates as they are looked at.
//!
//! The tree of summaries that the other strategies search is not kept for
//! this strategy: placing a task changes only the node's own entry.

use super::{Compiled, NodeIndex, Placer};
use crate::placement::balanced::{
    ACTIVE, CLASSES, cheapest, fill_class, fill_cost, fill_room, fill_strands, fill_weights, victim,
};
use crate::placement::{DIMS, Vector, tetris_open_score, vector};
use crate::workload::Task;
use std::collections::{BTreeSet, HashMap};

/// No node (end of a pool list).
const NIL: u32 = u32::MAX;

/// Where a node is in [`Fill`]'s bookkeeping.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Runs nothing and is not active: may be opened.
    Empty,
    /// In the active set.
    Active,
    /// Runs tasks, not active: in the pool list of its class.
    Pooled,
}

/// The indexes of [`Strategy::BalancedFill`](super::Strategy::BalancedFill).
#[derive(Clone, Debug)]
pub(super) struct Fill {
    state: Vec<State>,
    /// Active nodes (positions) in activation order.
    active: Vec<u32>,
    /// The empty nodes of each distinct capacity, and each node's
    /// capacity class.
    empty: Vec<BTreeSet<u32>>,
    shape: Vec<u32>,
    /// Pool lists: head per class, links and class per node.
    head: [u32; CLASSES],
    next: Vec<u32>,
    prev: Vec<u32>,
    class: Vec<u8>,
}

impl Fill {
    /// Every node empty, given the capacities by position.
    pub(super) fn new(cap: &[Vector]) -> Fill {
        let n = cap.len();
        let mut ids: HashMap<Vector, u32> = HashMap::new();
        let mut empty: Vec<BTreeSet<u32>> = Vec::new();
        let mut shape = Vec::with_capacity(n);
        for (i, c) in cap.iter().enumerate() {
            let next = ids.len() as u32;
            let id = *ids.entry(*c).or_insert(next);
            if id as usize == empty.len() {
                empty.push(BTreeSet::new());
            }
            empty[id as usize].insert(i as u32);
            shape.push(id);
        }
        Fill {
            state: vec![State::Empty; n],
            active: Vec::with_capacity(ACTIVE),
            empty,
            shape,
            head: [NIL; CLASSES],
            next: vec![NIL; n],
            prev: vec![NIL; n],
            class: vec![0; n],
        }
    }

    fn pool_insert(&mut self, i: usize, class: usize) {
        self.state[i] = State::Pooled;
        self.class[i] = class as u8;
        let h = self.head[class];
        self.next[i] = h;
        self.prev[i] = NIL;
        if h != NIL {
            self.prev[h as usize] = i as u32;
        }
        self.head[class] = i as u32;
    }

    fn pool_remove(&mut self, i: usize) {
        let (p, n) = (self.prev[i], self.next[i]);
        if p == NIL {
            self.head[self.class[i] as usize] = n;
        } else {
            self.next[p as usize] = n;
        }
        if n != NIL {
            self.prev[n as usize] = p;
        }
    }

    fn set_empty(&mut self, i: usize) {
        self.state[i] = State::Empty;
        self.empty[self.shape[i] as usize].insert(i as u32);
    }

    /// Bytes of heap memory held.
    pub(super) fn heap_bytes(&self) -> usize {
        self.state.capacity() * size_of::<State>()
            + self
                .empty
                .iter()
                .map(|e| e.len() * 3 * size_of::<u32>())
                .sum::<usize>()
            + (self.active.capacity()
                + self.shape.capacity()
                + self.next.capacity()
                + self.prev.capacity())
                * size_of::<u32>()
            + self.class.capacity()
    }
}

impl Placer {
    /// The node position [`Strategy::BalancedFill`](super::Strategy::BalancedFill)
    /// puts `task` on, now activated; `None` if none fits.
    pub(super) fn fill_place(&mut self, task: &Task) -> Option<usize> {
        let constraints: Vec<Compiled> = task.constraints.iter().map(|c| self.compile(c)).collect();
        if constraints.iter().any(|c| c.equals && c.pair.is_none()) {
            return None;
        }
        let d = vector(&task.resources());
        let mut fill = self.fill.take()?;
        let pos = self.fill_choose(&fill, &d, &constraints);
        if let Some(pos) = pos {
            self.fill_activate(&mut fill, pos, &d);
        }
        self.fill = Some(fill);
        pos
    }

    fn fill_choose(&self, fill: &Fill, d: &Vector, constraints: &[Compiled]) -> Option<usize> {
        let w = fill_weights(&self.placed, d, &self.total);
        let fits = |i: usize| {
            (0..DIMS).all(|k| self.free[i][k] >= d[k])
                && constraints.iter().all(|c| self.node_matches(i, c))
        };
        let balanced = |i: usize| !fill_strands(&self.cap[i], &self.free[i], d, &w);
        let cost = |i: usize| fill_cost(&self.cap[i], &self.free[i], d, &w);
        let mut candidates = [0u32; ACTIVE + CLASSES];
        let mut m = fill.active.len();
        candidates[..m].copy_from_slice(&fill.active);
        for &h in &fill.head {
            if h != NIL {
                candidates[m] = h;
                m += 1;
            }
        }
        let candidates = &candidates[..m];
        let n = self.len();
        cheapest(candidates, |i| fits(i) && balanced(i), cost)
            .or_else(|| self.fill_open(fill, d, &w, &fits))
            .or_else(|| cheapest(candidates, fits, cost))
            .or_else(|| (0..n).find(|&i| self.tasks[i] > 0 && fits(i)))
    }

    /// The empty node to open: per distinct capacity the lowest index
    /// that fits, and of those the best [`tetris_open_score`] (ties to the
    /// lowest index).
    fn fill_open(
        &self,
        fill: &Fill,
        d: &Vector,
        w: &[f64; DIMS],
        fits: &dyn Fn(usize) -> bool,
    ) -> Option<usize> {
        let mut best: Option<(f64, usize)> = None;
        for set in &fill.empty {
            let Some(i) = set.iter().map(|&i| i as usize).find(|&i| fits(i)) else {
                continue;
            };
            let score = tetris_open_score(&self.cap[i], d, w, &self.largest);
            if best.is_none_or(|(b, j)| score > b || (score == b && i < j)) {
                best = Some((score, i));
            }
        }
        best.map(|(_, i)| i)
    }

    /// Makes `pos` active (it is about to take a task), evicting the
    /// active node with the least room if the set is full.
    fn fill_activate(&self, fill: &mut Fill, pos: usize, d: &Vector) {
        match fill.state[pos] {
            State::Active => return,
            State::Pooled => {
                // Stays in the pool, filed anew with what it will have
                // left.
                fill.pool_remove(pos);
                let mut left = self.free[pos];
                for k in 0..DIMS {
                    left[k] -= d[k];
                }
                fill.pool_insert(pos, fill_class(&self.cap[pos], &left));
                return;
            }
            State::Empty => {
                fill.empty[fill.shape[pos] as usize].remove(&(pos as u32));
            }
        }
        if fill.active.len() == ACTIVE {
            let j = victim(&fill.active, |a| fill_room(&self.cap[a], &self.free[a]));
            let out = fill.active.remove(j) as usize;
            if self.tasks[out] > 0 {
                fill.pool_insert(out, fill_class(&self.cap[out], &self.free[out]));
            } else {
                fill.set_empty(out);
            }
        }
        fill.active.push(pos as u32);
        fill.state[pos] = State::Active;
    }

    /// Files `pos` again after a release changed its free vector: a pooled
    /// node moves to the head of its (new) class, or back among the empty
    /// nodes if it runs nothing now.
    pub(super) fn fill_released(&mut self, pos: NodeIndex) {
        let Some(fill) = self.fill.as_mut() else {
            return;
        };
        if fill.state[pos] != State::Pooled {
            return;
        }
        fill.pool_remove(pos);
        if self.tasks[pos] == 0 {
            fill.set_empty(pos);
        } else {
            fill.pool_insert(pos, fill_class(&self.cap[pos], &self.free[pos]));
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use crate::placement::{Placer, Strategy, pack};
    use crate::resources::{Resources, Scalar};
    use crate::workload::{
        Constraint, ConstraintOp, Node, Task, heterogeneous, mesos_multi_framework,
    };

    fn node(i: usize, cpus: u64, mem: u64, zone: &str) -> Node {
        Node {
            id: crate::AgentId::new(format!("n{i}")).unwrap(),
            cpus: Scalar::from_units(cpus),
            mem: Scalar::from_units(mem),
            disk: Scalar::ZERO,
            attributes: BTreeMap::from([("zone".to_owned(), zone.to_owned())]),
        }
    }

    fn task(i: usize, cpus: u64, mem: u64, zone: Option<&str>) -> Task {
        Task {
            id: crate::TaskId::new(format!("t{i}")).unwrap(),
            cpus: Scalar::from_units(cpus),
            mem: Scalar::from_units(mem),
            disk: Scalar::ZERO,
            arrival: None,
            duration: None,
            constraints: zone
                .map(|z| Constraint {
                    attribute: "zone".into(),
                    op: ConstraintOp::Equals,
                    value: z.into(),
                })
                .into_iter()
                .collect(),
        }
    }

    /// The placer makes exactly `pack`'s choices on generated workloads
    /// (constraints dropped: `pack` has none).
    #[test]
    fn same_choices_as_pack() {
        let mut het = heterogeneous(300, 6_000, 11);
        let mut mesos = mesos_multi_framework(2);
        mesos.tasks.truncate(20_000);
        for w in [&mut het, &mut mesos] {
            for t in &mut w.tasks {
                t.constraints.clear();
            }
            let bins: Vec<Resources> = w.nodes.iter().map(Node::resources).collect();
            let items: Vec<Resources> = w.tasks.iter().map(Task::resources).collect();
            let want = pack(&bins, &items, Strategy::BalancedFill);
            let mut placer = Placer::new(&w.nodes, Strategy::BalancedFill);
            let got: Vec<Option<usize>> = w.tasks.iter().map(|t| placer.try_place(t)).collect();
            assert_eq!(got, want.assignments);
            for (i, left) in want.remaining.iter().enumerate() {
                assert_eq!(&placer.free(i), left);
            }
        }
    }

    #[test]
    fn respects_constraints() {
        let nodes = vec![node(0, 16, 64, "a"), node(1, 8, 32, "b")];
        let mut p = Placer::new(&nodes, Strategy::BalancedFill);
        // The largest node opens first; a task pinned to b opens node 1
        // although node 0 has room.
        assert_eq!(p.place(&task(0, 1, 1, None)), Ok(0));
        assert_eq!(p.place(&task(1, 1, 1, Some("b"))), Ok(1));
        assert_eq!(p.place(&task(2, 1, 1, Some("a"))), Ok(0));
        let why = p.place(&task(3, 1, 1, Some("c"))).unwrap_err();
        assert_eq!(why.filtered(), 2);
        let why = p.place(&task(4, 8, 1, Some("b"))).unwrap_err();
        assert_eq!(why.per_dimension.cpus, 1);
    }

    #[test]
    fn release_makes_space_reusable() {
        // Twenty nodes, more than the active set: fill them all.
        let nodes: Vec<Node> = (0..20).map(|i| node(i, 4, 16, "a")).collect();
        let mut p = Placer::new(&nodes, Strategy::BalancedFill);
        let big = task(0, 4, 16, None);
        let placed: Vec<usize> = (0..20).map(|_| p.place(&big).unwrap()).collect();
        assert!(p.place(&big).is_err());
        assert_eq!(p.nodes_used(), 20);
        // Node placed first was evicted into the pool long ago; half of it
        // freed is found again by a task that fits there.
        let first = placed[0];
        let half = task(1, 2, 8, None);
        p.release(first, &big).unwrap();
        p.place(&half).unwrap();
        assert_eq!(p.place(&half), Ok(first));
        assert_eq!(p.tasks_on(first), 2);
        // Emptied nodes open again, active or pooled.
        for &i in &placed[1..] {
            p.release(i, &big).unwrap();
        }
        assert_eq!(p.nodes_used(), 1);
        let again: Vec<usize> = (0..19).map(|_| p.place(&big).unwrap()).collect();
        assert!(again.iter().all(|&i| i != first));
        assert_eq!(p.nodes_used(), 20);
        assert!(p.place(&big).is_err());
    }

    proptest::proptest! {
        #![proptest_config(proptest::prelude::ProptestConfig::with_cases(64))]

        /// Random placements and releases: nothing is over-committed, and
        /// a task is refused only if it fits on no node, so space freed by
        /// releases is always found again.
        #[test]
        fn releases_keep_every_fit_reachable(
            ops in proptest::collection::vec((0u64..6, 0u64..20, 0usize..3, 0usize..64), 1..300),
        ) {
            let nodes: Vec<Node> = (0..24)
                .map(|i| node(i, [4, 8, 16][i % 3], [16, 32, 64][(i / 3) % 3], ["a", "b"][i % 2]))
                .collect();
            let mut p = Placer::new(&nodes, Strategy::BalancedFill);
            let mut running: Vec<(usize, Task)> = Vec::new();
            for (j, (cpus, mem, z, pick)) in ops.into_iter().enumerate() {
                if pick < 16 && !running.is_empty() {
                    let (i, t) = running.swap_remove(pick % running.len());
                    p.release(i, &t).unwrap();
                    continue;
                }
                let t = task(j, cpus, mem, [None, Some("a"), Some("b")][z]);
                match p.try_place(&t) {
                    Some(i) => {
                        proptest::prop_assert!(t.constraints.iter().all(|c| c.matches(&nodes[i].attributes)));
                        running.push((i, t));
                    }
                    None => proptest::prop_assert_eq!(p.explain(&t).fit, 0),
                }
            }
            for (i, n) in nodes.iter().enumerate() {
                let mut sum = Resources::empty();
                for (_, t) in running.iter().filter(|(k, _)| *k == i) {
                    sum += t.resources();
                }
                proptest::prop_assert_eq!(Some(p.free(i)), n.resources().checked_sub(&sum));
            }
            proptest::prop_assert_eq!(
                p.nodes_used(),
                (0..nodes.len()).filter(|&i| running.iter().any(|(k, _)| *k == i)).count()
            );
        }
    }
}
