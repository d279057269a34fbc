//! A defragmentation plan: which running tasks to move where so that whole
//! nodes become empty — to drain a node, or to hand back nodes (and room
//! for tasks that need a whole node) on a fragmented cluster — with few
//! moves.
//!
//! [`defragment`] is a greedy:
//!
//! 1. The nodes to empty are tried in order: for a drain, the nodes
//!    named; otherwise the used nodes with the fewest tasks first (each
//!    freed node costs one move per task on it), then the least loaded.
//! 2. A node's tasks move largest first, each to the first node, in order
//!    of decreasing load (as it was before the plan), that holds it and
//!    whose attributes satisfy the task's constraints: the fullest nodes
//!    are filled first, as best fit would, and the nearly empty ones are
//!    left to be emptied next. Only used nodes receive tasks, except in a
//!    drain, where an empty node is used when no used one holds a task.
//! 3. If one of the node's tasks fits nowhere, none of its moves are kept
//!    and the node is skipped. A node that received tasks is not emptied
//!    later, so no task moves twice.
//!
//! The search for a receiving node descends a tree of per-dimension
//! maxima of free capacity over the nodes in load order (the first fit in
//! that order), so a plan over 10,000 nodes takes milliseconds. Moves are
//! listed in the order they are to be made; made in that order, each finds
//! its room free, so no node is ever over its capacity.

// Vector arithmetic over the four scalar dimensions indexes several arrays
// with the same `k`; an index loop says that most plainly.
#![allow(clippy::needless_range_loop)]

use super::{DIMS, NodeIndex, Vector, vector};
use crate::workload::{Node, Task};

/// What [`defragment`] is to achieve.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DefragGoal {
    /// Empty this many nodes (fewer if no more can be emptied), with as
    /// few moves as the greedy finds.
    Free(usize),
    /// Empty as many nodes as possible.
    MostNodes,
    /// Empty these nodes (a drain): their tasks go to any other node,
    /// empty ones too if no used node holds them.
    Drain(Vec<NodeIndex>),
}

/// One task to move.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Move {
    /// The task: its index in the `running` slice given to [`defragment`].
    pub task: usize,
    /// The node it runs on.
    pub from: NodeIndex,
    /// The node it is to run on.
    pub to: NodeIndex,
}

/// What [`defragment`] proposes.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DefragPlan {
    /// The moves, in the order to make them.
    pub moves: Vec<Move>,
    /// The nodes the moves empty, in the order they are emptied.
    pub freed: Vec<NodeIndex>,
    /// For a drain: the named nodes that cannot be emptied (some task on
    /// them fits nowhere else); none of their tasks move. Empty for the
    /// other goals.
    pub stuck: Vec<NodeIndex>,
}

impl DefragPlan {
    /// The number of moves.
    pub fn move_count(&self) -> usize {
        self.moves.len()
    }
}

/// The placement given to [`defragment`] is not a valid one.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum DefragError {
    /// A task runs on, or a drain names, a node that does not exist.
    #[error("no node {node} (there are {nodes})")]
    UnknownNode {
        /// The index given.
        node: NodeIndex,
        /// The number of nodes.
        nodes: usize,
    },
    /// The tasks on a node ask for more than its capacity.
    #[error("node {node} runs more than its capacity")]
    Overcommitted {
        /// The node.
        node: NodeIndex,
    },
}

/// A plan of moves that empties nodes as `goal` asks, for `nodes` running
/// `running` (each task with the index of its node). See the module
/// documentation for the greedy.
///
/// # Errors
/// [`DefragError::UnknownNode`] if a task or the goal names a node out of
/// range; [`DefragError::Overcommitted`] if the tasks on a node exceed its
/// capacity.
pub fn defragment(
    nodes: &[Node],
    running: &[(&Task, NodeIndex)],
    goal: &DefragGoal,
) -> Result<DefragPlan, DefragError> {
    let n = nodes.len();
    let unknown = |node| DefragError::UnknownNode { node, nodes: n };
    let caps: Vec<Vector> = nodes.iter().map(|n| vector(&n.resources())).collect();
    let demands: Vec<Vector> = running
        .iter()
        .map(|(t, _)| vector(&t.resources()))
        .collect();
    let mut free = caps.clone();
    let mut on: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (i, &(_, node)) in running.iter().enumerate() {
        let f = free.get_mut(node).ok_or(unknown(node))?;
        for k in 0..DIMS {
            f[k] = f[k]
                .checked_sub(demands[i][k])
                .ok_or(DefragError::Overcommitted { node })?;
        }
        on[node].push(i);
    }
    let load = |b: usize| -> f64 {
        (0..DIMS)
            .filter(|&k| caps[b][k] > 0)
            .map(|k| (caps[b][k] - free[b][k]) as f64 / caps[b][k] as f64)
            .sum()
    };

    // Receivers in order of decreasing load, used nodes before empty ones.
    let mut by_load: Vec<(bool, f64, usize)> =
        (0..n).map(|b| (on[b].is_empty(), load(b), b)).collect();
    by_load.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)));
    let receivers: Vec<usize> = by_load.iter().map(|e| e.2).collect();
    let mut tree = FitTree::new(&receivers, &free);

    let (candidates, drain) = match goal {
        DefragGoal::Drain(list) => {
            let mut seen = vec![false; n];
            let mut out = Vec::new();
            for &b in list {
                if !*seen.get(b).ok_or(unknown(b))? {
                    seen[b] = true;
                    out.push(b);
                }
            }
            (out, true)
        }
        DefragGoal::Free(_) | DefragGoal::MostNodes => {
            let mut used: Vec<(usize, f64, usize)> = (0..n)
                .filter(|&b| !on[b].is_empty())
                .map(|b| (on[b].len(), load(b), b))
                .collect();
            used.sort_by(|a, b| a.0.cmp(&b.0).then(a.1.total_cmp(&b.1)).then(a.2.cmp(&b.2)));
            (used.into_iter().map(|e| e.2).collect(), false)
        }
    };
    let wanted = match goal {
        DefragGoal::Free(k) => *k,
        DefragGoal::MostNodes | DefragGoal::Drain(_) => usize::MAX,
    };
    // Nodes that must receive nothing: the drained ones, the freed ones,
    // and (except in a drain) the empty ones.
    if drain {
        for &b in &candidates {
            tree.block(b);
        }
    } else {
        for b in 0..n {
            if on[b].is_empty() {
                tree.block(b);
            }
        }
    }

    let mut plan = DefragPlan::default();
    let mut received = vec![false; n];
    for &c in &candidates {
        if plan.freed.len() >= wanted {
            break;
        }
        if on[c].is_empty() {
            if drain {
                plan.freed.push(c);
            }
            continue;
        }
        if received[c] {
            continue;
        }
        tree.block(c);
        let mut tasks = on[c].clone();
        let size = |i: usize| -> f64 {
            (0..DIMS)
                .filter(|&k| caps[c][k] > 0)
                .map(|k| demands[i][k] as f64 / caps[c][k] as f64)
                .sum()
        };
        tasks.sort_by(|&a, &b| size(b).total_cmp(&size(a)).then(a.cmp(&b)));
        let mut moves: Vec<Move> = Vec::with_capacity(tasks.len());
        for &t in &tasks {
            let task = running[t].0;
            let fits = |b: usize| {
                task.constraints
                    .iter()
                    .all(|k| k.matches(&nodes[b].attributes))
            };
            let Some(to) = tree.first_fit(&demands[t], &free, fits) else {
                break;
            };
            for k in 0..DIMS {
                free[to][k] -= demands[t][k];
            }
            tree.update(to, &free);
            moves.push(Move {
                task: t,
                from: c,
                to,
            });
        }
        if moves.len() < tasks.len() {
            // Undo: give the receivers their room back.
            for m in &moves {
                for k in 0..DIMS {
                    free[m.to][k] += demands[m.task][k];
                }
                tree.update(m.to, &free);
            }
            if drain {
                plan.stuck.push(c);
            } else {
                tree.unblock(c, &free);
            }
            continue;
        }
        for m in &moves {
            received[m.to] = true;
            on[m.to].push(m.task);
        }
        on[c].clear();
        free[c] = caps[c];
        plan.freed.push(c);
        plan.moves.extend(moves);
    }
    Ok(plan)
}

/// First fit over nodes in a fixed order: a complete binary tree whose
/// leaves are the nodes in that order, each inner node holding the
/// per-dimension maximum of the free space below it (blocked nodes count
/// as full).
pub(super) struct FitTree {
    /// Leaves (a power of two); leaf `p` is `max[leaves + p]`.
    leaves: usize,
    max: Vec<Vector>,
    /// Node index at each leaf position.
    node_at: Vec<usize>,
    /// Leaf position of each node.
    pos_of: Vec<usize>,
    blocked: Vec<bool>,
}

impl FitTree {
    pub(super) fn new(order: &[usize], free: &[Vector]) -> FitTree {
        let leaves = order.len().next_power_of_two().max(1);
        let mut max = vec![[0u64; DIMS]; 2 * leaves];
        let mut pos_of = vec![0; free.len()];
        for (p, &b) in order.iter().enumerate() {
            max[leaves + p] = free[b];
            pos_of[b] = p;
        }
        for i in (1..leaves).rev() {
            max[i] = pairwise_max(&max[2 * i], &max[2 * i + 1]);
        }
        FitTree {
            leaves,
            max,
            node_at: order.to_vec(),
            pos_of,
            blocked: vec![false; free.len()],
        }
    }

    /// Sets node `b`'s leaf to its free space (or full if blocked) and
    /// fixes the maxima above it.
    pub(super) fn update(&mut self, b: usize, free: &[Vector]) {
        let mut i = self.leaves + self.pos_of[b];
        self.max[i] = if self.blocked[b] { [0; DIMS] } else { free[b] };
        while i > 1 {
            i /= 2;
            self.max[i] = pairwise_max(&self.max[2 * i], &self.max[2 * i + 1]);
        }
    }

    /// Node `b` receives nothing from now on.
    fn block(&mut self, b: usize) {
        self.blocked[b] = true;
        let mut i = self.leaves + self.pos_of[b];
        self.max[i] = [0; DIMS];
        while i > 1 {
            i /= 2;
            self.max[i] = pairwise_max(&self.max[2 * i], &self.max[2 * i + 1]);
        }
    }

    /// Node `b` may receive again.
    fn unblock(&mut self, b: usize, free: &[Vector]) {
        self.blocked[b] = false;
        self.update(b, free);
    }

    /// The first unblocked node in order whose free space holds `d` and
    /// that `allowed` accepts.
    pub(super) fn first_fit(
        &self,
        d: &Vector,
        free: &[Vector],
        allowed: impl Fn(usize) -> bool,
    ) -> Option<usize> {
        // Depth-first, left to right, into subtrees whose maxima hold `d`.
        let mut stack = vec![1usize];
        while let Some(i) = stack.pop() {
            if !(0..DIMS).all(|k| self.max[i][k] >= d[k]) {
                continue;
            }
            if i >= self.leaves {
                let Some(&b) = self.node_at.get(i - self.leaves) else {
                    continue;
                };
                if !self.blocked[b] && (0..DIMS).all(|k| free[b][k] >= d[k]) && allowed(b) {
                    return Some(b);
                }
                continue;
            }
            stack.push(2 * i + 1);
            stack.push(2 * i);
        }
        None
    }
}

fn pairwise_max(a: &Vector, b: &Vector) -> Vector {
    let mut out = [0; DIMS];
    for k in 0..DIMS {
        out[k] = a[k].max(b[k]);
    }
    out
}

#[cfg(test)]
mod tests;
