//! What waits for Raft, as data: a linearizable read and a membership
//! change are handed to Raft as actions and parked; they are answered when
//! Raft applies them, refuses them, or not in time (on the fake Raft node
//! of `handlers`, with no IO).

use super::handlers::{Harness, take_actions};
use super::*;
use crate::core::membership::encode_member;
use crate::core::shell::RaftReport;

/// The one change that makes master `id` a learner.
fn learner(id: u64) -> raft::eraftpb::ConfChangeV2 {
    let mut change = raft::eraftpb::ConfChangeV2::default();
    change.mut_changes().push(raft::eraftpb::ConfChangeSingle {
        change_type: raft::eraftpb::ConfChangeType::AddLearnerNode,
        node_id: id,
        ..Default::default()
    });
    change
}

/// Starts a linearizable read of the agents for caller `to`: its context.
fn read_agents(h: &mut Harness, to: Caller<OperatorReply>) -> Vec<u8> {
    h.core
        .handle(Input::Operator(OperatorCall::Agents, false, to));
    match take_actions(&mut h.core).as_slice() {
        [Action::ReadIndex { ctx }] => {
            assert!(h.core.pending_reads.contains_key(ctx));
            ctx.clone()
        }
        other => panic!("expected one ReadIndex, got {other:?}"),
    }
}

#[test]
fn a_read_asks_raft_for_a_read_index_and_is_answered_once_it_is_ready() {
    let mut h = Harness::new();
    let ctx = read_agents(&mut h, Caller::new(1));
    assert!(h.node.proposed().is_empty());

    h.core.apply(Applied::ReadReady { ctx, index: 0 });
    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::Reply(Reply::Operator {
            to: Caller::new(1),
            result: Ok(OperatorReply::Agents(pb::AgentList { agents: Vec::new() })),
        })]
    );
    assert!(h.core.pending_reads.is_empty());
}

#[test]
fn a_read_raft_refuses_is_redirected_and_a_late_refusal_changes_nothing() {
    let mut h = Harness::new();
    let ctx = read_agents(&mut h, Caller::new(1));
    h.core
        .on_raft_report(RaftReport::ReadRefused { ctx: ctx.clone() });
    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::Reply(Reply::Operator {
            to: Caller::new(1),
            result: Err(h.core.not_leader()),
        })]
    );
    h.core.on_raft_report(RaftReport::ReadRefused { ctx });
    assert_eq!(take_actions(&mut h.core), Vec::new());
}

#[test]
fn adding_a_master_hands_raft_a_learner_change_answered_once_applied() {
    let mut h = Harness::new();
    let add = |id: u64| pb::AddMemberRequest {
        id,
        address: format!("10.0.0.{id}:5050"),
    };
    h.core
        .operator(OperatorCall::AddMember(add(2)), Caller::new(3));
    let context = encode_member(2, "10.0.0.2:5050").unwrap();
    let seq = match take_actions(&mut h.core).as_slice() {
        [
            Action::ChangeMembership {
                seq,
                change,
                context: sent,
            },
        ] => {
            assert_eq!(*change, learner(2));
            assert_eq!(*sent, context);
            *seq
        }
        other => panic!("expected one membership change, got {other:?}"),
    };

    // One change at a time.
    h.core
        .operator(OperatorCall::AddMember(add(3)), Caller::new(4));
    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::Reply(Reply::Operator {
            to: Caller::new(4),
            result: Err(CallError::FailedPrecondition(
                "a change of master 2 is in progress; try again once it is applied".into()
            )),
        })]
    );
    // A refusal of another change leaves this one waiting.
    h.core.on_raft_report(RaftReport::MembershipRefused {
        seq: seq + 1,
        error: ProposeError::Stopped,
    });
    assert_eq!(take_actions(&mut h.core), Vec::new());

    let applied = Applied::ConfChanged {
        index: 1,
        voters: vec![1],
        learners: vec![2],
        context,
    };
    h.core.apply(applied);
    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::Reply(Reply::Operator {
            to: Caller::new(3),
            result: Ok(OperatorReply::AddMember(pb::AddMemberResponse {
                role: "LEARNER".into()
            })),
        })]
    );
    assert_eq!(
        h.core.members.get(&2).map(String::as_str),
        Some("10.0.0.2:5050")
    );
    assert!(h.core.membership.is_none());
}

#[test]
fn a_membership_change_raft_refuses_or_does_not_apply_in_time_is_answered_with_why() {
    let mut h = Harness::new();
    let remove = |core: &mut Core, to| {
        core.operator(OperatorCall::RemoveMember(1), to);
        match take_actions(core).as_slice() {
            [Action::Reply(Reply::Operator { result: Err(e), .. })] => e.clone(),
            [Action::ChangeMembership { seq, .. }] => panic!("change {seq} handed to raft"),
            other => panic!("expected a refusal, got {other:?}"),
        }
    };
    // The checks against Raft's status refuse at once.
    assert_eq!(
        remove(&mut h.core, Caller::new(1)),
        CallError::FailedPrecondition("cannot remove the last master".into())
    );

    h.core.operator(
        OperatorCall::AddMember(pb::AddMemberRequest {
            id: 2,
            address: "10.0.0.2:5050".into(),
        }),
        Caller::new(2),
    );
    let Some(Action::ChangeMembership { seq, .. }) = take_actions(&mut h.core).pop() else {
        panic!("expected a membership change");
    };
    h.core.on_raft_report(RaftReport::MembershipRefused {
        seq,
        error: ProposeError::Raft("a conf change is pending".into()),
    });
    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::Reply(Reply::Operator {
            to: Caller::new(2),
            result: Err(CallError::FailedPrecondition(
                "raft: a conf change is pending".into()
            )),
        })]
    );

    h.core.operator(
        OperatorCall::AddMember(pb::AddMemberRequest {
            id: 2,
            address: "10.0.0.2:5050".into(),
        }),
        Caller::new(3),
    );
    take_actions(&mut h.core);
    let start = h.core.clock.instant;
    h.core
        .expire_pending(start + COMMIT_TIMEOUT - Duration::from_millis(1));
    assert_eq!(take_actions(&mut h.core), Vec::new());
    h.core.expire_pending(start + COMMIT_TIMEOUT);
    assert_eq!(
        take_actions(&mut h.core),
        vec![Action::Reply(Reply::Operator {
            to: Caller::new(3),
            result: Err(CallError::Unavailable(
                "the membership change was not committed in time".into()
            )),
        })]
    );
    assert!(h.core.membership.is_none());
}
