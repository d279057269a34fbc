//! The framework's state in the masters' key-value store (namespace
//! [`NAMESPACE`]): the apps, versions and deployments
//! ([`crate::state`]'s keys), the instance slots
//! ([`crate::run::record`]), and the framework id. Every write is fenced
//! by the active instance's lease, so an instance that lost it without
//! knowing cannot overwrite what its successor wrote.

use berth_sdk::kv::{KvClient, LeaseRef};

use crate::run::instances::Instances;
use crate::run::record;
use crate::state::{Services, Write};

/// The key-value namespace of the service framework.
pub const NAMESPACE: &str = "service";
/// The lease the framework's instances compete for.
pub const LEASE: &str = "active";
/// The key of the framework id.
pub const FRAMEWORK_ID_KEY: &str = "framework-id";

/// Most operations per transaction (the store takes 128).
const OPS_PER_TXN: usize = 120;
/// Most bytes per transaction (the store takes 3 MiB).
const BYTES_PER_TXN: usize = 2 * 1024 * 1024;

/// Why the stored state could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The key-value store refused or could not be reached.
    #[error("key-value store: {0}")]
    Kv(#[from] berth_sdk::SdkError),
    /// The apps, versions or deployments do not load.
    #[error("stored apps: {0}")]
    Apps(#[from] crate::error::LoadError),
    /// An instance record does not load.
    #[error(transparent)]
    Instance(#[from] record::RecordError),
}

/// What the framework stored, read back.
#[derive(Debug, Default)]
pub struct Loaded {
    /// The apps.
    pub services: Services,
    /// The instance slots.
    pub instances: Instances,
    /// The framework id, once subscribed.
    pub framework_id: Option<String>,
}

/// Reads everything back. Fails closed: an entry that does not load stops
/// the framework rather than being skipped.
///
/// # Errors
/// [`StoreError`] for a store that cannot be read or an entry that does
/// not load.
pub async fn load(kv: &KvClient) -> Result<Loaded, StoreError> {
    let (entries, _) = kv.list("").await?;
    let mut loaded = Loaded::default();
    let mut apps = Vec::new();
    for e in entries {
        if Services::owns_key(&e.key) {
            apps.push((e.key, e.value));
        } else if let Some(id) = e.key.strip_prefix(record::PREFIX) {
            let slot = record::decode(&e.key, &e.value)?;
            loaded.instances.restore(id.to_owned(), slot);
        } else if e.key == FRAMEWORK_ID_KEY {
            loaded.framework_id = String::from_utf8(e.value).ok().filter(|s| !s.is_empty());
        }
        // Other keys (routes for standalone routers) are the framework's
        // own output, rewritten as it runs.
    }
    loaded.services = Services::load(apps)?;
    Ok(loaded)
}

/// The instance records to write for the slots changed since the last
/// call, each with its app (empty for a slot that is gone).
pub fn instance_writes(instances: &mut Instances) -> Vec<(String, Write)> {
    instances
        .take_dirty()
        .into_iter()
        .map(|(id, slot)| {
            let app = slot.map(|s| s.app.clone()).unwrap_or_default();
            (
                app,
                (record::key_of_instance(&id), slot.map(record::encode)),
            )
        })
        .collect()
}

/// Splits one change into the transactions [`write`] sends, in order:
/// the instance records first, grouped by app, then `ops` (an operation's
/// records: app, versions, deployment) in the last transaction.
///
/// - An app's instance records share a transaction when they fit in one:
///   what one app's round changed (a step's new slots, a scale) is
///   written whole or not at all. Only an app whose records alone exceed
///   one transaction has them split; each record describes one slot on
///   its own, so a part written is a set of valid slots.
/// - The operation's records come after every instance record they may
///   count (a deployment's plan counts the slots its step created). A
///   failure in between leaves slots that no stored plan counts yet: the
///   next active instance sees them as instances of their version (the
///   planner counts what it observes; an instance too many is removed by
///   the scale check), never a plan that counts slots not stored.
/// - The operation's records are few (an app, its versions, a
///   deployment) and fit one transaction; if they did not, they would be
///   split in order too.
#[must_use]
pub fn batches(instances: Vec<(String, Write)>, ops: Vec<Write>) -> Vec<Vec<Write>> {
    let mut groups: std::collections::BTreeMap<String, Vec<Write>> = Default::default();
    for (app, w) in instances {
        groups.entry(app).or_default().push(w);
    }
    let mut out: Vec<Vec<Write>> = Vec::new();
    let mut txn = Batch::default();
    for group in groups.into_values().chain(std::iter::once(ops)) {
        if !txn.fits(&group) {
            out.extend(txn.take());
        }
        for w in group {
            if !txn.fits(std::slice::from_ref(&w)) {
                out.extend(txn.take());
            }
            txn.push(w);
        }
    }
    out.extend(txn.take());
    out
}

/// One transaction being filled.
#[derive(Default)]
struct Batch {
    writes: Vec<Write>,
    bytes: usize,
}

fn size(w: &Write) -> usize {
    w.0.len() + w.1.as_ref().map_or(0, Vec::len)
}

impl Batch {
    /// Whether `more` fits beside what the batch holds (anything fits an
    /// empty batch: a single record too large is the store's to refuse).
    fn fits(&self, more: &[Write]) -> bool {
        self.writes.is_empty()
            || (self.writes.len() + more.len() <= OPS_PER_TXN
                && self.bytes + more.iter().map(size).sum::<usize>() <= BYTES_PER_TXN)
    }

    fn push(&mut self, w: Write) {
        self.bytes += size(&w);
        self.writes.push(w);
    }

    /// The writes so far, if any; the batch is empty after.
    fn take(&mut self) -> Option<Vec<Write>> {
        self.bytes = 0;
        let writes = std::mem::take(&mut self.writes);
        (!writes.is_empty()).then_some(writes)
    }
}

/// Writes `transactions` ([`batches`]) in order, each fenced by `lease`
/// (see [`KvClient::write_fenced`]: a write whose outcome is unknown is
/// sent again for a while).
///
/// # Errors
/// [`StoreError::Kv`] when a transaction is refused (the lease is lost),
/// or its outcome stays unknown: the caller stops (fail closed), and the
/// transactions after it are not sent.
pub async fn write(
    kv: &KvClient,
    lease: &LeaseRef,
    transactions: Vec<Vec<Write>>,
) -> Result<(), StoreError> {
    Ok(kv.write_fenced(lease, transactions).await?)
}

#[cfg(test)]
mod tests;
