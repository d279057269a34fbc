//! Tests of the raft transport over real gRPC on 127.0.0.1.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use berth_proto as pb;
use raft::eraftpb::{Entry, Message, MessageType};
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio::time::timeout;
use tokio_stream::wrappers::TcpListenerStream;

use super::*;
use crate::raft::Transport as _;

/// Longest wait for anything expected to happen.
const PATIENCE: Duration = Duration::from_secs(10);
/// How long "nothing arrives" is watched for.
const QUIET: Duration = Duration::from_millis(300);

/// A recognisable message `from → to` carrying `index` in several fields.
fn msg(from: u64, to: u64, index: u64) -> Message {
    let entry = Entry {
        index: index + 1,
        term: 7,
        data: format!("entry-{index}").repeat(3).into_bytes().into(),
        ..Default::default()
    };
    let mut m = Message {
        from,
        to,
        term: 7,
        log_term: 6,
        index,
        commit: index / 2,
        reject: index.is_multiple_of(2),
        reject_hint: index + 1,
        context: format!("ctx-{index}").into_bytes().into(),
        ..Default::default()
    };
    m.set_msg_type(if index.is_multiple_of(3) {
        MessageType::MsgHeartbeat
    } else {
        MessageType::MsgAppend
    });
    m.mut_entries().push(entry);
    m
}

/// A master's raft service on its own runtime, so that dropping it closes
/// every connection at once, like a crashed process.
struct Server {
    addr: SocketAddr,
    service: RaftTransportService,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<oneshot::Sender<()>>,
    served: Option<JoinHandle<Result<(), tonic::transport::Error>>>,
}

impl Server {
    /// Serves node `id` on `addr` (port 0: any), retrying the bind while a
    /// previous server on the same port is still going away.
    async fn start(
        id: u64,
        addr: SocketAddr,
        inbox: mpsc::Sender<Message>,
        faults: Faults,
    ) -> Self {
        let deadline = Instant::now() + PATIENCE;
        let listener = loop {
            match std::net::TcpListener::bind(addr) {
                Ok(l) => break l,
                Err(e) if Instant::now() < deadline => {
                    let _ = e;
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => panic!("cannot bind {addr}: {e}"),
            }
        };
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        let service = RaftTransportService::new(id, inbox, faults, HeardFrom::default());
        let server = service.clone().into_server();
        let (stop, stopped) = oneshot::channel::<()>();
        let served = runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            tonic::transport::Server::builder()
                .add_service(server)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async move {
                    let _ = stopped.await;
                })
                .await
        });
        Self {
            addr,
            service,
            runtime: Some(runtime),
            stop: Some(stop),
            served: Some(served),
        }
    }

    fn address(&self) -> String {
        self.addr.to_string()
    }

    /// Kills the server: every task and socket of its runtime goes away.
    async fn crash(mut self) {
        if let Some(rt) = self.runtime.take() {
            tokio::task::spawn_blocking(move || rt.shutdown_timeout(Duration::from_secs(1)))
                .await
                .unwrap();
        }
    }

    /// Stops the server the way a master does: end the peers' streams,
    /// then shut the server down gracefully.
    async fn stop(mut self) {
        self.service.close_streams();
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(served) = self.served.take() {
            timeout(PATIENCE, served)
                .await
                .expect("graceful shutdown hangs")
                .unwrap()
                .unwrap();
        }
        self.crash().await;
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// An address nothing listens on (yet).
fn free_addr() -> SocketAddr {
    let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

async fn recv(rx: &mut mpsc::Receiver<Message>) -> Message {
    timeout(PATIENCE, rx.recv())
        .await
        .expect("no message arrived in time")
        .expect("inbox closed")
}

async fn recv_n(rx: &mut mpsc::Receiver<Message>, n: usize) -> Vec<Message> {
    let mut out = Vec::with_capacity(n);
    for _ in 0..n {
        out.push(recv(rx).await);
    }
    out
}

async fn assert_quiet(rx: &mut mpsc::Receiver<Message>) {
    if let Ok(m) = timeout(QUIET, rx.recv()).await {
        panic!("unexpected message: {m:?}");
    }
}

async fn eventually(what: &str, f: impl Fn() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn delivers_in_order_with_fields_intact() {
    let (tx, mut rx) = mpsc::channel(1024);
    let server = Server::start(2, free_addr_zero(), tx, Faults::default()).await;
    let t = GrpcTransport::new(1, [(2, server.address())], Faults::default());

    let sent: Vec<Message> = (1..=500).map(|i| msg(1, 2, i)).collect();
    for chunk in sent.chunks(7) {
        // Interleave messages for an unknown peer and for this node itself.
        let mut batch = vec![msg(1, 9, 0)];
        batch.extend(chunk.iter().cloned());
        batch.push(msg(1, 1, 0));
        t.send(batch);
    }
    let got = recv_n(&mut rx, sent.len()).await;
    assert_eq!(got, sent);
    assert_quiet(&mut rx).await;

    let stats = t.stats();
    assert_eq!(stats.total.sent, 500);
    assert_eq!(stats.dropped_unknown_peer, 2 * 72);
    let peer = &stats.peers[&2];
    assert!(peer.connected);
    assert_eq!(peer.queued, 0);
    assert_eq!(peer.stats.sent, 500);
    assert_eq!(peer.address, server.address());
    let inbound = server.service.stats();
    assert_eq!(inbound.received, 500);
    assert_eq!(inbound.streams, 1);
    assert_eq!(
        inbound.rejected + inbound.undecodable + inbound.dropped_fault,
        0
    );
}

fn free_addr_zero() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_while_the_peer_is_down_and_delivers_when_it_comes_up() {
    let addr = free_addr();
    let t = GrpcTransport::with_queue_capacity(1, [(2, addr.to_string())], Faults::default(), 64);

    let started = Instant::now();
    for i in 1..=100 {
        t.send(vec![msg(1, 2, i)]);
    }
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "send must not block"
    );
    let stats = t.stats();
    assert_eq!(stats.total.dropped_full, 36);
    assert_eq!(stats.peers[&2].queued, 64);
    assert_eq!(stats.total.sent, 0);

    // Let a few dials fail first.
    eventually("a redial happened", || t.stats().total.reconnects >= 2).await;
    assert!(!t.stats().peers[&2].connected);

    let (tx, mut rx) = mpsc::channel(1024);
    let _server = Server::start(2, addr, tx, Faults::default()).await;
    // The newest 64 arrive, in order: the oldest were dropped.
    let got = recv_n(&mut rx, 64).await;
    let indices: Vec<u64> = got.iter().map(|m| m.index).collect();
    assert_eq!(indices, (37..=100).collect::<Vec<_>>());
    assert_eq!(got[0], msg(1, 2, 37));
    assert_quiet(&mut rx).await;

    t.send(vec![msg(1, 2, 101)]);
    assert_eq!(recv(&mut rx).await.index, 101);
    let stats = t.stats();
    assert!(stats.peers[&2].connected);
    assert_eq!(stats.total.sent, 65);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_full_queue_drops_without_blocking_and_a_slow_inbox_pushes_back() {
    // The node never reads its inbox (capacity 1): the server stops reading
    // the stream, HTTP/2 flow control stops the client, its queue fills.
    let (tx, mut rx) = mpsc::channel(1);
    let server = Server::start(2, free_addr_zero(), tx, Faults::default()).await;
    let t = GrpcTransport::new(1, [(2, server.address())], Faults::default());
    eventually("connected", || t.stats().peers[&2].connected).await;

    let n = 20_000u64;
    let started = Instant::now();
    for i in 1..=n {
        t.send(vec![msg(1, 2, i)]);
        if i % 2000 == 0 {
            // Give the stream a chance to fill the pipe.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert!(started.elapsed() < Duration::from_secs(5), "send blocked");
    let stats = t.stats();
    assert!(stats.total.dropped_full > 0, "{stats:?}");
    assert!(stats.peers[&2].queued <= DEFAULT_QUEUE_CAPACITY);

    // Drain: everything sent arrives, in order, and nothing else.
    let mut got = Vec::new();
    while let Ok(Some(m)) = timeout(Duration::from_millis(500), rx.recv()).await {
        got.push(m.index);
    }
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order");
    let stats = t.stats();
    assert_eq!(stats.peers[&2].queued, 0);
    assert_eq!(got.len() as u64, stats.total.sent);
    assert_eq!(stats.total.sent + stats.total.dropped_full, n);
    // The newest message always survives a drop-oldest queue.
    assert_eq!(got.last().copied(), Some(n));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn faults_block_one_direction_until_healed() {
    let faults = Faults::default();
    let (tx1, mut rx1) = mpsc::channel(1024);
    let (tx2, mut rx2) = mpsc::channel(1024);
    let s1 = Server::start(1, free_addr_zero(), tx1, faults.clone()).await;
    let s2 = Server::start(2, free_addr_zero(), tx2, faults.clone()).await;
    let t1 = GrpcTransport::new(1, [(2, s2.address())], faults.clone());
    let t2 = GrpcTransport::new(2, [(1, s1.address())], faults.clone());

    faults.block(1, 2);
    assert!(faults.is_blocked(1, 2));
    assert!(!faults.is_blocked(2, 1));
    t1.send(vec![msg(1, 2, 1)]);
    t2.send(vec![msg(2, 1, 1)]);
    assert_eq!(recv(&mut rx1).await, msg(2, 1, 1));
    assert_eq!(t1.stats().total.dropped_fault, 1);

    faults.heal();
    t1.send(vec![msg(1, 2, 2)]);
    // The blocked message never arrives; the next one does.
    assert_eq!(recv(&mut rx2).await, msg(1, 2, 2));
    assert_quiet(&mut rx2).await;

    // The receiving side enforces the block too: a sender that does not
    // share the faults is cut off at the server.
    let t3 = GrpcTransport::new(1, [(2, s2.address())], Faults::default());
    faults.block(1, 2);
    t3.send(vec![msg(1, 2, 3)]);
    eventually("dropped at the server", || {
        s2.service.stats().dropped_fault == 1
    })
    .await;
    faults.heal();
    t3.send(vec![msg(1, 2, 4)]);
    assert_eq!(recv(&mut rx2).await, msg(1, 2, 4));

    // isolate cuts both directions to the listed nodes only.
    faults.isolate(2, &[1, 3]);
    for (from, to) in [(1, 2), (2, 1), (2, 3), (3, 2)] {
        assert!(faults.is_blocked(from, to), "{from}->{to}");
    }
    assert!(!faults.is_blocked(1, 3));
    t1.send(vec![msg(1, 2, 5)]);
    t2.send(vec![msg(2, 1, 5)]);
    assert_quiet(&mut rx1).await;
    assert_quiet(&mut rx2).await;
    faults.unblock(2, 1);
    t2.send(vec![msg(2, 1, 6)]);
    assert_eq!(recv(&mut rx1).await, msg(2, 1, 6));
    faults.heal();
    assert!(!faults.is_blocked(1, 2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn set_peer_redirects_and_removes() {
    let (tx_a, mut rx_a) = mpsc::channel(1024);
    let (tx_b, mut rx_b) = mpsc::channel(1024);
    let a = Server::start(2, free_addr_zero(), tx_a, Faults::default()).await;
    let b = Server::start(2, free_addr_zero(), tx_b, Faults::default()).await;
    let t = GrpcTransport::new(1, [], Faults::default());

    // Unknown until added.
    t.send(vec![msg(1, 2, 1)]);
    assert_eq!(t.stats().dropped_unknown_peer, 1);
    t.set_peer(2, Some(a.address()));
    t.send(vec![msg(1, 2, 2)]);
    assert_eq!(recv(&mut rx_a).await.index, 2);

    // Redirect: the same peer now lives at b.
    t.set_peer(2, Some(b.address()));
    t.send(vec![msg(1, 2, 3), msg(1, 2, 4)]);
    assert_eq!(recv(&mut rx_b).await.index, 3);
    assert_eq!(recv(&mut rx_b).await.index, 4);
    assert_quiet(&mut rx_a).await;
    assert_eq!(t.stats().peers[&2].address, b.address());
    // The stream to the old address is gone, not left draining the queue.
    eventually("old stream closed", || a.service.stats().open_streams == 0).await;

    // Removed: nothing is sent any more.
    t.set_peer(2, None);
    assert!(t.stats().peers.is_empty());
    t.send(vec![msg(1, 2, 5)]);
    assert_eq!(t.stats().dropped_unknown_peer, 2);
    assert_quiet(&mut rx_b).await;
    assert_quiet(&mut rx_a).await;
    eventually("stream closed", || b.service.stats().open_streams == 0).await;

    // Added back elsewhere: only new messages go.
    t.set_peer(2, Some(a.address()));
    t.set_peer(1, Some(b.address())); // this node itself: ignored
    assert_eq!(t.stats().peers.keys().copied().collect::<Vec<_>>(), [2]);
    t.send(vec![msg(1, 2, 6)]);
    assert_eq!(recv(&mut rx_a).await.index, 6);
    assert_quiet(&mut rx_a).await;
    assert_quiet(&mut rx_b).await;
    assert_eq!(t.stats().total.sent, 4);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_envelopes_are_skipped_and_the_stream_goes_on() {
    let (tx, mut rx) = mpsc::channel(1024);
    let server = Server::start(2, free_addr_zero(), tx, Faults::default()).await;
    let mut client = pb::raft_transport_client::RaftTransportClient::connect(format!(
        "http://{}",
        server.address()
    ))
    .await
    .unwrap();
    let envelope = |from: u64, to: u64, m: &Message| pb::RaftEnvelope {
        from,
        to,
        message: m.write_to_bytes().unwrap(),
    };
    let envelopes = vec![
        envelope(1, 2, &msg(1, 2, 1)),
        envelope(1, 3, &msg(1, 3, 2)), // not for this node
        pb::RaftEnvelope {
            from: 1,
            to: 2,
            message: vec![0xff; 7], // not protobuf
        },
        pb::RaftEnvelope {
            from: 1,
            to: 2,
            message: b"\x0a\x05hello world".to_vec(), // truncated / wrong types
        },
        envelope(3, 2, &msg(1, 2, 3)), // envelope disagrees with its message
        pb::RaftEnvelope {
            from: 1,
            to: 2,
            message: Vec::new(), // decodes to from = to = 0
        },
        envelope(1, 2, &msg(1, 2, 4)),
    ];
    let (etx, erx) = mpsc::channel(16);
    let call = tokio::spawn(async move {
        client
            .stream(tokio_stream::wrappers::ReceiverStream::new(erx))
            .await
    });
    for e in envelopes {
        etx.send(e).await.unwrap();
    }
    assert_eq!(recv(&mut rx).await, msg(1, 2, 1));
    assert_eq!(recv(&mut rx).await, msg(1, 2, 4));
    // Still the same stream: a later message arrives too.
    etx.send(envelope(1, 2, &msg(1, 2, 5))).await.unwrap();
    assert_eq!(recv(&mut rx).await, msg(1, 2, 5));
    drop(etx);
    timeout(PATIENCE, call).await.unwrap().unwrap().unwrap();

    let stats = server.service.stats();
    assert_eq!(stats.received, 3);
    assert_eq!(stats.streams, 1);
    assert_eq!(stats.undecodable, 2);
    assert_eq!(stats.rejected, 3);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reconnects_after_the_server_restarts() {
    let (tx, mut rx) = mpsc::channel(1024);
    let server = Server::start(2, free_addr_zero(), tx, Faults::default()).await;
    let addr = server.addr;
    let t = GrpcTransport::new(1, [(2, server.address())], Faults::default());
    t.send(vec![msg(1, 2, 1)]);
    assert_eq!(recv(&mut rx).await.index, 1);

    // Crash: the connection drops; what is sent meanwhile waits.
    server.crash().await;
    eventually("disconnected", || !t.stats().peers[&2].connected).await;
    t.send(vec![msg(1, 2, 2), msg(1, 2, 3)]);
    let (tx, mut rx) = mpsc::channel(1024);
    let server = Server::start(2, addr, tx, Faults::default()).await;
    assert_eq!(recv(&mut rx).await, msg(1, 2, 2));
    assert_eq!(recv(&mut rx).await, msg(1, 2, 3));
    let reconnects = t.stats().total.reconnects;
    assert!(reconnects >= 1);

    // Graceful stop ends the long-lived stream instead of hanging on it.
    server.stop().await;
    eventually("disconnected", || !t.stats().peers[&2].connected).await;
    t.send(vec![msg(1, 2, 4)]);
    let (tx, mut rx) = mpsc::channel(1024);
    let server = Server::start(2, addr, tx, Faults::default()).await;
    assert_eq!(recv(&mut rx).await, msg(1, 2, 4));
    assert!(t.stats().total.reconnects > reconnects);
    assert!(t.stats().peers[&2].connected);
    drop(server);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropping_the_transport_closes_its_streams() {
    let (tx, mut rx) = mpsc::channel(1024);
    let server = Server::start(2, free_addr_zero(), tx, Faults::default()).await;
    let t = GrpcTransport::new(1, [(2, server.address())], Faults::default());
    t.send(vec![msg(1, 2, 1)]);
    assert_eq!(recv(&mut rx).await.index, 1);
    assert_eq!(server.service.stats().open_streams, 1);
    drop(t);
    eventually("stream closed", || server.service.stats().open_streams == 0).await;
    // A new transport opens a second stream.
    let t = GrpcTransport::new(1, [(2, server.address())], Faults::default());
    t.send(vec![msg(1, 2, 2)]);
    assert_eq!(recv(&mut rx).await.index, 2);
    let stats = server.service.stats();
    assert_eq!((stats.streams, stats.open_streams), (2, 1));
}

#[test]
fn faults_debug_lists_blocked_links() {
    let f = Faults::default();
    f.block(2, 1);
    f.block(1, 2);
    assert_eq!(format!("{f:?}"), "Faults { blocked: [(1, 2), (2, 1)] }");
    f.heal();
    assert!(!f.is_blocked(1, 2));
}

#[test]
fn a_peer_names_itself_in_its_stream_metadata() {
    assert_eq!(parse_from("4=127.0.0.1:5054"), Some((4, "127.0.0.1:5054")));
    assert_eq!(parse_from("4=host.example:1"), Some((4, "host.example:1")));
    for bad in [
        "",
        "4",
        "0=h:1",
        "x=h:1",
        "4=",
        "4=nohostport",
        "4=a b:1",
        &format!("4={}:1", "h".repeat(300)),
    ] {
        assert_eq!(parse_from(bad), None, "{bad:?}");
    }
}
