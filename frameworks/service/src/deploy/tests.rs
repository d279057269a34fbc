use std::time::Duration;

use serde_json::json;

use super::*;
use crate::app::AppDefinition;

mod invariant;
mod latency;

const A: Timestamp = Timestamp::from_secs(1000);
const B: Timestamp = Timestamp::from_secs(2000);

fn version(v: serde_json::Value, at: Timestamp) -> AppVersion {
    AppVersion::first(AppDefinition::from_value(&v).unwrap(), at)
}

fn rolling_app(
    instances: u32,
    mhc: f64,
    moc: f64,
    at: Timestamp,
    extra: serde_json::Value,
) -> AppVersion {
    let mut v = json!({"id": "/web", "cmd": format!("serve {at}"), "instances": instances,
        "upgradeStrategy": {"minimumHealthCapacity": mhc, "maximumOverCapacity": moc}});
    if let (Some(m), Some(e)) = (v.as_object_mut(), extra.as_object()) {
        m.extend(e.clone());
    }
    version(v, at)
}

fn app(instances: u32, at: Timestamp, deployment: serde_json::Value) -> AppVersion {
    version(
        json!({"id": "/web", "cmd": format!("serve {at}"), "instances": instances, "deployment": deployment}),
        at,
    )
}

/// A tiny runtime: launched instances appear at once, killed ones vanish at
/// the next `settle`.
struct Sim {
    instances: Vec<Instance>,
    next: u32,
    now: Timestamp,
    killed: Vec<String>,
}

impl Sim {
    fn with(version: Timestamp, n: u32) -> Sim {
        let mut s = Sim {
            instances: Vec::new(),
            next: 0,
            now: Timestamp::from_secs(5000),
            killed: Vec::new(),
        };
        for _ in 0..n {
            s.launch(version);
            let last = s.instances.len() - 1;
            s.instances[last].state = InstanceState::Running;
            s.instances[last].healthy_since = Some(Timestamp::from_secs(0));
        }
        s
    }

    fn launch(&mut self, version: Timestamp) {
        self.next += 1;
        self.instances.push(Instance {
            id: format!("i{:03}", self.next),
            version,
            state: InstanceState::Staging,
            healthy_since: None,
            launched_at: self.now,
            agent: String::new(),
        });
    }

    fn apply(&mut self, actions: &[Action]) {
        for a in actions {
            match a {
                Action::Launch { version, count } => {
                    (0..*count).for_each(|_| self.launch(*version))
                }
                Action::Kill { instance, .. } => self.killed.push(instance.clone()),
                _ => {}
            }
        }
    }

    /// Killed instances end; every staging instance of `v` becomes healthy.
    fn settle(&mut self, v: Option<Timestamp>) {
        let killed = std::mem::take(&mut self.killed);
        self.instances.retain(|i| !killed.contains(&i.id));
        for i in &mut self.instances {
            if Some(i.version) == v && i.state == InstanceState::Staging {
                i.state = InstanceState::Running;
                i.healthy_since = Some(self.now);
            }
        }
    }

    fn count(&self, v: Timestamp) -> usize {
        self.instances.iter().filter(|i| i.version == v).count()
    }
}

fn launches(actions: &[Action]) -> u32 {
    actions
        .iter()
        .map(|a| {
            if let Action::Launch { count, .. } = a {
                *count
            } else {
                0
            }
        })
        .sum()
}

fn kills(actions: &[Action]) -> usize {
    actions
        .iter()
        .filter(|a| matches!(a, Action::Kill { .. }))
        .count()
}

fn run(d: &mut Deployment, sim: &mut Sim, stats: &RouterStats) -> Vec<Action> {
    let (next, actions) = step(d, &sim.instances, stats, sim.now);
    *d = next;
    sim.apply(&actions);
    actions
}

#[test]
fn marathon_example_half_capacity_no_overcapacity() {
    // instances 4, mhc 0.5, moc 0: kill 2 at once, start 2.
    let (a, b) = (
        rolling_app(4, 0.5, 0.0, A, json!({})),
        rolling_app(4, 0.5, 0.0, B, json!({})),
    );
    let mut sim = Sim::with(A, 4);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(kills(&acts), 2);
    assert_eq!(launches(&acts), 0, "the killed ones still hold capacity");
    sim.settle(None);
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(launches(&acts), 2);
    sim.settle(Some(B));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(kills(&acts), 2, "each new healthy instance lets one old go");
    sim.settle(Some(B));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(launches(&acts), 2);
    sim.settle(Some(B));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(acts, vec![Action::Finished]);
    assert_eq!(d.state, State::Succeeded);
    assert_eq!((sim.count(A), sim.count(B)), (0, 4));
}

#[test]
fn marathon_example_full_capacity_no_overcapacity_allows_one_extra() {
    // instances 4, mhc 1, moc 0: minHealthy == maxCapacity, so one extra
    // instance is allowed; nothing is killed until it is healthy.
    let (a, b) = (
        rolling_app(4, 1.0, 0.0, A, json!({})),
        rolling_app(4, 1.0, 0.0, B, json!({})),
    );
    let mut sim = Sim::with(A, 4);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!((kills(&acts), launches(&acts)), (0, 1));
    let Plan::Rolling(r) = &d.plan else { panic!() };
    assert_eq!((r.min_healthy, r.max_capacity), (4, 5));
    for round in 0..4 {
        sim.settle(Some(B));
        let acts = run(&mut d, &mut sim, &RouterStats::new());
        assert_eq!(kills(&acts), 1, "round {round}");
        sim.settle(Some(B));
        let acts = run(&mut d, &mut sim, &RouterStats::new());
        if round < 3 {
            assert_eq!(launches(&acts), 1, "round {round}");
        } else {
            assert_eq!(acts, vec![Action::Finished]);
        }
        assert!(sim.instances.len() <= 5);
    }
    assert_eq!((sim.count(A), sim.count(B)), (0, 4));
}

#[test]
fn marathon_defaults_launch_all_new_then_kill_old() {
    // mhc 1, moc 1: maxCapacity 8: start 4 new, kill none yet.
    let (a, b) = (
        rolling_app(4, 1.0, 1.0, A, json!({})),
        rolling_app(4, 1.0, 1.0, B, json!({})),
    );
    let mut sim = Sim::with(A, 4);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!((kills(&acts), launches(&acts)), (0, 4));
    sim.settle(Some(B));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(kills(&acts), 4);
    assert!(
        acts.iter()
            .all(|a| !matches!(a, Action::Kill { drain: false, .. })),
        "healthy ones drain"
    );
    sim.settle(Some(B));
    assert_eq!(
        run(&mut d, &mut sim, &RouterStats::new()),
        vec![Action::Finished]
    );
}

#[test]
fn zero_capacity_kills_everything_first() {
    let (a, b) = (
        rolling_app(3, 0.0, 0.0, A, json!({})),
        rolling_app(3, 0.0, 0.0, B, json!({})),
    );
    let mut sim = Sim::with(A, 3);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!((kills(&acts), launches(&acts)), (3, 0));
    sim.settle(None);
    assert_eq!(launches(&run(&mut d, &mut sim, &RouterStats::new())), 3);
}

#[test]
fn new_instances_count_only_after_min_healthy_time_and_readiness() {
    let extra = json!({"deployment": {"minHealthySeconds": 30},
        "portDefinitions": [{"port": 0, "name": "http-api"}], "readinessChecks": [{}]});
    let a = rolling_app(2, 1.0, 0.0, A, extra.clone());
    let b = rolling_app(2, 1.0, 0.0, B, extra);
    let mut sim = Sim::with(A, 2);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    assert_eq!(launches(&run(&mut d, &mut sim, &RouterStats::new())), 1);
    sim.settle(Some(B)); // Running and "healthy" (no health checks), not Ready.
    sim.now = sim.now.plus(Duration::from_secs(60));
    assert_eq!(
        kills(&run(&mut d, &mut sim, &RouterStats::new())),
        0,
        "not ready"
    );
    let now = sim.now;
    for i in sim.instances.iter_mut().filter(|i| i.version == B) {
        i.state = InstanceState::Ready;
        i.healthy_since = Some(now);
    }
    sim.now = sim.now.plus(Duration::from_secs(29));
    assert_eq!(
        kills(&run(&mut d, &mut sim, &RouterStats::new())),
        0,
        "ready for 29s only"
    );
    sim.now = sim.now.plus(Duration::from_secs(1));
    assert_eq!(kills(&run(&mut d, &mut sim, &RouterStats::new())), 1);
    let v = d.view(&sim.instances, sim.now);
    assert_eq!((v.old_instances, v.new_instances, v.new_healthy), (2, 1, 1));
    assert_eq!(v.strategy, "rolling");
}

#[test]
fn auto_revert_at_the_progress_deadline() {
    let extra = json!({"deployment": {"progressDeadlineSeconds": 60}});
    let a = rolling_app(2, 0.5, 0.0, A, extra.clone());
    let b = rolling_app(2, 0.5, 0.0, B, extra);
    let mut sim = Sim::with(A, 2);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    assert_eq!(kills(&run(&mut d, &mut sim, &RouterStats::new())), 1);
    sim.settle(None); // B never becomes healthy.
    assert_eq!(launches(&run(&mut d, &mut sim, &RouterStats::new())), 1);
    sim.now = sim.now.plus(Duration::from_secs(60));
    assert!(
        !run(&mut d, &mut sim, &RouterStats::new())
            .iter()
            .any(|a| matches!(a, Action::RollBack { .. }))
    );
    sim.now = sim.now.plus(Duration::from_secs(1));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert!(
        matches!(&acts[0], Action::RollBack { to_version, .. } if *to_version == A),
        "{acts:?}"
    );
    assert_eq!(d.to.as_ref().unwrap().version, A);
    assert!(
        d.view(&sim.instances, sim.now)
            .why
            .unwrap()
            .contains("within 60s")
    );
    // Going back to A: the unhealthy B instance goes, A comes back.
    assert_eq!(kills(&acts), 1);
    sim.settle(Some(A));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(launches(&acts), 1);
    sim.settle(Some(A));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(acts, vec![Action::Finished]);
    assert!(matches!(d.state, State::RolledBack(_)));
    assert_eq!((sim.count(A), sim.count(B)), (2, 0));
}

#[test]
fn without_auto_revert_the_deadline_fails() {
    let extra = json!({"deployment": {"progressDeadlineSeconds": 10, "autoRevert": false}});
    let a = rolling_app(1, 1.0, 1.0, A, extra.clone());
    let b = rolling_app(1, 1.0, 1.0, B, extra);
    let mut sim = Sim::with(A, 1);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    run(&mut d, &mut sim, &RouterStats::new());
    sim.now = sim.now.plus(Duration::from_secs(11));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert!(matches!(&acts[..], [Action::Failed { .. }]), "{acts:?}");
    assert!(d.is_done());
    assert!(
        run(&mut d, &mut sim, &RouterStats::new()).is_empty(),
        "a failed plan does nothing"
    );
}

#[test]
fn scale_start_and_stop() {
    let a = rolling_app(2, 1.0, 1.0, A, json!({}));
    let mut a5 = a.clone();
    a5.definition.instances = 5;
    let mut sim = Sim::with(A, 2);
    let mut d = Deployment::new(Some(&a), Some(&a5), sim.now);
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(
        acts,
        vec![Action::Launch {
            version: A,
            count: 3
        }]
    );
    sim.settle(Some(A));
    assert_eq!(
        run(&mut d, &mut sim, &RouterStats::new()),
        vec![Action::Finished]
    );

    // Down to 1: the youngest go first.
    let mut a1 = a.clone();
    a1.definition.instances = 1;
    let mut d = Deployment::new(Some(&a5), Some(&a1), sim.now);
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    let killed: Vec<&str> = acts
        .iter()
        .filter_map(|a| match a {
            Action::Kill { instance, .. } => Some(instance.as_str()),
            _ => None,
        })
        .collect();
    assert_eq!(killed.len(), 4);
    assert!(!killed.contains(&"i001"), "the oldest stays: {killed:?}");
    sim.settle(None);
    assert_eq!(
        run(&mut d, &mut sim, &RouterStats::new()),
        vec![Action::Finished]
    );

    // Start: a new app.
    let mut empty = Sim::with(A, 0);
    let mut d = Deployment::new(None, Some(&a), empty.now);
    assert_eq!(launches(&run(&mut d, &mut empty, &RouterStats::new())), 2);
    // Stop.
    let mut d = Deployment::new(Some(&a), None, sim.now);
    assert_eq!(kills(&run(&mut d, &mut sim, &RouterStats::new())), 1);
    sim.settle(None);
    assert_eq!(
        run(&mut d, &mut sim, &RouterStats::new()),
        vec![Action::Finished]
    );
    assert_eq!(d.state, State::Succeeded);
}

/// The instances a scale-down of five instances launched 10 s apart
/// (i001 the oldest) to two kills, with `extra` in the definition;
/// `unhealthy` is not (yet) healthy.
fn scale_down_kills(extra: serde_json::Value, unhealthy: Option<&str>) -> Vec<String> {
    let (a5, a2) = (
        rolling_app(5, 1.0, 1.0, A, extra.clone()),
        rolling_app(2, 1.0, 1.0, A, extra),
    );
    let mut sim = Sim::with(A, 0);
    for _ in 0..5 {
        sim.launch(A);
        sim.now = sim.now.plus(Duration::from_secs(10));
    }
    for i in &mut sim.instances {
        if Some(i.id.as_str()) != unhealthy {
            i.state = InstanceState::Running;
            i.healthy_since = Some(i.launched_at);
        }
    }
    let mut d = Deployment::new(Some(&a5), Some(&a2), sim.now);
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    sim.settle(None);
    assert_eq!(
        run(&mut d, &mut sim, &RouterStats::new()),
        vec![Action::Finished]
    );
    acts.into_iter()
        .filter_map(|a| match a {
            Action::Kill { instance, .. } => Some(instance),
            _ => None,
        })
        .collect()
}

#[test]
fn kill_selection_picks_the_youngest_by_default_and_the_oldest_when_asked() {
    let youngest = json!({"killSelection": "YOUNGEST_FIRST"});
    let oldest = json!({"killSelection": "OLDEST_FIRST"});
    assert_eq!(scale_down_kills(json!({}), None), ["i005", "i004", "i003"]);
    assert_eq!(scale_down_kills(youngest, None), ["i005", "i004", "i003"]);
    assert_eq!(
        scale_down_kills(oldest.clone(), None),
        ["i001", "i002", "i003"]
    );
    // An instance that is not healthy goes first, whatever its age.
    assert_eq!(
        scale_down_kills(oldest, Some("i005")),
        ["i005", "i001", "i002"]
    );
    assert_eq!(
        scale_down_kills(json!({}), Some("i001")),
        ["i001", "i005", "i004"]
    );
}

#[test]
fn blue_green_with_preview_switch_and_keep_old() {
    let dep =
        json!({"strategy": "blueGreen", "blueGreen": {"previewPort": 9000, "keepOldSeconds": 60}});
    let (a, b) = (app(3, A, dep.clone()), app(3, B, dep));
    let mut sim = Sim::with(A, 3);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(
        acts,
        vec![
            Action::SetWeights([(A, 100)].into()),
            Action::Launch {
                version: B,
                count: 3
            },
        ]
    );
    assert!(d.promote().is_err(), "nothing to promote yet");
    sim.settle(Some(B));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(
        acts,
        vec![Action::Preview {
            version: B,
            port: 9000
        }]
    );
    assert_eq!(d.view(&sim.instances, sim.now).state, State::Paused);
    assert!(
        run(&mut d, &mut sim, &RouterStats::new()).is_empty(),
        "waits for promote"
    );
    d.promote().unwrap();
    assert_eq!(
        run(&mut d, &mut sim, &RouterStats::new()),
        vec![Action::Switch { to_version: B }]
    );
    sim.now = sim.now.plus(Duration::from_secs(59));
    assert!(
        run(&mut d, &mut sim, &RouterStats::new()).is_empty(),
        "A kept"
    );
    sim.now = sim.now.plus(Duration::from_secs(1));
    assert_eq!(kills(&run(&mut d, &mut sim, &RouterStats::new())), 3);
    sim.settle(None);
    assert_eq!(
        run(&mut d, &mut sim, &RouterStats::new()),
        vec![Action::Finished]
    );
    assert_eq!((sim.count(A), sim.count(B)), (0, 3));
}

#[test]
fn blue_green_rolls_back_when_green_stays_unhealthy() {
    let dep = json!({"strategy": "blueGreen", "progressDeadlineSeconds": 30});
    let (a, b) = (app(2, A, dep.clone()), app(2, B, dep));
    let mut sim = Sim::with(A, 2);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    run(&mut d, &mut sim, &RouterStats::new());
    sim.now = sim.now.plus(Duration::from_secs(31));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert!(matches!(&acts[0], Action::RollBack { to_version, .. } if *to_version == A));
    assert_eq!(kills(&acts), 2);
    assert!(
        !acts.iter().any(|a| matches!(a, Action::Switch { .. })),
        "A never stopped serving"
    );
    sim.settle(None);
    assert_eq!(
        run(&mut d, &mut sim, &RouterStats::new()),
        vec![Action::Finished]
    );
    assert!(matches!(d.state, State::RolledBack(_)));
}

fn canary_dep() -> serde_json::Value {
    json!({"strategy": "canary", "canary": {
        "steps": [{"weight": 20}, {"pause": 120}, {"weight": 50}, {"pause": null}, {"weight": 100}],
        "analysis": {"intervalSeconds": 30, "minRequests": 20, "maxErrorRate": 0.05}}})
}

fn stats(a: (u64, u64), b: (u64, u64)) -> RouterStats {
    [
        (
            A,
            VersionStats {
                requests: a.0,
                errors: a.1,
                p99: None,
            },
        ),
        (
            B,
            VersionStats {
                requests: b.0,
                errors: b.1,
                p99: None,
            },
        ),
    ]
    .into()
}

#[test]
fn canary_rolls_back_on_a_20_percent_error_rate_within_two_intervals() {
    let (a, b) = (app(10, A, canary_dep()), app(10, B, canary_dep()));
    let mut sim = Sim::with(A, 10);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(
        acts,
        vec![
            Action::SetWeights([(A, 100), (B, 0)].into()),
            Action::Launch {
                version: B,
                count: 2
            },
        ]
    );
    sim.settle(Some(B));
    let acts = run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(acts, vec![Action::SetWeights([(A, 80), (B, 20)].into())]);
    let weighted_at = sim.now;
    // The canary answers 500 to 20% of its requests.
    let bad = stats((800, 0), (200, 40));
    let mut rolled_back_at = None;
    for _ in 0..8 {
        sim.now = sim.now.plus(Duration::from_secs(10));
        let acts = run(&mut d, &mut sim, &bad);
        if acts.iter().any(|a| matches!(a, Action::RollBack { .. })) {
            assert!(acts.contains(&Action::Switch { to_version: A }));
            assert_eq!(kills(&acts), 2);
            rolled_back_at = Some(sim.now);
            break;
        }
    }
    let at = rolled_back_at.expect("rolled back");
    assert!(
        at.since(weighted_at) <= Duration::from_secs(60),
        "within two intervals"
    );
    assert!(
        d.view(&sim.instances, sim.now)
            .why
            .unwrap()
            .contains("error rate 20.0%")
    );
    sim.settle(None);
    assert_eq!(run(&mut d, &mut sim, &bad), vec![Action::Finished]);
    assert!(matches!(d.state, State::RolledBack(_)));
    assert_eq!((sim.count(A), sim.count(B)), (10, 0));
}

/// Versions A and B of 4 instances with [`canary_dep`], and the canary
/// at its first step: one B instance with 20% of the traffic.
fn canary_of_four() -> (AppVersion, AppVersion, Deployment, Sim) {
    let (a, b) = (app(4, A, canary_dep()), app(4, B, canary_dep()));
    let mut sim = Sim::with(A, 4);
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    run(&mut d, &mut sim, &RouterStats::new());
    sim.settle(Some(B));
    run(&mut d, &mut sim, &RouterStats::new());
    (a, b, d, sim)
}

#[test]
fn canary_waits_for_min_requests_and_compares_with_stable() {
    let (_, _, mut d, mut sim) = canary_of_four();
    sim.now = sim.now.plus(Duration::from_secs(30));
    // 50% errors but only 10 requests: no verdict.
    assert!(run(&mut d, &mut sim, &stats((100, 0), (10, 5))).is_empty());
    // 4% (below maxErrorRate 5%) but more than twice the stable 1%: fail.
    sim.now = sim.now.plus(Duration::from_secs(30));
    let acts = run(&mut d, &mut sim, &stats((1000, 10), (100, 4)));
    assert!(
        acts.iter()
            .any(|a| matches!(a, Action::RollBack { why, .. } if why.contains("stable"))),
        "{acts:?}"
    );
}

#[test]
fn canary_steps_pause_and_promote_to_success() {
    let (a, b) = (app(4, A, canary_dep()), app(4, B, canary_dep()));
    let mut sim = Sim::with(A, 4);
    let good = stats((800, 1), (200, 0));
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    assert_eq!(
        launches(&run(&mut d, &mut sim, &good)),
        1,
        "20% of 4, rounded up"
    );
    sim.settle(Some(B));
    run(&mut d, &mut sim, &good);
    assert_eq!(d.view(&sim.instances, sim.now).step, "pause 120s");
    sim.now = sim.now.plus(Duration::from_secs(120));
    let acts = run(&mut d, &mut sim, &good);
    assert_eq!(launches(&acts), 1, "50% of 4 is 2");
    sim.settle(Some(B));
    let acts = run(&mut d, &mut sim, &good);
    assert_eq!(acts, vec![Action::SetWeights([(A, 50), (B, 50)].into())]);
    assert_eq!(d.view(&sim.instances, sim.now).state, State::Paused);
    sim.now = sim.now.plus(Duration::from_secs(600));
    assert!(
        run(&mut d, &mut sim, &good).is_empty(),
        "paused until promote"
    );
    d.promote().unwrap();
    let acts = run(&mut d, &mut sim, &good);
    assert_eq!(launches(&acts), 2);
    sim.settle(Some(B));
    let acts = run(&mut d, &mut sim, &good);
    assert_eq!(acts[0], Action::Switch { to_version: B });
    assert_eq!(kills(&acts), 4);
    sim.settle(None);
    assert_eq!(run(&mut d, &mut sim, &good), vec![Action::Finished]);
    assert_eq!(d.state, State::Succeeded);
    assert_eq!((sim.count(A), sim.count(B)), (0, 4));
}

#[test]
fn the_analysis_window_starts_with_canary_traffic_and_moves_with_each_analysis() {
    let (a, b) = (app(4, A, canary_dep()), app(4, B, canary_dep()));
    let mut sim = Sim::with(A, 4);
    let good = stats((800, 1), (200, 0));
    let mut d = Deployment::new(Some(&a), Some(&b), sim.now);
    run(&mut d, &mut sim, &RouterStats::new());
    assert_eq!(d.analysis_window(), None, "no traffic share yet");
    sim.now = sim.now.plus(Duration::from_secs(3));
    sim.settle(Some(B));
    run(&mut d, &mut sim, &RouterStats::new());
    let weighted_at = sim.now;
    assert_eq!(d.analysis_window(), Some(weighted_at));
    // Within the interval the window stays; at its end it moves.
    sim.now = sim.now.plus(Duration::from_secs(29));
    run(&mut d, &mut sim, &good);
    assert_eq!(d.analysis_window(), Some(weighted_at));
    sim.now = sim.now.plus(Duration::from_secs(1));
    run(&mut d, &mut sim, &good);
    assert_eq!(d.analysis_window(), Some(sim.now));
    // A rollback ends the analysis.
    sim.now = sim.now.plus(Duration::from_secs(30));
    let acts = run(&mut d, &mut sim, &stats((800, 1), (200, 40)));
    assert!(acts.iter().any(|a| matches!(a, Action::RollBack { .. })));
    assert_eq!(d.analysis_window(), None);
}

#[test]
fn a_cancelled_canary_switches_back_at_once_keeping_the_old_instances() {
    let (a, b, _, mut sim) = canary_of_four();
    assert_eq!((sim.count(A), sim.count(B)), (4, 1));
    let old: Vec<String> = sim.instances[..4].iter().map(|i| i.id.clone()).collect();
    // The revert of a cancel: B back to A, with no canary step again.
    let mut back = Deployment::switch_back(&b, &a, sim.now);
    let acts = run(&mut back, &mut sim, &RouterStats::new());
    assert_eq!(
        acts,
        vec![
            Action::SetWeights([(B, 100)].into()),
            Action::Switch { to_version: A }
        ],
        "A counts already: nothing launched, all traffic to A"
    );
    assert_eq!(kills(&run(&mut back, &mut sim, &RouterStats::new())), 1);
    sim.settle(None);
    assert_eq!(
        run(&mut back, &mut sim, &RouterStats::new()),
        vec![Action::Finished]
    );
    assert_eq!(back.state, State::Succeeded);
    let left: Vec<String> = sim.instances.iter().map(|i| i.id.clone()).collect();
    assert_eq!(left, old);
}
