//! Reading requests: ids, flags, bodies (size, content type, syntax), and
//! the [`Refusal`] every handler answers a bad request with.

use std::collections::HashMap;

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_scheduler_core::error::quoted;
use serde_json::{Value, json};

use super::{BackendError, MAX_BODY_BYTES};
use crate::app::{AppDefinition, AppId, text};
use crate::error::{OpError, ParseError};

pub(super) fn reply(status: StatusCode, v: Value) -> Response {
    (status, axum::Json(v)).into_response()
}

/// A refused request: its status and JSON body.
#[derive(Debug)]
pub(super) struct Refusal(pub(super) StatusCode, pub(super) Value);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        reply(self.0, self.1)
    }
}

pub(super) fn message(status: StatusCode, m: impl Into<String>) -> Refusal {
    Refusal(status, json!({ "message": m.into() }))
}

pub(super) fn code(status: u16) -> StatusCode {
    StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
}

pub(super) fn failed(e: BackendError) -> Refusal {
    match e {
        BackendError::Op(op) => Refusal(code(op.status()), op.to_marathon_json()),
        BackendError::Unavailable(m) => message(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

pub(super) fn op_failed(e: OpError) -> Refusal {
    failed(BackendError::Op(e))
}

/// The app id of a path (without its leading slash).
pub(super) fn app_id(path: &str) -> Result<AppId, Refusal> {
    AppId::parse(path).map_err(|e| message(StatusCode::BAD_REQUEST, format!("invalid app id: {e}")))
}

/// A `true`/`false` query parameter.
pub(super) fn flag(
    q: &HashMap<String, String>,
    name: &str,
    default: bool,
) -> Result<bool, Refusal> {
    match q.get(name).map(String::as_str) {
        None => Ok(default),
        Some("true") => Ok(true),
        Some("false") => Ok(false),
        Some(other) => Err(message(
            StatusCode::BAD_REQUEST,
            format!(
                "query parameter {name} must be true or false, not {}",
                quoted(other)
            ),
        )),
    }
}

/// The request body as JSON values: size, content type and syntax checked.
pub(super) async fn body_value(headers: &HeaderMap, body: Body) -> Result<Value, Refusal> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).to_string());
    let media = ct.as_deref().map(|c| {
        c.split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
    });
    let yaml = match media.as_deref() {
        None | Some("application/json") => false,
        Some(m) if m.ends_with("+json") => false,
        Some("application/yaml" | "application/x-yaml" | "text/yaml") => true,
        Some(_) => {
            return Err(message(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                format!(
                    "Unsupported Media Type {}: send application/json",
                    quoted(ct.as_deref().unwrap_or(""))
                ),
            ));
        }
    };
    let too_large = || {
        message(
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("request body is larger than {MAX_BODY_BYTES} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > MAX_BODY_BYTES as u64) {
        return Err(too_large());
    }
    let bytes = axum::body::to_bytes(body, MAX_BODY_BYTES)
        .await
        .map_err(|_| too_large())?;
    let Ok(text) = std::str::from_utf8(&bytes) else {
        return Err(Refusal(
            StatusCode::BAD_REQUEST,
            json!({"message": "Invalid JSON", "details": [{"path": "/", "errors": ["the body is not UTF-8"]}]}),
        ));
    };
    let parsed = if yaml {
        text::yaml(text)
    } else {
        text::json(text)
    };
    parsed.map_err(|e| {
        let status = match e {
            ParseError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            _ => StatusCode::BAD_REQUEST,
        };
        Refusal(status, e.to_marathon_json())
    })
}

pub(super) fn definition(v: &Value) -> Result<AppDefinition, Refusal> {
    AppDefinition::from_value(v).map_err(|e| op_failed(e.into()))
}
