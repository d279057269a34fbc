//! The master's core: one task that owns the registry, the allocator, the
//! offer book and every framework and agent connection.
//!
//! gRPC handlers ([`crate::service`]) turn calls into [`Request`]s and await
//! the reply; the core handles one request at a time, so there are no locks.
//! A call that changes the registry is checked, proposed to Raft and parked
//! ([`Core::propose`]); the core goes on with the next request, so the
//! commands of concurrent calls share Raft rounds and fsyncs. When Raft
//! commits the entry and the core applies it, the parked continuation acts
//! on the effects (sends the tasks, updates the allocator) and answers the
//! caller. Entries are applied in log order, so effects follow the order
//! in which commands were proposed.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_proto as pb;
use berth_proto::convert::{resources_from_proto, resources_from_proto_opt, resources_to_proto};
use berth_scheduler_core::{
    AgentId, AgentResources, Allocated, Allocator, AllocatorConfig, FrameworkId, OfferBook,
    OfferError, OfferId, Quota, Resources, Role, TaskId, Time, Weight, quoted,
};
use prost::Message;
use raft::StateRole;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot, watch};
use tonic::Status;
use tracing::{debug, error, info, warn};

use crate::config::MasterConfig;
use crate::error::{ApplyError, MasterError};
use crate::pending::{self, PendingWork};
use crate::raft::Transport;
use crate::raft::node::{Applied, ProposeError, RaftHandle, Status as RaftStatus};
use crate::raft::transport::HeardFrom;
use crate::registry::{
    AgentRecord, Command, Effects, FrameworkRecord, Registry, TaskRecord, ms_to_secs,
};

/// Events queued per framework stream before the framework counts as too
/// slow and is disconnected.
const FRAMEWORK_QUEUE: usize = 8192;
/// Messages queued per agent stream.
pub(crate) const AGENT_QUEUE: usize = 8192;
/// Longest accepted failover timeout, refuse filter or grace period.
const MAX_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
/// Longest names and hostnames accepted.
const MAX_NAME: usize = 1024;
/// While requests keep coming, a change-triggered allocation waits at
/// most this long (see `Core::on_tick`).
const BUSY_ALLOCATION_INTERVAL: Duration = Duration::from_millis(200);
/// While requests keep coming, allocation cycles are spaced by this many
/// times the last cycle's duration (up to [`BUSY_ALLOCATION_INTERVAL`]), so
/// that they take at most about a fifth of the core's time: cheap cycles
/// (few frameworks wanting offers) run every tick, costly ones are folded.
const BUSY_ALLOCATION_SPACING: u32 = 4;

/// A framework's event sender.
pub(crate) type EventTx = mpsc::Sender<Result<pb::Event, Status>>;
/// An agent's message sender.
pub(crate) type AgentTx = mpsc::Sender<Result<pb::MasterMessage, Status>>;

/// A scheduler call, after the gRPC layer.
#[derive(Debug)]
pub(crate) enum SchedulerCall {
    Accept(pb::AcceptRequest),
    Decline(pb::DeclineRequest),
    Revive(pb::ReviveRequest),
    Suppress(pb::SuppressRequest),
    Kill(pb::KillRequest),
    Acknowledge(pb::AcknowledgeRequest),
    Reconcile(pb::ReconcileRequest),
    Teardown(pb::TeardownRequest),
    UpdatePending(pb::UpdatePendingRequest),
}

/// Reply to a scheduler call.
#[derive(Debug)]
pub(crate) enum CallReply {
    Empty,
    Accept(pb::AcceptResponse),
}

/// An operator call.
#[derive(Debug)]
pub(crate) enum OperatorCall {
    State,
    Agents,
    Frameworks,
    Tasks(pb::ListTasksRequest),
    Roles,
    Drain(String),
    Reactivate(String),
    Leader,
    SetWeight(pb::SetWeightRequest),
    SetQuota(pb::SetQuotaRequest),
    RemoveQuota(String),
    Members,
    AddMember(pb::AddMemberRequest),
    RemoveMember(u64),
    /// Pending work: live state of the leader, never read on a follower.
    Pending(pb::ListPendingRequest),
    /// Remove a framework (its id), as its own Teardown does.
    Teardown(String),
}

impl OperatorCall {
    /// Whether the call only reads.
    fn is_read(&self) -> bool {
        matches!(
            self,
            Self::State
                | Self::Agents
                | Self::Frameworks
                | Self::Tasks(_)
                | Self::Roles
                | Self::Leader
                | Self::Members
                | Self::Pending(_)
        )
    }
}

/// Reply to an operator call.
#[derive(Debug)]
pub(crate) enum OperatorReply {
    Empty,
    State(Box<pb::ClusterState>),
    Agents(pb::AgentList),
    Frameworks(pb::FrameworkList),
    Tasks(pb::TaskList),
    Roles(pb::RoleList),
    Leader(pb::LeaderInfo),
    Members(pb::MemberList),
    AddMember(pb::AddMemberResponse),
    Pending(pb::PendingList),
}

/// A successful subscription.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub framework: FrameworkId,
    pub stream_id: String,
    pub events: mpsc::Receiver<Result<pb::Event, Status>>,
}

/// What the gRPC layer asks of the core.
#[derive(Debug)]
pub(crate) enum Request {
    Subscribe {
        info: pb::FrameworkInfo,
        reply: oneshot::Sender<Result<Subscription, Status>>,
    },
    Call {
        call: SchedulerCall,
        reply: oneshot::Sender<Result<CallReply, Status>>,
    },
    FrameworkStreamClosed {
        framework: FrameworkId,
        stream_id: String,
    },
    AgentRegister {
        conn: u64,
        register: pb::Register,
        tx: AgentTx,
        reply: oneshot::Sender<Result<(), Status>>,
    },
    AgentMessage {
        conn: u64,
        message: pb::AgentMessage,
    },
    AgentClosed {
        conn: u64,
    },
    Operator {
        call: OperatorCall,
        /// The caller accepts a possibly stale read from any master.
        stale_ok: bool,
        reply: oneshot::Sender<Result<OperatorReply, Status>>,
    },
}

struct FrameworkConn {
    stream_id: String,
    tx: EventTx,
    /// When this stream subscribed (wall clock, ms since the Unix epoch).
    connected_at_ms: u64,
}

struct AgentConn {
    conn: u64,
    tx: AgentTx,
    ping_seq: u64,
    /// When this stream registered (wall clock, ms since the Unix epoch).
    connected_at_ms: u64,
}

/// A command as it travels through the Raft log: who proposed it, so the
/// proposer can recognise its own entry when it is applied.
#[derive(Debug, Serialize, Deserialize)]
struct Proposal {
    /// Random per core start: entries proposed by an earlier run of this
    /// master never match a proposal of this run.
    origin: u64,
    /// Sequence number within `origin`.
    seq: u64,
    /// The command.
    cmd: Command,
}

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

/// How long a proposal may take to commit before the caller is told.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// What to do with the outcome of a proposal once this core has applied it
/// (or once it cannot be: leadership lost, not committed in time). Runs on
/// the core, after the registry applied the entry and the core acted on its
/// effects.
type Then = Box<dyn FnOnce(&mut Core, Result<Effects, ApplyError>) + Send>;

/// A linearizable operator read waiting for its ReadIndex.
struct PendingRead {
    call: OperatorCall,
    reply: oneshot::Sender<Result<OperatorReply, Status>>,
    deadline: Instant,
}

/// A proposal of this core waiting to be applied.
struct Pending {
    then: Then,
    deadline: Instant,
}

/// The master core.
pub(crate) struct Core {
    config: MasterConfig,
    master_id: String,
    registry: Registry,
    raft: RaftHandle,
    applied_rx: mpsc::Receiver<Applied>,
    raft_status: watch::Receiver<RaftStatus>,
    transport: Arc<dyn Transport>,
    /// API addresses of the masters, by Raft id.
    members: BTreeMap<u64, String>,
    applied_index: u64,
    since_snapshot: u64,
    origin: u64,
    proposal_seq: u64,
    /// Proposals of this core not applied yet, by sequence number: the
    /// core goes on with other requests meanwhile, so many calls share a
    /// Raft round (and an fsync).
    pending: BTreeMap<u64, Pending>,
    /// Operator reads waiting for their ReadIndex, by request context.
    pending_reads: HashMap<Vec<u8>, PendingRead>,
    /// Frameworks with a subscription being committed, and how many.
    subscribing: HashMap<FrameworkId, usize>,
    /// The term this core leads in, once it has taken over (applied every
    /// earlier entry and rebuilt the allocator). `None` on followers.
    leading: Option<u64>,
    /// When this core took over as leader (wall clock, ms since the Unix
    /// epoch), for operators and for measuring how fast clients follow.
    leading_since_ms: u64,
    /// When a Raft message last arrived from each peer.
    heard: HeardFrom,
    allocator: Allocator,
    offers: OfferBook,
    frameworks: HashMap<FrameworkId, FrameworkConn>,
    /// The last streams of each framework that a newer subscription
    /// superseded (or that ended), so a call on one is told so, and a
    /// made-up stream id is told it is unknown.
    retired_streams: HashMap<FrameworkId, VecDeque<String>>,
    agents: HashMap<AgentId, AgentConn>,
    conn_agents: HashMap<u64, AgentId>,
    /// When each registered, reachable agent was last heard from.
    last_seen: HashMap<AgentId, Instant>,
    /// Until when the agents inherited at the takeover that have not
    /// registered with this leader yet are not timed out
    /// (`agent_reregister_timeout` after the takeover).
    reregister_until: Instant,
    /// The agents inherited at the takeover that have not registered with
    /// this leader yet.
    inherited: std::collections::HashSet<AgentId>,
    pending_kills: HashMap<AgentId, Vec<pb::KillTask>>,
    /// What frameworks wait to place, and why: soft state of the leader,
    /// like offers (not replicated; frameworks publish it again after they
    /// re-subscribe to a new leader).
    pending_work: PendingWork,
    epoch: Instant,
    allocation_dirty: bool,
    last_allocation: Instant,
    /// How long the last allocation cycle took (offers built and sent).
    last_allocation_cost: Duration,
    last_ping: Instant,
    last_heartbeat: Instant,
    fatal: Option<MasterError>,
}

/// What the core needs from Raft.
pub(crate) struct RaftParts {
    pub handle: RaftHandle,
    pub applied: mpsc::Receiver<Applied>,
    pub transport: Arc<dyn Transport>,
    /// The registry as of the storage's snapshot, and that snapshot's index.
    pub registry: Registry,
    pub snapshot_index: u64,
    /// When a Raft message last arrived from each peer (filled by the
    /// inbound transport service).
    pub heard: HeardFrom,
}

impl Core {
    pub(crate) fn new(
        config: MasterConfig,
        master_id: String,
        address: String,
        raft: RaftParts,
    ) -> Self {
        let now = Instant::now();
        let mut members: BTreeMap<u64, String> = config.peers.iter().cloned().collect();
        members.insert(config.id, address);
        let raft_status = raft.handle.status();
        let offers = OfferBook::new(&master_id, config.offer_timeout);
        let allocator = Allocator::new(allocator_config(&config));
        let mut core = Self {
            config,
            master_id,
            registry: raft.registry,
            raft: raft.handle,
            applied_rx: raft.applied,
            raft_status,
            transport: raft.transport,
            members,
            applied_index: raft.snapshot_index,
            since_snapshot: 0,
            origin: rand_u64(),
            proposal_seq: 0,
            pending: BTreeMap::new(),
            pending_reads: HashMap::new(),
            subscribing: HashMap::new(),
            leading: None,
            leading_since_ms: 0,
            heard: raft.heard,
            allocator,
            offers,
            frameworks: HashMap::new(),
            retired_streams: HashMap::new(),
            agents: HashMap::new(),
            conn_agents: HashMap::new(),
            last_seen: HashMap::new(),
            reregister_until: now,
            inherited: std::collections::HashSet::new(),
            pending_kills: HashMap::new(),
            pending_work: PendingWork::default(),
            epoch: now,
            allocation_dirty: true,
            last_allocation: now,
            last_allocation_cost: Duration::ZERO,
            last_ping: now,
            last_heartbeat: now,
            fatal: None,
        };
        // Members added after the bootstrap are known from the replicated
        // state (the snapshot it was loaded from).
        core.learn_members();
        core
    }

    /// Rebuilds the leader-only state from the registry: the allocator (with
    /// weights, quotas, every known framework inactive until it
    /// re-subscribes), an empty offer book with a fresh id prefix, and
    /// `agent_reregister_timeout` (at least a ping timeout) for every
    /// reachable agent to register with this leader.
    fn rebuild_leader_state(&mut self, term: u64) {
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
        let now = Instant::now();
        self.reregister_until = now + self.config.agent_reregister_timeout;
        self.last_seen = self
            .registry
            .agents()
            .filter(|a| a.unreachable_since_ms.is_none())
            .map(|a| (a.id.clone(), now))
            .collect();
        self.inherited = self.last_seen.keys().cloned().collect();
        self.pending_kills.clear();
        self.allocation_dirty = true;
    }

    /// Takes the members' addresses the registry replicates: a master that
    /// joined (or lost the log entries that added members) learns where
    /// every member listens. Addresses it has are kept unless the registry
    /// says otherwise.
    fn learn_members(&mut self) {
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
    fn step_down(&mut self) {
        if self.leading.take().is_some() {
            info!("no longer the leader; closing framework and agent streams");
        }
        self.fail_pending(&ApplyError::LeadershipLost);
        for (_, conn) in self.frameworks.drain() {
            let _ = conn.tx.try_send(Err(self_not_leader_status(None)));
        }
        self.retired_streams.clear();
        self.agents.clear();
        self.conn_agents.clear();
        self.last_seen.clear();
        self.inherited.clear();
        self.pending_kills.clear();
        self.pending_work.clear();
        self.offers = OfferBook::new(&self.master_id, self.config.offer_timeout);
        self.allocator = Allocator::new(allocator_config(&self.config));
    }

    /// Runs until `stop` fires, Raft stops, or a fatal error happens.
    pub(crate) async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut stop: oneshot::Receiver<()>,
    ) -> Result<(), MasterError> {
        let mut tick = tokio::time::interval(Duration::from_millis(50));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            if let Some(e) = self.fatal.take() {
                error!("master stopping: {e}");
                return Err(e);
            }
            tokio::select! {
                biased;
                _ = &mut stop => break,
                applied = self.applied_rx.recv() => match applied {
                    Some(a) => { self.apply(a, None); }
                    None => {
                        self.fatal = Some(MasterError::Server("the raft node stopped".into()));
                    }
                },
                changed = self.raft_status.changed() => match changed {
                    Ok(()) => self.on_raft_status().await,
                    Err(_) => {
                        self.fatal = Some(MasterError::Server("the raft node stopped".into()));
                    }
                },
                // The tick comes before requests: under a steady stream of
                // requests a biased select would otherwise never reach it,
                // and pings, heartbeats, expiries and allocation would stop.
                _ = tick.tick() => if self.leading.is_some() {
                    self.on_tick(requests.is_empty()).await
                },
                req = requests.recv() => match req {
                    Some(req) => self.handle(req).await,
                    None => break,
                },
            }
        }
        info!("master core stopped");
        Ok(())
    }

    fn raft_leader(&self) -> Option<u64> {
        let st = self.raft_status.borrow();
        (st.leader_id != 0).then_some(st.leader_id)
    }

    /// Takes over when Raft made this node leader; steps down when not.
    async fn on_raft_status(&mut self) {
        let (role, term) = {
            let st = self.raft_status.borrow();
            (st.role, st.term)
        };
        if role != StateRole::Leader {
            if self.leading.is_some() {
                self.step_down();
            }
            return;
        }
        if self.leading == Some(term) {
            return;
        }
        if self.leading.is_some() {
            self.step_down();
        }
        // Everything committed before this term is applied once an entry
        // of this term is: commit a no-op as a barrier.
        if let Err(e) = self.commit(Command::Noop).await {
            warn!("could not take over as leader: {e}");
            return;
        }
        self.rebuild_leader_state(term);
        self.leading = Some(term);
        self.leading_since_ms = unix_ms();
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
        let now_ms = unix_ms();
        for id in connected {
            self.propose_detached(Command::DisconnectFramework { id, at_ms: now_ms });
        }
    }

    fn now(&self) -> Time {
        Time::from_millis(u64::try_from(self.epoch.elapsed().as_millis()).unwrap_or(u64::MAX))
    }

    /// Encodes a command as this core's next proposal.
    fn encode(&mut self, cmd: Command) -> Result<(u64, Vec<u8>), ApplyError> {
        self.proposal_seq += 1;
        let seq = self.proposal_seq;
        let data = postcard::to_stdvec(&Proposal {
            origin: self.origin,
            seq,
            cmd,
        })
        .map_err(|e| ApplyError::Invalid(format!("cannot encode the command: {e}")))?;
        Ok((seq, data))
    }

    /// Proposes a command and waits until Raft committed it and this core
    /// applied it; returns what applying it did. The core handles nothing
    /// else meanwhile, so this is kept for the leader's takeover barrier;
    /// calls use [`Self::propose`].
    async fn commit(&mut self, cmd: Command) -> Result<Effects, ApplyError> {
        self.registry.check(&cmd)?;
        let (seq, data) = self.encode(cmd)?;
        self.raft.propose(data).await.map_err(|e| match e {
            ProposeError::NotLeader { .. } => ApplyError::NotLeader,
            other => ApplyError::Unavailable(other.to_string()),
        })?;
        let deadline = tokio::time::Instant::now() + COMMIT_TIMEOUT;
        loop {
            tokio::select! {
                applied = self.applied_rx.recv() => {
                    let Some(applied) = applied else {
                        self.fatal = Some(MasterError::Server("the raft node stopped".into()));
                        return Err(ApplyError::NotLeader);
                    };
                    if let Some(result) = self.apply(applied, Some(seq)) {
                        return result;
                    }
                }
                changed = self.raft_status.changed() => {
                    if changed.is_err() || self.raft_status.borrow().role != StateRole::Leader {
                        // This wait consumed the change: leave it for the
                        // run loop, which must still step down.
                        self.raft_status.mark_changed();
                        return Err(ApplyError::NotLeader);
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(ApplyError::Unavailable("the command was not committed in time; it may still be committed (reconcile before retrying)".into()));
                }
            }
        }
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
    fn propose(
        &mut self,
        cmd: Command,
        then: impl FnOnce(&mut Core, Result<Effects, ApplyError>) + Send + 'static,
    ) {
        if let Err(e) = self.registry.check(&cmd) {
            then(self, Err(e));
            return;
        }
        self.propose_checked(cmd, then);
    }

    /// [`Self::propose`] for a command the caller has just checked.
    fn propose_checked(
        &mut self,
        cmd: Command,
        then: impl FnOnce(&mut Core, Result<Effects, ApplyError>) + Send + 'static,
    ) {
        let (seq, data) = match self.encode(cmd) {
            Ok(v) => v,
            Err(e) => return then(self, Err(e)),
        };
        if !self.raft.propose_detached(data) {
            return then(
                self,
                Err(ApplyError::Unavailable(
                    "the raft proposal queue is full; try again".into(),
                )),
            );
        }
        self.pending.insert(
            seq,
            Pending {
                then: Box::new(then),
                deadline: Instant::now() + COMMIT_TIMEOUT,
            },
        );
    }

    /// Checks and proposes a command whose outcome nobody waits for; what
    /// applying it does happens in `apply`.
    fn propose_detached(&mut self, cmd: Command) {
        self.propose(cmd, |_, result| {
            if let Err(e) = result {
                debug!("detached command not applied: {e}");
            }
        });
    }

    /// Ends every pending proposal with `err` (leadership lost).
    fn fail_pending(&mut self, err: &ApplyError) {
        for (_, p) in std::mem::take(&mut self.pending) {
            (p.then)(self, Err(err.clone()));
        }
        // Raft drops the reads of a leader that steps down.
        let redirect = self.not_leader();
        for (_, r) in self.pending_reads.drain() {
            let _ = r.reply.send(Err(redirect.clone()));
        }
    }

    /// Ends the pending proposals that are past their deadline. If one
    /// still commits later it is applied like any entry, with nobody
    /// waiting for it.
    fn expire_pending(&mut self, now: Instant) {
        let expired: Vec<u64> = self
            .pending
            .iter()
            .filter(|(_, p)| p.deadline <= now)
            .map(|(seq, _)| *seq)
            .collect();
        for seq in expired {
            if let Some(p) = self.pending.remove(&seq) {
                warn!(seq, "a proposal was not committed in time");
                (p.then)(
                    self,
                    Err(ApplyError::Unavailable(
                        "the command was not committed in time; it may still be committed (reconcile before retrying)".into(),
                    )),
                );
            }
        }
        let expired: Vec<Vec<u8>> = self
            .pending_reads
            .iter()
            .filter(|(_, r)| r.deadline <= now)
            .map(|(ctx, _)| ctx.clone())
            .collect();
        for ctx in expired {
            if let Some(r) = self.pending_reads.remove(&ctx) {
                let _ = r
                    .reply
                    .send(Err(Status::unavailable("read index timed out")));
            }
        }
    }

    /// Starts a linearizable operator read (Raft's ReadIndex): it is
    /// answered from the registry once this leader has applied everything
    /// committed when the read began. The core goes on meanwhile.
    async fn start_read(
        &mut self,
        call: OperatorCall,
        reply: oneshot::Sender<Result<OperatorReply, Status>>,
    ) {
        let ctx = rand_u64().to_be_bytes().to_vec();
        if self.raft.read_index(ctx.clone()).await.is_err() {
            let _ = reply.send(Err(self.not_leader()));
            return;
        }
        self.pending_reads.insert(
            ctx,
            PendingRead {
                call,
                reply,
                deadline: Instant::now() + COMMIT_TIMEOUT,
            },
        );
    }

    /// Applies one item from Raft. Returns the result when it is the entry
    /// of the proposal `waiting` for.
    fn apply(
        &mut self,
        applied: Applied,
        waiting: Option<u64>,
    ) -> Option<Result<Effects, ApplyError>> {
        match applied {
            Applied::Entry { index, data, .. } => {
                self.applied_index = index;
                self.since_snapshot += 1;
                let proposal: Proposal = match postcard::from_bytes(&data) {
                    Ok(p) => p,
                    Err(e) => {
                        self.fatal = Some(MasterError::Corrupt(format!("log entry {index}: {e}")));
                        return None;
                    }
                };
                let result = self.registry.apply(&proposal.cmd);
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
                let mine = ours && Some(proposal.seq) == waiting;
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
                let result = if mine {
                    Some(result)
                } else {
                    if ours && let Some(p) = self.pending.remove(&proposal.seq) {
                        (p.then)(self, result);
                    }
                    None
                };
                self.maybe_snapshot();
                result
            }
            Applied::Snapshot { index, data } => {
                match Registry::from_snapshot(&data) {
                    Ok(mut registry) => {
                        registry.set_max_completed(self.config.max_completed_tasks);
                        registry.rebuild_indexes();
                        self.registry = registry;
                        self.applied_index = index;
                        self.since_snapshot = 0;
                        info!(index, "registry restored from a snapshot");
                        self.learn_members();
                        if let Some(term) = self.leading {
                            self.rebuild_leader_state(term);
                        }
                    }
                    Err(e) => {
                        self.fatal =
                            Some(MasterError::Corrupt(format!("snapshot at {index}: {e}")));
                    }
                }
                None
            }
            Applied::ConfChanged {
                index,
                voters,
                learners,
                context,
            } => {
                self.applied_index = index;
                if let Ok((id, address)) = postcard::from_bytes::<(u64, String)>(&context)
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
                None
            }
            Applied::ReadReady { ctx, .. } => {
                if let Some(r) = self.pending_reads.remove(&ctx) {
                    let _ = r.reply.send(self.read(r.call));
                }
                None
            }
            Applied::SnapshotWanted { index } => {
                // A peer needs a snapshot newer than the stored one (it fell
                // behind, or joined after it was taken).
                debug!(index, "snapshot wanted by a peer");
                self.snapshot_now();
                None
            }
        }
    }

    fn maybe_snapshot(&mut self) {
        if self.since_snapshot >= self.config.snapshot_every {
            self.snapshot_now();
        }
    }

    /// Hands Raft a snapshot of the registry as of the applied index. The
    /// call is spawned: awaiting it here could deadlock with the node
    /// waiting for room in the applied channel.
    fn snapshot_now(&mut self) {
        self.since_snapshot = 0;
        match self.registry.to_snapshot() {
            Ok(data) => {
                let raft = self.raft.clone();
                let index = self.applied_index;
                tokio::spawn(async move {
                    if let Err(e) = raft.compact(index, data).await {
                        warn!(index, "snapshot failed (the log keeps everything): {e}");
                    }
                });
            }
            Err(e) => warn!("cannot encode a registry snapshot: {e}"),
        }
    }

    /// Maps a commit error to a gRPC status: "not the leader" becomes a
    /// redirect (also when leadership was lost with the command in flight,
    /// saying its outcome is unknown), an unknown framework NOT_FOUND (it
    /// was removed meanwhile), anything else `make(message)`.
    fn status_of(&self, e: ApplyError, make: impl FnOnce(String) -> Status) -> Status {
        match e {
            ApplyError::NotLeader => self.not_leader(),
            ApplyError::LeadershipLost => {
                let redirect = self.not_leader();
                Status::with_metadata(
                    tonic::Code::Unavailable,
                    format!("{e}; {}", redirect.message()),
                    redirect.metadata().clone(),
                )
            }
            ApplyError::Unavailable(m) => Status::unavailable(m),
            e @ ApplyError::UnknownFramework(_) => Status::not_found(e.to_string()),
            e => make(e.to_string()),
        }
    }

    /// The error a follower answers with, naming the leader when known
    /// (metadata `berth-leader`), which the SDK, the agent and the CLI
    /// follow.
    fn not_leader(&self) -> Status {
        self_not_leader_status(
            self.raft_leader()
                .and_then(|id| self.members.get(&id).cloned()),
        )
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

    async fn handle(&mut self, req: Request) {
        if self.leading.is_none() {
            self.handle_as_follower(req);
            return;
        }
        match req {
            Request::Subscribe { info, reply } => self.subscribe(info, reply),
            Request::Call { call, reply } => self.call(call, reply),
            Request::FrameworkStreamClosed {
                framework,
                stream_id,
            } => self.framework_closed(&framework, &stream_id),
            Request::AgentRegister {
                conn,
                register,
                tx,
                reply,
            } => self.register_agent(conn, register, tx, reply),
            Request::AgentMessage { conn, message } => self.agent_message(conn, message).await,
            Request::AgentClosed { conn } => self.agent_closed(conn),
            Request::Operator {
                call,
                stale_ok,
                reply,
            } => {
                // GetLeader and ListMembers tell this master's own view and
                // need no barrier (a leader cut off from the others would
                // otherwise answer them only when its read times out).
                let own_view = matches!(call, OperatorCall::Leader | OperatorCall::Members);
                if !call.is_read() {
                    return self.operator(call, reply).await;
                }
                if stale_ok || own_view {
                    let _ = reply.send(self.read(call));
                } else {
                    self.start_read(call, reply).await;
                }
            }
        }
    }

    /// A follower (or a leader still taking over) redirects every call to
    /// the leader; operator reads marked stale-ok are served from this
    /// master's registry.
    fn handle_as_follower(&mut self, req: Request) {
        let redirect = self.not_leader();
        match req {
            Request::Subscribe { reply, .. } => {
                let _ = reply.send(Err(redirect));
            }
            Request::Call { reply, .. } => {
                let _ = reply.send(Err(redirect));
            }
            Request::AgentRegister { reply, .. } => {
                let _ = reply.send(Err(redirect));
            }
            Request::Operator {
                call,
                stale_ok,
                reply,
            } => {
                let answer = match call {
                    OperatorCall::Leader => Ok(OperatorReply::Leader(self.leader())),
                    OperatorCall::Members => Ok(OperatorReply::Members(self.members_view())),
                    // Only the leader holds pending work, even for stale reads.
                    OperatorCall::Pending(_) => Err(redirect),
                    call if stale_ok && call.is_read() => self.read(call),
                    _ => Err(redirect),
                };
                let _ = reply.send(answer);
            }
            Request::FrameworkStreamClosed { .. }
            | Request::AgentMessage { .. }
            | Request::AgentClosed { .. } => {}
        }
    }

    // ----- frameworks -------------------------------------------------------

    /// Records a subscription, then (once committed) opens its event stream.
    fn subscribe(
        &mut self,
        info: pb::FrameworkInfo,
        reply: oneshot::Sender<Result<Subscription, Status>>,
    ) {
        let record = match self.validate_framework(&info) {
            Ok(r) => r,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        let known = self.registry.framework(&record.id).is_some();
        *self.subscribing.entry(record.id.clone()).or_default() += 1;
        self.propose(
            Command::SubscribeFramework {
                record: record.clone(),
            },
            move |core, result| {
                if let Some(n) = core.subscribing.get_mut(&record.id) {
                    *n -= 1;
                    if *n == 0 {
                        core.subscribing.remove(&record.id);
                    }
                }
                let result = result
                    .map_err(|e| core.status_of(e, Status::internal))
                    .and_then(|_| core.subscribed(record, known));
                let _ = reply.send(result);
            },
        );
    }

    /// A subscription is committed: supersede an older stream, activate
    /// the framework in the allocator and open the new stream.
    fn subscribed(&mut self, record: FrameworkRecord, known: bool) -> Result<Subscription, Status> {
        let id = record.id.clone();
        // A newer subscription supersedes the old stream; offers made on the
        // old stream are void.
        if let Some(old) = self.frameworks.remove(&id) {
            let _ = old.tx.try_send(Ok(event(pb::event::Event::Error(pb::Error {
                message: "superseded by a newer subscription".into(),
            }))));
            self.retire_stream(&id, old.stream_id);
        }
        self.rescind_framework_offers(&id);
        if known {
            if let Err(e) = self.allocator.update_framework(&id, record.roles.clone()) {
                warn!(framework = %id, "allocator update: {e}");
                self.allocator
                    .add_framework(id.clone(), record.roles.clone(), true);
            }
            self.allocator.activate_framework(&id);
        } else {
            self.allocator
                .add_framework(id.clone(), record.roles.clone(), true);
        }

        let stream_id = uuid::Uuid::new_v4().to_string();
        let (tx, rx) = mpsc::channel(FRAMEWORK_QUEUE);
        let subscribed = event(pb::event::Event::Subscribed(pb::Subscribed {
            framework_id: id.to_string(),
            stream_id: stream_id.clone(),
            heartbeat_interval_seconds: self.config.heartbeat_interval.as_secs_f64(),
            master_id: self.master_id.clone(),
        }));
        tx.try_send(Ok(subscribed))
            .map_err(|_| Status::internal("new stream closed"))?;
        self.frameworks.insert(
            id.clone(),
            FrameworkConn {
                stream_id: stream_id.clone(),
                tx,
                connected_at_ms: unix_ms(),
            },
        );
        info!(framework = %id, name = %record.name, resubscribed = known, "framework subscribed");
        self.allocation_dirty = true;
        Ok(Subscription {
            framework: id,
            stream_id,
            events: rx,
        })
    }

    fn validate_framework(&self, info: &pb::FrameworkInfo) -> Result<FrameworkRecord, Status> {
        if info.name.trim().is_empty() {
            return Err(Status::invalid_argument("framework name must not be empty"));
        }
        if info.name.len() > MAX_NAME || info.hostname.len() > MAX_NAME {
            return Err(Status::invalid_argument(format!(
                "framework name and hostname must be at most {MAX_NAME} bytes"
            )));
        }
        let mut roles = BTreeSet::new();
        for r in &info.roles {
            roles
                .insert(Role::new(r.clone()).map_err(|e| Status::invalid_argument(e.to_string()))?);
        }
        if roles.is_empty() {
            roles.insert(Role::default());
        }
        let failover = seconds("failover_timeout_seconds", info.failover_timeout_seconds)?;
        let id = if info.id.is_empty() {
            FrameworkId::new(format!("fw-{}", uuid::Uuid::new_v4().simple()))
                .map_err(|e| Status::internal(e.to_string()))?
        } else {
            let id = FrameworkId::new(info.id.clone())
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            if self.registry.framework(&id).is_none() {
                return Err(Status::not_found(format!(
                    "framework {} is not registered (it was removed or never existed)",
                    quoted(&info.id)
                )));
            }
            id
        };
        Ok(FrameworkRecord {
            id,
            name: info.name.clone(),
            roles,
            failover_timeout_ms: u64::try_from(failover.as_millis()).unwrap_or(u64::MAX),
            partition_aware: info.partition_aware,
            hostname: info.hostname.clone(),
            registered_at_ms: unix_ms(),
            disconnected_at_ms: None,
        })
    }

    fn framework_closed(&mut self, id: &FrameworkId, stream_id: &str) {
        let current = self
            .frameworks
            .get(id)
            .is_some_and(|c| c.stream_id == stream_id);
        if !current {
            return;
        }
        self.frameworks.remove(id);
        self.retire_stream(id, stream_id.to_string());
        if self.subscribing.contains_key(id) {
            // A newer subscription is being committed; it takes over.
            return;
        }
        self.disconnect_framework(id);
    }

    fn disconnect_framework(&mut self, id: &FrameworkId) {
        self.frameworks.remove(id);
        self.allocator.deactivate_framework(id);
        self.rescind_framework_offers(id);
        if self.registry.framework(id).is_some() {
            self.propose_detached(Command::DisconnectFramework {
                id: id.clone(),
                at_ms: unix_ms(),
            });
        }
        info!(framework = %id, "framework disconnected; failover timeout running");
    }

    fn rescind_framework_offers(&mut self, id: &FrameworkId) {
        let now = self.now();
        for offer in self.offers.remove_framework(id) {
            self.allocator.recover(
                &offer.agent,
                &offer.framework,
                &offer.role,
                &offer.resources,
                None,
                now,
            );
            self.allocation_dirty = true;
        }
    }

    /// Removes a framework for good; `then` runs with the outcome once
    /// the removal is committed. On error nothing changed.
    fn remove_framework(
        &mut self,
        id: &FrameworkId,
        reason: &str,
        then: impl FnOnce(&mut Core, Result<(), ApplyError>) + Send + 'static,
    ) {
        let fw = id.clone();
        let why = reason.to_string();
        self.propose(
            Command::RemoveFramework {
                id: id.clone(),
                at_ms: unix_ms(),
                reason: reason.to_string(),
            },
            move |core, result| match result {
                Ok(effects) => {
                    core.framework_removed(&fw, &why, &effects);
                    then(core, Ok(()));
                }
                Err(e) => {
                    warn!(framework = %fw, "remove framework: {e}");
                    then(core, Err(e));
                }
            },
        );
    }

    /// A framework's removal is committed: shut it down on its agents and
    /// drop its offers, allocator entry, queued kills and stream.
    fn framework_removed(&mut self, id: &FrameworkId, reason: &str, effects: &Effects) {
        let agents: BTreeSet<AgentId> = effects.freed.iter().map(|(a, ..)| a.clone()).collect();
        for agent in agents {
            self.send_agent(
                &agent,
                pb::master_message::Message::ShutdownFramework(pb::ShutdownFramework {
                    framework_id: id.to_string(),
                }),
            );
        }
        for offer in self.offers.remove_framework(id) {
            debug!(offer = %offer.id, "offer dropped with its framework");
        }
        self.allocator.remove_framework(id);
        // Kills queued for disconnected agents: ShutdownFramework (or the
        // kill of unknown tasks at re-registration) covers them now.
        for kills in self.pending_kills.values_mut() {
            kills.retain(|k| k.framework_id != id.as_str());
        }
        self.pending_kills.retain(|_, kills| !kills.is_empty());
        self.retired_streams.remove(id);
        if let Some(conn) = self.frameworks.remove(id) {
            let _ = conn
                .tx
                .try_send(Ok(event(pb::event::Event::Error(pb::Error {
                    message: format!("framework removed: {reason}"),
                }))));
        }
        self.allocation_dirty = true;
        info!(framework = %id, reason, "framework removed");
    }

    /// Remembers a framework's stream that ended or was superseded (the
    /// last few), so that a late call on it is answered "superseded", not
    /// "unknown".
    fn retire_stream(&mut self, id: &FrameworkId, stream_id: String) {
        const KEPT: usize = 8;
        let retired = self.retired_streams.entry(id.clone()).or_default();
        if retired.len() == KEPT {
            retired.pop_front();
        }
        retired.push_back(stream_id);
    }

    /// Checks the call's header: the framework is registered (NOT_FOUND
    /// otherwise) and subscribed on this stream (FAILED_PRECONDITION
    /// otherwise, saying whether the stream is an older one of the
    /// framework or one this master never opened for it).
    fn caller(&self, header: Option<&pb::CallHeader>) -> Result<FrameworkId, Status> {
        let header = header.ok_or_else(|| Status::invalid_argument("call header is missing"))?;
        let id = FrameworkId::new(header.framework_id.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        if self.registry.framework(&id).is_none() {
            return Err(Status::not_found(format!(
                "framework {} is not registered (torn down, removed after its failover \
                 timeout, or never registered)",
                quoted(id.as_str())
            )));
        }
        let stream = &header.stream_id;
        match self.frameworks.get(&id) {
            None => Err(Status::failed_precondition(format!(
                "framework {} is not subscribed to this master (its stream ended); \
                 subscribe again with its id",
                quoted(id.as_str())
            ))),
            Some(conn) if conn.stream_id == *stream => Ok(id),
            Some(_)
                if self
                    .retired_streams
                    .get(&id)
                    .is_some_and(|r| r.contains(stream)) =>
            {
                Err(Status::failed_precondition(format!(
                    "stream {} was superseded by a newer subscription of framework {}",
                    quoted(stream),
                    quoted(id.as_str())
                )))
            }
            Some(_) => Err(Status::failed_precondition(format!(
                "unknown stream id {} for framework {}: this master did not open it \
                 (use the stream_id of the framework's SUBSCRIBED event)",
                quoted(stream),
                quoted(id.as_str())
            ))),
        }
    }

    /// Handles a scheduler call; calls that change the registry are
    /// answered once their command is committed.
    fn call(&mut self, call: SchedulerCall, reply: oneshot::Sender<Result<CallReply, Status>>) {
        match call {
            SchedulerCall::Accept(req) => self.accept(req, reply),
            SchedulerCall::Teardown(req) => match self.caller(req.header.as_ref()) {
                Err(e) => {
                    let _ = reply.send(Err(e));
                }
                // Answered success only once the removal is durable.
                Ok(fw) => self.remove_framework(&fw, "FRAMEWORK_TEARDOWN", move |core, result| {
                    let _ = reply.send(
                        result
                            .map(|()| CallReply::Empty)
                            .map_err(|e| core.status_of(e, Status::internal)),
                    );
                }),
            },
            other => {
                let _ = reply.send(self.call_now(other));
            }
        }
    }

    /// Handles a scheduler call that changes nothing durable.
    fn call_now(&mut self, call: SchedulerCall) -> Result<CallReply, Status> {
        match call {
            SchedulerCall::Accept(_) | SchedulerCall::Teardown(_) => {
                Err(Status::internal("accept and teardown are committed calls"))
            }
            SchedulerCall::UpdatePending(req) => {
                let fw = self.caller(req.header.as_ref())?;
                let tasks = pending::validate(req.tasks)
                    .map_err(|e| Status::invalid_argument(format!("update pending: {e}")))?;
                debug!(framework = %fw, tasks = tasks.len(), "pending work published");
                self.pending_work.replace(fw, tasks, unix_ms());
                Ok(CallReply::Empty)
            }
            SchedulerCall::Decline(req) => {
                let fw = self.caller(req.header.as_ref())?;
                let refuse = self.refuse(req.filters.as_ref())?;
                let ids = offer_ids(&req.offer_ids)?;
                // Unlike an accept, a decline may return offers of several
                // agents: each is checked, then all are taken.
                if ids.is_empty() {
                    return Err(Status::invalid_argument(OfferError::Empty.to_string()));
                }
                let mut seen = BTreeSet::new();
                for id in &ids {
                    if !seen.insert(id) {
                        return Err(Status::invalid_argument(
                            OfferError::Duplicate(id.clone()).to_string(),
                        ));
                    }
                    self.offers
                        .validate(&fw, std::slice::from_ref(id))
                        .map_err(|e| Status::invalid_argument(e.to_string()))?;
                }
                let taken: Vec<_> = ids.iter().filter_map(|id| self.offers.remove(id)).collect();
                let now = self.now();
                for offer in taken {
                    self.allocator.recover(
                        &offer.agent,
                        &fw,
                        &offer.role,
                        &offer.resources,
                        Some(refuse),
                        now,
                    );
                }
                self.allocation_dirty = true;
                Ok(CallReply::Empty)
            }
            SchedulerCall::Revive(req) => {
                let fw = self.caller(req.header.as_ref())?;
                let roles = self.framework_roles(&fw, &req.roles)?;
                self.allocator.revive(&fw, roles.as_ref());
                self.allocation_dirty = true;
                Ok(CallReply::Empty)
            }
            SchedulerCall::Suppress(req) => {
                let fw = self.caller(req.header.as_ref())?;
                let roles = self.framework_roles(&fw, &req.roles)?;
                self.allocator.suppress(&fw, roles.as_ref());
                Ok(CallReply::Empty)
            }
            SchedulerCall::Kill(req) => self.kill(req).map(|()| CallReply::Empty),
            SchedulerCall::Acknowledge(req) => {
                let fw = self.caller(req.header.as_ref())?;
                let agent = AgentId::new(req.agent_id.clone())
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                let task = TaskId::new(req.task_id.clone())
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                if req.uuid.len() != 16 {
                    return Err(Status::invalid_argument(format!(
                        "uuid must be 16 bytes, got {}",
                        req.uuid.len()
                    )));
                }
                self.send_agent(
                    &agent,
                    pb::master_message::Message::Ack(pb::StatusUpdateAck {
                        framework_id: fw.to_string(),
                        task_id: task.to_string(),
                        uuid: req.uuid,
                    }),
                );
                Ok(CallReply::Empty)
            }
            SchedulerCall::Reconcile(req) => self.reconcile(req).map(|()| CallReply::Empty),
        }
    }

    fn refuse(&self, filters: Option<&pb::Filters>) -> Result<Duration, Status> {
        match filters.and_then(|f| f.refuse_seconds) {
            None => Ok(self.config.default_refuse),
            Some(s) => seconds("refuse_seconds", s),
        }
    }

    fn framework_roles(
        &self,
        fw: &FrameworkId,
        roles: &[String],
    ) -> Result<Option<BTreeSet<Role>>, Status> {
        if roles.is_empty() {
            return Ok(None);
        }
        let subscribed = self
            .registry
            .framework(fw)
            .map(|f| f.roles.clone())
            .unwrap_or_default();
        let mut out = BTreeSet::new();
        for r in roles {
            let role = Role::new(r.clone()).map_err(|e| Status::invalid_argument(e.to_string()))?;
            if !subscribed.contains(&role) {
                return Err(Status::invalid_argument(format!(
                    "framework is not subscribed to role {}",
                    quoted(r)
                )));
            }
            out.insert(role);
        }
        Ok(Some(out))
    }

    /// Accepts offers: validates the launch, takes the offers, proposes the
    /// launch and, once it is committed, sends the tasks to the agent and
    /// answers.
    fn accept(
        &mut self,
        req: pb::AcceptRequest,
        reply: oneshot::Sender<Result<CallReply, Status>>,
    ) {
        match self.prepare_accept(req) {
            Err(e) => {
                let _ = reply.send(Err(e));
            }
            Ok(None) => {
                let _ = reply.send(Ok(CallReply::Accept(pb::AcceptResponse::default())));
            }
            Ok(Some((cmd, used))) => {
                let Command::LaunchTasks {
                    framework,
                    agent,
                    tasks,
                } = &cmd
                else {
                    let _ = reply.send(Err(Status::internal("accept prepared a non-launch")));
                    return;
                };
                let (fw, agent, records) = (framework.clone(), agent.clone(), tasks.clone());
                let role = records.first().map(|r| r.role.clone()).unwrap_or_default();
                self.propose_checked(cmd, move |core, result| {
                    let answer = match result {
                        Ok(_) => Ok(core.launched(&fw, &agent, &records)),
                        Err(e) => {
                            // The tasks never exist: their share of the
                            // offers goes back to the allocator.
                            let now = core.now();
                            core.allocator.recover(&agent, &fw, &role, &used, None, now);
                            core.allocation_dirty = true;
                            Err(core.status_of(e, Status::failed_precondition))
                        }
                    };
                    let _ = reply.send(answer.map(CallReply::Accept));
                });
            }
        }
    }

    /// A launch is committed: send its tasks to the agent.
    fn launched(
        &mut self,
        fw: &FrameworkId,
        agent: &AgentId,
        records: &[TaskRecord],
    ) -> pb::AcceptResponse {
        let framework_info = self.registry.framework(fw).map(FrameworkRecord::to_info);
        for r in records {
            self.send_agent(
                agent,
                pb::master_message::Message::RunTask(pb::RunTask {
                    framework: framework_info.clone(),
                    task: Some(r.task_info()),
                }),
            );
        }
        debug!(framework = %fw, agent = %agent, tasks = records.len(), "accepted");
        pb::AcceptResponse {
            launched_task_ids: records.iter().map(|r| r.id.to_string()).collect(),
        }
    }

    /// Validates an accept and, when it is valid, takes its offers: their
    /// unused part goes back to the allocator with the refuse filter.
    /// Returns the launch to propose and what its tasks use, or `None` when
    /// it launches nothing. A refused accept changes nothing, offers
    /// included.
    fn prepare_accept(
        &mut self,
        req: pb::AcceptRequest,
    ) -> Result<Option<(Command, Allocated)>, Status> {
        let fw = self.caller(req.header.as_ref())?;
        let refuse = self.refuse(req.filters.as_ref())?;
        let ids = offer_ids(&req.offer_ids)?;
        let offers = self
            .offers
            .validate(&fw, &ids)
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let agent = offers[0].agent.clone();
        let role = offers[0].role.clone();
        if offers.iter().any(|o| o.role != role) {
            return Err(Status::invalid_argument(
                "accepted offers must all be for one role",
            ));
        }
        let mut pool = Allocated::default();
        for o in &offers {
            pool = pool
                .checked_add(&o.resources)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        }

        let mut infos = Vec::new();
        for op in &req.operations {
            match &op.operation {
                Some(pb::operation::Operation::Launch(launch)) => {
                    infos.extend(launch.tasks.iter().cloned())
                }
                None => return Err(Status::invalid_argument("operation is empty")),
            }
        }
        let now_ms = unix_ms();
        let mut seen = BTreeSet::new();
        let mut records = Vec::with_capacity(infos.len());
        let mut used = Allocated::default();
        for mut info in infos {
            let id = validate_task(&info)?;
            if !seen.insert(id.clone()) {
                return Err(Status::invalid_argument(format!(
                    "task id {} appears twice",
                    quoted(&info.task_id)
                )));
            }
            if self.registry.task(&fw, &id).is_some() {
                return Err(Status::invalid_argument(format!(
                    "task {} already exists in this framework",
                    quoted(&info.task_id)
                )));
            }
            if !info.agent_id.is_empty() && info.agent_id != agent.as_str() {
                return Err(Status::invalid_argument(format!(
                    "task {} names agent {} but the offers are on agent {}",
                    quoted(&info.task_id),
                    quoted(&info.agent_id),
                    quoted(agent.as_str())
                )));
            }
            let want = resources_from_proto_opt(info.resources.as_ref()).map_err(|e| {
                Status::invalid_argument(format!("task {}: {e}", quoted(&info.task_id)))
            })?;
            berth_proto::minimums::check_task_minimums(
                &info.task_id,
                &want,
                info.container.is_some(),
            )
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
            let before = pool.total();
            let Some(allocated) = pool.take(&want) else {
                return Err(Status::invalid_argument(format!(
                    "tasks need more than the offers hold: task {} needs {want}, {before} left",
                    quoted(&info.task_id)
                )));
            };
            used = used
                .checked_add(&allocated)
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
            info.agent_id = agent.to_string();
            if info.name.is_empty() {
                info.name = info.task_id.clone();
            }
            records.push(TaskRecord {
                framework: fw.clone(),
                id,
                agent: agent.clone(),
                role: role.clone(),
                allocated,
                info: info.encode_to_vec(),
                state: pb::TaskState::TaskStaging as i32,
                status: Vec::new(),
                launched_at_ms: now_ms,
                running_at_ms: None,
                ended_at_ms: None,
                reported: false,
            });
        }

        // Valid. A launch the registry refuses leaves the offers, the
        // allocator and the registry as they were.
        let cmd = Command::LaunchTasks {
            framework: fw.clone(),
            agent: agent.clone(),
            tasks: records,
        };
        let launches = matches!(&cmd, Command::LaunchTasks { tasks, .. } if !tasks.is_empty());
        if launches {
            self.registry
                .check(&cmd)
                .map_err(|e| self.status_of(e, Status::failed_precondition))?;
        }
        // Use the offers: their resources stay allocated to the tasks; the
        // rest goes back now.
        self.offers
            .take(&fw, &ids)
            .map_err(|e| Status::internal(e.to_string()))?;
        let now = self.now();
        if !pool.is_empty() {
            self.allocator
                .recover(&agent, &fw, &role, &pool, Some(refuse), now);
        }
        self.allocation_dirty = true;
        Ok(launches.then_some((cmd, used)))
    }

    fn kill(&mut self, req: pb::KillRequest) -> Result<(), Status> {
        let fw = self.caller(req.header.as_ref())?;
        let task = TaskId::new(req.task_id.clone())
            .map_err(|e| Status::invalid_argument(e.to_string()))?;
        let grace = match req.grace_period_seconds {
            Some(s) => seconds("grace_period_seconds", s)?.as_secs_f64(),
            None => 0.0,
        };
        let Some(record) = self.registry.task(&fw, &task) else {
            if self.registry.completed_task(&fw, &task).is_some() {
                return Ok(());
            }
            return Err(Status::not_found(format!(
                "task {} is not a task of framework {}",
                quoted(&req.task_id),
                quoted(fw.as_str())
            )));
        };
        let kill = pb::KillTask {
            framework_id: fw.to_string(),
            task_id: task.to_string(),
            grace_period_seconds: grace,
        };
        let agent = record.agent.clone();
        if self.agents.contains_key(&agent) {
            self.send_agent(&agent, pb::master_message::Message::KillTask(kill));
        } else {
            // At most one queued kill per task: repeated kills while the
            // agent is away must not grow the queue without bound.
            let queued = self.pending_kills.entry(agent).or_default();
            queued.retain(|k| k.framework_id != kill.framework_id || k.task_id != kill.task_id);
            queued.push(kill);
        }
        Ok(())
    }

    fn reconcile(&mut self, req: pb::ReconcileRequest) -> Result<(), Status> {
        let fw = self.caller(req.header.as_ref())?;
        let partition_aware = self
            .registry
            .framework(&fw)
            .is_some_and(|f| f.partition_aware);
        let mut statuses = Vec::new();
        if req.tasks.is_empty() {
            statuses.extend(
                self.registry
                    .tasks_of(&fw)
                    .map(|t| reconciled(t.last_status())),
            );
        } else {
            for t in &req.tasks {
                let id = TaskId::new(t.task_id.clone())
                    .map_err(|e| Status::invalid_argument(e.to_string()))?;
                let known = self
                    .registry
                    .task(&fw, &id)
                    .or_else(|| self.registry.completed_task(&fw, &id));
                statuses.push(match known {
                    Some(record) => reconciled(record.last_status()),
                    None => pb::TaskStatus {
                        task_id: t.task_id.clone(),
                        state: if partition_aware {
                            pb::TaskState::TaskUnknown as i32
                        } else {
                            pb::TaskState::TaskLost as i32
                        },
                        message: "the master does not know this task".into(),
                        reason: pb::TaskReason::Reconciliation as i32,
                        source: pb::StatusSource::Master as i32,
                        agent_id: t.agent_id.clone(),
                        timestamp: ms_to_secs(unix_ms()),
                        ..Default::default()
                    },
                });
            }
        }
        for s in statuses {
            self.send_event(&fw, pb::event::Event::Update(s));
        }
        Ok(())
    }

    fn send_event(&mut self, framework: &FrameworkId, ev: pb::event::Event) {
        let Some(conn) = self.frameworks.get(framework) else {
            return;
        };
        if let Err(e) = conn.tx.try_send(Ok(event(ev))) {
            warn!(framework = %framework, "event stream {}; dropping the connection", match e {
                mpsc::error::TrySendError::Full(_) => "is full",
                mpsc::error::TrySendError::Closed(_) => "is closed",
            });
            // Dropping the sender ends the stream; the framework re-subscribes.
            if let Some(conn) = self.frameworks.remove(framework) {
                self.retire_stream(framework, conn.stream_id);
            }
            self.allocator.deactivate_framework(framework);
            self.rescind_framework_offers(framework);
            // Its failover clock starts at the next tick.
        }
    }

    // ----- agents -----------------------------------------------------------

    /// Registers an agent: the registration is committed first, then the
    /// connection is taken over (see [`Self::agent_registered`]).
    fn register_agent(
        &mut self,
        conn: u64,
        reg: pb::Register,
        tx: AgentTx,
        reply: oneshot::Sender<Result<(), Status>>,
    ) {
        let (id, new, cmd) = match self.prepare_registration(reg) {
            Ok(v) => v,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        if tx.is_closed() {
            let _ = reply.send(Err(Status::unavailable(
                "agent stream closed during registration",
            )));
            return;
        }
        // Record the registration first: a refused one (its running tasks
        // do not fit the resources it now reports) changes nothing, not
        // even an older connection of the same agent. A new agent's tasks
        // (it lost its id) are all unknown and get killed.
        self.propose(cmd, move |core, result| {
            let answer = match result {
                Ok(effects) => core.agent_registered(conn, id, new, tx, &effects),
                Err(e) => Err(match e {
                    ApplyError::Overcommit { .. } | ApplyError::Invalid(_) => {
                        Status::failed_precondition(format!("register: {e}"))
                    }
                    e @ (ApplyError::NotLeader
                    | ApplyError::LeadershipLost
                    | ApplyError::Unavailable(_)) => core.status_of(e, Status::internal),
                    _ => Status::internal(e.to_string()),
                }),
            };
            let _ = reply.send(answer);
        });
    }

    /// Validates a `Register` into the command that records it.
    fn prepare_registration(
        &mut self,
        reg: pb::Register,
    ) -> Result<(AgentId, bool, Command), Status> {
        let info = reg
            .info
            .ok_or_else(|| Status::invalid_argument("register: agent info is missing"))?;
        if info.hostname.trim().is_empty() || info.hostname.len() > MAX_NAME {
            return Err(Status::invalid_argument(
                "register: hostname must be 1 to 1024 bytes",
            ));
        }
        if !info.address.is_empty() {
            berth_proto::check_address(&info.address)
                .map_err(|e| Status::invalid_argument(format!("register: {e}")))?;
        }
        check_attributes(&info.attributes)
            .map_err(|e| Status::invalid_argument(format!("register: {e}")))?;
        let unreserved = resources_from_proto_opt(info.resources.as_ref())
            .map_err(|e| Status::invalid_argument(format!("register: {e}")))?;
        let mut reserved = BTreeMap::new();
        for (role, r) in &info.reserved {
            let role = Role::new(role.clone())
                .map_err(|e| Status::invalid_argument(format!("register: {e}")))?;
            let r = resources_from_proto(r)
                .map_err(|e| Status::invalid_argument(format!("register: {e}")))?;
            reserved.insert(role, r);
        }
        let mut reported = Vec::new();
        for t in &reg.tasks {
            let fw = FrameworkId::new(t.framework_id.clone())
                .map_err(|e| Status::invalid_argument(format!("register: {e}")))?;
            let task = t
                .task
                .as_ref()
                .ok_or_else(|| Status::invalid_argument("register: task info is missing"))?;
            let id = TaskId::new(task.task_id.clone())
                .map_err(|e| Status::invalid_argument(format!("register: {e}")))?;
            reported.push((fw, id, t.state));
        }
        let new = reg.agent_id.is_empty();
        let id = if new {
            AgentId::new(format!("agent-{}", uuid::Uuid::new_v4().simple()))
                .map_err(|e| Status::internal(e.to_string()))?
        } else {
            AgentId::new(reg.agent_id.clone())
                .map_err(|e| Status::invalid_argument(format!("register: {e}")))?
        };
        let record = AgentRecord {
            id: id.clone(),
            hostname: info.hostname.clone(),
            address: info.address.clone(),
            unreserved,
            reserved,
            attributes: info
                .attributes
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
            draining: false,
            registered_at_ms: unix_ms(),
            unreachable_since_ms: None,
        };

        Ok((
            id,
            new,
            Command::RegisterAgent {
                record,
                reported: Some(reported),
                at_ms: unix_ms(),
            },
        ))
    }

    /// A registration is committed: take over the agent's connection.
    fn agent_registered(
        &mut self,
        conn: u64,
        id: AgentId,
        new: bool,
        tx: AgentTx,
        effects: &Effects,
    ) -> Result<(), Status> {
        // Replace an older connection of the same agent: its stream no
        // longer affects state.
        if let Some(old) = self.agents.remove(&id) {
            self.conn_agents.remove(&old.conn);
        }
        self.remove_agent_from_allocator(&id);

        let Some(record) = self.registry.agent(&id).cloned() else {
            return Err(Status::internal("agent vanished from the registry"));
        };
        let registered = pb::MasterMessage {
            message: Some(pb::master_message::Message::Registered(pb::Registered {
                agent_id: id.to_string(),
                master_id: self.master_id.clone(),
                ping_interval_seconds: self.config.agent_ping_interval.as_secs_f64(),
            })),
        };
        if tx.try_send(Ok(registered)).is_err() {
            // Gone already: registered but not connected; it has until its
            // ping timeout to come back.
            self.last_seen.entry(id).or_insert_with(Instant::now);
            return Err(Status::unavailable(
                "agent stream closed during registration",
            ));
        }
        self.allocator.add_agent(
            id.clone(),
            AgentResources {
                unreserved: record.unreserved.clone(),
                reserved: record.reserved.clone(),
            },
            !record.draining,
        );
        let used: Vec<(FrameworkId, Role, Allocated)> = self
            .registry
            .tasks_on(&id)
            .map(|t| (t.framework.clone(), t.role.clone(), t.allocated.clone()))
            .collect();
        for (fw, role, allocated) in used {
            if let Err(e) = self.allocator.add_used(&id, &fw, &role, &allocated) {
                error!(agent = %id, framework = %fw, "recorded usage does not fit the agent: {e}");
            }
        }
        self.agents.insert(
            id.clone(),
            AgentConn {
                conn,
                tx,
                ping_seq: 0,
                connected_at_ms: unix_ms(),
            },
        );
        self.conn_agents.insert(conn, id.clone());
        self.last_seen.insert(id.clone(), Instant::now());
        self.inherited.remove(&id);
        for (fw, task) in &effects.unknown_tasks {
            warn!(agent = %id, framework = %fw, task = %task, "agent runs a task the registry does not know; killing it");
            self.send_agent(
                &id,
                pb::master_message::Message::KillTask(pb::KillTask {
                    framework_id: fw.to_string(),
                    task_id: task.to_string(),
                    grace_period_seconds: 0.0,
                }),
            );
        }
        for kill in self.pending_kills.remove(&id).unwrap_or_default() {
            self.send_agent(&id, pb::master_message::Message::KillTask(kill));
        }
        for (fw, task) in &effects.relaunch {
            let Some(record) = self.registry.task(fw, task) else {
                continue;
            };
            info!(agent = %id, framework = %fw, task = %task, "the agent never got this launch; sending it again");
            let message = pb::master_message::Message::RunTask(pb::RunTask {
                framework: self.registry.framework(fw).map(FrameworkRecord::to_info),
                task: Some(record.task_info()),
            });
            self.send_agent(&id, message);
        }
        info!(agent = %id, hostname = %record.hostname, resources = %record.total(), new, "agent registered");
        self.allocation_dirty = true;
        Ok(())
    }

    fn remove_agent_from_allocator(&mut self, id: &AgentId) {
        for offer in self.offers.remove_agent(id) {
            self.send_event(
                &offer.framework.clone(),
                pb::event::Event::Rescind(pb::Rescind {
                    offer_id: offer.id.to_string(),
                }),
            );
        }
        self.allocator.remove_agent(id);
    }

    async fn agent_message(&mut self, conn: u64, message: pb::AgentMessage) {
        let Some(agent) = self.conn_agents.get(&conn).cloned() else {
            return;
        };
        self.last_seen.insert(agent.clone(), Instant::now());
        match message.message {
            Some(pb::agent_message::Message::Pong(_)) => {}
            Some(pb::agent_message::Message::StatusUpdate(update)) => {
                self.status_update(&agent, update).await
            }
            Some(pb::agent_message::Message::Register(_)) => {
                warn!(agent = %agent, "ignoring a second Register on one stream");
            }
            None => warn!(agent = %agent, "empty agent message"),
        }
    }

    async fn status_update(&mut self, agent: &AgentId, update: pb::StatusUpdate) {
        let Some(status) = update.status else {
            warn!(agent = %agent, "status update without a status");
            return;
        };
        let (Ok(fw), Ok(task)) = (
            FrameworkId::new(update.framework_id.clone()),
            TaskId::new(status.task_id.clone()),
        ) else {
            warn!(agent = %agent, "status update with invalid ids: {:?}/{:?}", update.framework_id, status.task_id);
            return;
        };
        let mut status = status;
        if !pb::TaskState::try_from(status.state).is_ok_and(|s| s != pb::TaskState::Unspecified)
            || status.uuid.len() != 16
        {
            warn!(agent = %agent, task = %task, "status update with an unknown state or a bad uuid");
            return;
        }
        // The update is about the agent that sent it, whatever it claims.
        status.agent_id = agent.to_string();
        // The registry takes a task's times from its updates' timestamps.
        if crate::registry::secs_to_ms(status.timestamp).is_none() {
            status.timestamp = ms_to_secs(unix_ms());
        }
        let ack_ourselves = |core: &mut Self| {
            core.send_agent(
                agent,
                pb::master_message::Message::Ack(pb::StatusUpdateAck {
                    framework_id: fw.to_string(),
                    task_id: task.to_string(),
                    uuid: status.uuid.clone(),
                }),
            );
        };
        if self.registry.framework(&fw).is_none() {
            // Its framework is gone: nobody will acknowledge; do it here so
            // the agent can forget the update.
            ack_ourselves(self);
            return;
        }
        match self.registry.task(&fw, &task) {
            Some(record) if &record.agent != agent => {
                warn!(agent = %agent, task = %task, "update from an agent the task is not on");
                ack_ourselves(self);
                return;
            }
            Some(record) if record.status == status.encode_to_vec() => {
                // A resend of the update we already applied.
            }
            Some(_) => {
                // Not awaited: status updates of many tasks share Raft
                // rounds. The update is forwarded to the framework when its
                // entry is applied (see `apply`); if it never is (leadership
                // lost), the agent resends it.
                self.propose_detached(Command::UpdateTask {
                    framework: fw.clone(),
                    task: task.clone(),
                    status: status.encode_to_vec(),
                });
                return;
            }
            None => {
                // A resend of a terminal update, or an update of a task the
                // registry no longer remembers (completed tasks are kept
                // only up to a limit): forward it, as Mesos does, so the
                // framework acknowledges it; acknowledging it here could
                // lose a terminal update the framework never saw.
            }
        }
        self.send_event(&fw, pb::event::Event::Update(status));
    }

    fn agent_closed(&mut self, conn: u64) {
        let Some(agent) = self.conn_agents.remove(&conn) else {
            return;
        };
        if self.agents.get(&agent).is_some_and(|c| c.conn == conn) {
            self.agents.remove(&agent);
            self.remove_agent_from_allocator(&agent);
            // It has until its ping timeout to come back.
            self.last_seen
                .entry(agent.clone())
                .or_insert_with(Instant::now);
            info!(agent = %agent, "agent disconnected");
        }
    }

    fn send_agent(&mut self, agent: &AgentId, message: pb::master_message::Message) {
        let Some(conn) = self.agents.get(agent) else {
            debug!(agent = %agent, "agent not connected; message dropped");
            return;
        };
        if conn
            .tx
            .try_send(Ok(pb::MasterMessage {
                message: Some(message),
            }))
            .is_err()
        {
            warn!(agent = %agent, "agent stream full or closed; dropping the connection");
            let conn = conn.conn;
            self.agent_closed(conn);
        }
    }

    // ----- timers -----------------------------------------------------------

    /// Periodic work. `idle` says no request is waiting: a change (a new
    /// agent, a decline, a finished task) triggers an allocation at once
    /// when idle; while requests keep coming, at the next tick after
    /// [`BUSY_ALLOCATION_SPACING`] times the last cycle's duration, and at
    /// most [`BUSY_ALLOCATION_INTERVAL`] later, so that a burst of declines
    /// or status updates is folded into one costly cycle instead of one per
    /// tick, while cheap cycles do not make frameworks wait.
    async fn on_tick(&mut self, idle: bool) {
        let now = Instant::now();
        self.expire_pending(now);
        if now.duration_since(self.last_ping) >= self.config.agent_ping_interval {
            self.last_ping = now;
            let ids: Vec<AgentId> = self.agents.keys().cloned().collect();
            for id in ids {
                let seq = self.agents.get_mut(&id).map_or(0, |c| {
                    c.ping_seq += 1;
                    c.ping_seq
                });
                self.send_agent(&id, pb::master_message::Message::Ping(pb::Ping { seq }));
            }
            self.check_agent_timeouts(now).await;
            self.check_failover_timeouts().await;
        }
        if now.duration_since(self.last_heartbeat) >= self.config.heartbeat_interval {
            self.last_heartbeat = now;
            let ids: Vec<FrameworkId> = self.frameworks.keys().cloned().collect();
            for id in ids {
                self.send_event(&id, pb::event::Event::Heartbeat(pb::Heartbeat {}));
            }
            // Frameworks dropped for a full queue start their failover clock.
            let dropped: Vec<FrameworkId> = self
                .registry
                .frameworks()
                .filter(|f| {
                    f.disconnected_at_ms.is_none()
                        && !self.frameworks.contains_key(&f.id)
                        && !self.subscribing.contains_key(&f.id)
                })
                .map(|f| f.id.clone())
                .collect();
            for id in dropped {
                self.disconnect_framework(&id);
            }
        }
        let t = self.now();
        for offer in self.offers.expire(t) {
            self.allocator.recover(
                &offer.agent,
                &offer.framework,
                &offer.role,
                &offer.resources,
                None,
                t,
            );
            self.send_event(
                &offer.framework.clone(),
                pb::event::Event::Rescind(pb::Rescind {
                    offer_id: offer.id.to_string(),
                }),
            );
            self.allocation_dirty = true;
        }
        let since = now.duration_since(self.last_allocation);
        let busy_wait =
            (self.last_allocation_cost * BUSY_ALLOCATION_SPACING).min(BUSY_ALLOCATION_INTERVAL);
        if (self.allocation_dirty && (idle || since >= busy_wait))
            || since >= self.config.allocation_interval
        {
            self.allocation_dirty = false;
            self.last_allocation = now;
            self.allocate();
            self.last_allocation_cost = now.elapsed();
        }
    }

    async fn check_agent_timeouts(&mut self, now: Instant) {
        let timeout = self.config.agent_ping_timeout;
        // Inherited agents that have not registered with this leader yet
        // are within their re-registration grace after a takeover.
        if now >= self.reregister_until {
            self.inherited.clear();
        }
        let expired: Vec<AgentId> = self
            .last_seen
            .iter()
            .filter(|(id, _)| !self.inherited.contains(*id))
            .filter(|(_, seen)| now.duration_since(**seen) > timeout)
            .map(|(id, _)| id.clone())
            .collect();
        for id in expired {
            self.last_seen.remove(&id);
            if let Some(conn) = self.agents.get(&id).map(|c| c.conn) {
                // Connected but silent: drop the stream; it re-registers.
                self.agent_closed(conn);
            }
            self.last_seen.remove(&id);
            warn!(agent = %id, "agent missed its pings; marking it unreachable");
            if self.registry.agent(&id).is_some() {
                self.propose_detached(Command::MarkAgentUnreachable {
                    id,
                    at_ms: unix_ms(),
                });
            }
        }
    }

    async fn check_failover_timeouts(&mut self) {
        let now_ms = unix_ms();
        let expired: Vec<FrameworkId> = self
            .registry
            .frameworks()
            .filter(|f| !self.frameworks.contains_key(&f.id))
            .filter(|f| {
                f.disconnected_at_ms
                    .is_some_and(|at| now_ms >= at.saturating_add(f.failover_timeout_ms))
            })
            .map(|f| f.id.clone())
            .collect();
        for id in expired {
            self.remove_framework(&id, "FAILOVER_TIMEOUT", |_, _| {});
        }
    }

    fn allocate(&mut self) {
        let now = self.now();
        if self.config.offer_limit.is_some() {
            for fw in self.frameworks.keys() {
                self.allocator
                    .set_outstanding_offers(fw, self.offers.count_of(fw));
            }
        }
        let allocations = self.allocator.allocate(now);
        let mut by_framework: BTreeMap<FrameworkId, Vec<pb::Offer>> = BTreeMap::new();
        for allocation in allocations {
            if !self.frameworks.contains_key(&allocation.framework) {
                self.allocator.recover(
                    &allocation.agent,
                    &allocation.framework,
                    &allocation.role,
                    &allocation.resources,
                    None,
                    now,
                );
                continue;
            }
            let offer = self.offers.create(allocation, now);
            let agent = self.registry.agent(&offer.agent);
            by_framework
                .entry(offer.framework.clone())
                .or_default()
                .push(pb::Offer {
                    id: offer.id.to_string(),
                    framework_id: offer.framework.to_string(),
                    agent_id: offer.agent.to_string(),
                    hostname: agent.map(|a| a.hostname.clone()).unwrap_or_default(),
                    role: offer.role.to_string(),
                    resources: Some(resources_to_proto(&offer.resources.total())),
                    reserved: Some(resources_to_proto(&offer.resources.reserved)),
                    attributes: agent
                        .map(|a| {
                            a.attributes
                                .iter()
                                .map(|(name, value)| pb::Attribute {
                                    name: name.clone(),
                                    value: value.clone(),
                                })
                                .collect()
                        })
                        .unwrap_or_default(),
                });
        }
        for (fw, offers) in by_framework {
            self.send_event(&fw, pb::event::Event::Offers(pb::Offers { offers }));
        }
    }

    // ----- operator ---------------------------------------------------------

    /// Answers an operator read from this master's registry.
    fn read(&self, call: OperatorCall) -> Result<OperatorReply, Status> {
        Ok(match call {
            OperatorCall::State => OperatorReply::State(Box::new(pb::ClusterState {
                leader: Some(self.leader()),
                agents: self.agent_views(),
                frameworks: self.framework_views(),
                tasks: self.task_views(None, true),
                roles: self.role_views(),
            })),
            OperatorCall::Agents => OperatorReply::Agents(pb::AgentList {
                agents: self.agent_views(),
            }),
            OperatorCall::Frameworks => OperatorReply::Frameworks(pb::FrameworkList {
                frameworks: self.framework_views(),
            }),
            OperatorCall::Tasks(req) => {
                let fw = if req.framework_id.is_empty() {
                    None
                } else {
                    Some(
                        FrameworkId::new(req.framework_id)
                            .map_err(|e| Status::invalid_argument(e.to_string()))?,
                    )
                };
                OperatorReply::Tasks(pb::TaskList {
                    tasks: self.task_views(fw.as_ref(), req.include_completed),
                })
            }
            OperatorCall::Roles => OperatorReply::Roles(pb::RoleList {
                roles: self.role_views(),
            }),
            OperatorCall::Leader => OperatorReply::Leader(self.leader()),
            OperatorCall::Members => OperatorReply::Members(self.members_view()),
            OperatorCall::Pending(req) => {
                if self.leading.is_none() {
                    return Err(self.not_leader());
                }
                let only = if req.framework_id.is_empty() {
                    None
                } else {
                    Some(
                        FrameworkId::new(req.framework_id)
                            .map_err(|e| Status::invalid_argument(e.to_string()))?,
                    )
                };
                let tasks = self.pending_work.views(only.as_ref(), |id| {
                    self.registry
                        .framework(id)
                        .map(|f| (f.name.clone(), self.frameworks.contains_key(id)))
                });
                OperatorReply::Pending(pb::PendingList { tasks })
            }
            _ => return Err(Status::internal("not a read")),
        })
    }

    /// Handles an operator write; it is answered once committed.
    async fn operator(
        &mut self,
        call: OperatorCall,
        reply: oneshot::Sender<Result<OperatorReply, Status>>,
    ) {
        let answer = |core: &mut Core, result: Result<Effects, ApplyError>| {
            result
                .map(|_| OperatorReply::Empty)
                .map_err(|e| core.status_of(e, Status::invalid_argument))
        };
        match call {
            OperatorCall::AddMember(req) => {
                let _ = reply.send(self.add_member(req).await.map(OperatorReply::AddMember));
            }
            OperatorCall::RemoveMember(id) => {
                let _ = reply.send(self.remove_member(id).await.map(|()| OperatorReply::Empty));
            }
            OperatorCall::Drain(id) => self.set_draining(&id, true, reply),
            OperatorCall::Reactivate(id) => self.set_draining(&id, false, reply),
            OperatorCall::Teardown(id) => self.teardown_by_operator(&id, reply),
            OperatorCall::SetWeight(req) => {
                let parsed = Role::new(req.role.clone())
                    .map_err(|e| Status::invalid_argument(e.to_string()))
                    .and_then(|role| {
                        Weight::new(req.weight)
                            .map(|w| (role, w))
                            .map_err(|e| Status::invalid_argument(e.to_string()))
                    });
                let (role, weight) = match parsed {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                let weight_milli = (weight.to_f64() * 1000.0).round() as u64;
                self.propose(
                    Command::SetWeight {
                        role: role.clone(),
                        weight_milli,
                    },
                    move |core, result| {
                        if result.is_ok() {
                            core.allocator.set_weight(role, weight);
                            core.allocation_dirty = true;
                        }
                        let _ = reply.send(answer(core, result));
                    },
                );
            }
            OperatorCall::SetQuota(req) => {
                let (role, quota) = match validate_quota(&req) {
                    Ok(v) => v,
                    Err(e) => {
                        let _ = reply.send(Err(e));
                        return;
                    }
                };
                self.propose(
                    Command::SetQuota {
                        role: role.clone(),
                        quota: quota.clone(),
                    },
                    move |core, result| {
                        if result.is_ok() {
                            if let Err(e) = core.allocator.set_quota(role, quota) {
                                warn!("quota accepted by the probe but not the allocator: {e}");
                            }
                            core.allocation_dirty = true;
                        }
                        let _ = reply.send(answer(core, result));
                    },
                );
            }
            OperatorCall::RemoveQuota(role) => {
                let role = match Role::new(role) {
                    Ok(r) => r,
                    Err(e) => {
                        let _ = reply.send(Err(Status::invalid_argument(e.to_string())));
                        return;
                    }
                };
                if !self.registry.quotas().contains_key(&role) {
                    let _ = reply.send(Err(Status::not_found(format!(
                        "role {} has no quota",
                        quoted(role.as_str())
                    ))));
                    return;
                }
                self.propose(
                    Command::RemoveQuota { role: role.clone() },
                    move |core, result| {
                        if result.is_ok() {
                            core.allocator.remove_quota(&role);
                            core.allocation_dirty = true;
                        }
                        let _ = reply.send(answer(core, result));
                    },
                );
            }
            OperatorCall::State
            | OperatorCall::Agents
            | OperatorCall::Frameworks
            | OperatorCall::Tasks(_)
            | OperatorCall::Roles
            | OperatorCall::Leader
            | OperatorCall::Members
            | OperatorCall::Pending(_) => {
                let _ = reply.send(self.read(call));
            }
        }
    }

    /// Drains or reactivates an agent; answered once committed.
    fn set_draining(
        &mut self,
        id: &str,
        draining: bool,
        reply: oneshot::Sender<Result<OperatorReply, Status>>,
    ) {
        let known = known_id(id, "agent", AgentId::new, |id| {
            self.registry.agent(id).is_some()
        });
        let id = match known {
            Ok(id) => id,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        self.propose(
            Command::SetAgentDraining {
                id: id.clone(),
                draining,
            },
            move |core, result| {
                let answer = match result {
                    Ok(_) => {
                        core.draining_changed(&id, draining);
                        Ok(OperatorReply::Empty)
                    }
                    Err(e) => Err(core.status_of(e, Status::invalid_argument)),
                };
                let _ = reply.send(answer);
            },
        );
    }

    /// Removes a framework for an operator, as its own Teardown does;
    /// answered once the removal is committed.
    fn teardown_by_operator(
        &mut self,
        id: &str,
        reply: oneshot::Sender<Result<OperatorReply, Status>>,
    ) {
        let known = known_id(id, "framework", FrameworkId::new, |id| {
            self.registry.framework(id).is_some()
        });
        let id = match known {
            Ok(id) => id,
            Err(e) => {
                let _ = reply.send(Err(e));
                return;
            }
        };
        info!(framework = %id, "framework torn down by an operator");
        self.remove_framework(&id, "OPERATOR_TEARDOWN", move |core, result| {
            let _ = reply.send(
                result
                    .map(|()| OperatorReply::Empty)
                    .map_err(|e| core.status_of(e, Status::internal)),
            );
        });
    }

    /// An agent's draining flag is committed: stop or resume offering it.
    fn draining_changed(&mut self, id: &AgentId, draining: bool) {
        if draining {
            self.allocator.deactivate_agent(id);
            let now = self.now();
            for offer in self.offers.remove_agent(id) {
                self.allocator.recover(
                    &offer.agent,
                    &offer.framework,
                    &offer.role,
                    &offer.resources,
                    None,
                    now,
                );
                self.send_event(
                    &offer.framework.clone(),
                    pb::event::Event::Rescind(pb::Rescind {
                        offer_id: offer.id.to_string(),
                    }),
                );
            }
        } else {
            self.allocator.activate_agent(id);
            self.allocation_dirty = true;
        }
    }

    fn leader(&self) -> pb::LeaderInfo {
        let leader = self.raft_leader();
        pb::LeaderInfo {
            master_id: if self.leading.is_some() {
                self.master_id.clone()
            } else {
                String::new()
            },
            address: leader
                .and_then(|id| self.members.get(&id).cloned())
                .unwrap_or_default(),
            raft_id: leader.unwrap_or(0),
            term: self.raft_status.borrow().term,
            leading_since: if self.leading.is_some() {
                ms_to_secs(self.leading_since_ms)
            } else {
                0.0
            },
        }
    }

    fn members_view(&self) -> pb::MemberList {
        let st = self.raft_status.borrow().clone();
        let mut members: Vec<pb::MemberView> = st
            .voters
            .iter()
            .map(|id| (*id, false))
            .chain(st.learners.iter().map(|id| (*id, true)))
            .map(|(id, learner)| pb::MemberView {
                id,
                address: self.members.get(&id).cloned().unwrap_or_default(),
                role: if learner {
                    "LEARNER"
                } else if id == st.leader_id {
                    "LEADER"
                } else {
                    "FOLLOWER"
                }
                .into(),
                last_heard_at: if id == st.id {
                    0.0
                } else {
                    self.heard.get(id).map_or(0.0, system_time_secs)
                },
                index: if id == st.id {
                    self.applied_index
                } else {
                    st.matched
                        .iter()
                        .find(|(m, _)| *m == id)
                        .map_or(0, |(_, index)| *index)
                },
            })
            .collect();
        members.sort_by_key(|m| m.id);
        pb::MemberList {
            members,
            leader_id: st.leader_id,
            term: st.term,
            answered_by: st.id,
        }
    }

    /// Adds a master as a learner, or promotes a learner that has caught
    /// up to a voter (see `AddMember` in operator.proto).
    async fn add_member(
        &mut self,
        req: pb::AddMemberRequest,
    ) -> Result<pb::AddMemberResponse, Status> {
        if req.id == 0 || req.address.trim().is_empty() {
            return Err(Status::invalid_argument(
                "a member needs an id of 1 or more and an address",
            ));
        }
        berth_proto::check_address(&req.address)
            .map_err(|e| Status::invalid_argument(format!("master {}: {e}", req.id)))?;
        let st = self.raft_status.borrow().clone();
        if st.voters.contains(&req.id) {
            return Err(Status::already_exists(format!(
                "master {} is already a voting member",
                req.id
            )));
        }
        let context = postcard::to_stdvec(&(req.id, req.address.clone()))
            .map_err(|e| Status::internal(e.to_string()))?;
        if st.learners.contains(&req.id) {
            let matched = st
                .matched
                .iter()
                .find(|(m, _)| *m == req.id)
                .map_or(0, |(_, index)| *index);
            if matched.saturating_add(CAUGHT_UP_SLACK) < st.commit {
                return Err(Status::failed_precondition(format!(
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

    async fn remove_member(&mut self, id: u64) -> Result<(), Status> {
        let st = self.raft_status.borrow().clone();
        if !st.voters.contains(&id) && !st.learners.contains(&id) {
            return Err(Status::not_found(format!("master {id} is not a member")));
        }
        if st.voters == [id] {
            return Err(Status::failed_precondition("cannot remove the last master"));
        }
        let context = postcard::to_stdvec(&(id, String::new()))
            .map_err(|e| Status::internal(e.to_string()))?;
        self.change_membership(id, Membership::Gone, context).await
    }

    /// Proposes a change of member `id` and waits until it is applied.
    async fn change_membership(
        &mut self,
        id: u64,
        to: Membership,
        context: Vec<u8>,
    ) -> Result<(), Status> {
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
                other => Status::failed_precondition(other.to_string()),
            })?;
        let deadline = tokio::time::Instant::now() + COMMIT_TIMEOUT;
        loop {
            tokio::select! {
                applied = self.applied_rx.recv() => {
                    let Some(applied) = applied else {
                        return Err(Status::unavailable("the raft node stopped"));
                    };
                    let done = matches!(&applied, Applied::ConfChanged { voters, learners, .. } if match to {
                        Membership::Learner => learners.contains(&id),
                        Membership::Voter => voters.contains(&id),
                        Membership::Gone => !voters.contains(&id) && !learners.contains(&id),
                    });
                    self.apply(applied, None);
                    if done {
                        return Ok(());
                    }
                }
                () = tokio::time::sleep_until(deadline) => {
                    return Err(Status::unavailable("the membership change was not committed in time"));
                }
            }
        }
    }

    fn agent_views(&self) -> Vec<pb::AgentView> {
        let mut offered: HashMap<&AgentId, Resources> = HashMap::new();
        for fw in self.frameworks.keys() {
            for o in self.offers.offers_of(fw) {
                *offered.entry(&o.agent).or_default() += o.resources.total();
            }
        }
        self.registry
            .agents()
            .map(|a| pb::AgentView {
                id: a.id.to_string(),
                info: Some(a.to_info()),
                state: if a.unreachable_since_ms.is_some() {
                    "UNREACHABLE"
                } else if a.draining {
                    "DRAINING"
                } else {
                    "ACTIVE"
                }
                .into(),
                connected: self.agents.contains_key(&a.id),
                total: Some(resources_to_proto(&a.total())),
                used: Some(resources_to_proto(&self.registry.agent_used(&a.id))),
                offered: Some(resources_to_proto(
                    &offered.get(&a.id).cloned().unwrap_or_default(),
                )),
                task_count: u32::try_from(self.registry.tasks_on(&a.id).count())
                    .unwrap_or(u32::MAX),
                registered_at: ms_to_secs(a.registered_at_ms),
                connected_at: self
                    .agents
                    .get(&a.id)
                    .map_or(0.0, |c| ms_to_secs(c.connected_at_ms)),
            })
            .collect()
    }

    fn framework_views(&self) -> Vec<pb::FrameworkView> {
        self.registry
            .frameworks()
            .map(|f| {
                let used = self
                    .registry
                    .tasks_of(&f.id)
                    .fold(Resources::empty(), |acc, t| acc + t.allocated.total());
                let offered = self
                    .offers
                    .offers_of(&f.id)
                    .iter()
                    .fold(Resources::empty(), |acc, o| acc + o.resources.total());
                pb::FrameworkView {
                    info: Some(f.to_info()),
                    connected: self.frameworks.contains_key(&f.id),
                    disconnected_at: f.disconnected_at_ms.map_or(0.0, ms_to_secs),
                    used: Some(resources_to_proto(&used)),
                    offered: Some(resources_to_proto(&offered)),
                    task_count: u32::try_from(self.registry.tasks_of(&f.id).count())
                        .unwrap_or(u32::MAX),
                    registered_at: ms_to_secs(f.registered_at_ms),
                    connected_at: self
                        .frameworks
                        .get(&f.id)
                        .map_or(0.0, |c| ms_to_secs(c.connected_at_ms)),
                }
            })
            .collect()
    }

    fn task_views(&self, framework: Option<&FrameworkId>, completed: bool) -> Vec<pb::TaskView> {
        let keep = |t: &&TaskRecord| framework.is_none_or(|f| &t.framework == f);
        let active = self.registry.tasks().filter(keep);
        let done = self.registry.completed().filter(keep).filter(|_| completed);
        active
            .chain(done)
            .map(|t| {
                let info = t.task_info();
                pb::TaskView {
                    task_id: t.id.to_string(),
                    framework_id: t.framework.to_string(),
                    agent_id: t.agent.to_string(),
                    name: info.name,
                    state: t.state,
                    resources: Some(resources_to_proto(&t.allocated.total())),
                    status: Some(t.last_status()),
                    agent_address: self
                        .registry
                        .agent(&t.agent)
                        .map(|a| a.address.clone())
                        .unwrap_or_default(),
                    role: t.role.to_string(),
                    launched_at: ms_to_secs(t.launched_at_ms),
                    running_at: t.running_at_ms.map_or(0.0, ms_to_secs),
                    ended_at: t.ended_at_ms.map_or(0.0, ms_to_secs),
                }
            })
            .collect()
    }

    fn role_views(&self) -> Vec<pb::RoleView> {
        if self.leading.is_none() {
            return self.registry_role_views();
        }
        self.allocator
            .roles()
            .into_iter()
            .map(|r| pb::RoleView {
                name: r.role.to_string(),
                weight: r.weight.to_f64(),
                guarantee: r.quota.as_ref().map(|q| resources_to_proto(&q.guarantee)),
                limit: r
                    .quota
                    .as_ref()
                    .and_then(|q| q.limit.as_ref())
                    .map(resources_to_proto),
                allocated: Some(resources_to_proto(&r.allocated)),
                frameworks: r.frameworks.iter().map(ToString::to_string).collect(),
            })
            .collect()
    }

    /// Roles as the registry alone knows them: what a follower (which runs
    /// no allocator) answers a stale read with. Allocated is what tasks use;
    /// followers hold no offers.
    fn registry_role_views(&self) -> Vec<pb::RoleView> {
        let mut roles: BTreeMap<Role, (Resources, Vec<String>)> = BTreeMap::new();
        for role in self
            .registry
            .weights()
            .keys()
            .chain(self.registry.quotas().keys())
        {
            roles.entry(role.clone()).or_default();
        }
        for f in self.registry.frameworks() {
            for role in &f.roles {
                roles
                    .entry(role.clone())
                    .or_default()
                    .1
                    .push(f.id.to_string());
            }
        }
        for t in self.registry.tasks() {
            let entry = roles.entry(t.role.clone()).or_default();
            entry.0 = entry.0.clone() + t.allocated.total();
        }
        roles
            .into_iter()
            .map(|(role, (allocated, frameworks))| {
                let quota = self.registry.quotas().get(&role);
                pb::RoleView {
                    weight: self
                        .registry
                        .weights()
                        .get(&role)
                        .map_or(1.0, |w| ms_to_secs(*w)),
                    guarantee: quota.map(|q| resources_to_proto(&q.guarantee)),
                    limit: quota.and_then(|q| q.limit.as_ref()).map(resources_to_proto),
                    allocated: Some(resources_to_proto(&allocated)),
                    frameworks,
                    name: role.to_string(),
                }
            })
            .collect()
    }
}

/// The id an operator call names: INVALID_ARGUMENT when it is not a valid
/// id (empty included), NOT_FOUND when the registry does not know it.
fn known_id<T: std::fmt::Display>(
    raw: &str,
    kind: &str,
    parse: impl FnOnce(String) -> Result<T, berth_scheduler_core::IdError>,
    known: impl FnOnce(&T) -> bool,
) -> Result<T, Status> {
    let id = parse(raw.to_string()).map_err(|e| Status::invalid_argument(e.to_string()))?;
    if known(&id) {
        Ok(id)
    } else {
        Err(Status::not_found(format!(
            "unknown {kind} {}",
            quoted(&id.to_string())
        )))
    }
}

/// The allocator settings of a master.
fn allocator_config(config: &MasterConfig) -> AllocatorConfig {
    AllocatorConfig {
        default_refuse: config.default_refuse,
        offer_limit: config.offer_limit,
        ..AllocatorConfig::default()
    }
}

fn event(e: pb::event::Event) -> pb::Event {
    pb::Event { event: Some(e) }
}

fn reconciled(mut status: pb::TaskStatus) -> pb::TaskStatus {
    status.uuid.clear();
    status.source = pb::StatusSource::Master as i32;
    status.reason = pb::TaskReason::Reconciliation as i32;
    status
}

fn offer_ids(ids: &[String]) -> Result<Vec<OfferId>, Status> {
    ids.iter()
        .map(|s| OfferId::new(s.clone()).map_err(|e| Status::invalid_argument(e.to_string())))
        .collect()
}

/// Validates a duration given in seconds on the wire.
fn seconds(name: &str, s: f64) -> Result<Duration, Status> {
    if !s.is_finite() || !(0.0..=MAX_SECONDS).contains(&s) {
        return Err(Status::invalid_argument(format!(
            "{name} must be a finite number of seconds between 0 and {MAX_SECONDS}, got {s}"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// Validates a task's own fields (not its fit in the offers) by the rules
/// the agent applies too ([`berth_proto::task`]); the agent checks what
/// needs its host, such as host ports against the task's resources, and
/// fails the task with its reason.
fn validate_task(info: &pb::TaskInfo) -> Result<TaskId, Status> {
    berth_proto::task::validate_task(info).map_err(|e| Status::invalid_argument(e.to_string()))
}

/// Most attributes an agent may report.
const MAX_ATTRIBUTES: usize = 128;

/// Checks an agent's attributes: they are stored in the registry and shown
/// to every framework, so they are bounded like names.
fn check_attributes(attributes: &[pb::Attribute]) -> Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "{} attributes; at most {MAX_ATTRIBUTES} are allowed",
            attributes.len()
        ));
    }
    for a in attributes {
        if a.name.is_empty() || a.name.len() > 255 || a.name.chars().any(char::is_control) {
            return Err(format!(
                "attribute name {} must be 1 to 255 bytes without control characters",
                quoted(&a.name)
            ));
        }
        if a.value.len() > MAX_NAME || a.value.chars().any(char::is_control) {
            return Err(format!(
                "attribute {} has a value over {MAX_NAME} bytes or with control characters",
                quoted(&a.name)
            ));
        }
    }
    Ok(())
}

/// Validates a `SetQuota` request: its role and a quota the allocator
/// accepts (a rejected quota is not logged).
fn validate_quota(req: &pb::SetQuotaRequest) -> Result<(Role, Quota), Status> {
    let role = Role::new(req.role.clone()).map_err(|e| Status::invalid_argument(e.to_string()))?;
    let guarantee = resources_from_proto_opt(req.guarantee.as_ref())
        .map_err(|e| Status::invalid_argument(format!("guarantee: {e}")))?;
    let limit = req
        .limit
        .as_ref()
        .map(resources_from_proto)
        .transpose()
        .map_err(|e| Status::invalid_argument(format!("limit: {e}")))?;
    let quota = Quota { guarantee, limit };
    let mut probe = Allocator::new(AllocatorConfig::default());
    probe
        .set_quota(role.clone(), quota.clone())
        .map_err(|e| Status::invalid_argument(e.to_string()))?;
    Ok((role, quota))
}

/// UNAVAILABLE "not the leader", with the leader's address in the
/// `berth-leader` metadata when it is known.
pub(crate) fn self_not_leader_status(leader: Option<String>) -> Status {
    let mut status = Status::unavailable(match &leader {
        Some(addr) => format!("this master is not the leader; the leader is at {addr}"),
        None => "this master is not the leader and no leader is known yet".to_string(),
    });
    if let Some(addr) = leader
        && let Ok(value) = addr.parse()
    {
        status.metadata_mut().insert(LEADER_METADATA_KEY, value);
    }
    status
}

/// The gRPC metadata key naming the leader's address on redirects.
pub const LEADER_METADATA_KEY: &str = "berth-leader";

/// A random u64 (not cryptographic; for ids that must differ across runs).
fn rand_u64() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

/// Seconds since the Unix epoch of `t` (0 for a time before it).
fn system_time_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::raft::node::{NodeConfig, start};
    use crate::raft::storage::RaftStorage;
    use crate::raft::transport::{Faults, GrpcTransport};
    use pb::master_message::Message as M;

    type AgentRx = mpsc::Receiver<Result<pb::MasterMessage, Status>>;

    /// Drives the core's Raft side in tests, where no run loop does.
    impl Core {
        /// Applies what Raft delivers until `rx` has the reply.
        async fn answered<T>(&mut self, mut rx: oneshot::Receiver<T>) -> T {
            loop {
                match rx.try_recv() {
                    Ok(v) => return v,
                    Err(oneshot::error::TryRecvError::Closed) => panic!("reply dropped"),
                    Err(oneshot::error::TryRecvError::Empty) => {}
                }
                let applied = tokio::time::timeout(Duration::from_secs(10), self.applied_rx.recv())
                    .await
                    .expect("nothing applied within 10 s")
                    .expect("raft stopped");
                self.apply(applied, None);
            }
        }

        /// Applies whatever Raft delivers within 100 ms.
        async fn settle(&mut self) {
            while let Ok(Some(applied)) =
                tokio::time::timeout(Duration::from_millis(100), self.applied_rx.recv()).await
            {
                self.apply(applied, None);
            }
        }

        async fn accept_wait(
            &mut self,
            req: pb::AcceptRequest,
        ) -> Result<pb::AcceptResponse, Status> {
            let (tx, rx) = oneshot::channel();
            self.accept(req, tx);
            match self.answered(rx).await? {
                CallReply::Accept(r) => Ok(r),
                CallReply::Empty => panic!("accept answered without a response"),
            }
        }

        async fn call_wait(&mut self, call: SchedulerCall) -> Result<CallReply, Status> {
            let (tx, rx) = oneshot::channel();
            self.call(call, tx);
            self.answered(rx).await
        }

        async fn subscribe_wait(
            &mut self,
            info: pb::FrameworkInfo,
        ) -> Result<Subscription, Status> {
            let (tx, rx) = oneshot::channel();
            self.subscribe(info, tx);
            self.answered(rx).await
        }
    }
    type EventRx = mpsc::Receiver<Result<pb::Event, Status>>;

    /// A core leading a one-master Raft group on a temporary directory.
    async fn core(dir: &tempfile::TempDir) -> Core {
        core_with(dir, |_| {}).await
    }

    /// A one-master core whose settings `tune` adjusts.
    async fn core_with(dir: &tempfile::TempDir, tune: impl FnOnce(&mut MasterConfig)) -> Core {
        let storage = RaftStorage::open(&dir.path().join("raft.redb")).unwrap();
        storage.initialize(&[1]).unwrap();
        let transport = GrpcTransport::new(1, Vec::<(u64, String)>::new(), Faults::default());
        let (handle, applied, _task) = start(
            NodeConfig::new(1),
            storage,
            transport.clone(),
            std::future::pending(),
        )
        .unwrap();
        handle.campaign().await.unwrap();
        let mut config = MasterConfig::new(dir.path());
        config.offer_timeout = None;
        tune(&mut config);
        let mut core = Core::new(
            config,
            "m1".into(),
            "127.0.0.1:1".into(),
            RaftParts {
                handle,
                applied,
                transport,
                registry: Registry::new(100),
                snapshot_index: 0,
                heard: HeardFrom::default(),
            },
        );
        for _ in 0..200 {
            core.on_raft_status().await;
            if core.leading.is_some() {
                return core;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the one-master group did not elect its master");
    }

    /// Delivers an agent message, then applies whatever it proposed.
    async fn deliver(core: &mut Core, conn: u64, message: pb::AgentMessage) {
        core.agent_message(conn, message).await;
        while let Ok(Some(applied)) =
            tokio::time::timeout(Duration::from_millis(100), core.applied_rx.recv()).await
        {
            core.apply(applied, None);
        }
    }

    fn res(s: &str) -> pb::Resources {
        resources_to_proto(&s.parse::<Resources>().unwrap())
    }

    async fn register(
        core: &mut Core,
        conn: u64,
        agent_id: &str,
        resources: &str,
        tasks: &[(&str, &str, pb::TaskState)],
    ) -> (Result<(), Status>, AgentRx) {
        let (tx, rx) = mpsc::channel(AGENT_QUEUE);
        let reg = pb::Register {
            agent_id: agent_id.into(),
            info: Some(pb::AgentInfo {
                hostname: "host".into(),
                address: "host:5051".into(),
                resources: Some(res(resources)),
                ..Default::default()
            }),
            tasks: tasks
                .iter()
                .map(|(f, t, s)| pb::AgentTask {
                    framework_id: (*f).into(),
                    task: Some(pb::TaskInfo {
                        task_id: (*t).into(),
                        ..Default::default()
                    }),
                    state: *s as i32,
                })
                .collect(),
        };
        let (reply, answer) = oneshot::channel();
        core.register_agent(conn, reg, tx, reply);
        (core.answered(answer).await, rx)
    }

    fn drain_agent(rx: &mut AgentRx) -> Vec<M> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|m| m.ok().and_then(|m| m.message))
            .collect()
    }

    fn drain_events(rx: &mut EventRx) -> Vec<pb::event::Event> {
        std::iter::from_fn(|| rx.try_recv().ok())
            .filter_map(|e| e.ok().and_then(|e| e.event))
            .collect()
    }

    async fn new_agent(core: &mut Core, conn: u64, resources: &str) -> (AgentId, AgentRx) {
        let (r, mut rx) = register(core, conn, "", resources, &[]).await;
        r.unwrap();
        let id = drain_agent(&mut rx)
            .into_iter()
            .find_map(|m| match m {
                M::Registered(r) => Some(r.agent_id),
                _ => None,
            })
            .unwrap();
        (AgentId::new(id).unwrap(), rx)
    }

    async fn subscribe(core: &mut Core, id: &str) -> (pb::CallHeader, EventRx) {
        let sub = core
            .subscribe_wait(pb::FrameworkInfo {
                id: id.into(),
                name: "fw".into(),
                failover_timeout_seconds: 60.0,
                ..Default::default()
            })
            .await
            .unwrap();
        let header = pb::CallHeader {
            framework_id: sub.framework.to_string(),
            stream_id: sub.stream_id,
        };
        (header, sub.events)
    }

    /// Runs an allocation and returns the framework's new offers.
    fn offers(core: &mut Core, events: &mut EventRx) -> Vec<pb::Offer> {
        core.allocate();
        drain_events(events)
            .into_iter()
            .flat_map(|e| match e {
                pb::event::Event::Offers(o) => o.offers,
                _ => Vec::new(),
            })
            .collect()
    }

    fn accept_request(
        header: &pb::CallHeader,
        offer: &str,
        task: &str,
        resources: &str,
    ) -> pb::AcceptRequest {
        pb::AcceptRequest {
            header: Some(header.clone()),
            offer_ids: vec![offer.into()],
            operations: vec![pb::Operation {
                operation: Some(pb::operation::Operation::Launch(pb::Launch {
                    tasks: vec![pb::TaskInfo {
                        task_id: task.into(),
                        resources: Some(res(resources)),
                        command: Some(pb::CommandInfo {
                            shell: "true".into(),
                            ..Default::default()
                        }),
                        ..Default::default()
                    }],
                })),
            }],
            // No decline filter on the rest, so it is offered again.
            filters: Some(pb::Filters {
                refuse_seconds: Some(0.0),
            }),
        }
    }

    fn status_update(framework: &str, task: &str, state: pb::TaskState) -> pb::AgentMessage {
        pb::AgentMessage {
            message: Some(pb::agent_message::Message::StatusUpdate(pb::StatusUpdate {
                framework_id: framework.into(),
                status: Some(pb::TaskStatus {
                    task_id: task.into(),
                    state: state as i32,
                    uuid: vec![1; 16],
                    agent_id: "whatever-the-agent-claims".into(),
                    ..Default::default()
                }),
            })),
        }
    }

    /// A framework with one running task `t1` (cpus:1;mem:128) on a
    /// cpus:4;mem:1024 agent.
    async fn running() -> (
        tempfile::TempDir,
        Core,
        AgentId,
        AgentRx,
        pb::CallHeader,
        EventRx,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut core = core(&dir).await;
        let (agent, mut arx) = new_agent(&mut core, 1, "cpus:4;mem:1024").await;
        let (header, mut events) = subscribe(&mut core, "").await;
        let offer = offers(&mut core, &mut events).remove(0);
        core.accept_wait(accept_request(&header, &offer.id, "t1", "cpus:1;mem:128"))
            .await
            .unwrap();
        assert!(
            drain_agent(&mut arx)
                .iter()
                .any(|m| matches!(m, M::RunTask(_)))
        );
        (dir, core, agent, arx, header, events)
    }

    fn offered_cpus(offers: &[pb::Offer]) -> f64 {
        offers
            .iter()
            .map(|o| o.resources.as_ref().map_or(0.0, |r| r.cpus))
            .sum()
    }

    #[tokio::test]
    async fn old_agent_connection_no_longer_affects_state() {
        let (_dir, mut core, agent, mut old_rx, header, mut events) = running().await;
        let (r, mut new_rx) = register(
            &mut core,
            2,
            agent.as_str(),
            "cpus:4;mem:1024",
            &[(&header.framework_id, "t1", pb::TaskState::TaskRunning)],
        )
        .await;
        r.unwrap();
        assert!(
            drain_agent(&mut new_rx)
                .iter()
                .any(|m| matches!(m, M::Registered(_)))
        );
        // The old stream ended (its sender is gone).
        drain_agent(&mut old_rx);
        assert!(old_rx.recv().await.is_none());

        // Late messages and the close of the old connection change nothing.
        let before = core.registry.clone();
        deliver(
            &mut core,
            1,
            status_update(&header.framework_id, "t1", pb::TaskState::TaskFailed),
        )
        .await;
        core.agent_closed(1);
        assert_eq!(core.registry, before);
        assert_eq!(core.agents.get(&agent).map(|c| c.conn), Some(2));
        // The agent is still in the allocator: its free resources (t1's
        // usage recorded again) are offered.
        let o = offers(&mut core, &mut events);
        assert!((offered_cpus(&o) - 3.0).abs() < 1e-9, "{o:?}");
        // Messages on the new connection count.
        deliver(
            &mut core,
            2,
            status_update(&header.framework_id, "t1", pb::TaskState::TaskRunning),
        )
        .await;
        let t = core
            .registry
            .task(
                &FrameworkId::new(header.framework_id.clone()).unwrap(),
                &TaskId::new("t1").unwrap(),
            )
            .unwrap();
        assert_eq!(t.state(), pb::TaskState::TaskRunning);
        assert_eq!(t.last_status().agent_id, agent.as_str());
    }

    #[tokio::test]
    async fn a_framework_at_its_offer_limit_is_offered_more_only_after_giving_some_back() {
        let dir = tempfile::tempdir().unwrap();
        let mut core = core_with(&dir, |c| c.offer_limit = Some(2)).await;
        let mut agents = Vec::new();
        for conn in 1..=5 {
            agents.push(new_agent(&mut core, conn, "cpus:4;mem:1024").await);
        }
        let (header, mut events) = subscribe(&mut core, "").await;
        let first = offers(&mut core, &mut events);
        assert_eq!(first.len(), 2, "two offers, the limit, of five agents");
        assert!(
            offers(&mut core, &mut events).is_empty(),
            "holding two, it gets nothing more"
        );
        // Declining one without a filter makes room for one offer.
        core.call_wait(SchedulerCall::Decline(pb::DeclineRequest {
            header: Some(header.clone()),
            offer_ids: vec![first[0].id.clone()],
            filters: Some(pb::Filters {
                refuse_seconds: Some(0.0),
            }),
        }))
        .await
        .unwrap();
        let next = offers(&mut core, &mut events);
        assert_eq!(next.len(), 1, "{next:?}");
        assert!(offers(&mut core, &mut events).is_empty());
        // Without a limit it would have had every agent at once.
        let dir = tempfile::tempdir().unwrap();
        let mut core = core_with(&dir, |_| {}).await;
        let mut agents = Vec::new();
        for conn in 1..=5 {
            agents.push(new_agent(&mut core, conn, "cpus:4;mem:1024").await);
        }
        let (_header, mut events) = subscribe(&mut core, "").await;
        assert_eq!(offers(&mut core, &mut events).len(), 5);
    }

    #[tokio::test]
    async fn refused_reregistration_keeps_the_old_connection() {
        let (_dir, mut core, agent, _old_rx, header, mut events) = running().await;
        let offers_before = offers(&mut core, &mut events);
        assert_eq!(offers_before.len(), 1);
        let registry = core.registry.clone();
        let index = core.applied_index;
        // t1 needs cpus:1; the agent now claims half a cpu.
        let (r, _rx) = register(
            &mut core,
            2,
            agent.as_str(),
            "cpus:0.5;mem:1024",
            &[(&header.framework_id, "t1", pb::TaskState::TaskRunning)],
        )
        .await;
        assert_eq!(r.unwrap_err().code(), tonic::Code::FailedPrecondition);
        assert_eq!(core.registry, registry);
        assert_eq!(core.applied_index, index, "nothing logged");
        assert_eq!(core.agents.get(&agent).map(|c| c.conn), Some(1));
        assert!(
            core.offers
                .get(&OfferId::new(offers_before[0].id.clone()).unwrap())
                .is_some()
        );
    }

    #[tokio::test]
    async fn accept_refused_by_the_registry_keeps_the_offers() {
        let dir = tempfile::tempdir().unwrap();
        let mut core = core(&dir).await;
        let (agent, mut arx) = new_agent(&mut core, 1, "cpus:4;mem:1024").await;
        let (header, mut events) = subscribe(&mut core, "").await;
        let offer = offers(&mut core, &mut events).remove(0);
        let fw = FrameworkId::new(header.framework_id.clone()).unwrap();
        // Usage the allocator does not know about fills the agent.
        let mut filler = TaskRecord {
            framework: fw.clone(),
            id: TaskId::new("filler").unwrap(),
            agent: agent.clone(),
            role: Role::default(),
            allocated: Allocated::default(),
            info: Vec::new(),
            state: pb::TaskState::TaskRunning as i32,
            status: Vec::new(),
            launched_at_ms: 0,
            running_at_ms: None,
            ended_at_ms: None,
            reported: false,
        };
        filler.allocated.unreserved = "cpus:4;mem:1024".parse().unwrap();
        core.commit(Command::LaunchTasks {
            framework: fw,
            agent,
            tasks: vec![filler],
        })
        .await
        .unwrap();
        let registry = core.registry.clone();
        let index = core.applied_index;

        let err = core
            .accept_wait(accept_request(&header, &offer.id, "t1", "cpus:1;mem:64"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition, "{err}");
        assert_eq!(core.registry, registry);
        assert_eq!(core.applied_index, index);
        let id = OfferId::new(offer.id.clone()).unwrap();
        assert!(core.offers.get(&id).is_some(), "the offer is still live");
        assert!(
            drain_agent(&mut arx).is_empty(),
            "nothing sent to the agent"
        );
    }

    #[tokio::test]
    async fn a_call_in_flight_when_leadership_is_lost_is_told_its_outcome_is_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let mut core = core(&dir).await;
        let _agent = new_agent(&mut core, 1, "cpus:4;mem:1024").await;
        let (header, mut events) = subscribe(&mut core, "").await;
        let offer = offers(&mut core, &mut events).remove(0);
        // Proposed, not applied yet, when this master steps down.
        let (tx, mut rx) = oneshot::channel();
        core.accept(
            accept_request(&header, &offer.id, "t1", "cpus:1;mem:64"),
            tx,
        );
        core.step_down();
        let err = match rx.try_recv() {
            Ok(Err(e)) => e,
            other => panic!("expected an error at once, got {other:?}"),
        };
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
        assert!(
            err.message()
                .starts_with("this master lost leadership before the command was committed"),
            "{}",
            err.message()
        );
        assert!(err.message().contains("reconcile"), "{}", err.message());
    }

    #[tokio::test]
    async fn teardown_shuts_the_framework_down_and_frees_everything_once() {
        let (_dir, mut core, agent, mut arx, header, _events) = running().await;
        core.call_wait(SchedulerCall::Teardown(pb::TeardownRequest {
            header: Some(header.clone()),
        }))
        .await
        .unwrap();
        let fw = FrameworkId::new(header.framework_id.clone()).unwrap();
        assert!(core.registry.framework(&fw).is_none());
        assert!(drain_agent(&mut arx).iter().any(
            |m| matches!(m, M::ShutdownFramework(s) if s.framework_id == header.framework_id)
        ));
        // The agent's terminal update is acknowledged by the master so the
        // agent can forget it; it frees nothing a second time.
        let before = core.registry.clone();
        deliver(
            &mut core,
            1,
            status_update(&header.framework_id, "t1", pb::TaskState::TaskKilled),
        )
        .await;
        assert_eq!(core.registry, before);
        assert!(drain_agent(&mut arx).iter().any(|m| matches!(m, M::Ack(_))));

        // A new framework is offered the whole agent.
        let (_h2, mut ev2) = subscribe(&mut core, "").await;
        let o = offers(&mut core, &mut ev2);
        assert!((offered_cpus(&o) - 4.0).abs() < 1e-9, "{o:?}");
        assert!(core.registry.agent_used(&agent).is_empty());
    }

    #[tokio::test]
    async fn operator_teardown_removes_the_framework_as_its_own_teardown_does() {
        let (_dir, mut core, _agent, mut arx, header, mut events) = running().await;
        let teardown = async |core: &mut Core, id: &str| {
            let (tx, rx) = oneshot::channel();
            core.operator(OperatorCall::Teardown(id.into()), tx).await;
            core.answered(rx).await
        };
        // Refused calls change nothing.
        let before = core.registry.clone();
        for (id, code) in [
            ("fw-unknown", tonic::Code::NotFound),
            ("", tonic::Code::InvalidArgument),
            ("a/b", tonic::Code::InvalidArgument),
        ] {
            let e = teardown(&mut core, id).await.unwrap_err();
            assert_eq!(e.code(), code, "{id:?}: {e}");
        }
        assert_eq!(core.registry, before);
        assert!(drain_agent(&mut arx).is_empty());

        teardown(&mut core, &header.framework_id).await.unwrap();
        let fw = FrameworkId::new(header.framework_id.clone()).unwrap();
        assert!(core.registry.framework(&fw).is_none());
        let task = core
            .registry
            .completed_task(&fw, &TaskId::new("t1").unwrap())
            .expect("t1 completed");
        let status = task.last_status();
        assert_eq!(status.state(), pb::TaskState::TaskKilled);
        assert_eq!(status.reason(), pb::TaskReason::OperatorTeardown);
        assert!(task.ended_at_ms.is_some());
        assert!(drain_agent(&mut arx).iter().any(
            |m| matches!(m, M::ShutdownFramework(s) if s.framework_id == header.framework_id)
        ));
        assert!(
            drain_events(&mut events).iter().any(|e| matches!(
                e,
                pb::event::Event::Error(e) if e.message == "framework removed: OPERATOR_TEARDOWN"
            )),
            "the framework is told"
        );
        // Gone: a second teardown, and a re-subscription with its id, are
        // refused.
        let e = teardown(&mut core, &header.framework_id).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
        let e = core
            .subscribe_wait(pb::FrameworkInfo {
                id: header.framework_id.clone(),
                name: "fw".into(),
                ..Default::default()
            })
            .await
            .unwrap_err();
        assert_eq!(e.code(), tonic::Code::NotFound);
    }

    #[tokio::test]
    async fn terminal_update_frees_the_task_in_the_allocator_once() {
        let (_dir, mut core, _agent, mut arx, header, mut events) = running().await;
        // The rest of the agent is on offer (and stays so): only t1's
        // resources can come back.
        let o = offers(&mut core, &mut events);
        assert!((offered_cpus(&o) - 3.0).abs() < 1e-9, "{o:?}");
        for state in [pb::TaskState::TaskFinished, pb::TaskState::TaskFinished] {
            deliver(
                &mut core,
                1,
                status_update(&header.framework_id, "t1", state),
            )
            .await;
        }
        let updates = drain_events(&mut events)
            .into_iter()
            .filter(|e| matches!(e, pb::event::Event::Update(_)))
            .count();
        assert_eq!(updates, 2, "the resend is forwarded again");
        assert!(!drain_agent(&mut arx).iter().any(|m| matches!(m, M::Ack(_))));
        let o = offers(&mut core, &mut events);
        assert!((offered_cpus(&o) - 1.0).abs() < 1e-9, "{o:?}");
    }

    #[tokio::test]
    async fn update_of_a_forgotten_task_is_forwarded_not_acknowledged() {
        let (_dir, mut core, _agent, mut arx, header, mut events) = running().await;
        deliver(
            &mut core,
            1,
            status_update(
                &header.framework_id,
                "long-gone",
                pb::TaskState::TaskFinished,
            ),
        )
        .await;
        assert!(
            drain_events(&mut events)
                .iter()
                .any(|e| matches!(e, pb::event::Event::Update(s) if s.task_id == "long-gone"))
        );
        assert!(!drain_agent(&mut arx).iter().any(|m| matches!(m, M::Ack(_))));
        // An update with no state is bad input: dropped, nothing changes.
        let before = core.registry.clone();
        deliver(
            &mut core,
            1,
            status_update(&header.framework_id, "t1", pb::TaskState::Unspecified),
        )
        .await;
        assert_eq!(core.registry, before);
    }

    #[tokio::test]
    async fn new_agent_reporting_tasks_gets_them_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut core = core(&dir).await;
        let (r, mut rx) = register(
            &mut core,
            1,
            "",
            "cpus:1",
            &[("fw-x", "orphan", pb::TaskState::TaskRunning)],
        )
        .await;
        r.unwrap();
        assert!(drain_agent(&mut rx).iter().any(
            |m| matches!(m, M::KillTask(k) if k.task_id == "orphan" && k.framework_id == "fw-x")
        ));
    }

    #[tokio::test]
    async fn kills_for_a_disconnected_agent_are_queued_once() {
        let (_dir, mut core, agent, _arx, header, _events) = running().await;
        core.agent_closed(1);
        for _ in 0..3 {
            core.kill(pb::KillRequest {
                header: Some(header.clone()),
                task_id: "t1".into(),
                grace_period_seconds: None,
            })
            .unwrap();
        }
        assert_eq!(core.pending_kills.get(&agent).map(Vec::len), Some(1));
        let (r, mut rx) = register(
            &mut core,
            2,
            agent.as_str(),
            "cpus:4;mem:1024",
            &[(&header.framework_id, "t1", pb::TaskState::TaskRunning)],
        )
        .await;
        r.unwrap();
        let kills = drain_agent(&mut rx)
            .into_iter()
            .filter(|m| matches!(m, M::KillTask(_)))
            .count();
        assert_eq!(kills, 1);
    }

    #[tokio::test]
    async fn close_of_a_superseded_framework_stream_is_ignored() {
        let dir = tempfile::tempdir().unwrap();
        let mut core = core(&dir).await;
        let (first, _ev1) = subscribe(&mut core, "").await;
        let (second, _ev2) = subscribe(&mut core, &first.framework_id).await;
        let fw = FrameworkId::new(first.framework_id.clone()).unwrap();
        core.framework_closed(&fw, &first.stream_id);
        core.settle().await;
        assert_eq!(
            core.frameworks.get(&fw).map(|c| c.stream_id.clone()),
            Some(second.stream_id.clone())
        );
        assert_eq!(
            core.registry.framework(&fw).unwrap().disconnected_at_ms,
            None
        );
        // Calls on the old stream are refused.
        let err = core
            .call_wait(SchedulerCall::Revive(pb::ReviveRequest {
                header: Some(first),
                roles: Vec::new(),
            }))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        core.framework_closed(&fw, &second.stream_id);
        core.settle().await;
        assert!(
            core.registry
                .framework(&fw)
                .unwrap()
                .disconnected_at_ms
                .is_some()
        );
    }

    #[tokio::test]
    async fn pending_work_is_replaced_listed_and_dropped_with_the_framework() {
        let (_dir, mut core, _agent, _arx, header, _events) = running().await;
        let fw = FrameworkId::new(header.framework_id.clone()).unwrap();
        let big = pb::PendingTask {
            task_id: "big".into(),
            name: "big".into(),
            resources: Some(res("cpus:1;mem:4096")),
            reason: "no offer fits: 1 short on mem".into(),
            considered: 1,
            short_on: Some(pb::DimensionCounts {
                mem: 1,
                ..Default::default()
            }),
            ..Default::default()
        };
        let update = |header: &pb::CallHeader, tasks| {
            SchedulerCall::UpdatePending(pb::UpdatePendingRequest {
                header: Some(header.clone()),
                tasks,
            })
        };
        let list = |core: &Core, framework: &str| match core
            .read(OperatorCall::Pending(pb::ListPendingRequest {
                framework_id: framework.into(),
            }))
            .unwrap()
        {
            OperatorReply::Pending(p) => p.tasks,
            other => panic!("unexpected {other:?}"),
        };
        core.call_wait(update(&header, vec![big.clone()]))
            .await
            .unwrap();
        let views = list(&core, "");
        assert_eq!(views.len(), 1);
        assert_eq!(views[0].framework_id, header.framework_id);
        assert_eq!(views[0].framework_name, "fw");
        assert!(views[0].connected);
        let task = views[0].task.clone().unwrap();
        assert_eq!(task.reason, big.reason);
        assert_eq!(task.short_on.unwrap().mem, 1);
        assert!(task.since > 0.0);
        assert_eq!(list(&core, "fw-other").len(), 0);

        // A bad list and a stale stream are refused; the set stays.
        let mut bad = big.clone();
        bad.considered = 0;
        let err = core
            .call_wait(update(&header, vec![bad]))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::InvalidArgument);
        assert!(err.message().contains("short on mem"), "{}", err.message());
        let mut stale = header.clone();
        stale.stream_id = "an-old-stream".into();
        let err = core
            .call_wait(update(&stale, Vec::new()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::FailedPrecondition);
        assert_eq!(core.pending_work.count(&fw), 1);

        // Teardown drops it.
        core.call_wait(SchedulerCall::Teardown(pb::TeardownRequest {
            header: Some(header.clone()),
        }))
        .await
        .unwrap();
        assert_eq!(core.pending_work.count(&fw), 0);
        assert!(list(&core, "").is_empty());
    }

    #[tokio::test]
    async fn a_follower_never_answers_pending_work() {
        let dir = tempfile::tempdir().unwrap();
        let mut core = core(&dir).await;
        let (header, _events) = subscribe(&mut core, "").await;
        let fw = FrameworkId::new(header.framework_id.clone()).unwrap();
        core.pending_work.replace(
            fw,
            vec![pb::PendingTask {
                task_id: "t".into(),
                ..Default::default()
            }],
            1,
        );
        core.step_down();
        assert!(
            core.pending_work
                .views(None, |_| Some((String::new(), true)))
                .is_empty()
        );
        let (tx, rx) = oneshot::channel();
        core.handle(Request::Operator {
            call: OperatorCall::Pending(pb::ListPendingRequest::default()),
            stale_ok: true,
            reply: tx,
        })
        .await;
        let err = rx.await.unwrap().unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unavailable, "{err}");
    }
}
