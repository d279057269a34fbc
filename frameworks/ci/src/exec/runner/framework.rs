//! The CI framework as a [`Scheduler`] of the SDK's framework runtime: it
//! keeps the pipelines, states their [intent](schedule::intent), and
//! executes what the pure [`schedule`] functions decide — stores records,
//! writes the logs of jobs failed unlaunched, follows the agents' output.
//! The runtime owns the subscription, the offers, launches, kills,
//! reconciliation and acknowledgements.
//!
//! Every change is stored before the runtime acts on it: a hook returns
//! only once its change is stored ([`Scheduler::before_launch`] before a
//! launch, [`Scheduler::on_update`] before the acknowledgement). A write
//! that fails stops the runtime (fail closed); [`CiFramework::failure`]
//! says why.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime};

use berth_sdk::BoxError;
use berth_sdk::proto as pb;
use berth_sdk::runtime::{Control, Intent, Scheduler};
use tokio::sync::{Notify, mpsc, watch};
use tokio::time::Interval;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use super::super::collect::{self, AgentBook, Collecting, LogSource};
use super::super::expiry;
use super::super::files::FileStore;
use super::super::record::{PipelineRecord, fail_unlaunched, parse_task_id, task_id};
use super::super::schedule::{self, Due, Updated};
use super::super::state::FailureReason;
use super::super::store::Store;
use super::super::task::TaskDefaults;
use super::{
    FRAMEWORK_ID_FILE, Published, Request, RunError, RunnerConfig, Tokens, now_ms, waits,
    with_waits,
};

/// What [`Scheduler::changed`] received, for [`Scheduler::on_changed`].
pub(super) enum Wake {
    Request(Request),
    Tick,
    Sweep,
}

/// The CI framework's state and its IO; see the [module docs](self).
pub(super) struct CiFramework {
    pub(super) config: RunnerConfig,
    pub(super) store: Arc<Store>,
    pub(super) files: FileStore,
    pub(super) tokens: Arc<Tokens>,
    pub(super) pipelines: BTreeMap<u64, PipelineRecord>,
    /// The framework id (for the agents' log endpoints).
    pub(super) framework_id: String,
    pub(super) changes: watch::Sender<u64>,
    /// Tasks whose logs are being collected (shared with the handle).
    pub(super) collecting: Collecting,
    /// The log collections; each ends with its task's id.
    pub(super) collectors: tokio::task::JoinSet<String>,
    /// Stops the log collections when the framework stops.
    pub(super) stop_collectors: CancellationToken,
    /// Agents' addresses (for logs).
    pub(super) agent_book: AgentBook,
    /// Per task whose log is being collected: cuts the collection's wait
    /// before its next try short (a new update of the task came).
    pub(super) wakes: HashMap<String, Arc<Notify>>,
    /// What the API reads (shared with the handle).
    pub(super) published: Arc<Published>,
    /// Requests from the handle.
    pub(super) requests: mpsc::Receiver<Request>,
    /// Resolves when the framework is to stop.
    pub(super) stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Time-driven work (delayed jobs, time limits, reaping collections).
    pub(super) tick: Interval,
    /// The expiry sweep.
    pub(super) sweep: Interval,
    /// What `changed` received and `on_changed` handles.
    pub(super) inbox: Vec<Wake>,
    /// The intent, until the pipelines change.
    pub(super) intent: Mutex<Option<Intent>>,
    /// Why the framework stops on its own: the first failed durable write.
    pub(super) failed: Option<String>,
    /// The agents last listed, for stuck jobs (see `runner/stuck.rs`).
    pub(super) agents_seen: Arc<Mutex<super::stuck::AgentsSeen>>,
    /// The stuck jobs: (pipeline, job) → (attempt, since when, why).
    pub(super) stuck: BTreeMap<(u64, usize), (usize, SystemTime, String)>,
}

impl CiFramework {
    /// The intervals of the time-driven work, for `config`.
    pub(super) fn intervals(config: &RunnerConfig) -> (Interval, Interval) {
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        // `interval` refuses zero.
        let mut sweep = tokio::time::interval(config.sweep_interval.max(Duration::from_millis(10)));
        sweep.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        (tick, sweep)
    }

    /// Why the framework stopped on its own, if a durable write failed.
    pub(super) fn failure(&self) -> Option<String> {
        self.failed.clone()
    }

    fn defaults(&self) -> TaskDefaults<'_> {
        TaskDefaults {
            base_url: &self.config.base_url,
            cpus: self.config.default_cpus,
            mem: self.config.default_mem,
            kill_grace: self.config.kill_grace,
            timeout: self.config.default_timeout,
        }
    }

    /// The cached intent is stale.
    fn changed_pipelines(&self) {
        *self.intent.lock().unwrap_or_else(PoisonError::into_inner) = None;
    }

    /// Stores pipeline `id`'s record and publishes it. A failed write
    /// stops the framework (fail closed: jobs must not run on state that
    /// is not kept); after one, nothing more is stored.
    pub(super) async fn persist(&mut self, id: u64) -> Result<(), RunError> {
        self.changed_pipelines();
        if let Some(why) = &self.failed {
            return Err(RunError::Other(why.clone()));
        }
        let Some(rec) = self.pipelines.get_mut(&id) else {
            return Ok(());
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
            let why = format!("cannot store pipeline {id}: {e}");
            self.failed = Some(why.clone());
            return Err(RunError::Other(why));
        }
        self.publish(id);
        self.changes.send_modify(|v| *v += 1);
        Ok(())
    }

    /// Publishes every pipeline (at start).
    pub(super) fn publish_all(&self) {
        let resources = schedule::resources(&self.pipelines);
        let mut published = self.published.write();
        for (id, rec) in &self.pipelines {
            published.insert(*id, Arc::new(self.with_stuck(with_waits(rec, &resources))));
        }
    }

    /// Publishes pipeline `id` as it is now, and the unfinished pipelines
    /// whose resource-group waits changed with it (a finished pipeline's
    /// waits change only when it finishes: it is `id` then).
    pub(super) fn publish(&self, id: u64) {
        let resources = schedule::resources(&self.pipelines);
        let mut published = self.published.write();
        if let Some(rec) = self.pipelines.get(&id) {
            published.insert(id, Arc::new(self.with_stuck(with_waits(rec, &resources))));
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
            published.insert(rec.id, Arc::new(self.with_stuck(copy)));
        }
    }

    /// Brings the pipelines up to date with what is due and with the files
    /// on disk, and stores what changed: delayed jobs whose time came
    /// start, jobs past their time limit are marked to be killed (the
    /// intent then names their tasks to stop), and pending jobs whose
    /// source archive is missing or whose dependencies expired fail
    /// unlaunched. Runs at start and after everything that changes the
    /// pipelines, so no job is launched that this would have failed.
    pub(super) async fn settle(&mut self) -> Result<(), RunError> {
        let now = SystemTime::now();
        let mut changed = BTreeSet::new();
        for due in schedule::due(&self.pipelines, now, self.config.default_timeout) {
            match due {
                Due::Advance(p) => {
                    if let Some(rec) = self.pipelines.get_mut(&p) {
                        rec.state.advance(now);
                        changed.insert(p);
                    }
                }
                Due::TimedOut {
                    pipeline,
                    job,
                    task,
                } => {
                    if let Some(slot) = self
                        .pipelines
                        .get_mut(&pipeline)
                        .and_then(|rec| rec.kill_reasons.get_mut(job))
                    {
                        warn!(task = %task, "the job ran past its timeout; killing it");
                        // Stored, so that the reason survives a restart
                        // before the task's end arrives.
                        *slot = Some(FailureReason::JobExecutionTimeout);
                        changed.insert(pipeline);
                    }
                }
            }
        }
        changed.extend(self.settle_children(now).await?);
        changed.extend(self.fail_missing_sources(now).await);
        changed.extend(
            expiry::fail_expired_dependencies(&mut self.pipelines, &self.config.data_dir, now)
                .await,
        );
        for id in changed {
            self.persist(id).await?;
        }
        Ok(())
    }

    /// Fails, without launching them, the pending jobs of pipelines whose
    /// source archive is missing (the framework stopped between storing a
    /// new pipeline and moving its archive into place; or the archive was
    /// deleted): each gets an attempt that ended with
    /// `missing_dependency_failure` and a log that says why. Returns the
    /// pipelines that changed.
    async fn fail_missing_sources(&mut self, now: SystemTime) -> Vec<u64> {
        let ids: Vec<u64> = self
            .pipelines
            .values()
            // An expired source is the expiry's to report (it says why).
            .filter(|rec| !rec.state.pending().is_empty() && !rec.expired.source)
            .map(|rec| rec.id)
            .collect();
        let mut changed = Vec::new();
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
                changed.push(id);
            }
        }
        changed
    }

    /// Fails pending job `job` of `pipeline` unlaunched: the runtime gave
    /// up on its task, which the masters would refuse (`message` says
    /// why).
    async fn fail_given_up(
        &mut self,
        pipeline: u64,
        job: usize,
        message: &str,
    ) -> Result<(), RunError> {
        let now = SystemTime::now();
        let Some(rec) = self.pipelines.get_mut(&pipeline) else {
            return Ok(());
        };
        let message =
            format!("{message} (set BERTH_CPUS and BERTH_MEMORY, in MiB, to what the job needs)");
        warn!(pipeline, job, "{message}");
        match fail_unlaunched(
            rec,
            job,
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
                self.persist(pipeline).await?;
                self.settle().await
            }
            Err(e) => {
                warn!(pipeline, job, "cannot fail the job: {e}");
                Ok(())
            }
        }
    }

    /// Reaps the log collections that have ended; returns their tasks.
    fn reap_collectors(&mut self) -> Vec<String> {
        let mut reaped = Vec::new();
        while let Some(ended) = self.collectors.try_join_next() {
            if let Ok(task) = ended
                && !self.collecting.contains(&task)
            {
                self.wakes.remove(&task);
                reaped.push(task);
            }
        }
        reaped
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
            framework_id: self.framework_id.clone(),
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
    pub(super) async fn resume_logs(&mut self) {
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

    /// Stops every log collection where it is (its position says where to
    /// go on) and waits for them.
    pub(super) async fn stop_collecting(&mut self) {
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

    /// The result of a hook: `Err` once a durable write failed.
    fn checked(&self) -> Result<(), BoxError> {
        match &self.failed {
            Some(why) => Err(why.clone().into()),
            None => Ok(()),
        }
    }
}

impl Scheduler for CiFramework {
    fn intent(&self) -> Intent {
        let mut cached = self.intent.lock().unwrap_or_else(PoisonError::into_inner);
        cached
            .get_or_insert_with(|| schedule::intent(&self.pipelines, &self.defaults()))
            .clone()
    }

    async fn on_update(&mut self, status: &pb::TaskStatus) -> Result<Control, BoxError> {
        match schedule::on_update(&mut self.pipelines, status, SystemTime::now()) {
            Updated::Ignored => {}
            Updated::Attempt {
                pipeline,
                job,
                attempt,
                follow_log,
                changed,
            } => {
                // The agent may have changed.
                self.changed_pipelines();
                // Starts collecting the log, or goes on where an earlier
                // collection stopped, before the job can show as ended.
                if follow_log {
                    self.follow_log(pipeline, job, attempt);
                }
                if changed {
                    // Before the next jobs' tasks are made: they carry
                    // its dotenv variables.
                    self.take_reports(pipeline, job, attempt, &status.outputs)
                        .await;
                    self.persist(pipeline).await?;
                    self.settle().await?;
                }
            }
            Updated::GivenUp {
                pipeline,
                job,
                message,
            } => self.fail_given_up(pipeline, job, &message).await?,
        }
        Ok(Control::Continue)
    }

    async fn before_launch(&mut self, tasks: &[pb::TaskInfo]) -> Result<(), BoxError> {
        let now = SystemTime::now();
        let mut changed = BTreeSet::new();
        for task in tasks {
            let Some((p, j, _)) = parse_task_id(&task.task_id) else {
                continue;
            };
            let Some(rec) = self.pipelines.get_mut(&p) else {
                continue;
            };
            let relaunch = rec
                .state
                .job(j)
                .and_then(|job| job.attempts.last())
                .is_some_and(|a| a.task_id == task.task_id);
            if !relaunch {
                if let Err(e) = rec.state.started(j, task.task_id.as_str(), now) {
                    warn!(task = %task.task_id, "launching a job that is not pending: {e}");
                }
                if let Some(slot) = rec.kill_reasons.get_mut(j) {
                    *slot = None;
                }
            }
            if !task.agent_id.is_empty() {
                rec.attempt_agents
                    .insert(task.task_id.clone(), task.agent_id.clone());
                if let Some(slot) = rec.agents.get_mut(j) {
                    slot.clone_from(&task.agent_id);
                }
            }
            changed.insert(p);
        }
        for p in changed {
            self.persist(p).await?;
        }
        Ok(())
    }

    async fn on_subscribed(&mut self, framework_id: &str) -> Result<(), BoxError> {
        if framework_id != self.framework_id {
            let file = self.config.data_dir.join(FRAMEWORK_ID_FILE);
            std::fs::write(&file, framework_id)
                .map_err(|e| format!("cannot store the framework id in {}: {e}", file.display()))?;
            self.framework_id = framework_id.to_owned();
        }
        Ok(())
    }

    async fn changed(&mut self) -> Control {
        let wake = tokio::select! {
            () = &mut self.stop => None,
            // `None`: every handle is gone, nobody can ask for anything more.
            request = self.requests.recv() => request.map(Wake::Request),
            _ = self.tick.tick() => Some(Wake::Tick),
            _ = self.sweep.tick() => Some(Wake::Sweep),
        };
        match wake {
            Some(wake) => {
                self.inbox.push(wake);
                Control::Continue
            }
            None if self.config.teardown_on_stop => Control::Teardown,
            None => Control::Stop,
        }
    }

    async fn on_changed(&mut self) -> Result<Control, BoxError> {
        for wake in std::mem::take(&mut self.inbox) {
            match wake {
                Wake::Request(request) => {
                    self.on_request(request).await;
                    self.checked()?;
                    self.settle().await?;
                }
                Wake::Tick => {
                    let reaped = self.reap_collectors();
                    self.search_coverage(&reaped).await?;
                    self.settle().await?;
                    self.check_stuck().await?;
                }
                Wake::Sweep => {
                    self.sweep().await;
                    self.checked()?;
                }
            }
        }
        Ok(Control::Continue)
    }
}
