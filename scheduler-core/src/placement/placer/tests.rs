use std::collections::BTreeMap;

use proptest::prelude::{ProptestConfig, prop, prop_assert, prop_assert_eq, proptest};
use proptest::strategy::Strategy as Gen;

use super::*;
use crate::placement::{
    pack, tetris_cost, tetris_open_score, tetris_strands, tetris_weights, vector,
};
use crate::workload::{Constraint, heterogeneous, mesos_multi_framework};

fn node(i: usize, cpus: u64, mem: u64, disk: u64, zone: &str) -> Node {
    Node {
        id: crate::AgentId::new(format!("n{i}")).unwrap(),
        cpus: Scalar::from_milli(cpus).unwrap(),
        mem: Scalar::from_milli(mem).unwrap(),
        disk: Scalar::from_milli(disk).unwrap(),
        attributes: if zone.is_empty() {
            BTreeMap::new()
        } else {
            BTreeMap::from([("zone".to_owned(), zone.to_owned())])
        },
    }
}

fn task(i: usize, cpus: u64, mem: u64, disk: u64, constraints: Vec<Constraint>) -> Task {
    Task {
        id: crate::TaskId::new(format!("t{i}")).unwrap(),
        cpus: Scalar::from_milli(cpus).unwrap(),
        mem: Scalar::from_milli(mem).unwrap(),
        disk: Scalar::from_milli(disk).unwrap(),
        arrival: None,
        duration: None,
        constraints,
    }
}

fn zone(op: ConstraintOp, z: &str) -> Constraint {
    Constraint {
        attribute: "zone".into(),
        op,
        value: z.into(),
    }
}

/// Brute-force reference: the node `strategy` picks for `t`, scanning
/// every node, with constraints (what `pack` does, plus attributes).
fn reference(
    nodes: &[Node],
    free: &[Vector],
    used: &[bool],
    placed: &Vector,
    t: &Task,
    strategy: Strategy,
) -> Option<(usize, f64)> {
    let caps: Vec<Vector> = nodes.iter().map(|n| vector(&n.resources())).collect();
    let mut total = [0u64; DIMS];
    let mut largest = [0u64; DIMS];
    for c in &caps {
        for k in 0..DIMS {
            total[k] += c[k];
            largest[k] = largest[k].max(c[k]);
        }
    }
    let d = vector(&t.resources());
    let w = tetris_weights(placed, &total);
    let ok = |i: usize| {
        (0..DIMS).all(|k| free[i][k] >= d[k])
            && t.constraints
                .iter()
                .all(|c| c.matches(&nodes[i].attributes))
    };
    let pick = |eligible: &dyn Fn(usize) -> bool, cost: &dyn Fn(usize) -> f64| {
        let mut best: Option<(usize, f64)> = None;
        for i in 0..nodes.len() {
            if ok(i) && eligible(i) {
                let c = cost(i);
                if best.is_none_or(|(_, bc)| c < bc) {
                    best = Some((i, c));
                }
            }
        }
        best
    };
    let after = |i: usize| {
        let mut a = free[i];
        for k in 0..DIMS {
            a[k] -= d[k];
        }
        a
    };
    match strategy {
        Strategy::FirstFit => (0..nodes.len()).find(|&i| ok(i)).map(|i| (i, 0.0)),
        Strategy::BestFit => pick(&|_| true, &|i| super::scalar_slack(&after(i), &caps[i])),
        Strategy::WorstFit => pick(&|_| true, &|i| -super::scalar_slack(&after(i), &caps[i])),
        Strategy::Tetris => pick(
            &|i| used[i] && !tetris_strands(&caps[i], &free[i], &d, &w),
            &|i| tetris_cost(&caps[i], &free[i], &d, &w),
        )
        .or_else(|| {
            pick(&|i| !used[i], &|i| {
                -tetris_open_score(&caps[i], &d, &w, &largest)
            })
        })
        .or_else(|| pick(&|i| used[i], &|i| tetris_cost(&caps[i], &free[i], &d, &w))),
        // Stateful: checked against `pack` and by its own tests instead.
        Strategy::BalancedFill => unreachable!("no stateless reference for balanced fill"),
    }
}

/// Places `tasks` one by one with a placer and with the reference and
/// checks they agree (exactly for first/best/worst fit; for Tetris, on a
/// node whose cost is within 1e-9 of the best), that nothing is
/// over-committed and that an unplaced task really fits nowhere.
fn check_against_reference(
    nodes: &[Node],
    tasks: &[Task],
    strategy: Strategy,
    reorder_after: usize,
) {
    if strategy == Strategy::BalancedFill {
        return;
    }
    let mut placer = Placer::new(nodes, strategy);
    placer.reorder_after = reorder_after;
    let caps: Vec<Vector> = nodes.iter().map(|n| vector(&n.resources())).collect();
    let mut free = caps.clone();
    let mut used = vec![false; nodes.len()];
    let mut placed = [0u64; DIMS];
    for t in tasks {
        let want = reference(nodes, &free, &used, &placed, t, strategy);
        let got = placer.place(t);
        match (&got, want) {
            (Ok(i), Some((j, best))) => {
                if strategy == Strategy::Tetris {
                    // Same phase (used vs opening) and near-equal cost.
                    assert_eq!(used[*i], used[j], "{t:?}");
                    let d = vector(&t.resources());
                    let total: Vector = caps.iter().fold([0; DIMS], |mut acc, c| {
                        for k in 0..DIMS {
                            acc[k] += c[k];
                        }
                        acc
                    });
                    let w = tetris_weights(&placed, &total);
                    let cost = if used[*i] {
                        tetris_cost(&caps[*i], &free[*i], &d, &w)
                    } else {
                        let mut largest = [0; DIMS];
                        for c in &caps {
                            for k in 0..DIMS {
                                largest[k] = largest[k].max(c[k]);
                            }
                        }
                        -tetris_open_score(&caps[*i], &d, &w, &largest)
                    };
                    assert!(
                        cost <= best + 1e-9,
                        "{t:?}: node {i} cost {cost} vs node {j} best {best}; strands {} {}; free {:?} {:?}; caps {:?} {:?}; w {:?}",
                        tetris_strands(&caps[*i], &free[*i], &d, &w),
                        tetris_strands(&caps[j], &free[j], &d, &w),
                        free[*i],
                        free[j],
                        caps[*i],
                        caps[j],
                        w
                    );
                } else {
                    assert_eq!(*i, j, "{strategy} {t:?}");
                }
            }
            (Err(why), None) => {
                assert_eq!(why.fit, 0);
                assert_eq!(why.nodes, nodes.len());
                // Really nowhere.
                let d = vector(&t.resources());
                for (i, n) in nodes.iter().enumerate() {
                    let fits = (0..DIMS).all(|k| free[i][k] >= d[k])
                        && t.constraints.iter().all(|c| c.matches(&n.attributes));
                    assert!(!fits, "{t:?} fits node {i}");
                }
                continue;
            }
            (got, want) => panic!("{strategy} {t:?}: placer {got:?}, reference {want:?}"),
        }
        let i = got.unwrap_or_else(|_| unreachable!());
        let d = vector(&t.resources());
        for k in 0..DIMS {
            free[i][k] = free[i][k].checked_sub(d[k]).expect("over-committed");
            placed[k] += d[k];
        }
        used[i] = true;
        assert_eq!(super::super::vector(&placer.free(i)), free[i]);
    }
    assert_eq!(placer.nodes_used(), used.iter().filter(|u| **u).count());
}

fn arb_nodes() -> impl Gen<Value = Vec<Node>> {
    // Few distinct values so ties and identical shapes are common; some
    // nodes without disk.
    prop::collection::vec((0u64..5, 0u64..5, 0u64..3, 0usize..4), 0..40).prop_map(|v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (c, m, d, z))| {
                let zone = ["", "a", "b", "c"][z];
                node(i, c * 2000, m * 1_024_000, d * 500_000, zone)
            })
            .collect()
    })
}

fn arb_tasks(constraints: bool) -> impl Gen<Value = Vec<Task>> {
    prop::collection::vec(
        (0u64..4000, 0u64..3_000_000, 0u64..300_000, 0usize..6),
        0..120,
    )
    .prop_map(move |v| {
        v.into_iter()
            .enumerate()
            .map(|(i, (c, m, d, k))| {
                let cons = match (constraints, k) {
                    (true, 0) => vec![zone(ConstraintOp::Equals, "a")],
                    (true, 1) => vec![zone(ConstraintOp::NotEquals, "b")],
                    (true, 2) => vec![zone(ConstraintOp::Equals, "nowhere")],
                    _ => vec![],
                };
                // Round some demands to whole units to get exact ties.
                let c = if k == 3 { c / 1000 * 1000 } else { c };
                task(i, c, m, d, cons)
            })
            .collect()
    })
}

fn strategy() -> impl Gen<Value = Strategy> {
    prop::sample::select(Strategy::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn placer_agrees_with_brute_force(
        nodes in arb_nodes(),
        tasks in arb_tasks(true),
        s in strategy(),
        reorder in prop::sample::select(vec![1usize, 7, usize::MAX]),
    ) {
        check_against_reference(&nodes, &tasks, s, reorder);
    }

    #[test]
    fn placer_matches_pack(nodes in arb_nodes(), tasks in arb_tasks(false), s in strategy()) {
        let bins: Vec<Resources> = nodes.iter().map(Node::resources).collect();
        let items: Vec<Resources> = tasks.iter().map(Task::resources).collect();
        let packing = pack(&bins, &items, s);
        let mut placer = Placer::new(&nodes, s);
        placer.reorder_after = 3;
        let got: Vec<Option<usize>> = tasks.iter().map(|t| placer.try_place(t)).collect();
        if s == Strategy::Tetris {
            // Near-ties may differ; the number placed may not.
            prop_assert_eq!(
                got.iter().filter(|a| a.is_some()).count(),
                packing.assignments.iter().filter(|a| a.is_some()).count()
            );
        } else {
            prop_assert_eq!(&got, &packing.assignments);
            for (i, left) in packing.remaining.iter().enumerate() {
                prop_assert_eq!(&placer.free(i), left);
            }
        }
    }

    #[test]
    fn never_over_commits(nodes in arb_nodes(), tasks in arb_tasks(true), s in strategy()) {
        let mut placer = Placer::new(&nodes, s);
        let mut sums = vec![Resources::empty(); nodes.len()];
        for t in &tasks {
            if let Some(i) = placer.try_place(t) {
                sums[i] += t.resources();
                prop_assert!(t.constraints.iter().all(|c| c.matches(&nodes[i].attributes)));
            }
        }
        for (i, n) in nodes.iter().enumerate() {
            prop_assert!(n.resources().contains(&sums[i]), "node {} over-committed", i);
            prop_assert_eq!(
                placer.free(i),
                n.resources().checked_sub(&sums[i]).unwrap_or_default()
            );
        }
    }
}

/// Every bound the search uses is at most the cost of every node below it
/// that it could pick, and no subtree holding such a node is pruned.
fn check_bounds(placer: &Placer, t: &Task) {
    if placer.strategy == Strategy::BalancedFill {
        // No tree.
        return;
    }
    let Some(q) = placer.query(t) else {
        return;
    };
    for phase in [Phase::Guarded, Phase::Scored, Phase::Open] {
        if placer.strategy != Strategy::Tetris && phase != Phase::Scored {
            continue;
        }
        for pos in 0..placer.len() {
            if !placer.fits(pos, &q, phase) || !placer.accepts(pos, &q, phase) {
                continue;
            }
            let cost = placer.cost(pos, &q, phase);
            let mut i = placer.leaves + pos / BUCKET;
            while i >= 1 {
                let s = &placer.tree[i];
                assert!(
                    placer.may_fit(s, &q, phase),
                    "{phase:?}: subtree {i} pruned"
                );
                let key = placer.bound(s, &q, phase);
                let slack = if placer.strategy == Strategy::Tetris {
                    1e-9
                } else {
                    0.0
                };
                assert!(
                    key <= cost + slack,
                    "{phase:?}: subtree {i} bound {key} > cost {cost}"
                );
                i /= 2;
            }
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn bounds_are_lower_bounds(
        nodes in arb_nodes(),
        tasks in arb_tasks(true),
        s in strategy(),
        split in 0usize..120,
    ) {
        let mut placer = Placer::new(&nodes, s);
        let (before, after) = tasks.split_at(split.min(tasks.len()));
        for t in before {
            let _ = placer.try_place(t);
        }
        for reorder in [false, true] {
            if reorder {
                placer.reorder();
            }
            for t in after {
                check_bounds(&placer, t);
            }
        }
    }
}

#[test]
fn agrees_on_generated_workloads() {
    let w = heterogeneous(300, 3_000, 11);
    for s in Strategy::ALL {
        check_against_reference(&w.nodes, &w.tasks, s, 50);
    }
    let m = mesos_multi_framework(1);
    let tasks = &m.tasks[..4_000];
    for s in Strategy::ALL {
        check_against_reference(&m.nodes, tasks, s, usize::MAX);
    }
}

#[test]
fn constraints_and_explanations() {
    let nodes = vec![
        node(0, 4000, 1_024_000, 0, "a"),
        node(1, 8000, 512_000, 0, "b"),
        node(2, 1000, 4_096_000, 0, ""),
    ];
    let mut p = Placer::new(&nodes, Strategy::FirstFit);
    // Only node 0 is in zone a.
    assert_eq!(
        p.place(&task(0, 1000, 0, 0, vec![zone(ConstraintOp::Equals, "a")])),
        Ok(0)
    );
    // Not b: node 0 first.
    assert_eq!(
        p.place(&task(
            1,
            1000,
            0,
            0,
            vec![zone(ConstraintOp::NotEquals, "a")]
        )),
        Ok(1)
    );
    // No zone c anywhere.
    let why = p
        .place(&task(2, 1, 0, 0, vec![zone(ConstraintOp::Equals, "c")]))
        .unwrap_err();
    assert_eq!(why.per_constraint[0].1, 3);
    assert_eq!(
        why.to_string(),
        "no node fits: 3 filtered by constraints (3 by zone == c)"
    );
    // 6 cpus: node 0 has 2 left, node 2 has 1; node 1 (7 left) is
    // filtered out.
    let why = p
        .place(&task(
            3,
            6000,
            100_000,
            0,
            vec![zone(ConstraintOp::NotEquals, "b")],
        ))
        .unwrap_err();
    assert_eq!(why.per_dimension.cpus, 2);
    assert_eq!(why.per_dimension.mem, 0);
    assert_eq!(
        why.to_string(),
        "no node fits: 2 short on cpus, 1 filtered by constraints (1 by zone != b)"
    );
    // Short on two dimensions at once counts in both.
    let why = p.place(&task(4, 9000, 5_000_000, 1, vec![])).unwrap_err();
    assert_eq!(why.per_dimension.cpus, 3);
    assert_eq!(why.per_dimension.mem, 3);
    assert_eq!(why.per_dimension.disk, 3);
    assert_eq!(
        why.to_string(),
        "no node fits: 3 short on cpus, 3 short on mem, 3 short on disk, 0 filtered by constraints"
    );
    // An explanation for a task that fits says so.
    let ok = p.explain(&task(5, 1000, 0, 0, vec![]));
    assert_eq!(ok.fit, 3);
    assert!(ok.to_string().starts_with("3 of 3 nodes fit"), "{ok}");
}

#[test]
fn release_gives_back() {
    let nodes = vec![
        node(0, 4000, 1_024_000, 0, ""),
        node(1, 4000, 1_024_000, 0, ""),
    ];
    let mut p = Placer::new(&nodes, Strategy::BestFit);
    let t = task(0, 3000, 0, 0, vec![]);
    assert_eq!(p.place(&t), Ok(0));
    assert_eq!(p.place(&t), Ok(1));
    assert!(p.place(&t).is_err());
    assert_eq!(p.nodes_used(), 2);
    p.release(1, &t).unwrap();
    assert_eq!(p.nodes_used(), 1);
    assert_eq!(p.free(1), nodes[1].resources());
    assert_eq!(p.release(1, &t), Err(ReleaseError::NotPlaced(1)));
    assert_eq!(p.release(9, &t), Err(ReleaseError::UnknownNode(9)));
    assert_eq!(p.place(&t), Ok(1));
    assert_eq!(p.allocated(), task(0, 6000, 0, 0, vec![]).resources());
    assert_eq!(p.tasks_on(0), 1);
}

#[test]
fn empty_placer() {
    let mut p = Placer::new(&[], Strategy::Tetris);
    assert!(p.is_empty());
    let why = p.place(&task(0, 1, 1, 1, vec![])).unwrap_err();
    assert_eq!(why.to_string(), "no node fits: there are no nodes");
}

#[test]
fn tetris_fills_used_nodes_and_opens_by_shape() {
    // A cpu-rich and a memory-rich node of the same size class.
    let nodes = vec![
        node(0, 64_000, 256 * 1_024_000, 0, ""),
        node(1, 32_000, 512 * 1_024_000, 0, ""),
    ];
    let mut p = Placer::new(&nodes, Strategy::Tetris);
    // A memory-heavy task opens the memory-rich node...
    assert_eq!(p.place(&task(0, 1000, 64 * 1_024_000, 0, vec![])), Ok(1));
    // ... and a cpu-heavy one still goes there while it fits (used nodes
    // first).
    assert_eq!(p.place(&task(1, 8000, 1_024_000, 0, vec![])), Ok(1));
    // Once it does not fit, the other node opens.
    assert_eq!(p.place(&task(2, 30_000, 1_024_000, 0, vec![])), Ok(0));
}
