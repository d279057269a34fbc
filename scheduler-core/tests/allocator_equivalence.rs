//! Differential test: the allocator against the reference model in
//! `reference/allocator_v1.rs` (the allocator before decline filters moved
//! into a per-agent book and frameworks got dense indices). Random event
//! sequences — agents, frameworks, roles, weights, quotas, suppress/revive,
//! declines with and without filters, time going back and forth — must
//! give identical allocations and identical bookkeeping.

// Test code: inputs are constants, a panic is the failure report.
#![allow(clippy::unwrap_used)]

#[path = "reference/allocator_v1.rs"]
mod reference;

use std::collections::BTreeSet;
use std::time::Duration;

use berth_scheduler_core::{
    AgentId, AgentResources, Allocated, Allocation, Allocator, AllocatorConfig, FrameworkId, Quota,
    Resources, Role, Time, Weight,
};
use proptest::prelude::*;
use reference::RefAllocator;

fn r(s: &str) -> Resources {
    s.parse().unwrap()
}
fn agent(i: usize) -> AgentId {
    AgentId::new(format!("a{i}")).unwrap()
}
fn fw(i: usize) -> FrameworkId {
    FrameworkId::new(format!("f{i}")).unwrap()
}

const ROLES: [&str; 3] = ["*", "web", "batch"];
const AGENTS: usize = 6;
const FRAMEWORKS: usize = 5;

fn role(i: usize) -> Role {
    Role::new(ROLES[i % ROLES.len()]).unwrap()
}

/// A set of roles from a bit mask over [`ROLES`].
fn roles(mask: u8) -> BTreeSet<Role> {
    (0..ROLES.len())
        .filter(|i| mask & (1 << i) != 0)
        .map(role)
        .collect()
}

/// Refuse durations a decline may carry.
fn refuse(i: u8) -> Option<Duration> {
    match i % 6 {
        0 => None,
        1 => Some(Duration::ZERO),
        2 => Some(Duration::from_millis(300)),
        3 => Some(Duration::from_secs(5)),
        4 => Some(Duration::from_secs(3600)),
        _ => Some(Duration::MAX),
    }
}

#[derive(Clone, Debug)]
enum Op {
    AddAgent {
        i: usize,
        cpus: u64,
        mem: u64,
        reserved: Option<usize>,
        active: bool,
    },
    RemoveAgent(usize),
    DrainAgent(usize),
    ActivateAgent(usize),
    AddFramework {
        i: usize,
        roles: u8,
        active: bool,
    },
    UpdateFramework(usize, u8),
    RemoveFramework(usize),
    DeactivateFramework(usize),
    ActivateFramework(usize),
    Suppress(usize, Option<u8>),
    Revive(usize, Option<u8>),
    SetWeight(usize, u64),
    SetQuota(usize, u64, Option<u64>),
    RemoveQuota(usize),
    AddUsed(usize, usize, usize, u64),
    /// A filter for resources the framework may not hold.
    DeclineUnheld {
        agent: usize,
        fw: usize,
        role: usize,
        cpus: u64,
        refuse: u8,
    },
    /// Time moves (possibly backwards), a cycle runs, and each allocation
    /// is partly used and partly declined.
    Allocate {
        dt: u64,
        back: bool,
        take_cpus: u64,
        refuse: u8,
    },
    /// Some running tasks finish.
    Finish(u8, u8),
}

fn op() -> impl Strategy<Value = Op> {
    let i_agent = 0..AGENTS;
    let i_fw = 0..FRAMEWORKS;
    prop_oneof![
        3 => (i_agent.clone(), 1..8u64, 1..8u64, prop::option::of(0..3usize), prop::bool::weighted(0.9))
            .prop_map(|(i, cpus, mem, reserved, active)| Op::AddAgent { i, cpus, mem, reserved, active }),
        1 => (i_agent.clone()).prop_map(Op::RemoveAgent),
        1 => (i_agent.clone()).prop_map(Op::DrainAgent),
        1 => (i_agent.clone()).prop_map(Op::ActivateAgent),
        3 => (i_fw.clone(), 1..8u8, prop::bool::weighted(0.9))
            .prop_map(|(i, roles, active)| Op::AddFramework { i, roles, active }),
        1 => (i_fw.clone(), 0..8u8).prop_map(|(i, m)| Op::UpdateFramework(i, m)),
        1 => (i_fw.clone()).prop_map(Op::RemoveFramework),
        1 => (i_fw.clone()).prop_map(Op::DeactivateFramework),
        1 => (i_fw.clone()).prop_map(Op::ActivateFramework),
        1 => (i_fw.clone(), prop::option::of(0..8u8)).prop_map(|(i, m)| Op::Suppress(i, m)),
        2 => (i_fw.clone(), prop::option::of(0..8u8)).prop_map(|(i, m)| Op::Revive(i, m)),
        1 => (0..3usize, 1..4u64).prop_map(|(ro, w)| Op::SetWeight(ro, w)),
        1 => (1..3usize, 1..10u64, prop::option::of(0..10u64))
            .prop_map(|(ro, g, l)| Op::SetQuota(ro, g, l)),
        1 => (1..3usize).prop_map(Op::RemoveQuota),
        1 => (i_agent.clone(), i_fw.clone(), 0..3usize, 1..4u64)
            .prop_map(|(a, f, ro, c)| Op::AddUsed(a, f, ro, c)),
        2 => (i_agent, i_fw, 0..3usize, 0..8u64, any::<u8>())
            .prop_map(|(agent, fw, role, cpus, refuse)| Op::DeclineUnheld { agent, fw, role, cpus, refuse }),
        8 => (0..2000u64, prop::bool::weighted(0.1), 0..4u64, any::<u8>())
            .prop_map(|(dt, back, take_cpus, refuse)| Op::Allocate { dt, back, take_cpus, refuse }),
        2 => (any::<u8>(), any::<u8>()).prop_map(|(n, refuse)| Op::Finish(n, refuse)),
    ]
}

struct Task {
    agent: AgentId,
    fw: FrameworkId,
    role: Role,
    res: Allocated,
}

/// Both allocators, fed the same events.
struct Pair {
    new: Allocator,
    old: RefAllocator,
    now: u64,
    tasks: Vec<Task>,
}

impl Pair {
    fn both<T: PartialEq + std::fmt::Debug>(
        &mut self,
        what: &str,
        f: impl Fn(&mut Allocator) -> T,
        g: impl Fn(&mut RefAllocator) -> T,
    ) -> Result<T, TestCaseError> {
        let a = f(&mut self.new);
        let b = g(&mut self.old);
        prop_assert_eq!(&a, &b, "{} differs", what);
        Ok(a)
    }

    fn recover(&mut self, t: &Task, refuse: Option<Duration>) {
        let now = Time::from_millis(self.now);
        self.new
            .recover(&t.agent, &t.fw, &t.role, &t.res, refuse, now);
        self.old
            .recover(&t.agent, &t.fw, &t.role, &t.res, refuse, now);
    }

    fn apply(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match op.clone() {
            Op::AddAgent {
                i,
                cpus,
                mem,
                reserved,
                active,
            } => {
                let mut total = AgentResources::unreserved(r(&format!(
                    "cpus:{cpus};mem:{};ports:[31000-31009]",
                    mem * 512
                )));
                if let Some(ro) = reserved {
                    total.reserved.insert(role(ro), r("cpus:1;mem:512"));
                }
                self.tasks.retain(|t| t.agent != agent(i));
                self.new.add_agent(agent(i), total.clone(), active);
                self.old.add_agent(agent(i), total, active);
            }
            Op::RemoveAgent(i) => {
                self.tasks.retain(|t| t.agent != agent(i));
                self.new.remove_agent(&agent(i));
                self.old.remove_agent(&agent(i));
            }
            Op::DrainAgent(i) => {
                self.new.deactivate_agent(&agent(i));
                self.old.deactivate_agent(&agent(i));
            }
            Op::ActivateAgent(i) => {
                self.new.activate_agent(&agent(i));
                self.old.activate_agent(&agent(i));
            }
            Op::AddFramework {
                i,
                roles: m,
                active,
            } => {
                self.new.add_framework(fw(i), roles(m), active);
                self.old.add_framework(fw(i), roles(m), active);
            }
            Op::UpdateFramework(i, m) => {
                let _ = self.both(
                    "update_framework",
                    |a| a.update_framework(&fw(i), roles(m)),
                    |a| a.update_framework(&fw(i), roles(m)),
                )?;
            }
            Op::RemoveFramework(i) => {
                self.tasks.retain(|t| t.fw != fw(i));
                self.new.remove_framework(&fw(i));
                self.old.remove_framework(&fw(i));
            }
            Op::DeactivateFramework(i) => {
                self.new.deactivate_framework(&fw(i));
                self.old.deactivate_framework(&fw(i));
            }
            Op::ActivateFramework(i) => {
                self.new.activate_framework(&fw(i));
                self.old.activate_framework(&fw(i));
            }
            Op::Suppress(i, m) => {
                let rs = m.map(roles);
                self.new.suppress(&fw(i), rs.as_ref());
                self.old.suppress(&fw(i), rs.as_ref());
            }
            Op::Revive(i, m) => {
                let rs = m.map(roles);
                self.new.revive(&fw(i), rs.as_ref());
                self.old.revive(&fw(i), rs.as_ref());
            }
            Op::SetWeight(ro, w) => {
                let w = Weight::new(w as f64).unwrap();
                self.new.set_weight(role(ro), w);
                self.old.set_weight(role(ro), w);
            }
            Op::SetQuota(ro, g, l) => {
                let quota = Quota {
                    guarantee: r(&format!("cpus:{g};mem:{}", g * 256)),
                    limit: l.map(|l| r(&format!("cpus:{};mem:{}", g + l, (g + l) * 512))),
                };
                let _ = self.both(
                    "set_quota",
                    |a| a.set_quota(role(ro), quota.clone()),
                    |a| a.set_quota(role(ro), quota.clone()),
                )?;
            }
            Op::RemoveQuota(ro) => {
                self.new.remove_quota(&role(ro));
                self.old.remove_quota(&role(ro));
            }
            Op::AddUsed(ai, fi, ro, c) => {
                let used = Allocated {
                    unreserved: r(&format!("cpus:{c}")),
                    reserved: Resources::empty(),
                };
                let ok = self.both(
                    "add_used",
                    |a| a.add_used(&agent(ai), &fw(fi), &role(ro), &used),
                    |a| a.add_used(&agent(ai), &fw(fi), &role(ro), &used),
                )?;
                if ok.is_ok() {
                    self.tasks.push(Task {
                        agent: agent(ai),
                        fw: fw(fi),
                        role: role(ro),
                        res: used,
                    });
                }
            }
            Op::DeclineUnheld {
                agent: ai,
                fw: fi,
                role: ro,
                cpus,
                refuse: rf,
            } => {
                let t = Task {
                    agent: agent(ai),
                    fw: fw(fi),
                    role: role(ro),
                    res: Allocated {
                        unreserved: r(&format!("cpus:{cpus};mem:{}", cpus * 512)),
                        reserved: Resources::empty(),
                    },
                };
                // Releases whatever of it is actually held; forget such
                // tasks (they may no longer be fully allocated).
                self.tasks
                    .retain(|x| !(x.agent == t.agent && x.fw == t.fw && x.role == t.role));
                self.recover(&t, refuse(rf));
            }
            Op::Allocate {
                dt,
                back,
                take_cpus,
                refuse: rf,
            } => {
                self.now = if back {
                    self.now.saturating_sub(dt)
                } else {
                    self.now + dt
                };
                let now = Time::from_millis(self.now);
                let allocs: Vec<Allocation> =
                    self.both("allocate", |a| a.allocate(now), |a| a.allocate(now))?;
                let shape = r(&format!("cpus:{take_cpus};mem:{}", take_cpus * 256));
                for (n, x) in allocs.iter().enumerate() {
                    let mut held = x.resources.clone();
                    if take_cpus > 0
                        && let Some(res) = held.take(&shape)
                    {
                        self.tasks.push(Task {
                            agent: x.agent.clone(),
                            fw: x.framework.clone(),
                            role: x.role.clone(),
                            res,
                        });
                    }
                    if !held.is_empty() {
                        let t = Task {
                            agent: x.agent.clone(),
                            fw: x.framework.clone(),
                            role: x.role.clone(),
                            res: held,
                        };
                        self.recover(&t, refuse(rf.wrapping_add(n as u8)));
                    }
                }
            }
            Op::Finish(n, rf) => {
                let n = usize::from(n) % (self.tasks.len() + 1);
                let done: Vec<Task> = self.tasks.drain(..n).collect();
                for t in &done {
                    self.recover(t, refuse(rf));
                }
            }
        }
        self.compare()
    }

    /// Everything observable must agree.
    fn compare(&mut self) -> Result<(), TestCaseError> {
        self.new
            .check_invariants()
            .map_err(|e| TestCaseError::fail(e.to_string()))?;
        let ids: Vec<AgentId> = self.new.agent_ids().cloned().collect();
        let old_ids: Vec<AgentId> = self.old.agent_ids().cloned().collect();
        prop_assert_eq!(&ids, &old_ids);
        for id in &ids {
            prop_assert_eq!(self.new.free(id), self.old.free(id));
            prop_assert_eq!(self.new.allocations_on(id), self.old.allocations_on(id));
        }
        let fws: Vec<FrameworkId> = self.new.framework_ids().cloned().collect();
        let old_fws: Vec<FrameworkId> = self.old.framework_ids().cloned().collect();
        prop_assert_eq!(&fws, &old_fws);
        for f in &fws {
            prop_assert_eq!(self.new.allocated_to(f), self.old.allocated_to(f));
        }
        prop_assert_eq!(self.new.roles(), self.old.roles());
        prop_assert_eq!(self.new.cluster_total(), self.old.cluster_total());
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    /// Same events, same decisions.
    #[test]
    fn same_decisions_as_reference(ops in prop::collection::vec(op(), 1..120)) {
        let mut p = Pair {
            new: Allocator::new(AllocatorConfig::default()),
            old: RefAllocator::new(AllocatorConfig::default()),
            now: 0,
            tasks: Vec::new(),
        };
        for op in &ops {
            p.apply(op)?;
        }
    }

    /// Many frameworks in one role declining one agent after another: the
    /// paths that skip a fully filtered agent and that walk past filtered
    /// frameworks.
    #[test]
    fn same_decisions_with_many_declines(
        n_agents in 1..5usize,
        n_fws in 1..40usize,
        rounds in 1..60usize,
        refuse_pick in prop::collection::vec(any::<u8>(), 1..16),
        revive_every in 3..30usize,
    ) {
        let mut p = Pair {
            new: Allocator::new(AllocatorConfig::default()),
            old: RefAllocator::new(AllocatorConfig::default()),
            now: 0,
            tasks: Vec::new(),
        };
        for i in 0..n_agents {
            p.apply(&Op::AddAgent { i, cpus: 4, mem: 4, reserved: None, active: true })?;
        }
        for i in 0..n_fws {
            let f = FrameworkId::new(format!("g{i:02}")).unwrap();
            p.new.add_framework(f.clone(), roles(1), true);
            p.old.add_framework(f, roles(1), true);
        }
        for round in 0..rounds {
            let rf = refuse_pick[round % refuse_pick.len()];
            p.apply(&Op::Allocate { dt: 100, back: false, take_cpus: u64::from(rf % 2), refuse: rf })?;
            if round % revive_every == revive_every - 1 {
                let f = FrameworkId::new(format!("g{:02}", round % n_fws)).unwrap();
                p.new.revive(&f, None);
                p.old.revive(&f, None);
            }
            if round % 7 == 3 {
                p.apply(&Op::Finish(rf, rf / 7))?;
            }
        }
    }
}
