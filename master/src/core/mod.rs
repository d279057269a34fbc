//! The master's core: one task that owns the registry, the allocator, the
//! offer book and every framework and agent connection.
//!
//! gRPC handlers ([`crate::service`]) turn calls into [`Request`]s and await
//! the reply; the core handles one request at a time, so there are no locks.
//! A call that changes the registry is checked, proposed to Raft and parked
//! ([`Core::propose`]); the core goes on with the next request, so the
//! commands of concurrent calls share Raft rounds and fsyncs. When Raft
//! commits the entry and the core applies it, the parked continuation (a
//! [`then::Then`], plain data) acts on the effects (sends the tasks,
//! updates the allocator) and answers the caller. Entries are applied in
//! log order, so effects follow the order in which commands were proposed.
//!
//! The core is a state machine and a thin shell. The shell (the run loop
//! and [`shell`]) owns the channels, the Raft handle and the clock: it
//! parks each request's reply channel and hands the handlers an
//! [`Input`] that names the caller by a [`shell::Caller`] token. Handlers
//! do no channel IO: they push what they do as [`Action`]s: answers
//! ([`Action::Reply`]; the answer to a Subscribe or Register opens its
//! stream, SUBSCRIBED or REGISTERED first), events and messages
//! ([`Action::ToFramework`], [`Action::ToAgent`]), the end of a stream
//! with its last message ([`Action::CloseFramework`],
//! [`Action::CloseAgent`]) and snapshots for Raft ([`Action::Snapshot`]).
//! After each input the run loop executes the pushed actions in order,
//! before it takes the next input, so what a handler sends and answers is
//! data a test can compare. A send finds the stream open when it is
//! executed; a full or closed stream disconnects its framework or agent
//! then, as an inline send did. The core refuses calls with a
//! [`CallError`]; only [`crate::service`] turns one into a gRPC status.
//! Nor do handlers await Raft: a linearizable read or a membership change
//! is handed to Raft as an action ([`Action::ReadIndex`],
//! [`Action::ChangeMembership`]) and parked; it is answered when Raft
//! applies it, or refuses it (the shell's [`RaftReport`]). Nor does taking
//! over as leader: its no-op barrier is a proposal like any other, whose
//! continuation ([`then::Then::TakeOver`]) makes the core lead once the
//! no-op is applied; inputs that arrive meanwhile wait in the core, in
//! order, and are handled then (as a leader, or as a follower if the
//! barrier failed). The run loop awaits nothing but its inputs. It also
//! reads the clock, once per input ([`Clock`]), and handlers take their
//! time from it.
//!
//! One file per concern, each an `impl Core` block: `mod.rs` the types, the
//! run loop and request dispatch; `shell` the channels and the execution
//! of actions; `leadership` taking over, stepping down and answering as a
//! follower; `replicate` proposals, applying what Raft commits, reads and
//! snapshots; `then` the continuations of proposals; `frameworks`
//! subscriptions and streams; `calls` the scheduler calls but Accept,
//! which is `accept`; `agents` registration and connections; `status`
//! agents' status updates; `timers` periodic work and allocation;
//! `operator` operator calls; `membership` Raft membership changes;
//! `views` what operators read; `validate` the checks of a task's own
//! fields.

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
use tokio::sync::{mpsc, oneshot, watch};
use tracing::{debug, error, info, warn};

mod accept;
mod agents;
mod calls;
mod frameworks;
mod kv;
mod leadership;
mod membership;
mod operator;
mod replicate;
mod shell;
mod status;
#[cfg(test)]
mod tests;
mod then;
mod timers;
mod validate;
mod views;

pub(crate) use self::kv::{KvBatch, KvCall, KvReply, entry_view as kv_entry_view};
use self::kv::{KvThen, LeaseTimer};
use self::leadership::TakingOver;
use self::membership::PendingChange;
use self::shell::{Caller, Io, RaftReport, Registered, Reply, Subscribed};
use self::then::{RemovalReply, Then};
use self::validate::{check_attributes, validate_task};
use crate::config::MasterConfig;
use crate::error::{ApplyError, CallError, MasterError};
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
pub(crate) type EventTx = mpsc::Sender<Result<pb::Event, CallError>>;
/// An agent's message sender.
pub(crate) type AgentTx = mpsc::Sender<Result<pb::MasterMessage, CallError>>;

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
#[derive(Debug, PartialEq)]
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
    /// A call of the frameworks' key-value store.
    Kv(KvCall),
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
        ) || matches!(self, Self::Kv(call) if call.is_read())
    }
}

/// Reply to an operator call.
#[derive(Debug, PartialEq)]
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
    Kv(KvReply),
}

/// A successful subscription.
#[derive(Debug)]
pub(crate) struct Subscription {
    pub framework: FrameworkId,
    pub stream_id: String,
    pub events: mpsc::Receiver<Result<pb::Event, CallError>>,
}

/// What the gRPC layer asks of the core.
#[derive(Debug)]
pub(crate) enum Request {
    Subscribe {
        info: pb::FrameworkInfo,
        reply: oneshot::Sender<Result<Subscription, CallError>>,
    },
    Call {
        call: SchedulerCall,
        reply: oneshot::Sender<Result<CallReply, CallError>>,
    },
    AgentRegister {
        conn: u64,
        register: pb::Register,
        tx: AgentTx,
        reply: oneshot::Sender<Result<(), CallError>>,
    },
    Operator {
        call: OperatorCall,
        /// The caller accepts a possibly stale read from any master.
        stale_ok: bool,
        reply: oneshot::Sender<Result<OperatorReply, CallError>>,
    },
    Stream(StreamEvent),
}

/// What the streams of frameworks and agents tell the core; nobody waits
/// for an answer.
#[derive(Debug)]
pub(crate) enum StreamEvent {
    FrameworkStreamClosed {
        framework: FrameworkId,
        stream_id: String,
    },
    AgentMessage {
        conn: u64,
        message: pb::AgentMessage,
    },
    AgentClosed {
        conn: u64,
    },
}

/// A [`Request`] as the handlers take it: its reply channel (and an
/// agent's stream) parked with the shell, which names the caller by a
/// token ([`Core::park`]).
#[derive(Debug)]
pub(super) enum Input {
    Subscribe(pb::FrameworkInfo, Caller<Subscription>),
    Call(SchedulerCall, Caller<CallReply>),
    /// A Register on connection `conn`, whose stream waits with the shell.
    AgentRegister {
        conn: u64,
        register: pb::Register,
    },
    /// An operator call, `stale_ok` as in [`Request::Operator`].
    Operator(OperatorCall, bool, Caller<OperatorReply>),
    Stream(StreamEvent),
}

/// A framework's current stream (its sender is the shell's).
struct FrameworkConn {
    stream_id: String,
    /// When this stream subscribed (wall clock, ms since the Unix epoch).
    connected_at_ms: u64,
}

/// An agent's current connection (its stream's sender is the shell's).
struct AgentConn {
    conn: u64,
    ping_seq: u64,
    /// When this stream registered (wall clock, ms since the Unix epoch).
    connected_at_ms: u64,
}

/// How long a proposal may take to commit before the caller is told.
const COMMIT_TIMEOUT: Duration = Duration::from_secs(10);

/// A linearizable operator read waiting for its ReadIndex.
struct PendingRead {
    call: OperatorCall,
    to: Caller<OperatorReply>,
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
    /// The membership change waiting to be applied (one at a time).
    membership: Option<PendingChange>,
    /// Frameworks with a subscription being committed, and how many.
    subscribing: HashMap<FrameworkId, usize>,
    /// The term this core leads in, once it has taken over (applied every
    /// earlier entry and rebuilt the allocator). `None` on followers.
    leading: Option<u64>,
    /// The takeover under way: Raft made this master leader and the no-op
    /// barrier is proposed, not applied yet. `None` otherwise.
    taking_over: Option<TakingOver>,
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
    /// When each held lease of the key-value store expires unless renewed:
    /// the leader's soft state ([`kv`]).
    lease_timers: HashMap<(String, String), LeaseTimer>,
    /// IO the handlers asked for, executed by the run loop.
    actions: Vec<Action>,
    /// The channels: callers' reply channels and streams' senders.
    io: Io,
    /// The time of the input being handled.
    clock: Clock,
}

/// The time the core handles an input at: read once by the shell (the run
/// loop) before each input, so every decision about one input sees one
/// time, and tests can set it.
#[derive(Debug, Clone, Copy)]
struct Clock {
    /// Monotonic: deadlines, timeouts, allocation spacing and the
    /// allocator's [`Time`] (measured from [`Core::epoch`]).
    instant: Instant,
    /// Wall clock, ms since the Unix epoch: times recorded in the registry
    /// and shown to operators.
    unix_ms: u64,
}

impl Clock {
    /// The time now, from the system's clocks.
    fn read() -> Self {
        Self {
            instant: Instant::now(),
            unix_ms: unix_ms(),
        }
    }
}

/// IO a handler leaves to the shell (the run loop), which executes it
/// after the handler returns: handlers decide, the shell acts.
// Actions are drained after every input, so a few hundred bytes per send
// for a while cost less than boxing each message.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, PartialEq)]
enum Action {
    /// Queue an event on the framework's stream open when the action is
    /// executed (dropped if it has none); a full or closed stream
    /// disconnects the framework.
    ToFramework {
        framework: FrameworkId,
        event: pb::event::Event,
    },
    /// Queue a message on the agent's stream open when the action is
    /// executed (dropped if it has none); a full or closed stream counts as
    /// the agent's connection closing.
    ToAgent {
        agent: AgentId,
        message: pb::master_message::Message,
    },
    /// Answer a caller (see [`Reply`]: an answer accepting a Subscribe or
    /// a Register opens the stream).
    Reply(Reply),
    /// End the framework's stream `stream_id` if it is still open: queue
    /// `last`, if any, and drop the sender.
    CloseFramework {
        framework: FrameworkId,
        stream_id: String,
        last: Option<Result<pb::event::Event, CallError>>,
    },
    /// End the agent's stream on connection `conn` if it is still open.
    CloseAgent { agent: AgentId, conn: u64 },
    /// Ask Raft for a ReadIndex with this context; it comes back as
    /// [`Applied::ReadReady`], or as [`RaftReport::ReadRefused`].
    ReadIndex { ctx: Vec<u8> },
    /// Propose a membership change to Raft; it comes back as
    /// [`Applied::ConfChanged`], or as [`RaftReport::MembershipRefused`]
    /// naming `seq`.
    ChangeMembership {
        seq: u64,
        change: raft::eraftpb::ConfChangeV2,
        context: Vec<u8>,
    },
    /// Hand Raft a snapshot of the registry as of log index `index`, so it
    /// can compact the log before it (and send it to peers that fell
    /// behind). Executed on a task of its own: awaiting it in the loop
    /// could deadlock with the Raft node waiting for room in the applied
    /// channel.
    Snapshot {
        /// The applied index the snapshot was taken at.
        index: u64,
        /// The encoded registry.
        data: Vec<u8>,
    },
    /// Tell the key-value store's watchers what changed.
    KvChanged(Arc<KvBatch>),
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
        let clock = Clock::read();
        let now = clock.instant;
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
            membership: None,
            subscribing: HashMap::new(),
            leading: None,
            taking_over: None,
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
            lease_timers: HashMap::new(),
            actions: Vec::new(),
            io: Io::new(),
            clock,
        };
        // Members added after the bootstrap are known from the replicated
        // state (the snapshot it was loaded from).
        core.learn_members();
        core
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
            self.execute_actions();
            if let Some(e) = self.fatal.take() {
                error!("master stopping: {e}");
                return Err(e);
            }
            tokio::select! {
                biased;
                _ = &mut stop => break,
                // Each arm reads the clock once, when its input arrived.
                applied = self.applied_rx.recv() => match applied {
                    Some(a) => {
                        self.clock = Clock::read();
                        self.apply(a);
                    }
                    None => {
                        self.fatal = Some(MasterError::Server("the raft node stopped".into()));
                    }
                },
                changed = self.raft_status.changed() => match changed {
                    Ok(()) => {
                        self.clock = Clock::read();
                        self.on_raft_status()
                    }
                    Err(_) => {
                        self.fatal = Some(MasterError::Server("the raft node stopped".into()));
                    }
                },
                Some(report) = self.io.reports_rx.recv() => {
                    self.clock = Clock::read();
                    self.on_raft_report(report);
                }
                // The tick comes before requests: under a steady stream of
                // requests a biased select would otherwise never reach it,
                // and pings, heartbeats, expiries and allocation would stop.
                _ = tick.tick() => if self.leading.is_some() || self.taking_over.is_some() {
                    self.clock = Clock::read();
                    self.tick(requests.is_empty())
                },
                req = requests.recv() => match req {
                    Some(req) => {
                        self.clock = Clock::read();
                        self.request(req)
                    }
                    None => break,
                },
            }
        }
        info!("master core stopped");
        Ok(())
    }

    /// Takes a request: the shell parks its caller, a handler handles it.
    pub(super) fn request(&mut self, req: Request) {
        if let Some(input) = self.park(req) {
            self.handle(input);
        }
    }

    fn handle(&mut self, input: Input) {
        if let Some(taking_over) = &mut self.taking_over {
            // Handled once the takeover ends, as a leader if it succeeds.
            taking_over.deferred.push_back(input);
            return;
        }
        if self.leading.is_none() {
            self.handle_as_follower(input);
            return;
        }
        match input {
            Input::Subscribe(info, to) => self.subscribe(info, to),
            Input::Call(call, to) => self.call(call, to),
            Input::AgentRegister { conn, register } => self.register_agent(conn, register),
            Input::Stream(StreamEvent::FrameworkStreamClosed {
                framework,
                stream_id,
            }) => self.framework_closed(&framework, &stream_id),
            Input::Stream(StreamEvent::AgentMessage { conn, message }) => {
                self.agent_message(conn, message)
            }
            Input::Stream(StreamEvent::AgentClosed { conn }) => self.agent_closed(conn),
            Input::Operator(call, stale_ok, to) => {
                // GetLeader and ListMembers tell this master's own view and
                // need no barrier (a leader cut off from the others would
                // otherwise answer them only when its read times out).
                let own_view = matches!(call, OperatorCall::Leader | OperatorCall::Members);
                if !call.is_read() {
                    return self.operator(call, to);
                }
                if stale_ok || own_view {
                    let result = self.read(call);
                    self.reply(Reply::Operator { to, result });
                } else {
                    self.start_read(call, to);
                }
            }
        }
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

fn offer_ids(ids: &[String]) -> Result<Vec<OfferId>, CallError> {
    ids.iter()
        .map(|s| OfferId::new(s.clone()).map_err(|e| CallError::invalid_argument(e.to_string())))
        .collect()
}

/// Validates a duration given in seconds on the wire.
fn seconds(name: &str, s: f64) -> Result<Duration, CallError> {
    if !s.is_finite() || !(0.0..=MAX_SECONDS).contains(&s) {
        return Err(CallError::invalid_argument(format!(
            "{name} must be a finite number of seconds between 0 and {MAX_SECONDS}, got {s}"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

/// A random u64 (not cryptographic; for ids that must differ across runs).
fn rand_u64() -> u64 {
    let bytes = uuid::Uuid::new_v4().into_bytes();
    u64::from_le_bytes([
        bytes[0], bytes[1], bytes[2], bytes[3], bytes[4], bytes[5], bytes[6], bytes[7],
    ])
}

/// Wall-clock milliseconds since the Unix epoch.
pub(crate) fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}
