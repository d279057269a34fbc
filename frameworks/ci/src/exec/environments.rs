//! Environments and deployments, derived from the pipelines' records: a
//! job with `environment` (action `start`, the default) that succeeded is a
//! deployment of that environment in its project
//! ([`PipelineRecord::project_key`]); a job with `action: stop` that
//! succeeded stops it. The newest event counts. `prepare`, `verify` and
//! `access` jobs deploy nothing, as in GitLab. The stop job of an
//! environment is the `on_stop` of its last deployment's job, in that
//! deployment's pipeline. [`environments`] is pure: records in, views
//! out; [`list_environments`] and [`stop_environment`] are what both APIs
//! call.

use std::collections::BTreeMap;
use std::time::UNIX_EPOCH;

use serde::{Deserialize, Serialize};

use super::api::{self, ApiError, ErrorKind, PipelineView};
use super::record::PipelineRecord;
use super::runner::RunnerHandle;
use super::state::JobStatus;

/// One deployment: a successful `environment` job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Deployment {
    /// The pipeline.
    pub pipeline: u64,
    /// The job.
    pub job: String,
    /// The commit.
    pub sha: String,
    /// The branch or tag.
    pub ref_name: String,
    /// When the job finished (ms since the epoch).
    pub finished_ms: u64,
    /// The environment's URL, as the job set it.
    pub url: Option<String>,
}

/// An environment of a project, as its jobs left it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct EnvironmentView {
    /// Its name.
    pub name: String,
    /// The project's name.
    pub project: String,
    /// The project's key (its repository).
    pub project_key: String,
    /// `available` or `stopped`.
    pub state: String,
    /// The last successful deployment.
    pub last_deployment: Option<Deployment>,
    /// The job that stopped it, when stopped.
    pub stopped_by: Option<Deployment>,
    /// The job that stops it: the last deployment's `on_stop`, in that
    /// deployment's pipeline.
    pub stop_job: Option<String>,
}

/// Every environment of the pipelines' projects, by project key then
/// name.
pub fn environments<'a>(
    records: impl IntoIterator<Item = &'a PipelineRecord>,
) -> Vec<EnvironmentView> {
    let mut out: BTreeMap<(String, String), EnvironmentView> = BTreeMap::new();
    for rec in records {
        for (j, planned) in rec.plan.jobs.iter().enumerate() {
            let Some(env) = &planned.environment else {
                continue;
            };
            let Some(state) = rec.state.job(j) else {
                continue;
            };
            if state.status != JobStatus::Success {
                continue;
            }
            let Some(finished) = state.attempts.last().and_then(|a| a.finished) else {
                continue;
            };
            let stop = match env.action.as_str() {
                "start" => false,
                "stop" => true,
                _ => continue,
            };
            let event = Deployment {
                pipeline: rec.id,
                job: planned.name.clone(),
                sha: rec.sha.clone(),
                ref_name: rec.ref_name.clone(),
                finished_ms: finished
                    .duration_since(UNIX_EPOCH)
                    .map_or(0, |d| d.as_millis() as u64),
                url: env.url.clone(),
            };
            let view = out
                .entry((rec.project_key().to_string(), env.name.clone()))
                .or_insert_with(|| EnvironmentView {
                    name: env.name.clone(),
                    project: rec.project.clone(),
                    project_key: rec.project_key().to_string(),
                    state: "available".into(),
                    last_deployment: None,
                    stopped_by: None,
                    stop_job: None,
                });
            let newer = |d: &Option<Deployment>| {
                d.as_ref().is_none_or(|d| {
                    (d.finished_ms, d.pipeline) <= (event.finished_ms, event.pipeline)
                })
            };
            if stop {
                if newer(&view.stopped_by) {
                    view.stopped_by = Some(event);
                }
            } else if newer(&view.last_deployment) {
                view.stop_job.clone_from(&env.on_stop);
                view.last_deployment = Some(event);
            }
        }
    }
    let mut views: Vec<EnvironmentView> = out.into_values().collect();
    for v in &mut views {
        let stopped = match (&v.stopped_by, &v.last_deployment) {
            (Some(s), Some(d)) => (s.finished_ms, s.pipeline) >= (d.finished_ms, d.pipeline),
            (Some(_), None) => true,
            _ => false,
        };
        if stopped {
            v.state = "stopped".into();
        } else {
            v.stopped_by = None;
        }
    }
    views
}

/// The environments of every pipeline the runner keeps (both APIs).
///
/// # Errors
/// The runner has stopped.
pub async fn list_environments(handle: &RunnerHandle) -> Result<Vec<EnvironmentView>, ApiError> {
    let records = handle.list().await.map_err(ApiError::from)?;
    Ok(environments(records.iter().map(|r| r.as_ref())))
}

/// Stops environment `name` (of project `project`, by name, when several
/// projects have one of that name): plays its stop job, or runs it again
/// when it has run already (both APIs).
///
/// # Errors
/// No such environment, it is stopped already, it has no stop job, the
/// name is ambiguous, or the job cannot be started.
pub async fn stop_environment(
    handle: &RunnerHandle,
    name: &str,
    project: Option<&str>,
) -> Result<PipelineView, ApiError> {
    let shown = crate::diag::cut_to(name, 80);
    let all = list_environments(handle).await?;
    let found: Vec<&EnvironmentView> = all
        .iter()
        .filter(|e| e.name == name && project.is_none_or(|p| p == e.project))
        .collect();
    let env = match found.as_slice() {
        [] => {
            return Err(ApiError::new(
                ErrorKind::NotFound,
                format!("no environment {shown:?} has a deployment"),
            ));
        }
        [one] => *one,
        many => {
            let projects: Vec<&str> = many.iter().map(|e| e.project.as_str()).collect();
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "the environment {shown:?} is in several projects ({}); say which",
                    projects.join(", ")
                ),
            ));
        }
    };
    if env.state == "stopped" {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!("the environment {shown:?} is stopped already"),
        ));
    }
    let (Some(job), Some(deployment)) = (&env.stop_job, &env.last_deployment) else {
        return Err(ApiError::new(
            ErrorKind::Conflict,
            format!(
                "the environment {shown:?} has no stop job (its last deployment's job has no `environment:on_stop`)"
            ),
        ));
    };
    let rec = handle
        .get(deployment.pipeline)
        .await
        .map_err(ApiError::from)?
        .ok_or_else(|| {
            ApiError::new(
                ErrorKind::NotFound,
                format!("no pipeline {}", deployment.pipeline),
            )
        })?;
    let status = rec
        .plan
        .jobs
        .iter()
        .position(|j| j.name == *job)
        .and_then(|i| rec.state.job(i))
        .map(|s| s.status);
    match status {
        Some(JobStatus::Manual) => handle.play(rec.id, job).await,
        Some(s) if s.is_finished() => handle.retry_job(rec.id, job).await,
        Some(s) => {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "the stop job {job:?} of pipeline {} is {}; it cannot be started now",
                    rec.id,
                    s.as_str()
                ),
            ));
        }
        None => {
            return Err(ApiError::new(
                ErrorKind::Conflict,
                format!(
                    "the stop job {job:?} is not in pipeline {} (its rules left it out)",
                    rec.id
                ),
            ));
        }
    }
    .map_err(ApiError::from)?;
    api::pipeline(handle, rec.id).await
}

#[cfg(test)]
mod tests {
    use std::time::{Duration, SystemTime};

    use super::*;
    use crate::exec::runner::tests::record;
    use crate::exec::state::JobEnd;

    const YAML: &str = "stages: [deploy, cleanup]
deploy:
  stage: deploy
  script: [x]
  environment: {name: review/$CI_COMMIT_REF_SLUG, url: http://r.invalid, on_stop: stop}
stop:
  stage: cleanup
  when: manual
  script: [x]
  environment: {name: review/$CI_COMMIT_REF_SLUG, action: stop}
check:
  stage: cleanup
  script: [x]
  environment: {name: review/$CI_COMMIT_REF_SLUG, action: verify}
";

    fn at(s: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_secs(s)
    }

    fn run(rec: &mut PipelineRecord, job: &str, end: JobEnd, t: u64) {
        let i = rec
            .plan
            .jobs
            .iter()
            .position(|j| j.name == job)
            .expect("job");
        if rec
            .state
            .job(i)
            .is_some_and(|j| j.status == JobStatus::Manual)
        {
            rec.state.play(i).expect("plays");
        }
        rec.state.started(i, "task", at(t)).expect("starts");
        rec.state.finished(i, end, at(t + 1)).expect("ends");
        rec.state.advance(at(t + 1));
    }

    #[test]
    fn a_successful_deployment_then_its_stop_job() {
        let mut rec = record(YAML);
        assert!(environments([&rec]).is_empty());
        run(&mut rec, "deploy", JobEnd::success(), 10);
        let envs = environments([&rec]);
        assert_eq!(envs.len(), 1);
        let env = &envs[0];
        // The name is expanded.
        assert_eq!(env.name, "review/feature");
        assert_eq!(env.state, "available");
        assert_eq!(env.stop_job.as_deref(), Some("stop"));
        let d = env.last_deployment.as_ref().expect("deployed");
        assert_eq!((d.pipeline, d.job.as_str()), (1, "deploy"));
        assert_eq!(d.finished_ms, 11_000);
        assert_eq!(d.url.as_deref(), Some("http://r.invalid"));

        run(&mut rec, "stop", JobEnd::success(), 20);
        let envs = environments([&rec]);
        assert_eq!(envs[0].state, "stopped");
        assert_eq!(
            envs[0].stopped_by.as_ref().map(|d| d.job.as_str()),
            Some("stop")
        );

        // A newer deployment (another pipeline) makes it available again.
        let mut newer = record(YAML);
        newer.id = 2;
        run(&mut newer, "deploy", JobEnd::success(), 30);
        let envs = environments([&rec, &newer]);
        assert_eq!(envs.len(), 1);
        assert_eq!(envs[0].state, "available");
        assert_eq!(
            envs[0].last_deployment.as_ref().map(|d| d.pipeline),
            Some(2)
        );
        assert!(envs[0].stopped_by.is_none());

        // Another project's environment of the same name is its own.
        let mut other = record(YAML);
        other.repository = "/src/other".into();
        run(&mut other, "deploy", JobEnd::success(), 40);
        assert_eq!(environments([&rec, &newer, &other]).len(), 2);
    }

    #[test]
    fn failed_and_verify_jobs_deploy_nothing() {
        let mut rec = record(YAML);
        run(&mut rec, "deploy", JobEnd::script_failure(1), 10);
        assert!(environments([&rec]).is_empty());
        let mut rec = record(YAML);
        run(&mut rec, "deploy", JobEnd::success(), 10);
        run(&mut rec, "check", JobEnd::success(), 20);
        let envs = environments([&rec]);
        assert_eq!(
            envs[0].last_deployment.as_ref().map(|d| d.job.as_str()),
            Some("deploy")
        );
    }
}
