//! Proposals and what Raft hands back: a command is checked, encoded as a
//! [`Proposal`] and proposed; its continuation waits, keyed by sequence
//! number, until the entry is applied ([`Core::apply`]), leadership is
//! lost, or it times out. Also linearizable reads and snapshots.
//!
//! Parked work that cannot be answered ends with UNAVAILABLE: "lost
//! leadership before the command was committed" (with the `berth-leader`
//! redirect) when leadership is lost, "not committed in time" after 10 s;
//! both mean the outcome is unknown (the new leader may still commit it).
//! Linearizable operator reads wait the same way for their ReadIndex to be
//! applied (the shell asks Raft for it and reports a refusal). After `snapshot_every` applied entries, or when Raft asks for
//! one, the registry's bytes go to the Raft node as a snapshot (an
//! [`Action`] the run loop executes) and the log before it is compacted.

use super::*;
use crate::entry::{self, Proposal};
use crate::error::EntryError;

/// Decodes a log entry that [`Core::encode`] wrote (the format and its
/// versions are [`crate::entry`]'s).
pub(super) fn decode(data: &[u8]) -> Result<Proposal, EntryError> {
    entry::decode_proposal(data)
}

impl Core {
    pub(super) fn now(&self) -> Time {
        let since = self.clock.instant.saturating_duration_since(self.epoch);
        Time::from_millis(u64::try_from(since.as_millis()).unwrap_or(u64::MAX))
    }

    /// Encodes a command as this core's next proposal.
    fn encode(&mut self, cmd: Command) -> Result<(u64, Vec<u8>), ApplyError> {
        self.proposal_seq += 1;
        let seq = self.proposal_seq;
        let data = entry::encode_proposal(&Proposal {
            origin: self.origin,
            seq,
            cmd,
        })
        .map_err(|e| ApplyError::Invalid(format!("cannot encode the command: {e}")))?;
        Ok((seq, data))
    }

    /// Checks a command and proposes it without waiting: `then` runs with
    /// the outcome once the entry is applied (or at once if the registry
    /// refuses it, or when it cannot commit: leadership lost, not committed
    /// within [`COMMIT_TIMEOUT`]). Meanwhile the core goes on with other
    /// requests, so concurrent calls share Raft rounds and fsyncs.
    ///
    /// The check runs against the registry as applied so far; a proposal
    /// still in flight may make a checked command invalid by the time it is
    /// applied (two launches of one task id, say). The registry then
    /// refuses it when applying, deterministically on every master (a
    /// no-op), and `then` gets that error.
    pub(super) fn propose(&mut self, cmd: Command, then: Then) {
        if let Err(e) = self.registry.check(&cmd) {
            self.resume(then, Err(e));
            return;
        }
        self.propose_checked(cmd, then);
    }

    /// [`Self::propose`] for a command the caller has just checked.
    pub(super) fn propose_checked(&mut self, cmd: Command, then: Then) {
        let (seq, data) = match self.encode(cmd) {
            Ok(v) => v,
            Err(e) => return self.resume(then, Err(e)),
        };
        if !self.raft.propose_detached(data) {
            return self.resume(
                then,
                Err(ApplyError::Unavailable(
                    "the raft proposal queue is full; try again".into(),
                )),
            );
        }
        self.pending.insert(
            seq,
            Pending {
                then,
                deadline: self.clock.instant + COMMIT_TIMEOUT,
            },
        );
    }

    /// Checks and proposes a command whose outcome nobody waits for; what
    /// applying it does happens in `apply`.
    pub(super) fn propose_detached(&mut self, cmd: Command) {
        self.propose(cmd, Then::Detached);
    }

    /// Ends every pending proposal with `err` (leadership lost).
    pub(super) fn fail_pending(&mut self, err: &ApplyError) {
        for (_, p) in std::mem::take(&mut self.pending) {
            self.resume(p.then, Err(err.clone()));
        }
        let unknown = self.status_of(err.clone(), CallError::internal);
        self.fail_membership(None, unknown);
        // Raft drops the reads of a leader that steps down.
        let redirect = self.not_leader();
        for (_, r) in std::mem::take(&mut self.pending_reads) {
            self.reply(Reply::Operator {
                to: r.to,
                result: Err(redirect.clone()),
            });
        }
    }

    /// Ends the pending proposals that are past their deadline. If one
    /// still commits later it is applied like any entry, with nobody
    /// waiting for it.
    pub(super) fn expire_pending(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(p) = self.pending.remove(&seq) {
                warn!(seq, "a proposal was not committed in time");
                self.resume(
                    p.then,
                    Err(ApplyError::Unavailable(
                        "the command was not committed in time; it may still be committed (reconcile before retrying)".into(),
                    )),
                );
            }
        }
        if self.membership.as_ref().is_some_and(|p| p.deadline <= now) {
            let late = CallError::unavailable("the membership change was not committed in time");
            self.fail_membership(None, late);
        }
        let expired: Vec<Vec<u8>> = self
            .pending_reads
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(ctx, _)| ctx.clone())
            .collect();
        for ctx in expired {
            if let Some(r) = self.pending_reads.remove(&ctx) {
                self.reply(Reply::Operator {
                    to: r.to,
                    result: Err(CallError::unavailable("read index timed out")),
                });
            }
        }
    }

    /// Starts a linearizable operator read (Raft's ReadIndex, asked by the
    /// shell: [`Action::ReadIndex`]): it is answered from the registry once
    /// this leader has applied everything committed when the read began,
    /// or with a redirect if Raft refuses it. The core goes on meanwhile.
    pub(super) fn start_read(&mut self, call: OperatorCall, to: Caller<OperatorReply>) {
        let ctx = rand_u64().to_be_bytes().to_vec();
        self.actions.push(Action::ReadIndex { ctx: ctx.clone() });
        self.pending_reads.insert(
            ctx,
            PendingRead {
                call,
                to,
                deadline: self.clock.instant + COMMIT_TIMEOUT,
            },
        );
    }

    /// Raft refused a request the shell made for a handler: a read is
    /// answered with a redirect, a membership change with why.
    pub(super) fn on_raft_report(&mut self, report: RaftReport) {
        match report {
            RaftReport::ReadRefused { ctx } => {
                if let Some(r) = self.pending_reads.remove(&ctx) {
                    let result = Err(self.not_leader());
                    self.reply(Reply::Operator { to: r.to, result });
                }
            }
            RaftReport::MembershipRefused { seq, error } => {
                let e = match error {
                    ProposeError::NotLeader { .. } => self.not_leader(),
                    other => CallError::failed_precondition(other.to_string()),
                };
                self.fail_membership(Some(seq), e);
            }
        }
    }

    /// Applies one item from Raft; a proposal of this core that waited
    /// for it resumes with the outcome.
    pub(super) fn apply(&mut self, applied: Applied) {
        match applied {
            Applied::Entry { index, data, .. } => {
                self.applied_index = index;
                self.since_snapshot += 1;
                let proposal = match decode(&data) {
                    Ok(p) => p,
                    Err(e) => {
                        self.fatal = Some(MasterError::Corrupt(format!("log entry {index}: {e}")));
                        return;
                    }
                };
                let result = self.registry.apply(&proposal.cmd);
                if let Ok(effects) = &result {
                    self.kv_applied(&effects.kv);
                }
                if let Err(e) = &result {
                    debug!(
                        index,
                        "command refused when applied (a no-op on every master): {e}"
                    );
                }
                if let (Ok(_), Command::RemoveFramework { id, .. }) = (&result, &proposal.cmd) {
                    // Whoever proposed the removal: its pending work goes.
                    self.pending_work.remove(id);
                }
                if let (Ok(_), Command::RecordMembers { .. }) = (&result, &proposal.cmd) {
                    self.learn_members();
                }
                let ours = proposal.origin == self.origin;
                if let Ok(effects) = &result
                    && self.leading.is_some()
                {
                    self.act_on(effects);
                    if let Command::UpdateTask {
                        framework, status, ..
                    } = &proposal.cmd
                        && let Ok(status) = pb::TaskStatus::decode(status.as_slice())
                    {
                        self.send_event(framework, pb::event::Event::Update(status));
                    }
                }
                if ours && let Some(p) = self.pending.remove(&proposal.seq) {
                    self.resume(p.then, result);
                }
                self.maybe_snapshot();
            }
            Applied::Snapshot { index, data } => match Registry::from_snapshot(&data) {
                Ok(mut registry) => {
                    registry.set_max_completed(self.config.max_completed_tasks);
                    registry.rebuild_indexes();
                    self.registry = registry;
                    self.applied_index = index;
                    self.since_snapshot = 0;
                    info!(index, "registry restored from a snapshot");
                    self.actions
                        .push(Action::KvChanged(Arc::new(KvBatch::Reset)));
                    self.learn_members();
                    if let Some(term) = self.leading {
                        self.rebuild_leader_state(term);
                    }
                }
                Err(e) => {
                    self.fatal = Some(MasterError::Corrupt(format!("snapshot at {index}: {e}")));
                }
            },
            Applied::ConfChanged {
                index,
                voters,
                learners,
                context,
            } => {
                self.applied_index = index;
                let member = match membership::decode_member(&context) {
                    Ok(member) => member,
                    Err(e) => {
                        self.fatal =
                            Some(MasterError::Corrupt(format!("conf change {index}: {e}")));
                        return;
                    }
                };
                if let Some((id, address)) = member
                    && (voters.contains(&id) || learners.contains(&id))
                {
                    self.registry.member_changed(id, Some(&address));
                    self.members.insert(id, address.clone());
                    if id != self.config.id {
                        self.transport.set_peer(id, Some(address));
                    }
                }
                let member = |id: &u64| voters.contains(id) || learners.contains(id);
                let left: Vec<u64> = self
                    .registry
                    .members()
                    .keys()
                    .copied()
                    .filter(|id| !member(id))
                    .collect();
                for id in left {
                    self.registry.member_changed(id, None);
                }
                let gone: Vec<u64> = self
                    .members
                    .keys()
                    .copied()
                    .filter(|id| !member(id))
                    .collect();
                for id in gone {
                    self.members.remove(&id);
                    self.transport.set_peer(id, None);
                }
                info!(index, ?voters, ?learners, "membership changed");
                self.membership_applied(&voters, &learners);
            }
            Applied::ReadReady { ctx, .. } => {
                if let Some(r) = self.pending_reads.remove(&ctx) {
                    let result = self.read(r.call);
                    self.reply(Reply::Operator { to: r.to, result });
                }
            }
            Applied::SnapshotWanted { index } => {
                // A peer needs a snapshot newer than the stored one (it fell
                // behind, or joined after it was taken).
                debug!(index, "snapshot wanted by a peer");
                self.snapshot_now();
            }
        }
    }

    fn maybe_snapshot(&mut self) {
        if self.since_snapshot >= self.config.snapshot_every {
            self.snapshot_now();
        }
    }

    /// Asks the shell to hand Raft a snapshot of the registry as of the
    /// applied index ([`Action::Snapshot`]); the core does no IO here.
    fn snapshot_now(&mut self) {
        self.since_snapshot = 0;
        match self.registry.to_snapshot() {
            Ok(data) => self.actions.push(Action::Snapshot {
                index: self.applied_index,
                data,
            }),
            Err(e) => warn!("cannot encode a registry snapshot: {e}"),
        }
    }

    fn act_on(&mut self, effects: &Effects) {
        let now = self.now();
        for (framework, status) in &effects.updates {
            self.send_event(framework, pb::event::Event::Update(status.clone()));
        }
        for (agent, framework, role, allocated) in &effects.freed {
            self.allocator
                .recover(agent, framework, role, allocated, None, now);
            self.allocation_dirty = true;
        }
    }
}
