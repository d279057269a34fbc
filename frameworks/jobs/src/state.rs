//! The framework's state, pure: the jobs, each schedule's next unhandled
//! tick, the active runs and the kept history; the operations of the API
//! checked against the whole set; what the clock and the tasks' updates do
//! to runs; and the key-value writes of every change, with
//! [`Jobs::load`] from the stored keys.

use std::collections::BTreeMap;

use crate::job::{JobDef, JobId, ScheduleDef};
use crate::run::{Run, RunId};
use crate::time::Timestamp;

/// A job as the APIs show it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JobStatus {
    /// The definition.
    pub def: JobDef,
    /// Its active runs, oldest first.
    pub active: Vec<Run>,
    /// Its finished runs kept, newest first.
    pub history: Vec<Run>,
    /// Each schedule's next tick (`None`: disabled or never again).
    pub next_ticks: BTreeMap<String, Option<Timestamp>>,
    /// Successful runs ever.
    pub success_count: u64,
    /// Failed runs ever (missed and skipped ticks not counted).
    pub failure_count: u64,
    /// The last successful run's end.
    pub last_success_at: Option<Timestamp>,
    /// The last failed run's end.
    pub last_failure_at: Option<Timestamp>,
}

/// An operation of the API.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Op {
    /// Create a job (`POST /v1/jobs`); refused if the id exists.
    Create(JobDef),
    /// Replace a job's definition (`PUT /v1/jobs/{id}`); with
    /// `keep_schedules` (the body had no `schedules`), its schedules stay.
    Update {
        /// The new definition.
        def: JobDef,
        /// Keep the current schedules instead of `def.schedules`.
        keep_schedules: bool,
    },
    /// Remove a job (`DELETE /v1/jobs/{id}`); refused while it has active
    /// runs unless `stop_runs` (Metronome's `stopCurrentJobRuns`).
    Remove {
        /// The job.
        id: JobId,
        /// Kill its active runs.
        stop_runs: bool,
    },
    /// Add a schedule (`POST /v1/jobs/{id}/schedules`); refused if its id
    /// exists.
    AddSchedule(JobId, ScheduleDef),
    /// Replace a schedule (`PUT /v1/jobs/{id}/schedules/{sid}`).
    ReplaceSchedule(JobId, ScheduleDef),
    /// Remove a schedule (`DELETE /v1/jobs/{id}/schedules/{sid}`).
    RemoveSchedule(JobId, String),
    /// Start a run now (`POST /v1/jobs/{id}/runs`).
    StartRun(JobId),
    /// Kill an active run (`POST /v1/jobs/{id}/runs/{rid}/actions/stop`).
    KillRun(JobId, RunId),
}

/// What an operation did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// The job as it is now (create, update).
    Job(Box<JobStatus>),
    /// The job was removed.
    Removed,
    /// The schedule as it is now (add, replace).
    Schedule(ScheduleDef),
    /// The schedule was removed.
    ScheduleRemoved,
    /// The run started, or the run being killed.
    Run(Box<Run>),
}

/// Why an operation was refused; nothing changed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The definition is not valid (422, the errors with their paths).
    #[error(transparent)]
    Invalid(#[from] crate::error::Invalid),
    /// No such job, schedule or run (404).
    #[error("{0}")]
    NotFound(String),
    /// The id exists already, or runs are active (409).
    #[error("{0}")]
    Conflict(String),
}

impl OpError {
    /// The HTTP status Metronome answers with.
    #[must_use]
    pub fn status(&self) -> u16 {
        match self {
            OpError::Invalid(_) => 422,
            OpError::NotFound(_) => 404,
            OpError::Conflict(_) => 409,
        }
    }
}

/// The whole state. (Written by the integrator.)
#[derive(Clone, Debug, Default)]
pub struct Jobs {
    _jobs: BTreeMap<JobId, ()>,
    _runs: BTreeMap<RunId, ()>,
}
