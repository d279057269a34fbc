//! The registry: the master's durable state machine.
//!
//! Every durable change of cluster state is a [`Command`]. The leader's
//! core checks a command against the registry ([`Registry::check`]: a
//! command it refuses is never proposed), proposes it to the Raft log
//! (`crate::core`, `crate::raft`), and every master applies it once
//! committed with [`Registry::apply`]. A command that passed the check can
//! still be refused when applied (a racing command got there first); the
//! refusal changes nothing, on every master alike. Applying is
//! deterministic — commands carry
//! their own timestamps and the registry reads no clock and draws no random
//! numbers — so the same log always yields the same registry. That is the
//! property Raft replication needs: followers apply the same commands.
//!
//! [`Effects`] tell the caller (the leader) what follows from a command:
//! master-generated status updates to forward and resources to return to the
//! allocator. Followers ignore them.
//!
//! Formats: commands travel in the Raft log (inside a versioned entry, see
//! [`crate::entry`], whose docs say how to add a command or a field) and
//! the registry in snapshots, both postcard-encoded. A snapshot starts with
//! [`SNAPSHOT_MAGIC`] and a version byte; one without them is the first
//! format (before task times) and is read through [`legacy`]. A command
//! whose shape changes gets a new variant at the end of [`Command`]; the
//! old one stays, at its place, for the entries already in logs
//! (`LaunchTasksV0`). Golden files in `master/testdata/` hold entries and a
//! snapshot of every version.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use berth_proto as pb;
use berth_scheduler_core::{
    AgentId, Allocated, FrameworkId, Quota, Resources, Role, TaskId, quoted,
};
use prost::Message;
use serde::{Deserialize, Serialize};

use crate::error::{ApplyError, SnapshotError};

pub mod kv;

use self::kv::{KvChange, KvStore, Txn};

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
            create: false,
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
    /// Unix milliseconds of its first TASK_RUNNING; `None` before.
    pub running_at_ms: Option<u64>,
    /// Unix milliseconds when it became a completed task; `None` while it
    /// is active.
    pub ended_at_ms: Option<u64>,
    /// Whether its agent ever reported a status of it. A launch no agent
    /// reported may never have reached one (its `RunTask` was lost with a
    /// leader that died, or with a link that was cut); when its agent
    /// registers again without it, it is sent again rather than lost,
    /// whatever the master said of it meanwhile (TASK_UNREACHABLE).
    pub reported: bool,
}

impl TaskRecord {
    /// Notes the task's first TASK_RUNNING, at `at_ms`.
    fn reached(&mut self, state: pb::TaskState, at_ms: u64) {
        if state == pb::TaskState::TaskRunning && self.running_at_ms.is_none() {
            self.running_at_ms = Some(at_ms);
        }
    }

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
                source: pb::StatusSource::Master as i32,
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
    /// Changes nothing. A new leader commits one to learn that every entry
    /// of earlier terms is applied before it serves.
    Noop,
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
        /// Why, for the tasks' final status: the short name of a
        /// `pb::TaskReason` (`"FRAMEWORK_TEARDOWN"`; see
        /// `TaskReason::short_name`).
        reason: String,
    },
    /// An agent registered or re-registered. Tasks the registry has on it
    /// that the agent does not report are lost, except launches no agent
    /// ever reported that still fit on it: those are sent again
    /// ([`Effects::relaunch`]).
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
    /// [`Command::LaunchTasks`] as logs written before task times hold
    /// it; read (as a launch of those tasks), never written.
    LaunchTasksV0 {
        /// Their framework.
        framework: FrameworkId,
        /// Their agent.
        agent: AgentId,
        /// The tasks, in state TASK_STAGING.
        tasks: Vec<legacy::TaskRecordV0>,
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
    /// Tasks launched on one agent from accepted offers.
    LaunchTasks {
        /// Their framework.
        framework: FrameworkId,
        /// Their agent.
        agent: AgentId,
        /// The tasks, in state TASK_STAGING.
        tasks: Vec<TaskRecord>,
    },
    /// The API addresses of the masters, by Raft id, as the leader knows
    /// them. Replicated (and so in snapshots) so that a master that joins,
    /// or restarts after the entry that added a member was compacted away,
    /// knows where every member listens.
    RecordMembers {
        /// Raft id to `host:port`.
        members: BTreeMap<u64, String>,
    },
    /// A transaction on the frameworks' key-value store ([`kv`]).
    KvTxn {
        /// The transaction.
        txn: Txn,
    },
    /// Lease `name` of `namespace` goes to `holder` with the next epoch,
    /// if its epoch is still `expect_epoch` (the leader found it free or
    /// expired at that epoch).
    KvLeaseGrant {
        /// The namespace.
        namespace: String,
        /// The lease.
        name: String,
        /// The new holder.
        holder: String,
        /// The time to live the holder asked for, in milliseconds.
        ttl_ms: u64,
        /// The epoch the leader saw.
        expect_epoch: u64,
    },
    /// Lease `name` of `namespace`, held at `epoch`, is free again
    /// (released, or expired in the leader's view).
    KvLeaseRevoke {
        /// The namespace.
        namespace: String,
        /// The lease.
        name: String,
        /// The epoch it was held at.
        epoch: u64,
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
    /// Launched tasks that no agent ever reported and that the agent
    /// re-registering does not have: their `RunTask` was lost on the way
    /// (a leader that died right after committing the launch), so the
    /// leader sends it again instead of losing an acknowledged launch.
    pub relaunch: Vec<(FrameworkId, TaskId)>,
    /// Changes of the key-value store, for its watchers (every master
    /// tells its own).
    pub kv: Vec<KvChange>,
}

/// The registry state.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Registry {
    frameworks: BTreeMap<FrameworkId, FrameworkRecord>,
    agents: BTreeMap<AgentId, AgentRecord>,
    tasks: BTreeMap<FrameworkId, BTreeMap<TaskId, TaskRecord>>,
    completed: VecDeque<TaskRecord>,
    weights: BTreeMap<Role, u64>,
    quotas: BTreeMap<Role, Quota>,
    /// The masters' API addresses by Raft id (see
    /// [`Command::RecordMembers`]); members added at run time enter with
    /// their configuration change, removed ones leave with theirs.
    members: BTreeMap<u64, String>,
    /// The frameworks' key-value store (snapshot version 2).
    kv: KvStore,
    max_completed: usize,
    /// Resources used by active tasks, per agent. Derived; rebuilt on load.
    #[serde(skip)]
    agent_used: BTreeMap<AgentId, Resources>,
    /// How many times each (framework, task) id is in `completed`.
    /// Derived; rebuilt on load.
    #[serde(skip)]
    completed_ids: std::collections::HashMap<(FrameworkId, TaskId), u32>,
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
        self.trim_completed();
    }

    /// Rebuilds derived indexes after deserializing a snapshot.
    pub fn rebuild_indexes(&mut self) {
        self.agent_used.clear();
        for task in self.tasks.values().flat_map(BTreeMap::values) {
            *self.agent_used.entry(task.agent.clone()).or_default() += task.allocated.total();
        }
        self.completed_ids.clear();
        for task in &self.completed {
            *self
                .completed_ids
                .entry((task.framework.clone(), task.id.clone()))
                .or_default() += 1;
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

    /// Whether `cmd` would apply: the same checks [`Registry::apply`] makes,
    /// without changing anything. The leader checks before it proposes, so
    /// a refused call appends nothing to the log.
    ///
    /// # Errors
    /// The [`ApplyError`] that `apply` would return.
    pub fn check(&self, cmd: &Command) -> Result<(), ApplyError> {
        let framework = |id: &FrameworkId| {
            self.frameworks
                .contains_key(id)
                .then_some(())
                .ok_or_else(|| ApplyError::UnknownFramework(id.to_string()))
        };
        let agent = |id: &AgentId| {
            self.agents
                .contains_key(id)
                .then_some(())
                .ok_or_else(|| ApplyError::UnknownAgent(id.to_string()))
        };
        match cmd {
            Command::Noop
            | Command::SubscribeFramework { .. }
            | Command::SetQuota { .. }
            | Command::RemoveQuota { .. }
            | Command::RecordMembers { .. } => Ok(()),
            Command::DisconnectFramework { id, .. } | Command::RemoveFramework { id, .. } => {
                framework(id)
            }
            Command::RegisterAgent {
                record, reported, ..
            } => self.check_register(record, reported.as_deref()),
            Command::MarkAgentUnreachable { id, .. } | Command::SetAgentDraining { id, .. } => {
                agent(id)
            }
            Command::LaunchTasks {
                framework,
                agent,
                tasks,
            } => self.check_launch(framework, agent, tasks),
            Command::LaunchTasksV0 {
                framework,
                agent,
                tasks,
            } => self.check_launch(framework, agent, &legacy::records(tasks)),
            Command::UpdateTask {
                framework,
                task,
                status,
            } => {
                let status = pb::TaskStatus::decode(status.as_slice())
                    .map_err(|e| ApplyError::Invalid(format!("undecodable status: {e}")))?;
                pb::TaskState::try_from(status.state).map_err(|_| {
                    ApplyError::Invalid(format!("unknown task state {}", status.state))
                })?;
                self.task(framework, task).map(|_| ()).ok_or_else(|| {
                    ApplyError::Invalid(format!("unknown task {}", quoted(task.as_str())))
                })
            }
            Command::SetWeight { weight_milli, .. } => {
                if *weight_milli == 0 {
                    Err(ApplyError::Invalid("weight must be positive".into()))
                } else {
                    Ok(())
                }
            }
            Command::KvTxn { txn } => self.kv.check_txn(txn),
            Command::KvLeaseGrant {
                namespace,
                name,
                holder,
                ttl_ms,
                expect_epoch,
            } => self
                .kv
                .check_grant(namespace, name, holder, *ttl_ms, *expect_epoch),
            Command::KvLeaseRevoke {
                namespace,
                name,
                epoch,
            } => self.kv.check_revoke(namespace, name, *epoch),
        }
    }

    /// Applies a command. On error nothing changed.
    ///
    /// # Errors
    /// [`ApplyError`] when the command breaks an invariant (unknown ids,
    /// duplicate tasks, an agent allocated beyond its resources).
    pub fn apply(&mut self, cmd: &Command) -> Result<Effects, ApplyError> {
        match cmd {
            Command::Noop => Ok(Effects::default()),
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
            Command::LaunchTasksV0 {
                framework,
                agent,
                tasks,
            } => self.launch(framework, agent, &legacy::records(tasks)),
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
            Command::RecordMembers { members } => {
                self.members.clone_from(members);
                Ok(Effects::default())
            }
            Command::KvTxn { txn } => Ok(Effects {
                kv: self.kv.apply_txn(txn)?,
                ..Effects::default()
            }),
            Command::KvLeaseGrant {
                namespace,
                name,
                holder,
                ttl_ms,
                expect_epoch,
            } => Ok(Effects {
                kv: self
                    .kv
                    .grant(namespace, name, holder, *ttl_ms, *expect_epoch)?,
                ..Effects::default()
            }),
            Command::KvLeaseRevoke {
                namespace,
                name,
                epoch,
            } => Ok(Effects {
                kv: self.kv.revoke(namespace, name, *epoch)?,
                ..Effects::default()
            }),
        }
    }

    /// The frameworks' key-value store.
    #[must_use]
    pub fn kv(&self) -> &KvStore {
        &self.kv
    }

    /// The masters' API addresses by Raft id, as replicated.
    #[must_use]
    pub fn members(&self) -> &BTreeMap<u64, String> {
        &self.members
    }

    /// Follows a committed membership change: master `id` joined at
    /// `address` (`Some`), or left (`None`). Called by every master at the
    /// same point of the log, so the member list stays replicated state.
    pub fn member_changed(&mut self, id: u64, address: Option<&str>) {
        match address {
            Some(address) => {
                self.members.insert(id, address.to_owned());
            }
            None => {
                self.members.remove(&id);
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
            // The log keeps the reason's name; a name this master does not
            // know (from a newer one) is reported unspecified.
            let status = master_status(
                &task,
                pb::TaskState::TaskKilled,
                pb::TaskReason::from_short_name(reason).unwrap_or_default(),
                "framework removed",
                at_ms,
            );
            task.state = status.state;
            task.status = status.encode_to_vec();
            self.push_completed(task, at_ms);
        }
        Ok(effects)
    }

    /// Invariant: no agent is ever allocated beyond its resources. The tasks
    /// that stay on a re-registering agent must fit the resources it now
    /// reports, part by part (unreserved, and each role's reservation).
    fn check_register(
        &self,
        record: &AgentRecord,
        reported: Option<&[(FrameworkId, TaskId, i32)]>,
    ) -> Result<(), ApplyError> {
        let reported = reported_map(reported);
        let kept = self
            .tasks_on(&record.id)
            .filter(|t| reported.contains_key(&(t.framework.clone(), t.id.clone())));
        check_fits(record, kept)
    }

    fn register_agent(
        &mut self,
        record: &AgentRecord,
        reported: Option<&[(FrameworkId, TaskId, i32)]>,
        at_ms: u64,
    ) -> Result<Effects, ApplyError> {
        self.check_register(record, reported)?;
        let id = record.id.clone();
        let reported = reported_map(reported);
        // Tasks the registry has on this agent.
        let ours: Vec<(FrameworkId, TaskId)> = self
            .tasks_on(&id)
            .map(|t| (t.framework.clone(), t.id.clone()))
            .collect();

        // Launched tasks no agent ever reported (still STAGING, or marked
        // unreachable since) that the agent lacks never reached it: they are
        // sent again when they fit next to what it runs, and lost otherwise.
        let mut relaunch: BTreeSet<(FrameworkId, TaskId)> = BTreeSet::new();
        {
            let key_of = |t: &TaskRecord| (t.framework.clone(), t.id.clone());
            let mut kept: Vec<&TaskRecord> = self
                .tasks_on(&id)
                .filter(|t| reported.contains_key(&key_of(t)))
                .collect();
            for t in self.tasks_on(&id) {
                if reported.contains_key(&key_of(t)) || t.reported {
                    continue;
                }
                kept.push(t);
                if check_fits(record, kept.iter().copied()).is_ok() {
                    relaunch.insert(key_of(t));
                } else {
                    kept.pop();
                }
            }
        }

        let mut record = record.clone();
        if let Some(old) = self.agents.get(&record.id) {
            record.registered_at_ms = old.registered_at_ms;
            record.draining = old.draining;
        }
        record.unreachable_since_ms = None;
        self.agents.insert(id.clone(), record);

        let mut effects = Effects::default();
        for key in &ours {
            let Some(task) = self.tasks.get_mut(&key.0).and_then(|m| m.get_mut(&key.1)) else {
                continue;
            };
            match reported.get(key) {
                None if relaunch.contains(key) => effects.relaunch.push(key.clone()),
                Some(&state) => {
                    task.reported = true;
                    let state =
                        pb::TaskState::try_from(state).unwrap_or(pb::TaskState::Unspecified);
                    let was = task.state();
                    if matches!(
                        was,
                        pb::TaskState::TaskUnreachable | pb::TaskState::TaskLost
                    ) && !state.is_terminal()
                        && state != pb::TaskState::Unspecified
                    {
                        // Back from a partition: the task is running again.
                        let status = master_status(
                            task,
                            state,
                            pb::TaskReason::AgentReregistered,
                            "agent re-registered",
                            at_ms,
                        );
                        task.state = status.state;
                        task.status = status.encode_to_vec();
                        task.reached(state, at_ms);
                        effects.updates.push((key.0.clone(), status));
                    }
                }
                None => {
                    // The agent does not know the task: it is gone.
                    let Some(mut task) = self.remove_task(&key.0, &key.1) else {
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
                        pb::TaskReason::TaskNotOnAgent,
                        "the agent re-registered without this task",
                        at_ms,
                    );
                    task.state = status.state;
                    task.status = status.encode_to_vec();
                    effects.updates.push((key.0.clone(), status));
                    self.push_completed(task, at_ms);
                }
            }
        }
        // Tasks the agent runs that the registry does not have on this agent
        // (unknown, or recorded on another agent) are to be killed. Tasks
        // the agent already reports terminal need no kill.
        for ((f, t), state) in &reported {
            let terminal = pb::TaskState::try_from(*state).is_ok_and(pb::TaskState::is_terminal);
            if !terminal && self.task(f, t).is_none_or(|task| task.agent != id) {
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
                pb::TaskReason::AgentUnreachable,
                "agent missed its pings",
                at_ms,
            );
            task.state = status.state;
            task.status = status.encode_to_vec();
            effects.updates.push((task.framework.clone(), status));
        }
        Ok(effects)
    }

    fn check_launch(
        &self,
        framework: &FrameworkId,
        agent_id: &AgentId,
        tasks: &[TaskRecord],
    ) -> Result<(), ApplyError> {
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
                    "task {} names another framework or agent",
                    quoted(t.id.as_str())
                )));
            }
            // A recently completed task's id is refused too: a framework
            // that launches again a task whose first launch's answer it never
            // got must not run it twice if that launch did happen and the
            // task already ended.
            if !ids.insert(t.id.clone())
                || self.task(framework, &t.id).is_some()
                || self
                    .completed_ids
                    .contains_key(&(framework.clone(), t.id.clone()))
            {
                return Err(ApplyError::DuplicateTask {
                    framework: framework.to_string(),
                    task: t.id.to_string(),
                });
            }
            let wants = t.allocated.total();
            if !need.ports.intersection(&wants.ports).is_empty() {
                return Err(ApplyError::Invalid(format!(
                    "task {} claims ports another task of the launch claims",
                    quoted(t.id.as_str())
                )));
            }
            need = need
                .checked_add(&wants)
                .map_err(|e| ApplyError::Invalid(e.to_string()))?;
        }
        // Invariant: no agent is ever allocated beyond its resources.
        let total = agent.total();
        let used = self.agent_used(agent_id);
        let free = total.checked_sub(&used).unwrap_or_default();
        if !free.contains(&need) || !used.ports.intersection(&need.ports).is_empty() {
            return Err(ApplyError::Overcommit {
                agent: agent_id.to_string(),
                free: free.to_string(),
                need: need.to_string(),
            });
        }
        Ok(())
    }

    fn launch(
        &mut self,
        framework: &FrameworkId,
        agent_id: &AgentId,
        tasks: &[TaskRecord],
    ) -> Result<Effects, ApplyError> {
        self.check_launch(framework, agent_id, tasks)?;
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
            .ok_or_else(|| {
                ApplyError::Invalid(format!("unknown task {}", quoted(task_id.as_str())))
            })?;
        task.state = state as i32;
        task.status = status_bytes.to_vec();
        task.reported = true;
        // The update's own time (when the agent saw the change), so that
        // applying reads no clock; one without a usable time counts as at
        // the launch.
        let at_ms = secs_to_ms(status.timestamp).unwrap_or(task.launched_at_ms);
        task.reached(state, at_ms);
        let mut effects = Effects::default();
        if state.is_terminal() {
            let Some(task) = self.remove_task(framework, task_id) else {
                return Ok(effects);
            };
            self.release(&task);
            effects.freed.push((
                task.agent.clone(),
                task.framework.clone(),
                task.role.clone(),
                task.allocated.clone(),
            ));
            self.push_completed(task, at_ms);
        }
        Ok(effects)
    }

    /// Removes an active task, dropping its framework's map once empty.
    fn remove_task(&mut self, framework: &FrameworkId, task: &TaskId) -> Option<TaskRecord> {
        let map = self.tasks.get_mut(framework)?;
        let removed = map.remove(task);
        if map.is_empty() {
            self.tasks.remove(framework);
        }
        removed
    }

    fn release(&mut self, task: &TaskRecord) {
        if let Some(used) = self.agent_used.get_mut(&task.agent) {
            *used = used.saturating_sub(&task.allocated.total());
        }
    }

    /// Moves an ended task to the completed ones, with its end time.
    fn push_completed(&mut self, mut task: TaskRecord, at_ms: u64) {
        task.ended_at_ms.get_or_insert(at_ms);
        *self
            .completed_ids
            .entry((task.framework.clone(), task.id.clone()))
            .or_default() += 1;
        self.completed.push_back(task);
        self.trim_completed();
    }

    fn trim_completed(&mut self) {
        while self.completed.len() > self.max_completed {
            let Some(old) = self.completed.pop_front() else {
                break;
            };
            let key = (old.framework, old.id);
            if let Some(n) = self.completed_ids.get_mut(&key) {
                *n -= 1;
                if *n == 0 {
                    self.completed_ids.remove(&key);
                }
            }
        }
    }
}

/// Checks that `tasks` fit `agent`'s resources part by part: their
/// unreserved parts fit the unreserved pool, and the reserved parts of each
/// role fit that role's reservation; ports are claimed at most once.
fn check_fits<'a>(
    agent: &AgentRecord,
    tasks: impl Iterator<Item = &'a TaskRecord>,
) -> Result<(), ApplyError> {
    let mut unreserved = Resources::empty();
    let mut reserved: BTreeMap<&Role, Resources> = BTreeMap::new();
    let mut ports = Resources::empty().ports;
    for t in tasks {
        let total = t.allocated.total();
        if !ports.intersection(&total.ports).is_empty() {
            return Err(ApplyError::Invalid(format!(
                "task {} claims ports another task on agent {} claims",
                quoted(t.id.as_str()),
                quoted(agent.id.as_str())
            )));
        }
        ports = ports.union(&total.ports);
        let overflow = |e: berth_scheduler_core::ResourceError| ApplyError::Invalid(e.to_string());
        unreserved = unreserved
            .checked_add(&t.allocated.unreserved)
            .map_err(overflow)?;
        if !t.allocated.reserved.is_empty() {
            let r = reserved.entry(&t.role).or_default();
            *r = r.checked_add(&t.allocated.reserved).map_err(overflow)?;
        }
    }
    let overcommit = |free: &Resources, need: &Resources| ApplyError::Overcommit {
        agent: agent.id.to_string(),
        free: free.to_string(),
        need: need.to_string(),
    };
    if !agent.unreserved.contains(&unreserved) {
        return Err(overcommit(&agent.unreserved, &unreserved));
    }
    for (role, need) in reserved {
        let have = agent.reserved.get(role).cloned().unwrap_or_default();
        if !have.contains(&need) {
            return Err(overcommit(&have, &need));
        }
    }
    Ok(())
}

/// The tasks an agent reports, keyed by (framework, task).
fn reported_map(
    reported: Option<&[(FrameworkId, TaskId, i32)]>,
) -> BTreeMap<(FrameworkId, TaskId), i32> {
    reported
        .unwrap_or_default()
        .iter()
        .map(|(f, t, s)| ((f.clone(), t.clone()), *s))
        .collect()
}

/// A master-generated status (no uuid: needs no acknowledgement).
fn master_status(
    task: &TaskRecord,
    state: pb::TaskState,
    reason: pb::TaskReason,
    message: &str,
    at_ms: u64,
) -> pb::TaskStatus {
    let last = task.last_status();
    pb::TaskStatus {
        task_id: task.id.to_string(),
        state: state as i32,
        message: message.to_string(),
        reason: reason as i32,
        source: pb::StatusSource::Master as i32,
        agent_id: task.agent.to_string(),
        exit_code: None,
        uuid: Vec::new(),
        timestamp: ms_to_secs(at_ms),
        healthy: last.healthy,
        ports: last.ports,
        container_id: last.container_id,
        // Upload results come with the agent's terminal update only.
        outputs: Vec::new(),
    }
}

/// Milliseconds to fractional seconds.
#[must_use]
#[allow(clippy::cast_precision_loss)]
pub fn ms_to_secs(ms: u64) -> f64 {
    ms as f64 / 1000.0
}

/// Fractional seconds since the Unix epoch (a `TaskStatus.timestamp`) to
/// milliseconds; `None` when not a time after the epoch.
#[must_use]
#[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
pub fn secs_to_ms(secs: f64) -> Option<u64> {
    // Beyond year 275,000 (2^53 ms) a double loses whole milliseconds.
    (secs.is_finite() && secs > 0.0 && secs < 9.0e12).then(|| (secs * 1000.0).round() as u64)
}

/// How a registry snapshot starts, before its version byte.
pub const SNAPSHOT_MAGIC: &[u8] = b"\0berth-registry";

/// The version of the snapshots this registry writes: 2 added the
/// frameworks' key-value store, 1 task times (0 is the first format,
/// without magic or version).
pub const SNAPSHOT_VERSION: u8 = 2;

impl Registry {
    /// The registry as snapshot bytes: [`SNAPSHOT_MAGIC`],
    /// [`SNAPSHOT_VERSION`], then the postcard-encoded registry.
    ///
    /// # Errors
    /// When postcard cannot encode it.
    pub fn to_snapshot(&self) -> Result<Vec<u8>, postcard::Error> {
        let mut out = SNAPSHOT_MAGIC.to_vec();
        out.push(SNAPSHOT_VERSION);
        postcard::to_extend(self, out)
    }

    /// Reads snapshot bytes of any known version (indexes not rebuilt: see
    /// [`Registry::rebuild_indexes`]).
    ///
    /// # Errors
    /// [`SnapshotError`] when the bytes are not a snapshot this version of
    /// berth can read.
    pub fn from_snapshot(data: &[u8]) -> Result<Registry, SnapshotError> {
        match data.strip_prefix(SNAPSHOT_MAGIC) {
            Some([SNAPSHOT_VERSION, rest @ ..]) => {
                let registry: Registry = postcard::from_bytes(rest)?;
                registry.kv.verify().map_err(SnapshotError::Inconsistent)?;
                Ok(registry)
            }
            Some([1, rest @ ..]) => Ok(postcard::from_bytes::<legacy::RegistryV1>(rest)?.into()),
            Some([version, ..]) => Err(SnapshotError::Version(*version)),
            Some([]) => Err(SnapshotError::Version(0)),
            None => Ok(postcard::from_bytes::<legacy::RegistryV0>(data)?.into()),
        }
    }
}

/// Earlier formats, read and converted, never written.
pub mod legacy {
    use super::{
        AgentId, AgentRecord, Allocated, BTreeMap, Deserialize, FrameworkId, FrameworkRecord,
        KvStore, Quota, Registry, Role, Serialize, TaskId, TaskRecord, VecDeque,
    };

    /// A task before task times (snapshot version 0, `LaunchTasksV0`).
    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    #[allow(missing_docs)]
    pub struct TaskRecordV0 {
        pub framework: FrameworkId,
        pub id: TaskId,
        pub agent: AgentId,
        pub role: Role,
        pub allocated: Allocated,
        pub info: Vec<u8>,
        pub state: i32,
        pub status: Vec<u8>,
        pub launched_at_ms: u64,
    }

    impl From<TaskRecordV0> for TaskRecord {
        fn from(t: TaskRecordV0) -> TaskRecord {
            // The first format did not say; a task with a status was seen
            // by its agent as far as it can tell (the old rule).
            let reported = !t.status.is_empty();
            TaskRecord {
                framework: t.framework,
                id: t.id,
                agent: t.agent,
                role: t.role,
                allocated: t.allocated,
                info: t.info,
                state: t.state,
                status: t.status,
                launched_at_ms: t.launched_at_ms,
                running_at_ms: None,
                ended_at_ms: None,
                reported,
            }
        }
    }

    /// Version 0 tasks as today's records.
    pub(super) fn records(tasks: &[TaskRecordV0]) -> Vec<TaskRecord> {
        tasks.iter().cloned().map(TaskRecord::from).collect()
    }

    /// A registry snapshot of version 0.
    #[derive(Deserialize)]
    pub(super) struct RegistryV0 {
        frameworks: BTreeMap<FrameworkId, FrameworkRecord>,
        agents: BTreeMap<AgentId, AgentRecord>,
        tasks: BTreeMap<FrameworkId, BTreeMap<TaskId, TaskRecordV0>>,
        completed: VecDeque<TaskRecordV0>,
        weights: BTreeMap<Role, u64>,
        quotas: BTreeMap<Role, Quota>,
        max_completed: usize,
    }

    /// A registry snapshot of version 1: before the key-value store.
    #[derive(Deserialize)]
    pub(super) struct RegistryV1 {
        frameworks: BTreeMap<FrameworkId, FrameworkRecord>,
        agents: BTreeMap<AgentId, AgentRecord>,
        tasks: BTreeMap<FrameworkId, BTreeMap<TaskId, TaskRecord>>,
        completed: VecDeque<TaskRecord>,
        weights: BTreeMap<Role, u64>,
        quotas: BTreeMap<Role, Quota>,
        members: BTreeMap<u64, String>,
        max_completed: usize,
    }

    impl From<RegistryV1> for Registry {
        fn from(r: RegistryV1) -> Registry {
            Registry {
                frameworks: r.frameworks,
                agents: r.agents,
                tasks: r.tasks,
                completed: r.completed,
                weights: r.weights,
                quotas: r.quotas,
                members: r.members,
                kv: KvStore::default(),
                max_completed: r.max_completed,
                agent_used: BTreeMap::new(),
                completed_ids: std::collections::HashMap::new(),
            }
        }
    }

    impl From<RegistryV0> for Registry {
        fn from(r: RegistryV0) -> Registry {
            Registry {
                frameworks: r.frameworks,
                agents: r.agents,
                tasks: r
                    .tasks
                    .into_iter()
                    .map(|(f, tasks)| {
                        (f, tasks.into_iter().map(|(id, t)| (id, t.into())).collect())
                    })
                    .collect(),
                completed: r.completed.into_iter().map(TaskRecord::from).collect(),
                weights: r.weights,
                quotas: r.quotas,
                members: BTreeMap::new(),
                kv: KvStore::default(),
                max_completed: r.max_completed,
                agent_used: BTreeMap::new(),
                completed_ids: std::collections::HashMap::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ApplyError;

    fn fw(s: &str) -> FrameworkId {
        FrameworkId::new(s).unwrap()
    }
    fn agent_id(s: &str) -> AgentId {
        AgentId::new(s).unwrap()
    }
    fn tid(s: &str) -> TaskId {
        TaskId::new(s).unwrap()
    }
    fn res(s: &str) -> Resources {
        s.parse().unwrap()
    }

    fn subscribe(id: &str, partition_aware: bool) -> Command {
        Command::SubscribeFramework {
            record: FrameworkRecord {
                id: fw(id),
                name: id.into(),
                roles: [Role::default()].into(),
                failover_timeout_ms: 1000,
                partition_aware,
                hostname: "h".into(),
                registered_at_ms: 1,
                disconnected_at_ms: None,
            },
        }
    }

    fn agent_record(id: &str, resources: &str) -> AgentRecord {
        AgentRecord {
            id: agent_id(id),
            hostname: id.into(),
            address: format!("{id}:5051"),
            unreserved: res(resources),
            reserved: BTreeMap::new(),
            attributes: Vec::new(),
            draining: false,
            registered_at_ms: 1,
            unreachable_since_ms: None,
        }
    }

    fn register(
        id: &str,
        resources: &str,
        reported: Option<Vec<(&str, &str, pb::TaskState)>>,
    ) -> Command {
        Command::RegisterAgent {
            record: agent_record(id, resources),
            reported: reported.map(|r| {
                r.into_iter()
                    .map(|(f, t, s)| (fw(f), tid(t), s as i32))
                    .collect()
            }),
            at_ms: 5,
        }
    }

    fn task(framework: &str, id: &str, agent: &str, resources: &str) -> TaskRecord {
        TaskRecord {
            framework: fw(framework),
            id: tid(id),
            agent: agent_id(agent),
            role: Role::default(),
            allocated: Allocated {
                unreserved: res(resources),
                reserved: Resources::empty(),
            },
            info: Vec::new(),
            state: pb::TaskState::TaskStaging as i32,
            status: Vec::new(),
            launched_at_ms: 2,
            running_at_ms: None,
            ended_at_ms: None,
            reported: false,
        }
    }

    fn launch(framework: &str, agent: &str, tasks: Vec<TaskRecord>) -> Command {
        Command::LaunchTasks {
            framework: fw(framework),
            agent: agent_id(agent),
            tasks,
        }
    }

    fn update(framework: &str, task: &str, state: pb::TaskState) -> Command {
        update_at(framework, task, state, 0.0)
    }

    /// An update with its timestamp (seconds).
    fn update_at(framework: &str, task: &str, state: pb::TaskState, at: f64) -> Command {
        Command::UpdateTask {
            framework: fw(framework),
            task: tid(task),
            status: pb::TaskStatus {
                task_id: task.into(),
                state: state as i32,
                uuid: vec![7; 16],
                timestamp: at,
                ..Default::default()
            }
            .encode_to_vec(),
        }
    }

    /// f1 subscribed; a1 (cpus:4;mem:1024) registered; t1 (cpus:1;mem:128)
    /// and t2 (cpus:2;mem:256) running on it.
    fn cluster() -> Registry {
        let mut r = Registry::new(10);
        r.apply(&subscribe("f1", false)).unwrap();
        r.apply(&register("a1", "cpus:4;mem:1024", None)).unwrap();
        r.apply(&launch(
            "f1",
            "a1",
            vec![
                task("f1", "t1", "a1", "cpus:1;mem:128"),
                task("f1", "t2", "a1", "cpus:2;mem:256"),
            ],
        ))
        .unwrap();
        r
    }

    /// Applies `cmd`, expects it refused, and checks nothing changed.
    fn refused(r: &mut Registry, cmd: &Command) -> ApplyError {
        let before = r.clone();
        let err = r.apply(cmd).unwrap_err();
        assert_eq!(*r, before, "refused {cmd:?} changed the registry");
        err
    }

    #[test]
    fn refused_commands_change_nothing() {
        let mut r = cluster();
        // Beyond the agent's resources (1 cpu is left).
        let e = refused(
            &mut r,
            &launch("f1", "a1", vec![task("f1", "t3", "a1", "cpus:2;mem:1")]),
        );
        assert!(matches!(e, ApplyError::Overcommit { .. }), "{e}");
        // Two tasks that fit alone but not together.
        let e = refused(
            &mut r,
            &launch(
                "f1",
                "a1",
                vec![
                    task("f1", "t3", "a1", "cpus:0.6;mem:1"),
                    task("f1", "t4", "a1", "cpus:0.6;mem:1"),
                ],
            ),
        );
        assert!(matches!(e, ApplyError::Overcommit { .. }), "{e}");
        // Duplicate task ids, in the launch or with an active task.
        let e = refused(
            &mut r,
            &launch(
                "f1",
                "a1",
                vec![
                    task("f1", "t3", "a1", "cpus:0.1"),
                    task("f1", "t3", "a1", "cpus:0.1"),
                ],
            ),
        );
        assert!(matches!(e, ApplyError::DuplicateTask { .. }), "{e}");
        let e = refused(
            &mut r,
            &launch("f1", "a1", vec![task("f1", "t1", "a1", "cpus:0.1")]),
        );
        assert!(matches!(e, ApplyError::DuplicateTask { .. }), "{e}");
        // Unknown ids.
        refused(
            &mut r,
            &launch("fx", "a1", vec![task("fx", "t9", "a1", "cpus:0.1")]),
        );
        refused(
            &mut r,
            &launch("f1", "ax", vec![task("f1", "t9", "ax", "cpus:0.1")]),
        );
        refused(
            &mut r,
            &launch("f1", "a1", vec![task("f1", "t9", "a2", "cpus:0.1")]),
        );
        refused(&mut r, &update("f1", "nope", pb::TaskState::TaskRunning));
        refused(
            &mut r,
            &Command::RemoveFramework {
                id: fw("fx"),
                at_ms: 1,
                reason: "x".into(),
            },
        );
        refused(
            &mut r,
            &Command::DisconnectFramework {
                id: fw("fx"),
                at_ms: 1,
            },
        );
        refused(
            &mut r,
            &Command::MarkAgentUnreachable {
                id: agent_id("ax"),
                at_ms: 1,
            },
        );
        refused(
            &mut r,
            &Command::SetAgentDraining {
                id: agent_id("ax"),
                draining: true,
            },
        );
        refused(
            &mut r,
            &Command::SetWeight {
                role: Role::default(),
                weight_milli: 0,
            },
        );
        // Undecodable status, unknown state.
        refused(
            &mut r,
            &Command::UpdateTask {
                framework: fw("f1"),
                task: tid("t1"),
                status: vec![0xff, 0xff, 0xff],
            },
        );
        let mut bad = pb::TaskStatus {
            task_id: "t1".into(),
            ..Default::default()
        };
        bad.state = 999;
        refused(
            &mut r,
            &Command::UpdateTask {
                framework: fw("f1"),
                task: tid("t1"),
                status: bad.encode_to_vec(),
            },
        );
        assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:3;mem:384"));
    }

    #[test]
    fn ports_are_never_claimed_twice() {
        let mut r = Registry::new(10);
        r.apply(&subscribe("f1", false)).unwrap();
        r.apply(&register("a1", "cpus:4;mem:1024;ports:[8000-8010]", None))
            .unwrap();
        // Within one launch.
        refused(
            &mut r,
            &launch(
                "f1",
                "a1",
                vec![
                    task("f1", "t1", "a1", "cpus:0.1;ports:[8000-8000]"),
                    task("f1", "t2", "a1", "cpus:0.1;ports:[8000-8000]"),
                ],
            ),
        );
        // Against a running task.
        r.apply(&launch(
            "f1",
            "a1",
            vec![task("f1", "t1", "a1", "cpus:0.1;ports:[8000-8000]")],
        ))
        .unwrap();
        refused(
            &mut r,
            &launch(
                "f1",
                "a1",
                vec![task("f1", "t2", "a1", "cpus:0.1;ports:[8000-8001]")],
            ),
        );
        r.apply(&launch(
            "f1",
            "a1",
            vec![task("f1", "t2", "a1", "cpus:0.1;ports:[8001-8001]")],
        ))
        .unwrap();
    }

    #[test]
    fn a_recently_completed_task_id_is_not_launched_again() {
        let mut r = cluster();
        r.set_max_completed(2);
        r.apply(&update("f1", "t1", pb::TaskState::TaskFinished))
            .unwrap();
        let again = launch("f1", "a1", vec![task("f1", "t1", "a1", "cpus:0.1")]);
        let e = refused(&mut r, &again);
        assert!(matches!(e, ApplyError::DuplicateTask { .. }), "{e}");
        // The index survives a snapshot round trip.
        let mut restored: Registry =
            postcard::from_bytes(&postcard::to_stdvec(&r).unwrap()).unwrap();
        restored.rebuild_indexes();
        assert_eq!(restored, r);
        assert!(matches!(
            restored.apply(&again),
            Err(ApplyError::DuplicateTask { .. })
        ));
        // Once it fell off the bounded list of completed tasks, the id is
        // free again.
        for t in ["t3", "t4"] {
            r.apply(&launch("f1", "a1", vec![task("f1", t, "a1", "cpus:0.1")]))
                .unwrap();
            r.apply(&update("f1", t, pb::TaskState::TaskFinished))
                .unwrap();
        }
        assert!(r.completed_task(&fw("f1"), &tid("t1")).is_none());
        r.apply(&again).unwrap();
    }

    #[test]
    fn terminal_update_frees_once_and_framework_removal_frees_the_rest() {
        let mut r = cluster();
        let e = r
            .apply(&update("f1", "t1", pb::TaskState::TaskRunning))
            .unwrap();
        assert!(e.freed.is_empty());
        let e = r
            .apply(&update("f1", "t1", pb::TaskState::TaskFinished))
            .unwrap();
        assert_eq!(e.freed.len(), 1);
        assert_eq!(e.freed[0].3.total(), res("cpus:1;mem:128"));
        assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:2;mem:256"));
        // A resend of the terminal update is refused: nothing freed twice.
        refused(&mut r, &update("f1", "t1", pb::TaskState::TaskFinished));

        let e = r
            .apply(&Command::RemoveFramework {
                id: fw("f1"),
                at_ms: 9,
                reason: "FRAMEWORK_TEARDOWN".into(),
            })
            .unwrap();
        assert_eq!(e.freed.len(), 1, "only t2 was still active");
        assert_eq!(e.freed[0].3.total(), res("cpus:2;mem:256"));
        assert!(r.agent_used(&agent_id("a1")).is_empty());
        assert_eq!(r.tasks().count(), 0);
        assert_eq!(
            r.completed_task(&fw("f1"), &tid("t2"))
                .map(TaskRecord::state),
            Some(pb::TaskState::TaskKilled)
        );
        // The agent's late terminal update of t2 no longer applies.
        refused(&mut r, &update("f1", "t2", pb::TaskState::TaskKilled));
    }

    #[test]
    fn reregistration_loses_unreported_tasks_and_kills_unknown_ones() {
        let mut r = cluster();
        // t2 ran on a1 (a1 reported it once), so a1 coming back without it
        // means it is gone.
        r.apply(&update("f1", "t2", pb::TaskState::TaskRunning))
            .unwrap();
        r.apply(&subscribe("f2", false)).unwrap();
        r.apply(&register("a2", "cpus:4;mem:1024", None)).unwrap();
        r.apply(&launch("f2", "a2", vec![task("f2", "x", "a2", "cpus:1")]))
            .unwrap();
        // a1 comes back with t1, a task the registry never saw, a task the
        // registry has on a2, and a terminal unknown task (no kill needed).
        let e = r
            .apply(&register(
                "a1",
                "cpus:4;mem:1024",
                Some(vec![
                    ("f1", "t1", pb::TaskState::TaskRunning),
                    ("f1", "ghost", pb::TaskState::TaskRunning),
                    ("f2", "x", pb::TaskState::TaskRunning),
                    ("f1", "old", pb::TaskState::TaskFinished),
                ]),
            ))
            .unwrap();
        assert_eq!(e.freed.len(), 1);
        assert_eq!(e.freed[0].3.total(), res("cpus:2;mem:256"));
        assert_eq!(e.updates.len(), 1);
        assert_eq!(e.updates[0].1.task_id, "t2");
        assert_eq!(e.updates[0].1.state, pb::TaskState::TaskLost as i32);
        let mut unknown = e.unknown_tasks.clone();
        unknown.sort();
        assert_eq!(
            unknown,
            vec![(fw("f1"), tid("ghost")), (fw("f2"), tid("x"))]
        );
        assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:1;mem:128"));
        assert_eq!(
            r.task(&fw("f2"), &tid("x")).map(|t| t.agent.clone()),
            Some(agent_id("a2"))
        );
    }

    #[test]
    fn reregistration_relaunches_a_launch_the_agent_never_got_when_it_fits() {
        let mut r = cluster();
        // a1 comes back with t1 only; t2 was launched but never reported:
        // its RunTask was lost, so it is sent again and keeps its place.
        let running = vec![("f1", "t1", pb::TaskState::TaskRunning)];
        let e = r
            .apply(&register("a1", "cpus:4;mem:1024", Some(running.clone())))
            .unwrap();
        assert_eq!(e.relaunch, vec![(fw("f1"), tid("t2"))]);
        assert!(e.updates.is_empty() && e.freed.is_empty(), "{e:?}");
        assert_eq!(
            r.task(&fw("f1"), &tid("t2")).map(TaskRecord::state),
            Some(pb::TaskState::TaskStaging)
        );
        assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:3;mem:384"));

        // Smaller now: t2 no longer fits next to t1, so it is lost.
        let mut r = cluster();
        let e = r
            .apply(&register("a1", "cpus:2;mem:1024", Some(running)))
            .unwrap();
        assert!(e.relaunch.is_empty());
        assert_eq!(e.updates.len(), 1);
        assert_eq!(e.updates[0].1.task_id, "t2");
        assert_eq!(e.updates[0].1.state, pb::TaskState::TaskLost as i32);
        assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:1;mem:128"));
    }

    #[test]
    fn a_launch_never_reported_is_sent_again_after_its_agent_was_unreachable() {
        // t2 was launched on a1, which was cut off before it got the
        // RunTask: marked unreachable, then back without t2. t1, which a1
        // did report, is back running.
        let mut r = cluster();
        r.apply(&update("f1", "t1", pb::TaskState::TaskRunning))
            .unwrap();
        r.apply(&Command::MarkAgentUnreachable {
            id: agent_id("a1"),
            at_ms: 5,
        })
        .unwrap();
        assert_eq!(
            r.task(&fw("f1"), &tid("t2")).map(TaskRecord::state),
            Some(pb::TaskState::TaskLost)
        );
        let running = vec![("f1", "t1", pb::TaskState::TaskRunning)];
        let e = r
            .apply(&register("a1", "cpus:4;mem:1024", Some(running)))
            .unwrap();
        assert_eq!(e.relaunch, vec![(fw("f1"), tid("t2"))]);
        assert!(r.task(&fw("f1"), &tid("t2")).is_some());
        // t1 was reported: had a1 come back without it, it would be lost.
        let mut r = cluster();
        r.apply(&update("f1", "t1", pb::TaskState::TaskRunning))
            .unwrap();
        r.apply(&Command::MarkAgentUnreachable {
            id: agent_id("a1"),
            at_ms: 5,
        })
        .unwrap();
        let e = r
            .apply(&register("a1", "cpus:4;mem:1024", Some(Vec::new())))
            .unwrap();
        assert_eq!(e.relaunch, vec![(fw("f1"), tid("t2"))]);
        assert_eq!(
            r.completed_task(&fw("f1"), &tid("t1"))
                .map(TaskRecord::state),
            Some(pb::TaskState::TaskLost)
        );
    }

    #[test]
    fn new_agent_with_tasks_gets_them_killed() {
        let mut r = cluster();
        let e = r
            .apply(&register(
                "a9",
                "cpus:1",
                Some(vec![("f1", "t1", pb::TaskState::TaskRunning)]),
            ))
            .unwrap();
        assert_eq!(e.unknown_tasks, vec![(fw("f1"), tid("t1"))]);
        assert!(e.freed.is_empty());
        // t1 stays on a1.
        assert_eq!(r.agent_used(&agent_id("a1")), res("cpus:3;mem:384"));
    }

    #[test]
    fn reregistration_that_does_not_fit_running_tasks_is_refused() {
        let mut r = cluster();
        r.apply(&Command::SetAgentDraining {
            id: agent_id("a1"),
            draining: true,
        })
        .unwrap();
        let both = vec![
            ("f1", "t1", pb::TaskState::TaskRunning),
            ("f1", "t2", pb::TaskState::TaskRunning),
        ];
        let e = refused(
            &mut r,
            &register("a1", "cpus:2;mem:1024", Some(both.clone())),
        );
        assert!(matches!(e, ApplyError::Overcommit { .. }), "{e}");
        // Fits once t2 is gone (it is then lost); draining is kept.
        let e = r
            .apply(&register(
                "a1",
                "cpus:2;mem:1024",
                Some(vec![("f1", "t1", pb::TaskState::TaskRunning)]),
            ))
            .unwrap();
        assert_eq!(e.freed.len(), 1);
        let a1 = r.agent(&agent_id("a1")).unwrap();
        assert!(a1.draining);
        assert_eq!(a1.unreserved, res("cpus:2;mem:1024"));
        assert_eq!(a1.registered_at_ms, 1);
    }

    #[test]
    fn reserved_parts_must_fit_the_roles_reservation() {
        let mut r = Registry::new(10);
        r.apply(&subscribe("f1", false)).unwrap();
        let role = Role::new("web").unwrap();
        let mut rec = agent_record("a1", "cpus:2");
        rec.reserved.insert(role.clone(), res("cpus:2"));
        r.apply(&Command::RegisterAgent {
            record: rec.clone(),
            reported: None,
            at_ms: 1,
        })
        .unwrap();
        let mut t = task("f1", "t1", "a1", "cpus:0");
        t.role = role.clone();
        t.allocated = Allocated {
            unreserved: Resources::empty(),
            reserved: res("cpus:2"),
        };
        r.apply(&launch("f1", "a1", vec![t])).unwrap();
        // Same total, but the reservation moved to the unreserved pool: the
        // task's reserved part no longer fits.
        let mut moved = agent_record("a1", "cpus:4");
        moved.reserved.clear();
        let e = refused(
            &mut r,
            &Command::RegisterAgent {
                record: moved,
                reported: Some(vec![(
                    fw("f1"),
                    tid("t1"),
                    pb::TaskState::TaskRunning as i32,
                )]),
                at_ms: 2,
            },
        );
        assert!(matches!(e, ApplyError::Overcommit { .. }), "{e}");
    }

    #[test]
    fn unreachable_then_back_reports_running_again() {
        let mut r = Registry::new(10);
        r.apply(&subscribe("aware", true)).unwrap();
        r.apply(&subscribe("plain", false)).unwrap();
        r.apply(&register("a1", "cpus:4;mem:1024", None)).unwrap();
        r.apply(&launch(
            "aware",
            "a1",
            vec![task("aware", "t", "a1", "cpus:1")],
        ))
        .unwrap();
        r.apply(&launch(
            "plain",
            "a1",
            vec![task("plain", "t", "a1", "cpus:1")],
        ))
        .unwrap();
        let e = r
            .apply(&Command::MarkAgentUnreachable {
                id: agent_id("a1"),
                at_ms: 10,
            })
            .unwrap();
        let mut states: Vec<_> = e
            .updates
            .iter()
            .map(|(f, s)| (f.to_string(), s.state))
            .collect();
        states.sort();
        assert_eq!(
            states,
            vec![
                ("aware".to_string(), pb::TaskState::TaskUnreachable as i32),
                ("plain".to_string(), pb::TaskState::TaskLost as i32),
            ]
        );
        assert!(e.freed.is_empty(), "unreachable tasks keep their resources");
        // Marking again changes nothing.
        let before = r.clone();
        let e = r
            .apply(&Command::MarkAgentUnreachable {
                id: agent_id("a1"),
                at_ms: 11,
            })
            .unwrap();
        assert_eq!(e, Effects::default());
        assert_eq!(r, before);

        let e = r
            .apply(&register(
                "a1",
                "cpus:4;mem:1024",
                Some(vec![
                    ("aware", "t", pb::TaskState::TaskRunning),
                    ("plain", "t", pb::TaskState::TaskRunning),
                ]),
            ))
            .unwrap();
        assert_eq!(e.updates.len(), 2);
        assert!(
            e.updates
                .iter()
                .all(|(_, s)| s.state == pb::TaskState::TaskRunning as i32)
        );
        assert!(e.freed.is_empty());
        assert!(
            r.agent(&agent_id("a1"))
                .unwrap()
                .unreachable_since_ms
                .is_none()
        );
    }

    #[test]
    fn disconnect_keeps_the_first_time_and_resubscribe_clears_it() {
        let mut r = Registry::new(10);
        r.apply(&subscribe("f1", false)).unwrap();
        for at_ms in [100, 200] {
            r.apply(&Command::DisconnectFramework {
                id: fw("f1"),
                at_ms,
            })
            .unwrap();
        }
        assert_eq!(
            r.framework(&fw("f1")).unwrap().disconnected_at_ms,
            Some(100)
        );
        let mut again = subscribe("f1", true);
        if let Command::SubscribeFramework { record } = &mut again {
            record.registered_at_ms = 999;
            record.disconnected_at_ms = Some(5);
        }
        r.apply(&again).unwrap();
        let f = r.framework(&fw("f1")).unwrap();
        assert_eq!(f.disconnected_at_ms, None);
        assert_eq!(f.registered_at_ms, 1);
        assert!(f.partition_aware);
    }

    #[test]
    fn snapshot_round_trip_rebuilds_usage() {
        let mut r = cluster();
        r.apply(&update("f1", "t1", pb::TaskState::TaskFailed))
            .unwrap();
        let bytes = r.to_snapshot().unwrap();
        let mut back = Registry::from_snapshot(&bytes).unwrap();
        back.rebuild_indexes();
        assert_eq!(back, r);
        assert_eq!(back.agent_used(&agent_id("a1")), res("cpus:2;mem:256"));
    }

    fn times(r: &Registry, task: &str) -> (u64, Option<u64>, Option<u64>) {
        let t = r
            .task(&fw("f1"), &tid(task))
            .or_else(|| r.completed_task(&fw("f1"), &tid(task)))
            .expect("the task is known");
        (t.launched_at_ms, t.running_at_ms, t.ended_at_ms)
    }

    #[test]
    fn tasks_carry_launch_first_running_and_end_times() {
        let mut r = cluster();
        assert_eq!(times(&r, "t1"), (2, None, None));
        r.apply(&update_at("f1", "t1", pb::TaskState::TaskStarting, 3.0))
            .unwrap();
        assert_eq!(times(&r, "t1"), (2, None, None));
        r.apply(&update_at("f1", "t1", pb::TaskState::TaskRunning, 4.5))
            .unwrap();
        assert_eq!(times(&r, "t1"), (2, Some(4500), None));
        // A later RUNNING (a health change) keeps the first time.
        r.apply(&update_at("f1", "t1", pb::TaskState::TaskRunning, 8.0))
            .unwrap();
        r.apply(&update_at("f1", "t1", pb::TaskState::TaskFinished, 9.25))
            .unwrap();
        assert_eq!(times(&r, "t1"), (2, Some(4500), Some(9250)));
        // An update without a usable time counts as at the launch.
        let mut r = cluster();
        r.apply(&update("f1", "t1", pb::TaskState::TaskRunning))
            .unwrap();
        r.apply(&update_at("f1", "t1", pb::TaskState::TaskFailed, f64::NAN))
            .unwrap();
        assert_eq!(times(&r, "t1"), (2, Some(2), Some(2)));
        // Ended by the master: the command's time.
        let mut r = cluster();
        r.apply(&Command::RemoveFramework {
            id: fw("f1"),
            at_ms: 70,
            reason: "gone".into(),
        })
        .unwrap();
        assert_eq!(times(&r, "t2"), (2, None, Some(70)));
        let mut r = cluster();
        r.apply(&update_at("f1", "t1", pb::TaskState::TaskRunning, 1.0))
            .unwrap();
        // t2 was reported once (so it is not sent again): the agent lost it.
        r.apply(&update_at("f1", "t2", pb::TaskState::TaskStarting, 1.0))
            .unwrap();
        r.apply(&register(
            "a1",
            "cpus:4;mem:1024",
            Some(vec![("f1", "t1", pb::TaskState::TaskRunning)]),
        ))
        .unwrap();
        assert_eq!(
            times(&r, "t2"),
            (2, None, Some(5)),
            "lost at re-registration"
        );
        assert_eq!(times(&r, "t1"), (2, Some(1000), None));
    }

    #[test]
    fn seconds_become_milliseconds_only_for_times_after_the_epoch() {
        assert_eq!(secs_to_ms(1.5), Some(1500));
        assert_eq!(secs_to_ms(1_700_000_000.123), Some(1_700_000_000_123));
        for bad in [0.0, -1.0, f64::NAN, f64::INFINITY, 1.0e13] {
            assert_eq!(secs_to_ms(bad), None, "{bad}");
        }
    }

    fn unhex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    /// f1 on a1 with t1 (finished, timestamp 9 s) and t2 (staging), as
    /// written by berth before task times (commit c1e4ac8).
    const SNAPSHOT_V0: &str = "0102663102663102663101012ae8070001680100010261310261310261310761313a35303531a01f80c03e00000000000001000102663101027432026631027432026131012ae80780e807000000000000000002010202000201026631027431026131012ae80780e80700000000000000000201020a210a02743110054210070707070707070707070707070707074900000000000022400200000a";
    /// Its `LaunchTasks` of t1 and t2, as logged then.
    const LAUNCH_V0: &str = "0702663102613102026631027431026131012ae80780e8070000000000000000020102020002026631027432026131012ae80780e8070000000000000000020102020002";

    #[test]
    fn first_format_snapshots_and_launches_are_read() {
        let old = Registry::from_snapshot(&unhex(SNAPSHOT_V0)).expect("a version 0 snapshot");
        let cmd: Command = postcard::from_bytes(&unhex(LAUNCH_V0)).expect("a version 0 launch");
        assert!(matches!(&cmd, Command::LaunchTasksV0 { tasks, .. } if tasks.len() == 2));
        // The same state, built by applying the old log.
        let mut r = Registry::new(10);
        r.apply(&subscribe("f1", false)).unwrap();
        r.apply(&register("a1", "cpus:4;mem:1024", None)).unwrap();
        assert_eq!(r.check(&cmd), Ok(()));
        r.apply(&cmd).unwrap();
        r.apply(&update_at("f1", "t1", pb::TaskState::TaskFinished, 9.0))
            .unwrap();
        let mut old = old;
        old.rebuild_indexes();
        // The old format had no times: t1's end is the one its update gave.
        let t1 = r.completed_task(&fw("f1"), &tid("t1")).unwrap().clone();
        assert_eq!(t1.ended_at_ms, Some(9000));
        let mut expected = r.clone();
        expected.completed[0].ended_at_ms = None;
        assert_eq!(old, expected);
        assert_eq!(old.agent_used(&agent_id("a1")), res("cpus:1;mem:128"));
    }

    #[test]
    fn snapshots_carry_their_version_and_refuse_unknown_ones() {
        let mut r = cluster();
        r.apply(&update_at("f1", "t1", pb::TaskState::TaskRunning, 4.0))
            .unwrap();
        r.apply(&update_at("f1", "t1", pb::TaskState::TaskFailed, 6.0))
            .unwrap();
        let bytes = r.to_snapshot().unwrap();
        assert!(bytes.starts_with(SNAPSHOT_MAGIC));
        assert_eq!(bytes[SNAPSHOT_MAGIC.len()], SNAPSHOT_VERSION);
        let mut back = Registry::from_snapshot(&bytes).unwrap();
        back.rebuild_indexes();
        assert_eq!(back, r);
        let mut newer = bytes.clone();
        newer[SNAPSHOT_MAGIC.len()] = SNAPSHOT_VERSION + 1;
        let e = Registry::from_snapshot(&newer).unwrap_err();
        assert!(e.to_string().contains("version 3"), "{e}");
        assert!(Registry::from_snapshot(SNAPSHOT_MAGIC).is_err());
        assert!(Registry::from_snapshot(b"\xff\xff").is_err());
    }

    /// The snapshot of version 1 of the state of [`SNAPSHOT_V0`], t1 having
    /// run from 4 s to 9 s: a change of these bytes is a change of the
    /// format, which needs a new version.
    const SNAPSHOT_V1: &str = "0062657274682d7265676973747279010102663102663102663101012ae8070001680100010261310261310261310761313a35303531a01f80c03e00000000000001000102663101027432026631027432026131012ae80780e807000000000000000002010202000200000001026631027431026131012ae80780e80700000000000000000201020a210a02743110054210070707070707070707070707070707074900000000000022400201a01f01a84601000001010e3132372e302e302e313a353035300a";

    /// The state of [`SNAPSHOT_V1`].
    fn golden_state() -> Registry {
        let mut r = Registry::new(10);
        r.apply(&subscribe("f1", false)).unwrap();
        r.apply(&register("a1", "cpus:4;mem:1024", None)).unwrap();
        let with_info = |id: &str| TaskRecord {
            info: vec![1, 2],
            ..task("f1", id, "a1", "cpus:1;mem:128")
        };
        r.apply(&launch("f1", "a1", vec![with_info("t1"), with_info("t2")]))
            .unwrap();
        r.apply(&update_at("f1", "t1", pb::TaskState::TaskRunning, 4.0))
            .unwrap();
        r.apply(&update_at("f1", "t1", pb::TaskState::TaskFinished, 9.0))
            .unwrap();
        r.apply(&Command::RecordMembers {
            members: [(1, "127.0.0.1:5050".to_owned())].into(),
        })
        .unwrap();
        r
    }

    #[test]
    fn version_1_snapshots_are_read() {
        let r = golden_state();
        let mut back = Registry::from_snapshot(&unhex(SNAPSHOT_V1)).unwrap();
        back.rebuild_indexes();
        assert_eq!(back, r);
    }

    /// [`SNAPSHOT_V1`]'s state with keys and a lease, as version 2: a
    /// change of these bytes is a change of the format.
    const SNAPSHOT_V2: &str = "0062657274682d7265676973747279020102663102663102663101012ae8070001680100010261310261310261310761313a35303531a01f80c03e00000000000001000102663101027432026631027432026131012ae80780e807000000000000000002010202000200000001026631027431026131012ae80780e80700000000000000000201020a210a02743110054210070707070707070707070707070707074900000000000022400201a01f01a84601000001010e3132372e302e302e313a35303530010373766302016101310101010162023232010101010661637469766501036f6e6501904e0502050a";

    #[test]
    fn version_2_snapshots_keep_their_bytes() {
        let mut r = golden_state();
        r.apply(&Command::KvTxn {
            txn: kv::Txn {
                namespace: "svc".into(),
                compares: vec![kv::Compare::Version {
                    key: "a".into(),
                    version: 0,
                }],
                ops: vec![
                    kv::Op::Put {
                        key: "a".into(),
                        value: b"1".to_vec(),
                    },
                    kv::Op::Put {
                        key: "b".into(),
                        value: b"22".to_vec(),
                    },
                ],
            },
        })
        .unwrap();
        r.apply(&Command::KvLeaseGrant {
            namespace: "svc".into(),
            name: "active".into(),
            holder: "one".into(),
            ttl_ms: 10_000,
            expect_epoch: 0,
        })
        .unwrap();
        let hex: String = r
            .to_snapshot()
            .unwrap()
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(hex, SNAPSHOT_V2);
        let mut back = Registry::from_snapshot(&unhex(SNAPSHOT_V2)).unwrap();
        back.rebuild_indexes();
        assert_eq!(back, r);
    }
}
