//! The API's operations on the state: each is checked whole before it
//! changes anything, so a refused operation changes nothing.

use std::collections::BTreeMap;

use super::{Entry, JobStatus, Jobs, Key, Meta, Op, OpError, Outcome, check_secret, status_of};
use crate::error::{FieldError, Invalid};
use crate::job::{JobDef, JobId, ScheduleDef};
use crate::run::{RunId, Trigger};
use crate::schedule::{Cron, CronError};
use crate::time::Timestamp;
use berth_scheduler_core::error::quoted;

fn secret_error(message: String) -> OpError {
    OpError::Invalid(Invalid {
        errors: vec![FieldError {
            path: "/".into(),
            message,
        }],
    })
}

fn no_job(id: &JobId) -> OpError {
    OpError::NotFound(format!("Job '{id}' does not exist"))
}

/// Compiles a job's schedules; errors at `/schedules/<i>/cron|timezone`.
fn compile(def: &JobDef, prefix: &str) -> Result<BTreeMap<String, Cron>, Invalid> {
    let mut crons = BTreeMap::new();
    let mut errors = Vec::new();
    for (i, s) in def.schedules.iter().enumerate() {
        let at = if prefix.is_empty() {
            format!("/schedules/{i}")
        } else {
            prefix.to_owned()
        };
        match Cron::parse(&s.cron, &s.timezone) {
            Ok(c) => {
                crons.insert(s.id.clone(), c);
            }
            Err(CronError::Expression(m)) => errors.push(FieldError {
                path: format!("{at}/cron"),
                message: m,
            }),
            Err(CronError::Zone(m)) => errors.push(FieldError {
                path: format!("{at}/timezone"),
                message: m,
            }),
        }
    }
    if errors.is_empty() {
        Ok(crons)
    } else {
        Err(Invalid { errors })
    }
}

/// The next tick of schedule `s` after `now` (none when disabled).
fn first_tick(s: &ScheduleDef, cron: &Cron, now: Timestamp) -> Option<Timestamp> {
    if s.enabled {
        cron.next_after(now)
    } else {
        None
    }
}

impl Jobs {
    /// Applies `op` at `now` (`random` tells apart runs asked for in the
    /// same millisecond). The changed records are marked for
    /// [`Jobs::take_writes`].
    ///
    /// # Errors
    /// [`OpError`]; nothing changed.
    pub fn apply(&mut self, op: &Op, now: Timestamp, random: u32) -> Result<Outcome, OpError> {
        match op {
            Op::Create(def) => self.create(def, now),
            Op::Update {
                def,
                keep_schedules,
            } => self.update_job(def, *keep_schedules, now),
            Op::Remove { id, stop_runs } => self.remove(id, *stop_runs),
            Op::AddSchedule(job, s) => self.put_schedule(job, s, false, now),
            Op::ReplaceSchedule(job, s) => self.put_schedule(job, s, true, now),
            Op::RemoveSchedule(job, sid) => self.remove_schedule(job, sid),
            Op::StartRun(job) => {
                if !self.jobs.contains_key(job) {
                    return Err(no_job(job));
                }
                let mut id = RunId::asked(now, random);
                let mut salt = random;
                while self.run(job, &id).is_some() {
                    salt = salt.wrapping_mul(2_654_435_761).wrapping_add(1);
                    id = RunId::asked(now, salt);
                }
                let run = self
                    .new_run(job, id, Trigger::Manual, now)
                    .ok_or_else(|| no_job(job))?;
                Ok(Outcome::Run(Box::new(run)))
            }
            Op::PutSecret { path, value } => {
                check_secret(path, Some(value)).map_err(secret_error)?;
                self.set_secret(path, Some(value.clone()));
                Ok(Outcome::Secret)
            }
            Op::RemoveSecret(path) => {
                check_secret(path, None).map_err(secret_error)?;
                if !self.secrets.contains_key(path) {
                    return Err(OpError::NotFound(format!(
                        "Secret {} does not exist",
                        quoted(path)
                    )));
                }
                self.set_secret(path, None);
                Ok(Outcome::Secret)
            }
            Op::KillRun(job, run) => {
                let e = self.jobs.get(job).ok_or_else(|| no_job(job))?;
                if !e.active.contains_key(run) {
                    return Err(if e.history.iter().any(|r| r.id == *run) {
                        OpError::Conflict(format!(
                            "Run {} of job '{job}' has finished",
                            quoted(run.as_str())
                        ))
                    } else {
                        OpError::NotFound(format!(
                            "Run {} of job '{job}' does not exist",
                            quoted(run.as_str())
                        ))
                    });
                }
                self.stop_run(job, run, "killed by a user", now);
                let shown = self
                    .run(job, run)
                    .cloned()
                    .ok_or_else(|| OpError::NotFound(format!("Run '{run}' is gone")))?;
                Ok(Outcome::Run(Box::new(shown)))
            }
        }
    }

    /// A job without dependencies can name no unknown parent and close no
    /// cycle (a cycle through it needs an edge out of it): only a job with
    /// some is checked against every job (linear in their number).
    fn check_dependencies(&self, def: &JobDef) -> Result<(), Invalid> {
        if def.dependencies.is_empty() {
            return Ok(());
        }
        crate::job::graph::check_dependencies(self.jobs.values().map(|e| &e.def), def)
    }

    fn create(&mut self, def: &JobDef, now: Timestamp) -> Result<Outcome, OpError> {
        if self.jobs.contains_key(&def.id) {
            return Err(OpError::Conflict(format!(
                "Job with id '{}' already exists",
                def.id
            )));
        }
        let crons = compile(def, "")?;
        self.check_dependencies(def)?;
        let mut meta = Meta::default();
        for s in &def.schedules {
            let next = crons.get(&s.id).and_then(|c| first_tick(s, c, now));
            meta.next.insert(s.id.clone(), next);
            if let Some(at) = next {
                self.timers.set((def.id.clone(), s.id.clone()), at);
            }
        }
        self.jobs.insert(
            def.id.clone(),
            Entry {
                def: def.clone(),
                crons,
                meta,
                active: BTreeMap::new(),
                history: Vec::new(),
            },
        );
        self.index_children();
        self.touch(Key::Job(def.id.clone()));
        self.touch(Key::Meta(def.id.clone()));
        Ok(Outcome::Job(Box::new(self.shown(&def.id, now)?)))
    }

    fn shown(&self, id: &JobId, now: Timestamp) -> Result<JobStatus, OpError> {
        self.jobs
            .get(id)
            .map(|e| status_of(e, now))
            .ok_or_else(|| no_job(id))
    }

    fn update_job(
        &mut self,
        def: &JobDef,
        keep_schedules: bool,
        now: Timestamp,
    ) -> Result<Outcome, OpError> {
        let old = self.jobs.get(&def.id).ok_or_else(|| no_job(&def.id))?;
        let mut def = def.clone();
        if keep_schedules {
            def.schedules.clone_from(&old.def.schedules);
        }
        let crons = compile(&def, "")?;
        self.check_dependencies(&def)?;
        let old_schedules = old.def.schedules.clone();
        self.replace_schedules(&def.id, &old_schedules, &def.schedules, &crons, now);
        let id = def.id.clone();
        if let Some(e) = self.jobs.get_mut(&id) {
            e.def = def;
            e.crons = crons;
        }
        self.index_children();
        self.touch(Key::Job(id.clone()));
        self.touch(Key::Meta(id.clone()));
        Ok(Outcome::Job(Box::new(self.shown(&id, now)?)))
    }

    /// Moves the cursors from `old` schedules to `new` ones: a schedule
    /// whose expression, zone and enabled flag did not change keeps its
    /// cursor; a changed or new one starts from `now`; a removed one's is
    /// dropped.
    fn replace_schedules(
        &mut self,
        job: &JobId,
        old: &[ScheduleDef],
        new: &[ScheduleDef],
        crons: &BTreeMap<String, Cron>,
        now: Timestamp,
    ) {
        let Some(e) = self.jobs.get_mut(job) else {
            return;
        };
        let mut next = BTreeMap::new();
        for s in new {
            let same = old.iter().any(|o| {
                o.id == s.id
                    && o.cron == s.cron
                    && o.timezone == s.timezone
                    && o.enabled == s.enabled
            });
            let cursor = match (same, e.meta.next.get(&s.id)) {
                (true, Some(kept)) => *kept,
                _ => crons.get(&s.id).and_then(|c| first_tick(s, c, now)),
            };
            next.insert(s.id.clone(), cursor);
        }
        for o in old {
            self.timers.remove(&(job.clone(), o.id.clone()));
        }
        for (sid, at) in &next {
            if let Some(at) = at {
                self.timers.set((job.clone(), sid.clone()), *at);
            }
        }
        e.meta.next = next;
    }

    fn remove(&mut self, id: &JobId, stop_runs: bool) -> Result<Outcome, OpError> {
        let e = self.jobs.get(id).ok_or_else(|| no_job(id))?;
        if let Err(m) = crate::job::graph::check_removal(self.jobs.values().map(|e| &e.def), id) {
            return Err(OpError::Conflict(m));
        }
        if !e.active.is_empty() && !stop_runs {
            return Err(OpError::Conflict(
                "There are active job runs. Override with stopCurrentJobRuns=true".into(),
            ));
        }
        let Some(e) = self.jobs.remove(id) else {
            return Err(no_job(id));
        };
        for run in e.active.values() {
            for t in &run.tasks {
                self.tasks.remove(&t.task_id);
                if t.launched && !t.is_over() {
                    self.orphans.insert(t.task_id.clone(), t.agent_id.clone());
                }
            }
            self.active.remove(&(id.clone(), run.id.clone()));
            self.touch(Key::Active(id.clone(), run.id.clone()));
        }
        for run in &e.history {
            self.kept
                .remove(&(super::records::finished(run), id.clone(), run.id.clone()));
            self.touch(Key::History(id.clone(), run.id.clone()));
        }
        for s in &e.def.schedules {
            self.timers.remove(&(id.clone(), s.id.clone()));
        }
        self.touch(Key::Job(id.clone()));
        self.touch(Key::Meta(id.clone()));
        self.index_children();
        Ok(Outcome::Removed)
    }

    fn put_schedule(
        &mut self,
        job: &JobId,
        s: &ScheduleDef,
        replace: bool,
        now: Timestamp,
    ) -> Result<Outcome, OpError> {
        let e = self.jobs.get(job).ok_or_else(|| no_job(job))?;
        let exists = e.def.schedules.iter().any(|o| o.id == s.id);
        if replace && !exists {
            return Err(OpError::NotFound(format!(
                "Schedule {} of job '{job}' does not exist",
                quoted(&s.id)
            )));
        }
        if !replace && exists {
            return Err(OpError::Conflict(format!(
                "Schedule {} of job '{job}' already exists",
                quoted(&s.id)
            )));
        }
        if !replace && e.def.schedules.len() >= JobDef::MAX_SCHEDULES {
            return Err(OpError::Invalid(Invalid {
                errors: vec![FieldError {
                    path: "/".into(),
                    message: format!(
                        "job '{job}' has {} schedules already, the most a job may have",
                        JobDef::MAX_SCHEDULES
                    ),
                }],
            }));
        }
        let mut def = e.def.clone();
        match def.schedules.iter_mut().find(|o| o.id == s.id) {
            Some(slot) => *slot = s.clone(),
            None => def.schedules.push(s.clone()),
        }
        let one = JobDef {
            schedules: vec![s.clone()],
            ..def.clone()
        };
        compile(&one, "/")?;
        let crons = compile(&def, "")?;
        let old = e.def.schedules.clone();
        self.replace_schedules(job, &old, &def.schedules, &crons, now);
        if let Some(e) = self.jobs.get_mut(job) {
            e.def = def;
            e.crons = crons;
        }
        self.touch(Key::Job(job.clone()));
        self.touch(Key::Meta(job.clone()));
        Ok(Outcome::Schedule(s.clone()))
    }

    fn remove_schedule(&mut self, job: &JobId, sid: &str) -> Result<Outcome, OpError> {
        let e = self.jobs.get_mut(job).ok_or_else(|| no_job(job))?;
        let before = e.def.schedules.len();
        e.def.schedules.retain(|s| s.id != sid);
        if e.def.schedules.len() == before {
            return Err(OpError::NotFound(format!(
                "Schedule {} of job '{job}' does not exist",
                quoted(sid)
            )));
        }
        e.crons.remove(sid);
        e.meta.next.remove(sid);
        self.timers.remove(&(job.clone(), sid.to_owned()));
        self.touch(Key::Job(job.clone()));
        self.touch(Key::Meta(job.clone()));
        Ok(Outcome::ScheduleRemoved)
    }

    /// Sets (or with `None` removes) the secret at `path`.
    pub fn set_secret(&mut self, path: &str, value: Option<String>) {
        match value {
            Some(v) => self.secrets.insert(path.to_owned(), v),
            None => self.secrets.remove(path),
        };
        self.touch(Key::Secret(path.to_owned()));
    }

    /// The secrets' paths.
    #[must_use]
    pub fn secret_paths(&self) -> Vec<String> {
        self.secrets.keys().cloned().collect()
    }
}
