//! Bare mirrors of remote repositories in `<data_dir>/repos/<id>.git`,
//! cloned and fetched through [`crate::exec::git`]: killed after
//! [`ReposConfig::fetch_timeout`](super::ReposConfig::fetch_timeout),
//! never prompting, and with errors that do not show the URL's
//! credentials.

use std::path::{Path, PathBuf};

use super::record::mirror_path;
use super::{RepoError, RepoRecord, Repos, redact};
use crate::exec::git::{Git, GitCommand, GitError};

impl Repos {
    /// git as the repository service runs it: bounded by the fetch
    /// timeout.
    fn git(&self) -> Git {
        Git::new(self.inner.config.fetch_timeout)
    }

    /// Clones `url` as a bare mirror into `dest`.
    pub(super) async fn clone_mirror(&self, url: &str, dest: &Path) -> Result<(), GitError> {
        let dest = dest.to_string_lossy().into_owned();
        let clone = GitCommand::new(["clone", "--mirror", "--quiet", "--", url, &dest]).hiding(url);
        self.git().run(&clone).await.map(drop)
    }

    /// Where repository `id`'s commits are read, brought up to date: its
    /// mirror fetched (a remote), or its local path.
    ///
    /// The record is read under the repository's lock: a removal that
    /// went first leaves none (its mirror must not be cloned again), and a
    /// removal that comes later waits for this fetch.
    pub(super) async fn current_dir(&self, id: u64) -> Result<PathBuf, RepoError> {
        let lock = self.lock(id);
        let _held = lock.lock().await;
        let rec = self.record(id).await?.ok_or(RepoError::NoSuchRepo(id))?;
        if rec.remote {
            self.sync_mirror(&rec).await
        } else {
            Ok(rec.git_dir(&self.inner.repos_dir))
        }
    }

    /// Brings the mirror up to date (cloning it again if it is missing);
    /// returns its path.
    pub(super) async fn sync_mirror(&self, rec: &RepoRecord) -> Result<PathBuf, RepoError> {
        let mirror = mirror_path(&self.inner.repos_dir, rec.id);
        let result = if mirror.join("HEAD").is_file() {
            let fetch = GitCommand::new(["fetch", "--prune", "--quiet", "origin"])
                .in_dir(&mirror)
                .hiding(&rec.url);
            self.git()
                .run(&fetch)
                .await
                .map(drop)
                .map_err(|e| e.to_string())
        } else {
            let tmp = self
                .inner
                .repos_dir
                .join(format!(".new-{}.git", uuid::Uuid::new_v4().simple()));
            let cloned = self.clone_mirror(&rec.url, &tmp).await;
            let moved = match cloned {
                Ok(()) => {
                    let _ = tokio::fs::remove_dir_all(&mirror).await;
                    tokio::fs::rename(&tmp, &mirror)
                        .await
                        .map_err(|e| format!("cannot move the clone into place: {e}"))
                }
                Err(e) => Err(e.to_string()),
            };
            if moved.is_err() {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
            }
            moved
        };
        result.map_err(|e| RepoError::Fetch(format!("cannot fetch {}: {e}", redact(&rec.url))))?;
        Ok(mirror)
    }
}
