//! A CI job as a berth task: the pure part of launching a job. No IO, no
//! clock: the same record gives the same task.

use std::collections::HashMap;
use std::time::Duration;

use berth_sdk::proto as pb;
use berth_sdk::runtime::Constraint;

use super::expiry;
use super::files::{NameError, ReportKind, urls};
use super::record::{PipelineRecord, task_id};
use crate::{ArtifactsWhen, CachePolicy, CacheWhen, PlannedJob, render_script};

/// What a task takes from the runner's settings.
#[derive(Debug, Clone)]
pub(crate) struct TaskDefaults<'a> {
    /// Where agents fetch sources and artifacts from.
    pub(crate) base_url: &'a str,
    /// CPUs of a job without `BERTH_CPUS`.
    pub(crate) cpus: f64,
    /// Memory (MiB) of a job without `BERTH_MEMORY`.
    pub(crate) mem: f64,
    /// SIGTERM to SIGKILL when a job is killed.
    pub(crate) kill_grace: Duration,
}

/// The task that runs attempt `attempt` (from 1) of job `i` of `rec`: the
/// job's rendered script in its image (or as a process), its variables as
/// the environment, the commit's files, its dependencies' artifacts and its
/// caches fetched into the sandbox first, and its artifacts and caches
/// uploaded after.
///
/// # Errors
/// A job, artifact or cache name that cannot be part of a file URL.
pub(crate) fn task_for(
    rec: &PipelineRecord,
    i: usize,
    attempt: usize,
    defaults: &TaskDefaults<'_>,
) -> Result<pb::TaskInfo, NameError> {
    let job = &rec.plan.jobs[i];
    let base = defaults.base_url.trim_end_matches('/');
    let project = &rec.project;
    let mut uris = vec![pb::FetchUri {
        url: format!("{base}{}", urls::source(rec.id, &rec.token)),
        extract: true,
        output_path: project.clone(),
        ..Default::default()
    }];
    // Artifacts of the jobs it depends on: its needs with artifacts, its
    // `dependencies`, or every job of earlier stages.
    let sources = expiry::artifact_sources(&rec.plan, i);
    for dep in sources
        .iter()
        .filter_map(|&k| rec.plan.jobs.get(k))
        .filter(|d| d.artifacts.is_some())
    {
        uris.push(pb::FetchUri {
            url: format!("{base}{}", urls::artifacts(rec.id, &dep.name, &rec.token)?),
            extract: true,
            // Jobs whose artifacts were not uploaded (failed, skipped,
            // nothing matched) are skipped, as GitLab does.
            optional: true,
            ..Default::default()
        });
    }
    let mut outputs = Vec::new();
    for cache in &job.caches {
        if cache.policy != CachePolicy::Push {
            uris.push(pb::FetchUri {
                url: format!("{base}{}", urls::cache(rec.id, &cache.key, &rec.token)?),
                extract: true,
                optional: true,
                ..Default::default()
            });
        }
        if cache.policy != CachePolicy::Pull {
            outputs.push(pb::OutputUpload {
                url: format!("{base}{}", urls::cache(rec.id, &cache.key, &rec.token)?),
                paths: cache
                    .paths
                    .iter()
                    .map(|p| format!("{project}/{p}"))
                    .collect(),
                exclude: Vec::new(),
                when: match cache.when {
                    CacheWhen::OnSuccess => pb::output_upload::When::OnSuccess,
                    CacheWhen::OnFailure => pb::output_upload::When::OnFailure,
                    CacheWhen::Always => pb::output_upload::When::Always,
                } as i32,
                name: format!("cache {}", cache.key),
            });
        }
    }
    if let Some(artifacts) = &job.artifacts
        && !artifacts.paths.is_empty()
    {
        outputs.push(pb::OutputUpload {
            url: format!("{base}{}", urls::artifacts(rec.id, &job.name, &rec.token)?),
            paths: artifacts
                .paths
                .iter()
                .map(|p| format!("{project}/{p}"))
                .collect(),
            exclude: artifacts
                .exclude
                .iter()
                .map(|p| format!("{project}/{p}"))
                .collect(),
            when: match artifacts.when {
                ArtifactsWhen::OnSuccess => pb::output_upload::When::OnSuccess,
                ArtifactsWhen::OnFailure => pb::output_upload::When::OnFailure,
                ArtifactsWhen::Always => pb::output_upload::When::Always,
            } as i32,
            name: "artifacts".into(),
        });
    }
    // Reports go up whatever the job's result, as GitLab's do; the runner
    // reads them when the job ends (see `super::reports`).
    if let Some(artifacts) = &job.artifacts {
        for (kind, paths) in [
            (ReportKind::Dotenv, &artifacts.dotenv),
            (ReportKind::Junit, &artifacts.junit),
        ] {
            if paths.is_empty() {
                continue;
            }
            outputs.push(pb::OutputUpload {
                url: format!(
                    "{base}{}",
                    urls::report(rec.id, kind, &job.name, &rec.token)?
                ),
                paths: paths.iter().map(|p| format!("{project}/{p}")).collect(),
                exclude: Vec::new(),
                when: pb::output_upload::When::Always as i32,
                name: kind.output_name().into(),
            });
        }
    }
    let job_id = rec.id * 1000 + i as u64 + 1;
    let mut env: HashMap<String, String> = job.environment(job_id).into_iter().collect();
    // Dotenv variables of the jobs it downloads artifacts from: above the
    // file's variables, below the pipeline's (GitLab's precedence).
    env.extend(rec.dotenv_for(i));
    env.remove("CI_PROJECT_DIR");
    // The project directory is under the sandbox, wherever the agent
    // put it; the script starts there.
    let script = format!(
        "CI_PROJECT_DIR=\"$BERTH_SANDBOX\"/{p}; export CI_PROJECT_DIR; cd \"$CI_PROJECT_DIR\" || exit 1\n{}",
        render_script(job),
        p = crate::sh_quote(project),
    );
    let cpus = scalar_var(job, "BERTH_CPUS", defaults.cpus);
    let mem = scalar_var(job, "BERTH_MEMORY", defaults.mem);
    let container = job.image.as_ref().map(|image| pb::ContainerInfo {
        image: image.name.clone(),
        entrypoint: image.entrypoint.clone().unwrap_or_default(),
        ..Default::default()
    });
    Ok(pb::TaskInfo {
        task_id: task_id(rec.id, i, attempt),
        name: format!("{} #{} {}", rec.project, rec.id, job.name),
        agent_id: String::new(),
        resources: Some(pb::Resources {
            cpus,
            mem,
            ..Default::default()
        }),
        command: Some(pb::CommandInfo {
            shell: script,
            argv: Vec::new(),
            env,
            uris,
        }),
        labels: vec![
            pb::Label {
                key: "berth.ci/pipeline".into(),
                value: rec.id.to_string(),
            },
            pb::Label {
                key: "berth.ci/job".into(),
                value: job.name.clone(),
            },
        ],
        kill_grace_period_seconds: defaults.kill_grace.as_secs_f64(),
        container,
        health_check: None,
        outputs,
        // The agent masks them too, before the output reaches the
        // sandbox (which its log API serves).
        masked_values: rec.masked_values.clone(),
    })
}

/// Whether an agent's attributes satisfy a job's tags: each tag is an
/// attribute name, or one of the comma-separated values of the `tags`
/// attribute.
pub fn tags_match(tags: &[String], attributes: &[pb::Attribute]) -> bool {
    tags.iter()
        .all(|tag| Constraint::Tag(tag.clone()).allows(attributes))
}

/// A positive, finite number from job variable `name`, or `default`.
fn scalar_var(job: &PlannedJob, name: &str, default: f64) -> f64 {
    job.variables
        .get(name)
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| v.is_finite() && *v > 0.0)
        .unwrap_or(default)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_match_attribute_names_or_the_tags_list() {
        let attrs = vec![
            pb::Attribute {
                name: "docker".into(),
                value: "yes".into(),
            },
            pb::Attribute {
                name: "tags".into(),
                value: "linux, x86".into(),
            },
        ];
        assert!(tags_match(&[], &attrs));
        assert!(tags_match(&["docker".into()], &attrs));
        assert!(tags_match(&["linux".into(), "x86".into()], &attrs));
        assert!(!tags_match(&["arm".into()], &attrs));
        assert!(!tags_match(&["linux".into(), "gpu".into()], &attrs));
    }
}
