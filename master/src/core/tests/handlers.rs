//! Handlers without IO: a core on a fake Raft node, with no storage, no
//! sockets, no timers, no channels to callers or peers and no async
//! runtime. A test feeds inputs (callers are [`Caller`] tokens), takes
//! what the core proposed, hands the entries back as Raft would once they
//! commit, and checks exactly what the core proposed, parked, sent and
//! answered (the [`Action`]s it pushed). Handlers are plain functions:
//! they await nothing.

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
pub(super) fn leading() -> NodeStatus {
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
pub(super) struct Harness {
    pub(super) core: Core,
    pub(super) node: FakeNode,
    _applied: mpsc::Sender<Applied>,
    index: u64,
}

impl Harness {
    /// A core leading term 2, as after the takeover barrier.
    pub(super) fn new() -> Self {
        let mut h = Self::elected();
        h.core.rebuild_leader_state(2);
        h.core.leading = Some(2);
        h
    }

    /// A core that Raft made leader of term 2 and that has not taken over
    /// (nor heard of it: [`Core::on_raft_status`] has not run).
    pub(super) fn elected() -> Self {
        let (handle, node) = FakeNode::new(leading());
        let (applied_tx, applied) = mpsc::channel(16);
        let mut config = MasterConfig::new("/nonexistent/berth-handler-test");
        config.offer_timeout = None;
        let core = new_core(config, handle, applied, Arc::new(NoPeers));
        Self {
            core,
            node,
            _applied: applied_tx,
            index: 0,
        }
    }

    /// Commits what the core proposed since the last call: applies each
    /// entry in order, as Raft hands them back; returns their commands.
    pub(super) fn commit(&mut self) -> Vec<Command> {
        let mut commands = Vec::new();
        for data in self.node.proposed() {
            commands.push(decode(&data).unwrap().cmd);
            self.index += 1;
            let entry = Applied::Entry {
                index: self.index,
                term: 2,
                data,
            };
            self.core.apply(entry);
        }
        commands
    }

    /// Raft says master 2, at 10.0.0.2:5050, leads term 3 and this master
    /// follows (the core has not heard yet).
    pub(super) fn master_2_leads(&mut self) {
        self.core.members.insert(2, "10.0.0.2:5050".into());
        self.node
            .status
            .send(NodeStatus {
                leader_id: 2,
                term: 3,
                role: StateRole::Follower,
                ..leading()
            })
            .unwrap();
    }

    /// Checks that no proposal waits and no subscription is in flight.
    pub(super) fn assert_nothing_parked(&self) {
        assert!(self.core.pending.is_empty());
        assert!(self.core.subscribing.is_empty());
    }

    /// Asks to subscribe a new framework named `name`, for caller `to`.
    pub(super) fn subscribe(&mut self, name: &str, to: Caller<Subscription>) {
        self.subscribe_as("", name, to);
    }

    /// Asks to subscribe framework `id` (empty: a new one) named `name`.
    pub(super) fn subscribe_as(&mut self, id: &str, name: &str, to: Caller<Subscription>) {
        self.core.subscribe(
            pb::FrameworkInfo {
                id: id.into(),
                name: name.into(),
                failover_timeout_seconds: 60.0,
                ..Default::default()
            },
            to,
        );
    }
}

/// The actions the core pushed since the last call but snapshots (taken,
/// so the next call sees only newer ones).
pub(super) fn take_actions(core: &mut Core) -> Vec<Action> {
    std::mem::take(&mut core.actions)
        .into_iter()
        .filter(|a| !matches!(a, Action::Snapshot { .. }))
        .collect()
}

/// The SUBSCRIBED a subscription of framework `id` on its current stream
/// answers with.
pub(super) fn subscribed_answer(core: &Core, to: Caller<Subscription>, id: &FrameworkId) -> Action {
    let stream_id = core.frameworks[id].stream_id.clone();
    Action::Reply(Reply::Subscribe {
        to,
        result: Ok(Subscribed {
            framework: id.clone(),
            first: pb::Subscribed {
                framework_id: id.to_string(),
                stream_id,
                heartbeat_interval_seconds: core.config.heartbeat_interval.as_secs_f64(),
                master_id: "m1".into(),
            },
        }),
    })
}

#[test]
fn a_subscription_is_proposed_parked_and_answered_once_applied() {
    let mut h = Harness::new();
    let to = Caller::new(7);
    h.subscribe("ci", to);

    // Proposed and parked; nobody answered yet.
    assert_eq!(take_actions(&mut h.core), Vec::new());
    let parked: Vec<&Then> = h.core.pending.values().map(|p| &p.then).collect();
    let id = match parked.as_slice() {
        [
            Then::Subscribed {
                record,
                known,
                to: waiting,
            },
        ] => {
            assert_eq!(record.name, "ci");
            assert!(!known);
            assert_eq!(*waiting, to);
            record.id.clone()
        }
        other => panic!("expected one parked subscription, got {other:?}"),
    };
    assert_eq!(h.core.subscribing.get(&id), Some(&1));

    // Committed: exactly the subscription, then the answer, which opens
    // the stream with SUBSCRIBED.
    let commands = h.commit();
    assert!(
        matches!(commands.as_slice(), [Command::SubscribeFramework { record }]
            if record.id == id && record.name == "ci" && record.failover_timeout_ms == 60_000),
        "{commands:?}"
    );
    let answer = subscribed_answer(&h.core, to, &id);
    assert_eq!(take_actions(&mut h.core), vec![answer]);
    h.assert_nothing_parked();
    assert!(h.core.registry.framework(&id).is_some());
}

#[test]
fn an_invalid_subscription_is_refused_and_proposes_nothing() {
    let mut h = Harness::new();
    h.subscribe("  ", Caller::new(1));
    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::Reply(Reply::Subscribe {
            to: Caller::new(1),
            result: Err(CallError::InvalidArgument(
                "framework name must not be empty".into()
            )),
        })]
    );
    assert!(h.node.proposed().is_empty());
    h.assert_nothing_parked();
}

#[test]
fn parked_calls_learn_their_outcome_is_unknown_when_leadership_is_lost() {
    let mut h = Harness::new();
    h.subscribe("ci", Caller::new(1));
    assert_eq!(h.node.proposed().len(), 1);

    // Master 2 leads now; this one steps down before the entry applied.
    h.master_2_leads();
    h.core.step_down();

    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::Reply(Reply::Subscribe {
            to: Caller::new(1),
            result: Err(CallError::OutcomeUnknown {
                leader: Some("10.0.0.2:5050".into())
            }),
        })]
    );
    h.assert_nothing_parked();
}

#[test]
fn a_proposal_not_committed_in_time_is_answered_unavailable_at_its_deadline() {
    let mut h = Harness::new();
    h.subscribe("ci", Caller::new(1));
    let start = h.core.clock.instant;

    h.core
        .expire_pending(start + COMMIT_TIMEOUT - Duration::from_millis(1));
    assert_eq!(take_actions(&mut h.core), Vec::new());
    assert_eq!(h.core.pending.len(), 1);

    h.core.expire_pending(start + COMMIT_TIMEOUT);
    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::Reply(Reply::Subscribe {
            to: Caller::new(1),
            result: Err(CallError::Unavailable(
                "the command was not committed in time; it may still be committed (reconcile \
                 before retrying)"
                    .into()
            )),
        })]
    );
    assert!(h.core.pending.is_empty());
}

impl Harness {
    /// Subscribes framework `name` and commits it: its header.
    pub(super) fn subscribed(&mut self, name: &str) -> pb::CallHeader {
        self.subscribe(name, Caller::new(100));
        self.commit();
        match take_actions(&mut self.core).as_slice() {
            [
                Action::Reply(Reply::Subscribe {
                    result: Ok(Subscribed { first, .. }),
                    ..
                }),
            ] => pb::CallHeader {
                framework_id: first.framework_id.clone(),
                stream_id: first.stream_id.clone(),
            },
            other => panic!("expected the subscription's answer, got {other:?}"),
        }
    }

    /// Asks to register agent `agent_id` (empty: a new one) with
    /// cpus:4;mem:1024 on connection `conn`.
    pub(super) fn register(&mut self, conn: u64, agent_id: &str) {
        self.core.register_agent(conn, agent_register(agent_id));
    }

    /// Registers a new agent on connection `conn` and commits it: its id.
    pub(super) fn registered(&mut self, conn: u64) -> AgentId {
        self.register(conn, "");
        self.commit();
        match take_actions(&mut self.core).as_slice() {
            [
                Action::Reply(Reply::Register {
                    conn: answered,
                    result: Ok(Registered { agent, first }),
                }),
            ] => {
                assert_eq!(*answered, conn);
                assert_eq!(first.agent_id, agent.as_str());
                agent.clone()
            }
            other => panic!("expected the registration's answer, got {other:?}"),
        }
    }

    /// Accepts `offer` to launch task `t1` (cpus:1;mem:128).
    pub(super) fn accept_t1(
        &mut self,
        header: &pb::CallHeader,
        offer: String,
        to: Caller<CallReply>,
    ) {
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
        self.core.accept(request, to);
    }

    /// Runs an allocation: the id of the one offer it makes.
    pub(super) fn offer(&mut self) -> String {
        self.core.allocate();
        match take_actions(&mut self.core).as_slice() {
            [
                Action::ToFramework {
                    event: pb::event::Event::Offers(o),
                    ..
                },
            ] => o.offers[0].id.clone(),
            other => panic!("expected one OFFERS, got {other:?}"),
        }
    }

    /// A framework with task `t1` (cpus:1;mem:128) launched on an agent on
    /// connection 1; the sends up to the launch are taken.
    pub(super) fn launched(&mut self) -> (pb::CallHeader, AgentId) {
        let agent = self.registered(1);
        let header = self.subscribed("ci");
        let offer = self.offer();
        self.accept_t1(&header, offer, Caller::new(101));
        self.commit();
        let actions = take_actions(&mut self.core);
        assert!(
            matches!(
                actions.last(),
                Some(Action::Reply(Reply::Call { result: Ok(_), .. }))
            ),
            "{actions:?}"
        );
        (header, agent)
    }
}

/// The Register of agent `agent_id` (empty: a new one) with
/// cpus:4;mem:1024 and no tasks.
pub(super) fn agent_register(agent_id: &str) -> pb::Register {
    let resources: Resources = "cpus:4;mem:1024".parse().unwrap();
    pb::Register {
        agent_id: agent_id.into(),
        info: Some(pb::AgentInfo {
            hostname: "host".into(),
            address: "host:5051".into(),
            resources: Some(resources_to_proto(&resources)),
            ..Default::default()
        }),
        tasks: Vec::new(),
    }
}

pub(super) fn framework_of(header: &pb::CallHeader) -> FrameworkId {
    FrameworkId::new(header.framework_id.clone()).unwrap()
}

#[test]
fn a_subscription_sends_nothing_but_its_answer_and_the_next_allocation_offers() {
    let mut h = Harness::new();
    let agent = h.registered(1);
    assert_eq!(take_actions(&mut h.core), Vec::new());
    // SUBSCRIBED is the answer's (the stream's first event); nothing else.
    let header = h.subscribed("ci");
    assert_eq!(take_actions(&mut h.core), Vec::new());

    h.core.allocate();
    let sends = take_actions(&mut h.core);
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
fn an_accept_sends_the_launch_to_the_agent_and_answers_only_once_it_is_applied() {
    let mut h = Harness::new();
    let agent = h.registered(1);
    let header = h.subscribed("ci");
    let fw = framework_of(&header);
    let offer = h.offer();
    h.accept_t1(&header, offer, Caller::new(3));
    // Proposed, not applied: nothing sent, nobody answered.
    assert_eq!(take_actions(&mut h.core), Vec::new());

    h.commit();
    let task = TaskId::new("t1".to_string()).unwrap();
    let record = h.core.registry.task(&fw, &task).unwrap().clone();
    let info = h.core.registry.framework(&fw).map(FrameworkRecord::to_info);
    assert_eq!(
        take_actions(&mut h.core),
        vec![
            Action::ToAgent {
                agent: agent.clone(),
                message: pb::master_message::Message::RunTask(pb::RunTask {
                    framework: info,
                    task: Some(record.task_info()),
                }),
            },
            Action::Reply(Reply::Call {
                to: Caller::new(3),
                result: Ok(CallReply::Accept(pb::AcceptResponse {
                    launched_task_ids: vec!["t1".into()],
                })),
            }),
        ]
    );
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
    h.core.agent_message(
        1,
        pb::AgentMessage {
            message: Some(pb::agent_message::Message::StatusUpdate(pb::StatusUpdate {
                framework_id: header.framework_id.clone(),
                status: Some(status.clone()),
            })),
        },
    );
    assert_eq!(take_actions(&mut h.core), Vec::new());

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
        take_actions(&mut h.core),
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
    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::CloseAgent {
            agent: agent.clone(),
            conn: 1
        }]
    );

    let kill = pb::KillRequest {
        header: Some(header.clone()),
        task_id: "t1".into(),
        grace_period_seconds: None,
    };
    h.core.kill(kill.clone()).unwrap();
    h.core.kill(kill).unwrap();
    assert_eq!(take_actions(&mut h.core), Vec::new());
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
    let agent = h.registered(1);
    let interval = h.core.config.agent_ping_interval;
    let timeout = h.core.config.agent_ping_timeout;
    let registered_at = h.core.clock.instant;

    // One ping interval later: a ping, nothing else.
    h.core.clock.instant = registered_at + interval;
    h.core.on_tick(true);
    assert_eq!(
        take_actions(&mut h.core),
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
    h.core.on_tick(true);
    assert_eq!(
        take_actions(&mut h.core),
        vec![
            Action::ToAgent {
                agent: agent.clone(),
                message: pb::master_message::Message::Ping(pb::Ping { seq: 2 }),
            },
            Action::CloseAgent {
                agent: agent.clone(),
                conn: 1
            },
        ]
    );
    assert!(!h.core.agents.contains_key(&agent));
    let commands = h.commit();
    assert!(
        matches!(commands.as_slice(), [Command::MarkAgentUnreachable { id, .. }] if *id == agent),
        "{commands:?}"
    );
}
