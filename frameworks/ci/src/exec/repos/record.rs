//! The stored record of a registered repository (the CI state file's
//! `repos` table) and its view in the API: watched branches, the last sha
//! seen per branch, and the recent triggers.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// How many triggers a repository remembers (the oldest are forgotten).
pub const KEPT_RUNS: usize = 500;

/// One trigger of a repository: a commit of a branch and its pipeline (or
/// why it has none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRun {
    /// The branch.
    pub branch: String,
    /// The commit.
    pub sha: String,
    /// `push` (a poll or a webhook).
    pub source: String,
    /// The pipeline, when one was created.
    pub pipeline: Option<u64>,
    /// Why no pipeline was created.
    pub error: Option<String>,
    /// When (ms since the epoch).
    pub at_ms: u64,
}

/// A registered repository as stored.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoRecord {
    /// Its id.
    pub id: u64,
    /// The local path or URL, as given.
    pub url: String,
    /// A URL fetched into a mirror (not a local path).
    pub remote: bool,
    /// The project's name (`CI_PROJECT_NAME`).
    pub project: String,
    /// Its default branch when it was added (`CI_DEFAULT_BRANCH`).
    pub default_branch: String,
    /// The branches watched.
    pub branches: Vec<String>,
    /// Seconds between polls.
    pub poll_interval_secs: u64,
    /// SHA-256 (hex) of the webhook secret; no webhooks without one.
    pub webhook_secret_sha256: Option<String>,
    /// The last sha seen (and triggered) per branch.
    #[serde(default)]
    pub heads: BTreeMap<String, String>,
    /// The recent triggers, oldest first (at most [`KEPT_RUNS`]).
    #[serde(default)]
    pub runs: Vec<RepoRun>,
    /// The last poll's error, until a poll succeeds.
    #[serde(default)]
    pub last_error: Option<String>,
    /// When it was added (ms since the epoch).
    pub created_ms: u64,
}

impl RepoRecord {
    /// The trigger of `sha` on `branch`, if there was one.
    pub fn run(&self, branch: &str, sha: &str) -> Option<&RepoRun> {
        self.runs
            .iter()
            .rev()
            .find(|r| r.branch == branch && r.sha == sha)
    }

    /// Remembers a trigger: it becomes the branch's last seen sha.
    pub fn remember(&mut self, run: RepoRun) {
        self.heads.insert(run.branch.clone(), run.sha.clone());
        self.runs.push(run);
        if self.runs.len() > KEPT_RUNS {
            let extra = self.runs.len() - KEPT_RUNS;
            self.runs.drain(..extra);
        }
    }

    /// Where its commits are read: the local path, or the mirror.
    pub fn git_dir(&self, repos_dir: &Path) -> PathBuf {
        if self.remote {
            mirror_path(repos_dir, self.id)
        } else {
            PathBuf::from(&self.url)
        }
    }
}

pub(super) fn mirror_path(repos_dir: &Path, id: u64) -> PathBuf {
    repos_dir.join(format!("{id}.git"))
}

/// A registered repository as the API shows it (without its secret, and
/// without a password or token in its URL).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RepoView {
    /// Its id.
    pub id: u64,
    /// The local path or URL (a password or token in it replaced by
    /// `***`, see [`redact`]).
    pub url: String,
    /// Fetched into a mirror.
    pub remote: bool,
    /// The project's name.
    pub project: String,
    /// Its default branch.
    pub default_branch: String,
    /// The branches watched.
    pub branches: Vec<String>,
    /// Seconds between polls.
    pub poll_interval_secs: u64,
    /// It takes webhooks (it has a secret).
    pub webhook: bool,
    /// The last sha seen per branch.
    pub heads: BTreeMap<String, String>,
    /// The newest pipeline it triggered.
    pub last_pipeline: Option<u64>,
    /// The last poll's error, until a poll succeeds.
    pub last_error: Option<String>,
    /// Polls since the framework started.
    pub polls: u64,
    /// When it was last polled (ms since the epoch), since the framework
    /// started.
    pub last_polled_ms: Option<u64>,
    /// The newest triggers, newest first (at most 20).
    pub runs: Vec<RepoRun>,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(branch: &str, sha: &str, pipeline: u64) -> RepoRun {
        RepoRun {
            branch: branch.into(),
            sha: sha.into(),
            source: "push".into(),
            pipeline: Some(pipeline),
            error: None,
            at_ms: 0,
        }
    }

    #[test]
    fn records_remember_runs_per_branch_and_forget_the_oldest() {
        let mut rec = RepoRecord {
            id: 1,
            url: "/srv/p".into(),
            remote: false,
            project: "p".into(),
            default_branch: "main".into(),
            branches: vec!["main".into(), "dev".into()],
            poll_interval_secs: 60,
            webhook_secret_sha256: None,
            heads: BTreeMap::new(),
            runs: Vec::new(),
            last_error: None,
            created_ms: 0,
        };
        rec.remember(run("main", "a", 1));
        rec.remember(run("dev", "a", 2));
        assert_eq!(rec.run("main", "a").and_then(|r| r.pipeline), Some(1));
        assert_eq!(rec.run("dev", "a").and_then(|r| r.pipeline), Some(2));
        assert_eq!(rec.run("main", "b"), None);
        assert_eq!(rec.heads["main"], "a");
        for i in 0..KEPT_RUNS {
            rec.remember(run("main", &format!("s{i}"), 10 + i as u64));
        }
        assert_eq!(rec.runs.len(), KEPT_RUNS);
        assert_eq!(rec.run("main", "a"), None, "the oldest is forgotten");
        assert_eq!(rec.heads["main"], format!("s{}", KEPT_RUNS - 1));
        // An older record (without the later fields) still reads.
        let old = serde_json::json!({
            "id": 1, "url": "/srv/p", "remote": false, "project": "p",
            "default_branch": "main", "branches": ["main"], "poll_interval_secs": 5,
            "webhook_secret_sha256": null, "created_ms": 0
        });
        let rec: RepoRecord = serde_json::from_value(old).unwrap();
        assert!(rec.runs.is_empty() && rec.heads.is_empty());
    }
}
