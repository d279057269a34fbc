//! The stream to the master: the `Register` message, what a `Registered`
//! and a lost stream change, sends on the current stream, and the
//! dispatch of the master's messages to their handlers.

use super::*;

impl Agent {
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
}
