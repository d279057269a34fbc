//! Parent-child pipelines, the decisions: what the trigger jobs
//! (`trigger:`) of the pipelines need done, pure (the runner executes it,
//! see `runner/children.rs`).
//!
//! A trigger job runs no task. When it would start (pending, not waiting
//! for its resource group) its child pipeline is created from files of the
//! same commit, and the job starts with no task; without `strategy: depend`
//! it then succeeds at once; with it, it stays running and ends as the
//! child ends (success, failed, or canceled). A trigger job that is
//! canceled cancels its child (a canceled pipeline cancels its unfinished
//! children: the runner's cancel does that, once, so that a child retried
//! later is not canceled again). Every step is derived again from the stored records
//! (each child knows its parent's job and attempt), so a restart at any
//! point goes on: a child stored before its parent's job was marked
//! started is adopted, not created twice.

use std::collections::BTreeMap;

use super::record::PipelineRecord;
use super::resource_group::Assignment;
use super::state::{JobStatus, PipelineStatus};

/// What a trigger job needs done.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum ChildStep {
    /// Pending job `job` of `pipeline`: create its child pipeline for
    /// `attempt`.
    Create {
        /// The parent pipeline.
        pipeline: u64,
        /// The trigger job.
        job: usize,
        /// The attempt the child is for, from 1.
        attempt: usize,
    },
    /// Pending job `job` whose child for `attempt` exists already (stored
    /// before a restart): start the job with it.
    Adopt {
        /// The parent pipeline.
        pipeline: u64,
        /// The trigger job.
        job: usize,
        /// The attempt, from 1.
        attempt: usize,
        /// The child pipeline.
        child: u64,
    },
    /// Running (or canceling) job `job` ends.
    Finish {
        /// The parent pipeline.
        pipeline: u64,
        /// The trigger job.
        job: usize,
        /// How.
        end: TriggerEnd,
    },
    /// Cancel child pipeline `child` (its parent or its trigger job was
    /// canceled).
    CancelChild {
        /// The child pipeline.
        child: u64,
    },
}

/// How a trigger job ends.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum TriggerEnd {
    /// The child was created (no `depend`), or it passed.
    Success,
    /// The child failed (or is gone): why.
    Failed(String),
    /// The child, or the job, was canceled.
    Canceled,
}

/// The steps the pipelines' trigger jobs need now. Pending trigger jobs
/// waiting for their resource group (`resources`) wait.
pub(crate) fn steps(
    pipelines: &BTreeMap<u64, PipelineRecord>,
    resources: &Assignment,
) -> Vec<ChildStep> {
    let mut out = Vec::new();
    for rec in pipelines.values() {
        for (j, job) in rec.state.jobs().iter().enumerate() {
            let Some(trigger) = rec.plan.jobs.get(j).and_then(|p| p.trigger.as_ref()) else {
                continue;
            };
            match job.status {
                JobStatus::Pending => {
                    if resources.is_waiting(rec.id, j) {
                        continue;
                    }
                    let attempt = job.attempts.len() + 1;
                    let adopted = pipelines.values().find(|c| {
                        c.family.parent.is_some_and(|p| {
                            p.pipeline == rec.id && p.job == j && p.attempt == attempt
                        })
                    });
                    out.push(match adopted {
                        Some(child) => ChildStep::Adopt {
                            pipeline: rec.id,
                            job: j,
                            attempt,
                            child: child.id,
                        },
                        None => ChildStep::Create {
                            pipeline: rec.id,
                            job: j,
                            attempt,
                        },
                    });
                }
                JobStatus::Running | JobStatus::Canceling => {
                    let attempt = job.attempts.len();
                    let child = rec
                        .family
                        .child_of(j, attempt)
                        .and_then(|id| pipelines.get(&id));
                    let finish = |end| ChildStep::Finish {
                        pipeline: rec.id,
                        job: j,
                        end,
                    };
                    let Some(child) = child else {
                        out.push(finish(TriggerEnd::Failed(
                            "its child pipeline is gone".to_string(),
                        )));
                        continue;
                    };
                    if job.status == JobStatus::Canceling {
                        if !child.status().is_finished() && !child.state.is_canceled() {
                            out.push(ChildStep::CancelChild { child: child.id });
                        }
                        out.push(finish(TriggerEnd::Canceled));
                        continue;
                    }
                    if !trigger.depend {
                        out.push(finish(TriggerEnd::Success));
                        continue;
                    }
                    match child.status() {
                        PipelineStatus::Success => out.push(finish(TriggerEnd::Success)),
                        PipelineStatus::Failed => out.push(finish(TriggerEnd::Failed(format!(
                            "child pipeline #{} failed",
                            child.id
                        )))),
                        PipelineStatus::Canceled => out.push(finish(TriggerEnd::Canceled)),
                        PipelineStatus::Running | PipelineStatus::Blocked => {}
                    }
                }
                _ => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
