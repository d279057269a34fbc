//! The state machine of one pipeline: which job may start, what a finished
//! job means for the others, cancel, play and retry — GitLab's rules,
//! without any I/O, so that every transition is tested on its own.
//!
//! A pipeline is a list of [`JobNode`]s (what the plan says about each job:
//! its stage, its `needs`, `when`, `allow_failure`, `retry`) and, for each,
//! a [`JobState`]. The executor drives it:
//!
//! 1. [`Pipeline::advance`] resolves every job whose upstream is complete:
//!    it becomes [`JobStatus::Pending`] (to be launched),
//!    [`JobStatus::Manual`], [`JobStatus::Scheduled`] or
//!    [`JobStatus::Skipped`]. It also starts delayed jobs whose time has
//!    come.
//! 2. The executor launches pending jobs ([`Pipeline::pending`]) and reports
//!    [`Pipeline::started`] with the task it launched.
//! 3. It reports every end with [`Pipeline::finished`]; a failure whose
//!    reason the job's `retry` covers goes back to pending by itself.
//! 4. [`Pipeline::cancel`], [`Pipeline::play`], [`Pipeline::retry`] (the
//!    pipeline's failed and canceled jobs) and [`Pipeline::retry_job`]
//!    (one finished job) are the user's actions.
//!
//! Upstream means the jobs of all earlier stages, or with `needs` exactly
//! the needed jobs. A job's upstream is *complete* when none of it is
//! still to run; a manual job that nobody played counts as complete for
//! stage ordering when it may fail (`allow_failure`, the default for manual
//! jobs) and blocks otherwise, as GitLab does; a job that `needs` a manual
//! job waits until it is played and done.

use std::fmt;
use std::time::{Duration, SystemTime};

use serde::{Deserialize, Serialize};

/// When a job runs, relative to its upstream (GitLab's `when`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum When {
    /// All of the upstream passed (the default).
    OnSuccess,
    /// Some of the upstream failed.
    OnFailure,
    /// Whatever the upstream did.
    Always,
    /// Only when a user plays it (after the upstream passed).
    Manual,
    /// After the upstream passed, this long later.
    Delayed(Duration),
}

/// Why a job attempt failed: GitLab's failure reasons, which `retry:when`
/// names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum FailureReason {
    /// The script exited non-zero.
    ScriptFailure,
    /// The machine under the job went away: the agent was lost or
    /// restarted without its task, or the container could not be started.
    RunnerSystemFailure,
    /// The job ran past its `timeout`.
    JobExecutionTimeout,
    /// No offer could take the job for too long.
    StuckOrTimeoutFailure,
    /// An artifact or the source could not be fetched before the job.
    MissingDependencyFailure,
    /// The cluster refused the launch.
    SchedulerFailure,
    /// Artifacts could not be stored after the job.
    DataIntegrityFailure,
    /// Anything else.
    UnknownFailure,
}

impl FailureReason {
    /// Every reason, in GitLab's spelling order.
    pub const ALL: [FailureReason; 8] = [
        FailureReason::ScriptFailure,
        FailureReason::RunnerSystemFailure,
        FailureReason::JobExecutionTimeout,
        FailureReason::StuckOrTimeoutFailure,
        FailureReason::MissingDependencyFailure,
        FailureReason::SchedulerFailure,
        FailureReason::DataIntegrityFailure,
        FailureReason::UnknownFailure,
    ];

    /// GitLab's name of the reason, as `retry:when` spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            FailureReason::ScriptFailure => "script_failure",
            FailureReason::RunnerSystemFailure => "runner_system_failure",
            FailureReason::JobExecutionTimeout => "job_execution_timeout",
            FailureReason::StuckOrTimeoutFailure => "stuck_or_timeout_failure",
            FailureReason::MissingDependencyFailure => "missing_dependency_failure",
            FailureReason::SchedulerFailure => "scheduler_failure",
            FailureReason::DataIntegrityFailure => "data_integrity_failure",
            FailureReason::UnknownFailure => "unknown_failure",
        }
    }

    /// The reason GitLab's name stands for.
    pub fn parse(name: &str) -> Option<FailureReason> {
        FailureReason::ALL.into_iter().find(|r| r.as_str() == name)
    }
}

impl fmt::Display for FailureReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Automatic retries of a job (GitLab's `retry`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Retries after the first attempt (GitLab allows 0 to 2).
    pub max: u8,
    /// The failures that are retried. With `exit_codes` also empty, every
    /// failure is (`when: always`, GitLab's default).
    pub when: Vec<FailureReason>,
    /// Script failures with these exit codes are retried too
    /// (`retry:exit_codes`).
    #[serde(default)]
    pub exit_codes: Vec<i32>,
}

impl RetryPolicy {
    /// Whether a failure is retried: its reason is listed, or it is a
    /// script failure with a listed exit code, or nothing is listed.
    fn covers(&self, end: &JobEnd) -> bool {
        let Some(reason) = end.reason else {
            return false;
        };
        (self.when.is_empty() && self.exit_codes.is_empty())
            || self.when.contains(&reason)
            || (reason == FailureReason::ScriptFailure
                && end.exit_code.is_some_and(|c| self.exit_codes.contains(&c)))
    }
}

/// Whether a failed job fails the pipeline (GitLab's `allow_failure`).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllowFailure {
    /// Any failure is allowed.
    pub any: bool,
    /// Script failures with these exit codes are allowed.
    pub exit_codes: Vec<i32>,
}

impl AllowFailure {
    /// Failures are not allowed.
    pub fn no() -> AllowFailure {
        AllowFailure::default()
    }

    /// Every failure is allowed.
    pub fn yes() -> AllowFailure {
        AllowFailure {
            any: true,
            exit_codes: Vec::new(),
        }
    }

    fn allows(&self, end: &JobEnd) -> bool {
        self.any
            || (end.reason == Some(FailureReason::ScriptFailure)
                && end.exit_code.is_some_and(|c| self.exit_codes.contains(&c)))
    }
}

/// What the plan says about one job, as far as ordering is concerned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobNode {
    /// The job's name (unique in the pipeline).
    pub name: String,
    /// Index of its stage in the pipeline's stage list.
    pub stage: usize,
    /// The jobs it needs (indices into the pipeline's jobs); `None` orders
    /// it by stage instead. `Some(vec![])` starts it at once.
    pub needs: Option<Vec<usize>>,
    /// When it runs.
    pub when: When,
    /// Whether its failure fails the pipeline.
    pub allow_failure: AllowFailure,
    /// Automatic retries.
    pub retry: RetryPolicy,
}

/// A job's status, with GitLab's names.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum JobStatus {
    /// Waiting for its upstream.
    Created,
    /// Ready to run: waiting for an offer.
    Pending,
    /// Launched.
    Running,
    /// Waiting for a user to play it.
    Manual,
    /// Delayed: starts by itself at the given time.
    Scheduled,
    /// Cancel asked while it was running; waiting for the task to end.
    Canceling,
    /// Finished with exit code 0.
    Success,
    /// Finished otherwise (see the attempt's reason).
    Failed,
    /// Canceled by a user, or superseded.
    Canceled,
    /// Not run: its upstream did not allow it.
    Skipped,
}

impl JobStatus {
    /// GitLab's name of the status.
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Created => "created",
            JobStatus::Pending => "pending",
            JobStatus::Running => "running",
            JobStatus::Manual => "manual",
            JobStatus::Scheduled => "scheduled",
            JobStatus::Canceling => "canceling",
            JobStatus::Success => "success",
            JobStatus::Failed => "failed",
            JobStatus::Canceled => "canceled",
            JobStatus::Skipped => "skipped",
        }
    }

    /// The job will not change by itself any more.
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            JobStatus::Success | JobStatus::Failed | JobStatus::Canceled | JobStatus::Skipped
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// How an attempt ended, as the executor saw it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobEnd {
    /// The script's exit code, when it ran to the end.
    pub exit_code: Option<i32>,
    /// `None` for success, else why it failed.
    pub reason: Option<FailureReason>,
    /// A sentence for the user (the task's message).
    pub message: String,
}

impl JobEnd {
    /// The script exited 0.
    pub fn success() -> JobEnd {
        JobEnd {
            exit_code: Some(0),
            ..JobEnd::default()
        }
    }

    /// The script exited with `code` (non-zero).
    pub fn script_failure(code: i32) -> JobEnd {
        JobEnd {
            exit_code: Some(code),
            reason: Some(FailureReason::ScriptFailure),
            message: format!("the script exited with code {code}"),
        }
    }

    /// Failed for `reason`, with a message.
    pub fn failure(reason: FailureReason, message: impl Into<String>) -> JobEnd {
        JobEnd {
            exit_code: None,
            reason: Some(reason),
            message: message.into(),
        }
    }
}

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Attempt {
    /// The task that ran it (empty until launched).
    pub task_id: String,
    /// When it was launched.
    pub started: Option<SystemTime>,
    /// When it ended.
    pub finished: Option<SystemTime>,
    /// How it ended.
    pub end: Option<JobEnd>,
}

/// A job's state in the pipeline.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobState {
    /// Where it is.
    pub status: JobStatus,
    /// Its runs, oldest first; the last is the current one.
    pub attempts: Vec<Attempt>,
    /// For [`JobStatus::Scheduled`]: when it starts.
    pub start_at: Option<SystemTime>,
    /// Skipped because something upstream failed (such a skip counts as a
    /// failure for the jobs downstream of it).
    pub skipped_by_failure: bool,
    /// Failed, but `allow_failure` lets the pipeline pass.
    pub failure_allowed: bool,
}

impl JobState {
    fn new() -> JobState {
        JobState {
            status: JobStatus::Created,
            attempts: Vec::new(),
            start_at: None,
            skipped_by_failure: false,
            failure_allowed: false,
        }
    }
}

/// The pipeline's overall status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PipelineStatus {
    /// Jobs are still to run.
    Running,
    /// Nothing runs, and jobs wait for a manual job to be played (one that
    /// may not fail, or one they need).
    Blocked,
    /// Everything that ran passed (allowed failures included).
    Success,
    /// A job failed that may not.
    Failed,
    /// Canceled.
    Canceled,
}

impl PipelineStatus {
    /// GitLab's name.
    pub fn as_str(self) -> &'static str {
        match self {
            PipelineStatus::Running => "running",
            PipelineStatus::Blocked => "manual",
            PipelineStatus::Success => "success",
            PipelineStatus::Failed => "failed",
            PipelineStatus::Canceled => "canceled",
        }
    }

    /// Nothing will happen without a user.
    pub fn is_finished(self) -> bool {
        !matches!(self, PipelineStatus::Running)
    }
}

impl fmt::Display for PipelineStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What a user asked that the pipeline cannot do.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StateError {
    /// A `needs` index is out of range or names the job itself.
    #[error("job {job:?} needs job #{need}, which does not exist")]
    BadNeed {
        /// The job.
        job: String,
        /// The bad index.
        need: usize,
    },
    /// A job needs a job of a later stage.
    #[error("job {job:?} needs job {need:?} of a later stage")]
    LaterStage {
        /// The job.
        job: String,
        /// The job it needs.
        need: String,
    },
    /// The `needs` form a cycle.
    #[error("the needs of job {0:?} form a cycle")]
    Cycle(String),
    /// No such job.
    #[error("no job #{0} in this pipeline")]
    NoSuchJob(usize),
    /// `play` on a job that is not manual.
    #[error("job {name:?} is {status}, not a manual job waiting to be played")]
    NotManual {
        /// The job.
        name: String,
        /// Its status.
        status: JobStatus,
    },
    /// `retry` of a job that is not finished (or was skipped: it never
    /// ran, so there is nothing to retry; retry the job that made it skip).
    #[error(
        "job {name:?} is {status}; only a finished job (success, failed or canceled) can be retried"
    )]
    NotFinished {
        /// The job.
        name: String,
        /// Its status.
        status: JobStatus,
    },
    /// `started`/`finished` for a job in the wrong state.
    #[error("job {name:?} is {status}, so it cannot be {what}")]
    WrongState {
        /// The job.
        name: String,
        /// Its status.
        status: JobStatus,
        /// What was reported.
        what: &'static str,
    },
}

/// A pipeline's jobs and their states.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pipeline {
    nodes: Vec<JobNode>,
    jobs: Vec<JobState>,
    canceled: bool,
}

/// How the upstream of a job stands.
enum Upstream {
    /// Some of it is still to run.
    Waiting,
    /// All done; whether any of it failed.
    Done { failed: bool },
}

impl Pipeline {
    /// A pipeline of these jobs, all created. Checks the `needs`: in range
    /// and acyclic.
    pub fn new(nodes: Vec<JobNode>) -> Result<Pipeline, StateError> {
        for (i, node) in nodes.iter().enumerate() {
            for &need in node.needs.iter().flatten() {
                if need >= nodes.len() || need == i {
                    return Err(StateError::BadNeed {
                        job: node.name.clone(),
                        need,
                    });
                }
                // It would wait for its own stage's predecessors forever.
                if nodes[need].stage > node.stage {
                    return Err(StateError::LaterStage {
                        job: node.name.clone(),
                        need: nodes[need].name.clone(),
                    });
                }
            }
        }
        // Kahn's algorithm over the needs.
        let mut indegree: Vec<usize> = nodes
            .iter()
            .map(|n| n.needs.as_ref().map_or(0, Vec::len))
            .collect();
        let mut ready: Vec<usize> = (0..nodes.len()).filter(|&i| indegree[i] == 0).collect();
        let mut seen = 0;
        while let Some(i) = ready.pop() {
            seen += 1;
            for (j, node) in nodes.iter().enumerate() {
                let count = node
                    .needs
                    .iter()
                    .flatten()
                    .filter(|&&need| need == i)
                    .count();
                if count > 0 {
                    indegree[j] -= count;
                    if indegree[j] == 0 {
                        ready.push(j);
                    }
                }
            }
        }
        if seen < nodes.len() {
            let stuck = indegree.iter().position(|&d| d > 0).unwrap_or(0);
            return Err(StateError::Cycle(nodes[stuck].name.clone()));
        }
        let jobs = nodes.iter().map(|_| JobState::new()).collect();
        Ok(Pipeline {
            nodes,
            jobs,
            canceled: false,
        })
    }

    /// The jobs as planned.
    pub fn nodes(&self) -> &[JobNode] {
        &self.nodes
    }

    /// The jobs' states, in the order of [`Pipeline::nodes`].
    pub fn jobs(&self) -> &[JobState] {
        &self.jobs
    }

    /// One job's state.
    pub fn job(&self, i: usize) -> Option<&JobState> {
        self.jobs.get(i)
    }

    /// The index of the job with this name.
    pub fn find(&self, name: &str) -> Option<usize> {
        self.nodes.iter().position(|n| n.name == name)
    }

    /// Whether the pipeline was canceled (and not retried since).
    pub fn is_canceled(&self) -> bool {
        self.canceled
    }

    /// Jobs ready to be launched.
    pub fn pending(&self) -> Vec<usize> {
        self.indices(JobStatus::Pending)
    }

    /// Jobs launched and not yet ended (including those being canceled).
    pub fn running(&self) -> Vec<usize> {
        (0..self.jobs.len())
            .filter(|&i| {
                matches!(
                    self.jobs[i].status,
                    JobStatus::Running | JobStatus::Canceling
                )
            })
            .collect()
    }

    fn indices(&self, status: JobStatus) -> Vec<usize> {
        (0..self.jobs.len())
            .filter(|&i| self.jobs[i].status == status)
            .collect()
    }

    /// The earliest time a scheduled (delayed) job starts.
    pub fn next_wakeup(&self) -> Option<SystemTime> {
        self.jobs
            .iter()
            .filter(|j| j.status == JobStatus::Scheduled)
            .filter_map(|j| j.start_at)
            .min()
    }

    fn upstream(&self, i: usize) -> Vec<usize> {
        match &self.nodes[i].needs {
            Some(needs) => needs.clone(),
            None => (0..self.nodes.len())
                .filter(|&j| self.nodes[j].stage < self.nodes[i].stage)
                .collect(),
        }
    }

    fn upstream_state(&self, i: usize) -> Upstream {
        let by_needs = self.nodes[i].needs.is_some();
        let mut failed = false;
        for j in self.upstream(i) {
            let state = &self.jobs[j];
            match state.status {
                JobStatus::Success => {}
                JobStatus::Failed => failed |= !state.failure_allowed,
                JobStatus::Skipped => failed |= state.skipped_by_failure,
                JobStatus::Canceled => failed = true,
                // An unplayed manual job that may fail does not hold up the
                // next stages; one that may not blocks them. A job that
                // needs it waits for it either way.
                JobStatus::Manual if !by_needs && self.nodes[j].allow_failure.any => {}
                _ => return Upstream::Waiting,
            }
        }
        Upstream::Done { failed }
    }

    /// Resolves every job whose upstream is complete, and starts delayed
    /// jobs whose time has come. Call it after every change; it returns
    /// whether anything changed.
    pub fn advance(&mut self, now: SystemTime) -> bool {
        let mut changed = false;
        if self.canceled {
            return false;
        }
        for job in &mut self.jobs {
            if job.status == JobStatus::Scheduled && job.start_at.is_some_and(|at| at <= now) {
                job.status = JobStatus::Pending;
                job.start_at = None;
                changed = true;
            }
        }
        // Jobs only move forward, so repeat until nothing moves: a skip
        // can complete the upstream of the next job.
        loop {
            let mut moved = false;
            for i in 0..self.jobs.len() {
                if self.jobs[i].status != JobStatus::Created {
                    continue;
                }
                let Upstream::Done { failed } = self.upstream_state(i) else {
                    continue;
                };
                let job = &mut self.jobs[i];
                let (status, by_failure) = match (self.nodes[i].when, failed) {
                    (When::OnSuccess, false) | (When::Always, _) | (When::OnFailure, true) => {
                        (JobStatus::Pending, false)
                    }
                    (When::Manual, false) => (JobStatus::Manual, false),
                    (When::Delayed(after), false) => {
                        job.start_at = Some(now + after);
                        (JobStatus::Scheduled, false)
                    }
                    (When::OnSuccess | When::Manual | When::Delayed(_), true) => {
                        (JobStatus::Skipped, true)
                    }
                    (When::OnFailure, false) => (JobStatus::Skipped, false),
                };
                job.status = status;
                job.skipped_by_failure = by_failure;
                moved = true;
            }
            if !moved {
                break;
            }
            changed = true;
        }
        changed
    }

    /// The executor launched job `i` as `task_id`.
    pub fn started(
        &mut self,
        i: usize,
        task_id: impl Into<String>,
        now: SystemTime,
    ) -> Result<(), StateError> {
        let job = self.jobs.get_mut(i).ok_or(StateError::NoSuchJob(i))?;
        if job.status != JobStatus::Pending {
            return Err(StateError::WrongState {
                name: self.nodes[i].name.clone(),
                status: job.status,
                what: "started",
            });
        }
        job.status = JobStatus::Running;
        job.attempts.push(Attempt {
            task_id: task_id.into(),
            started: Some(now),
            finished: None,
            end: None,
        });
        Ok(())
    }

    /// Job `i`'s task ended. A failure `retry` covers puts the job back to
    /// pending (returns `true`); a job being canceled ends canceled whatever
    /// its exit.
    pub fn finished(&mut self, i: usize, end: JobEnd, now: SystemTime) -> Result<bool, StateError> {
        let node = self.nodes.get(i).ok_or(StateError::NoSuchJob(i))?;
        let job = &mut self.jobs[i];
        if !matches!(job.status, JobStatus::Running | JobStatus::Canceling) {
            return Err(StateError::WrongState {
                name: node.name.clone(),
                status: job.status,
                what: "finished",
            });
        }
        let canceling = job.status == JobStatus::Canceling || self.canceled;
        let failed_attempts = job
            .attempts
            .iter()
            .filter(|a| a.end.as_ref().is_some_and(|e| e.reason.is_some()))
            .count();
        if let Some(attempt) = job.attempts.last_mut() {
            attempt.finished = Some(now);
            attempt.end = Some(end.clone());
        }
        if canceling {
            job.status = JobStatus::Canceled;
            return Ok(false);
        }
        match end.reason {
            None => {
                job.status = JobStatus::Success;
                job.failure_allowed = false;
                Ok(false)
            }
            Some(_) => {
                // `failed_attempts` counts the earlier failures: retry while
                // they are fewer than `max`.
                if failed_attempts < usize::from(node.retry.max) && node.retry.covers(&end) {
                    job.status = JobStatus::Pending;
                    return Ok(true);
                }
                job.status = JobStatus::Failed;
                job.failure_allowed = node.allow_failure.allows(&end);
                Ok(false)
            }
        }
    }

    /// Plays a manual job: it becomes pending.
    pub fn play(&mut self, i: usize) -> Result<(), StateError> {
        let job = self.jobs.get_mut(i).ok_or(StateError::NoSuchJob(i))?;
        if job.status != JobStatus::Manual {
            return Err(StateError::NotManual {
                name: self.nodes[i].name.clone(),
                status: job.status,
            });
        }
        job.status = JobStatus::Pending;
        Ok(())
    }

    /// Cancels the pipeline: jobs not started are canceled at once, running
    /// ones move to canceling. Returns the jobs whose tasks must be killed.
    /// A pipeline whose jobs are all finished is left as it is.
    pub fn cancel(&mut self) -> Vec<usize> {
        // A pipeline with nothing left to run stays as it ended.
        if self.jobs.iter().all(|j| j.status.is_finished()) {
            return Vec::new();
        }
        self.canceled = true;
        let mut kill = Vec::new();
        for (i, job) in self.jobs.iter_mut().enumerate() {
            match job.status {
                JobStatus::Created
                | JobStatus::Pending
                | JobStatus::Manual
                | JobStatus::Scheduled => {
                    job.status = JobStatus::Canceled;
                    job.start_at = None;
                }
                JobStatus::Running => {
                    job.status = JobStatus::Canceling;
                    kill.push(i);
                }
                JobStatus::Canceling => kill.push(i),
                JobStatus::Success
                | JobStatus::Failed
                | JobStatus::Canceled
                | JobStatus::Skipped => {}
            }
        }
        kill
    }

    /// Moves running job `i` (alone) to canceling: its end makes it
    /// canceled (a trigger job whose child pipeline was canceled).
    pub fn cancel_job(&mut self, i: usize) -> Result<(), StateError> {
        let job = self.jobs.get_mut(i).ok_or(StateError::NoSuchJob(i))?;
        match job.status {
            JobStatus::Running | JobStatus::Canceling => {
                job.status = JobStatus::Canceling;
                Ok(())
            }
            status => Err(StateError::WrongState {
                name: self.nodes[i].name.clone(),
                status,
                what: "canceled",
            }),
        }
    }

    /// Retries one job, as GitLab's "retry job" button: a job that has
    /// ended — failed, canceled, or passed — goes back to pending for a new
    /// attempt (its earlier attempts stay in its history). The jobs
    /// downstream of it that were skipped (because of its failure, or of a
    /// failure it passed on) or canceled before they started go back to
    /// created, so that they run if it passes now; jobs that ran keep their
    /// results, and so their artifacts. The pipeline is running again (no
    /// longer canceled).
    ///
    /// A job still to run or running (created, pending, manual, scheduled,
    /// running, canceling) cannot be retried, nor a skipped one (it never
    /// ran): [`StateError::NotFinished`], and nothing changes.
    pub fn retry_job(&mut self, i: usize) -> Result<(), StateError> {
        let job = self.jobs.get(i).ok_or(StateError::NoSuchJob(i))?;
        if !job.status.is_finished() || job.status == JobStatus::Skipped {
            return Err(StateError::NotFinished {
                name: self.nodes[i].name.clone(),
                status: job.status,
            });
        }
        self.canceled = false;
        self.reset(i, JobStatus::Pending);
        self.reset_downstream(&[i]);
        Ok(())
    }

    /// Retries the pipeline: every failed or canceled job runs again, and
    /// the jobs skipped or canceled after them are created again. Jobs
    /// that passed keep their result (and their artifacts). Returns the
    /// retried jobs.
    pub fn retry(&mut self) -> Vec<usize> {
        self.canceled = false;
        let retried: Vec<usize> = (0..self.jobs.len())
            .filter(|&i| {
                let job = &self.jobs[i];
                matches!(job.status, JobStatus::Failed | JobStatus::Canceled)
                    && !job.attempts.is_empty()
            })
            .collect();
        for &i in &retried {
            self.reset(i, JobStatus::Pending);
        }
        // Canceled before they ever started: back to waiting for upstream.
        let mut again = retried.clone();
        for i in 0..self.jobs.len() {
            if self.jobs[i].status == JobStatus::Canceled && self.jobs[i].attempts.is_empty() {
                self.reset(i, JobStatus::Created);
                again.push(i);
            }
        }
        // What they skipped (a job retried alone after a cancel can have
        // skipped jobs that also need a canceled one) is decided again.
        self.reset_downstream(&again);
        retried
    }

    fn reset(&mut self, i: usize, status: JobStatus) {
        let job = &mut self.jobs[i];
        job.status = status;
        job.skipped_by_failure = false;
        job.failure_allowed = false;
        job.start_at = None;
    }

    /// Puts skipped and never-started canceled jobs downstream of `from`
    /// back to created.
    fn reset_downstream(&mut self, from: &[usize]) {
        let mut marked = vec![false; self.jobs.len()];
        let mut stack: Vec<usize> = from.to_vec();
        while let Some(j) = stack.pop() {
            for (i, seen) in marked.iter_mut().enumerate() {
                if *seen || !self.upstream(i).contains(&j) {
                    continue;
                }
                *seen = true;
                let job = &self.jobs[i];
                let again = job.status == JobStatus::Skipped
                    || (job.status == JobStatus::Canceled && job.attempts.is_empty());
                if again {
                    self.reset(i, JobStatus::Created);
                }
                stack.push(i);
            }
        }
    }

    /// The pipeline's status.
    pub fn status(&self) -> PipelineStatus {
        let active = self.jobs.iter().any(|j| {
            matches!(
                j.status,
                JobStatus::Pending
                    | JobStatus::Running
                    | JobStatus::Canceling
                    | JobStatus::Scheduled
            )
        });
        if self.canceled {
            return if active {
                PipelineStatus::Running
            } else {
                PipelineStatus::Canceled
            };
        }
        if active {
            return PipelineStatus::Running;
        }
        // With nothing active, a job still created waits for a manual job
        // to be played (or for `advance`, before the first one).
        if self.jobs.iter().any(|j| j.status == JobStatus::Created) {
            let manual = self.jobs.iter().any(|j| j.status == JobStatus::Manual);
            return if manual {
                PipelineStatus::Blocked
            } else {
                PipelineStatus::Running
            };
        }
        let failed = self
            .jobs
            .iter()
            .any(|j| j.status == JobStatus::Failed && !j.failure_allowed);
        if failed {
            return PipelineStatus::Failed;
        }
        let blocked = self
            .jobs
            .iter()
            .zip(&self.nodes)
            .any(|(j, n)| j.status == JobStatus::Manual && !n.allow_failure.any);
        if blocked {
            return PipelineStatus::Blocked;
        }
        if self.jobs.iter().any(|j| j.status == JobStatus::Canceled) {
            return PipelineStatus::Canceled;
        }
        PipelineStatus::Success
    }

    /// Some job failed but was allowed to ("passed with warnings").
    pub fn has_warnings(&self) -> bool {
        self.jobs
            .iter()
            .any(|j| j.status == JobStatus::Failed && j.failure_allowed)
    }
}

#[cfg(test)]
mod tests;
