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
//! git runs through [`crate::exec::git`], never prompting: a clone or
//! fetch of a remote is killed after [`ReposConfig::fetch_timeout`], a
//! read of a commit ([`super::source`], blocking, called through
//! `spawn_blocking`) after [`crate::exec::git::LOCAL_TIMEOUT`].
//!
//! Where things are:
//!
//! - this file: the service ([`Repos`], [`start`]), its errors and its
//!   config, reading and showing records;
//! - `record`: the stored record, its triggers, and the API's view;
//! - `validate`: checking a repository to register, before anything is
//!   read (path or URL, branch names, poll interval, webhook secret);
//! - `registry`: adding (read, cloned, then stored) and removing;
//! - `mirror`: the bare mirrors of remote URLs;
//! - `trigger`: a commit's pipeline, created once per branch;
//! - `webhook`: the webhook's body and its handling;
//! - `poller`: the background poller;
//! - [`crate::exec::git`]: running git (also for [`super::source`]), and
//!   hiding credentials in URLs and in git's messages.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use super::runner::{RunError, RunnerHandle};
use super::source::SourceError;
use super::store::{Store, StoreError};
use poller::PollStatus;

mod mirror;
mod poller;
mod record;
mod registry;
mod trigger;
mod validate;
mod webhook;

pub use crate::exec::git::redact::{redact, redact_message};
pub use record::{KEPT_RUNS, RepoRecord, RepoRun, RepoView};
pub use validate::{
    DEFAULT_POLL_INTERVAL, MAX_BRANCHES, MAX_POLL_INTERVAL, MAX_SECRET_LEN, MAX_URL_LEN,
    MIN_POLL_INTERVAL, MIN_SECRET_LEN, NewRepo, check_branch_name,
};
pub use webhook::HookOutcome;

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
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::path::Path;

    use tokio::time::Instant;

    use super::validate::sha256_hex;
    use super::*;
    use crate::exec::source;

    /// A repository service on the state file in `dir`, without a runner
    /// or a poller.
    fn repos_on(dir: &Path) -> Repos {
        repos_with(dir, ReposConfig::default())
    }

    fn repos_with(dir: &Path, config: ReposConfig) -> Repos {
        let store = Arc::new(Store::open(dir.join("ci.redb")).unwrap());
        let runner = RunnerHandle::detached(dir.to_path_buf(), store.clone());
        let repos_dir = dir.join("repos");
        std::fs::create_dir_all(&repos_dir).unwrap();
        Repos {
            inner: Arc::new(Inner {
                runner,
                store,
                repos_dir,
                config,
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

    #[tokio::test]
    async fn a_clone_from_a_server_that_never_answers_is_cut_off_at_the_timeout() {
        let dir = tempfile::tempdir().unwrap();
        let repos = repos_with(
            dir.path(),
            ReposConfig {
                fetch_timeout: Duration::from_secs(1),
            },
        );
        // A loopback server that takes connections and never answers.
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let silent = tokio::spawn(async move {
            let mut held = Vec::new();
            while let Ok((conn, _)) = listener.accept().await {
                held.push(conn);
            }
        });
        let started = std::time::Instant::now();
        let added = repos
            .add(NewRepo {
                url: format!("http://bot:s3cret-passw0rd@{addr}/g/p.git"),
                branches: Vec::new(),
                poll_interval_secs: None,
                webhook_secret: None,
            })
            .await;
        let took = started.elapsed();
        silent.abort();
        match added {
            Err(RepoError::Invalid(message)) => assert_eq!(
                message,
                format!("cannot read http://bot:***@{addr}/g/p.git: git clone timed out after 1 s")
            ),
            other => panic!("{other:?}"),
        }
        assert!(
            (Duration::from_secs(1)..Duration::from_secs(15)).contains(&took),
            "took {took:?}"
        );
        assert!(repos.list().await.unwrap().is_empty(), "nothing stored");
        assert!(
            std::fs::read_dir(dir.path().join("repos"))
                .unwrap()
                .next()
                .is_none(),
            "no clone left behind"
        );
    }
}
