//! Unit tests of [`decide`] over replayed [`Observed`] states: exact
//! actions, no sockets, no sleeps.

use std::time::{Duration, Instant};

use berth_proto as pb;

use super::*;
use crate::{AgentId, OfferId, TaskId, shell_task};

fn task(id: &str, resources: &str) -> pb::TaskInfo {
    shell_task(id, id, "true", resources).unwrap()
}

fn offer(id: &str, agent: &str, cpus: f64, mem: f64) -> pb::Offer {
    pb::Offer {
        id: id.into(),
        agent_id: agent.into(),
        resources: Some(pb::Resources {
            cpus,
            mem,
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// Subscribed, with offers known not to be suppressed (what a first
/// suppress or revive call settles).
fn subscribed() -> Observed {
    let mut o = Observed::new();
    o.on_event(&Event::Subscribed {
        framework_id: "fw".into(),
        master_id: "m".into(),
        resubscribed: false,
    });
    o.suppression_known = true;
    o
}

fn on_agent(mut t: pb::TaskInfo, agent: &str) -> pb::TaskInfo {
    t.agent_id = agent.into();
    t
}

pub(super) fn status(id: &str, state: pb::TaskState, reason: pb::TaskReason) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: id.into(),
        state: state as i32,
        reason: reason as i32,
        ..Default::default()
    }
}

fn tid(id: &str) -> TaskId {
    TaskId::new(id).unwrap()
}

fn aid(id: &str) -> AgentId {
    AgentId::new(id).unwrap()
}

fn oid(id: &str) -> OfferId {
    OfferId::new(id).unwrap()
}

fn oids(list: &[&str]) -> Vec<OfferId> {
    list.iter().map(|id| oid(id)).collect()
}

pub(super) fn ids(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| (*s).to_owned()).collect()
}

#[test]
fn nothing_is_decided_while_not_subscribed() {
    let intent = Intent::new(vec![Wanted::new(task("a", "cpus:1;mem:32"))]);
    let mut o = Observed::new();
    o.on_event(&Event::Offers(vec![offer("o1", "ag", 4.0, 1024.0)]));
    let d = decide(&intent, &o, &Policy::default(), Instant::now());
    assert_eq!(d, Decision::default());
}

#[test]
fn tasks_are_packed_into_offers_and_the_rest_declined_and_suppressed() {
    let a = task("a", "cpus:1;mem:32");
    let b = task("b", "cpus:1;mem:32");
    let intent = Intent::new(vec![Wanted::new(a.clone()), Wanted::new(b.clone())]);
    let mut o = subscribed();
    o.on_event(&Event::Offers(vec![
        offer("o1", "ag1", 4.0, 1024.0),
        offer("o2", "ag2", 4.0, 1024.0),
    ]));
    let policy = Policy::default();
    let d = decide(&intent, &o, &policy, Instant::now());
    assert_eq!(
        d.actions,
        vec![
            Action::Launch {
                offer_id: oid("o1"),
                tasks: vec![on_agent(a, "ag1"), on_agent(b, "ag1")],
            },
            Action::Decline {
                offer_ids: oids(&["o2"]),
                refuse: Some(policy.idle_refuse),
            },
            Action::Suppress,
        ]
    );
    assert_eq!(d.wake_at, None);
}

#[test]
fn tasks_that_fit_nowhere_are_published_and_offers_declined_briefly() {
    let big = task("big", "cpus:8;mem:32");
    let intent = Intent::new(vec![Wanted::new(big.clone())]);
    let mut o = subscribed();
    o.on_event(&Event::Offers(vec![offer("o1", "ag1", 4.0, 1024.0)]));
    let policy = Policy::default().refuse(Some(Duration::from_secs(2)));
    let d = decide(&intent, &o, &policy, Instant::now());
    let pending = crate::pending_tasks(&o.offers, &[big]).unwrap();
    assert_eq!(pending[0].reason, "no offer fits: 1 short on cpus");
    assert_eq!(
        d.actions,
        vec![
            Action::Decline {
                offer_ids: oids(&["o1"]),
                refuse: Some(Duration::from_secs(2)),
            },
            Action::PublishPending {
                tasks: pending.clone(),
            },
        ]
    );
    // Published once: the same picture is not published again.
    o.offers_spent(&ids(&["o1"]));
    o.published_pending = Some(pending);
    o.on_event(&Event::Offers(vec![offer("o2", "ag1", 4.0, 1024.0)]));
    let d = decide(&intent, &o, &policy, Instant::now());
    assert_eq!(
        d.actions,
        vec![Action::Decline {
            offer_ids: oids(&["o2"]),
            refuse: Some(Duration::from_secs(2)),
        }]
    );
    // Once it is no longer wanted, the pending list is cleared.
    let d = decide(&Intent::default(), &o, &policy, Instant::now());
    assert_eq!(
        d.actions,
        vec![
            Action::Decline {
                offer_ids: oids(&["o2"]),
                refuse: Some(policy.idle_refuse),
            },
            Action::PublishPending { tasks: vec![] },
            Action::Suppress,
        ]
    );
}

#[test]
fn suppressed_offers_are_revived_when_work_appears() {
    let mut o = subscribed();
    o.suppressed = true;
    let intent = Intent::new(vec![Wanted::new(task("a", "cpus:1;mem:32"))]);
    let d = decide(&intent, &o, &Policy::default(), Instant::now());
    assert_eq!(d.actions, vec![Action::Revive]);
    // Nothing to do and suppressed: no action at all.
    let d = decide(&Intent::default(), &o, &Policy::default(), Instant::now());
    assert_eq!(d.actions, vec![]);
}

#[test]
fn an_accept_of_unknown_outcome_is_reconciled_not_sent_again() {
    let a = task("a", "cpus:1;mem:32");
    let intent = Intent::new(vec![Wanted::new(a.clone())]);
    let policy = Policy::default();
    let t0 = Instant::now();
    let mut o = subscribed();
    o.launch_sent(&ids(&["a"]));
    o.launch_done(&ids(&["a"]), &LaunchOutcome::Unknown);
    o.on_event(&Event::Offers(vec![offer("o1", "ag1", 4.0, 1024.0)]));
    let d = decide(&intent, &o, &policy, t0);
    assert_eq!(
        d.actions,
        vec![
            Action::Reconcile {
                tasks: vec![(tid("a"), None)],
            },
            Action::Decline {
                offer_ids: oids(&["o1"]),
                refuse: Some(policy.idle_refuse),
            },
            Action::Suppress,
        ]
    );
    assert_eq!(d.wake_at, Some(t0 + policy.reconcile_retry));

    // Asked: not asked again before the retry interval, then asked again.
    o.reconcile_sent(&ids(&["a"]), t0);
    o.offers_spent(&ids(&["o1"]));
    o.suppressed = true;
    let d = decide(&intent, &o, &policy, t0 + Duration::from_secs(1));
    assert_eq!(d.actions, vec![]);
    assert_eq!(d.wake_at, Some(t0 + policy.reconcile_retry));
    let d = decide(&intent, &o, &policy, t0 + policy.reconcile_retry);
    assert_eq!(
        d.actions,
        vec![Action::Reconcile {
            tasks: vec![(tid("a"), None)],
        }]
    );

    // The master does not have it: launched again, with the same id.
    let answer = status("a", pb::TaskState::TaskUnknown, REASON_RECONCILIATION);
    assert_eq!(o.update(&answer), UpdateMeaning::Internal);
    o.on_event(&Event::Offers(vec![offer("o2", "ag1", 4.0, 1024.0)]));
    let d = decide(&intent, &o, &policy, t0 + Duration::from_secs(2));
    assert_eq!(
        d.actions,
        vec![Action::Launch {
            offer_id: oid("o2"),
            tasks: vec![on_agent(a, "ag1")],
        }]
    );
}

#[test]
fn a_recovered_task_is_reconciled_before_anything_and_followed_if_running() {
    let a = task("a", "cpus:1;mem:32");
    let fresh = task("b", "cpus:1;mem:32");
    let intent = Intent::new(vec![
        Wanted::recovered(a.clone()),
        Wanted::new(fresh.clone()),
    ]);
    let t0 = Instant::now();
    let mut o = subscribed();
    o.on_event(&Event::Offers(vec![offer("o1", "ag1", 4.0, 1024.0)]));
    let d = decide(&intent, &o, &Policy::default(), t0);
    assert_eq!(
        d.actions,
        vec![
            Action::Reconcile {
                tasks: vec![(tid("a"), None)],
            },
            Action::Launch {
                offer_id: oid("o1"),
                tasks: vec![on_agent(fresh, "ag1")],
            },
            Action::Suppress,
        ]
    );
    o.reconcile_sent(&ids(&["a"]), t0);
    assert_eq!(o.task("a").unwrap().phase, TaskPhase::Unknown);
    let running = status("a", pb::TaskState::TaskRunning, REASON_RECONCILIATION);
    assert_eq!(o.update(&running), UpdateMeaning::Report);
    o.launch_sent(&ids(&["b"]));
    o.launch_done(&ids(&["b"]), &LaunchOutcome::Launched(ids(&["b"])));
    o.offers_spent(&ids(&["o1"]));
    o.suppressed = true;
    let d = decide(&intent, &o, &Policy::default(), t0);
    assert_eq!(d, Decision::default());
}

#[test]
fn launched_tasks_no_longer_wanted_are_killed_and_killed_again_later() {
    let policy = Policy::default().kill_grace(Some(Duration::from_secs(3)));
    let t0 = Instant::now();
    let mut o = subscribed();
    o.suppressed = true;
    o.update(&status(
        "orphan",
        pb::TaskState::TaskRunning,
        pb::TaskReason::Unspecified,
    ));
    o.update(&status(
        "done",
        pb::TaskState::TaskFinished,
        pb::TaskReason::Unspecified,
    ));
    let kill = Action::Kill {
        task_id: tid("orphan"),
        grace: Some(Duration::from_secs(3)),
    };
    let d = decide(&Intent::default(), &o, &policy, t0);
    assert_eq!(d.actions, vec![kill.clone()]);
    assert_eq!(d.wake_at, Some(t0 + policy.kill_retry));
    o.kill_sent("orphan", t0);
    let d = decide(&Intent::default(), &o, &policy, t0 + Duration::from_secs(1));
    assert_eq!(d.actions, vec![]);
    let d = decide(&Intent::default(), &o, &policy, t0 + policy.kill_retry);
    assert_eq!(d.actions, vec![kill]);
    // A re-subscription sends the kill again at once.
    o.on_event(&Event::Subscribed {
        framework_id: "fw".into(),
        master_id: "m2".into(),
        resubscribed: true,
    });
    let d = decide(&Intent::default(), &o, &policy, t0 + Duration::from_secs(1));
    assert_eq!(
        d.actions,
        vec![
            Action::Kill {
                task_id: tid("orphan"),
                grace: Some(Duration::from_secs(3)),
            },
            Action::Suppress,
        ]
    );
}

#[test]
fn ended_tasks_are_never_launched_again() {
    let a = task("a", "cpus:1;mem:32");
    let intent = Intent::new(vec![Wanted::new(a)]);
    let mut o = subscribed();
    o.suppressed = true;
    o.update(&status(
        "a",
        pb::TaskState::TaskFailed,
        pb::TaskReason::Unspecified,
    ));
    o.on_event(&Event::Offers(vec![offer("o1", "ag1", 4.0, 1024.0)]));
    let d = decide(&intent, &o, &Policy::default(), Instant::now());
    assert_eq!(
        d.actions,
        vec![Action::Decline {
            offer_ids: oids(&["o1"]),
            refuse: Some(Policy::default().idle_refuse),
        }]
    );
}

#[test]
fn a_task_refused_too_often_or_invalid_is_given_up() {
    let a = task("a", "cpus:1;mem:32");
    let mut bad = task("bad", "cpus:1;mem:32");
    bad.resources.as_mut().unwrap().cpus = -1.0;
    let intent = Intent::new(vec![Wanted::new(a), Wanted::new(bad)]);
    let mut o = subscribed();
    o.suppressed = true;
    for _ in 0..3 {
        o.launch_sent(&ids(&["a"]));
        o.launch_done(&ids(&["a"]), &LaunchOutcome::Refused("offer gone".into()));
    }
    let d = decide(&intent, &o, &Policy::default(), Instant::now());
    let [
        Action::GiveUp { status: first },
        Action::GiveUp { status: second },
    ] = d.actions.as_slice()
    else {
        panic!("expected two give-ups, got {:?}", d.actions);
    };
    assert_eq!(first.task_id, "a");
    assert_eq!(first.state(), pb::TaskState::TaskError);
    assert_eq!(
        first.message,
        "the master refused its launch 3 times, last: offer gone"
    );
    assert_eq!(second.task_id, "bad");
    assert!(second.message.contains("cpus"), "{}", second.message);
    // Given up: ended, not decided about again.
    o.give_up(first);
    o.give_up(second);
    let d = decide(&intent, &o, &Policy::default(), Instant::now());
    assert_eq!(d.actions, vec![]);
}

#[test]
fn offers_are_void_after_a_disconnect_and_rescinds_drop_them() {
    let intent = Intent::new(vec![Wanted::new(task("a", "cpus:1;mem:32"))]);
    let mut o = subscribed();
    o.on_event(&Event::Offers(vec![
        offer("o1", "ag1", 4.0, 1024.0),
        offer("o2", "ag2", 4.0, 1024.0),
    ]));
    o.on_event(&Event::Rescind {
        offer_id: "o1".into(),
    });
    let d = decide(&intent, &o, &Policy::default(), Instant::now());
    assert!(matches!(
        d.actions.first(),
        Some(Action::Launch { offer_id, .. }) if offer_id == "o2"
    ));
    o.on_event(&Event::Disconnected);
    let d = decide(&intent, &o, &Policy::default(), Instant::now());
    assert_eq!(d, Decision::default());
}

#[test]
fn the_settings_the_runtime_overrides_are_named_only_when_the_caller_made_them() {
    use crate::FrameworkConfig;
    // Defaults are not the caller's request: nothing to warn about.
    assert!(super::overridden(&FrameworkConfig::new("f")).is_empty());
    // What the runtime wants anyway is not overridden.
    let agreeing = FrameworkConfig::new("f")
        .partition_aware(true)
        .auto_acknowledge(false);
    assert!(super::overridden(&agreeing).is_empty());
    let conflicting = FrameworkConfig::new("f")
        .partition_aware(false)
        .auto_acknowledge(true);
    assert_eq!(
        super::overridden(&conflicting),
        ["partition_aware", "auto_acknowledge"]
    );
}

#[test]
fn a_task_seen_by_an_earlier_run_is_reconciled_and_its_loss_reported_not_relaunched() {
    let a = task("a", "cpus:1;mem:32");
    let intent = Intent::new(vec![Wanted::launched(on_agent(a, "ag1"))]);
    let t0 = Instant::now();
    let mut o = subscribed();
    o.suppressed = true;
    o.adopt(&intent);
    o.on_event(&Event::Offers(vec![offer("o1", "ag1", 4.0, 1024.0)]));
    let d = decide(&intent, &o, &Policy::default(), t0);
    assert_eq!(
        d.actions,
        vec![
            Action::Reconcile {
                tasks: vec![(tid("a"), Some(aid("ag1")))],
            },
            Action::Decline {
                offer_ids: oids(&["o1"]),
                refuse: Some(Policy::default().idle_refuse),
            },
        ]
    );
    o.offers_spent(&ids(&["o1"]));
    o.reconcile_sent(&ids(&["a"]), t0);
    // Not asked again before the retry interval.
    assert_eq!(
        decide(&intent, &o, &Policy::default(), t0 + Duration::from_secs(1)).actions,
        vec![]
    );
    // The master lost it: the framework hears so, and it is not launched.
    let gone = status("a", pb::TaskState::TaskUnknown, REASON_RECONCILIATION);
    assert_eq!(o.update(&gone), UpdateMeaning::Report);
    o.on_event(&Event::Offers(vec![offer("o2", "ag1", 4.0, 1024.0)]));
    let d = decide(&intent, &o, &Policy::default(), t0 + Duration::from_secs(2));
    assert!(
        !d.actions.iter().any(|a| matches!(a, Action::Launch { .. })),
        "{:?}",
        d.actions
    );
}

#[test]
fn a_task_to_stop_is_killed_at_once_and_its_end_reported() {
    let intent = Intent::default().stopping([(tid("old"), Some(aid("ag1")))]);
    let t0 = Instant::now();
    let mut o = subscribed();
    o.suppressed = true;
    o.adopt(&intent);
    let d = decide(&intent, &o, &Policy::default(), t0);
    assert_eq!(
        d.actions,
        vec![
            Action::Reconcile {
                tasks: vec![(tid("old"), Some(aid("ag1")))],
            },
            Action::Kill {
                task_id: tid("old"),
                grace: None,
            },
        ]
    );
    o.reconcile_sent(&ids(&["old"]), t0);
    o.kill_sent("old", t0);
    let gone = status("old", pb::TaskState::TaskUnknown, REASON_RECONCILIATION);
    assert_eq!(o.update(&gone), UpdateMeaning::Report);
    // Ended and still named: kept, not adopted again, nothing to do.
    o.forget_unwanted(|id| intent.names(id));
    o.adopt(&intent);
    assert_eq!(
        decide(
            &intent,
            &o,
            &Policy::default(),
            t0 + Duration::from_secs(60)
        )
        .actions,
        vec![]
    );
}

#[test]
fn constrained_tasks_go_only_into_offers_that_allow_them() {
    let tagged = task("tagged", "cpus:1;mem:32");
    let plain = task("plain", "cpus:1;mem:32");
    let intent = Intent::new(vec![
        Wanted::new(plain.clone()),
        Wanted::new(tagged.clone()).constraints([Constraint::Tag("gpu".into())]),
    ]);
    let mut gpu = offer("o2", "ag2", 4.0, 1024.0);
    gpu.attributes.push(pb::Attribute {
        name: "tags".into(),
        value: "linux, gpu".into(),
    });
    let mut o = subscribed();
    o.suppressed = true;
    o.on_event(&Event::Offers(vec![offer("o1", "ag1", 4.0, 1024.0), gpu]));
    let d = decide(&intent, &o, &Policy::default(), Instant::now());
    assert_eq!(
        d.actions,
        vec![
            Action::Launch {
                offer_id: oid("o2"),
                tasks: vec![on_agent(tagged.clone(), "ag2")],
            },
            Action::Launch {
                offer_id: oid("o1"),
                tasks: vec![on_agent(plain, "ag1")],
            },
        ]
    );
    // With no offer that allows it, it waits (and offers are revived).
    let intent = Intent::new(vec![
        Wanted::new(tagged).constraints([Constraint::Tag("gpu".into())]),
    ]);
    let mut o = subscribed();
    o.suppressed = true;
    o.on_event(&Event::Offers(vec![offer("o1", "ag1", 4.0, 1024.0)]));
    let d = decide(&intent, &o, &Policy::default(), Instant::now());
    assert!(
        !d.actions.iter().any(|a| matches!(a, Action::Launch { .. })),
        "{:?}",
        d.actions
    );
    assert!(d.actions.contains(&Action::Revive), "{:?}", d.actions);
}

#[test]
fn a_task_below_the_masters_minimums_is_given_up_without_a_launch() {
    let mut tiny = task("tiny", "cpus:1;mem:32");
    tiny.resources.as_mut().unwrap().mem = 0.0;
    let intent = Intent::new(vec![Wanted::new(tiny)]);
    let mut o = subscribed();
    o.on_event(&Event::Offers(vec![offer("o1", "ag1", 4.0, 1024.0)]));
    let d = decide(&intent, &o, &Policy::default(), Instant::now());
    let Some(Action::GiveUp { status }) = d.actions.first() else {
        panic!("expected a give-up first, got {:?}", d.actions);
    };
    assert_eq!(status.reason(), pb::TaskReason::TaskInvalid);
    assert!(status.message.contains("mem"), "{}", status.message);
    assert!(
        !d.actions.iter().any(|a| matches!(a, Action::Launch { .. })),
        "{:?}",
        d.actions
    );
}

#[test]
fn after_a_subscription_suppression_is_said_again_whichever_is_wanted() {
    // The master may have kept the framework suppressed across the
    // re-subscription (the same leader): a task that waits revives.
    let mut o = subscribed();
    o.suppressed = false;
    o.on_event(&Event::Subscribed {
        framework_id: "fw".into(),
        master_id: "m".into(),
        resubscribed: true,
    });
    let waiting = Intent::new(vec![Wanted::new(task("a", "cpus:1;mem:32"))]);
    let d = decide(&waiting, &o, &Policy::default(), Instant::now());
    assert_eq!(d.actions, vec![Action::Revive]);
    // Or dropped it (a new leader): with nothing to run, suppress again.
    let d = decide(&Intent::default(), &o, &Policy::default(), Instant::now());
    assert_eq!(d.actions, vec![Action::Suppress]);
    // Once said, not again.
    o.suppressed = true;
    o.suppression_known = true;
    let d = decide(&Intent::default(), &o, &Policy::default(), Instant::now());
    assert_eq!(d.actions, vec![]);
}

#[test]
fn a_spread_task_whose_check_probes_a_port_of_the_offer_is_launched_with_it() {
    // Its HTTP check's port is 0 until placement gives it one: not
    // invalid, as the master will see it with the port.
    let mut t = task("web", "cpus:1;mem:32");
    t.health_check = Some(pb::HealthCheck {
        http: Some(pb::HttpCheck {
            port: 0,
            path: "/".into(),
            scheme: "http".into(),
        }),
        ..Default::default()
    });
    let mut placement = spread::Placement::new("/web");
    placement.ports = 1;
    placement.health_port = Some(0);
    let intent = Intent::new(vec![Wanted::new(t).placement(placement)]);
    let mut o = subscribed();
    let mut with_ports = offer("o1", "ag1", 4.0, 1024.0);
    if let Some(r) = with_ports.resources.as_mut() {
        r.ports = vec![pb::Range {
            begin: 31000,
            end: 31001,
        }];
    }
    o.on_event(&Event::Offers(vec![with_ports]));
    let d = decide(&intent, &o, &Policy::default(), Instant::now());
    let launched = d.actions.iter().find_map(|a| match a {
        Action::Launch { tasks, .. } => Some(tasks.clone()),
        _ => None,
    });
    let tasks = launched.unwrap_or_else(|| panic!("not launched: {:?}", d.actions));
    let check = tasks[0]
        .health_check
        .as_ref()
        .unwrap()
        .http
        .as_ref()
        .unwrap();
    assert_eq!(check.port, 31000);
}
