//! Handlers without IO: a core on a fake Raft node, with no storage, no
//! sockets, no timers and no async runtime. A test feeds inputs, takes
//! what the core proposed, hands the entries back as Raft would once they
//! commit, and checks exactly what the core proposed, parked, sent (the
//! [`Action`]s it pushed) and answered. The async handlers await nothing
//! on a fake node, so `futures::executor::block_on` runs them.

use super::*;
use crate::core::replicate::decode;
use crate::raft::node::{FakeNode, Status as NodeStatus};

/// A transport to no peers (a group of one).
struct NoPeers;

impl Transport for NoPeers {
    fn send(&self, _: Vec<raft::eraftpb::Message>) {}
    fn set_peer(&self, _: u64, _: Option<String>) {}
}

/// The status of the one master of a group, leading in term 2.
fn leading() -> NodeStatus {
    NodeStatus {
        id: 1,
        leader_id: 1,
        term: 2,
        role: StateRole::Leader,
        commit: 0,
        applied: 0,
        voters: vec![1],
        learners: Vec::new(),
        matched: Vec::new(),
        readies: 0,
        running: true,
    }
}

/// A leading core on a fake Raft node.
struct Harness {
    core: Core,
    node: FakeNode,
    _applied: mpsc::Sender<Applied>,
    index: u64,
}

impl Harness {
    fn new() -> Self {
        let (handle, node) = FakeNode::new(leading());
        let (applied_tx, applied) = mpsc::channel(16);
        let mut config = MasterConfig::new("/nonexistent/berth-handler-test");
        config.offer_timeout = None;
        let mut core = new_core(config, handle, applied, Arc::new(NoPeers));
        // As after the takeover barrier.
        core.rebuild_leader_state(2);
        core.leading = Some(2);
        Self {
            core,
            node,
            _applied: applied_tx,
            index: 0,
        }
    }

    /// Commits what the core proposed since the last call: applies each
    /// entry in order, as Raft hands them back; returns their commands.
    fn commit(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        for data in self.node.proposed() {
            commands.push(decode(&data).unwrap().cmd);
            self.index += 1;
            let entry = Applied::Entry {
                index: self.index,
                term: 2,
                data,
            };
            assert!(self.core.apply(entry, None).is_none());
        }
        commands
    }

    /// Checks that no proposal waits and no subscription is in flight.
    fn assert_nothing_parked(&self) {
        assert!(self.core.pending.is_empty());
        assert!(self.core.subscribing.is_empty());
    }

    /// Asks to subscribe a new framework named `name`.
    fn subscribe(&mut self, name: &str) -> oneshot::Receiver<Result<Subscription, CallError>> {
        let (tx, rx) = oneshot::channel();
        self.core.subscribe(
            pb::FrameworkInfo {
                name: name.into(),
                failover_timeout_seconds: 60.0,
                ..Default::default()
            },
            tx,
        );
        rx
    }
}

#[test]
fn a_subscription_is_proposed_parked_and_answered_once_applied() {
    let mut h = Harness::new();
    let mut rx = h.subscribe("ci");

    // Proposed and parked; nobody answered yet.
    assert!(rx.try_recv().is_err());
    let parked: Vec<&Then> = h.core.pending.values().map(|p| &p.then).collect();
    let id = match parked.as_slice() {
        [Then::Subscribed { record, known, .. }] => {
            assert_eq!(record.name, "ci");
            assert!(!known);
            record.id.clone()
        }
        other => panic!("expected one parked subscription, got {other:?}"),
    };
    assert_eq!(h.core.subscribing.get(&id), Some(&1));

    // Committed: exactly the subscription, then the answer and the stream.
    let commands = h.commit();
    assert!(
        matches!(commands.as_slice(), [Command::SubscribeFramework { record }]
            if record.id == id && record.name == "ci" && record.failover_timeout_ms == 60_000),
        "{commands:?}"
    );
    let mut sub = rx.try_recv().unwrap().unwrap();
    assert_eq!(sub.framework, id);
    match sub.events.try_recv().unwrap().unwrap().event {
        Some(pb::event::Event::Subscribed(s)) => {
            assert_eq!(s.framework_id, id.as_str());
            assert_eq!(s.stream_id, sub.stream_id);
            assert_eq!(s.master_id, "m1");
        }
        other => panic!("expected SUBSCRIBED, got {other:?}"),
    }
    assert!(sub.events.try_recv().is_err());
    h.assert_nothing_parked();
    assert!(h.core.registry.framework(&id).is_some());
}

#[test]
fn an_invalid_subscription_is_refused_and_proposes_nothing() {
    let mut h = Harness::new();
    let mut rx = h.subscribe("  ");
    assert_eq!(
        rx.try_recv().unwrap().unwrap_err(),
        CallError::InvalidArgument("framework name must not be empty".into())
    );
    assert!(h.node.proposed().is_empty());
    h.assert_nothing_parked();
}

#[test]
fn parked_calls_learn_their_outcome_is_unknown_when_leadership_is_lost() {
    let mut h = Harness::new();
    let mut rx = h.subscribe("ci");
    assert_eq!(h.node.proposed().len(), 1);

    // Master 2 leads now; this one steps down before the entry applied.
    h.core.members.insert(2, "10.0.0.2:5050".into());
    h.node
        .status
        .send(NodeStatus {
            leader_id: 2,
            term: 3,
            role: StateRole::Follower,
            ..leading()
        })
        .unwrap();
    h.core.step_down();

    assert_eq!(
        rx.try_recv().unwrap().unwrap_err(),
        CallError::OutcomeUnknown {
            leader: Some("10.0.0.2:5050".into())
        }
    );
    h.assert_nothing_parked();
}

#[test]
fn a_proposal_not_committed_in_time_is_answered_unavailable_at_its_deadline() {
    let mut h = Harness::new();
    let mut rx = h.subscribe("ci");
    let start = h.core.clock.instant;

    h.core
        .expire_pending(start + COMMIT_TIMEOUT - Duration::from_millis(1));
    assert!(rx.try_recv().is_err());
    assert_eq!(h.core.pending.len(), 1);

    h.core.expire_pending(start + COMMIT_TIMEOUT);
    assert_eq!(
        rx.try_recv().unwrap().unwrap_err(),
        CallError::Unavailable(
            "the command was not committed in time; it may still be committed (reconcile \
             before retrying)"
                .into()
        )
    );
    assert!(h.core.pending.is_empty());
}

/// What the core sends: the framework and agent actions pushed since the
/// last call (taken, so the next call sees only newer ones).
fn take_sends(core: &mut Core) -> Vec<Action> {
    std::mem::take(&mut core.actions)
        .into_iter()
        .filter(|a| !matches!(a, Action::Snapshot { .. }))
        .collect()
}

type AgentStream = mpsc::Receiver<Result<pb::MasterMessage, CallError>>;

impl Harness {
    /// Subscribes framework `name` and commits it: its header.
    fn subscribed(&mut self, name: &str) -> pb::CallHeader {
        let mut rx = self.subscribe(name);
        self.commit();
        let sub = rx.try_recv().unwrap().unwrap();
        pb::CallHeader {
            framework_id: sub.framework.to_string(),
            stream_id: sub.stream_id,
        }
    }

    /// Registers a new cpus:4;mem:1024 agent on connection `conn` and
    /// commits it: its id and stream.
    fn registered(&mut self, conn: u64) -> (AgentId, AgentStream) {
        let (tx, mut stream) = mpsc::channel(AGENT_QUEUE);
        let (reply, mut answer) = oneshot::channel();
        let resources: Resources = "cpus:4;mem:1024".parse().unwrap();
        self.core.register_agent(
            conn,
            pb::Register {
                agent_id: String::new(),
                info: Some(pb::AgentInfo {
                    hostname: "host".into(),
                    address: "host:5051".into(),
                    resources: Some(resources_to_proto(&resources)),
                    ..Default::default()
                }),
                tasks: Vec::new(),
            },
            tx,
            reply,
        );
        self.commit();
        answer.try_recv().unwrap().unwrap();
        let id = match stream.try_recv().unwrap().unwrap().message {
            Some(pb::master_message::Message::Registered(r)) => r.agent_id,
            other => panic!("expected REGISTERED, got {other:?}"),
        };
        (AgentId::new(id).unwrap(), stream)
    }

    /// Accepts `offer` to launch task `t1` (cpus:1;mem:128).
    fn accept_t1(
        &mut self,
        header: &pb::CallHeader,
        offer: String,
    ) -> oneshot::Receiver<Result<CallReply, CallError>> {
        let (reply, answer) = oneshot::channel();
        let task = pb::TaskInfo {
            task_id: "t1".into(),
            resources: Some(resources_to_proto(&"cpus:1;mem:128".parse().unwrap())),
            command: Some(pb::CommandInfo {
                shell: "true".into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let launch = pb::operation::Operation::Launch(pb::Launch { tasks: vec![task] });
        let request = pb::AcceptRequest {
            header: Some(header.clone()),
            offer_ids: vec![offer],
            operations: vec![pb::Operation {
                operation: Some(launch),
            }],
            filters: None,
        };
        self.core.accept(request, reply);
        answer
    }

    /// A framework with task `t1` (cpus:1;mem:128) launched on an agent on
    /// connection 1; the sends up to the launch are taken.
    fn launched(&mut self) -> (pb::CallHeader, AgentId) {
        let (agent, _stream) = self.registered(1);
        let header = self.subscribed("ci");
        self.core.allocate();
        let offer = match take_sends(&mut self.core).as_slice() {
            [
                Action::ToFramework {
                    event: pb::event::Event::Offers(o),
                    ..
                },
            ] => o.offers[0].id.clone(),
            other => panic!("expected one OFFERS, got {other:?}"),
        };
        let mut answer = self.accept_t1(&header, offer);
        self.commit();
        answer.try_recv().unwrap().unwrap();
        take_sends(&mut self.core);
        (header, agent)
    }
}

fn framework_of(header: &pb::CallHeader) -> FrameworkId {
    FrameworkId::new(header.framework_id.clone()).unwrap()
}

#[test]
fn a_subscription_sends_nothing_but_its_stream_and_the_next_allocation_offers() {
    let mut h = Harness::new();
    let (agent, _stream) = h.registered(1);
    assert_eq!(take_sends(&mut h.core), Vec::new());
    let header = h.subscribed("ci");
    // SUBSCRIBED goes on the new stream itself; no action.
    assert_eq!(take_sends(&mut h.core), Vec::new());

    h.core.allocate();
    let sends = take_sends(&mut h.core);
    match sends.as_slice() {
        [
            Action::ToFramework {
                framework,
                event: pb::event::Event::Offers(o),
            },
        ] => {
            assert_eq!(*framework, framework_of(&header));
            assert_eq!(o.offers.len(), 1);
            assert_eq!(o.offers[0].agent_id, agent.as_str());
        }
        other => panic!("expected one OFFERS to the framework, got {other:?}"),
    }
}

#[test]
fn an_accept_sends_the_launch_to_the_agent_only_once_it_is_applied() {
    let mut h = Harness::new();
    let (_stream_kept, header, agent) = {
        let (agent, stream) = h.registered(1);
        let header = h.subscribed("ci");
        (stream, header, agent)
    };
    let fw = framework_of(&header);
    h.core.allocate();
    let offer = match take_sends(&mut h.core).as_slice() {
        [
            Action::ToFramework {
                event: pb::event::Event::Offers(o),
                ..
            },
        ] => o.offers[0].id.clone(),
        other => panic!("expected one OFFERS, got {other:?}"),
    };
    let mut answer = h.accept_t1(&header, offer);
    // Proposed, not applied: nothing sent, nobody answered.
    assert_eq!(take_sends(&mut h.core), Vec::new());
    assert!(answer.try_recv().is_err());

    h.commit();
    let task = TaskId::new("t1".to_string()).unwrap();
    let record = h.core.registry.task(&fw, &task).unwrap().clone();
    let info = h.core.registry.framework(&fw).map(FrameworkRecord::to_info);
    assert_eq!(
        take_sends(&mut h.core),
        vec![Action::ToAgent {
            agent: agent.clone(),
            message: pb::master_message::Message::RunTask(pb::RunTask {
                framework: info,
                task: Some(record.task_info()),
            }),
        }]
    );
    match answer.try_recv().unwrap().unwrap() {
        CallReply::Accept(r) => assert_eq!(r.launched_task_ids, vec!["t1".to_string()]),
        CallReply::Empty => panic!("accept answered without a response"),
    }
}

#[test]
fn a_status_update_is_forwarded_to_the_framework_once_applied() {
    let mut h = Harness::new();
    let (header, agent) = h.launched();
    let status = pb::TaskStatus {
        task_id: "t1".into(),
        state: pb::TaskState::TaskRunning as i32,
        uuid: vec![7; 16],
        agent_id: "whatever-the-agent-claims".into(),
        timestamp: 1_000.0,
        ..Default::default()
    };
    futures::executor::block_on(h.core.agent_message(
        1,
        pb::AgentMessage {
            message: Some(pb::agent_message::Message::StatusUpdate(pb::StatusUpdate {
                framework_id: header.framework_id.clone(),
                status: Some(status.clone()),
            })),
        },
    ));
    assert_eq!(take_sends(&mut h.core), Vec::new());

    let commands = h.commit();
    assert!(
        matches!(commands.as_slice(), [Command::UpdateTask { task, .. }] if task.as_str() == "t1"),
        "{commands:?}"
    );
    // The update is about the agent that sent it, whatever it claims.
    let forwarded = pb::TaskStatus {
        agent_id: agent.to_string(),
        ..status
    };
    assert_eq!(
        take_sends(&mut h.core),
        vec![Action::ToFramework {
            framework: framework_of(&header),
            event: pb::event::Event::Update(forwarded),
        }]
    );
}

#[test]
fn a_kill_for_a_disconnected_agent_is_queued_not_sent() {
    let mut h = Harness::new();
    let (header, agent) = h.launched();
    h.core.agent_closed(1);
    assert_eq!(take_sends(&mut h.core), Vec::new());

    let kill = pb::KillRequest {
        header: Some(header.clone()),
        task_id: "t1".into(),
        grace_period_seconds: None,
    };
    h.core.kill(kill.clone()).unwrap();
    h.core.kill(kill).unwrap();
    assert_eq!(take_sends(&mut h.core), Vec::new());
    assert_eq!(
        h.core.pending_kills.get(&agent),
        Some(&vec![pb::KillTask {
            framework_id: header.framework_id.clone(),
            task_id: "t1".into(),
            grace_period_seconds: 0.0,
        }])
    );
    assert!(h.node.proposed().is_empty());
}

#[test]
fn an_agent_that_misses_its_pings_is_pinged_then_dropped_and_marked_unreachable() {
    let mut h = Harness::new();
    let (agent, _stream) = h.registered(1);
    let interval = h.core.config.agent_ping_interval;
    let timeout = h.core.config.agent_ping_timeout;
    let registered_at = h.core.clock.instant;

    // One ping interval later: a ping, nothing else.
    h.core.clock.instant = registered_at + interval;
    futures::executor::block_on(h.core.on_tick(true));
    assert_eq!(
        take_sends(&mut h.core),
        vec![Action::ToAgent {
            agent: agent.clone(),
            message: pb::master_message::Message::Ping(pb::Ping { seq: 1 }),
        }]
    );
    assert!(h.node.proposed().is_empty());
    assert!(h.core.agents.contains_key(&agent));

    // Past the ping timeout with no answer: pinged once more, then dropped
    // and marked unreachable.
    h.core.clock.instant = registered_at + timeout + interval;
    futures::executor::block_on(h.core.on_tick(true));
    assert_eq!(
        take_sends(&mut h.core),
        vec![Action::ToAgent {
            agent: agent.clone(),
            message: pb::master_message::Message::Ping(pb::Ping { seq: 2 }),
        }]
    );
    assert!(!h.core.agents.contains_key(&agent));
    let commands = h.commit();
    assert!(
        matches!(commands.as_slice(), [Command::MarkAgentUnreachable { id, .. }] if *id == agent),
        "{commands:?}"
    );
}
