//! Workloads generated from published cluster-trace statistics:
//! [`trace_like`] with three [`TracePreset`]s.
//!
//! No trace data is read: each preset is a small table of machine classes
//! (normalized capacities and their shares of the fleet) and task classes
//! (request distributions), and the generator draws a cluster and a task
//! list from them with the workload module's seeded PRNG. The same
//! [`TraceConfig`] always gives the same workload.
//!
//! # Units
//!
//! The traces normalize capacities: Google divides by the largest machine
//! of the cell, so `1.0` is that machine; Alibaba gives cores and a memory
//! percentage. Each preset scales them to real units, stated with it, and
//! rounds nodes to whole cpus and GiB. Tasks have cpus and memory, no disk,
//! no constraints and no arrival times: the list is in arrival order (jobs
//! arrive one after the other, their tasks together).
//!
//! # Presets and sources
//!
//! - [`TracePreset::Google`], **Google cluster trace 2011**
//!   (ClusterData2011, one cell of about 12,500 machines over 29 days).
//!   Machine shapes and shares (cpu/mem, normalized to the largest
//!   machine) are those of the trace's machine table as tabulated by
//!   Reiss, Tumanov, Ganger, Katz, Kozuch, "Heterogeneity and dynamicity
//!   of clouds at scale: Google trace analysis", SoCC 2012: 0.5/0.5
//!   53.47%, 0.5/0.25 30.74%, 0.5/0.75 7.95%, 1/1 6.32%, 0.25/0.25
//!   0.99%, 0.5/0.12 0.43%, 0.5/0.03 0.04%, 0.5/0.97 0.03%, 1/0.5 0.02%,
//!   0.5/0.06 0.01%. Scaled with 1.0 = 64 cpus and 256 GiB. Task
//!   requests: one lognormal class, cpu median 0.01 (0.64 cpus, σ 0.8)
//!   and memory median 0.008 (2 GiB, σ 0.9), correlation 0.5, capped at
//!   0.25 of the largest machine (16 cpus, 64 GiB), jobs of median 2
//!   tasks (σ 1.6). The papers on the 2011 and 2019 traces (Reiss et al.
//!   above; Tirmazi et al., "Borg: the Next Generation", EuroSys 2020)
//!   publish request distributions as CDFs, not as fitted parameters:
//!   these are approximations of their shape (most tasks ask for 1–2% of
//!   a machine or less, a heavy right tail, cpu and memory positively
//!   correlated, heavy-tailed job sizes), chosen so that a 10,000-node
//!   cluster filled to 90% holds 300,000–450,000 tasks. They were not
//!   fitted to the raw trace, which is not available to this project.
//! - [`TracePreset::Alibaba`], **Alibaba cluster-trace-v2018** (about
//!   4,000 machines over 8 days, online containers colocated with batch
//!   jobs; `machine_meta.csv`, `container_meta.csv`,
//!   `batch_instance.csv`). The fleet is homogeneous: 96 cores per
//!   machine, as in the trace. Memory is normalized in the trace; 1.0 is
//!   taken as 384 GiB (4 GiB per core, an assumption). Containers (30%
//!   of jobs) request whole cores, mostly 4 or 8 (`cpu_request` 400 and
//!   800, in hundredths of a core); the shares of 1, 2, 4, 8 and 16
//!   cores (10, 15, 45, 25, 5%) are approximate. Their memory is
//!   lognormal, median 1/24 of the machine (16 GiB), σ 0.5, correlated
//!   with the cores (ρ 0.7); jobs (applications) of median 4 containers
//!   (σ 1.2). Batch instances (70% of jobs) request about one core
//!   (`plan_cpu` 100), lognormal with σ 0.5, and memory of median 0.9%
//!   of the machine (3.5 GiB), σ 0.8, correlation 0.3; jobs of median 4
//!   instances (σ 1.5). Containers are then about 22% of the tasks, and
//!   cpu and memory fill almost equally (memory is the scarcer, as the
//!   trace's analyses report). These too approximate the shapes
//!   described by Jiang et al., "Characterizing Co-located Workloads in
//!   Alibaba Cloud Datacenters", IEEE TCC 2020, and Cheng, Chai, Anwar,
//!   "Characterizing Co-located Datacenter Workloads: An Alibaba Case
//!   Study", APSys 2018; they are not fitted values.
//! - [`TracePreset::Mixed`]: the machine shapes of the **Google cluster
//!   trace 2019** (ClusterData2019, the eight cells together; the seven
//!   shapes with more than 5% of the machines, renormalized: 1.0/0.5
//!   23.3%, 0.59/0.33 19.3%, 0.26/0.17 14.7%, 0.71/0.33 10.5%, 0.39/0.33
//!   6.8%, 0.96/0.5 5.8%, 0.71/0.67 5.6% of the trace's machines, as
//!   counted from its machine events by C. Maggioni's analysis comparing
//!   the 2011 and 2019 traces, USI Lugano 2021), scaled with 1.0 = 128
//!   cpus and 768 GiB (an assumption: the trace does not say), requests
//!   capped at 16 cpus and 96 GiB, and a task mix of half the Google
//!   class and half the Alibaba classes (in their 30/70 proportion).
//!   Memory is the scarcer dimension here.
//!
//! # Jobs
//!
//! Tasks come in jobs of identical tasks, as in both traces (a Google job's
//! tasks, an Alibaba batch task's instances or an application's
//! containers): each job draws one request and a task count, lognormal
//! (per class: median and σ), capped at [`MAX_JOB_TASKS`].
//!
//! # How many tasks
//!
//! Jobs are drawn until the next task would take the lower bound on nodes
//! for the total demand (`placement::lower_bound`: per dimension, the
//! fewest nodes, largest first, whose capacity holds the demand) past
//! [`TraceConfig::fill`] of the nodes (90% by default). So at least a
//! tenth of the nodes could stay empty, and packing decides how many of
//! them really do: a packing that uses every node has a ratio of 1/0.9 =
//! 1.11 to the bound.

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use super::{Node, Rng, Task, Workload, milli, valid_agent_id, valid_task_id};
use crate::resources::Scalar;

/// The largest number of tasks of one job.
pub const MAX_JOB_TASKS: u64 = 2_000;

/// The most tasks [`trace_like`] generates, whatever the fill.
pub const MAX_TASKS: usize = 5_000_000;

/// A machine shape of a preset's fleet, in the trace's normalized units.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MachineClass {
    /// Share of the fleet (the shares of a preset add up to 1).
    pub share: f64,
    /// Normalized cpu capacity (1.0 = the preset's `cpu_unit`).
    pub cpus: f64,
    /// Normalized memory capacity (1.0 = the preset's `mem_unit_gib`).
    pub mem: f64,
}

/// How one request dimension of a [`TaskClass`] is distributed, in cpus
/// or GiB.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Size {
    /// Lognormal with this median and σ of its logarithm.
    Lognormal {
        /// The median, in cpus or GiB.
        median: f64,
        /// Standard deviation of the logarithm.
        sigma: f64,
    },
    /// One of a few values by weight: `(weight, value)`.
    Choice(&'static [(f64, f64)]),
}

/// A kind of task of a preset: its share of the jobs and its requests.
///
/// Cpu and memory are drawn from two standard normals correlated with
/// coefficient `rho` (a Gaussian copula: a [`Size::Choice`] picks the
/// value whose cumulative weight covers the normal's quantile).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TaskClass {
    /// Prefix of the task ids, e.g. `"batch"`.
    pub name: &'static str,
    /// Share of the jobs (the shares of a preset add up to 1).
    pub share: f64,
    /// Cpu request, cpus.
    pub cpus: Size,
    /// Memory request, GiB.
    pub mem: Size,
    /// Correlation of the cpu and memory normals.
    pub rho: f64,
    /// Median tasks per job.
    pub job_median: f64,
    /// σ of the log of tasks per job.
    pub job_sigma: f64,
}

/// Which published trace [`trace_like`] imitates; see the module
/// documentation for the numbers and their sources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TracePreset {
    /// Google cluster trace 2011 machine shapes, Google-like task requests.
    Google,
    /// Alibaba cluster-trace-v2018: 96-core machines, containers and batch.
    Alibaba,
    /// Google 2019 machine shapes with the Google and Alibaba task mixes.
    Mixed,
}

const GOOGLE_2011_MACHINES: [MachineClass; 10] = [
    machine(0.5347, 0.5, 0.5),
    machine(0.3074, 0.5, 0.25),
    machine(0.0795, 0.5, 0.75),
    machine(0.0632, 1.0, 1.0),
    machine(0.0099, 0.25, 0.25),
    machine(0.0043, 0.5, 0.12),
    machine(0.0004, 0.5, 0.03),
    machine(0.0003, 0.5, 0.97),
    machine(0.0002, 1.0, 0.5),
    machine(0.0001, 0.5, 0.06),
];

const GOOGLE_2019_MACHINES: [MachineClass; 7] = [
    machine(23.33, 1.0, 0.5),
    machine(19.34, 0.591_797, 0.333_496),
    machine(14.66, 0.259_277, 0.166_748),
    machine(10.48, 0.708_984, 0.333_496),
    machine(6.80, 0.386_719, 0.333_496),
    machine(5.85, 0.958_984, 0.5),
    machine(5.56, 0.708_984, 0.666_992),
];

const ALIBABA_MACHINES: [MachineClass; 1] = [machine(1.0, 1.0, 1.0)];

/// Google-like tasks: medians 0.01 and 0.008 of the 64-cpu / 256 GiB
/// machine.
const GOOGLE_TASK: TaskClass = TaskClass {
    name: "google",
    share: 1.0,
    cpus: Size::Lognormal {
        median: 0.64,
        sigma: 0.8,
    },
    mem: Size::Lognormal {
        median: 2.048,
        sigma: 0.9,
    },
    rho: 0.5,
    job_median: 2.0,
    job_sigma: 1.6,
};

/// Alibaba containers: whole cores; memory median 1/24 of a 384 GiB
/// machine.
const ALIBABA_CONTAINER: TaskClass = TaskClass {
    name: "container",
    share: 0.3,
    cpus: Size::Choice(&[
        (0.10, 1.0),
        (0.15, 2.0),
        (0.45, 4.0),
        (0.25, 8.0),
        (0.05, 16.0),
    ]),
    mem: Size::Lognormal {
        median: 16.0,
        sigma: 0.5,
    },
    rho: 0.7,
    job_median: 4.0,
    job_sigma: 1.2,
};

/// Alibaba batch instances.
const ALIBABA_BATCH: TaskClass = TaskClass {
    name: "batch",
    share: 0.7,
    cpus: Size::Lognormal {
        median: 1.0,
        sigma: 0.5,
    },
    mem: Size::Lognormal {
        median: 3.5,
        sigma: 0.8,
    },
    rho: 0.3,
    job_median: 4.0,
    job_sigma: 1.5,
};

const fn machine(share: f64, cpus: f64, mem: f64) -> MachineClass {
    MachineClass { share, cpus, mem }
}

/// A preset's scale: what a machine capacity of 1.0 is in cpus and in
/// GiB, and the cap on a task's request as a fraction of 1.0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Units {
    /// Cpus of a normalized 1.0.
    pub cpus: f64,
    /// GiB of a normalized 1.0.
    pub mem_gib: f64,
    /// The largest request, as a fraction of 1.0 in each dimension.
    pub max_request: f64,
}

impl TracePreset {
    /// Every preset, in the order the simulator lists them.
    pub const ALL: [TracePreset; 3] = [
        TracePreset::Google,
        TracePreset::Alibaba,
        TracePreset::Mixed,
    ];

    /// `google`, `alibaba` or `mixed`.
    pub const fn name(self) -> &'static str {
        match self {
            TracePreset::Google => "google",
            TracePreset::Alibaba => "alibaba",
            TracePreset::Mixed => "mixed",
        }
    }

    /// The fleet: machine classes and their shares (the shares are
    /// relative weights; [`trace_like`] normalizes them).
    pub fn machines(self) -> &'static [MachineClass] {
        match self {
            TracePreset::Google => &GOOGLE_2011_MACHINES,
            TracePreset::Alibaba => &ALIBABA_MACHINES,
            TracePreset::Mixed => &GOOGLE_2019_MACHINES,
        }
    }

    /// The task classes and their shares of the jobs (relative weights),
    /// with requests in cpus and GiB.
    pub fn tasks(self) -> Vec<TaskClass> {
        match self {
            TracePreset::Google => vec![GOOGLE_TASK],
            TracePreset::Alibaba => vec![ALIBABA_CONTAINER, ALIBABA_BATCH],
            TracePreset::Mixed => vec![
                TaskClass {
                    share: 0.5,
                    ..GOOGLE_TASK
                },
                TaskClass {
                    share: 0.5 * ALIBABA_CONTAINER.share,
                    ..ALIBABA_CONTAINER
                },
                TaskClass {
                    share: 0.5 * ALIBABA_BATCH.share,
                    ..ALIBABA_BATCH
                },
            ],
        }
    }

    /// What 1.0 is in real units, and the request cap.
    pub const fn units(self) -> Units {
        match self {
            TracePreset::Google => Units {
                cpus: 64.0,
                mem_gib: 256.0,
                max_request: 0.25,
            },
            TracePreset::Alibaba => Units {
                cpus: 96.0,
                mem_gib: 384.0,
                max_request: 0.25,
            },
            TracePreset::Mixed => Units {
                cpus: 128.0,
                mem_gib: 768.0,
                max_request: 0.125,
            },
        }
    }
}

impl fmt::Display for TracePreset {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for TracePreset {
    type Err = String;

    /// Parses [`TracePreset::name`].
    fn from_str(s: &str) -> Result<TracePreset, String> {
        TracePreset::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!(
                    "unknown trace preset {} (known: google, alibaba, mixed)",
                    crate::error::quoted(s)
                )
            })
    }
}

/// Knobs of [`trace_like`].
#[derive(Clone, Debug, PartialEq)]
pub struct TraceConfig {
    /// Which trace to imitate.
    pub preset: TracePreset,
    /// Number of nodes.
    pub nodes: usize,
    /// How full the cluster is, in `(0, 1]`: tasks are drawn until the
    /// lower bound on nodes for their demand would pass `fill` of the
    /// nodes (at most [`MAX_TASKS`]). With identical nodes that is `fill`
    /// of the capacity in the most demanded dimension; with a mixed fleet,
    /// more (the bound counts the largest nodes first).
    pub fill: f64,
    /// PRNG seed.
    pub seed: u64,
}

impl TraceConfig {
    /// `nodes` nodes of `preset`, filled to 90%.
    pub fn new(preset: TracePreset, nodes: usize, seed: u64) -> TraceConfig {
        TraceConfig {
            preset,
            nodes,
            fill: 0.9,
            seed,
        }
    }
}

/// A workload imitating a published cluster trace; see the module
/// documentation.
///
/// Nodes are named `node-00000`, ... and have attribute `shape` (e.g.
/// `c32m128`); tasks are named `<class>-<job>-<index>`, e.g.
/// `batch-000042-0003`. A `fill` outside `(0, 1]` is clamped to it.
pub fn trace_like(config: &TraceConfig) -> Workload {
    let mut rng = Rng::new(config.seed);
    let units = config.preset.units();
    let machines = config.preset.machines();
    let machine_weights: Vec<f64> = machines.iter().map(|m| m.share).collect();
    let nodes: Vec<Node> = (0..config.nodes)
        .map(|i| {
            let m = machines[pick(&machine_weights, rng.unit())];
            let cpus = (m.cpus * units.cpus).round().max(1.0) as u64;
            let mem_gib = (m.mem * units.mem_gib).round().max(1.0) as u64;
            Node {
                id: valid_agent_id(format!("node-{i:05}")),
                cpus: Scalar::from_units(cpus),
                mem: Scalar::from_units(mem_gib * 1024),
                disk: Scalar::ZERO,
                attributes: BTreeMap::from([("shape".to_owned(), format!("c{cpus}m{mem_gib}"))]),
            }
        })
        .collect();

    let fill = if config.fill.is_finite() {
        config.fill.clamp(f64::MIN_POSITIVE, 1.0)
    } else {
        1.0
    };
    let limit = demand_limit(&nodes, fill);
    let classes = config.preset.tasks();
    let class_weights: Vec<f64> = classes.iter().map(|c| c.share).collect();
    let max_cpu = (units.max_request * units.cpus * 1000.0) as u64;
    let max_mem = (units.max_request * units.mem_gib * 1024.0 * 1000.0) as u64;

    let mut tasks = Vec::new();
    let mut demand = [0u64; 2];
    'jobs: for job in 0.. {
        let class = classes[pick(&class_weights, rng.unit())];
        let z1 = rng.normal();
        let z2 = class.rho * z1 + (1.0 - class.rho * class.rho).sqrt() * rng.normal();
        let cpus = milli(draw(class.cpus, z1), 10, max_cpu);
        let mem = milli(draw(class.mem, z2) * 1024.0, 8_000, max_mem);
        let count = (class.job_median * (class.job_sigma * rng.normal()).exp())
            .round()
            .clamp(1.0, MAX_JOB_TASKS as f64) as u64;
        for k in 0..count {
            let next = [demand[0] + cpus.milli(), demand[1] + mem.milli()];
            if next[0] > limit[0] || next[1] > limit[1] || tasks.len() >= MAX_TASKS {
                break 'jobs;
            }
            demand = next;
            tasks.push(Task {
                id: valid_task_id(format!("{}-{job:06}-{k:04}", class.name)),
                cpus,
                mem,
                disk: Scalar::ZERO,
                arrival: None,
                duration: None,
                constraints: Vec::new(),
            });
        }
    }
    Workload { nodes, tasks }
}

/// The most demand, `[cpus, mem]` in milli-units, whose lower bound on
/// nodes is at most `fill` of the nodes: in each dimension, the sum of
/// the capacities of the `⌈fill × nodes⌉` largest nodes in that dimension
/// (as `placement::lower_bound` counts them).
fn demand_limit(nodes: &[Node], fill: f64) -> [u64; 2] {
    let count = ((fill * nodes.len() as f64).ceil() as usize).min(nodes.len());
    let top = |mut column: Vec<u64>| -> u64 {
        column.sort_unstable_by(|a, b| b.cmp(a));
        column.iter().take(count).sum()
    };
    [
        top(nodes.iter().map(|n| n.cpus.milli()).collect()),
        top(nodes.iter().map(|n| n.mem.milli()).collect()),
    ]
}

/// The index whose cumulative weight first exceeds `u` (in `[0, 1)`)
/// times the total weight; the last index if rounding leaves none.
fn pick(weights: &[f64], u: f64) -> usize {
    let total: f64 = weights.iter().sum();
    let mut left = u * total;
    for (i, w) in weights.iter().enumerate() {
        if left < *w {
            return i;
        }
        left -= w;
    }
    weights.len().saturating_sub(1)
}

/// A value of `size` for the standard normal sample `z`.
fn draw(size: Size, z: f64) -> f64 {
    match size {
        Size::Lognormal { median, sigma } => median * (sigma * z).exp(),
        Size::Choice(values) => {
            let weights: Vec<f64> = values.iter().map(|v| v.0).collect();
            values[pick(&weights, normal_cdf(z).clamp(0.0, 1.0 - f64::EPSILON))].1
        }
    }
}

/// The standard normal distribution function, from the error function
/// approximation 7.1.26 of Abramowitz and Stegun (absolute error below
/// 1.5e-7, plenty for choosing among a few values).
fn normal_cdf(z: f64) -> f64 {
    let x = z.abs() / std::f64::consts::SQRT_2;
    let t = 1.0 / (1.0 + 0.327_591_1 * x);
    let poly = t
        * (0.254_829_592
            + t * (-0.284_496_736
                + t * (1.421_413_741 + t * (-1.453_152_027 + t * 1.061_405_429))));
    let erf = 1.0 - poly * (-x * x).exp();
    if z >= 0.0 {
        0.5 * (1.0 + erf)
    } else {
        0.5 * (1.0 - erf)
    }
}

#[cfg(test)]
mod tests;
