//! Agents: registration, connections, status updates and kills.

use super::*;

#[tokio::test]
async fn old_agent_connection_no_longer_affects_state() {
    let (_dir, mut core, agent, mut old_rx, header, mut events) = running().await;
    let (r, mut new_rx) = register(
        &mut core,
        2,
        agent.as_str(),
        "cpus:4;mem:1024",
        &[(&header.framework_id, "t1", pb::TaskState::TaskRunning)],
    )
    .await;
    r.unwrap();
    assert!(
        drain_agent(&mut new_rx)
            .iter()
            .any(|m| matches!(m, M::Registered(_)))
    );
    // The old stream ended (its sender is gone).
    drain_agent(&mut old_rx);
    assert!(old_rx.recv().await.is_none());

    // Late messages and the close of the old connection change nothing.
    let before = core.registry.clone();
    deliver(
        &mut core,
        1,
        status_update(&header.framework_id, "t1", pb::TaskState::TaskFailed),
    )
    .await;
    core.agent_closed(1);
    assert_eq!(core.registry, before);
    assert_eq!(core.agents.get(&agent).map(|c| c.conn), Some(2));
    // The agent is still in the allocator: its free resources (t1's
    // usage recorded again) are offered.
    let o = offers(&mut core, &mut events);
    assert!((offered_cpus(&o) - 3.0).abs() < 1e-9, "{o:?}");
    // Messages on the new connection count.
    deliver(
        &mut core,
        2,
        status_update(&header.framework_id, "t1", pb::TaskState::TaskRunning),
    )
    .await;
    let t = core
        .registry
        .task(
            &FrameworkId::new(header.framework_id.clone()).unwrap(),
            &TaskId::new("t1").unwrap(),
        )
        .unwrap();
    assert_eq!(t.state(), pb::TaskState::TaskRunning);
    assert_eq!(t.last_status().agent_id, agent.as_str());
}

#[tokio::test]
async fn refused_reregistration_keeps_the_old_connection() {
    let (_dir, mut core, agent, _old_rx, header, mut events) = running().await;
    let offers_before = offers(&mut core, &mut events);
    assert_eq!(offers_before.len(), 1);
    let registry = core.registry.clone();
    let index = core.applied_index;
    // t1 needs cpus:1; the agent now claims half a cpu.
    let (r, _rx) = register(
        &mut core,
        2,
        agent.as_str(),
        "cpus:0.5;mem:1024",
        &[(&header.framework_id, "t1", pb::TaskState::TaskRunning)],
    )
    .await;
    assert_eq!(r.unwrap_err().code(), tonic::Code::FailedPrecondition);
    assert_eq!(core.registry, registry);
    assert_eq!(core.applied_index, index, "nothing logged");
    assert_eq!(core.agents.get(&agent).map(|c| c.conn), Some(1));
    assert!(
        core.offers
            .get(&OfferId::new(offers_before[0].id.clone()).unwrap())
            .is_some()
    );
}

#[tokio::test]
async fn terminal_update_frees_the_task_in_the_allocator_once() {
    let (_dir, mut core, _agent, mut arx, header, mut events) = running().await;
    // The rest of the agent is on offer (and stays so): only t1's
    // resources can come back.
    let o = offers(&mut core, &mut events);
    assert!((offered_cpus(&o) - 3.0).abs() < 1e-9, "{o:?}");
    for state in [pb::TaskState::TaskFinished, pb::TaskState::TaskFinished] {
        deliver(
            &mut core,
            1,
            status_update(&header.framework_id, "t1", state),
        )
        .await;
    }
    let updates = drain_events(&mut events)
        .into_iter()
        .filter(|e| matches!(e, pb::event::Event::Update(_)))
        .count();
    assert_eq!(updates, 2, "the resend is forwarded again");
    assert!(!drain_agent(&mut arx).iter().any(|m| matches!(m, M::Ack(_))));
    let o = offers(&mut core, &mut events);
    assert!((offered_cpus(&o) - 1.0).abs() < 1e-9, "{o:?}");
}

#[tokio::test]
async fn update_of_a_forgotten_task_is_forwarded_not_acknowledged() {
    let (_dir, mut core, _agent, mut arx, header, mut events) = running().await;
    deliver(
        &mut core,
        1,
        status_update(
            &header.framework_id,
            "long-gone",
            pb::TaskState::TaskFinished,
        ),
    )
    .await;
    assert!(
        drain_events(&mut events)
            .iter()
            .any(|e| matches!(e, pb::event::Event::Update(s) if s.task_id == "long-gone"))
    );
    assert!(!drain_agent(&mut arx).iter().any(|m| matches!(m, M::Ack(_))));
    // An update with no state is bad input: dropped, nothing changes.
    let before = core.registry.clone();
    deliver(
        &mut core,
        1,
        status_update(&header.framework_id, "t1", pb::TaskState::Unspecified),
    )
    .await;
    assert_eq!(core.registry, before);
}

#[tokio::test]
async fn new_agent_reporting_tasks_gets_them_killed() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(&dir).await;
    let (r, mut rx) = register(
        &mut core,
        1,
        "",
        "cpus:1",
        &[("fw-x", "orphan", pb::TaskState::TaskRunning)],
    )
    .await;
    r.unwrap();
    assert!(
        drain_agent(&mut rx).iter().any(
            |m| matches!(m, M::KillTask(k) if k.task_id == "orphan" && k.framework_id == "fw-x")
        )
    );
}

#[tokio::test]
async fn kills_for_a_disconnected_agent_are_queued_once() {
    let (_dir, mut core, agent, _arx, header, _events) = running().await;
    core.agent_closed(1);
    for _ in 0..3 {
        core.kill(pb::KillRequest {
            header: Some(header.clone()),
            task_id: "t1".into(),
            grace_period_seconds: None,
        })
        .unwrap();
    }
    assert_eq!(core.pending_kills.get(&agent).map(Vec::len), Some(1));
    let (r, mut rx) = register(
        &mut core,
        2,
        agent.as_str(),
        "cpus:4;mem:1024",
        &[(&header.framework_id, "t1", pb::TaskState::TaskRunning)],
    )
    .await;
    r.unwrap();
    let kills = drain_agent(&mut rx)
        .into_iter()
        .filter(|m| matches!(m, M::KillTask(_)))
        .count();
    assert_eq!(kills, 1);
}

#[tokio::test]
async fn a_silent_agent_times_out_on_the_clock_the_shell_passes_in() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(&dir).await;
    let (agent, _arx) = new_agent(&mut core, 1, "cpus:4;mem:1024").await;
    core.settle().await;
    let seen = core.last_seen[&agent];
    let timeout = core.config.agent_ping_timeout;
    let interval = core.config.agent_ping_interval;

    // Exactly the timeout after it was last heard from: not yet.
    core.clock = Clock {
        instant: seen + timeout,
        unix_ms: 41_000,
    };
    core.on_tick(true);
    core.settle().await;
    assert_eq!(
        core.registry.agent(&agent).unwrap().unreachable_since_ms,
        None
    );
    assert!(core.agents.contains_key(&agent));

    // At the next ping round past the timeout: unreachable, at the wall
    // time the shell passed in, not one the handler read.
    core.clock = Clock {
        instant: seen + timeout + interval,
        unix_ms: 42_000,
    };
    core.on_tick(true);
    core.settle().await;
    assert_eq!(
        core.registry.agent(&agent).unwrap().unreachable_since_ms,
        Some(42_000)
    );
    assert!(!core.agents.contains_key(&agent));
}
