//! Where a task's sandbox lives, and the garbage collection of the
//! sandboxes of forgotten tasks (the rules are in [`crate::gc`]).

use super::*;

impl Agent {
    /// The sandbox of a task.
    pub(crate) fn sandbox_path(&self, framework_id: &str, task_id: &str) -> PathBuf {
        self.config
            .work_dir
            .join("sandboxes")
            .join(framework_id)
            .join(task_id)
    }

    /// One sandbox garbage-collection sweep (see [`crate::gc`]); returns
    /// how many sandboxes it deleted. Blocking: file system work.
    pub(crate) fn collect_garbage(&self, now: std::time::SystemTime) -> usize {
        let root = self.config.work_dir.join("sandboxes");
        let trash = self.config.work_dir.join(crate::gc::TRASH_DIR);
        let usage = crate::gc::disk_usage(&self.config.work_dir).unwrap_or(0.0);
        let delay = crate::gc::effective_delay(
            self.config.sandbox_gc_delay,
            self.config.sandbox_gc_disk_headroom,
            usage,
        );
        let stale = crate::gc::stale_sandboxes(&root, now, delay);
        if !stale.is_empty() {
            if let Err(e) = std::fs::create_dir_all(&trash) {
                tracing::warn!(error = %e, "cannot create the sandbox trash directory");
                return 0;
            }
            let core = self.lock();
            for s in stale {
                if core
                    .tasks
                    .contains_key(&(s.framework_id.clone(), s.task_id.clone()))
                {
                    continue;
                }
                let to = trash.join(format!("{}-{}", uuid::Uuid::new_v4(), s.task_id));
                if let Err(e) = std::fs::rename(&s.path, &to) {
                    tracing::warn!(path = %s.path.display(), error = %e, "cannot move an old sandbox away");
                }
            }
        }
        let removed = crate::gc::empty_trash(&trash);
        crate::gc::remove_empty_frameworks(&root);
        if removed > 0 {
            tracing::info!(removed, "deleted old sandboxes");
        }
        removed
    }
}
