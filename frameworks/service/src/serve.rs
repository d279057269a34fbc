//! `berth service serve`: the service framework as a process. It takes
//! the active instance's lease in the masters' key-value store (a second
//! instance waits as a standby), reads its state back, serves Marathon's
//! HTTP API and the gRPC API (`berth.service.v1`) on one port, runs the
//! router when asked to, and runs the framework on the SDK runtime until
//! it is stopped or loses the lease.

use std::net::SocketAddr;
use std::time::Duration;

use berth_sdk::FrameworkConfig;
use berth_sdk::kv::{KvClient, KvOptions, Lease};
use berth_sdk::runtime::Runtime;
use tokio::sync::mpsc;

pub mod edge;
pub mod framework;
pub mod handle;
pub mod standalone;
pub mod store;

use framework::{Parts, ServiceFramework};
use handle::Handle;

/// How long the framework's tasks outlive it before the master kills them
/// (Marathon's default failover timeout is a week).
pub const FAILOVER_TIMEOUT: Duration = Duration::from_secs(7 * 24 * 3600);
/// The active instance's lease time to live.
pub const LEASE_TTL: Duration = Duration::from_secs(10);

/// How `berth service serve` runs.
#[derive(Debug, Clone)]
pub struct ServeConfig {
    /// The masters.
    pub masters: Vec<String>,
    /// The framework's name (registered with the masters).
    pub name: String,
    /// This instance's name in the lease (unique among the framework's
    /// instances).
    pub holder: String,
    /// The HTTP API's listener address.
    pub listen: SocketAddr,
    /// The router's settings, when this process runs the router.
    pub router: Option<berth_router::RouterConfig>,
}

/// Why the framework stopped.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The key-value store or the masters could not be reached.
    #[error("{0}")]
    Sdk(#[from] berth_sdk::SdkError),
    /// The stored state does not load, or a write failed.
    #[error("{0}")]
    Store(#[from] store::StoreError),
    /// The runtime stopped with an error.
    #[error("{0}")]
    Runtime(#[from] berth_sdk::RuntimeError),
    /// The API's or the router's listener.
    #[error("{0}")]
    Listen(String),
}

/// Runs the framework until `shutdown` or a failure.
///
/// # Errors
/// [`ServeError`] for what stopped it.
pub async fn serve(
    config: ServeConfig,
    listener: tokio::net::TcpListener,
    shutdown: impl std::future::Future<Output = ()> + Send,
) -> Result<(), ServeError> {
    let mut shutdown = std::pin::pin!(shutdown);
    let kv = KvClient::connect(
        config.masters.clone(),
        store::NAMESPACE,
        KvOptions::default(),
    )
    .await?;
    // The lease's holder is this process: the instance's name and a nonce,
    // so a process restarted under the same name (while the old one may
    // live on, cut off) is a new holder that waits for the lease and gets
    // a new epoch, never a renewal of the old one's.
    let holder = format!(
        "{}#{:08x}",
        config.holder,
        uuid::Uuid::new_v4().as_u128() as u32
    );
    let lease = Lease::new(&kv, store::LEASE, &holder, LEASE_TTL)?;
    // The API answers from the start: 503 while this instance is a
    // standby, the framework's API once it is the active one.
    let (api_tx, api_rx) = tokio::sync::watch::channel(None);
    let api = tokio::spawn(async move {
        if let Err(e) = axum::serve(listener, front(api_rx)).await {
            tracing::error!("the HTTP API stopped: {e}");
        }
    });
    let _stop_api = AbortOnDrop(api);
    tracing::info!(%holder, "waiting to be the active instance");
    let guard = tokio::select! {
        g = lease.campaign() => g?,
        () = &mut shutdown => return Ok(()),
    };
    tracing::info!(epoch = guard.epoch(), "active instance");
    let loaded = store::load(&kv).await?;
    let (tx, rx) = mpsc::channel(256);
    let cancel = berth_router::CancellationToken::new();
    let router = match config.router.clone() {
        Some(rc) => Some(
            berth_router::Router::start(rc, cancel.clone())
                .await
                .map_err(|e| ServeError::Listen(e.to_string()))?,
        ),
        None => None,
    };
    if let Some(admin) = router.as_ref().and_then(berth_router::Router::admin_addr) {
        tracing::info!("the router's admin endpoint: http://{admin}");
    }
    let address = Some(config.listen.to_string());
    let handle = std::sync::Arc::new(Handle::new(tx));
    // Marathon's HTTP API and the gRPC API on one port.
    let app = crate::api::router(handle.clone()).merge(crate::api::grpc::router(handle));
    let _ = api_tx.send(Some(app));
    let mut fw_config =
        FrameworkConfig::new(config.name.clone()).failover_timeout(FAILOVER_TIMEOUT);
    if let Some(id) = &loaded.framework_id {
        fw_config = fw_config.framework_id(id.clone());
    }
    let mut framework = ServiceFramework::new(Parts {
        loaded,
        kv: kv.clone(),
        lease: guard.lease().clone(),
        lost: guard.status(),
        masters: config.masters.clone(),
        router,
        requests: rx,
        address,
    });
    let runtime = Runtime::new(config.masters.clone(), fw_config);
    let result = tokio::select! {
        r = runtime.run(&mut framework) => r.map(|_| ()).map_err(ServeError::from),
        () = &mut shutdown => Ok(()),
    };
    let _ = api_tx.send(None);
    cancel.cancel();
    if let Err(e) = guard.release().await {
        tracing::debug!("releasing the lease: {e}");
    }
    result
}

/// The API's front: each request goes to the framework's API once this
/// instance is active, and is answered 503 before (a standby) and after.
fn front(api: tokio::sync::watch::Receiver<Option<axum::Router>>) -> axum::Router {
    axum::Router::new().fallback(move |req: axum::extract::Request| {
        let app = api.borrow().clone();
        async move {
            use axum::response::IntoResponse;
            use tower::ServiceExt;
            match app {
                Some(app) => app.oneshot(req).await.into_response(),
                None => (
                    axum::http::StatusCode::SERVICE_UNAVAILABLE,
                    axum::Json(serde_json::json!({
                        "message": "this instance of the service framework is a standby: \
                                    another instance holds the lease and serves the API"
                    })),
                )
                    .into_response(),
            }
        }
    })
}

/// Aborts a task when dropped (the API's server, on every way out).
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
