//! Allocation-cycle benchmarks of `berth-scheduler-core`.
//!
//! `cargo bench -p berth-benches --bench allocator` runs them; CI only
//! compiles them (`cargo bench --no-run`). Figures and the machine they
//! came from are in docs/benchmarks.md.

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use berth_scheduler_core::{
    AgentId, AgentResources, Allocator, AllocatorConfig, FrameworkId, Role, Time,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// A cluster of `agents` agents of 16 cpus / 64 GiB and `frameworks`
/// frameworks spread over 50 roles, nothing allocated yet.
fn cluster(agents: usize, frameworks: usize) -> Allocator {
    let mut a = Allocator::new(AllocatorConfig::default());
    let shape: berth_scheduler_core::Resources = "cpus:16;mem:65536;disk:100000"
        .parse()
        .expect("valid resources");
    for i in 0..agents {
        let id = AgentId::new(format!("agent-{i:05}")).expect("valid id");
        a.add_agent(id, AgentResources::unreserved(shape.clone()), true);
    }
    for i in 0..frameworks {
        let role = Role::new(format!("role-{}", i % 50)).expect("valid role");
        let id = FrameworkId::new(format!("fw-{i:04}")).expect("valid id");
        a.add_framework(id, BTreeSet::from([role]), true);
    }
    a
}

/// One full cycle offering every agent, then every offer declined with a
/// long filter and a second cycle that must skip the filtered pairs.
fn cycle(c: &mut Criterion) {
    let mut group = c.benchmark_group("allocate_cycle");
    group.sample_size(10);
    for &(agents, frameworks) in &[(1_000, 100), (10_000, 1_000)] {
        group.bench_with_input(
            BenchmarkId::new("offer_all_then_decline", format!("{agents}x{frameworks}")),
            &(agents, frameworks),
            |b, &(agents, frameworks)| {
                b.iter_batched(
                    || cluster(agents, frameworks),
                    |mut a| {
                        let offers = a.allocate(Time::ZERO);
                        for o in &offers {
                            a.recover(
                                &o.agent,
                                &o.framework,
                                &o.role,
                                &o.resources,
                                Some(Duration::from_secs(3600)),
                                Time::ZERO,
                            );
                        }
                        black_box(a.allocate(Time::from_millis(1000)))
                    },
                    criterion::BatchSize::LargeInput,
                );
            },
        );
    }
    group.finish();
}

criterion_group!(benches, cycle);
criterion_main!(benches);
