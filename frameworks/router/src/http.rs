//! The HTTP/1.1 reverse proxy of one listener.
//!
//! Each request goes to a backend the route chooses. The retry rule, kept
//! simple on purpose:
//! - a try that fails **before the request was sent** (connecting failed or
//!   timed out, or a pooled connection was found closed and hyper handed
//!   the request back) is retried on another backend, whatever the method
//!   and body: the body was not consumed;
//! - a try whose connection broke **after** the request was sent and before
//!   any response is retried only for a safe method (GET, HEAD, OPTIONS,
//!   TRACE) without a body;
//! - a response, even a 5xx, is passed on, never retried; a backend that
//!   sends no response headers within `upstream_timeout` gets the client a
//!   504, not a retry.
//!
//! A retry prefers another backend of the same version, then any version
//! with weight > 0, and there are at most `max_retries` of them. With no
//! backend left the client gets 502.

mod headers;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use http::{HeaderMap, HeaderValue, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body, Incoming};
use hyper::client::conn::http1::SendRequest;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::net::TcpStream;
use tokio_util::sync::CancellationToken;

use crate::backend::BackendState;
use crate::body::{self, ProxyBody, Tracked};
use crate::route::{ListenerCtx, Tries};

pub use headers::{add_forwarded, replayable, strip_hop_by_hop};

/// Serves one client connection until it closes, or until `close` fires
/// and its current request is done.
pub(crate) async fn serve_connection(
    ctx: Arc<ListenerCtx>,
    stream: TcpStream,
    client: SocketAddr,
    close: CancellationToken,
) {
    let service = service_fn(move |req| {
        let ctx = ctx.clone();
        async move { Ok::<_, Infallible>(proxy(&ctx, client, req).await) }
    });
    let conn = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .keep_alive(true)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = close.cancelled() => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

/// A request as it is sent to backends, kept to build each try.
struct Outgoing {
    method: Method,
    uri: Uri,
    headers: HeaderMap,
}

impl Outgoing {
    fn request(&self, body: ProxyBody) -> Request<ProxyBody> {
        let mut req = Request::new(body);
        *req.method_mut() = self.method.clone();
        *req.uri_mut() = self.uri.clone();
        *req.headers_mut() = self.headers.clone();
        *req.version_mut() = Version::HTTP_11;
        req
    }
}

/// How one try on one backend ended.
enum Try {
    Answered(Response<Incoming>, SendRequest<ProxyBody>, Instant),
    /// Nothing was sent; the request comes back for the next try.
    NotSent(Request<ProxyBody>),
    /// The request was sent, the connection broke before a response.
    Reset,
    TimedOut,
}

async fn proxy(
    ctx: &ListenerCtx,
    client: SocketAddr,
    req: Request<Incoming>,
) -> Response<ProxyBody> {
    let Some(route) = ctx.slot.current() else {
        return router_error(StatusCode::BAD_GATEWAY, "no such service\n");
    };
    let counters = &route.counters;
    counters.client_requests.fetch_add(1, Ordering::Relaxed);
    let (mut parts, incoming) = req.into_parts();
    let body_empty = incoming.is_end_stream();
    let replay = replayable(&parts.method, body_empty);
    strip_hop_by_hop(&mut parts.headers);
    add_forwarded(&mut parts.headers, client);
    let outgoing = Outgoing {
        method: parts.method,
        uri: origin_form(&parts.uri),
        headers: parts.headers,
    };
    let mut body = Some(incoming.boxed_unsync());
    let mut tries = Tries::new(route.clone(), ctx);
    while let Some((backend, guard)) = tries.next_backend() {
        let first = tries.count() == 1;
        backend.counters.requests.fetch_add(1, Ordering::Relaxed);
        let next_body = match body.take() {
            Some(b) => b,
            None if replay => body::empty(),
            None => break,
        };
        // Request bytes count against the version of the first try.
        let next_body = if first {
            body::counted_request(next_body, &backend)
        } else {
            next_body
        };
        let mut req = outgoing.request(next_body);
        if !req.headers().contains_key(http::header::HOST)
            && let Ok(host) = HeaderValue::from_str(&backend.key.addr.to_string())
        {
            req.headers_mut().insert(http::header::HOST, host);
        }
        match send(ctx, &backend, req).await {
            Try::Answered(response, sender, start) => {
                return pass_on(ctx, backend, guard, response, sender, start);
            }
            Try::NotSent(req) => {
                backend
                    .counters
                    .connect_failures
                    .fetch_add(1, Ordering::Relaxed);
                body = Some(req.into_body());
            }
            Try::Reset => {
                backend.counters.resets.fetch_add(1, Ordering::Relaxed);
                if !replay {
                    break;
                }
            }
            Try::TimedOut => {
                backend.counters.timeouts.fetch_add(1, Ordering::Relaxed);
                counters.failed.fetch_add(1, Ordering::Relaxed);
                return router_error(StatusCode::GATEWAY_TIMEOUT, "upstream timed out\n");
            }
        }
    }
    counters.failed.fetch_add(1, Ordering::Relaxed);
    if tries.count() == 0 {
        counters.no_backend.fetch_add(1, Ordering::Relaxed);
        return router_error(StatusCode::BAD_GATEWAY, "no backend available\n");
    }
    router_error(StatusCode::BAD_GATEWAY, "upstream failed\n")
}

/// Sends on a pooled connection if one is idle, else on a new one.
async fn send(ctx: &ListenerCtx, backend: &BackendState, mut req: Request<ProxyBody>) -> Try {
    while let Some(sender) = backend.checkout().await {
        match send_on(ctx, sender, req).await {
            Try::NotSent(back) => req = back,
            other => return other,
        }
    }
    let connect = TcpStream::connect(backend.key.addr);
    let stream = match tokio::time::timeout(ctx.config.connect_timeout, connect).await {
        Ok(Ok(stream)) => stream,
        _ => return Try::NotSent(req),
    };
    let _ = stream.set_nodelay(true);
    let Ok((sender, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await
    else {
        return Try::NotSent(req);
    };
    tokio::spawn(async move {
        if let Err(error) = conn.await {
            tracing::debug!(%error, "backend connection ended");
        }
    });
    send_on(ctx, sender, req).await
}

async fn send_on(
    ctx: &ListenerCtx,
    mut sender: SendRequest<ProxyBody>,
    req: Request<ProxyBody>,
) -> Try {
    let start = Instant::now();
    let timeout: Duration = ctx.config.upstream_timeout;
    match tokio::time::timeout(timeout, sender.try_send_request(req)).await {
        Ok(Ok(response)) => Try::Answered(response, sender, start),
        Ok(Err(mut error)) => match error.take_message() {
            Some(req) => Try::NotSent(req),
            None => Try::Reset,
        },
        Err(_) => Try::TimedOut,
    }
}

fn pass_on(
    ctx: &ListenerCtx,
    backend: Arc<BackendState>,
    guard: crate::backend::InFlight,
    response: Response<Incoming>,
    sender: SendRequest<ProxyBody>,
    start: Instant,
) -> Response<ProxyBody> {
    backend.counters.response(response.status().as_u16());
    let (mut parts, incoming) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    if ctx.config.version_header {
        for (name, value) in [
            ("x-berth-version", &backend.version),
            ("x-berth-instance", &backend.key.instance),
        ] {
            if let Ok(value) = HeaderValue::from_str(value) {
                parts.headers.insert(name, value);
            }
        }
    }
    let body = Tracked::new(incoming, backend, guard, sender, start).boxed_unsync();
    Response::from_parts(parts, body)
}

/// The path and query of a URI (a client may send the absolute form).
fn origin_form(uri: &Uri) -> Uri {
    uri.path_and_query()
        .map(|pq| Uri::from(pq.clone()))
        .unwrap_or_else(|| Uri::from_static("/"))
}

/// A response of the router's own: short plain text.
fn router_error(status: StatusCode, message: &'static str) -> Response<ProxyBody> {
    let mut response = Response::new(body::text(message));
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}
