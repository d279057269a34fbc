//! Stuck jobs, executed (the decisions are [`super::super::stuck`]'s):
//! while pending jobs have tags, the agents are listed (every
//! [`LIST_EVERY`], off the framework's task); the records handed out say
//! which jobs are stuck and why; with `RunnerConfig::stuck_timeout`, a job
//! stuck that long fails unlaunched with `stuck_or_timeout_failure`.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::PoisonError;
use std::time::{Duration, Instant, SystemTime};

use tracing::warn;

use super::super::record::{PipelineRecord, fail_unlaunched};
use super::super::state::FailureReason;
use super::super::stuck::{self, AgentTags};
use super::RunError;
use super::framework::CiFramework;

/// How often the agents are listed while a pending job has tags.
const LIST_EVERY: Duration = Duration::from_secs(2);

/// The agents as last listed.
#[derive(Debug, Default)]
pub(crate) struct AgentsSeen {
    /// The active agents (None: never listed, or no master answered yet).
    list: Option<Vec<AgentTags>>,
    /// When the last listing started.
    at: Option<Instant>,
    /// A listing is under way.
    listing: bool,
}

impl CiFramework {
    /// A copy of `rec` that says which of its jobs are stuck.
    pub(super) fn with_stuck(&self, mut rec: PipelineRecord) -> PipelineRecord {
        if self.stuck.keys().any(|(p, _)| *p == rec.id) {
            rec.stuck = (0..rec.plan.jobs.len())
                .map(|j| self.stuck.get(&(rec.id, j)).map(|(.., why)| why.clone()))
                .collect();
        }
        rec
    }

    /// Lists the agents (in the background) when due.
    fn list_agents_when_due(&self) {
        let mut seen = self
            .agents_seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if seen.listing || seen.at.is_some_and(|at| at.elapsed() < LIST_EVERY) {
            return;
        }
        seen.listing = true;
        seen.at = Some(Instant::now());
        let slot = self.agents_seen.clone();
        let masters = self.config.masters.clone();
        tokio::spawn(async move {
            let listed = berth_sdk::agents::list_agents(&masters).await;
            let mut seen = slot.lock().unwrap_or_else(PoisonError::into_inner);
            seen.listing = false;
            if let Some(views) = listed {
                seen.list = Some(AgentTags::from_views(&views));
            }
        });
    }

    /// Brings the stuck jobs up to date (on every tick): publishes the
    /// pipelines whose stuck jobs changed, and fails the jobs stuck longer
    /// than `stuck_timeout`.
    pub(super) async fn check_stuck(&mut self) -> Result<(), RunError> {
        let now = SystemTime::now();
        let found = if stuck::any_tagged_pending(&self.pipelines) {
            self.list_agents_when_due();
            let agents = self
                .agents_seen
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .list
                .clone();
            match agents {
                Some(agents) => stuck::stuck_jobs(&self.pipelines, &agents),
                // Not known yet: nothing is said to be stuck.
                None => BTreeMap::new(),
            }
        } else {
            BTreeMap::new()
        };
        let mut touched = BTreeSet::new();
        let mut next = BTreeMap::new();
        for ((p, j), why) in found {
            let attempt = self
                .pipelines
                .get(&p)
                .and_then(|r| r.state.job(j))
                .map_or(0, |job| job.attempts.len());
            let since = match self.stuck.get(&(p, j)) {
                Some((a, since, old)) if *a == attempt => {
                    if *old != why {
                        touched.insert(p);
                    }
                    *since
                }
                _ => {
                    touched.insert(p);
                    now
                }
            };
            next.insert((p, j), (attempt, since, why));
        }
        touched.extend(
            self.stuck
                .keys()
                .filter(|k| !next.contains_key(k))
                .map(|(p, _)| *p),
        );
        self.stuck = next;
        let mut failed = BTreeSet::new();
        if let Some(limit) = self.config.stuck_timeout {
            let due: Vec<((u64, usize), String)> = self
                .stuck
                .iter()
                .filter(|(_, (_, since, _))| now.duration_since(*since).is_ok_and(|d| d >= limit))
                .map(|(k, (.., why))| (*k, why.clone()))
                .collect();
            for ((p, j), why) in due {
                self.stuck.remove(&(p, j));
                let Some(rec) = self.pipelines.get_mut(&p) else {
                    continue;
                };
                let message = format!("{why} (failed after {}s stuck)", limit.as_secs());
                match fail_unlaunched(
                    rec,
                    j,
                    FailureReason::StuckOrTimeoutFailure,
                    "stuck or timeout failure",
                    &message,
                    &self.config.data_dir,
                    now,
                )
                .await
                {
                    Ok(()) => {
                        rec.state.advance(now);
                        failed.insert(p);
                    }
                    Err(e) => warn!(pipeline = p, job = j, "cannot fail the stuck job: {e}"),
                }
            }
        }
        for p in &failed {
            self.persist(*p).await?;
        }
        if !failed.is_empty() {
            self.settle().await?;
        }
        let only_shown: Vec<u64> = touched.difference(&failed).copied().collect();
        if !only_shown.is_empty() {
            for p in only_shown {
                self.publish(p);
            }
            self.changes.send_modify(|v| *v += 1);
        }
        Ok(())
    }
}
