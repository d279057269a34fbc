//! Recovery after a restart: the tasks of the checkpoint back in the task
//! table, their containers re-adopted (or reported ended), health checks
//! and kills resumed, unacknowledged updates queued for resending.

use super::*;

/// Output results of a task whose exit the agent could not see.
const NOT_UPLOADED_AFTER_RESTART: &str = "agent restarted: the task ended while the agent was down (exit status unknown); \
     its outputs were not uploaded";

impl Agent {
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
