//! Accept: the offers and every task of a launch validated, the offers
//! taken, the launch proposed and, once committed, sent to the agent.

use super::*;

impl Core {
    /// Accepts offers: validates the launch, takes the offers, proposes the
    /// launch and, once it is committed, sends the tasks to the agent and
    /// answers.
    pub(super) fn accept(&mut self, req: pb::AcceptRequest, to: Caller<CallReply>) {
        let (cmd, used) = match self.prepare_accept(req) {
            Ok(Some(launch)) => launch,
            Ok(None) => {
                let result = Ok(CallReply::Accept(pb::AcceptResponse::default()));
                return self.reply(Reply::Call { to, result });
            }
            Err(e) => return self.reply(Reply::Call { to, result: Err(e) }),
        };
        let Command::LaunchTasks {
            framework,
            agent,
            tasks,
        } = &cmd
        else {
            let result = Err(CallError::internal("accept prepared a non-launch"));
            return self.reply(Reply::Call { to, result });
        };
        let (fw, agent, records) = (framework.clone(), agent.clone(), tasks.clone());
        let role = records.first().map(|r| r.role.clone()).unwrap_or_default();
        self.propose_checked(
            cmd,
            Then::Launched {
                framework: fw,
                agent,
                role,
                records,
                used,
                to,
            },
        );
    }

    /// A launch is committed: send its tasks to the agent.
    pub(super) fn launched(
        &mut self,
        fw: &FrameworkId,
        agent: &AgentId,
        records: &[TaskRecord],
    ) -> pb::AcceptResponse {
        let framework_info = self.registry.framework(fw).map(FrameworkRecord::to_info);
        for r in records {
            self.send_agent(
                agent,
                pb::master_message::Message::RunTask(pb::RunTask {
                    framework: framework_info.clone(),
                    task: Some(r.task_info()),
                }),
            );
        }
        debug!(framework = %fw, agent = %agent, tasks = records.len(), "accepted");
        pb::AcceptResponse {
            launched_task_ids: records.iter().map(|r| r.id.to_string()).collect(),
        }
    }

    /// Validates an accept and, when it is valid, takes its offers: their
    /// unused part goes back to the allocator with the refuse filter.
    /// Returns the launch to propose and what its tasks use, or `None` when
    /// it launches nothing. A refused accept changes nothing, offers
    /// included.
    fn prepare_accept(
        &mut self,
        req: pb::AcceptRequest,
    ) -> Result<Option<(Command, Allocated)>, CallError> {
        let fw = self.caller(req.header.as_ref())?;
        let refuse = self.refuse(req.filters.as_ref())?;
        let ids = offer_ids(&req.offer_ids)?;
        let offers = self
            .offers
            .validate(&fw, &ids)
            .map_err(|e| CallError::invalid_argument(e.to_string()))?;
        let agent = offers[0].agent.clone();
        let role = offers[0].role.clone();
        if offers.iter().any(|o| o.role != role) {
            return Err(CallError::invalid_argument(
                "accepted offers must all be for one role",
            ));
        }
        let mut pool = Allocated::default();
        for o in &offers {
            pool = pool
                .checked_add(&o.resources)
                .map_err(|e| CallError::invalid_argument(e.to_string()))?;
        }

        let mut infos = Vec::new();
        for op in &req.operations {
            match &op.operation {
                Some(pb::operation::Operation::Launch(launch)) => {
                    infos.extend(launch.tasks.iter().cloned())
                }
                None => return Err(CallError::invalid_argument("operation is empty")),
            }
        }
        let now_ms = self.clock.unix_ms;
        let mut seen = BTreeSet::new();
        let mut records = Vec::with_capacity(infos.len());
        let mut used = Allocated::default();
        for mut info in infos {
            let id = validate_task(&info)?;
            if !seen.insert(id.clone()) {
                return Err(CallError::invalid_argument(format!(
                    "task id {} appears twice",
                    quoted(&info.task_id)
                )));
            }
            if self.registry.task(&fw, &id).is_some() {
                return Err(CallError::invalid_argument(format!(
                    "task {} already exists in this framework",
                    quoted(&info.task_id)
                )));
            }
            if !info.agent_id.is_empty() && info.agent_id != agent.as_str() {
                return Err(CallError::invalid_argument(format!(
                    "task {} names agent {} but the offers are on agent {}",
                    quoted(&info.task_id),
                    quoted(&info.agent_id),
                    quoted(agent.as_str())
                )));
            }
            let want = resources_from_proto_opt(info.resources.as_ref()).map_err(|e| {
                CallError::invalid_argument(format!("task {}: {e}", quoted(&info.task_id)))
            })?;
            berth_proto::minimums::check_task_minimums(
                &info.task_id,
                &want,
                info.container.is_some(),
            )
            .map_err(|e| CallError::invalid_argument(e.to_string()))?;
            let before = pool.total();
            let Some(allocated) = pool.take(&want) else {
                return Err(CallError::invalid_argument(format!(
                    "tasks need more than the offers hold: task {} needs {want}, {before} left",
                    quoted(&info.task_id)
                )));
            };
            used = used
                .checked_add(&allocated)
                .map_err(|e| CallError::invalid_argument(e.to_string()))?;
            info.agent_id = agent.to_string();
            if info.name.is_empty() {
                info.name = info.task_id.clone();
            }
            records.push(TaskRecord {
                framework: fw.clone(),
                id,
                agent: agent.clone(),
                role: role.clone(),
                allocated,
                info: info.encode_to_vec(),
                state: pb::TaskState::TaskStaging as i32,
                status: Vec::new(),
                launched_at_ms: now_ms,
                running_at_ms: None,
                ended_at_ms: None,
                reported: false,
            });
        }

        // Valid. A launch the registry refuses leaves the offers, the
        // allocator and the registry as they were.
        let cmd = Command::LaunchTasks {
            framework: fw.clone(),
            agent: agent.clone(),
            tasks: records,
        };
        let launches = matches!(&cmd, Command::LaunchTasks { tasks, .. } if !tasks.is_empty());
        if launches {
            self.registry
                .check(&cmd)
                .map_err(|e| self.status_of(e, CallError::failed_precondition))?;
        }
        // Use the offers: their resources stay allocated to the tasks; the
        // rest goes back now.
        self.offers
            .take(&fw, &ids)
            .map_err(|e| CallError::internal(e.to_string()))?;
        let now = self.now();
        if !pool.is_empty() {
            self.allocator
                .recover(&agent, &fw, &role, &pool, Some(refuse), now);
        }
        self.allocation_dirty = true;
        Ok(launches.then_some((cmd, used)))
    }
}
