//! Pending work: what each framework waits to place, and why.
//!
//! Frameworks publish their unplaced tasks with placement explanations
//! (`Scheduler.UpdatePending`); operators read them (`Operator.ListPending`,
//! `berth task pending`). This is soft state of the leader, like offers:
//! it is not a registry command and not replicated through Raft. A new
//! leader starts with none; frameworks publish again after they
//! re-subscribe (the SDK does it for them). A framework's set is dropped
//! when the framework is removed.
//!
//! [`validate`] checks a published list as a whole (a list with one bad
//! entry is refused and the previous set stays); [`PendingWork`] holds the
//! validated sets and fills in how long each task has been waiting.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use berth_proto as pb;
use berth_proto::convert::{resources_from_proto_opt, resources_to_proto};
use berth_scheduler_core::{FrameworkId, TaskId, quoted};

use crate::registry::ms_to_secs;

/// Most pending tasks one framework may publish.
pub(crate) const MAX_PENDING: usize = 10_000;
/// Longest reason, in bytes.
pub(crate) const MAX_REASON: usize = 4096;
/// Longest task name or constraint text, in bytes.
const MAX_TEXT: usize = 1024;

/// Why a published list was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("pending task {index} ({}): {reason}", quoted(.task_id))]
pub(crate) struct InvalidPending {
    /// Position in the list.
    pub index: usize,
    /// The entry's task id as sent.
    pub task_id: String,
    /// What is wrong with it.
    pub reason: String,
}

/// Checks a published list and returns it normalized (resources in their
/// canonical wire form), or the first problem found.
///
/// # Errors
/// A message for a list over [`MAX_PENDING`] entries, or an
/// [`InvalidPending`] naming the first bad entry: invalid or repeated task
/// id, name over 1,024 bytes, invalid resources, reason over
/// [`MAX_REASON`] bytes or with control characters, counts that do not add
/// up, an empty, overlong or repeated constraint, a `since` that is not a
/// finite non-negative number.
pub(crate) fn validate(tasks: Vec<pb::PendingTask>) -> Result<Vec<pb::PendingTask>, String> {
    if tasks.len() > MAX_PENDING {
        return Err(format!(
            "at most {MAX_PENDING} pending tasks per framework, got {}",
            tasks.len()
        ));
    }
    let mut seen = BTreeSet::new();
    let mut out = Vec::with_capacity(tasks.len());
    for (index, task) in tasks.into_iter().enumerate() {
        let bad = |reason: String| InvalidPending {
            index,
            task_id: task.task_id.clone(),
            reason,
        };
        let id = TaskId::new(task.task_id.clone()).map_err(|e| bad(e.to_string()).to_string())?;
        if !seen.insert(id) {
            return Err(bad("the task id appears twice".into()).to_string());
        }
        let checked = check_entry(&task).map_err(|reason| bad(reason).to_string())?;
        out.push(pb::PendingTask {
            resources: Some(checked),
            ..task
        });
    }
    Ok(out)
}

/// Checks one entry's fields other than its id; returns its resources in
/// canonical form.
fn check_entry(task: &pb::PendingTask) -> Result<pb::Resources, String> {
    if task.name.len() > MAX_TEXT {
        return Err(format!("name longer than {MAX_TEXT} bytes"));
    }
    let resources = resources_from_proto_opt(task.resources.as_ref()).map_err(|e| e.to_string())?;
    if task.reason.len() > MAX_REASON {
        return Err(format!(
            "reason longer than {MAX_REASON} bytes ({})",
            task.reason.len()
        ));
    }
    if task.reason.chars().any(char::is_control) {
        return Err("reason contains control characters".into());
    }
    if !task.since.is_finite() || task.since < 0.0 {
        return Err(format!(
            "since must be a finite number of seconds since the Unix epoch, got {}",
            task.since
        ));
    }
    let mut constraints = BTreeSet::new();
    let mut filtered: u64 = 0;
    for c in &task.filtered {
        if c.constraint.trim().is_empty() || c.constraint.len() > MAX_TEXT {
            return Err(format!("constraint text must be 1 to {MAX_TEXT} bytes"));
        }
        if c.constraint.chars().any(char::is_control) {
            return Err("constraint text contains control characters".into());
        }
        if !constraints.insert(c.constraint.as_str()) {
            return Err(format!(
                "constraint {} appears twice",
                quoted(&c.constraint)
            ));
        }
        filtered = filtered.saturating_add(c.count);
    }
    let considered = task.considered;
    if task.fit > considered {
        return Err(format!(
            "fit ({}) is more than considered ({considered})",
            task.fit
        ));
    }
    if filtered > considered - task.fit {
        return Err(format!(
            "{filtered} filtered by constraints and {} fit, but only {considered} considered",
            task.fit
        ));
    }
    // A node short on a dimension neither fits nor was filtered out.
    let room = considered - task.fit - filtered;
    let short = task.short_on.unwrap_or_default();
    for (name, n) in [
        ("cpus", short.cpus),
        ("mem", short.mem),
        ("disk", short.disk),
        ("gpus", short.gpus),
        ("ports", short.ports),
    ] {
        if n > room {
            return Err(format!(
                "{n} short on {name}, but only {room} of {considered} considered neither fit nor were filtered"
            ));
        }
    }
    Ok(resources_to_proto(&resources))
}

/// One framework's published set.
#[derive(Debug, Clone)]
struct Published {
    /// When it was published, in ms since the Unix epoch.
    updated_at_ms: u64,
    /// The tasks in the order published, `since` filled in.
    tasks: Vec<pb::PendingTask>,
}

/// The pending work of every framework, held by the leader.
#[derive(Debug, Default)]
pub(crate) struct PendingWork {
    by_framework: BTreeMap<FrameworkId, Published>,
}

impl PendingWork {
    /// Replaces `framework`'s set with `tasks` (validated by [`validate`]);
    /// an empty list removes it. A task without `since` keeps the one it had
    /// in the previous set, or gets `now_ms`; a `since` later than `now_ms`
    /// becomes `now_ms`.
    pub(crate) fn replace(
        &mut self,
        framework: FrameworkId,
        mut tasks: Vec<pb::PendingTask>,
        now_ms: u64,
    ) {
        if tasks.is_empty() {
            self.by_framework.remove(&framework);
            return;
        }
        let now = ms_to_secs(now_ms);
        let before: HashMap<&str, f64> = self
            .by_framework
            .get(&framework)
            .map(|p| {
                p.tasks
                    .iter()
                    .map(|t| (t.task_id.as_str(), t.since))
                    .collect()
            })
            .unwrap_or_default();
        for t in &mut tasks {
            if t.since == 0.0 {
                t.since = before.get(t.task_id.as_str()).copied().unwrap_or(now);
            }
            t.since = t.since.min(now);
        }
        self.by_framework.insert(
            framework,
            Published {
                updated_at_ms: now_ms,
                tasks,
            },
        );
    }

    /// Forgets a framework's set (it was removed).
    pub(crate) fn remove(&mut self, framework: &FrameworkId) {
        self.by_framework.remove(framework);
    }

    /// Forgets everything (leadership lost).
    pub(crate) fn clear(&mut self) {
        self.by_framework.clear();
    }

    /// The number of pending tasks of `framework`.
    #[cfg(test)]
    pub(crate) fn count(&self, framework: &FrameworkId) -> usize {
        self.by_framework
            .get(framework)
            .map_or(0, |p| p.tasks.len())
    }

    /// Views of the pending tasks, of one framework or all, by framework id
    /// then in the order published. `framework_of` gives a framework's name
    /// and whether it is connected, or `None` for one no longer registered
    /// (its set is left out).
    pub(crate) fn views(
        &self,
        only: Option<&FrameworkId>,
        framework_of: impl Fn(&FrameworkId) -> Option<(String, bool)>,
    ) -> Vec<pb::PendingView> {
        let mut out = Vec::new();
        for (id, published) in &self.by_framework {
            if only.is_some_and(|o| o != id) {
                continue;
            }
            let Some((name, connected)) = framework_of(id) else {
                continue;
            };
            out.extend(published.tasks.iter().map(|t| pb::PendingView {
                framework_id: id.to_string(),
                framework_name: name.clone(),
                task: Some(t.clone()),
                updated_at: ms_to_secs(published.updated_at_ms),
                connected,
            }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str) -> pb::PendingTask {
        pb::PendingTask {
            task_id: id.into(),
            name: id.into(),
            resources: Some(pb::Resources {
                cpus: 0.5,
                mem: 4096.0,
                ..Default::default()
            }),
            reason: "no offer fits: 2 short on mem".into(),
            considered: 3,
            short_on: Some(pb::DimensionCounts {
                mem: 2,
                ..Default::default()
            }),
            filtered: vec![pb::ConstraintCount {
                constraint: "zone == z4".into(),
                count: 1,
            }],
            ..Default::default()
        }
    }

    fn refused(tasks: Vec<pb::PendingTask>, needle: &str) {
        let err = validate(tasks).unwrap_err();
        assert!(err.contains(needle), "{err:?} does not mention {needle:?}");
    }

    #[test]
    fn valid_lists_pass_normalized() {
        let mut t = entry("t1");
        t.resources.as_mut().unwrap().cpus = 0.1 + 0.2;
        let out = validate(vec![t, entry("t2")]).unwrap();
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].resources.as_ref().unwrap().cpus, 0.3);
        assert!(validate(Vec::new()).unwrap().is_empty());
    }

    #[test]
    fn bad_entries_are_named() {
        refused(vec![entry("ok"), entry("a/b")], "pending task 1 (\"a/b\")");
        refused(vec![entry("t"), entry("t")], "appears twice");
        let with = |f: fn(&mut pb::PendingTask)| {
            let mut t = entry("t");
            f(&mut t);
            vec![t]
        };
        refused(with(|t| t.name = "n".repeat(1025)), "name longer");
        refused(with(|t| t.reason = "r".repeat(4097)), "reason longer");
        refused(with(|t| t.reason = "a\nb".into()), "control characters");
        refused(
            with(|t| t.resources.as_mut().unwrap().mem = f64::NAN),
            "mem",
        );
        refused(with(|t| t.since = f64::INFINITY), "since");
        refused(with(|t| t.since = -1.0), "since");
        refused(with(|t| t.fit = 4), "fit (4) is more than considered (3)");
        refused(
            with(|t| t.filtered[0].count = 4),
            "4 filtered by constraints and 0 fit, but only 3 considered",
        );
        refused(
            with(|t| t.short_on.as_mut().unwrap().mem = 3),
            "3 short on mem, but only 2 of 3",
        );
        refused(
            with(|t| t.filtered.push(t.filtered[0].clone())),
            "constraint \"zone == z4\" appears twice",
        );
        refused(
            with(|t| t.filtered[0].constraint = " ".into()),
            "constraint text",
        );
        refused(
            (0..=MAX_PENDING).map(|i| entry(&format!("t{i}"))).collect(),
            "at most 10000",
        );
    }

    #[test]
    fn replace_keeps_since_per_task_and_drops_empty_sets() {
        let fw = FrameworkId::new("fw-1").unwrap();
        let mut work = PendingWork::default();
        work.replace(fw.clone(), vec![entry("a")], 10_000);
        let since = |w: &PendingWork| -> Vec<(String, f64)> {
            w.views(None, |_| Some(("n".into(), true)))
                .into_iter()
                .map(|v| {
                    let t = v.task.unwrap();
                    (t.task_id, t.since)
                })
                .collect()
        };
        assert_eq!(since(&work), [("a".into(), 10.0)]);
        // `a` keeps its time; `b` is new; a given time in the future is now.
        let mut future = entry("c");
        future.since = 1e12;
        work.replace(fw.clone(), vec![entry("a"), entry("b"), future], 20_000);
        assert_eq!(
            since(&work),
            [("a".into(), 10.0), ("b".into(), 20.0), ("c".into(), 20.0)]
        );
        assert_eq!(work.count(&fw), 3);
        // Unregistered frameworks are left out; one framework only.
        assert!(work.views(None, |_| None).is_empty());
        let other = FrameworkId::new("fw-2").unwrap();
        work.replace(other.clone(), vec![entry("x")], 30_000);
        assert_eq!(
            work.views(Some(&other), |_| Some((String::new(), false)))
                .len(),
            1
        );
        work.replace(fw.clone(), Vec::new(), 40_000);
        assert_eq!(work.count(&fw), 0);
        work.remove(&other);
        assert!(work.views(None, |_| Some((String::new(), true))).is_empty());
    }
}
