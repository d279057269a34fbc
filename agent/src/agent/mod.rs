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
//!
//! One file per concern, each an `impl Agent` block: `mod.rs` the types,
//! the constructor and the queueing of a task's checkpoint write
//! (`persist`); `link` the stream
//! to the master (registration, dispatch of its messages); `updates`
//! status updates (generated, resent, acknowledged); `launch` a `RunTask`
//! from validation to the running container; `watch` a running task to
//! its end (output uploads, the terminal update); `health_checks` a
//! task's health checks and what their results do; `kill` kills;
//! `recovery` re-adopting the tasks of the checkpoint after a restart;
//! `sandboxes` where sandboxes live and their garbage collection;
//! `shutdown` what the agent does with its tasks when it stops.

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

mod health_checks;
mod kill;
mod launch;
mod link;
mod recovery;
mod sandboxes;
mod shutdown;
mod updates;
mod watch;

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
