//! Status updates: generating one (the task's new state, checkpointed
//! before the update is sent), resending those not acknowledged in time,
//! and acknowledgements (the next update goes out; a task whose terminal
//! update is acknowledged is forgotten).

use super::*;

impl Agent {
    /// Generates a status update for a task, records its state, checkpoints
    /// both and queues the update.
    pub(super) fn record(
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
    pub(super) fn record_with_outputs(
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

    pub(super) fn ack(&self, key: &TaskKey, uuid: &[u8]) {
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
}

fn port_to_proto(p: &PortBinding) -> pb::PortMapping {
    pb::PortMapping {
        container_port: u32::from(p.container_port),
        host_port: u32::from(p.host_port),
        protocol: p.protocol.as_str().to_owned(),
    }
}
