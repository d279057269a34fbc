//! What the simulated agents report, followed task by task: which tasks
//! run where, and for each instance failed on purpose, how long until its
//! next attempt ran.
//!
//! Task ids of the service framework are `<app>.<instance>.<attempt>`; the
//! replacement of a failed attempt is the same instance's next attempt,
//! so a failure and its replacement pair up exactly.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use berth_benches::agents::TaskEvent;
use berth_benches::stats::Rng;
use berth_proto as pb;
use tokio::time::Instant;

/// The instance (`<app>.<instance>`) and attempt of a task id.
fn split(task_id: &str) -> Option<(&str, u32)> {
    let (instance, attempt) = task_id.rsplit_once('.')?;
    Some((instance, attempt.parse().ok()?))
}

/// The followed state; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Running tasks, with their agent's index.
    running: HashMap<String, usize>,
    /// Tasks the bench asked to fail, not reported failed yet.
    asked: HashSet<String>,
    /// Instances failed on purpose: the attempt that failed and when,
    /// until a later attempt runs.
    waiting: HashMap<String, (u32, Instant)>,
    /// Failure → replacement running, per replaced instance.
    pub(crate) latencies: Vec<Duration>,
    /// Failures the bench caused (reported by the agents).
    pub(crate) failed: u64,
    /// Tasks that ended otherwise (killed, failed without being asked).
    pub(crate) other_ends: u64,
    /// TASK_RUNNING reports.
    pub(crate) running_reports: u64,
}

impl Tracker {
    /// Follows one report.
    pub(crate) fn on_event(&mut self, e: TaskEvent) {
        use pb::TaskState as S;
        match e.state {
            S::TaskRunning => {
                self.running_reports += 1;
                if let Some((instance, attempt)) = split(&e.task_id)
                    && let Some((failed, at)) = self.waiting.get(instance).copied()
                    && attempt > failed
                {
                    self.latencies.push(e.at.saturating_duration_since(at));
                    self.waiting.remove(instance);
                }
                self.running.insert(e.task_id, e.agent);
            }
            S::TaskFailed if self.asked.remove(&e.task_id) => {
                self.running.remove(&e.task_id);
                self.failed += 1;
                if let Some((instance, attempt)) = split(&e.task_id) {
                    self.waiting.insert(instance.to_owned(), (attempt, e.at));
                }
            }
            s if s.is_terminal() => {
                self.running.remove(&e.task_id);
                self.other_ends += 1;
            }
            _ => {}
        }
    }

    /// Tasks running now.
    pub(crate) fn running(&self) -> usize {
        self.running.len()
    }

    /// Instances failed on purpose whose replacement does not run yet.
    pub(crate) fn waiting(&self) -> usize {
        self.waiting.len() + self.asked.len()
    }

    /// Picks a running task to fail (one whose instance is not waiting for
    /// a replacement already) and its agent; remembers that it was asked.
    pub(crate) fn pick(&mut self, rng: &mut Rng) -> Option<(String, usize)> {
        let candidates: Vec<(&String, &usize)> = self
            .running
            .iter()
            .filter(|(t, _)| !self.asked.contains(*t))
            .filter(|(t, _)| split(t).is_some_and(|(i, _)| !self.waiting.contains_key(i)))
            .collect();
        if candidates.is_empty() {
            return None;
        }
        let n = candidates.len() as u64;
        let (task, agent) = candidates[usize::try_from(rng.between(0, n - 1)).unwrap_or(0)];
        let picked = (task.clone(), *agent);
        self.asked.insert(picked.0.clone());
        Some(picked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(task: &str, state: pb::TaskState, at: Instant) -> TaskEvent {
        TaskEvent {
            agent: 3,
            task_id: task.into(),
            state,
            at,
            task: None,
        }
    }

    #[test]
    fn a_failure_pairs_with_the_next_attempt_of_its_instance() {
        use pb::TaskState as S;
        let t0 = Instant::now();
        let mut t = Tracker::default();
        t.on_event(event("a.i1.1", S::TaskRunning, t0));
        t.on_event(event("a.i2.1", S::TaskRunning, t0));
        assert_eq!(t.running(), 2);
        let mut rng = Rng::new(1);
        let (task, agent) = t.pick(&mut rng).expect("a running task");
        assert_eq!(agent, 3);
        let other = if task == "a.i1.1" { "a.i2.1" } else { "a.i1.1" };
        // The picked one cannot be picked again.
        assert_eq!(t.pick(&mut rng).map(|p| p.0), Some(other.to_owned()));
        assert_eq!(t.pick(&mut rng), None);
        t.on_event(event(&task, S::TaskFailed, t0 + Duration::from_millis(10)));
        assert_eq!((t.failed, t.running(), t.waiting()), (1, 1, 2));
        // Another instance's attempt is no replacement.
        t.on_event(event(
            "a.i9.2",
            S::TaskRunning,
            t0 + Duration::from_millis(20),
        ));
        assert!(t.latencies.is_empty());
        let (instance, _) = split(&task).expect("a task id");
        t.on_event(event(
            &format!("{instance}.2"),
            S::TaskRunning,
            t0 + Duration::from_millis(35),
        ));
        assert_eq!(t.latencies, vec![Duration::from_millis(25)]);
        // A kill is counted apart.
        t.on_event(event("a.i9.2", S::TaskKilled, t0));
        assert_eq!(t.other_ends, 1);
    }
}
