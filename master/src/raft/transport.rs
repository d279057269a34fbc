//! Raft messages between masters over gRPC (`RaftTransport.Stream`).
//!
//! - Client side, [`GrpcTransport`]: one task per peer, each with a bounded
//!   FIFO queue and one long-lived `Stream` RPC to that peer. [`send`]
//!   never blocks the raft loop: when a peer's queue is full its oldest
//!   message is dropped (and counted); raft retransmits what matters. A
//!   peer that is down is redialled with backoff (50 ms doubling to 2 s)
//!   while its queue keeps the newest messages up to the bound.
//! - Server side, [`RaftTransportService`]: decodes each envelope and
//!   forwards the raft message to the node's inbox. A full inbox is awaited,
//!   so a slow node pushes back on its peers' streams (HTTP/2 flow control)
//!   and, through them, on the peers' bounded queues.
//! - [`Faults`]: blocked directed links, consulted by both sides, for tests
//!   that partition an in-process cluster.
//!
//! Messages to one peer go out in the order they were queued. Messages
//! already handed to a connection that then breaks are lost (at most an
//! HTTP/2 window's worth); raft treats that like any lost packet.
//!
//! [`send`]: super::Transport::send

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::{Duration, Instant};

use berth_proto as pb;
use berth_proto::raft_transport_client::RaftTransportClient;
use berth_proto::raft_transport_server::{RaftTransport, RaftTransportServer};
use futures::{Stream, StreamExt};
use protobuf::Message as _;
use raft::eraftpb::Message;
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Endpoint;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

/// Default capacity of each peer's outbound queue, in messages.
pub const DEFAULT_QUEUE_CAPACITY: usize = 4096;

/// Metadata of a peer's stream naming the sender and where it listens,
/// `ID=HOST:PORT`: a master that joins a group knows nobody, and learns
/// from the first stream of each member where to answer it.
pub const FROM_METADATA_KEY: &str = "berth-raft-from";

/// Longest address accepted in [`FROM_METADATA_KEY`].
const MAX_PEER_ADDRESS: usize = 256;

/// Largest encoded raft message the transport sends or accepts (snapshots
/// travel whole in one `MsgSnapshot`, so this bounds the snapshot size).
pub const MAX_RAFT_MESSAGE_BYTES: usize = 256 * 1024 * 1024;

/// First delay before redialling a peer.
const BACKOFF_INITIAL: Duration = Duration::from_millis(50);
/// Largest delay between two dials of a peer.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// A session that lasted this long resets the backoff.
const STABLE_SESSION: Duration = Duration::from_secs(1);
/// Longest time to establish a TCP connection to a peer.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);
/// HTTP/2 ping interval on peer connections (detects half-open ones).
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(5);
/// Time without a ping answer before a peer connection is deemed dead.
const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(5);
/// Minimum time between two warnings of the same kind (per peer on the
/// client, per service on the server).
const WARN_INTERVAL: Duration = Duration::from_secs(10);

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

// ---------------------------------------------------------------------------
// Faults
// ---------------------------------------------------------------------------

/// Fault injection for tests: a set of blocked directed links `from → to`.
///
/// Cheap to clone (an `Arc` inside); every clone sees the same links. Share
/// one value between the [`GrpcTransport`] and the [`RaftTransportService`]
/// of every node of an in-process cluster and a blocked link is cut at both
/// ends: the sender does not send, the receiver drops what still arrives.
/// The default value blocks nothing.
#[derive(Clone, Default)]
pub struct Faults {
    inner: Arc<FaultsInner>,
}

#[derive(Default)]
struct FaultsInner {
    /// Fast path: false while no link is blocked.
    any: AtomicBool,
    blocked: RwLock<HashSet<(u64, u64)>>,
}

impl Faults {
    /// Cuts `id` off from each of `others`, in both directions.
    pub fn isolate(&self, id: u64, others: &[u64]) {
        let mut blocked = self.write();
        for &other in others {
            if other != id {
                blocked.insert((id, other));
                blocked.insert((other, id));
            }
        }
        self.inner.any.store(!blocked.is_empty(), Ordering::SeqCst);
    }

    /// Blocks the directed link `from → to` (the reverse one is untouched).
    pub fn block(&self, from: u64, to: u64) {
        let mut blocked = self.write();
        blocked.insert((from, to));
        self.inner.any.store(true, Ordering::SeqCst);
    }

    /// Unblocks the directed link `from → to`.
    pub fn unblock(&self, from: u64, to: u64) {
        let mut blocked = self.write();
        blocked.remove(&(from, to));
        self.inner.any.store(!blocked.is_empty(), Ordering::SeqCst);
    }

    /// Unblocks every link.
    pub fn heal(&self) {
        let mut blocked = self.write();
        blocked.clear();
        self.inner.any.store(false, Ordering::SeqCst);
    }

    /// Whether the directed link `from → to` is blocked.
    #[must_use]
    pub fn is_blocked(&self, from: u64, to: u64) -> bool {
        if !self.inner.any.load(Ordering::SeqCst) {
            return false;
        }
        self.inner
            .blocked
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&(from, to))
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, HashSet<(u64, u64)>> {
        self.inner
            .blocked
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl fmt::Debug for Faults {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let blocked = self
            .inner
            .blocked
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        let mut links: Vec<_> = blocked.iter().copied().collect();
        links.sort_unstable();
        f.debug_struct("Faults").field("blocked", &links).finish()
    }
}

// ---------------------------------------------------------------------------
// Stats
// ---------------------------------------------------------------------------

/// Counters of one peer of a [`GrpcTransport`] (or their totals).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PeerStats {
    /// Messages written to a peer's stream. A message written just before
    /// its connection broke counts as sent yet may never have arrived.
    pub sent: u64,
    /// Messages dropped because the peer's queue was full (oldest first).
    pub dropped_full: u64,
    /// Messages dropped because [`Faults`] blocked the link.
    pub dropped_fault: u64,
    /// Messages dropped because they could not be encoded or exceeded
    /// [`MAX_RAFT_MESSAGE_BYTES`].
    pub dropped_invalid: u64,
    /// Dials after the first: one per connection failure or ended stream.
    pub reconnects: u64,
}

/// A snapshot of a [`GrpcTransport`]'s counters.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TransportStats {
    /// Current peers, by raft id.
    pub peers: BTreeMap<u64, PeerState>,
    /// Totals since the transport started, including removed peers.
    pub total: PeerStats,
    /// Messages dropped because their `to` was not a known peer.
    pub dropped_unknown_peer: u64,
}

/// The state and counters of one current peer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PeerState {
    /// The address dialled (`host:port` or a URI).
    pub address: String,
    /// Whether a stream to the peer is currently open.
    pub connected: bool,
    /// Messages waiting in the peer's queue.
    pub queued: usize,
    /// The peer's counters (since it was added).
    pub stats: PeerStats,
}

#[derive(Debug, Default)]
struct Counters {
    sent: AtomicU64,
    dropped_full: AtomicU64,
    dropped_fault: AtomicU64,
    dropped_invalid: AtomicU64,
    reconnects: AtomicU64,
}

impl Counters {
    fn snapshot(&self) -> PeerStats {
        PeerStats {
            sent: self.sent.load(Ordering::Relaxed),
            dropped_full: self.dropped_full.load(Ordering::Relaxed),
            dropped_fault: self.dropped_fault.load(Ordering::Relaxed),
            dropped_invalid: self.dropped_invalid.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}

/// Picks one counter of a [`Counters`].
type Pick = fn(&Counters) -> &AtomicU64;

// ---------------------------------------------------------------------------
// Client side
// ---------------------------------------------------------------------------

/// A bounded FIFO of messages for one peer, with an async pop.
#[derive(Debug)]
struct Queue {
    items: Mutex<VecDeque<Message>>,
    capacity: usize,
    notify: Notify,
}

impl Queue {
    fn new(capacity: usize) -> Self {
        Self {
            items: Mutex::new(VecDeque::new()),
            capacity: capacity.max(1),
            notify: Notify::new(),
        }
    }

    /// Appends `messages`; returns how many of the oldest were dropped to
    /// stay within the capacity.
    fn push(&self, messages: impl IntoIterator<Item = Message>) -> u64 {
        let mut dropped = 0;
        {
            let mut items = lock(&self.items);
            for m in messages {
                if items.len() >= self.capacity {
                    items.pop_front();
                    dropped += 1;
                }
                items.push_back(m);
            }
        }
        self.notify.notify_waiters();
        dropped
    }

    /// Waits for and removes the oldest message. Cancel-safe: a message is
    /// only removed when it is returned.
    async fn pop(&self) -> Message {
        loop {
            let notified = self.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(m) = lock(&self.items).pop_front() {
                return m;
            }
            notified.await;
        }
    }

    /// Puts back a message taken by a stream that may no longer send it.
    fn push_front(&self, message: Message) {
        lock(&self.items).push_front(message);
        self.notify.notify_waiters();
    }

    fn len(&self) -> usize {
        lock(&self.items).len()
    }
}

/// What a peer's task and the transport share about one peer.
#[derive(Debug)]
struct PeerShared {
    self_id: u64,
    id: u64,
    queue: Queue,
    connected: AtomicBool,
    /// Bumped when the peer's address changes: a stream of an older
    /// generation (its task is being aborted, but its request body can
    /// still be polled inside the old HTTP/2 connection) takes nothing more
    /// from the queue, so what is queued after the change goes to the new
    /// address.
    generation: AtomicU64,
    counters: Counters,
    totals: Arc<Counters>,
    faults: Faults,
    /// Where this node listens, told to peers on every stream.
    self_address: Arc<RwLock<Option<String>>>,
}

impl PeerShared {
    fn bump(&self, pick: Pick, n: u64) {
        if n > 0 {
            pick(&self.counters).fetch_add(n, Ordering::Relaxed);
            pick(&self.totals).fetch_add(n, Ordering::Relaxed);
        }
    }
}

/// One peer: its address, queue and the task that drains it.
#[derive(Debug)]
struct Peer {
    address: String,
    shared: Arc<PeerShared>,
    task: JoinHandle<()>,
}

/// The client side of the raft transport: sends raft messages to peers
/// over one long-lived `RaftTransport.Stream` per peer.
///
/// Each peer has a bounded queue (default [`DEFAULT_QUEUE_CAPACITY`]) and a
/// task that keeps a stream open to it, redialling with backoff (50 ms
/// doubling to 2 s) while it is down. [`send`](super::Transport::send)
/// never blocks: a full queue drops its oldest message. Dropping the
/// transport stops every peer task.
pub struct GrpcTransport {
    self_id: u64,
    self_address: Arc<RwLock<Option<String>>>,
    faults: Faults,
    capacity: usize,
    runtime: tokio::runtime::Handle,
    peers: RwLock<HashMap<u64, Peer>>,
    totals: Arc<Counters>,
    dropped_unknown_peer: AtomicU64,
}

impl GrpcTransport {
    /// A transport for node `self_id` with the given peers (`(id,
    /// address)`, addresses as `host:port` or a URI; an entry for
    /// `self_id` is ignored) and queues of [`DEFAULT_QUEUE_CAPACITY`].
    ///
    /// # Panics
    /// Outside a tokio runtime (peer tasks are spawned on the current one).
    pub fn new(
        self_id: u64,
        peers: impl IntoIterator<Item = (u64, String)>,
        faults: Faults,
    ) -> Arc<Self> {
        Self::with_queue_capacity(self_id, peers, faults, DEFAULT_QUEUE_CAPACITY)
    }

    /// Like [`new`](Self::new), with `capacity` messages per peer queue
    /// (at least 1).
    ///
    /// # Panics
    /// Outside a tokio runtime (peer tasks are spawned on the current one).
    pub fn with_queue_capacity(
        self_id: u64,
        peers: impl IntoIterator<Item = (u64, String)>,
        faults: Faults,
        capacity: usize,
    ) -> Arc<Self> {
        let transport = Self {
            self_id,
            self_address: Arc::new(RwLock::new(None)),
            faults,
            capacity: capacity.max(1),
            runtime: tokio::runtime::Handle::current(),
            peers: RwLock::new(HashMap::new()),
            totals: Arc::new(Counters::default()),
            dropped_unknown_peer: AtomicU64::new(0),
        };
        for (id, address) in peers {
            transport.update_peer(id, Some(address));
        }
        Arc::new(transport)
    }

    /// The raft id of this node.
    #[must_use]
    pub fn self_id(&self) -> u64 {
        self.self_id
    }

    /// Sets the address this node's API listens at; every stream to a peer
    /// names it, so that a peer that does not know this node yet (it just
    /// joined) can answer.
    pub fn set_self_address(&self, address: &str) {
        *self
            .self_address
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(address.to_owned());
    }

    /// Takes `address` as peer `id`'s unless an address for it is known
    /// already (configured, or learned from the replicated member list):
    /// how a master that joined learns where the members that talk to it
    /// listen.
    pub fn learn_peer(&self, id: u64, address: &str) {
        if id == self.self_id {
            return;
        }
        let known = self
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&id);
        if !known {
            info!(peer = id, %address, "learned a raft peer's address from its stream");
            self.update_peer(id, Some(address.to_owned()));
        }
    }

    /// A snapshot of the counters, per current peer and in total.
    #[must_use]
    pub fn stats(&self) -> TransportStats {
        let peers = self
            .peers
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .map(|(&id, p)| {
                (
                    id,
                    PeerState {
                        address: p.address.clone(),
                        connected: p.shared.connected.load(Ordering::Relaxed),
                        queued: p.shared.queue.len(),
                        stats: p.shared.counters.snapshot(),
                    },
                )
            })
            .collect();
        TransportStats {
            peers,
            total: self.totals.snapshot(),
            dropped_unknown_peer: self.dropped_unknown_peer.load(Ordering::Relaxed),
        }
    }

    fn update_peer(&self, id: u64, address: Option<String>) {
        if id == self.self_id {
            debug!(
                peer = id,
                "raft transport: ignoring an address for this node itself"
            );
            return;
        }
        let mut peers = self.peers.write().unwrap_or_else(PoisonError::into_inner);
        match address {
            None => {
                if let Some(old) = peers.remove(&id) {
                    old.task.abort();
                    info!(peer = id, address = %old.address, "raft peer removed");
                }
            }
            Some(address) => {
                if let Some(existing) = peers.get_mut(&id) {
                    if existing.address == address {
                        return;
                    }
                    // Same queue, new destination: what is queued follows.
                    existing.shared.generation.fetch_add(1, Ordering::SeqCst);
                    existing.task.abort();
                    existing.shared.connected.store(false, Ordering::Relaxed);
                    info!(peer = id, from = %existing.address, to = %address, "raft peer address changed");
                    existing.task = self
                        .runtime
                        .spawn(run_peer(existing.shared.clone(), address.clone()));
                    existing.address = address;
                    return;
                }
                let shared = Arc::new(PeerShared {
                    self_id: self.self_id,
                    id,
                    queue: Queue::new(self.capacity),
                    connected: AtomicBool::new(false),
                    generation: AtomicU64::new(0),
                    counters: Counters::default(),
                    totals: self.totals.clone(),
                    faults: self.faults.clone(),
                    self_address: self.self_address.clone(),
                });
                let task = self
                    .runtime
                    .spawn(run_peer(shared.clone(), address.clone()));
                info!(peer = id, %address, "raft peer added");
                peers.insert(
                    id,
                    Peer {
                        address,
                        shared,
                        task,
                    },
                );
            }
        }
    }
}

impl super::Transport for GrpcTransport {
    fn send(&self, messages: Vec<Message>) {
        if messages.is_empty() {
            return;
        }
        // Group by peer, keeping each peer's order, so each queue is locked
        // once per batch.
        let mut by_peer: Vec<(u64, Vec<Message>)> = Vec::new();
        for m in messages {
            match by_peer.iter_mut().find(|(to, _)| *to == m.to) {
                Some((_, batch)) => batch.push(m),
                None => by_peer.push((m.to, vec![m])),
            }
        }
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        for (to, batch) in by_peer {
            let Some(peer) = peers.get(&to) else {
                debug!(
                    to,
                    count = batch.len(),
                    "raft message for an unknown peer dropped"
                );
                self.dropped_unknown_peer
                    .fetch_add(batch.len() as u64, Ordering::Relaxed);
                continue;
            };
            let shared = &peer.shared;
            if self.faults.is_blocked(self.self_id, to) {
                debug!(
                    to,
                    count = batch.len(),
                    "raft link blocked; messages dropped"
                );
                shared.bump(|c| &c.dropped_fault, batch.len() as u64);
                continue;
            }
            for m in &batch {
                debug!(to, msg_type = ?m.get_msg_type(), term = m.term, index = m.index, "raft message queued");
            }
            let dropped = shared.queue.push(batch);
            if dropped > 0 {
                debug!(to, dropped, "raft peer queue full; oldest messages dropped");
                shared.bump(|c| &c.dropped_full, dropped);
            }
        }
    }

    fn set_peer(&self, id: u64, address: Option<String>) {
        self.update_peer(id, address);
    }
}

impl Drop for GrpcTransport {
    fn drop(&mut self) {
        let peers = self.peers.get_mut().unwrap_or_else(PoisonError::into_inner);
        for peer in peers.values() {
            peer.task.abort();
        }
    }
}

impl fmt::Debug for GrpcTransport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let peers = self.peers.read().unwrap_or_else(PoisonError::into_inner);
        let mut addresses: Vec<_> = peers.iter().map(|(id, p)| (*id, &p.address)).collect();
        addresses.sort_unstable();
        f.debug_struct("GrpcTransport")
            .field("self_id", &self.self_id)
            .field("peers", &addresses)
            .field("capacity", &self.capacity)
            .finish_non_exhaustive()
    }
}

/// The task of one peer: keeps a stream open to `address` until aborted.
async fn run_peer(shared: Arc<PeerShared>, address: String) {
    let uri = pb::endpoint_uri(&address);
    let mut backoff = BACKOFF_INITIAL;
    let mut last_warn: Option<Instant> = None;
    let mut failures: u64 = 0;
    let mut first = true;
    loop {
        if !first {
            shared.bump(|c| &c.reconnects, 1);
        }
        first = false;
        let started = Instant::now();
        let mut connected = false;
        let outcome = session(&shared, &uri, &mut connected).await;
        shared.connected.store(false, Ordering::Relaxed);
        if connected && started.elapsed() >= STABLE_SESSION {
            backoff = BACKOFF_INITIAL;
        }
        let reason = match outcome {
            Ok(()) => "stream closed by the peer".to_owned(),
            Err(e) => e,
        };
        failures += 1;
        if last_warn.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
            warn!(peer = shared.id, address = %uri, %reason, failures, "raft peer unreachable; redialling");
            last_warn = Some(Instant::now());
            failures = 0;
        } else {
            debug!(peer = shared.id, address = %uri, %reason, "raft peer unreachable; redialling");
        }
        tokio::time::sleep(jitter(backoff)).await;
        backoff = (backoff * 2).min(BACKOFF_MAX);
    }
}

/// One stream to one peer: dial, then feed the queue into the stream until
/// the stream ends. `connected` is set once the connection is up.
async fn session(shared: &Arc<PeerShared>, uri: &str, connected: &mut bool) -> Result<(), String> {
    let endpoint = Endpoint::from_shared(uri.to_owned())
        .map_err(|e| format!("invalid peer address {uri:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    *connected = true;
    shared.connected.store(true, Ordering::Relaxed);
    debug!(peer = shared.id, address = %uri, "raft peer connected");
    let mut client =
        RaftTransportClient::new(channel).max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES);
    // The request body can outlive this future inside the HTTP/2
    // connection; dropping `_stop` (when the session ends or its task is
    // aborted) ends the body, so it never pulls from the queue again.
    let (_stop, stopped) = oneshot::channel::<()>();
    let generation = shared.generation.load(Ordering::SeqCst);
    let body = outbound(shared.clone(), generation).take_until(stopped);
    let mut request = Request::new(body);
    let from = shared
        .self_address
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .as_ref()
        .map(|address| format!("{}={address}", shared.self_id));
    if let Some(from) = from
        && let Ok(value) = from.parse()
    {
        request.metadata_mut().insert(FROM_METADATA_KEY, value);
    }
    client
        .stream(request)
        .await
        .map(|_| ())
        .map_err(|s| format!("stream failed: {}: {}", s.code(), s.message()))
}

/// The request body of a session: the peer's queue, encoded.
fn outbound(
    shared: Arc<PeerShared>,
    generation: u64,
) -> impl Stream<Item = pb::RaftEnvelope> + Send + 'static {
    futures::stream::unfold(shared, move |shared| async move {
        loop {
            if shared.generation.load(Ordering::SeqCst) != generation {
                return None;
            }
            let message = shared.queue.pop().await;
            if shared.generation.load(Ordering::SeqCst) != generation {
                // The peer moved while this stream waited: the message is
                // for the new address.
                shared.queue.push_front(message);
                return None;
            }
            if shared.faults.is_blocked(shared.self_id, shared.id) {
                debug!(to = shared.id, "raft link blocked; queued message dropped");
                shared.bump(|c| &c.dropped_fault, 1);
                continue;
            }
            let bytes = match message.write_to_bytes() {
                Ok(b) if b.len() <= MAX_RAFT_MESSAGE_BYTES => b,
                Ok(b) => {
                    warn!(to = shared.id, msg_type = ?message.get_msg_type(), bytes = b.len(), "raft message too large to send; dropped");
                    shared.bump(|c| &c.dropped_invalid, 1);
                    continue;
                }
                Err(e) => {
                    warn!(to = shared.id, error = %e, "cannot encode raft message; dropped");
                    shared.bump(|c| &c.dropped_invalid, 1);
                    continue;
                }
            };
            debug!(to = shared.id, msg_type = ?message.get_msg_type(), term = message.term, index = message.index, "raft message sent");
            shared.bump(|c| &c.sent, 1);
            let envelope = pb::RaftEnvelope {
                from: shared.self_id,
                to: shared.id,
                message: bytes,
            };
            return Some((envelope, shared));
        }
    })
}

/// `d` scaled by a random factor in [0.5, 1.0).
fn jitter(d: Duration) -> Duration {
    let r = uuid::Uuid::new_v4().as_u128() % 1000;
    #[allow(clippy::cast_precision_loss)]
    let factor = 0.5 + (r as f64) / 2000.0;
    d.mul_f64(factor)
}

// ---------------------------------------------------------------------------
// Server side
// ---------------------------------------------------------------------------

/// When a Raft message last arrived from each peer (wall clock), filled by
/// the [`RaftTransportService`] and read by the master core for
/// `ListMembers`: a member the leader has not heard from for a while is
/// down or cut off. Clones share the map.
#[derive(Debug, Clone, Default)]
pub struct HeardFrom(Arc<Mutex<HashMap<u64, std::time::SystemTime>>>);

impl HeardFrom {
    /// Records that a message from `peer` arrived now.
    fn heard(&self, peer: u64) {
        lock(&self.0).insert(peer, std::time::SystemTime::now());
    }

    /// When a message from `peer` last arrived, if ever.
    #[must_use]
    pub fn get(&self, peer: u64) -> Option<std::time::SystemTime> {
        lock(&self.0).get(&peer).copied()
    }
}

/// Counters of a [`RaftTransportService`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct InboundStats {
    /// Raft messages handed to the inbox.
    pub received: u64,
    /// Envelopes rejected for their addressing: `to` is not this node, or
    /// the decoded message's `from`/`to` disagree with the envelope's.
    pub rejected: u64,
    /// Envelopes whose `message` bytes are not a raft message.
    pub undecodable: u64,
    /// Envelopes dropped because [`Faults`] blocked the link.
    pub dropped_fault: u64,
    /// Streams accepted from peers since the service started.
    pub streams: u64,
    /// Streams open now.
    pub open_streams: u64,
}

#[derive(Debug, Default)]
struct InboundCounters {
    received: AtomicU64,
    rejected: AtomicU64,
    undecodable: AtomicU64,
    dropped_fault: AtomicU64,
    streams: AtomicU64,
    open_streams: AtomicU64,
}

/// Counts one open stream while it lives.
struct OpenStream<'a>(&'a AtomicU64);

impl<'a> OpenStream<'a> {
    fn new(open: &'a AtomicU64) -> Self {
        open.fetch_add(1, Ordering::Relaxed);
        Self(open)
    }
}

impl Drop for OpenStream<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Allows one warning per [`WARN_INTERVAL`] and counts the others.
#[derive(Debug, Default)]
struct Throttle {
    last: Mutex<Option<Instant>>,
    suppressed: AtomicU64,
}

impl Throttle {
    /// `Some(number suppressed since the last allowed one)` if a warning
    /// may be logged now.
    fn allow(&self) -> Option<u64> {
        let mut last = lock(&self.last);
        if last.is_none_or(|t| t.elapsed() >= WARN_INTERVAL) {
            *last = Some(Instant::now());
            Some(self.suppressed.swap(0, Ordering::Relaxed))
        } else {
            self.suppressed.fetch_add(1, Ordering::Relaxed);
            None
        }
    }
}

#[derive(Debug)]
struct ServiceInner {
    self_id: u64,
    inbox: mpsc::Sender<Message>,
    faults: Faults,
    counters: InboundCounters,
    closed: watch::Sender<bool>,
    heard: HeardFrom,
    /// Learns the addresses of peers that stream to this node.
    learner: Option<Arc<GrpcTransport>>,
    rejected_warn: Throttle,
    undecodable_warn: Throttle,
}

/// The server side of the raft transport: the `RaftTransport` gRPC service
/// every master serves. It decodes each envelope and forwards its raft
/// message to the node's inbox, in the order the stream carried them.
///
/// An envelope not addressed to this node is rejected and one whose bytes
/// do not decode is skipped (both logged and counted); the stream carries
/// on. When the inbox is full the stream waits, which pushes back on that
/// peer. Clones share everything; keep one to call
/// [`close_streams`](Self::close_streams) at shutdown.
#[derive(Debug, Clone)]
pub struct RaftTransportService {
    inner: Arc<ServiceInner>,
}

impl RaftTransportService {
    /// A service for node `self_id` forwarding raft messages to `inbox`,
    /// recording in `heard` when each peer's last message arrived.
    #[must_use]
    pub fn new(
        self_id: u64,
        inbox: mpsc::Sender<Message>,
        faults: Faults,
        heard: HeardFrom,
    ) -> Self {
        Self {
            inner: Arc::new(ServiceInner {
                self_id,
                inbox,
                faults,
                counters: InboundCounters::default(),
                closed: watch::Sender::new(false),
                heard,
                learner: None,
                rejected_warn: Throttle::default(),
                undecodable_warn: Throttle::default(),
            }),
        }
    }

    /// Has `transport` learn the address of every peer that opens a stream
    /// to this node naming itself ([`FROM_METADATA_KEY`]) and that it does
    /// not know yet.
    #[must_use]
    pub fn learning_peers(mut self, transport: Arc<GrpcTransport>) -> Self {
        match Arc::get_mut(&mut self.inner) {
            Some(inner) => inner.learner = Some(transport),
            None => warn!("raft service already shared; peers' addresses will not be learned"),
        }
        self
    }

    /// The tonic server of this service, accepting messages up to
    /// [`MAX_RAFT_MESSAGE_BYTES`] (tonic's default of 4 MiB is too small
    /// for snapshots).
    #[must_use]
    pub fn into_server(self) -> RaftTransportServer<Self> {
        RaftTransportServer::new(self)
            .max_decoding_message_size(MAX_RAFT_MESSAGE_BYTES)
            .max_encoding_message_size(MAX_RAFT_MESSAGE_BYTES)
    }

    /// Ends every open stream, now and from now on (new streams end at
    /// once). Peers' streams are long-lived, so a graceful server shutdown
    /// waits for them: call this when the master stops.
    pub fn close_streams(&self) {
        self.inner.closed.send_replace(true);
    }

    /// A snapshot of the counters.
    #[must_use]
    pub fn stats(&self) -> InboundStats {
        let c = &self.inner.counters;
        InboundStats {
            received: c.received.load(Ordering::Relaxed),
            rejected: c.rejected.load(Ordering::Relaxed),
            undecodable: c.undecodable.load(Ordering::Relaxed),
            dropped_fault: c.dropped_fault.load(Ordering::Relaxed),
            streams: c.streams.load(Ordering::Relaxed),
            open_streams: c.open_streams.load(Ordering::Relaxed),
        }
    }

    /// Checks and decodes one envelope; `None` if it is to be skipped.
    fn accept(&self, envelope: &pb::RaftEnvelope) -> Option<Message> {
        let inner = &self.inner;
        let (from, to) = (envelope.from, envelope.to);
        if to != inner.self_id {
            inner.counters.rejected.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = inner.rejected_warn.allow() {
                warn!(
                    from,
                    to,
                    self_id = inner.self_id,
                    suppressed,
                    "raft envelope for another node rejected"
                );
            }
            return None;
        }
        if inner.faults.is_blocked(from, to) {
            inner.counters.dropped_fault.fetch_add(1, Ordering::Relaxed);
            debug!(from, to, "raft link blocked; incoming message dropped");
            return None;
        }
        let message = match Message::parse_from_bytes(&envelope.message) {
            Ok(m) => m,
            Err(e) => {
                inner.counters.undecodable.fetch_add(1, Ordering::Relaxed);
                if let Some(suppressed) = inner.undecodable_warn.allow() {
                    warn!(from, to, bytes = envelope.message.len(), error = %e, suppressed, "undecodable raft message skipped");
                }
                return None;
            }
        };
        if message.from != from || message.to != to {
            inner.counters.rejected.fetch_add(1, Ordering::Relaxed);
            if let Some(suppressed) = inner.rejected_warn.allow() {
                warn!(
                    from,
                    to,
                    message_from = message.from,
                    message_to = message.to,
                    suppressed,
                    "raft message disagrees with its envelope; rejected"
                );
            }
            return None;
        }
        debug!(from, to, msg_type = ?message.get_msg_type(), term = message.term, index = message.index, "raft message received");
        inner.heard.heard(from);
        Some(message)
    }
}

/// `ID=HOST:PORT` from [`FROM_METADATA_KEY`], if it is one.
fn parse_from(value: &str) -> Option<(u64, &str)> {
    let (id, address) = value.split_once('=')?;
    let id: u64 = id.parse().ok().filter(|id| *id > 0)?;
    let ok = !address.is_empty()
        && address.len() <= MAX_PEER_ADDRESS
        && address.contains(':')
        && !address.chars().any(|c| c.is_whitespace() || c.is_control());
    ok.then_some((id, address))
}

/// Resolves once `closed` holds true (or its sender is gone).
async fn wait_closed(closed: &mut watch::Receiver<bool>) {
    let _ = closed.wait_for(|c| *c).await;
}

#[tonic::async_trait]
impl RaftTransport for RaftTransportService {
    async fn stream(
        &self,
        request: Request<Streaming<pb::RaftEnvelope>>,
    ) -> Result<Response<pb::Empty>, Status> {
        let remote = request.remote_addr();
        if let Some(learner) = &self.inner.learner
            && let Some((id, address)) = request
                .metadata()
                .get(FROM_METADATA_KEY)
                .and_then(|v| v.to_str().ok())
                .and_then(parse_from)
        {
            learner.learn_peer(id, address);
        }
        let mut inbound = request.into_inner();
        let mut closed = self.inner.closed.subscribe();
        self.inner.counters.streams.fetch_add(1, Ordering::Relaxed);
        let _open = OpenStream::new(&self.inner.counters.open_streams);
        debug!(?remote, "raft peer stream opened");
        loop {
            let next = tokio::select! {
                biased;
                () = wait_closed(&mut closed) => break,
                next = inbound.message() => next,
            };
            let envelope = match next {
                Ok(Some(envelope)) => envelope,
                Ok(None) => break,
                Err(status) => {
                    debug!(?remote, %status, "raft peer stream failed");
                    return Err(status);
                }
            };
            let Some(message) = self.accept(&envelope) else {
                continue;
            };
            tokio::select! {
                biased;
                () = wait_closed(&mut closed) => break,
                sent = self.inner.inbox.send(message) => {
                    if sent.is_err() {
                        return Err(Status::unavailable("raft node is not running"));
                    }
                    self.inner.counters.received.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
        debug!(?remote, "raft peer stream closed");
        Ok(Response::new(pb::Empty {}))
    }
}

#[cfg(test)]
#[path = "transport_tests.rs"]
mod tests;
