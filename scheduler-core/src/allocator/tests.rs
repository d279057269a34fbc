use super::*;

fn r(s: &str) -> Resources {
    s.parse().unwrap()
}
fn role(s: &str) -> Role {
    Role::new(s).unwrap()
}
fn fw(s: &str) -> FrameworkId {
    FrameworkId::new(s).unwrap()
}
fn agent(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}
fn roles(rs: &[&str]) -> BTreeSet<Role> {
    rs.iter().map(|s| role(s)).collect()
}
fn t(ms: u64) -> Time {
    Time::from_millis(ms)
}
fn unres(s: &str) -> AgentResources {
    AgentResources::unreserved(r(s))
}
fn new() -> Allocator {
    Allocator::new(AllocatorConfig::default())
}
/// The (framework, agent) pairs of a cycle.
fn pairs(allocs: &[Allocation]) -> Vec<(String, String)> {
    allocs
        .iter()
        .map(|a| (a.framework.to_string(), a.agent.to_string()))
        .collect()
}
fn decline_all(a: &mut Allocator, allocs: &[Allocation], refuse: Option<Duration>, now: Time) {
    for x in allocs {
        a.recover(&x.agent, &x.framework, &x.role, &x.resources, refuse, now);
    }
}

#[test]
fn weight_validation() {
    assert_eq!(Weight::new(1.0).unwrap(), Weight::ONE);
    assert_eq!(Weight::new(2.5).unwrap().to_f64(), 2.5);
    assert_eq!(Weight::new(1e6).unwrap(), Weight::MAX);
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1e6 + 1.0, 0.0001] {
        let e = Weight::new(bad).unwrap_err();
        assert!(matches!(e, AllocatorError::InvalidWeight { .. }), "{bad}");
    }
    assert_eq!(
        Weight::new(-1.0).unwrap_err().to_string(),
        "invalid weight -1: must be greater than zero"
    );
    assert!(serde_json::from_str::<Weight>("0").is_err());
    assert_eq!(
        serde_json::from_str::<Weight>("2000").unwrap().to_f64(),
        2.0
    );
}

#[test]
fn allocated_take_splits_reserved_first() {
    let mut a = Allocated {
        unreserved: r("cpus:4;mem:1000;ports:[100-199]"),
        reserved: r("cpus:1;mem:2000;ports:[200-209]"),
    };
    let got = a
        .take(&r("cpus:2;mem:500;ports:[150-150,205-205]"))
        .unwrap();
    assert_eq!(got.reserved, r("cpus:1;mem:500;ports:[205-205]"));
    assert_eq!(got.unreserved, r("cpus:1;ports:[150-150]"));
    assert_eq!(a.reserved, r("mem:1500;ports:[200-204,206-209]"));
    assert_eq!(a.unreserved, r("cpus:3;mem:1000;ports:[100-149,151-199]"));
    // Not contained: unchanged.
    let before = a.clone();
    assert_eq!(a.take(&r("cpus:3.001")), None);
    assert_eq!(a.take(&r("ports:[300-300]")), None);
    assert_eq!(a, before);
    assert_eq!(a.take(&Resources::empty()), Some(Allocated::default()));
    assert_eq!(
        a.total(),
        r("cpus:3;mem:2500;ports:[100-149,151-199,200-204,206-209]")
    );
    assert!(!a.is_empty());
    assert!(Allocated::default().is_empty());
    let sum = a.checked_add(&got).unwrap();
    assert_eq!(
        sum.total(),
        before.total().checked_add(&got.total()).unwrap()
    );
}

#[test]
fn offers_whole_agent_to_lowest_share() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_agent(agent("a2"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("f1"), roles(&["*"]), true);
    a.add_framework(fw("f2"), roles(&["*"]), true);
    let allocs = a.allocate(t(0));
    assert_eq!(
        pairs(&allocs),
        [("f1".into(), "a1".into()), ("f2".into(), "a2".into())]
    );
    assert_eq!(allocs[0].resources.unreserved, r("cpus:4;mem:4096"));
    assert_eq!(a.allocated_to(&fw("f1")), r("cpus:4;mem:4096"));
    assert_eq!(a.dominant_share(&fw("f1")), 0.5);
    assert_eq!(a.free(&agent("a1")).unwrap().total(), Resources::empty());
    // Nothing left: the next cycle offers nothing.
    assert!(a.allocate(t(1)).is_empty());
    a.check_invariants().unwrap();
    // Recovering returns resources to the pool.
    decline_all(&mut a, &allocs, None, t(2));
    assert_eq!(a.allocated_to(&fw("f1")), Resources::empty());
    assert_eq!(a.free(&agent("a1")).unwrap(), unres("cpus:4;mem:4096"));
    a.check_invariants().unwrap();
}

#[test]
fn reservations_only_to_the_role() {
    let mut a = new();
    let mut total = unres("cpus:2;mem:1024");
    total
        .reserved
        .insert(role("db"), r("cpus:4;mem:4096;ports:[5432-5432]"));
    a.add_agent(agent("a1"), total, true);
    a.add_framework(fw("web"), roles(&["*"]), true);
    let allocs = a.allocate(t(0));
    assert_eq!(allocs.len(), 1);
    assert_eq!(allocs[0].framework, fw("web"));
    assert_eq!(allocs[0].resources.unreserved, r("cpus:2;mem:1024"));
    assert!(allocs[0].resources.reserved.is_empty());
    // The reservation stays free until a framework of role "db" comes.
    assert_eq!(
        a.free(&agent("a1")).unwrap().reserved.get(&role("db")),
        Some(&r("cpus:4;mem:4096;ports:[5432-5432]"))
    );
    assert!(a.allocate(t(1)).is_empty());
    a.add_framework(fw("pg"), roles(&["db"]), true);
    let allocs = a.allocate(t(2));
    assert_eq!(allocs.len(), 1);
    assert_eq!(allocs[0].framework, fw("pg"));
    assert_eq!(allocs[0].role, role("db"));
    assert_eq!(
        allocs[0].resources.reserved,
        r("cpus:4;mem:4096;ports:[5432-5432]")
    );
    assert!(allocs[0].resources.unreserved.is_empty());
    a.check_invariants().unwrap();
    assert!(
        a.roles()
            .iter()
            .any(|i| i.role == role("db") && i.frameworks == [fw("pg")])
    );
}

#[test]
fn reserved_and_unreserved_offered_together_to_the_role() {
    let mut a = new();
    let mut total = unres("cpus:2;mem:1024");
    total.reserved.insert(role("db"), r("cpus:1;mem:512"));
    a.add_agent(agent("a1"), total, true);
    a.add_framework(fw("pg"), roles(&["db"]), true);
    let allocs = a.allocate(t(0));
    assert_eq!(allocs.len(), 1);
    assert_eq!(allocs[0].resources.reserved, r("cpus:1;mem:512"));
    assert_eq!(allocs[0].resources.unreserved, r("cpus:2;mem:1024"));
}

#[test]
fn drain_stops_offers_on_the_agent() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_agent(agent("a2"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("f1"), roles(&["*"]), true);
    a.deactivate_agent(&agent("a1"));
    let allocs = a.allocate(t(0));
    assert_eq!(pairs(&allocs), [("f1".into(), "a2".into())]);
    // Existing allocations on a drained agent are kept.
    a.deactivate_agent(&agent("a2"));
    assert_eq!(a.allocated_to(&fw("f1")), r("cpus:4;mem:4096"));
    decline_all(&mut a, &allocs, None, t(1));
    assert!(a.allocate(t(2)).is_empty());
    a.activate_agent(&agent("a1"));
    let allocs = a.allocate(t(3));
    assert_eq!(pairs(&allocs), [("f1".into(), "a1".into())]);
    // Drained agents still count in the cluster total.
    assert_eq!(a.cluster_total(), r("cpus:8;mem:8192"));
}

#[test]
fn deactivated_framework_gets_nothing() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("f1"), roles(&["*"]), false);
    assert!(a.allocate(t(0)).is_empty());
    a.activate_framework(&fw("f1"));
    let allocs = a.allocate(t(1));
    assert_eq!(allocs.len(), 1);
    a.deactivate_framework(&fw("f1"));
    // Keeps its allocation, gets nothing new.
    assert_eq!(a.allocated_to(&fw("f1")), r("cpus:4;mem:4096"));
    decline_all(&mut a, &allocs, None, t(2));
    assert!(a.allocate(t(3)).is_empty());
}

#[test]
fn filter_honoured_until_expiry() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("f1"), roles(&["*"]), true);
    let allocs = a.allocate(t(0));
    decline_all(&mut a, &allocs, Some(Duration::from_secs(10)), t(0));
    assert!(a.allocate(t(1)).is_empty());
    assert!(a.allocate(t(9_999)).is_empty());
    // A second framework is not affected by f1's filter.
    a.add_framework(fw("f2"), roles(&["*"]), true);
    let allocs2 = a.allocate(t(9_999));
    assert_eq!(pairs(&allocs2), [("f2".into(), "a1".into())]);
    a.remove_framework(&fw("f2"));
    // Expires exactly at its time.
    let allocs = a.allocate(t(10_000));
    assert_eq!(pairs(&allocs), [("f1".into(), "a1".into())]);
}

#[test]
fn filter_only_covers_the_declined_resources() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("f1"), roles(&["*"]), true);
    let allocs = a.allocate(t(0));
    let mut held = allocs[0].resources.clone();
    // Use 3 cpus, decline the rest for 10 s.
    let used = held.take(&r("cpus:3;mem:3072")).unwrap();
    a.recover(
        &agent("a1"),
        &fw("f1"),
        &Role::default(),
        &held,
        Some(Duration::from_secs(10)),
        t(0),
    );
    assert!(a.allocate(t(1)).is_empty());
    // A task finishes: more is free than was declined, so it is offered.
    a.recover(&agent("a1"), &fw("f1"), &Role::default(), &used, None, t(2));
    let allocs = a.allocate(t(3));
    assert_eq!(allocs.len(), 1);
    assert_eq!(allocs[0].resources.unreserved, r("cpus:4;mem:4096"));
}

#[test]
fn revive_clears_filters() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("f1"), roles(&["*", "x"]), true);
    let allocs = a.allocate(t(0));
    assert_eq!(allocs.len(), 1);
    let first_role = allocs[0].role.clone();
    decline_all(&mut a, &allocs, Some(Duration::from_secs(3600)), t(0));
    // The filter is per role: the other role can still be offered.
    let allocs = a.allocate(t(1));
    assert_eq!(allocs.len(), 1);
    assert_ne!(allocs[0].role, first_role);
    decline_all(&mut a, &allocs, Some(Duration::from_secs(3600)), t(1));
    assert!(a.allocate(t(2)).is_empty());
    // Reviving one role clears only its filters.
    a.revive(&fw("f1"), Some(&roles(&["x"])));
    let allocs = a.allocate(t(3));
    assert_eq!(allocs.len(), 1);
    assert_eq!(allocs[0].role, role("x"));
    decline_all(&mut a, &allocs, Some(Duration::from_secs(3600)), t(3));
    a.revive(&fw("f1"), None);
    assert_eq!(a.allocate(t(4)).len(), 1);
}

#[test]
fn default_refuse_is_five_seconds() {
    let mut a = new();
    let refuse = a.config().default_refuse;
    assert_eq!(refuse, Duration::from_secs(5));
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("f1"), roles(&["*"]), true);
    let allocs = a.allocate(t(1_000));
    decline_all(&mut a, &allocs, Some(refuse), t(1_000));
    assert!(a.allocate(t(5_999)).is_empty());
    assert_eq!(a.allocate(t(6_000)).len(), 1);
    // Zero refuse installs no filter.
    let allocs = a.allocate(t(6_000));
    assert!(allocs.is_empty());
    let held = a.allocations_on(&agent("a1"));
    for (f, ro, al) in held {
        a.recover(&agent("a1"), &f, &ro, &al, Some(Duration::ZERO), t(6_001));
    }
    assert_eq!(a.allocate(t(6_002)).len(), 1);
}

#[test]
fn suppressed_framework_gets_nothing_until_revive() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("f1"), roles(&["*"]), true);
    a.suppress(&fw("f1"), None);
    assert!(a.allocate(t(0)).is_empty());
    a.revive(&fw("f1"), None);
    assert_eq!(a.allocate(t(1)).len(), 1);

    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("f1"), roles(&["a", "b"]), true);
    a.suppress(&fw("f1"), Some(&roles(&["a"])));
    let allocs = a.allocate(t(0));
    assert_eq!(allocs.len(), 1);
    assert_eq!(allocs[0].role, role("b"));
    decline_all(&mut a, &allocs, None, t(0));
    a.suppress(&fw("f1"), Some(&roles(&["b"])));
    assert!(a.allocate(t(1)).is_empty());
    a.revive(&fw("f1"), Some(&roles(&["a"])));
    assert_eq!(a.allocate(t(2))[0].role, role("a"));
}

/// Cluster of 4 agents × 4 cpus; role "z" already holds 6 cpus, role "b"
/// nothing. Without quota DRF gives "b" the rest; with a guarantee of 10
/// cpus, "z" gets it first.
fn quota_cluster(guarantee: Option<&str>) -> Allocator {
    let mut a = new();
    for i in 0..4 {
        a.add_agent(agent(&format!("a{i}")), unres("cpus:4;mem:4096"), true);
    }
    a.add_framework(fw("fz"), roles(&["z"]), true);
    a.add_framework(fw("fb"), roles(&["b"]), true);
    for (ag, used) in [("a0", "cpus:4;mem:4096"), ("a1", "cpus:2;mem:2048")] {
        let used = Allocated {
            unreserved: r(used),
            reserved: Resources::empty(),
        };
        a.add_used(&agent(ag), &fw("fz"), &role("z"), &used)
            .unwrap();
    }
    if let Some(g) = guarantee {
        let quota = Quota {
            guarantee: r(g),
            limit: None,
        };
        a.set_quota(role("z"), quota).unwrap();
    }
    a
}

#[test]
fn quota_guarantee_met_before_fair_sharing() {
    // Control: without quota, "b" (lower share) gets everything left.
    let mut a = quota_cluster(None);
    a.allocate(t(0));
    assert_eq!(a.role_allocated(&role("z")), r("cpus:6;mem:6144"));
    assert_eq!(a.role_allocated(&role("b")), r("cpus:10;mem:10240"));

    let mut a = quota_cluster(Some("cpus:10;mem:10240"));
    let allocs = a.allocate(t(0));
    a.check_invariants().unwrap();
    assert_eq!(a.role_allocated(&role("z")), r("cpus:10;mem:10240"));
    assert_eq!(a.role_allocated(&role("b")), r("cpus:6;mem:6144"));
    // One offer per (framework, agent, role).
    let mut keys: Vec<_> = allocs
        .iter()
        .map(|x| (&x.framework, &x.agent, &x.role))
        .collect();
    let n = keys.len();
    keys.sort();
    keys.dedup();
    assert_eq!(keys.len(), n);
}

#[test]
fn quota_headroom_is_kept_from_other_roles() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_agent(agent("a2"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("fa"), roles(&["a"]), true);
    a.add_framework(fw("fb"), roles(&["b"]), true);
    a.set_quota(
        role("a"),
        Quota {
            guarantee: r("cpus:6;mem:6144"),
            limit: None,
        },
    )
    .unwrap();
    // fa declines everything for a long time: its guarantee stays unmet and
    // the headroom is held back from b.
    let allocs = a.allocate(t(0));
    let total_a: Resources = allocs
        .iter()
        .filter(|x| x.role == role("a"))
        .map(|x| x.resources.total())
        .fold(Resources::empty(), |acc, x| acc + x);
    assert_eq!(total_a, r("cpus:6;mem:6144"));
    let fb_got = a.allocated_to(&fw("fb"));
    assert_eq!(fb_got, r("cpus:2;mem:2048"));
    decline_all(&mut a, &allocs, Some(Duration::from_secs(100)), t(0));
    let allocs = a.allocate(t(1));
    // b cannot take what a's guarantee needs.
    let b_total = a.role_allocated(&role("b"));
    assert!(
        b_total.cpus <= Scalar::from_units(2),
        "{b_total} {allocs:?}"
    );
}

#[test]
fn quota_limit_caps_a_role() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:8;mem:8192"), true);
    a.add_agent(agent("a2"), unres("cpus:8;mem:8192"), true);
    a.add_framework(fw("f1"), roles(&["capped"]), true);
    a.set_quota(
        role("capped"),
        Quota {
            guarantee: Resources::empty(),
            limit: Some(r("cpus:5;mem:100000")),
        },
    )
    .unwrap();
    let allocs = a.allocate(t(0));
    assert_eq!(
        a.role_allocated(&role("capped")).cpus,
        Scalar::from_units(5)
    );
    assert!(allocs.iter().all(|x| x.framework == fw("f1")));
    assert!(a.allocate(t(1)).is_empty());
    // Another role can use the rest.
    a.add_framework(fw("f2"), roles(&["other"]), true);
    a.allocate(t(2));
    assert_eq!(
        a.role_allocated(&role("other")).cpus,
        Scalar::from_units(11)
    );
    a.check_invariants().unwrap();
}

#[test]
fn quota_validation() {
    let mut a = new();
    let e = a
        .set_quota(
            role("r"),
            Quota {
                guarantee: r("cpus:4"),
                limit: Some(r("cpus:2;mem:10")),
            },
        )
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        r#"invalid quota for role "r": guarantee [cpus:4] exceeds limit [cpus:2;mem:10]"#
    );
    assert!(a.roles().is_empty());
    assert!(a.set_quota(Role::default(), Quota::default()).is_err());
    a.set_quota(
        role("r"),
        Quota {
            guarantee: r("cpus:1"),
            limit: Some(r("cpus:1")),
        },
    )
    .unwrap();
    assert_eq!(a.roles()[0].quota.as_ref().unwrap().guarantee, r("cpus:1"));
    a.remove_quota(&role("r"));
    assert!(a.roles().is_empty());
}

#[test]
fn weights_skew_shares() {
    let mut a = new();
    for i in 0..8 {
        a.add_agent(agent(&format!("a{i}")), unres("cpus:1;mem:1024"), true);
    }
    a.add_framework(fw("f1"), roles(&["light"]), true);
    a.add_framework(fw("f3"), roles(&["heavy"]), true);
    a.set_weight(role("heavy"), Weight::new(3.0).unwrap());
    assert_eq!(a.weight(&role("heavy")).to_f64(), 3.0);
    assert_eq!(a.weight(&role("nobody")), Weight::ONE);
    a.allocate(t(0));
    assert_eq!(a.allocated_to(&fw("f1")).cpus, Scalar::from_units(2));
    assert_eq!(a.allocated_to(&fw("f3")).cpus, Scalar::from_units(6));
}

#[test]
fn add_used_and_update_total_checks() {
    let mut a = new();
    let mut total = unres("cpus:4;mem:4096;ports:[1000-1999]");
    total.reserved.insert(role("r"), r("cpus:2"));
    a.add_agent(agent("a1"), total.clone(), true);
    a.add_framework(fw("f1"), roles(&["r"]), false);
    let used = Allocated {
        unreserved: r("cpus:1;ports:[1000-1000]"),
        reserved: r("cpus:2"),
    };
    assert_eq!(
        a.add_used(&agent("zz"), &fw("f1"), &role("r"), &used),
        Err(AllocatorError::UnknownAgent(agent("zz")))
    );
    assert_eq!(
        a.add_used(&agent("a1"), &fw("zz"), &role("r"), &used)
            .unwrap_err()
            .to_string(),
        r#"unknown framework "zz""#
    );
    // Reserved resources of another role are not free to "x".
    let e = a
        .add_used(&agent("a1"), &fw("f1"), &role("x"), &used)
        .unwrap_err();
    assert!(matches!(e, AllocatorError::OverAllocation { .. }), "{e}");
    assert!(e.to_string().contains("exceeds its free resources"), "{e}");
    a.add_used(&agent("a1"), &fw("f1"), &role("r"), &used)
        .unwrap();
    let e = a
        .add_used(&agent("a1"), &fw("f1"), &role("r"), &used)
        .unwrap_err();
    assert!(matches!(e, AllocatorError::OverAllocation { .. }));
    a.check_invariants().unwrap();

    // Shrinking below what is allocated is rejected and changes nothing.
    let e = a
        .update_agent_total(&agent("a1"), unres("cpus:8;mem:4096;ports:[1000-1999]"))
        .unwrap_err();
    assert!(
        matches!(e, AllocatorError::TotalBelowAllocated { .. }),
        "{e}"
    );
    let mut smaller = total.clone();
    smaller.unreserved = r("cpus:0.5;mem:4096;ports:[1000-1999]");
    assert!(a.update_agent_total(&agent("a1"), smaller).is_err());
    assert_eq!(a.agent_total(&agent("a1")), Some(&total));
    let mut bigger = total.clone();
    bigger.unreserved = r("cpus:16;mem:4096;ports:[1000-1999]");
    a.update_agent_total(&agent("a1"), bigger).unwrap();
    assert_eq!(
        a.free(&agent("a1")).unwrap().unreserved,
        r("cpus:15;mem:4096;ports:[1001-1999]")
    );
    assert_eq!(a.cluster_total(), r("cpus:18;mem:4096"));
    assert_eq!(
        a.update_agent_total(&agent("zz"), AgentResources::default()),
        Err(AllocatorError::UnknownAgent(agent("zz")))
    );
    a.check_invariants().unwrap();
}

#[test]
fn remove_framework_and_agent_free_everything() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_agent(agent("a2"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("f1"), roles(&["r"]), true);
    a.add_framework(fw("f2"), roles(&["r"]), true);
    a.allocate(t(0));
    assert_eq!(a.role_allocated(&role("r")), r("cpus:8;mem:8192"));
    a.remove_framework(&fw("f1"));
    assert_eq!(a.role_allocated(&role("r")), r("cpus:4;mem:4096"));
    assert_eq!(a.allocated_to(&fw("f1")), Resources::empty());
    a.check_invariants().unwrap();
    let f2_agent = a
        .allocations_on(&agent("a1"))
        .first()
        .map(|_| agent("a1"))
        .unwrap_or(agent("a2"));
    a.remove_agent(&f2_agent);
    assert_eq!(a.allocated_to(&fw("f2")), Resources::empty());
    assert_eq!(a.cluster_total(), r("cpus:4;mem:4096"));
    a.check_invariants().unwrap();
    // Recover for removed things is ignored.
    a.recover(
        &f2_agent,
        &fw("f2"),
        &role("r"),
        &Allocated::default(),
        None,
        t(1),
    );
    a.recover(
        &agent("a1"),
        &fw("f1"),
        &role("r"),
        &Allocated::default(),
        Some(Duration::from_secs(1)),
        t(1),
    );
    a.remove_framework(&fw("f2"));
    assert!(a.roles().is_empty());
    assert_eq!(
        a.update_framework(&fw("f2"), roles(&["x"])),
        Err(AllocatorError::UnknownFramework(fw("f2")))
    );
}

#[test]
fn update_framework_roles() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:4;mem:4096"), true);
    a.add_framework(fw("f1"), roles(&["old"]), true);
    let allocs = a.allocate(t(0));
    assert_eq!(allocs[0].role, role("old"));
    a.update_framework(&fw("f1"), roles(&["new"])).unwrap();
    // The allocation in the old role is kept until recovered.
    assert_eq!(a.role_allocated(&role("old")), r("cpus:4;mem:4096"));
    assert!(
        a.roles()
            .iter()
            .any(|i| i.role == role("old") && i.frameworks.is_empty())
    );
    decline_all(&mut a, &allocs, None, t(1));
    assert!(a.roles().iter().all(|i| i.role != role("old")));
    let allocs = a.allocate(t(2));
    assert_eq!(allocs[0].role, role("new"));
    a.check_invariants().unwrap();
}

#[test]
fn min_allocatable_skips_crumbs() {
    let mut a = new();
    a.add_agent(agent("a1"), unres("cpus:0.005;mem:16;disk:1000"), true);
    a.add_framework(fw("f1"), roles(&["*"]), true);
    assert!(a.allocate(t(0)).is_empty());
    let cfg = AllocatorConfig::default();
    assert!(cfg.is_allocatable(&r("cpus:0.01")));
    assert!(cfg.is_allocatable(&r("mem:32")));
    assert!(!cfg.is_allocatable(&r("cpus:0.009;mem:31;disk:100000")));
    let any = AllocatorConfig {
        min_allocatable: Resources::empty(),
        ..AllocatorConfig::default()
    };
    assert!(any.is_allocatable(&r("disk:1")));
    assert!(!any.is_allocatable(&Resources::empty()));
}

#[test]
fn deterministic() {
    let run = || {
        let mut a = new();
        for i in 0..20 {
            a.add_agent(agent(&format!("a{i}")), unres("cpus:4;mem:4096"), true);
        }
        for i in 0..7 {
            a.add_framework(fw(&format!("f{i}")), roles(&[["x", "y", "z"][i % 3]]), true);
        }
        a.set_weight(role("y"), Weight::new(2.0).unwrap());
        let mut out = a.allocate(t(0));
        decline_all(&mut a, &out[..5], Some(Duration::from_secs(1)), t(0));
        out.extend(a.allocate(t(10)));
        out.extend(a.allocate(t(2000)));
        out
    };
    assert_eq!(run(), run());
}
