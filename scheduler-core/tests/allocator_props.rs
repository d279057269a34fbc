//! Property tests of the allocator, driven by a small simulation: frameworks
//! launch tasks of a fixed shape out of every offer, decline the rest, and
//! tasks finish over time.

// Test code: inputs are constants, a panic is the failure report.
#![allow(clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use berth_scheduler_core::{
    AgentId, AgentResources, Allocated, Allocation, Allocator, AllocatorConfig, FrameworkId, Quota,
    Resources, Role, Time, Weight,
};
use proptest::prelude::*;

fn r(s: &str) -> Resources {
    s.parse().unwrap()
}
fn agent(i: usize) -> AgentId {
    AgentId::new(format!("a{i}")).unwrap()
}
fn fw(i: usize) -> FrameworkId {
    FrameworkId::new(format!("f{i}")).unwrap()
}
fn role(s: &str) -> Role {
    Role::new(s).unwrap()
}
fn roles(rs: &[&str]) -> BTreeSet<Role> {
    rs.iter().map(|s| role(s)).collect()
}

/// A tiny deterministic generator (the library takes no randomness; tests
/// seed their own).
struct Lcg(u64);
impl Lcg {
    fn next(&mut self) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        self.0 >> 33
    }
    fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next() % n }
    }
}

#[derive(Clone, Debug)]
struct Task {
    agent: AgentId,
    fw: FrameworkId,
    role: Role,
    res: Allocated,
    ends: Option<u64>,
}

/// A simulated cluster around an [`Allocator`].
struct Sim {
    a: Allocator,
    now: u64,
    tasks: Vec<Task>,
    shape: BTreeMap<FrameworkId, Resources>,
    /// Tasks a framework launches per offer at most.
    per_offer: usize,
    /// Task duration range in ms; `None` = tasks run forever.
    duration: Option<(u64, u64)>,
    refuse: Option<Duration>,
    rng: Lcg,
}

impl Sim {
    fn new(config: AllocatorConfig, seed: u64) -> Sim {
        Sim {
            a: Allocator::new(config),
            now: 0,
            tasks: Vec::new(),
            shape: BTreeMap::new(),
            per_offer: usize::MAX,
            duration: None,
            refuse: None,
            rng: Lcg(seed),
        }
    }

    fn add_framework(&mut self, id: FrameworkId, rs: &[&str], shape: Resources) {
        self.a.add_framework(id.clone(), roles(rs), true);
        self.shape.insert(id, shape);
    }

    /// Finishes due tasks.
    fn finish(&mut self) {
        let now = self.now;
        let (done, running): (Vec<Task>, Vec<Task>) = std::mem::take(&mut self.tasks)
            .into_iter()
            .partition(|t| t.ends.is_some_and(|e| e <= now));
        self.tasks = running;
        for t in done {
            self.a.recover(
                &t.agent,
                &t.fw,
                &t.role,
                &t.res,
                None,
                Time::from_millis(now),
            );
        }
    }

    /// Launches tasks out of each allocation and declines the rest.
    fn accept(&mut self, allocs: &[Allocation]) {
        for x in allocs {
            let mut held = x.resources.clone();
            let shape = self.shape.get(&x.framework).cloned().unwrap_or_default();
            let mut n = 0;
            while n < self.per_offer && !shape.is_empty() {
                let Some(res) = held.take(&shape) else { break };
                let ends = self
                    .duration
                    .map(|(lo, hi)| self.now + lo + self.rng.below(hi - lo + 1));
                self.tasks.push(Task {
                    agent: x.agent.clone(),
                    fw: x.framework.clone(),
                    role: x.role.clone(),
                    res,
                    ends,
                });
                n += 1;
            }
            if !held.is_empty() {
                self.a.recover(
                    &x.agent,
                    &x.framework,
                    &x.role,
                    &held,
                    self.refuse,
                    Time::from_millis(self.now),
                );
            }
        }
    }

    /// One tick: time passes, tasks finish, a cycle runs, offers are used.
    fn step(&mut self, dt: u64) -> Vec<Allocation> {
        self.now += dt;
        self.finish();
        let allocs = self.a.allocate(Time::from_millis(self.now));
        self.accept(&allocs);
        allocs
    }

    fn share(&self, f: &FrameworkId) -> f64 {
        self.a.dominant_share(f)
    }
}

fn check_no_overcommit(a: &Allocator) -> Result<(), TestCaseError> {
    a.check_invariants()
        .map_err(|e| TestCaseError::fail(e.to_string()))?;
    let ids: Vec<AgentId> = a.agent_ids().cloned().collect();
    for id in ids {
        let total = a.agent_total(&id).cloned().unwrap_or_default();
        let mut used = Resources::empty();
        for (_, _, al) in a.allocations_on(&id) {
            used = used
                .checked_add(&al.total())
                .map_err(|e| TestCaseError::fail(e.to_string()))?;
        }
        prop_assert!(
            total.total().contains(&used),
            "agent {id}: used {used} exceeds total {}",
            total.total()
        );
    }
    Ok(())
}

#[derive(Clone, Debug)]
enum Op {
    AddAgent(usize, u64, u64, bool),
    RemoveAgent(usize),
    DrainAgent(usize),
    ActivateAgent(usize),
    AddFramework(usize, usize),
    RemoveFramework(usize),
    Allocate(u64),
    FinishSome(u64),
    Suppress(usize),
    Revive(usize),
    AddUsed(usize, usize, u64),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..6usize, 1..8u64, 1..8u64, any::<bool>())
            .prop_map(|(i, c, m, res)| Op::AddAgent(i, c, m, res)),
        (0..6usize).prop_map(Op::RemoveAgent),
        (0..6usize).prop_map(Op::DrainAgent),
        (0..6usize).prop_map(Op::ActivateAgent),
        (0..4usize, 0..3usize).prop_map(|(i, r)| Op::AddFramework(i, r)),
        (0..4usize).prop_map(Op::RemoveFramework),
        (0..3000u64).prop_map(Op::Allocate),
        (0..100u64).prop_map(Op::FinishSome),
        (0..4usize).prop_map(Op::Suppress),
        (0..4usize).prop_map(Op::Revive),
        (0..6usize, 0..4usize, 1..4u64).prop_map(|(a, f, c)| Op::AddUsed(a, f, c)),
    ]
}

const ROLES: [&str; 3] = ["*", "web", "batch"];

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// (1) Never offers more than is free: across random event sequences,
    /// per-agent allocations never exceed the agent total and each cycle's
    /// allocations fit in what was free before it.
    #[test]
    fn never_offers_more_than_free(ops in prop::collection::vec(op(), 1..60), seed in any::<u64>()) {
        let mut sim = Sim::new(AllocatorConfig::default(), seed);
        sim.duration = Some((100, 5000));
        sim.refuse = Some(Duration::from_secs(1));
        for op in ops {
            match op {
                Op::AddAgent(i, c, m, res) => {
                    let mut total = AgentResources::unreserved(
                        r(&format!("cpus:{c};mem:{};ports:[31000-31009]", m * 512)));
                    if res {
                        total.reserved.insert(role("web"), r("cpus:1;mem:512"));
                    }
                    // Re-adding drops allocations on it: forget its tasks.
                    sim.tasks.retain(|t| t.agent != agent(i));
                    sim.a.add_agent(agent(i), total, true);
                }
                Op::RemoveAgent(i) => {
                    sim.tasks.retain(|t| t.agent != agent(i));
                    sim.a.remove_agent(&agent(i));
                }
                Op::DrainAgent(i) => sim.a.deactivate_agent(&agent(i)),
                Op::ActivateAgent(i) => sim.a.activate_agent(&agent(i)),
                Op::AddFramework(i, ri) => {
                    sim.tasks.retain(|t| t.fw != fw(i));
                    sim.a.remove_framework(&fw(i));
                    sim.add_framework(fw(i), &[ROLES[ri]], r("cpus:0.5;mem:256;ports:[31000-31000]"));
                }
                Op::RemoveFramework(i) => {
                    sim.tasks.retain(|t| t.fw != fw(i));
                    sim.a.remove_framework(&fw(i));
                }
                Op::Allocate(dt) => {
                    sim.now += dt;
                    sim.finish();
                    let before: BTreeMap<AgentId, Resources> = sim.a.agent_ids()
                        .map(|id| (id.clone(), sim.a.free(id).map(|f| f.total()).unwrap_or_default()))
                        .collect();
                    let allocs = sim.a.allocate(Time::from_millis(sim.now));
                    let mut per_agent: BTreeMap<AgentId, Resources> = BTreeMap::new();
                    for x in &allocs {
                        let e = per_agent.entry(x.agent.clone()).or_default();
                        *e = e.checked_add(&x.resources.total()).map_err(|e| TestCaseError::fail(e.to_string()))?;
                    }
                    for (id, got) in per_agent {
                        let free = before.get(&id).cloned().unwrap_or_default();
                        prop_assert!(free.contains(&got), "agent {id}: offered {got} but only {free} free");
                    }
                    sim.accept(&allocs);
                }
                Op::FinishSome(dt) => { sim.now += dt; sim.finish(); }
                Op::Suppress(i) => sim.a.suppress(&fw(i), None),
                Op::Revive(i) => sim.a.revive(&fw(i), None),
                Op::AddUsed(ai, fi, c) => {
                    let used = Allocated { unreserved: r(&format!("cpus:{c}")), reserved: Resources::empty() };
                    let role = Role::default();
                    if sim.a.add_used(&agent(ai), &fw(fi), &role, &used).is_ok() {
                        sim.tasks.push(Task { agent: agent(ai), fw: fw(fi), role, res: used, ends: Some(sim.now + 1000) });
                    }
                }
            }
            check_no_overcommit(&sim.a)?;
        }
    }

    /// (2) Two equal-weight frameworks with equal demand converge to equal
    /// dominant shares, within one task's share.
    #[test]
    ///
    /// The cluster holds an even number of task slots with no crumbs
    /// (agents are whole multiples of the task), so an exactly equal split
    /// exists; with odd capacity or unusable leftovers the best possible is
    /// worse (see the crate's notes on whole-agent offers).
    fn equal_frameworks_get_equal_shares(
        half_agents in 1..5usize,
        slots_per_agent in 1..5u64,
        task_cpus in 1..3u64,
        seed in any::<u64>(),
    ) {
        let mut sim = Sim::new(AllocatorConfig::default(), seed);
        let n_agents = half_agents * 2;
        let cpus = slots_per_agent * task_cpus;
        for i in 0..n_agents {
            sim.a.add_agent(agent(i), AgentResources::unreserved(r(&format!("cpus:{cpus};mem:{}", cpus * 1024))), true);
        }
        let shape = r(&format!("cpus:{task_cpus};mem:{}", task_cpus * 1024));
        sim.add_framework(fw(1), &["*"], shape.clone());
        sim.add_framework(fw(2), &["*"], shape.clone());
        // One task per offer, the rest declined without a filter (the
        // framework still wants more): fairness at task granularity.
        sim.per_offer = 1;
        // Tasks keep finishing and both frameworks always want more: the
        // cluster stays contended. After a warm-up, the time-averaged
        // difference of dominant shares must be within one task.
        sim.duration = Some((500, 3000));
        for _ in 0..30 { sim.step(100); }
        let mut diff = 0.0;
        let samples = 150;
        for _ in 0..samples {
            sim.step(100);
            diff += sim.share(&fw(1)) - sim.share(&fw(2));
        }
        let mean = diff / f64::from(samples);
        let task_share = shape.dominant_share(&sim.a.cluster_total());
        prop_assert!(mean.abs() <= task_share + 1e-9,
            "mean share difference {mean}, one task is {task_share}");
        check_no_overcommit(&sim.a)?;
    }

    /// (3) Roles with weights 1 and 3 and equal demand get shares ~1:3
    /// (weighted shares within one task of each other).
    #[test]
    fn weights_skew_shares(n_agents in 4..12usize, seed in any::<u64>()) {
        let mut sim = Sim::new(AllocatorConfig::default(), seed);
        for i in 0..n_agents {
            sim.a.add_agent(agent(i), AgentResources::unreserved(r("cpus:8;mem:8192")), true);
        }
        let shape = r("cpus:1;mem:1024");
        sim.add_framework(fw(1), &["light"], shape.clone());
        sim.add_framework(fw(3), &["heavy"], shape.clone());
        sim.a.set_weight(role("heavy"), Weight::new(3.0).unwrap());
        sim.per_offer = 1;
        sim.duration = Some((500, 3000));
        for _ in 0..40 { sim.step(100); }
        sim.duration = None;
        for _ in 0..(n_agents * 8 + 40) { sim.step(100); }
        let task_share = shape.dominant_share(&sim.a.cluster_total());
        let (s1, s3) = (sim.share(&fw(1)), sim.share(&fw(3)));
        prop_assert!((s1 - s3 / 3.0).abs() <= task_share + 1e-9,
            "light {s1}, heavy {s3}, one task {task_share}");
        prop_assert!(s1 + s3 > 0.99, "cluster not full: {s1} + {s3}");
    }

    /// (4) A quota role gets its guarantee before fair sharing, even when
    /// other roles have lower shares and greedy demand.
    #[test]
    fn quota_guarantee_met_first(
        n_agents in 2..8usize,
        cpus in 2..8u64,
        others in 1..4usize,
        frac in 1..50u64,
        seed in any::<u64>(),
    ) {
        let mut sim = Sim::new(AllocatorConfig::default(), seed);
        for i in 0..n_agents {
            sim.a.add_agent(agent(i), AgentResources::unreserved(r(&format!("cpus:{cpus};mem:{}", cpus * 1024))), true);
        }
        let total_cpus = n_agents as u64 * cpus;
        let g_cpus = (total_cpus * frac / 100).max(1);
        let guarantee = r(&format!("cpus:{g_cpus};mem:{}", g_cpus * 1024));
        // Others come first and are greedy; the quota role already holds
        // nothing and arrives last, named to lose name ties.
        for i in 0..others {
            sim.add_framework(fw(10 + i), &["aaa"], r("cpus:1;mem:1024"));
        }
        sim.add_framework(fw(1), &["zzz"], r("cpus:1;mem:1024"));
        sim.a.set_quota(role("zzz"), Quota { guarantee: guarantee.clone(), limit: None }).unwrap();
        for _ in 0..5 {
            sim.step(100);
            let got = sim.a.role_allocated(&role("zzz"));
            prop_assert!(got.contains(&guarantee), "quota role has {got}, guarantee {guarantee}");
        }
        check_no_overcommit(&sim.a)?;
    }

    /// (5) Decline filters are honoured until they expire or are revived:
    /// no offer to a framework is contained in resources it declined on that
    /// agent while the filter is active.
    #[test]
    fn filters_honoured(
        n_agents in 1..6usize,
        refuse_ms in 1..5000u64,
        revive_every in 2..20u64,
        seed in any::<u64>(),
    ) {
        let mut sim = Sim::new(AllocatorConfig::default(), seed);
        for i in 0..n_agents {
            sim.a.add_agent(agent(i), AgentResources::unreserved(r("cpus:4;mem:4096")), true);
        }
        for i in 0..3 {
            sim.add_framework(fw(i), &["*"], r("cpus:1;mem:1024"));
        }
        sim.per_offer = 1;
        sim.duration = Some((200, 2000));
        sim.refuse = Some(Duration::from_millis(refuse_ms));
        // Model of active filters: (fw, agent) -> [(resources, expires)].
        let mut filters: BTreeMap<(FrameworkId, AgentId), Vec<(Resources, u64)>> = BTreeMap::new();
        let mut rng = Lcg(seed ^ 0xabcdef);
        for step in 0..120u64 {
            sim.now += rng.below(400);
            sim.finish();
            if step % revive_every == 0 {
                let f = fw(rng.below(3) as usize);
                sim.a.revive(&f, None);
                filters.retain(|(ff, _), _| *ff != f);
            }
            let now = sim.now;
            let allocs = sim.a.allocate(Time::from_millis(now));
            for x in &allocs {
                let offered = x.resources.total();
                if let Some(fs) = filters.get(&(x.framework.clone(), x.agent.clone())) {
                    for (res, exp) in fs {
                        prop_assert!(!(now < *exp && res.contains(&offered)),
                            "{} offered {offered} on {} at {now}, filtered {res} until {exp}",
                            x.framework, x.agent);
                    }
                }
            }
            // Mirror what accept() will decline.
            for x in &allocs {
                let mut held = x.resources.clone();
                let shape = r("cpus:1;mem:1024");
                if held.take(&shape).is_some() && !held.is_empty() {
                    filters.entry((x.framework.clone(), x.agent.clone())).or_default()
                        .push((held.total(), now + refuse_ms));
                }
            }
            sim.accept(&allocs);
        }
        check_no_overcommit(&sim.a)?;
    }

    /// (6) Suppressed frameworks get nothing until revived.
    #[test]
    fn suppressed_get_nothing(
        n_agents in 1..6usize,
        ops in prop::collection::vec((0..3usize, any::<bool>()), 1..40),
        seed in any::<u64>(),
    ) {
        let mut sim = Sim::new(AllocatorConfig::default(), seed);
        for i in 0..n_agents {
            sim.a.add_agent(agent(i), AgentResources::unreserved(r("cpus:4;mem:4096")), true);
        }
        for i in 0..3 {
            sim.add_framework(fw(i), &["*", "web"], r("cpus:1;mem:1024"));
        }
        sim.duration = Some((100, 1000));
        let mut suppressed: BTreeSet<FrameworkId> = BTreeSet::new();
        for (i, suppress) in ops {
            if suppress {
                sim.a.suppress(&fw(i), None);
                suppressed.insert(fw(i));
            } else {
                sim.a.revive(&fw(i), None);
                suppressed.remove(&fw(i));
            }
            let allocs = sim.step(300);
            for x in &allocs {
                prop_assert!(!suppressed.contains(&x.framework), "suppressed {} got an offer", x.framework);
            }
        }
    }

    /// (7) With an offer limit, no framework ever holds more offers than
    /// the limit, and while some agent is left unoffered every framework
    /// holds exactly the limit (one below it is offered again).
    #[test]
    fn offer_limit_bounds_the_offers_held(
        limit in 1..4usize,
        n_agents in 1..20usize,
        n_fw in 1..4usize,
        rounds in prop::collection::vec(prop::collection::vec(0..4usize, 3), 1..10),
    ) {
        let config = AllocatorConfig { offer_limit: Some(limit), ..AllocatorConfig::default() };
        let mut a = Allocator::new(config);
        for i in 0..n_agents {
            a.add_agent(agent(i), AgentResources::unreserved(r("cpus:4;mem:4096")), true);
        }
        for i in 0..n_fw {
            a.add_framework(fw(i), roles(&["*"]), true);
        }
        let mut held: BTreeMap<FrameworkId, Vec<Allocation>> = BTreeMap::new();
        let mut now = 0;
        for give_back in rounds {
            now += 1000;
            for x in a.allocate(Time::from_millis(now)) {
                held.entry(x.framework.clone()).or_default().push(x);
            }
            let total: usize = held.values().map(Vec::len).sum();
            for i in 0..n_fw {
                let n = held.get(&fw(i)).map_or(0, Vec::len);
                prop_assert!(n <= limit, "{} holds {n} offers, limit {limit}", fw(i));
                if total < n_agents {
                    prop_assert_eq!(n, limit, "an agent is free but {} holds {} < {}", fw(i), n, limit);
                }
            }
            // Each framework declines some of its offers (no filter).
            for (i, k) in give_back.into_iter().enumerate().take(n_fw) {
                let list = held.entry(fw(i)).or_default();
                let k = k.min(list.len());
                for x in list.drain(..k) {
                    a.recover(&x.agent, &x.framework, &x.role, &x.resources, None, Time::from_millis(now));
                }
                a.set_outstanding_offers(&fw(i), list.len());
            }
        }
    }
}
