//! Launching a task from `RunTask`: validation (the master's rules again,
//! then the agent's own), the choice of containerizer, the sandbox and the
//! fetch of its URIs, then the launch once the task's record is on disk,
//! and `TASK_STARTING` and `TASK_RUNNING` on the way.

use super::*;

/// Most ports listed in a process task's status.
const MAX_LISTED_PORTS: usize = 1024;

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

impl Agent {
    pub(super) fn run_task(self: &Arc<Self>, run: pb::RunTask) {
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
}
