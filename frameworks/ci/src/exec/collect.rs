//! Collecting a job's log from its agent: the task's `stdout` and `stderr`,
//! followed through `Agent.ReadLog`, masked (see [`super::mask`]) and
//! appended to one log file in the order they were written, in a way that
//! survives a restart of the CI framework.
//!
//! The order: the job's script writes [`crate::SCRIPT_START_MARKER`] to its
//! stderr, then sends its stderr to its stdout, so the task's `stderr`
//! holds only the agent's own lines: its fetches above the mark, its
//! uploads below it. The log is `stderr` up to the mark (the mark left
//! out), then `stdout`, then the rest of `stderr`.
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
//! without a position is collected from the start (its position is stored
//! before the log is created, so a log without one is an older berth's,
//! taken as whole); a position whose streams are both done means the log
//! is whole.
//!
//! A collection that fails (the agent unreachable, its address unknown,
//! the stream broken) is tried again from its position with backoff
//! ([`LogRetry`]); a try that stored something starts the count again.
//! After the last try the collection gives up: it ends the log with one
//! line, `[berth] the rest of this log could not be collected: <why>`,
//! and marks the position [`Position::gave_up`], so that viewers are told
//! the log will not grow any more, and the log itself says it is not
//! whole.
//!
//! [`Collecting`] is the set of tasks whose logs are being collected right
//! now (retries and the waits between them included); log viewers use it
//! and the position to tell "the job has ended" from "the job has ended
//! and its whole log is stored" ([`is_whole`]).

use std::collections::{HashMap, HashSet};
use std::io::SeekFrom;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_sdk::proto as pb;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt as _, AsyncSeekExt as _, AsyncWriteExt as _};
use tokio::sync::Notify;
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
    /// The collection gave up after repeated errors; the log ends with a
    /// line saying the rest could not be collected.
    #[serde(default)]
    pub gave_up: bool,
    /// `stderr` was read up to the job script's start mark: what the
    /// agent wrote before the script (its fetches) is in the log, and
    /// `stdout` comes next (see [`collect`]).
    #[serde(default)]
    pub script_started: bool,
}

impl Position {
    /// Nothing more will be added to the log: both streams were read to
    /// their end (the log is whole), or the collection gave up (and the
    /// log says so).
    pub fn is_done(&self) -> bool {
        (self.stdout_done && self.stderr_done) || self.gave_up
    }
}

/// Whether the log at `log` will not grow any more: its position is done
/// (see [`Position::is_done`]), or it has no position but exists (stored
/// whole by an older berth, or written whole by the runner itself). A log
/// with neither is still to be collected. Viewers must also check that
/// it is not being collected ([`Collecting`]).
pub fn is_whole(log: &Path) -> bool {
    match read_position(log) {
        Ok(Some(pos)) => pos.is_done(),
        Ok(None) => log.exists(),
        // An unreadable position is collected again from the start.
        Err(_) => false,
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
    /// The agent's address is not known (the masters do not list it, or
    /// cannot be reached).
    #[error("the address of agent {agent:?} is not known")]
    NoAddress {
        /// The agent's id.
        agent: String,
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

/// How a failing log collection is tried again (see the module's doc).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LogRetry {
    /// Tries in a row that store nothing before the collection gives up
    /// (at least 1).
    pub tries: u32,
    /// The wait after the first failed try; it doubles after each.
    pub first_delay: Duration,
    /// The longest wait between two tries.
    pub max_delay: Duration,
}

impl Default for LogRetry {
    /// 10 tries, waiting 1 s, 2 s, 4 s … up to a minute between them:
    /// about four minutes of an agent that cannot be reached.
    fn default() -> LogRetry {
        LogRetry {
            tries: 10,
            first_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(60),
        }
    }
}

/// Agents' API addresses (for `Agent.ReadLog`), asked of the masters'
/// operator API and remembered; shared by the log collections.
#[derive(Debug, Clone, Default)]
pub(crate) struct AgentBook {
    masters: Vec<String>,
    known: Arc<Mutex<HashMap<String, String>>>,
}

impl AgentBook {
    /// A book that asks `masters`.
    pub(crate) fn new(masters: Vec<String>) -> AgentBook {
        AgentBook {
            masters,
            known: Arc::default(),
        }
    }

    fn known(&self) -> MutexGuard<'_, HashMap<String, String>> {
        self.known
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers `agent`'s address.
    #[cfg(test)]
    pub(crate) fn insert(&self, agent: &str, address: &str) {
        self.known().insert(agent.to_string(), address.to_string());
    }

    /// Forgets `agent`'s address (it could not be reached there: it may
    /// have come back elsewhere); the next lookup asks the masters.
    pub(crate) fn forget(&self, agent: &str) {
        self.known().remove(agent);
    }

    /// `agent`'s address: remembered, or from the first master that lists
    /// the agents (a follower's possibly stale list will do).
    pub(crate) async fn address(&self, agent: &str) -> Option<String> {
        if let Some(a) = self.known().get(agent) {
            return Some(a.clone());
        }
        if let Some(agents) = berth_sdk::agents::list_agents(&self.masters).await {
            let mut known = self.known();
            for a in agents {
                if let Some(info) = a.info {
                    known.insert(a.id.clone(), info.address.clone());
                }
            }
        }
        self.known().get(agent).cloned()
    }
}

/// One log to collect.
#[derive(Debug, Clone)]
pub(crate) struct LogSource {
    /// The id of the agent the task ran on (empty when not known).
    pub agent: String,
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
    /// Every try failed; the log ends with a line saying so.
    GaveUp,
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

impl Sink {
    /// Ends the log with the line saying why the rest could not be
    /// collected, and records that the collection gave up.
    async fn give_up(&mut self, why: &str) -> Result<(), CollectError> {
        let mut line = Vec::new();
        if self.pos.len > 0 && !self.ends_with_newline().await? {
            line.push(b'\n');
        }
        line.extend_from_slice(
            format!("[berth] the rest of this log could not be collected: {why}\n").as_bytes(),
        );
        self.file.write_all(&line).await.map_err(|e| self.io(e))?;
        self.file.flush().await.map_err(|e| self.io(e))?;
        self.pos.len += line.len() as u64;
        self.pos.gave_up = true;
        write_position(&self.path, &self.pos).await
    }

    /// Whether the log's last byte (at its position) is a newline.
    async fn ends_with_newline(&self) -> Result<bool, CollectError> {
        let mut file = tokio::fs::File::open(&self.path)
            .await
            .map_err(|e| self.io(e))?;
        file.seek(SeekFrom::Start(self.pos.len.saturating_sub(1)))
            .await
            .map_err(|e| self.io(e))?;
        let mut last = [0u8; 1];
        let n = file.read(&mut last).await.map_err(|e| self.io(e))?;
        Ok(n == 1 && last[0] == b'\n')
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
        Ok(Some(pos)) => pos,
        Ok(None) => {
            // Stored before the log exists: a log without a position is
            // one that an older berth stored whole.
            write_position(path, &Position::default()).await?;
            Position::default()
        }
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

/// Collects `source`'s log, trying again after errors and giving up after
/// `retry.tries` tries in a row that stored nothing (see the module's
/// doc). A notification on `wake` cuts a wait between tries short (a new
/// update of the task: it may be reachable again).
pub(crate) async fn follow(
    source: &LogSource,
    agents: &AgentBook,
    retry: LogRetry,
    wake: &Notify,
    stop: &CancellationToken,
) -> Outcome {
    if source.agent.is_empty() {
        // Nowhere to ask: trying again would not help.
        warn!(task = %source.task, "the agent the job ran on is not known; its log is not collected");
        if let Err(e) = give_up(&source.path, "the agent the job ran on is not known").await {
            warn!(task = %source.task, "cannot end the log: {e}");
        }
        return Outcome::GaveUp;
    }
    let mut failed = 0;
    let mut delay = retry.first_delay;
    loop {
        let before = read_position(&source.path)
            .ok()
            .flatten()
            .unwrap_or_default();
        let result = match agents.address(&source.agent).await {
            Some(address) => collect(source, &address, stop).await,
            None => Err(CollectError::NoAddress {
                agent: source.agent.clone(),
            }),
        };
        let e = match result {
            Ok(outcome) => return outcome,
            Err(e) => e,
        };
        if matches!(e, CollectError::Connect { .. } | CollectError::Agent { .. }) {
            agents.forget(&source.agent);
        }
        if read_position(&source.path)
            .ok()
            .flatten()
            .unwrap_or_default()
            != before
        {
            // It got somewhere: count again.
            failed = 0;
            delay = retry.first_delay;
        }
        failed += 1;
        if failed >= retry.tries.max(1) {
            warn!(task = %source.task, "collecting the log failed {failed} times; giving up: {e}");
            if let Err(e) = give_up(&source.path, &e.to_string()).await {
                warn!(task = %source.task, "cannot end the log: {e}");
            }
            return Outcome::GaveUp;
        }
        warn!(
            task = %source.task,
            "collecting the log failed (try {failed} of {}): {e}; trying again in {delay:?}",
            retry.tries
        );
        tokio::select! {
            () = stop.cancelled() => return Outcome::Stopped,
            () = tokio::time::sleep(delay) => {}
            () = wake.notified() => {}
        }
        delay = delay
            .saturating_mul(2)
            .min(retry.max_delay.max(retry.first_delay));
    }
}

/// Gives the collection of the log at `path` up: cuts it back to its
/// position and ends it with a line saying why the rest could not be
/// collected (nothing, when it is done already).
async fn give_up(path: &Path, why: &str) -> Result<(), CollectError> {
    let mut sink = open_sink(path).await?;
    if sink.pos.is_done() {
        return Ok(());
    }
    sink.give_up(why).await
}

/// Collects `source`'s log from the agent at `address`, from where its
/// position says, until both streams end (the task has ended) or `stop`
/// is cancelled.
pub(crate) async fn collect(
    source: &LogSource,
    address: &str,
    stop: &CancellationToken,
) -> Result<Outcome, CollectError> {
    let mut sink = open_sink(&source.path).await?;
    if sink.pos.is_done() {
        return Ok(Outcome::Done);
    }
    let channel = tonic::transport::Endpoint::from_shared(pb::endpoint_uri(address))
        .map_err(|e| CollectError::Connect {
            address: address.to_string(),
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
            address: address.to_string(),
            message: e.to_string(),
        })?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    // One stream, in the order written. The job's script sends its stderr
    // to its stdout (`crate::script`), so the task's `stderr` holds only
    // the agent's own lines: its fetches, written before the script
    // starts, and its uploads, after the script's last output. The script
    // marks where it starts in `stderr` (`SCRIPT_START_MARKER`, first thing
    // it does), so the log is: `stderr` up to the mark, then `stdout`,
    // then the rest of `stderr` — also when the collection starts after
    // the job has ended. A position from before the mark existed that has
    // `stdout` under way goes on with `stdout`.
    let started = sink.pos.script_started || sink.pos.stdout > 0 || sink.pos.stdout_done;
    if !started
        && !sink.pos.stderr_done
        && lines_before_script(&mut client, source, &mut sink, stop, address).await?
            == Outcome::Stopped
    {
        return Ok(Outcome::Stopped);
    }
    for which in [0, 1] {
        let done = if which == 0 {
            sink.pos.stdout_done
        } else {
            sink.pos.stderr_done
        };
        if !done
            && copy(&mut client, source, &mut sink, which, stop, address).await? == Outcome::Stopped
        {
            return Ok(Outcome::Stopped);
        }
    }
    Ok(Outcome::Done)
}

/// Copies stream `which` (0 stdout, 1 stderr) of `source`'s task, masked,
/// from where the position says to its end.
async fn copy(
    client: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
    source: &LogSource,
    sink: &mut Sink,
    which: usize,
    stop: &CancellationToken,
    address: &str,
) -> Result<Outcome, CollectError> {
    let mut read = if which == 0 {
        sink.pos.stdout
    } else {
        sink.pos.stderr
    };
    let mut masker = Masker::new(source.secrets.iter());
    let Some(mut stream) = read_log(client, source, which, read)
        .await
        .map_err(|status| agent_error(address, status))?
    else {
        sink.write(&[], which, read, true).await?;
        return Ok(Outcome::Done);
    };
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ok(Outcome::Stopped),
            m = stream.message() => m,
        };
        match message {
            Ok(Some(chunk)) => {
                check_offset(&chunk, read, which, address)?;
                read += chunk.data.len() as u64;
                let masked = masker.push(&chunk.data);
                let kept = read - masker.held_len() as u64;
                sink.write(&masked, which, kept, false).await?;
            }
            Ok(None) => break,
            Err(status) if nothing_there(&status) => break,
            Err(status) => return Err(agent_error(address, status)),
        }
    }
    let rest = masker.finish();
    sink.write(&rest, which, read, true).await?;
    Ok(Outcome::Done)
}

/// Copies the agent's lines written to `stderr` before the job's script
/// started (its fetches), masked, up to the script's start mark, which is
/// left out; without a mark (the script never ran: a fetch failed) all of
/// `stderr`. Reads whole lines: a line is stored once its end is read.
async fn lines_before_script(
    client: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
    source: &LogSource,
    sink: &mut Sink,
    stop: &CancellationToken,
    address: &str,
) -> Result<Outcome, CollectError> {
    let mark = crate::script::SCRIPT_START_MARKER.as_bytes();
    // Raw bytes of stderr stored (through the masker) and read.
    let mut consumed = sink.pos.stderr;
    let mut read = consumed;
    let mut pending: Vec<u8> = Vec::new();
    let mut masker = Masker::new(source.secrets.iter());
    let Some(mut stream) = read_log(client, source, 1, read)
        .await
        .map_err(|status| agent_error(address, status))?
    else {
        sink.write(&[], 1, read, true).await?;
        return Ok(Outcome::Done);
    };
    loop {
        let message = tokio::select! {
            () = stop.cancelled() => return Ok(Outcome::Stopped),
            m = stream.message() => m,
        };
        let chunk = match message {
            Ok(Some(chunk)) => chunk,
            Ok(None) => break,
            Err(status) if nothing_there(&status) => break,
            Err(status) => return Err(agent_error(address, status)),
        };
        check_offset(&chunk, read, 1, address)?;
        read += chunk.data.len() as u64;
        pending.extend_from_slice(&chunk.data);
        let mut out = Vec::new();
        while let Some(nl) = pending.iter().position(|b| *b == b'\n') {
            let line: Vec<u8> = pending.drain(..=nl).collect();
            consumed += line.len() as u64;
            if line == mark {
                out.extend(masker.finish());
                sink.pos.script_started = true;
                sink.write(&out, 1, consumed, false).await?;
                return Ok(Outcome::Done);
            }
            out.extend(masker.push(&line));
        }
        let kept = consumed - masker.held_len() as u64;
        sink.write(&out, 1, kept, false).await?;
    }
    // No mark: the script never ran; this is all of stderr.
    let mut rest = masker.push(&pending);
    rest.extend(masker.finish());
    sink.write(&rest, 1, read, true).await?;
    Ok(Outcome::Done)
}

/// A chunk must start where its stream was read up to.
fn check_offset(
    chunk: &pb::LogChunk,
    read: u64,
    which: usize,
    address: &str,
) -> Result<(), CollectError> {
    if chunk.offset == read {
        return Ok(());
    }
    Err(CollectError::Gap {
        address: address.to_string(),
        stream: STREAMS[which].1,
        got: chunk.offset,
        expected: read,
    })
}

fn agent_error(address: &str, status: tonic::Status) -> CollectError {
    CollectError::Agent {
        address: address.to_string(),
        message: status.message().to_string(),
    }
}

/// Follows stream `which` (0 stdout, 1 stderr) of `source`'s task from
/// `offset`; `None` when the agent has nothing there (no such task or
/// file).
async fn read_log(
    client: &mut pb::agent_client::AgentClient<tonic::transport::Channel>,
    source: &LogSource,
    which: usize,
    offset: u64,
) -> Result<Option<tonic::Streaming<pb::LogChunk>>, tonic::Status> {
    let request = pb::ReadLogRequest {
        task_id: source.task.clone(),
        framework_id: source.framework_id.clone(),
        file: STREAMS[which].0 as i32,
        offset,
        follow: true,
    };
    match client.read_log(request).await {
        Ok(response) => Ok(Some(response.into_inner())),
        Err(status) if nothing_there(&status) => Ok(None),
        Err(status) => Err(status),
    }
}

#[cfg(test)]
mod tests;
