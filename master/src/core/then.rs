//! Continuations: what the core does with the outcome of one of its
//! proposals once it is applied (or once it cannot be: refused by the
//! registry's check, leadership lost, not committed in time). A [`Then`]
//! is plain data that a test can inspect (callers are [`Caller`] tokens);
//! [`Core::resume`] runs it on the core, after the registry applied the
//! entry and the core acted on its effects, and pushes the answer as an
//! [`Action::Reply`].

use super::*;

/// Who waits for a framework's removal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum RemovalReply {
    /// Nobody (its failover timeout expired).
    Nobody,
    /// The framework's own Teardown call.
    Framework(Caller<CallReply>),
    /// An operator's TeardownFramework call.
    Operator(Caller<OperatorReply>),
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
        to: Caller<Subscription>,
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
        to: Caller<CallReply>,
    },
    /// An agent's registration: take over its connection; answer (the
    /// caller and the agent's stream wait with the shell, by `conn`).
    AgentRegistered {
        conn: u64,
        id: AgentId,
        /// Whether the agent registered without an id.
        new: bool,
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
        to: Caller<OperatorReply>,
    },
    /// A role's quota: tell the allocator; answer the operator.
    QuotaSet {
        role: Role,
        quota: Quota,
        to: Caller<OperatorReply>,
    },
    /// A role's quota removed: tell the allocator; answer the operator.
    QuotaRemoved {
        role: Role,
        to: Caller<OperatorReply>,
    },
    /// An agent drained or reactivated: stop or resume offering it; answer
    /// the operator.
    DrainingSet {
        id: AgentId,
        draining: bool,
        to: Caller<OperatorReply>,
    },
    /// The no-op barrier of taking over as leader of `term`: lead (or not)
    /// and handle the inputs that waited for it ([`Core::take_over`]).
    TakeOver { term: u64 },
    /// A key-value write: answer its caller.
    Kv(KvThen),
}

impl Core {
    /// Runs a continuation with its proposal's outcome.
    pub(super) fn resume(&mut self, then: Then, result: Result<Effects, ApplyError>) {
        match then {
            Then::Kv(then) => self.kv_resume(then, result),
            Then::Detached => {
                if let Err(e) = result {
                    debug!("detached command not applied: {e}");
                }
            }
            Then::Subscribed { record, known, to } => {
                if let Some(n) = self.subscribing.get_mut(&record.id) {
                    *n -= 1;
                    if *n == 0 {
                        self.subscribing.remove(&record.id);
                    }
                }
                let result = result
                    .map_err(|e| self.status_of(e, CallError::internal))
                    .map(|_| self.subscribed(record, known));
                self.reply(Reply::Subscribe { to, result });
            }
            Then::Launched {
                framework,
                agent,
                role,
                records,
                used,
                to,
            } => {
                let result = match result {
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
                let result = result.map(CallReply::Accept);
                self.reply(Reply::Call { to, result });
            }
            Then::AgentRegistered { conn, id, new } => {
                // On success `agent_registered` answers, before what it
                // sends the agent.
                let failed = match result {
                    Ok(effects) => self.agent_registered(conn, id, new, &effects),
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
                if let Err(e) = failed {
                    self.reply(Reply::Register {
                        conn,
                        result: Err(e),
                    });
                }
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
                    RemovalReply::Framework(to) => self.reply(Reply::Call {
                        to,
                        result: result.map(|()| CallReply::Empty),
                    }),
                    RemovalReply::Operator(to) => self.reply(Reply::Operator {
                        to,
                        result: result.map(|()| OperatorReply::Empty),
                    }),
                }
            }
            Then::WeightSet { role, weight, to } => {
                if result.is_ok() {
                    self.allocator.set_weight(role, weight);
                    self.allocation_dirty = true;
                }
                self.operator_answer(to, result);
            }
            Then::QuotaSet { role, quota, to } => {
                if result.is_ok() {
                    if let Err(e) = self.allocator.set_quota(role, quota) {
                        warn!("quota accepted by the probe but not the allocator: {e}");
                    }
                    self.allocation_dirty = true;
                }
                self.operator_answer(to, result);
            }
            Then::QuotaRemoved { role, to } => {
                if result.is_ok() {
                    self.allocator.remove_quota(&role);
                    self.allocation_dirty = true;
                }
                self.operator_answer(to, result);
            }
            Then::DrainingSet { id, draining, to } => {
                if result.is_ok() {
                    self.draining_changed(&id, draining);
                }
                self.operator_answer(to, result);
            }
            Then::TakeOver { term } => self.take_over(term, result),
        }
    }

    /// Answers an operator write that returns nothing.
    fn operator_answer(&mut self, to: Caller<OperatorReply>, result: Result<Effects, ApplyError>) {
        let result = result
            .map(|_| OperatorReply::Empty)
            .map_err(|e| self.status_of(e, CallError::invalid_argument));
        self.reply(Reply::Operator { to, result });
    }
}
