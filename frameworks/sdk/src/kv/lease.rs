//! Keeping a lease: [`Lease`] takes it (at once, or by waiting for it as a
//! standby does) and [`LeaseGuard`] renews it and says when it is lost.
//!
//! # When a holder stops believing it holds the lease
//!
//! The leader's clock decides when a lease expires: `ttl` after the last
//! grant or renewal *it received* (and a new leader gives every held lease
//! its whole `ttl` again from its takeover). The guard measures the same
//! `ttl` on the holder's own clock from the moment it *sent* the last
//! renewal that succeeded, which is earlier than the leader received it.
//! So when no renewal gets through (the holder is cut off, the masters are
//! electing for too long), the guard says [`LeaseStatus::Lost`] at least
//! one network delay before the leader may consider the lease expired,
//! and the leader gives it to a standby only after that (it then proposes
//! a revocation, or grants it to the next acquirer, through Raft). The
//! margin assumes both clocks run at about the same rate; a clock running
//! fast by `x`% eats `x`% of `ttl`.
//!
//! Losing the lease is only a signal: work the holder started before may
//! still be in flight. Fence every write with [`Txn::if_lease`] so a
//! holder that lost its lease cannot overwrite its successor's state.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

#[cfg(doc)]
use super::Txn;
use super::{KvClient, LeaseRef, LeaseState, ttl_seconds};
use crate::{ErrorKind, SdkError};

/// A pause between attempts of a renewal that failed for a passing
/// reason, at most.
const RENEW_RETRY: Duration = Duration::from_millis(250);

/// Why a [`LeaseGuard`] no longer holds its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LostReason {
    /// The leader said the holder no longer holds it (it expired in the
    /// leader's view, or someone else has it): its message.
    Refused(String),
    /// No renewal succeeded for a whole time to live, measured on this
    /// side (see the module docs): the leader may give it away now.
    Expired,
    /// The holder released it ([`LeaseGuard::release`]).
    Released,
}

/// Whether a [`LeaseGuard`] holds its lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LeaseStatus {
    /// Held: the last renewal succeeded less than a time to live ago.
    Held,
    /// Lost, for good: this guard never holds the lease again. Acquire it
    /// anew (with a new epoch) to hold it again.
    Lost(LostReason),
}

/// The outcome of one attempt to take a lease.
#[derive(Debug)]
pub enum Acquired {
    /// The caller holds it now; the guard keeps it.
    Held(LeaseGuard),
    /// Someone else holds it: who, at which epoch, and for how long
    /// without a renewal.
    HeldBy(LeaseState),
}

/// A lease to take and keep: its name, its holder (an instance name that
/// stays the same across calls) and its time to live.
#[derive(Debug, Clone)]
pub struct Lease {
    client: KvClient,
    name: String,
    holder: String,
    ttl: Duration,
}

impl Lease {
    /// Lease `name` of `client`'s namespace, for `holder`, lasting `ttl`
    /// without a renewal: whole seconds; the master accepts 1 to 300.
    /// Renewals come every `ttl / 3`.
    ///
    /// `holder` names one process, not a role: the master takes an acquire
    /// by the current holder's name as a renewal (same epoch), so two
    /// processes sharing a name would both hold the lease. Add something
    /// unique to the process (a random nonce) to a name people choose.
    ///
    /// # Errors
    /// [`SdkError::InvalidRequest`] when `ttl` is not whole seconds. Names
    /// and the range of `ttl` are the master's to check, on the first
    /// acquire.
    pub fn new(
        client: &KvClient,
        name: impl Into<String>,
        holder: impl Into<String>,
        ttl: Duration,
    ) -> Result<Self, SdkError> {
        ttl_seconds(ttl)?;
        Ok(Self {
            client: client.clone(),
            name: name.into(),
            holder: holder.into(),
            ttl,
        })
    }

    /// Tries once to take the lease (retrying only to reach the leader).
    ///
    /// # Errors
    /// As [`KvClient::acquire`].
    pub async fn try_hold(&self) -> Result<Acquired, SdkError> {
        let sent = Instant::now();
        let deadline = sent + self.client.options().retry_for;
        let state = self
            .client
            .acquire_until(&self.name, &self.holder, self.ttl, deadline)
            .await?;
        match state.lease_ref() {
            Some(lease) if state.holder.as_deref() == Some(self.holder.as_str()) => {
                // The grant was received after `sent`: measuring from it
                // errs on the safe side.
                Ok(Acquired::Held(LeaseGuard::start(
                    self.client.clone(),
                    lease,
                    self.ttl,
                    sent,
                )))
            }
            _ => Ok(Acquired::HeldBy(state)),
        }
    }

    /// Waits until the lease is granted: what a standby instance does. It
    /// asks every `ttl / 3`, so it gets the lease within about `ttl / 3` of
    /// the holder releasing it or the leader revoking it. Passing failures
    /// (no leader, a timeout) are logged and retried.
    ///
    /// # Errors
    /// Only a refusal that repeating cannot change: bad names, a time to
    /// live out of range ([`ErrorKind::Invalid`]), a call the master does
    /// not know.
    pub async fn campaign(&self) -> Result<LeaseGuard, SdkError> {
        loop {
            match self.try_hold().await {
                Ok(Acquired::Held(guard)) => return Ok(guard),
                Ok(Acquired::HeldBy(state)) => tracing::trace!(
                    lease = %self.name,
                    holder = state.holder.as_deref().unwrap_or(""),
                    epoch = state.epoch,
                    "lease held by another; waiting"
                ),
                Err(e)
                    if matches!(
                        e.kind(),
                        ErrorKind::Invalid | ErrorKind::Unsupported | ErrorKind::PermissionDenied
                    ) =>
                {
                    return Err(e);
                }
                Err(e) => {
                    tracing::warn!(lease = %self.name, error = %e, "cannot ask for the lease; asking again")
                }
            }
            tokio::time::sleep(self.ttl / 3).await;
        }
    }
}

/// A held lease, renewed in the background every third of its time to
/// live until it is lost, released or the guard is dropped (then it
/// expires after its time to live, in the leader's view, and the status
/// says [`LostReason::Released`]).
#[derive(Debug)]
pub struct LeaseGuard {
    client: KvClient,
    lease: LeaseRef,
    status: watch::Receiver<LeaseStatus>,
    status_tx: Arc<watch::Sender<LeaseStatus>>,
    renewals: tokio::task::JoinHandle<()>,
}

impl Drop for LeaseGuard {
    fn drop(&mut self) {
        self.stop();
    }
}

impl LeaseGuard {
    fn start(client: KvClient, lease: LeaseRef, ttl: Duration, granted: Instant) -> Self {
        let (tx, status) = watch::channel(LeaseStatus::Held);
        let status_tx = Arc::new(tx);
        let renewals = tokio::spawn(renew(
            client.clone(),
            lease.clone(),
            ttl,
            granted,
            Arc::clone(&status_tx),
        ));
        Self {
            client,
            lease,
            status,
            status_tx,
            renewals,
        }
    }

    /// Stops the renewals; a lease still held counts as released from now.
    fn stop(&self) {
        self.renewals.abort();
        self.status_tx.send_if_modified(|s| {
            let held = *s == LeaseStatus::Held;
            if held {
                *s = LeaseStatus::Lost(LostReason::Released);
            }
            held
        });
    }

    /// The lease, for fenced writes ([`Txn::if_lease`]).
    #[must_use]
    pub fn lease(&self) -> &LeaseRef {
        &self.lease
    }

    /// The epoch the lease was granted at (a fencing token: greater for
    /// every new holder).
    #[must_use]
    pub fn epoch(&self) -> u64 {
        self.lease.epoch
    }

    /// Whether the lease is held now (see the module docs for what "now"
    /// means).
    #[must_use]
    pub fn is_held(&self) -> bool {
        *self.status.borrow() == LeaseStatus::Held
    }

    /// A receiver of the lease's status: [`LeaseStatus::Held`], then
    /// [`LeaseStatus::Lost`] once.
    #[must_use]
    pub fn status(&self) -> watch::Receiver<LeaseStatus> {
        self.status.clone()
    }

    /// Waits until the lease is lost, and says why.
    pub async fn lost(&self) -> LostReason {
        let mut status = self.status.clone();
        let lost = status
            .wait_for(|s| matches!(s, LeaseStatus::Lost(_)))
            .await
            .map(|s| s.clone());
        match lost {
            Ok(LeaseStatus::Lost(why)) => why,
            // Unreachable: the guard holds a sender.
            _ => LostReason::Released,
        }
    }

    /// Stops the renewals and gives the lease up, so a standby gets it
    /// without waiting for it to expire.
    ///
    /// # Errors
    /// As [`KvClient::release`]; the renewals have stopped anyway, so the
    /// lease expires after its time to live at the latest.
    pub async fn release(self) -> Result<(), SdkError> {
        self.stop();
        self.client.release(&self.lease).await
    }
}

/// The renewal loop of a [`LeaseGuard`]: see the module docs.
async fn renew(
    client: KvClient,
    lease: LeaseRef,
    ttl: Duration,
    granted: Instant,
    status: Arc<watch::Sender<LeaseStatus>>,
) {
    let lost = |why: LostReason| {
        tracing::warn!(lease = %lease.name, epoch = lease.epoch, reason = ?why, "lease lost");
        status.send_replace(LeaseStatus::Lost(why));
    };
    // Held until `valid_until` on this side's clock.
    let mut valid_until = granted + ttl;
    let mut next = granted + ttl / 3;
    loop {
        tokio::time::sleep_until(next.min(valid_until)).await;
        let sent = Instant::now();
        if sent >= valid_until {
            return lost(LostReason::Expired);
        }
        let answer =
            tokio::time::timeout_at(valid_until, client.keep_alive_until(&lease, valid_until))
                .await;
        match answer {
            Ok(Ok(_)) => {
                valid_until = sent + ttl;
                next = sent + ttl / 3;
            }
            Ok(Err(e)) if matches!(e.kind(), ErrorKind::Conflict | ErrorKind::Invalid) => {
                return lost(LostReason::Refused(e.to_string()));
            }
            Ok(Err(e)) => {
                tracing::debug!(lease = %lease.name, error = %e, "lease renewal failed; trying again");
                next = Instant::now() + (ttl / 10).min(RENEW_RETRY);
            }
            Err(_) => return lost(LostReason::Expired),
        }
    }
}

#[cfg(test)]
mod tests;
