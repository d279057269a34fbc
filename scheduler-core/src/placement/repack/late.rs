//! Tasks that only nodes early in the opening order can hold (step 5 of
//! the repack).

// Vector arithmetic over the four scalar dimensions indexes several arrays
// with the same `k`; an index loop says that most plainly.
#![allow(clippy::needless_range_loop)]

use super::holds;
use crate::placement::{DIMS, Vector};

/// The share of their capacity that the nodes up to a deadline are
/// counted on to hold of the items due by it (see `Deadlines::tight`).
pub(super) const LATE_SHARE: f64 = 0.9;

/// The items that only nodes early in the opening order can hold, grouped
/// by their deadline: the last position in the order whose node, or a
/// later one, could hold them (by the per-dimension maximum of the
/// capacities from there on). Items that fit the last node are not here.
#[derive(Default)]
pub(super) struct Deadlines {
    /// The deadlines, ascending.
    pub(super) at: Vec<usize>,
    /// Per deadline, its items, largest first.
    pub(super) items: Vec<Vec<usize>>,
    /// Per deadline, the first of its items that may be unplaced.
    pub(super) cursor: Vec<usize>,
    /// Per deadline, the demand of its unplaced items.
    pub(super) need: Vec<Vector>,
    /// Per item, its deadline group (`u32::MAX` for none).
    pub(super) group: Vec<u32>,
    /// Capacity of the nodes before each position of the order.
    pub(super) prefix: Vec<Vector>,
    /// The first group whose deadline is not past.
    pub(super) first: usize,
}

impl Deadlines {
    pub(super) fn new(caps: &[Vector], demands: &[Vector], order: &[usize]) -> Deadlines {
        let n = order.len();
        let mut suffix = vec![[0u64; DIMS]; n + 1];
        let mut prefix = vec![[0u64; DIMS]; n + 1];
        for p in (0..n).rev() {
            for k in 0..DIMS {
                suffix[p][k] = suffix[p + 1][k].max(caps[order[p]][k]);
            }
        }
        for p in 0..n {
            for k in 0..DIMS {
                prefix[p + 1][k] = prefix[p][k].saturating_add(caps[order[p]][k]);
            }
        }
        let mut due: Vec<(usize, usize)> = Vec::new();
        for (i, d) in demands.iter().enumerate() {
            // `holds(suffix[p], d)` is true up to the deadline, then false.
            let last = suffix[..n].partition_point(|s| holds(s, d));
            if last > 0 && last < n {
                due.push((last - 1, i));
            }
        }
        // By deadline, then largest first (the sum of the shares of the
        // largest capacities).
        let size = |d: &Vector| -> f64 {
            (0..DIMS)
                .filter(|&k| suffix[0][k] > 0)
                .map(|k| d[k] as f64 / suffix[0][k] as f64)
                .sum()
        };
        due.sort_by(|a, b| {
            a.0.cmp(&b.0)
                .then(size(&demands[b.1]).total_cmp(&size(&demands[a.1])))
                .then(a.1.cmp(&b.1))
        });
        let mut late = Deadlines {
            group: vec![u32::MAX; demands.len()],
            prefix,
            ..Deadlines::default()
        };
        for (deadline, i) in due {
            if late.at.last() != Some(&deadline) {
                late.at.push(deadline);
                late.items.push(Vec::new());
                late.cursor.push(0);
                late.need.push([0; DIMS]);
            }
            let g = late.at.len() - 1;
            late.items[g].push(i);
            late.group[i] = g as u32;
            for k in 0..DIMS {
                late.need[g][k] += demands[i][k];
            }
        }
        late
    }

    /// Forgets the groups whose deadline is before position `p`.
    pub(super) fn advance(&mut self, p: usize) {
        while self.first < self.at.len() && self.at[self.first] < p {
            self.first += 1;
        }
    }

    /// `item` (with demand `d`) was placed.
    pub(super) fn placed(&mut self, item: usize, d: &Vector, assignments: &[Option<usize>]) {
        let Some(&g) = self.group.get(item).filter(|&&g| g != u32::MAX) else {
            return;
        };
        let g = g as usize;
        for k in 0..DIMS {
            self.need[g][k] -= d[k];
        }
        let items = &self.items[g];
        let c = &mut self.cursor[g];
        while *c < items.len() && assignments[items[*c]].is_some() {
            *c += 1;
        }
    }

    /// The first group (by deadline) whose unplaced items, with those of
    /// the groups before, need more than `LATE_SHARE` of the capacity of
    /// the nodes after position `p` up to its deadline — so some must go
    /// on the node at `p`.
    pub(super) fn tight(&self, p: usize) -> Option<usize> {
        let mut need = [0u64; DIMS];
        for j in self.first..self.at.len() {
            let room_end = &self.prefix[self.at[j] + 1];
            let room_start = &self.prefix[p + 1];
            for k in 0..DIMS {
                need[k] += self.need[j][k];
                let room = room_end[k].saturating_sub(room_start[k]);
                if need[k] > 0 && need[k] as f64 > LATE_SHARE * room as f64 {
                    return Some(j);
                }
            }
        }
        None
    }
}
