//! What the simulated agents report of the job framework's tasks: each
//! run's first TASK_RUNNING, with the tick it was for (the task's
//! `BERTH_JOB_TICK`) and how late after it the task ran; runs started
//! more than once; tasks that ended other than TASK_FINISHED.
//!
//! A run is told by its task's labels `berth.job` and `berth.job.run`.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, SystemTime};

use berth_benches::agents::TaskEvent;
use berth_proto as pb;

/// One run started on an agent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Started {
    /// Its tick, ms since the epoch.
    pub(crate) tick_ms: i64,
    /// When its task ran, ms since the epoch.
    pub(crate) running_ms: i64,
}

impl Started {
    /// How late after its tick the run's task ran (zero if early).
    pub(crate) fn late(&self) -> Duration {
        Duration::from_millis(u64::try_from(self.running_ms - self.tick_ms).unwrap_or(0))
    }
}

/// The followed state; see the module docs.
#[derive(Debug, Default)]
pub(crate) struct Tracker {
    /// Runs (`job`, `run`) started, by their first TASK_RUNNING.
    pub(crate) started: HashMap<(String, String), Started>,
    /// Tasks running now.
    running: HashSet<String>,
    /// A second task of a run that had started already (a run started
    /// twice; its job has no retries here).
    pub(crate) again: u64,
    /// TASK_RUNNING of a task without the job labels or a readable
    /// `BERTH_JOB_TICK`.
    pub(crate) unreadable: u64,
    /// Tasks finished (TASK_FINISHED).
    pub(crate) finished: u64,
    /// Tasks that ended otherwise.
    pub(crate) other_ends: u64,
}

/// The wall-clock time of `e` (stamped with a monotonic instant), in ms
/// since the epoch.
fn wall_ms(e: &TaskEvent) -> i64 {
    let at = SystemTime::now() - e.at.elapsed();
    at.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// A task's run (`job`, `run`) and tick (ms since the epoch).
fn run_of(task: &pb::TaskInfo) -> Option<((String, String), i64)> {
    let label = |k: &str| {
        task.labels
            .iter()
            .find(|l| l.key == k)
            .map(|l| l.value.clone())
    };
    let tick = task.command.as_ref()?.env.get("BERTH_JOB_TICK")?;
    let tick = chrono::DateTime::parse_from_rfc3339(tick).ok()?;
    Some((
        (label("berth.job")?, label("berth.job.run")?),
        tick.timestamp_millis(),
    ))
}

impl Tracker {
    /// Follows one report.
    pub(crate) fn on_event(&mut self, e: &TaskEvent) {
        use pb::TaskState as S;
        match e.state {
            S::TaskRunning => {
                self.running.insert(e.task_id.clone());
                let Some((run, tick_ms)) = e.task.as_deref().and_then(run_of) else {
                    self.unreadable += 1;
                    return;
                };
                let started = Started {
                    tick_ms,
                    running_ms: wall_ms(e),
                };
                if self.started.insert(run.clone(), started).is_some() {
                    self.again += 1;
                    // The first start counts.
                    self.started.entry(run).and_modify(|s| {
                        s.running_ms = s.running_ms.min(started.running_ms);
                    });
                }
            }
            S::TaskFinished => {
                self.running.remove(&e.task_id);
                self.finished += 1;
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

    /// The runs whose tick is in `from_ms..to_ms`.
    pub(crate) fn ticked_between(&self, from_ms: i64, to_ms: i64) -> Vec<Started> {
        self.started
            .values()
            .filter(|s| (from_ms..to_ms).contains(&s.tick_ms))
            .copied()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::time::Instant;

    fn task(job: &str, run: &str, tick: &str) -> pb::TaskInfo {
        let label = |k: &str, v: &str| pb::Label {
            key: k.into(),
            value: v.into(),
        };
        pb::TaskInfo {
            task_id: format!("{job}.{run}.0.0"),
            labels: vec![label("berth.job", job), label("berth.job.run", run)],
            command: Some(pb::CommandInfo {
                env: [("BERTH_JOB_TICK".to_owned(), tick.to_owned())].into(),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn event(task_id: &str, state: pb::TaskState, info: Option<pb::TaskInfo>) -> TaskEvent {
        TaskEvent {
            agent: 0,
            task_id: task_id.into(),
            state,
            at: Instant::now(),
            task: info.map(Box::new),
        }
    }

    #[test]
    fn runs_are_told_by_their_labels_and_timed_from_their_tick() {
        use pb::TaskState as S;
        let mut t = Tracker::default();
        let info = task("j1", "20260101000000-s", "2026-01-01T00:00:00.000Z");
        let id = info.task_id.clone();
        t.on_event(&event(&id, S::TaskRunning, Some(info.clone())));
        assert_eq!(t.running(), 1);
        let s = t.started[&("j1".to_owned(), "20260101000000-s".to_owned())];
        assert_eq!(s.tick_ms, 1_767_225_600_000);
        // Long after that tick.
        assert!(s.late() > Duration::from_secs(3600));
        assert_eq!(t.ticked_between(s.tick_ms, s.tick_ms + 1).len(), 1);
        assert!(t.ticked_between(s.tick_ms + 1, s.tick_ms + 2).is_empty());
        // The same run's task running again counts once, as a repeat.
        t.on_event(&event(&id, S::TaskRunning, Some(info)));
        assert_eq!((t.started.len(), t.again), (1, 1));
        t.on_event(&event(&id, S::TaskFinished, None));
        assert_eq!((t.running(), t.finished), (0, 1));
        // Without a tick: unreadable; a failure is another end.
        let mut bare = task("j2", "r", "soon");
        t.on_event(&event("j2.r.0.0", S::TaskRunning, Some(bare.clone())));
        bare.labels.clear();
        t.on_event(&event("j2.r.0.0", S::TaskRunning, Some(bare)));
        t.on_event(&event("j2.r.0.0", S::TaskFailed, None));
        assert_eq!((t.unreadable, t.other_ends, t.running()), (2, 1, 0));
    }
}
