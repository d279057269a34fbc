//! Continuations: what the core does with the outcome of one of its
//! proposals once it is applied (or once it cannot be: refused by the
//! registry's check, leadership lost, not committed in time). A [`Then`]
//! is plain data that a test can inspect; [`Core::resume`] runs it on the
//! core, after the registry applied the entry and the core acted on its
//! effects.

use super::*;

/// Who waits for a framework's removal.
#[derive(Debug)]
pub(super) enum RemovalReply {
    /// Nobody (its failover timeout expired).
    Nobody,
    /// The framework's own Teardown call.
    Framework(oneshot::Sender<Result<CallReply, CallError>>),
    /// An operator's TeardownFramework call.
    Operator(oneshot::Sender<Result<OperatorReply, CallError>>),
}

/// What to do once a proposal of this core has an outcome.
#[derive(Debug)]
pub(super) enum Then {
    /// Nothing: nobody waits, and what applying the command does happens
    /// in `apply`.
    Detached,
    /// A subscription: open the framework's stream and answer with it.
    Subscribed {
        record: FrameworkRecord,
        /// Whether the framework was registered before.
        known: bool,
        reply: oneshot::Sender<Result<Subscription, CallError>>,
    },
    /// A launch: send its tasks to the agent, or give the resources they
    /// would have used back to the allocator; answer the Accept.
    Launched {
        framework: FrameworkId,
        agent: AgentId,
        role: Role,
        records: Vec<TaskRecord>,
        /// What the tasks take of the accepted offers.
        used: Allocated,
        reply: oneshot::Sender<Result<CallReply, CallError>>,
    },
    /// An agent's registration: take over its connection; answer.
    AgentRegistered {
        conn: u64,
        id: AgentId,
        /// Whether the agent registered without an id.
        new: bool,
        tx: AgentTx,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    /// A framework's removal: shut it down everywhere; answer whoever
    /// asked.
    FrameworkRemoved {
        id: FrameworkId,
        reason: String,
        reply: RemovalReply,
    },
    /// A role's weight: tell the allocator; answer the operator.
    WeightSet {
        role: Role,
        weight: Weight,
        reply: oneshot::Sender<Result<OperatorReply, CallError>>,
    },
    /// A role's quota: tell the allocator; answer the operator.
    QuotaSet {
        role: Role,
        quota: Quota,
        reply: oneshot::Sender<Result<OperatorReply, CallError>>,
    },
    /// A role's quota removed: tell the allocator; answer the operator.
    QuotaRemoved {
        role: Role,
        reply: oneshot::Sender<Result<OperatorReply, CallError>>,
    },
    /// An agent drained or reactivated: stop or resume offering it; answer
    /// the operator.
    DrainingSet {
        id: AgentId,
        draining: bool,
        reply: oneshot::Sender<Result<OperatorReply, CallError>>,
    },
}

impl Core {
    /// Runs a continuation with its proposal's outcome.
    pub(super) fn resume(&mut self, then: Then, result: Result<Effects, ApplyError>) {
        match then {
            Then::Detached => {
                if let Err(e) = result {
                    debug!("detached command not applied: {e}");
                }
            }
            Then::Subscribed {
                record,
                known,
                reply,
            } => {
                if let Some(n) = self.subscribing.get_mut(&record.id) {
                    *n -= 1;
                    if *n == 0 {
                        self.subscribing.remove(&record.id);
                    }
                }
                let result = result
                    .map_err(|e| self.status_of(e, CallError::internal))
                    .and_then(|_| self.subscribed(record, known));
                let _ = reply.send(result);
            }
            Then::Launched {
                framework,
                agent,
                role,
                records,
                used,
                reply,
            } => {
                let answer = match result {
                    Ok(_) => Ok(self.launched(&framework, &agent, &records)),
                    Err(e) => {
                        // The tasks never exist: their share of the
                        // offers goes back to the allocator.
                        let now = self.now();
                        self.allocator
                            .recover(&agent, &framework, &role, &used, None, now);
                        self.allocation_dirty = true;
                        Err(self.status_of(e, CallError::failed_precondition))
                    }
                };
                let _ = reply.send(answer.map(CallReply::Accept));
            }
            Then::AgentRegistered {
                conn,
                id,
                new,
                tx,
                reply,
            } => {
                let answer = match result {
                    Ok(effects) => self.agent_registered(conn, id, new, tx, &effects),
                    Err(e) => Err(match e {
                        ApplyError::Overcommit { .. } | ApplyError::Invalid(_) => {
                            CallError::failed_precondition(format!("register: {e}"))
                        }
                        e @ (ApplyError::NotLeader
                        | ApplyError::LeadershipLost
                        | ApplyError::Unavailable(_)) => self.status_of(e, CallError::internal),
                        _ => CallError::internal(e.to_string()),
                    }),
                };
                let _ = reply.send(answer);
            }
            Then::FrameworkRemoved { id, reason, reply } => {
                let result = match result {
                    Ok(effects) => {
                        self.framework_removed(&id, &reason, &effects);
                        Ok(())
                    }
                    Err(e) => {
                        warn!(framework = %id, "remove framework: {e}");
                        Err(self.status_of(e, CallError::internal))
                    }
                };
                match reply {
                    RemovalReply::Nobody => {}
                    RemovalReply::Framework(reply) => {
                        let _ = reply.send(result.map(|()| CallReply::Empty));
                    }
                    RemovalReply::Operator(reply) => {
                        let _ = reply.send(result.map(|()| OperatorReply::Empty));
                    }
                }
            }
            Then::WeightSet {
                role,
                weight,
                reply,
            } => {
                if result.is_ok() {
                    self.allocator.set_weight(role, weight);
                    self.allocation_dirty = true;
                }
                let _ = reply.send(self.operator_answer(result));
            }
            Then::QuotaSet { role, quota, reply } => {
                if result.is_ok() {
                    if let Err(e) = self.allocator.set_quota(role, quota) {
                        warn!("quota accepted by the probe but not the allocator: {e}");
                    }
                    self.allocation_dirty = true;
                }
                let _ = reply.send(self.operator_answer(result));
            }
            Then::QuotaRemoved { role, reply } => {
                if result.is_ok() {
                    self.allocator.remove_quota(&role);
                    self.allocation_dirty = true;
                }
                let _ = reply.send(self.operator_answer(result));
            }
            Then::DrainingSet {
                id,
                draining,
                reply,
            } => {
                if result.is_ok() {
                    self.draining_changed(&id, draining);
                }
                let _ = reply.send(self.operator_answer(result));
            }
        }
    }

    /// The answer to an operator write that returns nothing.
    fn operator_answer(
        &self,
        result: Result<Effects, ApplyError>,
    ) -> Result<OperatorReply, CallError> {
        result
            .map(|_| OperatorReply::Empty)
            .map_err(|e| self.status_of(e, CallError::invalid_argument))
    }
}
