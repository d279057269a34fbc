//! The CI framework itself: a berth framework (through the SDK) that runs
//! pipelines' jobs as tasks.
//!
//! One event loop owns every pipeline. It
//! - takes submissions, cancels, retries (of a pipeline's failed jobs, or
//!   of one job) and plays from [`RunnerHandle`];
//! - launches pending jobs into offers: each job is a task whose command is
//!   the job's rendered script, whose environment is the job's variables,
//!   that runs in the job's image (Docker) or as a process (GitLab's shell
//!   executor) where the job has none, and whose sandbox the agent fills
//!   before the script starts: the commit's files (under the project's
//!   directory), the artifacts of the jobs it depends on, its caches;
//! - asks the agent to upload the job's artifacts and caches after it;
//! - follows the job's output from the agent, masks secrets, and stores it;
//! - turns task updates into job results through the pipeline's
//!   [state machine](super::state), and persists every change in the
//!   [store](super::store) before acting on it. A write that fails stops
//!   the runner (fail closed): nothing more is stored or launched, the
//!   loop ends, and [`RunnerHandle::failure`] says why (`berth ci serve`
//!   exits non-zero with it). Its jobs run on for the framework's failover
//!   timeout, for a restarted runner to re-attach to.
//!
//! On restart it reads its pipelines back and re-attaches to the jobs that
//! were running: it re-arms their time limits from their original start
//! (a limit that passed meanwhile kills the job at once, with the timeout
//! reason), asks the master for their tasks' real state (explicit
//! reconciliation: a task that ended meanwhile ends its job with that
//! result, one the master does not know fails it as a runner system
//! failure, retried per `retry:`), and goes on collecting their logs from
//! where they stopped (see [`super::collect`]) — the logs of jobs that
//! have ended too, whenever a collection had not finished.
//!
//! A pipeline is created whole or not at all: its source archive is
//! written (to a temporary file) before its record is stored, and moved
//! into place right after. A pipeline whose archive is missing all the
//! same (the framework stopped between the two) fails the jobs it would
//! launch, with the reason in their logs, instead of launching them.
//!
//! The record it keeps per pipeline is [`super::record`] (shared with the
//! expiry sweep and the resource groups, which do not depend on the
//! runner); a job becomes a task in the pure `task` module.
//!
//! The loop does only quick, ordered work. A submission is parsed,
//! planned and archived before it reaches the loop (in
//! [`RunnerHandle::submit_linked`], on a blocking thread); agents' addresses
//! are looked up by the log collectors; and reads (`get`, `list`, the log
//! endpoints) come from per-pipeline snapshots the loop publishes on every
//! change, never through the loop.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use berth_sdk::proto as pb;
use berth_sdk::{Event, Framework, FrameworkConfig, Strategy, pack_offers};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tracing::{error, info, warn};

use super::collect::{self, AgentBook, Collecting, LogRetry, LogSource};
use super::expiry::{self, SweepReport};
use super::files::{Access, FileStore, PipelineAccess};
pub use super::record::PipelineRecord;
use super::record::{fail_unlaunched, parse_task_id, task_id};
use super::resource_group::{self, Assignment, GroupJob};
use super::source::{self, Revision};
use super::state::{self, FailureReason, JobEnd, JobNode, JobStatus, Pipeline};
use super::store::{RepoUpdate, Store, StoreError};
pub use super::task::tags_match;
use super::task::{TaskDefaults, below_minimums, task_for};
use crate::{Config, Context, ParseOptions, PipelineSource, Plan, PlannedJob, SecretVariable};

/// Pending jobs' tasks, and the jobs the masters would refuse.
#[derive(Default)]
struct PendingTasks {
    /// Tasks to pack, with the job's tags.
    tasks: Vec<(pb::TaskInfo, Vec<String>)>,
    /// Pipeline, job index and why.
    refused: Vec<(u64, usize, String)>,
}

/// The file in the data directory holding the framework's id.
const FRAMEWORK_ID_FILE: &str = "framework-id";

/// How long a teardown at stop may take.
const TEARDOWN_TIMEOUT: Duration = Duration::from_secs(15);

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

/// A submission whose slow part is done, off the runner's loop: parsed,
/// planned once (which reads what the plan needs of the repository), and
/// its source archive written to a temporary file.
struct Prepared {
    submission: Submission,
    config: Config,
    repository: Arc<MemoRepository>,
    archive: TempArchive,
}

/// A source archive under its temporary name; removed when dropped unless
/// it was moved into place.
struct TempArchive(PathBuf);

impl Drop for TempArchive {
    fn drop(&mut self) {
        remove_temp(&self.0);
    }
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
        let prepared = tokio::task::spawn_blocking(move || prepare(submission, &files))
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

/// The ordering view of a planned job for the state machine.
fn node(plan: &Plan, job: &PlannedJob) -> JobNode {
    let index = |name: &str| plan.jobs.iter().position(|j| j.name == name);
    JobNode {
        name: job.name.clone(),
        stage: job.stage_index,
        needs: job
            .needs
            .as_ref()
            .map(|needs| needs.iter().filter_map(|n| index(&n.job)).collect()),
        when: match job.when {
            crate::When::OnFailure => state::When::OnFailure,
            crate::When::Always => state::When::Always,
            crate::When::Manual => state::When::Manual,
            crate::When::Delayed => state::When::Delayed(job.start_in.unwrap_or_default()),
            crate::When::OnSuccess | crate::When::Never => state::When::OnSuccess,
        },
        allow_failure: state::AllowFailure {
            any: job.allow_failure.any,
            exit_codes: job.allow_failure.exit_codes.clone(),
        },
        retry: state::RetryPolicy {
            max: job.retry.max,
            // `always` listed next to exit codes still means every failure.
            when: if job.retry.when.iter().any(|w| w == "always") {
                FailureReason::ALL.to_vec()
            } else {
                job.retry
                    .when
                    .iter()
                    .filter_map(|w| FailureReason::parse(w))
                    .collect()
            },
            exit_codes: job.retry.exit_codes.clone(),
        },
    }
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
    // It reconciles on every SUBSCRIBED itself: its running jobs'
    // tasks explicitly (an unknown one is LOST), then the rest implicitly.
    let framework_config = FrameworkConfig::new("berth-ci")
        .reconcile_on_resubscribe(false)
        .roles([config.role.clone()])
        .failover_timeout(config.failover_timeout);
    let id_file = config.data_dir.join(FRAMEWORK_ID_FILE);
    let stored = std::fs::read_to_string(&id_file)
        .ok()
        .map(|id| id.trim().to_string())
        .filter(|id| !id.is_empty());
    let subscribed = match stored {
        Some(id) => {
            match berth_sdk::subscribe(
                config.masters.clone(),
                framework_config.clone().framework_id(&id),
            )
            .await
            {
                // Removed by the masters (torn down, or away past its
                // failover timeout; its tasks were killed): start afresh,
                // as a new framework, rather than never again.
                Err(berth_sdk::SdkError::Removed(why)) => {
                    warn!(framework = %id, "the stored framework id was removed by the masters ({why}); subscribing as a new framework");
                    berth_sdk::subscribe(config.masters.clone(), framework_config).await
                }
                other => other,
            }
        }
        None => berth_sdk::subscribe(config.masters.clone(), framework_config).await,
    };
    let (framework, events) =
        subscribed.map_err(|e| RunError::Other(format!("cannot subscribe to the masters: {e}")))?;
    if let Err(e) = std::fs::write(&id_file, framework.id()) {
        // Not stored, so never found again: do not leave it behind.
        if let Err(t) = framework.teardown().await {
            warn!(framework = %framework.id(), "cannot tear the framework down: {t}");
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
    let config_masters = config.masters.clone();
    let handle = RunnerHandle {
        tx,
        changes,
        access: tokens.clone(),
        data_dir: config.data_dir.clone(),
        files: files.clone(),
        max_log_bytes: config.max_log_bytes,
        store: store.clone(),
        collecting: collecting.clone(),
        published: published.clone(),
        failure: failure.clone(),
    };
    let mut runner = Runner {
        config,
        store,
        files,
        tokens,
        pipelines,
        framework,
        changes: changes_tx,
        deadlines: HashMap::new(),
        collecting,
        collectors: tokio::task::JoinSet::new(),
        stop_collectors: CancellationToken::new(),
        agent_book: AgentBook::new(config_masters),
        wakes: HashMap::new(),
        published,
        failure,
    };
    runner.publish_all();
    runner.rearm_deadlines();
    runner.fail_missing_sources().await;
    // Before the handle is used: the logs still to be collected are
    // marked as being collected from here on.
    runner.resume_logs().await;
    let join = tokio::spawn(async move { runner.run(events, rx, stop).await });
    Ok((handle, join))
}

struct Runner {
    config: RunnerConfig,
    store: Arc<Store>,
    files: FileStore,
    tokens: Arc<Tokens>,
    pipelines: BTreeMap<u64, PipelineRecord>,
    framework: Framework,
    changes: watch::Sender<u64>,
    /// Running tasks' time limits.
    deadlines: HashMap<String, Instant>,
    /// Tasks whose logs are being collected (shared with the handle).
    collecting: Collecting,
    /// The log collections; each ends with its task's id.
    collectors: tokio::task::JoinSet<String>,
    /// Stops the log collections when the runner stops.
    stop_collectors: CancellationToken,
    /// Agents' addresses (for logs).
    agent_book: AgentBook,
    /// Per task whose log is being collected: cuts the collection's wait
    /// before its next try short (a new update of the task came).
    wakes: HashMap<String, Arc<Notify>>,
    /// What the API reads (shared with the handle).
    published: Arc<Published>,
    /// Why the runner stops on its own: set by the first failed durable
    /// write, after which nothing more is written or launched and the
    /// loop ends (shared with the handle).
    failure: Arc<Mutex<Option<String>>>,
}

impl Runner {
    async fn run(
        &mut self,
        mut events: berth_sdk::Events,
        mut requests: mpsc::Receiver<Request>,
        stop: impl std::future::Future<Output = ()> + Send,
    ) {
        tokio::pin!(stop);
        self.resend_kills().await;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        // `interval` refuses zero.
        let mut sweep =
            tokio::time::interval(self.config.sweep_interval.max(Duration::from_millis(10)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut stop => break,
                event = events.next() => match event {
                    Some(event) => self.on_event(event).await,
                    None => break,
                },
                request = requests.recv() => match request {
                    Some(request) => self.on_request(request).await,
                    None => break,
                },
                _ = tick.tick() => self.on_tick().await,
                _ = sweep.tick() => {
                    self.sweep().await;
                }
            }
            if let Some(why) = self.failed() {
                error!("the CI runner stops: {why}");
                break;
            }
        }
        self.stop_collecting().await;
        if self.config.teardown_on_stop {
            self.teardown().await;
        }
        info!("CI runner stopped");
    }

    /// Removes the framework from the masters (they kill its tasks) and
    /// forgets its id, bounded in time: a cluster that does not answer
    /// removes it after its failover timeout anyway.
    async fn teardown(&mut self) {
        let id = self.framework.id().to_string();
        match tokio::time::timeout(TEARDOWN_TIMEOUT, self.framework.teardown()).await {
            Ok(Ok(())) => {
                info!(framework = %id, "CI framework torn down");
                let file = self.config.data_dir.join(FRAMEWORK_ID_FILE);
                if let Err(e) = std::fs::remove_file(&file)
                    && e.kind() != std::io::ErrorKind::NotFound
                {
                    warn!("cannot remove {}: {e}", file.display());
                }
            }
            Ok(Err(e)) => warn!(
                framework = %id,
                "cannot tear the CI framework down ({e}); the masters remove it after its failover timeout"
            ),
            Err(_) => warn!(
                framework = %id,
                "the CI framework's teardown did not finish within {TEARDOWN_TIMEOUT:?}; the masters remove it after its failover timeout"
            ),
        }
    }

    /// After a restart: the time limits of the jobs that were running,
    /// counted from when they started (see [`deadline`]).
    fn rearm_deadlines(&mut self) {
        for rec in self.pipelines.values() {
            for j in rec.state.running() {
                let Some(job) = rec.state.job(j) else {
                    continue;
                };
                let Some(attempt) = job.attempts.last() else {
                    continue;
                };
                if job.status != JobStatus::Running {
                    // Being canceled: its kill is sent again instead.
                    continue;
                }
                let timeout = rec.plan.jobs[j]
                    .timeout
                    .unwrap_or(self.config.default_timeout);
                self.deadlines
                    .insert(attempt.task_id.clone(), deadline(attempt.started, timeout));
            }
        }
    }

    /// After a restart: kills again the tasks of jobs that were being
    /// canceled (the kill may not have reached them).
    async fn resend_kills(&self) {
        for rec in self.pipelines.values() {
            for j in rec.state.running() {
                let Some(job) = rec.state.job(j) else {
                    continue;
                };
                if job.status != JobStatus::Canceling {
                    continue;
                }
                if let Some(attempt) = job.attempts.last()
                    && let Err(e) = self
                        .framework
                        .kill(&attempt.task_id, Some(self.config.kill_grace))
                        .await
                {
                    warn!(task = %attempt.task_id, "cannot kill: {e}");
                }
            }
        }
    }

    /// Asks the master for the state of every task of a job recorded as
    /// running (explicitly, so that a task it no longer knows is reported
    /// lost), and of all our other tasks. The answers arrive as updates.
    async fn reconcile(&self) {
        let tasks: Vec<(String, String)> = self
            .pipelines
            .values()
            .flat_map(|rec| {
                rec.state.running().into_iter().filter_map(move |j| {
                    let attempt = rec.state.job(j)?.attempts.last()?;
                    let agent = rec.agents.get(j).cloned().unwrap_or_default();
                    Some((attempt.task_id.clone(), agent))
                })
            })
            .collect();
        if !tasks.is_empty() {
            info!(tasks = tasks.len(), "reconciling the running jobs' tasks");
            if let Err(e) = self.framework.reconcile(tasks).await {
                warn!("cannot reconcile the running jobs: {e}");
            }
        }
        if let Err(e) = self.framework.reconcile_all().await {
            warn!("cannot reconcile: {e}");
        }
    }

    /// Stops every log collection where it is (its position says where to
    /// go on) and waits for them.
    async fn stop_collecting(&mut self) {
        self.stop_collectors.cancel();
        let collectors = &mut self.collectors;
        let all = async { while collectors.join_next().await.is_some() {} };
        if tokio::time::timeout(Duration::from_secs(10), all)
            .await
            .is_err()
        {
            warn!("log collections did not stop within 10 s; aborting them");
            self.collectors.abort_all();
        }
    }

    /// Why the runner must stop, if a durable write failed.
    fn failed(&self) -> Option<String> {
        self.failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Records the first failed durable write: the loop ends after the
    /// current step, and nothing more is stored or launched meanwhile.
    fn fail(&self, why: String) {
        let mut failure = self
            .failure
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if failure.is_none() {
            *failure = Some(why);
        }
    }

    /// Stores pipeline `id`'s record and publishes it. A failed write
    /// stops the runner (fail closed: jobs must not run on state that is
    /// not kept); after one, nothing more is stored.
    async fn persist(&mut self, id: u64) {
        if self.failed().is_some() {
            return;
        }
        let Some(rec) = self.pipelines.get_mut(&id) else {
            return;
        };
        if rec.finished_ms.is_none() && rec.state.status().is_finished() {
            rec.finished_ms = Some(now_ms());
        } else if !rec.state.status().is_finished() {
            rec.finished_ms = None;
        }
        let rec = rec.clone();
        let store = self.store.clone();
        let stored = match tokio::task::spawn_blocking(move || store.put(id, &rec)).await {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = stored {
            self.fail(format!("cannot store pipeline {id}: {e}"));
            return;
        }
        self.publish(id);
        self.changes.send_modify(|v| *v += 1);
    }

    /// Publishes every pipeline (at start).
    fn publish_all(&self) {
        let resources = self.resources();
        let mut published = self.published.write();
        for (id, rec) in &self.pipelines {
            published.insert(*id, Arc::new(with_waits(rec, &resources)));
        }
    }

    /// Publishes pipeline `id` as it is now, and the unfinished pipelines
    /// whose resource-group waits changed with it (a finished pipeline's
    /// waits change only when it finishes: it is `id` then).
    fn publish(&self, id: u64) {
        let resources = self.resources();
        let mut published = self.published.write();
        if let Some(rec) = self.pipelines.get(&id) {
            published.insert(id, Arc::new(with_waits(rec, &resources)));
        }
        for rec in self.pipelines.values() {
            if rec.id == id
                || rec.plan.jobs.iter().all(|j| j.resource_group.is_none())
                || rec.status().is_finished()
            {
                continue;
            }
            let waits = waits(rec, &resources);
            if published
                .get(&rec.id)
                .is_some_and(|p| p.waiting_for_resource == waits)
            {
                continue;
            }
            let mut copy = rec.clone();
            copy.waiting_for_resource = waits;
            published.insert(rec.id, Arc::new(copy));
        }
    }

    async fn on_request(&mut self, request: Request) {
        match request {
            Request::Submit(prepared, update, reply) => {
                let result = self.submit(*prepared, update).await;
                if result.is_ok() {
                    self.revive().await;
                }
                let _ = reply.send(result);
            }
            Request::Cancel(id, reply) => {
                let result = self.cancel(id, None).await;
                let _ = reply.send(result);
            }
            Request::Retry(id, reply) => {
                let result = match self.pipelines.get_mut(&id) {
                    None => Err(RunError::NoSuchPipeline(id)),
                    Some(rec) => {
                        rec.state.retry();
                        running_again(rec);
                        Ok(())
                    }
                };
                self.changed_on_request(id, &result).await;
                let _ = reply.send(result);
            }
            Request::RetryJob(id, job, reply) => {
                let result = self.job_mut(id, &job).and_then(|(rec, i)| {
                    rec.state.retry_job(i).map_err(RunError::from).map(|()| {
                        info!(pipeline = id, job = %job, "job retried");
                        running_again(rec);
                    })
                });
                self.changed_on_request(id, &result).await;
                let _ = reply.send(result);
            }
            Request::Play(id, job, reply) => {
                let result = self
                    .job_mut(id, &job)
                    .and_then(|(rec, i)| rec.state.play(i).map_err(RunError::from));
                self.changed_on_request(id, &result).await;
                let _ = reply.send(result);
            }
            Request::Sweep(reply) => {
                let report = self.sweep().await;
                let _ = reply.send(report);
            }
        }
    }

    /// Deletes expired artifacts, logs and sources (see [`expiry`]).
    async fn sweep(&mut self) -> SweepReport {
        let policy = self.config.expiry_policy();
        let (report, changed) = expiry::sweep(
            &mut self.pipelines,
            &self.files,
            &self.config.data_dir,
            &policy,
            SystemTime::now(),
            &self.collecting,
        )
        .await;
        for id in changed {
            self.persist(id).await;
        }
        report
    }

    /// Stores a prepared submission (see [`prepare`]) and moves its
    /// archive into place: the quick, ordered part, so ids follow the order
    /// the submissions reach the loop.
    async fn submit(
        &mut self,
        prepared: Prepared,
        update: Option<RepoUpdate>,
    ) -> Result<u64, RunError> {
        let files = self.files.clone();
        let store = self.store.clone();
        let default_branch = prepared.submission.revision.default_branch.clone();
        let created = tokio::task::spawn_blocking(move || -> Result<PipelineRecord, RunError> {
            let Prepared {
                submission,
                config,
                repository,
                archive,
            } = prepared;
            // The archive is written already: a pipeline (and a registered
            // repository's memory of having run the commit) is stored only
            // once its source is there. Dropping `archive` removes it.
            let rec = create_record(&store, update, &config, &submission, &*repository)?;
            if let Err(e) = std::fs::rename(&archive.0, files.source(rec.id)) {
                // Stored already: its jobs fail as they come to run (see
                // `fail_missing_sources`), with the reason in their logs.
                tracing::error!(
                    pipeline = rec.id,
                    "cannot move the source archive into place: {e}"
                );
            }
            Ok(rec)
        })
        .await
        .map_err(|e| RunError::Other(e.to_string()))??;
        let id = created.id;
        self.tokens.insert(
            id,
            PipelineAccess {
                token: created.token.clone(),
                project_key: created.project_key().to_string(),
            },
        );
        let mut rec = created;
        rec.state.advance(SystemTime::now());
        self.pipelines.insert(id, rec);
        self.persist(id).await;
        info!(pipeline = id, "pipeline created");
        if self.config.auto_cancel {
            self.auto_cancel_superseded(id, &default_branch).await;
        }
        Ok(id)
    }

    /// GitLab's auto-cancel of redundant pipelines: pipeline `new`, for a
    /// branch other than `default_branch`, cancels the older unfinished
    /// pipelines of the same project and branch whose started jobs are all
    /// interruptible. The others are left to finish.
    async fn auto_cancel_superseded(&mut self, new: u64, default_branch: &str) {
        let Some(rec) = self.pipelines.get(&new) else {
            return;
        };
        if !rec.branch || rec.ref_name == default_branch {
            return;
        }
        let superseded: Vec<(u64, bool)> = self
            .pipelines
            .range(..new)
            .map(|(_, old)| old)
            .filter(|old| {
                old.branch
                    && old.ref_name == rec.ref_name
                    && old.project_key() == rec.project_key()
                    && !old.state.is_canceled()
                    && !old.status().is_finished()
            })
            .map(|old| (old.id, old.is_interruptible()))
            .collect();
        for (old, interruptible) in superseded {
            if !interruptible {
                info!(
                    pipeline = old,
                    by = new,
                    "not auto-canceling a superseded pipeline: a job that is not interruptible has started"
                );
                continue;
            }
            info!(
                pipeline = old,
                by = new,
                "auto-canceling a superseded pipeline"
            );
            if let Err(e) = self.cancel(old, Some(new)).await {
                warn!(pipeline = old, "cannot auto-cancel: {e}");
            }
        }
    }

    /// Cancels pipeline `id`; `by` is the newer pipeline that auto-cancels
    /// it, if that is why.
    async fn cancel(&mut self, id: u64, by: Option<u64>) -> Result<(), RunError> {
        let rec = self
            .pipelines
            .get_mut(&id)
            .ok_or(RunError::NoSuchPipeline(id))?;
        let finished = rec.state.jobs().iter().all(|j| j.status.is_finished());
        if by.is_some() && !finished {
            rec.auto_canceled_by = by;
        }
        let kill = rec.state.cancel();
        let tasks: Vec<String> = kill
            .iter()
            .filter_map(|&i| rec.state.job(i).and_then(|j| j.attempts.last()))
            .map(|a| a.task_id.clone())
            .collect();
        self.persist(id).await;
        for task in tasks {
            if let Err(e) = self
                .framework
                .kill(&task, Some(self.config.kill_grace))
                .await
            {
                warn!(task = %task, "cannot kill: {e}");
            }
        }
        // Jobs of other pipelines may have waited for a resource group a
        // canceled pending job was first in line for.
        if self.any_pending() {
            self.revive().await;
        }
        Ok(())
    }

    /// Pipeline `id` and the index of its job `job`.
    fn job_mut(&mut self, id: u64, job: &str) -> Result<(&mut PipelineRecord, usize), RunError> {
        let rec = self
            .pipelines
            .get_mut(&id)
            .ok_or(RunError::NoSuchPipeline(id))?;
        let i = rec
            .state
            .find(job)
            .ok_or_else(|| RunError::NoSuchJob(id, job.to_string()))?;
        Ok((rec, i))
    }

    /// After a change to pipeline `id` asked for through the handle
    /// (retry, play): when it worked, stores the pipeline and asks for
    /// offers again for the jobs it made pending.
    async fn changed_on_request<T>(&mut self, id: u64, result: &Result<T, RunError>) {
        if result.is_ok() {
            self.persist(id).await;
            self.revive().await;
        }
    }

    async fn revive(&self) {
        if let Err(e) = self.framework.revive(vec![]).await {
            warn!("cannot revive offers: {e}");
        }
    }

    /// Whether any pipeline has a job waiting for an offer (or for its
    /// resource group).
    fn any_pending(&self) -> bool {
        self.pipelines
            .values()
            .any(|rec| !rec.state.pending().is_empty())
    }

    /// Which pending jobs wait for their resource group (a group per
    /// project key and name), over every unfinished pipeline, oldest first.
    fn resources(&self) -> Assignment {
        let jobs: Vec<GroupJob<'_>> = self
            .pipelines
            .values()
            .filter(|rec| !rec.status().is_finished())
            .flat_map(|rec| {
                rec.plan
                    .jobs
                    .iter()
                    .enumerate()
                    .filter_map(move |(i, planned)| {
                        Some(GroupJob {
                            pipeline: rec.id,
                            job: i,
                            project: rec.project_key(),
                            group: planned.resource_group.as_deref()?,
                            status: rec.state.job(i)?.status,
                        })
                    })
            })
            .collect();
        resource_group::assign(&jobs)
    }

    async fn on_tick(&mut self) {
        // Reap the log collections that have ended.
        while let Some(ended) = self.collectors.try_join_next() {
            if let Ok(task) = ended
                && !self.collecting.contains(&task)
            {
                self.wakes.remove(&task);
            }
        }
        let now = SystemTime::now();
        let ids: Vec<u64> = self
            .pipelines
            .iter()
            .filter(|(_, r)| r.state.next_wakeup().is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for id in ids {
            if let Some(rec) = self.pipelines.get_mut(&id) {
                rec.state.advance(now);
            }
            self.persist(id).await;
            self.revive().await;
        }
        let expired: Vec<String> = self
            .deadlines
            .iter()
            .filter(|(_, at)| **at <= Instant::now())
            .map(|(t, _)| t.clone())
            .collect();
        for task in expired {
            self.deadlines.remove(&task);
            if let Some((p, j, _)) = parse_task_id(&task)
                && let Some(rec) = self.pipelines.get_mut(&p)
                && let Some(slot) = rec.kill_reasons.get_mut(j)
            {
                *slot = Some(FailureReason::JobExecutionTimeout);
                // Stored, so that the reason survives a restart before
                // the task's end arrives.
                self.persist(p).await;
            }
            warn!(task = %task, "the job ran past its timeout; killing it");
            if let Err(e) = self
                .framework
                .kill(&task, Some(self.config.kill_grace))
                .await
            {
                warn!(task = %task, "cannot kill: {e}");
            }
        }
    }

    async fn on_event(&mut self, event: Event) {
        match event {
            Event::Subscribed { .. } => self.reconcile().await,
            Event::Offers(offers) => self.on_offers(offers).await,
            Event::Update(status) => self.on_update(status).await,
            _ => {}
        }
    }

    /// The pending jobs, oldest pipeline first, with their tasks; not the
    /// ones waiting for their resource group.
    /// The tasks of the pending jobs to pack into offers, with their tags;
    /// and the jobs whose task asks for less than every task (or every
    /// container task) needs (`BERTH_CPUS`, `BERTH_MEMORY`), with why: the
    /// masters would refuse them, and with them the other tasks of the
    /// same accept.
    fn pending_tasks(&self) -> PendingTasks {
        let resources = self.resources();
        let mut out = PendingTasks::default();
        for rec in self.pipelines.values() {
            for i in rec.state.pending() {
                if resources.is_waiting(rec.id, i) {
                    continue;
                }
                let attempt = rec.state.job(i).map_or(0, |j| j.attempts.len()) + 1;
                let defaults = TaskDefaults {
                    base_url: &self.config.base_url,
                    cpus: self.config.default_cpus,
                    mem: self.config.default_mem,
                    kill_grace: self.config.kill_grace,
                };
                match task_for(rec, i, attempt, &defaults) {
                    Ok(task) => match below_minimums(&task) {
                        Some(why) => out.refused.push((rec.id, i, why)),
                        None => out.tasks.push((task, rec.plan.jobs[i].tags.clone())),
                    },
                    Err(e) => warn!(pipeline = rec.id, job = i, "cannot build the task: {e}"),
                }
            }
        }
        out
    }

    /// Fails the jobs the masters would refuse (see [`Self::pending_tasks`])
    /// with `scheduler_failure`, without launching them.
    async fn fail_refused(&mut self, refused: Vec<(u64, usize, String)>) {
        let now = SystemTime::now();
        let mut changed = BTreeSet::new();
        for (id, i, why) in refused {
            let Some(rec) = self.pipelines.get_mut(&id) else {
                continue;
            };
            let message =
                format!("{why} (set BERTH_CPUS and BERTH_MEMORY, in MiB, to what the job needs)");
            warn!(pipeline = id, job = i, "{message}");
            match fail_unlaunched(
                rec,
                i,
                FailureReason::SchedulerFailure,
                "the cluster would refuse it",
                &message,
                &self.config.data_dir,
                now,
            )
            .await
            {
                Ok(()) => {
                    rec.state.advance(now);
                    changed.insert(id);
                }
                Err(e) => warn!(pipeline = id, job = i, "cannot fail the job: {e}"),
            }
        }
        for id in changed {
            self.persist(id).await;
        }
    }

    async fn on_offers(&mut self, offers: Vec<pb::Offer>) {
        self.fail_missing_sources().await;
        let failed = expiry::fail_expired_dependencies(
            &mut self.pipelines,
            &self.config.data_dir,
            SystemTime::now(),
        )
        .await;
        for id in failed {
            self.persist(id).await;
        }
        let PendingTasks {
            tasks: pending,
            refused,
        } = self.pending_tasks();
        if !refused.is_empty() {
            self.fail_refused(refused).await;
        }
        if pending.is_empty() {
            let ids = offers.iter().map(|o| o.id.clone()).collect();
            if let Err(e) = self
                .framework
                .decline(ids, Some(Duration::from_secs(30)))
                .await
            {
                warn!("cannot decline: {e}");
            }
            return;
        }
        let agent_of: HashMap<String, String> = offers
            .iter()
            .map(|o| (o.id.clone(), o.agent_id.clone()))
            .collect();
        // Tagged jobs first, each into the offers of agents with its tags;
        // then the others into what is left.
        let mut left: Vec<pb::Offer> = offers;
        let mut launches: Vec<(String, Vec<pb::TaskInfo>)> = Vec::new();
        let (tagged, untagged): (Vec<_>, Vec<_>) =
            pending.into_iter().partition(|(_, tags)| !tags.is_empty());
        for (task, tags) in tagged {
            let fitting: Vec<pb::Offer> = left
                .iter()
                .filter(|o| tags_match(&tags, &o.attributes))
                .cloned()
                .collect();
            if let Ok(plan) = pack_offers(&fitting, vec![task], Strategy::FirstFit)
                && let Some((offer, tasks)) = plan.launches.into_iter().next()
            {
                left.retain(|o| o.id != offer);
                launches.push((offer, tasks));
            }
        }
        let tasks: Vec<pb::TaskInfo> = untagged.into_iter().map(|(t, _)| t).collect();
        let unused = match pack_offers(&left, tasks, Strategy::FirstFit) {
            Ok(plan) => {
                launches.extend(plan.launches);
                plan.unused
            }
            Err(e) => {
                warn!("cannot pack jobs: {e}");
                left.iter().map(|o| o.id.clone()).collect()
            }
        };
        for (offer, tasks) in launches {
            if self.failed().is_some() {
                // Its offers expire; the runner is stopping.
                break;
            }
            let started: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
            let agent = agent_of.get(&offer).cloned().unwrap_or_default();
            match self.framework.accept(vec![offer], tasks, None).await {
                Ok(_) => {
                    for task in started {
                        self.launched(&task, &agent).await;
                    }
                }
                Err(e) => warn!("cannot launch jobs: {e}"),
            }
        }
        if !unused.is_empty()
            && let Err(e) = self
                .framework
                .decline(unused, Some(Duration::from_secs(1)))
                .await
        {
            warn!("cannot decline: {e}");
        }
    }

    async fn launched(&mut self, task: &str, agent: &str) {
        let Some((p, j, _)) = parse_task_id(task) else {
            return;
        };
        let Some(rec) = self.pipelines.get_mut(&p) else {
            return;
        };
        if let Err(e) = rec.state.started(j, task, SystemTime::now()) {
            warn!(task, "launched a job that was not pending: {e}");
        }
        if !agent.is_empty() {
            rec.attempt_agents
                .insert(task.to_string(), agent.to_string());
            if let Some(slot) = rec.agents.get_mut(j) {
                *slot = agent.to_string();
            }
        }
        if let Some(slot) = rec.kill_reasons.get_mut(j) {
            *slot = None;
        }
        let timeout = rec.plan.jobs[j]
            .timeout
            .unwrap_or(self.config.default_timeout);
        self.deadlines
            .insert(task.to_string(), Instant::now() + timeout);
        self.persist(p).await;
    }

    async fn on_update(&mut self, status: pb::TaskStatus) {
        let Some((p, j, attempt)) = parse_task_id(&status.task_id) else {
            return;
        };
        let state = status.state();
        let Some(rec) = self.pipelines.get_mut(&p) else {
            return;
        };
        let current = rec
            .state
            .job(j)
            .and_then(|job| job.attempts.last())
            .is_some_and(|a| a.task_id == status.task_id);
        if !current {
            return;
        }
        if !status.agent_id.is_empty() {
            if let Some(slot) = rec.agents.get_mut(j) {
                *slot = status.agent_id.clone();
            }
            rec.attempt_agents
                .insert(status.task_id.clone(), status.agent_id.clone());
        }
        if state == pb::TaskState::TaskRunning
            || state == pb::TaskState::TaskStarting
            || state.is_terminal()
        {
            // Starts collecting the log, or goes on where an earlier
            // collection stopped (a restart of the framework; a task that
            // ended while it was down), before the job can show as ended.
            self.follow_log(p, j, attempt);
        }
        if !state.is_terminal() {
            return;
        }
        let Some(rec) = self.pipelines.get_mut(&p) else {
            return;
        };
        self.deadlines.remove(&status.task_id);
        let killed_for = rec.kill_reasons.get(j).copied().flatten();
        let end = job_end(&status, killed_for);
        let running = matches!(
            rec.state.job(j).map(|job| job.status),
            Some(JobStatus::Running | JobStatus::Canceling)
        );
        if !running {
            return;
        }
        let retried = match rec.state.finished(j, end, SystemTime::now()) {
            Ok(retried) => retried,
            Err(e) => {
                warn!(task = %status.task_id, "{e}");
                return;
            }
        };
        rec.state.advance(SystemTime::now());
        self.persist(p).await;
        // Jobs of this pipeline may have become pending, or jobs of any
        // pipeline may have waited for the resource group this job held.
        if retried || self.any_pending() {
            self.revive().await;
        }
    }

    /// Collects the log of job `j`'s attempt `attempt` from the agent it
    /// ran on, from where it stopped, trying again after errors (see
    /// [`collect::follow`]). If it is being collected already, a collection
    /// waiting to try again tries now.
    fn follow_log(&mut self, p: u64, j: usize, attempt: usize) {
        let task = task_id(p, j, attempt);
        if self.collecting.contains(&task) {
            if let Some(wake) = self.wakes.get(&task) {
                wake.notify_one();
            }
            return;
        }
        let Some(rec) = self.pipelines.get(&p) else {
            return;
        };
        let Some(collecting) = self.collecting.start(&task) else {
            return;
        };
        let source = LogSource {
            agent: rec.agent_of(j, &task),
            framework_id: self.framework.id(),
            task: task.clone(),
            secrets: rec.masked_values.clone(),
            path: PipelineRecord::log_path(&self.config.data_dir, p, j, attempt),
        };
        let wake = Arc::new(Notify::new());
        self.wakes.insert(task, wake.clone());
        let stop = self.stop_collectors.clone();
        let agents = self.agent_book.clone();
        let retry = self.config.log_retry;
        self.collectors.spawn(async move {
            let _collecting = collecting;
            collect::follow(&source, &agents, retry, &wake, &stop).await;
            source.task
        });
    }

    /// At start: goes on collecting every log whose collection had not
    /// finished — of jobs still running, and of jobs that ended before
    /// their whole log was stored (the framework stopped, or the agent
    /// could not be reached). Logs the expiry sweep deleted are not
    /// collected again.
    async fn resume_logs(&mut self) {
        let mut attempts: Vec<(u64, usize, usize, PathBuf)> = Vec::new();
        for rec in self.pipelines.values() {
            for (j, job) in rec.state.jobs().iter().enumerate() {
                for (i, attempt) in job.attempts.iter().enumerate() {
                    let number = i + 1;
                    // Never launched (nothing to collect), or deleted.
                    if attempt.task_id.is_empty() || rec.expired.log_expired(j, number) {
                        continue;
                    }
                    let path = PipelineRecord::log_path(&self.config.data_dir, rec.id, j, number);
                    attempts.push((rec.id, j, number, path));
                }
            }
        }
        let unfinished = tokio::task::spawn_blocking(move || {
            attempts
                .into_iter()
                .filter(|(.., path)| !collect::is_whole(path))
                .map(|(p, j, a, _)| (p, j, a))
                .collect::<Vec<_>>()
        })
        .await
        .unwrap_or_default();
        if !unfinished.is_empty() {
            info!(
                logs = unfinished.len(),
                "resuming the collection of unfinished logs"
            );
        }
        for (p, j, a) in unfinished {
            self.follow_log(p, j, a);
        }
    }

    /// Fails, without launching them, the pending jobs of pipelines whose
    /// source archive is missing (the framework stopped between storing a
    /// new pipeline and moving its archive into place; or the archive was
    /// deleted): each gets an attempt that ended with
    /// `missing_dependency_failure` and a log that says why.
    async fn fail_missing_sources(&mut self) {
        let now = SystemTime::now();
        let ids: Vec<u64> = self
            .pipelines
            .values()
            // An expired source is the expiry's to report (it says why).
            .filter(|rec| !rec.state.pending().is_empty() && !rec.expired.source)
            .map(|rec| rec.id)
            .collect();
        for id in ids {
            let archive = self.files.source(id);
            if tokio::fs::try_exists(&archive).await.unwrap_or(true) {
                continue;
            }
            let Some(rec) = self.pipelines.get_mut(&id) else {
                continue;
            };
            let message = format!(
                "the source archive of pipeline {id} is missing ({}); run the commit again in a new pipeline",
                archive.display()
            );
            warn!(pipeline = id, "{message}");
            // A failure the job's `retry` covers puts it back to pending:
            // go round until none is left.
            let mut failed = 0;
            while let Some(i) = rec.state.pending().first().copied() {
                if let Err(e) = fail_unlaunched(
                    rec,
                    i,
                    FailureReason::MissingDependencyFailure,
                    "missing dependency",
                    &message,
                    &self.config.data_dir,
                    now,
                )
                .await
                {
                    warn!(pipeline = id, job = i, "cannot fail the job: {e}");
                    break;
                }
                failed += 1;
                rec.state.advance(now);
            }
            if failed > 0 {
                self.persist(id).await;
            }
        }
    }
}

/// Plans `submission` as a new pipeline and stores its record (with
/// `update` to a registered repository, in the same transaction); returns
/// the record. Nothing is stored when the plan fails or is empty.
fn create_record(
    store: &Store,
    update: Option<RepoUpdate>,
    config: &Config,
    submission: &Submission,
    repo: &dyn crate::Repository,
) -> Result<PipelineRecord, RunError> {
    let rev = &submission.revision;
    let source = submission.source;
    let branch = !rev.is_tag && source::is_branch(rev);
    let token = uuid::Uuid::new_v4().simple().to_string();
    let mut made: Option<PipelineRecord> = None;
    let mut failure: Option<RunError> = None;
    store.linked(update).create_with(|id| {
        let ctx = plan_context(submission, id);
        let plan = match config.plan(&ctx, repo) {
            Ok(Some(plan)) => plan,
            Ok(None) => {
                failure = Some(RunError::NoPipeline(
                    "workflow:rules create no pipeline for this ref".into(),
                ));
                return None;
            }
            Err(e) => {
                failure = Some(RunError::NoPipeline(e.to_string()));
                return None;
            }
        };
        let nodes: Vec<JobNode> = plan.jobs.iter().map(|j| node(&plan, j)).collect();
        let state = match Pipeline::new(nodes) {
            Ok(s) => s,
            Err(e) => {
                failure = Some(e.into());
                return None;
            }
        };
        let masked_values = submission
            .variables
            .iter()
            .filter(|v| v.masked)
            .map(|v| v.value.clone())
            .collect();
        let jobs = plan.jobs.len();
        let rec = PipelineRecord {
            id,
            project: rev.project_name.clone(),
            sha: rev.sha.clone(),
            ref_name: rev.ref_name.clone(),
            source: source.as_str().to_string(),
            token: token.clone(),
            created_ms: now_ms(),
            finished_ms: None,
            plan,
            state,
            masked_values,
            agents: vec![String::new(); jobs],
            attempt_agents: BTreeMap::new(),
            kill_reasons: vec![None; jobs],
            repository: rev.root.join(&rev.subdir).display().to_string(),
            branch,
            auto_canceled_by: None,
            waiting_for_resource: Vec::new(),
            expired: expiry::Expired::default(),
        };
        made = Some(rec.clone());
        Some(rec)
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    made.ok_or_else(|| RunError::Other("no record was made".into()))
}

/// Removes a temporary file, if it is there.
fn remove_temp(path: &Path) {
    match std::fs::remove_file(path) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => warn!("cannot remove {}: {e}", path.display()),
    }
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

/// What a plan of `submission` as pipeline `id` is evaluated against.
fn plan_context(submission: &Submission, id: u64) -> Context {
    let rev = &submission.revision;
    Context {
        project_name: rev.project_name.clone(),
        project_dir: format!("{CONTAINER_SANDBOX}/{}", rev.project_name),
        commit_sha: rev.sha.clone(),
        ref_name: rev.ref_name.clone(),
        ref_is_tag: rev.is_tag,
        default_branch: rev.default_branch.clone(),
        pipeline_id: id,
        source: submission.source,
        changed_files: Some(rev.changed_files.clone()),
        secrets: submission.variables.clone(),
    }
}

/// The slow part of a submission, run off the runner's loop: parses the
/// definition, checks masked values, plans it once (to refuse a
/// submission that makes no pipeline before anything is written, and to
/// read what the plan needs of the repository, remembered for the plan the
/// loop makes with the pipeline's id), and writes the source archive to a
/// temporary file.
fn prepare(submission: Submission, files: &FileStore) -> Result<Prepared, RunError> {
    let (config, _warnings) = Config::parse(&submission.definition, &ParseOptions::default())
        .map_err(|diags| {
            RunError::Invalid(
                diags
                    .iter()
                    .map(|d| format!(".gitlab-ci.yml:{d}"))
                    .collect::<Vec<_>>()
                    .join("\n"),
            )
        })?;
    let mut masked = 0;
    for v in submission.variables.iter().filter(|v| v.masked) {
        super::mask::check_maskable(&v.name, &v.value)?;
        masked += 1;
    }
    // Each job's task carries the values for its agent to mask.
    if masked > super::mask::MAX_TASK_MASKED_VALUES {
        return Err(RunError::Invalid(format!(
            "{masked} masked variables; at most {} can be masked",
            super::mask::MAX_TASK_MASKED_VALUES
        )));
    }
    let repository = Arc::new(MemoRepository::new(submission.revision.clone()));
    // Planned as pipeline 0 here; the loop plans again with the real id
    // from what this read (a plan only reads the repository for
    // `rules:exists`, `rules:changes` of files and `cache:key:files`).
    let ctx = plan_context(&submission, 0);
    match config.plan(&ctx, &*repository) {
        Ok(Some(_)) => {}
        Ok(None) => {
            return Err(RunError::NoPipeline(
                "workflow:rules create no pipeline for this ref".into(),
            ));
        }
        Err(e) => return Err(RunError::NoPipeline(e.to_string())),
    }
    let archive = TempArchive(files.temp_path());
    source::write_archive(&submission.revision, &archive.0)?;
    Ok(Prepared {
        submission,
        config,
        repository,
        archive,
    })
}

/// How a job attempt ended, from its terminal update.
fn job_end(status: &pb::TaskStatus, killed_for: Option<FailureReason>) -> JobEnd {
    let message = status.message.clone();
    // An artifact upload that failed (other than "nothing matched") fails
    // the job, as in GitLab.
    let upload_failed = status
        .outputs
        .iter()
        .find(|o| o.name == "artifacts" && !o.ok && o.error != "no files matched");
    match status.state() {
        pb::TaskState::TaskFinished => match upload_failed {
            None => JobEnd::success(),
            Some(o) => JobEnd::failure(
                FailureReason::DataIntegrityFailure,
                format!("uploading artifacts failed: {}", o.error),
            ),
        },
        pb::TaskState::TaskFailed if status.reason() == pb::TaskReason::FetchFailed => {
            JobEnd::failure(FailureReason::MissingDependencyFailure, message)
        }
        pb::TaskState::TaskFailed => match status.exit_code {
            Some(code) => JobEnd {
                exit_code: Some(code),
                reason: Some(FailureReason::ScriptFailure),
                message: if message.is_empty() {
                    format!("the script exited with code {code}")
                } else {
                    message
                },
            },
            // No exit code: the container or process never started.
            None => JobEnd::failure(FailureReason::RunnerSystemFailure, message),
        },
        pb::TaskState::TaskKilled => JobEnd::failure(
            killed_for.unwrap_or(FailureReason::UnknownFailure),
            if killed_for == Some(FailureReason::JobExecutionTimeout) {
                "the job ran past its timeout".to_string()
            } else {
                message
            },
        ),
        pb::TaskState::TaskError => JobEnd::failure(FailureReason::SchedulerFailure, message),
        _ => JobEnd::failure(FailureReason::RunnerSystemFailure, message),
    }
}

/// A retried pipeline runs again: its jobs advance, and it is no longer
/// superseded (auto-canceled) by a newer one.
fn running_again(rec: &mut PipelineRecord) {
    rec.state.advance(SystemTime::now());
    rec.auto_canceled_by = None;
}

/// When a job attempt that started at `started` must have ended: its time
/// limit counts from its start, also across a restart of the framework, so
/// a limit that passed while the framework was down is now.
fn deadline(started: Option<SystemTime>, timeout: Duration) -> Instant {
    let now = Instant::now();
    let ran = started
        .and_then(|at| SystemTime::now().duration_since(at).ok())
        .unwrap_or_default();
    now + timeout.saturating_sub(ran)
}

/// A revision as a [`crate::Repository`] (for `rules:exists` and
/// `cache:key:files`) that remembers what it read: a submission is planned
/// off the runner's loop first, and planned again on the loop (with its
/// id) from memory.
#[derive(Debug)]
struct MemoRepository {
    rev: Revision,
    files: std::sync::Mutex<Option<Vec<String>>>,
    reads: std::sync::Mutex<HashMap<String, Option<Vec<u8>>>>,
    /// How many times git was asked (for tests).
    asked: std::sync::atomic::AtomicUsize,
}

impl MemoRepository {
    fn new(rev: Revision) -> MemoRepository {
        MemoRepository {
            rev,
            files: std::sync::Mutex::default(),
            reads: std::sync::Mutex::default(),
            asked: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    fn ask(&self) {
        self.asked
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    }
}

impl crate::Repository for MemoRepository {
    fn files(&self) -> Vec<String> {
        let mut files = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        files
            .get_or_insert_with(|| {
                self.ask();
                source::list_files(&self.rev).unwrap_or_default()
            })
            .clone()
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        let mut reads = self
            .reads
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        reads
            .entry(path.to_string())
            .or_insert_with(|| {
                self.ask();
                source::read_file(&self.rev, path).ok().flatten()
            })
            .clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_round_trip() {
        assert_eq!(parse_task_id(&task_id(12, 3, 2)), Some((12, 3, 2)));
        assert_eq!(parse_task_id("ci-1-2"), None);
        assert_eq!(parse_task_id("ci-1-2-3-4"), None);
        assert_eq!(parse_task_id("run-1-2-3"), None);
        assert_eq!(parse_task_id("ci-a-2-3"), None);
    }

    #[test]
    fn a_time_limit_counts_from_the_start_of_the_attempt() {
        let minute = Duration::from_secs(60);
        let now = Instant::now();
        // Started 20 s ago: 40 s left.
        let started = SystemTime::now() - Duration::from_secs(20);
        let left = deadline(Some(started), minute) - now;
        // (Two clocks read a moment apart: allow a second either way.)
        assert!(left < Duration::from_secs(41), "{left:?}");
        assert!(left > Duration::from_secs(39), "{left:?}");
        // Past the limit (the framework was down): now.
        let long_ago = SystemTime::now() - Duration::from_secs(3600);
        assert!(deadline(Some(long_ago), minute) <= Instant::now());
        // Unknown start, or a start in the future (clock moved back): the
        // whole limit from now.
        assert!(deadline(None, minute) - now >= minute);
        let future = SystemTime::now() + Duration::from_secs(3600);
        assert!(deadline(Some(future), minute) - now >= minute);
    }

    /// A stored-like record of `yaml`'s pipeline for branch `feature`.
    fn record(yaml: &str) -> PipelineRecord {
        let (config, _) = Config::parse(yaml, &ParseOptions::default()).unwrap();
        let ctx = Context {
            project_name: "demo".into(),
            ref_name: "feature".into(),
            default_branch: "main".into(),
            pipeline_id: 1,
            ..Context::default()
        };
        let plan = config
            .plan(&ctx, &crate::MemoryRepository::default())
            .unwrap()
            .unwrap();
        let nodes: Vec<JobNode> = plan.jobs.iter().map(|j| node(&plan, j)).collect();
        let mut state = Pipeline::new(nodes).unwrap();
        state.advance(SystemTime::UNIX_EPOCH);
        let jobs = plan.jobs.len();
        PipelineRecord {
            id: 1,
            project: "demo".into(),
            sha: "0".repeat(40),
            ref_name: "feature".into(),
            source: "push".into(),
            token: "token".into(),
            created_ms: 0,
            finished_ms: None,
            plan,
            state,
            masked_values: Vec::new(),
            agents: vec![String::new(); jobs],
            attempt_agents: BTreeMap::new(),
            kill_reasons: vec![None; jobs],
            repository: "/src/demo".into(),
            branch: true,
            auto_canceled_by: Some(2),
            waiting_for_resource: vec![true; jobs],
            expired: super::super::expiry::Expired::default(),
        }
    }

    #[test]
    fn a_pipeline_is_interruptible_while_every_started_job_is() {
        let mut rec = record(
            "lint:\n  stage: build\n  interruptible: true\n  script: [x]\ndeploy:\n  stage: deploy\n  script: [x]\n",
        );
        let t = SystemTime::UNIX_EPOCH;
        assert!(rec.is_interruptible(), "nothing started");
        rec.state.started(0, "ci-1-0-1", t).unwrap();
        assert!(rec.is_interruptible(), "only lint started");
        rec.state.finished(0, JobEnd::success(), t).unwrap();
        rec.state.advance(t);
        assert_eq!(rec.state.pending(), vec![1]);
        assert!(rec.is_interruptible(), "deploy is pending, not started");
        rec.state.started(1, "ci-1-1-1", t).unwrap();
        assert!(!rec.is_interruptible(), "deploy started");
        rec.state.finished(1, JobEnd::script_failure(1), t).unwrap();
        assert!(!rec.is_interruptible(), "and finished: it still counts");
    }

    #[test]
    fn records_stored_before_auto_cancel_still_read() {
        let rec = record("build:\n  resource_group: prod\n  script: [x]\n");
        let mut json = serde_json::to_value(&rec).unwrap();
        let fields = json.as_object_mut().unwrap();
        assert!(
            !fields.contains_key("waiting_for_resource"),
            "derived, not stored"
        );
        for key in ["repository", "branch", "auto_canceled_by"] {
            assert!(fields.remove(key).is_some(), "{key} is stored");
        }
        let old: PipelineRecord = serde_json::from_value(json).unwrap();
        assert_eq!(old.repository, "");
        // The project key: the repository, or for such a record its name.
        assert_eq!(rec.project_key(), "/src/demo");
        assert_eq!(old.project_key(), "demo");
        assert!(!old.branch, "never auto-canceled");
        assert_eq!(old.auto_canceled_by, None);
        assert!(!old.is_waiting_for_resource(0));
        assert_eq!(old.plan.jobs[0].resource_group.as_deref(), Some("prod"));
    }

    /// A git repository with a pipeline file and one source file.
    fn git_repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        berth_tests::git(d, &["init", "-q", "-b", "main"]);
        std::fs::write(d.join("a.txt"), "a\n").unwrap();
        berth_tests::git(d, &["add", "."]);
        berth_tests::git(d, &["commit", "-q", "-m", "first"]);
        dir
    }

    fn submission(dir: &Path, definition: &str) -> Submission {
        Submission {
            revision: source::resolve(dir, None, false).unwrap(),
            definition: definition.into(),
            source: PipelineSource::Api,
            variables: Vec::new(),
        }
    }

    fn temp_files(files: &FileStore) -> Vec<PathBuf> {
        let Some(dir) = files.temp_path().parent().map(Path::to_path_buf) else {
            return Vec::new();
        };
        match std::fs::read_dir(dir) {
            Ok(entries) => entries.map(|e| e.unwrap().path()).collect(),
            Err(_) => Vec::new(),
        }
    }

    #[test]
    fn a_submission_is_prepared_off_the_loop_and_its_archive_removed_unless_used() {
        let repo = git_repo();
        let data = tempfile::tempdir().unwrap();
        let files = FileStore::new(data.path().join("files"), 1 << 20).unwrap();
        // A pipeline `rules:exists` keeps: the plan reads the file list.
        let yaml = "build:\n  rules:\n    - exists: [a.txt]\n  script: [x]\n";
        let prepared = prepare(submission(repo.path(), yaml), &files).unwrap();
        let archive = prepared.archive.0.clone();
        assert!(archive.is_file(), "the archive is written before the loop");
        let asked = prepared
            .repository
            .asked
            .load(std::sync::atomic::Ordering::Relaxed);
        assert!(asked >= 1, "the first plan read the repository");
        // The loop's plan (with the real id) reads it from memory.
        let store = Store::open(data.path().join("ci.redb")).unwrap();
        let rec = create_record(
            &store,
            None,
            &prepared.config,
            &prepared.submission,
            &*prepared.repository,
        )
        .unwrap();
        assert_eq!(rec.id, 1);
        assert_eq!(rec.plan.jobs.len(), 1);
        assert_eq!(
            prepared
                .repository
                .asked
                .load(std::sync::atomic::Ordering::Relaxed),
            asked,
            "git was not asked again"
        );
        // A submission that never reaches the loop leaves no archive.
        drop(prepared);
        assert!(!archive.exists());
        assert!(temp_files(&files).is_empty());
    }

    #[test]
    fn a_submission_without_a_pipeline_writes_no_archive() {
        let repo = git_repo();
        let data = tempfile::tempdir().unwrap();
        let files = FileStore::new(data.path().join("files"), 1 << 20).unwrap();
        let yaml = "build:\n  rules:\n    - exists: [missing.txt]\n  script: [x]\n";
        let Err(err) = prepare(submission(repo.path(), yaml), &files) else {
            panic!("no job is left, yet it was prepared");
        };
        assert!(matches!(err, RunError::NoPipeline(_)), "{err}");
        assert!(temp_files(&files).is_empty(), "{:?}", temp_files(&files));
        let Err(err) = prepare(submission(repo.path(), "build: [\n"), &files) else {
            panic!("a broken definition was prepared");
        };
        assert!(matches!(err, RunError::Invalid(_)), "{err}");
    }

    /// A detached handle publishing pipelines `1..=n`.
    fn handle_with(n: u64) -> (tempfile::TempDir, RunnerHandle) {
        let data = tempfile::tempdir().unwrap();
        let store = Arc::new(Store::open(data.path().join("ci.redb")).unwrap());
        let handle = RunnerHandle::detached(data.path().to_path_buf(), store);
        let base = record("build:\n  script: [x]\n");
        {
            let mut published = handle.published.write();
            for id in 1..=n {
                let mut rec = base.clone();
                rec.id = id;
                published.insert(id, Arc::new(rec));
            }
        }
        (data, handle)
    }

    fn ids(page: &[Arc<PipelineRecord>]) -> Vec<u64> {
        page.iter().map(|r| r.id).collect()
    }

    #[tokio::test]
    async fn reads_come_from_the_published_records_without_the_loop() {
        // A detached handle has no loop: every request through it fails.
        let (_data, handle) = handle_with(3);
        assert!(matches!(handle.cancel(1).await, Err(RunError::Stopped)));
        let rec = handle.get(2).await.unwrap().expect("published");
        assert_eq!(rec.id, 2);
        assert!(handle.get(4).await.unwrap().is_none());
        assert_eq!(ids(&handle.list().await.unwrap()), vec![1, 2, 3]);
    }

    #[tokio::test]
    async fn lists_are_pages_newest_first() {
        let (_data, handle) = handle_with(1005);
        assert_eq!(ids(&handle.list_page(3, None)), vec![1005, 1004, 1003]);
        assert_eq!(ids(&handle.list_page(3, Some(3))), vec![2, 1]);
        assert!(handle.list_page(3, Some(1)).is_empty());
        assert_eq!(handle.list_page(5000, None).len(), MAX_LIST_LIMIT);
        use super::super::api::{ErrorKind, ListQuery, list_pipelines};
        let page = list_pipelines(&handle, ListQuery::default()).await.unwrap();
        assert_eq!(page.len(), DEFAULT_LIST_LIMIT);
        assert_eq!(page[0].id, 1005);
        let page = list_pipelines(
            &handle,
            ListQuery {
                limit: Some(2),
                before: Some(10),
            },
        )
        .await
        .unwrap();
        assert_eq!(page.iter().map(|s| s.id).collect::<Vec<_>>(), vec![9, 8]);
        for limit in [0, MAX_LIST_LIMIT + 1] {
            let err = list_pipelines(
                &handle,
                ListQuery {
                    limit: Some(limit),
                    before: None,
                },
            )
            .await
            .unwrap_err();
            assert_eq!(err.kind, ErrorKind::BadRequest, "{limit}: {}", err.message);
        }
    }

    fn status(state: pb::TaskState) -> pb::TaskStatus {
        pb::TaskStatus {
            task_id: "ci-1-0-1".into(),
            state: state as i32,
            ..Default::default()
        }
    }

    #[test]
    fn task_ends_become_gitlab_failure_reasons() {
        assert_eq!(
            job_end(&status(pb::TaskState::TaskFinished), None),
            JobEnd::success()
        );
        let mut failed = status(pb::TaskState::TaskFailed);
        failed.exit_code = Some(3);
        let end = job_end(&failed, None);
        assert_eq!(end.reason, Some(FailureReason::ScriptFailure));
        assert_eq!(end.exit_code, Some(3));
        failed.exit_code = None;
        failed.reason = pb::TaskReason::FetchFailed as i32;
        assert_eq!(
            job_end(&failed, None).reason,
            Some(FailureReason::MissingDependencyFailure)
        );
        failed.reason = pb::TaskReason::LaunchFailed as i32;
        assert_eq!(
            job_end(&failed, None).reason,
            Some(FailureReason::RunnerSystemFailure)
        );
        assert_eq!(
            job_end(&status(pb::TaskState::TaskLost), None).reason,
            Some(FailureReason::RunnerSystemFailure)
        );
        assert_eq!(
            job_end(
                &status(pb::TaskState::TaskKilled),
                Some(FailureReason::JobExecutionTimeout)
            )
            .reason,
            Some(FailureReason::JobExecutionTimeout)
        );
        let mut finished = status(pb::TaskState::TaskFinished);
        finished.outputs.push(pb::OutputResult {
            name: "artifacts".into(),
            ok: false,
            error: "HTTP 500".into(),
            ..Default::default()
        });
        assert_eq!(
            job_end(&finished, None).reason,
            Some(FailureReason::DataIntegrityFailure)
        );
        finished.outputs[0].error = "no files matched".into();
        assert_eq!(job_end(&finished, None), JobEnd::success());
    }
}
