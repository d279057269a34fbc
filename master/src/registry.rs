//! The registry: the master's durable state machine.
//!
//! Every durable change of cluster state is a [`Command`]. The master appends
//! a command to the log (see [`crate::store`]) and applies it with
//! [`Registry::apply`]; a command that [`Registry::apply`] refuses changes
//! nothing and is never logged. Applying is deterministic — commands carry
//! their own timestamps and the registry reads no clock and draws no random
//! numbers — so the same log always yields the same registry. That is the
//! property Raft replication needs: followers apply the same commands.
//!
//! [`Effects`] tell the caller (the leader) what follows from a command:
//! master-generated status updates to forward and resources to return to the
//! allocator. Followers ignore them.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use berth_proto as pb;
use berth_scheduler_core::{AgentId, Allocated, FrameworkId, Quota, Resources, Role, TaskId};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::ApplyError;

/// A framework as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FrameworkRecord {
    /// Framework id, assigned by the master.
    pub id: FrameworkId,
    /// Human-readable name.
    pub name: String,
    /// Roles it is subscribed to.
    pub roles: BTreeSet<Role>,
    /// How long it is kept after disconnecting, in milliseconds.
    pub failover_timeout_ms: u64,
    /// Whether it understands TASK_UNREACHABLE.
    pub partition_aware: bool,
    /// Where it runs.
    pub hostname: String,
    /// Unix milliseconds of the first subscription.
    pub registered_at_ms: u64,
    /// Unix milliseconds when its stream disconnected; `None` while
    /// connected. Recorded in the log so that the failover timeout keeps
    /// running across master restarts and leader changes.
    pub disconnected_at_ms: Option<u64>,
}

impl FrameworkRecord {
    /// The wire form of the framework's info.
    #[must_use]
    pub fn to_info(&self) -> pb::FrameworkInfo {
        pb::FrameworkInfo {
            id: self.id.to_string(),
            name: self.name.clone(),
            roles: self.roles.iter().map(ToString::to_string).collect(),
            failover_timeout_seconds: ms_to_secs(self.failover_timeout_ms),
            partition_aware: self.partition_aware,
            hostname: self.hostname.clone(),
        }
    }
}

/// An agent as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AgentRecord {
    /// Agent id, assigned by the master.
    pub id: AgentId,
    /// Hostname.
    pub hostname: String,
    /// Address of the agent's own API.
    pub address: String,
    /// Unreserved resources.
    pub unreserved: Resources,
    /// Static reservations by role.
    pub reserved: BTreeMap<Role, Resources>,
    /// Attributes.
    pub attributes: Vec<(String, String)>,
    /// Drained by an operator: no offers are made on it.
    pub draining: bool,
    /// Unix milliseconds of the first registration.
    pub registered_at_ms: u64,
    /// Unix milliseconds since when it is unreachable, if it is.
    pub unreachable_since_ms: Option<u64>,
}

impl AgentRecord {
    /// Everything the agent has, unreserved plus reserved.
    #[must_use]
    pub fn total(&self) -> Resources {
        self.reserved
            .values()
            .fold(self.unreserved.clone(), |acc, r| acc + r.clone())
    }

    /// The wire form of the agent's info.
    #[must_use]
    pub fn to_info(&self) -> pb::AgentInfo {
        pb::AgentInfo {
            hostname: self.hostname.clone(),
            address: self.address.clone(),
            resources: Some(pb::convert::resources_to_proto(&self.unreserved)),
            reserved: self
                .reserved
                .iter()
                .map(|(role, r)| (role.to_string(), pb::convert::resources_to_proto(r)))
                .collect(),
            attributes: self
                .attributes
                .iter()
                .map(|(name, value)| pb::Attribute {
                    name: name.clone(),
                    value: value.clone(),
                })
                .collect(),
        }
    }
}

/// A task as the registry keeps it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskRecord {
    /// Its framework.
    pub framework: FrameworkId,
    /// Task id.
    pub id: TaskId,
    /// The agent it runs on.
    pub agent: AgentId,
    /// The role its resources were allocated to.
    pub role: Role,
    /// The resources it holds on the agent, split into reserved and
    /// unreserved parts.
    pub allocated: Allocated,
    /// The `TaskInfo` as launched, protobuf-encoded.
    pub info: Vec<u8>,
    /// Latest state (a `pb::TaskState` value).
    pub state: i32,
    /// Latest status, protobuf-encoded (empty before the first update).
    pub status: Vec<u8>,
    /// Unix milliseconds of the launch.
    pub launched_at_ms: u64,
}

impl TaskRecord {
    /// The task's latest state.
    #[must_use]
    pub fn state(&self) -> pb::TaskState {
        pb::TaskState::try_from(self.state).unwrap_or(pb::TaskState::Unspecified)
    }

    /// The launched `TaskInfo` (default if the stored bytes do not decode,
    /// which they always do for records this registry wrote).
    #[must_use]
    pub fn task_info(&self) -> pb::TaskInfo {
        pb::TaskInfo::decode(self.info.as_slice()).unwrap_or_default()
    }

    /// The latest status, or a synthetic STAGING status before the first
    /// update.
    #[must_use]
    pub fn last_status(&self) -> pb::TaskStatus {
        if self.status.is_empty() {
            return pb::TaskStatus {
                task_id: self.id.to_string(),
                state: self.state,
                agent_id: self.agent.to_string(),
                source: pb::StatusSource::SourceMaster as i32,
                timestamp: ms_to_secs(self.launched_at_ms),
                ..Default::default()
            };
        }
        pb::TaskStatus::decode(self.status.as_slice()).unwrap_or_default()
    }
}

/// A durable change of cluster state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// A framework subscribed (new) or re-subscribed (known id): its info is
    /// replaced and it counts as connected.
    SubscribeFramework {
        /// The framework as it is now.
        record: FrameworkRecord,
    },
    /// A framework's stream ended; its failover timeout starts.
    DisconnectFramework {
        /// The framework.
        id: FrameworkId,
        /// Unix milliseconds.
        at_ms: u64,
    },
    /// A framework is removed (teardown, or failover timeout expired): its
    /// tasks become completed.
    RemoveFramework {
        /// The framework.
        id: FrameworkId,
        /// Unix milliseconds.
        at_ms: u64,
        /// Why, for the tasks' final status.
        reason: String,
    },
    /// An agent registered or re-registered. Tasks the registry has on it
    /// that the agent does not report are lost.
    RegisterAgent {
        /// The agent as it is now.
        record: AgentRecord,
        /// Tasks it reports, by framework, with their states, when it
        /// re-registers; `None` for a first registration.
        reported: Option<Vec<(FrameworkId, TaskId, i32)>>,
        /// Unix milliseconds.
        at_ms: u64,
    },
    /// An agent missed its pings: its tasks go TASK_UNREACHABLE
    /// (partition-aware frameworks) or TASK_LOST.
    MarkAgentUnreachable {
        /// The agent.
        id: AgentId,
        /// Unix milliseconds.
        at_ms: u64,
    },
    /// Drain (true) or reactivate (false) an agent.
    SetAgentDraining {
        /// The agent.
        id: AgentId,
        /// Whether it is draining.
        draining: bool,
    },
    /// Tasks launched on one agent from accepted offers.
    LaunchTasks {
        /// Their framework.
        framework: FrameworkId,
        /// Their agent.
        agent: AgentId,
        /// The tasks, in state TASK_STAGING.
        tasks: Vec<TaskRecord>,
    },
    /// A status update from an agent.
    UpdateTask {
        /// The task's framework.
        framework: FrameworkId,
        /// The task.
        task: TaskId,
        /// The status, protobuf-encoded.
        status: Vec<u8>,
    },
    /// Set a role's weight (milli-units; 1000 = 1.0).
    SetWeight {
        /// The role.
        role: Role,
        /// The weight in milli-units.
        weight_milli: u64,
    },
    /// Set a role's quota.
    SetQuota {
        /// The role.
        role: Role,
        /// The quota.
        quota: Quota,
    },
    /// Remove a role's quota.
    RemoveQuota {
        /// The role.
        role: Role,
    },
}

/// What follows from an applied command, for the leader to act on.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Effects {
    /// Master-generated status updates to forward to frameworks.
    pub updates: Vec<(FrameworkId, pb::TaskStatus)>,
    /// Resources no longer used by tasks, to return to the allocator.
    pub freed: Vec<(AgentId, FrameworkId, Role, Allocated)>,
    /// Tasks an agent reported that the registry does not know: to be
    /// killed (an agent never runs a task the registry does not know).
    pub unknown_tasks: Vec<(FrameworkId, TaskId)>,
}

/// The registry state.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Registry {
    frameworks: BTreeMap<FrameworkId, FrameworkRecord>,
    agents: BTreeMap<AgentId, AgentRecord>,
    tasks: BTreeMap<FrameworkId, BTreeMap<TaskId, TaskRecord>>,
    completed: VecDeque<TaskRecord>,
    weights: BTreeMap<Role, u64>,
    quotas: BTreeMap<Role, Quota>,
    max_completed: usize,
    /// Resources used by active tasks, per agent. Derived; rebuilt on load.
    #[serde(skip)]
    agent_used: BTreeMap<AgentId, Resources>,
}

impl Registry {
    /// An empty registry that keeps at most `max_completed` completed tasks.
    #[must_use]
    pub fn new(max_completed: usize) -> Self {
        Self {
            max_completed,
            ..Self::default()
        }
    }

    /// Changes how many completed tasks are kept (a configuration setting,
    /// not replicated state).
    pub fn set_max_completed(&mut self, max_completed: usize) {
        self.max_completed = max_completed;
        while self.completed.len() > self.max_completed {
            self.completed.pop_front();
        }
    }

    /// Rebuilds derived indexes after deserializing a snapshot.
    pub fn rebuild_indexes(&mut self) {
        self.agent_used.clear();
        for task in self.tasks.values().flat_map(BTreeMap::values) {
            *self.agent_used.entry(task.agent.clone()).or_default() += task.allocated.total();
        }
    }

    /// All frameworks.
    pub fn frameworks(&self) -> impl Iterator<Item = &FrameworkRecord> {
        self.frameworks.values()
    }

    /// One framework.
    #[must_use]
    pub fn framework(&self, id: &FrameworkId) -> Option<&FrameworkRecord> {
        self.frameworks.get(id)
    }

    /// All agents.
    pub fn agents(&self) -> impl Iterator<Item = &AgentRecord> {
        self.agents.values()
    }

    /// One agent.
    #[must_use]
    pub fn agent(&self, id: &AgentId) -> Option<&AgentRecord> {
        self.agents.get(id)
    }

    /// Active (not completed) tasks of all frameworks.
    pub fn tasks(&self) -> impl Iterator<Item = &TaskRecord> {
        self.tasks.values().flat_map(BTreeMap::values)
    }

    /// Active tasks of one framework.
    pub fn tasks_of(&self, framework: &FrameworkId) -> impl Iterator<Item = &TaskRecord> {
        self.tasks
            .get(framework)
            .into_iter()
            .flat_map(BTreeMap::values)
    }

    /// Active tasks on one agent.
    pub fn tasks_on<'a>(&'a self, agent: &'a AgentId) -> impl Iterator<Item = &'a TaskRecord> {
        self.tasks().filter(move |t| &t.agent == agent)
    }

    /// One active task.
    #[must_use]
    pub fn task(&self, framework: &FrameworkId, task: &TaskId) -> Option<&TaskRecord> {
        self.tasks.get(framework).and_then(|m| m.get(task))
    }

    /// Recently completed tasks, oldest first.
    pub fn completed(&self) -> impl Iterator<Item = &TaskRecord> {
        self.completed.iter()
    }

    /// A recently completed task, the latest with that id.
    #[must_use]
    pub fn completed_task(&self, framework: &FrameworkId, task: &TaskId) -> Option<&TaskRecord> {
        self.completed
            .iter()
            .rev()
            .find(|t| &t.framework == framework && &t.id == task)
    }

    /// Resources used by active tasks on an agent.
    #[must_use]
    pub fn agent_used(&self, agent: &AgentId) -> Resources {
        self.agent_used.get(agent).cloned().unwrap_or_default()
    }

    /// Role weights in milli-units.
    #[must_use]
    pub fn weights(&self) -> &BTreeMap<Role, u64> {
        &self.weights
    }

    /// Role quotas.
    #[must_use]
    pub fn quotas(&self) -> &BTreeMap<Role, Quota> {
        &self.quotas
    }

    /// Applies a command. On error nothing changed.
    ///
    /// # Errors
    /// [`ApplyError`] when the command breaks an invariant (unknown ids,
    /// duplicate tasks, an agent allocated beyond its resources).
    pub fn apply(&mut self, cmd: &Command) -> Result<Effects, ApplyError> {
        match cmd {
            Command::SubscribeFramework { record } => {
                let mut record = record.clone();
                if let Some(old) = self.frameworks.get(&record.id) {
                    record.registered_at_ms = old.registered_at_ms;
                }
                record.disconnected_at_ms = None;
                self.frameworks.insert(record.id.clone(), record);
                Ok(Effects::default())
            }
            Command::DisconnectFramework { id, at_ms } => {
                let fw = self
                    .frameworks
                    .get_mut(id)
                    .ok_or_else(|| ApplyError::UnknownFramework(id.to_string()))?;
                if fw.disconnected_at_ms.is_none() {
                    fw.disconnected_at_ms = Some(*at_ms);
                }
                Ok(Effects::default())
            }
            Command::RemoveFramework { id, at_ms, reason } => {
                self.remove_framework(id, *at_ms, reason)
            }
            Command::RegisterAgent {
                record,
                reported,
                at_ms,
            } => self.register_agent(record, reported.as_deref(), *at_ms),
            Command::MarkAgentUnreachable { id, at_ms } => self.mark_unreachable(id, *at_ms),
            Command::SetAgentDraining { id, draining } => {
                let agent = self
                    .agents
                    .get_mut(id)
                    .ok_or_else(|| ApplyError::UnknownAgent(id.to_string()))?;
                agent.draining = *draining;
                Ok(Effects::default())
            }
            Command::LaunchTasks {
                framework,
                agent,
                tasks,
            } => self.launch(framework, agent, tasks),
            Command::UpdateTask {
                framework,
                task,
                status,
            } => self.update_task(framework, task, status),
            Command::SetWeight { role, weight_milli } => {
                if *weight_milli == 0 {
                    return Err(ApplyError::Invalid("weight must be positive".into()));
                }
                self.weights.insert(role.clone(), *weight_milli);
                Ok(Effects::default())
            }
            Command::SetQuota { role, quota } => {
                self.quotas.insert(role.clone(), quota.clone());
                Ok(Effects::default())
            }
            Command::RemoveQuota { role } => {
                self.quotas.remove(role);
                Ok(Effects::default())
            }
        }
    }

    fn remove_framework(
        &mut self,
        id: &FrameworkId,
        at_ms: u64,
        reason: &str,
    ) -> Result<Effects, ApplyError> {
        if !self.frameworks.contains_key(id) {
            return Err(ApplyError::UnknownFramework(id.to_string()));
        }
        self.frameworks.remove(id);
        let mut effects = Effects::default();
        for (_, mut task) in self.tasks.remove(id).unwrap_or_default() {
            self.release(&task);
            effects.freed.push((
                task.agent.clone(),
                task.framework.clone(),
                task.role.clone(),
                task.allocated.clone(),
            ));
            let status = master_status(
                &task,
                pb::TaskState::TaskKilled,
                reason,
                "framework removed",
                at_ms,
            );
            task.state = status.state;
            task.status = status.encode_to_vec();
            self.push_completed(task);
        }
        Ok(effects)
    }

    fn register_agent(
        &mut self,
        record: &AgentRecord,
        reported: Option<&[(FrameworkId, TaskId, i32)]>,
        at_ms: u64,
    ) -> Result<Effects, ApplyError> {
        let mut record = record.clone();
        if let Some(old) = self.agents.get(&record.id) {
            record.registered_at_ms = old.registered_at_ms;
            record.draining = old.draining;
        }
        record.unreachable_since_ms = None;
        let id = record.id.clone();
        self.agents.insert(id.clone(), record);

        let mut effects = Effects::default();
        let reported: BTreeMap<(FrameworkId, TaskId), i32> = reported
            .unwrap_or_default()
            .iter()
            .map(|(f, t, s)| ((f.clone(), t.clone()), *s))
            .collect();
        // Tasks the registry has on this agent.
        let ours: Vec<(FrameworkId, TaskId)> = self
            .tasks_on(&id)
            .map(|t| (t.framework.clone(), t.id.clone()))
            .collect();
        for key in &ours {
            let Some(task) = self.tasks.get_mut(&key.0).and_then(|m| m.get_mut(&key.1)) else {
                continue;
            };
            match reported.get(key) {
                Some(&state) => {
                    let state =
                        pb::TaskState::try_from(state).unwrap_or(pb::TaskState::Unspecified);
                    let was = task.state();
                    if matches!(
                        was,
                        pb::TaskState::TaskUnreachable | pb::TaskState::TaskLost
                    ) && !state.is_terminal()
                    {
                        // Back from a partition: the task is running again.
                        let status = master_status(
                            task,
                            state,
                            "AGENT_REREGISTERED",
                            "agent re-registered",
                            at_ms,
                        );
                        task.state = status.state;
                        task.status = status.encode_to_vec();
                        effects.updates.push((key.0.clone(), status));
                    }
                }
                None => {
                    // The agent does not know the task: it is gone.
                    let Some(mut task) = self.tasks.get_mut(&key.0).and_then(|m| m.remove(&key.1))
                    else {
                        continue;
                    };
                    self.release(&task);
                    effects.freed.push((
                        task.agent.clone(),
                        task.framework.clone(),
                        task.role.clone(),
                        task.allocated.clone(),
                    ));
                    let status = master_status(
                        &task,
                        pb::TaskState::TaskLost,
                        "TASK_NOT_ON_AGENT",
                        "the agent re-registered without this task",
                        at_ms,
                    );
                    task.state = status.state;
                    task.status = status.encode_to_vec();
                    effects.updates.push((key.0.clone(), status));
                    self.push_completed(task);
                }
            }
        }
        for (f, t) in reported.keys() {
            if self.task(f, t).is_none() {
                effects.unknown_tasks.push((f.clone(), t.clone()));
            }
        }
        Ok(effects)
    }

    fn mark_unreachable(&mut self, id: &AgentId, at_ms: u64) -> Result<Effects, ApplyError> {
        let agent = self
            .agents
            .get_mut(id)
            .ok_or_else(|| ApplyError::UnknownAgent(id.to_string()))?;
        if agent.unreachable_since_ms.is_some() {
            return Ok(Effects::default());
        }
        agent.unreachable_since_ms = Some(at_ms);
        let mut effects = Effects::default();
        let partition_aware: BTreeMap<FrameworkId, bool> = self
            .frameworks
            .values()
            .map(|f| (f.id.clone(), f.partition_aware))
            .collect();
        for task in self.tasks.values_mut().flat_map(BTreeMap::values_mut) {
            if &task.agent != id {
                continue;
            }
            let state = if partition_aware
                .get(&task.framework)
                .copied()
                .unwrap_or(false)
            {
                pb::TaskState::TaskUnreachable
            } else {
                pb::TaskState::TaskLost
            };
            let status = master_status(
                task,
                state,
                "AGENT_UNREACHABLE",
                "agent missed its pings",
                at_ms,
            );
            task.state = status.state;
            task.status = status.encode_to_vec();
            effects.updates.push((task.framework.clone(), status));
        }
        Ok(effects)
    }

    fn launch(
        &mut self,
        framework: &FrameworkId,
        agent_id: &AgentId,
        tasks: &[TaskRecord],
    ) -> Result<Effects, ApplyError> {
        if !self.frameworks.contains_key(framework) {
            return Err(ApplyError::UnknownFramework(framework.to_string()));
        }
        let agent = self
            .agents
            .get(agent_id)
            .ok_or_else(|| ApplyError::UnknownAgent(agent_id.to_string()))?;
        let mut ids = BTreeSet::new();
        let mut need = Resources::empty();
        for t in tasks {
            if &t.framework != framework || &t.agent != agent_id {
                return Err(ApplyError::Invalid(format!(
                    "task {:?} names another framework or agent",
                    t.id.as_str()
                )));
            }
            if !ids.insert(t.id.clone()) || self.task(framework, &t.id).is_some() {
                return Err(ApplyError::DuplicateTask {
                    framework: framework.to_string(),
                    task: t.id.to_string(),
                });
            }
            need = need
                .checked_add(&t.allocated.total())
                .map_err(|e| ApplyError::Invalid(e.to_string()))?;
        }
        // Invariant: no agent is ever allocated beyond its resources.
        let total = agent.total();
        let used = self.agent_used(agent_id);
        let free = total.checked_sub(&used).unwrap_or_default();
        if !free.contains(&need) {
            return Err(ApplyError::Overcommit {
                agent: agent_id.to_string(),
                free: free.to_string(),
                need: need.to_string(),
            });
        }
        for t in tasks {
            *self.agent_used.entry(agent_id.clone()).or_default() += t.allocated.total();
            self.tasks
                .entry(framework.clone())
                .or_default()
                .insert(t.id.clone(), t.clone());
        }
        Ok(Effects::default())
    }

    fn update_task(
        &mut self,
        framework: &FrameworkId,
        task_id: &TaskId,
        status_bytes: &[u8],
    ) -> Result<Effects, ApplyError> {
        let status = pb::TaskStatus::decode(status_bytes)
            .map_err(|e| ApplyError::Invalid(format!("undecodable status: {e}")))?;
        let state = pb::TaskState::try_from(status.state)
            .map_err(|_| ApplyError::Invalid(format!("unknown task state {}", status.state)))?;
        let task = self
            .tasks
            .get_mut(framework)
            .and_then(|m| m.get_mut(task_id))
            .ok_or_else(|| ApplyError::Invalid(format!("unknown task {:?}", task_id.as_str())))?;
        task.state = state as i32;
        task.status = status_bytes.to_vec();
        let mut effects = Effects::default();
        if state.is_terminal() {
            let Some(task) = self
                .tasks
                .get_mut(framework)
                .and_then(|m| m.remove(task_id))
            else {
                return Ok(effects);
            };
            if self.tasks.get(framework).is_some_and(BTreeMap::is_empty) {
                self.tasks.remove(framework);
            }
            self.release(&task);
            effects.freed.push((
                task.agent.clone(),
                task.framework.clone(),
                task.role.clone(),
                task.allocated.clone(),
            ));
            self.push_completed(task);
        }
        Ok(effects)
    }

    fn release(&mut self, task: &TaskRecord) {
        if let Some(used) = self.agent_used.get_mut(&task.agent) {
            *used = used.saturating_sub(&task.allocated.total());
        }
    }

    fn push_completed(&mut self, task: TaskRecord) {
        self.completed.push_back(task);
        while self.completed.len() > self.max_completed {
            self.completed.pop_front();
        }
    }
}

/// A master-generated status (no uuid: needs no acknowledgement).
fn master_status(
    task: &TaskRecord,
    state: pb::TaskState,
    reason: &str,
    message: &str,
    at_ms: u64,
) -> pb::TaskStatus {
    let last = task.last_status();
    pb::TaskStatus {
        task_id: task.id.to_string(),
        state: state as i32,
        message: message.to_string(),
        reason: reason.to_string(),
        source: pb::StatusSource::SourceMaster as i32,
        agent_id: task.agent.to_string(),
        exit_code: None,
        uuid: Vec::new(),
        timestamp: ms_to_secs(at_ms),
        healthy: last.healthy,
    }
}

/// Milliseconds to fractional seconds.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn ms_to_secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}
