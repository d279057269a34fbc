//! Status updates from agents: checked, committed when they change a
//! task, forwarded to the framework (or acknowledged for it when nobody
//! will).

use super::*;

impl Core {
    pub(super) fn status_update(&mut self, agent: &AgentId, update: pb::StatusUpdate) {
        let Some(status) = update.status else {
            warn!(agent = %agent, "status update without a status");
            return;
        };
        let (Ok(fw), Ok(task)) = (
            FrameworkId::new(update.framework_id.clone()),
            TaskId::new(status.task_id.clone()),
        ) else {
            warn!(agent = %agent, "status update with invalid ids: {:?}/{:?}", update.framework_id, status.task_id);
            return;
        };
        let mut status = status;
        if !pb::TaskState::try_from(status.state).is_ok_and(|s| s != pb::TaskState::Unspecified)
            || status.uuid.len() != 16
        {
            warn!(agent = %agent, task = %task, "status update with an unknown state or a bad uuid");
            return;
        }
        // The update is about the agent that sent it, whatever it claims.
        status.agent_id = agent.to_string();
        // The registry takes a task's times from its updates' timestamps.
        if crate::registry::secs_to_ms(status.timestamp).is_none() {
            status.timestamp = ms_to_secs(self.clock.unix_ms);
        }
        let ack_ourselves = |core: &mut Self| {
            core.send_agent(
                agent,
                pb::master_message::Message::Ack(pb::StatusUpdateAck {
                    framework_id: fw.to_string(),
                    task_id: task.to_string(),
                    uuid: status.uuid.clone(),
                }),
            );
        };
        if self.registry.framework(&fw).is_none() {
            // Its framework is gone: nobody will acknowledge; do it here so
            // the agent can forget the update.
            ack_ourselves(self);
            return;
        }
        match self.registry.task(&fw, &task) {
            Some(record) if &record.agent != agent => {
                warn!(agent = %agent, task = %task, "update from an agent the task is not on");
                ack_ourselves(self);
                return;
            }
            Some(record) if record.status == status.encode_to_vec() => {
                // A resend of the update we already applied.
            }
            Some(_) => {
                // Not awaited: status updates of many tasks share Raft
                // rounds. The update is forwarded to the framework when its
                // entry is applied (see `apply`); if it never is (leadership
                // lost), the agent resends it.
                self.propose_detached(Command::UpdateTask {
                    framework: fw.clone(),
                    task: task.clone(),
                    status: status.encode_to_vec(),
                });
                return;
            }
            None => {
                // A resend of a terminal update, or an update of a task the
                // registry no longer remembers (completed tasks are kept
                // only up to a limit): forward it, as Mesos does, so the
                // framework acknowledges it; acknowledging it here could
                // lose a terminal update the framework never saw.
            }
        }
        self.send_event(&fw, pb::event::Event::Update(status));
    }
}
