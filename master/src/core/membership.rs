//! Membership changes: add a learner, promote it to a voter once it has
//! caught up, remove a member.

use super::*;
/// What a membership change makes of a master.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Membership {
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

impl Core {
    /// Adds a master as a learner, or promotes a learner that has caught
    /// up to a voter (see `AddMember` in operator.proto).
    pub(super) async fn add_member(
        &mut self,
        req: pb::AddMemberRequest,
    ) -> Result<pb::AddMemberResponse, CallError> {
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
        if st.learners.contains(&req.id) {
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
            self.change_membership(req.id, Membership::Voter, context)
                .await?;
            info!(id = req.id, address = %req.address, "learner promoted to voter");
            return Ok(pb::AddMemberResponse {
                role: "VOTER".into(),
            });
        }
        // The new master needs an address before it can receive the log.
        self.transport.set_peer(req.id, Some(req.address.clone()));
        self.change_membership(req.id, Membership::Learner, context)
            .await?;
        info!(id = req.id, address = %req.address, "master added as a learner");
        Ok(pb::AddMemberResponse {
            role: "LEARNER".into(),
        })
    }

    pub(super) async fn remove_member(&mut self, id: u64) -> Result<(), CallError> {
        let st = self.raft_status.borrow().clone();
        if !st.voters.contains(&id) && !st.learners.contains(&id) {
            return Err(CallError::not_found(format!("master {id} is not a member")));
        }
        if st.voters == [id] {
            return Err(CallError::failed_precondition(
                "cannot remove the last master",
            ));
        }
        let context = encode_member(id, "").map_err(|e| CallError::internal(e.to_string()))?;
        self.change_membership(id, Membership::Gone, context).await
    }

    /// Proposes a change of member `id` and waits until it is applied.
    async fn change_membership(
        &mut self,
        id: u64,
        to: Membership,
        context: Vec<u8>,
    ) -> Result<(), CallError> {
        let change = raft::eraftpb::ConfChangeSingle {
            change_type: match to {
                Membership::Learner => raft::eraftpb::ConfChangeType::AddLearnerNode,
                Membership::Voter => raft::eraftpb::ConfChangeType::AddNode,
                Membership::Gone => raft::eraftpb::ConfChangeType::RemoveNode,
            },
            node_id: id,
            ..Default::default()
        };
        let mut cc = raft::eraftpb::ConfChangeV2::default();
        cc.mut_changes().push(change);
        self.raft
            .propose_conf_change(cc, context)
            .await
            .map_err(|e| match e {
                ProposeError::NotLeader { .. } => self.not_leader(),
                other => CallError::failed_precondition(other.to_string()),
            })?;
        let deadline = tokio::time::Instant::now() + COMMIT_TIMEOUT;
        loop {
            tokio::select! {
                applied = self.applied_rx.recv() => {
                    let Some(applied) = applied else {
                        return Err(CallError::unavailable("the raft node stopped"));
                    };
                    let done = matches!(&applied, Applied::ConfChanged { voters, learners, .. } if match to {
                        Membership::Learner => learners.contains(&id),
                        Membership::Voter => voters.contains(&id),
                        Membership::Gone => !voters.contains(&id) && !learners.contains(&id),
                    });
                    self.clock = Clock::read();
                    self.apply(applied, None);
                    if done {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(CallError::unavailable("the membership change was not committed in time"));
                }
            }
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
