//! The leader's life cycle: taking over when Raft makes this master leader
//! (a no-op barrier, then the leader-only state rebuilt from the
//! registry), stepping down, and the members' addresses.
//!
//! A new leader proposes a no-op: everything committed before its term is
//! applied once an entry of its term is. The barrier is a proposal like
//! any other ([`Then::TakeOver`]); while it is in flight the core applies
//! entries and takes Raft's reports as usual, runs no periodic work but
//! the barrier's deadline, and keeps the inputs that arrive, in order
//! ([`TakingOver`]). Once the no-op is applied, and this master still
//! leads that term, it rebuilds the allocator from the registry and
//! starts with no offers; then it handles the inputs it kept, as a
//! leader. If the barrier fails (leadership lost, not committed within
//! [`COMMIT_TIMEOUT`]) it handles them as a follower, and takes over
//! again at Raft's next word that it leads.
//!
//! A leader gives every agent it inherits as reachable
//! `agent_reregister_timeout` (30 s) to register with it before the ping
//! timeout counts, and starts the failover clock of every framework that
//! was connected to the old leader. A launch no agent ever reported (its
//! `RunTask` was lost with the old leader) is sent again when its agent
//! registers. Stepping down drops every stream; followers answer calls
//! with a redirect ([`Core::handle_as_follower`]).

use super::*;

/// A takeover under way: the no-op barrier of `term` is proposed, not
/// applied yet.
pub(super) struct TakingOver {
    term: u64,
    /// The inputs that arrived meanwhile, in order: they wait as they did
    /// in the request channel while an awaited barrier held the core.
    pub(super) deferred: VecDeque<Input>,
}

impl Core {
    /// Rebuilds the leader-only state from the registry: the allocator (with
    /// weights, quotas, every known framework inactive until it
    /// re-subscribes), an empty offer book with a fresh id prefix, and
    /// `agent_reregister_timeout` (at least a ping timeout) for every
    /// reachable agent to register with this leader.
    pub(super) fn rebuild_leader_state(&mut self, term: u64) {
        let mut allocator = Allocator::new(allocator_config(&self.config));
        for (role, w) in self.registry.weights() {
            if let Ok(weight) = Weight::new(ms_to_secs(*w)) {
                allocator.set_weight(role.clone(), weight);
            }
        }
        for (role, q) in self.registry.quotas() {
            if let Err(e) = allocator.set_quota(role.clone(), q.clone()) {
                warn!(role = %role, "stored quota rejected by the allocator: {e}");
            }
        }
        for fw in self.registry.frameworks() {
            allocator.add_framework(fw.id.clone(), fw.roles.clone(), false);
        }
        self.allocator = allocator;
        self.offers = OfferBook::new(
            &format!("{}-t{term}", self.master_id),
            self.config.offer_timeout,
        );
        let now = self.clock.instant;
        self.reregister_until = now + self.config.agent_reregister_timeout;
        self.last_seen = self
            .registry
            .agents()
            .filter(|a| a.unreachable_since_ms.is_none())
            .map(|a| (a.id.clone(), now))
            .collect();
        self.inherited = self.last_seen.keys().cloned().collect();
        self.pending_kills.clear();
        self.restart_lease_timers();
        self.allocation_dirty = true;
    }

    /// Takes the members' addresses the registry replicates: a master that
    /// joined (or lost the log entries that added members) learns where
    /// every member listens. Addresses it has are kept unless the registry
    /// says otherwise.
    pub(super) fn learn_members(&mut self) {
        let replicated: Vec<(u64, String)> = self
            .registry
            .members()
            .iter()
            .map(|(id, a)| (*id, a.clone()))
            .collect();
        for (id, address) in replicated {
            if id != self.config.id && self.members.get(&id) != Some(&address) {
                self.members.insert(id, address.clone());
                self.transport.set_peer(id, Some(address));
            }
        }
    }

    /// On taking over: puts the members' addresses this leader knows into
    /// the replicated state when the registry lacks or differs from them
    /// (the bootstrap members are known from `--peers` only).
    fn record_members(&mut self) {
        let st = self.raft_status.borrow().clone();
        let known: BTreeMap<u64, String> = st
            .voters
            .iter()
            .chain(&st.learners)
            .filter_map(|id| self.members.get(id).map(|a| (*id, a.clone())))
            .collect();
        if &known != self.registry.members() {
            self.propose_detached(Command::RecordMembers { members: known });
        }
    }

    /// Drops everything only a leader holds: connections (their streams end
    /// and they reconnect to the new leader), offers, allocator state.
    pub(super) fn step_down(&mut self) {
        if self.leading.take().is_some() {
            info!("no longer the leader; closing framework and agent streams");
        }
        self.fail_pending(&ApplyError::LeadershipLost);
        let frameworks: Vec<FrameworkId> = self.frameworks.keys().cloned().collect();
        for id in frameworks {
            self.drop_connection(&id, Some(Err(CallError::NotLeader { leader: None })));
        }
        self.retired_streams.clear();
        let agents: Vec<AgentId> = self.agents.keys().cloned().collect();
        for id in agents {
            self.drop_agent_connection(&id);
        }
        self.conn_agents.clear();
        self.last_seen.clear();
        self.inherited.clear();
        self.pending_kills.clear();
        self.pending_work.clear();
        self.offers = OfferBook::new(&self.master_id, self.config.offer_timeout);
        self.allocator = Allocator::new(allocator_config(&self.config));
    }

    pub(super) fn raft_leader(&self) -> Option<u64> {
        let st = self.raft_status.borrow();
        (st.leader_id != 0).then_some(st.leader_id)
    }

    /// Takes over when Raft made this node leader (proposes the barrier,
    /// [`Then::TakeOver`]); steps down when not.
    pub(super) fn on_raft_status(&mut self) {
        let (role, term) = {
            let st = self.raft_status.borrow();
            (st.role, st.term)
        };
        let taking_over = self.taking_over.as_ref().map(|t| t.term);
        let serving = self.leading.is_some() || taking_over.is_some();
        if role != StateRole::Leader {
            if serving {
                // A barrier in flight fails with the other pending work.
                self.step_down();
            }
            return;
        }
        if self.leading == Some(term) || taking_over == Some(term) {
            return;
        }
        if serving {
            self.step_down();
        }
        self.taking_over = Some(TakingOver {
            term,
            deferred: VecDeque::new(),
        });
        // Everything committed before this term is applied once an entry
        // of this term is: a no-op is the barrier.
        self.propose(Command::Noop, Then::TakeOver { term });
    }

    /// Ends the takeover of `term` with its barrier's outcome: leads if
    /// the no-op was applied and this master still leads that term, then
    /// handles the inputs that waited (as a follower if it does not lead).
    pub(super) fn take_over(&mut self, term: u64, barrier: Result<Effects, ApplyError>) {
        if self.taking_over.as_ref().map(|t| t.term) != Some(term) {
            debug!(term, "the barrier of a takeover no longer under way");
            return;
        }
        let deferred = self
            .taking_over
            .take()
            .map(|t| t.deferred)
            .unwrap_or_default();
        let still_leader = {
            let st = self.raft_status.borrow();
            st.role == StateRole::Leader && st.term == term
        };
        match barrier {
            Ok(_) if still_leader => self.lead(term),
            Ok(_) => warn!(
                term,
                "could not take over as leader: no longer leading the term"
            ),
            Err(e) => warn!(term, "could not take over as leader: {e}"),
        }
        for input in deferred {
            self.handle(input);
        }
    }

    /// Leads `term`, its barrier applied: rebuilds the leader-only state,
    /// records the members and starts the failover clocks of the
    /// frameworks connected to the previous leader.
    fn lead(&mut self, term: u64) {
        self.rebuild_leader_state(term);
        self.leading = Some(term);
        self.leading_since_ms = self.clock.unix_ms;
        info!(term, "leading");
        self.record_members();
        // Frameworks connected to the previous leader (or to this master
        // before a restart) start their failover clocks now; ones already
        // disconnected keep their recorded time.
        let connected: Vec<FrameworkId> = self
            .registry
            .frameworks()
            .filter(|f| f.disconnected_at_ms.is_none())
            .map(|f| f.id.clone())
            .collect();
        let now_ms = self.clock.unix_ms;
        for id in connected {
            self.propose_detached(Command::DisconnectFramework { id, at_ms: now_ms });
        }
    }

    /// Maps a commit error to a call error: "not the leader" becomes a
    /// redirect (also when leadership was lost with the command in flight,
    /// saying its outcome is unknown), an unknown framework NOT_FOUND (it
    /// was removed meanwhile), anything else `make(message)`.
    pub(super) fn status_of(
        &self,
        e: ApplyError,
        make: impl FnOnce(String) -> CallError,
    ) -> CallError {
        match e {
            ApplyError::NotLeader => self.not_leader(),
            ApplyError::LeadershipLost => CallError::OutcomeUnknown {
                leader: self.leader_address(),
            },
            ApplyError::Unavailable(m) => CallError::Unavailable(m),
            e @ ApplyError::UnknownFramework(_) => CallError::NotFound(e.to_string()),
            ApplyError::Conflict(m) => CallError::FailedPrecondition(m),
            e => make(e.to_string()),
        }
    }

    /// The leader's API address, when this master knows it.
    fn leader_address(&self) -> Option<String> {
        self.raft_leader()
            .and_then(|id| self.members.get(&id).cloned())
    }

    /// The error a follower answers with, naming the leader when known,
    /// which the SDK, the agent and the CLI follow.
    pub(super) fn not_leader(&self) -> CallError {
        CallError::NotLeader {
            leader: self.leader_address(),
        }
    }

    /// A follower (or a leader whose takeover failed) redirects every call
    /// to the leader; operator reads marked stale-ok are served from this
    /// master's registry.
    pub(super) fn handle_as_follower(&mut self, input: Input) {
        let redirect = self.not_leader();
        let reply = match input {
            Input::Subscribe(_, to) => Reply::Subscribe {
                to,
                result: Err(redirect),
            },
            Input::Call(_, to) => Reply::Call {
                to,
                result: Err(redirect),
            },
            Input::AgentRegister { conn, .. } => Reply::Register {
                conn,
                result: Err(redirect),
            },
            Input::Operator(call, stale_ok, to) => {
                let result = match call {
                    OperatorCall::Leader => Ok(OperatorReply::Leader(self.leader())),
                    OperatorCall::Members => Ok(OperatorReply::Members(self.members_view())),
                    // Only the leader holds pending work, even for stale reads.
                    OperatorCall::Pending(_) => Err(redirect),
                    call if stale_ok && call.is_read() => self.read(call),
                    _ => Err(redirect),
                };
                Reply::Operator { to, result }
            }
            Input::Stream(_) => return,
        };
        self.reply(reply);
    }
}
