//! The CI framework itself: a berth framework, on the SDK's
//! [framework runtime](berth_sdk::runtime), that runs pipelines' jobs as
//! tasks.
//!
//! [`start`] opens the framework's state, subscribes (resuming the stored
//! framework id) and hands a [`RunnerHandle`] back; the framework then runs
//! on the runtime's task ([`framework`]), which
//! - takes submissions, cancels, retries (of a pipeline's failed jobs, or
//!   of one job) and plays from the handle;
//! - states what should run as the runtime's intent
//!   ([`super::schedule::intent`]): the runtime packs pending jobs into
//!   offers (each job a task whose command is the job's rendered script,
//!   whose environment is the job's variables, that runs in the job's image
//!   (Docker) or as a process (GitLab's shell executor) where the job has
//!   none, and whose sandbox the agent fills before the script starts: the
//!   commit's files, the artifacts of the jobs it depends on, its caches),
//!   and kills the tasks of jobs canceled or past their time limit;
//! - asks the agent to upload the job's artifacts and caches after it;
//! - follows the job's output from the agent, masks secrets, and stores it;
//! - turns task updates into job results through the pipeline's
//!   [state machine](super::state), and persists every change in the
//!   [store](super::store) before the runtime acts on it. A write that
//!   fails stops the runner (fail closed): nothing more is stored or
//!   launched, the runtime stops, and [`RunnerHandle::failure`] says why
//!   (`berth ci serve` exits non-zero with it). Its jobs run on for the
//!   framework's failover timeout, for a restarted runner to re-attach to.
//!
//! On restart it reads its pipelines back; nothing else is special about
//! it. Time limits count from each attempt's recorded start (a limit that
//! passed meanwhile kills the job at once, with the timeout reason); the
//! intent names the running jobs' tasks as launched before, so the runtime
//! asks the master for their real state first (a task that ended meanwhile
//! ends its job with that result, one the master does not know fails it
//! as a runner system failure, retried per `retry:`), and the canceled
//! jobs' tasks to stop, so their kills are sent again; and it goes on
//! collecting the logs of jobs from where they stopped (see
//! [`super::collect`]) — the logs of jobs that have ended too, whenever a
//! collection had not finished.
//!
//! A pipeline is created whole or not at all: its source archive is
//! written (to a temporary file) before its record is stored, and moved
//! into place right after. A pipeline whose archive is missing all the
//! same (the framework stopped between the two) fails the jobs it would
//! launch, with the reason in their logs, instead of launching them.
//!
//! The framework does only quick, ordered work. A submission is parsed,
//! planned and archived before it reaches it (in
//! [`RunnerHandle::submit_linked`], on a blocking thread); agents'
//! addresses are looked up by the log collectors; and reads (`get`, `list`,
//! the log endpoints) come from per-pipeline snapshots published on every
//! change, never through the framework's task.

mod children;
mod framework;
mod reports;
mod requests;
mod stuck;
mod submit;

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_sdk::runtime::{Policy, Runtime, Stopped};
use berth_sdk::{FrameworkConfig, RuntimeError, SdkError};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use self::framework::CiFramework;
use self::submit::{Prepared, create_record, prepare};
use super::collect::{self, AgentBook, Collecting, LogRetry};
use super::expiry::{self, SweepReport};
use super::files::{Access, FileStore, PipelineAccess};
pub use super::record::PipelineRecord;
use super::resource_group::Assignment;
use super::source::{self, Revision};
use super::state;
use super::store::{RepoUpdate, Store, StoreError};
pub use super::task::tags_match;
use crate::{PipelineSource, SecretVariable};
pub use submit::revision_context;

/// The file in the data directory holding the framework's id.
const FRAMEWORK_ID_FILE: &str = "framework-id";

/// Where a job's files are, inside a Docker job's container.
const CONTAINER_SANDBOX: &str = "/mnt/berth/sandbox";

/// How the CI framework runs.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// The masters' addresses.
    pub masters: Vec<String>,
    /// Where pipelines, artifacts, caches and logs are kept.
    pub data_dir: PathBuf,
    /// The framework's HTTP address as the agents reach it, e.g.
    /// `http://10.0.0.5:8080` (source, artifacts and caches are served
    /// there; see [`super::files::router`]).
    pub base_url: String,
    /// CPUs of a job without `BERTH_CPUS`.
    pub default_cpus: f64,
    /// Memory (MiB) of a job without `BERTH_MEMORY`.
    pub default_mem: f64,
    /// Time limit of a job without `timeout`.
    pub default_timeout: Duration,
    /// Seconds between SIGTERM and SIGKILL when a job is canceled.
    pub kill_grace: Duration,
    /// The framework's role.
    pub role: String,
    /// Largest upload (artifacts, caches) accepted.
    pub max_upload: u64,
    /// Auto-cancel superseded pipelines: a new pipeline for a branch other
    /// than the default branch cancels the older unfinished pipelines of
    /// the same project and branch whose started jobs are all
    /// `interruptible` (GitLab's rule).
    pub auto_cancel: bool,
    /// How much of a job's log viewers get before a line that says where it
    /// was cut (the whole log is still stored; see [`super::log`]).
    pub max_log_bytes: u64,
    /// The `expire_in` of artifacts whose job gives none (GitLab's default:
    /// 30 days).
    pub artifact_expiry: Duration,
    /// Keep the artifacts of the latest successful pipeline of each ref,
    /// whatever their `expire_in` (GitLab's "keep latest artifacts").
    pub keep_latest_artifacts: bool,
    /// How long job logs are kept after the job ended; `None`: for ever.
    pub log_retention: Option<Duration>,
    /// How long a pipeline's source archive is kept after the pipeline
    /// finished with no job left to run or play (7 days by default);
    /// `None`: for ever. A job retried after that fails with
    /// `missing_dependency_failure`.
    pub source_retention: Option<Duration>,
    /// Time between two expiry sweeps (the first runs at start).
    pub sweep_interval: Duration,
    /// How a log collection that fails is tried again before it gives up
    /// (see [`super::collect`]).
    pub log_retry: LogRetry,
    /// How long the masters keep the framework (and its jobs' tasks) while
    /// it is disconnected: a week by default, so that a `berth ci serve`
    /// that is restarted finds its jobs still running.
    pub failover_timeout: Duration,
    /// Tear the framework down when the runner stops (its tasks are
    /// killed, the masters forget it, and the stored framework id is
    /// deleted): for a one-shot run such as `berth ci run`, which would
    /// otherwise leave a disconnected framework behind for
    /// `failover_timeout`. Off by default (`berth ci serve` comes back).
    pub teardown_on_stop: bool,
    /// How long a job may be stuck (pending, and no agent has its `tags`)
    /// before it fails with `stuck_or_timeout_failure`; `None` (the
    /// default, as GitLab): it stays pending, shown as stuck, until an
    /// agent with its tags comes. `berth ci run` sets it (`--stuck-timeout`).
    pub stuck_timeout: Option<Duration>,
}

impl RunnerConfig {
    /// Defaults for a framework talking to `masters`, keeping its files in
    /// `data_dir`, reachable at `base_url`.
    pub fn new(masters: Vec<String>, data_dir: PathBuf, base_url: String) -> RunnerConfig {
        RunnerConfig {
            masters,
            data_dir,
            base_url,
            default_cpus: 1.0,
            default_mem: 512.0,
            default_timeout: Duration::from_secs(3600),
            kill_grace: Duration::from_secs(10),
            role: "*".into(),
            max_upload: 1 << 30,
            auto_cancel: true,
            max_log_bytes: super::log::DEFAULT_MAX_LOG_BYTES,
            artifact_expiry: expiry::DEFAULT_ARTIFACT_EXPIRY,
            keep_latest_artifacts: true,
            log_retention: Some(expiry::DEFAULT_LOG_RETENTION),
            source_retention: Some(expiry::DEFAULT_SOURCE_RETENTION),
            sweep_interval: Duration::from_secs(3600),
            log_retry: LogRetry::default(),
            failover_timeout: Duration::from_secs(7 * 24 * 3600),
            teardown_on_stop: false,
            stuck_timeout: None,
        }
    }

    fn expiry_policy(&self) -> expiry::Policy {
        expiry::Policy {
            artifacts_default: self.artifact_expiry,
            logs: self.log_retention,
            keep_latest_artifacts: self.keep_latest_artifacts,
            sources: self.source_retention,
        }
    }
}

/// A pipeline to create.
#[derive(Debug, Clone)]
pub struct Submission {
    /// The commit and repository.
    pub revision: Revision,
    /// The pipeline definition (the `.gitlab-ci.yml` text).
    pub definition: String,
    /// What started it.
    pub source: PipelineSource,
    /// Variables given for this run (`--var`), and secrets.
    pub variables: Vec<SecretVariable>,
}

/// What the runner refuses.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// The definition does not parse.
    #[error("the pipeline definition has errors:\n{0}")]
    Invalid(String),
    /// `workflow:rules` create no pipeline, or no job is left.
    #[error("no pipeline: {0}")]
    NoPipeline(String),
    /// No such pipeline.
    #[error("no pipeline {0}")]
    NoSuchPipeline(u64),
    /// No such job.
    #[error("pipeline {} has no job {}", .0, berth_proto::quoted(.1))]
    NoSuchJob(u64, String),
    /// A state transition was refused.
    #[error(transparent)]
    State(#[from] state::StateError),
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Reading the repository failed.
    #[error(transparent)]
    Source(#[from] source::SourceError),
    /// A masked variable cannot be masked.
    #[error(transparent)]
    Mask(#[from] super::mask::MaskError),
    /// The runner stopped.
    #[error("the CI runner stopped")]
    Stopped,
    /// Anything else.
    #[error("{0}")]
    Other(String),
}

enum Request {
    Submit(
        Box<Prepared>,
        Option<RepoUpdate>,
        oneshot::Sender<Result<u64, RunError>>,
    ),
    Cancel(u64, oneshot::Sender<Result<(), RunError>>),
    Retry(u64, oneshot::Sender<Result<(), RunError>>),
    RetryJob(u64, String, oneshot::Sender<Result<(), RunError>>),
    Play(u64, String, oneshot::Sender<Result<(), RunError>>),
    Sweep(oneshot::Sender<SweepReport>),
}

/// The handle of a running CI framework.
#[derive(Clone)]
pub struct RunnerHandle {
    tx: mpsc::Sender<Request>,
    changes: watch::Receiver<u64>,
    access: Arc<Tokens>,
    data_dir: PathBuf,
    files: FileStore,
    max_log_bytes: u64,
    /// The CI server's address (`CI_SERVER_URL`).
    base_url: String,
    store: Arc<Store>,
    collecting: Collecting,
    published: Arc<Published>,
    /// Why the runner stopped on its own, if it did (see
    /// [`RunnerHandle::failure`]).
    failure: Arc<Mutex<Option<String>>>,
}

/// The default number of pipelines [`RunnerHandle::list_page`] returns.
pub const DEFAULT_LIST_LIMIT: usize = 100;
/// The most pipelines [`RunnerHandle::list_page`] returns at once.
pub const MAX_LIST_LIMIT: usize = 1000;

/// The pipelines as the API reads them, without the runner's loop: each
/// record as last persisted, with its derived
/// [`waiting_for_resource`](PipelineRecord::waiting_for_resource). The loop
/// replaces a pipeline's entry whenever it persists it (and the entries of
/// the pipelines whose resource-group waits that changed).
#[derive(Debug, Default)]
struct Published(RwLock<BTreeMap<u64, Arc<PipelineRecord>>>);

impl Published {
    fn read(&self) -> std::sync::RwLockReadGuard<'_, BTreeMap<u64, Arc<PipelineRecord>>> {
        self.0
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> std::sync::RwLockWriteGuard<'_, BTreeMap<u64, Arc<PipelineRecord>>> {
        self.0
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl std::fmt::Debug for RunnerHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RunnerHandle")
            .field("data_dir", &self.data_dir)
            .finish()
    }
}

impl RunnerHandle {
    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<T>) -> Request,
    ) -> Result<T, RunError> {
        let (tx, rx) = oneshot::channel();
        self.tx
            .send(make(tx))
            .await
            .map_err(|_| RunError::Stopped)?;
        rx.await.map_err(|_| RunError::Stopped)
    }

    /// Creates a pipeline; returns its id.
    pub async fn submit(&self, submission: Submission) -> Result<u64, RunError> {
        self.submit_linked(submission, None).await
    }

    /// Creates a pipeline and, in the same transaction, applies `update` to
    /// a registered repository's record; returns the pipeline's id.
    pub async fn submit_linked(
        &self,
        submission: Submission,
        update: Option<RepoUpdate>,
    ) -> Result<u64, RunError> {
        // The slow part (planning against the repository, `git archive` of
        // the commit) runs here, not on the runner's loop; the loop only
        // stores the record and moves the archive into place.
        let files = self.files.clone();
        let base_url = self.base_url.clone();
        let prepared = tokio::task::spawn_blocking(move || prepare(submission, &files, &base_url))
            .await
            .map_err(|e| RunError::Other(e.to_string()))??;
        self.ask(|tx| Request::Submit(Box::new(prepared), update, tx))
            .await?
    }

    /// The state file (registered repositories live in it too).
    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Cancels a pipeline.
    pub async fn cancel(&self, id: u64) -> Result<(), RunError> {
        self.ask(|tx| Request::Cancel(id, tx)).await?
    }

    /// Retries a pipeline's failed and canceled jobs.
    pub async fn retry(&self, id: u64) -> Result<(), RunError> {
        self.ask(|tx| Request::Retry(id, tx)).await?
    }

    /// Retries one job of a pipeline (GitLab's "retry job"): a job that
    /// has ended (failed, canceled or passed) runs again as a new attempt,
    /// the jobs its failure skipped wait for it again, and the pipeline is
    /// running again; the other jobs keep their results and artifacts. A
    /// job still to run or running is refused
    /// ([`state::StateError::NotFinished`]) and nothing changes.
    pub async fn retry_job(&self, id: u64, job: &str) -> Result<(), RunError> {
        self.ask(|tx| Request::RetryJob(id, job.to_string(), tx))
            .await?
    }

    /// Plays a manual job.
    pub async fn play(&self, id: u64, job: &str) -> Result<(), RunError> {
        self.ask(|tx| Request::Play(id, job.to_string(), tx))
            .await?
    }

    /// A pipeline's record, as last persisted (read without the runner's
    /// loop; nothing is copied).
    pub async fn get(&self, id: u64) -> Result<Option<Arc<PipelineRecord>>, RunError> {
        Ok(self.published.read().get(&id).cloned())
    }

    /// Every pipeline, oldest first.
    pub async fn list(&self) -> Result<Vec<Arc<PipelineRecord>>, RunError> {
        Ok(self.published.read().values().cloned().collect())
    }

    /// At most `limit` pipelines (capped at [`MAX_LIST_LIMIT`]) whose ids
    /// are below `before` (all when `None`), newest first.
    pub fn list_page(&self, limit: usize, before: Option<u64>) -> Vec<Arc<PipelineRecord>> {
        let all = self.published.read();
        let end = before.unwrap_or(u64::MAX);
        all.range(..end)
            .rev()
            .take(limit.min(MAX_LIST_LIMIT))
            .map(|(_, rec)| rec.clone())
            .collect()
    }

    /// Runs the expiry sweep now (it also runs at start and every
    /// `sweep_interval`): deletes expired artifacts, logs and sources and
    /// marks them in their pipelines' records.
    pub async fn sweep_expired(&self) -> Result<SweepReport, RunError> {
        self.ask(Request::Sweep).await
    }

    /// A receiver that changes whenever any pipeline changes.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Who may read and write pipelines' files (for [`super::files::router`]).
    pub fn access(&self) -> Arc<dyn Access> {
        self.access.clone()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// The HTTP routes the agents fetch sources and artifacts from and
    /// upload artifacts and caches to; serve them at the configured
    /// `base_url`.
    pub fn router(&self) -> axum::Router {
        super::files::router(self.files.clone(), self.access())
    }

    /// The stored log of a job's attempt (from 1), masked.
    pub fn log_path(&self, pipeline: u64, job: usize, attempt: usize) -> PathBuf {
        PipelineRecord::log_path(&self.data_dir, pipeline, job, attempt)
    }

    /// How much of a log viewers get before it is cut
    /// ([`RunnerConfig::max_log_bytes`]).
    pub fn max_log_bytes(&self) -> u64 {
        self.max_log_bytes
    }

    /// Whether the log of task `task_id` (a job attempt's
    /// [`task_id`](super::state::Attempt::task_id)) is being collected
    /// from its agent now (tries after errors, and the waits between
    /// them, included).
    pub fn is_collecting_log(&self, task_id: &str) -> bool {
        self.collecting.contains(task_id)
    }

    /// Why the runner stopped on its own, if it did: a pipeline's record
    /// could not be stored (the runner fails closed rather than run jobs
    /// whose state it cannot keep). `None` while it runs and after a
    /// requested stop.
    pub fn failure(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Whether the stored log of job `job`'s attempt `attempt` (from 1),
    /// launched as task `task_id`, will not grow any more: it is not being
    /// collected, and its collection read both streams to their end or
    /// gave up after repeated errors (the log then ends with a line saying
    /// the rest could not be collected). An attempt never launched (no
    /// task) has nothing to collect. An attempt that has ended with this
    /// false has its log still to be collected (the runner resumes it at
    /// start and after errors).
    pub async fn is_log_whole(
        &self,
        pipeline: u64,
        job: usize,
        attempt: usize,
        task_id: &str,
    ) -> bool {
        if task_id.is_empty() {
            return true;
        }
        if self.collecting.contains(task_id) {
            return false;
        }
        let path = self.log_path(pipeline, job, attempt);
        tokio::task::spawn_blocking(move || collect::is_whole(&path))
            .await
            .unwrap_or(false)
    }
}

#[cfg(test)]
impl RunnerHandle {
    /// A handle to no runner (its requests fail with
    /// [`RunError::Stopped`]), on the state file `store`: for unit tests of
    /// what is built on a handle, without a cluster.
    pub(crate) fn detached(data_dir: PathBuf, store: Arc<Store>) -> RunnerHandle {
        let (tx, _) = mpsc::channel(1);
        let (_, changes) = watch::channel(0);
        let files = FileStore::new(data_dir.join("files"), 1 << 20)
            .unwrap_or_else(|e| panic!("cannot make the file store: {e}"));
        RunnerHandle {
            tx,
            changes,
            access: Arc::default(),
            data_dir,
            files,
            max_log_bytes: super::log::DEFAULT_MAX_LOG_BYTES,
            base_url: String::new(),
            store,
            collecting: Collecting::default(),
            published: Arc::default(),
            failure: Arc::default(),
        }
    }
}

/// Pipelines' tokens and projects, shared with the HTTP routes.
#[derive(Debug, Default)]
struct Tokens(RwLock<HashMap<u64, PipelineAccess>>);

impl Access for Tokens {
    fn pipeline(&self, id: u64) -> Option<PipelineAccess> {
        self.0.read().ok().and_then(|m| m.get(&id).cloned())
    }
}

impl Tokens {
    fn insert(&self, id: u64, access: PipelineAccess) {
        if let Ok(mut m) = self.0.write() {
            m.insert(id, access);
        }
    }
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// Starts the CI framework: opens its state, subscribes to the masters
/// and runs until `stop` resolves.
pub async fn start(
    config: RunnerConfig,
    stop: impl std::future::Future<Output = ()> + Send + 'static,
) -> Result<(RunnerHandle, tokio::task::JoinHandle<()>), RunError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| RunError::Other(format!("{}: {e}", config.data_dir.display())))?;
    let store = Arc::new(Store::open(config.data_dir.join("ci.redb"))?);
    let files = FileStore::new(config.data_dir.join("files"), config.max_upload)
        .map_err(|e| RunError::Other(format!("{}: {e}", config.data_dir.display())))?;
    let tokens = Arc::new(Tokens::default());
    let mut pipelines = BTreeMap::new();
    {
        let store = store.clone();
        let all: Vec<(u64, PipelineRecord)> = tokio::task::spawn_blocking(move || store.all())
            .await
            .map_err(|e| RunError::Other(e.to_string()))??;
        for (id, rec) in all {
            tokens.insert(
                id,
                PipelineAccess {
                    token: rec.token.clone(),
                    project_key: rec.project_key().to_string(),
                },
            );
            pipelines.insert(id, rec);
        }
    }
    let framework_config = FrameworkConfig::new("berth-ci")
        .roles([config.role.clone()])
        .failover_timeout(config.failover_timeout);
    // Offers unused while jobs wait come back after 1 s; with nothing to
    // run, after 30 s (and offers are suppressed until a job waits).
    let policy = Policy::default()
        .refuse(Some(Duration::from_secs(1)))
        .idle_refuse(Duration::from_secs(30))
        .kill_grace(Some(config.kill_grace));
    let runtime =
        |c: FrameworkConfig| Runtime::new(config.masters.clone(), c).policy(policy.clone());
    let id_file = config.data_dir.join(FRAMEWORK_ID_FILE);
    let stored = std::fs::read_to_string(&id_file)
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty());
    let connected = match &stored {
        Some(id) => match runtime(framework_config.clone().framework_id(id))
            .connect()
            .await
        {
            // Removed by the masters (torn down, or away past its
            // failover timeout; its tasks were killed): start afresh,
            // as a new framework, rather than never again.
            Err(RuntimeError::Sdk(SdkError::Removed(why))) => {
                warn!(framework = %id, "the stored framework id was removed by the masters ({why}); subscribing as a new framework");
                runtime(framework_config).connect().await
            }
            other => other,
        },
        None => runtime(framework_config).connect().await,
    };
    let connected =
        connected.map_err(|e| RunError::Other(format!("cannot subscribe to the masters: {e}")))?;
    let framework_id = connected.framework_id();
    if let Err(e) = std::fs::write(&id_file, &framework_id) {
        // Not stored, so never found again: do not leave it behind.
        if let Err(t) = connected.teardown().await {
            warn!(framework = %framework_id, "cannot tear the framework down: {t}");
        }
        return Err(RunError::Other(format!(
            "cannot store the framework id: {e}"
        )));
    }
    let (tx, rx) = mpsc::channel(64);
    let (changes_tx, changes) = watch::channel(0);
    let collecting = Collecting::default();
    let published = Arc::new(Published::default());
    let failure = Arc::new(Mutex::new(None));
    let handle = RunnerHandle {
        tx,
        changes,
        access: tokens.clone(),
        data_dir: config.data_dir.clone(),
        files: files.clone(),
        max_log_bytes: config.max_log_bytes,
        base_url: config.base_url.clone(),
        store: store.clone(),
        collecting: collecting.clone(),
        published: published.clone(),
        failure: failure.clone(),
    };
    let (tick, sweep) = CiFramework::intervals(&config);
    let mut framework = CiFramework {
        agent_book: AgentBook::new(config.masters.clone()),
        config,
        store,
        files,
        tokens,
        pipelines,
        framework_id,
        changes: changes_tx,
        collecting,
        collectors: tokio::task::JoinSet::new(),
        stop_collectors: CancellationToken::new(),
        wakes: HashMap::new(),
        published,
        requests: rx,
        stop: Box::pin(stop),
        tick,
        sweep,
        inbox: Vec::new(),
        intent: Mutex::new(None),
        failed: None,
        agents_seen: Arc::default(),
        stuck: BTreeMap::new(),
    };
    framework.publish_all();
    // What fell due or went missing while the framework was down.
    framework.settle().await?;
    // Before the handle is used: the logs still to be collected are
    // marked as being collected from here on.
    framework.resume_logs().await;
    let join = tokio::spawn(async move {
        let result = connected.run(&mut framework).await;
        framework.stop_collecting().await;
        let why = match result {
            Ok(Stopped::TornDown) => {
                info!("CI framework torn down");
                let file = framework.config.data_dir.join(FRAMEWORK_ID_FILE);
                if let Err(e) = std::fs::remove_file(&file)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    warn!("cannot remove {}: {e}", file.display());
                }
                None
            }
            Ok(Stopped::Left) => None,
            // Its own failure says it best ("cannot store pipeline 3: ...").
            Err(e) => Some(framework.failure().unwrap_or_else(|| e.to_string())),
        };
        match why {
            Some(why) => {
                error!("the CI runner stops: {why}");
                *failure
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(why);
            }
            None => info!("CI runner stopped"),
        }
    });
    Ok((handle, join))
}

/// Which of `rec`'s jobs wait for their resource group.
fn waits(rec: &PipelineRecord, resources: &Assignment) -> Vec<bool> {
    (0..rec.plan.jobs.len())
        .map(|i| resources.is_waiting(rec.id, i))
        .collect()
}

/// A copy of `rec` that says which of its jobs wait for their resource
/// group.
fn with_waits(rec: &PipelineRecord, resources: &Assignment) -> PipelineRecord {
    let mut copy = rec.clone();
    copy.waiting_for_resource = waits(rec, resources);
    copy
}

/// A retried pipeline runs again: its jobs advance, and it is no longer
/// superseded (auto-canceled) by a newer one.
fn running_again(rec: &mut PipelineRecord) {
    rec.state.advance(SystemTime::now());
    rec.auto_canceled_by = None;
}

#[cfg(test)]
pub(crate) mod tests;
