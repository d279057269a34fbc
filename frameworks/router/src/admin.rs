//! The admin endpoint: `/metrics` (Prometheus text), `/healthz`, and
//! `/v1/routes` (the applied table, each listener's status and the
//! backends still draining, as JSON).

use axum::extract::State;
use axum::http::header;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::{Json, Router as Http};
use serde::Serialize;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::router::{ApplyReport, Draining, Router};
use crate::table::RouteTable;

/// The body of `/v1/routes`.
#[derive(Debug, Serialize)]
struct Routes {
    table: RouteTable,
    report: ApplyReport,
    draining: Vec<Draining>,
}

/// Serves the admin endpoint until `shutdown` fires.
pub(crate) async fn serve(listener: TcpListener, router: Router, shutdown: CancellationToken) {
    let app = Http::new()
        .route("/metrics", get(metrics))
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/v1/routes", get(routes))
        .with_state(router);
    let served = axum::serve(listener, app)
        .with_graceful_shutdown(shutdown.cancelled_owned())
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "admin endpoint failed");
    }
}

async fn metrics(State(router): State<Router>) -> impl IntoResponse {
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        router.metrics_text(),
    )
}

async fn routes(State(router): State<Router>) -> Json<impl Serialize> {
    let view = router.view();
    Json(Routes {
        table: view.table,
        report: view.report,
        draining: router.draining(),
    })
}
