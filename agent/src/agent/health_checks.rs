//! A running task's health checks (see [`crate::health`]): starting them,
//! and what their results do: a change of health is a `TASK_RUNNING`
//! update, too many failures kill the task.

use super::*;

impl Agent {
    /// Starts a running task's health checks; results arrive in
    /// [`Self::on_health`].
    pub(super) fn start_health_checks(
        self: &Arc<Self>,
        key: &TaskKey,
        spec: HealthCheckSpec,
        containerizer: &Arc<dyn Containerizer>,
        id: &ContainerId,
        started: tokio::time::Instant,
    ) {
        let (tx, mut rx) = mpsc::channel(16);
        // Docker tasks' ports are published on the task bind address;
        // process tasks are reached on loopback.
        let docker = self
            .docker
            .as_ref()
            .is_some_and(|d| Arc::ptr_eq(d, containerizer));
        let host = self
            .config
            .task_bind
            .filter(|ip| docker && !ip.is_unspecified())
            .unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let probe = probe_for(&spec, host, Arc::clone(containerizer), id.clone());
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
}
