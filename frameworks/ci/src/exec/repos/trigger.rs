//! A trigger: the pipeline of a branch's commit, created once, and
//! remembered in the same transaction that creates it.

use tracing::{info, warn};

use super::{RepoError, RepoRecord, RepoRun, Repos, blocking, now_ms};
use crate::PipelineSource;
use crate::exec::runner::{RunError, Submission};
use crate::exec::source;
use crate::exec::store::RepoUpdate;

impl Repos {
    /// Runs the pipeline of `sha` on `branch` unless that was done before
    /// (then returns what happened then).
    pub(super) async fn trigger(
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
            let before = before.clone();
            blocking(move || {
                let mut revision = source::resolve(&dir, Some(&sha), false)?;
                revision.ref_name = branch;
                revision.is_tag = false;
                revision.project_name = rec.project.clone();
                revision.default_branch = rec.default_branch.clone();
                // `rules:changes` compares the push with the branch's
                // previous head; a new branch (zeros, or a head no longer
                // in the repository) makes every `changes` true.
                match source::changed_between(&dir, &before, &sha)? {
                    Some(files) => {
                        revision.changed_files = files;
                        revision.commit.before_sha = Some(before);
                    }
                    None => revision.commit.before_sha = None,
                }
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
                    variables: Vec::new(),
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
}

/// What a trigger did.
pub(super) enum Triggered {
    /// A new pipeline.
    Created(u64),
    /// The commit had been triggered before: what happened then.
    Existing(RepoRun),
}
