//! A client of the masters' key-value store (`berth.v1.KeyValue`): small,
//! replicated state a framework keeps in the masters' Raft group instead
//! of a database of its own, and leases to choose the active instance of
//! a framework that runs more than once.
//!
//! The store's contract is `proto/berth/v1/kv.proto`; this module adds
//! what every framework would otherwise write itself:
//!
//! - **Following the leader.** Calls go to the leading master, found as
//!   the rest of the SDK finds it ([`berth_proto::leader`]: every known
//!   master is asked who leads). A redirect (`UNAVAILABLE` from a
//!   follower), a master that went away or a call that got no answer makes
//!   the client look for the leader again.
//! - **Retries, where they are safe.** Reads ([`KvClient::get`],
//!   [`KvClient::list`]) and lease calls ([`KvClient::acquire`],
//!   [`KvClient::keep_alive`], [`KvClient::release`]: repeating them does
//!   no harm) are retried on the new leader until
//!   [`KvOptions::retry_for`] has passed. A write ([`KvClient::txn`] and
//!   its conveniences) is retried only when the master said it did not
//!   take it (a follower's "this master is not the leader", a connection
//!   refused). A write whose outcome is unknown — the leader lost its
//!   leadership or did not commit in time, the call timed out, the
//!   connection broke — is **not** retried: it may have been applied, and
//!   applying it twice may be wrong. The error says so
//!   ([`SdkError::outcome_unknown`]); the caller reads the key back, or
//!   repeats the write guarded by compares ([`Txn::if_version`],
//!   [`Txn::if_absent`]), which makes the repetition safe.
//! - **Errors by kind** ([`SdkError::kind`]): a compare that did not hold
//!   or a lease no longer held is [`ErrorKind::Conflict`] with the master's
//!   message (nothing changed); bad input is [`ErrorKind::Invalid`]
//!   (nothing changed); no master reachable is [`SdkError::Transport`].
//! - **Leases kept for you** ([`Lease`], [`LeaseGuard`]): renewals every
//!   third of the time to live, and a signal that the lease is lost,
//!   raised *before* the leader may give it to someone else.
//! - **Watches that do not miss changes** ([`KvWatch`]): re-watched after
//!   any break, with a [`WatchEvent::Reset`] carrying the whole state.
//!
//! What it is not: a cache (every read asks the leader), or a way to read
//! from a follower (`berth-read: stale` is not used).
//!
//! ```no_run
//! use std::time::Duration;
//! use berth_sdk::kv::{KvClient, KvOptions, Lease, Txn};
//!
//! # async fn run() -> Result<(), berth_sdk::SdkError> {
//! let kv = KvClient::connect(vec!["127.0.0.1:5050".into()], "myfw", KvOptions::default()).await?;
//! // Wait to become the active instance, then write fenced by the lease.
//! let guard = Lease::new(&kv, "active", "instance-a", Duration::from_secs(10))?
//!     .campaign()
//!     .await?;
//! kv.txn(Txn::new().if_lease(guard.lease()).put("apps/web", "v1")).await?;
//! # Ok(())
//! # }
//! ```

use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto as pb;
use berth_proto::leader::{Leader, Masters};
use tokio::time::Instant;

use self::call::Repeat;
use crate::{ErrorKind, SdkError};

mod call;
mod lease;
mod txn;
mod watch;

pub use lease::{Acquired, Lease, LeaseGuard, LeaseStatus, LostReason};
pub use txn::{Txn, TxnResult};
pub use watch::{KvWatch, WatchEvent};

/// How long [`KvClient::write_fenced`] sends again a write whose outcome is
/// unknown: a leader election takes about two seconds, a takeover of the
/// masters' clients a few more.
pub const UNKNOWN_OUTCOME_PATIENCE: std::time::Duration = std::time::Duration::from_secs(30);

/// How long a call waits after an answer that makes it look for the
/// leader again, before it does.
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// How the client behaves. Build it with [`KvOptions::default`] and the
/// setters.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct KvOptions {
    /// See [`KvOptions::call_timeout`].
    pub(crate) call_timeout: Duration,
    /// See [`KvOptions::retry_for`].
    pub(crate) retry_for: Duration,
    /// See [`KvOptions::watch_leader_check`].
    pub(crate) watch_leader_check: Duration,
}

impl Default for KvOptions {
    /// A call waits 5 s for its answer; retries and leader finding go on
    /// for 15 s; a watch checks every 2 s that it follows the leader.
    fn default() -> Self {
        Self {
            call_timeout: Duration::from_secs(5),
            retry_for: Duration::from_secs(15),
            watch_leader_check: Duration::from_secs(2),
        }
    }
}

impl KvOptions {
    /// Sets how long one attempt of a call waits for the master's answer.
    /// A write that gets no answer in time fails with
    /// [`SdkError::Timeout`] (outcome unknown). At least 10 ms.
    #[must_use]
    pub fn call_timeout(mut self, timeout: Duration) -> Self {
        self.call_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// Sets how long a call may look for the leader and retry (after a
    /// redirect, an unreachable master, an election) before it gives up.
    #[must_use]
    pub fn retry_for(mut self, window: Duration) -> Self {
        self.retry_for = window;
        self
    }

    /// Sets how often a [`KvWatch`] checks that the master it watches
    /// still leads (a master cut off from the others would otherwise keep
    /// the watch open and silent). At least 100 ms.
    #[must_use]
    pub fn watch_leader_check(mut self, every: Duration) -> Self {
        self.watch_leader_check = every.max(Duration::from_millis(100));
        self
    }
}

/// One key, as the store holds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// 1 when the key was created, +1 with each put (a deleted and
    /// re-created key starts again at 1).
    pub version: u64,
    /// The store revision that created the key.
    pub create_revision: u64,
    /// The store revision of the key's last put.
    pub mod_revision: u64,
}

impl From<pb::KvEntry> for Entry {
    fn from(e: pb::KvEntry) -> Self {
        Self {
            key: e.key,
            value: e.value,
            version: e.version,
            create_revision: e.create_revision,
            mod_revision: e.mod_revision,
        }
    }
}

/// A lease held by a holder at an epoch: what a fenced write compares
/// ([`Txn::if_lease`]) and what renewals and releases name.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct LeaseRef {
    /// The lease's name.
    pub name: String,
    /// Its holder.
    pub holder: String,
    /// The epoch it was granted at (grows with every new holder).
    pub epoch: u64,
}

/// A lease as the leader answered about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaseState {
    /// The lease's name.
    pub name: String,
    /// Whether the caller holds it now.
    pub held: bool,
    /// Who holds it (`None` when it is free).
    pub holder: Option<String>,
    /// Its epoch: that of the current holder, or of the last one when free.
    pub epoch: u64,
    /// How long it lasts from the answer without a renewal, in the
    /// leader's view.
    pub remaining: Duration,
}

impl LeaseState {
    fn new(name: &str, s: pb::LeaseState) -> Self {
        Self {
            name: name.to_owned(),
            held: s.held,
            holder: (!s.holder.is_empty()).then_some(s.holder),
            epoch: s.epoch,
            remaining: Duration::from_millis(u64::from(s.remaining_ms)),
        }
    }

    /// The lease as a [`LeaseRef`], when the caller holds it.
    #[must_use]
    pub fn lease_ref(&self) -> Option<LeaseRef> {
        match (&self.holder, self.held) {
            (Some(holder), true) => Some(LeaseRef {
                name: self.name.clone(),
                holder: holder.clone(),
                epoch: self.epoch,
            }),
            _ => None,
        }
    }
}

/// A client of the key-value store for one namespace. Cheap to clone;
/// clones share the connections and the known leader.
#[derive(Debug, Clone)]
pub struct KvClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    namespace: String,
    options: KvOptions,
    masters: tokio::sync::Mutex<Masters>,
    /// The leader calls go to, until one of them says otherwise.
    leader: Mutex<Option<Leader>>,
}

impl KvClient {
    /// A client of `namespace` (a framework uses its name) through the
    /// masters at `masters` (`host:port` or URIs); returns once a master
    /// says it leads. The namespace is checked by the master, on the first
    /// call.
    ///
    /// # Errors
    /// [`SdkError::InvalidConfig`] for a bad address list;
    /// [`SdkError::Transport`] when no master leads within
    /// [`KvOptions::retry_for`] (it says what each master answered).
    pub async fn connect(
        masters: Vec<String>,
        namespace: impl Into<String>,
        options: KvOptions,
    ) -> Result<Self, SdkError> {
        let masters = crate::connection::masters(&masters)?;
        let client = Self {
            inner: Arc::new(Inner {
                namespace: namespace.into(),
                options,
                masters: tokio::sync::Mutex::new(masters),
                leader: Mutex::new(None),
            }),
        };
        client.leader(client.deadline()).await?;
        Ok(client)
    }

    /// The namespace this client reads and writes.
    #[must_use]
    pub fn namespace(&self) -> &str {
        &self.inner.namespace
    }

    /// The options it runs with.
    #[must_use]
    pub fn options(&self) -> &KvOptions {
        &self.inner.options
    }

    /// One key; `None` when it does not exist. Linearizable (read through
    /// the leader).
    ///
    /// # Errors
    /// [`ErrorKind::Invalid`] for a bad namespace or key; unavailability
    /// once [`KvOptions::retry_for`] has passed.
    pub async fn get(&self, key: impl Into<String>) -> Result<Option<Entry>, SdkError> {
        let request = pb::KvGetRequest {
            namespace: self.inner.namespace.clone(),
            key: key.into(),
        };
        let answer = self
            .call(Repeat::Safe, self.deadline(), |mut c| {
                let request = request.clone();
                async move { c.get(request).await }
            })
            .await;
        match answer {
            Ok((entry, _)) => Ok(Some(entry.into())),
            Err(f) if f.kind() == ErrorKind::NotFound => Ok(None),
            Err(f) => Err(f.into_inner()),
        }
    }

    /// Every key that starts with `prefix` (`""` for all), in key order,
    /// and the store revision of the last page read.
    ///
    /// The master answers in pages of at most 2 MiB of values, each read at
    /// its own revision: when the keys span several pages and the store
    /// changes meanwhile, the result is not one snapshot. A [`KvWatch`]'s
    /// first [`WatchEvent::Reset`] is one.
    ///
    /// # Errors
    /// As [`KvClient::get`].
    pub async fn list(&self, prefix: impl Into<String>) -> Result<(Vec<Entry>, u64), SdkError> {
        let prefix = prefix.into();
        let deadline = self.deadline();
        let mut entries: Vec<Entry> = Vec::new();
        let mut start_after = String::new();
        loop {
            let request = pb::KvListRequest {
                namespace: self.inner.namespace.clone(),
                prefix: prefix.clone(),
                start_after: start_after.clone(),
                limit: 0,
                keys_only: false,
            };
            let (page, _) = self
                .call(Repeat::Safe, deadline, |mut c| {
                    let request = request.clone();
                    async move { c.list(request).await }
                })
                .await?;
            let last = page.entries.last().map(|e| e.key.clone());
            entries.extend(page.entries.into_iter().map(Entry::from));
            match last {
                Some(key) if page.more => start_after = key,
                _ => return Ok((entries, page.revision)),
            }
        }
    }

    /// Runs a transaction: if every compare holds, every operation, all at
    /// once; otherwise nothing.
    ///
    /// Sent again only when the master certainly did not take it (see the
    /// module docs); a write whose outcome is unknown is not repeated.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when a compare did not hold (the master's
    /// message says which and why; nothing changed);
    /// [`ErrorKind::Invalid`] for bad input (names, sizes, an empty
    /// transaction; nothing changed), and [`SdkError::InvalidRequest`] for
    /// a request larger than a gRPC message may be (not sent); an error
    /// whose [`SdkError::outcome_unknown`] is `true` when the write may or
    /// may not have been applied.
    pub async fn txn(&self, txn: Txn) -> Result<TxnResult, SdkError> {
        let request = txn.into_request(&self.inner.namespace)?;
        let (answer, _) = self
            .call(Repeat::IfNotTaken, self.deadline(), |mut c| {
                let request = request.clone();
                async move { c.txn(request).await }
            })
            .await?;
        Ok(TxnResult::from(answer))
    }

    /// Writes `transactions` in order, each fenced by `lease`: each is a
    /// list of whole puts (`Some(value)`) and deletes (`None`).
    ///
    /// A transaction whose outcome is unknown (the leading master was lost
    /// while it was in flight) is sent again until it is answered, for up
    /// to [`UNKNOWN_OUTCOME_PATIENCE`]: its operations put whole values and
    /// delete keys, so applying it twice leaves what applying it once
    /// does, and its lease compare still fences it.
    ///
    /// # Errors
    /// The [`SdkError`] of a transaction refused (the lease is lost, say)
    /// or whose outcome stays unknown: the caller should stop (fail
    /// closed); the transactions after it are not sent.
    pub async fn write_fenced(
        &self,
        lease: &LeaseRef,
        transactions: Vec<Vec<(String, Option<Vec<u8>>)>>,
    ) -> Result<(), SdkError> {
        for writes in transactions {
            let mut txn = Txn::new().if_lease(lease);
            for (key, value) in writes {
                txn = match value {
                    Some(v) => txn.put(key, v),
                    None => txn.delete(key),
                };
            }
            let deadline = tokio::time::Instant::now() + UNKNOWN_OUTCOME_PATIENCE;
            loop {
                match self.txn(txn.clone()).await {
                    Ok(_) => break,
                    Err(e) if e.outcome_unknown() && tokio::time::Instant::now() < deadline => {
                        tracing::warn!("a state write's outcome is unknown; sending it again: {e}");
                        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
                    }
                    Err(e) => return Err(e),
                }
            }
        }
        Ok(())
    }

    /// Sets `key` to `value`, whatever it was: [`KvClient::txn`] with one
    /// put.
    ///
    /// # Errors
    /// As [`KvClient::txn`].
    pub async fn put(
        &self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Result<TxnResult, SdkError> {
        self.txn(Txn::new().put(key, value)).await
    }

    /// Creates `key` with `value` if it does not exist:
    /// [`KvClient::txn`] with [`Txn::if_absent`] and one put. Safe to
    /// repeat after an unknown outcome: a repetition fails with
    /// [`ErrorKind::Conflict`] if the first one was applied.
    ///
    /// # Errors
    /// As [`KvClient::txn`]; [`ErrorKind::Conflict`] when the key exists.
    pub async fn create(
        &self,
        key: impl Into<String>,
        value: impl Into<Vec<u8>>,
    ) -> Result<TxnResult, SdkError> {
        let key = key.into();
        self.txn(Txn::new().if_absent(key.clone()).put(key, value))
            .await
    }

    /// Deletes `key` (nothing if it does not exist).
    ///
    /// # Errors
    /// As [`KvClient::txn`].
    pub async fn delete(&self, key: impl Into<String>) -> Result<TxnResult, SdkError> {
        self.txn(Txn::new().delete(key)).await
    }

    /// Takes lease `name` for `holder` with time to live `ttl` (whole
    /// seconds, 1 to 300), or renews it if `holder` holds it already;
    /// otherwise says who holds it ([`LeaseState::held`] `false`: not an
    /// error). Retried on the new leader after a failover: a repeated
    /// acquire by the same holder is a renewal.
    ///
    /// Most callers want [`Lease`], which keeps the lease.
    ///
    /// # Errors
    /// [`SdkError::InvalidRequest`] for a `ttl` that is not whole seconds;
    /// [`ErrorKind::Invalid`] for bad names or a time to live out of range.
    pub async fn acquire(
        &self,
        name: impl Into<String>,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Result<LeaseState, SdkError> {
        self.acquire_until(&name.into(), &holder.into(), ttl, self.deadline())
            .await
    }

    pub(crate) async fn acquire_until(
        &self,
        name: &str,
        holder: &str,
        ttl: Duration,
        deadline: Instant,
    ) -> Result<LeaseState, SdkError> {
        let request = pb::AcquireLeaseRequest {
            namespace: self.inner.namespace.clone(),
            name: name.to_owned(),
            holder: holder.to_owned(),
            ttl_seconds: ttl_seconds(ttl)?,
        };
        let (state, _) = self
            .call(Repeat::Safe, deadline, |mut c| {
                let request = request.clone();
                async move { c.acquire_lease(request).await }
            })
            .await?;
        Ok(LeaseState::new(name, state))
    }

    /// Renews a held lease for its whole time to live.
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when `lease`'s holder no longer holds it at
    /// that epoch (it expired, or someone else has it): stop acting as
    /// its holder.
    pub async fn keep_alive(&self, lease: &LeaseRef) -> Result<LeaseState, SdkError> {
        self.keep_alive_until(lease, self.deadline()).await
    }

    pub(crate) async fn keep_alive_until(
        &self,
        lease: &LeaseRef,
        deadline: Instant,
    ) -> Result<LeaseState, SdkError> {
        let request = self.lease_request(lease);
        let (state, _) = self
            .call(Repeat::Safe, deadline, |mut c| {
                let request = request.clone();
                async move { c.keep_alive(request).await }
            })
            .await?;
        Ok(LeaseState::new(&lease.name, state))
    }

    /// Gives a held lease up, so a standby gets it at once rather than
    /// after its time to live. Retried after a failover; a repetition that
    /// finds the lease no longer held at that epoch succeeds (the first
    /// attempt may have taken effect; either way the holder holds it no
    /// more).
    ///
    /// # Errors
    /// [`ErrorKind::Conflict`] when `lease`'s holder did not hold it at
    /// that epoch.
    pub async fn release(&self, lease: &LeaseRef) -> Result<(), SdkError> {
        let request = self.lease_request(lease);
        let answer = self
            .call(Repeat::Safe, self.deadline(), |mut c| {
                let request = request.clone();
                async move { c.release_lease(request).await }
            })
            .await;
        match answer {
            Ok(_) => Ok(()),
            Err(f) if f.kind() == ErrorKind::Conflict && f.repeated() => Ok(()),
            Err(f) => Err(f.into_inner()),
        }
    }

    /// Watches the keys that start with `prefix` (`""` for all) and the
    /// namespace's leases: see [`KvWatch`].
    #[must_use]
    pub fn watch(&self, prefix: impl Into<String>) -> KvWatch {
        watch::start(self.clone(), prefix.into())
    }

    fn lease_request(&self, lease: &LeaseRef) -> pb::LeaseRef {
        pb::LeaseRef {
            namespace: self.inner.namespace.clone(),
            name: lease.name.clone(),
            holder: lease.holder.clone(),
            epoch: lease.epoch,
        }
    }
}

/// A time to live as the wire carries it: whole seconds.
fn ttl_seconds(ttl: Duration) -> Result<u32, SdkError> {
    if ttl.subsec_nanos() != 0 {
        return Err(SdkError::InvalidRequest(format!(
            "a lease's time to live is whole seconds, not {ttl:?}"
        )));
    }
    u32::try_from(ttl.as_secs()).map_err(|_| {
        SdkError::InvalidRequest(format!(
            "a lease's time to live of {} s is out of range",
            ttl.as_secs()
        ))
    })
}

#[cfg(test)]
mod fake;
#[cfg(test)]
mod tests;
