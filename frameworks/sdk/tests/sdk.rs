//! The SDK against a fake master: subscription, calls, acknowledgements,
//! re-subscription after stream loss, master restart and missed heartbeats,
//! removal, and errors.

mod support;

use std::time::Duration;

use berth_proto as pb;
use berth_sdk::{ErrorKind, Event, Events, Framework, FrameworkConfig, SdkError, subscribe};
use pb::TaskState;
use pb::event::Event as Wire;
use support::{Call, FakeMaster, LeaderRole, agent_update, master_update, wait_until};
use tonic::Code;

/// Long enough that the fake's heartbeat never matters, unless a test sets
/// a short one.
const NO_HEARTBEAT: f64 = 60.0;

fn config() -> FrameworkConfig {
    FrameworkConfig::new("test-fw")
        .roles(["dev"])
        .failover_timeout(Duration::from_secs(30))
        .call_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
}

async fn next(events: &mut Events) -> Event {
    tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .expect("no event within 5 s")
        .expect("event stream ended")
}

/// Asserts no event arrives for `ms` (and lets a pending ack go out).
async fn quiet(events: &mut Events, ms: u64) {
    if let Ok(e) = tokio::time::timeout(Duration::from_millis(ms), events.next()).await {
        panic!("unexpected event {e:?}");
    }
}

async fn connect(fake: &FakeMaster, config: FrameworkConfig) -> (Framework, Events) {
    let (fw, mut events) = subscribe(vec![fake.address()], config)
        .await
        .expect("subscribe");
    match next(&mut events).await {
        Event::Subscribed { resubscribed, .. } => assert!(!resubscribed),
        other => panic!("expected Subscribed, got {other:?}"),
    }
    (fw, events)
}

#[tokio::test]
async fn subscribe_and_calls_carry_ids() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = subscribe(vec![fake.address()], config()).await.unwrap();
    let made = fake.subscribes()[0].id.clone();
    assert_eq!(
        next(&mut events).await,
        Event::Subscribed {
            framework_id: made.clone(),
            master_id: "fake-master".into(),
            resubscribed: false,
        }
    );
    assert_eq!(fw.id(), made);
    assert!(fw.is_subscribed());
    assert_eq!(fw.master_id().as_deref(), Some("fake-master"));
    let info = &fake.subscribes()[0];
    // A new framework makes its own id and asks the master to create it.
    assert!(info.create);
    assert!(
        info.id.len() == 35 && info.id.starts_with("fw-"),
        "{:?}",
        info.id
    );
    assert_eq!(info.name, "test-fw");
    assert_eq!(info.roles, ["dev"]);
    assert!((info.failover_timeout_seconds - 30.0).abs() < 1e-9);

    let task = berth_sdk::shell_task("t1", "t1", "true", "cpus:0.1;mem:32").unwrap();
    let launched = fw
        .accept(
            vec![berth_sdk::OfferId::new("o1").unwrap()],
            vec![task],
            Some(Duration::from_secs(2)),
        )
        .await
        .unwrap();
    assert_eq!(launched, ["t1"]);
    fw.decline(vec![berth_sdk::OfferId::new("o2").unwrap()], None)
        .await
        .unwrap();
    fw.revive(berth_sdk::Role::new("dev").unwrap().into())
        .await
        .unwrap();
    fw.suppress(berth_sdk::Roles::All).await.unwrap();
    fw.kill(
        &berth_sdk::TaskId::new("t1").unwrap(),
        Some(Duration::from_millis(1500)),
    )
    .await
    .unwrap();
    fw.reconcile(vec![(
        berth_sdk::TaskId::new("t1").unwrap(),
        Some(berth_sdk::AgentId::new("a1").unwrap()),
    )])
    .await
    .unwrap();
    fw.reconcile_all().await.unwrap();

    let calls = fake.calls();
    assert_eq!(calls.len(), 7);
    for call in &calls {
        let h = call.header().unwrap();
        assert_eq!(
            (h.framework_id.as_str(), h.stream_id.as_str()),
            (fw.id().as_str(), "stream-1")
        );
    }
    match &calls[0] {
        Call::Accept(a) => {
            assert_eq!(a.offer_ids, ["o1"]);
            assert_eq!(a.filters.as_ref().unwrap().refuse_seconds, Some(2.0));
            assert_eq!(a.operations.len(), 1);
        }
        other => panic!("{other:?}"),
    }
    match &calls[1] {
        Call::Decline(d) => assert_eq!(d.filters.as_ref().unwrap().refuse_seconds, None),
        other => panic!("{other:?}"),
    }
    match &calls[4] {
        Call::Kill(k) => {
            assert_eq!(k.task_id, "t1");
            assert_eq!(k.grace_period_seconds, Some(1.5));
        }
        other => panic!("{other:?}"),
    }
    match (&calls[5], &calls[6]) {
        (Call::Reconcile(explicit), Call::Reconcile(implicit)) => {
            assert_eq!(explicit.tasks.len(), 1);
            assert_eq!(explicit.tasks[0].agent_id, "a1");
            assert!(implicit.tasks.is_empty());
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn events_are_forwarded_and_heartbeats_hidden() {
    let fake = FakeMaster::start(0.05, true).await;
    let (_fw, mut events) = connect(&fake, config()).await;
    let offer = pb::Offer {
        id: "o1".into(),
        agent_id: "a1".into(),
        ..Default::default()
    };
    fake.push(Wire::Offers(pb::Offers {
        offers: vec![offer.clone()],
    }))
    .await;
    fake.push(Wire::Heartbeat(pb::Heartbeat {})).await;
    fake.push(Wire::Rescind(pb::Rescind {
        offer_id: "o1".into(),
    }))
    .await;
    fake.push(Wire::Failure(pb::Failure {
        agent_id: "a1".into(),
    }))
    .await;
    assert_eq!(next(&mut events).await, Event::Offers(vec![offer]));
    assert_eq!(
        next(&mut events).await,
        Event::Rescind {
            offer_id: "o1".into()
        }
    );
    assert_eq!(
        next(&mut events).await,
        Event::Failure {
            agent_id: "a1".into()
        }
    );
    // Heartbeats every 50 ms keep the stream alive and never show up.
    quiet(&mut events, 400).await;
    assert_eq!(fake.subscribes().len(), 1);
}

#[tokio::test]
async fn agent_updates_are_acknowledged_once_after_being_read() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config()).await;
    let update = agent_update("t1", 7, TaskState::TaskRunning);
    fake.push(Wire::Update(update.clone())).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(fake.acks().is_empty(), "acknowledged before it was read");

    assert_eq!(next(&mut events).await, Event::Update(update.clone()));
    // Handed to the user, not yet asked for the next event: still no ack.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(
        fake.acks().is_empty(),
        "acknowledged before the user was done"
    );

    // A master-generated update (no uuid) follows; reading it releases
    // the first update's ack, and it needs none itself.
    let from_master = master_update("t2", TaskState::TaskLost);
    fake.push(Wire::Update(from_master.clone())).await;
    assert_eq!(next(&mut events).await, Event::Update(from_master));
    wait_until("the ack", || fake.acks().len() == 1).await;
    let ack = &fake.acks()[0];
    assert_eq!(ack.task_id, "t1");
    assert_eq!(ack.agent_id, "agent-1");
    assert_eq!(ack.uuid, update.uuid);
    assert_eq!(ack.header.as_ref().unwrap().stream_id, "stream-1");
    wait_until("the ack count", || fw.acknowledged() == 1).await;

    quiet(&mut events, 200).await;
    assert_eq!(fake.acks().len(), 1, "acknowledged more than once");
    assert_eq!(fw.acknowledged(), 1);
}

#[tokio::test]
async fn dropping_events_flushes_the_pending_ack() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config()).await;
    fake.push(Wire::Update(agent_update("t1", 1, TaskState::TaskFinished)))
        .await;
    assert!(matches!(next(&mut events).await, Event::Update(_)));
    drop(events);
    wait_until("the ack", || fake.acks().len() == 1).await;
    wait_until("the ack count", || fw.acknowledged() == 1).await;
}

#[tokio::test]
async fn manual_acknowledgement() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config().auto_acknowledge(false)).await;
    let update = agent_update("t1", 3, TaskState::TaskRunning);
    fake.push(Wire::Update(update.clone())).await;
    assert_eq!(next(&mut events).await, Event::Update(update.clone()));
    quiet(&mut events, 200).await;
    assert!(fake.acks().is_empty());
    assert_eq!(fw.acknowledged(), 0);

    fw.acknowledge(&update).await.unwrap();
    assert_eq!(fake.acks().len(), 1);
    assert_eq!(fw.acknowledged(), 1);
    // Master updates need no ack: a no-op.
    fw.acknowledge(&master_update("t1", TaskState::TaskLost))
        .await
        .unwrap();
    assert_eq!(fake.acks().len(), 1);
    assert_eq!(fw.acknowledged(), 1);
}

#[tokio::test]
async fn dropped_stream_resubscribes_with_the_same_id() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config()).await;
    fw.revive(berth_sdk::Roles::All).await.unwrap();

    fake.drop_stream();
    assert_eq!(next(&mut events).await, Event::Disconnected);
    assert_eq!(
        next(&mut events).await,
        Event::Subscribed {
            framework_id: fw.id(),
            master_id: "fake-master".into(),
            resubscribed: true,
        }
    );
    let subs = fake.subscribes();
    assert_eq!(subs.len(), 2);
    assert_eq!(subs[1].id, fw.id());
    assert_eq!(subs[1].name, "test-fw");

    fw.revive(berth_sdk::Roles::All).await.unwrap();
    let calls = fake.calls();
    assert_eq!(calls[0].header().unwrap().stream_id, "stream-1");
    assert_eq!(calls[1].header().unwrap().stream_id, "stream-2");
    assert_eq!(fw.id(), subs[0].id);
}

#[tokio::test]
async fn master_restart_on_the_same_port() {
    let mut fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config()).await;

    fake.stop().await;
    assert_eq!(next(&mut events).await, Event::Disconnected);
    assert_eq!(
        fw.revive(berth_sdk::Roles::All).await,
        Err(SdkError::NotSubscribed)
    );
    assert!(!fw.is_subscribed());
    // Let a few attempts fail against the closed port.
    tokio::time::sleep(Duration::from_millis(400)).await;
    fake.restart().await;

    match next(&mut events).await {
        Event::Subscribed {
            framework_id,
            resubscribed,
            ..
        } => {
            assert_eq!(framework_id, fw.id());
            assert!(resubscribed);
        }
        other => panic!("expected Subscribed, got {other:?}"),
    }
    fw.revive(berth_sdk::Roles::All).await.unwrap();
    let last = fake.calls().pop().unwrap();
    assert_eq!(last.header().unwrap().stream_id, "stream-2");
}

/// The pending set is published again on every new subscription (a new
/// leader holds none), with the times the tasks started waiting; a set
/// given while disconnected is what gets published.
#[tokio::test]
async fn pending_work_is_published_again_after_resubscribing() {
    let mut fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config()).await;
    let task = |id: &str| pb::PendingTask {
        task_id: id.into(),
        reason: "no offer fits: 1 short on mem".into(),
        ..Default::default()
    };
    fw.update_pending(vec![task("a")]).await.unwrap();
    let first = fake.pending_updates();
    assert_eq!(first.len(), 1);
    let since_a = first[0].tasks[0].since;
    assert!(since_a > 0.0, "the SDK fills in since");

    fake.drop_stream();
    assert_eq!(next(&mut events).await, Event::Disconnected);
    assert!(matches!(next(&mut events).await, Event::Subscribed { .. }));
    let again = fake.pending_updates();
    assert_eq!(again.len(), 2, "published again before Subscribed");
    assert_eq!(again[1].header.as_ref().unwrap().stream_id, "stream-2");
    assert_eq!(again[1].tasks, first[0].tasks);

    // While the master is away the call fails, but the set is kept and
    // published on the next subscription.
    fake.stop().await;
    assert_eq!(next(&mut events).await, Event::Disconnected);
    assert_eq!(
        fw.update_pending(vec![task("a"), task("b")]).await,
        Err(SdkError::NotSubscribed)
    );
    fake.restart().await;
    assert!(matches!(next(&mut events).await, Event::Subscribed { .. }));
    let last = fake.pending_updates().pop().unwrap();
    assert_eq!(last.header.as_ref().unwrap().stream_id, "stream-3");
    let ids: Vec<&str> = last.tasks.iter().map(|t| t.task_id.as_str()).collect();
    assert_eq!(ids, ["a", "b"]);
    assert_eq!(last.tasks[0].since, since_a, "a keeps its waiting time");
    assert!(last.tasks[1].since >= since_a);
}

#[tokio::test]
async fn unknown_framework_on_resubscribe_is_fatal() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config()).await;
    fake.forget_frameworks();
    fake.drop_stream();
    assert_eq!(next(&mut events).await, Event::Disconnected);
    match next(&mut events).await {
        Event::Error(why) => assert!(why.contains("unknown framework"), "{why}"),
        other => panic!("expected Error, got {other:?}"),
    }
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert_eq!(end, None);
    assert!(matches!(
        fw.revive(berth_sdk::Roles::All).await,
        Err(SdkError::Removed(_))
    ));
    // No further attempts.
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.subscribes().len(), 2);
}

#[tokio::test]
async fn error_event_ends_the_stream() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config()).await;
    fake.push(Wire::Error(pb::Error {
        message: "failover timeout expired".into(),
    }))
    .await;
    assert_eq!(
        next(&mut events).await,
        Event::Error("failover timeout expired".into())
    );
    assert_eq!(events.next().await, None);
    assert!(matches!(
        fw.decline(vec![], None).await,
        Err(SdkError::Removed(_))
    ));
}

#[tokio::test]
async fn missing_heartbeats_trigger_resubscription() {
    // SUBSCRIBED says 100 ms, but the fake never sends a heartbeat: the
    // stream is lost after the heartbeat timeout.
    let fake = FakeMaster::start(0.1, false).await;
    let config = config().heartbeat_timeout(Duration::from_millis(400));
    let (fw, mut events) = connect(&fake, config).await;
    let started = tokio::time::Instant::now();
    assert_eq!(next(&mut events).await, Event::Disconnected);
    assert!(
        started.elapsed() >= Duration::from_millis(400),
        "{:?}",
        started.elapsed()
    );
    match next(&mut events).await {
        Event::Subscribed { resubscribed, .. } => assert!(resubscribed),
        other => panic!("expected Subscribed, got {other:?}"),
    }
    assert_eq!(fake.subscribes()[1].id, fake.subscribes()[0].id);
    assert_eq!(fw.id(), fake.subscribes()[0].id);
}

#[tokio::test]
async fn call_errors_keep_their_kind() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, _events) = connect(&fake, config()).await;
    fake.state().accept_error = Some((Code::InvalidArgument, "unknown offer \"o9\"".into()));
    let err = fw
        .accept(vec![berth_sdk::OfferId::new("o9").unwrap()], vec![], None)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(!err.outcome_unknown());
    assert!(matches!(
        &err,
        SdkError::Rpc { kind: ErrorKind::Invalid, message } if message.contains("o9")
    ));

    fake.supersede();
    let err = fw.revive(berth_sdk::Roles::All).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    assert!(!err.outcome_unknown());
}

#[tokio::test]
async fn teardown_ends_the_stream() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config()).await;
    fw.teardown().await.unwrap();
    let end = tokio::time::timeout(Duration::from_secs(5), events.next())
        .await
        .unwrap();
    assert_eq!(end, None);
    assert!(matches!(
        fw.revive(berth_sdk::Roles::All).await,
        Err(SdkError::Removed(_))
    ));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.subscribes().len(), 1, "re-subscribed after teardown");
}

#[tokio::test]
async fn resuming_a_framework_by_id() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (first, events) = connect(&fake, config()).await;
    let id = first.id();
    drop(events);
    let (fw, mut events) = subscribe(vec![fake.address()], config().framework_id(id.clone()))
        .await
        .unwrap();
    match next(&mut events).await {
        Event::Subscribed {
            framework_id,
            resubscribed,
            ..
        } => {
            assert_eq!(framework_id, id);
            assert!(resubscribed);
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(fw.id(), id);
    // The first handle is dead once its events are dropped.
    wait_until("the first handle to close", || !first.is_subscribed()).await;
    assert!(matches!(
        first.revive(berth_sdk::Roles::All).await,
        Err(SdkError::Removed(_))
    ));

    let err = subscribe(vec![fake.address()], config().framework_id("fw-gone"))
        .await
        .unwrap_err();
    assert!(
        matches!(err, SdkError::Removed(ref m) if m.contains("fw-gone")),
        "{err}"
    );
}

#[tokio::test]
async fn tries_master_addresses_in_turn() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, _events) = subscribe(vec![dead, fake.address()], config())
        .await
        .unwrap();
    assert_eq!(fw.id(), fake.subscribes()[0].id);
    assert!(fw.master().unwrap().ends_with(&fake.address()));
}

#[tokio::test]
async fn subscribe_errors() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let bad = [
        FrameworkConfig::new(""),
        FrameworkConfig::new("x").roles(["-bad"]),
        FrameworkConfig::new("x").failover_timeout(Duration::MAX),
    ];
    for config in bad {
        let err = subscribe(vec![fake.address()], config).await.unwrap_err();
        assert!(matches!(err, SdkError::InvalidConfig(_)), "{err}");
    }
    assert!(
        fake.subscribes().is_empty(),
        "invalid config reached the master"
    );
    let err = subscribe(vec![], config()).await.unwrap_err();
    assert!(matches!(err, SdkError::InvalidConfig(_)), "{err}");

    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    let started = std::time::Instant::now();
    let err = subscribe(
        vec![dead],
        config().connect_timeout(Duration::from_millis(500)),
    )
    .await
    .unwrap_err();
    assert!(matches!(err, SdkError::Transport(_)), "{err}");
    // The OS's reason, not "transport error".
    assert!(err.to_string().to_lowercase().contains("refused"), "{err}");
    assert!(started.elapsed() < Duration::from_secs(3));
}

#[tokio::test]
async fn subscribes_where_a_master_says_it_leads_not_where_a_follower_points() {
    let dead = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().to_string()
    };
    // A follower still names a leader that died; another master leads.
    let follower = FakeMaster::start(NO_HEARTBEAT, false).await;
    follower.leader.set(LeaderRole::Follows(Some(dead.clone())));
    let leader = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, _events) = subscribe(vec![dead, follower.address(), leader.address()], config())
        .await
        .unwrap();
    assert_eq!(fw.master().unwrap(), leader.address());
    assert!(follower.subscribes().is_empty());
}

#[tokio::test]
async fn a_frozen_leader_is_left_within_the_heartbeat_timeout() {
    let first = FakeMaster::start(0.1, true).await;
    let second = FakeMaster::start(0.1, true).await;
    second
        .leader
        .set(LeaderRole::Follows(Some(first.address())));
    let config = config().heartbeat_timeout(Duration::from_millis(600));
    let (fw, mut events) = subscribe(vec![first.address(), second.address()], config)
        .await
        .unwrap();
    assert!(matches!(next(&mut events).await, Event::Subscribed { .. }));
    quiet(&mut events, 700).await;
    // The leader freezes (no heartbeats, no answers) and the other master
    // takes over, both know the framework.
    second.state().frameworks.insert(fw.id());
    first.leader.set(LeaderRole::Frozen);
    second.leader.set(LeaderRole::Leads);
    let frozen_at = tokio::time::Instant::now();
    assert_eq!(next(&mut events).await, Event::Disconnected);
    match next(&mut events).await {
        Event::Subscribed { resubscribed, .. } => assert!(resubscribed),
        other => panic!("expected Subscribed, got {other:?}"),
    }
    let took = frozen_at.elapsed();
    assert!(
        took >= Duration::from_millis(600) && took < Duration::from_millis(600 + 2000),
        "re-subscribed {took:?} after the freeze"
    );
    assert_eq!(fw.master().unwrap(), second.address());
    assert_eq!(second.subscribes()[0].id, fw.id());
}

#[tokio::test]
async fn a_call_in_flight_ends_when_its_stream_is_lost() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config()).await;
    fake.state().accept_delay = Some(Duration::from_secs(30));
    let call = tokio::spawn({
        let fw = fw.clone();
        async move {
            fw.accept(vec![berth_sdk::OfferId::new("o1").unwrap()], vec![], None)
                .await
        }
    });
    wait_until("the accept reached the master", || !fake.calls().is_empty()).await;
    let started = tokio::time::Instant::now();
    fake.drop_stream();
    assert_eq!(next(&mut events).await, Event::Disconnected);
    let err = call.await.unwrap().unwrap_err();
    assert_eq!(err, SdkError::ConnectionLost);
    assert!(err.outcome_unknown());
    assert!(started.elapsed() < Duration::from_secs(2));
}

#[tokio::test]
async fn teardown_sends_queued_acks_first() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config()).await;
    for n in 0..4 {
        let update = agent_update(&format!("t{n}"), n, TaskState::TaskFinished);
        fake.push(Wire::Update(update)).await;
    }
    for _ in 0..4 {
        assert!(matches!(next(&mut events).await, Event::Update(_)));
    }
    // Three acks are queued (the fourth waits for the next `next`).
    fw.teardown().await.unwrap();
    let calls = fake.calls();
    let kinds: Vec<_> = calls
        .iter()
        .map(|c| matches!(c, Call::Acknowledge(_)))
        .collect();
    assert_eq!(kinds, [true, true, true, false], "{calls:?}");
    assert!(matches!(calls[3], Call::Teardown(_)));
    assert_eq!(fw.acknowledged(), 3);
}

fn reconciles(fake: &FakeMaster) -> Vec<pb::ReconcileRequest> {
    fake.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Reconcile(r) => Some(r),
            _ => None,
        })
        .collect()
}

fn task(id: &str) -> pb::TaskInfo {
    berth_sdk::shell_task(id, id, "true", "cpus:0.1;mem:16").expect("a valid task")
}

/// Updates the master made while the framework was away are not sent
/// again: after a re-subscription the SDK asks about the tasks it believes
/// live, by id (so one the master lost comes back as LOST), and after a
/// resumed first subscription about every task. Both can be turned off.
#[tokio::test]
async fn resubscribing_reconciles_the_tasks_believed_live() {
    let fake = FakeMaster::start(NO_HEARTBEAT, false).await;
    let (fw, mut events) = connect(&fake, config()).await;
    assert!(reconciles(&fake).is_empty(), "a new framework has no tasks");
    fw.accept(
        vec![berth_sdk::OfferId::new("o-1").unwrap()],
        vec![task("ends"), task("runs"), task("quiet")],
        None,
    )
    .await
    .unwrap();
    // A refused launch is not live.
    fake.state().accept_error = Some((Code::InvalidArgument, "no".into()));
    assert!(
        fw.accept(
            vec![berth_sdk::OfferId::new("o-2").unwrap()],
            vec![task("refused")],
            None
        )
        .await
        .is_err()
    );
    fake.state().accept_error = None;
    fake.push(Wire::Update(agent_update(
        "runs",
        1,
        TaskState::TaskRunning,
    )))
    .await;
    fake.push(Wire::Update(agent_update(
        "ends",
        2,
        TaskState::TaskFinished,
    )))
    .await;
    for _ in 0..2 {
        assert!(matches!(next(&mut events).await, Event::Update(_)));
    }

    fake.drop_stream();
    assert_eq!(next(&mut events).await, Event::Disconnected);
    assert!(matches!(next(&mut events).await, Event::Subscribed { .. }));
    let asked = reconciles(&fake);
    assert_eq!(asked.len(), 1, "{asked:?}");
    assert_eq!(asked[0].header.as_ref().unwrap().stream_id, "stream-2");
    let ids: Vec<(&str, &str)> = asked[0]
        .tasks
        .iter()
        .map(|t| (t.task_id.as_str(), t.agent_id.as_str()))
        .collect();
    assert_eq!(ids, [("quiet", ""), ("runs", "agent-1")]);

    // A framework process started again with its id knows no task yet: it
    // asks about every one (implicit reconciliation).
    let id = fw.id();
    drop((fw, events));
    let (_fw, _events) = subscribe(vec![fake.address()], config().framework_id(&id))
        .await
        .unwrap();
    wait_until("the implicit reconciliation", || {
        reconciles(&fake).len() == 2
    })
    .await;
    assert!(reconciles(&fake)[1].tasks.is_empty());
    drop((_fw, _events));

    // Off: nothing is asked, on resuming or on re-subscribing.
    let off = config().framework_id(&id).reconcile_on_resubscribe(false);
    let (fw, mut events) = subscribe(vec![fake.address()], off).await.unwrap();
    assert!(matches!(next(&mut events).await, Event::Subscribed { .. }));
    fw.accept(
        vec![berth_sdk::OfferId::new("o-1").unwrap()],
        vec![task("t")],
        None,
    )
    .await
    .unwrap();
    fake.drop_stream();
    assert_eq!(next(&mut events).await, Event::Disconnected);
    assert!(matches!(next(&mut events).await, Event::Subscribed { .. }));
    fw.revive(berth_sdk::Roles::All).await.unwrap();
    assert_eq!(reconciles(&fake).len(), 2);
}

#[tokio::test]
async fn a_frozen_master_does_not_hold_up_finding_the_leader() {
    // Listed first, never answering: the probe of the others decides.
    let frozen = FakeMaster::start(NO_HEARTBEAT, false).await;
    frozen.leader.set(LeaderRole::Frozen);
    let leader = FakeMaster::start(NO_HEARTBEAT, false).await;
    let started = tokio::time::Instant::now();
    let (fw, _events) = subscribe(vec![frozen.address(), leader.address()], config())
        .await
        .unwrap();
    assert_eq!(fw.master().unwrap(), leader.address());
    // Well under the 1 s a frozen master is given to answer.
    assert!(
        started.elapsed() < Duration::from_millis(800),
        "{:?}",
        started.elapsed()
    );
}
