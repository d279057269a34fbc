//! Packing quality: a lower bound on the nodes needed, stranded capacity
//! and utilization.

use crate::resources::{Resources, Scalar, ScalarKind};

/// A lower bound on the number of nodes any packing needs for `demand`
/// (the sum of the task demands), or `None` if the nodes' total capacity
/// is short of it in some dimension.
///
/// For each dimension: the fewest nodes whose capacities in that
/// dimension, taken largest first, add up to the demand. The bound is the
/// largest of these counts. Any set of nodes that holds the tasks holds
/// their demand in every dimension, so it has at least that many nodes.
/// With identical nodes this is `max_d ⌈demand_d / capacity_d⌉`. Ports are
/// ignored; so are the tasks' sizes (a task too large to share a node is
/// not counted specially), so the bound can be loose for a few huge tasks
/// but not for many small ones.
pub fn lower_bound(capacities: &[Resources], demand: &Resources) -> Option<usize> {
    let mut bound = 0;
    let mut column: Vec<u64> = Vec::with_capacity(capacities.len());
    for kind in ScalarKind::ALL {
        let need = demand.scalar(kind).milli();
        if need == 0 {
            continue;
        }
        column.clear();
        column.extend(capacities.iter().map(|c| c.scalar(kind).milli()));
        column.sort_unstable_by(|a, b| b.cmp(a));
        let mut sum: u64 = 0;
        let mut count = None;
        for (i, c) in column.iter().enumerate() {
            sum = sum.saturating_add(*c);
            if sum >= need {
                count = Some(i + 1);
                break;
            }
        }
        bound = bound.max(count?);
    }
    Some(bound)
}

/// Free capacity stranded on used nodes: the sum, per dimension, of the
/// free resources of every node that runs at least one task but could not
/// host `reference` (say the smallest or the median task). Nodes are given
/// as `(capacity, free, tasks)`, as [`Placer::nodes`](super::Placer::nodes)
/// yields them. Ports are ignored.
pub fn stranded(
    nodes: impl IntoIterator<Item = (Resources, Resources, u32)>,
    reference: &Resources,
) -> Resources {
    let mut out = Resources::empty();
    for (_, free, tasks) in nodes {
        if tasks > 0 && !free.contains_scalars(reference) {
            for kind in ScalarKind::ALL {
                let v = out.scalar(kind).saturating_add(free.scalar(kind));
                *out.scalar_mut(kind) = v;
            }
        }
    }
    out
}

/// The per-dimension minimum of `demands`: no task is smaller in any
/// dimension (empty for no demands).
pub fn smallest(demands: &[Resources]) -> Resources {
    let mut out = Resources::empty();
    for kind in ScalarKind::ALL {
        let m = demands.iter().map(|d| d.scalar(kind)).min();
        *out.scalar_mut(kind) = m.unwrap_or(Scalar::ZERO);
    }
    out
}

/// The per-dimension median (lower median) of `demands`.
pub fn median(demands: &[Resources]) -> Resources {
    let mut out = Resources::empty();
    let mut column: Vec<Scalar> = Vec::with_capacity(demands.len());
    for kind in ScalarKind::ALL {
        column.clear();
        column.extend(demands.iter().map(|d| d.scalar(kind)));
        if column.is_empty() {
            continue;
        }
        let mid = (column.len() - 1) / 2;
        let (_, m, _) = column.select_nth_unstable(mid);
        *out.scalar_mut(kind) = *m;
    }
    out
}

/// Used share of each dimension, `allocated / capacity` (0 where there is
/// no capacity).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Utilization {
    /// CPU.
    pub cpus: f64,
    /// Memory.
    pub mem: f64,
    /// Disk.
    pub disk: f64,
    /// GPUs.
    pub gpus: f64,
}

impl Utilization {
    /// `allocated / capacity` per dimension.
    pub fn of(allocated: &Resources, capacity: &Resources) -> Utilization {
        let share = |kind| {
            let c = capacity.scalar(kind).milli();
            if c == 0 {
                0.0
            } else {
                allocated.scalar(kind).milli() as f64 / c as f64
            }
        };
        Utilization {
            cpus: share(ScalarKind::Cpus),
            mem: share(ScalarKind::Mem),
            disk: share(ScalarKind::Disk),
            gpus: share(ScalarKind::Gpus),
        }
    }

    /// The most used dimension's share.
    pub fn max(&self) -> f64 {
        self.cpus.max(self.mem).max(self.disk).max(self.gpus)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn r(s: &str) -> Resources {
        s.parse().unwrap()
    }

    #[test]
    fn lower_bound_identical_nodes() {
        // max(⌈10/4⌉, ⌈300/100⌉) = max(3, 3) = 3.
        let nodes = vec![r("cpus:4;mem:100"); 5];
        assert_eq!(lower_bound(&nodes, &r("cpus:10;mem:300")), Some(3));
        // cpu decides: ⌈17/4⌉ = 5.
        assert_eq!(lower_bound(&nodes, &r("cpus:17;mem:10")), Some(5));
        // Exactly full.
        assert_eq!(lower_bound(&nodes, &r("cpus:8")), Some(2));
        // Over capacity.
        assert_eq!(lower_bound(&nodes, &r("cpus:20.001")), None);
        // Nothing to place.
        assert_eq!(lower_bound(&nodes, &Resources::empty()), Some(0));
        assert_eq!(lower_bound(&[], &Resources::empty()), Some(0));
        assert_eq!(lower_bound(&[], &r("cpus:1")), None);
    }

    #[test]
    fn lower_bound_mixed_nodes() {
        // cpu, largest first: 64 + 32 = 96 >= 80 -> 2 nodes; mem, largest
        // first: 512 + 256 = 768 < 800, + 128 = 896 >= 800 -> 3 nodes
        // (different nodes are the largest in each dimension).
        let nodes = [
            r("cpus:64;mem:256"),
            r("cpus:8;mem:512"),
            r("cpus:32;mem:128"),
            r("cpus:16;mem:64"),
        ];
        assert_eq!(lower_bound(&nodes, &r("cpus:80;mem:800")), Some(3));
        assert_eq!(lower_bound(&nodes, &r("cpus:80;mem:768")), Some(2));
        assert_eq!(lower_bound(&nodes, &r("cpus:80;mem:100")), Some(2));
        assert_eq!(lower_bound(&nodes, &r("cpus:64")), Some(1));
        assert_eq!(lower_bound(&nodes, &r("cpus:120;mem:960")), Some(4));
        assert_eq!(lower_bound(&nodes, &r("disk:1")), None);
    }

    #[test]
    fn stranded_counts_used_nodes_that_cannot_host() {
        let nodes = vec![
            // Used, free cpu but no memory: stranded.
            (r("cpus:4;mem:100"), r("cpus:3;mem:5"), 2),
            // Used, room for the reference: not stranded.
            (r("cpus:4;mem:100"), r("cpus:1;mem:50"), 1),
            // Empty: never stranded.
            (r("cpus:4;mem:100"), r("cpus:4;mem:100"), 0),
        ];
        assert_eq!(
            stranded(nodes.clone(), &r("cpus:0.5;mem:10")),
            r("cpus:3;mem:5")
        );
        assert_eq!(stranded(nodes, &r("cpus:2;mem:10")), r("cpus:4;mem:55"));
    }

    #[test]
    fn smallest_and_median() {
        let d = [r("cpus:1;mem:30"), r("cpus:3;mem:10"), r("cpus:2;mem:20")];
        assert_eq!(smallest(&d), r("cpus:1;mem:10"));
        assert_eq!(median(&d), r("cpus:2;mem:20"));
        assert_eq!(median(&d[..2]), r("cpus:1;mem:10"));
        assert_eq!(smallest(&[]), Resources::empty());
        assert_eq!(median(&[]), Resources::empty());
    }

    #[test]
    fn utilization() {
        let u = Utilization::of(&r("cpus:1;mem:75"), &r("cpus:4;mem:100"));
        assert_eq!(u.cpus, 0.25);
        assert_eq!(u.mem, 0.75);
        assert_eq!(u.disk, 0.0);
        assert_eq!(u.max(), 0.75);
    }
}
