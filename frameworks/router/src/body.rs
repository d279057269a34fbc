//! Bodies the proxy passes on: the boxed body type, and the response body
//! that ends a request's accounting when its last byte is through.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};
use std::time::Instant;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::client::conn::http1::SendRequest;

use crate::backend::{BackendState, InFlight};

/// Every body the proxy sends, to clients and to backends.
pub(crate) type ProxyBody = UnsyncBoxBody<Bytes, hyper::Error>;

/// A short fixed body.
pub(crate) fn text(message: &'static str) -> ProxyBody {
    Full::new(Bytes::from_static(message.as_bytes()))
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// An empty body.
pub(crate) fn empty() -> ProxyBody {
    http_body_util::Empty::new()
        .map_err(|never| match never {})
        .boxed_unsync()
}

/// A client's request body, counted into its version's `bytes_in`.
pub(crate) fn counted_request(body: ProxyBody, backend: &BackendState) -> ProxyBody {
    let counters = backend.counters.clone();
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            counters
                .bytes_in
                .fetch_add(data.len() as u64, Ordering::Relaxed);
        }
        frame
    })
    .boxed_unsync()
}

/// A backend's response body on its way to the client. While it streams
/// the request stays in flight; at its end the latency is recorded and the
/// connection goes back to the pool. Dropped early (the client went away)
/// or broken, the connection is closed instead.
pub(crate) struct Tracked {
    inner: Incoming,
    backend: Arc<BackendState>,
    finish: Option<(InFlight, SendRequest<ProxyBody>)>,
    start: Instant,
}

impl std::fmt::Debug for Tracked {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tracked")
            .field("backend", &self.backend.key)
            .finish_non_exhaustive()
    }
}

impl Tracked {
    pub(crate) fn new(
        inner: Incoming,
        backend: Arc<BackendState>,
        guard: InFlight,
        sender: SendRequest<ProxyBody>,
        start: Instant,
    ) -> Tracked {
        let mut tracked = Tracked {
            inner,
            backend,
            finish: Some((guard, sender)),
            start,
        };
        if tracked.inner.is_end_stream() {
            tracked.complete();
        }
        tracked
    }

    fn complete(&mut self) {
        if let Some((guard, sender)) = self.finish.take() {
            self.backend.counters.latency.record(self.start.elapsed());
            self.backend.checkin(sender);
            drop(guard);
        }
    }
}

impl Body for Tracked {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = &mut *self;
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.backend
                        .counters
                        .bytes_out
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if this.inner.is_end_stream() {
                    this.complete();
                }
            }
            Poll::Ready(None) => this.complete(),
            Poll::Ready(Some(Err(_))) => {
                this.backend.counters.resets.fetch_add(1, Ordering::Relaxed);
                this.finish = None;
            }
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}
