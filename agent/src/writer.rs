//! The checkpoint writer: one thread that makes the agent's durable writes
//! in the order they were asked for, off the async workers.
//!
//! Why a thread: a durable write is an fsync, which can take milliseconds
//! or, on a busy disk, seconds; made on a tokio worker under the core's
//! std `Mutex`, it stalled every task of that worker and everyone waiting
//! for the lock. The agent now queues the write under the lock (cheap: the
//! record is already encoded in memory) and goes on.
//!
//! Ordering, the promise the agent keeps: a change is on disk before
//! anything about it is sent. Everything that reports a change goes
//! through the same queue as the write: a status update is queued here as
//! a [`Job::Send`] after the [`Job::Write`] that records it, and the thread
//! sends it only once the write is done. The `Register` of a new stream
//! waits for [`Writer::flushed`] before it goes out, and so do a launch
//! (for the task's record) and a kill (for its kill record) before they
//! reach the containerizer.
//!
//! Fail closed: when a write fails, the thread makes no further write and
//! sends nothing more, and [`Writer::failed`] resolves with the error; the
//! agent then stops with it ([`crate::run`] returns
//! [`crate::AgentError::CheckpointWrite`]) rather than go on with a checkpoint
//! that no longer says what it has done. A restarted agent recovers from
//! the last write that succeeded, as after a crash.

use std::sync::{Arc, mpsc as std_mpsc};

use berth_proto as pb;
use tokio::sync::{mpsc, oneshot, watch};

use crate::checkpoint::{Checkpoint, CheckpointError, TaskCheckpoint};

/// One durable write.
#[derive(Debug)]
pub(crate) enum Write {
    /// A task's record and its queue of unacknowledged updates.
    TaskAndUpdates {
        record: TaskCheckpoint,
        queue: Vec<pb::StatusUpdate>,
    },
    /// A task's queue alone (the task itself is forgotten).
    Updates {
        framework_id: String,
        task_id: String,
        queue: Vec<pb::StatusUpdate>,
    },
    /// A task and its queue are gone.
    RemoveTask {
        framework_id: String,
        task_id: String,
    },
    /// The agent id from `Registered`.
    AgentId(String),
}

/// Work for the writer thread, done in the order queued.
#[derive(Debug)]
pub(crate) enum Job {
    /// A write; `durable` false skips the fsync (the write becomes durable
    /// with the next durable one).
    Write { write: Write, durable: bool },
    /// A message to send once every earlier write is done.
    Send(mpsc::Sender<pb::AgentMessage>, pb::AgentMessage),
    /// Answered once every earlier write is done.
    Flush(oneshot::Sender<()>),
    /// Ends the thread after every earlier job, closing the checkpoint
    /// file; answered once it is closed.
    Close(oneshot::Sender<()>),
}

/// The first failed write, shared by the thread and the handles.
type Failure = Option<Arc<CheckpointError>>;

/// A handle to the writer thread. The thread ends when the last handle is
/// dropped, after the jobs queued before.
#[derive(Debug, Clone)]
pub(crate) struct Writer {
    jobs: std_mpsc::Sender<Job>,
    failed: watch::Receiver<Failure>,
}

impl Writer {
    /// Starts the thread that writes to `checkpoint`.
    pub(crate) fn spawn(checkpoint: Checkpoint) -> Self {
        let (jobs, rx) = std_mpsc::channel();
        let (failed_tx, failed) = watch::channel(None);
        let thread = std::thread::Builder::new()
            .name("checkpoint-writer".into())
            .spawn(move || run(checkpoint, &rx, &failed_tx));
        if let Err(e) = thread {
            // Without a writer nothing can be checkpointed: the agent stops
            // at once, through `failed`.
            let (failed_tx, failed) = watch::channel(Some(Arc::new(CheckpointError::Invalid(
                format!("cannot start the checkpoint writer thread: {e}"),
            ))));
            drop(failed_tx);
            return Writer { jobs, failed };
        }
        Writer { jobs, failed }
    }

    /// Queues a job (dropped when the thread is gone: it already failed
    /// or the agent stops).
    pub(crate) fn queue(&self, job: Job) {
        let _ = self.jobs.send(job);
    }

    /// Waits until every job queued before is done.
    ///
    /// # Errors
    /// The failed write, when one failed.
    pub(crate) async fn flushed(&self) -> Result<(), Arc<CheckpointError>> {
        let (tx, rx) = oneshot::channel();
        self.queue(Job::Flush(tx));
        if rx.await.is_ok() {
            return Ok(());
        }
        Err(self.failure().unwrap_or_else(|| {
            Arc::new(CheckpointError::Invalid(
                "the checkpoint writer has stopped".into(),
            ))
        }))
    }

    /// Makes the jobs queued before, then closes the checkpoint file (so
    /// that another agent may open it); later jobs are dropped.
    pub(crate) async fn close(&self) {
        let (tx, rx) = oneshot::channel();
        self.queue(Job::Close(tx));
        let _ = rx.await;
    }

    /// The failed write, if one failed.
    pub(crate) fn failure(&self) -> Option<Arc<CheckpointError>> {
        self.failed.borrow().clone()
    }

    /// Resolves with the first failed write.
    pub(crate) async fn failed(&self) -> Arc<CheckpointError> {
        let mut failed = self.failed.clone();
        let found = failed
            .wait_for(Option::is_some)
            .await
            .map(|f| f.clone().unwrap_or_else(unreachable_failure));
        match found {
            Ok(f) => f,
            // The thread is gone without a failure: nothing will fail.
            Err(_) => std::future::pending().await,
        }
    }
}

fn unreachable_failure() -> Arc<CheckpointError> {
    Arc::new(CheckpointError::Invalid("no failure recorded".into()))
}

fn run(checkpoint: Checkpoint, jobs: &std_mpsc::Receiver<Job>, failed: &watch::Sender<Failure>) {
    while let Ok(job) = jobs.recv() {
        match job {
            Job::Write { write, durable } => {
                if let Err(e) = apply(&checkpoint, &write, durable) {
                    tracing::error!(error = %e, "a checkpoint write failed; the agent stops");
                    failed.send_replace(Some(Arc::new(e)));
                    // Fail closed: no later write, nothing more sent. The
                    // queued flushes and sends are dropped with the queue.
                    return;
                }
            }
            Job::Send(tx, msg) => {
                if let Err(e) = tx.try_send(msg) {
                    // Status updates are retried.
                    tracing::debug!(error = %e, "could not queue a message to the master");
                }
            }
            Job::Flush(done) => {
                let _ = done.send(());
            }
            Job::Close(done) => {
                drop(checkpoint);
                let _ = done.send(());
                return;
            }
        }
    }
}

fn apply(ck: &Checkpoint, write: &Write, durable: bool) -> Result<(), CheckpointError> {
    #[cfg(test)]
    inject::check(ck)?;
    store(ck, write, durable)?;
    #[cfg(test)]
    inject::written(ck, write);
    Ok(())
}

fn store(ck: &Checkpoint, write: &Write, durable: bool) -> Result<(), CheckpointError> {
    match (write, durable) {
        (Write::TaskAndUpdates { record, queue }, true) => ck.put_task_and_updates(record, queue),
        (Write::TaskAndUpdates { record, queue }, false) => {
            ck.put_task_and_updates_lazily(record, queue)
        }
        (
            Write::Updates {
                framework_id,
                task_id,
                queue,
            },
            true,
        ) => ck.put_updates(framework_id, task_id, queue),
        (
            Write::Updates {
                framework_id,
                task_id,
                queue,
            },
            false,
        ) => ck.put_updates_lazily(framework_id, task_id, queue),
        (
            Write::RemoveTask {
                framework_id,
                task_id,
            },
            true,
        ) => ck.remove_task(framework_id, task_id),
        (
            Write::RemoveTask {
                framework_id,
                task_id,
            },
            false,
        ) => ck.remove_task_lazily(framework_id, task_id),
        // The id is always written durably.
        (Write::AgentId(id), _) => ck.set_agent_id(id),
    }
}

/// Failing, slowing and watching writes on purpose, in tests: every write
/// to a checkpoint whose path is listed as failing fails as a disk error
/// would; one listed as observed takes longer and keeps the task records
/// it wrote.
#[cfg(test)]
pub(crate) mod inject {
    use std::path::{Path, PathBuf};
    use std::sync::{Mutex, PoisonError};
    use std::time::Duration;

    use super::{Checkpoint, CheckpointError, TaskCheckpoint, Write};

    static FAILING: Mutex<Vec<PathBuf>> = Mutex::new(Vec::new());

    /// An observed checkpoint: how long each write takes, and the task
    /// records written so far, oldest first.
    struct Observed {
        path: PathBuf,
        delay: Duration,
        written: Vec<TaskCheckpoint>,
    }

    static OBSERVED: Mutex<Vec<Observed>> = Mutex::new(Vec::new());

    /// Makes every later write to the checkpoint at `path` take `delay`
    /// longer and keeps the task records it writes ([`written_tasks`]).
    pub(crate) fn observe_writes(path: PathBuf, delay: Duration) {
        OBSERVED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(Observed {
                path,
                delay,
                written: Vec::new(),
            });
    }

    /// The task records written to the observed checkpoint at `path` so
    /// far, oldest first.
    pub(crate) fn written_tasks(path: &Path) -> Vec<TaskCheckpoint> {
        OBSERVED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|o| o.path == path)
            .flat_map(|o| o.written.clone())
            .collect()
    }

    pub(super) fn written(ck: &Checkpoint, write: &Write) {
        if let Write::TaskAndUpdates { record, .. } = write {
            let mut observed = OBSERVED.lock().unwrap_or_else(PoisonError::into_inner);
            for o in observed.iter_mut().filter(|o| o.path == ck.path()) {
                o.written.push(record.clone());
            }
        }
    }

    /// Makes every later write to the checkpoint at `path` fail.
    pub(crate) fn fail_writes(path: PathBuf) {
        FAILING
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(path);
    }

    pub(super) fn check(ck: &Checkpoint) -> Result<(), CheckpointError> {
        let delay = OBSERVED
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .filter(|o| o.path == ck.path())
            .map(|o| o.delay)
            .max();
        if let Some(delay) = delay {
            std::thread::sleep(delay);
        }
        let failing = FAILING.lock().unwrap_or_else(PoisonError::into_inner);
        if failing.iter().any(|p| p == ck.path()) {
            return Err(CheckpointError::Store {
                path: ck.path().to_path_buf(),
                source: redb::Error::Io(std::io::Error::other("injected write failure")),
            });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(task: &str, n: u8) -> pb::StatusUpdate {
        pb::StatusUpdate {
            framework_id: "fw".into(),
            status: Some(pb::TaskStatus {
                task_id: task.into(),
                uuid: vec![n; 16],
                ..Default::default()
            }),
        }
    }

    #[tokio::test]
    async fn writes_in_order_and_sends_after_the_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.redb");
        let writer = Writer::spawn(Checkpoint::open(&path).unwrap());
        let (tx, mut rx) = mpsc::channel(8);
        let queue = |t: &str, n: u8| Write::Updates {
            framework_id: "fw".into(),
            task_id: t.into(),
            queue: vec![update(t, n)],
        };
        writer.queue(Job::Write {
            write: queue("a", 1),
            durable: true,
        });
        writer.queue(Job::Send(tx.clone(), pb::AgentMessage::default()));
        writer.queue(Job::Write {
            write: Write::RemoveTask {
                framework_id: "fw".into(),
                task_id: "a".into(),
            },
            durable: false,
        });
        writer.queue(Job::Write {
            write: queue("b", 2),
            durable: true,
        });
        writer.queue(Job::Write {
            write: Write::AgentId("agent-7".into()),
            durable: true,
        });
        writer.flushed().await.unwrap();
        assert!(rx.try_recv().is_ok(), "the send after the write went out");
        writer.close().await;
        let recovered = Checkpoint::open(&path).unwrap().load().unwrap();
        assert_eq!(recovered.agent_id, "agent-7");
        let keys: Vec<_> = recovered.updates.iter().map(|(k, _)| k.clone()).collect();
        assert_eq!(keys, vec![("fw".to_owned(), "b".to_owned())]);
    }

    #[tokio::test]
    async fn a_failed_write_stops_writes_and_sends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("agent.redb");
        let writer = Writer::spawn(Checkpoint::open(&path).unwrap());
        assert!(writer.failure().is_none());
        inject::fail_writes(path.clone());
        let (tx, mut rx) = mpsc::channel(8);
        writer.queue(Job::Write {
            write: Write::AgentId("agent-1".into()),
            durable: true,
        });
        writer.queue(Job::Send(tx, pb::AgentMessage::default()));
        let e = tokio::time::timeout(std::time::Duration::from_secs(10), writer.failed())
            .await
            .expect("the failure is reported");
        assert!(e.to_string().contains("injected write failure"), "{e}");
        let flushed = writer.flushed().await.unwrap_err();
        assert!(flushed.to_string().contains("injected write failure"));
        // Nothing was sent after the failed write.
        let closed = tokio::time::timeout(std::time::Duration::from_secs(10), rx.recv()).await;
        assert!(matches!(closed, Ok(None)), "{closed:?}");
    }
}
