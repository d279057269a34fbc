use super::*;
use crate::error::ApplyError;

fn fw(s: &str) -> FrameworkId {
    FrameworkId::new(s).unwrap()
}
fn agent_id(s: &str) -> AgentId {
    AgentId::new(s).unwrap()
}
fn tid(s: &str) -> TaskId {
    TaskId::new(s).unwrap()
}
fn res(s: &str) -> Resources {
    s.parse().unwrap()
}

fn subscribe(id: &str, partition_aware: bool) -> Command {
    Command::SubscribeFramework {
        record: FrameworkRecord {
            id: fw(id),
            name: id.into(),
            roles: [Role::default()].into(),
            failover_timeout_ms: 1000,
            partition_aware,
            hostname: "h".into(),
            registered_at_ms: 1,
            disconnected_at_ms: None,
        },
    }
}

fn agent_record(id: &str, resources: &str) -> AgentRecord {
    AgentRecord {
        id: agent_id(id),
        hostname: id.into(),
        address: format!("{id}:5051"),
        unreserved: res(resources),
        reserved: BTreeMap::new(),
        attributes: Vec::new(),
        draining: false,
        registered_at_ms: 1,
        unreachable_since_ms: None,
    }
}

fn register(
    id: &str,
    resources: &str,
    reported: Option<Vec<(&str, &str, pb::TaskState)>>,
) -> Command {
    Command::RegisterAgent {
        record: agent_record(id, resources),
        reported: reported.map(|r| {
            r.into_iter()
                .map(|(f, t, s)| (fw(f), tid(t), s as i32))
                .collect()
        }),
        at_ms: 5,
    }
}

fn task(framework: &str, id: &str, agent: &str, resources: &str) -> TaskRecord {
    TaskRecord {
        framework: fw(framework),
        id: tid(id),
        agent: agent_id(agent),
        role: Role::default(),
        allocated: Allocated {
            unreserved: res(resources),
            reserved: Resources::empty(),
        },
        info: Vec::new(),
        state: pb::TaskState::TaskStaging as i32,
        status: Vec::new(),
        launched_at_ms: 2,
        running_at_ms: None,
        ended_at_ms: None,
        reported: false,
    }
}

fn launch(framework: &str, agent: &str, tasks: Vec<TaskRecord>) -> Command {
    Command::LaunchTasks {
        framework: fw(framework),
        agent: agent_id(agent),
        tasks,
    }
}

fn update(framework: &str, task: &str, state: pb::TaskState) -> Command {
    update_at(framework, task, state, 0.0)
}

/// An update with its timestamp (seconds).
fn update_at(framework: &str, task: &str, state: pb::TaskState, at: f64) -> Command {
    Command::UpdateTask {
        framework: fw(framework),
        task: tid(task),
        status: pb::TaskStatus {
            task_id: task.into(),
            state: state as i32,
            uuid: vec![7; 16],
            timestamp: at,
            ..Default::default()
        }
        .encode_to_vec(),
    }
}

/// f1 subscribed; a1 (cpus:4;mem:1024) registered; t1 (cpus:1;mem:128)
/// and t2 (cpus:2;mem:256) running on it.
fn cluster() -> Registry {
    let mut r = Registry::new(10);
    r.apply(&subscribe("f1", false)).unwrap();
    r.apply(&register("a1", "cpus:4;mem:1024", None)).unwrap();
    r.apply(&launch(
        "f1",
        "a1",
        vec![
            task("f1", "t1", "a1", "cpus:1;mem:128"),
            task("f1", "t2", "a1", "cpus:2;mem:256"),
        ],
    ))
    .unwrap();
    r
}

/// Applies `cmd`, expects it refused, and checks nothing changed.
fn refused(r: &mut Registry, cmd: &Command) -> ApplyError {
    let before = r.clone();
    let err = r.apply(cmd).unwrap_err();
    assert_eq!(*r, before, "refused {cmd:?} changed the registry");
    err
}

#[test]
fn refused_commands_change_nothing() {
    let mut r = cluster();
    // Beyond the agent's resources (1 cpu is left).
    let e = refused(
        &mut r,
        &launch("f1", "a1", vec![task("f1", "t3", "a1", "cpus:2;mem:1")]),
    );
    assert!(matches!(e, ApplyError::Overcommit { .. }), "{e}");
    // Two tasks that fit alone but not together.
    let e = refused(
        &mut r,
        &launch(
            "f1",
            "a1",
            vec![
                task("f1", "t3", "a1", "cpus:0.6;mem:1"),
                task("f1", "t4", "a1", "cpus:0.6;mem:1"),
            ],
        ),
    );
    assert!(matches!(e, ApplyError::Overcommit { .. }), "{e}");
    // Duplicate task ids, in the launch or with an active task.
    let e = refused(
        &mut r,
        &launch(
            "f1",
            "a1",
            vec![
                task("f1", "t3", "a1", "cpus:0.1"),
                task("f1", "t3", "a1", "cpus:0.1"),
            ],
        ),
    );
    assert!(matches!(e, ApplyError::DuplicateTask { .. }), "{e}");
    let e = refused(
        &mut r,
        &launch("f1", "a1", vec![task("f1", "t1", "a1", "cpus:0.1")]),
    );
    assert!(matches!(e, ApplyError::DuplicateTask { .. }), "{e}");
    // Unknown ids.
    refused(
        &mut r,
        &launch("fx", "a1", vec![task("fx", "t9", "a1", "cpus:0.1")]),
    );
    refused(
        &mut r,
        &launch("f1", "ax", vec![task("f1", "t9", "ax", "cpus:0.1")]),
    );
    refused(
        &mut r,
        &launch("f1", "a1", vec![task("f1", "t9", "a2", "cpus:0.1")]),
    );
    refused(&mut r, &update("f1", "nope", pb::TaskState::TaskRunning));
    refused(
        &mut r,
        &Command::RemoveFramework {
            id: fw("fx"),
            at_ms: 1,
            reason: "x".into(),
        },
    );
    refused(
        &mut r,
        &Command::DisconnectFramework {
            id: fw("fx"),
            at_ms: 1,
        },
    );
    refused(
        &mut r,
        &Command::MarkAgentUnreachable {
            id: agent_id("ax"),
            at_ms: 1,
        },
    );
    refused(
        &mut r,
        &Command::SetAgentDraining {
            id: agent_id("ax"),
            draining: true,
        },
    );
    refused(
        &mut r,
        &Command::SetWeight {
            role: Role::default(),
            weight_milli: 0,
        },
    );
    // Undecodable status, unknown state.
    refused(
        &mut r,
        &Command::UpdateTask {
            framework: fw("f1"),
            task: tid("t1"),
            status: vec![0xff, 0xff, 0xff],
        },
    );
    let mut bad = pb::TaskStatus {
        task_id: "t1".into(),
        ..Default::default()
    };
    bad.state = 999;
    refused(
        &mut r,
        &Command::UpdateTask {
            framework: fw("f1"),
            task: tid("t1"),
            status: bad.encode_to_vec(),
        },
    );
    assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:3;mem:384"));
}

#[test]
fn ports_are_never_claimed_twice() {
    let mut r = Registry::new(10);
    r.apply(&subscribe("f1", false)).unwrap();
    r.apply(&register("a1", "cpus:4;mem:1024;ports:[8000-8010]", None))
        .unwrap();
    // Within one launch.
    refused(
        &mut r,
        &launch(
            "f1",
            "a1",
            vec![
                task("f1", "t1", "a1", "cpus:0.1;ports:[8000-8000]"),
                task("f1", "t2", "a1", "cpus:0.1;ports:[8000-8000]"),
            ],
        ),
    );
    // Against a running task.
    r.apply(&launch(
        "f1",
        "a1",
        vec![task("f1", "t1", "a1", "cpus:0.1;ports:[8000-8000]")],
    ))
    .unwrap();
    refused(
        &mut r,
        &launch(
            "f1",
            "a1",
            vec![task("f1", "t2", "a1", "cpus:0.1;ports:[8000-8001]")],
        ),
    );
    r.apply(&launch(
        "f1",
        "a1",
        vec![task("f1", "t2", "a1", "cpus:0.1;ports:[8001-8001]")],
    ))
    .unwrap();
}

#[test]
fn a_recently_completed_task_id_is_not_launched_again() {
    let mut r = cluster();
    r.set_max_completed(2);
    r.apply(&update("f1", "t1", pb::TaskState::TaskFinished))
        .unwrap();
    let again = launch("f1", "a1", vec![task("f1", "t1", "a1", "cpus:0.1")]);
    let e = refused(&mut r, &again);
    assert!(matches!(e, ApplyError::DuplicateTask { .. }), "{e}");
    // The index survives a snapshot round trip.
    let mut restored: Registry = postcard::from_bytes(&postcard::to_stdvec(&r).unwrap()).unwrap();
    restored.rebuild_indexes();
    assert_eq!(restored, r);
    assert!(matches!(
        restored.apply(&again),
        Err(ApplyError::DuplicateTask { .. })
    ));
    // Once it fell off the bounded list of completed tasks, the id is
    // free again.
    for t in ["t3", "t4"] {
        r.apply(&launch("f1", "a1", vec![task("f1", t, "a1", "cpus:0.1")]))
            .unwrap();
        r.apply(&update("f1", t, pb::TaskState::TaskFinished))
            .unwrap();
    }
    assert!(r.completed_task(&fw("f1"), &tid("t1")).is_none());
    r.apply(&again).unwrap();
}

#[test]
fn terminal_update_frees_once_and_framework_removal_frees_the_rest() {
    let mut r = cluster();
    let e = r
        .apply(&update("f1", "t1", pb::TaskState::TaskRunning))
        .unwrap();
    assert!(e.freed.is_empty());
    let e = r
        .apply(&update("f1", "t1", pb::TaskState::TaskFinished))
        .unwrap();
    assert_eq!(e.freed.len(), 1);
    assert_eq!(e.freed[0].3.total(), res("cpus:1;mem:128"));
    assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:2;mem:256"));
    // A resend of the terminal update is refused: nothing freed twice.
    refused(&mut r, &update("f1", "t1", pb::TaskState::TaskFinished));

    let e = r
        .apply(&Command::RemoveFramework {
            id: fw("f1"),
            at_ms: 9,
            reason: "FRAMEWORK_TEARDOWN".into(),
        })
        .unwrap();
    assert_eq!(e.freed.len(), 1, "only t2 was still active");
    assert_eq!(e.freed[0].3.total(), res("cpus:2;mem:256"));
    assert!(r.agent_used(&agent_id("a1")).is_empty());
    assert_eq!(r.tasks().count(), 0);
    assert_eq!(
        r.completed_task(&fw("f1"), &tid("t2"))
            .map(TaskRecord::state),
        Some(pb::TaskState::TaskKilled)
    );
    // The agent's late terminal update of t2 no longer applies.
    refused(&mut r, &update("f1", "t2", pb::TaskState::TaskKilled));
}

#[test]
fn reregistration_loses_unreported_tasks_and_kills_unknown_ones() {
    let mut r = cluster();
    // t2 ran on a1 (a1 reported it once), so a1 coming back without it
    // means it is gone.
    r.apply(&update("f1", "t2", pb::TaskState::TaskRunning))
        .unwrap();
    r.apply(&subscribe("f2", false)).unwrap();
    r.apply(&register("a2", "cpus:4;mem:1024", None)).unwrap();
    r.apply(&launch("f2", "a2", vec![task("f2", "x", "a2", "cpus:1")]))
        .unwrap();
    // a1 comes back with t1, a task the registry never saw, a task the
    // registry has on a2, and a terminal unknown task (no kill needed).
    let e = r
        .apply(&register(
            "a1",
            "cpus:4;mem:1024",
            Some(vec![
                ("f1", "t1", pb::TaskState::TaskRunning),
                ("f1", "ghost", pb::TaskState::TaskRunning),
                ("f2", "x", pb::TaskState::TaskRunning),
                ("f1", "old", pb::TaskState::TaskFinished),
            ]),
        ))
        .unwrap();
    assert_eq!(e.freed.len(), 1);
    assert_eq!(e.freed[0].3.total(), res("cpus:2;mem:256"));
    assert_eq!(e.updates.len(), 1);
    assert_eq!(e.updates[0].1.task_id, "t2");
    assert_eq!(e.updates[0].1.state, pb::TaskState::TaskLost as i32);
    let mut unknown = e.unknown_tasks.clone();
    unknown.sort();
    assert_eq!(
        unknown,
        vec![(fw("f1"), tid("ghost")), (fw("f2"), tid("x"))]
    );
    assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:1;mem:128"));
    assert_eq!(
        r.task(&fw("f2"), &tid("x")).map(|t| t.agent.clone()),
        Some(agent_id("a2"))
    );
}

#[test]
fn reregistration_relaunches_a_launch_the_agent_never_got_when_it_fits() {
    let mut r = cluster();
    // a1 comes back with t1 only; t2 was launched but never reported:
    // its RunTask was lost, so it is sent again and keeps its place.
    let running = vec![("f1", "t1", pb::TaskState::TaskRunning)];
    let e = r
        .apply(&register("a1", "cpus:4;mem:1024", Some(running.clone())))
        .unwrap();
    assert_eq!(e.relaunch, vec![(fw("f1"), tid("t2"))]);
    assert!(e.updates.is_empty() && e.freed.is_empty(), "{e:?}");
    assert_eq!(
        r.task(&fw("f1"), &tid("t2")).map(TaskRecord::state),
        Some(pb::TaskState::TaskStaging)
    );
    assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:3;mem:384"));

    // Smaller now: t2 no longer fits next to t1, so it is lost.
    let mut r = cluster();
    let e = r
        .apply(&register("a1", "cpus:2;mem:1024", Some(running)))
        .unwrap();
    assert!(e.relaunch.is_empty());
    assert_eq!(e.updates.len(), 1);
    assert_eq!(e.updates[0].1.task_id, "t2");
    assert_eq!(e.updates[0].1.state, pb::TaskState::TaskLost as i32);
    assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:1;mem:128"));
}

#[test]
fn a_launch_never_reported_is_sent_again_after_its_agent_was_unreachable() {
    // t2 was launched on a1, which was cut off before it got the
    // RunTask: marked unreachable, then back without t2. t1, which a1
    // did report, is back running.
    let mut r = cluster();
    r.apply(&update("f1", "t1", pb::TaskState::TaskRunning))
        .unwrap();
    r.apply(&Command::MarkAgentUnreachable {
        id: agent_id("a1"),
        at_ms: 5,
    })
    .unwrap();
    assert_eq!(
        r.task(&fw("f1"), &tid("t2")).map(TaskRecord::state),
        Some(pb::TaskState::TaskLost)
    );
    let running = vec![("f1", "t1", pb::TaskState::TaskRunning)];
    let e = r
        .apply(&register("a1", "cpus:4;mem:1024", Some(running)))
        .unwrap();
    assert_eq!(e.relaunch, vec![(fw("f1"), tid("t2"))]);
    assert!(r.task(&fw("f1"), &tid("t2")).is_some());
    // t1 was reported: had a1 come back without it, it would be lost.
    let mut r = cluster();
    r.apply(&update("f1", "t1", pb::TaskState::TaskRunning))
        .unwrap();
    r.apply(&Command::MarkAgentUnreachable {
        id: agent_id("a1"),
        at_ms: 5,
    })
    .unwrap();
    let e = r
        .apply(&register("a1", "cpus:4;mem:1024", Some(Vec::new())))
        .unwrap();
    assert_eq!(e.relaunch, vec![(fw("f1"), tid("t2"))]);
    assert_eq!(
        r.completed_task(&fw("f1"), &tid("t1"))
            .map(TaskRecord::state),
        Some(pb::TaskState::TaskLost)
    );
}

#[test]
fn new_agent_with_tasks_gets_them_killed() {
    let mut r = cluster();
    let e = r
        .apply(&register(
            "a9",
            "cpus:1",
            Some(vec![("f1", "t1", pb::TaskState::TaskRunning)]),
        ))
        .unwrap();
    assert_eq!(e.unknown_tasks, vec![(fw("f1"), tid("t1"))]);
    assert!(e.freed.is_empty());
    // t1 stays on a1.
    assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:3;mem:384"));
}

#[test]
fn reregistration_that_does_not_fit_running_tasks_is_refused() {
    let mut r = cluster();
    r.apply(&Command::SetAgentDraining {
        id: agent_id("a1"),
        draining: true,
    })
    .unwrap();
    let both = vec![
        ("f1", "t1", pb::TaskState::TaskRunning),
        ("f1", "t2", pb::TaskState::TaskRunning),
    ];
    let e = refused(
        &mut r,
        &register("a1", "cpus:2;mem:1024", Some(both.clone())),
    );
    assert!(matches!(e, ApplyError::Overcommit { .. }), "{e}");
    // Fits once t2 is gone (it is then lost); draining is kept.
    let e = r
        .apply(&register(
            "a1",
            "cpus:2;mem:1024",
            Some(vec![("f1", "t1", pb::TaskState::TaskRunning)]),
        ))
        .unwrap();
    assert_eq!(e.freed.len(), 1);
    let a1 = r.agent(&agent_id("a1")).unwrap();
    assert!(a1.draining);
    assert_eq!(a1.unreserved, res("cpus:2;mem:1024"));
    assert_eq!(a1.registered_at_ms, 1);
}

#[test]
fn reserved_parts_must_fit_the_roles_reservation() {
    let mut r = Registry::new(10);
    r.apply(&subscribe("f1", false)).unwrap();
    let role = Role::new("web").unwrap();
    let mut rec = agent_record("a1", "cpus:2");
    rec.reserved.insert(role.clone(), res("cpus:2"));
    r.apply(&Command::RegisterAgent {
        record: rec.clone(),
        reported: None,
        at_ms: 1,
    })
    .unwrap();
    let mut t = task("f1", "t1", "a1", "cpus:0");
    t.role = role.clone();
    t.allocated = Allocated {
        unreserved: Resources::empty(),
        reserved: res("cpus:2"),
    };
    r.apply(&launch("f1", "a1", vec![t])).unwrap();
    // Same total, but the reservation moved to the unreserved pool: the
    // task's reserved part no longer fits.
    let mut moved = agent_record("a1", "cpus:4");
    moved.reserved.clear();
    let e = refused(
        &mut r,
        &Command::RegisterAgent {
            record: moved,
            reported: Some(vec![(
                fw("f1"),
                tid("t1"),
                pb::TaskState::TaskRunning as i32,
            )]),
            at_ms: 2,
        },
    );
    assert!(matches!(e, ApplyError::Overcommit { .. }), "{e}");
}

#[test]
fn unreachable_then_back_reports_running_again() {
    let mut r = Registry::new(10);
    r.apply(&subscribe("aware", true)).unwrap();
    r.apply(&subscribe("plain", false)).unwrap();
    r.apply(&register("a1", "cpus:4;mem:1024", None)).unwrap();
    r.apply(&launch(
        "aware",
        "a1",
        vec![task("aware", "t", "a1", "cpus:1")],
    ))
    .unwrap();
    r.apply(&launch(
        "plain",
        "a1",
        vec![task("plain", "t", "a1", "cpus:1")],
    ))
    .unwrap();
    let e = r
        .apply(&Command::MarkAgentUnreachable {
            id: agent_id("a1"),
            at_ms: 10,
        })
        .unwrap();
    let mut states: Vec<_> = e
        .updates
        .iter()
        .map(|(f, s)| (f.to_string(), s.state))
        .collect();
    states.sort();
    assert_eq!(
        states,
        vec![
            ("aware".to_string(), pb::TaskState::TaskUnreachable as i32),
            ("plain".to_string(), pb::TaskState::TaskLost as i32),
        ]
    );
    assert!(e.freed.is_empty(), "unreachable tasks keep their resources");
    // Marking again changes nothing.
    let before = r.clone();
    let e = r
        .apply(&Command::MarkAgentUnreachable {
            id: agent_id("a1"),
            at_ms: 11,
        })
        .unwrap();
    assert_eq!(e, Effects::default());
    assert_eq!(r, before);

    let e = r
        .apply(&register(
            "a1",
            "cpus:4;mem:1024",
            Some(vec![
                ("aware", "t", pb::TaskState::TaskRunning),
                ("plain", "t", pb::TaskState::TaskRunning),
            ]),
        ))
        .unwrap();
    assert_eq!(e.updates.len(), 2);
    assert!(
        e.updates
            .iter()
            .all(|(_, s)| s.state == pb::TaskState::TaskRunning as i32)
    );
    assert!(e.freed.is_empty());
    assert!(
        r.agent(&agent_id("a1"))
            .unwrap()
            .unreachable_since_ms
            .is_none()
    );
}

#[test]
fn disconnect_keeps_the_first_time_and_resubscribe_clears_it() {
    let mut r = Registry::new(10);
    r.apply(&subscribe("f1", false)).unwrap();
    for at_ms in [100, 200] {
        r.apply(&Command::DisconnectFramework {
            id: fw("f1"),
            at_ms,
        })
        .unwrap();
    }
    assert_eq!(
        r.framework(&fw("f1")).unwrap().disconnected_at_ms,
        Some(100)
    );
    let mut again = subscribe("f1", true);
    if let Command::SubscribeFramework { record } = &mut again {
        record.registered_at_ms = 999;
        record.disconnected_at_ms = Some(5);
    }
    r.apply(&again).unwrap();
    let f = r.framework(&fw("f1")).unwrap();
    assert_eq!(f.disconnected_at_ms, None);
    assert_eq!(f.registered_at_ms, 1);
    assert!(f.partition_aware);
}

#[test]
fn snapshot_round_trip_rebuilds_usage() {
    let mut r = cluster();
    r.apply(&update("f1", "t1", pb::TaskState::TaskFailed))
        .unwrap();
    let bytes = r.to_snapshot().unwrap();
    let mut back = Registry::from_snapshot(&bytes).unwrap();
    back.rebuild_indexes();
    assert_eq!(back, r);
    assert_eq!(back.agent_used(&agent_id("a1")), res("cpus:2;mem:256"));
}

fn times(r: &Registry, task: &str) -> (u64, Option<u64>, Option<u64>) {
    let t = r
        .task(&fw("f1"), &tid(task))
        .or_else(|| r.completed_task(&fw("f1"), &tid(task)))
        .expect("the task is known");
    (t.launched_at_ms, t.running_at_ms, t.ended_at_ms)
}

#[test]
fn tasks_carry_launch_first_running_and_end_times() {
    let mut r = cluster();
    assert_eq!(times(&r, "t1"), (2, None, None));
    r.apply(&update_at("f1", "t1", pb::TaskState::TaskStarting, 3.0))
        .unwrap();
    assert_eq!(times(&r, "t1"), (2, None, None));
    r.apply(&update_at("f1", "t1", pb::TaskState::TaskRunning, 4.5))
        .unwrap();
    assert_eq!(times(&r, "t1"), (2, Some(4500), None));
    // A later RUNNING (a health change) keeps the first time.
    r.apply(&update_at("f1", "t1", pb::TaskState::TaskRunning, 8.0))
        .unwrap();
    r.apply(&update_at("f1", "t1", pb::TaskState::TaskFinished, 9.25))
        .unwrap();
    assert_eq!(times(&r, "t1"), (2, Some(4500), Some(9250)));
    // An update without a usable time counts as at the launch.
    let mut r = cluster();
    r.apply(&update("f1", "t1", pb::TaskState::TaskRunning))
        .unwrap();
    r.apply(&update_at("f1", "t1", pb::TaskState::TaskFailed, f64::NAN))
        .unwrap();
    assert_eq!(times(&r, "t1"), (2, Some(2), Some(2)));
    // Ended by the master: the command's time.
    let mut r = cluster();
    r.apply(&Command::RemoveFramework {
        id: fw("f1"),
        at_ms: 70,
        reason: "gone".into(),
    })
    .unwrap();
    assert_eq!(times(&r, "t2"), (2, None, Some(70)));
    let mut r = cluster();
    r.apply(&update_at("f1", "t1", pb::TaskState::TaskRunning, 1.0))
        .unwrap();
    // t2 was reported once (so it is not sent again): the agent lost it.
    r.apply(&update_at("f1", "t2", pb::TaskState::TaskStarting, 1.0))
        .unwrap();
    r.apply(&register(
        "a1",
        "cpus:4;mem:1024",
        Some(vec![("f1", "t1", pb::TaskState::TaskRunning)]),
    ))
    .unwrap();
    assert_eq!(
        times(&r, "t2"),
        (2, None, Some(5)),
        "lost at re-registration"
    );
    assert_eq!(times(&r, "t1"), (2, Some(1000), None));
}

#[test]
fn seconds_become_milliseconds_only_for_times_after_the_epoch() {
    assert_eq!(secs_to_ms(1.5), Some(1500));
    assert_eq!(secs_to_ms(1_700_000_000.123), Some(1_700_000_000_123));
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1.0e13] {
        assert_eq!(secs_to_ms(bad), None, "{bad}");
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// f1 on a1 with t1 (finished, timestamp 9 s) and t2 (staging), as
/// written by berth before task times (commit c1e4ac8).
const SNAPSHOT_V0: &str = "0102663102663102663101012ae8070001680100010261310261310261310761313a35303531a01f80c03e00000000000001000102663101027432026631027432026131012ae80780e807000000000000000002010202000201026631027431026131012ae80780e80700000000000000000201020a210a02743110054210070707070707070707070707070707074900000000000022400200000a";
/// Its `LaunchTasks` of t1 and t2, as logged then.
const LAUNCH_V0: &str = "0702663102613102026631027431026131012ae80780e8070000000000000000020102020002026631027432026131012ae80780e8070000000000000000020102020002";

#[test]
fn first_format_snapshots_and_launches_are_read() {
    let old = Registry::from_snapshot(&unhex(SNAPSHOT_V0)).expect("a version 0 snapshot");
    let cmd: Command = postcard::from_bytes(&unhex(LAUNCH_V0)).expect("a version 0 launch");
    assert!(matches!(&cmd, Command::LaunchTasksV0 { tasks, .. } if tasks.len() == 2));
    // The same state, built by applying the old log.
    let mut r = Registry::new(10);
    r.apply(&subscribe("f1", false)).unwrap();
    r.apply(&register("a1", "cpus:4;mem:1024", None)).unwrap();
    assert_eq!(r.check(&cmd), Ok(()));
    r.apply(&cmd).unwrap();
    r.apply(&update_at("f1", "t1", pb::TaskState::TaskFinished, 9.0))
        .unwrap();
    let mut old = old;
    old.rebuild_indexes();
    // The old format had no times: t1's end is the one its update gave.
    let t1 = r.completed_task(&fw("f1"), &tid("t1")).unwrap().clone();
    assert_eq!(t1.ended_at_ms, Some(9000));
    let mut expected = r.clone();
    expected.completed[0].ended_at_ms = None;
    assert_eq!(old, expected);
    assert_eq!(old.agent_used(&agent_id("a1")), res("cpus:1;mem:128"));
}

#[test]
fn snapshots_carry_their_version_and_refuse_unknown_ones() {
    let mut r = cluster();
    r.apply(&update_at("f1", "t1", pb::TaskState::TaskRunning, 4.0))
        .unwrap();
    r.apply(&update_at("f1", "t1", pb::TaskState::TaskFailed, 6.0))
        .unwrap();
    let bytes = r.to_snapshot().unwrap();
    assert!(bytes.starts_with(SNAPSHOT_MAGIC));
    assert_eq!(bytes[SNAPSHOT_MAGIC.len()], SNAPSHOT_VERSION);
    let mut back = Registry::from_snapshot(&bytes).unwrap();
    back.rebuild_indexes();
    assert_eq!(back, r);
    let mut newer = bytes.clone();
    newer[SNAPSHOT_MAGIC.len()] = SNAPSHOT_VERSION + 1;
    let e = Registry::from_snapshot(&newer).unwrap_err();
    assert!(e.to_string().contains("version 3"), "{e}");
    assert!(Registry::from_snapshot(SNAPSHOT_MAGIC).is_err());
    assert!(Registry::from_snapshot(b"\xff\xff").is_err());
}

/// The snapshot of version 1 of the state of [`SNAPSHOT_V0`], t1 having
/// run from 4 s to 9 s: a change of these bytes is a change of the
/// format, which needs a new version.
const SNAPSHOT_V1: &str = "0062657274682d7265676973747279010102663102663102663101012ae8070001680100010261310261310261310761313a35303531a01f80c03e00000000000001000102663101027432026631027432026131012ae80780e807000000000000000002010202000200000001026631027431026131012ae80780e80700000000000000000201020a210a02743110054210070707070707070707070707070707074900000000000022400201a01f01a84601000001010e3132372e302e302e313a353035300a";

/// The state of [`SNAPSHOT_V1`].
fn golden_state() -> Registry {
    let mut r = Registry::new(10);
    r.apply(&subscribe("f1", false)).unwrap();
    r.apply(&register("a1", "cpus:4;mem:1024", None)).unwrap();
    let with_info = |id: &str| TaskRecord {
        info: vec![1, 2],
        ..task("f1", id, "a1", "cpus:1;mem:128")
    };
    r.apply(&launch("f1", "a1", vec![with_info("t1"), with_info("t2")]))
        .unwrap();
    r.apply(&update_at("f1", "t1", pb::TaskState::TaskRunning, 4.0))
        .unwrap();
    r.apply(&update_at("f1", "t1", pb::TaskState::TaskFinished, 9.0))
        .unwrap();
    r.apply(&Command::RecordMembers {
        members: [(1, "127.0.0.1:5050".to_owned())].into(),
    })
    .unwrap();
    r
}

#[test]
fn version_1_snapshots_are_read() {
    let r = golden_state();
    let mut back = Registry::from_snapshot(&unhex(SNAPSHOT_V1)).unwrap();
    back.rebuild_indexes();
    assert_eq!(back, r);
}

/// [`SNAPSHOT_V1`]'s state with keys and a lease, as version 2: a
/// change of these bytes is a change of the format.
const SNAPSHOT_V2: &str = "0062657274682d7265676973747279020102663102663102663101012ae8070001680100010261310261310261310761313a35303531a01f80c03e00000000000001000102663101027432026631027432026131012ae80780e807000000000000000002010202000200000001026631027431026131012ae80780e80700000000000000000201020a210a02743110054210070707070707070707070707070707074900000000000022400201a01f01a84601000001010e3132372e302e302e313a35303530010373766302016101310101010162023232010101010661637469766501036f6e6501904e0502050a";

#[test]
fn version_2_snapshots_keep_their_bytes() {
    let mut r = golden_state();
    r.apply(&Command::KvTxn {
        txn: kv::Txn {
            namespace: "svc".into(),
            compares: vec![kv::Compare::Version {
                key: "a".into(),
                version: 0,
            }],
            ops: vec![
                kv::Op::Put {
                    key: "a".into(),
                    value: b"1".to_vec(),
                },
                kv::Op::Put {
                    key: "b".into(),
                    value: b"22".to_vec(),
                },
            ],
        },
    })
    .unwrap();
    r.apply(&Command::KvLeaseGrant {
        namespace: "svc".into(),
        name: "active".into(),
        holder: "one".into(),
        ttl_ms: 10_000,
        expect_epoch: 0,
    })
    .unwrap();
    let hex: String = r
        .to_snapshot()
        .unwrap()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    assert_eq!(hex, SNAPSHOT_V2);
    let mut back = Registry::from_snapshot(&unhex(SNAPSHOT_V2)).unwrap();
    back.rebuild_indexes();
    assert_eq!(back, r);
}
