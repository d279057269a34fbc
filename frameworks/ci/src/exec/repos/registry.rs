//! Adding and removing registered repositories: an add is checked
//! ([`super::validate`]), a remote cloned to a mirror of its own and read,
//! and only then stored; a removal deletes the mirror.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use tracing::{info, warn};

use super::record::mirror_path;
use super::validate::{Checked, check_new, project_of_url};
use super::{NewRepo, RepoError, RepoRecord, RepoView, Repos, blocking, now_ms, redact};
use crate::exec::source::{self, SourceError};

impl Repos {
    /// Registers a repository after checking it (readable, branches
    /// exist, interval and secret in range); polls it at once. Bad input
    /// stores nothing.
    pub async fn add(&self, new: NewRepo) -> Result<RepoView, RepoError> {
        let checked = check_new(&new)?;
        // One add at a time, so that the same repository is not added twice.
        let _adding = self.inner.adding.lock().await;
        for rec in self.records().await? {
            if same_repository(&rec, &checked) {
                return Err(RepoError::Duplicate {
                    url: redact(&new.url),
                    id: rec.id,
                });
            }
        }
        // A remote is cloned first, to a name of its own, and moved to
        // `<id>.git` once its record is stored.
        let clone = if checked.remote {
            let tmp = self
                .inner
                .repos_dir
                .join(format!(".new-{}.git", uuid::Uuid::new_v4().simple()));
            if let Err(e) = self.clone_mirror(&checked.url, &tmp).await {
                let _ = tokio::fs::remove_dir_all(&tmp).await;
                return Err(RepoError::Invalid(format!(
                    "cannot read {}: {e}",
                    redact(&checked.url)
                )));
            }
            Some(tmp)
        } else {
            None
        };
        let dir = clone.clone().unwrap_or_else(|| PathBuf::from(&checked.url));
        let url = checked.url.clone();
        let branches = checked.branches.clone();
        let examined = blocking(move || examine(&dir, &url, branches)).await;
        let (default_branch, branches, local_project) = match examined {
            Ok(found) => found,
            Err(e) => {
                if let Some(tmp) = &clone {
                    let _ = tokio::fs::remove_dir_all(tmp).await;
                }
                return Err(e);
            }
        };
        let project = if checked.remote {
            project_of_url(&checked.url)
        } else {
            local_project
        };
        let store = self.inner.store.clone();
        let record = {
            let checked = checked.clone();
            move |id| RepoRecord {
                id,
                url: checked.url,
                remote: checked.remote,
                project,
                default_branch,
                branches,
                poll_interval_secs: checked.poll_interval_secs,
                webhook_secret_sha256: checked.secret_sha256,
                heads: BTreeMap::new(),
                runs: Vec::new(),
                last_error: None,
                created_ms: now_ms(),
            }
        };
        let stored = blocking(move || Ok(store.create_repo(record)?)).await;
        let id = match stored {
            Ok(id) => id,
            Err(e) => {
                if let Some(tmp) = &clone {
                    let _ = tokio::fs::remove_dir_all(tmp).await;
                }
                return Err(e);
            }
        };
        if let Some(tmp) = clone {
            let dest = mirror_path(&self.inner.repos_dir, id);
            let _ = tokio::fs::remove_dir_all(&dest).await;
            if let Err(e) = tokio::fs::rename(&tmp, &dest).await {
                // The first poll clones it again.
                warn!(repo = id, "cannot move the clone into place: {e}");
                let _ = tokio::fs::remove_dir_all(&tmp).await;
            }
        }
        info!(repo = id, url = %redact(&checked.url), "repository registered");
        self.inner.wake.notify_one();
        self.get(id).await
    }

    /// Unregisters a repository (its pipelines stay) and deletes its
    /// mirror.
    pub async fn remove(&self, id: u64) -> Result<RepoView, RepoError> {
        let lock = self.lock(id);
        let _held = lock.lock().await;
        let rec = self.record(id).await?.ok_or(RepoError::NoSuchRepo(id))?;
        let store = self.inner.store.clone();
        blocking(move || Ok(store.remove_repo(id)?)).await?;
        if rec.remote {
            let mirror = mirror_path(&self.inner.repos_dir, id);
            if let Err(e) = tokio::fs::remove_dir_all(&mirror).await
                && e.kind() != std::io::ErrorKind::NotFound
            {
                warn!(
                    repo = id,
                    "cannot delete the mirror {}: {e}",
                    mirror.display()
                );
            }
        }
        let view = self.view(&rec);
        self.status().remove(&id);
        self.locks().remove(&id);
        info!(repo = id, "repository removed");
        self.inner.wake.notify_one();
        Ok(view)
    }
}

/// Reads a new repository at `dir` (the path, or the fresh clone): its
/// default branch, the branches to watch (checked to exist), and its
/// project name.
fn examine(
    dir: &Path,
    url: &str,
    branches: Vec<String>,
) -> Result<(String, Vec<String>, String), RepoError> {
    let name = redact(url);
    if !dir.is_dir() {
        return Err(RepoError::Invalid(format!(
            "{name} is not a directory on the CI framework's machine"
        )));
    }
    let unreadable = |e: SourceError| match e {
        SourceError::NotARepository(_) => {
            RepoError::Invalid(format!("{name} is not a git repository"))
        }
        e => RepoError::Invalid(format!("cannot read {name}: {e}")),
    };
    let default_branch = source::default_branch_of(dir).map_err(unreadable)?;
    let branches = if branches.is_empty() {
        match &default_branch {
            Some(b) => vec![b.clone()],
            None => {
                return Err(RepoError::Invalid(format!(
                    "{name} has no default branch with a commit; name the branches to watch"
                )));
            }
        }
    } else {
        branches
    };
    for b in &branches {
        if source::branch_head(dir, b).map_err(unreadable)?.is_none() {
            return Err(RepoError::Invalid(format!(
                "branch {b:?} does not exist in {name}"
            )));
        }
    }
    let default_branch = default_branch.unwrap_or_else(|| branches[0].clone());
    let project = match source::resolve(dir, Some(&format!("refs/heads/{}", branches[0])), false) {
        Ok(rev) => rev.project_name,
        Err(e) => return Err(unreadable(e)),
    };
    Ok((default_branch, branches, project))
}

/// Whether a registered repository is the one being added.
fn same_repository(rec: &RepoRecord, new: &Checked) -> bool {
    if rec.remote != new.remote {
        return false;
    }
    if rec.remote {
        return rec.url.trim_end_matches('/') == new.url.trim_end_matches('/');
    }
    match (
        std::fs::canonicalize(&rec.url),
        std::fs::canonicalize(&new.url),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => rec.url == new.url,
    }
}
