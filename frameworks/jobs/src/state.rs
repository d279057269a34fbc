//! The framework's state, pure: the jobs, each schedule's next unhandled
//! tick, the active runs and the kept history; the operations of the API
//! checked against the whole set (`ops.rs`); what the clock does
//! (`clock.rs`: due ticks, deadlines, backoffs) and what the tasks' updates
//! do (`updates.rs`); the tasks to run (`tasks.rs`); and the key-value
//! records of every change with [`Jobs::load`] from them (`records.rs`).
//!
//! # Exactly once
//!
//! A schedule's cursor (its next unhandled tick) and the runs its due
//! ticks create are changed together and written in one transaction
//! ([`Jobs::take_writes`] keeps a job's records together), fenced by the
//! active instance's lease, before any task of those runs is launched. A
//! tick is therefore either before the stored cursor, and its run is
//! stored (or recorded missed or skipped), or after it, and no run of it
//! exists anywhere: an instance that takes over reads both back and goes
//! on from the cursor. A run's id is derived from its tick
//! ([`RunId::of_tick`]), so the same tick can never make two runs.
//!
//! Every mutation marks the records it changed dirty; the framework writes
//! them ([`Jobs::take_writes`]) before it acts on the change (answers the
//! API, launches, acknowledges an update).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use crate::job::{JobDef, JobId, ScheduleDef};
use crate::run::{Run, RunId};
use crate::schedule::{Cron, Timers};
use crate::time::Timestamp;

mod clock;
mod ops;
mod records;
mod tasks;
#[cfg(test)]
mod tests;
mod updates;

pub use records::{LoadError, NAMESPACE_PREFIXES, Write};
pub use tasks::{TaskUpdate, WantedTask, allows};

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
    /// Store a secret's value (`PUT /v1/secrets/{path}`).
    PutSecret {
        /// Where (see [`check_secret`]).
        path: String,
        /// The value.
        value: String,
    },
    /// Remove a secret (`DELETE /v1/secrets/{path}`).
    RemoveSecret(String),
}

/// Longest secret path.
pub const MAX_SECRET_PATH: usize = 256;
/// Shortest and longest secret value: a value is masked in tasks' output,
/// which takes 8 to 4096 bytes without line breaks or NUL.
pub const SECRET_BYTES: std::ops::RangeInclusive<usize> = 8..=4096;

/// Checks a secret's path and value; the message says what is wrong.
///
/// # Errors
/// A readable reason, quoting the path (never the value).
pub fn check_secret(path: &str, value: Option<&str>) -> Result<(), String> {
    use berth_scheduler_core::error::quoted;
    let ok_char = |c: char| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '/');
    if path.is_empty()
        || path.len() > MAX_SECRET_PATH
        || !path.chars().all(ok_char)
        || path
            .split('/')
            .any(|seg| seg.is_empty() || seg == "." || seg == "..")
    {
        return Err(format!(
            "secret path {} must be 1 to {MAX_SECRET_PATH} letters, digits, '.', '_', '-' in \
             '/'-separated segments (no empty, '.' or '..' segment)",
            quoted(path)
        ));
    }
    if let Some(v) = value
        && (!SECRET_BYTES.contains(&v.len()) || v.contains(['\n', '\r', '\0']))
    {
        return Err(format!(
            "a secret's value must be {} to {} bytes without line breaks or NUL (its tasks' \
             output is masked for it, which needs that); this one has {} bytes",
            SECRET_BYTES.start(),
            SECRET_BYTES.end(),
            v.len()
        ));
    }
    Ok(())
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
    /// The secret was stored or removed.
    Secret,
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

/// What the framework keeps of one job beside its definition: the
/// schedules' cursors, counts, and the parents' runs its dependencies wait
/// on. Stored as `meta/<job>`.
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Meta {
    /// Each schedule's next unhandled tick (`None`: disabled, or the
    /// expression never fires again).
    pub next: BTreeMap<String, Option<Timestamp>>,
    /// Successful runs ever.
    pub success_count: u64,
    /// Failed runs ever.
    pub failure_count: u64,
    /// The last successful run's end.
    pub last_success_at: Option<Timestamp>,
    /// The last failed run's end.
    pub last_failure_at: Option<Timestamp>,
    /// Per parent, its successful run since this job's last run after its
    /// parents.
    pub parents_done: BTreeMap<JobId, RunId>,
}

/// One job and all the framework keeps of it.
#[derive(Clone, Debug)]
struct Entry {
    def: JobDef,
    crons: BTreeMap<String, Cron>,
    meta: Meta,
    active: BTreeMap<RunId, Run>,
    /// Finished runs, newest first.
    history: Vec<Run>,
}

/// A record of the store, by what it holds.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Job(JobId),
    Meta(JobId),
    Active(JobId, RunId),
    History(JobId, RunId),
    Secret(String),
}

impl Key {
    /// The job whose transaction the record goes in (secrets: none).
    fn job(&self) -> Option<&JobId> {
        match self {
            Key::Job(j) | Key::Meta(j) | Key::Active(j, _) | Key::History(j, _) => Some(j),
            Key::Secret(_) => None,
        }
    }
}

/// The whole state (see the module docs).
#[derive(Debug, Default)]
pub struct Jobs {
    jobs: BTreeMap<JobId, Entry>,
    /// Each enabled schedule's next tick, `(job, schedule)`.
    timers: Timers<(JobId, String)>,
    /// Every active run, `(job, run)`: the intent walks these only.
    active: BTreeSet<(JobId, RunId)>,
    /// Task id to its run.
    tasks: HashMap<String, (JobId, RunId)>,
    /// Per job, the jobs that depend on it.
    children: BTreeMap<JobId, BTreeSet<JobId>>,
    /// Secret values by path.
    secrets: BTreeMap<String, String>,
    /// Tasks of runs that are gone (their job removed) still to be killed,
    /// with their agents: named in the intent's stop list until they end.
    orphans: BTreeMap<String, String>,
    /// Records changed since the last [`Jobs::take_writes`].
    dirty: BTreeSet<Key>,
    /// What happened that the log should say (missed ticks, failed runs).
    events: Vec<String>,
    /// When old history was last looked for.
    last_sweep: Option<Timestamp>,
    /// Every kept finished run, oldest first, for [`MAX_HISTORY`].
    kept: BTreeSet<(Timestamp, JobId, RunId)>,
}

/// Most finished runs kept over all jobs (the oldest go first beyond it,
/// whatever their job's limits): a finished run's record is a few hundred
/// bytes, so the history stays within a few MiB of the key-value store's
/// 32 MiB namespace, beside 10,000 job definitions.
pub const MAX_HISTORY: usize = 20_000;

impl Jobs {
    /// Every job as the APIs show it, by id.
    #[must_use]
    pub fn statuses(&self, now: Timestamp) -> Vec<JobStatus> {
        self.jobs.values().map(|e| status_of(e, now)).collect()
    }

    /// One job as the APIs show it.
    #[must_use]
    pub fn status(&self, id: &JobId, now: Timestamp) -> Option<JobStatus> {
        self.jobs.get(id).map(|e| status_of(e, now))
    }

    /// One run, active or kept.
    #[must_use]
    pub fn run(&self, job: &JobId, run: &RunId) -> Option<&Run> {
        let e = self.jobs.get(job)?;
        e.active
            .get(run)
            .or_else(|| e.history.iter().find(|r| r.id == *run))
    }

    /// How many jobs there are.
    #[must_use]
    pub fn len(&self) -> usize {
        self.jobs.len()
    }

    /// Whether there is no job.
    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.jobs.is_empty()
    }

    /// How many runs are active.
    #[must_use]
    pub fn active_runs(&self) -> usize {
        self.active.len()
    }

    /// What happened since the last call that the log should say.
    pub fn take_events(&mut self) -> Vec<String> {
        std::mem::take(&mut self.events)
    }

    /// Rebuilds the dependents index from the definitions.
    fn index_children(&mut self) {
        self.children.clear();
        for e in self.jobs.values() {
            for p in &e.def.dependencies {
                self.children
                    .entry(p.clone())
                    .or_default()
                    .insert(e.def.id.clone());
            }
        }
    }
}

fn status_of(e: &Entry, _now: Timestamp) -> JobStatus {
    JobStatus {
        def: e.def.clone(),
        active: e.active.values().cloned().collect(),
        history: e.history.clone(),
        next_ticks: e
            .def
            .schedules
            .iter()
            .map(|s| (s.id.clone(), e.meta.next.get(&s.id).copied().flatten()))
            .collect(),
        success_count: e.meta.success_count,
        failure_count: e.meta.failure_count,
        last_success_at: e.meta.last_success_at,
        last_failure_at: e.meta.last_failure_at,
    }
}
