use std::collections::BTreeMap;

use super::*;
use crate::placement::{Placer, Strategy};
use crate::resources::{Resources, Scalar};
use crate::workload::{Constraint, ConstraintOp, HeterogeneousConfig, heterogeneous_with};

fn node(id: &str, cpus: u64, mem: u64, zone: &str) -> Node {
    Node {
        id: crate::AgentId::new(id).unwrap(),
        cpus: Scalar::from_units(cpus),
        mem: Scalar::from_units(mem),
        disk: Scalar::ZERO,
        attributes: BTreeMap::from([("zone".to_owned(), zone.to_owned())]),
    }
}

fn task(id: &str, cpus: u64, mem: u64) -> Task {
    Task {
        id: crate::TaskId::new(id).unwrap(),
        cpus: Scalar::from_units(cpus),
        mem: Scalar::from_units(mem),
        disk: Scalar::ZERO,
        arrival: None,
        duration: None,
        constraints: Vec::new(),
    }
}

/// Makes the moves of `plan` in order, checking that each finds room and
/// satisfies the task's constraints; then checks that the freed nodes are
/// empty. Returns where each task ends up.
fn apply(nodes: &[Node], running: &[(&Task, NodeIndex)], plan: &DefragPlan) -> Vec<NodeIndex> {
    let mut free: Vec<Resources> = nodes.iter().map(Node::resources).collect();
    let mut at: Vec<NodeIndex> = running.iter().map(|e| e.1).collect();
    for (t, b) in running {
        free[*b] = free[*b].checked_sub(&t.resources()).expect("valid input");
    }
    for (i, m) in plan.moves.iter().enumerate() {
        let (t, _) = running[m.task];
        assert_eq!(
            at[m.task], m.from,
            "move {i}: {} is not on {}",
            t.id, m.from
        );
        assert_ne!(m.from, m.to);
        assert!(
            t.constraints
                .iter()
                .all(|c| c.matches(&nodes[m.to].attributes)),
            "move {i} breaks a constraint"
        );
        free[m.to] = free[m.to]
            .checked_sub(&t.resources())
            .unwrap_or_else(|| panic!("move {i}: node {} overcommitted", m.to));
        free[m.from] += t.resources();
        at[m.task] = m.to;
    }
    for &b in &plan.freed {
        assert!(!at.contains(&b), "freed node {b} still runs a task");
        assert_eq!(free[b], nodes[b].resources());
    }
    at
}

#[test]
fn frees_the_node_with_fewest_tasks() {
    let nodes = [
        node("a", 8, 8192, "z"),
        node("b", 8, 8192, "z"),
        node("c", 8, 8192, "z"),
    ];
    let tasks = [
        task("a1", 3, 1024),
        task("a2", 3, 1024),
        task("b1", 1, 512),
        task("c1", 2, 1024),
        task("c2", 2, 1024),
    ];
    let running = [
        (&tasks[0], 0),
        (&tasks[1], 0),
        (&tasks[2], 1),
        (&tasks[3], 2),
        (&tasks[4], 2),
    ];
    let plan = defragment(&nodes, &running, &DefragGoal::Free(1)).unwrap();
    apply(&nodes, &running, &plan);
    assert_eq!(plan.freed, [1]);
    // b1 goes to the fullest node, a.
    assert_eq!(
        plan.moves,
        [Move {
            task: 2,
            from: 1,
            to: 0
        }]
    );
    assert_eq!(plan.move_count(), 1);
    // As many as possible: b, then c into a (4 + 1 + 2 + 2 > 8 cpus: no).
    let plan = defragment(&nodes, &running, &DefragGoal::MostNodes).unwrap();
    apply(&nodes, &running, &plan);
    assert_eq!(plan.freed, [1]);
    // Nothing to free.
    let plan = defragment(&nodes, &running, &DefragGoal::Free(0)).unwrap();
    assert_eq!(plan, DefragPlan::default());
}

#[test]
fn skips_a_node_whose_tasks_do_not_all_fit() {
    let nodes = [
        node("a", 8, 8192, "z"),
        node("b", 8, 8192, "z"),
        node("c", 8, 8192, "z"),
    ];
    let tasks = [
        task("a1", 6, 1024),
        task("b1", 4, 1024),
        task("c1", 2, 1024),
        task("c2", 2, 1024),
        task("c3", 2, 1024),
    ];
    let running = [
        (&tasks[0], 0),
        (&tasks[1], 1),
        (&tasks[2], 2),
        (&tasks[3], 2),
        (&tasks[4], 2),
    ];
    // a and b have one task each, but it fits nowhere else; c's three fit
    // (one on a, two on b).
    let plan = defragment(&nodes, &running, &DefragGoal::MostNodes).unwrap();
    apply(&nodes, &running, &plan);
    assert_eq!(plan.freed, [2]);
    assert_eq!(plan.move_count(), 3);
    assert!(plan.stuck.is_empty());
}

#[test]
fn drains_into_empty_nodes_if_needed_and_reports_stuck_ones() {
    let nodes = [
        node("a", 8, 8192, "z1"),
        node("b", 8, 8192, "z2"),
        node("c", 16, 8192, "z1"),
        node("d", 4, 4096, "z1"),
    ];
    let mut pinned = task("pinned", 2, 1024);
    pinned.constraints.push(Constraint {
        attribute: "zone".to_owned(),
        op: ConstraintOp::Equals,
        value: "z1".to_owned(),
    });
    let tasks = [task("a1", 7, 1024), pinned, task("big", 12, 1024)];
    let running = [(&tasks[0], 0), (&tasks[1], 1), (&tasks[2], 2)];
    // Drain b: its pinned task must go to a z1 node; a is full, c has
    // room (used), d is empty.
    let plan = defragment(&nodes, &running, &DefragGoal::Drain(vec![1])).unwrap();
    let at = apply(&nodes, &running, &plan);
    assert_eq!(plan.freed, [1]);
    assert_eq!(at[1], 2);
    // Drain c and d: `big` fits nowhere else; d is already empty.
    let plan = defragment(&nodes, &running, &DefragGoal::Drain(vec![2, 3, 2])).unwrap();
    apply(&nodes, &running, &plan);
    assert_eq!(plan.stuck, [2]);
    assert_eq!(plan.freed, [3]);
    assert!(plan.moves.is_empty());
    // Drain a: a1 needs 7 cpus: only the empty d... is too small, so c.
    let plan = defragment(&nodes, &running, &DefragGoal::Drain(vec![0])).unwrap();
    let at = apply(&nodes, &running, &plan);
    assert_eq!(plan.stuck, [0]);
    assert_eq!(at[0], 0);
    // The other goals never move a task onto an empty node.
    let plan = defragment(&nodes, &running, &DefragGoal::MostNodes).unwrap();
    for m in &plan.moves {
        assert_ne!(m.to, 3);
    }
}

#[test]
fn rejects_invalid_placements() {
    let nodes = [node("a", 4, 1024, "z")];
    let tasks = [task("t", 3, 512), task("u", 2, 512)];
    assert_eq!(
        defragment(&nodes, &[(&tasks[0], 1)], &DefragGoal::MostNodes),
        Err(DefragError::UnknownNode { node: 1, nodes: 1 })
    );
    assert_eq!(
        defragment(
            &nodes,
            &[(&tasks[0], 0), (&tasks[1], 0)],
            &DefragGoal::MostNodes
        ),
        Err(DefragError::Overcommitted { node: 0 })
    );
    let err = defragment(&nodes, &[], &DefragGoal::Drain(vec![5])).unwrap_err();
    assert_eq!(err.to_string(), "no node 5 (there are 1)");
}

/// A fragmented cluster: the heterogeneous workload placed in arrival
/// order, then 40% of its tasks gone.
#[test]
fn frees_many_nodes_of_a_fragmented_cluster_with_few_moves() {
    let mut c = HeterogeneousConfig::new(300, 7_500, 3);
    c.mean_interarrival = None;
    let w = heterogeneous_with(&c);
    let mut placer = Placer::new(&w.nodes, Strategy::Tetris);
    let mut running: Vec<(&Task, NodeIndex)> = Vec::new();
    for (i, t) in w.tasks.iter().enumerate() {
        let Some(b) = placer.try_place(t) else {
            continue;
        };
        // Keep 60% of the tasks, spread evenly but not regularly.
        if (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32 & 0xFFFF < 0x9999 {
            running.push((t, b));
        }
    }
    let used = |at: &[NodeIndex]| {
        let mut u = at.to_vec();
        u.sort_unstable();
        u.dedup();
        u.len()
    };
    let before = used(&running.iter().map(|e| e.1).collect::<Vec<_>>());
    let plan = defragment(&w.nodes, &running, &DefragGoal::MostNodes).unwrap();
    let at = apply(&w.nodes, &running, &plan);
    assert_eq!(used(&at), before - plan.freed.len());
    // A good share of the used nodes are freed...
    assert!(
        plan.freed.len() * 5 >= before,
        "{} of {before}",
        plan.freed.len()
    );
    // ... each for fewer moves than an average node has tasks.
    let per_freed = plan.move_count() as f64 / plan.freed.len() as f64;
    let per_node = running.len() as f64 / before as f64;
    assert!(
        per_freed < per_node,
        "{per_freed:.1} moves per freed node, {per_node:.1} tasks per node"
    );
    // Asking for fewer frees the cheapest ones: no more moves per node.
    let k = plan.freed.len() / 4;
    let some = defragment(&w.nodes, &running, &DefragGoal::Free(k)).unwrap();
    apply(&w.nodes, &running, &some);
    assert_eq!(some.freed.len(), k);
    assert!(some.move_count() * plan.freed.len() <= plan.move_count() * k);
}
