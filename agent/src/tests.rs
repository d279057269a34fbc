//! Agent tests against a fake master: a tonic `AgentApi` server on
//! 127.0.0.1:0 that hands every attached stream to the test.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use berth_proto as pb;
use berth_proto::agent_api_server::{AgentApi, AgentApiServer};
use berth_proto::convert::resources_to_proto;
use berth_scheduler_core::{Resources, Role};
use pb::agent_message::Message as AM;
use pb::master_message::Message as MM;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_stream::wrappers::{TcpListenerStream, UnboundedReceiverStream};
use tonic::{Request, Response, Status};

use super::*;

const WAIT: Duration = Duration::from_secs(10);

/// One attached agent stream, as seen by the fake master.
struct Session {
    inbound: mpsc::UnboundedReceiver<pb::AgentMessage>,
    outbound: mpsc::UnboundedSender<Result<pb::MasterMessage, Status>>,
    /// Uuids acknowledged on any session of this master.
    acked: Acked,
}

type Acked = std::sync::Arc<std::sync::Mutex<std::collections::HashSet<Vec<u8>>>>;

impl Session {
    async fn next(&mut self) -> AM {
        let msg = tokio::time::timeout(WAIT, self.inbound.recv())
            .await
            .expect("timed out waiting for a message from the agent")
            .expect("agent stream ended");
        msg.message.expect("empty agent message")
    }

    async fn register(&mut self) -> pb::Register {
        match self.next().await {
            AM::Register(r) => r,
            other => panic!("expected Register, got {other:?}"),
        }
    }

    /// The next status update. Pongs are skipped, and so are resends of
    /// updates already acknowledged (whose ack was lost with a connection),
    /// which are acknowledged again as a master would.
    async fn update(&mut self) -> pb::StatusUpdate {
        loop {
            match self.next().await {
                AM::StatusUpdate(u) => {
                    let uuid = &u.status.as_ref().expect("status").uuid;
                    if self.acked.lock().unwrap().contains(uuid) {
                        self.ack(&u);
                        continue;
                    }
                    return u;
                }
                AM::Pong(_) => {}
                AM::Register(r) => panic!("unexpected Register {r:?}"),
            }
        }
    }

    fn send(&self, m: MM) {
        self.outbound
            .send(Ok(pb::MasterMessage { message: Some(m) }))
            .expect("agent gone");
    }

    fn registered(&self, agent_id: &str) {
        self.send(MM::Registered(pb::Registered {
            agent_id: agent_id.into(),
            master_id: "master-1".into(),
            ping_interval_seconds: 1.0,
        }));
    }

    fn ack(&self, u: &pb::StatusUpdate) {
        let s = u.status.as_ref().expect("status");
        self.acked.lock().unwrap().insert(s.uuid.clone());
        self.send(MM::Ack(pb::StatusUpdateAck {
            framework_id: u.framework_id.clone(),
            task_id: s.task_id.clone(),
            uuid: s.uuid.clone(),
        }));
    }

    /// Expects the next update to be `state` for `task`, acks it and returns
    /// its status.
    async fn expect(&mut self, task: &str, state: pb::TaskState) -> pb::TaskStatus {
        let u = self.update().await;
        let s = u.status.clone().expect("status");
        assert_eq!((s.task_id.as_str(), s.state()), (task, state), "{s:?}");
        self.ack(&u);
        s
    }

    fn run(&self, task: pb::TaskInfo) {
        self.send(MM::RunTask(pb::RunTask {
            framework: Some(pb::FrameworkInfo {
                id: "fw-1".into(),
                name: "test".into(),
                ..Default::default()
            }),
            task: Some(task),
        }));
    }

    fn kill(&self, task: &str, grace: f64) {
        self.send(MM::KillTask(pb::KillTask {
            framework_id: "fw-1".into(),
            task_id: task.into(),
            grace_period_seconds: grace,
        }));
    }
}

async fn next_chunk(stream: &mut tonic::Streaming<pb::LogChunk>) -> Option<pb::LogChunk> {
    tokio::time::timeout(WAIT, stream.message())
        .await
        .expect("log stream stalled")
        .unwrap()
}

pub(crate) fn shell_task(id: &str, shell: &str) -> pb::TaskInfo {
    pb::TaskInfo {
        task_id: id.into(),
        name: id.into(),
        resources: Some(pb::Resources {
            cpus: 0.5,
            mem: 64.0,
            ..Default::default()
        }),
        command: Some(pb::CommandInfo {
            shell: shell.into(),
            ..Default::default()
        }),
        ..Default::default()
    }
}

struct FakeMaster {
    sessions: mpsc::UnboundedSender<Session>,
    acked: Acked,
}

#[tonic::async_trait]
impl AgentApi for FakeMaster {
    type AttachStream = UnboundedReceiverStream<Result<pb::MasterMessage, Status>>;

    async fn attach(
        &self,
        request: Request<tonic::Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut stream = request.into_inner();
        let (in_tx, in_rx) = mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok(Some(m)) = stream.message().await {
                if in_tx.send(m).is_err() {
                    break;
                }
            }
        });
        let (out_tx, out_rx) = mpsc::unbounded_channel();
        let _ = self.sessions.send(Session {
            inbound: in_rx,
            outbound: out_tx,
            acked: self.acked.clone(),
        });
        Ok(Response::new(UnboundedReceiverStream::new(out_rx)))
    }
}

struct Master {
    sessions: mpsc::UnboundedReceiver<Session>,
    _server: JoinHandle<()>,
}

impl Master {
    async fn start_on(listener: TcpListener) -> Master {
        let (tx, rx) = mpsc::unbounded_channel();
        let server = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .add_service(AgentApiServer::new(FakeMaster {
                    sessions: tx,
                    acked: Acked::default(),
                }))
                // The agent asks who leads before it attaches.
                .add_service(berth_proto::testing::FakeLeader::new().into_server())
                .serve_with_incoming(TcpListenerStream::new(listener))
                .await
                .unwrap();
        });
        Master {
            sessions: rx,
            _server: server,
        }
    }

    async fn session(&mut self) -> Session {
        tokio::time::timeout(WAIT, self.sessions.recv())
            .await
            .expect("timed out waiting for the agent to attach")
            .expect("fake master gone")
    }
}

struct RunningAgent {
    addr: SocketAddr,
    stop: Option<oneshot::Sender<()>>,
    handle: JoinHandle<Result<(), AgentError>>,
}

impl RunningAgent {
    async fn start(config: AgentConfig) -> RunningAgent {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(run(listener, config, async move {
            let _ = stopped.await;
        }));
        RunningAgent {
            addr,
            stop: Some(stop),
            handle,
        }
    }

    async fn log_client(&self) -> pb::agent_client::AgentClient<tonic::transport::Channel> {
        pb::agent_client::AgentClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
    }

    fn shutdown(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
    }

    async fn join(self) -> Result<(), AgentError> {
        tokio::time::timeout(WAIT, self.handle)
            .await
            .expect("agent did not stop")
            .expect("agent panicked")
    }
}

fn resources() -> Resources {
    "cpus:2;mem:1024;disk:1000;ports:[31000-31010]"
        .parse()
        .unwrap()
}

fn config(master: SocketAddr, work_dir: &std::path::Path) -> AgentConfig {
    let mut c = AgentConfig::new(vec![master.to_string()], work_dir.to_path_buf());
    c.resources = Some(resources());
    c.hostname = Some("test-host".into());
    c.status_retry_initial = Duration::from_millis(200);
    c.default_kill_grace = Duration::from_secs(1);
    c.kill_tasks_on_shutdown = true;
    c.docker = false;
    c
}

async fn master() -> (Master, SocketAddr) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    (Master::start_on(listener).await, addr)
}

#[tokio::test]
async fn registers_runs_tasks_resends_and_reregisters() {
    let (mut master, maddr) = master().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(maddr, dir.path());
    cfg.reserved = BTreeMap::from([(Role::new("web").unwrap(), "cpus:1;mem:256".parse().unwrap())]);
    cfg.attributes = vec![("rack".into(), "r1".into())];
    let mut agent = RunningAgent::start(cfg).await;

    // Registration carries the configured description.
    let mut s = master.session().await;
    let reg = s.register().await;
    assert_eq!(reg.agent_id, "");
    assert!(reg.tasks.is_empty());
    let info = reg.info.unwrap();
    assert_eq!(info.hostname, "test-host");
    assert_eq!(info.address, agent.addr.to_string());
    assert_eq!(info.resources, Some(resources_to_proto(&resources())));
    assert_eq!(info.reserved["web"].cpus, 1.0);
    assert_eq!(info.reserved["web"].mem, 256.0);
    assert_eq!(
        info.attributes,
        vec![pb::Attribute {
            name: "rack".into(),
            value: "r1".into()
        }]
    );
    s.registered("agent-1");

    // Pings are answered.
    s.send(MM::Ping(pb::Ping { seq: 7 }));
    match s.next().await {
        AM::Pong(p) => assert_eq!(p.seq, 7),
        other => panic!("expected Pong, got {other:?}"),
    }

    // A task goes STARTING, RUNNING, FINISHED; each update is resent (same
    // uuid) until acknowledged, and the next is not sent before.
    s.run(shell_task("t1", "echo out; exit 0"));
    let first = s.update().await;
    let st = first.status.clone().unwrap();
    assert_eq!(first.framework_id, "fw-1");
    assert_eq!(st.state(), pb::TaskState::TaskStarting);
    assert_eq!(st.source(), pb::StatusSource::Agent);
    assert_eq!(st.agent_id, "agent-1");
    assert_eq!(st.uuid.len(), 16);
    assert!(st.timestamp > 1.0e9);
    let again = s.update().await;
    assert_eq!(
        again, first,
        "the unacknowledged head is resent, nothing else"
    );
    // A wrong uuid changes nothing.
    s.send(MM::Ack(pb::StatusUpdateAck {
        framework_id: "fw-1".into(),
        task_id: "t1".into(),
        uuid: vec![0; 16],
    }));
    assert_eq!(s.update().await, first);
    s.ack(&first);
    s.expect("t1", pb::TaskState::TaskRunning).await;
    let fin = s.expect("t1", pb::TaskState::TaskFinished).await;
    assert_eq!(fin.exit_code, Some(0));
    assert_eq!(fin.reason(), REASON_EXITED);

    // A failing task reports its exit code.
    s.run(shell_task("t3", "exit 3"));
    s.expect("t3", pb::TaskState::TaskStarting).await;
    s.expect("t3", pb::TaskState::TaskRunning).await;
    let failed = s.expect("t3", pb::TaskState::TaskFailed).await;
    assert_eq!(failed.exit_code, Some(3));

    // A long-running task, then a duplicate RunTask for it (ignored).
    s.run(shell_task("t2", "echo started; exec sleep 30"));
    s.expect("t2", pb::TaskState::TaskStarting).await;
    s.expect("t2", pb::TaskState::TaskRunning).await;
    s.run(shell_task("t2", "exit 0"));

    // The master drops the stream: the agent re-registers with its id and
    // the running task.
    drop(s);
    let mut s = master.session().await;
    let reg = s.register().await;
    assert_eq!(reg.agent_id, "agent-1");
    let listed: Vec<(String, String, pb::TaskState)> = reg
        .tasks
        .iter()
        .map(|t| {
            (
                t.framework_id.clone(),
                t.task.as_ref().unwrap().task_id.clone(),
                t.state(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        vec![("fw-1".into(), "t2".into(), pb::TaskState::TaskRunning)]
    );
    s.registered("agent-1");

    // Kill ends TASK_KILLED.
    s.kill("t2", 0.0);
    let killed = s.update().await;
    let st = killed.status.clone().unwrap();
    assert_eq!(
        (st.task_id.as_str(), st.state()),
        ("t2", pb::TaskState::TaskKilled)
    );
    assert_eq!(st.reason(), REASON_KILLED_BY_REQUEST);
    // A kill of a terminal task does nothing new (only the unacknowledged
    // TASK_KILLED is resent); of an unknown one, TASK_LOST.
    s.kill("t2", 0.0);
    s.kill("nope", 0.0);
    let lost = loop {
        let u = s.update().await;
        if u.status.as_ref().unwrap().task_id == "nope" {
            break u;
        }
        assert_eq!(u, killed);
    };
    s.ack(&killed);
    s.ack(&lost);
    let lost = lost.status.unwrap();
    assert_eq!(lost.state(), pb::TaskState::TaskLost);
    assert_eq!(lost.reason(), REASON_UNKNOWN_TASK);

    // Invalid tasks and spawn failures fail with LAUNCH_FAILED.
    let mut both = shell_task("bad", "true");
    both.command.as_mut().unwrap().argv = vec!["true".into()];
    s.run(both);
    let bad = s.expect("bad", pb::TaskState::TaskFailed).await;
    assert_eq!(bad.reason(), REASON_LAUNCH_FAILED);
    assert!(bad.message.contains("both"), "{}", bad.message);
    let mut missing = shell_task("missing", "");
    missing.command.as_mut().unwrap().argv = vec!["/no/such/program-xyz".into()];
    s.run(missing);
    s.expect("missing", pb::TaskState::TaskStarting).await;
    let m = s.expect("missing", pb::TaskState::TaskFailed).await;
    assert_eq!(m.reason(), REASON_LAUNCH_FAILED);
    assert!(m.message.contains("No such file"), "{}", m.message);

    // Shutdown kills running tasks and delivers their final updates.
    s.run(shell_task(
        "t4",
        "trap 'exit 0' TERM; while true; do sleep 0.05; done",
    ));
    s.expect("t4", pb::TaskState::TaskStarting).await;
    s.expect("t4", pb::TaskState::TaskRunning).await;
    agent.shutdown();
    let k = s.expect("t4", pb::TaskState::TaskKilled).await;
    assert_eq!(k.reason(), REASON_AGENT_SHUTDOWN);
    agent.join().await.unwrap();
}

/// `--resources ports:[...]` alone: the agent registers with its detected
/// cpus, memory and disk and the given ports.
#[tokio::test]
async fn given_resources_are_merged_over_the_detected_ones() {
    let (mut master, maddr) = master().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(maddr, dir.path());
    cfg.resources = None;
    cfg.resource_overrides = Some("ports:[40000-40009]".parse().unwrap());
    let mut agent = RunningAgent::start(cfg).await;
    let mut s = master.session().await;
    let info = s.register().await.info.unwrap();
    let offered = berth_proto::convert::resources_from_proto_opt(info.resources.as_ref()).unwrap();
    let detected = crate::detect_resources(dir.path()).unwrap();
    assert_eq!(offered.cpus, detected.cpus);
    assert_eq!(offered.mem, detected.mem);
    assert!(
        offered.disk > berth_scheduler_core::Scalar::ZERO,
        "{offered}"
    );
    assert_eq!(offered.ports.to_string(), "[40000-40009]");
    agent.shutdown();
    agent.join().await.unwrap();
}

/// A program that does not exist, or cannot be executed, ends its task
/// with the shell's code: 127 and 126 (as Docker's), reason LAUNCH_FAILED.
#[tokio::test]
async fn a_program_that_cannot_start_fails_with_the_shells_exit_code() {
    let (mut master, maddr) = master().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = RunningAgent::start(config(maddr, dir.path())).await;
    let mut s = master.session().await;
    s.register().await;
    s.registered("agent-3");
    let plain = dir.path().join("plain-file");
    std::fs::write(&plain, "not a program").unwrap();
    for (id, program, code) in [
        ("missing", "/no/such/program-xyz".to_owned(), 127),
        ("noexec", plain.display().to_string(), 126),
    ] {
        s.run(pb::TaskInfo {
            command: Some(pb::CommandInfo {
                argv: vec![program],
                ..Default::default()
            }),
            ..shell_task(id, "")
        });
        s.expect(id, pb::TaskState::TaskStarting).await;
        let end = s.expect(id, pb::TaskState::TaskFailed).await;
        assert_eq!(end.reason(), REASON_LAUNCH_FAILED, "{end:?}");
        assert_eq!(end.exit_code, Some(code), "{end:?}");
        assert!(end.message.starts_with("cannot start"), "{end:?}");
    }
    agent.shutdown();
    agent.join().await.unwrap();
}

#[tokio::test]
async fn shutdown_framework_kills_its_tasks() {
    let (mut master, maddr) = master().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = RunningAgent::start(config(maddr, dir.path())).await;
    let mut s = master.session().await;
    s.register().await;
    s.registered("agent-2");
    for t in ["a", "b"] {
        s.run(shell_task(t, "exec sleep 30"));
    }
    let mut running = 0;
    while running < 2 {
        let u = s.update().await;
        s.ack(&u);
        if u.status.unwrap().state() == pb::TaskState::TaskRunning {
            running += 1;
        }
    }
    s.send(MM::ShutdownFramework(pb::ShutdownFramework {
        framework_id: "fw-1".into(),
    }));
    let mut killed = Vec::new();
    while killed.len() < 2 {
        let u = s.update().await;
        s.ack(&u);
        let st = u.status.unwrap();
        assert_eq!(st.state(), pb::TaskState::TaskKilled);
        assert_eq!(st.reason(), REASON_FRAMEWORK_REMOVED);
        killed.push(st.task_id);
    }
    killed.sort();
    assert_eq!(killed, ["a", "b"]);
    agent.shutdown();
    agent.join().await.unwrap();
}

#[tokio::test]
async fn read_log_follows_a_running_task() {
    let (mut master, maddr) = master().await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = RunningAgent::start(config(maddr, dir.path())).await;
    let mut s = master.session().await;
    s.register().await;
    s.registered("agent-3");
    // The task prints a line, then waits for the test to create `go`.
    s.run(shell_task(
        "logger",
        "echo line1; while [ ! -f go ]; do sleep 0.05; done; echo line2; echo line3; echo oops >&2",
    ));
    s.expect("logger", pb::TaskState::TaskStarting).await;
    s.expect("logger", pb::TaskState::TaskRunning).await;

    let mut client = agent.log_client().await;
    let mut stream = client
        .read_log(pb::ReadLogRequest {
            task_id: "logger".into(),
            framework_id: String::new(),
            file: pb::LogFile::Stdout as i32,
            offset: 0,
            follow: true,
        })
        .await
        .unwrap()
        .into_inner();
    // Output arrives while the task is still running.
    let first = next_chunk(&mut stream).await.expect("a first chunk");
    assert_eq!((first.offset, first.data.as_slice()), (0, &b"line1\n"[..]));
    std::fs::write(dir.path().join("sandboxes/fw-1/logger/go"), b"").unwrap();
    let mut data = first.data;
    while let Some(chunk) = next_chunk(&mut stream).await {
        assert_eq!(chunk.offset, data.len() as u64);
        data.extend_from_slice(&chunk.data);
    }
    // The stream ended by itself once the task was done.
    assert_eq!(String::from_utf8(data).unwrap(), "line1\nline2\nline3\n");
    let fin = s.expect("logger", pb::TaskState::TaskFinished).await;
    assert_eq!(fin.exit_code, Some(0));

    // After the task is forgotten its logs are still readable, from an offset.
    let read_all = |file: pb::LogFile, offset: u64, framework_id: &str| {
        let mut client = client.clone();
        let req = pb::ReadLogRequest {
            task_id: "logger".into(),
            framework_id: framework_id.into(),
            file: file as i32,
            offset,
            follow: true,
        };
        async move {
            let mut stream = client.read_log(req).await?.into_inner();
            let mut data = Vec::new();
            while let Some(c) = stream.message().await? {
                data.extend_from_slice(&c.data);
            }
            Ok::<_, Status>(String::from_utf8(data).unwrap())
        }
    };
    // Give the agent a moment to process the ack and forget the task.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert_eq!(
        read_all(pb::LogFile::Stdout, 6, "fw-1").await.unwrap(),
        "line2\nline3\n"
    );
    assert_eq!(
        read_all(pb::LogFile::Stderr, 0, "").await.unwrap(),
        "oops\n"
    );

    let err = client
        .read_log(pb::ReadLogRequest {
            task_id: "unknown".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::NotFound, "{err}");
    assert!(err.message().contains("unknown"), "{err}");
    let err = client
        .read_log(pb::ReadLogRequest {
            task_id: "a/b".into(),
            ..Default::default()
        })
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::InvalidArgument, "{err}");

    agent.shutdown();
    agent.join().await.unwrap();
}

#[tokio::test]
async fn survives_master_restart_and_silence() {
    // Nothing listens on the master's address at first.
    let probe = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let maddr = probe.local_addr().unwrap();
    drop(probe);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(maddr, dir.path());
    cfg.master_timeout = Duration::from_millis(700);
    let mut agent = RunningAgent::start(cfg).await;
    tokio::time::sleep(Duration::from_millis(600)).await;

    let mut master = Master::start_on(TcpListener::bind(maddr).await.unwrap()).await;
    let mut s = master.session().await;
    assert_eq!(s.register().await.agent_id, "");
    s.registered("agent-4");
    s.run(shell_task("t", "exec sleep 30"));
    s.expect("t", pb::TaskState::TaskStarting).await;
    // RUNNING is not acknowledged; the master then goes silent.
    let running = s.update().await;
    assert_eq!(
        running.status.as_ref().unwrap().state(),
        pb::TaskState::TaskRunning
    );

    // After master_timeout without any message the agent reconnects,
    // re-registers with its id, and resends the unacknowledged head.
    let mut s2 = master.session().await;
    let reg = s2.register().await;
    assert_eq!(reg.agent_id, "agent-4");
    assert_eq!(reg.tasks.len(), 1);
    assert_eq!(reg.tasks[0].state(), pb::TaskState::TaskRunning);
    s2.registered("agent-4");
    let resent = s2.update().await;
    assert_eq!(resent, running);
    s2.ack(&resent);
    drop(s);

    agent.shutdown();
    s2.expect("t", pb::TaskState::TaskKilled).await;
    agent.join().await.unwrap();
}

/// A TCP proxy whose open connections can be cut.
struct Proxy {
    addr: SocketAddr,
    conns: std::sync::Arc<std::sync::Mutex<Vec<JoinHandle<()>>>>,
    _accept: JoinHandle<()>,
}

impl Proxy {
    async fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let conns = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let c = conns.clone();
        let accept = tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                let h = tokio::spawn(async move {
                    if let Ok(mut outbound) = tokio::net::TcpStream::connect(target).await {
                        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                    }
                });
                c.lock().unwrap().push(h);
            }
        });
        Proxy {
            addr,
            conns,
            _accept: accept,
        }
    }

    fn cut(&self) {
        for h in self.conns.lock().unwrap().drain(..) {
            h.abort();
        }
    }
}

#[tokio::test]
async fn reconnects_after_the_connection_is_cut() {
    let (mut master, maddr) = master().await;
    let proxy = Proxy::start(maddr).await;
    let dir = tempfile::tempdir().unwrap();
    let mut agent = RunningAgent::start(config(proxy.addr, dir.path())).await;
    let mut s = master.session().await;
    s.register().await;
    s.registered("agent-5");
    s.run(shell_task("t", "exec sleep 30"));
    s.expect("t", pb::TaskState::TaskStarting).await;
    s.expect("t", pb::TaskState::TaskRunning).await;

    proxy.cut();
    let mut s2 = master.session().await;
    let reg = s2.register().await;
    assert_eq!(reg.agent_id, "agent-5");
    assert_eq!(reg.tasks.len(), 1);
    assert_eq!(reg.tasks[0].state(), pb::TaskState::TaskRunning);
    s2.registered("agent-5");
    drop(s);

    agent.shutdown();
    s2.expect("t", pb::TaskState::TaskKilled).await;
    agent.join().await.unwrap();
}

/// An agent stopped without killing its tasks (as after a crash) and
/// started again on the same work dir re-registers with its agent id and
/// its running task, resends the update the master never acknowledged
/// (same uuid), and still controls the re-adopted process: a kill ends it
/// as KILLED.
#[tokio::test]
async fn restart_readopts_tasks_and_resends_unacknowledged_updates() {
    let (mut master, maddr) = master().await;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(maddr, dir.path());
    cfg.kill_tasks_on_shutdown = false;
    let mut agent = RunningAgent::start(cfg.clone()).await;
    let mut s = master.session().await;
    s.register().await;
    s.registered("agent-7");
    s.run(shell_task("long", "sleep 600"));
    s.expect("long", pb::TaskState::TaskStarting).await;
    // RUNNING arrives but is never acknowledged.
    let running = s.update().await;
    let running_status = running.status.clone().unwrap();
    assert_eq!(running_status.state(), pb::TaskState::TaskRunning);
    agent.shutdown();
    agent.join().await.unwrap();

    let sandbox = dir.path().join("sandboxes").join("fw-1").join("long");
    assert!(sandbox.is_dir());

    let mut agent = RunningAgent::start(cfg).await;
    let mut s = master.session().await;
    let reg = s.register().await;
    assert_eq!(reg.agent_id, "agent-7", "the checkpointed agent id");
    assert_eq!(reg.tasks.len(), 1);
    assert_eq!(reg.tasks[0].state, pb::TaskState::TaskRunning as i32);
    s.registered("agent-7");
    let resent = s.update().await;
    assert_eq!(
        resent.status.as_ref().unwrap().uuid,
        running_status.uuid,
        "the unacknowledged RUNNING is resent as it was"
    );
    s.ack(&resent);
    s.kill("long", 1.0);
    let end = s.expect("long", pb::TaskState::TaskKilled).await;
    assert_eq!(end.reason(), REASON_KILLED_BY_REQUEST, "{end:?}");
    agent.shutdown();
    agent.join().await.unwrap();
}

/// Waits until `path` is gone; returns how long that took.
async fn wait_gone(path: &std::path::Path) -> Duration {
    let t0 = Instant::now();
    while path.exists() {
        assert!(t0.elapsed() < WAIT, "{} was never deleted", path.display());
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    t0.elapsed()
}

#[tokio::test]
async fn sandboxes_of_forgotten_tasks_are_deleted_after_the_delay() {
    let (mut master, maddr) = master().await;
    let dir = tempfile::tempdir().unwrap();
    // Left by an earlier run: the old sandbox of a task this agent does
    // not know, and what a crash left in the trash.
    let old = dir.path().join("sandboxes/fw-0/old");
    std::fs::create_dir_all(&old).unwrap();
    std::fs::write(old.join("stdout"), "x").unwrap();
    let long_ago = std::time::SystemTime::now() - Duration::from_secs(3600);
    for p in [old.join("stdout"), old.clone()] {
        std::fs::File::open(&p)
            .unwrap()
            .set_modified(long_ago)
            .unwrap();
    }
    let leftover = dir.path().join(gc::TRASH_DIR).join("leftover");
    std::fs::create_dir_all(&leftover).unwrap();
    let delay = Duration::from_secs(1);
    let mut cfg = config(maddr, dir.path());
    cfg.sandbox_gc_delay = delay;
    let mut agent = RunningAgent::start(cfg).await;
    let mut s = master.session().await;
    s.register().await;
    s.registered("agent-gc");
    wait_gone(&old).await;
    wait_gone(&leftover).await;
    // The emptied framework directory goes last, in the same sweep.
    wait_gone(&dir.path().join("sandboxes/fw-0")).await;

    s.run(shell_task("done", "echo bye"));
    s.run(shell_task("runs", "exec sleep 30"));
    let mut ended = None;
    let mut running = false;
    while ended.is_none() || !running {
        let u = s.update().await;
        s.ack(&u);
        let st = u.status.unwrap();
        match (st.task_id.as_str(), st.state()) {
            ("done", pb::TaskState::TaskFinished) => ended = Some(Instant::now()),
            ("runs", pb::TaskState::TaskRunning) => running = true,
            _ => {}
        }
    }
    let sandboxes = dir.path().join("sandboxes/fw-1");
    // Not before the delay, counted from the end (the task was forgotten
    // once its last update was acknowledged, just now).
    let done = sandboxes.join("done");
    assert_eq!(
        std::fs::read_to_string(done.join("stdout")).unwrap(),
        "bye\n"
    );
    wait_gone(&done).await;
    let since_end = ended.unwrap().elapsed();
    assert!(
        since_end >= delay - Duration::from_millis(50),
        "{since_end:?}"
    );
    // A running task's sandbox stays, however quiet it is.
    tokio::time::sleep(delay * 2).await;
    assert!(sandboxes.join("runs/stdout").exists());
    // Once it ends and is forgotten, it goes too.
    s.kill("runs", 0.0);
    s.expect("runs", pb::TaskState::TaskKilled).await;
    wait_gone(&sandboxes.join("runs")).await;
    agent.shutdown();
    agent.join().await.unwrap();
}

/// Fail closed: once a checkpoint write fails the agent reports nothing
/// more (the update it could not record is never sent), launches nothing
/// more, and stops with the error.
#[tokio::test]
async fn a_failed_checkpoint_write_stops_the_agent() {
    let (mut master, maddr) = master().await;
    let dir = tempfile::tempdir().unwrap();
    let agent = RunningAgent::start(config(maddr, dir.path())).await;
    let mut s = master.session().await;
    s.register().await;
    s.registered("agent-1");
    s.run(shell_task("t1", "exit 0"));
    s.expect("t1", pb::TaskState::TaskStarting).await;
    s.expect("t1", pb::TaskState::TaskRunning).await;
    s.expect("t1", pb::TaskState::TaskFinished).await;

    let path = std::path::absolute(dir.path())
        .unwrap()
        .join(crate::checkpoint::FILE_NAME);
    crate::writer::inject::fail_writes(path);
    let marker = dir.path().join("ran");
    s.run(shell_task("t2", &format!("touch {}", marker.display())));
    let err = agent
        .join()
        .await
        .expect_err("the agent stops with the error");
    assert!(matches!(err, AgentError::CheckpointWrite(_)), "{err:?}");
    let text = err.to_string();
    assert!(
        text.contains("checkpoint write failed") && text.contains("injected write failure"),
        "{text}"
    );
    // Nothing about t2 was sent, and it never ran.
    while let Ok(Some(m)) = tokio::time::timeout(Duration::from_millis(200), s.inbound.recv()).await
    {
        if let Some(AM::StatusUpdate(u)) = m.message {
            let st = u.status.unwrap();
            assert_ne!(st.task_id, "t2", "{st:?}");
        }
    }
    assert!(!marker.exists(), "t2 was launched after the failed write");
}
