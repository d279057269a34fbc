//! Sandbox garbage collection, after Mesos's `--gc_delay`.
//!
//! A task's sandbox stays after the task ends: its output can still be read
//! (a framework collecting a log late, a user looking at a failure). The
//! agent removes a sandbox once the agent no longer knows its task (it
//! ended, its last update was acknowledged, so it was forgotten) and nothing
//! in it has changed for `AgentConfig::sandbox_gc_delay` (a week by
//! default). "Changed" is the newest modification time of the directory,
//! its `stdout`, its `stderr` and [`ENDED_MARKER`], which the agent writes
//! when it forgets a task, so a task that was quiet for long before it
//! ended still keeps its sandbox for the whole delay.
//!
//! The fuller the disk, the sooner, as Mesos's `--gc_disk_headroom`: each
//! sweep uses the delay scaled by `1 - headroom - usage` ([`effective_delay`],
//! `usage` the used fraction of the work dir's file system), but never
//! below [`MIN_EFFECTIVE_DELAY`] (or the configured delay, if shorter), so a
//! framework still collecting a just-ended task's log finds it.
//!
//! A sweep runs when the agent starts and then every [`sweep_interval`]. It
//! finds the sandboxes past the delay without the agent's lock; then, under
//! the lock, it moves each one whose task the agent still does not know
//! into `work_dir/sandboxes-gc/` (a rename, so a task launched under the
//! same id at that moment finds either its old sandbox, which it empties,
//! or none); then it deletes them there without the lock. Whatever a crash
//! leaves in `sandboxes-gc/` goes at the next sweep.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

/// File the agent writes into a sandbox when it forgets the sandbox's task.
pub(crate) const ENDED_MARKER: &str = ".berth-ended";
/// Directory (under the work dir) sandboxes are moved to before deletion.
pub(crate) const TRASH_DIR: &str = "sandboxes-gc";

/// The shortest delay a full disk brings a sweep down to (unless the
/// configured delay is shorter).
pub(crate) const MIN_EFFECTIVE_DELAY: Duration = Duration::from_secs(600);

/// The delay a sweep uses: `delay` scaled by `1 - headroom - usage` (as
/// Mesos does), at least [`MIN_EFFECTIVE_DELAY`] or `delay` if that is
/// shorter. `usage` is the used fraction of the disk (0 to 1).
#[must_use]
pub(crate) fn effective_delay(delay: Duration, headroom: f64, usage: f64) -> Duration {
    let factor = (1.0 - headroom - usage).clamp(0.0, 1.0);
    delay.mul_f64(factor).max(MIN_EFFECTIVE_DELAY.min(delay))
}

/// The used fraction (0 to 1) of the file system holding `dir`; `None` if
/// it cannot be read.
pub(crate) fn disk_usage(dir: &Path) -> Option<f64> {
    let st = nix::sys::statvfs::statvfs(dir).ok()?;
    #[allow(clippy::useless_conversion, clippy::cast_precision_loss)]
    // field types differ between platforms
    let (total, available) = (
        u64::from(st.blocks()) as f64,
        u64::from(st.blocks_available()) as f64,
    );
    (total > 0.0).then(|| (1.0 - available / total).clamp(0.0, 1.0))
}

/// How often sandboxes are swept for a given delay: a quarter of it,
/// between 100 ms and a minute.
#[must_use]
pub(crate) fn sweep_interval(delay: Duration) -> Duration {
    (delay / 4).clamp(Duration::from_millis(100), Duration::from_secs(60))
}

/// A sandbox past the delay.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Stale {
    pub(crate) framework_id: String,
    pub(crate) task_id: String,
    pub(crate) path: PathBuf,
}

/// The sandboxes under `root` (`root/<framework>/<task>/`) that have not
/// changed since `now - delay`. Entries that are not directories, or whose
/// names are not UTF-8 (the agent never makes such), are left alone.
pub(crate) fn stale_sandboxes(root: &Path, now: SystemTime, delay: Duration) -> Vec<Stale> {
    let Some(cutoff) = now.checked_sub(delay) else {
        return Vec::new();
    };
    let mut stale = Vec::new();
    for framework in dirs(root) {
        let Some(framework_id) = name(&framework) else {
            continue;
        };
        for sandbox in dirs(&framework) {
            let Some(task_id) = name(&sandbox) else {
                continue;
            };
            if last_change(&sandbox).is_some_and(|t| t <= cutoff) {
                stale.push(Stale {
                    framework_id: framework_id.clone(),
                    task_id,
                    path: sandbox,
                });
            }
        }
    }
    stale
}

/// The directories directly under `dir` (none if it cannot be read).
fn dirs(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .map(|e| e.path())
        .collect()
}

fn name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_owned)
}

/// The newest modification time of a sandbox: the directory, its output
/// files and the end marker. `None` if the directory itself cannot be read.
fn last_change(sandbox: &Path) -> Option<SystemTime> {
    let own = std::fs::metadata(sandbox).and_then(|m| m.modified()).ok()?;
    Some(
        ["stdout", "stderr", ENDED_MARKER]
            .iter()
            .filter_map(|f| {
                std::fs::metadata(sandbox.join(f))
                    .and_then(|m| m.modified())
                    .ok()
            })
            .fold(own, SystemTime::max),
    )
}

/// Deletes everything in `trash`; returns how many entries went. Failures
/// are logged and left for the next sweep.
pub(crate) fn empty_trash(trash: &Path) -> usize {
    let Ok(entries) = std::fs::read_dir(trash) else {
        return 0;
    };
    let mut removed = 0;
    for e in entries.flatten() {
        let path = e.path();
        let result = if e.file_type().is_ok_and(|t| t.is_dir()) {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        match result {
            Ok(()) => removed += 1,
            Err(err) => {
                tracing::warn!(path = %path.display(), error = %err, "cannot delete an old sandbox");
            }
        }
    }
    removed
}

/// Removes the framework directories under `root` that are empty.
pub(crate) fn remove_empty_frameworks(root: &Path) {
    for framework in dirs(root) {
        // Fails (and is meant to) when the directory is not empty.
        let _ = std::fs::remove_dir(&framework);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set_mtime(path: &Path, t: SystemTime) {
        std::fs::File::open(path).unwrap().set_modified(t).unwrap();
    }

    #[test]
    fn only_sandboxes_unchanged_for_the_delay_are_stale() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        let now = SystemTime::now();
        let day = Duration::from_secs(86_400);
        let week = 7 * day;
        let make = |fw: &str, task: &str, age: Duration| {
            let path = root.join(fw).join(task);
            std::fs::create_dir_all(&path).unwrap();
            std::fs::write(path.join("stdout"), "out").unwrap();
            std::fs::write(path.join("stderr"), "").unwrap();
            for f in ["stdout", "stderr"] {
                set_mtime(&path.join(f), now - age);
            }
            set_mtime(&path, now - age);
            path
        };
        make("fw-1", "old", week + day);
        make("fw-1", "young", day);
        // Old output, but it ended (was forgotten) recently.
        let ended = make("fw-2", "ended-lately", 3 * week);
        std::fs::write(ended.join(ENDED_MARKER), "").unwrap();
        set_mtime(&ended.join(ENDED_MARKER), now - day);
        set_mtime(&ended, now - 3 * week);
        // A recent write to its output keeps it.
        let busy = make("fw-2", "busy", 3 * week);
        set_mtime(&busy.join("stderr"), now - Duration::from_secs(60));
        // A file where a framework directory would be is ignored.
        std::fs::write(root.join("stray"), "").unwrap();

        let stale = stale_sandboxes(root, now, week);
        assert_eq!(
            stale,
            vec![Stale {
                framework_id: "fw-1".into(),
                task_id: "old".into(),
                path: root.join("fw-1/old"),
            }]
        );
        // With a shorter delay the others come in, the recent write not.
        let mut names: Vec<String> = stale_sandboxes(root, now, Duration::from_secs(3600))
            .into_iter()
            .map(|s| s.task_id)
            .collect();
        names.sort();
        assert_eq!(names, ["ended-lately", "old", "young"]);
        // A missing root has nothing.
        assert!(stale_sandboxes(&root.join("missing"), now, week).is_empty());
    }

    #[test]
    fn the_trash_is_emptied_and_empty_frameworks_go() {
        let dir = tempfile::tempdir().unwrap();
        let trash = dir.path().join(TRASH_DIR);
        std::fs::create_dir_all(trash.join("a/deep/tree")).unwrap();
        std::fs::write(trash.join("a/deep/tree/file"), "x").unwrap();
        std::fs::write(trash.join("b"), "x").unwrap();
        assert_eq!(empty_trash(&trash), 2);
        assert_eq!(std::fs::read_dir(&trash).unwrap().count(), 0);
        assert_eq!(empty_trash(&dir.path().join("none")), 0);

        let root = dir.path().join("sandboxes");
        std::fs::create_dir_all(root.join("empty")).unwrap();
        std::fs::create_dir_all(root.join("full/task")).unwrap();
        remove_empty_frameworks(&root);
        assert!(!root.join("empty").exists());
        assert!(root.join("full/task").exists());
    }

    #[test]
    fn a_fuller_disk_shortens_the_delay_down_to_a_floor() {
        let week = Duration::from_secs(604_800);
        // Mesos's example: 10% headroom, disk half full: 40% of the delay.
        assert_eq!(effective_delay(week, 0.1, 0.5), week.mul_f64(0.4));
        assert_eq!(effective_delay(week, 0.0, 0.0), week);
        // Past the headroom: the floor, not zero.
        assert_eq!(effective_delay(week, 0.1, 0.95), MIN_EFFECTIVE_DELAY);
        // A configured delay under the floor stays as it is.
        let second = Duration::from_secs(1);
        assert_eq!(effective_delay(second, 0.1, 0.95), second);
        let usage = disk_usage(Path::new("/")).unwrap();
        assert!((0.0..=1.0).contains(&usage), "{usage}");
        assert_eq!(disk_usage(Path::new("/no/such/dir")), None);
    }

    #[test]
    fn sweeps_are_a_quarter_of_the_delay_within_bounds() {
        assert_eq!(
            sweep_interval(Duration::from_secs(1)),
            Duration::from_millis(250)
        );
        assert_eq!(
            sweep_interval(Duration::from_millis(10)),
            Duration::from_millis(100)
        );
        assert_eq!(
            sweep_interval(Duration::from_secs(604_800)),
            Duration::from_secs(60)
        );
    }
}
