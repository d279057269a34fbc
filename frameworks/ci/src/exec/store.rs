//! The CI framework's durable state: one redb file holding every pipeline
//! (its plan, its jobs' states, its log and artifact index) as a record.
//!
//! A record is written whole, in one transaction with
//! [`Durability::Immediate`](redb::Durability::Immediate), whenever the
//! pipeline changes: when a method returns `Ok`, the change survives
//! SIGKILL and power loss. Records are JSON, so that a newer berth reads
//! an older file (fields added with defaults). The methods block; call
//! them off the async workers.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const PIPELINES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("pipelines");
const NEXT_ID: &str = "next_pipeline_id";

/// What went wrong with the state file.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// redb failed.
    #[error("CI state {path}: {message}")]
    Db {
        /// The file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A record could not be read back.
    #[error("CI state {path}: pipeline {id} is unreadable: {message}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// The pipeline.
        id: u64,
        /// Why.
        message: String,
    },
}

/// The state file.
#[derive(Debug)]
pub struct Store {
    db: Database,
    path: PathBuf,
}

impl Store {
    /// Opens (or creates) the state file.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path).map_err(|e| StoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let store = Store { db, path };
        let txn = store.db.begin_write().map_err(|e| store.err(e))?;
        {
            txn.open_table(META).map_err(|e| store.err(e))?;
            txn.open_table(PIPELINES).map_err(|e| store.err(e))?;
        }
        txn.commit().map_err(|e| store.err(e))?;
        Ok(store)
    }

    fn err(&self, e: impl std::fmt::Display) -> StoreError {
        StoreError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// Stores a new pipeline: `make` gets its id (1, 2, …, never reused)
    /// and returns the record. Returns the id.
    pub fn create<T: Serialize>(&self, make: impl FnOnce(u64) -> T) -> Result<u64, StoreError> {
        self.create_with(|id| Some(make(id)))?
            .ok_or_else(|| self.err("the record was not made"))
    }

    /// Like [`Store::create`], but `make` may decline (return `None`): then
    /// nothing is stored and the id is not used. Returns the id, if stored.
    pub fn create_with<T: Serialize>(
        &self,
        make: impl FnOnce(u64) -> Option<T>,
    ) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let id = {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let id = meta
                .get(NEXT_ID)
                .map_err(|e| self.err(e))?
                .map_or(1, |v| v.value());
            let Some(record) = make(id) else {
                drop(meta);
                txn.abort().map_err(|e| self.err(e))?;
                return Ok(None);
            };
            meta.insert(NEXT_ID, id + 1).map_err(|e| self.err(e))?;
            let bytes = serde_json::to_vec(&record).map_err(|e| self.err(e))?;
            let mut pipelines = txn.open_table(PIPELINES).map_err(|e| self.err(e))?;
            pipelines
                .insert(id, bytes.as_slice())
                .map_err(|e| self.err(e))?;
            id
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(Some(id))
    }

    /// Replaces a pipeline's record.
    pub fn put<T: Serialize>(&self, id: u64, record: &T) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(record).map_err(|e| self.err(e))?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut pipelines = txn.open_table(PIPELINES).map_err(|e| self.err(e))?;
            pipelines
                .insert(id, bytes.as_slice())
                .map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }

    /// One pipeline's record.
    pub fn get<T: DeserializeOwned>(&self, id: u64) -> Result<Option<T>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = read.open_table(PIPELINES).map_err(|e| self.err(e))?;
        match table.get(id).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => self.decode(id, v.value()).map(Some),
        }
    }

    fn decode<T: DeserializeOwned>(&self, id: u64, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::Corrupt {
            path: self.path.clone(),
            id,
            message: e.to_string(),
        })
    }

    /// Every pipeline, oldest first.
    pub fn all<T: DeserializeOwned>(&self) -> Result<Vec<(u64, T)>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = read.open_table(PIPELINES).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let id = k.value();
            out.push((id, self.decode(id, v.value())?));
        }
        Ok(out)
    }

    /// Deletes a pipeline's record (expiry).
    pub fn remove(&self, id: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut pipelines = txn.open_table(PIPELINES).map_err(|e| self.err(e))?;
            pipelines.remove(id).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Record {
        id: u64,
        name: String,
        #[serde(default)]
        added_later: Vec<u32>,
    }

    #[test]
    fn records_survive_reopening_and_ids_are_never_reused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ci.redb");
        {
            let store = Store::open(&path).unwrap();
            let a = store
                .create(|id| Record {
                    id,
                    name: "a".into(),
                    added_later: vec![],
                })
                .unwrap();
            let b = store
                .create(|id| Record {
                    id,
                    name: "b".into(),
                    added_later: vec![],
                })
                .unwrap();
            assert_eq!((a, b), (1, 2));
            let mut rec: Record = store.get(2).unwrap().unwrap();
            rec.name = "b2".into();
            store.put(2, &rec).unwrap();
            store.remove(2).unwrap();
        }
        let store = Store::open(&path).unwrap();
        let all: Vec<(u64, Record)> = store.all().unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].1.name, "a");
        assert_eq!(store.get::<Record>(2).unwrap(), None);
        let c = store
            .create(|id| Record {
                id,
                name: "c".into(),
                added_later: vec![],
            })
            .unwrap();
        assert_eq!(c, 3, "the removed pipeline's id is not reused");
    }

    #[test]
    fn older_records_read_with_defaults_and_garbage_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path().join("ci.redb")).unwrap();
        store
            .put(1, &serde_json::json!({"id": 1, "name": "old"}))
            .unwrap();
        let old: Record = store.get(1).unwrap().unwrap();
        assert!(old.added_later.is_empty());
        store
            .put(2, &serde_json::json!({"nonsense": true}))
            .unwrap();
        let err = store.get::<Record>(2).unwrap_err();
        assert!(
            err.to_string().contains("pipeline 2 is unreadable"),
            "{err}"
        );
    }
}
