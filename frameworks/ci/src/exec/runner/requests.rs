//! The requests a [`RunnerHandle`](super::RunnerHandle) makes of the
//! framework: submissions (with GitLab's auto-cancel of superseded
//! pipelines), cancels, retries, plays and expiry sweeps. Each stores what
//! it changed before it answers; the next intent carries the change to
//! the runtime (a canceled job's task is killed, a retried job launched).

use std::time::SystemTime;

use tracing::info;

use super::super::expiry::{self, SweepReport};
use super::super::files::PipelineAccess;
use super::super::record::PipelineRecord;
use super::super::store::RepoUpdate;
use super::framework::CiFramework;
use super::{Prepared, Request, RunError, create_record, running_again};

impl CiFramework {
    pub(super) async fn on_request(&mut self, request: Request) {
        match request {
            Request::Submit(prepared, update, reply) => {
                let result = self.submit(*prepared, update).await;
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
                let result = self.stored(id, result).await;
                let _ = reply.send(result);
            }
            Request::RetryJob(id, job, reply) => {
                let result = self.job_mut(id, &job).and_then(|(rec, i)| {
                    rec.state.retry_job(i).map_err(RunError::from).map(|()| {
                        info!(pipeline = id, job = %job, "job retried");
                        running_again(rec);
                    })
                });
                let result = self.stored(id, result).await;
                let _ = reply.send(result);
            }
            Request::Play(id, job, reply) => {
                let result = self
                    .job_mut(id, &job)
                    .and_then(|(rec, i)| rec.state.play(i).map_err(RunError::from));
                let result = self.stored(id, result).await;
                let _ = reply.send(result);
            }
            Request::Sweep(reply) => {
                let report = self.sweep().await;
                let _ = reply.send(report);
            }
        }
    }

    /// After a change to pipeline `id` asked for through the handle
    /// (retry, play): when it worked, stores the pipeline.
    async fn stored(&mut self, id: u64, result: Result<(), RunError>) -> Result<(), RunError> {
        result?;
        self.persist(id).await
    }

    /// Deletes expired artifacts, logs and sources (see [`expiry`]).
    pub(super) async fn sweep(&mut self) -> SweepReport {
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
            if self.persist(id).await.is_err() {
                break;
            }
        }
        report
    }

    /// Stores a prepared submission (see [`super::prepare`]) and moves its
    /// archive into place: the quick, ordered part, so ids follow the
    /// order the submissions reach the framework.
    async fn submit(
        &mut self,
        prepared: Prepared,
        update: Option<RepoUpdate>,
    ) -> Result<u64, RunError> {
        let files = self.files.clone();
        let store = self.store.clone();
        let base_url = self.config.base_url.clone();
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
            let rec = create_record(
                &store,
                update,
                &config,
                &submission,
                &*repository,
                &base_url,
            )?;
            if let Err(e) = std::fs::rename(&archive.0, files.source(rec.id)) {
                // Stored already: its jobs fail as they come to run (see
                // `settle`), with the reason in their logs.
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
        self.persist(id).await?;
        info!(pipeline = id, "pipeline created");
        if self.config.auto_cancel {
            self.auto_cancel_superseded(id, &default_branch).await?;
        }
        Ok(id)
    }

    /// GitLab's auto-cancel of redundant pipelines: pipeline `new`, for a
    /// branch other than `default_branch`, cancels the older unfinished
    /// pipelines of the same project and branch whose started jobs are all
    /// interruptible. The others are left to finish.
    async fn auto_cancel_superseded(
        &mut self,
        new: u64,
        default_branch: &str,
    ) -> Result<(), RunError> {
        let Some(rec) = self.pipelines.get(&new) else {
            return Ok(());
        };
        if !rec.branch || rec.ref_name == default_branch {
            return Ok(());
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
            self.cancel(old, Some(new)).await?;
        }
        Ok(())
    }

    /// Cancels pipeline `id`; `by` is the newer pipeline that auto-cancels
    /// it, if that is why. Its running jobs' tasks leave the intent: the
    /// runtime kills them.
    pub(super) async fn cancel(&mut self, id: u64, by: Option<u64>) -> Result<(), RunError> {
        let rec = self
            .pipelines
            .get_mut(&id)
            .ok_or(RunError::NoSuchPipeline(id))?;
        let finished = rec.state.jobs().iter().all(|j| j.status.is_finished());
        if by.is_some() && !finished {
            rec.auto_canceled_by = by;
        }
        rec.state.cancel();
        let children: Vec<u64> = rec.family.children.iter().map(|c| c.pipeline).collect();
        self.persist(id).await?;
        // GitLab cancels the downstream pipelines with their parent.
        for child in children {
            let unfinished = self
                .pipelines
                .get(&child)
                .is_some_and(|c| !c.status().is_finished());
            if unfinished {
                Box::pin(self.cancel(child, None)).await?;
            }
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
}
