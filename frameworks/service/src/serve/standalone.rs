//! `berth router`: a router in a process of its own (one per edge node, as
//! marathon-lb ran), following the route table the active framework
//! instance publishes ([`edge::ROUTES_KEY`]). It keeps serving the last
//! table it applied whatever happens to the framework or the masters: a
//! watch that breaks is started again, a table that does not parse or
//! validate is ignored. Every [`edge::PUBLISH_EVERY`] it publishes its
//! record ([`edge::RouterRecord`]) for the framework's canary analysis and
//! drains.

use std::time::Duration;

use berth_router::{Router, RouterConfig};
use berth_sdk::kv::{Entry, KvClient, KvOptions, WatchEvent};

use super::ServeError;
use super::edge::{self, RouterRecord};

/// How `berth router` runs.
#[derive(Debug, Clone)]
pub struct StandaloneConfig {
    /// The masters.
    pub masters: Vec<String>,
    /// The framework's key-value namespace (its name, `service`).
    pub namespace: String,
    /// This router's name (its record's key).
    pub name: String,
    /// The router's settings.
    pub router: RouterConfig,
}

/// Runs the router until `shutdown`, then stops it gracefully (listeners
/// close, requests in flight get the config's grace).
///
/// # Errors
/// [`ServeError`] when the masters cannot be reached at start or the
/// router cannot start.
pub async fn run(
    config: StandaloneConfig,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let cancel = berth_router::CancellationToken::new();
    let router = Router::start(config.router.clone(), cancel.clone())
        .await
        .map_err(|e| ServeError::Listen(e.to_string()))?;
    if let Some(admin) = router.admin_addr() {
        tracing::info!("the router's admin endpoint: http://{admin}");
    }
    let kv = tokio::select! {
        kv = KvClient::connect(config.masters.clone(), config.namespace.clone(), KvOptions::default()) => kv?,
        () = &mut shutdown => return Ok(()),
    };
    let applied = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let key = format!("{}{}", edge::STATS_PREFIX, config.name);
    let publisher = tokio::spawn(publish(
        kv.clone(),
        key.clone(),
        router.clone(),
        applied.clone(),
    ));
    tokio::select! {
        () = follow(&kv, &router, &applied) => {}
        () = &mut shutdown => {}
    }
    publisher.abort();
    tracing::info!("stopping: closing the listeners");
    cancel.cancel();
    router.closed().await;
    let _ = tokio::time::timeout(Duration::from_secs(2), kv.delete(key)).await;
    Ok(())
}

/// Applies every table published, forever (the watch is started again
/// whenever it ends).
async fn follow(kv: &KvClient, router: &Router, applied: &std::sync::atomic::AtomicU64) {
    loop {
        let mut watch = kv.watch(edge::ROUTES_KEY);
        loop {
            match watch.next().await {
                Ok(WatchEvent::Reset { entries, .. }) => {
                    match entries.into_iter().find(|e| e.key == edge::ROUTES_KEY) {
                        Some(e) => apply(router, &e, applied).await,
                        None => tracing::info!("no route table published yet"),
                    }
                }
                Ok(WatchEvent::Put(e)) if e.key == edge::ROUTES_KEY => {
                    apply(router, &e, applied).await;
                }
                Ok(WatchEvent::Deleted { key, .. }) if key == edge::ROUTES_KEY => {
                    tracing::warn!("the route table was deleted; serving the last one");
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::warn!("watching the route table: {e}; watching again");
                    break;
                }
            }
        }
        tokio::time::sleep(Duration::from_secs(1)).await;
    }
}

async fn apply(router: &Router, entry: &Entry, applied: &std::sync::atomic::AtomicU64) {
    use std::sync::atomic::Ordering;
    if entry.version == applied.load(Ordering::Relaxed) {
        return;
    }
    let table = match serde_json::from_slice(&entry.value) {
        Ok(t) => t,
        Err(e) => {
            tracing::warn!("the published route table does not parse ({e}); serving the last one");
            return;
        }
    };
    match router.apply(table).await {
        Ok(report) => {
            applied.store(entry.version, Ordering::Relaxed);
            tracing::info!(
                version = entry.version,
                services = report.services.len(),
                "applied the route table"
            );
        }
        Err(e) => {
            tracing::warn!("the router refused the published table ({e}); serving the last one")
        }
    }
}

/// Publishes this router's record every [`edge::PUBLISH_EVERY`].
async fn publish(
    kv: KvClient,
    key: String,
    router: Router,
    applied: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let started = edge::unix_ms();
    let mut every = tokio::time::interval(edge::PUBLISH_EVERY);
    every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        every.tick().await;
        let version = applied.load(std::sync::atomic::Ordering::Relaxed);
        let record = RouterRecord::of(&router, started, version);
        let value = match serde_json::to_vec(&record) {
            Ok(v) if v.len() <= edge::MAX_RECORD_BYTES => v,
            Ok(v) => {
                tracing::warn!(
                    bytes = v.len(),
                    "the router's record is too large to publish"
                );
                continue;
            }
            Err(e) => {
                tracing::warn!("the router's record as JSON: {e}");
                continue;
            }
        };
        if let Err(e) = kv.put(key.clone(), value).await {
            tracing::debug!("publishing the router's record: {e}");
        }
    }
}
