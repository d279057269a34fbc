//! A simple backend for the APIs' tests: jobs in a map, operations
//! applied naively (no schedules firing, no real run semantics), every
//! operation recorded. What it checks is what the API must pass on, not
//! the framework's behaviour (that is `state`'s).

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::api::{BackendError, FrameworkInfo, JobsBackend};
use crate::job::{
    Command, ConcurrencyPolicy, HistoryLimits, JobDef, JobId, MissedPolicy, Restart, RestartPolicy,
    RunSpec, ScheduleDef,
};
use crate::run::{Run, RunId, RunStatus, RunTask, Trigger};
use crate::state::{JobStatus, Op, OpError, Outcome};
use crate::time::Timestamp;

/// 2026-12-07T16:25:00Z.
pub(crate) const T0: Timestamp = Timestamp::from_secs(1_796_660_700);

/// The test backend.
#[derive(Debug, Default)]
pub(crate) struct TestBackend {
    pub(crate) jobs: Mutex<BTreeMap<JobId, JobStatus>>,
    /// Every operation applied (refused ones too).
    pub(crate) ops: Mutex<Vec<Op>>,
    /// Answer every call with `Unavailable`.
    pub(crate) down: AtomicBool,
    /// The secrets' paths.
    pub(crate) secrets: Mutex<Vec<String>>,
}

pub(crate) fn id(s: &str) -> JobId {
    JobId::new(s).unwrap()
}

/// A job definition built in Rust (not parsed).
pub(crate) fn def(job: &str) -> JobDef {
    JobDef {
        id: id(job),
        description: String::new(),
        labels: BTreeMap::new(),
        run: RunSpec {
            command: Command::Shell("echo hi".into()),
            cpus_milli: 100,
            mem_mib: 32,
            disk_mib: 0,
            docker: None,
            env: BTreeMap::new(),
            secrets: BTreeMap::new(),
            artifacts: Vec::new(),
            constraints: Vec::new(),
            max_launch_delay: Duration::from_secs(3600),
            kill_grace: None,
            restart: Restart {
                policy: RestartPolicy::Never,
                active_deadline: None,
                backoff_limit: 0,
                backoff: Duration::from_secs(10),
                backoff_factor_milli: 2000,
                max_backoff: Duration::from_secs(360),
            },
            user: None,
            parallelism: 1,
            completions: 1,
        },
        schedules: Vec::new(),
        dependencies: Vec::new(),
        history: HistoryLimits::default(),
    }
}

pub(crate) fn schedule(sid: &str) -> ScheduleDef {
    ScheduleDef {
        id: sid.into(),
        cron: "0 3 * * *".into(),
        timezone: "UTC".into(),
        starting_deadline: Duration::from_secs(900),
        concurrency: ConcurrencyPolicy::Allow,
        enabled: true,
        missed: MissedPolicy::RunOnce,
    }
}

/// A run of `job` with one task.
pub(crate) fn run(job: &str, rid: &str, status: RunStatus, exit: Option<i32>) -> Run {
    let finished = status
        .is_finished()
        .then_some(T0.plus(Duration::from_secs(60)));
    Run {
        id: RunId(rid.into()),
        job: id(job),
        trigger: Trigger::Schedule {
            schedule: "nightly".into(),
            tick: T0,
        },
        status,
        reason: if status == RunStatus::Failed {
            "task failed".into()
        } else {
            String::new()
        },
        created_at: T0,
        started_at: Some(T0.plus(Duration::from_secs(2))),
        finished_at: finished,
        spec: def(job).run,
        tasks: vec![RunTask {
            task_id: format!("{job}.{rid}.0.0"),
            index: 0,
            attempt: 0,
            state: if finished.is_some() {
                "TASK_FINISHED".into()
            } else {
                "TASK_RUNNING".into()
            },
            launched: true,
            agent_id: "agent-1".into(),
            launched_at: Some(T0.plus(Duration::from_secs(1))),
            started_at: Some(T0.plus(Duration::from_secs(2))),
            finished_at: finished,
            exit_code: exit,
            message: String::new(),
            not_before: None,
            unreachable_since: None,
        }],
        start_by: T0.plus(Duration::from_secs(900)),
        active_until: None,
        stopping: None,
    }
}

fn status(def: JobDef) -> JobStatus {
    JobStatus {
        def,
        active: Vec::new(),
        history: Vec::new(),
        next_ticks: BTreeMap::new(),
        success_count: 0,
        failure_count: 0,
        last_success_at: None,
        last_failure_at: None,
    }
}

impl TestBackend {
    /// Jobs `adhoc` and `nightly.backup` (with schedule `nightly`, an
    /// active run, a failed and a successful one, counts 1 and 1).
    pub(crate) fn seeded() -> TestBackend {
        let b = TestBackend::default();
        let mut d = def("nightly.backup");
        d.schedules.push(schedule("nightly"));
        b.seed(d);
        b.seed(def("adhoc"));
        b.edit("nightly.backup", |j| {
            j.next_ticks.insert("nightly".into(), Some(T0));
            j.active
                .push(run("nightly.backup", "r-active", RunStatus::Active, None));
            j.history.push(run(
                "nightly.backup",
                "r-failed",
                RunStatus::Failed,
                Some(3),
            ));
            j.history
                .push(run("nightly.backup", "r-ok", RunStatus::Success, Some(0)));
            j.success_count = 1;
            j.failure_count = 1;
            j.last_success_at = Some(T0);
        });
        b
    }

    /// Adds `def` as it is.
    pub(crate) fn seed(&self, def: JobDef) -> JobId {
        let id = def.id.clone();
        self.jobs.lock().unwrap().insert(id.clone(), status(def));
        id
    }

    /// Changes a job in place.
    pub(crate) fn edit(&self, job: &str, f: impl FnOnce(&mut JobStatus)) {
        f(self.jobs.lock().unwrap().get_mut(&id(job)).unwrap());
    }

    pub(crate) fn snapshot(&self) -> BTreeMap<JobId, JobStatus> {
        self.jobs.lock().unwrap().clone()
    }

    pub(crate) fn ops(&self) -> Vec<Op> {
        self.ops.lock().unwrap().clone()
    }

    fn check(&self) -> Result<(), BackendError> {
        if self.down.load(Ordering::SeqCst) {
            Err(BackendError::Unavailable("not the active instance".into()))
        } else {
            Ok(())
        }
    }

    fn change(&self, op: Op) -> Result<Outcome, OpError> {
        let mut jobs = self.jobs.lock().unwrap();
        let missing = |id: &JobId| OpError::NotFound(format!("Job '{id}' does not exist"));
        match op {
            Op::Create(def) => {
                if jobs.contains_key(&def.id) {
                    return Err(OpError::Conflict("Job with this id already exists".into()));
                }
                let s = status(def);
                jobs.insert(s.def.id.clone(), s.clone());
                Ok(Outcome::Job(Box::new(s)))
            }
            Op::Update {
                mut def,
                keep_schedules,
            } => {
                let j = jobs.get_mut(&def.id).ok_or_else(|| missing(&def.id))?;
                if keep_schedules {
                    def.schedules = j.def.schedules.clone();
                }
                j.def = def;
                Ok(Outcome::Job(Box::new(j.clone())))
            }
            Op::Remove { id, stop_runs } => {
                let j = jobs.get(&id).ok_or_else(|| missing(&id))?;
                if !j.active.is_empty() && !stop_runs {
                    return Err(OpError::Conflict(
                        "There are active job runs. Override with stopCurrentJobRuns=true".into(),
                    ));
                }
                jobs.remove(&id);
                Ok(Outcome::Removed)
            }
            Op::AddSchedule(id, s) => {
                let j = jobs.get_mut(&id).ok_or_else(|| missing(&id))?;
                if j.def.schedules.iter().any(|x| x.id == s.id) {
                    return Err(OpError::Conflict("the schedule exists".into()));
                }
                j.def.schedules.push(s.clone());
                j.next_ticks.insert(s.id.clone(), Some(T0));
                Ok(Outcome::Schedule(s))
            }
            Op::ReplaceSchedule(id, s) => {
                let j = jobs.get_mut(&id).ok_or_else(|| missing(&id))?;
                let slot = j.def.schedules.iter_mut().find(|x| x.id == s.id);
                let slot = slot.ok_or_else(|| OpError::NotFound("no such schedule".into()))?;
                *slot = s.clone();
                Ok(Outcome::Schedule(s))
            }
            Op::RemoveSchedule(id, sid) => {
                let j = jobs.get_mut(&id).ok_or_else(|| missing(&id))?;
                let before = j.def.schedules.len();
                j.def.schedules.retain(|x| x.id != sid);
                if j.def.schedules.len() == before {
                    return Err(OpError::NotFound("no such schedule".into()));
                }
                Ok(Outcome::ScheduleRemoved)
            }
            Op::StartRun(id) => {
                let j = jobs.get_mut(&id).ok_or_else(|| missing(&id))?;
                let n = u32::try_from(j.active.len() + j.history.len()).unwrap();
                let mut r = run(
                    id.as_str(),
                    RunId::asked(T0, n).as_str(),
                    RunStatus::Initial,
                    None,
                );
                r.trigger = Trigger::Manual;
                r.tasks.clear();
                r.started_at = None;
                j.active.push(r.clone());
                Ok(Outcome::Run(Box::new(r)))
            }
            Op::KillRun(id, rid) => {
                let j = jobs.get_mut(&id).ok_or_else(|| missing(&id))?;
                let at = j.active.iter().position(|r| r.id == rid);
                let at = at.ok_or_else(|| OpError::NotFound(format!("no active run {rid}")))?;
                let mut r = j.active.remove(at);
                r.status = RunStatus::Failed;
                r.reason = "killed".into();
                r.finished_at = Some(T0);
                j.history.insert(0, r.clone());
                Ok(Outcome::Run(Box::new(r)))
            }
            Op::PutSecret { path, value } => {
                crate::state::check_secret(&path, Some(&value)).map_err(|m| {
                    OpError::Invalid(crate::error::Invalid {
                        errors: vec![crate::error::FieldError {
                            path: "/".into(),
                            message: m,
                        }],
                    })
                })?;
                let mut secrets = self.secrets.lock().unwrap();
                if !secrets.contains(&path) {
                    secrets.push(path);
                }
                Ok(Outcome::Secret)
            }
            Op::RemoveSecret(path) => {
                let mut secrets = self.secrets.lock().unwrap();
                let before = secrets.len();
                secrets.retain(|p| *p != path);
                if secrets.len() == before {
                    return Err(OpError::NotFound("no such secret".into()));
                }
                Ok(Outcome::Secret)
            }
        }
    }
}

impl JobsBackend for TestBackend {
    async fn jobs(&self) -> Result<Vec<JobStatus>, BackendError> {
        self.check()?;
        Ok(self.jobs.lock().unwrap().values().cloned().collect())
    }

    async fn job(&self, id: JobId) -> Result<Option<JobStatus>, BackendError> {
        self.check()?;
        Ok(self.jobs.lock().unwrap().get(&id).cloned())
    }

    async fn run(&self, job: JobId, run: RunId) -> Result<Option<Run>, BackendError> {
        self.check()?;
        let jobs = self.jobs.lock().unwrap();
        Ok(jobs.get(&job).and_then(|j| {
            j.active
                .iter()
                .chain(&j.history)
                .find(|r| r.id == run)
                .cloned()
        }))
    }

    async fn apply(&self, op: Op) -> Result<Outcome, BackendError> {
        self.check()?;
        self.ops.lock().unwrap().push(op.clone());
        Ok(self.change(op)?)
    }

    async fn secret_paths(&self) -> Result<Vec<String>, BackendError> {
        self.check()?;
        Ok(self.secrets.lock().unwrap().clone())
    }

    async fn info(&self) -> Result<FrameworkInfo, BackendError> {
        self.check()?;
        Ok(FrameworkInfo {
            framework_id: Some("fw-1".into()),
            address: Some("127.0.0.1:8095".into()),
        })
    }
}
