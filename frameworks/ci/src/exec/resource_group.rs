//! `resource_group`: across every pipeline of a project, at most one job of
//! a resource group runs at a time (GitLab's `process_mode: unordered`).
//!
//! As in GitLab, a resource group belongs to a project: groups are keyed by
//! the project's key ([`PipelineRecord::project_key`], the repository and
//! subdirectory) and the group's name, so `production` of one repository
//! never waits for `production` of another, even when both projects have
//! the same name.
//!
//! A job holds its group from the moment it is launched until its task has
//! ended, however it ends (success, failure, cancel, timeout, lost agent):
//! that is, while its status is [`JobStatus::Running`] or
//! [`JobStatus::Canceling`]. A pending job whose group is held, or was just
//! given to an older pending job, *waits for the resource*: the runner does
//! not offer it to the cluster, and the API shows it as
//! `waiting_for_resource`, as GitLab does. Older pipelines' jobs come first.
//!
//! This is pure: [`assign`] looks at the jobs' statuses only, so the runner
//! calls it again whenever it needs the answer and nothing is stored.

use std::collections::HashSet;

#[cfg(doc)]
use super::record::PipelineRecord;
use super::state::JobStatus;

/// A job that names a resource group, as [`assign`] sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupJob<'a> {
    /// Its pipeline.
    pub pipeline: u64,
    /// Its index in the pipeline.
    pub job: usize,
    /// Its project's key ([`PipelineRecord::project_key`]): groups of
    /// different projects are different groups.
    pub project: &'a str,
    /// Its resource group.
    pub group: &'a str,
    /// Its status.
    pub status: JobStatus,
}

/// Which pending jobs wait for their resource group.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Assignment {
    waiting: HashSet<(u64, usize)>,
}

impl Assignment {
    /// Whether job `job` of pipeline `pipeline` is pending but may not start
    /// because another job holds (or is first in line for) its group.
    pub fn is_waiting(&self, pipeline: u64, job: usize) -> bool {
        self.waiting.contains(&(pipeline, job))
    }

    /// How many jobs wait.
    pub fn waiting_count(&self) -> usize {
        self.waiting.len()
    }
}

/// Decides which pending jobs may start. `jobs` must come oldest first
/// (pipelines by id, then jobs in plan order): the first pending job of a
/// free group (of its project) gets it, the others wait.
pub fn assign(jobs: &[GroupJob<'_>]) -> Assignment {
    let mut held: HashSet<(&str, &str)> = jobs
        .iter()
        .filter(|j| matches!(j.status, JobStatus::Running | JobStatus::Canceling))
        .map(|j| (j.project, j.group))
        .collect();
    let mut waiting = HashSet::new();
    for j in jobs.iter().filter(|j| j.status == JobStatus::Pending) {
        // `insert` is false when the group is already held or given.
        if !held.insert((j.project, j.group)) {
            waiting.insert((j.pipeline, j.job));
        }
    }
    Assignment { waiting }
}

#[cfg(test)]
mod tests {
    use std::time::SystemTime;

    use super::*;
    use crate::exec::state::{
        AllowFailure, FailureReason, JobEnd, JobNode, Pipeline, RetryPolicy, When,
    };

    fn one_job_pipeline() -> Pipeline {
        let mut p = Pipeline::new(vec![JobNode {
            name: "deploy".into(),
            stage: 0,
            needs: None,
            when: When::OnSuccess,
            allow_failure: AllowFailure::no(),
            retry: RetryPolicy::default(),
        }])
        .expect("a valid pipeline");
        p.advance(SystemTime::UNIX_EPOCH);
        p
    }

    fn jobs<'a>(pipelines: &'a [(u64, &'a Pipeline)]) -> Vec<GroupJob<'a>> {
        pipelines
            .iter()
            .map(|(id, p)| GroupJob {
                pipeline: *id,
                job: 0,
                project: "/src/app",
                group: "production",
                status: p.jobs()[0].status,
            })
            .collect()
    }

    #[test]
    fn the_oldest_pending_job_gets_a_free_group_and_the_others_wait() {
        let a = one_job_pipeline();
        let b = one_job_pipeline();
        let all = [(1, &a), (2, &b)];
        let assignment = assign(&jobs(&all));
        assert!(!assignment.is_waiting(1, 0));
        assert!(assignment.is_waiting(2, 0));
        assert_eq!(assignment.waiting_count(), 1);
    }

    #[test]
    fn other_groups_and_jobs_without_one_do_not_wait() {
        let list = [
            GroupJob {
                pipeline: 1,
                job: 0,
                project: "/src/app",
                group: "staging",
                status: JobStatus::Running,
            },
            GroupJob {
                pipeline: 2,
                job: 0,
                project: "/src/app",
                group: "production",
                status: JobStatus::Pending,
            },
            GroupJob {
                pipeline: 2,
                job: 1,
                project: "/src/app",
                group: "staging",
                status: JobStatus::Pending,
            },
        ];
        let assignment = assign(&list);
        assert!(!assignment.is_waiting(2, 0), "production is free");
        assert!(assignment.is_waiting(2, 1), "staging is held");
        assert!(!assignment.is_waiting(3, 0), "not a job of any group");
    }

    #[test]
    fn a_group_belongs_to_its_project() {
        // Two repositories whose projects are both named `app`: their
        // `production` groups are different groups.
        let job = |pipeline, project, status| GroupJob {
            pipeline,
            job: 0,
            project,
            group: "production",
            status,
        };
        let list = [
            job(1, "/src/a/app", JobStatus::Running),
            job(2, "/src/b/app", JobStatus::Pending),
            job(3, "/src/a/app", JobStatus::Pending),
            job(4, "/src/b/app", JobStatus::Pending),
        ];
        let assignment = assign(&list);
        assert!(!assignment.is_waiting(2, 0), "another project's group");
        assert!(assignment.is_waiting(3, 0), "its project's group is held");
        assert!(assignment.is_waiting(4, 0), "pipeline 2 is first in line");
        assert_eq!(assignment.waiting_count(), 2);
    }

    /// Drives pipeline `a` through `end` and checks that `b`, which waited
    /// while `a` ran, may start afterwards.
    fn released_after(end: impl FnOnce(&mut Pipeline)) {
        let mut a = one_job_pipeline();
        let b = one_job_pipeline();
        a.started(0, "ci-1-0-1", SystemTime::UNIX_EPOCH)
            .expect("starts");
        assert!(assign(&jobs(&[(1, &a), (2, &b)])).is_waiting(2, 0));
        end(&mut a);
        assert!(a.jobs()[0].status.is_finished(), "{:?}", a.jobs()[0]);
        assert!(!assign(&jobs(&[(1, &a), (2, &b)])).is_waiting(2, 0));
    }

    #[test]
    fn the_group_is_released_after_success() {
        released_after(|a| {
            a.finished(0, JobEnd::success(), SystemTime::UNIX_EPOCH)
                .expect("ends");
        });
    }

    #[test]
    fn the_group_is_released_after_a_failure_a_timeout_or_a_lost_agent() {
        released_after(|a| {
            a.finished(0, JobEnd::script_failure(1), SystemTime::UNIX_EPOCH)
                .expect("ends");
        });
        released_after(|a| {
            let end = JobEnd::failure(FailureReason::JobExecutionTimeout, "too long");
            a.finished(0, end, SystemTime::UNIX_EPOCH).expect("ends");
        });
        released_after(|a| {
            let end = JobEnd::failure(FailureReason::RunnerSystemFailure, "agent lost");
            a.finished(0, end, SystemTime::UNIX_EPOCH).expect("ends");
        });
    }

    #[test]
    fn a_canceled_job_holds_the_group_until_its_task_has_ended() {
        let mut a = one_job_pipeline();
        let b = one_job_pipeline();
        a.started(0, "ci-1-0-1", SystemTime::UNIX_EPOCH)
            .expect("starts");
        assert_eq!(a.cancel(), vec![0]);
        assert_eq!(a.jobs()[0].status, JobStatus::Canceling);
        assert!(
            assign(&jobs(&[(1, &a), (2, &b)])).is_waiting(2, 0),
            "after_script may still run"
        );
        let killed = JobEnd::failure(FailureReason::UnknownFailure, "killed");
        a.finished(0, killed, SystemTime::UNIX_EPOCH).expect("ends");
        assert_eq!(a.jobs()[0].status, JobStatus::Canceled);
        assert!(!assign(&jobs(&[(1, &a), (2, &b)])).is_waiting(2, 0));
    }

    #[test]
    fn pending_jobs_of_canceled_pipelines_give_way() {
        let mut a = one_job_pipeline();
        let mut b = one_job_pipeline();
        let c = one_job_pipeline();
        // a is first in line; canceled before it starts, it gives way to b.
        assert!(a.cancel().is_empty());
        let assignment = assign(&jobs(&[(1, &a), (2, &b), (3, &c)]));
        assert!(!assignment.is_waiting(2, 0));
        assert!(assignment.is_waiting(3, 0));
        assert!(b.cancel().is_empty());
        assert!(!assign(&jobs(&[(1, &a), (2, &b), (3, &c)])).is_waiting(3, 0));
    }
}
