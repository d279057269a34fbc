//! The simulator's tables: packing quality (online, offline, their gap,
//! stranded capacity), then speed and memory.

use std::time::Duration;

use berth_scheduler_core::Resources;

use crate::{FILL_ROUNDS, Packed, Row, ratio};

/// A ratio with three decimals, or `–`.
fn fmt_ratio(r: Option<f64>) -> String {
    r.map_or("–".to_owned(), |r| format!("{r:.3}"))
}

/// Prints the tables of one workload: `offline` is the offline packing,
/// described by `offline_name`.
pub fn print(rows: &[Row], offline: &Packed, offline_name: &str) {
    println!(
        "| strategy | placed | nodes used | lower bound | online ratio | offline nodes | offline ratio | online/offline gap | stranded cpu / mem (smallest task) | stranded cpu / mem (median task) | sorted largest first: nodes (ratio) | utilization at first failure cpu / mem |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        let gap = if offline.nodes_used > 0 {
            format!(
                "{:+.1}%",
                100.0 * (r.nodes_used as f64 / offline.nodes_used as f64 - 1.0)
            )
        } else {
            "–".to_owned()
        };
        println!(
            "| {} | {} / {} | {} | {} | {} | {} | {} | {} | {:.1}% / {:.1}% | {:.1}% / {:.1}% | {} ({}) | {:.1}% / {:.1}% |",
            r.strategy,
            thousands(r.placed),
            thousands(r.tasks),
            thousands(r.nodes_used),
            r.bound.map_or("–".to_owned(), thousands),
            fmt_ratio(ratio(r.nodes_used, r.bound)),
            thousands(offline.nodes_used),
            fmt_ratio(offline.ratio()),
            gap,
            100.0 * r.stranded_min.0,
            100.0 * r.stranded_min.1,
            100.0 * r.stranded_median.0,
            100.0 * r.stranded_median.1,
            thousands(r.sorted.nodes_used),
            fmt_ratio(r.sorted.ratio()),
            100.0 * r.fill.utilization.cpus,
            100.0 * r.fill.utilization.mem,
        );
    }
    println!(
        "\noffline: {offline_name}: {} of {} tasks on {} nodes, lower bound {}, in {:.2} s",
        thousands(offline.placed),
        rows.first().map_or("?".to_owned(), |r| thousands(r.tasks)),
        thousands(offline.nodes_used),
        offline.bound.map_or("–".to_owned(), thousands),
        offline.elapsed.as_secs_f64()
    );
    println!();
    println!(
        "| strategy | tasks/s (wall) | tasks/s (CPU) | sorted s | bytes/node | bytes/task | peak RSS MiB |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for r in rows {
        println!(
            "| {} | {} | {} | {:.2} | {:.0} | {:.0} | {} |",
            r.strategy,
            thousands((r.tasks as f64 / r.online.as_secs_f64().max(1e-9)) as usize),
            // Ticks are 10 ms: too coarse below a fifth of a second.
            r.online_cpu
                .filter(|c| *c >= Duration::from_millis(200))
                .map_or("–".to_owned(), |c| thousands(
                    (r.tasks as f64 / c.as_secs_f64()) as usize
                )),
            r.sorted.elapsed.as_secs_f64(),
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
pub fn share(part: &Resources, whole: &Resources, k: usize) -> f64 {
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

/// `n` with thousands separators: `12,345`.
pub fn thousands(n: usize) -> String {
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
