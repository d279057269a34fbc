use super::*;
use crate::app::AppDefinition;
use berth_sdk::runtime::Prior;

const T0: u64 = 1_700_000_000_000;

fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

fn web(extra: &str) -> AppVersion {
    let json = format!(
        r#"{{"id": "/web", "cmd": "httpd -p $PORT0", "cpus": 0.1, "mem": 32, "instances": 2,
            "portDefinitions": [{{"port": 0}}], "backoffSeconds": 1, "backoffFactor": 2,
            "maxLaunchDelaySeconds": 5 {extra}}}"#
    );
    AppVersion::first(AppDefinition::from_json(&json).unwrap(), at(0))
}

struct World {
    inst: Instances,
    version: AppVersion,
}

impl World {
    fn new(extra: &str) -> World {
        let version = web(extra);
        let mut inst = Instances::default();
        inst.create(
            "/web",
            version.config_version(),
            &["i1".into(), "i2".into()],
            at(0),
        );
        World { inst, version }
    }

    fn intent(&self, now: Timestamp) -> (Vec<Wanted>, Vec<(TaskId, Option<AgentId>)>) {
        let v = &self.version;
        let versions = move |app: &str, _: Timestamp| (app == "/web").then_some(v);
        self.inst.intent(&versions, &BTreeMap::new(), now)
    }

    /// The runtime launches what the intent wants new, on `agent`, with
    /// port 31000 + n.
    fn launch_wanted(&mut self, now: Timestamp, agent: &str) -> Vec<String> {
        let (wanted, _) = self.intent(now);
        let tasks: Vec<pb::TaskInfo> = wanted
            .into_iter()
            .filter(|w| w.prior == Prior::New)
            .enumerate()
            .map(|(n, w)| {
                let mut t = w.task;
                t.agent_id = agent.into();
                let port = (31000 + n).to_string();
                if let Some(c) = t.command.as_mut() {
                    c.env.insert("PORT0".into(), port);
                }
                t
            })
            .collect();
        let v = self.version.clone();
        self.inst.launching(&tasks, &|_, _| Some(&v));
        tasks.into_iter().map(|t| t.task_id).collect()
    }

    fn status(
        &mut self,
        task: &str,
        state: pb::TaskState,
        healthy: Option<bool>,
        now: Timestamp,
    ) -> Seen {
        let checked = !self.version.definition.health_checks.is_empty();
        let backoff = self.version.definition.backoff;
        self.inst.on_status(
            &pb::TaskStatus {
                task_id: task.into(),
                state: state as i32,
                healthy,
                agent_id: "a1".into(),
                ..Default::default()
            },
            &move |_| backoff,
            &move |_| checked,
            now,
        )
    }
}

#[test]
fn backoff_grows_by_its_factor_up_to_the_maximum() {
    let b = web("").definition.backoff;
    let secs: Vec<f64> = (0..6).map(|n| backoff(&b, n).as_secs_f64()).collect();
    assert_eq!(secs, [0.0, 1.0, 2.0, 4.0, 5.0, 5.0]);
}

#[test]
fn new_slots_are_wanted_launched_and_then_followed() {
    let mut w = World::new("");
    let launched = w.launch_wanted(at(0), "a1");
    assert_eq!(launched, ["web.i1.1", "web.i2.1"]);
    let slot = &w.inst.slots()["i1"];
    let run = slot.run.as_ref().unwrap();
    assert_eq!(
        (run.agent_id.as_str(), run.ports.as_slice()),
        ("a1", &[31000u16][..])
    );
    // Launched, not yet heard of: wanted as maybe launched, not anew.
    let (wanted, stop) = w.intent(at(1));
    assert!(stop.is_empty());
    assert!(
        wanted.iter().all(|x| x.prior == Prior::MaybeLaunched),
        "{wanted:?}"
    );
    // Running without a health check: healthy from then on.
    assert_eq!(
        w.status("web.i1.1", pb::TaskState::TaskRunning, None, at(2)),
        Seen::Changed {
            instance: "i1".into()
        }
    );
    let view = w.inst.planner_view("/web");
    let i1 = view.iter().find(|i| i.id == "i1").unwrap();
    assert_eq!(
        (i1.state, i1.healthy_since),
        (InstanceState::Healthy, Some(at(2)))
    );
    let i2 = view.iter().find(|i| i.id == "i2").unwrap();
    assert_eq!(i2.state, InstanceState::Staging);
    let (wanted, _) = w.intent(at(3));
    assert!(
        wanted
            .iter()
            .any(|x| x.task.task_id == "web.i1.1" && x.prior == Prior::Launched)
    );
}

#[test]
fn a_failed_instance_is_relaunched_after_its_backoff() {
    let mut w = World::new("");
    w.launch_wanted(at(0), "a1");
    w.status("web.i1.1", pb::TaskState::TaskFailed, None, at(10));
    // Backoff 1 s after the first failure: not wanted before 11 s.
    let (wanted, _) = w.intent(at(10));
    assert!(!wanted.iter().any(|x| x.task.task_id.starts_with("web.i1.")));
    assert_eq!(w.inst.next_due(at(10)), Some(at(11)));
    let (wanted, _) = w.intent(at(11));
    let next = wanted
        .iter()
        .find(|x| x.task.task_id.starts_with("web.i1."))
        .unwrap();
    assert_eq!(
        (next.task.task_id.as_str(), next.prior),
        ("web.i1.2", Prior::New)
    );
    assert!(next.placement.is_some());
    // A second failure in a row doubles it.
    w.launch_wanted(at(11), "a1");
    w.status("web.i1.2", pb::TaskState::TaskFailed, None, at(12));
    assert_eq!(w.inst.slots()["i1"].not_before, at(14));
    // An old attempt's late status changes nothing.
    assert_eq!(
        w.status("web.i1.1", pb::TaskState::TaskRunning, None, at(13)),
        Seen::Unknown
    );
}

#[test]
fn a_failing_health_check_unroutes_the_instance_and_the_agents_kill_replaces_it() {
    let mut w = World::new(
        r#", "healthChecks": [{"protocol": "HTTP", "path": "/", "maxConsecutiveFailures": 3}]"#,
    );
    let state = |w: &World| {
        let view = w.inst.planner_view("/web");
        view.iter().find(|i| i.id == "i1").unwrap().state
    };
    w.launch_wanted(at(0), "a1");
    w.status("web.i1.1", pb::TaskState::TaskRunning, None, at(1));
    assert_eq!(
        state(&w),
        InstanceState::Running,
        "not healthy before the check says so"
    );
    w.status("web.i1.1", pb::TaskState::TaskRunning, Some(true), at(2));
    assert_eq!(state(&w), InstanceState::Healthy);
    // The first failed check (the agent reports it at once): no longer
    // healthy, but not killed: that is the agent's, after 3 in a row.
    w.status("web.i1.1", pb::TaskState::TaskRunning, Some(false), at(30));
    assert_eq!(state(&w), InstanceState::Running);
    let (wanted, stop) = w.intent(at(30));
    assert!(stop.is_empty(), "killed at its first failure: {stop:?}");
    assert!(wanted.iter().any(|x| x.task.task_id == "web.i1.1"));
    assert!(!wanted.iter().any(|x| x.task.task_id == "web.i1.2"));
    assert!(w.inst.last_failure("/web").is_none());
    // It recovers.
    w.status("web.i1.1", pb::TaskState::TaskRunning, Some(true), at(40));
    assert_eq!(state(&w), InstanceState::Healthy);
    // It fails again, and the agent kills it after the third failure in a
    // row: a failure, replaced after the backoff (1 s).
    w.status("web.i1.1", pb::TaskState::TaskRunning, Some(false), at(50));
    let mut killed = pb::TaskStatus {
        task_id: "web.i1.1".into(),
        state: pb::TaskState::TaskKilled as i32,
        agent_id: "a1".into(),
        message: "health check failed 3 times in a row (last: 503)".into(),
        ..Default::default()
    };
    killed.set_reason(pb::TaskReason::HealthCheckFailed);
    let backoff = w.version.definition.backoff;
    let seen = w
        .inst
        .on_status(&killed, &move |_| backoff, &move |_| true, at(70));
    assert_eq!(
        seen,
        Seen::Changed {
            instance: "i1".into()
        }
    );
    let failure = w.inst.last_failure("/web").expect("the kill is a failure");
    assert!(failure.message.contains("3 times"), "{}", failure.message);
    assert_eq!(w.inst.slots()["i1"].failures, 1);
    let (wanted, stop) = w.intent(at(70));
    assert!(stop.is_empty());
    assert!(!wanted.iter().any(|x| x.task.task_id.starts_with("web.i1.")));
    let (wanted, _) = w.intent(at(71));
    assert!(wanted.iter().any(|x| x.task.task_id == "web.i1.2"));
}

#[test]
fn an_unreachable_instance_is_replaced_after_inactive_after_seconds() {
    let mut w = World::new(
        r#", "unreachableStrategy": {"inactiveAfterSeconds": 60, "expungeAfterSeconds": 120}"#,
    );
    w.launch_wanted(at(0), "a1");
    w.status("web.i1.1", pb::TaskState::TaskRunning, None, at(1));
    w.status("web.i1.1", pb::TaskState::TaskUnreachable, None, at(10));
    let strategy = w.version.definition.unreachable_strategy;
    w.inst.replace_unreachable(&move |_| strategy, at(69));
    assert!(
        w.inst.slots()["i1"].run.is_some(),
        "kept within inactiveAfterSeconds"
    );
    w.inst.replace_unreachable(&move |_| strategy, at(70));
    let (wanted, stop) = w.intent(at(70));
    assert!(
        wanted
            .iter()
            .any(|x| x.task.task_id == "web.i1.2" && x.prior == Prior::New)
    );
    assert!(
        wanted.iter().any(|x| x.task.task_id == "web.i1.1"),
        "the old task is not killed before it is expunged"
    );
    assert!(stop.is_empty(), "{stop:?}");
    assert_eq!(
        w.inst.slots()["i1"].failures,
        0,
        "a partition is not the instance's failure"
    );
    // Past expungeAfterSeconds (from when it became unreachable) it is
    // forgotten: killed if it ever comes back.
    w.inst.replace_unreachable(&move |_| strategy, at(130));
    let (wanted, stop) = w.intent(at(130));
    assert!(!wanted.iter().any(|x| x.task.task_id == "web.i1.1"));
    assert_eq!(
        stop.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["web.i1.1"]
    );
    assert_eq!(
        w.status("web.i1.1", pb::TaskState::TaskRunning, None, at(131)),
        Seen::Unknown
    );
}

#[test]
fn an_unreachable_instance_back_before_its_expunge_is_taken_back() {
    let mut w = World::new(
        r#", "unreachableStrategy": {"inactiveAfterSeconds": 60, "expungeAfterSeconds": 600}"#,
    );
    w.launch_wanted(at(0), "a1");
    w.status("web.i1.1", pb::TaskState::TaskRunning, None, at(1));
    w.status("web.i1.1", pb::TaskState::TaskUnreachable, None, at(10));
    let strategy = w.version.definition.unreachable_strategy;
    w.inst.replace_unreachable(&move |_| strategy, at(70));
    let launched = w.launch_wanted(at(70), "a2");
    assert_eq!(launched, ["web.i1.2"]);
    w.status("web.i1.2", pb::TaskState::TaskRunning, None, at(75));
    // Its agent comes back: the slot takes the old task back, the
    // replacement goes.
    assert_eq!(
        w.status("web.i1.1", pb::TaskState::TaskRunning, None, at(100)),
        Seen::Changed {
            instance: "i1".into()
        }
    );
    let run = w.inst.slots()["i1"].run.clone().unwrap();
    assert_eq!(
        (run.task_id.as_str(), run.unreachable_since),
        ("web.i1.1", None)
    );
    let (wanted, stop) = w.intent(at(100));
    assert_eq!(
        stop.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["web.i1.2"]
    );
    assert!(wanted.iter().any(|x| x.task.task_id == "web.i1.1"));
    assert_eq!(
        w.inst
            .planner_view("/web")
            .iter()
            .filter(|i| i.id == "i1")
            .count(),
        1,
        "one instance, not two"
    );
    // Its next attempt, after a failure, does not reuse the replacement's id.
    w.status("web.i1.1", pb::TaskState::TaskFailed, None, at(110));
    let (wanted, _) = w.intent(at(200));
    assert!(wanted.iter().any(|x| x.task.task_id == "web.i1.3"));
}

#[test]
fn disabled_unreachable_strategy_never_replaces() {
    let mut w = World::new(r#", "unreachableStrategy": "disabled""#);
    w.launch_wanted(at(0), "a1");
    w.status("web.i1.1", pb::TaskState::TaskUnreachable, None, at(10));
    let strategy = w.version.definition.unreachable_strategy;
    w.inst.replace_unreachable(&move |_| strategy, at(100_000));
    assert_eq!(w.inst.slots()["i1"].attempt, 1);
}

#[test]
fn a_killed_instance_drains_then_is_killed_then_goes() {
    let mut w = World::new("");
    w.launch_wanted(at(0), "a1");
    w.status("web.i1.1", pb::TaskState::TaskRunning, None, at(1));
    w.inst.kill("i1", true, at(5));
    // Draining: still running, out of the planner's view, not stopped yet.
    let (wanted, stop) = w.intent(at(5));
    assert!(wanted.iter().any(|x| x.task.task_id == "web.i1.1"));
    assert!(stop.is_empty());
    assert!(!w.inst.planner_view("/web").iter().any(|i| i.id == "i1"));
    w.inst.drained("i1");
    let (wanted, stop) = w.intent(at(6));
    assert!(!wanted.iter().any(|x| x.task.task_id == "web.i1.1"));
    assert_eq!(
        stop.iter().map(|(t, _)| t.as_str()).collect::<Vec<_>>(),
        ["web.i1.1"]
    );
    assert_eq!(
        w.status("web.i1.1", pb::TaskState::TaskKilled, None, at(7)),
        Seen::Gone {
            instance: "i1".into()
        }
    );
    assert!(!w.inst.slots().contains_key("i1"));
}

#[test]
fn killing_an_instance_that_never_ran_removes_it_at_once() {
    let mut w = World::new("");
    w.inst.kill("i2", true, at(1));
    assert!(!w.inst.slots().contains_key("i2"));
    let (wanted, stop) = w.intent(at(1));
    assert_eq!(wanted.len(), 1);
    assert!(stop.is_empty());
}

#[test]
fn placement_sees_where_the_apps_other_instances_run() {
    let mut w = World::new("");
    w.launch_wanted(at(0), "a1");
    w.status("web.i1.1", pb::TaskState::TaskFailed, None, at(1));
    let places: BTreeMap<String, Place> = [(
        "a1".to_string(),
        Place {
            agent_id: "a1".into(),
            hostname: "h1".into(),
            attributes: BTreeMap::new(),
        },
    )]
    .into();
    let (wanted, _) = w.inst.intent(&|_, _| Some(&w.version), &places, at(5));
    let next = wanted
        .iter()
        .find(|x| x.task.task_id == "web.i1.2")
        .unwrap();
    let existing = &next.placement.as_ref().unwrap().existing;
    assert_eq!(existing.len(), 1, "i2 runs on a1");
    assert_eq!(existing[0].hostname, "h1");
}

#[test]
fn the_last_failure_of_an_app_is_kept_with_its_reason() {
    let mut w = World::new("");
    w.launch_wanted(at(0), "a1");
    assert_eq!(w.inst.last_failure("/web"), None);
    let version = w.version.config_version();
    w.inst.on_status(
        &pb::TaskStatus {
            task_id: "web.i1.1".into(),
            state: pb::TaskState::TaskFailed as i32,
            message: "exited with status 1".into(),
            exit_code: Some(1),
            agent_id: "a1".into(),
            ..Default::default()
        },
        &|_| Backoff::default(),
        &|_| false,
        at(3),
    );
    let f = w.inst.last_failure("/web").cloned();
    assert_eq!(
        f,
        Some(TaskFailure {
            task_id: "web.i1.1".into(),
            agent_id: "a1".into(),
            state: pb::TaskState::TaskFailed,
            message: "exited with status 1".into(),
            version,
            at: at(3),
        })
    );
    // Without a message, the exit code says why; a later failure replaces it.
    w.inst.on_status(
        &pb::TaskStatus {
            task_id: "web.i2.1".into(),
            state: pb::TaskState::TaskFailed as i32,
            exit_code: Some(2),
            ..Default::default()
        },
        &|_| Backoff::default(),
        &|_| false,
        at(4),
    );
    let f = w
        .inst
        .last_failure("/web")
        .map(|f| (f.task_id.as_str(), f.message.as_str()));
    assert_eq!(f, Some(("web.i2.1", "exited with status 2")));
    w.inst.forget_failure("/web");
    assert_eq!(w.inst.last_failure("/web"), None);
}

#[test]
fn killed_instances_are_no_failure_and_a_failed_health_check_is() {
    let mut w = World::new(r#", "healthChecks": [{"protocol": "HTTP", "path": "/"}]"#);
    w.launch_wanted(at(0), "a1");
    w.inst.kill("i1", false, at(1));
    w.status("web.i1.1", pb::TaskState::TaskKilled, None, at(2));
    assert_eq!(w.inst.last_failure("/web"), None);
    // Failing checks are not yet a failure; the agent's kill for them is.
    w.status("web.i2.1", pb::TaskState::TaskRunning, Some(false), at(3));
    assert_eq!(w.inst.last_failure("/web"), None);
    let mut killed = pb::TaskStatus {
        task_id: "web.i2.1".into(),
        state: pb::TaskState::TaskKilled as i32,
        message: "health check failed 3 times in a row (last: refused)".into(),
        ..Default::default()
    };
    killed.set_reason(pb::TaskReason::HealthCheckFailed);
    w.inst
        .on_status(&killed, &|_| Backoff::default(), &|_| true, at(4));
    let f = w.inst.last_failure("/web").cloned();
    assert_eq!(
        f.map(|f| (f.task_id, f.state, f.message)),
        Some((
            "web.i2.1".into(),
            pb::TaskState::TaskKilled,
            "health check failed 3 times in a row (last: refused)".into()
        ))
    );
}
