//! Workloads for the placement simulator: nodes, tasks, seeded
//! generators and a file format (JSON or CSV).
//!
//! - [`mesos_multi_framework`]: Apache Mesos' `MultiFrameworkAllocations`
//!   allocator benchmark as a packing problem, scalable to 10,000 agents.
//! - [`heterogeneous`]: a trace-like cluster of a few machine shapes and
//!   tasks with lognormal cpu and memory requests.
//! - [`trace_like`]: clusters and tasks drawn from published statistics
//!   of the Google 2011 and 2019 and Alibaba 2018 cluster traces (see the
//!   `traces` module's documentation for the numbers and their sources).
//! - [`Workload::from_json`] and [`Workload::from_csv`]: the file format
//!   described in `docs/workload-format.md`. Malformed input is an error
//!   naming the line and field, never a panic.
//!
//! Generators are deterministic: the same arguments give the same
//! workload. They use their own small PRNG (SplitMix64) seeded by the
//! caller, and `f64::ln`/`cos`/`sqrt` for the distributions, so results
//! are identical run to run on one platform (a libm differing in the last
//! bit could round a quantity to a different milli-unit elsewhere).

use std::collections::{BTreeMap, HashMap};
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize};

use crate::ids::{AgentId, TaskId};
use crate::resources::{Resources, Scalar};
use crate::time::Time;

mod csv;
mod traces;

pub use traces::{
    MAX_JOB_TASKS, MAX_TASKS, MachineClass, Size, TaskClass, TraceConfig, TracePreset, Units,
    trace_like,
};

/// A machine of the simulated cluster.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// The node's id.
    pub id: AgentId,
    /// CPU shares.
    pub cpus: Scalar,
    /// Memory, MiB.
    pub mem: Scalar,
    /// Disk, MiB.
    pub disk: Scalar,
    /// Attributes (e.g. `zone = "z3"`), matched by task [`Constraint`]s.
    pub attributes: BTreeMap<String, String>,
}

impl Node {
    /// The node's capacity as [`Resources`] (no gpus, no ports).
    pub fn resources(&self) -> Resources {
        Resources {
            cpus: self.cpus,
            mem: self.mem,
            disk: self.disk,
            ..Resources::default()
        }
    }
}

/// A task to place.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Task {
    /// The task's id.
    pub id: TaskId,
    /// CPU shares requested.
    pub cpus: Scalar,
    /// Memory requested, MiB.
    pub mem: Scalar,
    /// Disk requested, MiB.
    pub disk: Scalar,
    /// When the task arrives, relative to the start of the workload.
    pub arrival: Option<Time>,
    /// How long the task runs once placed.
    pub duration: Option<Duration>,
    /// Conditions on the attributes of the node it may run on; all must
    /// hold.
    pub constraints: Vec<Constraint>,
}

impl Task {
    /// The task's demand as [`Resources`] (no gpus, no ports).
    pub fn resources(&self) -> Resources {
        Resources {
            cpus: self.cpus,
            mem: self.mem,
            disk: self.disk,
            ..Resources::default()
        }
    }
}

/// How a [`Constraint`] compares a node attribute with its value.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum ConstraintOp {
    /// `attr == value`: the node has the attribute with exactly this value.
    #[serde(rename = "==")]
    Equals,
    /// `attr != value`: the node lacks the attribute or has another value.
    #[serde(rename = "!=")]
    NotEquals,
}

impl ConstraintOp {
    /// `"=="` or `"!="`.
    pub const fn symbol(self) -> &'static str {
        match self {
            ConstraintOp::Equals => "==",
            ConstraintOp::NotEquals => "!=",
        }
    }
}

/// A condition on one node attribute, e.g. `zone == z3`.
#[derive(Clone, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Constraint {
    /// The attribute's name.
    pub attribute: String,
    /// The comparison.
    pub op: ConstraintOp,
    /// The value compared with.
    pub value: String,
}

impl Constraint {
    /// Whether a node with `attributes` satisfies this constraint.
    pub fn matches(&self, attributes: &BTreeMap<String, String>) -> bool {
        let have = attributes.get(&self.attribute);
        match self.op {
            ConstraintOp::Equals => have == Some(&self.value),
            ConstraintOp::NotEquals => have != Some(&self.value),
        }
    }
}

impl fmt::Display for Constraint {
    /// `zone == z3`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {} {}", self.attribute, self.op.symbol(), self.value)
    }
}

/// Nodes and the tasks to place on them, in arrival order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Workload {
    /// The cluster.
    pub nodes: Vec<Node>,
    /// The tasks, in the order they are to be placed.
    pub tasks: Vec<Task>,
}

/// A workload file could not be read. Every variant says where.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WorkloadError {
    /// The JSON was malformed or a field was invalid (serde_json's message
    /// names the problem; line and column are 1-based).
    #[error("workload JSON, line {line} column {column}: {message}")]
    Json {
        /// Line of the error.
        line: usize,
        /// Column of the error.
        column: usize,
        /// What is wrong.
        message: String,
    },
    /// A CSV file was malformed or a field was invalid.
    #[error("{file} line {line}{}: {message}", column_suffix(.column))]
    Csv {
        /// `"nodes.csv"` or `"tasks.csv"`.
        file: &'static str,
        /// 1-based line number (the header is line 1).
        line: usize,
        /// The column, when the problem is one field.
        column: Option<String>,
        /// What is wrong.
        message: String,
    },
    /// Two nodes or two tasks share an id.
    #[error(
        "duplicate {kind} id {} ({kind}s #{first} and #{second}, counting from 1)",
        crate::error::quoted(.id)
    )]
    DuplicateId {
        /// `"node"` or `"task"`.
        kind: &'static str,
        /// The repeated id.
        id: String,
        /// Position of the first occurrence.
        first: usize,
        /// Position of the repetition.
        second: usize,
    },
}

fn column_suffix(column: &Option<String>) -> String {
    match column {
        Some(c) => format!(", column {}", crate::error::quoted(c)),
        None => String::new(),
    }
}

impl Workload {
    /// Parses the JSON form (see `docs/workload-format.md`).
    ///
    /// # Errors
    /// [`WorkloadError::Json`] with the line and column of the first
    /// malformed or invalid value (unknown fields, missing fields, negative,
    /// too large or non-numeric quantities, invalid ids, unknown constraint
    /// operators); [`WorkloadError::DuplicateId`] for repeated ids.
    pub fn from_json(input: &str) -> Result<Workload, WorkloadError> {
        let file: JsonFile = serde_json::from_str(input).map_err(|e| WorkloadError::Json {
            line: e.line(),
            column: e.column(),
            message: strip_position(&e.to_string()),
        })?;
        let workload = Workload {
            nodes: file.nodes.into_iter().map(JsonNode::into_node).collect(),
            tasks: file.tasks.into_iter().map(JsonTask::into_task).collect(),
        };
        workload.check_ids()?;
        Ok(workload)
    }

    /// Parses the CSV form: one file of nodes, one of tasks (see
    /// `docs/workload-format.md`).
    ///
    /// # Errors
    /// [`WorkloadError::Csv`] naming the file, line and column of the first
    /// problem; [`WorkloadError::DuplicateId`] for repeated ids.
    pub fn from_csv(nodes_csv: &str, tasks_csv: &str) -> Result<Workload, WorkloadError> {
        let workload = Workload {
            nodes: csv::parse_nodes(nodes_csv)?,
            tasks: csv::parse_tasks(tasks_csv)?,
        };
        workload.check_ids()?;
        Ok(workload)
    }

    /// The JSON form; [`Workload::from_json`] reads it back.
    pub fn to_json(&self) -> String {
        let file = JsonFileOut {
            nodes: self
                .nodes
                .iter()
                .map(|n| JsonNodeOut {
                    id: n.id.as_str(),
                    cpus: n.cpus.to_f64(),
                    mem: n.mem.to_f64(),
                    disk: n.disk.to_f64(),
                    attributes: &n.attributes,
                })
                .collect(),
            tasks: self
                .tasks
                .iter()
                .map(|t| JsonTaskOut {
                    id: t.id.as_str(),
                    cpus: t.cpus.to_f64(),
                    mem: t.mem.to_f64(),
                    disk: t.disk.to_f64(),
                    arrival: t.arrival.map(|a| a.as_millis() as f64 / 1000.0),
                    duration: t.duration.map(|d| d.as_millis() as f64 / 1000.0),
                    constraints: &t.constraints,
                })
                .collect(),
        };
        // Serializing plain structs of strings and finite numbers cannot
        // fail.
        serde_json::to_string_pretty(&file).unwrap_or_default()
    }

    /// The CSV form as `(nodes_csv, tasks_csv)`; [`Workload::from_csv`]
    /// reads it back.
    pub fn to_csv(&self) -> (String, String) {
        (csv::write_nodes(&self.nodes), csv::write_tasks(&self.tasks))
    }

    /// The sum of all task demands (saturating).
    pub fn total_demand(&self) -> Resources {
        let mut total = Resources::empty();
        for t in &self.tasks {
            total += t.resources();
        }
        total
    }

    /// The sum of all node capacities (saturating).
    pub fn total_capacity(&self) -> Resources {
        let mut total = Resources::empty();
        for n in &self.nodes {
            total += n.resources();
        }
        total
    }

    fn check_ids(&self) -> Result<(), WorkloadError> {
        fn check<'a>(
            kind: &'static str,
            ids: impl Iterator<Item = &'a str>,
        ) -> Result<(), WorkloadError> {
            let mut seen: HashMap<&str, usize> = HashMap::new();
            for (i, id) in ids.enumerate() {
                if let Some(first) = seen.insert(id, i) {
                    return Err(WorkloadError::DuplicateId {
                        kind,
                        id: id.to_owned(),
                        first: first + 1,
                        second: i + 1,
                    });
                }
            }
            Ok(())
        }
        check("node", self.nodes.iter().map(|n| n.id.as_str()))?;
        check("task", self.tasks.iter().map(|t| t.id.as_str()))
    }
}

/// serde_json appends " at line L column C"; the error carries those
/// separately.
/// serde_json's message without its position (the error carries line and
/// column), cut to [`MAX_JSON_MESSAGE`] bytes: serde quotes the offending
/// input (an unknown field's name, a string of the wrong type) whole.
fn strip_position(message: &str) -> String {
    let message = match message.rfind(" at line ") {
        Some(i) => &message[..i],
        None => message,
    };
    if message.len() <= MAX_JSON_MESSAGE {
        return message.to_owned();
    }
    let mut end = MAX_JSON_MESSAGE;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &message[..end], message.len())
}

/// The longest serde_json message a [`WorkloadError::Json`] keeps, in
/// bytes.
const MAX_JSON_MESSAGE: usize = 200;

// ---------------------------------------------------------------------------
// JSON form

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonFile {
    nodes: Vec<JsonNode>,
    #[serde(default)]
    tasks: Vec<JsonTask>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonNode {
    #[serde(deserialize_with = "de_agent_id")]
    id: AgentId,
    #[serde(deserialize_with = "de_cpus")]
    cpus: Scalar,
    #[serde(deserialize_with = "de_mem")]
    mem: Scalar,
    #[serde(default, deserialize_with = "de_disk")]
    disk: Scalar,
    #[serde(default)]
    attributes: BTreeMap<String, String>,
}

impl JsonNode {
    fn into_node(self) -> Node {
        Node {
            id: self.id,
            cpus: self.cpus,
            mem: self.mem,
            disk: self.disk,
            attributes: self.attributes,
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct JsonTask {
    #[serde(deserialize_with = "de_task_id")]
    id: TaskId,
    #[serde(deserialize_with = "de_cpus")]
    cpus: Scalar,
    #[serde(deserialize_with = "de_mem")]
    mem: Scalar,
    #[serde(default, deserialize_with = "de_disk")]
    disk: Scalar,
    #[serde(default, deserialize_with = "de_arrival")]
    arrival: Option<Time>,
    #[serde(default, deserialize_with = "de_duration")]
    duration: Option<Duration>,
    #[serde(default)]
    constraints: Vec<Constraint>,
}

impl JsonTask {
    fn into_task(self) -> Task {
        Task {
            id: self.id,
            cpus: self.cpus,
            mem: self.mem,
            disk: self.disk,
            arrival: self.arrival,
            duration: self.duration,
            constraints: self.constraints,
        }
    }
}

#[derive(Serialize)]
struct JsonFileOut<'a> {
    nodes: Vec<JsonNodeOut<'a>>,
    tasks: Vec<JsonTaskOut<'a>>,
}

#[derive(Serialize)]
struct JsonNodeOut<'a> {
    id: &'a str,
    cpus: f64,
    mem: f64,
    disk: f64,
    #[serde(skip_serializing_if = "BTreeMap::is_empty")]
    attributes: &'a BTreeMap<String, String>,
}

#[derive(Serialize)]
struct JsonTaskOut<'a> {
    id: &'a str,
    cpus: f64,
    mem: f64,
    disk: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    arrival: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    duration: Option<f64>,
    #[serde(skip_serializing_if = "<[Constraint]>::is_empty")]
    constraints: &'a [Constraint],
}

fn de_agent_id<'de, D: Deserializer<'de>>(d: D) -> Result<AgentId, D::Error> {
    let s = String::deserialize(d)?;
    AgentId::new(s).map_err(|e| serde::de::Error::custom(format!("field \"id\": {e}")))
}

fn de_task_id<'de, D: Deserializer<'de>>(d: D) -> Result<TaskId, D::Error> {
    let s = String::deserialize(d)?;
    TaskId::new(s).map_err(|e| serde::de::Error::custom(format!("field \"id\": {e}")))
}

fn de_scalar<'de, D: Deserializer<'de>>(d: D, name: &'static str) -> Result<Scalar, D::Error> {
    let v = f64::deserialize(d)
        .map_err(|e| serde::de::Error::custom(format!("field {name:?}: {e}")))?;
    Scalar::from_f64(name, v).map_err(|e| serde::de::Error::custom(format!("field {name:?}: {e}")))
}

fn de_cpus<'de, D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
    de_scalar(d, "cpus")
}

fn de_mem<'de, D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
    de_scalar(d, "mem")
}

fn de_disk<'de, D: Deserializer<'de>>(d: D) -> Result<Scalar, D::Error> {
    de_scalar(d, "disk")
}

/// Seconds as a non-negative finite number, stored in milliseconds.
fn seconds_to_millis(name: &'static str, v: f64) -> Result<u64, String> {
    if !v.is_finite() {
        return Err(format!(
            "{name} must be a finite number of seconds (got {v})"
        ));
    }
    if v < 0.0 {
        return Err(format!("{name} must not be negative (got {v})"));
    }
    // Ten thousand years is plenty and keeps the product exact enough.
    if v > 3.2e11 {
        return Err(format!("{name} is absurdly large (got {v} s)"));
    }
    Ok((v * 1000.0).round() as u64)
}

fn de_arrival<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Time>, D::Error> {
    let v = Option::<f64>::deserialize(d)
        .map_err(|e| serde::de::Error::custom(format!("field \"arrival\": {e}")))?;
    v.map(|v| seconds_to_millis("arrival", v).map(Time::from_millis))
        .transpose()
        .map_err(|e| serde::de::Error::custom(format!("field \"arrival\": {e}")))
}

fn de_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let v = Option::<f64>::deserialize(d)
        .map_err(|e| serde::de::Error::custom(format!("field \"duration\": {e}")))?;
    v.map(|v| seconds_to_millis("duration", v).map(Duration::from_millis))
        .transpose()
        .map_err(|e| serde::de::Error::custom(format!("field \"duration\": {e}")))
}

// ---------------------------------------------------------------------------
// Generators

/// SplitMix64 (Steele, Lea, Flood 2014): tiny, fast, and good enough for
/// workload generation. Not for anything security-related.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, 1)`.
    fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// Uniform in `0..n` (n > 0); the modulo bias is negligible for the
    /// small `n` used here.
    fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    /// A standard normal sample (Box–Muller, one of the pair).
    fn normal(&mut self) -> f64 {
        // 1 - unit() is in (0, 1], so ln is finite.
        let u1 = 1.0 - self.unit();
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }

    /// An exponential sample with the given mean.
    fn exponential(&mut self, mean: f64) -> f64 {
        -mean * (1.0 - self.unit()).ln()
    }
}

/// A quantity in milli-units from a positive `f64`, clamped to
/// `[min, max]` (milli-units), never zero.
fn milli(v: f64, min: u64, max: u64) -> Scalar {
    let m = (v * 1000.0).round();
    let m = if m.is_finite() {
        m.max(0.0) as u64
    } else {
        max
    };
    Scalar::from_milli_saturating(m.clamp(min.max(1), max))
}

/// `MultiFrameworkAllocations` from Apache Mesos'
/// `src/tests/hierarchical_allocator_benchmarks.cpp`, as a packing problem,
/// with agents and frameworks multiplied by `scale` (`scale = 125` gives
/// 10,000 agents and 2,437,500 tasks; 0 is taken as 1):
///
/// - 80 agents of `cpus:64;mem:488000` (no disk);
/// - 4 "Marathon" frameworks × 4,000 tasks of `cpus:0.07;mem:400`, at most
///   100 tasks per offer;
/// - 500 "Jenkins" frameworks × 5 tasks of `cpus:0.1;mem:4000`, 1 per offer;
/// - 50 "SparkDispatcher" frameworks × 20 tasks of `cpus:1;mem:1000`, at
///   most 5 per offer.
///
/// Tasks are ordered as rounds of the allocation loop would launch them:
/// in each round every framework that has tasks left launches up to its
/// per-offer limit, frameworks in the order above. Task ids are
/// `<framework>-<i>-<n>`, e.g. `marathon-3-0042`.
pub fn mesos_multi_framework(scale: usize) -> Workload {
    let scale = scale.max(1);
    let nodes = (0..80 * scale)
        .map(|i| Node {
            id: valid_agent_id(format!("agent-{i}")),
            cpus: Scalar::from_units(64),
            mem: Scalar::from_units(488_000),
            disk: Scalar::ZERO,
            attributes: BTreeMap::new(),
        })
        .collect();
    // (name, frameworks, tasks each, cpus milli, mem MiB, per offer)
    let profiles: [(&str, usize, usize, u64, u64, usize); 3] = [
        ("marathon", 4, 4_000, 70, 400, 100),
        ("jenkins", 500, 5, 100, 4_000, 1),
        ("spark", 50, 20, 1_000, 1_000, 5),
    ];
    let mut frameworks = Vec::new();
    for (name, count, tasks, cpus, mem, per_offer) in profiles {
        for i in 0..count * scale {
            frameworks.push((format!("{name}-{}", i + 1), tasks, cpus, mem, per_offer, 0));
        }
    }
    let total: usize = frameworks.iter().map(|f| f.1).sum();
    let mut tasks = Vec::with_capacity(total);
    while tasks.len() < total {
        for (name, each, cpus, mem, per_offer, launched) in &mut frameworks {
            let n = (*each - *launched).min(*per_offer);
            for _ in 0..n {
                tasks.push(Task {
                    id: valid_task_id(format!("{name}-{:04}", *launched)),
                    cpus: Scalar::from_milli_saturating(*cpus),
                    mem: Scalar::from_units(*mem),
                    disk: Scalar::ZERO,
                    arrival: None,
                    duration: None,
                    constraints: Vec::new(),
                });
                *launched += 1;
            }
        }
    }
    Workload { nodes, tasks }
}

/// Generated ids are valid by construction.
fn valid_agent_id(s: String) -> AgentId {
    AgentId::new(s).unwrap_or_else(|_| unreachable!("generated agent ids are valid"))
}

fn valid_task_id(s: String) -> TaskId {
    TaskId::new(s).unwrap_or_else(|_| unreachable!("generated task ids are valid"))
}

/// A machine shape of [`heterogeneous`]: `(weight, cpus, mem GiB)`.
pub const HETEROGENEOUS_SHAPES: [(u32, u64, u64); 7] = [
    (10, 8, 32),
    (20, 16, 64),
    (10, 16, 128),
    (25, 32, 128),
    (10, 32, 256),
    (15, 64, 256),
    (10, 64, 512),
];

/// Knobs of [`heterogeneous_with`]; [`HeterogeneousConfig::new`] gives the
/// defaults that [`heterogeneous`] uses.
#[derive(Clone, Debug, PartialEq)]
pub struct HeterogeneousConfig {
    /// Number of nodes.
    pub nodes: usize,
    /// Number of tasks.
    pub tasks: usize,
    /// PRNG seed.
    pub seed: u64,
    /// Number of zones (`zone` attribute `z0`, `z1`, ...); at least 1.
    pub zones: usize,
    /// Fraction of tasks with a `zone == zK` constraint.
    pub zone_equals: f64,
    /// Fraction of tasks with a `zone != zK` constraint.
    pub zone_not_equals: f64,
    /// Fraction of tiny tasks (a few hundredths of a cpu, tens of MiB).
    pub tiny: f64,
    /// Mean seconds between arrivals (Poisson arrivals); `None` for no
    /// arrival times or durations.
    pub mean_interarrival: Option<f64>,
}

impl HeterogeneousConfig {
    /// The defaults: 10 zones, 1% of tasks pinned to a zone and 1% kept out
    /// of one, 30% tiny tasks, arrivals at 100 tasks per second.
    pub fn new(nodes: usize, tasks: usize, seed: u64) -> HeterogeneousConfig {
        HeterogeneousConfig {
            nodes,
            tasks,
            seed,
            zones: 10,
            zone_equals: 0.01,
            zone_not_equals: 0.01,
            tiny: 0.3,
            mean_interarrival: Some(0.01),
        }
    }
}

/// A trace-like workload of `nodes` nodes and `tasks` tasks, with the
/// defaults of [`HeterogeneousConfig::new`]; see [`heterogeneous_with`].
pub fn heterogeneous(nodes: usize, tasks: usize, seed: u64) -> Workload {
    heterogeneous_with(&HeterogeneousConfig::new(nodes, tasks, seed))
}

/// A trace-like workload.
///
/// Nodes are drawn from [`HETEROGENEOUS_SHAPES`] by weight (8 to 64 cpus,
/// 32 to 512 GiB; cpu:memory ratios from 1:2 to 1:8 GiB, as in the mixed
/// fleets of public cluster traces), with 1–4 TiB of disk and attributes
/// `zone` (uniform over the zones) and `shape` (e.g. `c32m128`), listed in
/// random order.
///
/// Tasks: a fraction [`HeterogeneousConfig::tiny`] are tiny (cpu lognormal
/// with median 0.02, memory median 64 MiB); the rest have cpu lognormal
/// with median 0.7 cpus (σ = 1.0) and memory lognormal with median 3 GiB
/// (σ = 1.1), correlated only weakly (ρ = 0.2). Requests are capped at 16
/// cpus and 96 GiB and floored at 0.01 cpus and 8 MiB. Disk is lognormal
/// around 1 GiB. With the defaults the mean task asks for about 0.81 cpus
/// and 3.9 GiB, so 25 tasks per node fill roughly 60% of the cluster's cpu
/// and 55% of its memory. Arrivals are a Poisson process; durations are
/// lognormal around ten minutes with a heavy tail.
pub fn heterogeneous_with(config: &HeterogeneousConfig) -> Workload {
    let mut rng = Rng::new(config.seed);
    let zones = config.zones.max(1);
    let total_weight: u32 = HETEROGENEOUS_SHAPES.iter().map(|s| s.0).sum();
    let nodes = (0..config.nodes)
        .map(|i| {
            let mut pick = rng.below(u64::from(total_weight)) as u32;
            let mut shape = HETEROGENEOUS_SHAPES[0];
            for s in HETEROGENEOUS_SHAPES {
                if pick < s.0 {
                    shape = s;
                    break;
                }
                pick -= s.0;
            }
            let (_, cpus, mem_gib) = shape;
            let disk_tib = 1 + rng.below(4);
            let zone = rng.below(zones as u64);
            Node {
                id: valid_agent_id(format!("node-{i:05}")),
                cpus: Scalar::from_units(cpus),
                mem: Scalar::from_units(mem_gib * 1024),
                disk: Scalar::from_units(disk_tib * 1024 * 1024),
                attributes: BTreeMap::from([
                    ("zone".to_owned(), format!("z{zone}")),
                    ("shape".to_owned(), format!("c{cpus}m{mem_gib}")),
                ]),
            }
        })
        .collect();

    let rho: f64 = 0.2;
    let mut clock = 0.0_f64;
    let tasks = (0..config.tasks)
        .map(|i| {
            let (cpus, mem_mib) = if rng.unit() < config.tiny {
                let c = 0.02 * (0.5 * rng.normal()).exp();
                let m = 64.0 * (0.7 * rng.normal()).exp();
                (c, m)
            } else {
                let z1 = rng.normal();
                let z2 = rho * z1 + (1.0 - rho * rho).sqrt() * rng.normal();
                let c = 0.7 * (1.0 * z1).exp();
                let m = 3.0 * 1024.0 * (1.1 * z2).exp();
                (c, m)
            };
            let disk_mib = 1024.0 * (1.0 * rng.normal()).exp();
            let mut constraints = Vec::new();
            let r = rng.unit();
            if r < config.zone_equals {
                constraints.push(Constraint {
                    attribute: "zone".to_owned(),
                    op: ConstraintOp::Equals,
                    value: format!("z{}", rng.below(zones as u64)),
                });
            } else if r < config.zone_equals + config.zone_not_equals {
                constraints.push(Constraint {
                    attribute: "zone".to_owned(),
                    op: ConstraintOp::NotEquals,
                    value: format!("z{}", rng.below(zones as u64)),
                });
            }
            let (arrival, duration) = match config.mean_interarrival {
                Some(mean) => {
                    clock += rng.exponential(mean);
                    let secs = (600.0 * (1.5 * rng.normal()).exp()).clamp(1.0, 7.0 * 86_400.0);
                    (
                        Some(Time::from_millis((clock * 1000.0).round() as u64)),
                        Some(Duration::from_millis((secs * 1000.0).round() as u64)),
                    )
                }
                None => (None, None),
            };
            Task {
                id: valid_task_id(format!("task-{i:06}")),
                cpus: milli(cpus, 10, 16_000),
                mem: milli(mem_mib, 8_000, 96 * 1024 * 1000),
                disk: milli(disk_mib, 1_000, 64 * 1024 * 1000),
                arrival,
                duration,
                constraints,
            }
        })
        .collect();
    Workload { nodes, tasks }
}

#[cfg(test)]
mod tests;
