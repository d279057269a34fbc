//! Per-app, per-version counters, their snapshots, and interval math.
//!
//! Counters are cumulative for the router's life. The framework takes a
//! [`StatsSnapshot`] now and another later; [`StatsSnapshot::since`] gives
//! the interval between them, from which [`VersionStats::error_rate`] and
//! [`VersionStats::quantile`] answer a canary analysis.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::histogram::{AtomicHistogram, Histogram};

/// Live counters of one version of one app.
#[derive(Debug, Default)]
pub struct VersionCounters {
    pub(crate) requests: AtomicU64,
    pub(crate) responses: [AtomicU64; 5],
    pub(crate) connect_failures: AtomicU64,
    pub(crate) timeouts: AtomicU64,
    pub(crate) resets: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) latency: AtomicHistogram,
    pub(crate) tcp_connections: AtomicU64,
    pub(crate) tcp_connect_failures: AtomicU64,
}

impl VersionCounters {
    /// Counts one response with this status from a backend.
    pub(crate) fn response(&self, status: u16) {
        let class = usize::from(status / 100).clamp(1, 5) - 1;
        self.responses[class].fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> VersionStats {
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        VersionStats {
            requests: load(&self.requests),
            responses: ResponseClasses {
                informational: load(&self.responses[0]),
                success: load(&self.responses[1]),
                redirection: load(&self.responses[2]),
                client_error: load(&self.responses[3]),
                server_error: load(&self.responses[4]),
            },
            connect_failures: load(&self.connect_failures),
            timeouts: load(&self.timeouts),
            resets: load(&self.resets),
            bytes_in: load(&self.bytes_in),
            bytes_out: load(&self.bytes_out),
            latency: self.latency.snapshot(),
            tcp_connections: load(&self.tcp_connections),
            tcp_connect_failures: load(&self.tcp_connect_failures),
        }
    }
}

/// Live counters of one app.
#[derive(Debug, Default)]
pub struct AppCounters {
    versions: Mutex<BTreeMap<String, Arc<VersionCounters>>>,
    pub(crate) client_requests: AtomicU64,
    pub(crate) no_backend: AtomicU64,
    pub(crate) failed: AtomicU64,
    pub(crate) retries: AtomicU64,
}

impl AppCounters {
    /// The counters of one version, created at first use.
    pub(crate) fn version(&self, version: &str) -> Arc<VersionCounters> {
        let mut versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        versions.entry(version.to_owned()).or_default().clone()
    }

    /// A snapshot of every counter of this app.
    pub(crate) fn snapshot(&self, app: &str) -> StatsSnapshot {
        let versions = self.versions.lock().unwrap_or_else(PoisonError::into_inner);
        let load = |c: &AtomicU64| c.load(Ordering::Relaxed);
        StatsSnapshot {
            app: app.to_owned(),
            versions: versions
                .iter()
                .map(|(v, c)| (v.clone(), c.snapshot()))
                .collect(),
            client_requests: load(&self.client_requests),
            no_backend: load(&self.no_backend),
            failed: load(&self.failed),
            retries: load(&self.retries),
        }
    }
}

/// Responses from backends by status class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResponseClasses {
    /// 1xx.
    pub informational: u64,
    /// 2xx.
    pub success: u64,
    /// 3xx.
    pub redirection: u64,
    /// 4xx.
    pub client_error: u64,
    /// 5xx.
    pub server_error: u64,
}

impl ResponseClasses {
    /// `(label, count)` per class, as Prometheus's `code_class` label says it.
    pub fn labelled(&self) -> [(&'static str, u64); 5] {
        [
            ("1xx", self.informational),
            ("2xx", self.success),
            ("3xx", self.redirection),
            ("4xx", self.client_error),
            ("5xx", self.server_error),
        ]
    }

    fn since(&self, e: &ResponseClasses) -> ResponseClasses {
        ResponseClasses {
            informational: self.informational.saturating_sub(e.informational),
            success: self.success.saturating_sub(e.success),
            redirection: self.redirection.saturating_sub(e.redirection),
            client_error: self.client_error.saturating_sub(e.client_error),
            server_error: self.server_error.saturating_sub(e.server_error),
        }
    }

    /// All responses.
    pub fn total(&self) -> u64 {
        self.informational + self.success + self.redirection + self.client_error + self.server_error
    }
}

/// One version's counters at one moment (cumulative).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct VersionStats {
    /// HTTP requests sent (or tried) to this version's instances; a retried
    /// request counts once per try.
    pub requests: u64,
    /// Responses received from its instances.
    pub responses: ResponseClasses,
    /// Tries whose connection to an instance failed before anything was
    /// sent (HTTP and TCP alike are in `tcp_connect_failures` for TCP).
    pub connect_failures: u64,
    /// Requests whose response headers did not come within the upstream
    /// timeout.
    pub timeouts: u64,
    /// Requests sent whose connection broke before a response.
    pub resets: u64,
    /// Bytes from clients to instances (HTTP bodies; TCP streams).
    pub bytes_in: u64,
    /// Bytes from instances to clients.
    pub bytes_out: u64,
    /// Time from sending a request to the end of its response body, for
    /// responses that were received.
    pub latency: Histogram,
    /// TCP connections proxied to this version's instances.
    pub tcp_connections: u64,
    /// TCP connections to its instances that failed to connect.
    pub tcp_connect_failures: u64,
}

impl VersionStats {
    /// Failed requests: 5xx responses, connection failures, timeouts and
    /// broken connections.
    pub fn errors(&self) -> u64 {
        self.responses.server_error + self.connect_failures + self.timeouts + self.resets
    }

    /// `errors / requests`; `None` with no requests.
    pub fn error_rate(&self) -> Option<f64> {
        (self.requests > 0).then(|| self.errors() as f64 / self.requests as f64)
    }

    /// A latency quantile (0 < q ≤ 1), within the histogram's precision.
    pub fn quantile(&self, q: f64) -> Option<Duration> {
        self.latency.quantile(q)
    }

    /// What happened after `earlier`.
    pub fn since(&self, earlier: &VersionStats) -> VersionStats {
        VersionStats {
            requests: self.requests.saturating_sub(earlier.requests),
            responses: self.responses.since(&earlier.responses),
            connect_failures: self
                .connect_failures
                .saturating_sub(earlier.connect_failures),
            timeouts: self.timeouts.saturating_sub(earlier.timeouts),
            resets: self.resets.saturating_sub(earlier.resets),
            bytes_in: self.bytes_in.saturating_sub(earlier.bytes_in),
            bytes_out: self.bytes_out.saturating_sub(earlier.bytes_out),
            latency: self.latency.since(&earlier.latency),
            tcp_connections: self.tcp_connections.saturating_sub(earlier.tcp_connections),
            tcp_connect_failures: self
                .tcp_connect_failures
                .saturating_sub(earlier.tcp_connect_failures),
        }
    }
}

/// An app's counters at one moment (cumulative since the router started).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// The app.
    pub app: String,
    /// Per version.
    pub versions: BTreeMap<String, VersionStats>,
    /// HTTP requests received from clients (each once, however many tries).
    pub client_requests: u64,
    /// Client requests answered 502 because no backend was eligible.
    pub no_backend: u64,
    /// Client requests answered with a 502 or 504 of the router's own
    /// (no backend, every try failed, timeout).
    pub failed: u64,
    /// Tries after the first one.
    pub retries: u64,
}

impl StatsSnapshot {
    /// The interval between `earlier` and this snapshot of the same app; a
    /// version missing from `earlier` counts from zero.
    pub fn since(&self, earlier: &StatsSnapshot) -> StatsSnapshot {
        let zero = VersionStats::default();
        StatsSnapshot {
            app: self.app.clone(),
            versions: self
                .versions
                .iter()
                .map(|(v, now)| {
                    (
                        v.clone(),
                        now.since(earlier.versions.get(v).unwrap_or(&zero)),
                    )
                })
                .collect(),
            client_requests: self.client_requests.saturating_sub(earlier.client_requests),
            no_backend: self.no_backend.saturating_sub(earlier.no_backend),
            failed: self.failed.saturating_sub(earlier.failed),
            retries: self.retries.saturating_sub(earlier.retries),
        }
    }

    /// One version's counters (zero if it never had traffic).
    pub fn version(&self, version: &str) -> VersionStats {
        self.versions.get(version).cloned().unwrap_or_default()
    }
}

/// The interval between two snapshots: `later.since(earlier)`.
pub fn diff(later: &StatsSnapshot, earlier: &StatsSnapshot) -> StatsSnapshot {
    later.since(earlier)
}

#[cfg(test)]
mod tests;
