//! Placement simulator: packs a workload onto a cluster with each placement
//! strategy and reports speed, packing quality and memory.
//!
//! ```sh
//! cargo run --release -p berth-benches --bin sim -- \
//!     --workload heterogeneous --nodes 10000 --tasks 250000 --seed 1 --strategy all
//! cargo run --release -p berth-benches --bin sim -- --workload mesos-multi --scale 125
//! cargo run --release -p berth-benches --bin sim -- --workload file:cluster.json
//! cargo run --release -p berth-benches --bin sim -- --smoke
//! cargo run --release -p berth-benches --bin sim -- --svg docs/placement-scaling.svg
//! ```
//!
//! Workloads: `heterogeneous` (`--nodes`, `--tasks`, `--seed`; see
//! `berth_scheduler_core::workload::heterogeneous`), `mesos-multi` (Apache
//! Mesos' MultiFrameworkAllocations benchmark, agents and frameworks times
//! `--scale`), or `file:PATH` (a workload in the JSON form, or
//! `file:NODES.csv,TASKS.csv` in the CSV form; see docs/workload-format.md).
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
//! 3. **repack**: all tasks from scratch in decreasing order of size
//!    (largest share of the largest node first), as an offline re-pack
//!    would; reports the wall time (placer built, tasks sorted and placed)
//!    and the nodes used.
//!
//! Memory: bytes per node of the placer's index (its heap), bytes per task
//! (the task record, its heap and its assignment slot) and the process's
//! peak resident set (`VmHWM`).
//!
//! `--svg PATH` also sweeps the heterogeneous workload over 1,000, 2,500,
//! 5,000 and 10,000 nodes (25 tasks per node) and plots utilization at the
//! first failure and the time to place the whole workload against cluster
//! size. `--smoke` shrinks everything to a few hundred nodes (for CI).
//!
//! Results and the machine they came from are in docs/benchmarks.md.

use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use berth_scheduler_core::Resources;
use berth_scheduler_core::placement::{
    Placer, Strategy, Unplaced, Utilization, lower_bound, median, smallest, stranded,
};
use berth_scheduler_core::workload::{Node, Task, Workload, heterogeneous, mesos_multi_framework};
use clap::Parser;

/// How many times the fill phase may go through the task list.
const FILL_ROUNDS: usize = 20;

/// Packing speed and quality of berth's placement strategies.
#[derive(Debug, Parser)]
#[command(name = "sim")]
struct Args {
    /// `heterogeneous`, `mesos-multi`, or `file:PATH` (JSON, or
    /// `file:NODES.csv,TASKS.csv`).
    #[arg(long, default_value = "heterogeneous")]
    workload: String,
    /// Nodes of the heterogeneous workload.
    #[arg(long, default_value_t = 10_000)]
    nodes: usize,
    /// Tasks of the heterogeneous workload.
    #[arg(long, default_value_t = 250_000)]
    tasks: usize,
    /// Multiplier of agents and frameworks of mesos-multi (125 gives
    /// 10,000 agents).
    #[arg(long, default_value_t = 125)]
    scale: usize,
    /// Seed of the heterogeneous workload.
    #[arg(long, default_value_t = 1)]
    seed: u64,
    /// `first-fit`, `best-fit`, `worst-fit`, `tetris` or `all`.
    #[arg(long, default_value = "all")]
    strategy: String,
    /// A tiny run for CI: 300 nodes and 3,000 tasks (or mesos-multi at
    /// scale 1), no sweep.
    #[arg(long)]
    smoke: bool,
    /// Also sweep cluster sizes and write an SVG plot here.
    #[arg(long)]
    svg: Option<PathBuf>,
    /// Runs of the online phase; the fastest is reported (1 with --smoke).
    #[arg(long, default_value_t = 3)]
    repeat: usize,
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
    repack: Duration,
    repack_nodes: usize,
    repack_bound: Option<usize>,
    bytes_per_node: f64,
    bytes_per_task: f64,
    peak_rss: Option<u64>,
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

    let started = Instant::now();
    let (name, workload) = load(&args)?;
    println!("# sim: {name}");
    println!(
        "cpu:      {} × {}",
        berth_benches::cpu_count(),
        berth_benches::cpu_model()
    );
    println!(
        "workload: {} nodes, {} tasks, generated/read in {:.2} s",
        thousands(workload.nodes.len()),
        thousands(workload.tasks.len()),
        started.elapsed().as_secs_f64()
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
    print_table(&rows);

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
                    "sweep: {n:>6} nodes {:>10}: {:>8.1} ms to place {} tasks, fill to {:.1}% (max dimension)",
                    s.name(),
                    r.online.as_secs_f64() * 1e3,
                    thousands(r.tasks),
                    100.0 * r.fill.utilization.max()
                );
                points.push((n, s, r.online, r.fill.utilization.max()));
            }
        }
        std::fs::write(path, svg(&points, args.seed))
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
    Ok(())
}

fn load(args: &Args) -> anyhow::Result<(String, Workload)> {
    match args.workload.as_str() {
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
                bail!("unknown workload {other:?} (heterogeneous, mesos-multi or file:PATH)");
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

    // 3. Repack, largest first.
    let t0 = Instant::now();
    let mut largest = [0u64; 3];
    for n in &w.nodes {
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
    let mut by_size: Vec<(f64, &Task)> = w.tasks.iter().map(|t| (size(t), t)).collect();
    by_size.sort_by(|a, b| b.0.total_cmp(&a.0));
    let mut placer = Placer::new(&w.nodes, strategy);
    for (_, t) in &by_size {
        let _ = placer.try_place(t);
    }
    let repack = t0.elapsed();
    let repack_nodes = placer.nodes_used();
    let repack_bound = lower_bound(&caps, &placer.allocated());
    drop(placer);

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
        repack,
        repack_nodes,
        repack_bound,
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

fn print_table(rows: &[Row]) {
    println!(
        "| strategy | placed | tasks/s (wall) | tasks/s (CPU) | nodes used | lower bound | ratio | stranded cpu / mem (smallest task) | stranded cpu / mem (median task) | utilization at first failure cpu / mem | repack s | repack nodes (ratio) | bytes/node | bytes/task | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let ratio = |used: usize, bound: Option<usize>| match bound {
            Some(b) if b > 0 => format!("{:.3}", used as f64 / b as f64),
            _ => "–".to_owned(),
        };
        println!(
            "| {} | {} / {} | {} | {} | {} | {} | {} | {:.1}% / {:.1}% | {:.1}% / {:.1}% | {:.1}% / {:.1}% | {:.2} | {} ({}) | {:.0} | {:.0} | {} |",
            r.strategy,
            thousands(r.placed),
            thousands(r.tasks),
            thousands((r.tasks as f64 / r.online.as_secs_f64().max(1e-9)) as usize),
            // Ticks are 10 ms: too coarse below a fifth of a second.
            r.online_cpu
                .filter(|c| *c >= Duration::from_millis(200))
                .map_or("–".to_owned(), |c| thousands(
                    (r.tasks as f64 / c.as_secs_f64()) as usize
                )),
            thousands(r.nodes_used),
            r.bound.map_or("–".to_owned(), thousands),
            ratio(r.nodes_used, r.bound),
            100.0 * r.stranded_min.0,
            100.0 * r.stranded_min.1,
            100.0 * r.stranded_median.0,
            100.0 * r.stranded_median.1,
            100.0 * r.fill.utilization.cpus,
            100.0 * r.fill.utilization.mem,
            r.repack.as_secs_f64(),
            thousands(r.repack_nodes),
            ratio(r.repack_nodes, r.repack_bound),
            r.bytes_per_node,
            r.bytes_per_task,
            r.peak_rss.map_or("–".to_owned(), |kib| format!(
                "{:.0}",
                kib as f64 / 1024.0
            )),
        );
    }
    println!();
    for r in rows {
        println!(
            "{}: online {:.3} s wall, {} CPU; fill placed {} tasks in {:.2} s ({}/s) then: {}",
            r.strategy,
            r.online.as_secs_f64(),
            r.online_cpu.map_or("unknown".to_owned(), |c| format!(
                "{:.2} s",
                c.as_secs_f64()
            )),
            thousands(r.fill.placed),
            r.fill.elapsed.as_secs_f64(),
            thousands((r.fill.placed as f64 / r.fill.elapsed.as_secs_f64().max(1e-9)) as usize),
            r.fill.why.as_ref().map_or(
                format!("no failure in {FILL_ROUNDS} rounds"),
                ToString::to_string
            )
        );
        if let Some(u) = &r.first_unplaced {
            println!("{}: first unplaced online: {u}", r.strategy);
        }
    }
}

/// `part / whole` in dimension `k` (0 cpus, 1 mem, 2 disk).
fn share(part: &Resources, whole: &Resources, k: usize) -> f64 {
    let pick = |r: &Resources| match k {
        0 => r.cpus.milli(),
        1 => r.mem.milli(),
        _ => r.disk.milli(),
    };
    let w = pick(whole);
    if w == 0 {
        0.0
    } else {
        pick(part) as f64 / w as f64
    }
}

fn thousands(n: usize) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (i, ch) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(ch);
    }
    out
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

/// A two-panel line plot: utilization at the first failure and time to
/// place the workload, against cluster size, one line per strategy.
fn svg(points: &[(usize, Strategy, Duration, f64)], seed: u64) -> String {
    const W: f64 = 960.0;
    const H: f64 = 440.0;
    const PANEL: f64 = 400.0;
    const PLOT_H: f64 = 280.0;
    const TOP: f64 = 70.0;
    let colors = [
        (Strategy::FirstFit, "#1f77b4"),
        (Strategy::BestFit, "#2ca02c"),
        (Strategy::WorstFit, "#d62728"),
        (Strategy::Tetris, "#9467bd"),
    ];
    let max_n = points.iter().map(|p| p.0).max().unwrap_or(1) as f64;
    let max_ms = points
        .iter()
        .map(|p| p.2.as_secs_f64() * 1e3)
        .fold(0.0, f64::max)
        .max(1.0);
    // A round upper limit for the time axis.
    let step = (0..8)
        .flat_map(|e| [1.0, 2.0, 5.0].map(|m| m * 10f64.powi(e)))
        .find(|s| s * 5.0 >= max_ms)
        .unwrap_or(max_ms / 5.0);
    let ms_top = step * 5.0;

    let mut s = String::new();
    let _ = writeln!(
        s,
        r##"<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="{H}" viewBox="0 0 {W} {H}" font-family="sans-serif" font-size="12">"##
    );
    let _ = writeln!(s, r##"<rect width="{W}" height="{H}" fill="white"/>"##);
    let _ = writeln!(
        s,
        r##"<text x="{}" y="22" text-anchor="middle" font-size="15">berth placement on the heterogeneous workload (25 tasks per node, seed {seed})</text>"##,
        W / 2.0
    );
    for (panel, title) in [
        (
            0,
            "utilization of the most used dimension at the first failure (%)",
        ),
        (1, "time to place every task once (ms)"),
    ] {
        let x0 = 60.0 + panel as f64 * (PANEL + 80.0);
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle">{title}</text>"##,
            x0 + PANEL / 2.0,
            TOP - 14.0
        );
        let _ = writeln!(
            s,
            r##"<rect x="{x0}" y="{TOP}" width="{PANEL}" height="{PLOT_H}" fill="none" stroke="#888"/>"##
        );
        // Y grid.
        for i in 0..=5 {
            let y = TOP + PLOT_H - PLOT_H * i as f64 / 5.0;
            let label = if panel == 0 {
                format!("{}", 50 + i * 10)
            } else {
                format!("{}", step * i as f64)
            };
            let _ = writeln!(
                s,
                r##"<line x1="{x0}" y1="{y}" x2="{}" y2="{y}" stroke="#ddd"/><text x="{}" y="{}" text-anchor="end">{label}</text>"##,
                x0 + PANEL,
                x0 - 6.0,
                y + 4.0
            );
        }
        // X ticks at the measured sizes.
        let mut sizes: Vec<usize> = points.iter().map(|p| p.0).collect();
        sizes.dedup();
        for n in &sizes {
            let x = x0 + PANEL * (*n as f64 / max_n);
            let _ = writeln!(
                s,
                r##"<line x1="{x}" y1="{}" x2="{x}" y2="{}" stroke="#888"/><text x="{x}" y="{}" text-anchor="middle">{}</text>"##,
                TOP + PLOT_H,
                TOP + PLOT_H + 5.0,
                TOP + PLOT_H + 18.0,
                thousands(*n)
            );
        }
        let _ = writeln!(
            s,
            r##"<text x="{}" y="{}" text-anchor="middle">nodes</text>"##,
            x0 + PANEL / 2.0,
            TOP + PLOT_H + 36.0
        );
        for (strategy, color) in colors {
            let pts: Vec<(f64, f64)> = points
                .iter()
                .filter(|p| p.1 == strategy)
                .map(|p| {
                    let x = x0 + PANEL * (p.0 as f64 / max_n);
                    let frac = if panel == 0 {
                        ((p.3 * 100.0 - 50.0) / 50.0).clamp(0.0, 1.0)
                    } else {
                        (p.2.as_secs_f64() * 1e3 / ms_top).clamp(0.0, 1.0)
                    };
                    (x, TOP + PLOT_H - PLOT_H * frac)
                })
                .collect();
            if pts.is_empty() {
                continue;
            }
            let path: Vec<String> = pts.iter().map(|(x, y)| format!("{x:.1},{y:.1}")).collect();
            let _ = writeln!(
                s,
                r##"<polyline points="{}" fill="none" stroke="{color}" stroke-width="2"/>"##,
                path.join(" ")
            );
            for (x, y) in pts {
                let _ = writeln!(
                    s,
                    r##"<circle cx="{x:.1}" cy="{y:.1}" r="3" fill="{color}"/>"##
                );
            }
        }
    }
    // Legend.
    for (i, (strategy, color)) in colors.iter().enumerate() {
        if !points.iter().any(|p| p.1 == *strategy) {
            continue;
        }
        let x = 60.0 + i as f64 * 150.0;
        let y = H - 20.0;
        let _ = writeln!(
            s,
            r##"<line x1="{x}" y1="{y}" x2="{}" y2="{y}" stroke="{color}" stroke-width="3"/><text x="{}" y="{}">{}</text>"##,
            x + 24.0,
            x + 30.0,
            y + 4.0,
            strategy.name()
        );
    }
    s.push_str("</svg>\n");
    s
}
