//! The agent's state and task lifecycle.
//!
//! [`Core`] is the one place that holds the task table and the status-update
//! queues (what a later checkpoint will persist). [`Agent`] wraps it with the
//! configuration and the containerizer and implements the reactions to the
//! master's messages and to task exits. Every state change is made under the
//! core's lock, so updates of one task are queued in the order they happen.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use berth_proto as pb;
use berth_proto::convert::{resources_from_proto_opt, unix_now};
use berth_scheduler_core::{FrameworkId, Resources, TaskId};
use tokio::sync::mpsc;

use crate::config::{AgentConfig, STATUS_RETRY_MAX};
use crate::containerizer::{Command, ContainerId, Containerizer, LaunchSpec, Termination};
use crate::error::ContainerError;
use crate::status_update::{AckOutcome, StatusUpdateManager, TaskKey};

/// Reason of a task killed by a `KillTask`.
pub const REASON_KILLED_BY_REQUEST: &str = "KILLED_BY_REQUEST";
/// Reason of a task that exited by itself.
pub const REASON_EXITED: &str = "EXITED";
/// Reason of a task killed by a signal nobody asked for.
pub const REASON_SIGNALED: &str = "SIGNALED";
/// Reason of a task the kernel killed for exceeding its memory limit.
pub const REASON_OOM: &str = "OOM";
/// Reason of a task that could not be started (invalid or spawn failure).
pub const REASON_LAUNCH_FAILED: &str = "LAUNCH_FAILED";
/// Reason of the `TASK_LOST` sent for a kill of a task the agent does not know.
pub const REASON_UNKNOWN_TASK: &str = "UNKNOWN_TASK";
/// Reason of a task killed by `ShutdownFramework`.
pub const REASON_FRAMEWORK_REMOVED: &str = "FRAMEWORK_REMOVED";
/// Reason of a task killed (or refused) because the agent shuts down.
pub const REASON_AGENT_SHUTDOWN: &str = "AGENT_SHUTDOWN";

/// Longest kill grace period accepted from the wire.
const MAX_KILL_GRACE: Duration = Duration::from_secs(3600);

/// A pending or running kill of a task.
#[derive(Debug, Clone)]
struct Kill {
    grace: Duration,
    reason: &'static str,
}

/// What the agent knows about one task.
#[derive(Debug, Clone)]
pub(crate) struct TaskEntry {
    pub(crate) framework_id: String,
    pub(crate) task: pb::TaskInfo,
    /// The latest state generated for the task.
    pub(crate) state: pb::TaskState,
    pub(crate) sandbox: PathBuf,
    container: Option<ContainerId>,
    kill: Option<Kill>,
}

/// The agent's mutable state: task table, status-update queues, the
/// connection to the master. One lock guards it all.
#[derive(Debug)]
pub(crate) struct Core {
    /// The id from the last `Registered`; empty before the first one.
    pub(crate) agent_id: String,
    pub(crate) tasks: BTreeMap<TaskKey, TaskEntry>,
    pub(crate) updates: StatusUpdateManager,
    /// Sender of the current master stream, set while registered.
    outbound: Option<mpsc::Sender<pb::AgentMessage>>,
    shutting_down: bool,
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

    fn send_update(&self, u: pb::StatusUpdate) {
        self.send(pb::AgentMessage {
            message: Some(pb::agent_message::Message::StatusUpdate(u)),
        });
    }
}

/// The agent: configuration, containerizer and [`Core`].
#[derive(Debug)]
pub(crate) struct Agent {
    pub(crate) config: AgentConfig,
    /// Hostname, address, resources, reservations and attributes.
    info: pb::AgentInfo,
    containerizer: Arc<dyn Containerizer>,
    core: Mutex<Core>,
}

impl Agent {
    /// `config` must be validated, with an absolute `work_dir`.
    pub(crate) fn new(
        config: AgentConfig,
        resources: &Resources,
        hostname: String,
        address: String,
        containerizer: Arc<dyn Containerizer>,
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
        Agent {
            config,
            info,
            containerizer,
            core: Mutex::new(Core {
                agent_id: String::new(),
                tasks: BTreeMap::new(),
                updates,
                outbound: None,
                shutting_down: false,
            }),
        }
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Core> {
        self.core.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The sandbox of a task.
    pub(crate) fn sandbox_path(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.config
            .work_dir
            .join("sandboxes")
            .join(framework_id)
            .join(task_id)
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

    /// Generates a status update for a task, records its state and queues it.
    fn record(
        &self,
        core: &mut Core,
        key: &TaskKey,
        state: pb::TaskState,
        reason: &str,
        message: String,
        exit_code: Option<i32>,
    ) {
        let status = pb::TaskStatus {
            task_id: key.1.clone(),
            state: state as i32,
            message,
            reason: reason.to_owned(),
            source: pb::StatusSource::SourceAgent as i32,
            agent_id: core.agent_id.clone(),
            exit_code,
            uuid: uuid::Uuid::new_v4().as_bytes().to_vec(),
            timestamp: unix_now(),
            healthy: None,
            ..Default::default()
        };
        tracing::info!(
            framework_id = %key.0, task_id = %key.1, state = state.as_str_name(), reason,
            message = %status.message, "status update"
        );
        if let Some(e) = core.tasks.get_mut(key) {
            e.state = state;
        }
        let update = pb::StatusUpdate {
            framework_id: key.0.clone(),
            status: Some(status),
        };
        if let Some(head) = core.updates.push(update, Instant::now()) {
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
                self.kill_task(&key, k.grace_period_seconds, REASON_KILLED_BY_REQUEST);
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
        core.tasks.insert(
            key.clone(),
            TaskEntry {
                framework_id: key.0.clone(),
                task: task.clone(),
                state: pb::TaskState::TaskStaging,
                sandbox: sandbox.clone(),
                container: None,
                kill: None,
            },
        );
        let (command, resources, env) = match validate_task(&key.0, &task) {
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
        self.record(
            &mut core,
            &key,
            pb::TaskState::TaskStarting,
            "",
            "preparing sandbox and starting the task".into(),
            None,
        );
        let spec = LaunchSpec {
            container_id: ContainerId::random(),
            framework_id: key.0.clone(),
            task_id: key.1.clone(),
            agent_id: core.agent_id.clone(),
            sandbox,
            command,
            env,
            resources,
            container: None,
        };
        drop(core);
        tokio::spawn(Arc::clone(self).supervise(key, spec));
    }

    /// Launches a task and reports how it ends.
    async fn supervise(self: Arc<Self>, key: TaskKey, spec: LaunchSpec) {
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
        let launched = match self.containerizer.launch(spec).await {
            Ok(l) => l,
            Err(e) => {
                let mut core = self.lock();
                self.record(
                    &mut core,
                    &key,
                    pb::TaskState::TaskFailed,
                    REASON_LAUNCH_FAILED,
                    e.to_string(),
                    None,
                );
                return;
            }
        };
        let id = launched.container_id.clone();
        let pending_kill = {
            let mut core = self.lock();
            let kill = core.tasks.get_mut(&key).and_then(|e| {
                e.container = Some(id.clone());
                e.kill.clone()
            });
            self.record(
                &mut core,
                &key,
                pb::TaskState::TaskRunning,
                "",
                format!("running as process {}", launched.pid),
                None,
            );
            kill
        };
        if let Some(kill) = pending_kill {
            self.spawn_destroy(id.clone(), kill.grace);
        }
        let term = match self.containerizer.wait(&id).await {
            Ok(t) => t,
            Err(e) => {
                tracing::error!(container = %id, error = %e, "waiting for the task failed");
                Termination::Unknown
            }
        };
        // Leftovers of the process group go with the task.
        if let Err(e) = self.containerizer.destroy(&id, Duration::ZERO).await {
            tracing::warn!(container = %id, error = %e, "cleaning up the task's processes failed");
        }
        self.containerizer.cleanup(&id).await;
        let mut core = self.lock();
        let kill = core.tasks.get_mut(&key).and_then(|e| {
            e.container = None;
            e.kill.clone()
        });
        let (state, reason, message) = match (kill, term) {
            (Some(k), t) => (pb::TaskState::TaskKilled, k.reason, format!("killed: {t}")),
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
        self.record(&mut core, &key, state, reason, message, term.exit_code());
    }

    fn spawn_destroy(self: &Arc<Self>, id: ContainerId, grace: Duration) {
        let agent = Arc::clone(self);
        tokio::spawn(async move {
            match agent.containerizer.destroy(&id, grace).await {
                Ok(_) => {}
                // It exited and was cleaned up meanwhile.
                Err(ContainerError::UnknownContainer(_)) => {
                    tracing::debug!(container = %id, "kill raced with the task's exit");
                }
                Err(e) => tracing::warn!(container = %id, error = %e, "killing the task failed"),
            }
        });
    }

    /// Kills a task; `grace_seconds` 0 means the task's own setting.
    pub(crate) fn kill_task(
        self: &Arc<Self>,
        key: &TaskKey,
        grace_seconds: f64,
        reason: &'static str,
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
        tracing::info!(framework_id = %key.0, task_id = %key.1, grace_ms = grace.as_millis(), reason, "killing task");
        entry.kill = Some(Kill { grace, reason });
        if let Some(id) = entry.container.clone() {
            drop(core);
            self.spawn_destroy(id, grace);
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
            self.kill_task(&key, 0.0, REASON_FRAMEWORK_REMOVED);
        }
    }

    fn ack(&self, key: &TaskKey, uuid: &[u8]) {
        let mut core = self.lock();
        match core.updates.ack(key, uuid, Instant::now()) {
            AckOutcome::Ignored => {
                tracing::debug!(framework_id = %key.0, task_id = %key.1, "ignoring acknowledgement of an unknown status update");
            }
            AckOutcome::Acked { next, .. } => {
                if let Some(next) = next {
                    core.send_update(next);
                } else if core.tasks.get(key).is_some_and(|e| e.state.is_terminal()) {
                    tracing::debug!(framework_id = %key.0, task_id = %key.1, "terminal update acknowledged; forgetting task");
                    core.tasks.remove(key);
                }
            }
        }
    }

    /// Stops accepting launches and kills every task.
    pub(crate) fn begin_shutdown(self: &Arc<Self>) {
        let keys: Vec<TaskKey> = {
            let mut core = self.lock();
            core.shutting_down = true;
            core.tasks
                .iter()
                .filter(|(_, e)| !e.state.is_terminal())
                .map(|(k, _)| k.clone())
                .collect()
        };
        tracing::info!(tasks = keys.len(), "agent shutting down; killing tasks");
        for key in keys {
            self.kill_task(&key, 0.0, REASON_AGENT_SHUTDOWN);
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

fn grace_from_secs(secs: f64) -> Option<Duration> {
    if secs > 0.0 {
        Duration::try_from_secs_f64(secs)
            .ok()
            .map(|d| d.min(MAX_KILL_GRACE))
    } else {
        None
    }
}

/// Checks a task from `RunTask`; returns its command, resources and
/// environment, or a message saying what is wrong.
fn validate_task(
    framework_id: &str,
    task: &pb::TaskInfo,
) -> Result<(Command, Resources, HashMap<String, String>), String> {
    FrameworkId::new(framework_id).map_err(|e| e.to_string())?;
    TaskId::new(task.task_id.as_str()).map_err(|e| e.to_string())?;
    let cmd = task.command.as_ref().ok_or("the task has no command")?;
    let command = match (cmd.shell.is_empty(), cmd.argv.is_empty()) {
        (false, true) => Command::Shell(cmd.shell.clone()),
        (true, false) => {
            if cmd.argv[0].is_empty() {
                return Err("argv[0] must not be empty".into());
            }
            Command::Argv(cmd.argv.clone())
        }
        (true, true) => {
            return Err("the command must set one of shell and argv; neither is set".into());
        }
        (false, false) => {
            return Err("the command must set only one of shell and argv; both are set".into());
        }
    };
    let has_nul = |s: &str| s.contains('\0');
    if command_strings(&command).any(has_nul) {
        return Err("the command must not contain NUL bytes".into());
    }
    for (k, v) in &cmd.env {
        if k.is_empty() {
            return Err("environment variable names must not be empty".into());
        }
        if k.contains('=') || has_nul(k) {
            return Err(format!(
                "environment variable name {k:?} must not contain '=' or NUL"
            ));
        }
        if has_nul(v) {
            return Err(format!("environment variable {k:?} must not contain NUL"));
        }
    }
    let resources = resources_from_proto_opt(task.resources.as_ref())
        .map_err(|e| format!("invalid resources: {e}"))?;
    Ok((command, resources, cmd.env.clone()))
}

fn command_strings(c: &Command) -> Box<dyn Iterator<Item = &str> + '_> {
    match c {
        Command::Shell(s) => Box::new(std::iter::once(s.as_str())),
        Command::Argv(v) => Box::new(v.iter().map(String::as_str)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn task(cmd: pb::CommandInfo) -> pb::TaskInfo {
        pb::TaskInfo {
            task_id: "t1".into(),
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
