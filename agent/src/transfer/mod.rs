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
//!
//! A file server that restarts must not fail the tasks that use it
//! meanwhile: an HTTP attempt that fails in a way that may pass (the
//! connection refused, reset or broken mid-body, the attempt timed out, or
//! an answer 408, 429 or 5xx other than 501 and 505) is tried again after
//! 0.5 s, doubling up to 5 s, for [`Limits::retry_for`] after the first
//! failure (`--transfer-retry`, 5 minutes by default); a definite answer
//! (any other 4xx, a redirect, a file too large) is not retried. A fetch
//! starts again from its first byte into a fresh temporary file, so a
//! partial body never becomes the fetched file; an upload sends the same
//! archive again (PUT is idempotent). `file://` URLs are not retried. The
//! first retry of a transfer is told once in the task's log.
//!
//! An agent with `file_urls` off (`--no-file-urls`) refuses `file://` both
//! ways.
//!
//! Around the task (driven by the agent): the agent prepares the sandbox
//! before fetching (`LaunchSpec::sandbox_prepared` tells the containerizer
//! not to empty it again); the task is `TASK_STARTING` while it fetches; a
//! kill cancels the fetch (`TASK_KILLED`; an extraction stops before its
//! next entry) and a failed fetch ends the task `TASK_FAILED` with reason
//! `FETCH_FAILED` before anything runs. Uploads run after the container
//! exited and its leftovers were destroyed, before a Docker container is
//! removed; their results go into the terminal update's `outputs` and
//! never change the task's state. After an agent restart, a Docker task or
//! a supervised process task that exited meanwhile has its outputs
//! uploaded then; a process task whose exit is unknown has them reported
//! not uploaded ("agent restarted"); a task caught mid-fetch fails with
//! `CONTAINER_RECOVERY_FAILED`.

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
/// First wait before an HTTP attempt is tried again; it doubles up to
/// [`RETRY_MAX`].
const RETRY_FIRST: Duration = Duration::from_millis(500);
/// Longest wait between two attempts.
const RETRY_MAX: Duration = Duration::from_secs(5);
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
    /// How long failed HTTP attempts that may pass are tried again, from
    /// the first failure (zero: never).
    pub(crate) retry_for: Duration,
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

/// Why an HTTP attempt failed, and whether the same attempt may pass later.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Failed {
    /// What went wrong.
    pub(crate) message: String,
    /// Worth trying again (the server or the network may recover).
    pub(crate) transient: bool,
}

impl Failed {
    /// A failure that may pass.
    pub(crate) fn transient(message: impl Into<String>) -> Self {
        Failed {
            message: message.into(),
            transient: true,
        }
    }

    /// A failure the same attempt would meet again.
    pub(crate) fn definite(message: impl Into<String>) -> Self {
        Failed {
            message: message.into(),
            transient: false,
        }
    }
}

/// Whether an HTTP answer may be different later: 408 (request timeout),
/// 429 (too many requests) and every 5xx but 501 (not implemented) and 505
/// (HTTP version not supported).
pub(crate) fn transient_status(status: hyper::StatusCode) -> bool {
    match status.as_u16() {
        408 | 429 => true,
        501 | 505 => false,
        s => (500..600).contains(&s),
    }
}

/// Runs `attempt` (each try bounded by `per_attempt`) until it succeeds,
/// fails definitely, or has failed for `limits.retry_for`; see the module
/// docs. `what` names the transfer in the task's log, where the first
/// failure that is retried is told once.
pub(crate) async fn retrying<T, F, Fut>(
    limits: &Limits,
    sandbox: &Path,
    what: &str,
    per_attempt: Duration,
    mut attempt: F,
) -> Result<T, String>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, Failed>>,
{
    let mut first_failure: Option<std::time::Instant> = None;
    let mut delay = RETRY_FIRST;
    let mut attempts = 0u32;
    loop {
        attempts += 1;
        let failed = match tokio::time::timeout(per_attempt, attempt()).await {
            Ok(Ok(v)) => return Ok(v),
            Ok(Err(f)) => f,
            Err(_) => Failed::transient(format!("timed out after {per_attempt:?}")),
        };
        if !failed.transient {
            return Err(failed.message);
        }
        let since = *first_failure.get_or_insert_with(std::time::Instant::now);
        if since.elapsed() + delay > limits.retry_for {
            return Err(if attempts == 1 {
                failed.message
            } else {
                format!(
                    "{} (gave up after {attempts} attempts in {}s)",
                    failed.message,
                    since.elapsed().as_secs()
                )
            });
        }
        if attempts == 1 {
            log_line(
                sandbox,
                &format!(
                    "{what} failed: {}; trying again for up to {}s",
                    bounded(failed.message.clone()),
                    limits.retry_for.as_secs()
                ),
            )
            .await;
        }
        tracing::debug!(what, attempts, error = %failed.message, "transfer attempt failed; retrying");
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(RETRY_MAX);
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
    fn transient_answers_are_the_ones_that_may_change() {
        for code in [408, 429, 500, 502, 503, 504, 507] {
            let s = hyper::StatusCode::from_u16(code).unwrap();
            assert!(transient_status(s), "{code}");
        }
        for code in [200, 301, 400, 401, 403, 404, 409, 410, 413, 501, 505] {
            let s = hyper::StatusCode::from_u16(code).unwrap();
            assert!(!transient_status(s), "{code}");
        }
    }

    fn limits(retry_for: Duration) -> Limits {
        Limits {
            fetch_max_bytes: 1,
            fetch_timeout: Duration::from_secs(1),
            upload_timeout: Duration::from_secs(1),
            retry_for,
            file_urls: true,
        }
    }

    #[tokio::test]
    async fn transient_failures_are_retried_until_they_pass_or_time_runs_out() {
        let dir = tempfile::tempdir().unwrap();
        let tries = std::cell::Cell::new(0);
        // Passes at the third attempt.
        let r = retrying(
            &limits(Duration::from_secs(30)),
            dir.path(),
            "fetching x",
            Duration::from_secs(1),
            || {
                tries.set(tries.get() + 1);
                let n = tries.get();
                async move {
                    if n < 3 {
                        Err(Failed::transient("connection refused"))
                    } else {
                        Ok(n)
                    }
                }
            },
        )
        .await;
        assert_eq!(r, Ok(3));
        let log = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
        assert_eq!(
            log,
            "berth: fetching x failed: connection refused; trying again for up to 30s\n"
        );

        // A definite failure: one attempt.
        tries.set(0);
        let r: Result<(), _> = retrying(
            &limits(Duration::from_secs(30)),
            dir.path(),
            "y",
            Duration::from_secs(1),
            || {
                tries.set(tries.get() + 1);
                async { Err(Failed::definite("HTTP 403 Forbidden")) }
            },
        )
        .await;
        assert_eq!(r, Err("HTTP 403 Forbidden".to_owned()));
        assert_eq!(tries.get(), 1);

        // Out of time: the last error, and how long it was tried.
        tries.set(0);
        let r: Result<(), _> = retrying(
            &limits(Duration::from_millis(1200)),
            dir.path(),
            "z",
            Duration::from_millis(50),
            || {
                tries.set(tries.get() + 1);
                // Each attempt times out.
                std::future::pending()
            },
        )
        .await;
        let e = r.unwrap_err();
        assert!(e.starts_with("timed out after 50ms (gave up after"), "{e}");
        assert!(tries.get() >= 2, "{}", tries.get());

        // No retries at all when the window is zero.
        tries.set(0);
        let r: Result<(), _> = retrying(
            &limits(Duration::ZERO),
            dir.path(),
            "w",
            Duration::from_secs(1),
            || {
                tries.set(tries.get() + 1);
                async { Err(Failed::transient("HTTP 503 Service Unavailable")) }
            },
        )
        .await;
        assert_eq!(r, Err("HTTP 503 Service Unavailable".to_owned()));
        assert_eq!(tries.get(), 1);
    }

    #[test]
    fn errors_are_bounded_and_urls_lose_their_query() {
        assert_eq!(bounded("short".into()), "short");
        let long = bounded("é".repeat(MAX_ERROR_LEN));
        assert!(long.len() <= MAX_ERROR_LEN + 3 && long.ends_with("..."));
        assert_eq!(shown_url("http://h/a?token=s3cret"), "http://h/a");
        assert_eq!(shown_url("file:///x"), "file:///x");
    }
}
