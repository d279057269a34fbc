//! The framework's state in the masters' key-value store (namespace
//! [`NAMESPACE`]): the apps, versions and deployments
//! ([`crate::state`]'s keys), the instance slots
//! ([`crate::run::record`]), and the framework id. Every write is fenced
//! by the active instance's lease, so an instance that lost it without
//! knowing cannot overwrite what its successor wrote.

use std::time::Duration;

use berth_sdk::kv::{KvClient, LeaseRef, Txn};

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
/// call.
pub fn instance_writes(instances: &mut Instances) -> Vec<Write> {
    instances
        .take_dirty()
        .into_iter()
        .map(|(id, slot)| (record::key_of_instance(&id), slot.map(record::encode)))
        .collect()
}

/// Writes `writes`, fenced by `lease`, in as few transactions as fit.
///
/// A transaction whose outcome is unknown (the leading master was lost
/// while it was in flight) is sent again until it is answered, for up to
/// [`UNKNOWN_OUTCOME_PATIENCE`]: its operations put whole values and
/// delete keys, so applying it twice leaves what applying it once does,
/// and its lease compare still fences it.
///
/// # Errors
/// [`StoreError::Kv`] when a transaction is refused (the lease is lost),
/// or its outcome stays unknown: the caller stops (fail closed).
pub async fn write(kv: &KvClient, lease: &LeaseRef, writes: Vec<Write>) -> Result<(), StoreError> {
    let mut txn = Txn::new().if_lease(lease);
    let mut ops = 0;
    let mut bytes = 0;
    for (key, value) in writes {
        let size = key.len() + value.as_ref().map_or(0, Vec::len);
        if ops > 0 && (ops >= OPS_PER_TXN || bytes + size > BYTES_PER_TXN) {
            send(kv, std::mem::replace(&mut txn, Txn::new().if_lease(lease))).await?;
            ops = 0;
            bytes = 0;
        }
        txn = match value {
            Some(v) => txn.put(key, v),
            None => txn.delete(key),
        };
        ops += 1;
        bytes += size;
    }
    if ops > 0 {
        send(kv, txn).await?;
    }
    Ok(())
}

/// How long a write whose outcome is unknown is tried again: a leader
/// election takes about two seconds, a takeover of the masters' clients a
/// few more.
pub const UNKNOWN_OUTCOME_PATIENCE: Duration = Duration::from_secs(30);

/// One transaction of whole puts and deletes, sent again while its outcome
/// is unknown (see [`write`]).
async fn send(kv: &KvClient, txn: Txn) -> Result<(), StoreError> {
    let deadline = tokio::time::Instant::now() + UNKNOWN_OUTCOME_PATIENCE;
    loop {
        match kv.txn(txn.clone()).await {
            Ok(_) => return Ok(()),
            Err(e) if e.outcome_unknown() && tokio::time::Instant::now() < deadline => {
                tracing::warn!("a state write's outcome is unknown; sending it again: {e}");
                tokio::time::sleep(Duration::from_millis(250)).await;
            }
            Err(e) => return Err(e.into()),
        }
    }
}
