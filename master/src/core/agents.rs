//! Agent registration and connections: a `Register` validated and
//! committed, the connection taken over, messages routed, streams closed.

use super::*;

impl Core {
    /// Registers an agent: the registration is committed first, then the
    /// connection is taken over (see [`Self::agent_registered`]).
    /// The agent's stream and its caller wait with the shell, by `conn`,
    /// for the answer.
    pub(super) fn register_agent(&mut self, conn: u64, reg: pb::Register) {
        let (id, new, cmd) = match self.prepare_registration(reg) {
            Ok(v) => v,
            Err(e) => {
                self.reply(Reply::Register {
                    conn,
                    result: Err(e),
                });
                return;
            }
        };
        // Record the registration first: a refused one (its running tasks
        // do not fit the resources it now reports) changes nothing, not
        // even an older connection of the same agent. A new agent's tasks
        // (it lost its id) are all unknown and get killed.
        self.propose(cmd, Then::AgentRegistered { conn, id, new });
    }

    /// Validates a `Register` into the command that records it.
    fn prepare_registration(
        &mut self,
        reg: pb::Register,
    ) -> Result<(AgentId, bool, Command), CallError> {
        let info = reg
            .info
            .ok_or_else(|| CallError::invalid_argument("register: agent info is missing"))?;
        if info.hostname.trim().is_empty() || info.hostname.len() > MAX_NAME {
            return Err(CallError::invalid_argument(
                "register: hostname must be 1 to 1024 bytes",
            ));
        }
        if !info.address.is_empty() {
            berth_proto::check_address(&info.address)
                .map_err(|e| CallError::invalid_argument(format!("register: {e}")))?;
        }
        check_attributes(&info.attributes)
            .map_err(|e| CallError::invalid_argument(format!("register: {e}")))?;
        let unreserved = resources_from_proto_opt(info.resources.as_ref())
            .map_err(|e| CallError::invalid_argument(format!("register: {e}")))?;
        let mut reserved = BTreeMap::new();
        for (role, r) in &info.reserved {
            let role = Role::new(role.clone())
                .map_err(|e| CallError::invalid_argument(format!("register: {e}")))?;
            let r = resources_from_proto(r)
                .map_err(|e| CallError::invalid_argument(format!("register: {e}")))?;
            reserved.insert(role, r);
        }
        let mut reported = Vec::new();
        for t in &reg.tasks {
            let fw = FrameworkId::new(t.framework_id.clone())
                .map_err(|e| CallError::invalid_argument(format!("register: {e}")))?;
            let task = t
                .task
                .as_ref()
                .ok_or_else(|| CallError::invalid_argument("register: task info is missing"))?;
            let id = TaskId::new(task.task_id.clone())
                .map_err(|e| CallError::invalid_argument(format!("register: {e}")))?;
            reported.push((fw, id, t.state));
        }
        let new = reg.agent_id.is_empty();
        let id = if new {
            AgentId::new(format!("agent-{}", uuid::Uuid::new_v4().simple()))
                .map_err(|e| CallError::internal(e.to_string()))?
        } else {
            AgentId::new(reg.agent_id.clone())
                .map_err(|e| CallError::invalid_argument(format!("register: {e}")))?
        };
        let record = AgentRecord {
            id: id.clone(),
            hostname: info.hostname.clone(),
            address: info.address.clone(),
            unreserved,
            reserved,
            attributes: info
                .attributes
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
            draining: false,
            registered_at_ms: self.clock.unix_ms,
            unreachable_since_ms: None,
        };

        Ok((
            id,
            new,
            Command::RegisterAgent {
                record,
                reported: Some(reported),
                at_ms: self.clock.unix_ms,
            },
        ))
    }

    /// A registration is committed: take over the agent's connection and
    /// answer (the answer opens its stream), then send what it must do.
    /// On an error nobody was answered.
    pub(super) fn agent_registered(
        &mut self,
        conn: u64,
        id: AgentId,
        new: bool,
        effects: &Effects,
    ) -> Result<(), CallError> {
        // Replace an older connection of the same agent: its stream ends
        // and no longer affects state.
        if let Some(old) = self.drop_agent_connection(&id) {
            self.conn_agents.remove(&old.conn);
        }
        self.remove_agent_from_allocator(&id);

        let Some(record) = self.registry.agent(&id).cloned() else {
            return Err(CallError::internal("agent vanished from the registry"));
        };
        // If its stream closed meanwhile, the shell closes this connection
        // again when it executes the answer.
        let first = pb::Registered {
            agent_id: id.to_string(),
            master_id: self.master_id.clone(),
            ping_interval_seconds: self.config.agent_ping_interval.as_secs_f64(),
        };
        self.reply(Reply::Register {
            conn,
            result: Ok(Registered {
                agent: id.clone(),
                first,
            }),
        });
        self.allocator.add_agent(
            id.clone(),
            AgentResources {
                unreserved: record.unreserved.clone(),
                reserved: record.reserved.clone(),
            },
            !record.draining,
        );
        let used: Vec<(FrameworkId, Role, Allocated)> = self
            .registry
            .tasks_on(&id)
            .map(|t| (t.framework.clone(), t.role.clone(), t.allocated.clone()))
            .collect();
        for (fw, role, allocated) in used {
            if let Err(e) = self.allocator.add_used(&id, &fw, &role, &allocated) {
                error!(agent = %id, framework = %fw, "recorded usage does not fit the agent: {e}");
            }
        }
        self.agents.insert(
            id.clone(),
            AgentConn {
                conn,
                ping_seq: 0,
                connected_at_ms: self.clock.unix_ms,
            },
        );
        self.conn_agents.insert(conn, id.clone());
        self.last_seen.insert(id.clone(), self.clock.instant);
        self.inherited.remove(&id);
        for (fw, task) in &effects.unknown_tasks {
            warn!(agent = %id, framework = %fw, task = %task, "agent runs a task the registry does not know; killing it");
            self.send_agent(
                &id,
                pb::master_message::Message::KillTask(pb::KillTask {
                    framework_id: fw.to_string(),
                    task_id: task.to_string(),
                    grace_period_seconds: 0.0,
                }),
            );
        }
        for kill in self.pending_kills.remove(&id).unwrap_or_default() {
            self.send_agent(&id, pb::master_message::Message::KillTask(kill));
        }
        for (fw, task) in &effects.relaunch {
            let Some(record) = self.registry.task(fw, task) else {
                continue;
            };
            info!(agent = %id, framework = %fw, task = %task, "the agent never got this launch; sending it again");
            let message = pb::master_message::Message::RunTask(pb::RunTask {
                framework: self.registry.framework(fw).map(FrameworkRecord::to_info),
                task: Some(record.task_info()),
            });
            self.send_agent(&id, message);
        }
        info!(agent = %id, hostname = %record.hostname, resources = %record.total(), new, "agent registered");
        self.allocation_dirty = true;
        Ok(())
    }

    fn remove_agent_from_allocator(&mut self, id: &AgentId) {
        for offer in self.offers.remove_agent(id) {
            self.send_event(
                &offer.framework.clone(),
                pb::event::Event::Rescind(pb::Rescind {
                    offer_id: offer.id.to_string(),
                }),
            );
        }
        self.allocator.remove_agent(id);
    }

    pub(super) fn agent_message(&mut self, conn: u64, message: pb::AgentMessage) {
        let Some(agent) = self.conn_agents.get(&conn).cloned() else {
            return;
        };
        self.last_seen.insert(agent.clone(), self.clock.instant);
        match message.message {
            Some(pb::agent_message::Message::Pong(_)) => {}
            Some(pb::agent_message::Message::StatusUpdate(update)) => {
                self.status_update(&agent, update)
            }
            Some(pb::agent_message::Message::Register(_)) => {
                warn!(agent = %agent, "ignoring a second Register on one stream");
            }
            None => warn!(agent = %agent, "empty agent message"),
        }
    }

    pub(super) fn agent_closed(&mut self, conn: u64) {
        let Some(agent) = self.conn_agents.remove(&conn) else {
            return;
        };
        if self.agents.get(&agent).is_some_and(|c| c.conn == conn) {
            self.drop_agent_connection(&agent);
            self.remove_agent_from_allocator(&agent);
            // It has until its ping timeout to come back.
            self.last_seen
                .entry(agent.clone())
                .or_insert(self.clock.instant);
            info!(agent = %agent, "agent disconnected");
        }
    }

    /// Forgets the agent's connection, if it has one, and asks the shell
    /// to end its stream.
    pub(super) fn drop_agent_connection(&mut self, id: &AgentId) -> Option<AgentConn> {
        let conn = self.agents.remove(id)?;
        self.actions.push(Action::CloseAgent {
            agent: id.clone(),
            conn: conn.conn,
        });
        Some(conn)
    }

    /// Sends `message` to the agent's current stream: pushed as an
    /// [`Action::ToAgent`] and delivered by the shell once the handler
    /// returns.
    pub(super) fn send_agent(&mut self, agent: &AgentId, message: pb::master_message::Message) {
        self.actions.push(Action::ToAgent {
            agent: agent.clone(),
            message,
        });
    }
}
