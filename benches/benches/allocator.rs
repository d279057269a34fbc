//! Allocation-cycle benchmarks of `berth-scheduler-core`.
//!
//! `cargo bench -p berth-benches --bench allocator` runs them; CI only
//! compiles them (`cargo bench --no-run`). Figures and the machine they
//! came from are in docs/benchmarks.md.
//!
//! Groups:
//!
//! - `allocate_cycle/offer_all_then_decline/{agents}x{frameworks}`: a full
//!   cycle offering every agent, every offer declined with a filter, and a
//!   second cycle.
//! - `decline_offers/{agents}x{frameworks}`: Mesos's
//!   `HierarchicalAllocator_BENCHMARK_Test.DeclineOffers` — one cycle when
//!   every framework has declined every agent with a very long filter. The
//!   default run covers up to 10,000 agents × 1,000 frameworks; with
//!   `BERTH_BENCH_FULL=1` in the environment it adds 20,000 agents and
//!   3,000 frameworks (setup then takes minutes and several GiB).

use std::collections::BTreeSet;
use std::hint::black_box;
use std::time::Duration;

use berth_scheduler_core::{
    AgentId, AgentResources, Allocated, Allocator, AllocatorConfig, FrameworkId, PortRanges,
    Resources, Role, Time,
};
use criterion::{BenchmarkId, Criterion, criterion_group, criterion_main};

/// A cluster of `agents` agents of 16 cpus / 64 GiB and `frameworks`
/// frameworks spread over 50 roles, nothing allocated yet.
fn cluster(agents: usize, frameworks: usize) -> Allocator {
    let mut a = Allocator::new(AllocatorConfig::default());
    let shape: Resources = "cpus:16;mem:65536;disk:100000"
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

/// Mesos's `makePortRanges(31000-32000, 16)`: 16 ranges of two ports, one
/// every 62 ports from 31000.
fn used_ports() -> PortRanges {
    let ranges: Vec<(u64, u64)> = (0..16u64)
        .map(|i| (31_000 + i * 62, 31_000 + i * 62 + 1))
        .collect();
    PortRanges::from_ranges(&ranges).expect("valid ports")
}

/// The state Mesos's DeclineOffers benchmark reaches once every framework
/// has been offered every agent and declined it for good: `agents` agents
/// of `cpus:24;mem:4096;disk:4096;ports:[31000-32000]`, each with
/// `cpus:16;mem:2014;disk:1024` and 16 ports in use by one framework
/// (round-robin), `frameworks` frameworks in role `*`, and on every agent
/// a filter of every framework covering what is free there (Mesos
/// declines with `refuse_seconds = INT_MAX`).
///
/// Built directly rather than by `frameworks` rounds of offer-and-decline:
/// the filters go in before the used resources (a recover of resources
/// not allocated only installs the filter), which leaves the same
/// allocations, shares and filters as the rounds would.
fn declined_cluster(agents: usize, frameworks: usize) -> Allocator {
    let mut a = Allocator::new(AllocatorConfig::default());
    let total: Resources = "cpus:24;mem:4096;disk:4096;ports:[31000-32000]"
        .parse()
        .expect("valid resources");
    let used = Allocated {
        unreserved: "cpus:16;mem:2014;disk:1024"
            .parse::<Resources>()
            .expect("valid resources")
            .with_ports(used_ports()),
        reserved: Resources::empty(),
    };
    let declined = Allocated {
        unreserved: total.saturating_sub(&used.unreserved),
        reserved: Resources::empty(),
    };
    let role = Role::default();
    let refuse = Some(Duration::from_secs(i32::MAX as u64));
    let fws: Vec<FrameworkId> = (0..frameworks)
        .map(|i| FrameworkId::new(format!("framework{i}")).expect("valid id"))
        .collect();
    for fw in &fws {
        a.add_framework(fw.clone(), BTreeSet::from([role.clone()]), true);
    }
    for i in 0..agents {
        let id = AgentId::new(format!("agent{i}")).expect("valid id");
        a.add_agent(id.clone(), AgentResources::unreserved(total.clone()), true);
        for fw in &fws {
            a.recover(&id, fw, &role, &declined, refuse, Time::ZERO);
        }
        a.add_used(&id, &fws[i % frameworks], &role, &used)
            .expect("used fits the agent");
    }
    a
}

/// The DeclineOffers sizes: agents × frameworks.
fn decline_sizes() -> Vec<(usize, usize)> {
    let full = std::env::var_os("BERTH_BENCH_FULL").is_some_and(|v| v == "1");
    let agents: &[usize] = if full {
        &[1_000, 5_000, 10_000, 20_000]
    } else {
        &[1_000, 5_000, 10_000]
    };
    let frameworks: &[usize] = if full {
        &[1, 100, 1_000, 3_000]
    } else {
        &[1, 100, 1_000]
    };
    let mut sizes = Vec::new();
    for &n in agents {
        for &f in frameworks {
            sizes.push((n, f));
        }
    }
    sizes
}

/// One allocation cycle when every (framework, agent) pair is filtered.
/// The cycle offers nothing and changes nothing, so the same state is
/// timed again and again; it is built once per size, outside the timing.
fn decline_offers(c: &mut Criterion) {
    let mut group = c.benchmark_group("decline_offers");
    group.sample_size(10);
    let now = Time::from_millis(3_600_000);
    for (agents, frameworks) in decline_sizes() {
        let mut state: Option<Allocator> = None;
        group.bench_function(format!("{agents}x{frameworks}"), |b| {
            let a = state.get_or_insert_with(|| {
                let mut a = declined_cluster(agents, frameworks);
                let offers = a.allocate(now);
                assert!(offers.is_empty(), "every pair should be filtered");
                a
            });
            b.iter(|| black_box(a.allocate(now)));
        });
        if let Some(mut a) = state {
            assert!(a.allocate(now).is_empty(), "the cycle should stay idle");
        }
    }
    group.finish();
}

criterion_group!(benches, cycle, decline_offers);
criterion_main!(benches);
