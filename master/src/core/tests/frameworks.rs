//! Frameworks: offers, accepts, teardown, streams, pending work and
//! leadership loss.

use super::*;

#[tokio::test]
async fn a_framework_at_its_offer_limit_is_offered_more_only_after_giving_some_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_with(&dir, |c| c.offer_limit = Some(2)).await;
    let mut agents = Vec::new();
    for conn in 1..=5 {
        agents.push(new_agent(&mut core, conn, "cpus:4;mem:1024").await);
    }
    let (header, mut events) = subscribe(&mut core, "").await;
    let first = offers(&mut core, &mut events);
    assert_eq!(first.len(), 2, "two offers, the limit, of five agents");
    assert!(
        offers(&mut core, &mut events).is_empty(),
        "holding two, it gets nothing more"
    );
    // Declining one without a filter makes room for one offer.
    core.call_wait(SchedulerCall::Decline(pb::DeclineRequest {
        header: Some(header.clone()),
        offer_ids: vec![first[0].id.clone()],
        filters: Some(pb::Filters {
            refuse_seconds: Some(0.0),
        }),
    }))
    .await
    .unwrap();
    let next = offers(&mut core, &mut events);
    assert_eq!(next.len(), 1, "{next:?}");
    assert!(offers(&mut core, &mut events).is_empty());
    // Without a limit it would have had every agent at once ...
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_with(&dir, |c| c.offer_limit = None).await;
    let mut agents = Vec::new();
    for conn in 1..=5 {
        agents.push(new_agent(&mut core, conn, "cpus:4;mem:1024").await);
    }
    let (_header, mut events) = subscribe(&mut core, "").await;
    assert_eq!(offers(&mut core, &mut events).len(), 5);
    // ... and by default it holds at most `DEFAULT_OFFER_LIMIT`.
    let dir = tempfile::tempdir().unwrap();
    let mut core = core_with(&dir, |_| {}).await;
    let mut agents = Vec::new();
    for conn in 1..=(crate::DEFAULT_OFFER_LIMIT as u64 + 2) {
        agents.push(new_agent(&mut core, conn, "cpus:4;mem:1024").await);
    }
    let (_header, mut events) = subscribe(&mut core, "").await;
    assert_eq!(
        offers(&mut core, &mut events).len(),
        crate::DEFAULT_OFFER_LIMIT
    );
}

#[tokio::test]
async fn accept_refused_by_the_registry_keeps_the_offers() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(&dir).await;
    let (agent, mut arx) = new_agent(&mut core, 1, "cpus:4;mem:1024").await;
    let (header, mut events) = subscribe(&mut core, "").await;
    let offer = offers(&mut core, &mut events).remove(0);
    let fw = FrameworkId::new(header.framework_id.clone()).unwrap();
    // Usage the allocator does not know about fills the agent.
    let mut filler = TaskRecord {
        framework: fw.clone(),
        id: TaskId::new("filler").unwrap(),
        agent: agent.clone(),
        role: Role::default(),
        allocated: Allocated::default(),
        info: Vec::new(),
        state: pb::TaskState::TaskRunning as i32,
        status: Vec::new(),
        launched_at_ms: 0,
        running_at_ms: None,
        ended_at_ms: None,
        reported: false,
    };
    filler.allocated.unreserved = "cpus:4;mem:1024".parse().unwrap();
    core.propose_detached(Command::LaunchTasks {
        framework: fw.clone(),
        agent,
        tasks: vec![filler],
    });
    core.settle().await;
    let filler_id = TaskId::new("filler").unwrap();
    assert!(
        core.registry.task(&fw, &filler_id).is_some(),
        "the filler is launched"
    );
    let registry = core.registry.clone();
    let index = core.applied_index;

    let err = core
        .accept_wait(accept_request(&header, &offer.id, "t1", "cpus:1;mem:64"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
    assert_eq!(core.registry, registry);
    assert_eq!(core.applied_index, index);
    let id = OfferId::new(offer.id.clone()).unwrap();
    assert!(core.offers.get(&id).is_some(), "the offer is still live");
    assert!(
        drain_agent(&mut arx).is_empty(),
        "nothing sent to the agent"
    );
}

#[tokio::test]
async fn a_call_in_flight_when_leadership_is_lost_is_told_its_outcome_is_unknown() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(&dir).await;
    let _agent = new_agent(&mut core, 1, "cpus:4;mem:1024").await;
    let (header, mut events) = subscribe(&mut core, "").await;
    let offer = offers(&mut core, &mut events).remove(0);
    // Proposed, not applied yet, when this master steps down.
    let (reply, mut rx) = oneshot::channel();
    let call = SchedulerCall::Accept(accept_request(&header, &offer.id, "t1", "cpus:1;mem:64"));
    core.request(Request::Call { call, reply });
    core.step_down();
    core.deliver_sends();
    let err = match rx.try_recv() {
        Ok(Err(e)) => e,
        other => panic!("expected an error at once, got {other:?}"),
    };
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    assert!(
        err.message()
            .starts_with("this master lost leadership before the command was committed"),
        "{}",
        err.message()
    );
    assert!(err.message().contains("reconcile"), "{}", err.message());
}

#[tokio::test]
async fn teardown_shuts_the_framework_down_and_frees_everything_once() {
    let (_dir, mut core, agent, mut arx, header, _events) = running().await;
    core.call_wait(SchedulerCall::Teardown(pb::TeardownRequest {
        header: Some(header.clone()),
    }))
    .await
    .unwrap();
    let fw = FrameworkId::new(header.framework_id.clone()).unwrap();
    assert!(core.registry.framework(&fw).is_none());
    assert!(
        drain_agent(&mut arx)
            .iter()
            .any(|m| matches!(m, M::ShutdownFramework(s) if s.framework_id == header.framework_id))
    );
    // The agent's terminal update is acknowledged by the master so the
    // agent can forget it; it frees nothing a second time.
    let before = core.registry.clone();
    deliver(
        &mut core,
        1,
        status_update(&header.framework_id, "t1", pb::TaskState::TaskKilled),
    )
    .await;
    assert_eq!(core.registry, before);
    assert!(drain_agent(&mut arx).iter().any(|m| matches!(m, M::Ack(_))));

    // A new framework is offered the whole agent.
    let (_h2, mut ev2) = subscribe(&mut core, "").await;
    let o = offers(&mut core, &mut ev2);
    assert!((offered_cpus(&o) - 4.0).abs() < 1e-9, "{o:?}");
    assert!(core.registry.agent_used(&agent).is_empty());
}

#[tokio::test]
async fn operator_teardown_removes_the_framework_as_its_own_teardown_does() {
    let (_dir, mut core, _agent, mut arx, header, mut events) = running().await;
    let teardown = async |core: &mut Core, id: &str| {
        let (reply, rx) = oneshot::channel();
        core.request(Request::Operator {
            call: OperatorCall::Teardown(id.into()),
            stale_ok: false,
            reply,
        });
        core.answered(rx).await
    };
    // Refused calls change nothing.
    let before = core.registry.clone();
    for (id, code) in [
        ("fw-unknown", tonic::Code::NotFound),
        ("", tonic::Code::InvalidArgument),
        ("a/b", tonic::Code::InvalidArgument),
    ] {
        let e = teardown(&mut core, id).await.unwrap_err();
        assert_eq!(e.code(), code, "{id:?}: {e}");
    }
    assert_eq!(core.registry, before);
    assert!(drain_agent(&mut arx).is_empty());

    teardown(&mut core, &header.framework_id).await.unwrap();
    let fw = FrameworkId::new(header.framework_id.clone()).unwrap();
    assert!(core.registry.framework(&fw).is_none());
    let task = core
        .registry
        .completed_task(&fw, &TaskId::new("t1").unwrap())
        .expect("t1 completed");
    let status = task.last_status();
    assert_eq!(status.state(), pb::TaskState::TaskKilled);
    assert_eq!(status.reason(), pb::TaskReason::OperatorTeardown);
    assert!(task.ended_at_ms.is_some());
    assert!(
        drain_agent(&mut arx)
            .iter()
            .any(|m| matches!(m, M::ShutdownFramework(s) if s.framework_id == header.framework_id))
    );
    assert!(
        drain_events(&mut events).iter().any(|e| matches!(
            e,
            pb::event::Event::Error(e) if e.message == "framework removed: OPERATOR_TEARDOWN"
        )),
        "the framework is told"
    );
    // Gone: a second teardown, and a re-subscription with its id, are
    // refused.
    let e = teardown(&mut core, &header.framework_id).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let e = core
        .subscribe_wait(pb::FrameworkInfo {
            id: header.framework_id.clone(),
            name: "fw".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
}

#[tokio::test]
async fn close_of_a_superseded_framework_stream_is_ignored() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(&dir).await;
    let (first, _ev1) = subscribe(&mut core, "").await;
    let (second, _ev2) = subscribe(&mut core, &first.framework_id).await;
    let fw = FrameworkId::new(first.framework_id.clone()).unwrap();
    core.framework_closed(&fw, &first.stream_id);
    core.settle().await;
    assert_eq!(
        core.frameworks.get(&fw).map(|c| c.stream_id.clone()),
        Some(second.stream_id.clone())
    );
    assert_eq!(
        core.registry.framework(&fw).unwrap().disconnected_at_ms,
        None
    );
    // Calls on the old stream are refused.
    let err = core
        .call_wait(SchedulerCall::Revive(pb::ReviveRequest {
            header: Some(first),
            roles: Vec::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    core.framework_closed(&fw, &second.stream_id);
    core.settle().await;
    assert!(
        core.registry
            .framework(&fw)
            .unwrap()
            .disconnected_at_ms
            .is_some()
    );
}

#[tokio::test]
async fn pending_work_is_replaced_listed_and_dropped_with_the_framework() {
    let (_dir, mut core, _agent, _arx, header, _events) = running().await;
    let fw = FrameworkId::new(header.framework_id.clone()).unwrap();
    let big = pb::PendingTask {
        task_id: "big".into(),
        name: "big".into(),
        resources: Some(res("cpus:1;mem:4096")),
        reason: "no offer fits: 1 short on mem".into(),
        considered: 1,
        short_on: Some(pb::DimensionCounts {
            mem: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let update = |header: &pb::CallHeader, tasks| {
        SchedulerCall::UpdatePending(pb::UpdatePendingRequest {
            header: Some(header.clone()),
            tasks,
        })
    };
    let list = |core: &Core, framework: &str| match core
        .read(OperatorCall::Pending(pb::ListPendingRequest {
            framework_id: framework.into(),
        }))
        .unwrap()
    {
        OperatorReply::Pending(p) => p.tasks,
        other => panic!("unexpected {other:?}"),
    };
    core.call_wait(update(&header, vec![big.clone()]))
        .await
        .unwrap();
    let views = list(&core, "");
    assert_eq!(views.len(), 1);
    assert_eq!(views[0].framework_id, header.framework_id);
    assert_eq!(views[0].framework_name, "fw");
    assert!(views[0].connected);
    let task = views[0].task.clone().unwrap();
    assert_eq!(task.reason, big.reason);
    assert_eq!(task.short_on.unwrap().mem, 1);
    assert!(task.since > 0.0);
    assert_eq!(list(&core, "fw-other").len(), 0);

    // A bad list and a stale stream are refused; the set stays.
    let mut bad = big.clone();
    bad.considered = 0;
    let err = core
        .call_wait(update(&header, vec![bad]))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument);
    assert!(err.message().contains("short on mem"), "{}", err.message());
    let mut stale = header.clone();
    stale.stream_id = "an-old-stream".into();
    let err = core
        .call_wait(update(&stale, Vec::new()))
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::FailedPrecondition);
    assert_eq!(core.pending_work.count(&fw), 1);

    // Teardown drops it.
    core.call_wait(SchedulerCall::Teardown(pb::TeardownRequest {
        header: Some(header.clone()),
    }))
    .await
    .unwrap();
    assert_eq!(core.pending_work.count(&fw), 0);
    assert!(list(&core, "").is_empty());
}

#[tokio::test]
async fn a_follower_never_answers_pending_work() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(&dir).await;
    let (header, _events) = subscribe(&mut core, "").await;
    let fw = FrameworkId::new(header.framework_id.clone()).unwrap();
    core.pending_work.replace(
        fw,
        vec![pb::PendingTask {
            task_id: "t".into(),
            ..Default::default()
        }],
        1,
    );
    core.step_down();
    assert!(
        core.pending_work
            .views(None, |_| Some((String::new(), true)))
            .is_empty()
    );
    let (tx, rx) = oneshot::channel();
    core.request(Request::Operator {
        call: OperatorCall::Pending(pb::ListPendingRequest::default()),
        stale_ok: true,
        reply: tx,
    });
    core.deliver_sends();
    let err = rx.await.unwrap().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
}

/// A framework that makes its own id (`create`) may send its first
/// Subscribe again, as when its answer was lost: the second one
/// re-subscribes the framework the first registered, and no second
/// framework is left behind.
#[tokio::test]
async fn a_created_id_makes_a_repeated_first_subscription_harmless() {
    let dir = tempfile::tempdir().unwrap();
    let mut core = core(&dir).await;
    let info = |create| pb::FrameworkInfo {
        id: "fw-0123456789abcdef0123456789abcdef".into(),
        name: "fw".into(),
        failover_timeout_seconds: 60.0,
        create,
        ..Default::default()
    };
    // Without `create`, an id the master does not know is refused.
    let e = core.subscribe_wait(info(false)).await.unwrap_err();
    assert_eq!(e.code(), tonic::Code::NotFound);
    let first = core.subscribe_wait(info(true)).await.unwrap();
    assert_eq!(
        first.framework.as_str(),
        "fw-0123456789abcdef0123456789abcdef"
    );
    let registered_at = core
        .registry
        .framework(&first.framework)
        .unwrap()
        .registered_at_ms;
    // The answer was "lost": the same Subscribe again.
    let second = core.subscribe_wait(info(true)).await.unwrap();
    assert_eq!(second.framework, first.framework);
    assert_ne!(second.stream_id, first.stream_id);
    assert_eq!(core.registry.frameworks().count(), 1);
    assert_eq!(
        core.registry
            .framework(&first.framework)
            .unwrap()
            .registered_at_ms,
        registered_at,
        "re-subscribed, not registered anew"
    );
}
