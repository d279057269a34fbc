//! Taking over as leader without IO: the no-op barrier is a proposal with
//! a continuation, and the inputs that arrive before it is applied wait in
//! the core.

use super::handlers::{Harness, leading, subscribed_answer, take_actions};
use super::*;
use crate::core::replicate::decode;
use crate::raft::node::Status as NodeStatus;

/// A core that Raft made leader of term 2, its barrier proposed (not
/// committed), and a Subscribe from caller 1 waiting for the takeover.
fn taking_over_with_a_subscribe() -> Harness {
    let mut h = Harness::elected();
    h.core.on_raft_status();
    h.core.handle(Input::Subscribe(
        pb::FrameworkInfo {
            name: "ci".into(),
            failover_timeout_seconds: 60.0,
            ..Default::default()
        },
        Caller::new(1),
    ));
    h
}

/// Whether the core is taking over `term` with `deferred` inputs waiting.
fn taking_over(core: &Core, term: u64, deferred: usize) -> bool {
    core.taking_over
        .as_ref()
        .is_some_and(|t| core.pending.len() == 1 && t.deferred.len() == deferred)
        && core
            .pending
            .values()
            .all(|p| matches!(p.then, Then::TakeOver { term: t } if t == term))
}

/// The redirect a follower answers caller 1's Subscribe with.
fn redirected(leader: &str) -> Vec<Action> {
    vec![Action::Reply(Reply::Subscribe {
        to: Caller::new(1),
        result: Err(CallError::NotLeader {
            leader: Some(leader.into()),
        }),
    })]
}

#[test]
fn becoming_leader_proposes_a_no_op_and_defers_requests_until_it_is_applied() {
    let mut h = taking_over_with_a_subscribe();

    let proposed: Vec<Command> = h
        .node
        .proposed()
        .iter()
        .map(|data| decode(data).unwrap().cmd)
        .collect();
    assert_eq!(proposed, vec![Command::Noop]);
    assert!(taking_over(&h.core, 2, 1));
    assert_eq!(h.core.leading, None);
    // The Subscribe is neither handled nor redirected: it waits.
    assert_eq!(take_actions(&mut h.core), Vec::new());
    // Raft saying again that this master leads term 2 changes nothing.
    h.core.on_raft_status();
    assert!(h.node.proposed().is_empty());
    assert!(taking_over(&h.core, 2, 1));
}

#[test]
fn applying_the_no_op_makes_the_core_lead_and_handle_what_waited() {
    let mut h = taking_over_with_a_subscribe();
    h.core.clock.unix_ms = 1_700_000_000_000;

    assert_eq!(h.commit(), vec![Command::Noop]);
    assert_eq!(h.core.leading, Some(2));
    assert_eq!(h.core.leading_since_ms, 1_700_000_000_000);
    assert!(h.core.taking_over.is_none());
    // The Subscribe was handled as a leader: proposed, answered once
    // applied, after the takeover recorded the members.
    assert_eq!(take_actions(&mut h.core), Vec::new());
    let commands = h.commit();
    assert!(
        matches!(
            commands.as_slice(),
            [
                Command::RecordMembers { members },
                Command::SubscribeFramework { .. },
            ] if members == &BTreeMap::from([(1, "127.0.0.1:1".to_string())])
        ),
        "{commands:?}"
    );
    let id = match h.core.frameworks.keys().collect::<Vec<_>>().as_slice() {
        [id] => (*id).clone(),
        other => panic!("expected one connected framework, got {other:?}"),
    };
    assert_eq!(
        take_actions(&mut h.core),
        vec![subscribed_answer(&h.core, Caller::new(1), &id)]
    );
    h.assert_nothing_parked();
}

#[test]
fn losing_leadership_during_the_barrier_redirects_what_waited() {
    let mut h = taking_over_with_a_subscribe();
    h.master_2_leads();

    h.core.on_raft_status();
    assert_eq!(take_actions(&mut h.core), redirected("10.0.0.2:5050"));
    assert!(h.core.taking_over.is_none());
    assert!(h.core.pending.is_empty());

    // The no-op applied later (the new leader committed it) is just an
    // entry: this master does not lead.
    assert_eq!(h.commit(), vec![Command::Noop]);
    assert_eq!(h.core.leading, None);
    assert_eq!(take_actions(&mut h.core), Vec::new());
}

#[test]
fn a_barrier_not_committed_in_time_ends_at_a_tick_and_is_retried() {
    let mut h = taking_over_with_a_subscribe();
    assert_eq!(h.node.proposed().len(), 1);
    let start = h.core.clock.instant;

    h.core.clock.instant = start + COMMIT_TIMEOUT - Duration::from_millis(1);
    h.core.tick(true);
    assert_eq!(take_actions(&mut h.core), Vec::new());
    assert!(taking_over(&h.core, 2, 1));

    h.core.clock.instant = start + COMMIT_TIMEOUT;
    h.core.tick(true);
    // Raft still says this master leads: the redirect names it, as it did
    // for calls after a failed barrier.
    assert_eq!(take_actions(&mut h.core), redirected("127.0.0.1:1"));
    assert!(h.core.taking_over.is_none());
    assert_eq!(h.core.leading, None);

    // At Raft's next word it takes over again.
    h.core.on_raft_status();
    assert!(taking_over(&h.core, 2, 0));
    assert_eq!(h.commit(), vec![Command::Noop]);
    assert_eq!(h.core.leading, Some(2));
}

#[test]
fn a_no_op_applied_after_the_term_changed_does_not_make_the_core_lead() {
    let mut h = taking_over_with_a_subscribe();
    // Raft moved on to term 3 before the core heard of it.
    h.node
        .status
        .send(NodeStatus {
            term: 3,
            ..leading()
        })
        .unwrap();

    assert_eq!(h.commit(), vec![Command::Noop]);
    assert_eq!(h.core.leading, None);
    assert!(h.core.taking_over.is_none());
    assert_eq!(take_actions(&mut h.core), redirected("127.0.0.1:1"));

    // It takes over term 3 when it hears of it.
    h.core.on_raft_status();
    assert!(taking_over(&h.core, 3, 0));
}
