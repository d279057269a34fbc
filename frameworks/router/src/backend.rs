//! The router's live state of one backend: requests in flight, whether the
//! table still routes to it, and its idle keep-alive connections.
//!
//! A request takes an [`InFlight`] guard *before* it checks that the backend
//! is still routed, and [`BackendState::unroute`] clears the flag *before*
//! it reads the count; so when a removal sees zero in flight, no request can
//! start on the backend afterwards.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::sync::Notify;

use crate::body::ProxyBody;
use crate::stats::VersionCounters;
use crate::table::BackendKey;

/// How long a pooled connection may take to be ready for its next request
/// (it is once the connection task has seen the previous response end).
const POOL_READY_WAIT: Duration = Duration::from_millis(100);

/// One backend as the router tracks it, across table versions.
#[derive(Debug)]
pub(crate) struct BackendState {
    pub(crate) key: BackendKey,
    pub(crate) version: String,
    pub(crate) counters: Arc<VersionCounters>,
    in_flight: AtomicU64,
    routed: AtomicBool,
    drained: Notify,
    idle: Mutex<Vec<SendRequest<ProxyBody>>>,
    max_idle: usize,
}

/// A request or TCP connection counted as in flight on a backend until
/// dropped.
#[derive(Debug)]
pub(crate) struct InFlight {
    backend: Arc<BackendState>,
}

impl Drop for InFlight {
    fn drop(&mut self) {
        let before = self.backend.in_flight.fetch_sub(1, Ordering::SeqCst);
        if before == 1 && !self.backend.is_routed() {
            self.backend.drained.notify_waiters();
        }
    }
}

impl BackendState {
    pub(crate) fn new(
        key: BackendKey,
        version: String,
        counters: Arc<VersionCounters>,
        max_idle: usize,
    ) -> BackendState {
        BackendState {
            key,
            version,
            counters,
            in_flight: AtomicU64::new(0),
            routed: AtomicBool::new(true),
            drained: Notify::new(),
            idle: Mutex::new(Vec::new()),
            max_idle,
        }
    }

    /// Counts a new request or connection; `None` if the backend left the
    /// table (the caller picks another).
    pub(crate) fn acquire(self: &Arc<Self>) -> Option<InFlight> {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        let guard = InFlight {
            backend: self.clone(),
        };
        self.is_routed().then_some(guard)
    }

    pub(crate) fn in_flight(&self) -> u64 {
        self.in_flight.load(Ordering::SeqCst)
    }

    pub(crate) fn is_routed(&self) -> bool {
        self.routed.load(Ordering::SeqCst)
    }

    /// The table routes to this backend (again).
    pub(crate) fn route(&self) {
        self.routed.store(true, Ordering::SeqCst);
    }

    /// The backend left the table: no new traffic; its idle connections
    /// close now, busy ones when their response ends.
    pub(crate) fn unroute(&self) {
        self.routed.store(false, Ordering::SeqCst);
        self.idle_pool().clear();
        if self.in_flight() == 0 {
            self.drained.notify_waiters();
        }
    }

    /// Waits until nothing is in flight, or `timeout`; returns what is
    /// still in flight.
    pub(crate) async fn wait_idle(&self, timeout: Duration) -> u64 {
        let wait = async {
            loop {
                let notified = self.drained.notified();
                tokio::pin!(notified);
                notified.as_mut().enable();
                if self.in_flight() == 0 {
                    return;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(timeout, wait).await;
        self.in_flight()
    }

    /// An idle keep-alive connection ready for a request, if one is pooled.
    /// A connection not ready within [`POOL_READY_WAIT`] is closed.
    pub(crate) async fn checkout(&self) -> Option<SendRequest<ProxyBody>> {
        loop {
            let mut sender = self.idle_pool().pop()?;
            if sender.is_closed() {
                continue;
            }
            if let Ok(Ok(())) = tokio::time::timeout(POOL_READY_WAIT, sender.ready()).await {
                return Some(sender);
            }
        }
    }

    /// Returns a connection whose response is complete to the pool (or
    /// drops it, which closes it, when the backend left the table or the
    /// pool is full).
    pub(crate) fn checkin(&self, sender: SendRequest<ProxyBody>) {
        if !self.is_routed() || sender.is_closed() {
            return;
        }
        let mut idle = self.idle_pool();
        if idle.len() < self.max_idle {
            idle.push(sender);
        }
    }

    /// How many idle connections are pooled.
    #[cfg(test)]
    pub(crate) fn idle_count(&self) -> usize {
        self.idle_pool().len()
    }

    fn idle_pool(&self) -> std::sync::MutexGuard<'_, Vec<SendRequest<ProxyBody>>> {
        self.idle.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests;
