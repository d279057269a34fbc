//! A running task to its end: waiting for its container to exit,
//! uploading its outputs, cleaning up and reporting how it ended.

use super::*;

impl Agent {
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
    pub(super) async fn watch(
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
}
