//! Simulated agents: each one is a tokio task that speaks the real agent
//! protocol (`AgentApi.Attach`) to the leader, as `berth agent` does
//! (`agent/src/master.rs`, `agent/src/agent/`), but runs no process.
//!
//! - It registers (re-registering with its id and tasks after a lost
//!   stream), answers pings, and follows a follower's `berth-leader`
//!   redirect; it reconnects when the master is silent for 15 s.
//! - On `RunTask` it reports TASK_RUNNING (TASK_STARTING first with
//!   `--send-starting`, as the real agent does), then, after the task's
//!   duration (label `duration_ms`), TASK_FINISHED with exit code 0. A
//!   task without the label fails at once, unless the fleet runs
//!   long-running services ([`Fleet::services`]): then it runs until it
//!   is killed or the bench tells its agent to fail it ([`Command`]).
//! - With [`Fleet::services`] or [`Fleet::reporting`], every state an
//!   agent reports is also sent to the bench as a [`TaskEvent`], stamped
//!   when the update was made (a task's first TASK_RUNNING with the task
//!   itself).
//! - Its updates go through the agent's own `StatusUpdateManager`: one
//!   queue per task, only the head in flight, resent with backoff until the
//!   acknowledgement (relayed by the master) arrives, every head resent
//!   after a re-registration. A task is forgotten once its terminal update
//!   is acknowledged.
//!
//! Agents share a handful of HTTP/2 connections per master (`Channel`s,
//! one per `per_connection` agents): many streams on one connection, as
//! one process would multiplex them; one TCP connection per agent would
//! cost 10,000 sockets and their buffers on both sides.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_agent::status_update::{AckOutcome, StatusUpdateManager, TaskKey};
use berth_proto as pb;
use berth_proto::agent_api_client::AgentApiClient;
use pb::master_message::Message as M;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::{Channel, Endpoint};

use crate::stats::{C, Counters};

/// The label of a task that says how long it runs, in milliseconds.
pub const DURATION_LABEL: &str = "duration_ms";
/// Longest task duration accepted from the label.
const MAX_DURATION: Duration = Duration::from_secs(3600);
/// Reconnect when nothing arrives from the master for this long (the real
/// agent's default `master_timeout`).
const MASTER_TIMEOUT: Duration = Duration::from_secs(15);
/// First and largest delay before reconnecting.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Messages queued towards the master per agent.
const OUTBOUND_BUFFER: usize = 1024;
/// The gRPC metadata key a follower names the leader in.
const LEADER_METADATA_KEY: &str = "berth-leader";

/// What every simulated agent shares.
#[derive(Debug)]
pub struct Fleet {
    /// Master addresses, the leader first.
    pub masters: Vec<String>,
    /// Each agent's unreserved resources.
    pub resources: pb::Resources,
    /// Report TASK_STARTING before TASK_RUNNING.
    pub send_starting: bool,
    /// First resend delay of an unacknowledged update.
    pub status_retry: Duration,
    /// Agents per HTTP/2 connection.
    pub per_connection: usize,
    /// Total number of agents (for the number of connections).
    pub agents: usize,
    pub counters: Arc<Counters>,
    /// The shared connections, by master address.
    channels: Mutex<HashMap<String, Vec<Channel>>>,
    /// A per-run prefix of the update uuids.
    run: u32,
    /// Tasks without a duration run until killed or failed on command
    /// ([`Fleet::services`]).
    services: bool,
    /// Every state reported goes here ([`Fleet::services`],
    /// [`Fleet::reporting`]).
    events: Option<mpsc::UnboundedSender<TaskEvent>>,
}

/// A state one agent reported for a task ([`Fleet::services`],
/// [`Fleet::reporting`]).
#[derive(Debug, Clone)]
pub struct TaskEvent {
    /// The agent's index.
    pub agent: usize,
    pub task_id: String,
    pub state: pb::TaskState,
    /// When the agent made the update (and sent it, or queued it behind
    /// an earlier one of the same task).
    pub at: Instant,
    /// The task as launched, with its TASK_RUNNING (none otherwise).
    pub task: Option<Box<pb::TaskInfo>>,
}

/// What the bench can tell one agent to do ([`SimAgent::commands`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Report this running task TASK_FAILED with exit code 1, as if its
    /// process had died; nothing happens if it does not run here.
    Fail(String),
}

impl Fleet {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        masters: Vec<String>,
        resources: pb::Resources,
        send_starting: bool,
        status_retry: Duration,
        per_connection: usize,
        agents: usize,
        counters: Arc<Counters>,
        run: u32,
    ) -> Self {
        Fleet {
            masters,
            resources,
            send_starting,
            status_retry,
            per_connection: per_connection.max(1),
            agents,
            counters,
            channels: Mutex::new(HashMap::new()),
            run,
            services: false,
            events: None,
        }
    }

    /// Agents of this fleet run long-running services: a task without a
    /// `duration_ms` label runs until it is killed (or failed by a
    /// [`Command`]), and every state they report is sent to `events`.
    #[must_use]
    pub fn services(mut self, events: mpsc::UnboundedSender<TaskEvent>) -> Self {
        self.services = true;
        self.events = Some(events);
        self
    }

    /// Every state the agents of this fleet report is sent to `events`
    /// (tasks still need a `duration_ms` label).
    #[must_use]
    pub fn reporting(mut self, events: mpsc::UnboundedSender<TaskEvent>) -> Self {
        self.events = Some(events);
        self
    }

    /// The shared connection agent `index` uses to reach `uri`.
    fn channel(&self, uri: &str, index: usize) -> Result<Channel, String> {
        let mut channels = self
            .channels
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !channels.contains_key(uri) {
            let n = self.agents.div_ceil(self.per_connection).max(1);
            let mut list = Vec::with_capacity(n);
            for _ in 0..n {
                let endpoint = Endpoint::from_shared(uri.to_owned())
                    .map_err(|e| format!("invalid master address {uri:?}: {e}"))?
                    .connect_timeout(Duration::from_secs(2))
                    .tcp_nodelay(true);
                list.push(endpoint.connect_lazy());
            }
            channels.insert(uri.to_owned(), list);
        }
        let list = &channels[uri];
        Ok(list[index % list.len()].clone())
    }
}

/// A task on a simulated agent.
#[derive(Debug)]
struct SimTask {
    state: pb::TaskState,
    /// The whole task, for re-registration.
    info: pb::TaskInfo,
}

/// One simulated agent.
#[derive(Debug)]
pub struct SimAgent {
    index: usize,
    fleet: Arc<Fleet>,
    agent_id: String,
    registered_once: bool,
    tasks: HashMap<TaskKey, SimTask>,
    updates: StatusUpdateManager,
    /// When running tasks finish.
    finishing: BinaryHeap<Reverse<(Instant, TaskKey)>>,
    /// Unacknowledged updates, as last reported to the counters.
    pending: usize,
    next_uuid: u64,
    /// The bench's commands, if it sends any.
    commands: Option<mpsc::UnboundedReceiver<Command>>,
}

/// How one session ended.
enum End {
    /// Told to stop.
    Stop,
    /// A follower named the leader.
    Redirect(String),
    /// The stream failed or ended; try again.
    Lost(String),
}

impl SimAgent {
    pub fn new(index: usize, fleet: Arc<Fleet>) -> Self {
        let updates = StatusUpdateManager::new(fleet.status_retry, berth_agent::STATUS_RETRY_MAX);
        SimAgent {
            index,
            fleet,
            agent_id: String::new(),
            registered_once: false,
            tasks: HashMap::new(),
            updates,
            finishing: BinaryHeap::new(),
            pending: 0,
            next_uuid: 0,
            commands: None,
        }
    }

    /// This agent follows the [`Command`]s sent on `commands` while it is
    /// registered.
    #[must_use]
    pub fn commands(mut self, commands: mpsc::UnboundedReceiver<Command>) -> Self {
        self.commands = Some(commands);
        self
    }

    /// Stays attached to the leader until `stop` becomes true.
    pub async fn run(mut self, mut stop: watch::Receiver<bool>) {
        let masters: Vec<String> = self
            .fleet
            .masters
            .iter()
            .map(|m| pb::endpoint_uri(m))
            .collect();
        let mut next = 0usize;
        let mut hint: Option<String> = None;
        let mut backoff = BACKOFF_INITIAL;
        loop {
            if *stop.borrow() {
                return;
            }
            let uri = hint
                .take()
                .unwrap_or_else(|| masters[next % masters.len()].clone());
            let was_registered = self.registered_once;
            match self.session(&uri, &mut stop).await {
                End::Stop => return,
                End::Redirect(leader) => {
                    hint = Some(pb::endpoint_uri(&leader));
                    backoff = BACKOFF_INITIAL;
                }
                End::Lost(why) => {
                    if was_registered || self.registered_once {
                        self.fleet.counters.inc(C::AgentReconnects);
                    }
                    if self.index == 0 {
                        eprintln!("agent 0: {why}; reconnecting");
                    }
                    next = next.wrapping_add(1);
                    let delay = backoff;
                    backoff = (backoff * 2).min(BACKOFF_MAX);
                    tokio::select! {
                        () = tokio::time::sleep(delay) => {}
                        _ = stop.changed() => return,
                    }
                }
            }
        }
    }

    fn register_message(&self) -> pb::AgentMessage {
        let tasks = self
            .tasks
            .iter()
            .map(|((fw, _), t)| pb::AgentTask {
                framework_id: fw.clone(),
                task: Some(t.info.clone()),
                state: t.state as i32,
            })
            .collect();
        pb::AgentMessage {
            message: Some(pb::agent_message::Message::Register(pb::Register {
                agent_id: self.agent_id.clone(),
                info: Some(pb::AgentInfo {
                    hostname: format!("sim-{}", self.index),
                    // The simulated agent serves no log API.
                    address: "127.0.0.1:1".into(),
                    resources: Some(self.fleet.resources.clone()),
                    ..Default::default()
                }),
                tasks,
            })),
        }
    }

    async fn session(&mut self, uri: &str, stop: &mut watch::Receiver<bool>) -> End {
        let channel = match self.fleet.channel(uri, self.index) {
            Ok(c) => c,
            Err(e) => return End::Lost(e),
        };
        let mut client =
            AgentApiClient::new(channel).max_decoding_message_size(pb::MAX_MESSAGE_BYTES);
        let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
        if tx.try_send(self.register_message()).is_err() {
            return End::Lost("cannot queue Register".into());
        }
        let attach = tokio::select! {
            r = tokio::time::timeout(MASTER_TIMEOUT, client.attach(ReceiverStream::new(rx))) => r,
            _ = stop.changed() => return End::Stop,
        };
        let mut inbound = match attach {
            Err(_) => return End::Lost("no answer to Attach".into()),
            Ok(Err(status)) => {
                let leader = status
                    .metadata()
                    .get(LEADER_METADATA_KEY)
                    .and_then(|v| v.to_str().ok())
                    .filter(|v| !v.is_empty())
                    .map(str::to_owned);
                return match leader {
                    Some(l) => End::Redirect(l),
                    None => End::Lost(format!("Attach failed: {status}")),
                };
            }
            Ok(Ok(response)) => response.into_inner(),
        };
        let mut registered = false;
        let mut last_heard = Instant::now();
        loop {
            let silence = last_heard + MASTER_TIMEOUT;
            let wake = [
                self.finishing.peek().map(|Reverse((at, _))| *at),
                registered
                    .then(|| self.updates.next_deadline().map(Instant::from_std))
                    .flatten(),
                Some(silence),
            ]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(silence);
            tokio::select! {
                _ = stop.changed() => return End::Stop,
                msg = inbound.message() => {
                    last_heard = Instant::now();
                    let msg = match msg {
                        Err(status) => {
                            if registered {
                                self.fleet.counters.inc(C::AgentErrors);
                            }
                            return End::Lost(format!("stream error: {status}"));
                        }
                        Ok(None) => return End::Lost("the master ended the stream".into()),
                        Ok(Some(m)) => m,
                    };
                    match msg.message {
                        Some(M::Registered(r)) if !registered => {
                            if r.agent_id.is_empty() {
                                self.fleet.counters.inc(C::AgentErrors);
                                return End::Lost("Registered without an agent id".into());
                            }
                            registered = true;
                            self.on_registered(r.agent_id, &tx);
                        }
                        Some(M::Ping(p)) => send(
                            &tx,
                            pb::agent_message::Message::Pong(pb::Pong { seq: p.seq }),
                        ),
                        Some(m) if registered => self.handle(m, &tx),
                        _ => self.fleet.counters.inc(C::AgentErrors),
                    }
                }
                Some(command) = next_command(&mut self.commands), if registered => {
                    match command {
                        Command::Fail(task_id) => self.fail(&task_id, &tx),
                    }
                }
                () = tokio::time::sleep_until(wake) => {
                    let now = Instant::now();
                    if now >= silence {
                        return End::Lost(format!("nothing from the master for {MASTER_TIMEOUT:?}"));
                    }
                    self.finish_due(now, &tx);
                    if registered {
                        let due = self.updates.due(now.into_std());
                        self.fleet.counters.add(C::UpdatesResent, due.len() as u64);
                        for u in due {
                            send_update(&tx, u);
                        }
                    }
                }
            }
        }
    }

    fn on_registered(&mut self, agent_id: String, tx: &mpsc::Sender<pb::AgentMessage>) {
        self.agent_id = agent_id;
        if !self.registered_once {
            self.registered_once = true;
            self.fleet.counters.inc(C::AgentsRegistered);
        }
        let heads = self.updates.resend_all(std::time::Instant::now());
        self.fleet
            .counters
            .add(C::UpdatesResent, heads.len() as u64);
        for u in heads {
            send_update(tx, u);
        }
    }

    fn handle(&mut self, msg: M, tx: &mpsc::Sender<pb::AgentMessage>) {
        match msg {
            M::RunTask(run) => self.run_task(run, tx),
            M::Ack(a) => {
                let key = (a.framework_id, a.task_id);
                match self.updates.ack(&key, &a.uuid, std::time::Instant::now()) {
                    AckOutcome::Ignored => self.fleet.counters.inc(C::AcksIgnored),
                    AckOutcome::Acked { state, next } => {
                        self.fleet.counters.inc(C::AcksApplied);
                        if let Some(next) = next {
                            send_update(tx, next);
                        } else if state.is_terminal() {
                            self.tasks.remove(&key);
                            self.fleet.counters.inc(C::TerminalAcked);
                        }
                        self.sync_pending();
                    }
                }
            }
            M::KillTask(k) => {
                self.fleet.counters.inc(C::KillsReceived);
                self.kill((k.framework_id, k.task_id), tx);
            }
            M::ShutdownFramework(s) => {
                let keys: Vec<TaskKey> = self
                    .tasks
                    .keys()
                    .filter(|(fw, _)| *fw == s.framework_id)
                    .cloned()
                    .collect();
                for key in keys {
                    self.fleet.counters.inc(C::KillsReceived);
                    self.kill(key, tx);
                }
            }
            M::Ping(_) | M::Registered(_) => self.fleet.counters.inc(C::AgentErrors),
        }
    }

    fn run_task(&mut self, run: pb::RunTask, tx: &mpsc::Sender<pb::AgentMessage>) {
        let (Some(task), Some(framework_id)) = (
            run.task,
            run.framework.map(|f| f.id).filter(|id| !id.is_empty()),
        ) else {
            self.fleet.counters.inc(C::AgentErrors);
            return;
        };
        let key: TaskKey = (framework_id, task.task_id.clone());
        if self.tasks.contains_key(&key) {
            // A resend of a launch already running: ignored, as the real
            // agent does.
            return;
        }
        self.fleet.counters.inc(C::RunsReceived);
        let duration = task_duration(&task);
        // A task without a duration is a service (it runs until killed or
        // failed) in a service fleet; elsewhere it is not one of ours and
        // fails, as an invalid task would.
        let valid = duration.is_some() || self.fleet.services;
        self.tasks.insert(
            key.clone(),
            SimTask {
                state: pb::TaskState::TaskStaging,
                info: task,
            },
        );
        if !valid {
            self.fleet.counters.inc(C::AgentErrors);
            self.record(&key, pb::TaskState::TaskFailed, tx);
            return;
        }
        if self.fleet.send_starting {
            self.record(&key, pb::TaskState::TaskStarting, tx);
        }
        self.record(&key, pb::TaskState::TaskRunning, tx);
        if let Some(duration) = duration {
            self.finishing
                .push(Reverse((Instant::now() + duration, key)));
        }
    }

    /// Ends the tasks whose time has come with TASK_FINISHED.
    fn finish_due(&mut self, now: Instant, tx: &mpsc::Sender<pb::AgentMessage>) {
        while let Some(Reverse((at, _))) = self.finishing.peek() {
            if *at > now {
                break;
            }
            let Some(Reverse((_, key))) = self.finishing.pop() else {
                break;
            };
            // A killed task is already terminal.
            if self
                .tasks
                .get(&key)
                .is_some_and(|t| t.state == pb::TaskState::TaskRunning)
            {
                self.record(&key, pb::TaskState::TaskFinished, tx);
            }
        }
    }

    /// Fails running task `task_id` (of whichever framework), as if its
    /// process had exited with 1.
    fn fail(&mut self, task_id: &str, tx: &mpsc::Sender<pb::AgentMessage>) {
        let key = self
            .tasks
            .iter()
            .find(|((_, t), task)| t == task_id && task.state == pb::TaskState::TaskRunning)
            .map(|(k, _)| k.clone());
        if let Some(key) = key {
            self.record(&key, pb::TaskState::TaskFailed, tx);
        }
    }

    fn kill(&mut self, key: TaskKey, tx: &mpsc::Sender<pb::AgentMessage>) {
        if self.tasks.get(&key).is_some_and(|t| !t.state.is_terminal()) {
            self.record(&key, pb::TaskState::TaskKilled, tx);
        }
    }

    /// Records a task's new state and queues its update (sent now when it
    /// is the head of the task's queue), as the real agent's `record`.
    fn record(&mut self, key: &TaskKey, state: pb::TaskState, tx: &mpsc::Sender<pb::AgentMessage>) {
        let Some(task) = self.tasks.get_mut(key) else {
            return;
        };
        task.state = state;
        self.next_uuid += 1;
        let mut uuid = Vec::with_capacity(16);
        uuid.extend_from_slice(&self.fleet.run.to_be_bytes());
        uuid.extend_from_slice(&u32::try_from(self.index).unwrap_or(u32::MAX).to_be_bytes());
        uuid.extend_from_slice(&self.next_uuid.to_be_bytes());
        let exit_code = match state {
            pb::TaskState::TaskFinished => Some(0),
            pb::TaskState::TaskFailed => Some(1),
            _ => None,
        };
        if let Some(events) = &self.fleet.events {
            let _ = events.send(TaskEvent {
                agent: self.index,
                task_id: key.1.clone(),
                state,
                at: Instant::now(),
                task: (state == pb::TaskState::TaskRunning).then(|| Box::new(task.info.clone())),
            });
        }
        let update = pb::StatusUpdate {
            framework_id: key.0.clone(),
            status: Some(pb::TaskStatus {
                task_id: key.1.clone(),
                state: state as i32,
                message: String::new(),
                reason: if exit_code.is_some() {
                    pb::TaskReason::Exited
                } else {
                    pb::TaskReason::Unspecified
                } as i32,
                source: pb::StatusSource::Agent as i32,
                agent_id: self.agent_id.clone(),
                exit_code,
                uuid,
                timestamp: pb::convert::unix_now(),
                ..Default::default()
            }),
        };
        if let Some(head) = self.updates.push(update, std::time::Instant::now()) {
            self.fleet.counters.inc(C::UpdatesSent);
            send_update(tx, head);
        }
        self.sync_pending();
    }

    /// Reports the change in unacknowledged updates to the counters.
    fn sync_pending(&mut self) {
        let now = self.updates.len();
        let delta = i64::try_from(now).unwrap_or(i64::MAX)
            - i64::try_from(self.pending).unwrap_or(i64::MAX);
        self.fleet.counters.pending_changed(delta);
        self.pending = now;
    }
}

impl Drop for SimAgent {
    fn drop(&mut self) {
        // An aborted agent takes its queue with it.
        self.fleet
            .counters
            .pending_changed(-i64::try_from(self.pending).unwrap_or(0));
    }
}

/// Tells the agents `stop` reaches to stop, and waits up to 30 s for
/// them (aborting those still running then).
pub async fn stop(stop: &watch::Sender<bool>, agents: &mut tokio::task::JoinSet<()>) {
    let _ = stop.send(true);
    let all = async { while agents.join_next().await.is_some() {} };
    if tokio::time::timeout(Duration::from_secs(30), all)
        .await
        .is_err()
    {
        eprintln!("agents did not stop within 30 s");
        agents.abort_all();
    }
}

/// How long a task runs: its `duration_ms` label; `None` if it has none or
/// it is not a number of milliseconds up to an hour.
pub fn task_duration(task: &pb::TaskInfo) -> Option<Duration> {
    let label = task.labels.iter().find(|l| l.key == DURATION_LABEL)?;
    let ms: u64 = label.value.trim().parse().ok()?;
    let d = Duration::from_millis(ms);
    (d <= MAX_DURATION).then_some(d)
}

/// The next command, if the agent takes any (never, otherwise).
async fn next_command(commands: &mut Option<mpsc::UnboundedReceiver<Command>>) -> Option<Command> {
    match commands {
        Some(rx) => rx.recv().await,
        None => std::future::pending().await,
    }
}

fn send(tx: &mpsc::Sender<pb::AgentMessage>, message: pb::agent_message::Message) {
    // A full queue or a closed stream loses the message; status updates
    // are resent, a pong is not worth more (as in the real agent).
    let _ = tx.try_send(pb::AgentMessage {
        message: Some(message),
    });
}

fn send_update(tx: &mpsc::Sender<pb::AgentMessage>, u: pb::StatusUpdate) {
    send(tx, pb::agent_message::Message::StatusUpdate(u));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(labels: &[(&str, &str)]) -> pb::TaskInfo {
        pb::TaskInfo {
            task_id: "t".into(),
            labels: labels
                .iter()
                .map(|(k, v)| pb::Label {
                    key: (*k).into(),
                    value: (*v).into(),
                })
                .collect(),
            ..Default::default()
        }
    }

    #[test]
    fn durations_come_from_the_label() {
        assert_eq!(
            task_duration(&task(&[("x", "1"), (DURATION_LABEL, "42")])),
            Some(Duration::from_millis(42))
        );
        assert_eq!(
            task_duration(&task(&[(DURATION_LABEL, "0")])),
            Some(Duration::ZERO)
        );
        assert_eq!(task_duration(&task(&[])), None);
        assert_eq!(task_duration(&task(&[(DURATION_LABEL, "-1")])), None);
        assert_eq!(task_duration(&task(&[(DURATION_LABEL, "soon")])), None);
        assert_eq!(task_duration(&task(&[(DURATION_LABEL, "3600001")])), None);
    }
}
