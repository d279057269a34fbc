use super::*;

fn agent(host: &str, attrs: &[(&str, &str)]) -> AgentView {
    AgentView {
        hostname: host.into(),
        attributes: attrs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect(),
    }
}

fn c(field: &str, op: ConstraintOp) -> Constraint {
    Constraint {
        field: field.into(),
        op,
    }
}

fn zone(z: &str) -> AgentView {
    agent(&format!("h-{z}"), &[("zone", z)])
}

#[test]
fn unique_refuses_a_used_value() {
    let u = c("hostname", ConstraintOp::Unique);
    let a = agent("a", &[]);
    let b = agent("b", &[]);
    assert!(u.allows(&a, &[], 3));
    assert!(!u.allows(&a, &[&a], 3));
    assert!(u.allows(&b, &[&a], 3));
}

#[test]
fn cluster_with_and_without_value() {
    let fixed = c("zone", ConstraintOp::Cluster(Some("z1".into())));
    assert!(fixed.allows(&zone("z1"), &[], 1));
    assert!(!fixed.allows(&zone("z2"), &[], 1));
    let free = c("zone", ConstraintOp::Cluster(None));
    assert!(
        free.allows(&zone("z2"), &[], 1),
        "first instance picks the value"
    );
    assert!(free.allows(&zone("z2"), &[&zone("z2")], 2));
    assert!(!free.allows(&zone("z1"), &[&zone("z2")], 2));
}

#[test]
fn group_by_with_count_spreads_evenly_with_remainder() {
    // 5 instances over 2 zones: 2 per zone plus one remainder.
    let g = c("zone", ConstraintOp::GroupBy(Some(2)));
    let (z1, z2, z3) = (zone("z1"), zone("z2"), zone("z3"));
    assert!(g.allows(&z1, &[], 5));
    assert!(g.allows(&z2, &[&z1], 5), "a second group is still free");
    assert!(!g.allows(&z3, &[&z1, &z2], 5), "only 2 groups wanted");
    assert!(g.allows(&z1, &[&z1, &z2], 5), "below the per-group count");
    // z1 at 2 (= per group), remainder 1 unused: one more allowed.
    assert!(g.allows(&z1, &[&z1, &z1, &z2, &z2], 5));
    // The remainder is used by z1's third: z2 may not reach 3.
    assert!(!g.allows(&z2, &[&z1, &z1, &z1, &z2, &z2], 5));
}

#[test]
fn group_by_without_count_fills_the_least_used_value() {
    let g = c("zone", ConstraintOp::GroupBy(None));
    let (z1, z2) = (zone("z1"), zone("z2"));
    assert!(g.allows(&z1, &[], 4));
    assert!(!g.allows(&z1, &[&z1, &z1, &z2], 4));
    assert!(g.allows(&z2, &[&z1, &z1, &z2], 4));
    assert!(
        g.allows(&zone("z3"), &[&z1, &z2], 4),
        "a new value is always allowed"
    );
}

#[test]
fn max_per_counts_per_value() {
    let m = c("zone", ConstraintOp::MaxPer(2));
    let z1 = zone("z1");
    assert!(m.allows(&z1, &[&z1], 9));
    assert!(!m.allows(&z1, &[&z1, &z1], 9));
    assert!(m.allows(&zone("z2"), &[&z1, &z1], 9));
}

#[test]
fn like_and_unlike_match_whole_values() {
    let like = c(
        "hostname",
        ConstraintOp::Like(Pattern::new("web-[0-9]+").unwrap()),
    );
    assert!(like.allows(&agent("web-12", &[]), &[], 1));
    assert!(
        !like.allows(&agent("my-web-12", &[]), &[], 1),
        "anchored at the start"
    );
    assert!(
        !like.allows(&agent("web-12x", &[]), &[], 1),
        "anchored at the end"
    );
    let unlike = c("rack", ConstraintOp::Unlike(Pattern::new("r1|r2").unwrap()));
    assert!(!unlike.allows(&agent("h", &[("rack", "r1")]), &[], 1));
    assert!(unlike.allows(&agent("h", &[("rack", "r3")]), &[], 1));
    assert!(
        unlike.allows(&agent("h", &[]), &[], 1),
        "a missing attribute passes UNLIKE only"
    );
}

#[test]
fn is_compares_exactly_and_missing_attributes_fail() {
    let is = c("ssd", ConstraintOp::Is("true".into()));
    assert!(is.allows(&agent("h", &[("ssd", "true")]), &[], 1));
    assert!(!is.allows(&agent("h", &[("ssd", "false")]), &[], 1));
    assert!(!is.allows(&agent("h", &[]), &[], 1));
    let u = c("rack", ConstraintOp::Unique);
    assert!(!u.allows(&agent("h", &[]), &[], 1));
}

#[test]
fn allows_all_needs_every_constraint() {
    let cs = vec![
        c("hostname", ConstraintOp::Unique),
        c("zone", ConstraintOp::Is("z1".into())),
    ];
    let a = zone("z1");
    assert!(allows_all(&cs, &a, &[], 2));
    assert!(!allows_all(&cs, &a, &[&a], 2));
    assert!(!allows_all(&cs, &zone("z2"), &[], 2));
}

#[test]
fn parse_reports_each_bad_constraint_with_its_path() {
    let mut ctx = Ctx::default();
    let v = serde_json::json!([
        ["hostname", "UNIQUE"],
        ["rack", "LIKE", "("],
        ["zone", "MAX_PER", "x"],
        ["zone", "GROUP_BY", "0"],
        ["zone", "NEAR"],
        ["zone"],
        ["zone", "IS"],
        ["hostname", "UNIQUE"],
        ["@hostname", "CLUSTER", "a"]
    ]);
    assert!(parse_list(&mut ctx, &v, "/constraints").is_none());
    let paths: Vec<&str> = ctx.errors.iter().map(|e| e.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/constraints/1/2",
            "/constraints/2/2",
            "/constraints/3/2",
            "/constraints/4/1",
            "/constraints/5",
            "/constraints/6/2",
            "/constraints/7"
        ]
    );
    let mut ctx = Ctx::default();
    let ok = parse_list(
        &mut ctx,
        &serde_json::json!([["@hostname", "GROUP_BY"], ["rack", "LIKE", "r[0-9]"]]),
        "/constraints",
    )
    .unwrap();
    assert_eq!(ok[0].field, "hostname");
    assert_eq!(ok[0].op, ConstraintOp::GroupBy(None));
}
