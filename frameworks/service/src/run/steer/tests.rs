use super::*;
use crate::app::{AppDefinition, AppVersion};
use berth_proto as pb;
use berth_sdk::runtime::Prior;

const T0: u64 = 1_700_000_000_000;

fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

fn version(image_tag: &str, instances: u32, secs: u64) -> AppVersion {
    let json = format!(
        r#"{{"id": "/web", "cmd": "httpd {image_tag}", "cpus": 0.1, "mem": 32,
            "instances": {instances}, "portDefinitions": [{{"port": 10000}}],
            "upgradeStrategy": {{"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0}}}}"#
    );
    AppVersion::first(AppDefinition::from_json(&json).unwrap(), at(secs))
}

/// A cluster that runs every new task at once and ends every stopped one.
struct Sim {
    inst: Instances,
    versions: Vec<AppVersion>,
    next: u32,
}

impl Sim {
    fn settle(&mut self, now: Timestamp) {
        // No router: a draining instance has nothing in flight.
        let draining: Vec<String> = self
            .inst
            .slots()
            .iter()
            .filter(|(_, s)| matches!(s.killing, Some(crate::run::instances::Killing::Draining(_))))
            .map(|(id, _)| id.clone())
            .collect();
        for id in draining {
            self.inst.drained(&id);
        }
        let vs = &self.versions;
        let lookup = |_: &str, v: Timestamp| vs.iter().find(|x| x.config_version() == v);
        let (wanted, stop) = self.inst.intent(&lookup, &BTreeMap::new(), now);
        let new: Vec<pb::TaskInfo> = wanted
            .into_iter()
            .filter(|w| w.prior == Prior::New)
            .map(|w| {
                let mut t = w.task;
                t.agent_id = "a1".into();
                t
            })
            .collect();
        self.inst.launching(&new, &lookup);
        let status = |task: &str, state: pb::TaskState| pb::TaskStatus {
            task_id: task.into(),
            state: state as i32,
            ..Default::default()
        };
        let backoff = |_: &str| crate::app::Backoff::default();
        let unchecked = |_: &str| false;
        for t in &new {
            self.inst.on_status(
                &status(&t.task_id, pb::TaskState::TaskRunning),
                &backoff,
                &unchecked,
                now,
            );
        }
        for (t, _) in stop {
            self.inst.on_status(
                &status(t.as_str(), pb::TaskState::TaskKilled),
                &backoff,
                &unchecked,
                now,
            );
        }
    }

    fn versions_running(&self) -> Vec<Timestamp> {
        self.inst.slots().values().map(|s| s.version).collect()
    }

    /// Steps `d` from second `t` until it ends (at most `limit` steps),
    /// checking at least `min_healthy` healthy instances after each step.
    fn run(&mut self, mut d: Deployment, mut t: u64, limit: u64, min_healthy: usize) -> State {
        let mut traffic = Traffic::default();
        let stats = RouterStats::new();
        for _ in 0..limit {
            let mut inst = std::mem::take(&mut self.inst);
            let mut ids = || {
                self.next += 1;
                format!("i{}", self.next)
            };
            let s = steer("/web", &d, &mut inst, &mut traffic, &stats, &mut ids, at(t));
            self.inst = inst;
            d = s.deployment;
            let healthy = self
                .inst
                .planner_view("/web")
                .iter()
                .filter(|i| i.healthy_since.is_some())
                .count();
            assert!(healthy >= min_healthy, "{healthy} healthy at {t}");
            if let Some(end) = s.ended {
                return end;
            }
            self.settle(at(t));
            t += 1;
        }
        panic!("the deployment did not end in {limit} steps");
    }
}

#[test]
fn a_start_then_a_rolling_update_run_to_the_end() {
    let v1 = version("v1", 4, 0);
    let mut sim = Sim {
        inst: Instances::default(),
        versions: vec![v1.clone()],
        next: 0,
    };
    let ended = sim.run(Deployment::new(None, Some(&v1), at(0)), 0, 20, 0);
    assert_eq!(ended, State::Succeeded);
    assert_eq!(sim.inst.slots().len(), 4);

    let v2 = version("v2", 4, 100);
    sim.versions.push(v2.clone());
    // Never fewer than 2 (50% of 4) healthy instances.
    let ended = sim.run(Deployment::new(Some(&v1), Some(&v2), at(100)), 100, 40, 2);
    assert_eq!(ended, State::Succeeded);
    let running = sim.versions_running();
    assert_eq!(running.len(), 4);
    assert!(
        running.iter().all(|v| *v == v2.config_version()),
        "{running:?}"
    );
}
#[test]
fn keep_count_trims_by_kill_selection() {
    // Two instances created at 0 s, two more at 10 s; trimmed to 2 at 20 s.
    let survivors = |youngest_first: bool| {
        let mut inst = Instances::default();
        let mut n = 0;
        let mut ids = || {
            n += 1;
            format!("k{n}")
        };
        for (count, secs) in [(2, 0), (4, 10), (2, 20)] {
            let at = at(secs);
            assert!(keep_count(
                "/web",
                at,
                count,
                youngest_first,
                &mut inst,
                &mut ids,
                at
            ));
        }
        let mut left: Vec<String> = inst.of_app("/web").map(|(id, _)| id.clone()).collect();
        left.sort();
        left
    };
    assert_eq!(survivors(true), ["k1", "k2"], "YOUNGEST_FIRST kills k3, k4");
    assert_eq!(survivors(false), ["k3", "k4"], "OLDEST_FIRST kills k1, k2");
}

#[test]
fn weights_and_switch_move_the_traffic() {
    let mut inst = Instances::default();
    let mut traffic = Traffic::default();
    // A deployment that is already done only finishes: traffic is reset.
    traffic.weights.insert(at(1), 50);
    traffic.preview = Some((at(1), 9000));
    let v = version("v", 0, 0);
    let d = Deployment::new(None, Some(&v), at(0));
    let mut n = 0;
    let mut ids = || {
        n += 1;
        format!("x{n}")
    };
    let s = steer(
        "/web",
        &d,
        &mut inst,
        &mut traffic,
        &RouterStats::new(),
        &mut ids,
        at(0),
    );
    assert_eq!(s.ended, Some(State::Succeeded));
    assert!(traffic.weights.is_empty() && traffic.preview.is_none());
}

#[test]
fn keep_count_fills_and_trims_an_app_without_a_deployment() {
    let mut inst = Instances::default();
    let mut n = 0;
    let mut ids = || {
        n += 1;
        format!("k{n}")
    };
    assert!(keep_count(
        "/web",
        at(0),
        3,
        true,
        &mut inst,
        &mut ids,
        at(0)
    ));
    assert_eq!(inst.of_app("/web").count(), 3);
    assert!(!keep_count(
        "/web",
        at(0),
        3,
        true,
        &mut inst,
        &mut ids,
        at(1)
    ));
    // Trimming to 1: the youngest go first (none runs).
    assert!(keep_count(
        "/web",
        at(0),
        1,
        true,
        &mut inst,
        &mut ids,
        at(2)
    ));
    let left: Vec<&String> = inst.of_app("/web").map(|(id, _)| id).collect();
    assert_eq!(left, ["k1"], "never-run slots go at once, youngest first");
}
