//! Handlers without IO: a core on a fake Raft node, with no storage, no
//! sockets, no timers and no async runtime. A test feeds inputs, takes
//! what the core proposed, hands the entries back as Raft would once they
//! commit, and checks exactly what the core proposed, parked, sent and
//! answered.

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
