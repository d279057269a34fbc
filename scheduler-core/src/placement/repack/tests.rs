use std::collections::BTreeMap;

use super::*;
use crate::placement::{Strategy, lower_bound, pack};
use crate::workload::{
    ConstraintOp, HeterogeneousConfig, heterogeneous_with, mesos_multi_framework,
};

fn r(s: &str) -> Resources {
    s.parse().unwrap()
}

/// Asserts that `p` is a valid packing of `items` into `bins`: each bin
/// holds its items (scalars and ports) and `remaining` is what is left.
fn assert_valid(bins: &[Resources], items: &[Resources], p: &Packing) {
    assert_eq!(p.assignments.len(), items.len());
    let mut left = bins.to_vec();
    for (item, slot) in items.iter().zip(&p.assignments) {
        if let Some(b) = slot {
            left[*b] = left[*b]
                .checked_sub(item)
                .unwrap_or_else(|| panic!("bin {b} cannot hold {item}"));
        }
    }
    assert_eq!(left, p.remaining);
}

/// Asserts that `out` places each task on a node that holds it and whose
/// attributes satisfy its constraints, and that its node summaries agree.
fn assert_valid_workload(nodes: &[Node], tasks: &[&Task], out: &RepackResult) {
    let mut free: Vec<Resources> = nodes.iter().map(Node::resources).collect();
    let mut count = vec![0u32; nodes.len()];
    for (t, slot) in tasks.iter().zip(&out.assignments) {
        if let Some(b) = *slot {
            assert!(
                t.constraints
                    .iter()
                    .all(|c| c.matches(&nodes[b].attributes)),
                "{} on {} breaks a constraint",
                t.id,
                nodes[b].id
            );
            free[b] = free[b]
                .checked_sub(&t.resources())
                .expect("within capacity");
            count[b] += 1;
        }
    }
    for (b, (cap, f, n)) in out.nodes().enumerate() {
        assert_eq!(cap, nodes[b].resources());
        assert_eq!(f, free[b]);
        assert_eq!(n, count[b]);
    }
    assert_eq!(out.nodes_used, count.iter().filter(|&&c| c > 0).count());
}

/// Nodes used over the lower bound for the placed demand.
fn ratio(nodes: &[Node], out: &RepackResult) -> f64 {
    let caps: Vec<Resources> = nodes.iter().map(Node::resources).collect();
    let bound = lower_bound(&caps, &out.allocated()).expect("placed demand fits");
    out.nodes_used as f64 / bound as f64
}

#[test]
fn balances_shapes_where_arrival_order_does_not() {
    // Three bins of 4 cpus and 4 GiB; three cpu-heavy and three
    // memory-heavy items. Each bin holds one of each exactly.
    let bins = vec![r("cpus:4;mem:4"); 3];
    let mut items = vec![r("cpus:2;mem:1"); 3];
    items.extend(vec![r("cpus:2;mem:3"); 3]);
    let p = repack(&bins, &items);
    assert_valid(&bins, &items, &p);
    assert!(p.assignments.iter().all(Option::is_some));
    assert!(p.remaining.iter().all(Resources::is_empty));
    // First fit in the order given strands memory on bin 0 and runs out.
    let ff = pack(&bins, &items, Strategy::FirstFit);
    assert!(ff.assignments.contains(&None));
}

#[test]
fn ports_must_fit_and_are_taken() {
    let bins = [r("cpus:4;ports:[8000-8001]"), r("cpus:4;ports:[9000-9000]")];
    let items = [
        r("cpus:1;ports:[9000-9000]"),
        r("cpus:1;ports:[9000-9000]"),
        r("cpus:1;ports:[8001-8001]"),
        r("cpus:1"),
    ];
    let p = repack(&bins, &items);
    assert_valid(&bins, &items, &p);
    assert_eq!(p.assignments[0], Some(1));
    assert_eq!(p.assignments[1], None);
    assert_eq!(p.assignments[2], Some(0));
    assert!(p.assignments[3].is_some());
}

#[test]
fn items_that_fit_nowhere_get_none() {
    let bins = [r("cpus:2;mem:100"), r("cpus:1;mem:400")];
    let items = [
        r("cpus:3"),
        r("cpus:1;mem:500"),
        r("gpus:1"),
        r("cpus:2;mem:100"),
        Resources::empty(),
    ];
    let p = repack(&bins, &items);
    assert_valid(&bins, &items, &p);
    assert_eq!(p.assignments[..3], [None, None, None]);
    assert_eq!(p.assignments[3], Some(0));
    assert!(p.assignments[4].is_some());
    // No bins, or no items.
    assert_eq!(repack(&[], &items).assignments, vec![None; items.len()]);
    let p = repack(&bins, &[]);
    assert!(p.assignments.is_empty());
    assert_eq!(p.remaining, bins);
}

#[test]
fn large_items_keep_a_large_bin() {
    // Many small items could fill the two large bins first; the two
    // large items only fit there.
    let mut bins = vec![r("cpus:64;mem:256"); 2];
    bins.extend(vec![r("cpus:4;mem:16"); 40]);
    let mut items = vec![r("cpus:1;mem:4"); 150];
    items.push(r("cpus:40;mem:100"));
    items.push(r("cpus:40;mem:100"));
    let p = repack(&bins, &items);
    assert_valid(&bins, &items, &p);
    assert!(p.assignments.iter().all(Option::is_some), "{p:?}");
}

#[test]
fn deterministic_and_order_of_bins_only_breaks_ties() {
    let w = heterogeneous_with(&HeterogeneousConfig::new(60, 1500, 7));
    let bins: Vec<Resources> = w.nodes.iter().map(Node::resources).collect();
    let items: Vec<Resources> = w.tasks.iter().map(Task::resources).collect();
    let a = repack(&bins, &items);
    assert_valid(&bins, &items, &a);
    assert_eq!(a, repack(&bins, &items));
    // Reversed items: the same number of bins used.
    let rev: Vec<Resources> = items.iter().rev().cloned().collect();
    let b = repack(&bins, &rev);
    assert_valid(&bins, &rev, &b);
    let used = |p: &Packing| {
        let mut u: Vec<usize> = p.assignments.iter().flatten().copied().collect();
        u.sort_unstable();
        u.dedup();
        u.len()
    };
    assert_eq!(used(&a), used(&b));
}

#[test]
fn near_the_lower_bound_on_heterogeneous_workloads() {
    let mut configs = Vec::new();
    for seed in 1..=3 {
        configs.push(HeterogeneousConfig::new(400, 10_000, seed));
    }
    // More constraints, no tiny tasks.
    let mut c = HeterogeneousConfig::new(400, 10_000, 4);
    c.zone_equals = 0.2;
    c.zone_not_equals = 0.2;
    c.tiny = 0.0;
    configs.push(c);
    for c in configs {
        let w = heterogeneous_with(&c);
        let tasks: Vec<&Task> = w.tasks.iter().collect();
        let out = repack_workload(&w.nodes, &tasks);
        assert_valid_workload(&w.nodes, &tasks, &out);
        assert_eq!(out.placed(), tasks.len());
        // Within 1% of the bound, plus a few nodes for the tail of a small
        // cluster (the 10,000-node figures are in the repack example).
        let bound = (out.nodes_used as f64 / ratio(&w.nodes, &out)).round() as usize;
        assert!(
            out.nodes_used <= bound + bound / 100 + 4,
            "seed {}: {} nodes, bound {bound}",
            c.seed,
            out.nodes_used
        );
    }
}

#[test]
fn near_the_lower_bound_on_mesos_multi_framework() {
    let w = mesos_multi_framework(1);
    let tasks: Vec<&Task> = w.tasks.iter().collect();
    let out = repack_workload(&w.nodes, &tasks);
    assert_valid_workload(&w.nodes, &tasks, &out);
    assert_eq!(out.placed(), tasks.len());
    // 296.25 cpus... per 80: the bound is 37 nodes (cpu).
    assert!(out.nodes_used <= 38, "{} nodes", out.nodes_used);
}

#[test]
fn constraints_are_respected() {
    let node = |id: &str, zone: &str| Node {
        id: crate::AgentId::new(id).unwrap(),
        cpus: Scalar::from_units(8),
        mem: Scalar::from_units(8192),
        disk: Scalar::ZERO,
        attributes: BTreeMap::from([("zone".to_owned(), zone.to_owned())]),
    };
    let nodes = [node("a", "z1"), node("b", "z2"), node("c", "z2")];
    let task = |id: &str, cpus: u64, op: Option<(ConstraintOp, &str)>| Task {
        id: crate::TaskId::new(id).unwrap(),
        cpus: Scalar::from_units(cpus),
        mem: Scalar::from_units(1024),
        disk: Scalar::ZERO,
        arrival: None,
        duration: None,
        constraints: op
            .map(|(op, v)| Constraint {
                attribute: "zone".to_owned(),
                op,
                value: v.to_owned(),
            })
            .into_iter()
            .collect(),
    };
    let tasks = [
        task("pinned", 6, Some((ConstraintOp::Equals, "z1"))),
        task("away", 4, Some((ConstraintOp::NotEquals, "z1"))),
        task("free", 2, None),
        task("nowhere", 1, Some((ConstraintOp::Equals, "z9"))),
        task("too-big", 7, Some((ConstraintOp::Equals, "z1"))),
    ];
    let refs: Vec<&Task> = tasks.iter().collect();
    let out = repack_workload(&nodes, &refs);
    assert_valid_workload(&nodes, &refs, &out);
    assert_eq!(out.assignments[0], Some(0));
    assert!(matches!(out.assignments[1], Some(1 | 2)));
    assert!(out.assignments[2].is_some());
    assert_eq!(out.assignments[3], None);
    assert_eq!(out.assignments[4], None);
    assert_eq!(out.placed(), 3);
}

#[test]
fn nearest_set_bit() {
    let m = (1u64 << 3) | (1 << 10) | (1 << 63);
    assert_eq!(nearest(m, 3, false), 3);
    assert_eq!(nearest(m, 5, false), 3);
    assert_eq!(nearest(m, 8, false), 10);
    // Bits 4 and 8 are both 2 away from 6.
    assert_eq!(nearest(1 << 4 | 1 << 8, 6, false), 4);
    assert_eq!(nearest(1 << 4 | 1 << 8, 6, true), 8);
    assert_eq!(nearest(m, 63, false), 63);
    assert_eq!(nearest(m, 40, false), 63);
    assert_eq!(nearest(1, 63, true), 0);
}
