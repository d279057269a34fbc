//! Registered repositories: the CI framework watches their branches and
//! runs a pipeline (source `push`) for every new commit it sees at a
//! branch's head, found by polling at the repository's interval or
//! announced by a webhook.
//!
//! - A repository is a local path on the framework's machine (read in
//!   place) or any URL `git` can fetch (`file://`, `http(s)://`, `ssh://`,
//!   `git://`, `user@host:path`), kept as a bare mirror in
//!   `<data_dir>/repos/<id>.git` and fetched with a timeout.
//! - Its record (in the CI state file, table `repos`) holds the watched
//!   branches, the poll interval, the SHA-256 of its webhook secret (the
//!   secret itself is neither stored nor shown), the last sha seen per
//!   branch and the recent triggers (branch, sha → pipeline or why there
//!   was none).
//! - A trigger is remembered in the same transaction that creates its
//!   pipeline ([`super::store::RepoUpdate`]), so a commit is run once per
//!   branch: never again by a later poll, a repeated webhook or a restart of
//!   the framework. A commit whose pipeline cannot be created (no or a
//!   broken `.gitlab-ci.yml`, `workflow:rules` say no) is remembered with
//!   the reason and not tried again; a failure that may pass (the runner
//!   stopped, the fetch failed) is retried at the next poll.
//! - Adding a repository polls it at once: its branches' current heads get
//!   a pipeline each, as GitLab runs one for the push that creates a
//!   project.
//!
//! Every function that runs `git` blocks or is bounded by
//! [`ReposConfig::fetch_timeout`]; the async ones call the blocking ones
//! through `spawn_blocking`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use super::runner::{RunError, RunnerHandle, Submission};
use super::source::{self, SourceError};
use super::store::{RepoUpdate, Store, StoreError};
use crate::{PipelineSource, SecretVariable};

/// The poll interval of a repository added without one.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest poll interval.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The longest poll interval.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The shortest webhook secret.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest webhook secret.
pub const MAX_SECRET_LEN: usize = 256;
/// The most branches one repository may watch.
pub const MAX_BRANCHES: usize = 100;
/// The longest repository URL or path.
pub const MAX_URL_LEN: usize = 4096;
/// How many triggers a repository remembers (the oldest are forgotten).
pub const KEPT_RUNS: usize = 500;

/// The URL schemes a remote repository may have.
const SCHEMES: [&str; 5] = ["file", "http", "https", "ssh", "git"];

/// What went wrong with a registered repository.
#[derive(Debug, thiserror::Error)]
pub enum RepoError {
    /// Bad input (an add, a webhook's body); nothing was changed.
    #[error("{0}")]
    Invalid(String),
    /// The same repository is registered already.
    #[error("{url} is already registered as repository {id}")]
    Duplicate {
        /// The repository as given.
        url: String,
        /// The registered one.
        id: u64,
    },
    /// No such repository.
    #[error("no repository {0}")]
    NoSuchRepo(u64),
    /// A webhook without the repository's secret.
    #[error("{0}")]
    Unauthorized(String),
    /// A webhook for a repository that has no secret.
    #[error(
        "repository {0} has no webhook secret, so it takes no webhooks (add it again with a secret)"
    )]
    NoSecret(u64),
    /// The commit's pipeline cannot be created, and will not be tried
    /// again: the reason is remembered.
    #[error("no pipeline for {branch} at {sha}: {reason}")]
    NoPipeline {
        /// The branch.
        branch: String,
        /// The commit.
        sha: String,
        /// Why.
        reason: String,
    },
    /// Fetching a remote repository failed.
    #[error("{0}")]
    Fetch(String),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the repository failed.
    #[error(transparent)]
    Source(#[from] SourceError),
    /// The runner refused or stopped.
    #[error(transparent)]
    Run(#[from] RunError),
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

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

fn mirror_path(repos_dir: &Path, id: u64) -> PathBuf {
    repos_dir.join(format!("{id}.git"))
}

/// `POST /ci/v1/repos`: a repository to register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRepo {
    /// An absolute path on the framework's machine, or a URL `git` fetches.
    pub url: String,
    /// The branches to watch; the repository's default branch when empty.
    #[serde(default)]
    pub branches: Vec<String>,
    /// Seconds between polls (default 60, 1 to 86400).
    #[serde(default)]
    pub poll_interval_secs: Option<u64>,
    /// The webhook secret (16 to 256 printable ASCII characters); without
    /// one the repository takes no webhooks.
    #[serde(default)]
    pub webhook_secret: Option<String>,
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

/// What a webhook did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HookOutcome {
    /// A new pipeline.
    Created(u64),
    /// The commit had been run already: its pipeline.
    Existing(u64),
    /// Nothing to do, and why.
    Ignored(String),
}

/// How the repository service runs.
#[derive(Debug, Clone)]
pub struct ReposConfig {
    /// The longest a `git clone` or `git fetch` of a remote may take.
    pub fetch_timeout: Duration,
}

impl Default for ReposConfig {
    fn default() -> ReposConfig {
        ReposConfig {
            fetch_timeout: Duration::from_secs(120),
        }
    }
}

#[derive(Debug, Default, Clone, Copy)]
struct PollStatus {
    polls: u64,
    last_polled_ms: Option<u64>,
}

struct Inner {
    runner: RunnerHandle,
    store: Arc<Store>,
    repos_dir: PathBuf,
    config: ReposConfig,
    /// One lock per repository: its fetches and triggers take turns.
    locks: Mutex<HashMap<u64, Arc<tokio::sync::Mutex<()>>>>,
    status: Mutex<HashMap<u64, PollStatus>>,
    wake: tokio::sync::Notify,
    adding: tokio::sync::Mutex<()>,
}

/// The registered repositories: add, list, remove, webhooks, and the
/// background poller (see [`start`]).
#[derive(Clone)]
pub struct Repos {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Repos {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Repos")
            .field("repos_dir", &self.inner.repos_dir)
            .finish_non_exhaustive()
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Starts the repository service of a running CI framework: its poller
/// runs until `stop` resolves.
pub async fn start(
    runner: RunnerHandle,
    config: ReposConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(Repos, tokio::task::JoinHandle<()>), RepoError> {
    let repos_dir = runner.data_dir().join("repos");
    std::fs::create_dir_all(&repos_dir)
        .map_err(|e| RepoError::Other(format!("{}: {e}", repos_dir.display())))?;
    // Clones of adds that never finished.
    if let Ok(entries) = std::fs::read_dir(&repos_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(".new-") {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
    let repos = Repos {
        inner: Arc::new(Inner {
            store: runner.store(),
            runner,
            repos_dir,
            config,
            locks: Mutex::new(HashMap::new()),
            status: Mutex::new(HashMap::new()),
            wake: tokio::sync::Notify::new(),
            adding: tokio::sync::Mutex::new(()),
        }),
    };
    let poller = repos.clone();
    let join = tokio::spawn(async move { poller.poll_loop(stop).await });
    Ok((repos, join))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, RepoError> + Send + 'static,
) -> Result<T, RepoError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| RepoError::Other(e.to_string()))?
}

impl Repos {
    /// The map of per-repository locks. A panic while it was held cannot
    /// have left it inconsistent (one insert or remove), so a poisoned map
    /// is used as it is: a fresh lock instead would let two callers of the
    /// same repository through at once, and a commit run twice.
    fn locks(&self) -> MutexGuard<'_, HashMap<u64, Arc<tokio::sync::Mutex<()>>>> {
        self.inner
            .locks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// The poll counters (poisoning ignored as for [`Repos::locks`]).
    fn status(&self) -> MutexGuard<'_, HashMap<u64, PollStatus>> {
        self.inner
            .status
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Repository `id`'s lock: its fetches, triggers and removal take
    /// turns.
    fn lock(&self, id: u64) -> Arc<tokio::sync::Mutex<()>> {
        self.locks().entry(id).or_default().clone()
    }

    async fn record(&self, id: u64) -> Result<Option<RepoRecord>, RepoError> {
        let store = self.inner.store.clone();
        blocking(move || Ok(store.repo::<RepoRecord>(id)?)).await
    }

    async fn records(&self) -> Result<Vec<RepoRecord>, RepoError> {
        let store = self.inner.store.clone();
        blocking(move || {
            Ok(store
                .repos::<RepoRecord>()?
                .into_iter()
                .map(|(_, r)| r)
                .collect())
        })
        .await
    }

    async fn update(
        &self,
        id: u64,
        change: impl FnOnce(&mut RepoRecord) + Send + 'static,
    ) -> Result<(), RepoError> {
        let store = self.inner.store.clone();
        blocking(move || {
            store.update_repo::<RepoRecord, ()>(id, change)?;
            Ok(())
        })
        .await
    }

    fn view(&self, rec: &RepoRecord) -> RepoView {
        let status = self.status().get(&rec.id).copied().unwrap_or_default();
        RepoView {
            id: rec.id,
            url: redact(&rec.url),
            remote: rec.remote,
            project: rec.project.clone(),
            default_branch: rec.default_branch.clone(),
            branches: rec.branches.clone(),
            poll_interval_secs: rec.poll_interval_secs,
            webhook: rec.webhook_secret_sha256.is_some(),
            heads: rec.heads.clone(),
            last_pipeline: rec.runs.iter().rev().find_map(|r| r.pipeline),
            last_error: rec.last_error.clone(),
            polls: status.polls,
            last_polled_ms: status.last_polled_ms,
            runs: rec.runs.iter().rev().take(20).cloned().collect(),
        }
    }

    /// Every registered repository, oldest first.
    pub async fn list(&self) -> Result<Vec<RepoView>, RepoError> {
        Ok(self.records().await?.iter().map(|r| self.view(r)).collect())
    }

    /// One registered repository.
    pub async fn get(&self, id: u64) -> Result<RepoView, RepoError> {
        let rec = self.record(id).await?.ok_or(RepoError::NoSuchRepo(id))?;
        Ok(self.view(&rec))
    }

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

    /// A webhook: `token` is the `X-Berth-Token` (or `X-Gitlab-Token`)
    /// header, `body` the JSON push event.
    pub async fn hook(
        &self,
        id: u64,
        token: Option<&str>,
        body: &[u8],
    ) -> Result<HookOutcome, RepoError> {
        let rec = self.record(id).await?.ok_or(RepoError::NoSuchRepo(id))?;
        let expected = rec
            .webhook_secret_sha256
            .as_deref()
            .ok_or(RepoError::NoSecret(id))?;
        let Some(token) = token else {
            return Err(RepoError::Unauthorized(
                "no X-Berth-Token (or X-Gitlab-Token) header".into(),
            ));
        };
        if !secret_matches(token, expected) {
            return Err(RepoError::Unauthorized("wrong webhook token".into()));
        }
        let push = match parse_hook(body)? {
            Hook::Ignored(why) => return Ok(HookOutcome::Ignored(why)),
            Hook::Push(push) => push,
        };
        if !rec.branches.contains(&push.branch) {
            return Ok(HookOutcome::Ignored(format!(
                "branch {:?} is not watched (watched: {})",
                push.branch,
                rec.branches.join(", ")
            )));
        }
        if let Some(run) = rec.run(&push.branch, &push.sha) {
            return existing(run);
        }
        let dir = {
            // The record again, under the lock: a removal that went first
            // (after the read above) leaves none, and its mirror must not
            // be cloned again; a removal that comes later waits for this
            // fetch.
            let lock = self.lock(id);
            let _held = lock.lock().await;
            let rec = self.record(id).await?.ok_or(RepoError::NoSuchRepo(id))?;
            if rec.remote {
                self.sync_mirror(&rec).await?
            } else {
                rec.git_dir(&self.inner.repos_dir)
            }
        };
        let (sha, branch) = (push.sha.clone(), push.branch.clone());
        let on_branch = blocking(move || Ok(source::on_branch(&dir, &sha, &branch)?)).await?;
        if !on_branch {
            return Err(RepoError::Invalid(format!(
                "commit {} is not on branch {:?} of repository {id}",
                push.sha, push.branch
            )));
        }
        match self
            .trigger(id, &push.branch, &push.sha, push.before.as_deref())
            .await?
        {
            Triggered::Created(pipeline) => Ok(HookOutcome::Created(pipeline)),
            Triggered::Existing(run) => existing(&run),
        }
    }

    /// Runs the pipeline of `sha` on `branch` unless that was done before
    /// (then returns what happened then).
    async fn trigger(
        &self,
        id: u64,
        branch: &str,
        sha: &str,
        before: Option<&str>,
    ) -> Result<Triggered, RepoError> {
        let lock = self.lock(id);
        let _held = lock.lock().await;
        let rec = self.record(id).await?.ok_or(RepoError::NoSuchRepo(id))?;
        if let Some(run) = rec.run(branch, sha) {
            return Ok(Triggered::Existing(run.clone()));
        }
        let before = before
            .map(str::to_string)
            .or_else(|| rec.heads.get(branch).cloned())
            .unwrap_or_else(|| "0".repeat(40));
        let dir = rec.git_dir(&self.inner.repos_dir);
        let prepared = {
            let (rec, sha, branch) = (rec.clone(), sha.to_string(), branch.to_string());
            blocking(move || {
                let mut revision = source::resolve(&dir, Some(&sha), false)?;
                revision.ref_name = branch;
                revision.is_tag = false;
                revision.project_name = rec.project.clone();
                revision.default_branch = rec.default_branch.clone();
                let text = source::read_file(&revision, ".gitlab-ci.yml")?;
                Ok((revision, text))
            })
            .await?
        };
        let (revision, text) = prepared;
        let definition = match text.map(String::from_utf8) {
            None => Err("the commit has no .gitlab-ci.yml".to_string()),
            Some(Err(_)) => Err(".gitlab-ci.yml is not UTF-8 text".to_string()),
            Some(Ok(text)) => Ok(text),
        };
        let run = RepoRun {
            branch: branch.to_string(),
            sha: sha.to_string(),
            source: PipelineSource::Push.as_str().to_string(),
            pipeline: None,
            error: None,
            at_ms: now_ms(),
        };
        let reason = match definition {
            Err(reason) => reason,
            Ok(definition) => {
                let link = {
                    let run = run.clone();
                    RepoUpdate {
                        repo: id,
                        apply: Box::new(move |bytes, pipeline| {
                            let mut rec: RepoRecord = match serde_json::from_slice(bytes) {
                                Ok(rec) => rec,
                                Err(e) => {
                                    warn!(repo = id, "repository record unreadable: {e}");
                                    return None;
                                }
                            };
                            rec.remember(RepoRun {
                                pipeline: Some(pipeline),
                                ..run
                            });
                            serde_json::to_vec(&rec).ok()
                        }),
                    }
                };
                let submission = Submission {
                    revision,
                    definition,
                    source: PipelineSource::Push,
                    variables: vec![SecretVariable {
                        name: "CI_COMMIT_BEFORE_SHA".into(),
                        value: before,
                        masked: false,
                    }],
                };
                match self
                    .inner
                    .runner
                    .submit_linked(submission, Some(link))
                    .await
                {
                    Ok(pipeline) => {
                        info!(repo = id, branch, sha, pipeline, "pipeline triggered");
                        return Ok(Triggered::Created(pipeline));
                    }
                    // The same commit would fail the same way again.
                    Err(
                        e @ (RunError::Invalid(_) | RunError::NoPipeline(_) | RunError::Mask(_)),
                    ) => e.to_string(),
                    Err(e) => return Err(e.into()),
                }
            }
        };
        warn!(repo = id, branch, sha, "no pipeline: {reason}");
        let failed = RepoRun {
            error: Some(reason),
            ..run
        };
        {
            let failed = failed.clone();
            self.update(id, move |rec| rec.remember(failed)).await?;
        }
        Ok(Triggered::Existing(failed))
    }

    async fn clone_mirror(&self, url: &str, dest: &Path) -> Result<(), String> {
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
    async fn sync_mirror(&self, rec: &RepoRecord) -> Result<PathBuf, RepoError> {
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

    /// Polls one repository: fetches it (a remote), and triggers each
    /// watched branch's head that was not run yet. The error, if any, is
    /// kept in the record until a poll succeeds.
    async fn poll(&self, id: u64) {
        let errors = match self.poll_once(id).await {
            Ok(errors) => errors,
            Err(RepoError::NoSuchRepo(_)) => return,
            Err(e) => vec![e.to_string()],
        };
        let rec = self.record(id).await.ok().flatten();
        // Stored and shown: no secret of the URL in it, whatever git said.
        let error = (!errors.is_empty()).then(|| {
            let text = errors.join("; ");
            rec.as_ref()
                .map_or_else(|| text.clone(), |r| redact_message(&text, &r.url))
        });
        if let Some(e) = &error {
            warn!(repo = id, "polling failed: {e}");
        }
        let changed = rec.is_some_and(|rec| rec.last_error != error);
        if changed && let Err(e) = self.update(id, move |rec| rec.last_error = error).await {
            warn!(repo = id, "cannot store the poll's result: {e}");
        }
        // Counted once its result is visible.
        let mut status = self.status();
        let s = status.entry(id).or_default();
        s.polls += 1;
        s.last_polled_ms = Some(now_ms());
    }

    async fn poll_once(&self, id: u64) -> Result<Vec<String>, RepoError> {
        let dir = {
            let lock = self.lock(id);
            let _held = lock.lock().await;
            let rec = self.record(id).await?.ok_or(RepoError::NoSuchRepo(id))?;
            if rec.remote {
                self.sync_mirror(&rec).await?
            } else {
                rec.git_dir(&self.inner.repos_dir)
            }
        };
        let rec = self.record(id).await?.ok_or(RepoError::NoSuchRepo(id))?;
        let mut errors = Vec::new();
        for branch in &rec.branches {
            let head = {
                let (dir, branch) = (dir.clone(), branch.clone());
                blocking(move || Ok(source::branch_head(&dir, &branch)?)).await?
            };
            let Some(sha) = head else {
                errors.push(format!("branch {branch:?} does not exist"));
                continue;
            };
            if rec.heads.get(branch) == Some(&sha) {
                // A head without a pipeline stays an error until it moves.
                if let Some(RepoRun {
                    error: Some(reason),
                    ..
                }) = rec.run(branch, &sha)
                {
                    errors.push(format!("{branch} at {}: {reason}", short(&sha)));
                }
                continue;
            }
            match self.trigger(id, branch, &sha, None).await? {
                Triggered::Created(_) => {}
                Triggered::Existing(run) => {
                    if let Some(reason) = run.error {
                        errors.push(format!("{branch} at {}: {reason}", short(&sha)));
                    }
                    // Run before (by a webhook): now also the head seen.
                    let (branch, sha) = (branch.clone(), sha.clone());
                    self.update(id, move |rec| {
                        rec.heads.insert(branch, sha);
                    })
                    .await?;
                }
            }
        }
        Ok(errors)
    }

    async fn poll_loop(self, stop: impl std::future::Future<Output = ()> + Send) {
        tokio::pin!(stop);
        let mut next: HashMap<u64, Instant> = HashMap::new();
        let mut polling: HashSet<u64> = HashSet::new();
        let mut tasks: JoinSet<u64> = JoinSet::new();
        let mut intervals: HashMap<u64, Duration> = HashMap::new();
        loop {
            match self.records().await {
                Ok(records) => {
                    intervals = records
                        .iter()
                        .map(|r| (r.id, Duration::from_secs(r.poll_interval_secs.max(1))))
                        .collect();
                }
                Err(e) => warn!("cannot read the registered repositories: {e}"),
            }
            next.retain(|id, _| intervals.contains_key(id));
            let now = Instant::now();
            for id in intervals.keys() {
                next.entry(*id).or_insert(now);
            }
            for (id, at) in &next {
                if *at <= now && polling.insert(*id) {
                    let repos = self.clone();
                    let id = *id;
                    tasks.spawn(async move {
                        repos.poll(id).await;
                        id
                    });
                }
            }
            let wake_at = next
                .iter()
                .filter(|(id, _)| !polling.contains(id))
                .map(|(_, at)| *at)
                .min()
                .unwrap_or(now + Duration::from_secs(3600));
            tokio::select! {
                _ = &mut stop => break,
                _ = self.inner.wake.notified() => {}
                _ = tokio::time::sleep_until(wake_at) => {}
                Some(done) = tasks.join_next(), if !tasks.is_empty() => {
                    if let Ok(id) = done {
                        polling.remove(&id);
                        if let Some(interval) = intervals.get(&id) {
                            next.insert(id, Instant::now() + *interval);
                        }
                    } else {
                        // A poll that panicked: poll everything again soon.
                        warn!("a repository poll ended abnormally");
                        polling.clear();
                    }
                }
            }
        }
        tasks.abort_all();
        info!("repository poller stopped");
    }
}

enum Triggered {
    Created(u64),
    Existing(RepoRun),
}

fn existing(run: &RepoRun) -> Result<HookOutcome, RepoError> {
    match (run.pipeline, &run.error) {
        (Some(pipeline), _) => Ok(HookOutcome::Existing(pipeline)),
        (None, reason) => Err(RepoError::NoPipeline {
            branch: run.branch.clone(),
            sha: run.sha.clone(),
            reason: reason.clone().unwrap_or_default(),
        }),
    }
}

fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
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

/// A [`NewRepo`] checked without touching the repository.
#[derive(Debug, Clone)]
struct Checked {
    url: String,
    remote: bool,
    branches: Vec<String>,
    poll_interval_secs: u64,
    secret_sha256: Option<String>,
}

/// Checks what can be checked of a new repository without reading it.
fn check_new(new: &NewRepo) -> Result<Checked, RepoError> {
    let bad = |m: String| Err(RepoError::Invalid(m));
    let url = new.url.trim();
    let remote = match classify(url) {
        Ok(remote) => remote,
        Err(m) => return bad(m),
    };
    if new.branches.len() > MAX_BRANCHES {
        return bad(format!(
            "at most {MAX_BRANCHES} branches, not {}",
            new.branches.len()
        ));
    }
    let mut branches: Vec<String> = Vec::new();
    for b in &new.branches {
        let b = b.strip_prefix("refs/heads/").unwrap_or(b);
        if let Err(m) = check_branch_name(b) {
            return bad(m);
        }
        if branches.iter().any(|x| x == b) {
            return bad(format!("branch {b:?} is given twice"));
        }
        branches.push(b.to_string());
    }
    let poll_interval_secs = new
        .poll_interval_secs
        .unwrap_or(DEFAULT_POLL_INTERVAL.as_secs());
    if !(MIN_POLL_INTERVAL.as_secs()..=MAX_POLL_INTERVAL.as_secs()).contains(&poll_interval_secs) {
        return bad(format!(
            "the poll interval must be from {} s to {} s, not {poll_interval_secs} s",
            MIN_POLL_INTERVAL.as_secs(),
            MAX_POLL_INTERVAL.as_secs()
        ));
    }
    let secret_sha256 = match &new.webhook_secret {
        None => None,
        Some(secret) => {
            if let Err(m) = check_secret(secret) {
                return bad(m);
            }
            Some(sha256_hex(secret.as_bytes()))
        }
    };
    Ok(Checked {
        url: url.to_string(),
        remote,
        branches,
        poll_interval_secs,
        secret_sha256,
    })
}

/// Whether `url` is a remote (`true`) or a local path (`false`), or why it
/// is neither.
fn classify(url: &str) -> Result<bool, String> {
    if url.is_empty() {
        return Err("the repository's path or URL is empty".into());
    }
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "the repository's path or URL is longer than {MAX_URL_LEN} bytes"
        ));
    }
    if url.chars().any(char::is_control) {
        return Err("the repository's path or URL contains control characters".into());
    }
    if url.starts_with('-') {
        return Err(format!("{:?} cannot start with '-'", redact(url)));
    }
    if url.starts_with('/') {
        return Ok(false);
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(format!(
                "{} has an unsupported scheme {scheme:?} (use {})",
                redact(url),
                SCHEMES.join(", ")
            ));
        }
        if rest.is_empty() || rest.chars().any(char::is_whitespace) {
            return Err(format!("{} is not a valid URL", redact(url)));
        }
        return Ok(true);
    }
    // scp-like `[user@]host:path`, as git reads it: a colon before any
    // slash.
    if let Some((host, path)) = url.split_once(':')
        && !host.is_empty()
        && !host.contains('/')
        && !path.is_empty()
        && !host.chars().any(char::is_whitespace)
        && !host.contains("::")
        && !path.starts_with(':')
    {
        return Ok(true);
    }
    Err(format!(
        "{:?} is neither an absolute path nor a URL ({}://…, or user@host:path)",
        redact(url),
        SCHEMES.join("://…, ")
    ))
}

/// Checks a branch name as git does (`git check-ref-format --branch`).
pub fn check_branch_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{name:?} is not a valid branch name: {why}"));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 255 {
        return bad("it is longer than 255 bytes");
    }
    if name.starts_with('-') {
        return bad("it starts with '-'");
    }
    if name == "@" || name == "HEAD" {
        return bad("it is reserved");
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || " ~^:?*[\\".contains(*c))
    {
        return bad(&format!("it contains {c:?}"));
    }
    if name.contains("..") || name.contains("@{") || name.contains("//") {
        return bad("it contains '..', '@{' or '//'");
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') {
        return bad("it starts or ends with '/', or ends with '.'");
    }
    if name
        .split('/')
        .any(|c| c.starts_with('.') || c.ends_with(".lock"))
    {
        return bad("a part starts with '.' or ends with '.lock'");
    }
    Ok(())
}

fn check_secret(secret: &str) -> Result<(), String> {
    let len = secret.chars().count();
    if len < MIN_SECRET_LEN {
        return Err(format!(
            "the webhook secret must be at least {MIN_SECRET_LEN} characters, not {len}"
        ));
    }
    if len > MAX_SECRET_LEN {
        return Err(format!(
            "the webhook secret must be at most {MAX_SECRET_LEN} characters, not {len}"
        ));
    }
    if !secret.chars().all(|c| c.is_ascii_graphic()) {
        return Err(
            "the webhook secret must be printable ASCII without spaces (it is sent in an HTTP header)"
                .into(),
        );
    }
    Ok(())
}

fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares a presented token with the stored SHA-256 in constant time
/// (the digests are compared, so not even the length leaks).
fn secret_matches(token: &str, expected_sha256: &str) -> bool {
    let given = sha256_hex(token.as_bytes());
    if given.len() != expected_sha256.len() {
        return false;
    }
    given
        .bytes()
        .zip(expected_sha256.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// A repository URL cut around its userinfo: `before` + `userinfo` + `@`
/// + `after`.
struct Userinfo<'a> {
    before: &'a str,
    userinfo: &'a str,
    after: &'a str,
    /// An `http://` or `https://` URL: a user without a password there is
    /// a token.
    http: bool,
}

/// Finds the userinfo of a URL (`scheme://userinfo@host/...`) or of git's
/// scp form (`userinfo@host:path`); `None` for a local path or a URL
/// without one.
///
/// A `user:password` userinfo runs to the *last* `@`: a password may hold
/// a raw `/` or `@` (git and curl then disagree on where the host starts),
/// so this may take an `@` in the path for the end of the userinfo and
/// hide too much, never too little. A userinfo without `:` ends at the
/// first `@`; an `@` after a `/` (in the path) is no userinfo.
fn userinfo(url: &str) -> Option<Userinfo<'_>> {
    if url.starts_with('/') {
        return None;
    }
    let (start, http) = match url.find("://") {
        Some(i) => {
            let scheme = url[..i].to_ascii_lowercase();
            (i + 3, scheme == "http" || scheme == "https")
        }
        None => (0, false),
    };
    let body = &url[start..];
    let first_at = body.find('@')?;
    let head = &body[..first_at];
    let end = if head.contains(':') {
        body.rfind('@')?
    } else if head.contains('/') {
        return None;
    } else {
        first_at
    };
    Some(Userinfo {
        before: &url[..start],
        userinfo: &body[..end],
        after: &body[end + 1..],
        http,
    })
}

/// Whether a user name is really a token: 20 characters or more, or a
/// known token prefix (GitHub's `ghp_`…, GitLab's `glpat-`…).
fn looks_like_token(user: &str) -> bool {
    const PREFIXES: [&str; 10] = [
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "glpat-",
        "gldt-",
        "glrt-",
        "glcbt-",
    ];
    user.chars().count() >= 20 || PREFIXES.iter().any(|p| user.starts_with(p))
}

/// What of a userinfo is secret: the password, and the user when it is a
/// token (always for http(s) without a password).
fn secret_parts(info: &Userinfo<'_>) -> Vec<String> {
    let mut parts = Vec::new();
    match info.userinfo.split_once(':') {
        Some((user, password)) => {
            parts.push(password.to_string());
            if looks_like_token(user) {
                parts.push(user.to_string());
            }
        }
        None if info.http || looks_like_token(info.userinfo) => {
            parts.push(info.userinfo.to_string());
        }
        None => {}
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// `url` with the secrets of its userinfo hidden, for showing and logging:
/// `user:password@` becomes `user:***@`, a token (`https://TOKEN@host`,
/// any user name without a password in an http(s) URL, or one that
/// looks like a token) becomes `***@`. A plain user
/// name without a password (`git@host:path`, `ssh://git@host/path`) is
/// no secret and stays. Local paths are returned as they are.
pub fn redact(url: &str) -> String {
    let Some(info) = userinfo(url) else {
        return url.to_string();
    };
    if secret_parts(&info).is_empty() {
        return url.to_string();
    }
    let shown = match info.userinfo.split_once(':') {
        Some((user, _)) if !looks_like_token(user) => format!("{user}:***"),
        _ => "***".to_string(),
    };
    format!("{}{shown}@{}", info.before, info.after)
}

/// A message (git's error output, say) with every URL in it
/// [redacted](redact), and every secret of `url`'s userinfo (4 characters
/// or more; shorter ones would mangle the text) replaced by `***`, however
/// git quoted or reshaped the URL around it.
pub fn redact_message(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact(url));
    if let Some(info) = userinfo(url) {
        for secret in secret_parts(&info) {
            if secret.chars().count() >= 4 {
                out = out.replace(&secret, "***");
            }
        }
    }
    redact_urls_in(&out)
}

/// `text` with each `scheme://…` in it (up to white space or a quote)
/// [redacted](redact).
fn redact_urls_in(text: &str) -> String {
    let scheme_char = |c: char| c.is_ascii_alphanumeric() || "+.-".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .char_indices()
            .rev()
            .find(|(_, c)| !scheme_char(*c))
            .map_or(0, |(p, c)| p + c.len_utf8());
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || "'\"<>`".contains(c))
            .map_or(rest.len(), |p| i + p);
        out.push_str(&rest[..start]);
        out.push_str(&redact(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

/// The project name of a URL: its last path segment without `.git`.
fn project_of_url(url: &str) -> String {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => url.split_once(':').map_or(url, |(_, p)| p),
    };
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let name = last.strip_suffix(".git").unwrap_or(last);
    if name.is_empty() {
        "project".to_string()
    } else {
        name.to_string()
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

/// A parsed webhook.
#[derive(Debug, PartialEq, Eq)]
enum Hook {
    Push(Push),
    Ignored(String),
}

#[derive(Debug, PartialEq, Eq)]
struct Push {
    branch: String,
    sha: String,
    before: Option<String>,
}

/// The webhook's body: berth's `{"ref", "sha"}` or GitLab's push event
/// (`ref`, `checkout_sha` / `after`, `before`); other fields are ignored.
#[derive(Debug, Deserialize)]
struct HookBody {
    #[serde(rename = "ref")]
    reference: Option<String>,
    sha: Option<String>,
    checkout_sha: Option<String>,
    after: Option<String>,
    before: Option<String>,
}

fn is_sha(s: &str) -> bool {
    (s.len() == 40 || s.len() == 64) && s.bytes().all(|b| b.is_ascii_hexdigit())
}

fn parse_hook(body: &[u8]) -> Result<Hook, RepoError> {
    let bad = |m: String| RepoError::Invalid(m);
    let body: HookBody = serde_json::from_slice(body)
        .map_err(|e| bad(format!("the webhook's body is not the expected JSON: {e}")))?;
    let reference = body
        .reference
        .ok_or_else(|| bad("the webhook's body has no \"ref\"".into()))?;
    if reference.starts_with("refs/tags/") {
        return Ok(Hook::Ignored(format!(
            "{reference} is a tag; only branches are watched"
        )));
    }
    let branch = match reference.strip_prefix("refs/heads/") {
        Some(b) => b.to_string(),
        None if reference.starts_with("refs/") => {
            return Ok(Hook::Ignored(format!(
                "{reference} is not a branch; only branches are watched"
            )));
        }
        None => reference.clone(),
    };
    check_branch_name(&branch).map_err(bad)?;
    let sha = body
        .sha
        .or(body.checkout_sha)
        .or(body.after)
        .ok_or_else(|| {
            bad(
                "the webhook's body names no commit (\"sha\", \"checkout_sha\" or \"after\")"
                    .into(),
            )
        })?
        .to_ascii_lowercase();
    if !is_sha(&sha) {
        return Err(bad(format!(
            "{sha:?} is not a commit sha (40 or 64 hex digits)"
        )));
    }
    if sha.bytes().all(|b| b == b'0') {
        return Ok(Hook::Ignored(format!("branch {branch:?} was deleted")));
    }
    let before = body
        .before
        .map(|b| b.to_ascii_lowercase())
        .filter(|b| is_sha(b));
    Ok(Hook::Push(Push {
        branch,
        sha,
        before,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(url: &str) -> NewRepo {
        NewRepo {
            url: url.into(),
            branches: vec![],
            poll_interval_secs: None,
            webhook_secret: None,
        }
    }

    fn invalid(new: &NewRepo) -> String {
        match check_new(new) {
            Err(RepoError::Invalid(m)) => m,
            other => panic!("expected an invalid input, got {other:?}"),
        }
    }

    #[test]
    fn paths_and_urls_are_told_apart_and_bad_ones_refused() {
        assert_eq!(classify("/srv/git/project"), Ok(false));
        for url in [
            "file:///srv/git/project.git",
            "https://example.com/group/project.git",
            "HTTP://example.com/p",
            "ssh://git@example.com:2222/p.git",
            "git://example.com/p",
            "git@example.com:group/project.git",
        ] {
            assert_eq!(classify(url), Ok(true), "{url}");
        }
        for (url, why) in [
            ("", "is empty"),
            ("relative/path", "neither an absolute path nor a URL"),
            ("ext::sh -c touch% /tmp/pwned", "neither an absolute path"),
            ("ftp://example.com/p", "unsupported scheme \"ftp\""),
            ("--upload-pack=evil", "cannot start with '-'"),
            ("/srv/a\nb", "control characters"),
            ("https://", "not a valid URL"),
        ] {
            let err = classify(url).unwrap_err();
            assert!(err.contains(why), "{url:?}: {err}");
        }
    }

    #[test]
    fn new_repositories_are_checked_before_anything_is_read() {
        let ok = check_new(&NewRepo {
            url: " /srv/p ".into(),
            branches: vec!["main".into(), "refs/heads/release/1.x".into()],
            poll_interval_secs: Some(30),
            webhook_secret: Some("0123456789abcdef".into()),
        })
        .unwrap();
        assert_eq!(ok.url, "/srv/p");
        assert_eq!(ok.branches, ["main", "release/1.x"]);
        assert_eq!(ok.poll_interval_secs, 30);
        assert_eq!(
            ok.secret_sha256.as_deref(),
            Some(sha256_hex(b"0123456789abcdef").as_str()),
            "only the digest is kept"
        );
        assert_eq!(check_new(&new("/srv/p")).unwrap().poll_interval_secs, 60);

        let mut n = new("/srv/p");
        n.poll_interval_secs = Some(0);
        assert!(invalid(&n).contains("from 1 s to 86400 s, not 0 s"));
        n.poll_interval_secs = Some(86_401);
        assert!(invalid(&n).contains("not 86401 s"));
        let mut n = new("/srv/p");
        n.webhook_secret = Some("short".into());
        assert!(invalid(&n).contains("at least 16 characters, not 5"));
        n.webhook_secret = Some("x".repeat(257));
        assert!(invalid(&n).contains("at most 256"));
        n.webhook_secret = Some("has spaces in it, sadly".into());
        assert!(invalid(&n).contains("printable ASCII"));
        let mut n = new("/srv/p");
        n.branches = vec!["main".into(), "main".into()];
        assert!(invalid(&n).contains("given twice"));
        n.branches = vec!["a..b".into()];
        assert!(invalid(&n).contains("not a valid branch name"));
        n.branches = vec!["x".into(); MAX_BRANCHES + 1];
        assert!(invalid(&n).contains("at most 100 branches"));
    }

    #[test]
    fn branch_names_follow_gits_rules() {
        for ok in ["main", "feature/x", "release-1.2", "a/b/c", "v1.0_rc"] {
            assert_eq!(check_branch_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "-x", "a b", "a..b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/",
            "a.", "a//b", ".hidden", "a/.b", "x.lock", "a@{1}", "@", "HEAD", "tab\t",
        ] {
            assert!(check_branch_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_compare_by_digest() {
        let stored = sha256_hex(b"correct horse battery staple");
        assert!(secret_matches("correct horse battery staple", &stored));
        assert!(!secret_matches("correct horse battery stapl", &stored));
        assert!(!secret_matches("", &stored));
        assert!(!secret_matches("correct horse battery staple", "abc"));
    }

    #[test]
    fn passwords_and_tokens_in_urls_are_hidden() {
        let token = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
        let token_url = format!("https://{token}@github.com/o/r.git");
        let token_user = format!("https://{token}:x-oauth-basic@github.com/o/r");
        for (url, shown) in [
            (
                "https://bot:hunter2@example.com/g/p.git",
                "https://bot:***@example.com/g/p.git",
            ),
            // A user without a password in an http(s) URL is a token.
            ("https://TOKEN@example.com/p", "https://***@example.com/p"),
            ("HTTP://bot@example.com/p", "HTTP://***@example.com/p"),
            (token_url.as_str(), "https://***@github.com/o/r.git"),
            // A token as the user, with a dummy password.
            (token_user.as_str(), "https://***@github.com/o/r"),
            (
                "https://x-access-token:ghs_secret@github.com/o/r",
                "https://x-access-token:***@github.com/o/r",
            ),
            // Passwords with a raw `/` or `@`.
            (
                "https://bot:pa/ss@example.com/g/p",
                "https://bot:***@example.com/g/p",
            ),
            (
                "https://bot:p@ss/w@rd@example.com/p",
                "https://bot:***@example.com/p",
            ),
            (
                "ssh://git:secret@example.com/p.git",
                "ssh://git:***@example.com/p.git",
            ),
            ("git://u:pw@example.com/p", "git://u:***@example.com/p"),
            ("ssh://glpat-abc@example.com/p", "ssh://***@example.com/p"),
            // scp form.
            (
                "deploy:s3cret@example.com:group/p.git",
                "deploy:***@example.com:group/p.git",
            ),
            (
                "glpat-abcdefghijklmnop@example.com:p.git",
                "***@example.com:p.git",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
            assert_eq!(redact(shown), shown, "{shown} stays as it is");
        }
        // User names are no secret; paths and URLs without userinfo stay.
        for url in [
            "git@example.com:group/p.git",
            "ssh://git@example.com:2222/p.git",
            "/srv/p",
            "/srv/p@2",
            "file:///srv/git/p.git",
            "https://example.com/g/p@v2.git",
            "https://example.com/g/p.git",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn gits_messages_lose_the_secrets_of_the_url() {
        let url = "https://bot:hunter2secret@example.com/g/p.git";
        let git = "fatal: unable to access 'https://bot:hunter2secret@example.com/g/p.git/': error 403\nremote: bad password hunter2secret\nsee https://other:pw1234@mirror.example.com/x";
        let shown = redact_message(git, url);
        assert!(!shown.contains("hunter2secret"), "{shown}");
        assert!(!shown.contains("pw1234"), "{shown}");
        assert!(
            shown.contains("'https://bot:***@example.com/g/p.git/'"),
            "{shown}"
        );
        assert!(shown.contains("https://other:***@mirror.example.com/x"));
        // Git may echo the URL without its userinfo, and the token alone.
        let token = "glpat-0123456789abcdefghij";
        let url = format!("https://{token}@gitlab.example.com/g/p.git");
        let git = format!(
            "remote: HTTP Basic: Access denied ({token})\nfatal: Authentication failed for 'https://gitlab.example.com/g/p.git/'"
        );
        let shown = redact_message(&git, &url);
        assert!(!shown.contains(token), "{shown}");
        assert!(shown.contains("Access denied (***)"), "{shown}");
        assert_eq!(redact_message("plain text", "/srv/p"), "plain text");
    }

    #[test]
    fn projects_are_named_after_the_urls_last_segment() {
        assert_eq!(
            project_of_url("https://example.com/g/project.git"),
            "project"
        );
        assert_eq!(project_of_url("file:///srv/git/web/"), "web");
        assert_eq!(project_of_url("git@example.com:group/api.git"), "api");
        assert_eq!(project_of_url("https://example.com"), "project");
    }

    const SHA: &str = "0123456789abcdef0123456789abcdef01234567";

    #[test]
    fn webhook_bodies_in_berths_and_gitlabs_shape() {
        let push = |branch: &str, sha: &str, before: Option<&str>| {
            Hook::Push(Push {
                branch: branch.into(),
                sha: sha.into(),
                before: before.map(str::to_string),
            })
        };
        let body = format!(r#"{{"ref": "main", "sha": "{SHA}"}}"#);
        assert_eq!(
            parse_hook(body.as_bytes()).unwrap(),
            push("main", SHA, None)
        );
        // GitLab's push event, with fields berth does not read.
        let before = "1".repeat(40);
        let body = serde_json::json!({
            "object_kind": "push",
            "ref": "refs/heads/feature/x",
            "before": before,
            "after": SHA,
            "checkout_sha": SHA.to_uppercase(),
            "commits": [{"id": SHA, "message": "m"}],
            "project": {"name": "p"}
        });
        assert_eq!(
            parse_hook(body.to_string().as_bytes()).unwrap(),
            push("feature/x", SHA, Some(&before))
        );
        let body =
            serde_json::json!({"ref": "refs/heads/main", "checkout_sha": null, "after": SHA});
        assert_eq!(
            parse_hook(body.to_string().as_bytes()).unwrap(),
            push("main", SHA, None)
        );
        // Deleted branches and tags are ignored.
        let body = serde_json::json!({"ref": "refs/heads/main", "after": "0".repeat(40)});
        assert!(matches!(
            parse_hook(body.to_string().as_bytes()).unwrap(),
            Hook::Ignored(why) if why.contains("deleted")
        ));
        let body = serde_json::json!({"ref": "refs/tags/v1", "after": SHA});
        assert!(matches!(
            parse_hook(body.to_string().as_bytes()).unwrap(),
            Hook::Ignored(why) if why.contains("tag")
        ));
        // Bad bodies.
        for (body, why) in [
            ("not json".to_string(), "not the expected JSON"),
            (format!(r#"{{"sha": "{SHA}"}}"#), "no \"ref\""),
            (r#"{"ref": "main"}"#.to_string(), "names no commit"),
            (
                r#"{"ref": "main", "sha": "abc"}"#.to_string(),
                "not a commit sha",
            ),
            (
                format!(r#"{{"ref": "a..b", "sha": "{SHA}"}}"#),
                "not a valid branch",
            ),
            (
                r#"{"ref": 5, "sha": 6}"#.to_string(),
                "not the expected JSON",
            ),
        ] {
            match parse_hook(body.as_bytes()) {
                Err(RepoError::Invalid(m)) => assert!(m.contains(why), "{body}: {m}"),
                other => panic!("{body}: {other:?}"),
            }
        }
    }

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

    /// A repository service on the state file in `dir`, without a runner
    /// or a poller.
    fn repos_on(dir: &Path) -> Repos {
        let store = Arc::new(Store::open(dir.join("ci.redb")).unwrap());
        let runner = RunnerHandle::detached(dir.to_path_buf(), store.clone());
        let repos_dir = dir.join("repos");
        std::fs::create_dir_all(&repos_dir).unwrap();
        Repos {
            inner: Arc::new(Inner {
                runner,
                store,
                repos_dir,
                config: ReposConfig::default(),
                locks: Mutex::new(HashMap::new()),
                status: Mutex::new(HashMap::new()),
                wake: tokio::sync::Notify::new(),
                adding: tokio::sync::Mutex::new(()),
            }),
        }
    }

    #[test]
    fn a_poisoned_lock_map_still_hands_out_the_same_locks() {
        let dir = tempfile::tempdir().unwrap();
        let repos = repos_on(dir.path());
        let before = repos.lock(1);
        let poisoner = repos.clone();
        let panicked = std::thread::spawn(move || {
            let _held = poisoner.inner.locks.lock().unwrap();
            panic!("a panic while the lock map is held (expected by the test)");
        })
        .join();
        assert!(panicked.is_err());
        assert!(repos.inner.locks.is_poisoned());
        // The same lock, so that fetches and triggers still take turns.
        assert!(Arc::ptr_eq(&before, &repos.lock(1)));
        assert!(!Arc::ptr_eq(&before, &repos.lock(2)));
    }

    /// Waits until `lock` has `n` holders of its `Arc` (the map, the test,
    /// and callers that have reached it).
    async fn wait_for_holders(lock: &Arc<tokio::sync::Mutex<()>>, n: usize) {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Arc::strong_count(lock) < n {
            assert!(Instant::now() < deadline, "nobody came to the lock");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    #[tokio::test]
    async fn a_webhook_racing_a_removal_does_not_clone_the_mirror_again() {
        let dir = tempfile::tempdir().unwrap();
        let origin = berth_tests::git_repo(&[(".gitlab-ci.yml", "job:\n  script: [x]\n")]);
        let sha = source::branch_head(origin.path(), "main").unwrap().unwrap();
        let repos = repos_on(dir.path());
        let secret = "0123456789abcdef";
        let url = format!("file://{}", origin.path().display());
        let id = repos
            .inner
            .store
            .create_repo(|id| RepoRecord {
                id,
                url,
                remote: true,
                project: "p".into(),
                default_branch: "main".into(),
                branches: vec!["main".into()],
                poll_interval_secs: 60,
                webhook_secret_sha256: Some(sha256_hex(secret.as_bytes())),
                heads: BTreeMap::new(),
                runs: Vec::new(),
                last_error: None,
                created_ms: 0,
            })
            .unwrap();
        let rec: RepoRecord = repos.inner.store.repo(id).unwrap().unwrap();
        let mirror = repos.sync_mirror(&rec).await.unwrap();
        assert!(mirror.join("HEAD").is_file());

        // Something holds the repository's lock (a poll's fetch); a removal
        // queues for it, then a webhook (after reading the record).
        let lock = repos.lock(id);
        let held = lock.lock().await;
        let remove = tokio::spawn({
            let repos = repos.clone();
            async move { repos.remove(id).await }
        });
        wait_for_holders(&lock, 3).await;
        let hook = tokio::spawn({
            let repos = repos.clone();
            let body = format!(r#"{{"ref": "main", "sha": "{sha}"}}"#);
            async move { repos.hook(id, Some(secret), body.as_bytes()).await }
        });
        wait_for_holders(&lock, 4).await;
        // The removal goes first (the lock is fair), then the webhook.
        drop(held);
        let removed = tokio::time::timeout(Duration::from_secs(30), remove)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(removed.unwrap().id, id);
        let outcome = tokio::time::timeout(Duration::from_secs(30), hook)
            .await
            .unwrap()
            .unwrap();
        assert!(
            matches!(outcome, Err(RepoError::NoSuchRepo(n)) if n == id),
            "{outcome:?}"
        );
        assert!(
            !mirror.exists(),
            "the removed repository's mirror was cloned again"
        );
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
