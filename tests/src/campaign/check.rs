//! What the campaign holds berth to, turned into violations: each run's
//! exit code, marks and output; the re-attach bars; convergence.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use super::Config;
use super::faults::{FaultKind, FaultRecord};
use super::observe::Convergence;
use super::report::{Percentiles, Violation};
use super::runs::RunOutcome;

/// berth's own exit codes for a clear failure of `berth run` (as
/// `docker run`'s): never a task's code in the campaign.
const BERTH_CODES: [i32; 3] = [125, 126, 127];

/// How many times each run's task really executed (lines in its mark file).
pub(crate) fn executions(marks: &Path, run: &str) -> usize {
    std::fs::read_to_string(marks.join(run)).map_or(0, |t| t.lines().count())
}

/// Every run must exit with its task's code, its task must have run
/// exactly once, and its whole output must have been shown once.
pub(crate) fn runs(outcomes: &[RunOutcome], marks: &Path) -> Vec<Violation> {
    let mut out = Vec::new();
    for o in outcomes {
        let name = &o.plan.name;
        let code = i32::from(o.plan.code);
        let ran = executions(marks, name);
        if ran > 1 {
            let lines = std::fs::read_to_string(marks.join(name)).unwrap_or_default();
            out.push(Violation::new(
                "ran-twice",
                format!(
                    "{name}'s task ran {ran} times: {}",
                    lines.trim().replace('\n', " | ")
                ),
            ));
        }
        let printed_start = o.stdout.contains(&format!("started {name}"));
        if o.hung {
            out.push(Violation::new(
                "hung",
                format!(
                    "{name} was still running when the run timeout passed (killed); task ran {ran}×; stderr ends: {}",
                    tail(&o.stderr)
                ),
            ));
            continue;
        }
        if o.exit != Some(code) {
            let exit = o
                .exit
                .map_or_else(|| "without a code".to_string(), |c| c.to_string());
            let berth = o
                .exit
                .filter(|c| BERTH_CODES.contains(c))
                .map_or("", |_| " (berth's own failure code)");
            let (what, why) = if printed_start {
                ("lost", "printed its task started, then ")
            } else if ran > 0 {
                ("lost", "its task ran, but it ")
            } else {
                ("exit", "")
            };
            out.push(Violation::new(
                what,
                format!(
                    "{name} {why}exited {exit}{berth} instead of its task's {code}; task ran {ran}×; stderr ends: {}",
                    tail(&o.stderr)
                ),
            ));
            continue;
        }
        if ran == 0 {
            out.push(Violation::new(
                "exit",
                format!("{name} exited with its task's code {code} but the task never ran"),
            ));
            continue;
        }
        let count = |line: &str| o.stdout.lines().filter(|l| *l == line).count();
        let (s, d) = (
            count(&format!("started {name}")),
            count(&format!("done {name}")),
        );
        if (s, d) != (1, 1) {
            out.push(Violation::new(
                "output",
                format!("{name} showed its task's output incompletely: `started` {s}×, `done` {d}× (want 1× each)"),
            ));
        }
    }
    out
}

/// Enough faults, every leader fault re-attached, and for each kind with
/// a bar, p99 within it.
pub(crate) fn faults(config: &Config, records: &[FaultRecord]) -> Vec<Violation> {
    let mut out = Vec::new();
    if records.len() < config.min_faults {
        out.push(Violation::new(
            "campaign",
            format!(
                "only {} of {} faults were injected",
                records.len(),
                config.min_faults
            ),
        ));
    }
    let mut per_kind: BTreeMap<FaultKind, Vec<f64>> = BTreeMap::new();
    for (n, r) in records.iter().enumerate() {
        // Not re-attaching at all is a failure for every kind; the time
        // bar is only for the kinds the issue sets one for.
        if !r.missing.is_empty() {
            out.push(Violation::new(
                "reattach",
                format!(
                    "fault #{} {} ({}): not re-attached within {:?}: {}",
                    n + 1,
                    r.kind.name(),
                    r.target,
                    config.reattach_cap,
                    r.missing.join(", ")
                ),
            ));
        }
        if let (Some(t), Some(_)) = (r.reattach, r.kind.bar_after_heartbeat()) {
            per_kind.entry(r.kind).or_default().push(t);
        }
    }
    for (kind, times) in per_kind {
        let p = Percentiles::of(&times);
        if p.p99 > config.reattach_bar.as_secs_f64() {
            out.push(Violation::new(
                "reattach",
                format!(
                    "{}: p99 re-attach {:.2} s over the bar of {}; all: {}",
                    kind.name(),
                    p.p99,
                    bar_text(kind, config.reattach_bar, config.heartbeat_timeout),
                    times
                        .iter()
                        .map(|t| format!("{t:.2}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            ));
        }
    }
    out
}

/// The bar of a kind, in words.
pub(crate) fn bar_text(kind: FaultKind, bar: Duration, heartbeat: Duration) -> String {
    match kind.bar_after_heartbeat() {
        Some(false) => format!("{:.0} s after the election", bar.as_secs_f64()),
        Some(true) => format!(
            "{:.0} s after the {:.0} s heartbeat timeout",
            bar.as_secs_f64(),
            heartbeat.as_secs_f64()
        ),
        None => "none (reported only)".into(),
    }
}

/// One applied index and one registry on every master.
pub(crate) fn convergence(c: &Convergence) -> Vec<Violation> {
    let mut out = Vec::new();
    if !c.same_index {
        out.push(Violation::new(
            "convergence",
            format!(
                "the masters' applied indexes did not converge: {:?}",
                c.indexes
            ),
        ));
    }
    if let Some(diff) = &c.registry_diff {
        out.push(Violation::new("convergence", diff.clone()));
    }
    if !c.leftover.is_empty() {
        out.push(Violation::new(
            "leftover",
            format!(
                "frameworks of ended runs still registered (not torn down): {}",
                c.leftover.join(" ")
            ),
        ));
    }
    out
}

/// The last 300 bytes of `s`, on one line, without terminal colours.
fn tail(s: &str) -> String {
    let plain = super::strip_ansi(s);
    let s = plain.trim();
    let mut start = s.len().saturating_sub(300);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    let t = s[start..].replace('\n', " ⏎ ");
    if t.is_empty() { "(nothing)".into() } else { t }
}

#[cfg(test)]
mod tests {
    use super::super::runs::RunPlan;
    use super::*;

    fn outcome(name: &str, code: u8, exit: Option<i32>, stdout: &str) -> RunOutcome {
        RunOutcome {
            plan: RunPlan {
                name: name.into(),
                sleep: Duration::ZERO,
                code,
            },
            started_at: 0.0,
            ended_at: 1.0,
            exit,
            hung: false,
            stdout: stdout.into(),
            stderr: "berth: something\n".into(),
        }
    }

    #[test]
    fn runs_are_held_to_their_code_their_marks_and_their_output() {
        let dir = tempfile::tempdir().unwrap();
        let mark = |n: &str, times: usize| {
            std::fs::write(dir.path().join(n), "x\n".repeat(times)).unwrap();
        };
        mark("r1", 1);
        mark("r2", 2);
        mark("r3", 1);
        mark("r5", 1);
        let whole = |n: &str| format!("started {n}\ndone {n}\n");
        let outcomes = [
            outcome("r1", 7, Some(7), &whole("r1")),
            outcome("r2", 0, Some(0), &whole("r2")),
            outcome("r3", 9, Some(1), "started r3\n"),
            outcome("r4", 5, Some(125), ""),
            outcome("r5", 3, Some(3), "started r5\n"),
            outcome("r6", 4, Some(4), &whole("r6")),
        ];
        let v = runs(&outcomes, dir.path());
        let kinds: Vec<(&str, bool)> = v
            .iter()
            .map(|v| (v.what, v.message.starts_with("r")))
            .collect();
        assert_eq!(
            kinds,
            [
                ("ran-twice", true),
                ("lost", true),
                ("exit", true),
                ("output", true),
                ("exit", true)
            ],
            "{v:#?}"
        );
        assert!(
            v[1].message
                .contains("printed its task started, then exited 1 instead of its task's 9")
        );
        assert!(v[2].message.contains("125 (berth's own failure code)"));
        assert!(v[4].message.contains("never ran"));
    }

    #[test]
    fn colours_are_taken_out_of_quoted_output() {
        assert_eq!(
            super::super::strip_ansi("\u{1b}[3mframework_id\u{1b}[0m\u{1b}[2m=\u{1b}[0mfw-1"),
            "framework_id=fw-1"
        );
        assert_eq!(tail("a\nb\n"), "a ⏎ b");
    }

    #[test]
    fn a_fault_over_its_bar_or_not_reattached_is_a_violation() {
        let config = Config::ci(super::super::Variant::Processes, "berth".into(), 1);
        let rec = |kind, reattach: Option<f64>, missing: &[&str]| FaultRecord {
            kind,
            target: "master-1".into(),
            at: 0.0,
            detail: String::new(),
            runs_in_flight: 8,
            old_leader: Some(1),
            new_leader: Some(2),
            election_after: Some(1.0),
            reattach,
            reattach_after_election: reattach,
            last_attached: None,
            missing: missing.iter().map(ToString::to_string).collect(),
            recovered_after: None,
            error: None,
        };
        let ok = [
            rec(FaultKind::LeaderKill, Some(0.4), &[]),
            rec(FaultKind::LeaderKill, Some(1.9), &[]),
            rec(FaultKind::AgentKill, None, &[]),
            rec(FaultKind::LeaderStop, Some(1.0), &[]),
            rec(FaultKind::BurstLeaderKill, Some(0.1), &[]),
            rec(FaultKind::LeaderKill, Some(0.4), &[]),
            rec(FaultKind::LeaderStop, Some(0.4), &[]),
            rec(FaultKind::AgentKill, None, &[]),
            // Partitions have no time bar...
            rec(FaultKind::Flapping, Some(30.0), &[]),
        ];
        // ...but not re-attaching at all fails them too.
        let stuck = [rec(FaultKind::MinoritySplit, None, &["run r00007"])];
        let v = faults(&config, &stuck);
        assert!(
            v.iter()
                .any(|v| v.message.contains("minority-split") && v.message.contains("run r00007")),
            "{v:#?}"
        );
        assert!(
            faults(&config, &ok).is_empty(),
            "{:#?}",
            faults(&config, &ok)
        );
        let mut bad = ok.to_vec();
        bad[0].reattach = Some(8.5);
        bad[3].reattach = None;
        bad[3].missing = vec!["agent-1".into()];
        let v = faults(&config, &bad);
        assert_eq!(v.len(), 2, "{v:#?}");
        assert!(v[0].message.contains("not re-attached") && v[0].message.contains("agent-1"));
        assert!(
            v[1].message
                .contains("leader-sigkill: p99 re-attach 8.50 s")
        );
        let v = faults(&config, &ok[..3]);
        assert!(v[0].message.contains("only 3 of 8 faults"));
    }
}
