//! A campaign's report: what ran, which faults, re-attach percentiles per
//! fault kind, convergence, and every violation, printed as a summary that
//! CI logs keep.

use std::collections::BTreeMap;
use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use super::Variant;
use super::check::bar_text;
use super::cluster::{AGENTS, MASTERS};
use super::faults::{FaultKind, FaultRecord};
use super::observe::Convergence;
use super::runs::RunOutcome;

/// A promise berth broke during the campaign.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Its kind: "exit", "lost", "ran-twice", "output", "hung",
    /// "reattach", "convergence", "leftover", "recovery", "daemon" or
    /// "campaign".
    pub what: &'static str,
    /// What happened, with the run, fault or master it concerns.
    pub message: String,
}

impl Violation {
    pub(crate) fn new(what: &'static str, message: String) -> Self {
        Self { what, message }
    }
}

impl fmt::Display for Violation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "[{}] {}", self.what, self.message)
    }
}

/// p50, p99 and max of some seconds (nearest rank).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Percentiles {
    /// How many values.
    pub n: usize,
    /// Median.
    pub p50: f64,
    /// 99th percentile (with fewer than 100 values, the largest).
    pub p99: f64,
    /// Largest.
    pub max: f64,
}

impl Percentiles {
    /// Of `values` (all zero when there are none).
    #[must_use]
    pub fn of(values: &[f64]) -> Self {
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let rank = |p: f64| -> f64 {
            if v.is_empty() {
                return 0.0;
            }
            // Nearest rank: the smallest value with at least p % at or
            // below it.
            let n = v.len() as f64;
            let r = (p / 100.0 * n).ceil().max(1.0) as usize;
            v[r.min(v.len()) - 1]
        };
        Self {
            n: v.len(),
            p50: rank(50.0),
            p99: rank(99.0),
            max: v.last().copied().unwrap_or(0.0),
        }
    }
}

/// What a campaign did and found.
#[derive(Debug)]
pub struct Report {
    /// Which variant.
    pub variant: Variant,
    /// Its seed.
    pub seed: u64,
    /// How long it took, set-up and checks included.
    pub elapsed: Duration,
    /// Every `berth run`, by name.
    pub runs: Vec<RunOutcome>,
    /// Every fault, in order.
    pub faults: Vec<FaultRecord>,
    /// How the masters ended up.
    pub convergence: Convergence,
    /// Every broken promise; empty when berth held up.
    pub violations: Vec<Violation>,
    /// The re-attach bar.
    pub reattach_bar: Duration,
    /// The heartbeat timeout SIGSTOP's bar counts from.
    pub heartbeat_timeout: Duration,
    /// The daemons' log tails when there were violations.
    pub log_tails: String,
    /// Where the campaign's files were kept, if they were.
    pub dir: Option<PathBuf>,
    /// The machine and binary it ran on, for the record.
    pub machine: String,
}

impl Report {
    /// Re-attach percentiles per fault kind (faults that re-attached).
    #[must_use]
    pub fn reattach(&self) -> BTreeMap<FaultKind, Percentiles> {
        let mut per: BTreeMap<FaultKind, Vec<f64>> = BTreeMap::new();
        for f in &self.faults {
            if let Some(t) = f.reattach {
                per.entry(f.kind).or_default().push(t);
            }
        }
        per.into_iter()
            .map(|(k, v)| (k, Percentiles::of(&v)))
            .collect()
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "== berth fault campaign: {} variant, seed {}, {MASTERS} masters, {AGENTS} agents, {:.0} s",
            self.variant.name(),
            self.seed,
            self.elapsed.as_secs_f64()
        )?;
        writeln!(f, "machine: {}", self.machine)?;
        let as_planned = self
            .runs
            .iter()
            .filter(|r| r.exit == Some(i32::from(r.plan.code)))
            .count();
        let mut other: BTreeMap<String, Vec<&str>> = BTreeMap::new();
        for r in self
            .runs
            .iter()
            .filter(|r| r.exit != Some(i32::from(r.plan.code)))
        {
            let key = if r.hung {
                "hung".to_string()
            } else {
                r.exit
                    .map_or_else(|| "no code".into(), |c| format!("exit {c}"))
            };
            other.entry(key).or_default().push(&r.plan.name);
        }
        let long = self
            .runs
            .iter()
            .filter(|r| r.plan.sleep >= Duration::from_secs(3))
            .count();
        writeln!(
            f,
            "runs: {} ({long} of them several seconds long); {as_planned} exited with their task's code",
            self.runs.len()
        )?;
        for (what, names) in &other {
            let shown: Vec<&str> = names.iter().take(8).copied().collect();
            let more = names.len().saturating_sub(8);
            writeln!(
                f,
                "  {what}: {} ({}{})",
                names.len(),
                shown.join(" "),
                if more > 0 {
                    format!(" and {more} more")
                } else {
                    String::new()
                }
            )?;
        }
        let twice = self
            .violations
            .iter()
            .filter(|v| v.what == "ran-twice")
            .count();
        writeln!(f, "  tasks that ran more than once: {twice}")?;
        let mut kinds: BTreeMap<&str, usize> = BTreeMap::new();
        for x in &self.faults {
            *kinds.entry(x.kind.name()).or_default() += 1;
        }
        let kinds: Vec<String> = kinds.iter().map(|(k, n)| format!("{k} {n}")).collect();
        writeln!(f, "faults: {} ({})", self.faults.len(), kinds.join(", "))?;
        let t0 = self.faults.first().map_or(0.0, |x| x.at);
        for (n, x) in self.faults.iter().enumerate() {
            let mut line = format!(
                "  #{} +{:.0}s {} {} ({}; {} runs in flight)",
                n + 1,
                x.at - t0,
                x.kind.name(),
                x.target,
                x.detail,
                x.runs_in_flight
            );
            if let Some(e) = x.election_after {
                line.push_str(&format!(
                    "; leader {} → {} elected after {e:.2} s",
                    x.old_leader.unwrap_or(0),
                    x.new_leader.unwrap_or(0)
                ));
            }
            if let Some(r) = x.reattach {
                line.push_str(&format!("; re-attached {r:.2} s"));
                if x.kind.bar_after_heartbeat() == Some(true)
                    && let Some(e) = x.reattach_after_election
                {
                    line.push_str(&format!(
                        " after the heartbeat timeout ({e:.2} s after the election)"
                    ));
                }
                if let Some(last) = &x.last_attached {
                    line.push_str(&format!(" (last: {last})"));
                }
            }
            if !x.missing.is_empty() {
                line.push_str(&format!("; NOT re-attached: {}", x.missing.join(", ")));
            }
            if let Some(h) = x.recovered_after {
                line.push_str(&format!("; healthy after {h:.1} s"));
            }
            if let Some(e) = &x.error {
                line.push_str(&format!("; ERROR {e}"));
            }
            writeln!(f, "{line}")?;
        }
        writeln!(
            f,
            "re-attach to a new leader (s)       n     p50     p99     max  bar"
        )?;
        for (kind, p) in self.reattach() {
            writeln!(
                f,
                "  {:<32} {:>2} {:>7.2} {:>7.2} {:>7.2}  {}",
                kind.name(),
                p.n,
                p.p50,
                p.p99,
                p.max,
                bar_text(kind, self.reattach_bar, self.heartbeat_timeout)
            )?;
        }
        let c = &self.convergence;
        let idx: Vec<String> = c
            .indexes
            .iter()
            .map(|(id, i)| format!("master-{id} {i}"))
            .collect();
        writeln!(
            f,
            "convergence: applied index {} ({}); registries {} ({} agents, {} frameworks, {} tasks)",
            if c.same_index { "equal" } else { "DIFFERENT" },
            idx.join(", "),
            if c.registry_diff.is_none() {
                "equal"
            } else {
                "DIFFERENT"
            },
            c.counts.0,
            c.counts.1,
            c.counts.2
        )?;
        writeln!(f, "violations: {}", self.violations.len())?;
        for v in self.violations.iter().take(60) {
            writeln!(f, "  {v}")?;
        }
        if self.violations.len() > 60 {
            writeln!(f, "  … and {} more", self.violations.len() - 60)?;
        }
        if let Some(d) = &self.dir {
            writeln!(f, "files: {}", d.display())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_by_nearest_rank() {
        let p = Percentiles::of(&[3.0, 1.0, 2.0]);
        assert_eq!((p.n, p.p50, p.p99, p.max), (3, 2.0, 3.0, 3.0));
        let hundred: Vec<f64> = (1..=100).map(f64::from).collect();
        let p = Percentiles::of(&hundred);
        assert_eq!((p.p50, p.p99, p.max), (50.0, 99.0, 100.0));
        let p = Percentiles::of(&[]);
        assert_eq!((p.n, p.p99), (0, 0.0));
    }
}
