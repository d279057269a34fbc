//! The agent's stop: launches refused, tasks left running for the next
//! start or killed, and what the stop waits for.

use super::*;

impl Agent {
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
