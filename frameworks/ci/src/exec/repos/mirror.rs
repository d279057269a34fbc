//! Bare mirrors of remote repositories in `<data_dir>/repos/<id>.git`,
//! cloned and fetched with a timeout, never prompting.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::record::mirror_path;
use super::{RepoError, RepoRecord, Repos, redact, redact_message};

impl Repos {
    pub(super) async fn clone_mirror(&self, url: &str, dest: &Path) -> Result<(), String> {
        let dest = dest.to_string_lossy().into_owned();
        run_git(
            &["clone", "--mirror", "--quiet", "--", url, &dest],
            url,
            self.inner.config.fetch_timeout,
        )
        .await
    }

    /// Brings the mirror up to date (cloning it again if it is missing);
    /// returns its path.
    pub(super) async fn sync_mirror(&self, rec: &RepoRecord) -> Result<PathBuf, RepoError> {
        let mirror = mirror_path(&self.inner.repos_dir, rec.id);
        let timeout = self.inner.config.fetch_timeout;
        let result = if mirror.join("HEAD").is_file() {
            let dir = mirror.to_string_lossy().into_owned();
            run_git(
                &["-C", &dir, "fetch", "--prune", "--quiet", "origin"],
                &rec.url,
                timeout,
            )
            .await
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
                Err(e) => Err(e),
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

/// Runs `git` with `args`, bounded by `timeout`, never prompting; on
/// failure returns git's message (with `url`'s secrets hidden, see
/// [`redact_message`]).
async fn run_git(args: &[&str], url: &str, timeout: Duration) -> Result<(), String> {
    let mut command = tokio::process::Command::new("git");
    command
        .args(args)
        .env("GIT_TERMINAL_PROMPT", "0")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .kill_on_drop(true);
    if std::env::var_os("GIT_SSH_COMMAND").is_none() {
        command.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
    }
    let child = command
        .spawn()
        .map_err(|e| format!("cannot run git ({e}); is git installed?"))?;
    let out = match tokio::time::timeout(timeout, child.wait_with_output()).await {
        Err(_) => return Err(format!("git timed out after {} s", timeout.as_secs())),
        Ok(Err(e)) => return Err(format!("git failed: {e}")),
        Ok(Ok(out)) => out,
    };
    if out.status.success() {
        return Ok(());
    }
    let stderr = redact_message(String::from_utf8_lossy(&out.stderr).trim(), url);
    Err(if stderr.is_empty() {
        format!("git exited with {}", out.status)
    } else {
        stderr
    })
}
