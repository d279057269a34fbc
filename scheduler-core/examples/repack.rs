//! The offline repack and the defragment plan on several workloads: nodes
//! used against the lower bound, time, stranded capacity, and the moves a
//! defragment plan needs on a fragmented cluster.
//!
//! ```sh
//! cargo run --release -p berth-scheduler-core --example repack
//! cargo run --release -p berth-scheduler-core --example repack -- --quick
//! perf stat -e task-clock,instructions target/release/examples/repack --one
//! ```
//!
//! Workloads: `workload::heterogeneous` (10,000 nodes, 250,000 tasks,
//! seeds 1 to 3), `workload::mesos_multi_framework(125)`, variations of
//! `heterogeneous_with` (heavier load, no tiny tasks with many
//! constraints, light load), and two made here: nodes of very different
//! sizes and cpu:memory ratios with lognormal tasks, and the same with 2%
//! huge tasks. Online Tetris in arrival order is the baseline.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use berth_scheduler_core::placement::{
    DefragGoal, Placer, Strategy, defragment, lower_bound, median, repack_workload, stranded,
};
use berth_scheduler_core::workload::{
    HeterogeneousConfig, Node, Task, Workload, heterogeneous, heterogeneous_with,
    mesos_multi_framework,
};
use berth_scheduler_core::{AgentId, Resources, Scalar, TaskId};

fn main() {
    let quick = std::env::args().any(|a| a == "--quick");
    // `--one`: one repack of heterogeneous(10,000, 250,000, 1), for
    // `perf stat`; `--one-gen`: only its generation (to subtract).
    let one = std::env::args().any(|a| a == "--one");
    if one || std::env::args().any(|a| a == "--one-gen") {
        let w = heterogeneous(10_000, 250_000, 1);
        if one {
            let tasks: Vec<&Task> = w.tasks.iter().collect();
            let t0 = Instant::now();
            let out = repack_workload(&w.nodes, &tasks);
            println!(
                "{} nodes in {:.3} s",
                out.nodes_used,
                t0.elapsed().as_secs_f64()
            );
        }
        return;
    }
    let (nodes, tasks) = if quick {
        (1_000, 25_000)
    } else {
        (10_000, 250_000)
    };
    let mut workloads: Vec<(String, Workload)> = Vec::new();
    for seed in 1..=3 {
        workloads.push((
            format!("heterogeneous {nodes}/{tasks} seed {seed}"),
            heterogeneous(nodes, tasks, seed),
        ));
    }
    let scale = if quick { 12 } else { 125 };
    workloads.push((
        format!("mesos-multi x{scale}"),
        mesos_multi_framework(scale),
    ));
    let mut heavy = HeterogeneousConfig::new(nodes, tasks * 7 / 5, 4);
    heavy.mean_interarrival = None;
    workloads.push((
        "heterogeneous 1.4x load seed 4".to_owned(),
        heterogeneous_with(&heavy),
    ));
    let mut constrained = HeterogeneousConfig::new(nodes, tasks, 5);
    constrained.tiny = 0.0;
    constrained.zone_equals = 0.1;
    constrained.zone_not_equals = 0.1;
    workloads.push((
        "heterogeneous no tiny, 20% constrained, seed 5".to_owned(),
        heterogeneous_with(&constrained),
    ));
    workloads.push((
        "heterogeneous 0.2x load seed 6".to_owned(),
        heterogeneous(nodes, tasks / 5, 6),
    ));
    workloads.push((
        "mixed nodes, lognormal tasks, seed 7".to_owned(),
        mixed(nodes, tasks, 7, 0.0),
    ));
    workloads.push((
        "mixed nodes, 2% huge tasks, seed 8".to_owned(),
        mixed(nodes, tasks, 8, 0.02),
    ));

    println!("load average: {}", loadavg());
    println!(
        "| workload | tasks | repack nodes | lower bound | ratio | unplaced | repack s (median of 3) | stranded cpu / mem (median task) | online tetris nodes | ratio |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for (name, w) in &workloads {
        row(name, w);
    }
    println!();
    defrag_figures(nodes, tasks);
    println!("load average: {}", loadavg());
}

fn row(name: &str, w: &Workload) {
    let tasks: Vec<&Task> = w.tasks.iter().collect();
    let caps: Vec<Resources> = w.nodes.iter().map(Node::resources).collect();
    let mut times = Vec::new();
    let mut out = None;
    for _ in 0..3 {
        let t0 = Instant::now();
        let r = repack_workload(&w.nodes, &tasks);
        times.push(t0.elapsed());
        out = Some(r);
    }
    let Some(out) = out else { return };
    times.sort();
    let bound = lower_bound(&caps, &out.allocated()).unwrap_or(0);
    let demands: Vec<Resources> = w.tasks.iter().map(Task::resources).collect();
    let used_cap = out
        .nodes()
        .filter(|n| n.2 > 0)
        .fold(Resources::empty(), |acc, n| acc + n.0);
    let s = stranded(out.nodes(), &median(&demands));
    let share = |a: Scalar, b: Scalar| a.milli() as f64 / b.milli().max(1) as f64 * 100.0;

    let mut order: Vec<&Task> = w.tasks.iter().collect();
    order.sort_by_key(|t| t.arrival);
    let mut placer = Placer::new(&w.nodes, Strategy::Tetris);
    for t in &order {
        let _ = placer.try_place(t);
    }
    let online_bound = lower_bound(&caps, &placer.allocated()).unwrap_or(0);
    println!(
        "| {name} | {} | {} | {bound} | {:.4} | {} | {:.3} | {:.1}% / {:.1}% | {} | {:.4} |",
        tasks.len(),
        out.nodes_used,
        out.nodes_used as f64 / bound.max(1) as f64,
        tasks.len() - out.placed(),
        times[1].as_secs_f64(),
        share(s.cpus, used_cap.cpus),
        share(s.mem, used_cap.mem),
        placer.nodes_used(),
        placer.nodes_used() as f64 / online_bound.max(1) as f64,
    );
}

/// Defragment plans on the heterogeneous workload placed online (Tetris,
/// arrival order) after a share of its tasks departed at random.
fn defrag_figures(nodes: usize, tasks: usize) {
    println!(
        "| departed | used nodes | repack of the rest | goal | freed | moves | moves per freed node | tasks per used node | plan s |"
    );
    println!("|---|---|---|---|---|---|---|---|---|");
    let w = heterogeneous(nodes, tasks, 1);
    let mut placer = Placer::new(&w.nodes, Strategy::Tetris);
    let placed: Vec<(&Task, usize)> = w
        .tasks
        .iter()
        .filter_map(|t| placer.try_place(t).map(|b| (t, b)))
        .collect();
    for departed in [0.2, 0.4, 0.6] {
        let mut rng = 0x5eed_u64 + (departed * 100.0) as u64;
        let running: Vec<(&Task, usize)> = placed
            .iter()
            .copied()
            .filter(|_| unit(&mut rng) >= departed)
            .collect();
        let mut used: Vec<usize> = running.iter().map(|e| e.1).collect();
        used.sort_unstable();
        used.dedup();
        let rest: Vec<&Task> = running.iter().map(|e| e.0).collect();
        let ideal = repack_workload(&w.nodes, &rest).nodes_used;
        for goal in [DefragGoal::Free(100), DefragGoal::MostNodes] {
            let t0 = Instant::now();
            let plan = match defragment(&w.nodes, &running, &goal) {
                Ok(p) => p,
                Err(e) => {
                    println!("defragment: {e}");
                    return;
                }
            };
            let took: Duration = t0.elapsed();
            println!(
                "| {:.0}% | {} | {ideal} | {goal:?} | {} | {} | {:.2} | {:.1} | {:.3} |",
                departed * 100.0,
                used.len(),
                plan.freed.len(),
                plan.move_count(),
                plan.move_count() as f64 / plan.freed.len().max(1) as f64,
                running.len() as f64 / used.len().max(1) as f64,
                took.as_secs_f64(),
            );
        }
    }
}

/// Nodes of very different sizes and cpu:memory ratios (4 to 128 cpus, 1
/// to 16 GiB per cpu, log-uniform), tasks with lognormal cpu and memory
/// (independent), and a share `huge` of tasks of 8 to 48 cpus and 32 to
/// 384 GiB. Demand is about 60% of the cluster's cpu.
fn mixed(nodes: usize, tasks: usize, seed: u64, huge: f64) -> Workload {
    let mut rng = seed;
    let nodes: Vec<Node> = (0..nodes)
        .map(|i| {
            let cpus = (4.0 * 32f64.powf(unit(&mut rng))).round() as u64;
            let per_cpu = 16f64.powf(unit(&mut rng));
            let mem = (cpus as f64 * per_cpu * 1024.0).round() as u64;
            Node {
                id: AgentId::new(format!("m-{i:05}")).unwrap_or_else(|_| unreachable!()),
                cpus: Scalar::from_units(cpus),
                mem: Scalar::from_units(mem),
                disk: Scalar::ZERO,
                attributes: BTreeMap::new(),
            }
        })
        .collect();
    let cap_cpu: f64 = nodes.iter().map(|n| n.cpus.to_f64()).sum();
    let cap_mem: f64 = nodes.iter().map(|n| n.mem.to_f64()).sum();
    // Medians for 60% of the cpu and 55% of the memory: the mean of a
    // lognormal is its median times e^(σ²/2).
    // Huge tasks take their mean share first: 28 cpus, 32 GiB · 11/ln 12.
    let n = tasks as f64;
    let huge_cpu = huge * n * 28.0;
    let huge_mem = huge * n * 32.0 * 1024.0 * 11.0 / 12f64.ln();
    let regular = (1.0 - huge) * n;
    let median_cpu = (0.6 * cap_cpu - huge_cpu).max(0.0) / regular / 0.5f64.exp();
    let median_mem = (0.55 * cap_mem - huge_mem).max(0.0) / regular / 0.72f64.exp();
    let tasks = (0..tasks)
        .map(|i| {
            let (c, m) = if unit(&mut rng) < huge {
                (
                    8.0 + 40.0 * unit(&mut rng),
                    32.0 * 1024.0 * 12f64.powf(unit(&mut rng)),
                )
            } else {
                let c = median_cpu * normal(&mut rng).exp();
                let m = median_mem * (1.2 * normal(&mut rng)).exp();
                (c.clamp(0.01, 32.0), m.clamp(8.0, 256.0 * 1024.0))
            };
            Task {
                id: TaskId::new(format!("m-{i:06}")).unwrap_or_else(|_| unreachable!()),
                cpus: Scalar::from_milli_saturating((c * 1000.0) as u64),
                mem: Scalar::from_milli_saturating((m * 1000.0) as u64),
                disk: Scalar::ZERO,
                arrival: None,
                duration: None,
                constraints: Vec::new(),
            }
        })
        .collect();
    Workload { nodes, tasks }
}

/// SplitMix64 step, as a uniform number in [0, 1).
fn unit(state: &mut u64) -> f64 {
    *state = state.wrapping_add(0x9E37_79B9_7F4A_7C15);
    let mut z = *state;
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
}

/// A standard normal sample (Box–Muller).
fn normal(state: &mut u64) -> f64 {
    let u1 = 1.0 - unit(state);
    let u2 = unit(state);
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "?".to_owned())
}
