//! Kills: of one task (`KillTask`, a failed health check, shutdown), of a
//! removed framework's tasks, and the signal to the container, sent only
//! once the kill record is on disk.

use super::*;

/// Longest kill grace period accepted from the wire.
const MAX_KILL_GRACE: Duration = Duration::from_secs(3600);

impl Agent {
    /// Stops a task's container (SIGTERM, then SIGKILL after `grace`) once
    /// every checkpoint write queued before is on disk, the kill record
    /// among them: an agent that dies right after the signal comes back
    /// knowing the task was being killed, and reports it `TASK_KILLED`
    /// rather than `TASK_FAILED` by a signal nobody asked for. After a
    /// failed write the container is not touched: the agent stops (fail
    /// closed) and leaves the task to the next start.
    pub(super) fn spawn_destroy(
        self: &Arc<Self>,
        kind: ContainerizerKind,
        id: ContainerId,
        grace: Duration,
    ) {
        let Some(containerizer) = self.containerizer(kind).cloned() else {
            return;
        };
        let writer = self.writer.clone();
        tokio::spawn(async move {
            if let Err(e) = writer.flushed().await {
                tracing::warn!(container = %id, error = %e, "the kill could not be checkpointed; the task is left running");
                return;
            }
            match containerizer.destroy(&id, grace).await {
                Ok(_) => {}
                // It exited and was cleaned up meanwhile.
                Err(ContainerError::UnknownContainer(_)) => {
                    tracing::debug!(container = %id, "kill raced with the task's exit");
                }
                Err(e) => tracing::warn!(container = %id, error = %e, "killing the task failed"),
            }
        });
    }

    /// Kills a task; `grace_seconds` 0 means the task's own setting. The
    /// kill is recorded in the checkpoint before the container is
    /// signalled.
    pub(crate) fn kill_task(
        self: &Arc<Self>,
        key: &TaskKey,
        grace_seconds: f64,
        reason: pb::TaskReason,
        message: Option<String>,
    ) {
        let mut core = self.lock();
        let default_grace = self.config.default_kill_grace;
        let Some(entry) = core.tasks.get_mut(key) else {
            self.record(
                &mut core,
                key,
                pb::TaskState::TaskLost,
                REASON_UNKNOWN_TASK,
                format!(
                    "task {:?} of framework {:?} is not known to this agent",
                    key.1, key.0
                ),
                None,
            );
            return;
        };
        if entry.state.is_terminal() || entry.kill.is_some() {
            tracing::debug!(framework_id = %key.0, task_id = %key.1, "kill of a terminal or already killed task; nothing to do");
            return;
        }
        let grace = grace_from_secs(grace_seconds)
            .or_else(|| grace_from_secs(entry.task.kill_grace_period_seconds))
            .unwrap_or(default_grace);
        tracing::info!(framework_id = %key.0, task_id = %key.1, grace_ms = grace.as_millis(), reason = reason.short_name(), "killing task");
        entry.kill = Some(Kill {
            grace,
            reason,
            message,
        });
        let running = entry.container.clone().map(|id| (entry.kind, id));
        if let Some(abort) = &entry.abort {
            // Cancels a fetch (the task ends KILLED) or an upload.
            abort.notify_one();
        }
        core.health.remove(key);
        // The kill record is queued before the signal, which waits for it
        // to be on disk (see `spawn_destroy`).
        self.persist(&core, key);
        if let Some((kind, id)) = running {
            drop(core);
            self.spawn_destroy(kind, id, grace);
        }
        // Otherwise the supervisor sees the kill before or right after launch.
    }

    pub(super) fn shutdown_framework(self: &Arc<Self>, framework_id: &str) {
        let keys: Vec<TaskKey> = self
            .lock()
            .tasks
            .keys()
            .filter(|k| k.0 == framework_id)
            .cloned()
            .collect();
        tracing::info!(framework_id, tasks = keys.len(), "shutting down framework");
        for key in keys {
            self.kill_task(&key, 0.0, REASON_FRAMEWORK_REMOVED, None);
        }
    }
}

fn grace_from_secs(secs: f64) -> Option<Duration> {
    if secs > 0.0 {
        Duration::try_from_secs_f64(secs)
            .ok()
            .map(|d| d.min(MAX_KILL_GRACE))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::containerizer::{BoxFuture, Launched};

    #[test]
    fn grace_parsing() {
        assert_eq!(grace_from_secs(0.0), None);
        assert_eq!(grace_from_secs(-1.0), None);
        assert_eq!(grace_from_secs(f64::NAN), None);
        assert_eq!(grace_from_secs(1.5), Some(Duration::from_millis(1500)));
        assert_eq!(grace_from_secs(1e12), Some(MAX_KILL_GRACE));
    }

    /// A containerizer whose containers run until destroyed. Each destroy
    /// notes the kill of the container's latest task record the
    /// checkpoint writer had written by then.
    #[derive(Debug)]
    struct FakeContainerizer {
        checkpoint: PathBuf,
        exit: tokio::sync::watch::Sender<Option<Termination>>,
        /// Per destroy, the kill (grace in ms, reason) on disk at the time.
        kills_on_disk: Mutex<Vec<Option<(u64, String)>>>,
    }

    impl Containerizer for FakeContainerizer {
        fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Launched, ContainerError>> {
            Box::pin(async move {
                Ok(Launched {
                    container_id: spec.container_id,
                    pid: 4242,
                    pgid: 4242,
                })
            })
        }

        fn wait<'a>(
            &'a self,
            _: &'a ContainerId,
        ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
            let exit = self.exit.subscribe();
            Box::pin(async move { Ok(crate::containerizer::wait_exit(exit).await) })
        }

        fn destroy<'a>(
            &'a self,
            id: &'a ContainerId,
            _: Duration,
        ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
            let on_disk = crate::writer::inject::written_tasks(&self.checkpoint)
                .into_iter()
                .rev()
                .find(|t| t.container_id.as_ref() == Some(&id.0))
                .and_then(|t| t.kill);
            self.kills_on_disk
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push(on_disk);
            self.exit.send_replace(Some(Termination::Signaled(15)));
            Box::pin(async { Ok(Termination::Signaled(15)) })
        }

        fn cleanup<'a>(&'a self, _: &'a ContainerId) -> BoxFuture<'a, ()> {
            Box::pin(async {})
        }

        fn recover(
            &self,
            _: Vec<RecoverRecord>,
        ) -> BoxFuture<'_, Result<Vec<ContainerId>, ContainerError>> {
            Box::pin(async { Ok(Vec::new()) })
        }

        fn exec<'a>(
            &'a self,
            _: &'a ContainerId,
            _: Command,
            _: Duration,
        ) -> BoxFuture<'a, Result<i32, ContainerError>> {
            Box::pin(async { Ok(0) })
        }
    }

    impl FakeContainerizer {
        fn kills_on_disk(&self) -> Vec<Option<(u64, String)>> {
            self.kills_on_disk
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    }

    const WAIT: Duration = Duration::from_secs(10);

    async fn wait_until(what: &str, done: impl Fn() -> bool) {
        let deadline = Instant::now() + WAIT;
        while !done() {
            assert!(Instant::now() < deadline, "timed out waiting until {what}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    fn state_of(agent: &Agent, key: &TaskKey) -> Option<pb::TaskState> {
        agent.lock().tasks.get(key).map(|e| e.state)
    }

    /// An agent running process tasks on a [`FakeContainerizer`], with
    /// task "t1" of "fw" running; and the checkpoint's path.
    async fn running_on_fake(
        dir: &std::path::Path,
    ) -> (Arc<Agent>, Arc<FakeContainerizer>, PathBuf) {
        let path = dir.join(crate::checkpoint::FILE_NAME);
        let fake = Arc::new(FakeContainerizer {
            checkpoint: path.clone(),
            exit: tokio::sync::watch::Sender::new(None),
            kills_on_disk: Mutex::default(),
        });
        let mut config = AgentConfig::new(vec!["127.0.0.1:1".into()], dir.to_path_buf());
        config.docker = false;
        let config = config.validate().unwrap();
        let resources: Resources = "cpus:1;mem:256".parse().unwrap();
        let agent = Arc::new(Agent::new(
            config,
            &resources,
            "host".into(),
            "host:5051".into(),
            Arc::clone(&fake) as Arc<dyn Containerizer>,
            None,
            Checkpoint::open(&path).unwrap(),
        ));
        agent.handle(pb::master_message::Message::RunTask(pb::RunTask {
            framework: Some(pb::FrameworkInfo {
                id: "fw".into(),
                ..Default::default()
            }),
            task: Some(crate::tests::shell_task("t1", "sleep 1000")),
        }));
        let key = ("fw".to_owned(), "t1".to_owned());
        wait_until("t1 runs", || {
            state_of(&agent, &key) == Some(pb::TaskState::TaskRunning)
        })
        .await;
        (agent, fake, path)
    }

    #[tokio::test]
    async fn a_kill_reaches_the_container_only_once_its_record_is_on_disk() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake, path) = running_on_fake(dir.path()).await;
        // Writes from here on are slow: a signal sent without waiting for
        // the kill record would find it not yet on disk.
        crate::writer::inject::observe_writes(path, Duration::from_millis(300));
        let key = ("fw".to_owned(), "t1".to_owned());
        agent.kill_task(&key, 5.0, REASON_KILLED_BY_REQUEST, None);
        assert!(fake.kills_on_disk().is_empty(), "signalled synchronously");
        wait_until("the container is signalled", || {
            !fake.kills_on_disk().is_empty()
        })
        .await;
        assert_eq!(
            fake.kills_on_disk()[0],
            Some((5000, "KILLED_BY_REQUEST".to_owned())),
            "the kill record was not on disk when the kill reached the container"
        );
        wait_until("t1 is killed", || {
            state_of(&agent, &key) == Some(pb::TaskState::TaskKilled)
        })
        .await;
        agent.writer.close().await;
    }

    #[tokio::test]
    async fn a_kill_whose_record_cannot_be_written_never_reaches_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let (agent, fake, path) = running_on_fake(dir.path()).await;
        crate::writer::inject::fail_writes(path);
        let key = ("fw".to_owned(), "t1".to_owned());
        agent.kill_task(&key, 0.0, REASON_KILLED_BY_REQUEST, None);
        // The agent stops (`run` returns `AgentError::CheckpointWrite`)...
        let failure = tokio::time::timeout(WAIT, agent.writer.failed())
            .await
            .expect("the failed write is reported");
        assert!(
            failure.to_string().contains("injected write failure"),
            "{failure}"
        );
        // ...and the task is left running for the next start: the kill
        // never reaches it.
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(fake.kills_on_disk(), Vec::new());
        assert_eq!(state_of(&agent, &key), Some(pb::TaskState::TaskRunning));
    }
}
