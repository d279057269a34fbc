//! Runs: one execution of a job, from a schedule's tick, by hand, or after
//! its parents succeeded. A run's id is derived from what started it, so a
//! tick's run has the same id whichever framework instance creates it:
//! `20261207162500-nightly` is the run of schedule `nightly`'s tick at
//! 16:25:00 UTC (milliseconds appended as `.123` when the tick has them).
//! A run by hand or after parents gets `20261207162512-m3f9a1` (the time it
//! was asked for and 5 random hex digits).
//!
//! A run holds its tasks: one per index `0..completions` at first, and a
//! new task (a new attempt, a new task id) for each restart of a failed
//! index. Task ids are `<job>.<run>.<index>.<attempt>` (read by people;
//! the framework finds a task's run through its own index, not by parsing).

use std::fmt;

use serde::{Deserialize, Serialize};

use crate::job::{JobId, RunSpec};
use crate::time::Timestamp;

/// A run's id (see the module docs).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct RunId(pub String);

impl RunId {
    /// The run of schedule `schedule`'s tick at `tick`.
    #[must_use]
    pub fn of_tick(schedule: &str, tick: Timestamp) -> RunId {
        RunId(format!("{}-{schedule}", tick.compact()))
    }

    /// A run asked for at `at`, told apart by `random`.
    #[must_use]
    pub fn asked(at: Timestamp, random: u32) -> RunId {
        RunId(format!("{}-m{:05x}", at.compact(), random & 0xf_ffff))
    }

    /// The id's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for RunId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What started a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Trigger {
    /// A schedule's tick.
    Schedule {
        /// The schedule's id.
        schedule: String,
        /// The tick's time.
        tick: Timestamp,
    },
    /// `POST /v1/jobs/{id}/runs` or `berth job run`.
    Manual,
    /// The parents' successful runs, each `(job, run)`.
    Dependency {
        /// The runs that satisfied the dependencies.
        parents: Vec<(JobId, RunId)>,
    },
}

/// A run's status: Metronome's five, and berth's for ticks that did not
/// run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RunStatus {
    /// Created, nothing launched yet.
    Initial,
    /// Tasks launched, none running yet.
    Starting,
    /// A task is running.
    Active,
    /// Every index succeeded.
    Success,
    /// Failed (a task failed past its restarts, a deadline passed, killed
    /// by a user or replaced by a newer run); the reason says which.
    Failed,
    /// A tick that was not run: it was found due past its starting
    /// deadline, or could not start within it (reason says which).
    Missed,
    /// A tick skipped by the `FORBID` concurrency policy, or a disabled
    /// schedule's (reason says which).
    Skipped,
}

impl RunStatus {
    /// Metronome's (and berth's) name: `INITIAL`, `STARTING`, `ACTIVE`,
    /// `SUCCESS`, `FAILED`, `MISSED`, `SKIPPED`.
    #[must_use]
    pub fn name(self) -> &'static str {
        match self {
            RunStatus::Initial => "INITIAL",
            RunStatus::Starting => "STARTING",
            RunStatus::Active => "ACTIVE",
            RunStatus::Success => "SUCCESS",
            RunStatus::Failed => "FAILED",
            RunStatus::Missed => "MISSED",
            RunStatus::Skipped => "SKIPPED",
        }
    }

    /// Whether the run is over.
    #[must_use]
    pub fn is_finished(self) -> bool {
        matches!(
            self,
            RunStatus::Success | RunStatus::Failed | RunStatus::Missed | RunStatus::Skipped
        )
    }
}

/// One task (one attempt of one index) of a run.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunTask {
    /// The task id (`<job>.<run>.<index>.<attempt>`).
    pub task_id: String,
    /// The index (`BERTH_JOB_INDEX`).
    pub index: u32,
    /// 0 for the first attempt of the index.
    pub attempt: u32,
    /// The last state known, as the proto's name (`TASK_RUNNING`), or
    /// `TASK_STAGING` before any update.
    pub state: String,
    /// Whether a launch of it may have been sent (saved before the
    /// launch; a restarted framework reconciles it instead of launching
    /// it again).
    pub launched: bool,
    /// The agent, once known.
    pub agent_id: String,
    /// When it was launched.
    pub launched_at: Option<Timestamp>,
    /// When it started running.
    pub started_at: Option<Timestamp>,
    /// When it ended.
    pub finished_at: Option<Timestamp>,
    /// Its exit code, when it ended with one.
    pub exit_code: Option<i32>,
    /// The last update's message or reason.
    pub message: String,
    /// Not launched before this time (the backoff of a restart).
    pub not_before: Option<Timestamp>,
    /// Since when its agent is unreachable (`TASK_UNREACHABLE`).
    #[serde(default)]
    pub unreachable_since: Option<Timestamp>,
}

impl RunTask {
    /// The task's last known state.
    #[must_use]
    pub fn task_state(&self) -> berth_proto::TaskState {
        berth_proto::TaskState::from_str_name(&self.state)
            .unwrap_or(berth_proto::TaskState::TaskStaging)
    }

    /// Whether the task is over (`TASK_UNKNOWN` included: a launched task
    /// the master does not have is lost).
    #[must_use]
    pub fn is_over(&self) -> bool {
        let s = self.task_state();
        s.is_terminal() || s == berth_proto::TaskState::TaskUnknown
    }

    /// Whether it ended successfully.
    #[must_use]
    pub fn succeeded(&self) -> bool {
        self.task_state() == berth_proto::TaskState::TaskFinished
    }
}

/// One run of a job.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Run {
    /// The id.
    pub id: RunId,
    /// Its job.
    pub job: JobId,
    /// What started it.
    pub trigger: Trigger,
    /// Its status.
    pub status: RunStatus,
    /// Why it ended as it did, or why it waits (empty when there is
    /// nothing to say).
    pub reason: String,
    /// When it was created.
    pub created_at: Timestamp,
    /// When its first task started running.
    pub started_at: Option<Timestamp>,
    /// When it finished.
    pub finished_at: Option<Timestamp>,
    /// The job's `run` when the run was created (a later change of the
    /// job does not change a run).
    pub spec: RunSpec,
    /// Its tasks, every attempt, in creation order.
    pub tasks: Vec<RunTask>,
    /// A run must have launched a task by then, or it is missed (a tick's
    /// run: the tick plus `startingDeadlineSeconds`) or failed (by hand or
    /// after parents: `maxLaunchDelay` after it was created).
    pub start_by: Timestamp,
    /// A run still going then is killed and failed
    /// (`activeDeadlineSeconds` after it was created).
    pub active_until: Option<Timestamp>,
    /// Why its tasks are being killed (by a user, replaced by a newer run,
    /// a deadline), until they all ended.
    #[serde(default)]
    pub stopping: Option<String>,
}

impl Run {
    /// The run's exit code: the first failed task's, or 0 when it
    /// succeeded; `None` while it runs or when no task ended with one.
    #[must_use]
    pub fn exit_code(&self) -> Option<i32> {
        match self.status {
            RunStatus::Success => Some(0),
            s if s.is_finished() => self
                .tasks
                .iter()
                .rev()
                .find_map(|t| t.exit_code.filter(|c| *c != 0)),
            _ => None,
        }
    }

    /// How long it ran (finish minus creation), once finished.
    #[must_use]
    pub fn duration(&self) -> Option<std::time::Duration> {
        Some(
            self.finished_at?
                .since(self.started_at.unwrap_or(self.created_at)),
        )
    }
}
