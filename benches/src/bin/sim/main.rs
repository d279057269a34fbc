//! Placement simulator: packs a workload onto a cluster with each placement
//! strategy and reports packing quality, speed and memory.
//!
//! ```sh
//! cargo run --release -p berth-benches --bin sim -- \
//!     --workload heterogeneous --nodes 10000 --tasks 250000 --seed 1 --strategy all
//! cargo run --release -p berth-benches --bin sim -- --workload mesos-multi --scale 125
//! cargo run --release -p berth-benches --bin sim -- --workload trace:google --nodes 10000
//! cargo run --release -p berth-benches --bin sim -- --workload file:cluster.json
//! cargo run --release -p berth-benches --bin sim -- --smoke
//! cargo run --release -p berth-benches --bin sim -- --svg docs/placement-scaling.svg
//! ```
//!
//! Workloads: `heterogeneous` (`--nodes`, `--tasks`, `--seed`; see
//! `berth_scheduler_core::workload::heterogeneous`), `mesos-multi` (Apache
//! Mesos' MultiFrameworkAllocations benchmark, agents and frameworks times
//! `--scale`), `trace:google`, `trace:alibaba`, `trace:mixed` (generated
//! from published cluster-trace statistics, `--nodes`, `--seed`, `--fill`;
//! see `berth_scheduler_core::workload::trace_like`), or `file:PATH` (a
//! workload in the JSON form, or `file:NODES.csv,TASKS.csv` in the CSV
//! form; see docs/workload-format.md).
//!
//! For each strategy it runs, each time on empty nodes with a fresh
//! `Placer`:
//!
//! 1. **online**: every task in arrival order (file order when there are
//!    no arrival times), once; timed `--repeat` times (default 3) from
//!    scratch and the fastest run reported, in wall time and in this
//!    thread's CPU time. Reports tasks placed, placement attempts per
//!    second, nodes used, the lower bound on nodes for the placed
//!    demand (`placement::lower_bound`), their ratio, and stranded
//!    capacity: free cpu and memory on used nodes that cannot host the
//!    smallest task (per-dimension minimum) or the median task, as a share
//!    of those nodes' capacity;
//! 2. **fill**: the task list again and again (up to 20 times) until the
//!    first task that fits nowhere; reports utilization per dimension at
//!    that moment and why the task did not fit;
//! 3. **sorted**: all tasks from scratch in decreasing order of size
//!    (largest share of the largest node first); reports the wall time
//!    (placer built, tasks sorted and placed) and the nodes used.
//!
//! Once per workload, the **offline** packing (see `offline_repack`) packs
//! every task from scratch; each strategy's online result is compared with
//! it (the online/offline gap: online nodes over offline nodes).
//!
//! Memory: bytes per node of the placer's index (its heap), bytes per task
//! (the task record, its heap and its assignment slot) and the process's
//! peak resident set (`VmHWM`).
//!
//! `--svg PATH` also sweeps the heterogeneous workload over 1,000, 2,500,
//! 5,000 and 10,000 nodes (25 tasks per node) and plots utilization at the
//! first failure and the time to place the whole workload against cluster
//! size, one line per strategy.
//!
//! `--smoke` shrinks everything for CI: without `--workload` it runs the
//! heterogeneous workload (300 nodes, 3,000 tasks) and each trace preset
//! (300 nodes, filled to 70%), then checks the packing ratios against the expected ranges
//! of `guard::GUARDS` and fails naming any ratio outside its range. Only
//! ratios are checked, never times: they are deterministic.
//!
//! Results and the machine they came from are in docs/benchmarks.md.

mod guard;
mod plot;
mod report;

use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_scheduler_core::Resources;
use berth_scheduler_core::placement::{
    Placer, Strategy, Unplaced, Utilization, lower_bound, median, repack_workload, smallest,
    stranded,
};
use berth_scheduler_core::workload::{
    Node, Task, TraceConfig, TracePreset, Workload, heterogeneous, mesos_multi_framework,
    trace_like,
};
use clap::Parser;

use crate::report::{share, thousands};

/// How many times the fill phase may go through the task list.
const FILL_ROUNDS: usize = 20;

/// The workloads of `--smoke` without `--workload`.
const SMOKE_WORKLOADS: [&str; 5] = [
    "heterogeneous",
    "mesos-multi",
    "trace:google",
    "trace:alibaba",
    "trace:mixed",
];

/// `--fill` of a full-size trace workload: the lower bound is about 80%
/// of the nodes, so a strategy has room to use more nodes than it needs
/// (at 0.9 every strategy used every node and the tables did not tell them
/// apart).
const DEFAULT_TRACE_FILL: f64 = 0.8;

/// Nodes of a trace workload with `--smoke`.
const SMOKE_TRACE_NODES: usize = 300;

/// `--fill` of a trace workload with `--smoke`: at 0.9 on 60 nodes every
/// strategy uses every node and some tasks fit nowhere, so the ratios
/// would not tell the strategies apart.
const SMOKE_TRACE_FILL: f64 = 0.7;

/// Packing speed and quality of berth's placement strategies.
#[derive(Debug, Parser)]
#[command(name = "sim")]
struct Args {
    /// `heterogeneous` (the default), `mesos-multi`, `trace:google`,
    /// `trace:alibaba`, `trace:mixed`, or `file:PATH` (JSON, or
    /// `file:NODES.csv,TASKS.csv`).
    #[arg(long)]
    workload: Option<String>,
    /// Nodes of the heterogeneous and trace workloads.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Tasks of the heterogeneous workload.
    #[arg(long, default_value_t = 250_000)]
    tasks: usize,
    /// Multiplier of agents and frameworks of mesos-multi (125 gives
    /// 10,000 agents).
    #[arg(long, default_value_t = 125)]
    scale: usize,
    /// Seed of the generated workloads.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// How full a trace workload is: the lower bound on nodes for its
    /// demand is this share of the nodes (default 0.8; 0.7 with --smoke,
    /// where a few dozen nodes leave little room to pack).
    #[arg(long)]
    fill: Option<f64>,
    /// A strategy name (`first-fit`, `tetris`, ...) or `all`.
    #[arg(long, default_value = "all")]
    strategy: String,
    /// A tiny run for CI, with the packing-ratio guards: 300 nodes and
    /// 3,000 tasks (trace workloads 300 nodes, mesos-multi at scale 1), no
    /// sweep; without --workload, the heterogeneous workload and every
    /// trace preset.
    #[arg(long)]
    smoke: bool,
    /// Also sweep cluster sizes and write an SVG plot here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Runs of the online phase; the fastest is reported (1 with --smoke).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
    /// Lowers every smoke guard's upper limit to this ratio (to prove in
    /// tests that a guard fails).
    #[arg(long, hide = true)]
    smoke_max_ratio: Option<f64>,
}

/// Results of one strategy on one workload.
#[derive(Debug)]
struct Row {
    strategy: Strategy,
    tasks: usize,
    placed: usize,
    online: Duration,
    nodes_used: usize,
    bound: Option<usize>,
    /// Stranded share of used capacity (cpu, mem) for the smallest and the
    /// median task.
    stranded_min: (f64, f64),
    stranded_median: (f64, f64),
    first_unplaced: Option<String>,
    /// CPU time of the online phase (this thread), if known.
    online_cpu: Option<Duration>,
    fill: Fill,
    /// The strategy on the tasks sorted largest first.
    sorted: Packed,
    bytes_per_node: f64,
    bytes_per_task: f64,
    peak_rss: Option<u64>,
}

/// A packing of the whole task list from scratch.
#[derive(Debug, Clone)]
struct Packed {
    placed: usize,
    nodes_used: usize,
    /// Lower bound on nodes for the placed demand.
    bound: Option<usize>,
    elapsed: Duration,
}

impl Packed {
    /// Nodes used over the lower bound.
    fn ratio(&self) -> Option<f64> {
        ratio(self.nodes_used, self.bound)
    }
}

/// `used / bound`, if the bound is known and positive.
fn ratio(used: usize, bound: Option<usize>) -> Option<f64> {
    bound.filter(|b| *b > 0).map(|b| used as f64 / b as f64)
}

/// The fill-until-first-failure phase.
#[derive(Debug)]
struct Fill {
    placed: usize,
    elapsed: Duration,
    utilization: Utilization,
    /// Why the first task did not fit, or `None` if every round fit.
    why: Option<Unplaced>,
}

/// One workload's results.
struct Report {
    /// The `--workload` value.
    workload: String,
    rows: Vec<Row>,
    offline: Packed,
}

fn main() -> anyhow::Result<()> {
    let mut args = Args::parse();
    if args.smoke {
        args.nodes = args.nodes.min(300);
        args.tasks = args.tasks.min(3_000);
        args.scale = 1;
    }
    let reps = if args.smoke { 1 } else { args.repeat };
    let strategies: Vec<Strategy> = if args.strategy == "all" {
        Strategy::ALL.to_vec()
    } else {
        vec![args.strategy.parse().map_err(anyhow::Error::msg)?]
    };
    if args.nodes == 0 {
        bail!("--nodes must be at least 1");
    }
    let fill = args.fill.unwrap_or(if args.smoke {
        SMOKE_TRACE_FILL
    } else {
        DEFAULT_TRACE_FILL
    });
    if !(fill > 0.0 && fill <= 1.0) {
        bail!("--fill must be in (0, 1] (got {fill})");
    }
    args.fill = Some(fill);
    let workloads: Vec<String> = match &args.workload {
        Some(w) => vec![w.clone()],
        None if args.smoke => SMOKE_WORKLOADS.map(str::to_owned).to_vec(),
        None => vec!["heterogeneous".to_owned()],
    };

    let started = Instant::now();
    println!(
        "cpu:        {} × {}",
        berth_benches::cpu_count(),
        berth_benches::cpu_model()
    );
    println!(
        "strategies: {}",
        strategies
            .iter()
            .map(|s| s.name())
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut reports = Vec::new();
    for spec in &workloads {
        let t0 = Instant::now();
        let (name, workload) = load(&args, spec)?;
        println!("\n# sim: {name}");
        println!(
            "workload: {} nodes, {} tasks, generated/read in {:.2} s",
            thousands(workload.nodes.len()),
            thousands(workload.tasks.len()),
            t0.elapsed().as_secs_f64()
        );
        let (cap, demand) = (workload.total_capacity(), workload.total_demand());
        println!(
            "demand:   {:.1}% of cpu, {:.1}% of mem, {:.1}% of disk",
            100.0 * share(&demand, &cap, 0),
            100.0 * share(&demand, &cap, 1),
            100.0 * share(&demand, &cap, 2)
        );
        println!();
        let rows: Vec<Row> = strategies
            .iter()
            .map(|&s| run(&workload, s, reps, true))
            .collect();
        let tasks: Vec<&Task> = workload.tasks.iter().collect();
        let offline = offline_repack(&workload.nodes, &tasks);
        report::print(&rows, &offline, OFFLINE);
        reports.push(Report {
            workload: spec.clone(),
            rows,
            offline,
        });
    }

    if let Some(path) = &args.svg {
        let sizes: &[usize] = if args.smoke {
            &[100, 200]
        } else {
            &[1_000, 2_500, 5_000, 10_000]
        };
        let mut points = Vec::new();
        for &n in sizes {
            let w = heterogeneous(n, n * 25, args.seed);
            for &s in &strategies {
                let r = run(&w, s, reps, false);
                println!(
                    "sweep: {n:>6} nodes {:>13}: {:>8.1} ms to place {} tasks, fill to {:.1}% (max dimension)",
                    s.name(),
                    r.online.as_secs_f64() * 1e3,
                    thousands(r.tasks),
                    100.0 * r.fill.utilization.max()
                );
                points.push((n, s, r.online, r.fill.utilization.max()));
            }
        }
        std::fs::write(path, plot::svg(&points, args.seed))
            .with_context(|| format!("writing {}", path.display()))?;
        println!("wrote {}", path.display());
    }
    println!(
        "\ntotal {:.1} s, peak RSS {}",
        started.elapsed().as_secs_f64(),
        peak_rss().map_or("unknown".to_owned(), |kib| format!(
            "{:.1} MiB",
            kib as f64 / 1024.0
        ))
    );
    if args.smoke {
        let observed = guard::observed(&reports);
        let checked = guard::check(&observed, args.smoke_max_ratio).map_err(anyhow::Error::msg)?;
        println!("packing guards: {checked} ratios within their ranges");
    }
    Ok(())
}

fn load(args: &Args, spec: &str) -> anyhow::Result<(String, Workload)> {
    if let Some(preset) = spec.strip_prefix("trace:") {
        let preset: TracePreset = preset.parse().map_err(anyhow::Error::msg)?;
        let nodes = if args.smoke {
            args.nodes.min(SMOKE_TRACE_NODES)
        } else {
            args.nodes
        };
        let fill = args.fill.unwrap_or(DEFAULT_TRACE_FILL);
        let config = TraceConfig {
            fill,
            ..TraceConfig::new(preset, nodes, args.seed)
        };
        return Ok((
            format!(
                "trace-like {preset}, {} nodes, filled to {:.0}%, seed {}",
                thousands(nodes),
                100.0 * fill,
                args.seed
            ),
            trace_like(&config),
        ));
    }
    match spec {
        "heterogeneous" => Ok((
            format!(
                "heterogeneous, {} nodes, {} tasks, seed {}",
                thousands(args.nodes),
                thousands(args.tasks),
                args.seed
            ),
            heterogeneous(args.nodes, args.tasks, args.seed),
        )),
        "mesos-multi" => Ok((
            format!("mesos MultiFrameworkAllocations × {}", args.scale),
            mesos_multi_framework(args.scale),
        )),
        other => {
            let Some(path) = other.strip_prefix("file:") else {
                bail!(
                    "unknown workload {other:?} (heterogeneous, mesos-multi, trace:google, trace:alibaba, trace:mixed or file:PATH)"
                );
            };
            let read = |p: &str| std::fs::read_to_string(p).with_context(|| format!("reading {p}"));
            let w = match path.split_once(',') {
                Some((nodes, tasks)) => Workload::from_csv(&read(nodes)?, &read(tasks)?)?,
                None => Workload::from_json(&read(path)?)?,
            };
            Ok((format!("file {path}"), w))
        }
    }
}

/// Runs every phase of one strategy.
fn run(w: &Workload, strategy: Strategy, reps: usize, print_progress: bool) -> Row {
    // Arrival order (stable: file order among equal or missing times).
    let mut order: Vec<&Task> = w.tasks.iter().collect();
    order.sort_by_key(|t| t.arrival);

    // 1. Online, `reps` times from scratch; the fastest run counts (the
    // others ran into whatever else the machine was doing). Every run
    // makes the same placements.
    let mut best: Option<(Duration, Option<Duration>)> = None;
    let mut last = None;
    for _ in 0..reps.max(1) {
        let mut placer = Placer::new(&w.nodes, strategy);
        let mut placed = 0;
        let mut first_unplaced = None;
        let cpu0 = thread_cpu();
        let t0 = Instant::now();
        for t in &order {
            match placer.try_place(t) {
                Some(_) => placed += 1,
                None if first_unplaced.is_none() => {
                    first_unplaced = Some(format!("{}: {}", t.id, placer.explain(t)));
                }
                None => {}
            }
        }
        let wall = t0.elapsed();
        let cpu = thread_cpu().zip(cpu0).map(|(b, a)| b.saturating_sub(a));
        if best.is_none_or(|(w, _)| wall < w) {
            best = Some((wall, cpu));
        }
        last = Some((placer, placed, first_unplaced));
    }
    let (online, online_cpu) = best.unwrap_or_default();
    let Some((placer, placed, first_unplaced)) = last else {
        unreachable!("at least one run")
    };
    let caps: Vec<Resources> = w.nodes.iter().map(Node::resources).collect();
    let bound = lower_bound(&caps, &placer.allocated());
    let demands: Vec<Resources> = w.tasks.iter().map(Task::resources).collect();
    let used_cap = placer
        .nodes()
        .filter(|(_, _, n)| *n > 0)
        .fold(Resources::empty(), |acc, (c, _, _)| acc + c);
    let strand = |reference: &Resources| {
        let s = stranded(placer.nodes(), reference);
        (share(&s, &used_cap, 0), share(&s, &used_cap, 1))
    };
    let stranded_min = strand(&smallest(&demands));
    let stranded_median = strand(&median(&demands));
    let nodes_used = placer.nodes_used();
    let bytes_per_node = placer.heap_bytes() as f64 / w.nodes.len().max(1) as f64;
    drop(placer);
    if print_progress {
        eprintln!(
            "{}: online {:.2} s, {} of {} placed on {} nodes",
            strategy,
            online.as_secs_f64(),
            thousands(placed),
            thousands(order.len()),
            thousands(nodes_used)
        );
    }

    // 2. Fill until the first failure.
    let fill = fill(w, &order, strategy);

    // 3. This strategy on the tasks sorted largest first.
    let sorted = sorted_repack(&w.nodes, &w.tasks.iter().collect::<Vec<_>>(), strategy);

    let task_heap: usize = w
        .tasks
        .iter()
        .map(|t| {
            t.id.as_str().len()
                + t.constraints.capacity()
                    * std::mem::size_of::<berth_scheduler_core::workload::Constraint>()
                + t.constraints
                    .iter()
                    .map(|c| c.attribute.capacity() + c.value.capacity())
                    .sum::<usize>()
        })
        .sum();
    let bytes_per_task = (std::mem::size_of::<Task>() + std::mem::size_of::<Option<usize>>())
        as f64
        + task_heap as f64 / w.tasks.len().max(1) as f64;

    Row {
        strategy,
        tasks: order.len(),
        placed,
        online,
        nodes_used,
        bound,
        stranded_min,
        stranded_median,
        first_unplaced,
        online_cpu,
        fill,
        sorted,
        bytes_per_node,
        bytes_per_task,
        peak_rss: peak_rss(),
    }
}

fn fill(w: &Workload, order: &[&Task], strategy: Strategy) -> Fill {
    let mut placer = Placer::new(&w.nodes, strategy);
    let mut placed = 0;
    let t0 = Instant::now();
    let mut why = None;
    'rounds: for _ in 0..FILL_ROUNDS {
        for t in order {
            if placer.try_place(t).is_some() {
                placed += 1;
            } else {
                why = Some(placer.explain(t));
                break 'rounds;
            }
        }
    }
    Fill {
        placed,
        elapsed: t0.elapsed(),
        utilization: Utilization::of(&placer.allocated(), &placer.total_capacity()),
        why,
    }
}

/// `strategy` on `tasks` sorted in decreasing order of size (largest
/// share of the largest node first), from empty nodes, as an offline
/// re-pack would.
fn sorted_repack(nodes: &[Node], tasks: &[&Task], strategy: Strategy) -> Packed {
    let t0 = Instant::now();
    let mut largest = [0u64; 3];
    for n in nodes {
        largest[0] = largest[0].max(n.cpus.milli());
        largest[1] = largest[1].max(n.mem.milli());
        largest[2] = largest[2].max(n.disk.milli());
    }
    let size = |t: &Task| {
        let d = [t.cpus.milli(), t.mem.milli(), t.disk.milli()];
        (0..3)
            .filter(|&k| largest[k] > 0)
            .map(|k| d[k] as f64 / largest[k] as f64)
            .fold(0.0, f64::max)
    };
    let mut by_size: Vec<(f64, &Task)> = tasks.iter().map(|t| (size(t), *t)).collect();
    by_size.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut placer = Placer::new(nodes, strategy);
    let placed = by_size
        .iter()
        .filter(|(_, t)| placer.try_place(t).is_some())
        .count();
    let elapsed = t0.elapsed();
    let caps: Vec<Resources> = nodes.iter().map(Node::resources).collect();
    Packed {
        placed,
        nodes_used: placer.nodes_used(),
        bound: lower_bound(&caps, &placer.allocated()),
        elapsed,
    }
}

/// What the offline packing of the tables is.
const OFFLINE: &str =
    "placement::repack_workload (nodes largest first, filled from shape bins in proportion)";

/// The offline packing every strategy's online result is compared with:
/// [`repack_workload`], every task known up front.
fn offline_repack(nodes: &[Node], tasks: &[&Task]) -> Packed {
    let t0 = Instant::now();
    let result = repack_workload(nodes, tasks);
    let elapsed = t0.elapsed();
    let caps: Vec<Resources> = nodes.iter().map(Node::resources).collect();
    Packed {
        placed: result.placed(),
        nodes_used: result.nodes_used,
        bound: lower_bound(&caps, &result.allocated()),
        elapsed,
    }
}

/// CPU time (user + system) of the calling thread so far, from
/// /proc/thread-self/stat (10 ms resolution). On a shared machine this is
/// what the work cost, whatever else ran.
fn thread_cpu() -> Option<Duration> {
    let stat = std::fs::read_to_string("/proc/thread-self/stat").ok()?;
    // Fields after the parenthesized command name; utime and stime are
    // fields 14 and 15 of the whole line, in clock ticks of 1/100 s.
    let rest = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let utime: u64 = fields.get(11)?.parse().ok()?;
    let stime: u64 = fields.get(12)?.parse().ok()?;
    Some(Duration::from_millis((utime + stime) * 10))
}

/// Peak resident set size in KiB (`VmHWM` of /proc/self/status).
fn peak_rss() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
