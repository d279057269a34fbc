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
pub mod legacy;

#[cfg(test)]
mod tests;
