//! The record of one pipeline as the CI runner stores it
//! ([`PipelineRecord`]), what the expiry sweep deleted of it
//! ([`Expired`]), the task ids of its jobs' attempts, and failing a job
//! that cannot be launched.
//!
//! A leaf: it depends on the pipeline model and the job state machine
//! only, so the runner, the expiry sweep and the resource groups all use
//! it without depending on each other.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use serde::{Deserialize, Serialize};
use tracing::warn;

use super::state::{FailureReason, JobEnd, Pipeline, PipelineStatus, StateError};
use crate::Plan;
use crate::reports::JobReports;

/// One pipeline as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PipelineRecord {
    /// Its id (`CI_PIPELINE_ID`).
    pub id: u64,
    /// The project's name.
    pub project: String,
    /// The commit.
    pub sha: String,
    /// The branch or tag.
    pub ref_name: String,
    /// What started it.
    pub source: String,
    /// The secret in its file URLs.
    pub token: String,
    /// When it was created (ms since the epoch).
    pub created_ms: u64,
    /// When it last finished (ms since the epoch).
    pub finished_ms: Option<u64>,
    /// The plan.
    pub plan: Plan,
    /// Its jobs' states.
    pub state: Pipeline,
    /// Names of the masked variables' values are not stored; the values
    /// are (they are needed to mask logs after a restart).
    pub masked_values: Vec<String>,
    /// Per job, the agent of its latest attempt (for logs).
    pub agents: Vec<String>,
    /// Per attempt (by its task id), the agent it was launched on: where
    /// its log is collected from, also after a restart and after the job
    /// ran again.
    #[serde(default)]
    pub attempt_agents: BTreeMap<String, String>,
    /// Per job, why its latest attempt was killed by the framework.
    #[serde(default)]
    pub kill_reasons: Vec<Option<FailureReason>>,
    /// The repository's directory (with the project's subdirectory): what
    /// makes two pipelines the same project's (see
    /// [`PipelineRecord::project_key`]).
    #[serde(default)]
    pub repository: String,
    /// `ref_name` is a branch (not a tag, a commit or a detached HEAD).
    #[serde(default)]
    pub branch: bool,
    /// The newer pipeline of the same branch that auto-canceled this one.
    #[serde(default)]
    pub auto_canceled_by: Option<u64>,
    /// Per job: pending, but waiting for its `resource_group` (another job
    /// holds it). Derived by the runner when it hands the record out; not
    /// stored.
    #[serde(skip)]
    pub waiting_for_resource: Vec<bool>,
    /// The artifacts, logs and source the expiry sweep deleted.
    #[serde(default)]
    pub expired: Expired,
    /// Per job (by index), what its latest attempt reported: dotenv
    /// variables, test results, coverage (see [`crate::reports`]).
    #[serde(default)]
    pub reports: BTreeMap<usize, JobReports>,
    /// Its parent (for a child pipeline), its children (the pipelines its
    /// trigger jobs created) and the variables it was given.
    #[serde(default)]
    pub family: Family,
    /// Per job: pending, but no agent has its `tags` (why, in GitLab's
    /// words). Derived by the runner when it hands the record out; not
    /// stored.
    #[serde(skip)]
    pub stuck: Vec<Option<String>>,
}

/// A pipeline's links to the pipelines its trigger jobs started and to the
/// trigger job that started it (GitLab's parent-child pipelines).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Family {
    /// For a child pipeline: the parent's trigger job that created it.
    #[serde(default)]
    pub parent: Option<ParentLink>,
    /// The child pipelines, oldest first (a retried trigger job creates a
    /// new one).
    #[serde(default)]
    pub children: Vec<ChildLink>,
    /// The variables given with the pipeline (trigger, project and secret
    /// variables): what `trigger:forward:pipeline_variables` passes down.
    #[serde(default)]
    pub pipeline_variables: Vec<PassedVariable>,
}

/// The trigger job (attempt) that created a child pipeline.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParentLink {
    /// The parent pipeline.
    pub pipeline: u64,
    /// Its trigger job's index.
    pub job: usize,
    /// The trigger job's attempt, from 1.
    pub attempt: usize,
}

/// A child pipeline, and the trigger job (attempt) that created it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChildLink {
    /// The trigger job's index.
    pub job: usize,
    /// The trigger job's attempt, from 1.
    pub attempt: usize,
    /// The child pipeline.
    pub pipeline: u64,
}

/// A variable given with a pipeline, as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PassedVariable {
    /// Name.
    pub name: String,
    /// Value.
    pub value: String,
    /// Masked in logs.
    pub masked: bool,
}

impl Family {
    /// The child pipeline of job `job`'s latest attempt `attempt`.
    pub fn child_of(&self, job: usize, attempt: usize) -> Option<u64> {
        self.children
            .iter()
            .find(|c| c.job == job && c.attempt == attempt)
            .map(|c| c.pipeline)
    }

    /// The newest child pipeline job `job` created.
    pub fn latest_child(&self, job: usize) -> Option<u64> {
        self.children
            .iter()
            .filter(|c| c.job == job)
            .max_by_key(|c| c.attempt)
            .map(|c| c.pipeline)
    }
}

impl PipelineRecord {
    /// The pipeline's status.
    pub fn status(&self) -> PipelineStatus {
        self.state.status()
    }

    /// What makes two pipelines the same project's, for auto-cancel, the
    /// artifacts kept as the latest successful ones, caches and resource
    /// groups: the repository's path or mirror with the project's
    /// subdirectory ([`PipelineRecord::repository`]), so that two
    /// repositories whose projects have the same name share nothing. A
    /// record stored before `repository` existed falls back to the
    /// project's name.
    pub fn project_key(&self) -> &str {
        if self.repository.is_empty() {
            &self.project
        } else {
            &self.repository
        }
    }

    /// Why job `i` is stuck (pending, and no agent has its tags), if it is.
    pub fn stuck_reason(&self, i: usize) -> Option<&str> {
        self.stuck.get(i).and_then(|s| s.as_deref())
    }

    /// Whether job `i` is pending but waits for its resource group.
    pub fn is_waiting_for_resource(&self, i: usize) -> bool {
        self.waiting_for_resource.get(i).copied().unwrap_or(false)
    }

    /// Whether a newer pipeline may auto-cancel this one: every job that
    /// has started (running or finished, in any attempt) is
    /// `interruptible`. Jobs not started yet do not count: they are just
    /// never started.
    pub fn is_interruptible(&self) -> bool {
        self.state
            .jobs()
            .iter()
            .zip(&self.plan.jobs)
            .all(|(state, planned)| state.attempts.is_empty() || planned.interruptible)
    }

    /// The agent attempt `task` (a task id) of job `j` was launched on;
    /// empty when not known.
    pub fn agent_of(&self, j: usize, task: &str) -> String {
        if let Some(agent) = self.attempt_agents.get(task) {
            return agent.clone();
        }
        // Records stored before agents were kept per attempt know the
        // latest attempt's.
        let latest = self
            .state
            .job(j)
            .and_then(|job| job.attempts.last())
            .is_some_and(|a| a.task_id == task);
        if latest {
            self.agents.get(j).cloned().unwrap_or_default()
        } else {
            String::new()
        }
    }

    /// The dotenv variables job `i` gets, as GitLab passes them: those of
    /// the jobs whose artifacts it downloads (its `dependencies`, its
    /// `needs` with artifacts, or every job of earlier stages), a later
    /// one's replacing an earlier one's; without the names set for the
    /// pipeline ([`Family::pipeline_variables`]), which win.
    pub fn dotenv_for(&self, i: usize) -> BTreeMap<String, String> {
        let mut out = BTreeMap::new();
        for k in super::expiry::artifact_sources(&self.plan, i) {
            if let Some(r) = self.reports.get(&k) {
                out.extend(r.dotenv.iter().map(|(n, v)| (n.clone(), v.clone())));
            }
        }
        out.retain(|name, _| {
            !self
                .family
                .pipeline_variables
                .iter()
                .any(|v| v.name == *name)
        });
        out
    }

    /// The stored log of job `job`'s attempt `attempt` (from 1).
    pub fn log_path(data_dir: &std::path::Path, id: u64, job: usize, attempt: usize) -> PathBuf {
        data_dir
            .join("logs")
            .join(id.to_string())
            .join(format!("{job}-{attempt}.log"))
    }
}

/// What the sweep deleted of one pipeline (stored in its record).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Expired {
    /// Job index → the attempt whose artifacts were deleted (the job's
    /// latest then; a later attempt uploads new ones).
    #[serde(default)]
    pub artifacts: BTreeMap<usize, usize>,
    /// Job index → the logs of its attempts 1 to this one were deleted.
    #[serde(default)]
    pub logs: BTreeMap<usize, usize>,
    /// The pipeline's source archive was deleted: no job of it can run
    /// again.
    #[serde(default)]
    pub source: bool,
}

impl Expired {
    /// Whether the artifacts of job `job`, whose latest attempt is
    /// `attempts`, were deleted.
    pub fn artifacts_expired(&self, job: usize, attempts: usize) -> bool {
        attempts > 0 && self.artifacts.get(&job) == Some(&attempts)
    }

    /// Whether the log of attempt `attempt` (from 1) of job `job` was
    /// deleted.
    pub fn log_expired(&self, job: usize, attempt: usize) -> bool {
        attempt > 0 && self.logs.get(&job).is_some_and(|&n| attempt <= n)
    }
}

/// The task id of a job's attempt: `ci-<pipeline>-<job>-<attempt>`.
pub(crate) fn task_id(pipeline: u64, job: usize, attempt: usize) -> String {
    format!("ci-{pipeline}-{job}-{attempt}")
}

/// The pipeline, job and attempt of a task id made by [`task_id`].
pub(crate) fn parse_task_id(id: &str) -> Option<(u64, usize, usize)> {
    let mut parts = id.strip_prefix("ci-")?.split('-');
    let p = parts.next()?.parse().ok()?;
    let j = parts.next()?.parse().ok()?;
    let a = parts.next()?.parse().ok()?;
    parts.next().is_none().then_some((p, j, a))
}

/// Fails pending job `i` of `rec` without launching it: an attempt with no
/// task that ends at once with `reason` and `message`, and a log holding
/// `ERROR: Job failed (<what>): <message>`. A failure the job's `retry`
/// covers puts it back to pending. The caller advances and stores the
/// pipeline.
pub(crate) async fn fail_unlaunched(
    rec: &mut PipelineRecord,
    i: usize,
    reason: FailureReason,
    what: &str,
    message: &str,
    data_dir: &Path,
    now: SystemTime,
) -> Result<(), StateError> {
    rec.state.started(i, "", now)?;
    rec.state
        .finished(i, JobEnd::failure(reason, message.to_string()), now)?;
    let attempt = rec.state.job(i).map_or(1, |j| j.attempts.len());
    let path = PipelineRecord::log_path(data_dir, rec.id, i, attempt);
    write_whole_log(&path, &format!("ERROR: Job failed ({what}): {message}\n")).await;
    Ok(())
}

/// Writes a log the runner makes itself (a job failed without being
/// launched): whole at once, nothing to collect.
async fn write_whole_log(path: &Path, text: &str) {
    let written = async {
        if let Some(dir) = path.parent() {
            tokio::fs::create_dir_all(dir).await?;
        }
        tokio::fs::write(path, text).await
    };
    if let Err(e) = written.await {
        warn!("cannot write {}: {e}", path.display());
    }
}
