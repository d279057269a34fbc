//! The router: the control API over listeners, routes and backends.
//!
//! [`Router::apply`] is the only writer. It checks the new table, builds
//! every service's route, swaps the routes in, unroutes the backends that
//! left (they drain), closes the listeners no longer asked for and opens
//! the new ones. Applies run one at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::net::TcpListener;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::backend::BackendState;
use crate::balance::Picker;
use crate::config::RouterConfig;
use crate::error::{RouterError, TableError};
use crate::prometheus::{self, AppMetrics, Gauges};
use crate::route::{ListenerCtx, Route, Serve, Slot};
use crate::stats::{AppCounters, StatsSnapshot};
use crate::table::{self, Backend, BackendKey, ListenerKey, Protocol, Role, RouteTable, Service};
use crate::{admin, http, listener, tcp};

/// How long an apply waits for a closed listener's socket to be released
/// before it binds new ones (a port moving between two listeners).
const CLOSE_WAIT: Duration = Duration::from_secs(1);

/// The state of one listener after an apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ListenerStatus {
    /// Listening on this address.
    Bound(SocketAddr),
    /// The bind failed (this service only; others are unaffected). The next
    /// apply that still asks for it tries again.
    Failed(String),
}

/// The listeners of one service after an apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ServiceStatus {
    /// The service port.
    pub main: ListenerStatus,
    /// The preview port, if the service has one.
    pub preview: Option<ListenerStatus>,
}

/// What an apply did, per app.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ApplyReport {
    /// Per app.
    pub services: BTreeMap<String, ServiceStatus>,
}

/// A backend that left the table and still has requests or connections in
/// flight.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Draining {
    /// The app.
    pub app: String,
    /// The instance.
    pub instance: String,
    /// Its version.
    pub version: String,
    /// Its address.
    pub addr: SocketAddr,
    /// Requests (HTTP) or connections (TCP) still in flight.
    pub in_flight: u64,
}

/// How [`Router::wait_drained`] ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DrainOutcome {
    /// Nothing in flight (or the instance was never routed).
    Drained,
    /// The timeout passed with this much still in flight.
    TimedOut {
        /// Requests or connections still in flight.
        in_flight: u64,
    },
    /// The instance is still in the table: it is not draining.
    StillRouted,
}

/// The router; cheap to clone (all clones are one router).
#[derive(Debug, Clone)]
pub struct Router {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: Arc<RouterConfig>,
    shutdown: CancellationToken,
    tracker: TaskTracker,
    applied: tokio::sync::Mutex<Applied>,
    view: RwLock<View>,
    /// Every backend routed or draining, by key and version (an instance
    /// that came back with another version is another backend).
    backends: Mutex<BTreeMap<(BackendKey, String), Arc<BackendState>>>,
    stats: Mutex<BTreeMap<String, Arc<AppCounters>>>,
    admin_addr: Option<SocketAddr>,
}

#[derive(Debug, Default)]
struct Applied {
    table: RouteTable,
    listeners: BTreeMap<ListenerKey, OpenListener>,
    slots: BTreeMap<String, Arc<Slot>>,
}

#[derive(Debug)]
struct OpenListener {
    bound: SocketAddr,
    close: CancellationToken,
    closed: oneshot::Receiver<()>,
}

/// What the read side of the API shows: the last applied table and report.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct View {
    pub(crate) table: RouteTable,
    pub(crate) report: ApplyReport,
}

impl Router {
    /// Starts a router with an empty table (and its admin endpoint, if the
    /// config names one). When `shutdown` fires, every listener stops
    /// accepting and open connections get `shutdown_grace` to finish; see
    /// [`Router::closed`].
    pub async fn start(
        config: RouterConfig,
        shutdown: CancellationToken,
    ) -> Result<Router, RouterError> {
        let config = config.validate()?;
        let admin = match config.admin_addr {
            Some(addr) => Some(
                TcpListener::bind(addr)
                    .await
                    .map_err(|source| RouterError::AdminBind { addr, source })?,
            ),
            None => None,
        };
        let admin_addr = admin.as_ref().and_then(|l| l.local_addr().ok());
        let router = Router {
            inner: Arc::new(Inner {
                config: Arc::new(config),
                shutdown,
                tracker: TaskTracker::new(),
                applied: tokio::sync::Mutex::default(),
                view: RwLock::default(),
                backends: Mutex::default(),
                stats: Mutex::default(),
                admin_addr,
            }),
        };
        if let Some(listener) = admin {
            let serve = admin::serve(listener, router.clone(), router.inner.shutdown.clone());
            router.inner.tracker.spawn(serve);
        }
        Ok(router)
    }

    /// Replaces the whole table. A table that fails
    /// [`RouteTable::validate`] is refused and nothing changes. Otherwise,
    /// when this returns, new requests and connections follow the new
    /// table; backends that left it get no new traffic and drain. A bind
    /// failure is reported for its service only. Applying the same table
    /// again changes nothing (listeners, ports and balancing state stay).
    pub async fn apply(&self, table: RouteTable) -> Result<ApplyReport, TableError> {
        let inner = &self.inner;
        let default_bind = inner.config.default_bind;
        table.validate(default_bind)?;
        let mut applied = inner.applied.lock().await;
        let open_now: BTreeSet<ListenerKey> = applied.listeners.keys().cloned().collect();
        let diff = table::diff(
            &open_now,
            &applied.table.backend_keys(),
            &table,
            default_bind,
        );

        for service in &table.services {
            let unchanged = applied.table.service(&service.app) == Some(service);
            let slot = applied
                .slots
                .entry(service.app.clone())
                .or_default()
                .clone();
            if unchanged && slot.current().is_some() {
                continue;
            }
            slot.set(Some(Arc::new(self.build_route(service))));
        }
        applied.slots.retain(|app, slot| {
            let keep = table.service(app).is_some();
            if !keep {
                slot.set(None);
            }
            keep
        });
        {
            let backends = self.backends();
            for state in backends.values() {
                if diff.removed.contains(&state.key) {
                    state.unroute();
                }
            }
        }

        let mut closing = Vec::new();
        for key in &diff.close {
            if let Some(open) = applied.listeners.remove(key) {
                open.close.cancel();
                closing.push(open.closed);
            }
        }
        for closed in closing {
            let _ = tokio::time::timeout(CLOSE_WAIT, closed).await;
        }
        let mut failures = BTreeMap::new();
        for key in diff.open {
            match TcpListener::bind(key.addr).await {
                Ok(socket) => {
                    let slot = applied.slots.get(&key.app).cloned().unwrap_or_default();
                    match self.spawn_listener(&key, socket, slot) {
                        Ok(open) => {
                            applied.listeners.insert(key, open);
                        }
                        Err(error) => {
                            failures.insert(key, error.to_string());
                        }
                    }
                }
                Err(error) => {
                    tracing::warn!(app = %key.app, addr = %key.addr, %error, "cannot listen");
                    failures.insert(key, error.to_string());
                }
            }
        }
        self.prune_drained();

        let status = |key: &ListenerKey| match applied.listeners.get(key) {
            Some(open) => ListenerStatus::Bound(open.bound),
            None => ListenerStatus::Failed(
                failures
                    .get(key)
                    .cloned()
                    .unwrap_or_else(|| "not listening".to_owned()),
            ),
        };
        let mut report = ApplyReport::default();
        for service in &table.services {
            let keys = service.listener_keys(default_bind);
            report.services.insert(
                service.app.clone(),
                ServiceStatus {
                    main: status(&keys[0]),
                    preview: keys.get(1).map(status),
                },
            );
        }
        applied.table = table.clone();
        *inner.view.write().unwrap_or_else(PoisonError::into_inner) = View {
            table,
            report: report.clone(),
        };
        Ok(report)
    }

    fn build_route(&self, service: &Service) -> Route {
        let counters = self.app_counters(&service.app);
        let backends: Vec<Arc<BackendState>> = service
            .backends
            .iter()
            .map(|b| self.backend_state(&service.app, b, &counters))
            .collect();
        let versions = service
            .effective_weights()
            .into_iter()
            .map(|(version, weight)| {
                let indices = (0..backends.len())
                    .filter(|&i| backends[i].version == version)
                    .collect();
                (version, weight, indices)
            })
            .collect();
        let picker = Picker::new(versions, self.inner.config.seed);
        let preview = service.preview.as_ref().map(|p| p.version.clone());
        Route::new(preview, backends, picker, counters)
    }

    fn app_counters(&self, app: &str) -> Arc<AppCounters> {
        let mut stats = self.stats_map();
        stats.entry(app.to_owned()).or_default().clone()
    }

    /// The live state of a backend: the one already tracked (routed again
    /// if it was draining), or a new one.
    fn backend_state(
        &self,
        app: &str,
        backend: &Backend,
        counters: &AppCounters,
    ) -> Arc<BackendState> {
        let key = BackendKey {
            app: app.to_owned(),
            instance: backend.instance.clone(),
            addr: backend.addr,
        };
        let mut backends = self.backends();
        // The same instance under another version drains as a backend of
        // its own.
        for (_, old) in backends.range((key.clone(), String::new())..) {
            if old.key != key {
                break;
            }
            if old.version != backend.version {
                old.unroute();
            }
        }
        let state = backends
            .entry((key.clone(), backend.version.clone()))
            .or_insert_with(|| {
                Arc::new(BackendState::new(
                    key,
                    backend.version.clone(),
                    counters.version(&backend.version),
                    self.inner.config.max_idle_per_backend,
                ))
            });
        state.route();
        state.clone()
    }

    fn spawn_listener(
        &self,
        key: &ListenerKey,
        socket: TcpListener,
        slot: Arc<Slot>,
    ) -> std::io::Result<OpenListener> {
        let bound = socket.local_addr()?;
        let close = self.inner.shutdown.child_token();
        let (closed_tx, closed) = oneshot::channel();
        let serve = match key.role {
            Role::Main => Serve::Weighted,
            Role::Preview => Serve::Preview,
        };
        let grace = self.inner.config.shutdown_grace;
        let ctx = Arc::new(ListenerCtx {
            slot,
            serve,
            config: self.inner.config.clone(),
        });
        let protocol = key.protocol;
        let run = listener::run(
            socket,
            close.clone(),
            grace,
            closed_tx,
            move |s, peer, c| {
                let ctx = ctx.clone();
                let connection: Pin<Box<dyn Future<Output = ()> + Send>> = match protocol {
                    Protocol::Http => Box::pin(http::serve_connection(ctx, s, peer, c)),
                    Protocol::Tcp => Box::pin(tcp::serve_connection(ctx, s, peer, c)),
                };
                connection
            },
        );
        self.inner.tracker.spawn(run);
        Ok(OpenListener {
            bound,
            close,
            closed,
        })
    }

    fn backends(&self) -> MutexGuard<'_, BTreeMap<(BackendKey, String), Arc<BackendState>>> {
        self.inner
            .backends
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn stats_map(&self) -> MutexGuard<'_, BTreeMap<String, Arc<AppCounters>>> {
        self.inner
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets backends that left the table and have nothing in flight.
    fn prune_drained(&self) {
        let mut backends = self.backends();
        backends.retain(|_, s| s.is_routed() || s.in_flight() > 0);
    }

    fn tracked(&self, instance: &str) -> Vec<Arc<BackendState>> {
        let backends = self.backends();
        backends
            .values()
            .filter(|s| s.key.instance == instance)
            .cloned()
            .collect()
    }

    /// Where a service port listens, once bound.
    pub fn bound(&self, app: &str) -> Option<SocketAddr> {
        self.bound_as(app, |s| Some(&s.main))
    }

    /// Where a service's preview port listens, once bound.
    pub fn bound_preview(&self, app: &str) -> Option<SocketAddr> {
        self.bound_as(app, |s| s.preview.as_ref())
    }

    fn bound_as(
        &self,
        app: &str,
        pick: impl Fn(&ServiceStatus) -> Option<&ListenerStatus>,
    ) -> Option<SocketAddr> {
        let view = self
            .inner
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner);
        match pick(view.report.services.get(app)?)? {
            ListenerStatus::Bound(addr) => Some(*addr),
            ListenerStatus::Failed(_) => None,
        }
    }

    /// The last applied table.
    pub fn table(&self) -> RouteTable {
        self.view().table
    }

    /// The report of the last apply.
    pub fn report(&self) -> ApplyReport {
        self.view().report
    }

    pub(crate) fn view(&self) -> View {
        self.inner
            .view
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Requests and connections in flight to an instance (over all apps
    /// and addresses it has); 0 for an instance the router does not track.
    pub fn in_flight(&self, instance: &str) -> u64 {
        self.tracked(instance).iter().map(|s| s.in_flight()).sum()
    }

    /// Backends that left the table and are not drained yet.
    pub fn draining(&self) -> Vec<Draining> {
        self.prune_drained();
        let backends = self.backends();
        backends
            .values()
            .filter(|s| !s.is_routed())
            .map(|s| Draining {
                app: s.key.app.clone(),
                instance: s.key.instance.clone(),
                version: s.version.clone(),
                addr: s.key.addr,
                in_flight: s.in_flight(),
            })
            .filter(|d| d.in_flight > 0)
            .collect()
    }

    /// Waits until a removed instance has nothing in flight, or `timeout`.
    pub async fn wait_drained(&self, instance: &str, timeout: Duration) -> DrainOutcome {
        let states = self.tracked(instance);
        if states.iter().any(|s| s.is_routed()) {
            return DrainOutcome::StillRouted;
        }
        let deadline = tokio::time::Instant::now() + timeout;
        let mut left = 0;
        for state in states {
            let remaining = deadline.saturating_duration_since(tokio::time::Instant::now());
            left += state.wait_idle(remaining).await;
        }
        if left == 0 {
            DrainOutcome::Drained
        } else {
            DrainOutcome::TimedOut { in_flight: left }
        }
    }

    /// An app's cumulative counters; `None` for an app never applied.
    pub fn stats(&self, app: &str) -> Option<StatsSnapshot> {
        let stats = self.stats_map();
        stats.get(app).map(|c| c.snapshot(app))
    }

    /// Every app's metrics in the Prometheus text format (what the admin
    /// endpoint's `/metrics` serves).
    pub fn metrics_text(&self) -> String {
        let snapshots: Vec<StatsSnapshot> = {
            let stats = self.stats_map();
            stats.iter().map(|(app, c)| c.snapshot(app)).collect()
        };
        let mut gauges: BTreeMap<(String, String), Gauges> = BTreeMap::new();
        {
            let backends = self.backends();
            for s in backends.values() {
                let g = gauges
                    .entry((s.key.app.clone(), s.version.clone()))
                    .or_default();
                g.in_flight += s.in_flight();
                g.backends += u64::from(s.is_routed());
            }
        }
        let apps: Vec<AppMetrics> = snapshots
            .into_iter()
            .map(|stats| AppMetrics {
                gauges: gauges
                    .range((stats.app.clone(), String::new())..)
                    .take_while(|((app, _), _)| *app == stats.app)
                    .map(|((_, version), g)| (version.clone(), *g))
                    .collect(),
                stats,
            })
            .collect();
        prometheus::render(&apps)
    }

    /// Where the admin endpoint listens, if it does.
    pub fn admin_addr(&self) -> Option<SocketAddr> {
        self.inner.admin_addr
    }

    /// Waits until the router has stopped after its shutdown signal: every
    /// listener closed and its connections finished or cut.
    pub async fn closed(&self) {
        self.inner.shutdown.cancelled().await;
        self.inner.tracker.close();
        self.inner.tracker.wait().await;
    }
}
