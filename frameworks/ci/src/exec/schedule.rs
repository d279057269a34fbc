//! The CI framework's decisions, pure: no IO, time is an argument.
//!
//! The framework runs on the SDK's [framework runtime](berth_sdk::runtime):
//! it states an [`Intent`] and the runtime makes it so (packs offers,
//! launches, kills, reconciles, suppresses and revives). This module holds
//! the CI side of that contract:
//!
//! - [`intent`]: the pipelines' records as the tasks to run (each pending
//!   job that is not waiting for its resource group, in pipeline order,
//!   with its tags as placement constraints; each running job's task, to
//!   follow) and the tasks to stop (jobs being canceled, or past their time
//!   limit). A restart is not a special path: a job recorded as running is
//!   wanted as [`Prior::Launched`](berth_sdk::runtime::Prior::Launched), so
//!   the runtime asks the master about it first, a job being canceled is
//!   named to stop, so its kill is sent again, and time limits count from
//!   the attempt's recorded start;
//! - [`on_update`]: what a task's update does to its job;
//! - [`due`]: the work that falls due with time alone (delayed jobs that
//!   start, jobs that ran past their time limit);
//! - [`job_end`]: a task's end as a GitLab job result.
//!
//! The [runner](super::runner) executes what these return: stores the
//! records, writes logs, follows the agents' output.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use berth_sdk::proto as pb;
use berth_sdk::runtime::{Constraint, Intent, Wanted};
use berth_sdk::{AgentId, TaskId};
use tracing::warn;

use super::expiry::missing_dependency;
use super::record::{PipelineRecord, parse_task_id};
use super::resource_group::{self, Assignment, GroupJob};
use super::state::{FailureReason, JobEnd, JobStatus};
use super::task::{TaskDefaults, task_for};

/// Which pending jobs wait for their resource group (a group per project
/// key and name), over every unfinished pipeline, oldest first.
pub(crate) fn resources(pipelines: &BTreeMap<u64, PipelineRecord>) -> Assignment {
    let jobs: Vec<GroupJob<'_>> = pipelines
        .values()
        .filter(|rec| !rec.status().is_finished())
        .flat_map(|rec| {
            rec.plan
                .jobs
                .iter()
                .enumerate()
                .filter_map(move |(i, planned)| {
                    Some(GroupJob {
                        pipeline: rec.id,
                        job: i,
                        project: rec.project_key(),
                        group: planned.resource_group.as_deref()?,
                        status: rec.state.job(i)?.status,
                    })
                })
        })
        .collect();
    resource_group::assign(&jobs)
}

/// What the framework wants of the cluster, from its pipelines' records:
/// the tasks of the pending jobs to launch (oldest pipeline first, not
/// those waiting for their resource group or needing expired files), the
/// tasks of the running jobs to follow, and the tasks of the jobs being
/// canceled or timed out to stop.
pub(crate) fn intent(
    pipelines: &BTreeMap<u64, PipelineRecord>,
    defaults: &TaskDefaults<'_>,
) -> Intent {
    let resources = resources(pipelines);
    let mut wanted = Vec::new();
    let mut stop = Vec::new();
    for rec in pipelines.values() {
        for (i, job) in rec.state.jobs().iter().enumerate() {
            let tags = || {
                rec.plan.jobs[i]
                    .tags
                    .iter()
                    .map(|t| Constraint::Tag(t.clone()))
                    .collect::<Vec<_>>()
            };
            match job.status {
                // A trigger job runs no task (see `children`).
                _ if rec.plan.jobs[i].trigger.is_some() => {}
                JobStatus::Pending => {
                    if resources.is_waiting(rec.id, i) || missing_dependency(rec, i).is_some() {
                        continue;
                    }
                    match task_for(rec, i, job.attempts.len() + 1, defaults) {
                        Ok(task) => wanted.push(Wanted::new(task).constraints(tags())),
                        Err(e) => warn!(pipeline = rec.id, job = i, "cannot build the task: {e}"),
                    }
                }
                JobStatus::Running | JobStatus::Canceling => {
                    let Some(attempt) = job.attempts.last() else {
                        continue;
                    };
                    if attempt.task_id.is_empty() {
                        continue;
                    }
                    let agent = rec.agent_of(i, &attempt.task_id);
                    let killed = rec.kill_reasons.get(i).copied().flatten().is_some();
                    if job.status == JobStatus::Canceling || killed {
                        // Stored ids were launched, so valid; one that is
                        // not was never a task to stop.
                        if let Ok(task) = TaskId::new(attempt.task_id.as_str()) {
                            stop.push((task, AgentId::new(agent).ok()));
                        }
                        continue;
                    }
                    // The task as launched; should it be refused (the
                    // runtime launches it again then), the same task.
                    let mut task = task_for(rec, i, job.attempts.len(), defaults)
                        .unwrap_or_else(|_| pb::TaskInfo::default());
                    task.task_id.clone_from(&attempt.task_id);
                    task.agent_id = agent;
                    wanted.push(Wanted::launched(task).constraints(tags()));
                }
                _ => {}
            }
        }
    }
    Intent::new(wanted).stopping(stop)
}

/// Whether a task's state means its job's attempt is over: a terminal
/// state, or the master no longer having the task (`TASK_UNKNOWN`), or its
/// agent out of reach (`TASK_UNREACHABLE`: the job fails as a runner
/// system failure, retried per `retry:`, as GitLab does when a runner
/// goes away; the task is killed should the agent come back).
#[must_use]
pub(crate) fn ends_attempt(state: pb::TaskState) -> bool {
    state.is_terminal()
        || matches!(
            state,
            pb::TaskState::TaskUnknown | pb::TaskState::TaskUnreachable
        )
}

/// What an update did to the pipelines (see [`on_update`]).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Updated {
    /// Not about a current job attempt: nothing changed.
    Ignored,
    /// About the current attempt of `job` of `pipeline`.
    Attempt {
        /// The pipeline.
        pipeline: u64,
        /// The job's index.
        job: usize,
        /// The attempt, from 1.
        attempt: usize,
        /// Its log is to be collected (the task started or ended).
        follow_log: bool,
        /// The job's state changed (it ended): store the pipeline.
        changed: bool,
    },
    /// The runtime gave up on launching the next attempt of pending `job`
    /// (the masters would refuse its task): fail it unlaunched with
    /// `message`.
    GivenUp {
        /// The pipeline.
        pipeline: u64,
        /// The job's index.
        job: usize,
        /// Why.
        message: String,
    },
}

/// Follows a task update in the pipelines' records: the agent the task
/// runs on, and, when the attempt is over ([`ends_attempt`]), the job's
/// result through the pipeline's state machine (the pipeline advances).
pub(crate) fn on_update(
    pipelines: &mut BTreeMap<u64, PipelineRecord>,
    status: &pb::TaskStatus,
    now: SystemTime,
) -> Updated {
    let Some((p, j, attempt)) = parse_task_id(&status.task_id) else {
        return Updated::Ignored;
    };
    let Some(rec) = pipelines.get_mut(&p) else {
        return Updated::Ignored;
    };
    let Some(job) = rec.state.job(j) else {
        return Updated::Ignored;
    };
    let state = status.state();
    if job.status == JobStatus::Pending
        && attempt == job.attempts.len() + 1
        && state == pb::TaskState::TaskError
    {
        return Updated::GivenUp {
            pipeline: p,
            job: j,
            message: status.message.clone(),
        };
    }
    if job
        .attempts
        .last()
        .is_none_or(|a| a.task_id != status.task_id)
    {
        return Updated::Ignored;
    }
    if !status.agent_id.is_empty() {
        if let Some(slot) = rec.agents.get_mut(j) {
            slot.clone_from(&status.agent_id);
        }
        rec.attempt_agents
            .insert(status.task_id.clone(), status.agent_id.clone());
    }
    let ended = ends_attempt(state);
    let mut out = Updated::Attempt {
        pipeline: p,
        job: j,
        attempt,
        follow_log: ended
            || matches!(
                state,
                pb::TaskState::TaskRunning | pb::TaskState::TaskStarting
            ),
        changed: false,
    };
    let running = matches!(job.status, JobStatus::Running | JobStatus::Canceling);
    if !ended || !running {
        return out;
    }
    let killed_for = rec.kill_reasons.get(j).copied().flatten();
    match rec.state.finished(j, job_end(status, killed_for), now) {
        Ok(_retried) => {
            rec.state.advance(now);
            if let Updated::Attempt { changed, .. } = &mut out {
                *changed = true;
            }
        }
        Err(e) => warn!(task = %status.task_id, "{e}"),
    }
    out
}

/// Work that falls due with time alone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Due {
    /// A delayed job of the pipeline starts: advance it.
    Advance(u64),
    /// A running job ran past its time limit: kill it, with the
    /// `job_execution_timeout` reason.
    TimedOut {
        /// The pipeline.
        pipeline: u64,
        /// The job's index.
        job: usize,
        /// Its task.
        task: String,
    },
}

/// What is due at `now`: delayed jobs whose time came, and running jobs
/// past their time limit (`timeout:`, or `default_timeout`), counted from
/// the attempt's start (so a limit that passed while the framework was
/// down is due at once).
pub(crate) fn due(
    pipelines: &BTreeMap<u64, PipelineRecord>,
    now: SystemTime,
    default_timeout: Duration,
) -> Vec<Due> {
    let mut out = Vec::new();
    for rec in pipelines.values() {
        if rec.state.next_wakeup().is_some_and(|at| at <= now) {
            out.push(Due::Advance(rec.id));
        }
        for (j, job) in rec.state.jobs().iter().enumerate() {
            // A trigger job's time is its child pipeline's jobs'.
            if job.status != JobStatus::Running
                || rec.kill_reasons.get(j).copied().flatten().is_some()
                || rec.plan.jobs[j].trigger.is_some()
            {
                continue;
            }
            let Some(attempt) = job.attempts.last() else {
                continue;
            };
            let timeout = rec.plan.jobs[j].timeout.unwrap_or(default_timeout);
            if timed_out(attempt.started, timeout, now) {
                out.push(Due::TimedOut {
                    pipeline: rec.id,
                    job: j,
                    task: attempt.task_id.clone(),
                });
            }
        }
    }
    out
}

/// Whether an attempt that started at `started` has run `timeout` by
/// `now` (one with no recorded start has not).
fn timed_out(started: Option<SystemTime>, timeout: Duration, now: SystemTime) -> bool {
    started.is_some_and(|at| now.duration_since(at).is_ok_and(|ran| ran >= timeout))
}

/// How a job attempt ended, from the update that ended it.
pub(crate) fn job_end(status: &pb::TaskStatus, killed_for: Option<FailureReason>) -> JobEnd {
    let message = status.message.clone();
    // An artifact upload that failed (other than "nothing matched") fails
    // the job, as in GitLab.
    let upload_failed = status
        .outputs
        .iter()
        .find(|o| o.name == "artifacts" && !o.ok && o.error != "no files matched");
    match status.state() {
        pb::TaskState::TaskFinished => match upload_failed {
            None => JobEnd::success(),
            Some(o) => JobEnd::failure(
                FailureReason::DataIntegrityFailure,
                format!("uploading artifacts failed: {}", o.error),
            ),
        },
        pb::TaskState::TaskFailed if status.reason() == pb::TaskReason::FetchFailed => {
            JobEnd::failure(FailureReason::MissingDependencyFailure, message)
        }
        pb::TaskState::TaskFailed => match status.exit_code {
            Some(code) => JobEnd {
                exit_code: Some(code),
                reason: Some(FailureReason::ScriptFailure),
                message: if message.is_empty() {
                    format!("the script exited with code {code}")
                } else {
                    message
                },
            },
            // No exit code: the container or process never started.
            None => JobEnd::failure(FailureReason::RunnerSystemFailure, message),
        },
        pb::TaskState::TaskKilled => JobEnd::failure(
            killed_for.unwrap_or(FailureReason::UnknownFailure),
            if killed_for == Some(FailureReason::JobExecutionTimeout) {
                "the job ran past its timeout".to_string()
            } else {
                message
            },
        ),
        pb::TaskState::TaskError => JobEnd::failure(FailureReason::SchedulerFailure, message),
        // Lost, unknown to the master, unreachable.
        _ => JobEnd::failure(FailureReason::RunnerSystemFailure, message),
    }
}

#[cfg(test)]
mod tests;
