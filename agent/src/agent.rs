//! The agent's state and task lifecycle.
//!
//! [`Core`] is the one place that holds the task table and the status-update
//! queues. [`Agent`] wraps it with the configuration, the containerizers and
//! the checkpoint, and implements the reactions to the master's messages, to
//! task exits and to health checks. Every state change is made under the
//! core's lock and its checkpoint write queued there for the checkpoint
//! writer ([`crate::writer`]), which makes it durable (fsynced) before it
//! sends anything about it, so updates of one task are queued in the order
//! they happen and survive a SIGKILL of the agent. What reaches a container
//! waits for the write before it: a launch for the task's record, a kill
//! (SIGTERM, SIGKILL) for the kill record. A failed write stops the agent.
//!
//! Before a task runs, it is validated again as the master did (command,
//! resources and minimums, container, health check, transfers, masked
//! values). A task with a `container` runs under Docker, one without under
//! `process`; on an agent without a Docker daemon a container task ends
//! `TASK_FAILED` with reason `TASK_REASON_LAUNCH_FAILED`. A change of a
//! task's health is a `TASK_RUNNING` update with reason
//! `TASK_REASON_HEALTH_CHECK`; too many failed checks kill it with reason
//! `TASK_REASON_HEALTH_CHECK_FAILED`.
//!
//! After a restart, `Agent::recover` re-adopts the checkpointed containers
//! (process and Docker) and restarts their health checks, reports the ones
//! that ended while the agent was down, and queues the unacknowledged
//! updates for resending.

use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use berth_proto as pb;
use berth_proto::convert::{resources_from_proto_opt, unix_now};
use berth_scheduler_core::{FrameworkId, Resources};
use prost::Message;
use tokio::sync::mpsc;

use crate::checkpoint::{Checkpoint, ContainerizerKind, Recovered, TaskCheckpoint};
use crate::config::{AgentConfig, STATUS_RETRY_MAX};
use crate::containerizer::{
    Command, ContainerId, ContainerSpec, Containerizer, LaunchSpec, PortBinding, Protocol,
    RecoverRecord, Termination, prepare_sandbox,
};
use crate::error::ContainerError;
use crate::health::{HealthCheckSpec, HealthEvent, HealthHandle, probe_for, spawn_health_checker};
use crate::status_update::{AckOutcome, StatusUpdateManager, TaskKey};
use crate::transfer::{self, Transfers};
use crate::writer::{Job, Write, Writer};

/// Reason of a task killed by a `KillTask`.
pub const REASON_KILLED_BY_REQUEST: pb::TaskReason = pb::TaskReason::KilledByRequest;
/// Reason of a task that exited by itself.
pub const REASON_EXITED: pb::TaskReason = pb::TaskReason::Exited;
/// Reason of a task killed by a signal nobody asked for.
pub const REASON_SIGNALED: pb::TaskReason = pb::TaskReason::Signaled;
/// Reason of a task the kernel killed for exceeding its memory limit.
pub const REASON_OOM: pb::TaskReason = pb::TaskReason::Oom;
/// Reason of a task that could not be started (invalid or spawn failure).
pub const REASON_LAUNCH_FAILED: pb::TaskReason = pb::TaskReason::LaunchFailed;
/// Reason of the `TASK_LOST` sent for a kill of a task the agent does not know.
pub const REASON_UNKNOWN_TASK: pb::TaskReason = pb::TaskReason::UnknownTask;
/// Reason of a task killed by `ShutdownFramework`.
pub const REASON_FRAMEWORK_REMOVED: pb::TaskReason = pb::TaskReason::FrameworkRemoved;
/// Reason of a task killed (or refused) because the agent shuts down.
pub const REASON_AGENT_SHUTDOWN: pb::TaskReason = pb::TaskReason::AgentShutdown;
/// Reason of a task killed because its health check failed too often.
pub const REASON_HEALTH_CHECK_FAILED: pb::TaskReason = pb::TaskReason::HealthCheckFailed;
/// Reason of a `TASK_RUNNING` update that reports a change of `healthy`.
pub const REASON_HEALTH_CHECK: pb::TaskReason = pb::TaskReason::HealthCheck;
/// Reason of a task whose container could not be recovered after an agent
/// restart.
pub const REASON_RECOVERY_FAILED: pb::TaskReason = pb::TaskReason::ContainerRecoveryFailed;
/// Reason of a task one of whose URIs could not be fetched (its command
/// never ran).
pub const REASON_FETCH_FAILED: pb::TaskReason = pb::TaskReason::FetchFailed;

/// Output results of a task whose exit the agent could not see.
const NOT_UPLOADED_AFTER_RESTART: &str = "agent restarted: the task ended while the agent was down (exit status unknown); \
     its outputs were not uploaded";

/// Longest kill grace period accepted from the wire.
const MAX_KILL_GRACE: Duration = Duration::from_secs(3600);
/// Most ports listed in a process task's status.
const MAX_LISTED_PORTS: usize = 1024;

/// A pending or running kill of a task.
#[derive(Debug, Clone)]
struct Kill {
    grace: Duration,
    reason: pb::TaskReason,
    /// Why, when more needs saying than the reason (a failed health check).
    message: Option<String>,
}

/// What the agent knows about one task.
#[derive(Debug, Clone)]
pub(crate) struct TaskEntry {
    pub(crate) framework_id: String,
    pub(crate) task: pb::TaskInfo,
    /// The latest state generated for the task.
    pub(crate) state: pb::TaskState,
    pub(crate) sandbox: PathBuf,
    /// Which containerizer runs it.
    kind: ContainerizerKind,
    /// The container's id, chosen when the task arrives (checkpointed before
    /// the launch so a restarted agent can find the container).
    container_id: ContainerId,
    /// Set while the container runs (launched or re-adopted, not reaped).
    container: Option<ContainerId>,
    /// The main process (process containerizer), for recovery.
    pid: i32,
    pgid: i32,
    kill: Option<Kill>,
    /// Host ports of the task (and the container ports they map to).
    ports: Vec<PortBinding>,
    /// The latest health check result.
    healthy: Option<bool>,
    /// Set while the agent fetches the task's URIs or uploads its outputs:
    /// a kill notifies it to cancel the transfer.
    abort: Option<Arc<tokio::sync::Notify>>,
}

/// The agent's mutable state: task table, status-update queues, the
/// connection to the master. One lock guards it all.
#[derive(Debug)]
pub(crate) struct Core {
    /// The id from the last `Registered`; empty before the first one.
    pub(crate) agent_id: String,
    pub(crate) tasks: BTreeMap<TaskKey, TaskEntry>,
    pub(crate) updates: StatusUpdateManager,
    /// Health check loops of running tasks (stopped when dropped).
    health: HashMap<TaskKey, HealthHandle>,
    /// Sender of the current master stream, set while registered.
    outbound: Option<mpsc::Sender<pb::AgentMessage>>,
    shutting_down: bool,
    /// The checkpoint writer: writes, and status updates sent after them.
    writer: Writer,
}

impl Core {
    fn send(&self, msg: pb::AgentMessage) {
        if let Some(tx) = &self.outbound
            && let Err(e) = tx.try_send(msg)
        {
            // Status updates are retried; a pong is not worth more.
            tracing::debug!(error = %e, "could not queue a message to the master");
        }
    }

    /// Sends a status update through the checkpoint writer: after every
    /// write queued before it, so never before the write that records it.
    fn send_update(&self, u: pb::StatusUpdate) {
        if let Some(tx) = &self.outbound {
            self.writer.queue(Job::Send(
                tx.clone(),
                pb::AgentMessage {
                    message: Some(pb::agent_message::Message::StatusUpdate(u)),
                },
            ));
        }
    }
}

/// A task as validated on arrival.
#[derive(Debug)]
struct ValidTask {
    command: Command,
    resources: Resources,
    env: HashMap<String, String>,
    container: Option<ContainerSpec>,
    health: Option<HealthCheckSpec>,
    masked_values: Vec<String>,
}

/// The agent: configuration, containerizers, checkpoint and [`Core`].
#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) config: AgentConfig,
    /// Hostname, address, resources, reservations and attributes.
    info: pb::AgentInfo,
    process: Arc<dyn Containerizer>,
    /// The Docker containerizer, when a daemon answered at start-up.
    docker: Option<Arc<dyn Containerizer>>,
    /// The checkpoint writer (a clone of the core's).
    pub(crate) writer: Writer,
    /// The fetcher's and uploader's HTTP client and limits.
    transfers: Transfers,
    core: Mutex<Core>,
    /// Set when the agent stops without killing its tasks: watchers end
    /// (the next run of the agent re-adopts the tasks).
    detached: tokio::sync::watch::Sender<bool>,
}

impl Agent {
    /// `config` must be validated, with an absolute `work_dir`.
    pub(crate) fn new(
        config: AgentConfig,
        resources: &Resources,
        hostname: String,
        address: String,
        process: Arc<dyn Containerizer>,
        docker: Option<Arc<dyn Containerizer>>,
        checkpoint: Checkpoint,
    ) -> Self {
        let info = pb::AgentInfo {
            hostname,
            address,
            resources: Some(berth_proto::convert::resources_to_proto(resources)),
            reserved: config
                .reserved
                .iter()
                .map(|(role, r)| {
                    (
                        role.to_string(),
                        berth_proto::convert::resources_to_proto(r),
                    )
                })
                .collect(),
            attributes: config
                .attributes
                .iter()
                .map(|(name, value)| pb::Attribute {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        };
        let updates = StatusUpdateManager::new(config.status_retry_initial, STATUS_RETRY_MAX);
        let writer = Writer::spawn(checkpoint);
        let transfers = Transfers::new(transfer::Limits {
            fetch_max_bytes: config.fetch_max_bytes,
            fetch_timeout: config.fetch_timeout,
            upload_timeout: config.upload_timeout,
            retry_for: config.transfer_retry,
            file_urls: config.file_urls,
        });
        Agent {
            transfers,
            config,
            info,
            process,
            docker,
            writer: writer.clone(),
            detached: tokio::sync::watch::Sender::new(false),
            core: Mutex::new(Core {
                agent_id: String::new(),
                tasks: BTreeMap::new(),
                updates,
                health: HashMap::new(),
                outbound: None,
                shutting_down: false,
                writer,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn containerizer(&self, kind: ContainerizerKind) -> Option<&Arc<dyn Containerizer>> {
        match kind {
            ContainerizerKind::Process => Some(&self.process),
            ContainerizerKind::Docker => self.docker.as_ref(),
        }
    }

    /// The sandbox of a task.
    pub(crate) fn sandbox_path(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.config
            .work_dir
            .join("sandboxes")
            .join(framework_id)
            .join(task_id)
    }

    /// Queues the write of a task's record and its unacknowledged updates
    /// to the checkpoint (or of their removal once the task is forgotten).
    /// Called under the core's lock after every change, before anything
    /// about the change is sent (and sent through the same queue).
    fn persist(&self, core: &Core, key: &TaskKey) {
        self.persist_with(core, key, true);
    }

    /// Writes what [`Self::persist`] writes; `durable` false skips the
    /// fsync, for changes whose loss in a crash costs only a resend (an
    /// acknowledgement that shortened a queue, a forgotten terminal task).
    fn persist_with(&self, core: &Core, key: &TaskKey, durable: bool) {
        let queue = core.updates.queue(key);
        let (framework_id, task_id) = key.clone();
        let write = match core.tasks.get(key) {
            Some(e) => Write::TaskAndUpdates {
                record: checkpoint_of(key, e),
                queue,
            },
            None if queue.is_empty() => Write::RemoveTask {
                framework_id,
                task_id,
            },
            None => Write::Updates {
                framework_id,
                task_id,
                queue,
            },
        };
        core.writer.queue(Job::Write { write, durable });
    }

    /// The `Register` message for a new stream: the last agent id, the
    /// agent's info and every task it knows.
    pub(crate) fn register_message(&self) -> pb::AgentMessage {
        let core = self.lock();
        let tasks = core
            .tasks
            .values()
            .map(|e| pb::AgentTask {
                framework_id: e.framework_id.clone(),
                task: Some(e.task.clone()),
                state: e.state as i32,
            })
            .collect();
        pb::AgentMessage {
            message: Some(pb::agent_message::Message::Register(pb::Register {
                agent_id: core.agent_id.clone(),
                info: Some(self.info.clone()),
                tasks,
            })),
        }
    }

    /// The master accepted the registration on the stream fed by `tx`.
    pub(crate) fn on_registered(&self, agent_id: String, tx: mpsc::Sender<pb::AgentMessage>) {
        let mut core = self.lock();
        if !core.agent_id.is_empty() && core.agent_id != agent_id {
            tracing::warn!(old = %core.agent_id, new = %agent_id, "master assigned a different agent id");
        }
        if core.agent_id != agent_id {
            core.writer.queue(Job::Write {
                write: Write::AgentId(agent_id.clone()),
                durable: true,
            });
        }
        core.agent_id = agent_id;
        core.outbound = Some(tx);
        let heads = core.updates.resend_all(Instant::now());
        tracing::info!(agent_id = %core.agent_id, resending = heads.len(), "registered with master");
        for u in heads {
            core.send_update(u);
        }
    }

    /// The stream to the master is gone.
    pub(crate) fn on_disconnected(&self) {
        self.lock().outbound = None;
    }

    /// Sends a message on the current stream, if any.
    pub(crate) fn send(&self, msg: pb::AgentMessage) {
        self.lock().send(msg);
    }

    /// Resends the status updates whose retry time has come.
    pub(crate) fn tick(&self, now: Instant) {
        let mut core = self.lock();
        if core.outbound.is_none() {
            return;
        }
        for u in core.updates.due(now) {
            tracing::debug!(
                framework_id = %u.framework_id,
                task_id = %u.status.as_ref().map(|s| s.task_id.as_str()).unwrap_or_default(),
                "resending unacknowledged status update"
            );
            core.send_update(u);
        }
    }

    /// Generates a status update for a task, records its state, checkpoints
    /// both and queues the update.
    fn record(
        &self,
        core: &mut Core,
        key: &TaskKey,
        state: pb::TaskState,
        reason: pb::TaskReason,
        message: String,
        exit_code: Option<i32>,
    ) {
        self.record_with_outputs(core, key, state, reason, message, exit_code, Vec::new());
    }

    /// [`Self::record`] with the results of the task's output uploads (for
    /// a terminal update).
    #[allow(clippy::too_many_arguments)]
    fn record_with_outputs(
        &self,
        core: &mut Core,
        key: &TaskKey,
        state: pb::TaskState,
        reason: pb::TaskReason,
        message: String,
        exit_code: Option<i32>,
        outputs: Vec<pb::OutputResult>,
    ) {
        let entry = core.tasks.get(key);
        let status = pb::TaskStatus {
            task_id: key.1.clone(),
            state: state as i32,
            message,
            reason: reason as i32,
            source: pb::StatusSource::Agent as i32,
            agent_id: core.agent_id.clone(),
            exit_code,
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            timestamp: unix_now(),
            healthy: entry.and_then(|e| e.healthy),
            ports: entry
                .map(|e| e.ports.iter().map(port_to_proto).collect())
                .unwrap_or_default(),
            container_id: entry
                .filter(|e| e.container.is_some() || state.is_terminal())
                .map(|e| e.container_id.0.clone())
                .unwrap_or_default(),
            outputs,
        };
        tracing::info!(
            framework_id = %key.0, task_id = %key.1, state = state.as_str_name(), reason = reason.short_name(),
            message = %status.message, "status update"
        );
        if let Some(e) = core.tasks.get_mut(key) {
            e.state = state;
        }
        let update = pb::StatusUpdate {
            framework_id: key.0.clone(),
            status: Some(status),
        };
        let head = core.updates.push(update, Instant::now());
        self.persist(core, key);
        if let Some(head) = head {
            core.send_update(head);
        }
    }

    /// Handles a message from the master (other than `Registered`/`Ping`).
    pub(crate) fn handle(self: &Arc<Self>, msg: pb::master_message::Message) {
        use pb::master_message::Message as M;
        match msg {
            M::RunTask(r) => self.run_task(r),
            M::KillTask(k) => {
                let key = (k.framework_id, k.task_id);
                self.kill_task(&key, k.grace_period_seconds, REASON_KILLED_BY_REQUEST, None);
            }
            M::Ack(a) => self.ack(&(a.framework_id, a.task_id), &a.uuid),
            M::ShutdownFramework(s) => self.shutdown_framework(&s.framework_id),
            M::Ping(p) => self.send(pb::AgentMessage {
                message: Some(pb::agent_message::Message::Pong(pb::Pong { seq: p.seq })),
            }),
            M::Registered(r) => {
                tracing::warn!(agent_id = %r.agent_id, "unexpected Registered on a registered stream; ignored");
            }
        }
    }

    fn run_task(self: &Arc<Self>, run: pb::RunTask) {
        let Some(task) = run.task else {
            tracing::warn!("RunTask without a task; ignored");
            return;
        };
        let Some(framework_id) = run.framework.map(|f| f.id).filter(|id| !id.is_empty()) else {
            tracing::warn!(task_id = %task.task_id, "RunTask without a framework id; ignored");
            return;
        };
        let key: TaskKey = (framework_id, task.task_id.clone());
        let mut core = self.lock();
        if core.tasks.contains_key(&key) {
            tracing::info!(framework_id = %key.0, task_id = %key.1, "RunTask for a known task; ignored");
            return;
        }
        if core.shutting_down {
            self.record(
                &mut core,
                &key,
                pb::TaskState::TaskLost,
                REASON_AGENT_SHUTDOWN,
                "the agent is shutting down and launches no more tasks".into(),
                None,
            );
            return;
        }
        let sandbox = self.sandbox_path(&key.0, &key.1);
        let kind = if task.container.is_some() {
            ContainerizerKind::Docker
        } else {
            ContainerizerKind::Process
        };
        let container_id = ContainerId::random();
        core.tasks.insert(
            key.clone(),
            TaskEntry {
                framework_id: key.0.clone(),
                task: task.clone(),
                state: pb::TaskState::TaskStaging,
                sandbox: sandbox.clone(),
                kind,
                container_id: container_id.clone(),
                container: None,
                pid: 0,
                pgid: 0,
                kill: None,
                ports: Vec::new(),
                healthy: None,
                abort: None,
            },
        );
        let valid = match validate_task(&key.0, &task) {
            Ok(v) => v,
            Err(msg) => {
                self.record(
                    &mut core,
                    &key,
                    pb::TaskState::TaskFailed,
                    REASON_LAUNCH_FAILED,
                    format!("invalid task: {msg}"),
                    None,
                );
                return;
            }
        };
        if self.containerizer(kind).is_none() {
            self.record(
                &mut core,
                &key,
                pb::TaskState::TaskFailed,
                REASON_LAUNCH_FAILED,
                "the task asks for a container but this agent has no Docker daemon \
                 (it runs process tasks only)"
                    .into(),
                None,
            );
            return;
        }
        let ports = match &valid.container {
            Some(c) => c.ports.clone(),
            None => process_ports(&valid.resources),
        };
        if let Some(e) = core.tasks.get_mut(&key) {
            e.ports = ports;
        }
        self.record(
            &mut core,
            &key,
            pb::TaskState::TaskStarting,
            pb::TaskReason::Unspecified,
            if task.command.as_ref().is_some_and(|c| !c.uris.is_empty()) {
                "preparing sandbox, fetching URIs and starting the task".into()
            } else {
                "preparing sandbox and starting the task".into()
            },
            None,
        );
        let spec = LaunchSpec {
            container_id,
            framework_id: key.0.clone(),
            task_id: key.1.clone(),
            agent_id: core.agent_id.clone(),
            sandbox,
            sandbox_prepared: true,
            command: valid.command,
            env: valid.env,
            resources: valid.resources,
            container: valid.container,
            masked_values: valid.masked_values,
        };
        drop(core);
        tokio::spawn(Arc::clone(self).supervise(key, kind, spec, valid.health));
    }

    /// Launches a task, then watches it.
    async fn supervise(
        self: Arc<Self>,
        key: TaskKey,
        kind: ContainerizerKind,
        spec: LaunchSpec,
        health: Option<HealthCheckSpec>,
    ) {
        let Some(containerizer) = self.containerizer(kind).cloned() else {
            return;
        };
        if self
            .lock()
            .tasks
            .get(&key)
            .and_then(|e| e.kill.clone())
            .is_some()
        {
            let mut core = self.lock();
            let reason = core
                .tasks
                .get(&key)
                .and_then(|e| e.kill.as_ref())
                .map_or(REASON_KILLED_BY_REQUEST, |k| k.reason);
            self.record(
                &mut core,
                &key,
                pb::TaskState::TaskKilled,
                reason,
                "killed before it started".into(),
                None,
            );
            return;
        }
        if !self.prepare_and_fetch(&key, &spec.sandbox).await {
            return;
        }
        // The task's record (with its container id) is on disk before the
        // container exists, so a restarted agent can find it.
        if self.writer.flushed().await.is_err() {
            return;
        }
        let image = spec.container.as_ref().map(|c| c.image.clone());
        let launched = match containerizer.launch(spec).await {
            Ok(l) => l,
            Err(e) => {
                let mut core = self.lock();
                // A missing or unexecutable program has the shell's code.
                self.record(
                    &mut core,
                    &key,
                    pb::TaskState::TaskFailed,
                    REASON_LAUNCH_FAILED,
                    e.to_string(),
                    e.exit_code(),
                );
                return;
            }
        };
        let id = launched.container_id.clone();
        let pending_kill = {
            let mut core = self.lock();
            let kill = core.tasks.get_mut(&key).and_then(|e| {
                e.container = Some(id.clone());
                e.pid = launched.pid;
                e.pgid = launched.pgid;
                e.kill.clone()
            });
            let message = match &image {
                Some(image) => format!("running in Docker container berth-{id} (image {image})"),
                None => format!("running as process {}", launched.pid),
            };
            self.record(
                &mut core,
                &key,
                pb::TaskState::TaskRunning,
                pb::TaskReason::Unspecified,
                message,
                None,
            );
            kill
        };
        if let Some(kill) = pending_kill {
            self.spawn_destroy(kind, id.clone(), kill.grace);
        } else if let Some(spec) = health {
            self.start_health_checks(&key, spec, &containerizer, &id, tokio::time::Instant::now());
        }
        self.watch(key, containerizer, id).await;
    }

    /// Prepares the task's sandbox and fetches its URIs into it. Returns
    /// false when the task ended instead (a failed preparation or fetch, or
    /// a kill during the fetch), with its terminal update recorded.
    async fn prepare_and_fetch(&self, key: &TaskKey, sandbox: &std::path::Path) -> bool {
        if let Err(e) = prepare_sandbox(sandbox).await {
            let mut core = self.lock();
            self.record(
                &mut core,
                key,
                pb::TaskState::TaskFailed,
                REASON_LAUNCH_FAILED,
                e.to_string(),
                None,
            );
            return false;
        }
        let abort = Arc::new(tokio::sync::Notify::new());
        let uris = {
            let mut core = self.lock();
            let Some(e) = core.tasks.get_mut(key) else {
                return false;
            };
            let uris = e
                .task
                .command
                .as_ref()
                .map(|c| c.uris.clone())
                .unwrap_or_default();
            if uris.is_empty() {
                return true;
            }
            if e.kill.is_some() {
                // Reported after the launch, like any kill that raced it.
                return true;
            }
            e.abort = Some(Arc::clone(&abort));
            uris
        };
        let result = tokio::select! {
            r = transfer::fetch_all(&self.transfers, sandbox, &uris) => Some(r),
            () = abort.notified() => None,
        };
        let mut core = self.lock();
        let kill = core.tasks.get_mut(key).and_then(|e| {
            e.abort = None;
            e.kill.clone()
        });
        match (result, kill) {
            (Some(Ok(())), _) => true,
            (None, kill) => {
                let reason = kill.map_or(REASON_KILLED_BY_REQUEST, |k| k.reason);
                self.record(
                    &mut core,
                    key,
                    pb::TaskState::TaskKilled,
                    reason,
                    "killed while fetching its URIs; the command never ran".into(),
                    None,
                );
                false
            }
            (Some(Err(e)), _) => {
                self.record(
                    &mut core,
                    key,
                    pb::TaskState::TaskFailed,
                    REASON_FETCH_FAILED,
                    format!("{e}; the command never ran"),
                    None,
                );
                false
            }
        }
    }

    /// Uploads the outputs of a task whose container ended with `term`
    /// (those whose `when` matches), unless a kill cancels them. Stops the
    /// task's health checks first.
    async fn upload_outputs(&self, key: &TaskKey, term: Termination) -> Vec<pb::OutputResult> {
        let abort = Arc::new(tokio::sync::Notify::new());
        let (outputs, sandbox, success) = {
            let mut core = self.lock();
            core.health.remove(key);
            let Some(e) = core.tasks.get_mut(key) else {
                return Vec::new();
            };
            if e.task.outputs.is_empty() {
                return Vec::new();
            }
            let success = e.kill.is_none() && term == Termination::Exited(0);
            e.abort = Some(Arc::clone(&abort));
            (e.task.outputs.clone(), e.sandbox.clone(), success)
        };
        let results = tokio::select! {
            r = transfer::upload_all(&self.transfers, &sandbox, &outputs, success) => r,
            () = abort.notified() => {
                let wanted: Vec<pb::OutputUpload> = outputs
                    .into_iter()
                    .filter(|o| transfer::wanted(o, success))
                    .collect();
                transfer::not_uploaded(&wanted, "cancelled: the task was killed during the upload")
            }
        };
        if let Some(e) = self.lock().tasks.get_mut(key) {
            e.abort = None;
        }
        results
    }

    /// Waits for a running container to end, cleans it up and reports how
    /// it ended.
    async fn watch(
        self: Arc<Self>,
        key: TaskKey,
        containerizer: Arc<dyn Containerizer>,
        id: ContainerId,
    ) {
        let mut detached = self.detached.subscribe();
        let waited = tokio::select! {
            t = containerizer.wait(&id) => t,
            // The agent stops and leaves its tasks running: stop watching.
            _ = detached.wait_for(|d| *d) => return,
        };
        let term = match waited {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(container = %id, error = %e, "waiting for the task failed");
                Termination::Unknown
            }
        };
        // Leftovers of the process group go with the task.
        if let Err(e) = containerizer.destroy(&id, Duration::ZERO).await {
            tracing::warn!(container = %id, error = %e, "cleaning up the task's processes failed");
        }
        // Before the cleanup: a Docker container is still there if the agent
        // restarts meanwhile, so the next run sees the exit and uploads.
        let outputs = self.upload_outputs(&key, term).await;
        containerizer.cleanup(&id).await;
        let mut core = self.lock();
        core.health.remove(&key);
        let kill = core.tasks.get_mut(&key).and_then(|e| {
            e.container = None;
            e.kill.clone()
        });
        let (state, reason, message) = match (kill, term) {
            (Some(k), t) => {
                let message = match k.message {
                    Some(m) => format!("{m}; killed: {t}"),
                    None => format!("killed: {t}"),
                };
                (pb::TaskState::TaskKilled, k.reason, message)
            }
            (None, Termination::Exited(0)) => {
                (pb::TaskState::TaskFinished, REASON_EXITED, term.to_string())
            }
            (None, Termination::Exited(_) | Termination::Unknown) => {
                (pb::TaskState::TaskFailed, REASON_EXITED, term.to_string())
            }
            (None, Termination::Signaled(_)) => {
                (pb::TaskState::TaskFailed, REASON_SIGNALED, term.to_string())
            }
            (None, Termination::OutOfMemory(_)) => {
                (pb::TaskState::TaskFailed, REASON_OOM, term.to_string())
            }
        };
        self.record_with_outputs(
            &mut core,
            &key,
            state,
            reason,
            message,
            term.exit_code(),
            outputs,
        );
    }

    /// Starts a running task's health checks; results arrive in
    /// [`Self::on_health`].
    fn start_health_checks(
        self: &Arc<Self>,
        key: &TaskKey,
        spec: HealthCheckSpec,
        containerizer: &Arc<dyn Containerizer>,
        id: &ContainerId,
        started: tokio::time::Instant,
    ) {
        let (tx, mut rx) = mpsc::channel(16);
        let probe = probe_for(
            &spec,
            IpAddr::V4(Ipv4Addr::LOCALHOST),
            Arc::clone(containerizer),
            id.clone(),
        );
        let handle = spawn_health_checker(spec, probe, started, tx);
        self.lock().health.insert(key.clone(), handle);
        let agent = Arc::clone(self);
        let key = key.clone();
        tokio::spawn(async move {
            while let Some(event) = rx.recv().await {
                agent.on_health(&key, event);
            }
        });
    }

    /// A health check result: report a change of `healthy`; kill the task
    /// when it failed too often.
    fn on_health(self: &Arc<Self>, key: &TaskKey, event: HealthEvent) {
        match event {
            HealthEvent::Changed { healthy, message } => {
                let mut core = self.lock();
                let Some(entry) = core.tasks.get_mut(key) else {
                    return;
                };
                if entry.state != pb::TaskState::TaskRunning || entry.kill.is_some() {
                    return;
                }
                entry.healthy = Some(healthy);
                let message = if healthy {
                    "health check passed".to_owned()
                } else {
                    format!("health check failed: {message}")
                };
                self.record(
                    &mut core,
                    key,
                    pb::TaskState::TaskRunning,
                    REASON_HEALTH_CHECK,
                    message,
                    None,
                );
            }
            HealthEvent::Unhealthy { failures, message } => {
                if let Some(e) = self.lock().tasks.get_mut(key) {
                    e.healthy = Some(false);
                }
                tracing::warn!(framework_id = %key.0, task_id = %key.1, failures, %message, "health check failed too often; killing the task");
                self.kill_task(
                    key,
                    0.0,
                    REASON_HEALTH_CHECK_FAILED,
                    Some(format!(
                        "health check failed {failures} times in a row (last: {message})"
                    )),
                );
            }
        }
    }

    /// Stops a task's container (SIGTERM, then SIGKILL after `grace`) once
    /// every checkpoint write queued before is on disk, the kill record
    /// among them: an agent that dies right after the signal comes back
    /// knowing the task was being killed, and reports it `TASK_KILLED`
    /// rather than `TASK_FAILED` by a signal nobody asked for. After a
    /// failed write the container is not touched: the agent stops (fail
    /// closed) and leaves the task to the next start.
    fn spawn_destroy(self: &Arc<Self>, kind: ContainerizerKind, id: ContainerId, grace: Duration) {
        let Some(containerizer) = self.containerizer(kind).cloned() else {
            return;
        };
        let writer = self.writer.clone();
        tokio::spawn(async move {
            if let Err(e) = writer.flushed().await {
                tracing::warn!(container = %id, error = %e, "the kill could not be checkpointed; the task is left running");
                return;
            }
            match containerizer.destroy(&id, grace).await {
                Ok(_) => {}
                // It exited and was cleaned up meanwhile.
                Err(ContainerError::UnknownContainer(_)) => {
                    tracing::debug!(container = %id, "kill raced with the task's exit");
                }
                Err(e) => tracing::warn!(container = %id, error = %e, "killing the task failed"),
            }
        });
    }

    /// Kills a task; `grace_seconds` 0 means the task's own setting. The
    /// kill is recorded in the checkpoint before the container is
    /// signalled.
    pub(crate) fn kill_task(
        self: &Arc<Self>,
        key: &TaskKey,
        grace_seconds: f64,
        reason: pb::TaskReason,
        message: Option<String>,
    ) {
        let mut core = self.lock();
        let default_grace = self.config.default_kill_grace;
        let Some(entry) = core.tasks.get_mut(key) else {
            self.record(
                &mut core,
                key,
                pb::TaskState::TaskLost,
                REASON_UNKNOWN_TASK,
                format!(
                    "task {:?} of framework {:?} is not known to this agent",
                    key.1, key.0
                ),
                None,
            );
            return;
        };
        if entry.state.is_terminal() || entry.kill.is_some() {
            tracing::debug!(framework_id = %key.0, task_id = %key.1, "kill of a terminal or already killed task; nothing to do");
            return;
        }
        let grace = grace_from_secs(grace_seconds)
            .or_else(|| grace_from_secs(entry.task.kill_grace_period_seconds))
            .unwrap_or(default_grace);
        tracing::info!(framework_id = %key.0, task_id = %key.1, grace_ms = grace.as_millis(), reason = reason.short_name(), "killing task");
        entry.kill = Some(Kill {
            grace,
            reason,
            message,
        });
        let running = entry.container.clone().map(|id| (entry.kind, id));
        if let Some(abort) = &entry.abort {
            // Cancels a fetch (the task ends KILLED) or an upload.
            abort.notify_one();
        }
        core.health.remove(key);
        // The kill record is queued before the signal, which waits for it
        // to be on disk (see `spawn_destroy`).
        self.persist(&core, key);
        if let Some((kind, id)) = running {
            drop(core);
            self.spawn_destroy(kind, id, grace);
        }
        // Otherwise the supervisor sees the kill before or right after launch.
    }

    fn shutdown_framework(self: &Arc<Self>, framework_id: &str) {
        let keys: Vec<TaskKey> = self
            .lock()
            .tasks
            .keys()
            .filter(|k| k.0 == framework_id)
            .cloned()
            .collect();
        tracing::info!(framework_id, tasks = keys.len(), "shutting down framework");
        for key in keys {
            self.kill_task(&key, 0.0, REASON_FRAMEWORK_REMOVED, None);
        }
    }

    fn ack(&self, key: &TaskKey, uuid: &[u8]) {
        let mut core = self.lock();
        let mut forgotten = None;
        match core.updates.ack(key, uuid, Instant::now()) {
            AckOutcome::Ignored => {
                tracing::debug!(framework_id = %key.0, task_id = %key.1, "ignoring acknowledgement of an unknown status update");
            }
            AckOutcome::Acked { next, .. } => {
                if next.is_none() && core.tasks.get(key).is_some_and(|e| e.state.is_terminal()) {
                    tracing::debug!(framework_id = %key.0, task_id = %key.1, "terminal update acknowledged; forgetting task");
                    forgotten = core.tasks.remove(key).map(|e| e.sandbox);
                }
                // Losing this write in a crash only resends the update.
                self.persist_with(&core, key, false);
                if let Some(next) = next {
                    core.send_update(next);
                }
            }
        }
        drop(core);
        // The sandbox's garbage-collection delay counts from here.
        if let Some(sandbox) = forgotten
            && let Err(e) = std::fs::write(sandbox.join(crate::gc::ENDED_MARKER), b"")
            && e.kind() != std::io::ErrorKind::NotFound
        {
            tracing::warn!(framework_id = %key.0, task_id = %key.1, error = %e, "cannot mark the sandbox of a forgotten task");
        }
    }

    /// One sandbox garbage-collection sweep (see [`crate::gc`]); returns
    /// how many sandboxes it deleted. Blocking: file system work.
    pub(crate) fn collect_garbage(&self, now: std::time::SystemTime) -> usize {
        let root = self.config.work_dir.join("sandboxes");
        let trash = self.config.work_dir.join(crate::gc::TRASH_DIR);
        let usage = crate::gc::disk_usage(&self.config.work_dir).unwrap_or(0.0);
        let delay = crate::gc::effective_delay(
            self.config.sandbox_gc_delay,
            self.config.sandbox_gc_disk_headroom,
            usage,
        );
        let stale = crate::gc::stale_sandboxes(&root, now, delay);
        if !stale.is_empty() {
            if let Err(e) = std::fs::create_dir_all(&trash) {
                tracing::warn!(error = %e, "cannot create the sandbox trash directory");
                return 0;
            }
            let core = self.lock();
            for s in stale {
                if core
                    .tasks
                    .contains_key(&(s.framework_id.clone(), s.task_id.clone()))
                {
                    continue;
                }
                let to = trash.join(format!("{}-{}", uuid::Uuid::new_v4(), s.task_id));
                if let Err(e) = std::fs::rename(&s.path, &to) {
                    tracing::warn!(path = %s.path.display(), error = %e, "cannot move an old sandbox away");
                }
            }
        }
        let removed = crate::gc::empty_trash(&trash);
        crate::gc::remove_empty_frameworks(&root);
        if removed > 0 {
            tracing::info!(removed, "deleted old sandboxes");
        }
        removed
    }

    /// Re-adopts the tasks of the checkpoint after a restart: containers
    /// still running are watched again (and their health checks restarted),
    /// ones that ended while the agent was down are reported with their
    /// exit, unacknowledged updates are queued for resending. Returns how
    /// many containers were re-adopted.
    pub(crate) async fn recover(self: &Arc<Self>, recovered: Recovered) -> usize {
        let now = Instant::now();
        let mut records: HashMap<ContainerizerKind, Vec<RecoverRecord>> = HashMap::new();
        let mut unstarted = Vec::new();
        {
            let mut core = self.lock();
            core.agent_id = recovered.agent_id;
            for t in recovered.tasks {
                let key: TaskKey = (t.framework_id.clone(), t.task_id.clone());
                let task = match pb::TaskInfo::decode(t.task_info.as_slice()) {
                    Ok(task) => task,
                    Err(e) => {
                        tracing::error!(framework_id = %key.0, task_id = %key.1, error = %e, "checkpointed task does not decode; forgetting it");
                        continue;
                    }
                };
                let state = pb::TaskState::try_from(t.state).unwrap_or(pb::TaskState::TaskStaging);
                let container_id = t
                    .container_id
                    .clone()
                    .map_or_else(ContainerId::random, ContainerId);
                let masked_values = task.masked_values.clone();
                // A process task whose launch the agent did not live to
                // checkpoint may still have been started by its
                // supervisor, which says so in the sandbox.
                let (pid, pgid) = match (t.containerizer, &t.container_id) {
                    (ContainerizerKind::Process, Some(id))
                        if t.pid <= 0 && !state.is_terminal() =>
                    {
                        crate::supervisor::read_info(&t.sandbox, &ContainerId(id.clone()))
                            .map_or((0, 0), |i| (i.task_pid, i.task_pid))
                    }
                    _ => (t.pid, t.pgid),
                };
                let entry = TaskEntry {
                    framework_id: key.0.clone(),
                    task,
                    state,
                    sandbox: t.sandbox.clone(),
                    kind: t.containerizer,
                    container_id: container_id.clone(),
                    container: None,
                    pid,
                    pgid,
                    kill: t.kill.as_ref().map(|(ms, reason)| Kill {
                        grace: Duration::from_millis(*ms),
                        reason: known_reason(reason),
                        message: None,
                    }),
                    ports: t.ports.iter().filter_map(port_from_checkpoint).collect(),
                    healthy: None,
                    abort: None,
                };
                let launched = match t.containerizer {
                    ContainerizerKind::Process => pid > 0,
                    ContainerizerKind::Docker => true,
                };
                if !state.is_terminal() {
                    if launched && t.container_id.is_some() {
                        records
                            .entry(t.containerizer)
                            .or_default()
                            .push(RecoverRecord {
                                container_id,
                                framework_id: key.0.clone(),
                                task_id: key.1.clone(),
                                pid,
                                pgid,
                                sandbox: t.sandbox.clone(),
                                masked_values,
                            });
                    } else {
                        unstarted.push(key.clone());
                    }
                }
                core.tasks.insert(key, entry);
            }
            for (key, queue) in recovered.updates {
                core.updates.restore(key, queue, now);
            }
        }
        let mut adopted_all = Vec::new();
        for kind in [ContainerizerKind::Process, ContainerizerKind::Docker] {
            let wanted = records.remove(&kind).unwrap_or_default();
            let Some(containerizer) = self.containerizer(kind).cloned() else {
                for r in wanted {
                    unstarted.push((r.framework_id, r.task_id));
                }
                continue;
            };
            // Docker's recover also removes orphans, so it runs even with
            // nothing to recover.
            let wanted_keys: Vec<(TaskKey, ContainerId)> = wanted
                .iter()
                .map(|r| {
                    (
                        (r.framework_id.clone(), r.task_id.clone()),
                        r.container_id.clone(),
                    )
                })
                .collect();
            let adopted = match containerizer.recover(wanted).await {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(?kind, error = %e, "recovering containers failed");
                    Vec::new()
                }
            };
            for (key, id) in wanted_keys {
                if adopted.contains(&id) {
                    adopted_all.push((key, kind, Arc::clone(&containerizer), id));
                } else {
                    self.report_unrecovered(&key, kind);
                }
            }
        }
        for key in unstarted {
            let mut core = self.lock();
            if core.tasks.contains_key(&key) {
                self.record(
                    &mut core,
                    &key,
                    pb::TaskState::TaskFailed,
                    REASON_RECOVERY_FAILED,
                    "the agent restarted before the task's container was started, \
                     or it cannot run its containers any more"
                        .into(),
                    None,
                );
            }
        }
        let count = adopted_all.len();
        for (key, kind, containerizer, id) in adopted_all {
            let (kill, health) = {
                let mut core = self.lock();
                let Some(e) = core.tasks.get_mut(&key) else {
                    continue;
                };
                e.container = Some(id.clone());
                let health = e
                    .task
                    .health_check
                    .as_ref()
                    .and_then(|h| HealthCheckSpec::from_proto(h).ok());
                (e.kill.clone(), health)
            };
            tracing::info!(framework_id = %key.0, task_id = %key.1, container = %id, "re-adopted task");
            match kill {
                Some(kill) => self.spawn_destroy(kind, id.clone(), kill.grace),
                None => {
                    if let Some(spec) = health {
                        // The task has been up for a while: no grace period.
                        let started = tokio::time::Instant::now()
                            .checked_sub(spec.grace_period)
                            .unwrap_or_else(tokio::time::Instant::now);
                        self.start_health_checks(&key, spec, &containerizer, &id, started);
                    }
                }
            }
            tokio::spawn(Arc::clone(self).watch(key, containerizer, id));
        }
        count
    }

    /// A checkpointed running task whose container is gone: it ended while
    /// the agent was down and nobody knows how.
    fn report_unrecovered(&self, key: &TaskKey, kind: ContainerizerKind) {
        let mut core = self.lock();
        let message = match kind {
            ContainerizerKind::Process => {
                "the task's process ended while the agent was down and no supervisor recorded \
                 how (exit status unknown)"
            }
            ContainerizerKind::Docker => {
                "the task's container is gone (removed while the agent was down)"
            }
        };
        let outputs = core
            .tasks
            .get(key)
            .map(|e| transfer::not_uploaded(&e.task.outputs, NOT_UPLOADED_AFTER_RESTART))
            .unwrap_or_default();
        self.record_with_outputs(
            &mut core,
            key,
            pb::TaskState::TaskFailed,
            REASON_RECOVERY_FAILED,
            message.into(),
            None,
            outputs,
        );
    }

    /// Stops accepting launches and, when `kill` is set, kills every task.
    pub(crate) fn begin_shutdown(self: &Arc<Self>, kill: bool) {
        let keys: Vec<TaskKey> = {
            let mut core = self.lock();
            core.shutting_down = true;
            core.health.clear();
            core.tasks
                .iter()
                .filter(|(_, e)| !e.state.is_terminal())
                .map(|(k, _)| k.clone())
                .collect()
        };
        if !kill {
            tracing::info!(
                tasks = keys.len(),
                "agent shutting down; tasks keep running and are re-adopted at the next start"
            );
            self.detached.send_replace(true);
            return;
        }
        tracing::info!(tasks = keys.len(), "agent shutting down; killing tasks");
        for key in keys {
            self.kill_task(&key, 0.0, REASON_AGENT_SHUTDOWN, None);
        }
    }

    /// Number of tasks that are not terminal yet.
    pub(crate) fn active_tasks(&self) -> usize {
        self.lock()
            .tasks
            .values()
            .filter(|e| !e.state.is_terminal())
            .count()
    }

    /// Whether every status update is acknowledged.
    pub(crate) fn updates_drained(&self) -> bool {
        self.lock().updates.is_empty()
    }
}

/// A task's checkpoint record.
fn checkpoint_of(key: &TaskKey, e: &TaskEntry) -> TaskCheckpoint {
    TaskCheckpoint {
        framework_id: key.0.clone(),
        task_id: key.1.clone(),
        task_info: e.task.encode_to_vec(),
        state: e.state as i32,
        sandbox: e.sandbox.clone(),
        containerizer: e.kind,
        container_id: Some(e.container_id.0.clone()),
        pid: e.pid,
        pgid: e.pgid,
        kill: e.kill.as_ref().map(|k| {
            (
                u64::try_from(k.grace.as_millis()).unwrap_or(u64::MAX),
                // The checkpoint keeps the reason's name (as it always did).
                k.reason.short_name().to_owned(),
            )
        }),
        ports: e
            .ports
            .iter()
            .map(|p| {
                (
                    p.host_port,
                    p.container_port,
                    p.protocol.as_str().to_owned(),
                )
            })
            .collect(),
    }
}

/// The reason a checkpointed kill reason names.
fn known_reason(reason: &str) -> pb::TaskReason {
    [
        REASON_KILLED_BY_REQUEST,
        REASON_FRAMEWORK_REMOVED,
        REASON_AGENT_SHUTDOWN,
        REASON_HEALTH_CHECK_FAILED,
    ]
    .into_iter()
    .find(|r| r.short_name() == reason)
    .unwrap_or(REASON_KILLED_BY_REQUEST)
}

fn port_from_checkpoint((host, container, proto): &(u16, u16, String)) -> Option<PortBinding> {
    let protocol = match proto.as_str() {
        "tcp" => Protocol::Tcp,
        "udp" => Protocol::Udp,
        _ => return None,
    };
    Some(PortBinding {
        host_port: *host,
        container_port: *container,
        protocol,
    })
}

fn port_to_proto(p: &PortBinding) -> pb::PortMapping {
    pb::PortMapping {
        container_port: u32::from(p.container_port),
        host_port: u32::from(p.host_port),
        protocol: p.protocol.as_str().to_owned(),
    }
}

/// The ports of a process task: each host port of its resources, as is.
fn process_ports(resources: &Resources) -> Vec<PortBinding> {
    resources
        .ports
        .ranges()
        .iter()
        .flat_map(|&(b, e)| b..=e)
        .take(MAX_LISTED_PORTS)
        .map(|p| PortBinding {
            host_port: p,
            container_port: p,
            protocol: Protocol::Tcp,
        })
        .collect()
}

fn grace_from_secs(secs: f64) -> Option<Duration> {
    if secs > 0.0 {
        Duration::try_from_secs_f64(secs)
            .ok()
            .map(|d| d.min(MAX_KILL_GRACE))
    } else {
        None
    }
}

/// Checks a task from `RunTask` by the rules the master applies too
/// ([`berth_proto::task::validate_task`]), then what only the agent does:
/// its framework id, its resources against the minimums, its host ports
/// against its port resources; or a message saying what is wrong.
fn validate_task(framework_id: &str, task: &pb::TaskInfo) -> Result<ValidTask, String> {
    FrameworkId::new(framework_id).map_err(|e| e.to_string())?;
    berth_proto::task::validate_task(task).map_err(|e| e.to_string())?;
    let default_cmd = pb::CommandInfo::default();
    // Validated: a task without a command has a container.
    let cmd = task.command.as_ref().unwrap_or(&default_cmd);
    let command = if cmd.shell.is_empty() {
        // Empty for a container that runs its image's CMD.
        Command::Argv(cmd.argv.clone())
    } else {
        Command::Shell(cmd.shell.clone())
    };
    let resources = resources_from_proto_opt(task.resources.as_ref())
        .map_err(|e| format!("invalid resources: {e}"))?;
    berth_proto::minimums::check_task_minimums(&task.task_id, &resources, task.container.is_some())
        .map_err(|e| e.to_string())?;
    let container = task
        .container
        .as_ref()
        .map(|c| ContainerSpec::from_proto(c, &resources.ports))
        .transpose()
        .map_err(|e| format!("invalid container: {e}"))?;
    let health = task
        .health_check
        .as_ref()
        .map(HealthCheckSpec::from_proto)
        .transpose()
        .map_err(|e| format!("invalid health check: {e}"))?;
    Ok(ValidTask {
        command,
        resources,
        env: cmd.env.clone(),
        container,
        health,
        masked_values: task.masked_values.clone(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerizer::{BoxFuture, Launched};

    fn task(cmd: pb::CommandInfo) -> pb::TaskInfo {
        pb::TaskInfo {
            task_id: "t1".into(),
            resources: Some(pb::Resources {
                cpus: 0.1,
                mem: 32.0,
                ..Default::default()
            }),
            command: Some(cmd),
            ..Default::default()
        }
    }

    #[test]
    fn validation_messages() {
        let shell = pb::CommandInfo {
            shell: "true".into(),
            ..Default::default()
        };
        assert!(validate_task("fw", &task(shell.clone())).is_ok());
        let err = validate_task("fw", &task(pb::CommandInfo::default())).unwrap_err();
        assert!(err.contains("neither"), "{err}");
        let both = pb::CommandInfo {
            shell: "true".into(),
            argv: vec!["true".into()],
            ..Default::default()
        };
        assert!(
            validate_task("fw", &task(both))
                .unwrap_err()
                .contains("both")
        );
        let mut env = shell.clone();
        env.env.insert("A=B".into(), "x".into());
        assert!(validate_task("fw", &task(env)).unwrap_err().contains("'='"));
        let mut env = shell.clone();
        env.env.insert(String::new(), "x".into());
        assert!(
            validate_task("fw", &task(env))
                .unwrap_err()
                .contains("empty")
        );
        let mut bad_id = task(shell.clone());
        bad_id.task_id = "a/b".into();
        assert!(
            validate_task("fw", &bad_id)
                .unwrap_err()
                .contains("task id")
        );
        assert!(
            validate_task("../x", &task(shell.clone()))
                .unwrap_err()
                .contains("framework id")
        );
        let mut bad_res = task(shell);
        bad_res.resources = Some(pb::Resources {
            cpus: -1.0,
            ..Default::default()
        });
        assert!(validate_task("fw", &bad_res).unwrap_err().contains("cpus"));
        // The master's minimums, checked again (berth_proto::minimums).
        let mut no_mem = task(pb::CommandInfo {
            shell: "true".into(),
            ..Default::default()
        });
        no_mem.resources = Some(pb::Resources {
            cpus: 1.0,
            ..Default::default()
        });
        let err = validate_task("fw", &no_mem).unwrap_err();
        assert!(err.contains("asks for no mem"), "{err}");
    }

    /// A containerizer whose containers run until destroyed. Each destroy
    /// notes the kill of the container's latest task record the
    /// checkpoint writer had written by then.
    #[derive(Debug)]
    struct FakeContainerizer {
        checkpoint: PathBuf,
        exit: tokio::sync::watch::Sender<Option<Termination>>,
        /// Per destroy, the kill (grace in ms, reason) on disk at the time.
        kills_on_disk: Mutex<Vec<Option<(u64, String)>>>,
    }

    impl Containerizer for FakeContainerizer {
        fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Launched, ContainerError>> {
            Box::pin(async move {
                Ok(Launched {
                    container_id: spec.container_id,
                    pid: 4242,
                    pgid: 4242,
                })
            })
        }

        fn wait<'a>(
            &'a self,
            _: &'a ContainerId,
        ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
            let exit = self.exit.subscribe();
            Box::pin(async move { Ok(crate::containerizer::wait_exit(exit).await) })
        }

        fn destroy<'a>(
            &'a self,
            id: &'a ContainerId,
            _: Duration,
        ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
            let on_disk = crate::writer::inject::written_tasks(&self.checkpoint)
                .into_iter()
                .rev()
                .find(|t| t.container_id.as_ref() == Some(&id.0))
                .and_then(|t| t.kill);
            self.kills_on_disk
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(on_disk);
            self.exit.send_replace(Some(Termination::Signaled(15)));
            Box::pin(async { Ok(Termination::Signaled(15)) })
        }

        fn cleanup<'a>(&'a self, _: &'a ContainerId) -> BoxFuture<'a, ()> {
            Box::pin(async {})
        }

        fn recover(
            &self,
            _: Vec<RecoverRecord>,
        ) -> BoxFuture<'_, Result<Vec<ContainerId>, ContainerError>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn exec<'a>(
            &'a self,
            _: &'a ContainerId,
            _: Command,
            _: Duration,
        ) -> BoxFuture<'a, Result<i32, ContainerError>> {
            Box::pin(async { Ok(0) })
        }
    }

    impl FakeContainerizer {
        fn kills_on_disk(&self) -> Vec<Option<(u64, String)>> {
            self.kills_on_disk
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn state_of(agent: &Agent, key: &TaskKey) -> Option<pb::TaskState> {
        agent.lock().tasks.get(key).map(|e| e.state)
    }

    /// An agent running process tasks on a [`FakeContainerizer`], with
    /// task "t1" of "fw" running; and the checkpoint's path.
    async fn running_on_fake(
        dir: &std::path::Path,
    ) -> (Arc<Agent>, Arc<FakeContainerizer>, PathBuf) {
        let path = dir.join(crate::checkpoint::FILE_NAME);
        let fake = Arc::new(FakeContainerizer {
            checkpoint: path.clone(),
            exit: tokio::sync::watch::Sender::new(None),
            kills_on_disk: Mutex::default(),
        });
        let mut config = AgentConfig::new(vec!["127.0.0.1:1".into()], dir.to_path_buf());
        config.docker = false;
        let config = config.validate().unwrap();
        let resources: Resources = "cpus:1;mem:256".parse().unwrap();
        let agent = Arc::new(Agent::new(
            config,
            &resources,
            "host".into(),
            "host:5051".into(),
            Arc::clone(&fake) as Arc<dyn Containerizer>,
            None,
            Checkpoint::open(&path).unwrap(),
        ));
        agent.handle(pb::master_message::Message::RunTask(pb::RunTask {
            framework: Some(pb::FrameworkInfo {
                id: "fw".into(),
                ..Default::default()
            }),
            task: Some(task(pb::CommandInfo {
                shell: "sleep 1000".into(),
                ..Default::default()
            })),
        }));
        let key = ("fw".to_owned(), "t1".to_owned());
        wait_until("t1 runs", || {
            state_of(&agent, &key) == Some(pb::TaskState::TaskRunning)
        })
        .await;
        (agent, fake, path)
    }

    #[tokio::test]
    async fn a_kill_reaches_the_container_only_once_its_record_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake, path) = running_on_fake(dir.path()).await;
        // Writes from here on are slow: a signal sent without waiting for
        // the kill record would find it not yet on disk.
        crate::writer::inject::observe_writes(path, Duration::from_millis(300));
        let key = ("fw".to_owned(), "t1".to_owned());
        agent.kill_task(&key, 5.0, REASON_KILLED_BY_REQUEST, None);
        assert!(fake.kills_on_disk().is_empty(), "signalled synchronously");
        wait_until("the container is signalled", || {
            !fake.kills_on_disk().is_empty()
        })
        .await;
        assert_eq!(
            fake.kills_on_disk()[0],
            Some((5000, "KILLED_BY_REQUEST".to_owned())),
            "the kill record was not on disk when the kill reached the container"
        );
        wait_until("t1 is killed", || {
            state_of(&agent, &key) == Some(pb::TaskState::TaskKilled)
        })
        .await;
        agent.writer.close().await;
    }

    #[tokio::test]
    async fn a_kill_whose_record_cannot_be_written_never_reaches_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake, path) = running_on_fake(dir.path()).await;
        crate::writer::inject::fail_writes(path);
        let key = ("fw".to_owned(), "t1".to_owned());
        agent.kill_task(&key, 0.0, REASON_KILLED_BY_REQUEST, None);
        // The agent stops (`run` returns `AgentError::CheckpointWrite`)...
        let failure = tokio::time::timeout(WAIT, agent.writer.failed())
            .await
            .expect("the failed write is reported");
        assert!(
            failure.to_string().contains("injected write failure"),
            "{failure}"
        );
        // ...and the task is left running for the next start: the kill
        // never reaches it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fake.kills_on_disk(), Vec::new());
        assert_eq!(state_of(&agent, &key), Some(pb::TaskState::TaskRunning));
    }

    #[test]
    fn grace_parsing() {
        assert_eq!(grace_from_secs(0.0), None);
        assert_eq!(grace_from_secs(-1.0), None);
        assert_eq!(grace_from_secs(f64::NAN), None);
        assert_eq!(grace_from_secs(1.5), Some(Duration::from_millis(1500)));
        assert_eq!(grace_from_secs(1e12), Some(MAX_KILL_GRACE));
    }
}
