//! Membership changes: add a learner, promote it to a voter once it has
//! caught up, remove a member.
//!
//! A change is checked against Raft's status, handed to Raft as an
//! [`Action::ChangeMembership`] and parked ([`PendingChange`]); the core
//! goes on meanwhile. It is answered when Raft applies it
//! ([`Core::membership_applied`]), refuses it ([`RaftReport`]), or after
//! 10 s ("not committed in time"); a leader that steps down answers it
//! with its outcome unknown. One change at a time: Raft refuses a change
//! while another is pending, so the core refuses a second one at once.

use super::*;
/// What a membership change makes of a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Membership {
    /// A learner: receives the log, does not vote.
    Learner,
    /// A voter.
    Voter,
    /// Not a member.
    Gone,
}

/// A learner this close to the leader's commit index (in entries) has
/// caught up enough to become a voter.
const CAUGHT_UP_SLACK: u64 = 100;

/// A membership change handed to Raft, waiting to be applied.
#[derive(Debug)]
pub(super) struct PendingChange {
    /// Which change of this core it is (a refusal names it).
    pub(super) seq: u64,
    /// The master it changes, and what it makes of it.
    pub(super) id: u64,
    pub(super) becomes: Membership,
    /// Who waits, and the answer once applied.
    pub(super) to: Caller<OperatorReply>,
    pub(super) answer: OperatorReply,
    pub(super) deadline: Instant,
}

impl Core {
    /// Adds a master as a learner, or promotes a learner that has caught
    /// up to a voter (see `AddMember` in operator.proto); answered once
    /// applied.
    pub(super) fn add_member(&mut self, req: pb::AddMemberRequest, to: Caller<OperatorReply>) {
        match self.check_add_member(&req) {
            Ok((becomes, context)) => {
                if becomes == Membership::Learner {
                    // The new master needs an address before it can
                    // receive the log.
                    self.transport.set_peer(req.id, Some(req.address.clone()));
                }
                let role = if becomes == Membership::Voter {
                    "VOTER"
                } else {
                    "LEARNER"
                };
                let answer = OperatorReply::AddMember(pb::AddMemberResponse { role: role.into() });
                self.change_membership(req.id, becomes, context, to, answer);
            }
            Err(e) => self.reply(Reply::Operator { to, result: Err(e) }),
        }
    }

    /// What adding `req` makes of its master, and the change's context.
    fn check_add_member(
        &self,
        req: &pb::AddMemberRequest,
    ) -> Result<(Membership, Vec<u8>), CallError> {
        if req.id == 0 || req.address.trim().is_empty() {
            return Err(CallError::invalid_argument(
                "a member needs an id of 1 or more and an address",
            ));
        }
        berth_proto::check_address(&req.address)
            .map_err(|e| CallError::invalid_argument(format!("master {}: {e}", req.id)))?;
        let st = self.raft_status.borrow().clone();
        if st.voters.contains(&req.id) {
            return Err(CallError::already_exists(format!(
                "master {} is already a voting member",
                req.id
            )));
        }
        let context =
            encode_member(req.id, &req.address).map_err(|e| CallError::internal(e.to_string()))?;
        if !st.learners.contains(&req.id) {
            return Ok((Membership::Learner, context));
        }
        let matched = st
            .matched
            .iter()
            .find(|(m, _)| *m == req.id)
            .map_or(0, |(_, index)| *index);
        if matched.saturating_add(CAUGHT_UP_SLACK) < st.commit {
            return Err(CallError::failed_precondition(format!(
                "master {} is still catching up (it holds the log up to {matched} of {}); add it again once it has",
                req.id, st.commit
            )));
        }
        Ok((Membership::Voter, context))
    }

    /// Removes master `id`; answered once applied.
    pub(super) fn remove_member(&mut self, id: u64, to: Caller<OperatorReply>) {
        let st = self.raft_status.borrow().clone();
        let refused = if !st.voters.contains(&id) && !st.learners.contains(&id) {
            Some(CallError::not_found(format!("master {id} is not a member")))
        } else if st.voters == [id] {
            Some(CallError::failed_precondition(
                "cannot remove the last master",
            ))
        } else {
            None
        };
        let context = encode_member(id, "").map_err(|e| CallError::internal(e.to_string()));
        match (refused, context) {
            (Some(e), _) | (None, Err(e)) => self.reply(Reply::Operator { to, result: Err(e) }),
            (None, Ok(context)) => {
                self.change_membership(id, Membership::Gone, context, to, OperatorReply::Empty);
            }
        }
    }

    /// Hands Raft a change of member `id` and parks it until it is applied.
    fn change_membership(
        &mut self,
        id: u64,
        becomes: Membership,
        context: Vec<u8>,
        to: Caller<OperatorReply>,
        answer: OperatorReply,
    ) {
        if let Some(p) = &self.membership {
            let result = Err(CallError::failed_precondition(format!(
                "a change of master {} is in progress; try again once it is applied",
                p.id
            )));
            return self.reply(Reply::Operator { to, result });
        }
        let change = raft::eraftpb::ConfChangeSingle {
            change_type: match becomes {
                Membership::Learner => raft::eraftpb::ConfChangeType::AddLearnerNode,
                Membership::Voter => raft::eraftpb::ConfChangeType::AddNode,
                Membership::Gone => raft::eraftpb::ConfChangeType::RemoveNode,
            },
            node_id: id,
            ..Default::default()
        };
        let mut change_v2 = raft::eraftpb::ConfChangeV2::default();
        change_v2.mut_changes().push(change);
        self.proposal_seq += 1;
        let seq = self.proposal_seq;
        self.actions.push(Action::ChangeMembership {
            seq,
            change: change_v2,
            context,
        });
        self.membership = Some(PendingChange {
            seq,
            id,
            becomes,
            to,
            answer,
            deadline: self.clock.instant + COMMIT_TIMEOUT,
        });
    }

    /// Raft applied a membership change: answers the parked one if this is
    /// what it asked for.
    pub(super) fn membership_applied(&mut self, voters: &[u64], learners: &[u64]) {
        let done = self.membership.as_ref().is_some_and(|p| match p.becomes {
            Membership::Learner => learners.contains(&p.id),
            Membership::Voter => voters.contains(&p.id),
            Membership::Gone => !voters.contains(&p.id) && !learners.contains(&p.id),
        });
        if let Some(p) = self.membership.take_if(|_| done) {
            info!(id = p.id, becomes = ?p.becomes, "membership change applied");
            self.reply(Reply::Operator {
                to: p.to,
                result: Ok(p.answer),
            });
        }
    }

    /// Ends the parked membership change, if any, with `err` (`seq`:
    /// only if it is that change).
    pub(super) fn fail_membership(&mut self, seq: Option<u64>, err: CallError) {
        if let Some(p) = self
            .membership
            .take_if(|p| seq.is_none_or(|seq| seq == p.seq))
        {
            self.reply(Reply::Operator {
                to: p.to,
                result: Err(err),
            });
        }
    }
}

/// The context of a membership change: the member's id and API address
/// (empty when it leaves), read back by [`decode_member`]; the format and
/// its versions are [`crate::entry`]'s.
pub(super) fn encode_member(id: u64, address: &str) -> Result<Vec<u8>, postcard::Error> {
    crate::entry::encode_member(&crate::entry::MemberContext {
        id,
        address: address.to_owned(),
    })
}

/// The member a membership change's context names, and its address
/// (`None` for Raft's own changes, which carry no context).
pub(super) fn decode_member(
    context: &[u8],
) -> Result<Option<(u64, String)>, crate::error::EntryError> {
    Ok(crate::entry::decode_member(context)?.map(|m| (m.id, m.address)))
}
