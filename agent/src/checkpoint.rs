//! The agent's checkpoint: what it must remember across a restart
//! (including SIGKILL) to re-adopt its running containers and to resend the
//! status updates the master has not acknowledged, after Mesos's agent
//! recovery.
//!
//! What we store and why (one redb file, [`FILE_NAME`] in the work
//! directory):
//! - table `meta`:
//!   - `schema_version`: the layout of this file, a little-endian `u32`
//!     ([`SCHEMA_VERSION`]). A file with a newer version is refused rather
//!     than misread. The key and value types of `meta` never change, so
//!     every version can read this entry.
//!   - `agent_id`: the id from the last `Registered` (UTF-8). The agent
//!     re-registers under it so the master matches it with its tasks.
//! - table `tasks`: `(framework_id, task_id)` → postcard-encoded
//!   [`TaskCheckpoint`]: the task as launched, its latest state, its
//!   sandbox and how to find its container again (containerizer, container
//!   id, pid and process group), a kill in progress and the host ports it
//!   holds.
//! - table `updates`: `(framework_id, task_id)` → postcard-encoded
//!   `Vec<Vec<u8>>`, the task's prost-encoded `pb::StatusUpdate`s not yet
//!   acknowledged, oldest first. A task may have updates and no task record
//!   (e.g. the `TASK_LOST` for a kill of a task the agent never knew).
//!
//! Every write is one redb write transaction committed with
//! [`Durability::Immediate`]: when a method returns `Ok`, the write is on
//! disk. The `_lazily` variants (for acknowledgements, which only shorten a
//! queue) skip the fsync; they become durable with the next durable write. The agent checkpoints a change before it acts on it or reports it,
//! so it never acknowledges anything it could forget.
//!
//! Reading never trusts the file: a record that does not decode, or that
//! contradicts its key, is a [`CheckpointError::Corrupt`] naming the table
//! and the key.
//!
//! Changing the format: task records are postcard, which is not
//! self-describing (values in declaration order, no field names, an enum
//! variant is its index), so a record decodes only with the type that
//! wrote it. Any change of what the file holds — a field added to,
//! removed from or reordered in [`TaskCheckpoint`] (or a type it holds), a
//! variant of [`ContainerizerKind`] added anywhere but at the end, a new
//! table or key, another encoding of the update queue — bumps
//! [`SCHEMA_VERSION`] and adds a migration in [`Checkpoint::open`], in the
//! transaction that checks the version: read every record with a copy of
//! the old type (`TaskCheckpointV1`), write it in the new form, write the
//! new version. A newer agent thus reads the file of an older one; an older
//! agent refuses a newer file ([`CheckpointError::NewerSchema`]). Renaming
//! a field in Rust changes nothing on disk. The prost-encoded `TaskInfo`
//! and `StatusUpdate` inside records follow protobuf's rules instead (new
//! fields get new numbers). Golden files in `agent/testdata/` hold every
//! value of version 1 and a whole version 1 file; they are never
//! rewritten, and a version gets files of its own.

use std::fmt;
use std::path::{Path, PathBuf};

use berth_proto as pb;
use prost::Message as _;
use redb::{
    Database, Durability, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition,
};
use serde::{Deserialize, Serialize};

pub use crate::error::CheckpointError;
use crate::status_update::TaskKey;

/// The checkpoint's file name inside the agent's work directory.
pub const FILE_NAME: &str = "agent.redb";

/// The layout version this agent reads and writes.
pub const SCHEMA_VERSION: u32 = 1;

const META_NAME: &str = "meta";
const TASKS_NAME: &str = "tasks";
const UPDATES_NAME: &str = "updates";
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new(META_NAME);
const TASKS: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new(TASKS_NAME);
const UPDATES: TableDefinition<'_, (&str, &str), &[u8]> = TableDefinition::new(UPDATES_NAME);
const SCHEMA_VERSION_KEY: &str = "schema_version";
const AGENT_ID_KEY: &str = "agent_id";

/// Which containerizer runs a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ContainerizerKind {
    /// The process containerizer: the task is a process group on the host.
    Process,
    /// The Docker containerizer: the task is a Docker container.
    Docker,
}

/// What the agent remembers about one task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaskCheckpoint {
    /// The task's framework.
    pub framework_id: String,
    /// The task.
    pub task_id: String,
    /// `pb::TaskInfo`, prost-encoded (the proto type has no serde).
    pub task_info: Vec<u8>,
    /// The latest `pb::TaskState` as i32.
    pub state: i32,
    /// The task's sandbox directory (stored as raw bytes: any Unix path
    /// round-trips, UTF-8 or not).
    #[serde(with = "path_bytes")]
    pub sandbox: PathBuf,
    /// Which containerizer runs it.
    pub containerizer: ContainerizerKind,
    /// The berth `ContainerId` string once launched.
    pub container_id: Option<String>,
    /// The task's process id (process containerizer); 0 otherwise.
    pub pid: i32,
    /// The task's process group (process containerizer); 0 otherwise.
    pub pgid: i32,
    /// A kill in progress: grace in ms and reason.
    pub kill: Option<(u64, String)>,
    /// Host ports assigned: (host, container, `"tcp"` or `"udp"`).
    pub ports: Vec<(u16, u16, String)>,
}

/// Everything [`Checkpoint::load`] read back.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Recovered {
    /// The agent's id; empty if it never registered.
    pub agent_id: String,
    /// Every task record, in key order (framework id, then task id).
    pub tasks: Vec<TaskCheckpoint>,
    /// Unacknowledged status updates per task, oldest first, decoded; in
    /// key order, only tasks that have some.
    pub updates: Vec<(TaskKey, Vec<pb::StatusUpdate>)>,
}

/// The agent's checkpoint store: one redb file. See the module docs.
pub struct Checkpoint {
    db: Database,
    path: PathBuf,
}

impl fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Checkpoint")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl Checkpoint {
    /// Opens the checkpoint file at `path` (the agent uses
    /// `work_dir.join(FILE_NAME)`), creating it if it does not exist.
    /// redb repairs a file left by a process that died mid-write; every
    /// transaction committed before is kept.
    ///
    /// # Errors
    /// [`CheckpointError::NewerSchema`] if the file was written by a newer
    /// agent; [`CheckpointError::Store`] if it cannot be opened or is held
    /// by another process; [`CheckpointError::Corrupt`] if its schema
    /// version is unreadable.
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        let db = Database::create(path).map_err(|e| store_err(path, e))?;
        let ckpt = Checkpoint {
            db,
            path: path.to_path_buf(),
        };
        let txn = ckpt.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| ckpt.err(e))?;
            let found = meta
                .get(SCHEMA_VERSION_KEY)
                .map_err(|e| ckpt.err(e))?
                .map(|v| decode_version(v.value()))
                .transpose()?;
            match found {
                Some(found) if found > SCHEMA_VERSION => {
                    // Dropping the transaction aborts it: nothing changes.
                    return Err(CheckpointError::NewerSchema {
                        path: ckpt.path.clone(),
                        found,
                        supported: SCHEMA_VERSION,
                    });
                }
                // Version 1 is the first; older layouts would be migrated
                // here.
                Some(_) => {}
                None => {
                    // A new file. The version is written in the same
                    // transaction that creates the tables, so records
                    // without a version are not ours.
                    let tasks = txn.open_table(TASKS).map_err(|e| ckpt.err(e))?;
                    let updates = txn.open_table(UPDATES).map_err(|e| ckpt.err(e))?;
                    if !tasks.is_empty().map_err(|e| ckpt.err(e))?
                        || !updates.is_empty().map_err(|e| ckpt.err(e))?
                    {
                        return Err(CheckpointError::Corrupt {
                            table: META_NAME,
                            key: format!("{SCHEMA_VERSION_KEY:?}"),
                            message: "missing, but the file holds records".into(),
                        });
                    }
                    meta.insert(SCHEMA_VERSION_KEY, SCHEMA_VERSION.to_le_bytes().as_slice())
                        .map_err(|e| ckpt.err(e))?;
                }
            }
            txn.open_table(TASKS).map_err(|e| ckpt.err(e))?;
            txn.open_table(UPDATES).map_err(|e| ckpt.err(e))?;
        }
        txn.commit().map_err(|e| ckpt.err(e))?;
        Ok(ckpt)
    }

    /// The redb file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Reads the whole checkpoint.
    ///
    /// # Errors
    /// [`CheckpointError::Store`] if the file cannot be read;
    /// [`CheckpointError::Corrupt`] if a record does not decode, or holds
    /// another task than its key says.
    pub fn load(&self) -> Result<Recovered, CheckpointError> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;

        let meta = read.open_table(META).map_err(|e| self.err(e))?;
        let agent_id = match meta.get(AGENT_ID_KEY).map_err(|e| self.err(e))? {
            Some(v) => String::from_utf8(v.value().to_vec()).map_err(|e| {
                corrupt(
                    META_NAME,
                    format!("{AGENT_ID_KEY:?}"),
                    format!("not UTF-8: {e}"),
                )
            })?,
            None => String::new(),
        };

        let table = read.open_table(TASKS).map_err(|e| self.err(e))?;
        let mut tasks = Vec::new();
        for item in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (framework_id, task_id) = k.value();
            tasks.push(decode_task(framework_id, task_id, v.value())?);
        }

        let table = read.open_table(UPDATES).map_err(|e| self.err(e))?;
        let mut updates = Vec::new();
        for item in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = item.map_err(|e| self.err(e))?;
            let (framework_id, task_id) = k.value();
            let queue = decode_queue(framework_id, task_id, v.value())?;
            if !queue.is_empty() {
                updates.push(((framework_id.to_owned(), task_id.to_owned()), queue));
            }
        }
        Ok(Recovered {
            agent_id,
            tasks,
            updates,
        })
    }

    /// Records the agent's id (from `Registered`).
    ///
    /// # Errors
    /// [`CheckpointError::Store`] if the write fails.
    pub fn set_agent_id(&self, id: &str) -> Result<(), CheckpointError> {
        let txn = self.begin_write()?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(AGENT_ID_KEY, id.as_bytes())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Writes (inserts or replaces) a task record.
    ///
    /// # Errors
    /// [`CheckpointError::Store`] if the write fails,
    /// [`CheckpointError::Encode`] if the record cannot be encoded.
    pub fn put_task(&self, t: &TaskCheckpoint) -> Result<(), CheckpointError> {
        let bytes = encode_task(t)?;
        let txn = self.begin_write()?;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.err(e))?;
            tasks
                .insert(
                    (t.framework_id.as_str(), t.task_id.as_str()),
                    bytes.as_slice(),
                )
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Forgets a task: its record and its unacknowledged updates. Removing
    /// a task that is not there is not an error.
    ///
    /// # Errors
    /// [`CheckpointError::Store`] if the write fails.
    pub fn remove_task(&self, framework_id: &str, task_id: &str) -> Result<(), CheckpointError> {
        self.remove_task_with(framework_id, task_id, Durability::Immediate)
    }

    /// [`Self::remove_task`] without the fsync (see [`Self::put_updates_lazily`]).
    ///
    /// # Errors
    /// As [`Self::remove_task`].
    pub fn remove_task_lazily(
        &self,
        framework_id: &str,
        task_id: &str,
    ) -> Result<(), CheckpointError> {
        self.remove_task_with(framework_id, task_id, Durability::None)
    }

    fn remove_task_with(
        &self,
        framework_id: &str,
        task_id: &str,
        durability: Durability,
    ) -> Result<(), CheckpointError> {
        let txn = self.begin_write_with(durability)?;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.err(e))?;
            tasks
                .remove((framework_id, task_id))
                .map_err(|e| self.err(e))?;
            let mut updates = txn.open_table(UPDATES).map_err(|e| self.err(e))?;
            updates
                .remove((framework_id, task_id))
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Replaces the task's queue of unacknowledged updates, oldest first
    /// (empty: the task has none, and its entry is removed).
    ///
    /// # Errors
    /// [`CheckpointError::Invalid`] if an update belongs to another task
    /// (nothing is written); [`CheckpointError::Store`] if the write fails.
    pub fn put_updates(
        &self,
        framework_id: &str,
        task_id: &str,
        queue: &[pb::StatusUpdate],
    ) -> Result<(), CheckpointError> {
        self.put_updates_with(framework_id, task_id, queue, Durability::Immediate)
    }

    /// [`Self::put_updates`] without the fsync: for a queue that only got
    /// shorter (an acknowledgement). The write becomes durable with the
    /// next durable write; a crash before that only means the acknowledged
    /// update is resent after the restart, which the master and the
    /// framework recognise by its uuid.
    ///
    /// # Errors
    /// As [`Self::put_updates`].
    pub fn put_updates_lazily(
        &self,
        framework_id: &str,
        task_id: &str,
        queue: &[pb::StatusUpdate],
    ) -> Result<(), CheckpointError> {
        self.put_updates_with(framework_id, task_id, queue, Durability::None)
    }

    fn put_updates_with(
        &self,
        framework_id: &str,
        task_id: &str,
        queue: &[pb::StatusUpdate],
        durability: Durability,
    ) -> Result<(), CheckpointError> {
        let bytes = encode_queue(framework_id, task_id, queue)?;
        let txn = self.begin_write_with(durability)?;
        {
            let mut updates = txn.open_table(UPDATES).map_err(|e| self.err(e))?;
            write_queue(&mut updates, framework_id, task_id, bytes.as_deref())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Writes a task record and replaces its update queue in one
    /// transaction: a status change and the update that reports it are
    /// never split by a crash.
    ///
    /// # Errors
    /// As [`Self::put_task`] and [`Self::put_updates`]; on error nothing is
    /// written.
    pub fn put_task_and_updates(
        &self,
        t: &TaskCheckpoint,
        queue: &[pb::StatusUpdate],
    ) -> Result<(), CheckpointError> {
        self.put_task_and_updates_with(t, queue, Durability::Immediate)
    }

    /// [`Self::put_task_and_updates`] without the fsync (see
    /// [`Self::put_updates_lazily`]).
    ///
    /// # Errors
    /// As [`Self::put_task_and_updates`].
    pub fn put_task_and_updates_lazily(
        &self,
        t: &TaskCheckpoint,
        queue: &[pb::StatusUpdate],
    ) -> Result<(), CheckpointError> {
        self.put_task_and_updates_with(t, queue, Durability::None)
    }

    fn put_task_and_updates_with(
        &self,
        t: &TaskCheckpoint,
        queue: &[pb::StatusUpdate],
        durability: Durability,
    ) -> Result<(), CheckpointError> {
        let (fw, task) = (t.framework_id.as_str(), t.task_id.as_str());
        let task_bytes = encode_task(t)?;
        let queue_bytes = encode_queue(fw, task, queue)?;
        let txn = self.begin_write_with(durability)?;
        {
            let mut tasks = txn.open_table(TASKS).map_err(|e| self.err(e))?;
            tasks
                .insert((fw, task), task_bytes.as_slice())
                .map_err(|e| self.err(e))?;
            let mut updates = txn.open_table(UPDATES).map_err(|e| self.err(e))?;
            write_queue(&mut updates, fw, task, queue_bytes.as_deref()).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// A write transaction that fsyncs on commit.
    fn begin_write(&self) -> Result<redb::WriteTransaction, CheckpointError> {
        self.begin_write_with(Durability::Immediate)
    }

    /// A write transaction committed with `durability`.
    fn begin_write_with(
        &self,
        durability: Durability,
    ) -> Result<redb::WriteTransaction, CheckpointError> {
        let mut txn = self.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(durability).map_err(|e| self.err(e))?;
        Ok(txn)
    }

    fn err(&self, e: impl Into<redb::Error>) -> CheckpointError {
        store_err(&self.path, e)
    }
}

/// Inserts `bytes` as the task's queue, or removes the entry if `None`.
fn write_queue(
    table: &mut redb::Table<'_, (&'static str, &'static str), &'static [u8]>,
    framework_id: &str,
    task_id: &str,
    bytes: Option<&[u8]>,
) -> Result<(), redb::StorageError> {
    match bytes {
        Some(b) => table.insert((framework_id, task_id), b).map(drop),
        None => table.remove((framework_id, task_id)).map(drop),
    }
}

fn encode_task(t: &TaskCheckpoint) -> Result<Vec<u8>, CheckpointError> {
    postcard::to_stdvec(t).map_err(|e| {
        CheckpointError::Encode(format!("task ({:?}, {:?}): {e}", t.framework_id, t.task_id))
    })
}

fn decode_task(
    framework_id: &str,
    task_id: &str,
    bytes: &[u8],
) -> Result<TaskCheckpoint, CheckpointError> {
    let key = || format!("({framework_id:?}, {task_id:?})");
    let t: TaskCheckpoint =
        decode_postcard(bytes).map_err(|message| corrupt(TASKS_NAME, key(), message))?;
    if t.framework_id != framework_id || t.task_id != task_id {
        return Err(corrupt(
            TASKS_NAME,
            key(),
            format!("holds task ({:?}, {:?})", t.framework_id, t.task_id),
        ));
    }
    Ok(t)
}

/// The stored form of a queue; `None` for an empty one (no entry).
fn encode_queue(
    framework_id: &str,
    task_id: &str,
    queue: &[pb::StatusUpdate],
) -> Result<Option<Vec<u8>>, CheckpointError> {
    if queue.is_empty() {
        return Ok(None);
    }
    let mut encoded = Vec::with_capacity(queue.len());
    for (i, u) in queue.iter().enumerate() {
        let (fw, task) = update_key(u);
        if fw != framework_id || task != task_id {
            return Err(CheckpointError::Invalid(format!(
                "update {i} of the queue of task ({framework_id:?}, {task_id:?}) \
                 belongs to task ({fw:?}, {task:?})"
            )));
        }
        encoded.push(u.encode_to_vec());
    }
    postcard::to_stdvec(&encoded).map(Some).map_err(|e| {
        CheckpointError::Encode(format!(
            "update queue of task ({framework_id:?}, {task_id:?}): {e}"
        ))
    })
}

fn decode_queue(
    framework_id: &str,
    task_id: &str,
    bytes: &[u8],
) -> Result<Vec<pb::StatusUpdate>, CheckpointError> {
    let key = || format!("({framework_id:?}, {task_id:?})");
    let encoded: Vec<Vec<u8>> =
        decode_postcard(bytes).map_err(|message| corrupt(UPDATES_NAME, key(), message))?;
    let mut queue = Vec::with_capacity(encoded.len());
    for (i, b) in encoded.iter().enumerate() {
        let u = pb::StatusUpdate::decode(b.as_slice())
            .map_err(|e| corrupt(UPDATES_NAME, key(), format!("update {i}: {e}")))?;
        let (fw, task) = update_key(&u);
        if fw != framework_id || task != task_id {
            return Err(corrupt(
                UPDATES_NAME,
                key(),
                format!("update {i} belongs to task ({fw:?}, {task:?})"),
            ));
        }
        queue.push(u);
    }
    Ok(queue)
}

/// Decodes a whole postcard record: trailing bytes are an error too.
fn decode_postcard<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, String> {
    let (value, rest) = postcard::take_from_bytes(bytes).map_err(|e| e.to_string())?;
    if rest.is_empty() {
        Ok(value)
    } else {
        Err(format!("{} unexpected trailing bytes", rest.len()))
    }
}

fn decode_version(bytes: &[u8]) -> Result<u32, CheckpointError> {
    let version = <[u8; 4]>::try_from(bytes)
        .map(u32::from_le_bytes)
        .map_err(|_| {
            corrupt(
                META_NAME,
                format!("{SCHEMA_VERSION_KEY:?}"),
                format!("expected 4 bytes, found {}", bytes.len()),
            )
        })?;
    if version == 0 {
        return Err(corrupt(
            META_NAME,
            format!("{SCHEMA_VERSION_KEY:?}"),
            "version 0 does not exist".into(),
        ));
    }
    Ok(version)
}

/// The task a status update is about.
fn update_key(u: &pb::StatusUpdate) -> (&str, &str) {
    (
        u.framework_id.as_str(),
        u.status.as_ref().map_or("", |s| s.task_id.as_str()),
    )
}

fn corrupt(table: &'static str, key: String, message: String) -> CheckpointError {
    CheckpointError::Corrupt {
        table,
        key,
        message,
    }
}

fn store_err(path: &Path, e: impl Into<redb::Error>) -> CheckpointError {
    CheckpointError::Store {
        path: path.to_path_buf(),
        source: e.into(),
    }
}

/// Serde for a path as its raw bytes (a Unix path need not be UTF-8, and
/// serde's own `PathBuf` impl refuses such paths).
mod path_bytes {
    use std::ffi::OsString;
    use std::os::unix::ffi::{OsStrExt, OsStringExt};
    use std::path::{Path, PathBuf};

    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    pub(super) fn serialize<S: Serializer>(path: &Path, s: S) -> Result<S::Ok, S::Error> {
        path.as_os_str().as_bytes().serialize(s)
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<PathBuf, D::Error> {
        Vec::<u8>::deserialize(d).map(|b| PathBuf::from(OsString::from_vec(b)))
    }
}

#[cfg(test)]
mod golden;

#[cfg(test)]
mod tests {
    use std::ffi::OsStr;
    use std::io::{BufRead, BufReader};
    use std::os::unix::ffi::OsStrExt;
    use std::process::{Command, Stdio};
    use std::sync::mpsc;
    use std::time::{Duration, Instant};

    use super::*;

    fn task(fw: &str, id: &str, kind: ContainerizerKind) -> TaskCheckpoint {
        TaskCheckpoint {
            framework_id: fw.into(),
            task_id: id.into(),
            task_info: pb::TaskInfo {
                task_id: id.into(),
                name: format!("task {id}"),
                kill_grace_period_seconds: 3.0,
                ..Default::default()
            }
            .encode_to_vec(),
            state: pb::TaskState::TaskRunning as i32,
            sandbox: PathBuf::from(format!("/work/sandboxes/{fw}/{id}")),
            containerizer: kind,
            container_id: Some(format!("c-{fw}-{id}")),
            pid: if kind == ContainerizerKind::Process {
                4242
            } else {
                0
            },
            pgid: if kind == ContainerizerKind::Process {
                4242
            } else {
                0
            },
            kill: None,
            ports: Vec::new(),
        }
    }

    fn update(fw: &str, id: &str, state: pb::TaskState, n: u8) -> pb::StatusUpdate {
        pb::StatusUpdate {
            framework_id: fw.into(),
            status: Some(pb::TaskStatus {
                task_id: id.into(),
                state: state as i32,
                uuid: vec![n; 16],
                message: format!("update {n}"),
                ..Default::default()
            }),
        }
    }

    fn key(fw: &str, id: &str) -> TaskKey {
        (fw.into(), id.into())
    }

    fn db_path(dir: &tempfile::TempDir) -> PathBuf {
        dir.path().join(FILE_NAME)
    }

    #[test]
    fn new_file_loads_empty() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoint::open(&db_path(&dir)).unwrap();
        assert_eq!(c.load().unwrap(), Recovered::default());
        assert_eq!(c.path(), db_path(&dir));
    }

    #[test]
    fn round_trip_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);

        let mut docker = task("fw-b", "web", ContainerizerKind::Docker);
        docker.ports = vec![(31000, 80, "tcp".into()), (31001, 53, "udp".into())];
        docker.kill = Some((5000, "KILLED_BY_REQUEST".into()));
        docker.state = pb::TaskState::TaskKilling as i32;
        let process = task("fw-a", "batch", ContainerizerKind::Process);
        let mut unlaunched = task("fw-a", "a-first", ContainerizerKind::Process);
        unlaunched.container_id = None;
        unlaunched.pid = 0;
        unlaunched.pgid = 0;
        unlaunched.state = pb::TaskState::TaskStarting as i32;
        // Not UTF-8: still round-trips.
        unlaunched.sandbox = PathBuf::from(OsStr::from_bytes(b"/work/sandboxes/\xff\xfe"));

        let web_queue = vec![
            update("fw-b", "web", pb::TaskState::TaskRunning, 1),
            update("fw-b", "web", pb::TaskState::TaskKilling, 2),
            update("fw-b", "web", pb::TaskState::TaskKilled, 3),
        ];
        let batch_queue = vec![update("fw-a", "batch", pb::TaskState::TaskRunning, 4)];
        let lost = vec![update("fw-a", "unknown", pb::TaskState::TaskLost, 5)];
        {
            let c = Checkpoint::open(&path).unwrap();
            c.set_agent_id("agent-1").unwrap();
            c.put_task(&process).unwrap();
            c.put_task_and_updates(&docker, &web_queue).unwrap();
            c.put_task(&unlaunched).unwrap();
            c.put_updates("fw-a", "batch", &batch_queue).unwrap();
            // An update without a task record.
            c.put_updates("fw-a", "unknown", &lost).unwrap();
            // A later write replaces the record.
            let mut p = process.clone();
            p.state = pb::TaskState::TaskStaging as i32;
            c.put_task(&p).unwrap();
            c.put_task(&process).unwrap();
        }
        let c = Checkpoint::open(&path).unwrap();
        let r = c.load().unwrap();
        assert_eq!(r.agent_id, "agent-1");
        assert_eq!(r.tasks, vec![unlaunched, process, docker]);
        assert_eq!(
            r.updates,
            vec![
                (key("fw-a", "batch"), batch_queue),
                (key("fw-a", "unknown"), lost),
                (key("fw-b", "web"), web_queue),
            ]
        );
    }

    #[test]
    fn keys_do_not_collide() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoint::open(&db_path(&dir)).unwrap();
        let a = task("a", "b/c", ContainerizerKind::Process);
        let b = task("a/b", "c", ContainerizerKind::Process);
        let e = task("", "ab", ContainerizerKind::Process);
        let f = task("ab", "", ContainerizerKind::Process);
        for t in [&a, &b, &e, &f] {
            c.put_task(t).unwrap();
        }
        assert_eq!(c.load().unwrap().tasks, vec![e, a, b, f]);
    }

    #[test]
    fn remove_task_removes_its_updates() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoint::open(&db_path(&dir)).unwrap();
        let t = task("f", "t", ContainerizerKind::Process);
        let other = task("f", "u", ContainerizerKind::Docker);
        let q = vec![update("f", "t", pb::TaskState::TaskFinished, 1)];
        let other_q = vec![update("f", "u", pb::TaskState::TaskRunning, 2)];
        c.put_task_and_updates(&t, &q).unwrap();
        c.put_task_and_updates(&other, &other_q).unwrap();
        c.remove_task("f", "t").unwrap();
        // Removing what is not there is fine.
        c.remove_task("f", "t").unwrap();
        c.remove_task("nope", "nope").unwrap();
        let r = c.load().unwrap();
        assert_eq!(r.tasks, vec![other]);
        assert_eq!(r.updates, vec![(key("f", "u"), other_q)]);
    }

    #[test]
    fn lazy_writes_are_read_back_and_kept_by_the_next_durable_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let t = task("f", "t", ContainerizerKind::Process);
        let gone = task("f", "gone", ContainerizerKind::Docker);
        let q = vec![
            update("f", "t", pb::TaskState::TaskRunning, 1),
            update("f", "t", pb::TaskState::TaskFinished, 2),
        ];
        {
            let c = Checkpoint::open(&path).unwrap();
            c.put_task_and_updates(&t, &q).unwrap();
            c.put_task(&gone).unwrap();
            c.put_updates_lazily("f", "t", &q[1..]).unwrap();
            c.remove_task_lazily("f", "gone").unwrap();
            let r = c.load().unwrap();
            assert_eq!(r.tasks, vec![t.clone()]);
            assert_eq!(r.updates, vec![(key("f", "t"), q[1..].to_vec())]);
            c.put_task_and_updates_lazily(&t, &[]).unwrap();
            // A durable write makes the lazy ones before it durable too.
            c.set_agent_id("a1").unwrap();
        }
        let r = Checkpoint::open(&path).unwrap().load().unwrap();
        assert_eq!(r.agent_id, "a1");
        assert_eq!(r.tasks, vec![t]);
        assert!(r.updates.is_empty());
    }

    #[test]
    fn empty_queue_removes_the_entry() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoint::open(&db_path(&dir)).unwrap();
        let t = task("f", "t", ContainerizerKind::Process);
        let q = vec![
            update("f", "t", pb::TaskState::TaskRunning, 1),
            update("f", "t", pb::TaskState::TaskFinished, 2),
        ];
        c.put_task_and_updates(&t, &q).unwrap();
        // The head is acknowledged: the queue shrinks.
        c.put_updates("f", "t", &q[1..]).unwrap();
        assert_eq!(
            c.load().unwrap().updates,
            vec![(key("f", "t"), q[1..].to_vec())]
        );
        c.put_updates("f", "t", &[]).unwrap();
        let r = c.load().unwrap();
        assert!(r.updates.is_empty());
        assert_eq!(r.tasks, vec![t.clone()]);
        // And through the combined write.
        c.put_task_and_updates(&t, &q).unwrap();
        c.put_task_and_updates(&t, &[]).unwrap();
        assert!(c.load().unwrap().updates.is_empty());
        drop(c);
        let db = Database::create(db_path(&dir)).unwrap();
        let read = db.begin_read().unwrap();
        assert!(read.open_table(UPDATES).unwrap().is_empty().unwrap());
    }

    #[test]
    fn an_update_of_another_task_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let c = Checkpoint::open(&db_path(&dir)).unwrap();
        let t = task("f", "t", ContainerizerKind::Process);
        let q = vec![
            update("f", "t", pb::TaskState::TaskRunning, 1),
            update("f", "other", pb::TaskState::TaskRunning, 2),
        ];
        let err = c.put_updates("f", "t", &q).unwrap_err();
        assert!(matches!(err, CheckpointError::Invalid(_)), "{err}");
        let err = c.put_task_and_updates(&t, &q).unwrap_err();
        assert!(matches!(err, CheckpointError::Invalid(_)), "{err}");
        // Nothing was written, not even the task.
        assert_eq!(c.load().unwrap(), Recovered::default());
    }

    /// Writes `bytes` under `(fw, task)` in `table`, bypassing the store.
    fn write_raw(
        path: &Path,
        table: TableDefinition<'_, (&str, &str), &[u8]>,
        fw: &str,
        task: &str,
        bytes: &[u8],
    ) {
        let db = Database::create(path).unwrap();
        let txn = db.begin_write().unwrap();
        txn.open_table(table)
            .unwrap()
            .insert((fw, task), bytes)
            .unwrap();
        txn.commit().unwrap();
    }

    #[test]
    fn a_corrupt_task_record_is_an_error_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        {
            let c = Checkpoint::open(&path).unwrap();
            c.put_task(&task("f", "good", ContainerizerKind::Process))
                .unwrap();
        }
        write_raw(&path, TASKS, "f", "bad", b"\xff\xff\xff\xff\xff not a task");
        let c = Checkpoint::open(&path).unwrap();
        let err = c.load().unwrap_err();
        let CheckpointError::Corrupt { table, key, .. } = &err else {
            panic!("expected a corrupt record, got {err}");
        };
        assert_eq!(*table, "tasks");
        assert_eq!(key, r#"("f", "bad")"#);
        let msg = err.to_string();
        assert!(msg.contains("tasks") && msg.contains(r#""bad""#), "{msg}");
        drop(c);

        // A valid record under the wrong key is corrupt too.
        let moved = postcard::to_stdvec(&task("f", "good", ContainerizerKind::Process)).unwrap();
        write_raw(&path, TASKS, "f", "bad", &moved);
        let err = Checkpoint::open(&path).unwrap().load().unwrap_err();
        assert!(
            matches!(&err, CheckpointError::Corrupt { message, .. } if message.contains("holds task")),
            "{err}"
        );

        // Trailing garbage after a valid record.
        let mut long = moved.clone();
        long.extend_from_slice(b"xyz");
        write_raw(&path, TASKS, "f", "good", &long);
        write_raw(
            &path,
            TASKS,
            "f",
            "bad",
            &postcard::to_stdvec(&task("f", "bad", ContainerizerKind::Process)).unwrap(),
        );
        let err = Checkpoint::open(&path).unwrap().load().unwrap_err();
        assert!(
            matches!(&err, CheckpointError::Corrupt { key, .. } if key == r#"("f", "good")"#),
            "{err}"
        );
    }

    #[test]
    fn a_corrupt_update_queue_is_an_error_naming_its_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        drop(Checkpoint::open(&path).unwrap());
        // A valid list holding a record that is not a StatusUpdate.
        let bad = postcard::to_stdvec(&vec![vec![0xffu8, 0xff, 0xff]]).unwrap();
        write_raw(&path, UPDATES, "f", "t", &bad);
        let err = Checkpoint::open(&path).unwrap().load().unwrap_err();
        let CheckpointError::Corrupt {
            table,
            key,
            message,
        } = &err
        else {
            panic!("expected a corrupt record, got {err}");
        };
        assert_eq!((*table, key.as_str()), ("updates", r#"("f", "t")"#));
        assert!(message.contains("update 0"), "{message}");
        // Not even a list.
        write_raw(&path, UPDATES, "f", "t", b"\xff");
        let err = Checkpoint::open(&path).unwrap().load().unwrap_err();
        assert!(
            matches!(
                err,
                CheckpointError::Corrupt {
                    table: "updates",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn a_newer_schema_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        drop(Checkpoint::open(&path).unwrap());
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(
                    SCHEMA_VERSION_KEY,
                    (SCHEMA_VERSION + 1).to_le_bytes().as_slice(),
                )
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Checkpoint::open(&path).unwrap_err();
        assert!(
            matches!(err, CheckpointError::NewerSchema { found, supported, .. }
                if found == SCHEMA_VERSION + 1 && supported == SCHEMA_VERSION),
            "{err}"
        );
        let msg = err.to_string();
        assert!(
            msg.contains("schema version 2") && msg.contains(FILE_NAME),
            "{msg}"
        );
        // The refusal changed nothing.
        let err = Checkpoint::open(&path).unwrap_err();
        assert!(matches!(err, CheckpointError::NewerSchema { .. }), "{err}");
    }

    #[test]
    fn an_unreadable_schema_version_is_corrupt() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        drop(Checkpoint::open(&path).unwrap());
        {
            let db = Database::create(&path).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(META)
                .unwrap()
                .insert(SCHEMA_VERSION_KEY, b"v1".as_slice())
                .unwrap();
            txn.commit().unwrap();
        }
        let err = Checkpoint::open(&path).unwrap_err();
        assert!(
            matches!(err, CheckpointError::Corrupt { table: "meta", .. }),
            "{err}"
        );
    }

    #[test]
    fn a_second_open_of_the_same_file_is_a_store_error() {
        let dir = tempfile::tempdir().unwrap();
        let path = db_path(&dir);
        let _first = Checkpoint::open(&path).unwrap();
        let err = Checkpoint::open(&path).unwrap_err();
        assert!(matches!(err, CheckpointError::Store { .. }), "{err}");
    }

    const CRASH_DIR_ENV: &str = "BERTH_CHECKPOINT_CRASH_DIR";
    /// Starts the child's report lines (libtest writes its own output to the
    /// same stdout, not always ending its lines).
    const MARK: &str = "ckpt-child: ";

    fn crash_task(i: usize) -> (TaskCheckpoint, Vec<pb::StatusUpdate>) {
        let id = format!("task-{i:05}");
        let mut t = task("crash", &id, ContainerizerKind::Process);
        t.pid = i32::try_from(i).unwrap_or(i32::MAX);
        let n = u8::try_from(i % 251).unwrap_or(0);
        let queue = (0..=i % 3)
            .map(|j| {
                let j = u8::try_from(j).unwrap_or(0);
                update("crash", &id, pb::TaskState::TaskRunning, n.wrapping_add(j))
            })
            .collect();
        (t, queue)
    }

    /// The child of [`writes_that_returned_survive_sigkill`]: writes until
    /// killed, printing the index of each write that returned. Does
    /// nothing unless started by that test.
    #[test]
    #[ignore = "run as a child process by writes_that_returned_survive_sigkill"]
    fn crash_child() {
        use std::io::Write as _;
        let Some(dir) = std::env::var_os(CRASH_DIR_ENV) else {
            return;
        };
        let c = Checkpoint::open(&Path::new(&dir).join(FILE_NAME)).unwrap();
        c.set_agent_id("crash-agent").unwrap();
        let mut out = std::io::stdout();
        writeln!(out, "{MARK}agent").unwrap();
        out.flush().unwrap();
        for i in 0..100_000 {
            let (t, q) = crash_task(i);
            c.put_task_and_updates(&t, &q).unwrap();
            writeln!(out, "{MARK}put {i}").unwrap();
            out.flush().unwrap();
        }
    }

    #[test]
    fn writes_that_returned_survive_sigkill() {
        const WANT: usize = 40;
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(std::env::current_exe().unwrap())
            .args([
                "checkpoint::tests::crash_child",
                "--exact",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CRASH_DIR_ENV, dir.path())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = mpsc::channel();
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });

        // Kill the child in the middle of its writes: after WANT writes
        // have returned, or after 5 s, whichever comes first.
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut lines = Vec::new();
        let mut puts = 0;
        while puts < WANT {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    puts += usize::from(line.contains(&format!("{MARK}put ")));
                    lines.push(line);
                }
                Err(_) => break,
            }
        }
        child.kill().unwrap(); // SIGKILL
        let status = child.wait().unwrap();
        // What the child printed before it died: those writes returned too.
        lines.extend(rx.iter());
        reader.join().unwrap();
        let mut stderr = String::new();
        if let Some(mut e) = child.stderr.take() {
            std::io::Read::read_to_string(&mut e, &mut stderr).unwrap();
        }
        let reports: Vec<&str> = lines
            .iter()
            .filter_map(|l| l.split_once(MARK).map(|(_, r)| r.trim()))
            .collect();
        let returned: Vec<usize> = reports
            .iter()
            .filter_map(|r| r.strip_prefix("put "))
            .map(|n| n.parse().unwrap())
            .collect();
        assert!(
            !returned.is_empty() && reports.first() == Some(&"agent"),
            "the child wrote nothing (status {status}); stdout {lines:?}, stderr {stderr}"
        );

        let c = Checkpoint::open(&dir.path().join(FILE_NAME)).unwrap();
        let r = c.load().unwrap();
        assert_eq!(r.agent_id, "crash-agent");
        // Every write whose call returned is there; at most the one in
        // flight at the kill is there beyond those, and whole.
        let last = *returned.last().unwrap();
        assert_eq!(returned, (0..=last).collect::<Vec<_>>());
        assert!(
            r.tasks.len() == last + 1 || r.tasks.len() == last + 2,
            "{} tasks after {} returned writes",
            r.tasks.len(),
            last + 1
        );
        assert_eq!(r.updates.len(), r.tasks.len());
        for (i, (t, (k, q))) in r.tasks.iter().zip(&r.updates).enumerate() {
            let (want_t, want_q) = crash_task(i);
            assert_eq!(t, &want_t);
            assert_eq!(k, &key("crash", &want_t.task_id));
            assert_eq!(q, &want_q);
        }
    }
}
