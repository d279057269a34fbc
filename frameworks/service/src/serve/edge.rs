//! Standalone routers (`berth router`), the framework's side and the
//! records they share through the key-value store (namespace
//! [`super::store::NAMESPACE`]).
//!
//! - The active instance publishes its route table under [`ROUTES_KEY`]
//!   (JSON of [`RouteTable`]), fenced by its lease, only when it changed
//!   ([`Edge::publish`]). Right after a takeover it holds back, for up to
//!   [`TAKEOVER_HOLD`], a table that leaves out an instance of the stored
//!   one that still runs and is not being killed but whose health it does
//!   not know yet: the new instance learns its instances' health from the
//!   agents' status updates, and until then its table would empty the
//!   routers that keep serving the old one.
//! - Every standalone router publishes a [`RouterRecord`] under
//!   [`STATS_PREFIX`]`<name>` every [`PUBLISH_EVERY`] (not fenced: a
//!   router holds no lease): its per-app, per-version counts, errors and
//!   latency histograms, which routes it applied, and what its draining
//!   instances still have in flight.
//! - The framework reads the records every second ([`Edge::start`]);
//!   those younger than [`FRESH_FOR`] (by the routers' wall clocks) count:
//!   their statistics are added to the in-process router's for canary
//!   analysis ([`Sources`], [`interval`]), and a drained instance waits
//!   until a table without it is published and each of them applied it
//!   and has nothing in flight to it ([`Edge::wait_drained`]).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_router::histogram::Histogram;
use berth_router::{RouteTable, Router, StatsSnapshot};
use berth_sdk::kv::{KvClient, LeaseRef, Txn};
use serde::{Deserialize, Serialize};

use crate::deploy::{RouterStats, VersionStats};
use crate::time::Timestamp;

/// The key of the published route table.
pub const ROUTES_KEY: &str = "routes";
/// The prefix of the standalone routers' records.
pub const STATS_PREFIX: &str = "router-stats/";
/// How often a standalone router publishes its record.
pub const PUBLISH_EVERY: Duration = Duration::from_secs(2);
/// How old a record may be and still count.
pub const FRESH_FOR: Duration = Duration::from_secs(6);
/// The largest record a router publishes or the framework reads.
pub const MAX_RECORD_BYTES: usize = 1024 * 1024;
/// How long a new active instance holds back a table with fewer backends
/// than the stored one.
pub const TAKEOVER_HOLD: Duration = Duration::from_secs(15);

/// Milliseconds since the Unix epoch, by this machine's clock.
#[must_use]
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// One version's counts in a record.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Counts {
    /// Requests sent to the version's instances.
    pub requests: u64,
    /// Failed ones (see [`berth_router::VersionStats::errors`]).
    pub errors: u64,
    /// Latency: `(bucket, count)` for the non-empty buckets of a
    /// [`Histogram`].
    pub latency: Vec<(usize, u64)>,
}

impl Counts {
    fn of(v: &berth_router::VersionStats) -> Counts {
        Counts {
            requests: v.requests,
            errors: v.errors(),
            latency: v
                .latency
                .buckets
                .iter()
                .enumerate()
                .filter(|(_, c)| **c > 0)
                .map(|(b, c)| (b, *c))
                .collect(),
        }
    }

    fn histogram(&self) -> Histogram {
        let mut h = Histogram::default();
        for &(bucket, count) in &self.latency {
            if let Some(slot) = h.buckets.get_mut(bucket) {
                *slot += count;
            }
        }
        h
    }
}

/// What a standalone router publishes.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterRecord {
    /// When the router process started (ms since the epoch): a restart
    /// starts its counters from zero.
    pub started_ms: u64,
    /// When the record was made (ms since the epoch).
    pub at_ms: u64,
    /// The version of [`ROUTES_KEY`] it serves (0: none yet).
    pub routes_version: u64,
    /// Per app (the router's service name), per version: cumulative counts.
    pub apps: BTreeMap<String, BTreeMap<String, Counts>>,
    /// Instances that left its table and still have requests in flight.
    pub draining: BTreeMap<String, u64>,
}

impl RouterRecord {
    /// The record of `router` now.
    #[must_use]
    pub fn of(router: &Router, started_ms: u64, routes_version: u64) -> RouterRecord {
        let mut apps = BTreeMap::new();
        for service in router.table().services {
            if let Some(s) = router.stats(&service.app) {
                let versions = s.versions.iter().map(|(v, c)| (v.clone(), Counts::of(c)));
                apps.insert(service.app, versions.collect());
            }
        }
        let mut draining = BTreeMap::new();
        for d in router.draining() {
            *draining.entry(d.instance).or_insert(0) += d.in_flight;
        }
        RouterRecord {
            started_ms,
            at_ms: unix_ms(),
            routes_version,
            apps,
            draining,
        }
    }

    /// Whether it is younger than [`FRESH_FOR`] at `now_ms`.
    #[must_use]
    pub fn fresh(&self, now_ms: u64) -> bool {
        now_ms.saturating_sub(self.at_ms) < FRESH_FOR.as_millis() as u64
    }
}

/// Cumulative statistics of one app from every router that counts: by
/// source (`""` for the in-process router, the record's name for the
/// others), its start and its counts per version.
pub type Sources = BTreeMap<String, (u64, BTreeMap<String, (u64, u64, Histogram)>)>;

/// The statistics of `app` now, from the in-process `router` and the
/// fresh `records`.
#[must_use]
pub fn sources(
    router: Option<&Router>,
    records: &BTreeMap<String, RouterRecord>,
    app: &str,
) -> Sources {
    let mut out = Sources::new();
    if let Some(s) = router.and_then(|r| r.stats(app)) {
        out.insert(String::new(), (0, in_process(&s)));
    }
    for (name, record) in records {
        if let Some(versions) = record.apps.get(app) {
            let versions = versions
                .iter()
                .map(|(v, c)| (v.clone(), (c.requests, c.errors, c.histogram())))
                .collect();
            out.insert(name.clone(), (record.started_ms, versions));
        }
    }
    out
}

fn in_process(s: &StatsSnapshot) -> BTreeMap<String, (u64, u64, Histogram)> {
    s.versions
        .iter()
        .map(|(v, c)| (v.clone(), (c.requests, c.errors(), c.latency.clone())))
        .collect()
}

/// What every source counted after `baseline`, added up by config version
/// (a source that started after the baseline counts from zero).
#[must_use]
pub fn interval(now: &Sources, baseline: &Sources) -> RouterStats {
    let mut sums: BTreeMap<String, (u64, u64, Histogram)> = BTreeMap::new();
    let zero = (0, 0, Histogram::default());
    for (source, (started, versions)) in now {
        let base = baseline.get(source).filter(|(s, _)| s == started);
        for (version, (requests, errors, latency)) in versions {
            let (r0, e0, h0) = base.and_then(|(_, b)| b.get(version)).unwrap_or(&zero);
            let sum = sums.entry(version.clone()).or_default();
            sum.0 += requests.saturating_sub(*r0);
            sum.1 += errors.saturating_sub(*e0);
            sum.2.add(&latency.since(h0));
        }
    }
    sums.into_iter()
        .filter_map(|(v, (requests, errors, latency))| {
            let ts = Timestamp::parse_rfc3339(&v).ok()?;
            let p99 = latency.quantile(0.99);
            Some((
                ts,
                VersionStats {
                    requests,
                    errors,
                    p99,
                },
            ))
        })
        .collect()
}

/// The framework's side: the last published table, and the routers'
/// records as last read.
#[derive(Debug, Clone)]
pub struct Edge {
    records: Arc<Mutex<BTreeMap<String, RouterRecord>>>,
    /// The version of [`ROUTES_KEY`] last written (0: none known).
    version: Arc<AtomicU64>,
    last: Arc<Mutex<Option<RouteTable>>>,
    since: tokio::time::Instant,
    loaded: Arc<AtomicBool>,
    _reader: Arc<AbortOnDrop>,
}

#[derive(Debug)]
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

impl Edge {
    /// Starts reading the routers' records every second.
    #[must_use]
    pub fn start(kv: KvClient) -> Edge {
        let records: Arc<Mutex<BTreeMap<String, RouterRecord>>> = Arc::default();
        let shared = records.clone();
        let reader = tokio::spawn(async move {
            loop {
                match kv.list(STATS_PREFIX).await {
                    Ok((entries, _)) => {
                        let now = unix_ms();
                        let fresh = entries
                            .into_iter()
                            .filter(|e| e.value.len() <= MAX_RECORD_BYTES)
                            .filter_map(|e| {
                                let name = e.key.strip_prefix(STATS_PREFIX)?.to_owned();
                                let r: RouterRecord = serde_json::from_slice(&e.value).ok()?;
                                r.fresh(now).then_some((name, r))
                            })
                            .collect();
                        *shared.lock().unwrap_or_else(PoisonError::into_inner) = fresh;
                    }
                    Err(e) => tracing::debug!("reading the routers' records: {e}"),
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        });
        Edge {
            records,
            version: Arc::default(),
            last: Arc::default(),
            since: tokio::time::Instant::now(),
            loaded: Arc::default(),
            _reader: Arc::new(AbortOnDrop(reader)),
        }
    }

    /// The fresh records as last read.
    #[must_use]
    pub fn records(&self) -> BTreeMap<String, RouterRecord> {
        let now = unix_ms();
        let records = self.records.lock().unwrap_or_else(PoisonError::into_inner);
        records
            .iter()
            .filter(|(_, r)| r.fresh(now))
            .map(|(n, r)| (n.clone(), r.clone()))
            .collect()
    }

    /// Writes `table` under [`ROUTES_KEY`], fenced by `lease`, unless it
    /// is the one last written (or held back, see the module docs).
    ///
    /// # Errors
    /// The store's error; the next call tries again.
    pub async fn publish(
        &self,
        kv: &KvClient,
        lease: &LeaseRef,
        table: &RouteTable,
        settling: impl Fn(&str) -> bool,
    ) -> Result<(), berth_sdk::SdkError> {
        if !self.loaded.load(Ordering::Relaxed) {
            let stored = kv.get(ROUTES_KEY).await?;
            let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(e) = stored {
                *last = serde_json::from_slice(&e.value).ok();
                self.version.store(e.version, Ordering::Relaxed);
            }
            self.loaded.store(true, Ordering::Relaxed);
        }
        {
            let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            if let Some(last) = last.as_ref() {
                if last == table {
                    return Ok(());
                }
                if self.since.elapsed() < TAKEOVER_HOLD && drops_settling(table, last, &settling) {
                    return Ok(());
                }
            }
        }
        let value = serde_json::to_vec(table).map_err(|e| {
            berth_sdk::SdkError::InvalidRequest(format!("the route table as JSON: {e}"))
        })?;
        let result = kv
            .txn(Txn::new().if_lease(lease).put(ROUTES_KEY, value))
            .await;
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        match result {
            Ok(r) => {
                if let Some(v) = r.version_of(ROUTES_KEY) {
                    self.version.store(v, Ordering::Relaxed);
                }
                *last = Some(table.clone());
                Ok(())
            }
            Err(e) => {
                // Unknown whether it was written: write it again next time.
                *last = None;
                Err(e)
            }
        }
    }

    /// Waits until every fresh standalone router applied a table without
    /// `instance` (published, not held back) and has nothing in flight to
    /// it, or until `timeout`. Returns what is left: requests in flight,
    /// plus 1 per router that may still route to it.
    pub async fn wait_drained(&self, instance: &str, timeout: Duration) -> u64 {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let left = self.remote_left(instance);
            if left == 0 || tokio::time::Instant::now() >= deadline {
                return left;
            }
            tokio::time::sleep(Duration::from_millis(250)).await;
        }
    }

    fn remote_left(&self, instance: &str) -> u64 {
        let records = self.records();
        if records.is_empty() {
            return 0;
        }
        let wanted = {
            let last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
            match last.as_ref() {
                Some(t) if !routes_to(t, instance) => self.version.load(Ordering::Relaxed),
                // Not published without it yet (held back, failed, or
                // before the first write).
                _ => return records.len() as u64,
            }
        };
        records
            .values()
            .map(|r| {
                if r.routes_version < wanted {
                    1
                } else {
                    r.draining.get(instance).copied().unwrap_or(0)
                }
            })
            .sum()
    }
}

/// Whether `table` sends traffic to `instance`.
fn routes_to(table: &RouteTable, instance: &str) -> bool {
    table
        .services
        .iter()
        .any(|s| s.backends.iter().any(|b| b.instance == instance))
}

/// Whether `next` leaves out an instance of `last` that is `settling`
/// (running, not being killed, its health not known again yet).
fn drops_settling(next: &RouteTable, last: &RouteTable, settling: impl Fn(&str) -> bool) -> bool {
    last.services.iter().any(|s| {
        s.backends
            .iter()
            .any(|b| settling(&b.instance) && !routes_to(next, &b.instance))
    })
}

#[cfg(test)]
mod tests;
