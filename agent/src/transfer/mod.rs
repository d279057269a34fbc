//! The agent's file transfers: the fetcher (a task's `CommandInfo.uris`,
//! downloaded into its sandbox before the command starts, as Mesos's
//! fetcher does) and the uploader (a task's `TaskInfo.outputs`, archived
//! and uploaded after the command exits, as GitLab's runner uploads
//! artifacts). The agent does both, so a task's image needs no HTTP client,
//! and both work the same for process and Docker tasks (a Docker task's
//! sandbox is a host directory mounted into the container).
//!
//! Schemes: `http://` (plain HTTP/1.1 through hyper; GET to fetch, PUT to
//! upload) and `file://` (a path on the agent host). What they accept is
//! checked by [`berth_proto::transfer`], on the master and again here.
//! Progress and failures are written as `berth: ...` lines to the sandbox's
//! `stderr`, so the user sees them in the task's log.

pub(crate) mod archive;
mod fetch;
mod upload;

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::UnsyncBoxBody;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use tokio::io::AsyncWriteExt;

pub(crate) use fetch::fetch_all;
pub(crate) use upload::{not_uploaded, upload_all, wanted};

/// Request bodies of the HTTP client.
type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// How long connecting to an HTTP server may take (within the overall
/// transfer timeout).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest error text put in a status update.
const MAX_ERROR_LEN: usize = 1024;

/// Limits of the transfers (from the agent's configuration).
#[derive(Debug, Clone, Copy)]
pub(crate) struct Limits {
    /// Largest file one URI may download, and the most one archive may
    /// unpack to.
    pub(crate) fetch_max_bytes: u64,
    /// Time one URI may take, download and extraction.
    pub(crate) fetch_timeout: Duration,
    /// Time one output may take, archive and upload.
    pub(crate) upload_timeout: Duration,
    /// Whether `file://` URLs (paths of the agent host) may be fetched from
    /// and uploaded to.
    pub(crate) file_urls: bool,
}

/// Why a `file://` URL is refused by an agent that allows none.
pub(crate) const FILE_URLS_REFUSED: &str =
    "this agent does not allow file:// URLs (it runs with --no-file-urls)";

/// The HTTP client and the limits shared by every transfer of the agent.
#[derive(Debug, Clone)]
pub(crate) struct Transfers {
    client: Client<HttpConnector, Body>,
    limits: Limits,
}

impl Transfers {
    pub(crate) fn new(limits: Limits) -> Self {
        let mut connector = HttpConnector::new();
        connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
        connector.set_nodelay(true);
        let client = Client::builder(TokioExecutor::new()).build(connector);
        Transfers { client, limits }
    }
}

/// Appends `berth: <line>` to the sandbox's `stderr` (the task's log).
/// Failing to log is itself only logged.
pub(crate) async fn log_line(sandbox: &Path, line: &str) {
    let path = sandbox.join("stderr");
    let result = async {
        let mut f = tokio::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .await?;
        f.write_all(format!("berth: {line}\n").as_bytes()).await?;
        f.flush().await
    }
    .await;
    if let Err(e) = result {
        tracing::warn!(path = %path.display(), error = %e, "cannot write to the task's log");
    }
}

/// `s` cut to [`MAX_ERROR_LEN`] bytes (on a character boundary).
fn bounded(mut s: String) -> String {
    if s.len() > MAX_ERROR_LEN {
        let mut end = MAX_ERROR_LEN;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str("...");
    }
    s
}

/// A URL as shown in logs and messages: without its query string (which
/// may carry a token).
fn shown_url(url: &str) -> &str {
    url.split_once('?').map_or(url, |(u, _)| u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_are_bounded_and_urls_lose_their_query() {
        assert_eq!(bounded("short".into()), "short");
        let long = bounded("é".repeat(MAX_ERROR_LEN));
        assert!(long.len() <= MAX_ERROR_LEN + 3 && long.ends_with("..."));
        assert_eq!(shown_url("http://h/a?token=s3cret"), "http://h/a");
        assert_eq!(shown_url("file:///x"), "file:///x");
    }
}
