//! The CI framework's durable state: one redb file holding every pipeline
//! (its plan, its jobs' states, its log and artifact index) as a record,
//! and, in a table of their own, the registered repositories (see
//! [`super::repos`]).
//!
//! A record is written whole, in one transaction with
//! [`Durability::Immediate`](redb::Durability::Immediate), whenever the
//! pipeline changes: when a method returns `Ok`, the change survives
//! SIGKILL and power loss. The methods block; call them off the async
//! workers.
//!
//! # Format
//!
//! Tables: `meta` (`&str` → `u64`: the next pipeline and repository ids,
//! and [`FORMAT_KEY`], the file's format version), `pipelines` (id → the
//! JSON of a `runner::PipelineRecord`) and `repos` (id → the JSON of a
//! `repos::RepoRecord`). A file without a format version was written
//! before files had one (version 0); its records are the same JSON as
//! version 1, and opening it writes the version. A file of a newer version
//! than [`FORMAT_VERSION`] is refused ([`StoreError::Version`]) and left
//! as it is.
//!
//! # Changing the format
//!
//! Records are JSON, which names its fields, so most changes need no new
//! version:
//! - **A new field**: give it `#[serde(default)]` (or an `Option`), so
//!   that records written before it read (with the default). An older
//!   berth reading a newer record ignores the field, and drops it when it
//!   writes the record back: a downgrade loses what the field held, nothing
//!   more.
//! - **A new enum variant**: fine for a newer berth; an older one cannot
//!   read a record holding it (it stops with [`StoreError::Corrupt`]).
//! - **Anything else** (a field renamed, removed or of another type or
//!   meaning, an enum represented otherwise, a table or key added whose
//!   absence an older file would misread): bump [`FORMAT_VERSION`] and
//!   migrate in [`Store::open`], in the transaction that checks the
//!   version: read every record of the old version, write it in the new
//!   form, write the new version.
//!
//! The golden files in `frameworks/ci/testdata/store-v1/` (a pipeline and a
//! repository record, and a whole file) are never rewritten: they must read
//! in every later berth. A change that needs new golden bytes for an old
//! version is a change of the format.

use std::path::{Path, PathBuf};

use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::Serialize;
use serde::de::DeserializeOwned;

const META: TableDefinition<'_, &str, u64> = TableDefinition::new("meta");
const PIPELINES: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("pipelines");
const REPOS: TableDefinition<'_, u64, &[u8]> = TableDefinition::new("repos");
const NEXT_ID: &str = "next_pipeline_id";
const NEXT_REPO_ID: &str = "next_repo_id";

/// The `meta` key of the file's format version.
pub const FORMAT_KEY: &str = "format_version";

/// The format version this berth reads and writes (0 is the format before
/// files had a version, which it reads as this one).
pub const FORMAT_VERSION: u64 = 1;

/// Changes a repository's record (JSON) given a new pipeline's id; `None`
/// leaves it as it is.
pub type ApplyToRepo = Box<dyn FnOnce(&[u8], u64) -> Option<Vec<u8>> + Send>;

/// A change to a registered repository's record made in the transaction
/// that creates a pipeline, so that the pipeline and the repository's
/// memory of having triggered it are stored together or not at all.
pub struct RepoUpdate {
    /// The repository.
    pub repo: u64,
    /// Given the repository's record (JSON) and the new pipeline's id,
    /// returns the record to store; `None` leaves it as it is.
    pub apply: ApplyToRepo,
}

impl std::fmt::Debug for RepoUpdate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RepoUpdate")
            .field("repo", &self.repo)
            .finish_non_exhaustive()
    }
}

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
    /// The file is of a format version this berth does not read (written
    /// by a newer one).
    #[error(
        "CI state {path}: format version {found} is not one this berth reads (it reads \
         {FORMAT_VERSION} and files without a version); use a newer berth"
    )]
    Version {
        /// The file.
        path: PathBuf,
        /// Its version.
        found: u64,
    },
    /// A registered repository's record could not be read back.
    #[error("CI state {path}: repository {id} is unreadable: {message}")]
    CorruptRepo {
        /// The file.
        path: PathBuf,
        /// The repository.
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
    /// Fault injection: while set, [`Store::put`] and [`Store::remove`]
    /// fail as on a full disk (see [`Store::fail_writes`]).
    failing: std::sync::atomic::AtomicBool,
}

impl Store {
    /// Opens (or creates) the state file.
    pub fn open(path: impl AsRef<Path>) -> Result<Store, StoreError> {
        let path = path.as_ref().to_path_buf();
        let db = Database::create(&path).map_err(|e| StoreError::Db {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let store = Store {
            db,
            path,
            failing: std::sync::atomic::AtomicBool::new(false),
        };
        let txn = store.db.begin_write().map_err(|e| store.err(e))?;
        {
            let mut meta = txn.open_table(META).map_err(|e| store.err(e))?;
            let found = meta
                .get(FORMAT_KEY)
                .map_err(|e| store.err(e))?
                .map(|v| v.value());
            match found {
                Some(FORMAT_VERSION) => {}
                // A new file, or one of version 0: its records are those of
                // version 1.
                None => {
                    meta.insert(FORMAT_KEY, FORMAT_VERSION)
                        .map_err(|e| store.err(e))?;
                }
                // Dropping the transaction aborts it: nothing changes.
                Some(found) => {
                    return Err(StoreError::Version {
                        path: store.path.clone(),
                        found,
                    });
                }
            }
            drop(meta);
            txn.open_table(PIPELINES).map_err(|e| store.err(e))?;
            txn.open_table(REPOS).map_err(|e| store.err(e))?;
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
        self.create_linked(make, None)
    }

    /// A pipeline creation that, in the same transaction, applies `update`
    /// (if any) to a registered repository's record:
    /// `store.linked(update).create_with(make)`.
    pub fn linked(&self, update: Option<RepoUpdate>) -> Linked<'_> {
        Linked {
            store: self,
            update,
        }
    }

    fn create_linked<T: Serialize>(
        &self,
        make: impl FnOnce(u64) -> Option<T>,
        update: Option<RepoUpdate>,
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
            if let Some(update) = update {
                let mut repos = txn.open_table(REPOS).map_err(|e| self.err(e))?;
                let old = repos
                    .get(update.repo)
                    .map_err(|e| self.err(e))?
                    .map(|v| v.value().to_vec());
                // A repository removed meanwhile has nothing to remember.
                if let Some(new) = old.and_then(|old| (update.apply)(&old, id)) {
                    repos
                        .insert(update.repo, new.as_slice())
                        .map_err(|e| self.err(e))?;
                }
            }
            id
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(Some(id))
    }

    /// Fault injection for tests of the fail-closed paths: while `failing`
    /// is set, every [`Store::put`] and [`Store::remove`] fails with
    /// [`StoreError::Db`] and changes nothing, as on a full disk.
    pub fn fail_writes(&self, failing: bool) {
        self.failing
            .store(failing, std::sync::atomic::Ordering::SeqCst);
    }

    /// The error of a write while [`Store::fail_writes`] is set.
    fn check_writable(&self) -> Result<(), StoreError> {
        if self.failing.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(self.err("writes are failing (fault injected)"));
        }
        Ok(())
    }

    /// Replaces a pipeline's record.
    pub fn put<T: Serialize>(&self, id: u64, record: &T) -> Result<(), StoreError> {
        self.check_writable()?;
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
        self.check_writable()?;
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        {
            let mut pipelines = txn.open_table(PIPELINES).map_err(|e| self.err(e))?;
            pipelines.remove(id).map_err(|e| self.err(e))?;
        }
        txn.commit().map_err(|e| self.err(e))
    }
}

/// See [`Store::linked`].
#[derive(Debug)]
pub struct Linked<'a> {
    store: &'a Store,
    update: Option<RepoUpdate>,
}

impl Linked<'_> {
    /// [`Store::create_with`], with the repository update in the same
    /// transaction (not applied when `make` declines).
    pub fn create_with<T: Serialize>(
        self,
        make: impl FnOnce(u64) -> Option<T>,
    ) -> Result<Option<u64>, StoreError> {
        self.store.create_linked(make, self.update)
    }
}

/// Registered repositories.
impl Store {
    /// Stores a new repository: `make` gets its id (1, 2, …, never reused)
    /// and returns the record. Returns the id.
    pub fn create_repo<T: Serialize>(
        &self,
        make: impl FnOnce(u64) -> T,
    ) -> Result<u64, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let id = {
            let mut meta = txn.open_table(META).map_err(|e| self.err(e))?;
            let id = meta
                .get(NEXT_REPO_ID)
                .map_err(|e| self.err(e))?
                .map_or(1, |v| v.value());
            let record = make(id);
            meta.insert(NEXT_REPO_ID, id + 1).map_err(|e| self.err(e))?;
            let bytes = serde_json::to_vec(&record).map_err(|e| self.err(e))?;
            let mut repos = txn.open_table(REPOS).map_err(|e| self.err(e))?;
            repos
                .insert(id, bytes.as_slice())
                .map_err(|e| self.err(e))?;
            id
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(id)
    }

    fn decode_repo<T: DeserializeOwned>(&self, id: u64, bytes: &[u8]) -> Result<T, StoreError> {
        serde_json::from_slice(bytes).map_err(|e| StoreError::CorruptRepo {
            path: self.path.clone(),
            id,
            message: e.to_string(),
        })
    }

    /// One repository's record.
    pub fn repo<T: DeserializeOwned>(&self, id: u64) -> Result<Option<T>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = read.open_table(REPOS).map_err(|e| self.err(e))?;
        match table.get(id).map_err(|e| self.err(e))? {
            None => Ok(None),
            Some(v) => self.decode_repo(id, v.value()).map(Some),
        }
    }

    /// Every repository, oldest first.
    pub fn repos<T: DeserializeOwned>(&self) -> Result<Vec<(u64, T)>, StoreError> {
        let read = self.db.begin_read().map_err(|e| self.err(e))?;
        let table = read.open_table(REPOS).map_err(|e| self.err(e))?;
        let mut out = Vec::new();
        for entry in table.iter().map_err(|e| self.err(e))? {
            let (k, v) = entry.map_err(|e| self.err(e))?;
            let id = k.value();
            out.push((id, self.decode_repo(id, v.value())?));
        }
        Ok(out)
    }

    /// Reads, changes and writes back a repository's record in one
    /// transaction. `None` when there is no such repository.
    pub fn update_repo<T: Serialize + DeserializeOwned, R>(
        &self,
        id: u64,
        change: impl FnOnce(&mut T) -> R,
    ) -> Result<Option<R>, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let result = {
            let mut repos = txn.open_table(REPOS).map_err(|e| self.err(e))?;
            let old = repos
                .get(id)
                .map_err(|e| self.err(e))?
                .map(|v| v.value().to_vec());
            match old {
                None => None,
                Some(bytes) => {
                    let mut record: T = self.decode_repo(id, &bytes)?;
                    let result = change(&mut record);
                    let bytes = serde_json::to_vec(&record).map_err(|e| self.err(e))?;
                    repos
                        .insert(id, bytes.as_slice())
                        .map_err(|e| self.err(e))?;
                    Some(result)
                }
            }
        };
        match result {
            None => txn.abort().map_err(|e| self.err(e))?,
            Some(_) => txn.commit().map_err(|e| self.err(e))?,
        }
        Ok(result)
    }

    /// Deletes a repository's record; false when there was none.
    pub fn remove_repo(&self, id: u64) -> Result<bool, StoreError> {
        let txn = self.db.begin_write().map_err(|e| self.err(e))?;
        let removed = {
            let mut repos = txn.open_table(REPOS).map_err(|e| self.err(e))?;
            repos.remove(id).map_err(|e| self.err(e))?.is_some()
        };
        txn.commit().map_err(|e| self.err(e))?;
        Ok(removed)
    }
}

#[cfg(test)]
mod golden;

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

    #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
    struct Repo {
        id: u64,
        url: String,
        #[serde(default)]
        pipelines: Vec<u64>,
    }

    fn remember(repo: u64) -> RepoUpdate {
        RepoUpdate {
            repo,
            apply: Box::new(|bytes, pipeline| {
                let mut r: Repo = serde_json::from_slice(bytes).ok()?;
                r.pipelines.push(pipeline);
                serde_json::to_vec(&r).ok()
            }),
        }
    }

    #[test]
    fn repositories_round_trip_apart_from_pipelines() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("ci.redb");
        {
            let store = Store::open(&path).unwrap();
            let a = store
                .create_repo(|id| Repo {
                    id,
                    url: "/srv/a".into(),
                    pipelines: vec![],
                })
                .unwrap();
            let b = store
                .create_repo(|id| Repo {
                    id,
                    url: "/srv/b".into(),
                    pipelines: vec![],
                })
                .unwrap();
            assert_eq!((a, b), (1, 2), "ids of their own");
            // A pipeline and the repository's memory of it, together.
            let p = store
                .linked(Some(remember(a)))
                .create_with(|id| {
                    Some(Record {
                        id,
                        name: "p".into(),
                        added_later: vec![],
                    })
                })
                .unwrap();
            assert_eq!(p, Some(1), "pipeline ids are apart from repository ids");
            // A declined pipeline changes the repository neither.
            let none = store
                .linked(Some(remember(a)))
                .create_with(|_| None::<Record>)
                .unwrap();
            assert_eq!(none, None);
            let changed = store
                .update_repo(b, |r: &mut Repo| {
                    r.url = "/srv/b2".into();
                    7
                })
                .unwrap();
            assert_eq!(changed, Some(7));
            assert_eq!(store.update_repo(99, |_: &mut Repo| ()).unwrap(), None);
            assert!(store.remove_repo(b).unwrap());
            assert!(!store.remove_repo(b).unwrap());
        }
        let store = Store::open(&path).unwrap();
        let repos: Vec<(u64, Repo)> = store.repos().unwrap();
        assert_eq!(
            repos,
            [(
                1,
                Repo {
                    id: 1,
                    url: "/srv/a".into(),
                    pipelines: vec![1],
                }
            )]
        );
        assert_eq!(store.repo::<Repo>(2).unwrap(), None);
        assert_eq!(store.all::<Record>().unwrap().len(), 1, "one pipeline");
        let c = store
            .create_repo(|id| Repo {
                id,
                url: "/srv/c".into(),
                pipelines: vec![],
            })
            .unwrap();
        assert_eq!(c, 3, "the removed repository's id is not reused");
        store.put(9, &serde_json::json!({"x": 1})).unwrap();
        // Garbage in the repository table is an error naming it.
        store
            .update_repo(3, |r: &mut serde_json::Value| *r = serde_json::json!([1]))
            .unwrap();
        let err = store.repo::<Repo>(3).unwrap_err();
        assert!(
            err.to_string().contains("repository 3 is unreadable"),
            "{err}"
        );
    }
}
