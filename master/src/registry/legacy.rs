use super::{
    AgentId, AgentRecord, Allocated, BTreeMap, Deserialize, FrameworkId, FrameworkRecord, KvStore,
    Quota, Registry, Role, Serialize, TaskId, TaskRecord, VecDeque,
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
                .map(|(f, tasks)| (f, tasks.into_iter().map(|(id, t)| (id, t.into())).collect()))
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
