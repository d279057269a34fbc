//! What launches and the tasks' status updates do to runs.
//!
//! - A launch about to be sent marks its tasks launched (saved before the
//!   launch, so a new instance reconciles them instead of launching them
//!   again).
//! - `TASK_RUNNING` makes the run active. `TASK_UNREACHABLE` is waited on
//!   for [`super::clock::UNREACHABLE_LIMIT`]; the task may come back.
//! - A task that finished completes its index: the run succeeds when every
//!   index `0..completions` has, and otherwise starts the next index while
//!   fewer than `parallelism` tasks go on.
//! - A task that failed (failed, killed, lost, errored, or unknown to the
//!   master) is restarted as a new attempt of its index, after the backoff,
//!   while the run's restart policy allows it (`ON_FAILURE`, fewer than
//!   `backoffLimit` restarts so far, before `activeDeadlineSeconds`);
//!   otherwise the run stops its other tasks and fails, with the task's
//!   message and exit code as the reason.
//!
//! Updates come at least once: an update for a task already over changes
//! nothing.

use std::time::Duration;

use berth_proto::TaskState;

use super::clock::new_task;
use super::{Jobs, Key, TaskUpdate};
use crate::job::{JobId, RestartPolicy};
use crate::run::{RunId, RunStatus, RunTask};
use crate::time::Timestamp;

impl Jobs {
    /// `task_ids` are about to be launched at `now`.
    pub fn launching(&mut self, task_ids: &[String], now: Timestamp) {
        for task in task_ids {
            let Some((job, id)) = self.tasks.get(task).cloned() else {
                continue;
            };
            let Some(r) = self.jobs.get_mut(&job).and_then(|e| e.active.get_mut(&id)) else {
                continue;
            };
            if let Some(t) = r.tasks.iter_mut().find(|t| t.task_id == *task) {
                t.launched = true;
                t.launched_at.get_or_insert(now);
            }
            if r.status == RunStatus::Initial {
                r.status = RunStatus::Starting;
            }
            self.touch(Key::Active(job, id));
        }
    }

    /// A status update at `now`. Returns whether the task is one of an
    /// active run's (others: of a finished or removed run, changing
    /// nothing but the list of tasks still to kill).
    pub fn update(&mut self, u: &TaskUpdate, now: Timestamp) -> bool {
        let over = u.state.is_terminal() || u.state == TaskState::TaskUnknown;
        let Some((job, id)) = self.tasks.get(&u.task_id).cloned() else {
            if over {
                self.orphans.remove(&u.task_id);
            }
            return false;
        };
        let Some(r) = self.jobs.get_mut(&job).and_then(|e| e.active.get_mut(&id)) else {
            return false;
        };
        let Some(t) = r.tasks.iter_mut().find(|t| t.task_id == u.task_id) else {
            return false;
        };
        if t.is_over() {
            return true;
        }
        t.state = u.state.as_str_name().to_owned();
        if !u.agent_id.is_empty() {
            t.agent_id.clone_from(&u.agent_id);
        }
        if !u.message.is_empty() {
            t.message.clone_from(&u.message);
        }
        if u.exit_code.is_some() {
            t.exit_code = u.exit_code;
        }
        t.launched = true;
        if u.state == TaskState::TaskUnreachable {
            t.unreachable_since.get_or_insert(now);
        } else {
            t.unreachable_since = None;
        }
        if u.state == TaskState::TaskRunning {
            t.started_at.get_or_insert(now);
            r.started_at.get_or_insert(now);
            if matches!(r.status, RunStatus::Initial | RunStatus::Starting) {
                r.status = RunStatus::Active;
            }
        }
        if over {
            t.finished_at = Some(now);
        }
        let index = t.index;
        let succeeded = t.succeeded();
        self.touch(Key::Active(job.clone(), id.clone()));
        if over {
            self.task_over(&job, &id, index, succeeded, now);
        }
        true
    }

    /// The task of `index` in run `id` ended.
    fn task_over(&mut self, job: &JobId, id: &RunId, index: u32, succeeded: bool, now: Timestamp) {
        let Some(r) = self.jobs.get_mut(job).and_then(|e| e.active.get_mut(id)) else {
            return;
        };
        if r.stopping.is_some() {
            self.settle(job, id, now);
            return;
        }
        if succeeded {
            let done = completed(&r.tasks);
            if done >= r.spec.completions {
                self.finish(job, id, RunStatus::Success, String::new(), now);
                return;
            }
            let going = r.tasks.iter().filter(|t| !t.is_over()).count();
            let mut room = (r.spec.parallelism as usize).saturating_sub(going);
            let mut next = next_index(&r.tasks);
            let mut started = Vec::new();
            while room > 0 && next < r.spec.completions {
                let t = new_task(job, id, next, 0);
                started.push(t.task_id.clone());
                r.tasks.push(t);
                next += 1;
                room -= 1;
            }
            for t in started {
                self.tasks.insert(t, (job.clone(), id.clone()));
            }
            return;
        }
        let restarts = r.tasks.iter().filter(|t| t.attempt > 0).count();
        let restart = r.spec.restart;
        let within_deadline = r.active_until.is_none_or(|until| now < until);
        let failed_task = r
            .tasks
            .iter()
            .rev()
            .find(|t| t.index == index && t.is_over())
            .cloned();
        let may_restart = restart.policy == RestartPolicy::OnFailure
            && (restarts as u64) < u64::from(restart.backoff_limit)
            && within_deadline;
        if may_restart {
            let attempt = r
                .tasks
                .iter()
                .filter(|t| t.index == index)
                .map(|t| t.attempt)
                .max()
                .map_or(0, |a| a + 1);
            let mut t = new_task(job, id, index, attempt);
            t.not_before = Some(now.plus(backoff(&restart, restarts)));
            self.tasks
                .insert(t.task_id.clone(), (job.clone(), id.clone()));
            r.tasks.push(t);
            return;
        }
        let why = failed_task.map_or_else(String::new, |t| describe(&t));
        let limit = if restart.policy == RestartPolicy::Never {
            "restart policy NEVER".to_owned()
        } else if !within_deadline {
            "past activeDeadlineSeconds".to_owned()
        } else {
            format!("backoffLimit {} reached", restart.backoff_limit)
        };
        self.stop_run(job, id, &format!("{why} ({limit})"), now);
    }

    /// Gives up a task whose agent stayed unreachable: it counts as
    /// failed, and is killed if its agent comes back.
    pub(super) fn give_up_unreachable(
        &mut self,
        job: &JobId,
        id: &RunId,
        task: &str,
        now: Timestamp,
    ) {
        let Some(r) = self.jobs.get_mut(job).and_then(|e| e.active.get_mut(id)) else {
            return;
        };
        let Some(t) = r.tasks.iter_mut().find(|t| t.task_id == task) else {
            return;
        };
        t.state = TaskState::TaskLost.as_str_name().to_owned();
        t.message = format!(
            "its agent was unreachable for {} s",
            super::clock::UNREACHABLE_LIMIT.as_secs()
        );
        t.finished_at = Some(now);
        let (index, agent) = (t.index, t.agent_id.clone());
        self.tasks.remove(task);
        self.orphans.insert(task.to_owned(), agent);
        self.touch(Key::Active(job.clone(), id.clone()));
        self.task_over(job, id, index, false, now);
    }
}

/// How many indices have a successful task.
fn completed(tasks: &[RunTask]) -> u32 {
    let mut done: Vec<u32> = tasks
        .iter()
        .filter(|t| t.succeeded())
        .map(|t| t.index)
        .collect();
    done.sort_unstable();
    done.dedup();
    u32::try_from(done.len()).unwrap_or(u32::MAX)
}

/// The first index no task was made for yet.
fn next_index(tasks: &[RunTask]) -> u32 {
    tasks.iter().map(|t| t.index + 1).max().unwrap_or(0)
}

/// The wait before restart number `n + 1` (0-based `n` restarts so far).
fn backoff(r: &crate::job::Restart, n: usize) -> Duration {
    let mut wait = r.backoff.as_secs_f64();
    let factor = f64::from(r.backoff_factor_milli) / 1000.0;
    for _ in 0..n.min(64) {
        wait *= factor;
        if wait >= r.max_backoff.as_secs_f64() {
            return r.max_backoff;
        }
    }
    Duration::from_secs_f64(wait.min(r.max_backoff.as_secs_f64()))
}

/// A failed task, for a run's reason.
fn describe(t: &RunTask) -> String {
    let state = t.state.strip_prefix("TASK_").unwrap_or(&t.state);
    let mut s = format!("task {} (index {}) {state}", t.task_id, t.index);
    if let Some(code) = t.exit_code {
        s.push_str(&format!(" with exit code {code}"));
    }
    if !t.message.is_empty() {
        let mut m = t.message.clone();
        if m.len() > 200 {
            let mut end = 200;
            while !m.is_char_boundary(end) {
                end -= 1;
            }
            m.truncate(end);
            m.push('…');
        }
        s.push_str(&format!(": {m}"));
    }
    s
}
