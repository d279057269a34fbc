//! The `--svg` scaling plot.

use std::fmt::Write as _;
use std::time::Duration;

use berth_scheduler_core::placement::Strategy;

use crate::report::thousands;

/// Line colours, in the order of `Strategy::ALL` (repeated past eight).
const PALETTE: [&str; 8] = [
    "#1f77b4", "#2ca02c", "#d62728", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf",
];

/// A two-panel line plot: utilization at the first failure and time to
/// place the workload, against cluster size, one line per strategy.
pub fn svg(points: &[(usize, Strategy, Duration, f64)], seed: u64) -> String {
    const W: f64 = 960.0;
    const H: f64 = 440.0;
    const PANEL: f64 = 400.0;
    const PLOT_H: f64 = 280.0;
    const TOP: f64 = 70.0;
    // One colour per strategy, by its place in `Strategy::ALL`, so a new
    // strategy gets a line and a legend entry of its own.
    let colors: Vec<(Strategy, &str)> = Strategy::ALL
        .iter()
        .enumerate()
        .map(|(i, s)| (*s, PALETTE[i % PALETTE.len()]))
        .collect();
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
        for &(strategy, color) in &colors {
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
        let x = 60.0 + i as f64 * (W - 120.0) / colors.len().max(1) as f64;
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
