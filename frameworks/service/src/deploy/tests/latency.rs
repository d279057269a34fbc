//! The canary analysis on the router's p99 latency: `maxP99LatencyMs`
//! (absolute) and `maxP99OverStable` (relative to the stable version).

use super::*;

/// A canary that fails above 500 ms p99, or above 2× the stable p99.
fn latency_dep() -> serde_json::Value {
    json!({"strategy": "canary", "canary": {
        "steps": [{"weight": 20}, {"pause": 120}, {"weight": 100}],
        "analysis": {"intervalSeconds": 30, "minRequests": 20, "maxErrorRate": 0.05,
            "maxP99LatencyMs": 500, "maxP99OverStable": 2}}})
}

/// Error-free traffic: `(requests, p99 in ms)` for A (stable) and B (canary).
fn timed(a: (u64, Option<u64>), b: (u64, Option<u64>)) -> RouterStats {
    let v = |(requests, p99): (u64, Option<u64>)| VersionStats {
        requests,
        errors: 0,
        p99: p99.map(Duration::from_millis),
    };
    [(A, v(a)), (B, v(b))].into()
}

/// A canary of 5 instances with 20% of the traffic on B, and its simulation.
fn weighted() -> (Deployment, Sim) {
    let (a, b) = (app(5, A, latency_dep()), app(5, B, latency_dep()));
    let mut sim = Sim::with(A, 5);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    assert_eq!(launches(&run(&mut d, &mut sim, &RouterStats::new())), 1);
    sim.settle(Some(B));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(acts, vec![Action::SetWeights([(A, 80), (B, 20)].into())]);
    (d, sim)
}

/// Runs the analysis at the end of the first interval on `stats`; returns
/// the reason for a rollback, if there is one.
fn analyse(d: &mut Deployment, sim: &mut Sim, stats: &RouterStats) -> Option<String> {
    sim.now = sim.now.plus(Duration::from_secs(30));
    let acts = run(d, sim, stats);
    let why = acts.iter().find_map(|a| match a {
        Action::RollBack { to_version, why } => {
            assert_eq!(*to_version, A);
            Some(why.clone())
        }
        _ => None,
    });
    if why.is_some() {
        assert!(acts.contains(&Action::Switch { to_version: A }));
        assert_eq!(kills(&acts), 1, "the canary instance goes");
    } else {
        assert!(acts.is_empty(), "{acts:?}");
    }
    why
}

/// Ends a rollback and checks A is whole and B gone.
fn rolled_back(mut d: Deployment, mut sim: Sim) {
    sim.settle(None);
    assert_eq!(
        run(&mut d, &mut sim, &RouterStats::new()),
        vec![Action::Finished]
    );
    assert!(matches!(d.state, State::RolledBack(_)));
    assert_eq!((sim.count(A), sim.count(B)), (5, 0));
}

#[test]
fn a_canary_p99_above_the_absolute_limit_rolls_back() {
    let (mut d, mut sim) = weighted();
    // 600 ms is above 500 ms, though only 1.2× the stable version's.
    let why = analyse(&mut d, &mut sim, &timed((400, Some(500)), (100, Some(600))));
    assert_eq!(
        why.as_deref(),
        Some("canary p99 latency 600ms is above 500ms")
    );
    assert_eq!(d.view(&sim.instances, sim.now).why, why);
    rolled_back(d, sim);
}

#[test]
fn a_canary_p99_more_than_the_factor_over_the_stables_rolls_back() {
    let (mut d, mut sim) = weighted();
    // 450 ms is below the 500 ms limit but 2.25× the stable 200 ms.
    let why = analyse(&mut d, &mut sim, &timed((400, Some(200)), (100, Some(450))));
    assert_eq!(
        why.as_deref(),
        Some("canary p99 latency 450ms is more than 2× the stable version's 200ms")
    );
    rolled_back(d, sim);
}

#[test]
fn a_canary_p99_within_both_bounds_continues_to_success() {
    let (mut d, mut sim) = weighted();
    // Exactly 2× the stable p99 and exactly the limit: not above either.
    let fine = timed((400, Some(250)), (100, Some(500)));
    assert_eq!(analyse(&mut d, &mut sim, &fine), None);
    assert_eq!(d.view(&sim.instances, sim.now).step, "pause 120s");
    // Every later analysis passes too; after the pause B takes over.
    for _ in 0..2 {
        assert_eq!(analyse(&mut d, &mut sim, &fine), None);
    }
    sim.now = sim.now.plus(Duration::from_secs(30));
    let acts = run(&mut d, &mut sim, &fine);
    assert_eq!(
        acts,
        vec![Action::Launch {
            version: B,
            count: 4
        }],
        "the 100% step starts B in full"
    );
    sim.settle(Some(B));
    let acts = run(&mut d, &mut sim, &fine);
    assert_eq!(acts[0], Action::Switch { to_version: B });
    assert_eq!(kills(&acts), 5);
    sim.settle(None);
    assert_eq!(run(&mut d, &mut sim, &fine), vec![Action::Finished]);
    assert_eq!(d.state, State::Succeeded);
    assert_eq!((sim.count(A), sim.count(B)), (0, 5));
}

#[test]
fn an_unknown_p99_skips_only_the_checks_that_need_it() {
    // The canary's p99 unknown: neither latency check can fail it.
    let (mut d, mut sim) = weighted();
    assert_eq!(
        analyse(&mut d, &mut sim, &timed((400, Some(100)), (100, None))),
        None
    );
    // The stable p99 unknown: no comparison, but the absolute limit holds.
    assert_eq!(
        analyse(&mut d, &mut sim, &timed((400, None), (100, Some(450)))),
        None,
        "450 ms is within 500 ms, and there is nothing to compare it with"
    );
    let why = analyse(&mut d, &mut sim, &timed((400, None), (100, Some(501))));
    assert_eq!(
        why.as_deref(),
        Some("canary p99 latency 501ms is above 500ms")
    );
    rolled_back(d, sim);
}

#[test]
fn latency_needs_min_requests_on_each_side_it_uses() {
    let (mut d, mut sim) = weighted();
    // Too few canary requests: no verdict at all, even at 5 s.
    assert_eq!(
        analyse(&mut d, &mut sim, &timed((400, Some(100)), (19, Some(5000)))),
        None
    );
    // Too few stable requests: no comparison with the stable version.
    assert_eq!(
        analyse(&mut d, &mut sim, &timed((19, Some(10)), (100, Some(400)))),
        None
    );
    // With enough on both sides the same canary p99 is 4× the stable one.
    let why = analyse(&mut d, &mut sim, &timed((20, Some(100)), (20, Some(400))));
    assert!(why.is_some_and(|w| w.contains("more than 2× the stable version's 100ms")));
    rolled_back(d, sim);
}
