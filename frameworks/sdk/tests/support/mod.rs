//! A fake berth master for SDK tests: a real tonic server implementing the
//! scheduler service on 127.0.0.1:0 that records every call, lets the test
//! push events, drop the stream, refuse calls, and stop and restart on the
//! same port; and the operator service's `GetLeader`, which the SDK asks
//! before it subscribes (the fake leads unless told to follow, or to
//! freeze).

// Test scaffolding: panicking on a broken fake is what we want.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_proto as pb;
use berth_proto::scheduler_server::{Scheduler, SchedulerServer};
use berth_proto::testing::FakeLeader;
pub use berth_proto::testing::LeaderRole;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Code, Request, Response, Status};

/// A recorded call (other than Subscribe).
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
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

impl Call {
    pub fn header(&self) -> Option<&pb::CallHeader> {
        match self {
            Call::Accept(r) => r.header.as_ref(),
            Call::Decline(r) => r.header.as_ref(),
            Call::Revive(r) => r.header.as_ref(),
            Call::Suppress(r) => r.header.as_ref(),
            Call::Kill(r) => r.header.as_ref(),
            Call::Acknowledge(r) => r.header.as_ref(),
            Call::Reconcile(r) => r.header.as_ref(),
            Call::Teardown(r) => r.header.as_ref(),
            Call::UpdatePending(r) => r.header.as_ref(),
        }
    }
}

type EventTx = mpsc::Sender<Result<pb::Event, Status>>;

/// The fake's state; survives stop/restart like a registry would.
#[derive(Debug, Default)]
pub struct State {
    pub subscribes: Vec<pb::FrameworkInfo>,
    pub calls: Vec<Call>,
    pub frameworks: HashSet<String>,
    pub next_framework: u64,
    pub next_stream: u64,
    pub framework_id: String,
    pub stream_id: String,
    pub sender: Option<EventTx>,
    pub heartbeat_seconds: f64,
    pub auto_heartbeat: bool,
    pub accept_error: Option<(Code, String)>,
    /// Accept waits this long before answering.
    pub accept_delay: Option<Duration>,
}

#[derive(Clone)]
struct Service {
    state: Arc<Mutex<State>>,
    /// How it answers `GetLeader`; a frozen fake sends no heartbeats.
    leader: FakeLeader,
}

impl Service {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Records the call, then checks its header like the master does.
    fn check(&self, call: Call) -> Result<(), Status> {
        let mut s = self.lock();
        let header = call.header().cloned().unwrap_or_default();
        s.calls.push(call);
        if s.sender.is_none() || header.framework_id != s.framework_id {
            return Err(Status::failed_precondition("framework is not subscribed"));
        }
        if header.stream_id != s.stream_id {
            return Err(Status::failed_precondition("stale stream id"));
        }
        Ok(())
    }
}

#[tonic::async_trait]
impl Scheduler for Service {
    type SubscribeStream = ReceiverStream<Result<pb::Event, Status>>;

    async fn subscribe(
        &self,
        request: Request<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let info = request.into_inner().framework.unwrap_or_default();
        let mut s = self.lock();
        s.subscribes.push(info.clone());
        if info.name.is_empty() {
            return Err(Status::invalid_argument("framework name must not be empty"));
        }
        let id = if info.id.is_empty() {
            s.next_framework += 1;
            let id = format!("fw-{}", s.next_framework);
            s.frameworks.insert(id.clone());
            id
        } else if s.frameworks.contains(&info.id) {
            info.id.clone()
        } else if info.create {
            s.frameworks.insert(info.id.clone());
            info.id.clone()
        } else {
            return Err(Status::not_found(format!(
                "unknown framework {:?}",
                info.id
            )));
        };
        s.next_stream += 1;
        let stream_id = format!("stream-{}", s.next_stream);
        let (tx, rx) = mpsc::channel(64);
        let subscribed = pb::Event {
            event: Some(pb::event::Event::Subscribed(pb::Subscribed {
                framework_id: id.clone(),
                stream_id: stream_id.clone(),
                heartbeat_interval_seconds: s.heartbeat_seconds,
                master_id: "fake-master".into(),
            })),
        };
        tx.try_send(Ok(subscribed)).unwrap();
        if s.auto_heartbeat {
            let weak = tx.downgrade();
            let every = Duration::from_secs_f64(s.heartbeat_seconds);
            let leader = self.leader.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(every).await;
                    let Some(tx) = weak.upgrade() else { return };
                    if leader.role() == LeaderRole::Frozen {
                        continue;
                    }
                    let hb = pb::Event {
                        event: Some(pb::event::Event::Heartbeat(pb::Heartbeat {})),
                    };
                    if tx.send(Ok(hb)).await.is_err() {
                        return;
                    }
                }
            });
        }
        // Replacing the sender ends the previous stream.
        s.sender = Some(tx);
        s.framework_id = id;
        s.stream_id = stream_id;
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn accept(
        &self,
        request: Request<pb::AcceptRequest>,
    ) -> Result<Response<pb::AcceptResponse>, Status> {
        let r = request.into_inner();
        self.check(Call::Accept(r.clone()))?;
        if let Some((code, msg)) = self.lock().accept_error.clone() {
            return Err(Status::new(code, msg));
        }
        let delay = self.lock().accept_delay;
        if let Some(delay) = delay {
            tokio::time::sleep(delay).await;
        }
        let launched_task_ids = r
            .operations
            .iter()
            .filter_map(|op| {
                op.operation
                    .as_ref()
                    .map(|pb::operation::Operation::Launch(l)| l)
            })
            .flat_map(|l| l.tasks.iter().map(|t| t.task_id.clone()))
            .collect();
        Ok(Response::new(pb::AcceptResponse { launched_task_ids }))
    }

    async fn decline(&self, r: Request<pb::DeclineRequest>) -> Result<Response<pb::Empty>, Status> {
        self.check(Call::Decline(r.into_inner()))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn revive(&self, r: Request<pb::ReviveRequest>) -> Result<Response<pb::Empty>, Status> {
        self.check(Call::Revive(r.into_inner()))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn suppress(
        &self,
        r: Request<pb::SuppressRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check(Call::Suppress(r.into_inner()))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn kill(&self, r: Request<pb::KillRequest>) -> Result<Response<pb::Empty>, Status> {
        self.check(Call::Kill(r.into_inner()))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn acknowledge(
        &self,
        r: Request<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        let r = r.into_inner();
        self.check(Call::Acknowledge(r.clone()))?;
        if r.uuid.len() != 16 {
            return Err(Status::invalid_argument("uuid must be 16 bytes"));
        }
        Ok(Response::new(pb::Empty {}))
    }

    async fn reconcile(
        &self,
        r: Request<pb::ReconcileRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check(Call::Reconcile(r.into_inner()))?;
        Ok(Response::new(pb::Empty {}))
    }

    async fn teardown(
        &self,
        r: Request<pb::TeardownRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check(Call::Teardown(r.into_inner()))?;
        let mut s = self.lock();
        let id = s.framework_id.clone();
        s.frameworks.remove(&id);
        s.sender = None;
        Ok(Response::new(pb::Empty {}))
    }

    async fn update_pending(
        &self,
        r: Request<pb::UpdatePendingRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.check(Call::UpdatePending(r.into_inner()))?;
        Ok(Response::new(pb::Empty {}))
    }
}

/// A running (or stopped) fake master.
pub struct FakeMaster {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    /// How it answers `GetLeader` (it leads unless a test says otherwise).
    pub leader: FakeLeader,
    running: Option<(oneshot::Sender<()>, JoinHandle<()>)>,
}

impl FakeMaster {
    /// Starts a fake on an ephemeral port; `heartbeat_seconds` goes into
    /// SUBSCRIBED, and heartbeats are sent at that interval if
    /// `auto_heartbeat`.
    pub async fn start(heartbeat_seconds: f64, auto_heartbeat: bool) -> FakeMaster {
        let state = Arc::new(Mutex::new(State {
            heartbeat_seconds,
            auto_heartbeat,
            ..State::default()
        }));
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let mut fake = FakeMaster {
            addr,
            state,
            leader: FakeLeader::new(),
            running: None,
        };
        fake.serve(listener);
        fake
    }

    fn serve(&mut self, listener: TcpListener) {
        let service = SchedulerServer::new(Service {
            state: Arc::clone(&self.state),
            leader: self.leader.clone(),
        });
        let operator = self.leader.clone().into_server();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(service)
                .add_service(operator)
                .serve_with_incoming_shutdown(TcpListenerStream::new(listener), async {
                    let _ = rx.await;
                })
                .await
                .unwrap();
        });
        self.running = Some((tx, handle));
    }

    /// The address to give the SDK.
    pub fn address(&self) -> String {
        self.addr.to_string()
    }

    pub fn state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap()
    }

    /// Pushes an event on the current stream.
    pub async fn push(&self, event: pb::event::Event) {
        let tx = self.state().sender.clone().expect("no stream");
        tx.send(Ok(pb::Event { event: Some(event) })).await.unwrap();
    }

    /// Ends the current stream (as a master does when it drops a
    /// connection).
    pub fn drop_stream(&self) {
        self.state().sender = None;
    }

    /// Pretends a newer subscription exists: calls with the current stream
    /// id become stale.
    pub fn supersede(&self) {
        self.state().stream_id = "someone-else".into();
    }

    /// Forgets every framework, as after their failover timeout expired.
    pub fn forget_frameworks(&self) {
        self.state().frameworks.clear();
    }

    pub fn calls(&self) -> Vec<Call> {
        self.state().calls.clone()
    }

    pub fn acks(&self) -> Vec<pb::AcknowledgeRequest> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::Acknowledge(a) => Some(a),
                _ => None,
            })
            .collect()
    }

    /// The UpdatePending calls, in order.
    pub fn pending_updates(&self) -> Vec<pb::UpdatePendingRequest> {
        self.calls()
            .into_iter()
            .filter_map(|c| match c {
                Call::UpdatePending(u) => Some(u),
                _ => None,
            })
            .collect()
    }

    pub fn subscribes(&self) -> Vec<pb::FrameworkInfo> {
        self.state().subscribes.clone()
    }

    /// Stops serving: ends the stream and closes the listener.
    pub async fn stop(&mut self) {
        self.drop_stream();
        if let Some((tx, mut handle)) = self.running.take() {
            let _ = tx.send(());
            if tokio::time::timeout(Duration::from_secs(3), &mut handle)
                .await
                .is_err()
            {
                handle.abort();
            }
        }
    }

    /// Serves again on the same port, with the same state.
    pub async fn restart(&mut self) {
        let listener = TcpListener::bind(self.addr).await.unwrap();
        self.serve(listener);
    }
}

/// Polls `cond` every 10 ms until it holds, failing after 5 s.
pub async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !cond() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A status update from an agent, with a uuid derived from `n`.
pub fn agent_update(task: &str, n: u8, state: pb::TaskState) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: task.into(),
        state: state as i32,
        source: pb::StatusSource::Agent as i32,
        agent_id: "agent-1".into(),
        uuid: vec![n; 16],
        timestamp: berth_proto::convert::unix_now(),
        ..Default::default()
    }
}

/// A master-generated update: no uuid.
pub fn master_update(task: &str, state: pb::TaskState) -> pb::TaskStatus {
    pb::TaskStatus {
        task_id: task.into(),
        state: state as i32,
        source: pb::StatusSource::Master as i32,
        reason: berth_proto::TaskReason::Reconciliation as i32,
        ..Default::default()
    }
}
