//! The state's records in the key-value store and reading them back.
//!
//! | key | value |
//! |---|---|
//! | `job/<job>` | the definition |
//! | `meta/<job>` | [`Meta`]: the schedules' cursors, counts, parents' runs |
//! | `run/<job>/<run>` | an active run, with its tasks |
//! | `hist/<job>/<run>` | a finished run (without its `spec`) |
//! | `secret/<path>` | a secret's value |
//!
//! Each value is JSON in an envelope `{"v": 1, ...}`: a record of a format
//! this build does not know stops the framework (fail closed) rather than
//! being skipped or misread. Keys are unique because job ids have no `/`
//! and run ids are made of digits, `.`, `-` and schedule ids.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::{Entry, Jobs, Key, Meta};
use crate::job::{JobDef, JobId};
use crate::run::Run;
use crate::schedule::Cron;
use crate::time::Timestamp;

/// One write: a key and its new value, or `None` to delete it.
pub type Write = (String, Option<Vec<u8>>);

/// The key prefixes the state owns (other keys of the namespace, the
/// framework id say, are the framework's).
pub const NAMESPACE_PREFIXES: [&str; 5] = ["job/", "meta/", "run/", "hist/", "secret/"];

/// The record format's version.
const FORMAT: u32 = 1;

/// Most operations per transaction (the store takes 128).
const OPS_PER_TXN: usize = 120;
/// Most bytes per transaction (the store takes 3 MiB).
const BYTES_PER_TXN: usize = 2 * 1024 * 1024;

/// A stored record that does not load.
#[derive(Debug, thiserror::Error)]
#[error("stored record {key:?} does not load: {reason}")]
pub struct LoadError {
    /// The key.
    pub key: String,
    /// Why.
    pub reason: String,
}

#[derive(Serialize, Deserialize)]
struct Envelope<T> {
    v: u32,
    #[serde(flatten)]
    body: T,
}

#[derive(Serialize, Deserialize)]
struct DefBody {
    def: JobDef,
}

#[derive(Serialize, Deserialize)]
struct MetaBody {
    meta: Meta,
}

#[derive(Serialize, Deserialize)]
struct RunBody {
    run: Run,
}

#[derive(Serialize, Deserialize)]
struct FinishedBody {
    run: serde_json::Value,
}

/// A finished run's record: without its `spec` (the job's `run` when it
/// was created), which only an active run needs; a history of thousands of
/// runs then stays small in the store.
fn finished_record(run: &Run) -> Vec<u8> {
    let mut value = serde_json::to_value(run).unwrap_or_default();
    if let Some(map) = value.as_object_mut() {
        map.remove("spec");
    }
    encode(FinishedBody { run: value })
}

#[derive(Serialize, Deserialize)]
struct SecretBody {
    value: String,
}

fn encode<T: Serialize>(body: T) -> Vec<u8> {
    // Serializing plain data into a Vec cannot fail.
    serde_json::to_vec(&Envelope { v: FORMAT, body }).unwrap_or_default()
}

fn decode<T: for<'de> Deserialize<'de>>(key: &str, bytes: &[u8]) -> Result<T, LoadError> {
    let err = |reason: String| LoadError {
        key: key.to_owned(),
        reason,
    };
    let value: serde_json::Value = serde_json::from_slice(bytes).map_err(|e| err(e.to_string()))?;
    let version = value.get("v").and_then(serde_json::Value::as_u64);
    if version != Some(u64::from(FORMAT)) {
        return Err(err(format!(
            "format version {} (this build reads {FORMAT})",
            version.map_or_else(|| "missing".to_owned(), |v| v.to_string())
        )));
    }
    let env: Envelope<T> = serde_json::from_value(value).map_err(|e| err(e.to_string()))?;
    Ok(env.body)
}

impl Key {
    fn text(&self) -> String {
        match self {
            Key::Job(j) => format!("job/{j}"),
            Key::Meta(j) => format!("meta/{j}"),
            Key::Active(j, r) => format!("run/{j}/{r}"),
            Key::History(j, r) => format!("hist/{j}/{r}"),
            Key::Secret(p) => format!("secret/{p}"),
        }
    }
}

impl Jobs {
    /// Marks a record changed.
    pub(super) fn touch(&mut self, key: Key) {
        self.dirty.insert(key);
    }

    /// The current value of a record (`None`: it is gone).
    fn value_of(&self, key: &Key) -> Option<Vec<u8>> {
        match key {
            Key::Job(j) => self
                .jobs
                .get(j)
                .map(|e| encode(DefBody { def: e.def.clone() })),
            Key::Meta(j) => self.jobs.get(j).map(|e| {
                encode(MetaBody {
                    meta: e.meta.clone(),
                })
            }),
            Key::Active(j, r) => self
                .jobs
                .get(j)
                .and_then(|e| e.active.get(r))
                .map(|run| encode(RunBody { run: run.clone() })),
            Key::History(j, r) => self
                .jobs
                .get(j)
                .and_then(|e| e.history.iter().find(|h| h.id == *r))
                .map(finished_record),
            Key::Secret(p) => self
                .secrets
                .get(p)
                .map(|v| encode(SecretBody { value: v.clone() })),
        }
    }

    /// The records changed since the last call, as transactions to write
    /// in order: a job's records share a transaction whenever they fit one
    /// (so a tick's run and the cursor that passed it are written
    /// together; see the module docs of [`super`]), and no transaction
    /// holds more than the store takes.
    pub fn take_writes(&mut self) -> Vec<Vec<Write>> {
        let dirty = std::mem::take(&mut self.dirty);
        let mut groups: BTreeMap<Option<JobId>, Vec<Write>> = BTreeMap::new();
        for key in dirty {
            let value = self.value_of(&key);
            groups
                .entry(key.job().cloned())
                .or_default()
                .push((key.text(), value));
        }
        let mut out: Vec<Vec<Write>> = Vec::new();
        let mut txn: Vec<Write> = Vec::new();
        let mut bytes = 0usize;
        let size = |w: &Write| w.0.len() + w.1.as_ref().map_or(0, Vec::len);
        for group in groups.into_values() {
            let group_bytes: usize = group.iter().map(size).sum();
            if !txn.is_empty()
                && (txn.len() + group.len() > OPS_PER_TXN || bytes + group_bytes > BYTES_PER_TXN)
            {
                out.push(std::mem::take(&mut txn));
                bytes = 0;
            }
            for w in group {
                // A single job's records beyond one transaction (a huge
                // history trim) are split; the cursor and its runs are
                // few and come first in key order ("meta/" < "run/").
                if !txn.is_empty() && (txn.len() >= OPS_PER_TXN || bytes + size(&w) > BYTES_PER_TXN)
                {
                    out.push(std::mem::take(&mut txn));
                    bytes = 0;
                }
                bytes += size(&w);
                txn.push(w);
            }
        }
        if !txn.is_empty() {
            out.push(txn);
        }
        out
    }

    /// The state from the stored records (the namespace's keys with the
    /// state's prefixes; others are ignored). Fails closed: a record that
    /// does not load stops the framework.
    ///
    /// # Errors
    /// [`LoadError`] naming the record.
    pub fn load(records: Vec<(String, Vec<u8>)>) -> Result<Jobs, LoadError> {
        let mut defs: BTreeMap<JobId, JobDef> = BTreeMap::new();
        let mut metas: BTreeMap<JobId, Meta> = BTreeMap::new();
        let mut active: Vec<Run> = Vec::new();
        let mut history: Vec<(String, serde_json::Value)> = Vec::new();
        let mut jobs = Jobs::default();
        for (key, value) in records {
            if key.starts_with("job/") {
                let body: DefBody = decode(&key, &value)?;
                defs.insert(body.def.id.clone(), body.def);
            } else if let Some(id) = key.strip_prefix("meta/") {
                let body: MetaBody = decode(&key, &value)?;
                let id = JobId::new(id).map_err(|e| LoadError {
                    key: key.clone(),
                    reason: e.to_owned(),
                })?;
                metas.insert(id, body.meta);
            } else if key.starts_with("run/") {
                active.push(decode::<RunBody>(&key, &value)?.run);
            } else if key.starts_with("hist/") {
                history.push((key.clone(), decode::<FinishedBody>(&key, &value)?.run));
            } else if let Some(path) = key.strip_prefix("secret/") {
                let body: SecretBody = decode(&key, &value)?;
                jobs.secrets.insert(path.to_owned(), body.value);
            }
        }
        for (id, def) in defs {
            let mut crons = BTreeMap::new();
            for s in &def.schedules {
                let cron = Cron::parse(&s.cron, &s.timezone).map_err(|e| LoadError {
                    key: format!("job/{id}"),
                    reason: format!("schedule {:?}: {e}", s.id),
                })?;
                crons.insert(s.id.clone(), cron);
            }
            let meta = metas.remove(&id).unwrap_or_default();
            for (sid, next) in &meta.next {
                if let Some(at) = next
                    && crons.contains_key(sid)
                {
                    jobs.timers.set((id.clone(), sid.clone()), *at);
                }
            }
            jobs.jobs.insert(
                id,
                Entry {
                    def,
                    crons,
                    meta,
                    active: BTreeMap::new(),
                    history: Vec::new(),
                },
            );
        }
        for run in active {
            let Some(e) = jobs.jobs.get_mut(&run.job) else {
                // A run whose job is gone: its records are deleted with
                // the job, in one transaction; a leftover is an old
                // format's or a bug's, and is dropped (its tasks, if
                // any, are killed as tasks no run names).
                continue;
            };
            for t in &run.tasks {
                jobs.tasks
                    .insert(t.task_id.clone(), (run.job.clone(), run.id.clone()));
            }
            jobs.active.insert((run.job.clone(), run.id.clone()));
            e.active.insert(run.id.clone(), run);
        }
        for (key, mut value) in history {
            let job = value
                .get("job")
                .and_then(serde_json::Value::as_str)
                .and_then(|j| JobId::new(j).ok());
            let Some(e) = job.and_then(|j| jobs.jobs.get_mut(&j)) else {
                continue;
            };
            // A finished run is stored without its `run` spec (see
            // `finished_record`): it gets its job's current one.
            if let Some(map) = value.as_object_mut() {
                map.insert(
                    "spec".into(),
                    serde_json::to_value(&e.def.run).unwrap_or_default(),
                );
            }
            let run: Run = serde_json::from_value(value).map_err(|err| LoadError {
                key,
                reason: err.to_string(),
            })?;
            jobs.kept
                .insert((finished(&run), run.job.clone(), run.id.clone()));
            e.history.push(run);
        }
        for e in jobs.jobs.values_mut() {
            e.history
                .sort_by_key(|r| std::cmp::Reverse((r.finished_at, r.id.clone())));
        }
        jobs.index_children();
        Ok(jobs)
    }
}

/// Whether a finished run goes to the failed side of the history (every
/// status but success).
pub(super) fn counts_as_failed(run: &Run) -> bool {
    run.status != crate::run::RunStatus::Success
}

/// The time a finished run is kept from.
pub(super) fn finished(run: &Run) -> Timestamp {
    run.finished_at.unwrap_or(run.created_at)
}
