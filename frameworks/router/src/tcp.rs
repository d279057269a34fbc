//! The TCP proxy of one listener: one backend connection per client
//! connection, bytes copied both ways until either side closes.
//!
//! The backend is chosen as for HTTP; a connection that fails to connect
//! is retried on another backend (up to `max_retries`), since nothing was
//! sent yet. With no backend left the client connection is closed. An open
//! connection counts as in flight on its backend until it ends, so a
//! removed backend drains when its last connection closes.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::route::{ListenerCtx, Tries};

/// Proxies one client connection. `_close` is not watched: a TCP stream has
/// no request boundary to stop at, so an open connection runs until it
/// ends or the listener's grace period cuts it.
pub(crate) async fn serve_connection(
    ctx: Arc<ListenerCtx>,
    mut client: TcpStream,
    _peer: SocketAddr,
    _close: CancellationToken,
) {
    let Some(route) = ctx.slot.current() else {
        return;
    };
    let mut tries = Tries::new(route.clone(), &ctx);
    while let Some((backend, guard)) = tries.next_backend() {
        let connect = TcpStream::connect(backend.key.addr);
        let mut upstream = match tokio::time::timeout(ctx.config.connect_timeout, connect).await {
            Ok(Ok(stream)) => stream,
            _ => {
                backend
                    .counters
                    .tcp_connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                continue;
            }
        };
        let _ = upstream.set_nodelay(true);
        backend
            .counters
            .tcp_connections
            .fetch_add(1, Ordering::Relaxed);
        let copied = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
        if let Ok((to_backend, to_client)) = copied {
            backend
                .counters
                .bytes_in
                .fetch_add(to_backend, Ordering::Relaxed);
            backend
                .counters
                .bytes_out
                .fetch_add(to_client, Ordering::Relaxed);
        }
        drop(guard);
        return;
    }
    route.counters.failed.fetch_add(1, Ordering::Relaxed);
    if tries.count() == 0 {
        route.counters.no_backend.fetch_add(1, Ordering::Relaxed);
    }
}
