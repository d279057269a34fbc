//! A CI job as a berth task: the pure part of launching a job. No IO, no
//! clock: the same record gives the same task.

use std::collections::HashMap;
use std::time::Duration;

use berth_sdk::proto as pb;
use berth_sdk::runtime::Constraint;

use super::expiry;
use super::files::{NameError, ReportKind, urls};
use super::record::{PipelineRecord, task_id};
use crate::script::task_script;
use crate::{ArtifactsWhen, CachePolicy, CacheWhen, PlannedJob};

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
    /// The time limit of a job without `timeout` (`CI_JOB_TIMEOUT`).
    pub(crate) timeout: Duration,
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
    let timeout = job.timeout.unwrap_or(defaults.timeout).as_secs();
    env.insert("CI_JOB_TIMEOUT".into(), timeout.to_string());
    env.insert("CI_CONCURRENT_ID".into(), job_id.to_string());
    env.insert("CI_CONCURRENT_PROJECT_ID".into(), job_id.to_string());
    // Dotenv variables of the jobs it downloads artifacts from: above the
    // file's variables, below the pipeline's (GitLab's precedence).
    env.extend(rec.dotenv_for(i));
    // The project directory is under the sandbox, wherever the agent put
    // it: the script's prelude sets the directories (in the variables that
    // use them too) and starts there, in bash where there is one.
    let script = task_script(job, project, &env);
    let cpus = scalar_var(job, "BERTH_CPUS", defaults.cpus);
    let mem = scalar_var(job, "BERTH_MEMORY", defaults.mem);
    let container = job.image.as_ref().map(|image| pb::ContainerInfo {
        image: image.name.clone(),
        entrypoint: image.entrypoint.clone().unwrap_or_default(),
        services: service_containers(job, job_id),
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

/// The job's service containers: the planned services with `CI_JOB_ID`
/// added to their environment (the job's variables, then their own). The
/// project directory is not theirs, so `CI_PROJECT_DIR` is left out as
/// from the job's own environment.
fn service_containers(job: &PlannedJob, job_id: u64) -> Vec<pb::ServiceContainer> {
    job.services
        .iter()
        .map(|s| {
            let mut env: HashMap<String, String> = s.variables.clone().into_iter().collect();
            env.remove("CI_PROJECT_DIR");
            env.insert("CI_JOB_ID".into(), job_id.to_string());
            pb::ServiceContainer {
                image: s.name.clone(),
                aliases: s.aliases.clone(),
                entrypoint: s.entrypoint.clone().unwrap_or_default(),
                command: s.command.clone().unwrap_or_default(),
                env,
            }
        })
        .collect()
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

    #[test]
    fn services_go_into_the_container_with_their_environment() {
        let rec = crate::exec::runner::tests::record(
            "job:\n  image: berth/busybox:latest\n  variables: {A: job}\n  script: [x]\n  services:\n    - name: berth/busybox:latest\n      alias: web\n      command: [httpd, -f]\n      variables: {B: own}\n",
        );
        let defaults = TaskDefaults {
            base_url: "http://ci.test:7000",
            cpus: 1.0,
            mem: 256.0,
            kill_grace: Duration::from_secs(10),
            timeout: Duration::from_secs(3600),
        };
        let task = task_for(&rec, 0, 1, &defaults).unwrap();
        let services = task.container.clone().unwrap().services;
        assert_eq!(services.len(), 1);
        let s = &services[0];
        assert_eq!(s.image, "berth/busybox:latest");
        assert_eq!(s.aliases, ["berth__busybox", "berth-busybox", "web"]);
        assert_eq!(s.command, ["httpd", "-f"]);
        assert!(s.entrypoint.is_empty());
        assert_eq!(s.env["A"], "job");
        assert_eq!(s.env["B"], "own");
        assert_eq!(s.env["CI_JOB_ID"], "1001");
        assert!(!s.env.contains_key("CI_PROJECT_DIR"));
        // What the master and the agent check passes.
        berth_proto::task::validate_task(&task).unwrap();
    }
}
