//! The loop around `raft::RawNode`: ticks, inbound messages, proposals,
//! and the Ready contract.
//!
//! One tokio task owns the `RawNode` and its [`RaftStorage`]; everything
//! else talks to it through a [`RaftHandle`]. Each turn of the loop takes
//! one event (a tick, a batch of inbound messages, or up to
//! [`NodeConfig::max_batch`] queued requests) and then handles the Ready,
//! strictly in raft-rs's order:
//!
//! 1. send `messages()` (a leader may send before persisting);
//! 2. hand the committed entries to the state machine ([`Applied`]);
//!    conf changes are applied to raft and recorded in storage;
//! 3. persist the snapshot, the new entries and the hard state with ONE
//!    [`RaftStorage::persist_ready`] call (one fsynced transaction), and
//!    emit [`Applied::Snapshot`] if there was a snapshot;
//! 4. send `persisted_messages()`; `advance`;
//! 5. the light ready: record the commit index, send its messages, hand
//!    its committed entries over; `advance_apply`.
//!
//! Many proposals are folded into one Ready, so they share one fsync.
//! The [`Applied`] channel is bounded: when the state machine falls behind,
//! the loop waits (it stops ticking too, so a slow state machine may cost
//! this node its leadership rather than memory). A storage error stops the
//! loop: memory and disk would disagree, and raft's safety depends on the
//! disk.

use std::collections::VecDeque;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use protobuf::Message as _;
use raft::eraftpb::{ConfChange, ConfChangeV2, Entry, EntryType, Message, MessageType};
use raft::{RawNode, SnapshotStatus, StateRole};
use tokio::sync::{mpsc, oneshot, watch};
use tokio::task::JoinHandle;

use super::Transport;
use super::storage::RaftStorage;
use crate::error::MasterError;

/// Capacity of the [`Applied`] channel.
pub const APPLIED_CAPACITY: usize = 4096;
/// Capacity of the inbound raft message queue.
const INBOUND_CAPACITY: usize = 4096;
/// Capacity of the request (proposal) queue.
const REQUEST_CAPACITY: usize = 4096;
/// Most inbound messages stepped before one Ready is handled.
const MAX_INBOUND_BATCH: usize = 512;

/// Settings of a raft node.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    /// This node's raft id (non-zero, unique in the cluster).
    pub id: u64,
    /// Ticks without hearing from a leader before a follower campaigns
    /// (randomized in `[election_tick, 2 * election_tick)`).
    pub election_tick: usize,
    /// Ticks between a leader's heartbeats.
    pub heartbeat_tick: usize,
    /// Length of one tick.
    pub tick: Duration,
    /// Most bytes of entries in one append message.
    pub max_size_per_msg: u64,
    /// Most append messages in flight to one follower.
    pub max_inflight_msgs: usize,
    /// Most queued requests (proposals) handled before one Ready, so that
    /// they share one fsync.
    pub max_batch: usize,
}

impl NodeConfig {
    /// The defaults for node `id`: 100 ms ticks, election after 10 ticks,
    /// heartbeat every 2, 1 MiB messages, 256 in flight, batches of 1024.
    #[must_use]
    pub fn new(id: u64) -> Self {
        Self {
            id,
            election_tick: 10,
            heartbeat_tick: 2,
            tick: Duration::from_millis(100),
            max_size_per_msg: 1024 * 1024,
            max_inflight_msgs: 256,
            max_batch: 1024,
        }
    }

    /// The election timeout in wall-clock time (the lower bound).
    #[must_use]
    pub fn election_timeout(&self) -> Duration {
        self.tick
            .saturating_mul(u32::try_from(self.election_tick).unwrap_or(u32::MAX))
    }
}

/// What the state machine (the master core) receives, strictly in log
/// order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    /// A committed normal entry. Empty entries (a new leader appends one)
    /// are not delivered, but they count as applied.
    Entry {
        /// Log index.
        index: u64,
        /// Term of the entry.
        term: u64,
        /// The proposed bytes.
        data: Vec<u8>,
    },
    /// Restore the state machine from this snapshot (this node fell behind
    /// the leader's compacted log, or joined the cluster). Empty data at
    /// index [`super::storage::INIT_INDEX`] means the empty initial state.
    Snapshot {
        /// Index the snapshot was taken at.
        index: u64,
        /// The serialized state machine.
        data: Vec<u8>,
    },
    /// The node applied a membership change.
    ConfChanged {
        /// Log index of the conf-change entry.
        index: u64,
        /// Voters after the change, sorted.
        voters: Vec<u64>,
        /// Learners after the change, sorted.
        learners: Vec<u64>,
        /// The proposer's context (e.g. the new member's address).
        context: Vec<u8>,
    },
    /// A peer needs a snapshot newer than the stored one (it fell behind,
    /// or it just joined): the state machine should hand one over with
    /// [`RaftHandle::compact`] at `index` (everything up to `index` has been
    /// delivered before this item). Do not await `compact` on the task
    /// that drains this channel while the channel may be full: spawn it.
    SnapshotWanted {
        /// The last index delivered before this item.
        index: u64,
    },
    /// A ReadIndex request: safe to answer now that everything before this
    /// item is applied (the node delivers it only after the entries up to
    /// `index`).
    ReadReady {
        /// The context given to [`RaftHandle::read_index`].
        ctx: Vec<u8>,
        /// The commit index the read is linearized at.
        index: u64,
    },
}

/// A node's view of the cluster, published after every Ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Status {
    /// This node's id.
    pub id: u64,
    /// The leader this node knows of (0: none).
    pub leader_id: u64,
    /// Current term.
    pub term: u64,
    /// This node's role.
    pub role: StateRole,
    /// Commit index.
    pub commit: u64,
    /// Index of the last entry handed to the [`Applied`] channel.
    pub applied: u64,
    /// Voters (incoming configuration).
    pub voters: Vec<u64>,
    /// Learners.
    pub learners: Vec<u64>,
    /// On a leader, the highest log index known to be replicated on each
    /// member (this node included), by id; empty on other nodes.
    pub matched: Vec<(u64, u64)>,
    /// Readys handled so far (each one at most one fsync).
    pub readies: u64,
    /// Whether the loop is still running.
    pub running: bool,
}

/// Why a request to the node was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProposeError {
    /// This node is not the leader; `leader_id` is the leader it knows of
    /// (0: none).
    #[error("not the raft leader (leader: {leader_id})")]
    NotLeader {
        /// The known leader, 0 if none.
        leader_id: u64,
    },
    /// The raft loop has stopped.
    #[error("the raft node has stopped")]
    Stopped,
    /// Raft refused the request.
    #[error("raft: {0}")]
    Raft(String),
}

enum Request {
    Propose {
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    ConfChange {
        cc: ConfChangeV2,
        context: Vec<u8>,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    ReadIndex {
        ctx: Vec<u8>,
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
    Compact {
        index: u64,
        data: Vec<u8>,
        reply: oneshot::Sender<Result<(), MasterError>>,
    },
    Campaign {
        reply: oneshot::Sender<Result<(), ProposeError>>,
    },
}

/// The way into a running raft node. Cheap to clone.
#[derive(Clone, Debug)]
pub struct RaftHandle {
    id: u64,
    requests: mpsc::Sender<Request>,
    inbound: mpsc::Sender<Message>,
    status: watch::Receiver<Status>,
}

impl std::fmt::Debug for Request {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Request::Propose { .. } => "Propose",
            Request::ConfChange { .. } => "ConfChange",
            Request::ReadIndex { .. } => "ReadIndex",
            Request::Compact { .. } => "Compact",
            Request::Campaign { .. } => "Campaign",
        })
    }
}

impl RaftHandle {
    /// This node's raft id.
    #[must_use]
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Proposes `data` for the log. `Ok` means this node is the leader and
    /// appended it; the caller learns that it committed when an
    /// [`Applied::Entry`] with the same data comes out (it may never, if
    /// leadership is lost first).
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] on a follower, [`ProposeError::Raft`] if
    /// raft drops the proposal, [`ProposeError::Stopped`] if the loop ended.
    pub async fn propose(&self, data: Vec<u8>) -> Result<(), ProposeError> {
        self.ask(|reply| Request::Propose { data, reply }).await
    }

    /// Queues a proposal without waiting for the node to take it, so that
    /// many proposals made in a row share one Ready (and one fsync). The
    /// caller learns the outcome only by seeing the entry applied; a
    /// proposal refused (not the leader) or dropped (queue full: returns
    /// false) is simply never applied.
    pub fn propose_detached(&self, data: Vec<u8>) -> bool {
        let (reply, _ignored) = oneshot::channel();
        self.requests
            .try_send(Request::Propose { data, reply })
            .is_ok()
    }

    /// Proposes a membership change on the leader. `context` travels with
    /// it and comes back in [`Applied::ConfChanged`]. A change with several
    /// steps goes through joint consensus, which raft leaves automatically
    /// unless `cc` asks otherwise.
    ///
    /// # Errors
    /// As [`Self::propose`]; raft also refuses a change while another is
    /// pending.
    pub async fn propose_conf_change(
        &self,
        cc: ConfChangeV2,
        context: Vec<u8>,
    ) -> Result<(), ProposeError> {
        self.ask(|reply| Request::ConfChange { cc, context, reply })
            .await
    }

    /// Starts a linearizable read on the leader; the answer arrives as
    /// [`Applied::ReadReady`] with the same `ctx` (or never, if leadership
    /// is lost first: callers time out).
    ///
    /// # Errors
    /// [`ProposeError::NotLeader`] on a follower, [`ProposeError::Stopped`]
    /// if the loop ended.
    pub async fn read_index(&self, ctx: Vec<u8>) -> Result<(), ProposeError> {
        self.ask(|reply| Request::ReadIndex { ctx, reply }).await
    }

    /// Hands over a state-machine snapshot taken after applying `index`:
    /// stored with the term and membership at `index`, and the log up to
    /// `index` is dropped. Ignored if `index` is not past the stored
    /// snapshot.
    ///
    /// # Errors
    /// [`MasterError::Store`] if `index` was not applied yet or the write
    /// fails; [`MasterError::Server`] if the loop ended.
    pub async fn compact(&self, index: u64, data: Vec<u8>) -> Result<(), MasterError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(Request::Compact { index, data, reply })
            .await
            .map_err(|_| stopped())?;
        rx.await.map_err(|_| stopped())?
    }

    /// Starts an election now (instead of waiting for the election timeout).
    ///
    /// # Errors
    /// [`ProposeError::Stopped`] if the loop ended, [`ProposeError::Raft`]
    /// if raft refuses.
    pub async fn campaign(&self) -> Result<(), ProposeError> {
        self.ask(|reply| Request::Campaign { reply }).await
    }

    /// The node's status, updated after every Ready.
    #[must_use]
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Hands an inbound message (from the transport) to the node, waiting
    /// for room in its queue. Dropped silently if the loop has ended.
    pub async fn step(&self, msg: Message) {
        let _ = self.inbound.send(msg).await;
    }

    /// Hands an inbound message to the node without waiting; returns
    /// `false` if it was dropped because the queue is full or the loop has
    /// ended (raft retransmits).
    #[must_use]
    pub fn try_step(&self, msg: Message) -> bool {
        self.inbound.try_send(msg).is_ok()
    }

    async fn ask(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<(), ProposeError>>) -> Request,
    ) -> Result<(), ProposeError> {
        let (reply, rx) = oneshot::channel();
        self.requests
            .send(make(reply))
            .await
            .map_err(|_| ProposeError::Stopped)?;
        rx.await.map_err(|_| ProposeError::Stopped)?
    }
}

fn stopped() -> MasterError {
    MasterError::Server("the raft node has stopped".into())
}

/// A stand-in for a raft node, for tests of the code above Raft without
/// storage, sockets or timers: the test takes what was proposed
/// ([`FakeNode::proposed`]) and sets the status the handle reports.
#[cfg(test)]
#[derive(Debug)]
pub(crate) struct FakeNode {
    requests: mpsc::Receiver<Request>,
    _inbound: mpsc::Receiver<Message>,
    /// What the handle's status says.
    pub(crate) status: watch::Sender<Status>,
}

#[cfg(test)]
impl FakeNode {
    /// A handle whose node is this fake, reporting `status`.
    pub(crate) fn new(status: Status) -> (RaftHandle, Self) {
        let (requests_tx, requests) = mpsc::channel(1024);
        let (inbound_tx, inbound) = mpsc::channel(1);
        let (status_tx, status_rx) = watch::channel(status.clone());
        let handle = RaftHandle {
            id: status.id,
            requests: requests_tx,
            inbound: inbound_tx,
            status: status_rx,
        };
        let node = Self {
            requests,
            _inbound: inbound,
            status: status_tx,
        };
        (handle, node)
    }

    /// The entries proposed since the last call, in order (proposals that
    /// wait for the node are told it took them). Panics on any other
    /// request: a test that expects one does not use this.
    pub(crate) fn proposed(&mut self) -> Vec<Vec<u8>> {
        let mut out = Vec::new();
        while let Ok(request) = self.requests.try_recv() {
            match request {
                Request::Propose { data, reply } => {
                    let _ = reply.send(Ok(()));
                    out.push(data);
                }
                other => panic!("the fake raft node got {other:?}"),
            }
        }
        out
    }
}

/// Starts the raft loop for `storage` (which must be initialized, or empty
/// for a node that waits to be added to a cluster) and returns its handle,
/// the stream of [`Applied`] items and the task. The loop ends when
/// `shutdown` completes, or on a storage error (logged), or when the
/// [`Applied`] receiver is dropped.
///
/// After a restart the node re-delivers every committed entry after the
/// stored snapshot: the state machine restores from
/// [`RaftStorage::snapshot_data`] first and then applies what comes out.
///
/// # Errors
/// [`MasterError::Config`] if the raft configuration is invalid or raft
/// cannot start on this storage.
pub fn start(
    config: NodeConfig,
    storage: RaftStorage,
    transport: Arc<dyn Transport>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(RaftHandle, mpsc::Receiver<Applied>, JoinHandle<()>), MasterError> {
    let applied = storage.snapshot_index();
    let raft_config = raft::Config {
        id: config.id,
        election_tick: config.election_tick,
        heartbeat_tick: config.heartbeat_tick,
        applied,
        max_size_per_msg: config.max_size_per_msg,
        max_inflight_msgs: config.max_inflight_msgs,
        check_quorum: true,
        pre_vote: true,
        ..raft::Config::default()
    };
    raft_config
        .validate()
        .map_err(|e| MasterError::Config(format!("raft: {e}")))?;
    let raw = RawNode::new(&raft_config, storage.clone(), &super::logger())
        .map_err(|e| MasterError::Config(format!("starting raft node {}: {e}", config.id)))?;

    let (req_tx, req_rx) = mpsc::channel(REQUEST_CAPACITY);
    let (in_tx, in_rx) = mpsc::channel(INBOUND_CAPACITY);
    let (applied_tx, applied_rx) = mpsc::channel(APPLIED_CAPACITY);
    let mut node = Node {
        raw,
        storage,
        transport,
        config,
        applied_tx,
        applied,
        pending_reads: VecDeque::new(),
        snapshots_sent: Vec::new(),
        readies: 0,
        snapshot_wanted_at: None,
        shutdown: Box::pin(shutdown),
        status_tx: None,
    };
    let (status_tx, status_rx) = watch::channel(node.status(true));
    node.status_tx = Some(status_tx);
    let handle = RaftHandle {
        id: node.config.id,
        requests: req_tx,
        inbound: in_tx,
        status: status_rx,
    };
    let task = tokio::spawn(node.run(req_rx, in_rx));
    Ok((handle, applied_rx, task))
}

/// The loop ended; why is logged where it happened.
struct Stop;

struct Node {
    raw: RawNode<RaftStorage>,
    storage: RaftStorage,
    transport: Arc<dyn Transport>,
    config: NodeConfig,
    applied_tx: mpsc::Sender<Applied>,
    /// Last index handed to the state machine.
    applied: u64,
    /// Read states waiting for `applied` to reach their index.
    pending_reads: VecDeque<raft::ReadState>,
    /// Peers a snapshot was sent to during the current Ready.
    snapshots_sent: Vec<u64>,
    readies: u64,
    /// When [`Applied::SnapshotWanted`] was last emitted.
    snapshot_wanted_at: Option<tokio::time::Instant>,
    shutdown: Pin<Box<dyn Future<Output = ()> + Send>>,
    status_tx: Option<watch::Sender<Status>>,
}

impl Node {
    async fn run(
        mut self,
        mut requests: mpsc::Receiver<Request>,
        mut inbound: mpsc::Receiver<Message>,
    ) {
        let id = self.config.id;
        tracing::info!(id, applied = self.applied, "raft node started");
        let mut ticker = tokio::time::interval(self.config.tick);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut requests_open = true;
        let mut inbound_open = true;
        loop {
            tokio::select! {
                biased;
                () = &mut self.shutdown => break,
                _ = ticker.tick() => {
                    self.raw.tick();
                }
                msg = inbound.recv(), if inbound_open => match msg {
                    Some(msg) => {
                        self.step(msg);
                        for _ in 1..MAX_INBOUND_BATCH {
                            match inbound.try_recv() {
                                Ok(msg) => self.step(msg),
                                Err(_) => break,
                            }
                        }
                    }
                    None => inbound_open = false,
                },
                req = requests.recv(), if requests_open => match req {
                    Some(req) => {
                        if self.handle(req).is_err() {
                            break;
                        }
                        for _ in 1..self.config.max_batch.max(1) {
                            match requests.try_recv() {
                                Ok(req) => {
                                    if self.handle(req).is_err() {
                                        break;
                                    }
                                }
                                Err(_) => break,
                            }
                        }
                    }
                    None => requests_open = false,
                },
            }
            if self.on_ready().await.is_err() || self.ask_for_snapshot().await.is_err() {
                break;
            }
            self.publish(true);
        }
        self.publish(false);
        tracing::info!(id, "raft node stopped");
    }

    fn step(&mut self, msg: Message) {
        let (from, ty) = (msg.from, msg.get_msg_type());
        if let Err(e) = self.raw.step(msg) {
            tracing::debug!(id = self.config.id, from, ?ty, error = %e, "raft message not stepped");
        }
    }

    fn not_leader(&self) -> Option<ProposeError> {
        (self.raw.raft.state != StateRole::Leader).then_some(ProposeError::NotLeader {
            leader_id: self.raw.raft.leader_id,
        })
    }

    /// Handles one request. `Err` only for a fatal storage error.
    fn handle(&mut self, req: Request) -> Result<(), Stop> {
        match req {
            Request::Propose { data, reply } => {
                let result = match self.not_leader() {
                    Some(e) => Err(e),
                    None => self
                        .raw
                        .propose(Vec::new(), data)
                        .map_err(|e| ProposeError::Raft(e.to_string())),
                };
                let _ = reply.send(result);
            }
            Request::ConfChange {
                mut cc,
                context,
                reply,
            } => {
                let result = match self.not_leader() {
                    Some(e) => Err(e),
                    None => {
                        cc.context = context.clone().into();
                        self.raw
                            .propose_conf_change(context, cc)
                            .map_err(|e| ProposeError::Raft(e.to_string()))
                    }
                };
                let _ = reply.send(result);
            }
            Request::ReadIndex { ctx, reply } => {
                let result = match self.not_leader() {
                    Some(e) => Err(e),
                    None => {
                        self.raw.read_index(ctx);
                        Ok(())
                    }
                };
                let _ = reply.send(result);
            }
            Request::Campaign { reply } => {
                let result = self
                    .raw
                    .campaign()
                    .map_err(|e| ProposeError::Raft(e.to_string()));
                let _ = reply.send(result);
            }
            Request::Compact { index, data, reply } => {
                if index > self.applied {
                    let _ = reply.send(Err(MasterError::Store {
                        path: self.storage.path().to_path_buf(),
                        message: format!(
                            "cannot compact to {index}: only {} is applied",
                            self.applied
                        ),
                    }));
                    return Ok(());
                }
                match self.storage.compact(index, data) {
                    Ok(done) => {
                        if done {
                            tracing::info!(id = self.config.id, index, "raft log compacted");
                            self.snapshot_wanted_at = None;
                        }
                        let _ = reply.send(Ok(()));
                    }
                    Err(e) => {
                        tracing::error!(id = self.config.id, error = %e, "compacting the raft log failed; stopping");
                        let _ = reply.send(Err(e));
                        return Err(Stop);
                    }
                }
            }
        }
        Ok(())
    }

    /// Handles one Ready (if any) per raft-rs's contract.
    async fn on_ready(&mut self) -> Result<(), Stop> {
        if !self.raw.has_ready() {
            return Ok(());
        }
        self.readies += 1;
        let mut rd = self.raw.ready();

        // 1. A leader sends before persisting (raft thesis 10.2.1).
        self.send(rd.take_messages());

        // 2. Committed entries (already persisted; none if there is a
        //    snapshot).
        self.apply_entries(rd.take_committed_entries()).await?;
        self.pending_reads.extend(rd.take_read_states());

        // 3. One fsynced transaction for the snapshot, entries, hard state.
        let snapshot = (!rd.snapshot().is_empty()).then(|| rd.snapshot().clone());
        if let Err(e) = self
            .storage
            .persist_ready(snapshot.as_ref(), rd.entries(), rd.hs())
        {
            tracing::error!(id = self.config.id, error = %e, "persisting a raft ready failed; stopping");
            return Err(Stop);
        }
        if let Some(snap) = snapshot {
            let index = snap.get_metadata().index;
            tracing::info!(
                id = self.config.id,
                index,
                "restoring from a leader's snapshot"
            );
            self.emit(Applied::Snapshot {
                index,
                data: snap.data.to_vec(),
            })
            .await?;
            self.applied = self.applied.max(index);
        }

        // 4. Messages that must follow persistence.
        self.send(rd.take_persisted_messages());
        let mut light = self.raw.advance(rd);

        // 5. The light ready.
        if let Some(commit) = light.commit_index()
            && let Err(e) = self.storage.set_commit(commit)
        {
            tracing::error!(id = self.config.id, error = %e, "persisting the commit index failed; stopping");
            return Err(Stop);
        }
        self.send(light.take_messages());
        self.apply_entries(light.take_committed_entries()).await?;
        self.raw.advance_apply();
        self.release_reads().await?;

        for to in std::mem::take(&mut self.snapshots_sent) {
            // Optimistic: if the snapshot is lost, the follower's next
            // rejection makes the leader send it again.
            self.raw.report_snapshot(to, SnapshotStatus::Finish);
        }
        Ok(())
    }

    /// Asks the state machine for a fresh snapshot if raft wanted one the
    /// storage could not serve; at most once per ten election timeouts
    /// until a compaction happens.
    async fn ask_for_snapshot(&mut self) -> Result<(), Stop> {
        if !self.storage.take_snapshot_wanted() {
            return Ok(());
        }
        let now = tokio::time::Instant::now();
        let quiet = self.config.election_timeout().saturating_mul(10);
        if self
            .snapshot_wanted_at
            .is_some_and(|at| now.duration_since(at) < quiet)
        {
            return Ok(());
        }
        self.snapshot_wanted_at = Some(now);
        tracing::info!(
            id = self.config.id,
            index = self.applied,
            "a peer needs a newer snapshot"
        );
        self.emit(Applied::SnapshotWanted {
            index: self.applied,
        })
        .await
    }

    fn send(&mut self, msgs: Vec<Message>) {
        if msgs.is_empty() {
            return;
        }
        self.snapshots_sent.extend(
            msgs.iter()
                .filter(|m| m.get_msg_type() == MessageType::MsgSnapshot)
                .map(|m| m.to),
        );
        self.transport.send(msgs);
    }

    async fn apply_entries(&mut self, entries: Vec<Entry>) -> Result<(), Stop> {
        for entry in entries {
            let index = entry.index;
            match entry.get_entry_type() {
                EntryType::EntryNormal => {
                    if !entry.data.is_empty() {
                        self.emit(Applied::Entry {
                            index,
                            term: entry.term,
                            data: entry.data.to_vec(),
                        })
                        .await?;
                    }
                }
                EntryType::EntryConfChange | EntryType::EntryConfChangeV2 => {
                    self.apply_conf_change(&entry).await?;
                }
            }
            self.applied = index;
            self.release_reads().await?;
        }
        Ok(())
    }

    async fn apply_conf_change(&mut self, entry: &Entry) -> Result<(), Stop> {
        let index = entry.index;
        let applied = if entry.get_entry_type() == EntryType::EntryConfChange {
            let mut cc = ConfChange::default();
            cc.merge_from_bytes(&entry.data)
                .map(|()| (self.raw.apply_conf_change(&cc), cc.context.to_vec()))
        } else {
            let mut cc = ConfChangeV2::default();
            cc.merge_from_bytes(&entry.data)
                .map(|()| (self.raw.apply_conf_change(&cc), cc.context.to_vec()))
        };
        let (result, cc_context) = match applied {
            Ok(v) => v,
            Err(e) => {
                tracing::error!(id = self.config.id, index, error = %e, "a committed conf change does not decode; stopping");
                return Err(Stop);
            }
        };
        let cs = match result {
            Ok(cs) => cs,
            Err(e) => {
                // Every node refuses the same change the same way.
                tracing::warn!(id = self.config.id, index, error = %e, "conf change refused");
                return Ok(());
            }
        };
        if let Err(e) = self.storage.set_conf_state(index, &cs) {
            tracing::error!(id = self.config.id, error = %e, "persisting the membership failed; stopping");
            return Err(Stop);
        }
        tracing::info!(id = self.config.id, index, voters = ?cs.voters, learners = ?cs.learners, "membership changed");
        let context = if entry.context.is_empty() {
            cc_context
        } else {
            entry.context.to_vec()
        };
        let (mut voters, mut learners) = (cs.voters, cs.learners);
        voters.sort_unstable();
        learners.sort_unstable();
        self.emit(Applied::ConfChanged {
            index,
            voters,
            learners,
            context,
        })
        .await
    }

    async fn release_reads(&mut self) -> Result<(), Stop> {
        while self
            .pending_reads
            .front()
            .is_some_and(|rs| rs.index <= self.applied)
        {
            if let Some(rs) = self.pending_reads.pop_front() {
                self.emit(Applied::ReadReady {
                    ctx: rs.request_ctx,
                    index: rs.index,
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Hands an item to the state machine, waiting for room; gives up on
    /// shutdown or if the state machine is gone.
    async fn emit(&mut self, item: Applied) -> Result<(), Stop> {
        tokio::select! {
            biased;
            () = &mut self.shutdown => Err(Stop),
            sent = self.applied_tx.send(item) => sent.map_err(|_| {
                tracing::warn!(id = self.config.id, "the state machine is gone; stopping the raft node");
                Stop
            }),
        }
    }

    fn status(&self, running: bool) -> Status {
        let raft = &self.raw.raft;
        let cs = raft.prs().conf().to_conf_state();
        let mut voters = cs.voters;
        voters.sort_unstable();
        let mut learners = cs.learners;
        learners.sort_unstable();
        let mut matched: Vec<(u64, u64)> = if raft.state == StateRole::Leader {
            raft.prs()
                .iter()
                .map(|(id, pr)| (*id, pr.matched))
                .collect()
        } else {
            Vec::new()
        };
        matched.sort_unstable();
        Status {
            matched,
            id: self.config.id,
            leader_id: raft.leader_id,
            term: raft.term,
            role: raft.state,
            commit: raft.raft_log.committed,
            applied: self.applied,
            voters,
            learners,
            readies: self.readies,
            running,
        }
    }

    fn publish(&self, running: bool) {
        if let Some(tx) = &self.status_tx {
            let status = self.status(running);
            tx.send_if_modified(|s| {
                if *s == status {
                    false
                } else {
                    *s = status;
                    true
                }
            });
        }
    }
}
