//! Scheduler calls other than Accept: decline, revive, suppress, kill,
//! acknowledge, reconcile, teardown, pending work; and sending events.

use super::*;

impl Core {
    /// Handles a scheduler call; calls that change the registry are
    /// answered once their command is committed.
    pub(super) fn call(&mut self, call: SchedulerCall, to: Caller<CallReply>) {
        match call {
            SchedulerCall::Accept(req) => self.accept(req, to),
            SchedulerCall::Teardown(req) => match self.caller(req.header.as_ref()) {
                Err(e) => self.reply(Reply::Call { to, result: Err(e) }),
                // Answered success only once the removal is durable.
                Ok(fw) => {
                    self.remove_framework(&fw, "FRAMEWORK_TEARDOWN", RemovalReply::Framework(to))
                }
            },
            other => {
                let result = self.call_now(other);
                self.reply(Reply::Call { to, result });
            }
        }
    }

    /// Handles a scheduler call that changes nothing durable.
    fn call_now(&mut self, call: SchedulerCall) -> Result<CallReply, CallError> {
        match call {
            SchedulerCall::Accept(_) | SchedulerCall::Teardown(_) => Err(CallError::internal(
                "accept and teardown are committed calls",
            )),
            SchedulerCall::UpdatePending(req) => {
                let fw = self.caller(req.header.as_ref())?;
                let tasks = pending::validate(req.tasks)
                    .map_err(|e| CallError::invalid_argument(format!("update pending: {e}")))?;
                debug!(framework = %fw, tasks = tasks.len(), "pending work published");
                self.pending_work.replace(fw, tasks, self.clock.unix_ms);
                Ok(CallReply::Empty)
            }
            SchedulerCall::Decline(req) => {
                let fw = self.caller(req.header.as_ref())?;
                let refuse = self.refuse(req.filters.as_ref())?;
                let ids = offer_ids(&req.offer_ids)?;
                // Unlike an accept, a decline may return offers of several
                // agents: each is checked, then all are taken.
                if ids.is_empty() {
                    return Err(CallError::invalid_argument(OfferError::Empty.to_string()));
                }
                let mut seen = BTreeSet::new();
                for id in &ids {
                    if !seen.insert(id) {
                        return Err(CallError::invalid_argument(
                            OfferError::Duplicate(id.clone()).to_string(),
                        ));
                    }
                    self.offers
                        .validate(&fw, std::slice::from_ref(id))
                        .map_err(|e| CallError::invalid_argument(e.to_string()))?;
                }
                let taken: Vec<_> = ids.iter().filter_map(|id| self.offers.remove(id)).collect();
                let now = self.now();
                for offer in taken {
                    self.allocator.recover(
                        &offer.agent,
                        &fw,
                        &offer.role,
                        &offer.resources,
                        Some(refuse),
                        now,
                    );
                }
                self.allocation_dirty = true;
                Ok(CallReply::Empty)
            }
            SchedulerCall::Revive(req) => {
                let fw = self.caller(req.header.as_ref())?;
                let roles = self.framework_roles(&fw, &req.roles)?;
                self.allocator.revive(&fw, roles.as_ref());
                self.allocation_dirty = true;
                Ok(CallReply::Empty)
            }
            SchedulerCall::Suppress(req) => {
                let fw = self.caller(req.header.as_ref())?;
                let roles = self.framework_roles(&fw, &req.roles)?;
                self.allocator.suppress(&fw, roles.as_ref());
                Ok(CallReply::Empty)
            }
            SchedulerCall::Kill(req) => self.kill(req).map(|()| CallReply::Empty),
            SchedulerCall::Acknowledge(req) => {
                let fw = self.caller(req.header.as_ref())?;
                let agent = AgentId::new(req.agent_id.clone())
                    .map_err(|e| CallError::invalid_argument(e.to_string()))?;
                let task = TaskId::new(req.task_id.clone())
                    .map_err(|e| CallError::invalid_argument(e.to_string()))?;
                if req.uuid.len() != 16 {
                    return Err(CallError::invalid_argument(format!(
                        "uuid must be 16 bytes, got {}",
                        req.uuid.len()
                    )));
                }
                self.send_agent(
                    &agent,
                    pb::master_message::Message::Ack(pb::StatusUpdateAck {
                        framework_id: fw.to_string(),
                        task_id: task.to_string(),
                        uuid: req.uuid,
                    }),
                );
                Ok(CallReply::Empty)
            }
            SchedulerCall::Reconcile(req) => self.reconcile(req).map(|()| CallReply::Empty),
        }
    }

    pub(super) fn refuse(&self, filters: Option<&pb::Filters>) -> Result<Duration, CallError> {
        match filters.and_then(|f| f.refuse_seconds) {
            None => Ok(self.config.default_refuse),
            Some(s) => seconds("refuse_seconds", s),
        }
    }

    fn framework_roles(
        &self,
        fw: &FrameworkId,
        roles: &[String],
    ) -> Result<Option<BTreeSet<Role>>, CallError> {
        if roles.is_empty() {
            return Ok(None);
        }
        let subscribed = self
            .registry
            .framework(fw)
            .map(|f| f.roles.clone())
            .unwrap_or_default();
        let mut out = BTreeSet::new();
        for r in roles {
            let role =
                Role::new(r.clone()).map_err(|e| CallError::invalid_argument(e.to_string()))?;
            if !subscribed.contains(&role) {
                return Err(CallError::invalid_argument(format!(
                    "framework is not subscribed to role {}",
                    quoted(r)
                )));
            }
            out.insert(role);
        }
        Ok(Some(out))
    }

    pub(super) fn kill(&mut self, req: pb::KillRequest) -> Result<(), CallError> {
        let fw = self.caller(req.header.as_ref())?;
        let task = TaskId::new(req.task_id.clone())
            .map_err(|e| CallError::invalid_argument(e.to_string()))?;
        let grace = match req.grace_period_seconds {
            Some(s) => seconds("grace_period_seconds", s)?.as_secs_f64(),
            None => 0.0,
        };
        let Some(record) = self.registry.task(&fw, &task) else {
            if self.registry.completed_task(&fw, &task).is_some() {
                return Ok(());
            }
            return Err(CallError::not_found(format!(
                "task {} is not a task of framework {}",
                quoted(&req.task_id),
                quoted(fw.as_str())
            )));
        };
        let kill = pb::KillTask {
            framework_id: fw.to_string(),
            task_id: task.to_string(),
            grace_period_seconds: grace,
        };
        let agent = record.agent.clone();
        if self.agents.contains_key(&agent) {
            self.send_agent(&agent, pb::master_message::Message::KillTask(kill));
        } else {
            // At most one queued kill per task: repeated kills while the
            // agent is away must not grow the queue without bound.
            let queued = self.pending_kills.entry(agent).or_default();
            queued.retain(|k| k.framework_id != kill.framework_id || k.task_id != kill.task_id);
            queued.push(kill);
        }
        Ok(())
    }

    pub(super) fn reconcile(&mut self, req: pb::ReconcileRequest) -> Result<(), CallError> {
        let fw = self.caller(req.header.as_ref())?;
        let partition_aware = self
            .registry
            .framework(&fw)
            .is_some_and(|f| f.partition_aware);
        let mut statuses = Vec::new();
        if req.tasks.is_empty() {
            statuses.extend(
                self.registry
                    .tasks_of(&fw)
                    .map(|t| reconciled(t.last_status())),
            );
        } else {
            for t in &req.tasks {
                let id = TaskId::new(t.task_id.clone())
                    .map_err(|e| CallError::invalid_argument(e.to_string()))?;
                let known = self
                    .registry
                    .task(&fw, &id)
                    .or_else(|| self.registry.completed_task(&fw, &id));
                statuses.push(match known {
                    Some(record) => reconciled(record.last_status()),
                    None => pb::TaskStatus {
                        task_id: t.task_id.clone(),
                        state: if partition_aware {
                            pb::TaskState::TaskUnknown as i32
                        } else {
                            pb::TaskState::TaskLost as i32
                        },
                        message: "the master does not know this task".into(),
                        reason: pb::TaskReason::Reconciliation as i32,
                        source: pb::StatusSource::Master as i32,
                        agent_id: t.agent_id.clone(),
                        timestamp: ms_to_secs(self.clock.unix_ms),
                        ..Default::default()
                    },
                });
            }
        }
        for s in statuses {
            self.send_event(&fw, pb::event::Event::Update(s));
        }
        Ok(())
    }

    /// Sends `ev` to the framework's current stream: pushed as an
    /// [`Action::ToFramework`] and delivered by the shell once the handler
    /// returns.
    pub(super) fn send_event(&mut self, framework: &FrameworkId, ev: pb::event::Event) {
        self.actions.push(Action::ToFramework {
            framework: framework.clone(),
            event: ev,
        });
    }
}

fn reconciled(mut status: pb::TaskStatus) -> pb::TaskStatus {
    status.uuid.clear();
    status.source = pb::StatusSource::Master as i32;
    status.reason = pb::TaskReason::Reconciliation as i32;
    status
}
