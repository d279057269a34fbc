//! The tasks the framework wants running, built from the active runs: each
//! run's tasks that are not over, are not held back by a restart's
//! backoff, and belong to a run that is not stopping.
//!
//! A task gets the job's `run`: its command, resources, container, fetched
//! artifacts, environment (with the secrets' values, which the agent masks
//! in the output), and berth's variables `BERTH_JOB_ID`,
//! `BERTH_JOB_RUN_ID`, `BERTH_JOB_INDEX` (its index, as a Kubernetes
//! indexed Job's `JOB_COMPLETION_INDEX`), `BERTH_JOB_COMPLETIONS`,
//! `BERTH_JOB_ATTEMPT`, and `BERTH_JOB_TICK` (the tick's time in RFC 3339,
//! for a schedule's run).

use berth_proto as pb;

use super::Jobs;
use crate::job::{Command, ConstraintOp, EnvValue, PlacementConstraint, RunSpec};
use crate::run::{Run, RunTask, Trigger};
use crate::time::Timestamp;

/// A task the framework wants running, and what an earlier instance knew
/// of it.
#[derive(Clone, Debug, PartialEq)]
pub struct WantedTask {
    /// The task.
    pub task: pb::TaskInfo,
    /// A launch of it may have been sent (by this instance or an earlier
    /// one).
    pub launched: bool,
    /// An update of it has been seen.
    pub seen: bool,
    /// The job's placement constraints.
    pub constraints: Vec<PlacementConstraint>,
}

/// A task's status update, as the state reads it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TaskUpdate {
    /// The task.
    pub task_id: String,
    /// Its state.
    pub state: pb::TaskState,
    /// The update's message, or its reason's name.
    pub message: String,
    /// The agent.
    pub agent_id: String,
    /// The exit code, when it ended with one.
    pub exit_code: Option<i32>,
}

impl TaskUpdate {
    /// The update of a proto status.
    #[must_use]
    pub fn of(status: &pb::TaskStatus) -> TaskUpdate {
        let reason = status.reason().short_name();
        let message = match (status.message.is_empty(), reason.is_empty()) {
            (false, _) => status.message.clone(),
            (true, false) => reason.to_owned(),
            (true, true) => String::new(),
        };
        TaskUpdate {
            task_id: status.task_id.clone(),
            state: status.state(),
            message,
            agent_id: status.agent_id.clone(),
            exit_code: status.exit_code,
        }
    }
}

impl Jobs {
    /// The tasks wanted at `now`, oldest run first.
    #[must_use]
    pub fn wanted(&self, now: Timestamp) -> Vec<WantedTask> {
        let mut out = Vec::new();
        for (job, id) in &self.active {
            let Some(run) = self.jobs.get(job).and_then(|e| e.active.get(id)) else {
                continue;
            };
            if run.stopping.is_some() {
                continue;
            }
            for t in &run.tasks {
                if t.is_over() || t.not_before.is_some_and(|at| at > now) {
                    continue;
                }
                out.push(WantedTask {
                    task: self.task_info(run, t),
                    launched: t.launched,
                    seen: t.task_state() != pb::TaskState::TaskStaging,
                    constraints: run.spec.constraints.clone(),
                });
            }
        }
        out
    }

    /// Tasks to kill: those of stopping runs that may be running, and the
    /// orphans of removed jobs, each with its agent (empty if unknown).
    #[must_use]
    pub fn to_stop(&self) -> Vec<(String, String)> {
        let mut out: Vec<(String, String)> = self
            .orphans
            .iter()
            .map(|(t, a)| (t.clone(), a.clone()))
            .collect();
        for (job, id) in &self.active {
            let Some(run) = self.jobs.get(job).and_then(|e| e.active.get(id)) else {
                continue;
            };
            if run.stopping.is_none() {
                continue;
            }
            for t in &run.tasks {
                if t.launched && !t.is_over() {
                    out.push((t.task_id.clone(), t.agent_id.clone()));
                }
            }
        }
        out
    }

    /// The `TaskInfo` of task `t` of `run`.
    fn task_info(&self, run: &Run, t: &RunTask) -> pb::TaskInfo {
        let spec = &run.spec;
        let mut env: std::collections::HashMap<String, String> = Default::default();
        let mut masked = Vec::new();
        for (k, v) in &spec.env {
            match v {
                EnvValue::Value(v) => {
                    env.insert(k.clone(), v.clone());
                }
                EnvValue::Secret(name) => {
                    let value = spec
                        .secrets
                        .get(name)
                        .and_then(|s| self.secrets.get(&s.source))
                        .cloned()
                        .unwrap_or_default();
                    if value.len() >= 8 && !value.contains(['\n', '\r', '\0']) {
                        masked.push(value.clone());
                    }
                    env.insert(k.clone(), value);
                }
            }
        }
        env.insert("BERTH_JOB_ID".into(), run.job.to_string());
        env.insert("BERTH_JOB_RUN_ID".into(), run.id.to_string());
        env.insert("BERTH_JOB_INDEX".into(), t.index.to_string());
        env.insert("BERTH_JOB_COMPLETIONS".into(), spec.completions.to_string());
        env.insert("BERTH_JOB_ATTEMPT".into(), t.attempt.to_string());
        if let Trigger::Schedule { tick, .. } = &run.trigger
            && let Some(at) = tick.to_chrono()
        {
            env.insert(
                "BERTH_JOB_TICK".into(),
                at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
            );
        }
        masked.sort();
        masked.dedup();
        let (shell, argv) = match &spec.command {
            Command::Shell(s) => (s.clone(), Vec::new()),
            Command::Args(a) => (String::new(), a.clone()),
            Command::Image => (String::new(), Vec::new()),
        };
        let uris = spec
            .artifacts
            .iter()
            .map(|a| pb::FetchUri {
                url: a.uri.clone(),
                extract: a.extract,
                output_path: String::new(),
                executable: a.executable,
                optional: false,
            })
            .collect();
        pb::TaskInfo {
            task_id: t.task_id.clone(),
            name: format!("{}.{}", run.job, run.id),
            agent_id: String::new(),
            resources: Some(resources(spec)),
            command: Some(pb::CommandInfo {
                shell,
                argv,
                env,
                uris,
            }),
            labels: self.labels(run),
            kill_grace_period_seconds: spec.kill_grace.map_or(0.0, |d| d.as_secs_f64()),
            container: spec.docker.as_ref().map(|d| pb::ContainerInfo {
                image: d.image.clone(),
                user: spec.user.clone().unwrap_or_default(),
                ..Default::default()
            }),
            health_check: None,
            outputs: Vec::new(),
            masked_values: masked,
        }
    }
}

impl Jobs {
    /// A task's labels: `berth.job` and `berth.job.run`, then the job's
    /// own (as Metronome gives a job's labels to its tasks), at most 64 in
    /// all (the master's limit).
    fn labels(&self, run: &Run) -> Vec<pb::Label> {
        let mut labels = vec![
            pb::Label {
                key: "berth.job".into(),
                value: run.job.to_string(),
            },
            pb::Label {
                key: "berth.job.run".into(),
                value: run.id.to_string(),
            },
        ];
        if let Some(e) = self.jobs.get(&run.job) {
            labels.extend(e.def.labels.iter().take(62).map(|(k, v)| pb::Label {
                key: k.clone(),
                value: v.clone(),
            }));
        }
        labels
    }
}

/// The resources of one task of `spec`.
fn resources(spec: &RunSpec) -> pb::Resources {
    use berth_scheduler_core::resources::Scalar;
    let r = berth_scheduler_core::Resources {
        cpus: Scalar::from_milli_saturating(spec.cpus_milli),
        mem: Scalar::from_units(spec.mem_mib),
        disk: Scalar::from_units(spec.disk_mib),
        ..Default::default()
    };
    berth_proto::convert::resources_to_proto(&r)
}

/// Whether an agent (its hostname and attributes) satisfies every
/// constraint.
#[must_use]
pub fn allows(
    constraints: &[PlacementConstraint],
    hostname: &str,
    attributes: &std::collections::BTreeMap<String, String>,
) -> bool {
    constraints.iter().all(|c| {
        let value = if c.attribute == "hostname" {
            Some(hostname)
        } else {
            attributes.get(&c.attribute).map(String::as_str)
        };
        let matches = |v: &str| {
            regex::Regex::new(&format!("^(?:{})$", c.value)).is_ok_and(|re| re.is_match(v))
        };
        match c.operator {
            ConstraintOp::Eq => value == Some(c.value.as_str()),
            ConstraintOp::Like => value.is_some_and(matches),
            ConstraintOp::Unlike => !value.is_some_and(matches),
        }
    })
}
