//! Tests of the core. `handlers` runs the handlers without IO, on a fake
//! Raft node (no storage, sockets, timers or runtime); the others drive a
//! core leading a real one-master Raft group on redb, with the helpers
//! here.

mod agents;
mod frameworks;
mod handlers;
mod kv;
mod replicate;
mod streams;
mod takeover;
mod waits;

use super::*;
use crate::raft::node::{NodeConfig, start};
use crate::raft::storage::RaftStorage;
use crate::raft::transport::{Faults, GrpcTransport};
use pb::master_message::Message as M;

type AgentRx = mpsc::Receiver<Result<pb::MasterMessage, CallError>>;

/// Drives the core's Raft side in tests, where no run loop does.
impl Core {
    /// Executes the sends the handlers pushed, as the run loop does after
    /// each input; snapshots stay in [`Core::actions`] for tests to see.
    fn deliver_sends(&mut self) {
        let (snapshots, sends): (Vec<Action>, Vec<Action>) = std::mem::take(&mut self.actions)
            .into_iter()
            .partition(|a| matches!(a, Action::Snapshot { .. }));
        self.actions = sends;
        self.execute_actions();
        self.actions = snapshots;
    }

    /// Applies what Raft delivers until `rx` has the reply.
    async fn answered<T>(&mut self, mut rx: oneshot::Receiver<T>) -> T {
        loop {
            self.deliver_sends();
            match rx.try_recv() {
                Ok(v) => return v,
                Err(oneshot::error::TryRecvError::Closed) => panic!("reply dropped"),
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let applied = tokio::time::timeout(Duration::from_secs(10), self.applied_rx.recv())
                .await
                .expect("nothing applied within 10 s")
                .expect("raft stopped");
            self.clock = Clock::read();
            self.apply(applied);
        }
    }

    /// Applies whatever Raft delivers within 100 ms.
    async fn settle(&mut self) {
        while let Ok(Some(applied)) =
            tokio::time::timeout(Duration::from_millis(100), self.applied_rx.recv()).await
        {
            self.clock = Clock::read();
            self.apply(applied);
        }
        self.deliver_sends();
    }

    async fn accept_wait(
        &mut self,
        req: pb::AcceptRequest,
    ) -> Result<pb::AcceptResponse, CallError> {
        match self.call_wait(SchedulerCall::Accept(req)).await? {
            CallReply::Accept(r) => Ok(r),
            CallReply::Empty => panic!("accept answered without a response"),
        }
    }

    /// Makes a scheduler call, as the service does, and waits for the answer.
    async fn call_wait(&mut self, call: SchedulerCall) -> Result<CallReply, CallError> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::Call { call, reply });
        self.answered(rx).await
    }

    async fn subscribe_wait(&mut self, info: pb::FrameworkInfo) -> Result<Subscription, CallError> {
        let (reply, rx) = oneshot::channel();
        self.request(Request::Subscribe { info, reply });
        self.answered(rx).await
    }
}
type EventRx = mpsc::Receiver<Result<pb::Event, CallError>>;

/// A core leading a one-master Raft group on a temporary directory.
async fn core(dir: &tempfile::TempDir) -> Core {
    core_with(dir, |_| {}).await
}

/// Master 1's core, at 127.0.0.1:1, on an empty registry.
fn new_core(
    config: MasterConfig,
    handle: RaftHandle,
    applied: mpsc::Receiver<Applied>,
    transport: Arc<dyn Transport>,
) -> Core {
    Core::new(
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
    )
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
    let mut core = new_core(config, handle, applied, transport);
    for _ in 0..200 {
        core.on_raft_status();
        // Apply what Raft delivers until the takeover's barrier is.
        while core.taking_over.is_some() {
            match tokio::time::timeout(Duration::from_secs(10), core.applied_rx.recv()).await {
                Ok(Some(applied)) => {
                    core.clock = Clock::read();
                    core.apply(applied);
                }
                _ => panic!("the takeover's barrier was not applied within 10 s"),
            }
        }
        if core.leading.is_some() {
            return core;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the one-master group did not elect its master");
}

/// Delivers an agent message, then applies whatever it proposed.
async fn deliver(core: &mut Core, conn: u64, message: pb::AgentMessage) {
    core.agent_message(conn, message);
    while let Ok(Some(applied)) =
        tokio::time::timeout(Duration::from_millis(100), core.applied_rx.recv()).await
    {
        core.apply(applied);
    }
    core.deliver_sends();
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
) -> (Result<(), CallError>, AgentRx) {
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
    core.request(Request::AgentRegister {
        conn,
        register: reg,
        tx,
        reply,
    });
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
    core.deliver_sends();
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
