//! The frameworks' key-value store (`registry::kv`): its calls, and the
//! leader's clock of leases.
//!
//! Reads (Get, List, the first pages of a Watch) are operator reads:
//! linearizable through ReadIndex on the leader, or from any master's own
//! registry when the caller accepts a stale read. Writes (transactions,
//! lease grants and releases) are commands, answered once applied.
//!
//! Lease *time* lives here, on the leader, in memory: when each held
//! lease expires unless renewed. A KeepAlive moves that time; it writes
//! nothing. A new leader gives every held lease its full time to live from
//! its takeover (a leader change costs a holder no lease, at the price of
//! a lease outliving a dead holder by up to one time to live more). When a
//! lease's time passes, the leader proposes its revocation; an acquirer
//! that finds it expired before that gets it granted at once. Every
//! master tells its watchers each applied change ([`Action::KvChanged`]).

use super::*;
use crate::registry::kv::{self, KvChange, KvEntry, LeaseRecord, Txn};

/// A key-value call, after the gRPC layer.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KvCall {
    Get {
        namespace: String,
        key: String,
    },
    List(pb::KvListRequest),
    Txn(Txn),
    Acquire {
        namespace: String,
        name: String,
        holder: String,
        ttl_ms: u64,
    },
    KeepAlive(pb::LeaseRef),
    Release(pb::LeaseRef),
    /// The keys with a prefix, whole, and the revision they are at: the
    /// start of a watch.
    WatchStart {
        namespace: String,
        prefix: String,
    },
}

impl KvCall {
    /// Whether the call only reads.
    pub(super) fn is_read(&self) -> bool {
        matches!(
            self,
            Self::Get { .. } | Self::List(_) | Self::WatchStart { .. }
        )
    }
}

/// The answer to a key-value call.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KvReply {
    Entry(pb::KvEntry),
    List(pb::KvListResponse),
    Txn(pb::KvTxnResponse),
    Lease(pb::LeaseState),
    Empty,
    /// The keys of a watch's prefix as of `revision`.
    WatchStart {
        entries: Vec<pb::KvEntry>,
        revision: u64,
    },
}

/// What every master tells its key-value watchers.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum KvBatch {
    /// The changes of one applied command, in order.
    Changes(Vec<KvChange>),
    /// The store was replaced by a snapshot: watchers start over.
    Reset,
}

/// A continuation of a key-value write.
#[derive(Debug)]
pub(super) enum KvThen {
    Written(Caller<OperatorReply>),
    Granted {
        namespace: String,
        name: String,
        holder: String,
        to: Caller<OperatorReply>,
    },
    Released(Caller<OperatorReply>),
}

/// When a held lease expires in the leader's view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct LeaseTimer {
    pub epoch: u64,
    pub expires: Instant,
}

/// Largest List page, in bytes of values, when the caller sets no limit.
const LIST_PAGE_BYTES: usize = 2 * 1024 * 1024;

/// A store entry as the API shows it.
pub(crate) fn entry_view(key: &str, e: &KvEntry, with_value: bool) -> pb::KvEntry {
    pb::KvEntry {
        key: key.to_owned(),
        value: if with_value {
            e.value.clone()
        } else {
            Vec::new()
        },
        version: e.version,
        create_revision: e.create_revision,
        mod_revision: e.mod_revision,
    }
}

fn invalid(e: ApplyError) -> CallError {
    CallError::invalid_argument(e.to_string())
}

impl Core {
    /// Answers a key-value read from this master's registry.
    pub(super) fn kv_read(&self, call: KvCall) -> Result<KvReply, CallError> {
        let store = self.registry.kv();
        match call {
            KvCall::Get { namespace, key } => {
                kv::check_namespace(&namespace).map_err(invalid)?;
                kv::check_key("key", &key, false).map_err(invalid)?;
                store
                    .get(&namespace, &key)
                    .map(|e| KvReply::Entry(entry_view(&key, e, true)))
                    .ok_or_else(|| {
                        CallError::not_found(format!(
                            "no key {} in namespace {}",
                            quoted(&key),
                            quoted(&namespace)
                        ))
                    })
            }
            KvCall::List(req) => {
                kv::check_namespace(&req.namespace).map_err(invalid)?;
                kv::check_key("prefix", &req.prefix, true).map_err(invalid)?;
                kv::check_key("start_after", &req.start_after, true).map_err(invalid)?;
                let limit = if req.limit == 0 {
                    usize::MAX
                } else {
                    req.limit as usize
                };
                let mut entries = Vec::new();
                let mut bytes = 0;
                let mut more = false;
                for (key, e) in store.range(&req.namespace, &req.prefix).filter(|(k, _)| {
                    req.start_after.is_empty() || k.as_str() > req.start_after.as_str()
                }) {
                    let size = if req.keys_only { 0 } else { e.value.len() };
                    if entries.len() >= limit
                        || (!entries.is_empty() && bytes + size > LIST_PAGE_BYTES)
                    {
                        more = true;
                        break;
                    }
                    bytes += size;
                    entries.push(entry_view(key, e, !req.keys_only));
                }
                Ok(KvReply::List(pb::KvListResponse {
                    entries,
                    more,
                    revision: store.revision(),
                }))
            }
            KvCall::WatchStart { namespace, prefix } => {
                kv::check_namespace(&namespace).map_err(invalid)?;
                kv::check_key("prefix", &prefix, true).map_err(invalid)?;
                Ok(KvReply::WatchStart {
                    entries: store
                        .range(&namespace, &prefix)
                        .map(|(k, e)| entry_view(k, e, true))
                        .collect(),
                    revision: store.revision(),
                })
            }
            _ => Err(CallError::internal("not a key-value read")),
        }
    }

    /// Handles a key-value write on the leader.
    pub(super) fn kv_write(&mut self, call: KvCall, to: Caller<OperatorReply>) {
        if let Err(e) = self.kv_write_inner(call, to) {
            self.reply(Reply::Operator { to, result: Err(e) });
        }
    }

    fn kv_write_inner(&mut self, call: KvCall, to: Caller<OperatorReply>) -> Result<(), CallError> {
        match call {
            KvCall::Txn(txn) => {
                self.propose(Command::KvTxn { txn }, Then::Kv(KvThen::Written(to)));
                Ok(())
            }
            KvCall::Acquire {
                namespace,
                name,
                holder,
                ttl_ms,
            } => {
                kv::check_namespace(&namespace).map_err(invalid)?;
                kv::check_key("lease name", &name, false).map_err(invalid)?;
                kv::check_holder(&holder, ttl_ms).map_err(invalid)?;
                let now = self.clock.instant;
                let lease = self.registry.kv().lease(&namespace, &name).cloned();
                let timer = self
                    .lease_timers
                    .get(&(namespace.clone(), name.clone()))
                    .copied();
                let epoch = lease.as_ref().map_or(0, |l| l.epoch);
                match lease.as_ref().and_then(|l| l.holder.as_deref()) {
                    Some(h) if h == holder => {
                        // Held by the caller: a renewal, with the time to
                        // live it asks for now.
                        let expires = now + Duration::from_millis(ttl_ms);
                        self.lease_timers
                            .insert((namespace, name), LeaseTimer { epoch, expires });
                        self.reply_lease(to, Some(&holder), epoch, true, ttl_ms);
                        return Ok(());
                    }
                    Some(h) if timer.is_some_and(|t| t.expires > now) => {
                        let left = timer.map_or(0, |t| remaining_ms(t.expires, now));
                        let h = h.to_owned();
                        self.reply_lease(to, Some(&h), epoch, false, left);
                        return Ok(());
                    }
                    // Free, or held by someone whose time has passed.
                    _ => {}
                }
                self.propose(
                    Command::KvLeaseGrant {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        holder: holder.clone(),
                        ttl_ms,
                        expect_epoch: epoch,
                    },
                    Then::Kv(KvThen::Granted {
                        namespace,
                        name,
                        holder,
                        to,
                    }),
                );
                Ok(())
            }
            KvCall::KeepAlive(r) => {
                let (lease, timer) = self.held_by(&r)?;
                let expires = self.clock.instant + Duration::from_millis(lease.ttl_ms);
                self.lease_timers.insert(
                    (r.namespace.clone(), r.name.clone()),
                    LeaseTimer {
                        epoch: timer.epoch,
                        expires,
                    },
                );
                self.reply_lease(to, Some(&r.holder), r.epoch, true, lease.ttl_ms);
                Ok(())
            }
            KvCall::Release(r) => {
                self.held_by(&r)?;
                self.propose(
                    Command::KvLeaseRevoke {
                        namespace: r.namespace,
                        name: r.name,
                        epoch: r.epoch,
                    },
                    Then::Kv(KvThen::Released(to)),
                );
                Ok(())
            }
            KvCall::Get { .. } | KvCall::List(_) | KvCall::WatchStart { .. } => {
                Err(CallError::internal("a key-value read taken for a write"))
            }
        }
    }

    /// The lease `r` names, if `r`'s holder holds it at `r`'s epoch and its
    /// time has not passed.
    fn held_by(&self, r: &pb::LeaseRef) -> Result<(LeaseRecord, LeaseTimer), CallError> {
        kv::check_namespace(&r.namespace).map_err(invalid)?;
        kv::check_key("lease name", &r.name, false).map_err(invalid)?;
        let lease = self.registry.kv().lease(&r.namespace, &r.name);
        let timer = self
            .lease_timers
            .get(&(r.namespace.clone(), r.name.clone()))
            .copied();
        match (lease, timer) {
            (Some(l), Some(t))
                if l.holder.as_deref() == Some(r.holder.as_str())
                    && l.epoch == r.epoch
                    && t.expires > self.clock.instant =>
            {
                Ok((l.clone(), t))
            }
            (l, _) => {
                let now = match l.and_then(|l| l.holder.as_deref().map(|h| (h, l.epoch))) {
                    Some((h, e)) if h == r.holder && e == r.epoch => "expired".to_string(),
                    Some((h, e)) => format!("held by {} at epoch {e}", quoted(h)),
                    None => "free".to_string(),
                };
                Err(CallError::failed_precondition(format!(
                    "lease {} in namespace {} is not held by {} at epoch {}: it is {now}",
                    quoted(&r.name),
                    quoted(&r.namespace),
                    quoted(&r.holder),
                    r.epoch
                )))
            }
        }
    }

    fn reply_lease(
        &mut self,
        to: Caller<OperatorReply>,
        holder: Option<&str>,
        epoch: u64,
        held: bool,
        remaining_ms: u64,
    ) {
        let state = pb::LeaseState {
            held,
            holder: holder.unwrap_or_default().to_owned(),
            epoch,
            remaining_ms: u32::try_from(remaining_ms).unwrap_or(u32::MAX),
        };
        self.reply(Reply::Operator {
            to,
            result: Ok(OperatorReply::Kv(KvReply::Lease(state))),
        });
    }

    /// Runs a key-value continuation with its command's outcome.
    pub(super) fn kv_resume(&mut self, then: KvThen, result: Result<Effects, ApplyError>) {
        match then {
            KvThen::Written(to) => {
                let result = result
                    .map(|effects| {
                        let written = effects
                            .kv
                            .iter()
                            .filter_map(|c| match c {
                                KvChange::Put { key, entry, .. } => Some(pb::KeyVersion {
                                    key: key.clone(),
                                    version: entry.version,
                                }),
                                _ => None,
                            })
                            .collect();
                        OperatorReply::Kv(KvReply::Txn(pb::KvTxnResponse {
                            revision: self.registry.kv().revision(),
                            written,
                        }))
                    })
                    .map_err(|e| self.status_of(e, CallError::invalid_argument));
                self.reply(Reply::Operator { to, result });
            }
            KvThen::Granted {
                namespace,
                name,
                holder,
                to,
            } => match result {
                Ok(_) => {
                    let (epoch, ttl) = self
                        .registry
                        .kv()
                        .lease(&namespace, &name)
                        .map_or((0, 0), |l| (l.epoch, l.ttl_ms));
                    self.reply_lease(to, Some(&holder), epoch, true, ttl);
                }
                // Someone else was granted it first.
                Err(ApplyError::Conflict(_)) => {
                    let now = self.clock.instant;
                    let lease = self.registry.kv().lease(&namespace, &name).cloned();
                    let left = self
                        .lease_timers
                        .get(&(namespace, name))
                        .map_or(0, |t| remaining_ms(t.expires, now));
                    let (h, epoch) = lease.map_or((None, 0), |l| (l.holder, l.epoch));
                    self.reply_lease(to, h.as_deref(), epoch, false, left);
                }
                Err(e) => {
                    let e = self.status_of(e, CallError::invalid_argument);
                    self.reply(Reply::Operator { to, result: Err(e) });
                }
            },
            KvThen::Released(to) => {
                let result = result
                    .map(|_| OperatorReply::Kv(KvReply::Empty))
                    .map_err(|e| self.status_of(e, CallError::invalid_argument));
                self.reply(Reply::Operator { to, result });
            }
        }
    }

    /// Follows applied key-value changes: every master tells its
    /// watchers; the leader also starts and stops lease clocks.
    pub(super) fn kv_applied(&mut self, changes: &[KvChange]) {
        if changes.is_empty() {
            return;
        }
        if self.leading.is_some() {
            for change in changes {
                if let KvChange::Lease {
                    namespace,
                    name,
                    lease,
                    ..
                } = change
                {
                    let key = (namespace.clone(), name.clone());
                    if lease.holder.is_some() {
                        let expires = self.clock.instant + Duration::from_millis(lease.ttl_ms);
                        self.lease_timers.insert(
                            key,
                            LeaseTimer {
                                epoch: lease.epoch,
                                expires,
                            },
                        );
                    } else {
                        self.lease_timers.remove(&key);
                    }
                }
            }
        }
        self.actions
            .push(Action::KvChanged(Arc::new(KvBatch::Changes(
                changes.to_vec(),
            ))));
    }

    /// A new leader's lease clocks: every held lease gets its full time to
    /// live from now.
    pub(super) fn restart_lease_timers(&mut self) {
        let now = self.clock.instant;
        self.lease_timers = self
            .registry
            .kv()
            .held_leases()
            .map(|(ns, name, l)| {
                (
                    (ns.clone(), name.clone()),
                    LeaseTimer {
                        epoch: l.epoch,
                        expires: now + Duration::from_millis(l.ttl_ms),
                    },
                )
            })
            .collect();
    }

    /// Proposes the revocation of every lease whose time has passed
    /// (once: its clock stops; a failed revocation leaves it to an
    /// acquirer, which finds no clock and gets it granted).
    pub(super) fn expire_leases(&mut self) {
        let now = self.clock.instant;
        let expired: Vec<((String, String), LeaseTimer)> = self
            .lease_timers
            .iter()
            .filter(|(_, t)| t.expires <= now)
            .map(|(k, t)| (k.clone(), *t))
            .collect();
        for ((namespace, name), t) in expired {
            self.lease_timers.remove(&(namespace.clone(), name.clone()));
            info!(namespace, name, epoch = t.epoch, "lease expired");
            self.propose_detached(Command::KvLeaseRevoke {
                namespace,
                name,
                epoch: t.epoch,
            });
        }
    }
}

fn remaining_ms(expires: Instant, now: Instant) -> u64 {
    u64::try_from(expires.saturating_duration_since(now).as_millis()).unwrap_or(u64::MAX)
}

impl Core {
    /// A sender of the key-value store's changes, to subscribe watchers to.
    pub(crate) fn kv_events(&self) -> tokio::sync::broadcast::Sender<Arc<KvBatch>> {
        self.io.kv_events.clone()
    }
}
