//! What operators see: leader, members, agents, frameworks, tasks, roles.

use super::*;

impl Core {
    pub(super) fn leader(&self) -> pb::LeaderInfo {
        let leader = self.raft_leader();
        pb::LeaderInfo {
            master_id: if self.leading.is_some() {
                self.master_id.clone()
            } else {
                String::new()
            },
            address: leader
                .and_then(|id| self.members.get(&id).cloned())
                .unwrap_or_default(),
            raft_id: leader.unwrap_or(0),
            term: self.raft_status.borrow().term,
            leading_since: if self.leading.is_some() {
                ms_to_secs(self.leading_since_ms)
            } else {
                0.0
            },
        }
    }

    pub(super) fn members_view(&self) -> pb::MemberList {
        let st = self.raft_status.borrow().clone();
        let mut members: Vec<pb::MemberView> = st
            .voters
            .iter()
            .map(|id| (*id, false))
            .chain(st.learners.iter().map(|id| (*id, true)))
            .map(|(id, learner)| pb::MemberView {
                id,
                address: self.members.get(&id).cloned().unwrap_or_default(),
                role: if learner {
                    "LEARNER"
                } else if id == st.leader_id {
                    "LEADER"
                } else {
                    "FOLLOWER"
                }
                .into(),
                last_heard_at: if id == st.id {
                    0.0
                } else {
                    self.heard.get(id).map_or(0.0, system_time_secs)
                },
                index: if id == st.id {
                    self.applied_index
                } else {
                    st.matched
                        .iter()
                        .find(|(m, _)| *m == id)
                        .map_or(0, |(_, index)| *index)
                },
            })
            .collect();
        members.sort_by_key(|m| m.id);
        pb::MemberList {
            members,
            leader_id: st.leader_id,
            term: st.term,
            answered_by: st.id,
        }
    }

    pub(super) fn agent_views(&self) -> Vec<pb::AgentView> {
        let mut offered: HashMap<&AgentId, Resources> = HashMap::new();
        for fw in self.frameworks.keys() {
            for o in self.offers.offers_of(fw) {
                *offered.entry(&o.agent).or_default() += o.resources.total();
            }
        }
        self.registry
            .agents()
            .map(|a| pb::AgentView {
                id: a.id.to_string(),
                info: Some(a.to_info()),
                state: if a.unreachable_since_ms.is_some() {
                    "UNREACHABLE"
                } else if a.draining {
                    "DRAINING"
                } else {
                    "ACTIVE"
                }
                .into(),
                connected: self.agents.contains_key(&a.id),
                total: Some(resources_to_proto(&a.total())),
                used: Some(resources_to_proto(&self.registry.agent_used(&a.id))),
                offered: Some(resources_to_proto(
                    &offered.get(&a.id).cloned().unwrap_or_default(),
                )),
                task_count: u32::try_from(self.registry.tasks_on(&a.id).count())
                    .unwrap_or(u32::MAX),
                registered_at: ms_to_secs(a.registered_at_ms),
                connected_at: self
                    .agents
                    .get(&a.id)
                    .map_or(0.0, |c| ms_to_secs(c.connected_at_ms)),
            })
            .collect()
    }

    pub(super) fn framework_views(&self) -> Vec<pb::FrameworkView> {
        self.registry
            .frameworks()
            .map(|f| {
                let used = self
                    .registry
                    .tasks_of(&f.id)
                    .fold(Resources::empty(), |acc, t| acc + t.allocated.total());
                let offered = self
                    .offers
                    .offers_of(&f.id)
                    .iter()
                    .fold(Resources::empty(), |acc, o| acc + o.resources.total());
                pb::FrameworkView {
                    info: Some(f.to_info()),
                    connected: self.frameworks.contains_key(&f.id),
                    disconnected_at: f.disconnected_at_ms.map_or(0.0, ms_to_secs),
                    used: Some(resources_to_proto(&used)),
                    offered: Some(resources_to_proto(&offered)),
                    task_count: u32::try_from(self.registry.tasks_of(&f.id).count())
                        .unwrap_or(u32::MAX),
                    registered_at: ms_to_secs(f.registered_at_ms),
                    connected_at: self
                        .frameworks
                        .get(&f.id)
                        .map_or(0.0, |c| ms_to_secs(c.connected_at_ms)),
                }
            })
            .collect()
    }

    pub(super) fn task_views(
        &self,
        framework: Option<&FrameworkId>,
        completed: bool,
    ) -> Vec<pb::TaskView> {
        let keep = |t: &&TaskRecord| framework.is_none_or(|f| &t.framework == f);
        let active = self.registry.tasks().filter(keep);
        let done = self.registry.completed().filter(keep).filter(|_| completed);
        active
            .chain(done)
            .map(|t| {
                let info = t.task_info();
                pb::TaskView {
                    task_id: t.id.to_string(),
                    framework_id: t.framework.to_string(),
                    agent_id: t.agent.to_string(),
                    name: info.name,
                    state: t.state,
                    resources: Some(resources_to_proto(&t.allocated.total())),
                    status: Some(t.last_status()),
                    agent_address: self
                        .registry
                        .agent(&t.agent)
                        .map(|a| a.address.clone())
                        .unwrap_or_default(),
                    role: t.role.to_string(),
                    launched_at: ms_to_secs(t.launched_at_ms),
                    running_at: t.running_at_ms.map_or(0.0, ms_to_secs),
                    ended_at: t.ended_at_ms.map_or(0.0, ms_to_secs),
                }
            })
            .collect()
    }

    pub(super) fn role_views(&self) -> Vec<pb::RoleView> {
        if self.leading.is_none() {
            return self.registry_role_views();
        }
        self.allocator
            .roles()
            .into_iter()
            .map(|r| pb::RoleView {
                name: r.role.to_string(),
                weight: r.weight.to_f64(),
                guarantee: r.quota.as_ref().map(|q| resources_to_proto(&q.guarantee)),
                limit: r
                    .quota
                    .as_ref()
                    .and_then(|q| q.limit.as_ref())
                    .map(resources_to_proto),
                allocated: Some(resources_to_proto(&r.allocated)),
                frameworks: r.frameworks.iter().map(ToString::to_string).collect(),
            })
            .collect()
    }

    /// Roles as the registry alone knows them: what a follower (which runs
    /// no allocator) answers a stale read with. Allocated is what tasks use;
    /// followers hold no offers.
    fn registry_role_views(&self) -> Vec<pb::RoleView> {
        let mut roles: BTreeMap<Role, (Resources, Vec<String>)> = BTreeMap::new();
        for role in self
            .registry
            .weights()
            .keys()
            .chain(self.registry.quotas().keys())
        {
            roles.entry(role.clone()).or_default();
        }
        for f in self.registry.frameworks() {
            for role in &f.roles {
                roles
                    .entry(role.clone())
                    .or_default()
                    .1
                    .push(f.id.to_string());
            }
        }
        for t in self.registry.tasks() {
            let entry = roles.entry(t.role.clone()).or_default();
            entry.0 = entry.0.clone() + t.allocated.total();
        }
        roles
            .into_iter()
            .map(|(role, (allocated, frameworks))| {
                let quota = self.registry.quotas().get(&role);
                pb::RoleView {
                    weight: self
                        .registry
                        .weights()
                        .get(&role)
                        .map_or(1.0, |w| ms_to_secs(*w)),
                    guarantee: quota.map(|q| resources_to_proto(&q.guarantee)),
                    limit: quota.and_then(|q| q.limit.as_ref()).map(resources_to_proto),
                    allocated: Some(resources_to_proto(&allocated)),
                    frameworks,
                    name: role.to_string(),
                }
            })
            .collect()
    }
}

/// Seconds since the Unix epoch of `t` (0 for a time before it).
fn system_time_secs(t: SystemTime) -> f64 {
    t.duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}
