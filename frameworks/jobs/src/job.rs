//! The job definition: a compatible subset of Metronome's (`/v1/jobs`),
//! with berth's additions (parallel job arrays, retries with a backoff
//! limit, dependencies, the missed-schedule policy, history limits), read
//! from JSON or YAML, validated whole (every error with its JSON path) and
//! normalized (defaults filled, resources fixed-point, durations as
//! [`Duration`]).
//!
//! The types here are the normalized model every other module uses:
//! [`JobDef`] (a job), [`RunSpec`] (what one run starts), [`ScheduleDef`]
//! (one cron schedule). Text to JSON values is `text.rs` (strict: no key
//! twice), parsing and validation `parse.rs` (over the field readers of
//! `read.rs`), rendering back to Metronome's JSON `render.rs`, the
//! dependency graph checks `graph.rs`.

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub mod graph;
pub mod parse;
mod read;
mod render;
#[cfg(test)]
mod tests;
mod text;

/// A job's id, as Metronome spells them: lowercase letters, digits and
/// hyphens in dot-separated segments (`nightly.backup`), each segment
/// starting and ending with a letter or digit; at most 128 bytes.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct JobId(String);

impl JobId {
    /// Most bytes of an id.
    pub const MAX_LEN: usize = 128;

    /// The id `text`, if it is valid; otherwise why not (without the value:
    /// the caller quotes it).
    ///
    /// # Errors
    /// A readable reason.
    pub fn new(text: &str) -> Result<JobId, &'static str> {
        if text.is_empty() {
            return Err("must not be empty");
        }
        if text.len() > Self::MAX_LEN {
            return Err("is longer than 128 bytes");
        }
        for segment in text.split('.') {
            let bytes = segment.as_bytes();
            let ok_char = |b: &u8| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-';
            let ok_end =
                |b: Option<&u8>| b.is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit());
            if !bytes.iter().all(ok_char) || !ok_end(bytes.first()) || !ok_end(bytes.last()) {
                return Err(
                    "must be lowercase letters, digits and hyphens in dot-separated segments, \
                     each starting and ending with a letter or digit (Metronome's rule)",
                );
            }
        }
        Ok(JobId(text.to_owned()))
    }

    /// The id's text.
    #[must_use]
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for JobId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A job definition, normalized.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobDef {
    /// The id.
    pub id: JobId,
    /// Free text (Metronome's `description`), empty when absent.
    pub description: String,
    /// Labels.
    pub labels: BTreeMap<String, String>,
    /// What a run starts.
    pub run: RunSpec,
    /// The cron schedules (Metronome keeps them beside the job; berth
    /// accepts them inline too). At most [`JobDef::MAX_SCHEDULES`].
    pub schedules: Vec<ScheduleDef>,
    /// Jobs whose successful run starts a run of this one (Chronos's
    /// `parents`; JSON `dependencies: [{"id": "parent"}]`). When a job has
    /// several, a run starts once each parent has succeeded since this
    /// job's last run started.
    pub dependencies: Vec<JobId>,
    /// How much history is kept.
    pub history: HistoryLimits,
}

impl JobDef {
    /// Most schedules of one job.
    pub const MAX_SCHEDULES: usize = 16;
}

/// How many finished runs are kept, and for how long (JSON
/// `successfulRunsHistoryLimit`, `failedRunsHistoryLimit`,
/// `runsHistoryMaxAgeSeconds`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryLimits {
    /// Successful runs kept (default 10).
    pub successful: u32,
    /// Failed (and missed, skipped, killed) runs kept (default 10).
    pub failed: u32,
    /// Finished runs older than this are dropped (default 7 days).
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            successful: 10,
            failed: 10,
            max_age: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// What one run of a job starts (Metronome's `run`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunSpec {
    /// What the task runs.
    pub command: Command,
    /// CPUs in thousandths (`cpus: 0.5` is 500).
    pub cpus_milli: u64,
    /// Memory in MiB.
    pub mem_mib: u64,
    /// Disk in MiB (0: none asked).
    pub disk_mib: u64,
    /// The container image, if the task runs in Docker.
    pub docker: Option<Docker>,
    /// Environment: values, or references to `secrets`.
    pub env: BTreeMap<String, EnvValue>,
    /// Secrets by name: where each value comes from (see [`Secret`]).
    pub secrets: BTreeMap<String, Secret>,
    /// Files fetched into the sandbox before the command starts.
    pub artifacts: Vec<Artifact>,
    /// Placement constraints (Metronome's `placement.constraints`).
    pub constraints: Vec<PlacementConstraint>,
    /// How long a run may wait for its tasks to be launched before it is
    /// failed (Metronome's `maxLaunchDelay`, default 3600 s).
    pub max_launch_delay: Duration,
    /// Seconds between SIGTERM and SIGKILL when a task is killed
    /// (Metronome's `taskKillGracePeriodSeconds`; `None`: the agent's).
    pub kill_grace: Option<Duration>,
    /// Restarts of failed tasks.
    pub restart: Restart,
    /// The user to run as (Docker tasks only; refused without `docker`).
    pub user: Option<String>,
    /// Tasks of the run that may run at once (berth's `parallelism`,
    /// Kubernetes' Job; default 1).
    pub parallelism: u32,
    /// Successful tasks the run needs, one per index `0..completions`;
    /// each task is told its index in `BERTH_JOB_INDEX` (default 1).
    pub completions: u32,
}

/// What a task runs: Metronome's `cmd` (a shell command) or `args` (an
/// argument vector; with `docker` and no `args` nor `cmd`, the image's own
/// command).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Command {
    /// `cmd`: run with `/bin/sh -c`.
    Shell(String),
    /// `args`: run directly.
    Args(Vec<String>),
    /// Neither (Docker only): the image's `CMD`.
    Image,
}

/// The container of a Docker task (Metronome's `run.docker`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Docker {
    /// The image.
    pub image: String,
    /// Metronome's `forcePullImage`: berth does not pull (it is refused
    /// when true, since no registry is assumed reachable).
    pub force_pull: bool,
}

/// An environment value: a literal, or a secret's (Metronome's
/// `{"secret": "name"}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EnvValue {
    /// The value itself.
    Value(String),
    /// The value of `run.secrets[name]`.
    Secret(String),
}

/// A secret of a job (Metronome's `run.secrets.NAME.source`): the value is
/// read from the job framework's secret store at `source` when a run
/// starts, given to the tasks that reference it in `env`, and masked in
/// their output (berth's agents write `[MASKED]` for it).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Secret {
    /// The path in the secret store.
    pub source: String,
}

/// A file fetched into a task's sandbox (Metronome's `artifacts`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Artifact {
    /// `http://…` or `file:///…` (the agent's fetcher).
    pub uri: String,
    /// Unpack a tar archive.
    pub extract: bool,
    /// Make the file executable.
    pub executable: bool,
}

/// A placement constraint (Metronome's `{"attribute", "operator",
/// "value"}`), over an agent attribute or `hostname`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlacementConstraint {
    /// The attribute's name, or `hostname`.
    pub attribute: String,
    /// The operator.
    pub operator: ConstraintOp,
    /// The value (a regular expression for `LIKE` and `UNLIKE`, anchored
    /// at both ends as Marathon's; a value for `EQ`/`IS`).
    pub value: String,
}

/// Metronome's constraint operators.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConstraintOp {
    /// `EQ` / `IS`: the attribute equals the value.
    Eq,
    /// `LIKE`: the attribute matches the regular expression.
    Like,
    /// `UNLIKE`: the attribute does not match it (an agent without the
    /// attribute is allowed).
    Unlike,
}

/// Restarts of a run's failed tasks (Metronome's `run.restart`, with
/// berth's backoff).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Restart {
    /// `NEVER` or `ON_FAILURE` (default `NEVER`, as Metronome).
    pub policy: RestartPolicy,
    /// Metronome's `activeDeadlineSeconds`: after this long since the run
    /// started, a failed task is not restarted (the run fails), and a run
    /// still going is killed and failed with reason `deadline`. `None`:
    /// no deadline.
    pub active_deadline: Option<Duration>,
    /// Failed tasks restarted in one run at most (Kubernetes'
    /// `backoffLimit`; default 6 with `ON_FAILURE`; must be 0 with
    /// `NEVER`).
    pub backoff_limit: u32,
    /// The wait before the first restart (default 10 s); each next one
    /// waits `backoffFactor` times longer (default 2), up to
    /// `maxBackoffSeconds` (default 360 s).
    pub backoff: Duration,
    /// The factor, in thousandths (2.0 is 2000).
    pub backoff_factor_milli: u32,
    /// The longest wait.
    pub max_backoff: Duration,
}

/// When a failed task is started again.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RestartPolicy {
    /// Never: a failed task fails the run.
    Never,
    /// After a failure, within `backoffLimit` and `activeDeadlineSeconds`.
    OnFailure,
}

/// One cron schedule of a job (Metronome's schedule, with Kubernetes'
/// concurrency policies and berth's missed-schedule policy).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScheduleDef {
    /// The schedule's id within its job (Metronome's rule for ids).
    pub id: String,
    /// The cron expression, 5 fields or 6 (with seconds first); checked
    /// by [`crate::schedule`].
    pub cron: String,
    /// An IANA time zone (default `UTC`).
    pub timezone: String,
    /// A tick whose run has not started this long after the tick is
    /// recorded as missed, with the reason (Metronome's default 900 s).
    pub starting_deadline: Duration,
    /// What a tick does while a run of the job is active.
    pub concurrency: ConcurrencyPolicy,
    /// Whether the schedule fires.
    pub enabled: bool,
    /// What happens to ticks that came while no framework instance was
    /// active (see [`MissedPolicy`]).
    pub missed: MissedPolicy,
}

/// A tick while a run of the job is still active.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ConcurrencyPolicy {
    /// Start another run beside it (Metronome's only policy, its default).
    Allow,
    /// Skip the tick; it is recorded as skipped with the reason
    /// (Kubernetes' `Forbid`).
    Forbid,
    /// Kill the active runs and start the new one (Kubernetes' `Replace`).
    Replace,
}

/// Ticks that fell due while no instance of the framework was active
/// (JSON `missedRunPolicy` and `maxMissedRuns`). A tick is missed when it
/// is found due later than its `startingDeadlineSeconds`; ticks found
/// within the deadline simply run late.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum MissedPolicy {
    /// `SKIP`: every missed tick is recorded as missed; none runs.
    Skip,
    /// `RUN_ONCE` (default, as cron's anacron and Kubernetes' CronJob):
    /// the latest missed tick runs, the others are recorded as missed.
    RunOnce,
    /// `RUN_ALL`: each missed tick runs, the latest `maxMissedRuns` of
    /// them (default 10, at most 100); older ones are recorded as missed.
    RunAll {
        /// The bound.
        max: u32,
    },
}

/// Why a definition's text could not be read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Not JSON (or YAML) at all: where and why.
    #[error("invalid {format} at line {line}, column {column}: {message}")]
    Syntax {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// 1-based.
        line: usize,
        /// 1-based.
        column: usize,
        /// The parser's message.
        message: String,
    },
    /// Read, but not a valid definition.
    #[error(transparent)]
    Invalid(#[from] crate::error::Invalid),
}

impl JobDef {
    /// Reads a definition from JSON text (a key given twice in an object is
    /// a syntax error).
    ///
    /// # Errors
    /// [`ParseError`].
    pub fn from_json(text: &str) -> Result<JobDef, ParseError> {
        Ok(JobDef::from_value(&text::json(text)?)?)
    }

    /// Reads a definition from YAML text (one document; the same fields as
    /// JSON).
    ///
    /// # Errors
    /// [`ParseError`].
    pub fn from_yaml(text: &str) -> Result<JobDef, ParseError> {
        Ok(JobDef::from_value(&text::yaml(text)?)?)
    }

    /// Reads and validates a definition (Metronome's JobSpec, with
    /// `schedules` inline allowed); see `parse.rs` for the rules.
    ///
    /// # Errors
    /// [`crate::error::Invalid`] with every problem and its path.
    pub fn from_value(value: &serde_json::Value) -> Result<JobDef, crate::error::Invalid> {
        parse::job(value)
    }

    /// Metronome's JobSpec JSON (defaults filled in, berth's fields
    /// beside), without `schedules` (Metronome shows them only when
    /// embedded). Reading it back gives the same definition but for the
    /// schedules.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        render::job(self)
    }
}

impl ScheduleDef {
    /// Reads and validates one schedule; error paths start with `path`
    /// (`""` for a schedule posted alone, `/schedules/0` inline).
    ///
    /// # Errors
    /// [`crate::error::Invalid`] with every problem and its path.
    pub fn from_value(
        value: &serde_json::Value,
        path: &str,
    ) -> Result<ScheduleDef, crate::error::Invalid> {
        parse::schedule_at(value, path)
    }

    /// Metronome's schedule JSON (defaults filled in) with berth's
    /// `missedRunPolicy` (and `maxMissedRuns` with `RUN_ALL`).
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        render::schedule(self)
    }
}
