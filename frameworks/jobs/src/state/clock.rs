//! What time does to the state: due schedule ticks become runs (or missed
//! and skipped records), runs that could not start in time are missed or
//! failed, runs past their active deadline are stopped, tasks whose agent
//! stays unreachable are given up, and old history is dropped. Also the
//! life of a run: creating it, stopping it, finishing it.

use std::time::Duration;

use super::records::{counts_as_failed, finished};
use super::{Jobs, Key};
use crate::job::{ConcurrencyPolicy, JobId};
use crate::run::{Run, RunId, RunStatus, RunTask, Trigger};
use crate::schedule;
use crate::time::Timestamp;
use berth_scheduler_core::error::quoted;

/// How long a task's agent may stay unreachable before the task is given
/// up (killed if it comes back) and counted as failed.
pub const UNREACHABLE_LIMIT: Duration = Duration::from_secs(120);

/// How often finished runs past their job's `runsHistoryMaxAgeSeconds` are
/// looked for.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// The task id of `index`'s `attempt` in `run` of `job`.
pub(super) fn task_id(job: &JobId, run: &RunId, index: u32, attempt: u32) -> String {
    format!("{job}.{run}.{index}.{attempt}")
}

pub(super) fn new_task(job: &JobId, run: &RunId, index: u32, attempt: u32) -> RunTask {
    RunTask {
        task_id: task_id(job, run, index, attempt),
        index,
        attempt,
        state: berth_proto::TaskState::TaskStaging.as_str_name().to_owned(),
        launched: false,
        agent_id: String::new(),
        launched_at: None,
        started_at: None,
        finished_at: None,
        exit_code: None,
        message: String::new(),
        not_before: None,
        unreachable_since: None,
    }
}

impl Jobs {
    /// Creates run `id` of `job` and returns it (`None`: no such job).
    pub(super) fn new_run(
        &mut self,
        job: &JobId,
        id: RunId,
        trigger: Trigger,
        now: Timestamp,
    ) -> Option<Run> {
        let e = self.jobs.get_mut(job)?;
        let spec = e.def.run.clone();
        let start_by = match &trigger {
            Trigger::Schedule { schedule, tick } => {
                let deadline = e
                    .def
                    .schedules
                    .iter()
                    .find(|s| s.id == *schedule)
                    .map_or(Duration::from_secs(900), |s| s.starting_deadline);
                // A missed tick the missed-run policy runs has the
                // deadline from now on; others from their tick.
                let from = if tick.plus(deadline) < now {
                    now
                } else {
                    *tick
                };
                from.plus(deadline).min(now.plus(spec.max_launch_delay))
            }
            _ => now.plus(spec.max_launch_delay),
        };
        let first = spec.parallelism.min(spec.completions);
        let tasks = (0..first).map(|i| new_task(job, &id, i, 0)).collect();
        let run = Run {
            id: id.clone(),
            job: job.clone(),
            trigger,
            status: RunStatus::Initial,
            reason: String::new(),
            created_at: now,
            started_at: None,
            finished_at: None,
            active_until: spec.restart.active_deadline.map(|d| now.plus(d)),
            spec,
            tasks,
            start_by,
            stopping: None,
        };
        for t in &run.tasks {
            self.tasks
                .insert(t.task_id.clone(), (job.clone(), id.clone()));
        }
        let missing: Vec<String> = run
            .spec
            .secrets
            .iter()
            .filter(|(_, s)| !self.secrets.contains_key(&s.source))
            .map(|(name, s)| format!("{name} (source {})", quoted(&s.source)))
            .collect();
        e.active.insert(id.clone(), run.clone());
        self.active.insert((job.clone(), id.clone()));
        self.touch(Key::Active(job.clone(), id.clone()));
        if !missing.is_empty() {
            let reason = format!(
                "secrets not in the job framework's secret store: {}; store them with PUT \
                 /v1/secrets/PATH",
                missing.join(", ")
            );
            self.finish(job, &id, RunStatus::Failed, reason, now);
            return self.run(job, &id).cloned();
        }
        Some(run)
    }

    /// Stops an active run: its tasks not launched end now, the others are
    /// killed (see [`Jobs::to_stop`]); the run finishes as failed with
    /// `reason` once they all ended.
    pub(super) fn stop_run(&mut self, job: &JobId, run: &RunId, reason: &str, now: Timestamp) {
        let Some(r) = self.jobs.get_mut(job).and_then(|e| e.active.get_mut(run)) else {
            return;
        };
        if r.stopping.is_none() {
            r.stopping = Some(reason.to_owned());
        }
        for t in &mut r.tasks {
            if !t.launched && !t.is_over() {
                t.state = berth_proto::TaskState::TaskKilled.as_str_name().to_owned();
                t.message = format!("not launched: {reason}");
                t.finished_at = Some(now);
            }
        }
        self.touch(Key::Active(job.clone(), run.clone()));
        self.settle(job, run, now);
    }

    /// Finishes a stopping run whose tasks all ended.
    pub(super) fn settle(&mut self, job: &JobId, run: &RunId, now: Timestamp) {
        let Some(r) = self.jobs.get(job).and_then(|e| e.active.get(run)) else {
            return;
        };
        if let Some(reason) = &r.stopping
            && r.tasks.iter().all(RunTask::is_over)
        {
            let reason = reason.clone();
            self.finish(job, run, RunStatus::Failed, reason, now);
        }
    }

    /// Moves an active run to the history as `status`, counts it, starts
    /// the runs its success lets start, and trims the history.
    pub(super) fn finish(
        &mut self,
        job: &JobId,
        run: &RunId,
        status: RunStatus,
        reason: String,
        now: Timestamp,
    ) {
        let Some(e) = self.jobs.get_mut(job) else {
            return;
        };
        let Some(mut r) = e.active.remove(run) else {
            return;
        };
        self.active.remove(&(job.clone(), run.clone()));
        for t in &r.tasks {
            self.tasks.remove(&t.task_id);
        }
        r.status = status;
        r.reason = reason;
        r.finished_at = Some(now);
        r.stopping = None;
        match status {
            RunStatus::Success => {
                e.meta.success_count += 1;
                e.meta.last_success_at = Some(now);
            }
            RunStatus::Failed => {
                e.meta.failure_count += 1;
                e.meta.last_failure_at = Some(now);
            }
            _ => {}
        }
        self.events.push(format!(
            "job {job} run {run}: {}{}",
            status.name(),
            if r.reason.is_empty() {
                String::new()
            } else {
                format!(" ({})", r.reason)
            }
        ));
        let succeeded = status == RunStatus::Success;
        self.record(r);
        self.touch(Key::Active(job.clone(), run.clone()));
        self.touch(Key::Meta(job.clone()));
        if succeeded {
            self.parent_succeeded(job, run, now);
        }
    }

    /// Adds a finished run to its job's history and trims the history.
    pub(super) fn record(&mut self, run: Run) {
        let job = run.job.clone();
        let id = run.id.clone();
        let Some(e) = self.jobs.get_mut(&job) else {
            return;
        };
        self.kept.insert((finished(&run), job.clone(), id.clone()));
        e.history.insert(0, run);
        self.touch(Key::History(job.clone(), id));
        self.trim(&job, None);
        while self.kept.len() > super::MAX_HISTORY {
            let Some((_, job, id)) = self.kept.pop_first() else {
                break;
            };
            if let Some(e) = self.jobs.get_mut(&job) {
                e.history.retain(|r| r.id != id);
            }
            self.touch(Key::History(job, id));
        }
    }

    /// Drops the runs over the job's history limits (and, given `now`,
    /// those older than its age limit).
    fn trim(&mut self, job: &JobId, now: Option<Timestamp>) {
        let Some(e) = self.jobs.get_mut(job) else {
            return;
        };
        let limits = e.def.history;
        let (mut ok, mut failed) = (0u32, 0u32);
        let mut dropped = Vec::new();
        e.history.retain(|r| {
            let n = if counts_as_failed(r) {
                &mut failed
            } else {
                &mut ok
            };
            *n += 1;
            let limit = if counts_as_failed(r) {
                limits.failed
            } else {
                limits.successful
            };
            let old = now.is_some_and(|now| now.since(finished(r)) > limits.max_age);
            let keep = *n <= limit && !old;
            if !keep {
                dropped.push((finished(r), r.id.clone()));
            }
            keep
        });
        for (at, id) in dropped {
            self.kept.remove(&(at, job.clone(), id.clone()));
            self.touch(Key::History(job.clone(), id));
        }
    }

    /// A run of `parent` succeeded: each job depending on it notes it, and
    /// starts a run once all its parents have succeeded since its last
    /// such run.
    fn parent_succeeded(&mut self, parent: &JobId, run: &RunId, now: Timestamp) {
        let children: Vec<JobId> = self
            .children
            .get(parent)
            .map(|c| c.iter().cloned().collect())
            .unwrap_or_default();
        for child in children {
            let Some(e) = self.jobs.get_mut(&child) else {
                continue;
            };
            e.meta.parents_done.insert(parent.clone(), run.clone());
            let ready = e
                .def
                .dependencies
                .iter()
                .all(|p| e.meta.parents_done.contains_key(p));
            self.dirty.insert(Key::Meta(child.clone()));
            if !ready {
                continue;
            }
            let parents: Vec<(JobId, RunId)> = std::mem::take(&mut e.meta.parents_done)
                .into_iter()
                .collect();
            let id = RunId(format!(
                "{}-after-{}",
                now.compact(),
                parent_tag(parent, run)
            ));
            let id = if self.run(&child, &id).is_some() {
                RunId(format!("{id}-{}", self.tasks.len()))
            } else {
                id
            };
            self.new_run(&child, id, Trigger::Dependency { parents }, now);
        }
    }

    /// Everything time does at `now` (see the module docs).
    pub fn advance(&mut self, now: Timestamp) {
        for ((job, sid), at) in self.timers.pop_due(now) {
            self.fire(&job, &sid, at, now);
        }
        let active: Vec<(JobId, RunId)> = self.active.iter().cloned().collect();
        for (job, id) in active {
            self.check_run(&job, &id, now);
        }
        if self
            .last_sweep
            .is_none_or(|at| now.since(at) >= SWEEP_EVERY)
        {
            self.last_sweep = Some(now);
            let jobs: Vec<JobId> = self.jobs.keys().cloned().collect();
            for job in jobs {
                self.trim(&job, Some(now));
            }
        }
    }

    /// Schedule `sid` of `job` is due (its cursor was `at`).
    fn fire(&mut self, job: &JobId, sid: &str, at: Timestamp, now: Timestamp) {
        let Some(e) = self.jobs.get(job) else {
            return;
        };
        let (Some(s), Some(cron)) = (
            e.def.schedules.iter().find(|s| s.id == sid).cloned(),
            e.crons.get(sid),
        ) else {
            return;
        };
        let due = schedule::due(cron, at, now, s.starting_deadline, s.missed);
        let deadline = s.starting_deadline.as_secs();
        let mut missed: Vec<Timestamp> = due.missed.clone();
        missed.sort();
        for (i, tick) in missed.iter().enumerate() {
            let mut reason = format!(
                "no instance of the job framework was active at the tick; it was found {} s late, \
                 past startingDeadlineSeconds ({deadline} s)",
                now.since(*tick).as_secs()
            );
            if i == 0 && due.missed_more > 0 {
                reason.push_str(&format!(
                    "; {} earlier ticks were missed too and are not listed",
                    due.missed_more
                ));
            }
            self.record_tick(job, sid, *tick, RunStatus::Missed, reason, now);
        }
        if !missed.is_empty() || due.missed_more > 0 {
            self.events.push(format!(
                "job {job} schedule {sid}: {} tick(s) missed",
                missed.len() as u64 + due.missed_more
            ));
        }
        for tick in due.run {
            self.tick(job, &s.id, s.concurrency, tick, now);
        }
        if let Some(e) = self.jobs.get_mut(job) {
            e.meta.next.insert(sid.to_owned(), due.next);
        }
        if let Some(next) = due.next {
            self.timers.set((job.clone(), sid.to_owned()), next);
        }
        self.touch(Key::Meta(job.clone()));
    }

    /// One tick to run, under the schedule's concurrency policy.
    fn tick(
        &mut self,
        job: &JobId,
        sid: &str,
        policy: ConcurrencyPolicy,
        tick: Timestamp,
        now: Timestamp,
    ) {
        let id = RunId::of_tick(sid, tick);
        if self.run(job, &id).is_some() {
            // The run of this tick exists already (a cursor that did not
            // move past it cannot come from this state; never two runs).
            return;
        }
        let running: Vec<RunId> = self
            .jobs
            .get(job)
            .map(|e| {
                e.active
                    .values()
                    .filter(|r| r.stopping.is_none())
                    .map(|r| r.id.clone())
                    .collect()
            })
            .unwrap_or_default();
        match policy {
            ConcurrencyPolicy::Forbid if !running.is_empty() => {
                let reason = format!(
                    "concurrencyPolicy FORBID: run {} is still active",
                    running.join_ids()
                );
                self.record_tick(job, sid, tick, RunStatus::Skipped, reason, now);
                return;
            }
            ConcurrencyPolicy::Replace => {
                for r in &running {
                    self.stop_run(
                        job,
                        r,
                        &format!("replaced by run {id} (concurrencyPolicy REPLACE)"),
                        now,
                    );
                }
            }
            _ => {}
        }
        self.new_run(
            job,
            id,
            Trigger::Schedule {
                schedule: sid.to_owned(),
                tick,
            },
            now,
        );
    }

    /// Records a tick that did not run, in the history.
    fn record_tick(
        &mut self,
        job: &JobId,
        sid: &str,
        tick: Timestamp,
        status: RunStatus,
        reason: String,
        now: Timestamp,
    ) {
        let Some(e) = self.jobs.get(job) else {
            return;
        };
        let id = RunId::of_tick(sid, tick);
        if self.run(job, &id).is_some() {
            return;
        }
        let run = Run {
            id,
            job: job.clone(),
            trigger: Trigger::Schedule {
                schedule: sid.to_owned(),
                tick,
            },
            status,
            reason,
            created_at: now,
            started_at: None,
            finished_at: Some(now),
            spec: e.def.run.clone(),
            tasks: Vec::new(),
            start_by: now,
            active_until: None,
            stopping: None,
        };
        self.record(run);
    }

    /// The deadlines of one active run.
    fn check_run(&mut self, job: &JobId, id: &RunId, now: Timestamp) {
        let Some(r) = self.jobs.get(job).and_then(|e| e.active.get(id)) else {
            return;
        };
        let launched = r.tasks.iter().any(|t| t.launched);
        if !launched && r.stopping.is_none() && now > r.start_by {
            let (status, reason) = match &r.trigger {
                Trigger::Schedule { .. } => (
                    RunStatus::Missed,
                    format!(
                        "could not start within startingDeadlineSeconds of the tick: no offer \
                         fitted its tasks by {}",
                        r.start_by
                    ),
                ),
                _ => (
                    RunStatus::Failed,
                    format!(
                        "could not start within maxLaunchDelay ({} s): no offer fitted its tasks",
                        r.spec.max_launch_delay.as_secs()
                    ),
                ),
            };
            self.finish(job, id, status, reason, now);
            return;
        }
        if r.stopping.is_none()
            && let Some(until) = r.active_until
            && now >= until
        {
            let secs = r.spec.restart.active_deadline.map_or(0, |d| d.as_secs());
            self.stop_run(
                job,
                id,
                &format!("activeDeadlineSeconds ({secs} s) passed"),
                now,
            );
            return;
        }
        let lost: Vec<String> = r
            .tasks
            .iter()
            .filter(|t| {
                !t.is_over()
                    && t.unreachable_since
                        .is_some_and(|s| now.since(s) >= UNREACHABLE_LIMIT)
            })
            .map(|t| t.task_id.clone())
            .collect();
        for task in lost {
            self.give_up_unreachable(job, id, &task, now);
        }
    }

    /// When [`Jobs::advance`] has something to do next, if ever.
    #[must_use]
    pub fn next_wakeup(&self) -> Option<Timestamp> {
        let mut at = self.timers.earliest();
        let mut earlier = |t: Timestamp| {
            at = Some(at.map_or(t, |a| a.min(t)));
        };
        for (job, id) in &self.active {
            let Some(r) = self.jobs.get(job).and_then(|e| e.active.get(id)) else {
                continue;
            };
            if !r.tasks.iter().any(|t| t.launched) {
                earlier(r.start_by.plus(Duration::from_millis(1)));
            }
            if let Some(until) = r.active_until {
                earlier(until);
            }
            for t in &r.tasks {
                if let Some(nb) = t.not_before
                    && !t.launched
                {
                    earlier(nb);
                }
                if let Some(s) = t.unreachable_since {
                    earlier(s.plus(UNREACHABLE_LIMIT));
                }
            }
        }
        at
    }
}

/// The part of a run id naming the parent run it followed.
fn parent_tag(parent: &JobId, run: &RunId) -> String {
    let mut tag = format!("{parent}-{run}");
    tag.truncate(96);
    tag
}

trait JoinIds {
    fn join_ids(&self) -> String;
}

impl JoinIds for Vec<RunId> {
    fn join_ids(&self) -> String {
        self.iter()
            .map(RunId::as_str)
            .collect::<Vec<_>>()
            .join(", ")
    }
}
