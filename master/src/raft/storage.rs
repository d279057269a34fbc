//! The raft log, hard state and snapshots in redb.
//!
//! What we store and why (one redb file per master, e.g. `raft.redb`):
//! - table `entries`: log index → protobuf-encoded `raft::eraftpb::Entry`,
//!   the entries after the latest snapshot. Raft needs them to replicate to
//!   followers and to re-deliver committed entries after a restart.
//! - table `raft_meta`:
//!   - `hard_state`: term, vote and commit index (raft's safety depends on
//!     never forgetting a vote or a term);
//!   - `conf_state`: the latest applied membership (informational: after a
//!     restart the membership is rebuilt from the snapshot's conf state plus
//!     the conf-change entries after it, which are re-applied);
//!   - `snapshot_meta` / `snapshot_data`: the latest state-machine snapshot
//!     (index, term and membership at that index, and the serialized state
//!     machine). Entries at or below its index are deleted.
//!
//! Every write method is one redb write transaction; redb's default
//! durability fsyncs on commit. An in-memory mirror (hard state, conf
//! states, snapshot metadata and the uncompacted entries) answers raft's
//! reads ([`raft::Storage`]) without touching the disk, except for the
//! snapshot data, which is read from the file when needed.
//!
//! A new cluster is bootstrapped with [`RaftStorage::initialize`], which
//! stores an empty snapshot at index 1 (term 1) holding the initial voters.
//! A node that joins later starts with an empty storage and therefore
//! receives that (or a later) snapshot from the leader before any entry, so
//! it learns the membership the same way every other node did.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock, RwLockReadGuard, RwLockWriteGuard};

use raft::eraftpb::{ConfState, Entry, HardState, Snapshot, SnapshotMetadata};
use raft::{GetEntriesContext, RaftState, StorageError};
use redb::{Database, ReadableDatabase, TableDefinition};

use crate::error::MasterError;

const ENTRIES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("entries");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("raft_meta");
const HARD_STATE_KEY: &str = "hard_state";
const CONF_STATE_KEY: &str = "conf_state";
const SNAPSHOT_META_KEY: &str = "snapshot_meta";
const SNAPSHOT_DATA_KEY: &str = "snapshot_data";

/// Index of the bootstrap snapshot written by [`RaftStorage::initialize`].
pub const INIT_INDEX: u64 = 1;
/// Term of the bootstrap snapshot written by [`RaftStorage::initialize`].
pub const INIT_TERM: u64 = 1;

/// The raft log of one master in a redb file. Cheap to clone: clones share
/// the database and the in-memory mirror.
#[derive(Clone)]
pub struct RaftStorage {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RaftStorage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let m = self.read();
        f.debug_struct("RaftStorage")
            .field("path", &self.inner.path)
            .field("snapshot_index", &m.snapshot.index)
            .field("first_index", &m.first_index())
            .field("last_index", &m.last_index())
            .field("hard_state", &m.hard_state)
            .finish()
    }
}

struct Inner {
    db: Database,
    path: PathBuf,
    mirror: RwLock<Mirror>,
    /// Raft asked for a snapshot that the stored one cannot serve (too old,
    /// or taken before the receiving peer joined).
    snapshot_wanted: AtomicBool,
}

/// What is on disk, in memory.
#[derive(Default, Clone)]
struct Mirror {
    hard_state: HardState,
    /// The latest applied membership.
    conf_state: ConfState,
    /// Membership changes applied after the snapshot, by log index, oldest
    /// first; used to find the membership at a compaction index.
    conf_history: Vec<(u64, ConfState)>,
    /// Metadata of the stored snapshot (index 0: none).
    snapshot: SnapshotMetadata,
    /// Entries after the snapshot; `entries[i].index == snapshot.index + 1 + i`.
    entries: Vec<Entry>,
}

impl Mirror {
    fn first_index(&self) -> u64 {
        self.entries
            .first()
            .map_or(self.snapshot.index + 1, |e| e.index)
    }

    fn last_index(&self) -> u64 {
        self.entries.last().map_or(self.snapshot.index, |e| e.index)
    }

    fn term(&self, idx: u64) -> Option<u64> {
        if idx == self.snapshot.index {
            return Some(self.snapshot.term);
        }
        let first = self.first_index();
        if idx < first || idx > self.last_index() {
            return None;
        }
        usize::try_from(idx - first)
            .ok()
            .and_then(|i| self.entries.get(i))
            .map(|e| e.term)
    }

    /// The membership in force after applying index `index`.
    fn conf_state_at(&self, index: u64) -> ConfState {
        self.conf_history
            .iter()
            .rev()
            .find(|(i, _)| *i <= index)
            .map_or_else(
                || self.snapshot.get_conf_state().clone(),
                |(_, cs)| cs.clone(),
            )
    }
}

impl RaftStorage {
    /// Opens (or creates) the raft log at `path` and loads the mirror.
    ///
    /// # Errors
    /// [`MasterError::Store`] if the file cannot be opened or read,
    /// [`MasterError::Corrupt`] if a record does not decode or the entries
    /// are not contiguous after the snapshot.
    pub fn open(path: &Path) -> Result<Self, MasterError> {
        let db = Database::create(path).map_err(|e| store_err(path, e))?;
        let txn = db.begin_write().map_err(|e| store_err(path, e))?;
        {
            txn.open_table(ENTRIES).map_err(|e| store_err(path, e))?;
            txn.open_table(META).map_err(|e| store_err(path, e))?;
        }
        txn.commit().map_err(|e| store_err(path, e))?;

        let mut mirror = Mirror::default();
        let read = db.begin_read().map_err(|e| store_err(path, e))?;
        let meta = read.open_table(META).map_err(|e| store_err(path, e))?;
        if let Some(v) = meta.get(HARD_STATE_KEY).map_err(|e| store_err(path, e))? {
            mirror.hard_state = decode(v.value(), "hard state")?;
        }
        if let Some(v) = meta.get(CONF_STATE_KEY).map_err(|e| store_err(path, e))? {
            mirror.conf_state = decode(v.value(), "conf state")?;
        }
        if let Some(v) = meta
            .get(SNAPSHOT_META_KEY)
            .map_err(|e| store_err(path, e))?
        {
            mirror.snapshot = decode(v.value(), "snapshot metadata")?;
        }
        let table = read.open_table(ENTRIES).map_err(|e| store_err(path, e))?;
        let first = mirror.snapshot.index + 1;
        let range = table.range(first..).map_err(|e| store_err(path, e))?;
        for (expected, item) in (first..).zip(range) {
            let (k, v) = item.map_err(|e| store_err(path, e))?;
            let entry: Entry = decode(v.value(), "log entry")?;
            if k.value() != expected || entry.index != expected {
                return Err(MasterError::Corrupt(format!(
                    "raft log: expected entry {expected}, found key {} holding entry {}",
                    k.value(),
                    entry.index
                )));
            }
            mirror.entries.push(entry);
        }
        if mirror.conf_state == ConfState::default() {
            mirror.conf_state = mirror.snapshot.get_conf_state().clone();
        }
        drop(table);
        drop(meta);
        drop(read);
        Ok(Self {
            inner: Arc::new(Inner {
                db,
                path: path.to_path_buf(),
                mirror: RwLock::new(mirror),
                snapshot_wanted: AtomicBool::new(false),
            }),
        })
    }

    /// The redb file.
    #[must_use]
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// Whether this storage belongs to a cluster member already: it has a
    /// membership, an entry or a snapshot. A node that is not initialized
    /// either bootstraps a new cluster ([`Self::initialize`]) or waits to be
    /// added to an existing one (it then receives a snapshot).
    #[must_use]
    pub fn is_initialized(&self) -> bool {
        let m = self.read();
        !m.conf_state.voters.is_empty()
            || !m.snapshot.get_conf_state().voters.is_empty()
            || m.snapshot.index > 0
            || !m.entries.is_empty()
    }

    /// First boot of a new cluster: stores an empty snapshot at
    /// [`INIT_INDEX`]/[`INIT_TERM`] whose membership is `voters`. Every
    /// founding member must be initialized with the same voters.
    ///
    /// # Errors
    /// [`MasterError::Config`] if the storage is already initialized or
    /// `voters` is empty; [`MasterError::Store`] if the write fails.
    pub fn initialize(&self, voters: &[u64]) -> Result<(), MasterError> {
        if voters.is_empty() {
            return Err(MasterError::Config(
                "a raft cluster needs at least one voter".into(),
            ));
        }
        if self.is_initialized() {
            return Err(MasterError::Config(format!(
                "raft storage {} is already initialized",
                self.inner.path.display()
            )));
        }
        let mut snapshot = Snapshot::default();
        let meta = snapshot.mut_metadata();
        meta.index = INIT_INDEX;
        meta.term = INIT_TERM;
        meta.mut_conf_state().voters = voters.to_vec();
        self.persist_ready(Some(&snapshot), &[], None)
    }

    /// Persists one raft `Ready` in one fsynced transaction: installs
    /// `snapshot` (dropping every stored entry, as raft-rs's `MemStorage`
    /// does), appends `entries` (deleting any conflicting suffix first) and
    /// sets `hard_state`.
    ///
    /// # Errors
    /// [`MasterError::Store`] if the write fails or the input would leave a
    /// hole in the log or overwrite compacted entries; nothing is changed
    /// then. The caller must treat an error as fatal.
    pub fn persist_ready(
        &self,
        snapshot: Option<&Snapshot>,
        entries: &[Entry],
        hard_state: Option<&HardState>,
    ) -> Result<(), MasterError> {
        let mut guard = self.write();
        let mut next = guard.clone_without_entries();
        let mut drop_entries_from = None::<u64>;
        let mut keep_entries = true;

        if let Some(snap) = snapshot.filter(|s| s.get_metadata().index > 0) {
            let meta = snap.get_metadata();
            if meta.index < guard.snapshot.index {
                return Err(self.fail(format!(
                    "snapshot at {} is older than the stored snapshot at {}",
                    meta.index, guard.snapshot.index
                )));
            }
            next.snapshot = meta.clone();
            next.hard_state.term = next.hard_state.term.max(meta.term);
            next.hard_state.commit = meta.index;
            next.conf_state = meta.get_conf_state().clone();
            next.conf_history.clear();
            keep_entries = false;
        }
        let base_last = if keep_entries {
            guard.last_index()
        } else {
            next.snapshot.index
        };
        let base_first = if keep_entries {
            guard.first_index()
        } else {
            next.snapshot.index + 1
        };
        if let Some(first) = entries.first() {
            if first.index < base_first {
                return Err(self.fail(format!(
                    "append at {} overwrites compacted entries (first index {base_first})",
                    first.index
                )));
            }
            if first.index > base_last + 1 {
                return Err(self.fail(format!(
                    "append at {} leaves a hole after last index {base_last}",
                    first.index
                )));
            }
            if let Some((i, pair)) = entries
                .windows(2)
                .enumerate()
                .find(|(_, w)| w[1].index != w[0].index + 1)
            {
                return Err(self.fail(format!(
                    "entries to append are not contiguous at position {i}: {} then {}",
                    pair[0].index, pair[1].index
                )));
            }
            drop_entries_from = Some(first.index);
        }
        if let Some(hs) = hard_state {
            next.hard_state = hs.clone();
        }

        let txn = self.inner.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut table = txn.open_table(ENTRIES).map_err(|e| self.err(e))?;
            if !keep_entries {
                table.retain(|_, _| false).map_err(|e| self.err(e))?;
            } else if let Some(from) = drop_entries_from {
                table
                    .retain_in::<u64, _>(from.., |_, _| false)
                    .map_err(|e| self.err(e))?;
            }
            for e in entries {
                let bytes = encode(e)?;
                table
                    .insert(e.index, bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            if let Some(snap) = snapshot.filter(|s| s.get_metadata().index > 0) {
                meta.insert(SNAPSHOT_META_KEY, encode(snap.get_metadata())?.as_slice())
                    .map_err(|e| self.err(e))?;
                meta.insert(SNAPSHOT_DATA_KEY, snap.data.as_ref())
                    .map_err(|e| self.err(e))?;
                meta.insert(CONF_STATE_KEY, encode(&next.conf_state)?.as_slice())
                    .map_err(|e| self.err(e))?;
            }
            if hard_state.is_some() || !keep_entries {
                meta.insert(HARD_STATE_KEY, encode(&next.hard_state)?.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))?;

        // The transaction is durable: update the mirror to match.
        if keep_entries {
            next.entries = std::mem::take(&mut guard.entries);
            if let Some(from) = drop_entries_from {
                let keep = usize::try_from(from - next.first_index()).unwrap_or(usize::MAX);
                next.entries.truncate(keep);
            }
        }
        next.entries.extend_from_slice(entries);
        *guard = next;
        Ok(())
    }

    /// Records the commit index of a light ready.
    ///
    /// # Errors
    /// [`MasterError::Store`] if the write fails.
    pub fn set_commit(&self, commit: u64) -> Result<(), MasterError> {
        let mut guard = self.write();
        let mut hs = guard.hard_state.clone();
        hs.commit = commit;
        // Raft does not need the commit index on disk (a restarted node
        // learns it again; term and vote were made durable by
        // `persist_ready`), so this write skips the fsync: it reaches the
        // disk with the next durable transaction.
        self.put_meta_with(HARD_STATE_KEY, &encode(&hs)?, redb::Durability::None)?;
        guard.hard_state = hs;
        Ok(())
    }

    /// Records the membership after applying the conf-change entry at
    /// `index`.
    ///
    /// # Errors
    /// [`MasterError::Store`] if the write fails.
    pub fn set_conf_state(&self, index: u64, cs: &ConfState) -> Result<(), MasterError> {
        let mut guard = self.write();
        self.put_meta(CONF_STATE_KEY, &encode(cs)?)?;
        guard.conf_state = cs.clone();
        guard.conf_history.retain(|(i, _)| *i < index);
        guard.conf_history.push((index, cs.clone()));
        Ok(())
    }

    /// Stores `data`, a snapshot of the state machine taken after applying
    /// index `index`, with the term of that entry and the membership in
    /// force at it, and deletes the entries up to `index`. Returns `false`
    /// (and changes nothing) if `index` is not past the stored snapshot.
    ///
    /// # Errors
    /// [`MasterError::Store`] if `index` is beyond the last entry or the
    /// write fails.
    pub fn compact(&self, index: u64, data: Vec<u8>) -> Result<bool, MasterError> {
        let mut guard = self.write();
        if index <= guard.snapshot.index {
            return Ok(false);
        }
        let Some(term) = guard.term(index) else {
            return Err(self.fail(format!(
                "cannot compact to {index}: last index is {}",
                guard.last_index()
            )));
        };
        let meta = SnapshotMetadata {
            index,
            term,
            conf_state: Some(guard.conf_state_at(index)).into(),
            ..SnapshotMetadata::default()
        };

        let txn = self.inner.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut m = txn.open_table(META).map_err(|e| self.err(e))?;
            m.insert(SNAPSHOT_META_KEY, encode(&meta)?.as_slice())
                .map_err(|e| self.err(e))?;
            m.insert(SNAPSHOT_DATA_KEY, data.as_slice())
                .map_err(|e| self.err(e))?;
            let mut table = txn.open_table(ENTRIES).map_err(|e| self.err(e))?;
            table
                .retain_in::<u64, _>(..=index, |_, _| false)
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))?;

        let drop_n = usize::try_from(index + 1 - guard.first_index()).unwrap_or(usize::MAX);
        let drop_n = drop_n.min(guard.entries.len());
        guard.entries.drain(..drop_n);
        guard.conf_history.retain(|(i, _)| *i > index);
        guard.snapshot = meta;
        Ok(true)
    }

    /// The stored state-machine snapshot: its index and data. Index
    /// [`INIT_INDEX`] with empty data is the bootstrap snapshot (an empty
    /// state machine); index 0 means the node has no snapshot yet (it joins
    /// an existing cluster and will receive one).
    ///
    /// # Errors
    /// [`MasterError::Store`] if the file cannot be read.
    pub fn snapshot_data(&self) -> Result<(u64, Vec<u8>), MasterError> {
        let index = self.read().snapshot.index;
        Ok((index, self.read_snapshot_data()?))
    }

    /// Whether raft asked for a snapshot the stored one cannot serve since
    /// the last call (it was older than requested, or taken before the
    /// receiving peer became a member). The state machine should then hand
    /// over a fresh one ([`Self::compact`]); raft asks again until it can
    /// send one.
    #[must_use]
    pub fn take_snapshot_wanted(&self) -> bool {
        self.inner.snapshot_wanted.swap(false, Ordering::Relaxed)
    }

    /// Index of the stored snapshot (0: none).
    #[must_use]
    pub fn snapshot_index(&self) -> u64 {
        self.read().snapshot.index
    }

    /// The stored hard state.
    #[must_use]
    pub fn hard_state(&self) -> HardState {
        self.read().hard_state.clone()
    }

    /// The latest applied membership.
    #[must_use]
    pub fn conf_state(&self) -> ConfState {
        self.read().conf_state.clone()
    }

    fn read_snapshot_data(&self) -> Result<Vec<u8>, MasterError> {
        let read = self.inner.db.begin_read().map_err(|e| self.err(e))?;
        let meta = read.open_table(META).map_err(|e| self.err(e))?;
        Ok(meta
            .get(SNAPSHOT_DATA_KEY)
            .map_err(|e| self.err(e))?
            .map(|v| v.value().to_vec())
            .unwrap_or_default())
    }

    fn put_meta(&self, key: &str, value: &[u8]) -> Result<(), MasterError> {
        self.put_meta_with(key, value, redb::Durability::Immediate)
    }

    fn put_meta_with(
        &self,
        key: &str,
        value: &[u8],
        durability: redb::Durability,
    ) -> Result<(), MasterError> {
        let mut txn = self.inner.db.begin_write().map_err(|e| self.err(e))?;
        txn.set_durability(durability).map_err(|e| self.err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(key, value).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    fn read(&self) -> RwLockReadGuard<'_, Mirror> {
        self.inner
            .mirror
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Mirror> {
        self.inner
            .mirror
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn err(&self, e: impl Into<redb::Error>) -> MasterError {
        store_err(&self.inner.path, e)
    }

    fn fail(&self, message: String) -> MasterError {
        MasterError::Store {
            path: self.inner.path.clone(),
            message,
        }
    }
}

impl Mirror {
    fn clone_without_entries(&self) -> Mirror {
        Mirror {
            hard_state: self.hard_state.clone(),
            conf_state: self.conf_state.clone(),
            conf_history: self.conf_history.clone(),
            snapshot: self.snapshot.clone(),
            entries: Vec::new(),
        }
    }
}

impl raft::Storage for RaftStorage {
    /// The hard state, and the membership as of the snapshot: the node
    /// starts with `applied` = the snapshot index, so the conf changes after
    /// it are applied again from the log.
    fn initial_state(&self) -> raft::Result<RaftState> {
        let m = self.read();
        Ok(RaftState::new(
            m.hard_state.clone(),
            m.snapshot.get_conf_state().clone(),
        ))
    }

    fn entries(
        &self,
        low: u64,
        high: u64,
        max_size: impl Into<Option<u64>>,
        _context: GetEntriesContext,
    ) -> raft::Result<Vec<Entry>> {
        let m = self.read();
        let first = m.first_index();
        if low < first {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        if high > m.last_index() + 1 || low > high {
            return Err(raft::Error::Store(StorageError::Unavailable));
        }
        let lo = usize::try_from(low - first).unwrap_or(usize::MAX);
        let hi = usize::try_from(high - first).unwrap_or(usize::MAX);
        let mut ents = m
            .entries
            .get(lo..hi)
            .ok_or(raft::Error::Store(StorageError::Unavailable))?
            .to_vec();
        raft::util::limit_size(&mut ents, max_size.into());
        Ok(ents)
    }

    fn term(&self, idx: u64) -> raft::Result<u64> {
        let m = self.read();
        if idx != m.snapshot.index && idx < m.first_index() {
            return Err(raft::Error::Store(StorageError::Compacted));
        }
        m.term(idx)
            .ok_or(raft::Error::Store(StorageError::Unavailable))
    }

    fn first_index(&self) -> raft::Result<u64> {
        Ok(self.read().first_index())
    }

    fn last_index(&self) -> raft::Result<u64> {
        Ok(self.read().last_index())
    }

    /// The stored snapshot, if it is at least `request_index` and `to` is
    /// a member in it (a peer refuses a snapshot that does not include
    /// it). Otherwise `SnapshotTemporarilyUnavailable`, and
    /// [`RaftStorage::take_snapshot_wanted`] turns true.
    fn snapshot(&self, request_index: u64, to: u64) -> raft::Result<Snapshot> {
        let meta = self.read().snapshot.clone();
        let cs = meta.get_conf_state();
        let member = cs.voters.contains(&to)
            || cs.learners.contains(&to)
            || cs.voters_outgoing.contains(&to)
            || cs.learners_next.contains(&to);
        if meta.index == 0 || meta.index < request_index || !member {
            self.inner.snapshot_wanted.store(true, Ordering::Relaxed);
            return Err(raft::Error::Store(
                StorageError::SnapshotTemporarilyUnavailable,
            ));
        }
        let data = self.read_snapshot_data().map_err(|e| {
            tracing::error!(error = %e, "reading the raft snapshot failed");
            raft::Error::Store(StorageError::Other(Box::new(e)))
        })?;
        let mut snap = Snapshot::default();
        snap.set_metadata(meta);
        snap.data = data.into();
        Ok(snap)
    }
}

fn encode(m: &impl protobuf::Message) -> Result<Vec<u8>, MasterError> {
    m.write_to_bytes()
        .map_err(|e| MasterError::Corrupt(format!("encoding a raft record: {e}")))
}

fn decode<M: protobuf::Message + Default>(bytes: &[u8], what: &str) -> Result<M, MasterError> {
    let mut m = M::default();
    m.merge_from_bytes(bytes)
        .map_err(|e| MasterError::Corrupt(format!("raft {what}: {e}")))?;
    Ok(m)
}

fn store_err(path: &Path, e: impl Into<redb::Error>) -> MasterError {
    MasterError::Store {
        path: path.to_path_buf(),
        message: e.into().to_string(),
    }
}
