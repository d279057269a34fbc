//! The secret store's routes (berth's; Metronome reads secrets from DC/OS's
//! secret store, which berth does not have): a job's `run.secrets.NAME.
//! source` names a path here.
//!
//! | route | answer |
//! |---|---|
//! | `GET /v1/secrets` | `{"secrets": [path, ...]}` (never the values) |
//! | `PUT /v1/secrets/{path}` | 204; the body is the value, as is (`text/plain` or no content type) |
//! | `DELETE /v1/secrets/{path}` | 204; 404 for an unknown path |
//!
//! A value is 8 to 4096 bytes without line breaks or NUL (tasks' output
//! is masked for it), refused with 422 otherwise; a path is
//! `/`-separated segments of letters, digits, `.`, `_`, `-`.

use std::sync::Arc;

use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::IntoResponse;
use serde_json::json;

use super::request::{Params, failed, message, reply, unexpected};
use super::{Answer, JobsBackend, MAX_BODY_BYTES, Pairs};
use crate::state::{Op, Outcome};

pub(super) async fn list<B: JobsBackend>(State(b): State<Arc<B>>, Query(q): Pairs) -> Answer {
    Params::new(q, &[])?;
    let paths = b.secret_paths().await.map_err(failed)?;
    Ok(reply(StatusCode::OK, json!({ "secrets": paths })))
}

pub(super) async fn put<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path(path): Path<String>,
    Query(q): Pairs,
    headers: HeaderMap,
    body: Body,
) -> Answer {
    Params::new(q, &[])?;
    let kind = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("text/plain");
    if !kind.starts_with("text/plain") {
        return Err(message(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "a secret's value is sent as text/plain (the body is the value)",
        ));
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| message(StatusCode::PAYLOAD_TOO_LARGE, "the body is too large"))?;
    let value = String::from_utf8(bytes.to_vec())
        .map_err(|_| message(StatusCode::BAD_REQUEST, "a secret's value must be UTF-8"))?;
    done(b.apply(Op::PutSecret { path, value }).await)
}

pub(super) async fn remove<B: JobsBackend>(
    State(b): State<Arc<B>>,
    Path(path): Path<String>,
    Query(q): Pairs,
) -> Answer {
    Params::new(q, &[])?;
    done(b.apply(Op::RemoveSecret(path)).await)
}

fn done(r: Result<Outcome, super::BackendError>) -> Answer {
    match r.map_err(failed)? {
        Outcome::Secret => Ok(StatusCode::NO_CONTENT.into_response()),
        _ => Err(unexpected("a secret's change")),
    }
}
