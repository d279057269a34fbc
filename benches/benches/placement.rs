//! Placement throughput of `berth-scheduler-core`'s indexed `Placer`.
//!
//! `cargo bench -p berth-benches --bench placement` runs them; CI only
//! compiles them. One iteration places a whole batch on empty nodes (the
//! placer is built outside the measurement). Figures and the machine are
//! in docs/benchmarks.md.

use std::hint::black_box;

use berth_scheduler_core::placement::{Placer, Strategy};
use berth_scheduler_core::workload::{Workload, heterogeneous, mesos_multi_framework};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};

fn place_all(w: &Workload, strategy: Strategy) -> impl FnMut(&mut criterion::Bencher<'_>) + '_ {
    move |b| {
        b.iter_batched(
            || Placer::new(&w.nodes, strategy),
            |mut placer| {
                let mut placed = 0usize;
                for t in &w.tasks {
                    placed += usize::from(placer.try_place(t).is_some());
                }
                black_box(placed)
            },
            criterion::BatchSize::LargeInput,
        );
    }
}

/// 50,000 heterogeneous tasks onto 10,000 empty nodes, each strategy.
fn heterogeneous_10k(c: &mut Criterion) {
    let w = heterogeneous(10_000, 50_000, 1);
    let mut group = c.benchmark_group("place_heterogeneous_10k_nodes");
    group.sample_size(10);
    group.throughput(Throughput::Elements(w.tasks.len() as u64));
    for s in Strategy::ALL {
        group.bench_function(BenchmarkId::new(s.name(), "50k_tasks"), place_all(&w, s));
    }
    group.finish();
}

/// Cost per task against cluster size: 5 heterogeneous tasks per node
/// onto 2,500 to 20,000 empty nodes, balanced fill and Tetris (the
/// baseline). Balanced fill's per-task work does not depend on the number
/// of nodes, so its time per task should stay flat.
fn scaling(c: &mut Criterion) {
    let mut group = c.benchmark_group("place_scaling");
    group.sample_size(10);
    for nodes in [2_500usize, 5_000, 10_000, 20_000] {
        let w = heterogeneous(nodes, 5 * nodes, 1);
        group.throughput(Throughput::Elements(w.tasks.len() as u64));
        for s in [Strategy::BalancedFill, Strategy::Tetris] {
            group.bench_function(
                BenchmarkId::new(s.name(), format!("{nodes}_nodes")),
                place_all(&w, s),
            );
        }
    }
    group.finish();
}

/// Mesos' MultiFrameworkAllocations task mix packed onto its agents: ×1
/// (80 agents, 19,500 tasks) and ×125 (10,000 agents, 2,437,500 tasks).
fn mesos_multi(c: &mut Criterion) {
    let mut group = c.benchmark_group("place_mesos_multi_framework");
    group.sample_size(10);
    for scale in [1usize, 125] {
        let w = mesos_multi_framework(scale);
        group.throughput(Throughput::Elements(w.tasks.len() as u64));
        for s in [Strategy::FirstFit, Strategy::Tetris, Strategy::BalancedFill] {
            group.bench_function(
                BenchmarkId::new(s.name(), format!("x{scale}")),
                place_all(&w, s),
            );
        }
    }
    group.finish();
}

criterion_group!(benches, heterogeneous_10k, scaling, mesos_multi);
criterion_main!(benches);
