//! The frameworks' key-value store: small, namespaced, replicated state
//! that frameworks keep in the masters' Raft group instead of a database
//! of their own (apps and deployments, job schedules, a CI runner's
//! pipelines).
//!
//! It is part of the registry: its changes are [`Command`](super::Command)s
//! in the Raft log, applied on every master in log order, and the store is
//! in registry snapshots. What it offers:
//!
//! - **Namespaces**: every key lives in one namespace (a framework's name,
//!   by convention); [`MAX_NAMESPACE_BYTES`] bounds each and
//!   [`MAX_STORE_BYTES`] all of them, so one framework cannot fill the
//!   masters' snapshots.
//! - **Revisions**: the store counts its changes; every key carries the
//!   revision that created it and the one that last changed it, and its
//!   own version (1 when created, +1 per write). A watch says which
//!   revision it has seen.
//! - **Transactions**: a write is a [`Txn`]: compares (a key's version, 0
//!   for "absent"; a lease held by a holder at an epoch) and operations
//!   (put, delete, delete by prefix), applied all or nothing. A compare
//!   that fails refuses the whole transaction with
//!   [`ApplyError::Conflict`], on every master alike.
//! - **Leases**: named locks with a holder and an epoch (a fencing token
//!   that grows with every new holder), for choosing the active instance
//!   of a framework that runs twice. The store records who holds a lease;
//!   *time* is the leader's business, not the store's (applying reads no
//!   clock): the leader tracks renewals in memory, proposes a
//!   [`LeaseGrant`](super::Command::KvLeaseGrant) for a free or expired
//!   lease and a [`LeaseRevoke`](super::Command::KvLeaseRevoke) when one
//!   expires. A writer fences its writes with a
//!   [`Compare::LeaseHeld`], so an instance that lost its lease without
//!   knowing it cannot overwrite what its successor wrote.
//!
//! Limits are constants of the format, checked by [`KvStore::check_txn`]
//! before a command is proposed and again when it is applied.

use std::collections::BTreeMap;

use berth_scheduler_core::quoted;
use serde::{Deserialize, Serialize};

use crate::error::ApplyError;

/// Longest namespace name, in bytes.
pub const MAX_NAMESPACE_NAME: usize = 64;
/// Longest key or lease name, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most compares, and most operations, in one transaction.
pub const MAX_TXN_ITEMS: usize = 128;
/// Most bytes (keys and values) one transaction writes: its command must
/// fit in a Raft entry and its request in a 4 MiB gRPC message.
pub const MAX_TXN_BYTES: usize = 3 * 1024 * 1024;
/// Most bytes (keys and values) one namespace holds.
pub const MAX_NAMESPACE_BYTES: u64 = 32 * 1024 * 1024;
/// Most bytes (keys and values) the whole store holds: it is in every
/// registry snapshot, which travels whole to a lagging master.
pub const MAX_STORE_BYTES: u64 = 128 * 1024 * 1024;
/// Longest lease holder name, in bytes.
pub const MAX_HOLDER_BYTES: usize = 256;
/// Shortest and longest lease time to live, in milliseconds.
pub const LEASE_TTL_MS: std::ops::RangeInclusive<u64> = 1_000..=300_000;

/// One key's value and history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    /// The value.
    pub value: Vec<u8>,
    /// 1 when the key was created, +1 with every put.
    pub version: u64,
    /// The store revision that created the key.
    pub create_revision: u64,
    /// The store revision of the last put.
    pub mod_revision: u64,
}

/// Who holds a lease.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The holder, or `None` when the lease is free (released or expired).
    pub holder: Option<String>,
    /// Grows by one with every grant to a holder: a fencing token.
    pub epoch: u64,
    /// The time to live the holder asked for, in milliseconds.
    pub ttl_ms: u64,
}

/// One namespace.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Space {
    entries: BTreeMap<String, KvEntry>,
    leases: BTreeMap<String, LeaseRecord>,
    /// Bytes of keys and values. Derived from `entries`, kept in the
    /// snapshot for simplicity and checked on load.
    bytes: u64,
}

impl Space {
    /// The keys and their entries, in key order.
    pub fn entries(&self) -> &BTreeMap<String, KvEntry> {
        &self.entries
    }

    /// The leases, by name.
    pub fn leases(&self) -> &BTreeMap<String, LeaseRecord> {
        &self.leases
    }
}

/// A condition of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Compare {
    /// The key's version is `version`; 0 means the key does not exist.
    Version {
        /// The key.
        key: String,
        /// Its expected version.
        version: u64,
    },
    /// The lease `name` is held by `holder` at `epoch`.
    LeaseHeld {
        /// The lease.
        name: String,
        /// Its expected holder.
        holder: String,
        /// Its expected epoch.
        epoch: u64,
    },
}

/// A write of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Op {
    /// Sets the key's value (creating the key if needed).
    Put {
        /// The key.
        key: String,
        /// The value.
        value: Vec<u8>,
    },
    /// Deletes the key; deleting an absent key changes nothing.
    Delete {
        /// The key.
        key: String,
    },
    /// Deletes every key that starts with `prefix` (all of them for "").
    DeletePrefix {
        /// The prefix.
        prefix: String,
    },
}

/// A transaction on one namespace: every compare must hold, then every
/// op is applied, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Txn {
    /// The namespace.
    pub namespace: String,
    /// Conditions, all of which must hold.
    pub compares: Vec<Compare>,
    /// Writes, applied in order.
    pub ops: Vec<Op>,
}

/// A change of the store, as watchers see it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvChange {
    /// A key was put; `entry` is its new state.
    Put {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
        /// Its new value and versions.
        entry: KvEntry,
    },
    /// A key was deleted, at `revision`.
    Delete {
        /// The namespace.
        namespace: String,
        /// The key.
        key: String,
        /// The store revision of the deletion.
        revision: u64,
    },
    /// A lease changed hands (or became free).
    Lease {
        /// The namespace.
        namespace: String,
        /// The lease.
        name: String,
        /// Its new state.
        lease: LeaseRecord,
        /// The store revision of the change.
        revision: u64,
    },
}

/// The store.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    spaces: BTreeMap<String, Space>,
    /// The number of changes applied so far (0 for an empty store).
    revision: u64,
    /// Bytes of keys and values of all namespaces.
    bytes: u64,
}

/// Checks a namespace name: 1 to [`MAX_NAMESPACE_NAME`] bytes of lowercase
/// ASCII letters, digits, `.`, `_` and `-`, starting with a letter or a
/// digit.
///
/// # Errors
/// [`ApplyError::Invalid`] saying what is wrong.
pub fn check_namespace(ns: &str) -> Result<(), ApplyError> {
    let ok_char = |c: char| c.is_ascii_lowercase() || c.is_ascii_digit() || "._-".contains(c);
    if ns.is_empty() || ns.len() > MAX_NAMESPACE_NAME {
        return Err(ApplyError::Invalid(format!(
            "namespace {} must be 1 to {MAX_NAMESPACE_NAME} bytes",
            quoted(ns)
        )));
    }
    if !ns.chars().all(ok_char) || !ns.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(ApplyError::Invalid(format!(
            "namespace {} must be lowercase letters, digits, '.', '_' and '-', starting with a \
             letter or a digit",
            quoted(ns)
        )));
    }
    Ok(())
}

/// Checks a key, a prefix or a lease name (`what` says which, for the
/// message): at most [`MAX_KEY_BYTES`], no control characters; empty only
/// when `empty_ok` (a prefix).
///
/// # Errors
/// [`ApplyError::Invalid`] saying what is wrong.
pub fn check_key(what: &str, key: &str, empty_ok: bool) -> Result<(), ApplyError> {
    if key.is_empty() && !empty_ok {
        return Err(ApplyError::Invalid(format!("{what} must not be empty")));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(ApplyError::Invalid(format!(
            "{what} {} is longer than {MAX_KEY_BYTES} bytes",
            quoted(key)
        )));
    }
    if key.chars().any(char::is_control) {
        return Err(ApplyError::Invalid(format!(
            "{what} {} contains a control character",
            quoted(key)
        )));
    }
    Ok(())
}

/// Checks a lease holder's name and time to live.
///
/// # Errors
/// [`ApplyError::Invalid`] saying what is wrong.
pub fn check_holder(holder: &str, ttl_ms: u64) -> Result<(), ApplyError> {
    if holder.is_empty() || holder.len() > MAX_HOLDER_BYTES || holder.chars().any(char::is_control)
    {
        return Err(ApplyError::Invalid(format!(
            "lease holder {} must be 1 to {MAX_HOLDER_BYTES} bytes without control characters",
            quoted(holder)
        )));
    }
    if !LEASE_TTL_MS.contains(&ttl_ms) {
        return Err(ApplyError::Invalid(format!(
            "lease time to live {ttl_ms} ms is outside {} to {} ms",
            LEASE_TTL_MS.start(),
            LEASE_TTL_MS.end()
        )));
    }
    Ok(())
}

fn entry_bytes(key: &str, value: &[u8]) -> u64 {
    (key.len() + value.len()) as u64
}

impl KvStore {
    /// The number of changes applied so far.
    #[must_use]
    pub fn revision(&self) -> u64 {
        self.revision
    }

    /// One namespace, if it holds anything.
    #[must_use]
    pub fn space(&self, ns: &str) -> Option<&Space> {
        self.spaces.get(ns)
    }

    /// Bytes of keys and values of all namespaces.
    #[must_use]
    pub fn bytes(&self) -> u64 {
        self.bytes
    }

    /// One key.
    #[must_use]
    pub fn get(&self, ns: &str, key: &str) -> Option<&KvEntry> {
        self.spaces.get(ns).and_then(|s| s.entries.get(key))
    }

    /// The keys of `ns` that start with `prefix`, in key order.
    pub fn range<'a>(
        &'a self,
        ns: &str,
        prefix: &'a str,
    ) -> impl Iterator<Item = (&'a String, &'a KvEntry)> + 'a {
        self.spaces
            .get(ns)
            .into_iter()
            .flat_map(move |s| s.entries.range(prefix.to_owned()..))
            .take_while(move |(k, _)| k.starts_with(prefix))
    }

    /// One lease.
    #[must_use]
    pub fn lease(&self, ns: &str, name: &str) -> Option<&LeaseRecord> {
        self.spaces.get(ns).and_then(|s| s.leases.get(name))
    }

    /// Every held lease, as (namespace, name, record).
    pub fn held_leases(&self) -> impl Iterator<Item = (&String, &String, &LeaseRecord)> {
        self.spaces.iter().flat_map(|(ns, s)| {
            s.leases
                .iter()
                .filter(|(_, l)| l.holder.is_some())
                .map(move |(name, l)| (ns, name, l))
        })
    }

    /// Whether `txn` is well formed and would apply now: names and sizes
    /// within the limits, every compare true, the namespace and the store
    /// within their bounds afterwards.
    ///
    /// # Errors
    /// [`ApplyError::Invalid`] for a malformed transaction or one past a
    /// bound, [`ApplyError::Conflict`] for a compare that does not hold.
    pub fn check_txn(&self, txn: &Txn) -> Result<(), ApplyError> {
        self.plan(txn).map(|_| ())
    }

    /// Checks `txn` and works out the namespace's size after it.
    fn plan(&self, txn: &Txn) -> Result<(u64, u64), ApplyError> {
        check_namespace(&txn.namespace)?;
        if txn.ops.is_empty() {
            return Err(ApplyError::Invalid(
                "a transaction needs at least one operation".into(),
            ));
        }
        if txn.ops.len() > MAX_TXN_ITEMS || txn.compares.len() > MAX_TXN_ITEMS {
            return Err(ApplyError::Invalid(format!(
                "a transaction holds at most {MAX_TXN_ITEMS} compares and {MAX_TXN_ITEMS} \
                 operations (it has {} and {})",
                txn.compares.len(),
                txn.ops.len()
            )));
        }
        let mut written = 0usize;
        for op in &txn.ops {
            match op {
                Op::Put { key, value } => {
                    check_key("key", key, false)?;
                    if value.len() > MAX_VALUE_BYTES {
                        return Err(ApplyError::Invalid(format!(
                            "the value of key {} has {} bytes; at most {MAX_VALUE_BYTES} are \
                             allowed",
                            quoted(key),
                            value.len()
                        )));
                    }
                    written += key.len() + value.len();
                }
                Op::Delete { key } => check_key("key", key, false)?,
                Op::DeletePrefix { prefix } => check_key("prefix", prefix, true)?,
            }
        }
        if written > MAX_TXN_BYTES {
            return Err(ApplyError::Invalid(format!(
                "the transaction writes {written} bytes; at most {MAX_TXN_BYTES} are allowed"
            )));
        }
        let space = self.spaces.get(&txn.namespace);
        for c in &txn.compares {
            self.compare(&txn.namespace, space, c)?;
        }
        // The namespace's size afterwards, key by key in op order.
        let mut sizes: BTreeMap<&str, Option<u64>> = BTreeMap::new();
        let current = |key: &str| {
            space
                .and_then(|s| s.entries.get(key))
                .map(|e| entry_bytes(key, &e.value))
        };
        for op in &txn.ops {
            match op {
                Op::Put { key, value } => {
                    sizes.insert(key, Some(entry_bytes(key, value)));
                }
                Op::Delete { key } => {
                    sizes.insert(key, None);
                }
                Op::DeletePrefix { prefix } => {
                    for (k, _) in self.range(&txn.namespace, prefix) {
                        sizes.insert(k, None);
                    }
                    for (k, v) in &mut sizes {
                        if k.starts_with(prefix.as_str()) {
                            *v = None;
                        }
                    }
                }
            }
        }
        let before = space.map_or(0, |s| s.bytes);
        let mut after = before;
        for (key, size) in &sizes {
            after = after - current(key).unwrap_or(0) + size.unwrap_or(0);
        }
        if after > MAX_NAMESPACE_BYTES && after > before {
            return Err(ApplyError::Invalid(format!(
                "namespace {} would hold {after} bytes; at most {MAX_NAMESPACE_BYTES} are allowed",
                quoted(&txn.namespace)
            )));
        }
        let store_after = self.bytes - before + after;
        if store_after > MAX_STORE_BYTES && after > before {
            return Err(ApplyError::Invalid(format!(
                "the key-value store would hold {store_after} bytes; at most {MAX_STORE_BYTES} \
                 are allowed"
            )));
        }
        Ok((after, store_after))
    }

    fn compare(&self, ns: &str, space: Option<&Space>, c: &Compare) -> Result<(), ApplyError> {
        match c {
            Compare::Version { key, version } => {
                check_key("key", key, false)?;
                let actual = space
                    .and_then(|s| s.entries.get(key))
                    .map_or(0, |e| e.version);
                if actual != *version {
                    return Err(ApplyError::Conflict(format!(
                        "key {} in namespace {} is at version {actual}, not {version}",
                        quoted(key),
                        quoted(ns)
                    )));
                }
            }
            Compare::LeaseHeld {
                name,
                holder,
                epoch,
            } => {
                check_key("lease name", name, false)?;
                let lease = space.and_then(|s| s.leases.get(name));
                let held = lease.is_some_and(|l| {
                    l.holder.as_deref() == Some(holder.as_str()) && l.epoch == *epoch
                });
                if !held {
                    let now = match lease {
                        Some(LeaseRecord {
                            holder: Some(h),
                            epoch,
                            ..
                        }) => format!("held by {} at epoch {epoch}", quoted(h)),
                        _ => "free".to_string(),
                    };
                    return Err(ApplyError::Conflict(format!(
                        "lease {} in namespace {} is {now}, not held by {} at epoch {epoch}",
                        quoted(name),
                        quoted(ns),
                        quoted(holder)
                    )));
                }
            }
        }
        Ok(())
    }

    /// Applies a transaction, all or nothing.
    ///
    /// # Errors
    /// As [`KvStore::check_txn`]; nothing changed then.
    pub fn apply_txn(&mut self, txn: &Txn) -> Result<Vec<KvChange>, ApplyError> {
        let (ns_bytes, store_bytes) = self.plan(txn)?;
        self.revision += 1;
        let revision = self.revision;
        let ns = txn.namespace.clone();
        let space = self.spaces.entry(ns.clone()).or_default();
        let mut changes = Vec::new();
        for op in &txn.ops {
            match op {
                Op::Put { key, value } => {
                    let entry = match space.entries.get(key) {
                        Some(old) => KvEntry {
                            value: value.clone(),
                            version: old.version + 1,
                            create_revision: old.create_revision,
                            mod_revision: revision,
                        },
                        None => KvEntry {
                            value: value.clone(),
                            version: 1,
                            create_revision: revision,
                            mod_revision: revision,
                        },
                    };
                    space.entries.insert(key.clone(), entry.clone());
                    changes.push(KvChange::Put {
                        namespace: ns.clone(),
                        key: key.clone(),
                        entry,
                    });
                }
                Op::Delete { key } => {
                    if space.entries.remove(key).is_some() {
                        changes.push(KvChange::Delete {
                            namespace: ns.clone(),
                            key: key.clone(),
                            revision,
                        });
                    }
                }
                Op::DeletePrefix { prefix } => {
                    let keys: Vec<String> = space
                        .entries
                        .range(prefix.clone()..)
                        .take_while(|(k, _)| k.starts_with(prefix.as_str()))
                        .map(|(k, _)| k.clone())
                        .collect();
                    for key in keys {
                        space.entries.remove(&key);
                        changes.push(KvChange::Delete {
                            namespace: ns.clone(),
                            key,
                            revision,
                        });
                    }
                }
            }
        }
        space.bytes = ns_bytes;
        self.bytes = store_bytes;
        self.drop_if_empty(&ns);
        Ok(changes)
    }

    /// Whether a grant of lease `name` to `holder` would apply: the lease's
    /// epoch is still `expect_epoch` (0 for a lease never granted).
    ///
    /// # Errors
    /// [`ApplyError::Invalid`] for bad names, [`ApplyError::Conflict`] when
    /// the lease moved on.
    pub fn check_grant(
        &self,
        ns: &str,
        name: &str,
        holder: &str,
        ttl_ms: u64,
        expect_epoch: u64,
    ) -> Result<(), ApplyError> {
        check_namespace(ns)?;
        check_key("lease name", name, false)?;
        check_holder(holder, ttl_ms)?;
        let epoch = self.lease(ns, name).map_or(0, |l| l.epoch);
        if epoch != expect_epoch {
            return Err(ApplyError::Conflict(format!(
                "lease {} in namespace {} is at epoch {epoch}, not {expect_epoch}",
                quoted(name),
                quoted(ns)
            )));
        }
        Ok(())
    }

    /// Grants lease `name` to `holder` with the next epoch. The leader
    /// decides that the lease is free or expired; the store checks only
    /// that nobody was granted it since (`expect_epoch`).
    ///
    /// # Errors
    /// As [`KvStore::check_grant`]; nothing changed then.
    pub fn grant(
        &mut self,
        ns: &str,
        name: &str,
        holder: &str,
        ttl_ms: u64,
        expect_epoch: u64,
    ) -> Result<Vec<KvChange>, ApplyError> {
        self.check_grant(ns, name, holder, ttl_ms, expect_epoch)?;
        self.revision += 1;
        let lease = LeaseRecord {
            holder: Some(holder.to_owned()),
            epoch: expect_epoch + 1,
            ttl_ms,
        };
        self.spaces
            .entry(ns.to_owned())
            .or_default()
            .leases
            .insert(name.to_owned(), lease.clone());
        Ok(vec![KvChange::Lease {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            lease,
            revision: self.revision,
        }])
    }

    /// Whether a revocation of lease `name` at `epoch` would apply.
    ///
    /// # Errors
    /// [`ApplyError::Conflict`] when the lease is not held at that epoch.
    pub fn check_revoke(&self, ns: &str, name: &str, epoch: u64) -> Result<(), ApplyError> {
        match self.lease(ns, name) {
            Some(l) if l.holder.is_some() && l.epoch == epoch => Ok(()),
            _ => Err(ApplyError::Conflict(format!(
                "lease {} in namespace {} is not held at epoch {epoch}",
                quoted(name),
                quoted(ns)
            ))),
        }
    }

    /// Frees lease `name` held at `epoch` (released by its holder, or
    /// expired in the leader's view). The epoch stays, so the next grant
    /// gets a greater one.
    ///
    /// # Errors
    /// As [`KvStore::check_revoke`]; nothing changed then.
    pub fn revoke(
        &mut self,
        ns: &str,
        name: &str,
        epoch: u64,
    ) -> Result<Vec<KvChange>, ApplyError> {
        self.check_revoke(ns, name, epoch)?;
        self.revision += 1;
        let revision = self.revision;
        let Some(lease) = self.spaces.get_mut(ns).and_then(|s| s.leases.get_mut(name)) else {
            return Err(ApplyError::Invalid("lease vanished".into()));
        };
        lease.holder = None;
        let lease = lease.clone();
        Ok(vec![KvChange::Lease {
            namespace: ns.to_owned(),
            name: name.to_owned(),
            lease,
            revision,
        }])
    }

    fn drop_if_empty(&mut self, ns: &str) {
        if self
            .spaces
            .get(ns)
            .is_some_and(|s| s.entries.is_empty() && s.leases.is_empty())
        {
            self.spaces.remove(ns);
        }
    }

    /// Checks the derived byte counts against the entries (after a
    /// snapshot is read).
    ///
    /// # Errors
    /// A description of the first mismatch.
    pub fn verify(&self) -> Result<(), String> {
        let mut total = 0;
        for (ns, s) in &self.spaces {
            let bytes: u64 = s
                .entries
                .iter()
                .map(|(k, e)| entry_bytes(k, &e.value))
                .sum();
            if bytes != s.bytes {
                return Err(format!(
                    "namespace {} counts {} bytes but holds {bytes}",
                    quoted(ns),
                    s.bytes
                ));
            }
            total += bytes;
        }
        if total != self.bytes {
            return Err(format!(
                "the store counts {} bytes but holds {total}",
                self.bytes
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
