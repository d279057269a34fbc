//! Durable storage of the registry in redb: a command log plus snapshots.
//!
//! What we store and why:
//! - table `log`: log index → postcard-encoded [`Command`]. Every command is
//!   appended (and fsynced: redb's default durability) before the call that
//!   caused it is answered, so an acknowledged change survives SIGKILL.
//! - table `meta`, key `snapshot`: the postcard-encoded registry as of some
//!   log index. Written every `snapshot_every` commands; log entries at or
//!   below it are deleted in the same transaction (compaction).
//!
//! Opening replays the log after the snapshot. The same log-plus-snapshot
//! shape is what the Raft log needs, which is why the single-node master
//! already works this way.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, TableDefinition};
use serde::{Deserialize, Serialize};

use crate::error::MasterError;
use crate::registry::{Command, Registry};

const LOG: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<'_, &str, &[u8]> = TableDefinition::new("meta");
const SNAPSHOT_KEY: &str = "snapshot";

#[derive(Serialize, Deserialize)]
struct Snapshot {
    index: u64,
    registry: Registry,
}

/// The registry's redb file.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

/// What [`Store::open`] recovered.
#[derive(Debug)]
pub struct Recovered {
    /// The registry as of `index`.
    pub registry: Registry,
    /// Index of the last applied command (0 for a new store).
    pub index: u64,
    /// Commands applied since the last snapshot.
    pub since_snapshot: u64,
}

impl Store {
    /// Opens (or creates) the store and rebuilds the registry from the
    /// latest snapshot and the log after it.
    ///
    /// # Errors
    /// [`MasterError::Store`] if the file cannot be opened or read,
    /// [`MasterError::Corrupt`] if a record does not decode or a logged
    /// command no longer applies.
    pub fn open(path: &Path, max_completed: usize) -> Result<(Self, Recovered), MasterError> {
        let db = Database::create(path).map_err(|e| store_err(path, e))?;
        let store = Self {
            db,
            path: path.to_path_buf(),
        };
        // Make sure both tables exist so read transactions can open them.
        let txn = store.db.begin_write().map_err(|e| store.err(e))?;
        {
            txn.open_table(LOG).map_err(|e| store.err(e))?;
            txn.open_table(META).map_err(|e| store.err(e))?;
        }
        txn.commit().map_err(|e| store.err(e))?;

        let read = store.db.begin_read().map_err(|e| store.err(e))?;
        let meta = read.open_table(META).map_err(|e| store.err(e))?;
        let (mut registry, mut index) = match meta.get(SNAPSHOT_KEY).map_err(|e| store.err(e))? {
            Some(bytes) => {
                let snap: Snapshot = postcard::from_bytes(bytes.value())
                    .map_err(|e| MasterError::Corrupt(format!("snapshot: {e}")))?;
                (snap.registry, snap.index)
            }
            None => (Registry::new(max_completed), 0),
        };
        registry.set_max_completed(max_completed);
        registry.rebuild_indexes();
        let log = read.open_table(LOG).map_err(|e| store.err(e))?;
        let mut since_snapshot = 0;
        for entry in log.range(index + 1..).map_err(|e| store.err(e))? {
            let (k, v) = entry.map_err(|e| store.err(e))?;
            let cmd: Command = postcard::from_bytes(v.value())
                .map_err(|e| MasterError::Corrupt(format!("log entry {}: {e}", k.value())))?;
            registry.apply(&cmd).map_err(|e| {
                MasterError::Corrupt(format!("log entry {} does not apply: {e}", k.value()))
            })?;
            index = k.value();
            since_snapshot += 1;
        }
        Ok((
            store,
            Recovered {
                registry,
                index,
                since_snapshot,
            },
        ))
    }

    /// Appends commands at consecutive indexes starting at `first`, in one
    /// fsynced transaction.
    ///
    /// # Errors
    /// [`MasterError::Store`] if the write fails; the caller must treat that
    /// as fatal (memory and disk would disagree).
    pub fn append(&self, first: u64, cmds: &[Command]) -> Result<(), MasterError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut log = txn.open_table(LOG).map_err(|e| self.err(e))?;
            for (i, cmd) in cmds.iter().enumerate() {
                let bytes =
                    postcard::to_stdvec(cmd).map_err(|e| MasterError::Corrupt(e.to_string()))?;
                log.insert(first + i as u64, bytes.as_slice())
                    .map_err(|e| self.err(e))?;
            }
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// Writes a snapshot of `registry` as of `index` and deletes the log up
    /// to it.
    ///
    /// # Errors
    /// [`MasterError::Store`] if the write fails.
    pub fn snapshot(&self, index: u64, registry: &Registry) -> Result<(), MasterError> {
        let bytes = postcard::to_stdvec(&SnapshotRef { index, registry })
            .map_err(|e| MasterError::Corrupt(e.to_string()))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            meta.insert(SNAPSHOT_KEY, bytes.as_slice())
                .map_err(|e| self.err(e))?;
            let mut log = txn.open_table(LOG).map_err(|e| self.err(e))?;
            log.retain(|k, _| k > index).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    fn err(&self, e: impl Into<redb::Error>) -> MasterError {
        store_err(&self.path, e)
    }
}

#[derive(Serialize)]
struct SnapshotRef<'a> {
    index: u64,
    registry: &'a Registry,
}

fn store_err(path: &Path, e: impl Into<redb::Error>) -> MasterError {
    MasterError::Store {
        path: path.to_path_buf(),
        message: e.into().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registry::FrameworkRecord;
    use berth_scheduler_core::{FrameworkId, Role};

    fn subscribe(id: &str) -> Command {
        Command::SubscribeFramework {
            record: FrameworkRecord {
                id: FrameworkId::new(id).unwrap(),
                name: "fw".into(),
                roles: [Role::default()].into(),
                failover_timeout_ms: 1000,
                partition_aware: false,
                hostname: "h".into(),
                registered_at_ms: 1,
                disconnected_at_ms: None,
            },
        }
    }

    #[test]
    fn log_and_snapshot_survive_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.redb");
        {
            let (store, rec) = Store::open(&path, 10).unwrap();
            assert_eq!(rec.index, 0);
            let mut reg = rec.registry;
            for (i, id) in ["a", "b"].iter().enumerate() {
                let cmd = subscribe(id);
                reg.apply(&cmd).unwrap();
                store.append(i as u64 + 1, &[cmd]).unwrap();
            }
            store.snapshot(2, &reg).unwrap();
            let cmd = subscribe("c");
            reg.apply(&cmd).unwrap();
            store.append(3, &[cmd]).unwrap();
        }
        let (_store, rec) = Store::open(&path, 10).unwrap();
        assert_eq!(rec.index, 3);
        assert_eq!(rec.since_snapshot, 1);
        let ids: Vec<_> = rec
            .registry
            .frameworks()
            .map(|f| f.id.to_string())
            .collect();
        assert_eq!(ids, ["a", "b", "c"]);
    }

    #[test]
    fn corrupt_log_entry_is_reported_not_unwrapped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("r.redb");
        {
            let (store, _) = Store::open(&path, 10).unwrap();
            let txn = store.db.begin_write().unwrap();
            {
                let mut log = txn.open_table(LOG).unwrap();
                log.insert(1, [0xff_u8, 0xff, 0xff].as_slice()).unwrap();
            }
            txn.commit().unwrap();
        }
        let err = Store::open(&path, 10).unwrap_err();
        assert!(matches!(err, MasterError::Corrupt(_)), "{err}");
    }
}
