//! Header rewriting for the HTTP proxy, with no IO.

use std::net::SocketAddr;

use http::header::{self, HeaderMap, HeaderName, HeaderValue};

/// Headers that belong to one connection, never forwarded (RFC 9110 7.6.1).
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-connection",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
    "proxy-authorization",
];

/// Removes the hop-by-hop headers, including those the `Connection` header
/// names.
pub fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
    headers.remove(header::PROXY_AUTHENTICATE);
}

/// Adds the client's address to `X-Forwarded-For` and `Forwarded`, and sets
/// `X-Forwarded-Proto` (always `http`: the router terminates plain HTTP, so
/// a client's own value is not believed) and `X-Forwarded-Host` (the
/// request's `Host`).
pub fn add_forwarded(headers: &mut HeaderMap, client: SocketAddr) {
    let ip = client.ip().to_string();
    append_list(headers, HeaderName::from_static("x-forwarded-for"), &ip);
    let host = headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
        .map(str::to_owned);
    let node = if client.is_ipv6() {
        format!("\"[{ip}]\"")
    } else {
        ip
    };
    let mut element = format!("for={node};proto=http");
    if let Some(host) = &host
        && host.bytes().all(|b| b.is_ascii_graphic() && b != b'"')
    {
        element.push_str(&format!(";host=\"{host}\""));
    }
    append_list(headers, header::FORWARDED, &element);
    headers.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    let forwarded_host = HeaderName::from_static("x-forwarded-host");
    match host.and_then(|h| HeaderValue::from_str(&h).ok()) {
        Some(host) => headers.insert(forwarded_host, host),
        None => headers.remove(forwarded_host),
    };
}

/// Appends `value` to a comma-separated list header (all its lines joined).
fn append_list(headers: &mut HeaderMap, name: HeaderName, value: &str) {
    let existing: Vec<&str> = headers
        .get_all(&name)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .collect();
    let joined = if existing.is_empty() {
        value.to_owned()
    } else {
        format!("{}, {value}", existing.join(", "))
    };
    if let Ok(v) = HeaderValue::from_str(&joined) {
        headers.insert(name, v);
    }
}

/// Whether a request with this method may be sent again after its
/// connection broke before any response: safe methods (RFC 9110 9.2.1)
/// without a body only.
pub fn replayable(method: &http::Method, body_empty: bool) -> bool {
    body_empty
        && matches!(
            *method,
            http::Method::GET | http::Method::HEAD | http::Method::OPTIONS | http::Method::TRACE
        )
}

#[cfg(test)]
#[path = "headers/tests.rs"]
mod tests;
