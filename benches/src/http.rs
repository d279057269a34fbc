//! A minimal HTTP/1.0 client for the frameworks' HTTP APIs (Marathon's
//! `/v2`, Metronome's `/v1`): one request per connection, the whole
//! answer read to its end (HTTP/1.0, so the server neither keeps the
//! connection nor chunks the body).

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// How long one request may take.
const TIMEOUT: Duration = Duration::from_secs(60);
/// Largest answer read (the app list of 1,000 apps is well under this).
const MAX_ANSWER: u64 = 64 * 1024 * 1024;

/// Sends `method path` with an optional JSON `body`; returns the status
/// and the body.
pub async fn call(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    call_within(TIMEOUT, addr, method, path, body).await
}

/// Like [`call`], giving up after `limit`.
pub async fn call_within(
    limit: Duration,
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    tokio::time::timeout(limit, exchange(addr, method, path, body))
        .await
        .with_context(|| format!("{method} {path}: no answer within {limit:?}"))?
}

async fn exchange(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&serde_json::Value>,
) -> anyhow::Result<(u16, String)> {
    let mut stream = tokio::net::TcpStream::connect(addr)
        .await
        .with_context(|| format!("cannot connect to {addr}"))?;
    let body = body.map(ToString::to_string).unwrap_or_default();
    let request = format!(
        "{method} {path} HTTP/1.0\r\nhost: {addr}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await?;
    let mut answer = Vec::new();
    (&mut stream)
        .take(MAX_ANSWER)
        .read_to_end(&mut answer)
        .await?;
    let text = String::from_utf8_lossy(&answer);
    let Some((head, body)) = text.split_once("\r\n\r\n") else {
        bail!(
            "{method} {path}: an answer without headers ({} bytes)",
            answer.len()
        );
    };
    let status = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse::<u16>().ok())
        .with_context(|| format!("{method} {path}: no status line"))?;
    Ok((status, body.to_owned()))
}

/// Like [`call`], the body parsed as JSON.
pub async fn json(
    addr: SocketAddr,
    method: &str,
    path: &str,
) -> anyhow::Result<(u16, serde_json::Value)> {
    let (status, body) = call(addr, method, path, None).await?;
    let value = serde_json::from_str(&body)
        .with_context(|| format!("{method} {path}: the answer is not JSON"))?;
    Ok((status, value))
}
