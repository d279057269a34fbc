//! Artifact, log and source expiry: the sweep that deletes what has
//! outlived its time, and what a pipeline's record remembers of it.
//!
//! - A job's artifacts expire `artifacts:expire_in` after its latest
//!   attempt finished (GitLab's instance default, 30 days, when the job does
//!   not say; `expire_in: never` keeps them). As GitLab's "keep artifacts
//!   from the most recent successful pipeline" does, the artifacts of the
//!   latest successful pipeline of each project and ref are kept whatever
//!   their `expire_in`, until a newer pipeline of that ref succeeds. "Each
//!   project" is each project key (`PipelineRecord::project_key`: the
//!   repository, not the project's name).
//! - Logs expire a runner-wide retention after their attempt finished
//!   ([`Policy::logs`], 90 days by default; `None` keeps them). A log still
//!   being collected from its agent (after a restart of the runner, say)
//!   is never deleted: it waits for the next sweep.
//! - A pipeline's source archive (the commit's files, a whole tarball per
//!   pipeline) expires [`Policy::sources`] after the pipeline finished (7
//!   days by default; `None` keeps them), but only once every job of it
//!   has finished: a manual job not yet played, a pending or running one
//!   keeps it, since it needs the source to run. GitLab fetches the commit
//!   again for a job retried later; berth has no archive to fetch then, so
//!   a job retried (or played) after its pipeline's source expired fails
//!   with `missing_dependency_failure` and a message that says so.
//!
//! The sweep ([`sweep`]) runs when the runner starts and then every
//! `sweep_interval`. It deletes the files and records what it deleted in
//! the pipeline's [`Expired`], so the API can say "expired" rather than
//! fail on a missing file. A job that would download expired artifacts or
//! an expired source fails before it is launched, with GitLab's
//! `missing_dependency_failure` ([`fail_expired_dependencies`]).
//!
//! The decisions ([`due`], [`artifact_sources`], [`expired_dependency`],
//! [`missing_dependency`]) read no clock and touch no file; time is an
//! argument.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tracing::{info, warn};

use super::collect::Collecting;
use super::files::FileStore;
pub use super::record::Expired;
use super::record::PipelineRecord;
use super::state::{FailureReason, PipelineStatus};
use crate::Plan;

/// GitLab's default of `artifacts:expire_in`.
pub const DEFAULT_ARTIFACT_EXPIRY: Duration = Duration::from_secs(30 * 86_400);

/// The default log retention.
pub const DEFAULT_LOG_RETENTION: Duration = Duration::from_secs(90 * 86_400);

/// The default retention of a finished pipeline's source archive.
pub const DEFAULT_SOURCE_RETENTION: Duration = Duration::from_secs(7 * 86_400);

/// How long things are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Policy {
    /// The `expire_in` of artifacts whose job does not give one.
    pub artifacts_default: Duration,
    /// How long logs are kept after their attempt finished; `None`: for
    /// ever.
    pub logs: Option<Duration>,
    /// Keep the artifacts of the latest successful pipeline of each
    /// project and ref, whatever their `expire_in`.
    pub keep_latest_artifacts: bool,
    /// How long a pipeline's source archive is kept after the pipeline
    /// finished with every job finished; `None`: for ever.
    pub sources: Option<Duration>,
}

impl Default for Policy {
    fn default() -> Policy {
        Policy {
            artifacts_default: DEFAULT_ARTIFACT_EXPIRY,
            logs: Some(DEFAULT_LOG_RETENTION),
            keep_latest_artifacts: true,
            sources: Some(DEFAULT_SOURCE_RETENTION),
        }
    }
}

/// Something the sweep is to delete.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Due {
    /// A job's artifacts archive.
    Artifacts {
        /// The pipeline.
        pipeline: u64,
        /// The job's index.
        job: usize,
        /// The job's name (the archive is named after it).
        name: String,
        /// The attempt that made them (the job's latest).
        attempt: usize,
    },
    /// The logs of a job's attempts `from..=to`.
    Logs {
        /// The pipeline.
        pipeline: u64,
        /// The job's index.
        job: usize,
        /// The first attempt (from 1).
        from: usize,
        /// The last attempt.
        to: usize,
    },
    /// A pipeline's source archive.
    Source {
        /// The pipeline.
        pipeline: u64,
    },
}

/// What a sweep did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepReport {
    /// Artifact archives deleted.
    pub artifacts: usize,
    /// Log files deleted.
    pub logs: usize,
    /// Source archives deleted.
    pub sources: usize,
}

/// The jobs whose artifacts job `i` downloads: those of its
/// `dependencies`, else its `needs` with `artifacts: true`, else every job
/// of earlier stages.
pub fn artifact_sources(plan: &Plan, i: usize) -> Vec<usize> {
    let Some(job) = plan.jobs.get(i) else {
        return Vec::new();
    };
    let jobs = plan.jobs.iter().enumerate();
    match (&job.dependencies, &job.needs) {
        (Some(deps), _) => jobs
            .filter(|(_, j)| deps.iter().any(|d| *d == j.name || *d == j.base_name))
            .map(|(k, _)| k)
            .collect(),
        (None, Some(needs)) => jobs
            .filter(|(_, j)| needs.iter().any(|n| n.artifacts && n.job == j.name))
            .map(|(k, _)| k)
            .collect(),
        (None, None) => jobs
            .filter(|(_, j)| j.stage_index < job.stage_index)
            .map(|(k, _)| k)
            .collect(),
    }
}

/// The first job whose artifacts job `i` downloads and that the sweep
/// deleted.
pub fn expired_dependency(rec: &PipelineRecord, i: usize) -> Option<usize> {
    artifact_sources(&rec.plan, i).into_iter().find(|&d| {
        let attempts = rec.state.job(d).map_or(0, |j| j.attempts.len());
        rec.expired.artifacts_expired(d, attempts)
    })
}

/// Why job `i` cannot run: its pipeline's source expired, or artifacts it
/// downloads did (the message of its `missing_dependency_failure`).
pub fn missing_dependency(rec: &PipelineRecord, i: usize) -> Option<String> {
    if rec.expired.source {
        let sha = rec.sha.get(..8).unwrap_or(&rec.sha);
        return Some(format!(
            "the source of pipeline {} (commit {sha}) expired and was deleted after the pipeline finished; run a new pipeline for the commit",
            rec.id
        ));
    }
    let dep = expired_dependency(rec, i)?;
    let dep_name = rec.plan.jobs.get(dep).map_or("?", |j| j.name.as_str());
    Some(format!(
        "the artifacts of job {dep_name:?} expired; retry that job to make them again"
    ))
}

/// When a pipeline finished: its `finished_ms`, else (a record without
/// one) when its last attempt ended.
fn pipeline_finished(rec: &PipelineRecord) -> Option<SystemTime> {
    match rec.finished_ms {
        Some(ms) => UNIX_EPOCH.checked_add(Duration::from_millis(ms)),
        None => rec
            .state
            .jobs()
            .iter()
            .filter_map(|j| j.attempts.last().and_then(|a| a.finished))
            .max(),
    }
}

/// What is due for deletion at `now`. The logs of tasks in `collecting`
/// (still being collected from their agents) are not.
pub fn due(
    pipelines: &BTreeMap<u64, PipelineRecord>,
    now: SystemTime,
    policy: &Policy,
    collecting: &Collecting,
) -> Vec<Due> {
    // The latest successful pipeline of each project and ref.
    let mut latest: HashMap<(&str, &str), u64> = HashMap::new();
    if policy.keep_latest_artifacts {
        for rec in pipelines.values() {
            if rec.status() == PipelineStatus::Success {
                let slot = latest
                    .entry((rec.project_key(), rec.ref_name.as_str()))
                    .or_insert(rec.id);
                *slot = (*slot).max(rec.id);
            }
        }
    }
    let past = |finished: Option<SystemTime>, keep: Duration| {
        finished
            .and_then(|f| f.checked_add(keep))
            .is_some_and(|until| until <= now)
    };
    let mut out = Vec::new();
    for rec in pipelines.values() {
        let kept = latest.get(&(rec.project_key(), rec.ref_name.as_str())) == Some(&rec.id);
        for (i, (planned, state)) in rec.plan.jobs.iter().zip(rec.state.jobs()).enumerate() {
            let attempts = state.attempts.len();
            // Artifacts: those of the latest attempt, once it has ended.
            if let Some(artifacts) = &planned.artifacts
                && !artifacts.paths.is_empty()
                && !artifacts.expire_never
                && !kept
                && !rec.expired.artifacts_expired(i, attempts)
                && let Some(last) = state.attempts.last()
                && past(
                    last.finished,
                    artifacts.expire_in.unwrap_or(policy.artifacts_default),
                )
            {
                out.push(Due::Artifacts {
                    pipeline: rec.id,
                    job: i,
                    name: planned.name.clone(),
                    attempt: attempts,
                });
            }
            // Logs: every finished attempt past the retention, up to the
            // first whose log is still being collected.
            if let Some(keep) = policy.logs {
                let done = rec.expired.logs.get(&i).copied().unwrap_or(0);
                let old = state
                    .attempts
                    .iter()
                    .take_while(|a| past(a.finished, keep) && !collecting.contains(&a.task_id))
                    .count();
                if old > done {
                    out.push(Due::Logs {
                        pipeline: rec.id,
                        job: i,
                        from: done + 1,
                        to: old,
                    });
                }
            }
        }
        // The source: once no job can need it without a user asking, past
        // the retention.
        if let Some(keep) = policy.sources
            && !rec.expired.source
            && rec.state.jobs().iter().all(|j| j.status.is_finished())
            && past(pipeline_finished(rec), keep)
        {
            out.push(Due::Source { pipeline: rec.id });
        }
    }
    out
}

/// Deletes a file; `Ok(false)` when it was not there.
fn remove(path: &Path) -> std::io::Result<bool> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

/// Deletes the files of `due` (blocking). Returns, for each item, whether
/// it is to be marked expired and how many files went.
fn delete(due: &[Due], files: &FileStore, data_dir: &Path) -> Vec<(bool, usize)> {
    due.iter()
        .map(|d| match d {
            Due::Artifacts { pipeline, name, .. } => {
                let result = files
                    .artifacts(*pipeline, name)
                    .map_err(|e| std::io::Error::other(e.to_string()))
                    .and_then(|path| remove(&path));
                match result {
                    // Nothing was uploaded (failed job, nothing matched):
                    // there is nothing to call expired.
                    Ok(existed) => (existed, usize::from(existed)),
                    Err(e) => {
                        warn!(pipeline, job = %name, "cannot delete expired artifacts: {e}");
                        (false, 0)
                    }
                }
            }
            Due::Logs {
                pipeline,
                job,
                from,
                to,
            } => {
                let mut removed = 0;
                let mut ok = true;
                for attempt in *from..=*to {
                    let path = PipelineRecord::log_path(data_dir, *pipeline, *job, attempt);
                    // The collector's position file goes with its log (a
                    // leftover temporary one too).
                    let pos = super::collect::position_path(&path);
                    let mut pos_tmp = pos.clone().into_os_string();
                    pos_tmp.push(".tmp");
                    for extra in [pos, std::path::PathBuf::from(pos_tmp)] {
                        if let Err(e) = remove(&extra) {
                            warn!(pipeline, "cannot delete {}: {e}", extra.display());
                        }
                    }
                    match remove(&path) {
                        Ok(existed) => removed += usize::from(existed),
                        Err(e) => {
                            warn!(
                                pipeline,
                                "cannot delete the expired log {}: {e}",
                                path.display()
                            );
                            ok = false;
                        }
                    }
                }
                if ok {
                    // The pipeline's log directory, once empty.
                    if let Some(dir) =
                        PipelineRecord::log_path(data_dir, *pipeline, *job, 1).parent()
                    {
                        let _ = std::fs::remove_dir(dir);
                    }
                }
                (ok, removed)
            }
            Due::Source { pipeline } => match remove(&files.source(*pipeline)) {
                // Marked even when it was not there (never written): it is
                // gone either way, and a retry must say why.
                Ok(existed) => (true, usize::from(existed)),
                Err(e) => {
                    warn!(pipeline, "cannot delete the expired source archive: {e}");
                    (false, 0)
                }
            },
        })
        .collect()
}

/// Deletes what is due at `now` and marks it in the records. Returns what
/// was deleted and the pipelines whose records changed (to be stored).
/// `collecting` is the set of tasks whose logs are being collected: those
/// logs stay. (The runner awaits the sweep in its event loop, so no
/// collection starts meanwhile.)
pub async fn sweep(
    pipelines: &mut BTreeMap<u64, PipelineRecord>,
    files: &FileStore,
    data_dir: &Path,
    policy: &Policy,
    now: SystemTime,
    collecting: &Collecting,
) -> (SweepReport, Vec<u64>) {
    let due = due(pipelines, now, policy, collecting);
    if due.is_empty() {
        return (SweepReport::default(), Vec::new());
    }
    let results = {
        let due = due.clone();
        let files = files.clone();
        let data_dir = data_dir.to_path_buf();
        match tokio::task::spawn_blocking(move || delete(&due, &files, &data_dir)).await {
            Ok(r) => r,
            Err(e) => {
                warn!("the expiry sweep failed: {e}");
                return (SweepReport::default(), Vec::new());
            }
        }
    };
    let mut report = SweepReport::default();
    let mut changed = Vec::new();
    for (d, (mark, removed)) in due.iter().zip(results) {
        let (pipeline, counter) = match d {
            Due::Artifacts { pipeline, .. } => (*pipeline, &mut report.artifacts),
            Due::Logs { pipeline, .. } => (*pipeline, &mut report.logs),
            Due::Source { pipeline } => (*pipeline, &mut report.sources),
        };
        *counter += removed;
        if !mark {
            continue;
        }
        let Some(rec) = pipelines.get_mut(&pipeline) else {
            continue;
        };
        match d {
            Due::Artifacts { job, attempt, .. } => {
                rec.expired.artifacts.insert(*job, *attempt);
            }
            Due::Logs { job, to, .. } => {
                rec.expired.logs.insert(*job, *to);
            }
            Due::Source { .. } => rec.expired.source = true,
        }
        if changed.last() != Some(&pipeline) {
            changed.push(pipeline);
        }
    }
    if report != SweepReport::default() {
        info!(
            artifacts = report.artifacts,
            logs = report.logs,
            sources = report.sources,
            "deleted expired artifacts, logs and sources"
        );
    }
    (report, changed)
}

/// Fails every pending job that would download expired artifacts or its
/// pipeline's expired source, with GitLab's `missing_dependency_failure`,
/// before it is launched (the attempt has no task; its log says why).
/// Returns the pipelines that changed.
pub async fn fail_expired_dependencies(
    pipelines: &mut BTreeMap<u64, PipelineRecord>,
    data_dir: &Path,
    now: SystemTime,
) -> Vec<u64> {
    let mut changed = Vec::new();
    for rec in pipelines.values_mut() {
        let mut any = false;
        // A retry can put a failed job back to pending: go round until no
        // pending job is left that needs expired files.
        while let Some((i, message)) = rec
            .state
            .pending()
            .into_iter()
            .find_map(|i| missing_dependency(rec, i).map(|m| (i, m)))
        {
            if let Err(e) = super::record::fail_unlaunched(
                rec,
                i,
                FailureReason::MissingDependencyFailure,
                "missing dependency",
                &message,
                data_dir,
                now,
            )
            .await
            {
                warn!(pipeline = rec.id, job = i, "cannot fail the job: {e}");
                break;
            }
            any = true;
            info!(pipeline = rec.id, job = i, "{message}");
        }
        if any {
            rec.state.advance(now);
            changed.push(rec.id);
        }
    }
    changed
}

#[cfg(test)]
mod tests;
