//! The poller: one background task that polls each repository at its
//! interval (at once after an add and after a restart) and triggers each
//! watched branch's new head.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use tokio::task::JoinSet;
use tokio::time::Instant;
use tracing::{info, warn};

use super::trigger::Triggered;
use super::{RepoError, RepoRun, Repos, blocking, now_ms, redact_message};
use crate::exec::source;

#[derive(Debug, Default, Clone, Copy)]
pub(super) struct PollStatus {
    pub(super) polls: u64,
    pub(super) last_polled_ms: Option<u64>,
}

impl Repos {
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
        let dir = self.current_dir(id).await?;
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

    pub(super) async fn poll_loop(self, stop: impl std::future::Future<Output = ()> + Send) {
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

fn short(sha: &str) -> &str {
    sha.get(..8).unwrap_or(sha)
}
