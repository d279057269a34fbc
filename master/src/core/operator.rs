//! Operator calls: reads from the registry, and writes (drain, reactivate,
//! weights, quotas, teardown) committed like a scheduler's.

use super::*;

impl Core {
    /// Answers an operator read from this master's registry.
    pub(super) fn read(&self, call: OperatorCall) -> Result<OperatorReply, CallError> {
        Ok(match call {
            OperatorCall::State => OperatorReply::State(Box::new(pb::ClusterState {
                leader: Some(self.leader()),
                agents: self.agent_views(),
                frameworks: self.framework_views(),
                tasks: self.task_views(None, true),
                roles: self.role_views(),
            })),
            OperatorCall::Agents => OperatorReply::Agents(pb::AgentList {
                agents: self.agent_views(),
            }),
            OperatorCall::Frameworks => OperatorReply::Frameworks(pb::FrameworkList {
                frameworks: self.framework_views(),
            }),
            OperatorCall::Tasks(req) => {
                let fw = if req.framework_id.is_empty() {
                    None
                } else {
                    Some(
                        FrameworkId::new(req.framework_id)
                            .map_err(|e| CallError::invalid_argument(e.to_string()))?,
                    )
                };
                OperatorReply::Tasks(pb::TaskList {
                    tasks: self.task_views(fw.as_ref(), req.include_completed),
                })
            }
            OperatorCall::Roles => OperatorReply::Roles(pb::RoleList {
                roles: self.role_views(),
            }),
            OperatorCall::Leader => OperatorReply::Leader(self.leader()),
            OperatorCall::Members => OperatorReply::Members(self.members_view()),
            OperatorCall::Pending(req) => {
                if self.leading.is_none() {
                    return Err(self.not_leader());
                }
                let only = if req.framework_id.is_empty() {
                    None
                } else {
                    Some(
                        FrameworkId::new(req.framework_id)
                            .map_err(|e| CallError::invalid_argument(e.to_string()))?,
                    )
                };
                let tasks = self.pending_work.views(only.as_ref(), |id| {
                    self.registry
                        .framework(id)
                        .map(|f| (f.name.clone(), self.frameworks.contains_key(id)))
                });
                OperatorReply::Pending(pb::PendingList { tasks })
            }
            OperatorCall::Kv(call) => OperatorReply::Kv(self.kv_read(call)?),
            _ => return Err(CallError::internal("not a read")),
        })
    }

    /// Handles an operator write; it is answered once committed.
    pub(super) fn operator(&mut self, call: OperatorCall, to: Caller<OperatorReply>) {
        match call {
            OperatorCall::AddMember(req) => self.add_member(req, to),
            OperatorCall::RemoveMember(id) => self.remove_member(id, to),
            OperatorCall::Drain(id) => self.set_draining(&id, true, to),
            OperatorCall::Reactivate(id) => self.set_draining(&id, false, to),
            OperatorCall::Teardown(id) => self.teardown_by_operator(&id, to),
            OperatorCall::Kv(call) => self.kv_write(call, to),
            OperatorCall::SetWeight(req) => {
                let parsed = Role::new(req.role.clone())
                    .map_err(|e| CallError::invalid_argument(e.to_string()))
                    .and_then(|role| {
                        Weight::new(req.weight)
                            .map(|w| (role, w))
                            .map_err(|e| CallError::invalid_argument(e.to_string()))
                    });
                let (role, weight) = match parsed {
                    Ok(v) => v,
                    Err(e) => return self.reply(Reply::Operator { to, result: Err(e) }),
                };
                let weight_milli = (weight.to_f64() * 1000.0).round() as u64;
                self.propose(
                    Command::SetWeight {
                        role: role.clone(),
                        weight_milli,
                    },
                    Then::WeightSet { role, weight, to },
                );
            }
            OperatorCall::SetQuota(req) => {
                let (role, quota) = match validate_quota(&req) {
                    Ok(v) => v,
                    Err(e) => return self.reply(Reply::Operator { to, result: Err(e) }),
                };
                self.propose(
                    Command::SetQuota {
                        role: role.clone(),
                        quota: quota.clone(),
                    },
                    Then::QuotaSet { role, quota, to },
                );
            }
            OperatorCall::RemoveQuota(role) => {
                let role = Role::new(role)
                    .map_err(|e| CallError::invalid_argument(e.to_string()))
                    .and_then(|role| {
                        if self.registry.quotas().contains_key(&role) {
                            Ok(role)
                        } else {
                            Err(CallError::not_found(format!(
                                "role {} has no quota",
                                quoted(role.as_str())
                            )))
                        }
                    });
                match role {
                    Ok(role) => self.propose(
                        Command::RemoveQuota { role: role.clone() },
                        Then::QuotaRemoved { role, to },
                    ),
                    Err(e) => self.reply(Reply::Operator { to, result: Err(e) }),
                }
            }
            OperatorCall::State
            | OperatorCall::Agents
            | OperatorCall::Frameworks
            | OperatorCall::Tasks(_)
            | OperatorCall::Roles
            | OperatorCall::Leader
            | OperatorCall::Members
            | OperatorCall::Pending(_) => {
                let result = self.read(call);
                self.reply(Reply::Operator { to, result });
            }
        }
    }

    /// Drains or reactivates an agent; answered once committed.
    fn set_draining(&mut self, id: &str, draining: bool, to: Caller<OperatorReply>) {
        let known = known_id(id, "agent", AgentId::new, |id| {
            self.registry.agent(id).is_some()
        });
        let id = match known {
            Ok(id) => id,
            Err(e) => return self.reply(Reply::Operator { to, result: Err(e) }),
        };
        self.propose(
            Command::SetAgentDraining {
                id: id.clone(),
                draining,
            },
            Then::DrainingSet { id, draining, to },
        );
    }

    /// Removes a framework for an operator, as its own Teardown does;
    /// answered once the removal is committed.
    fn teardown_by_operator(&mut self, id: &str, to: Caller<OperatorReply>) {
        let known = known_id(id, "framework", FrameworkId::new, |id| {
            self.registry.framework(id).is_some()
        });
        let id = match known {
            Ok(id) => id,
            Err(e) => return self.reply(Reply::Operator { to, result: Err(e) }),
        };
        info!(framework = %id, "framework torn down by an operator");
        self.remove_framework(&id, "OPERATOR_TEARDOWN", RemovalReply::Operator(to));
    }

    /// An agent's draining flag is committed: stop or resume offering it.
    pub(super) fn draining_changed(&mut self, id: &AgentId, draining: bool) {
        if draining {
            self.allocator.deactivate_agent(id);
            let now = self.now();
            for offer in self.offers.remove_agent(id) {
                self.allocator.recover(
                    &offer.agent,
                    &offer.framework,
                    &offer.role,
                    &offer.resources,
                    None,
                    now,
                );
                self.send_event(
                    &offer.framework.clone(),
                    pb::event::Event::Rescind(pb::Rescind {
                        offer_id: offer.id.to_string(),
                    }),
                );
            }
        } else {
            self.allocator.activate_agent(id);
            self.allocation_dirty = true;
        }
    }
}

/// The id an operator call names: INVALID_ARGUMENT when it is not a valid
/// id (empty included), NOT_FOUND when the registry does not know it.
fn known_id<T: std::fmt::Display>(
    raw: &str,
    kind: &str,
    parse: impl FnOnce(String) -> Result<T, berth_scheduler_core::IdError>,
    known: impl FnOnce(&T) -> bool,
) -> Result<T, CallError> {
    let id = parse(raw.to_string()).map_err(|e| CallError::invalid_argument(e.to_string()))?;
    if known(&id) {
        Ok(id)
    } else {
        Err(CallError::not_found(format!(
            "unknown {kind} {}",
            quoted(&id.to_string())
        )))
    }
}

/// Validates a `SetQuota` request: its role and a quota the allocator
/// accepts (a rejected quota is not logged).
fn validate_quota(req: &pb::SetQuotaRequest) -> Result<(Role, Quota), CallError> {
    let role =
        Role::new(req.role.clone()).map_err(|e| CallError::invalid_argument(e.to_string()))?;
    let guarantee = resources_from_proto_opt(req.guarantee.as_ref())
        .map_err(|e| CallError::invalid_argument(format!("guarantee: {e}")))?;
    let limit = req
        .limit
        .as_ref()
        .map(resources_from_proto)
        .transpose()
        .map_err(|e| CallError::invalid_argument(format!("limit: {e}")))?;
    let quota = Quota { guarantee, limit };
    let mut probe = Allocator::new(AllocatorConfig::default());
    probe
        .set_quota(role.clone(), quota.clone())
        .map_err(|e| CallError::invalid_argument(e.to_string()))?;
    Ok((role, quota))
}
