//! Reading requests: path ids, query parameters (each route names the
//! ones it takes; any other is refused, so nothing asked for is ignored),
//! `embed`, bodies (size, content type, syntax), and the [`Refusal`] every
//! handler answers a bad request with.

use axum::body::Body;
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use berth_scheduler_core::error::quoted;
use serde_json::{Value, json};

use super::{BackendError, MAX_BODY_BYTES};
use crate::error::Invalid;
use crate::job::{JobId, ParseError};
use crate::state::OpError;

/// `v` as a JSON answer with `status`.
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

/// A refusal `{"message": m}`.
pub(super) fn message(status: StatusCode, m: impl Into<String>) -> Refusal {
    Refusal(
        status,
        json!({ "message": berth_proto::bounded_message(&m.into()) }),
    )
}

/// The answer to a refused operation: 422 with the details, 404, 409.
pub(super) fn op_failed(e: OpError) -> Refusal {
    let status = StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    match &e {
        OpError::Invalid(i) => Refusal(status, i.to_json()),
        OpError::NotFound(m) | OpError::Conflict(m) => message(status, m.as_str()),
    }
}

/// The answer to a backend error (503 when it cannot answer).
pub(super) fn failed(e: BackendError) -> Refusal {
    match e {
        BackendError::Op(op) => op_failed(op),
        BackendError::Unavailable(m) => message(StatusCode::SERVICE_UNAVAILABLE, m),
    }
}

/// A refusal of one field of the body, as Metronome's 422.
pub(super) fn invalid_at(path: &str, m: impl Into<String>) -> Refusal {
    op_failed(OpError::Invalid(Invalid {
        errors: vec![crate::error::FieldError {
            path: path.into(),
            message: m.into(),
        }],
    }))
}

/// The answer of the backend that does not fit the operation (a bug).
pub(super) fn unexpected(what: &str) -> Refusal {
    message(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("the framework answered {what} with something else"),
    )
}

/// A job id from the path (400 when it cannot be one).
pub(super) fn job_id(text: &str) -> Result<JobId, Refusal> {
    JobId::new(text).map_err(|why| {
        message(
            StatusCode::BAD_REQUEST,
            format!("invalid job id {}: {why}", quoted(text)),
        )
    })
}

/// The message of an unknown job (404).
pub(super) fn unknown_job(id: &JobId) -> Refusal {
    op_failed(OpError::NotFound(format!("Job '{id}' does not exist")))
}

/// What a job's JSON embeds (Metronome's `embed`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(super) struct Embed {
    /// `activeRuns`.
    pub(super) active_runs: bool,
    /// `schedules`.
    pub(super) schedules: bool,
    /// `history`: counts, last times and the finished runs kept.
    pub(super) history: bool,
    /// `historySummary`: counts and last times.
    pub(super) history_summary: bool,
}

/// A request's query parameters, checked against the names its route
/// takes.
#[derive(Debug)]
pub(super) struct Params(Vec<(String, String)>);

impl Params {
    /// `pairs`, refused (400) if one is not in `allowed`.
    pub(super) fn new(pairs: Vec<(String, String)>, allowed: &[&str]) -> Result<Params, Refusal> {
        if let Some((k, _)) = pairs.iter().find(|(k, _)| !allowed.contains(&k.as_str())) {
            let takes = if allowed.is_empty() {
                "none".to_owned()
            } else {
                allowed.join(", ")
            };
            return Err(message(
                StatusCode::BAD_REQUEST,
                format!(
                    "unknown query parameter {} (this route takes: {takes})",
                    quoted(k)
                ),
            ));
        }
        Ok(Params(pairs))
    }

    /// A `true`/`false` parameter (`default` when absent).
    pub(super) fn flag(&self, name: &str, default: bool) -> Result<bool, Refusal> {
        let mut value = default;
        for (_, v) in self.0.iter().filter(|(k, _)| k == name) {
            value = match v.as_str() {
                "true" => true,
                "false" => false,
                other => {
                    return Err(message(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "query parameter {name} must be true or false, not {}",
                            quoted(other)
                        ),
                    ));
                }
            };
        }
        Ok(value)
    }

    /// The `embed` values, repeated or comma-separated as Metronome takes
    /// them; an unknown one is refused (400).
    pub(super) fn embed(&self) -> Result<Embed, Refusal> {
        let mut e = Embed::default();
        let values = self.0.iter().filter(|(k, _)| k == "embed");
        for v in values.flat_map(|(_, v)| v.split(',')) {
            match v.trim() {
                "activeRuns" => e.active_runs = true,
                "schedules" => e.schedules = true,
                "history" => e.history = true,
                "historySummary" => e.history_summary = true,
                other => {
                    return Err(message(
                        StatusCode::BAD_REQUEST,
                        format!(
                            "Unknown embed option {}. Valid options are: activeRuns, schedules, history, historySummary",
                            quoted(other)
                        ),
                    ));
                }
            }
        }
        Ok(e)
    }
}

/// The body as text, or `None` when there is none: size, content type
/// (JSON or YAML) and encoding checked. `true` with YAML.
async fn body_text(headers: &HeaderMap, body: Body) -> Result<Option<(String, bool)>, Refusal> {
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
                    "Unsupported Media Type {}: send application/json or application/yaml",
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
    if bytes.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    match String::from_utf8(bytes.to_vec()) {
        Ok(text) => Ok(Some((text, yaml))),
        Err(_) => Err(syntax("JSON", "the body is not UTF-8".into())),
    }
}

/// A 400 for text that does not parse.
fn syntax(format: &str, m: String) -> Refusal {
    Refusal(
        StatusCode::BAD_REQUEST,
        json!({ "message": format!("Invalid {format}"), "details": [{ "path": "/", "errors": [berth_proto::bounded_message(&m)] }] }),
    )
}

/// The body as JSON values (JSON or YAML); `None` when there is none.
pub(super) async fn optional_body(
    headers: &HeaderMap,
    body: Body,
) -> Result<Option<Value>, Refusal> {
    let Some((text, yaml)) = body_text(headers, body).await? else {
        return Ok(None);
    };
    match super::text::parse(&text, yaml) {
        Ok(v) => Ok(Some(v)),
        Err(ParseError::Invalid(e)) => Err(op_failed(OpError::Invalid(e))),
        Err(e @ ParseError::Syntax { format, .. }) => Err(syntax(format, e.to_string())),
    }
}

/// The body as JSON values (JSON or YAML); an empty body is refused.
pub(super) async fn body_value(headers: &HeaderMap, body: Body) -> Result<Value, Refusal> {
    optional_body(headers, body)
        .await?
        .ok_or_else(|| syntax("JSON", "the body is empty: send the definition".into()))
}

/// A write's job id (from the path) and body; the route takes no query
/// parameter.
pub(super) async fn id_and_body(
    id: &str,
    q: Vec<(String, String)>,
    headers: &HeaderMap,
    body: Body,
) -> Result<(JobId, Value), Refusal> {
    let id = job_id(id)?;
    Params::new(q, &[])?;
    Ok((id, body_value(headers, body).await?))
}
