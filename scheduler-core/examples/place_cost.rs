//! The cost of one placement at several cluster sizes, for an instruction
//! counter: builds the heterogeneous workload with 25 tasks per node and
//! places every task once, in arrival order, in `place_all` (never
//! inlined, so `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect='*place_all*'` counts the placements alone).
//!
//! ```sh
//! cargo build --release -p berth-scheduler-core --example place_cost
//! valgrind --tool=callgrind --collect-atstart=no --toggle-collect='*place_all*' \
//!     target/release/examples/place_cost balanced-fill 10000
//! ```
//!
//! Prints the tasks placed and the nodes used; the instruction count per
//! task is callgrind's total divided by the tasks.

use std::hint::black_box;
use std::process::ExitCode;

use berth_scheduler_core::placement::{Placer, Strategy};
use berth_scheduler_core::workload::{Task, heterogeneous};

#[inline(never)]
fn place_all(placer: &mut Placer, tasks: &[Task]) -> usize {
    let mut placed = 0;
    for t in tasks {
        placed += usize::from(placer.try_place(black_box(t)).is_some());
    }
    placed
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (Some(strategy), Some(nodes)) = (args.first(), args.get(1)) else {
        eprintln!("usage: place_cost STRATEGY NODES");
        return ExitCode::from(2);
    };
    let strategy: Strategy = match strategy.parse() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    let Ok(nodes) = nodes.parse::<usize>() else {
        eprintln!(
            "NODES must be a whole number (got {})",
            berth_scheduler_core::error::quoted(nodes)
        );
        return ExitCode::from(2);
    };
    let w = heterogeneous(nodes, 25 * nodes, 1);
    let mut placer = Placer::new(&w.nodes, strategy);
    let placed = place_all(&mut placer, &w.tasks);
    println!(
        "{strategy}: {nodes} nodes, {placed} of {} tasks placed on {} nodes",
        w.tasks.len(),
        placer.nodes_used()
    );
    ExitCode::SUCCESS
}
