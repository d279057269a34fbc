//! Collecting a job's log from its agent: the task's `stdout` and `stderr`,
//! followed through `Agent.ReadLog`, masked (see [`super::mask`]) and
//! appended to one log file, in a way that survives a restart of the CI
//! framework.
//!
//! Next to each log `<job>-<attempt>.log` a small JSON file
//! `<job>-<attempt>.log.pos` (a [`Position`]) is replaced after every write:
//! how long the log is, and how far each stream has been read. A stream's
//! offset counts only the raw bytes whose masked form is in the log; the
//! bytes the masker still holds back (they may start a secret) are not
//! counted, so they are read again. A collector that starts on a log with
//! a position cuts the log back to the recorded length (anything written
//! after the position was recorded, by a process killed between the two
//! writes, goes) and asks the agent for each stream from its recorded
//! offset, with a new masker: nothing is stored twice, nothing is lost,
//! and masking still catches a secret split across the restart. A log
//! without a position is collected from the start; a position whose
//! streams are both done means the log is whole.
//!
//! [`Collecting`] is the set of tasks whose logs are being collected right
//! now; log viewers use it to tell "the job has ended" from "the job has
//! ended and its whole log is stored".

use std::collections::HashSet;
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_sdk::proto as pb;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncSeekExt as _, AsyncWriteExt as _};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use super::mask::Masker;

/// How far a log has been collected, stored next to it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    /// Bytes of the (masked) log file.
    pub len: u64,
    /// Raw bytes of the task's `stdout` that are in the log.
    pub stdout: u64,
    /// Raw bytes of the task's `stderr` that are in the log.
    pub stderr: u64,
    /// `stdout` was read to its end (the task had ended).
    pub stdout_done: bool,
    /// `stderr` was read to its end.
    pub stderr_done: bool,
}

impl Position {
    /// Both streams were read to their end: the log is whole.
    pub fn is_done(&self) -> bool {
        self.stdout_done && self.stderr_done
    }
}

/// The position file of the log at `log`: the log's path with `.pos`
/// appended.
pub fn position_path(log: &Path) -> PathBuf {
    let mut name = log.as_os_str().to_owned();
    name.push(".pos");
    PathBuf::from(name)
}

/// Reads the position stored next to the log at `log`; `None` when there
/// is none.
pub fn read_position(log: &Path) -> Result<Option<Position>, CollectError> {
    let path = position_path(log);
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| CollectError::Position {
                path,
                message: e.to_string(),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(CollectError::Io { path, source }),
    }
}

/// What stopped a collection.
#[derive(Debug, thiserror::Error)]
pub enum CollectError {
    /// Reading or writing the log or its position failed.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The position file is not a position.
    #[error("{}: not a log position: {message}", path.display())]
    Position {
        /// The file.
        path: PathBuf,
        /// Why.
        message: String,
    },
    /// The agent could not be reached.
    #[error("cannot reach agent at {address}: {message}")]
    Connect {
        /// The agent's address.
        address: String,
        /// Why.
        message: String,
    },
    /// The agent answered with an error.
    #[error("agent at {address}: {message}")]
    Agent {
        /// The agent's address.
        address: String,
        /// Its message.
        message: String,
    },
    /// The agent sent bytes from another offset than asked for.
    #[error("agent at {address} sent {stream} from byte {got}, expected byte {expected}")]
    Gap {
        /// The agent's address.
        address: String,
        /// `stdout` or `stderr`.
        stream: &'static str,
        /// The offset it sent.
        got: u64,
        /// The offset expected.
        expected: u64,
    },
}

/// The tasks whose logs are being collected now (shared by the runner,
/// which starts collections, and the viewers).
#[derive(Debug, Clone, Default)]
pub struct Collecting(Arc<Mutex<HashSet<String>>>);

impl Collecting {
    fn set(&self) -> MutexGuard<'_, HashSet<String>> {
        // A panic while holding the lock leaves a consistent set.
        self.0
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Whether task `task`'s log is being collected.
    pub fn contains(&self, task: &str) -> bool {
        self.set().contains(task)
    }

    /// Marks `task` as being collected until the returned guard is
    /// dropped; `None` if it already is.
    pub(crate) fn start(&self, task: &str) -> Option<CollectingGuard> {
        self.set()
            .insert(task.to_string())
            .then(|| CollectingGuard {
                set: self.clone(),
                task: task.to_string(),
            })
    }
}

/// Removes its task from [`Collecting`] when dropped.
#[derive(Debug)]
pub(crate) struct CollectingGuard {
    set: Collecting,
    task: String,
}

impl Drop for CollectingGuard {
    fn drop(&mut self) {
        self.set.set().remove(&self.task);
    }
}

/// One log to collect.
#[derive(Debug, Clone)]
pub(crate) struct LogSource {
    /// The agent's API address.
    pub address: String,
    /// The framework's id.
    pub framework_id: String,
    /// The task.
    pub task: String,
    /// The values to mask.
    pub secrets: Vec<String>,
    /// The log file.
    pub path: PathBuf,
}

/// How a collection ended without error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// Both streams were read to their end: the log is whole.
    Done,
    /// `stop` was cancelled; the position says where to go on.
    Stopped,
}

/// The two streams, as indices.
const STREAMS: [(pb::LogFile, &str); 2] = [
    (pb::LogFile::Stdout, "stdout"),
    (pb::LogFile::Stderr, "stderr"),
];

/// The log file with its position, written together.
struct Sink {
    file: tokio::fs::File,
    path: PathBuf,
    pos: Position,
}

impl Sink {
    fn io(&self, source: std::io::Error) -> CollectError {
        CollectError::Io {
            path: self.path.clone(),
            source,
        }
    }

    /// Appends `masked` to the log, then records that stream `which` has
    /// been read up to `offset` (and to its end, with `done`).
    async fn write(
        &mut self,
        masked: &[u8],
        which: usize,
        offset: u64,
        done: bool,
    ) -> Result<(), CollectError> {
        if !masked.is_empty() {
            self.file.write_all(masked).await.map_err(|e| self.io(e))?;
            // Handed to the OS before the position says so.
            self.file.flush().await.map_err(|e| self.io(e))?;
            self.pos.len += masked.len() as u64;
        }
        if which == 0 {
            self.pos.stdout = offset;
            self.pos.stdout_done |= done;
        } else {
            self.pos.stderr = offset;
            self.pos.stderr_done |= done;
        }
        write_position(&self.path, &self.pos).await
    }
}

/// Replaces the position file of the log at `log` (write, then rename).
async fn write_position(log: &Path, pos: &Position) -> Result<(), CollectError> {
    let path = position_path(log);
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = PathBuf::from(tmp);
    let json = serde_json::to_vec(pos).map_err(|e| CollectError::Position {
        path: path.clone(),
        message: e.to_string(),
    })?;
    tokio::fs::write(&tmp, json)
        .await
        .map_err(|source| CollectError::Io {
            path: tmp.clone(),
            source,
        })?;
    tokio::fs::rename(&tmp, &path)
        .await
        .map_err(|source| CollectError::Io { path, source })
}

/// Opens the log at `path` where its position says it ends (a log without
/// a usable position starts again, empty).
async fn open_sink(path: &Path) -> Result<Sink, CollectError> {
    let io = |source| CollectError::Io {
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        tokio::fs::create_dir_all(dir).await.map_err(io)?;
    }
    let read = path.to_path_buf();
    let stored = tokio::task::spawn_blocking(move || read_position(&read))
        .await
        .map_err(|e| io(std::io::Error::other(e)))?;
    let mut pos = match stored {
        Ok(pos) => pos.unwrap_or_default(),
        Err(e) => {
            warn!("{e}; collecting the log again from the start");
            Position::default()
        }
    };
    let mut file = tokio::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(false)
        .open(path)
        .await
        .map_err(io)?;
    let len = file.metadata().await.map_err(io)?.len();
    if len < pos.len {
        warn!(
            log = %path.display(),
            "the log is shorter ({len} bytes) than its position says ({}); collecting it again from the start",
            pos.len
        );
        pos = Position::default();
    }
    file.set_len(pos.len).await.map_err(io)?;
    file.seek(SeekFrom::Start(pos.len)).await.map_err(io)?;
    Ok(Sink {
        file,
        path: path.to_path_buf(),
        pos,
    })
}

/// Whether an agent's error means there is nothing (more) to read: the
/// task or its log file does not exist there.
fn nothing_there(status: &tonic::Status) -> bool {
    status.code() == tonic::Code::NotFound
}

/// Collects `source`'s log from where its position says, until both
/// streams end (the task has ended) or `stop` is cancelled.
pub(crate) async fn collect(
    source: &LogSource,
    stop: &CancellationToken,
) -> Result<Outcome, CollectError> {
    let mut sink = open_sink(&source.path).await?;
    if sink.pos.is_done() {
        return Ok(Outcome::Done);
    }
    let address = source.address.clone();
    let agent_error = |status: tonic::Status| CollectError::Agent {
        address: address.clone(),
        message: status.message().to_string(),
    };
    let channel = tonic::transport::Endpoint::from_shared(pb::endpoint_uri(&source.address))
        .map_err(|e| CollectError::Connect {
            address: source.address.clone(),
            message: e.to_string(),
        })?
        .connect_timeout(Duration::from_secs(5))
        // A vanished agent ends the collection instead of leaving it
        // waiting on a dead connection.
        .http2_keep_alive_interval(Duration::from_secs(10))
        .keep_alive_timeout(Duration::from_secs(10))
        .connect()
        .await
        .map_err(|e| CollectError::Connect {
            address: source.address.clone(),
            message: e.to_string(),
        })?;
    let offsets = [sink.pos.stdout, sink.pos.stderr];
    let done = [sink.pos.stdout_done, sink.pos.stderr_done];
    let mut streams: [Option<tonic::Streaming<pb::LogChunk>>; 2] = [None, None];
    let mut read = offsets;
    let mut maskers = [
        Masker::new(source.secrets.iter()),
        Masker::new(source.secrets.iter()),
    ];
    for (i, (file, _)) in STREAMS.iter().enumerate() {
        if done[i] {
            continue;
        }
        let mut client = pb::agent_client::AgentClient::new(channel.clone());
        let request = pb::ReadLogRequest {
            task_id: source.task.clone(),
            framework_id: source.framework_id.clone(),
            file: *file as i32,
            offset: offsets[i],
            follow: true,
        };
        match client.read_log(request).await {
            Ok(response) => streams[i] = Some(response.into_inner()),
            Err(status) if nothing_there(&status) => {
                sink.write(&[], i, offsets[i], true).await?;
            }
            Err(status) => return Err(agent_error(status)),
        }
    }
    while streams.iter().any(Option::is_some) {
        let [stdout, stderr] = &mut streams;
        let (i, message) = tokio::select! {
            () = stop.cancelled() => return Ok(Outcome::Stopped),
            m = next(stdout), if stdout.is_some() => (0, m),
            m = next(stderr), if stderr.is_some() => (1, m),
        };
        match message {
            Ok(Some(chunk)) => {
                if chunk.offset != read[i] {
                    return Err(CollectError::Gap {
                        address: source.address.clone(),
                        stream: STREAMS[i].1,
                        got: chunk.offset,
                        expected: read[i],
                    });
                }
                read[i] += chunk.data.len() as u64;
                let masked = maskers[i].push(&chunk.data);
                let kept = read[i] - maskers[i].held_len() as u64;
                sink.write(&masked, i, kept, false).await?;
            }
            Ok(None) => {
                let rest = maskers[i].finish();
                sink.write(&rest, i, read[i], true).await?;
                streams[i] = None;
            }
            Err(status) if nothing_there(&status) => {
                let rest = maskers[i].finish();
                sink.write(&rest, i, read[i], true).await?;
                streams[i] = None;
            }
            Err(status) => return Err(agent_error(status)),
        }
    }
    Ok(Outcome::Done)
}

/// The next message of a stream that is there.
async fn next(
    stream: &mut Option<tonic::Streaming<pb::LogChunk>>,
) -> Result<Option<pb::LogChunk>, tonic::Status> {
    match stream {
        Some(s) => s.message().await,
        None => Ok(None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_position_file_sits_next_to_the_log() {
        assert_eq!(
            position_path(Path::new("/d/logs/7/0-1.log")),
            Path::new("/d/logs/7/0-1.log.pos")
        );
    }

    #[tokio::test]
    async fn a_log_is_cut_back_to_its_position_and_a_bad_position_starts_over() {
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("logs").join("0-1.log");
        // Nothing yet: an empty log, from the start.
        let sink = open_sink(&log).await.unwrap();
        assert_eq!(sink.pos, Position::default());
        drop(sink);
        // Bytes written after the position was stored are dropped.
        std::fs::write(&log, b"one\ntwo\nthree\n").unwrap();
        let pos = Position {
            len: 8,
            stdout: 8,
            ..Position::default()
        };
        write_position(&log, &pos).await.unwrap();
        assert_eq!(read_position(&log).unwrap(), Some(pos));
        let mut sink = open_sink(&log).await.unwrap();
        assert_eq!(sink.pos, pos);
        sink.write(b"drei\n", 0, 14, false).await.unwrap();
        sink.write(b"", 1, 0, true).await.unwrap();
        assert_eq!(std::fs::read(&log).unwrap(), b"one\ntwo\ndrei\n");
        let stored = read_position(&log).unwrap().unwrap();
        assert_eq!(
            stored,
            Position {
                len: 13,
                stdout: 14,
                stderr: 0,
                stdout_done: false,
                stderr_done: true,
            }
        );
        drop(sink);
        // A position longer than the log (or unreadable): from the start.
        std::fs::write(&log, b"x").unwrap();
        assert_eq!(open_sink(&log).await.unwrap().pos, Position::default());
        std::fs::write(position_path(&log), b"{not json").unwrap();
        assert!(matches!(
            read_position(&log),
            Err(CollectError::Position { .. })
        ));
        let sink = open_sink(&log).await.unwrap();
        assert_eq!(sink.pos, Position::default());
        assert_eq!(std::fs::read(&log).unwrap(), b"");
    }

    #[test]
    fn collecting_marks_a_task_until_the_guard_drops() {
        let set = Collecting::default();
        let guard = set.start("ci-1-0-1").expect("not collected yet");
        assert!(set.contains("ci-1-0-1"));
        assert!(set.start("ci-1-0-1").is_none(), "one collector per task");
        drop(guard);
        assert!(!set.contains("ci-1-0-1"));
    }
}
