//! The fetcher: downloads a task's URIs into its sandbox before the
//! command starts.
//!
//! Each URI streams into a temporary `.berth-fetch-<i>` file in the sandbox
//! (never whole in memory), at most `fetch_max_bytes`, each attempt within
//! `fetch_timeout`, tried again as [`super`] says for `retry_for` (the
//! temporary file starts empty at every attempt); then it is moved to its
//! place (mode 0755 when `executable`) or unpacked there and removed
//! (`extract`). A missing `optional` URI is skipped. The first failure
//! stops the fetch.

use std::fmt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use berth_proto as pb;
use berth_proto::transfer::{Location, fetch_target, parse_url};
use http_body_util::{BodyExt, Empty};
use hyper::StatusCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::archive::{self, create_dirs_inside};
use super::{Failed, Transfers, bounded, log_line, shown_url};
use crate::error::error_chain;

/// A URI that could not be fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct FetchError {
    /// The URI's url (without its query).
    pub(crate) url: String,
    /// Why.
    pub(crate) message: String,
}

impl fmt::Display for FetchError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "cannot fetch {}: {}", self.url, self.message)
    }
}

/// How a download ended without an error.
enum Downloaded {
    /// This many bytes are in the temporary file.
    Bytes(u64),
    /// The source does not exist (HTTP 404/410, no such file).
    Missing(String),
}

/// A flag set when it is dropped.
#[derive(Debug, Default)]
struct CancelOnDrop(std::sync::Arc<std::sync::atomic::AtomicBool>);

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        self.0.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

/// Fetches `uris` into `sandbox`, in order, logging each to the sandbox's
/// `stderr`. Stops at the first failure.
pub(crate) async fn fetch_all(
    t: &Transfers,
    sandbox: &Path,
    uris: &[pb::FetchUri],
) -> Result<(), FetchError> {
    for (i, uri) in uris.iter().enumerate() {
        let url = shown_url(&uri.url).to_owned();
        let temp = sandbox.join(format!("{}fetch-{i}", archive::AGENT_FILE_PREFIX));
        // Attempts, the waits between them and the extraction.
        let timeout = t.limits.fetch_timeout + t.limits.retry_for;
        let result = match tokio::time::timeout(timeout, fetch_one(t, sandbox, uri, &temp)).await {
            Ok(r) => r,
            Err(_) => Err(format!("timed out after {timeout:?}")),
        };
        // Left over after a failure or a timeout.
        let _ = tokio::fs::remove_file(&temp).await;
        match result {
            Ok(done) => log_line(sandbox, &done).await,
            Err(message) => {
                let message = bounded(message);
                log_line(sandbox, &format!("cannot fetch {url}: {message}")).await;
                return Err(FetchError { url, message });
            }
        }
    }
    Ok(())
}

/// Fetches one URI; returns the line to log.
async fn fetch_one(
    t: &Transfers,
    sandbox: &Path,
    uri: &pb::FetchUri,
    temp: &Path,
) -> Result<String, String> {
    let url = shown_url(&uri.url);
    let location = parse_url(&uri.url)?;
    let target = fetch_target(uri)?;
    let max = t.limits.fetch_max_bytes;
    let downloaded = match &location {
        Location::Http(u) => {
            super::retrying(
                &t.limits,
                sandbox,
                &format!("fetching {url}"),
                t.limits.fetch_timeout,
                || download_http(t, u, temp, max),
            )
            .await?
        }
        Location::File(_) if !t.limits.file_urls => return Err(super::FILE_URLS_REFUSED.into()),
        Location::File(p) => copy_file(p, temp, max).await?,
    };
    let bytes = match downloaded {
        Downloaded::Bytes(n) => n,
        Downloaded::Missing(why) if uri.optional => {
            return Ok(format!("skipped optional {url}: {why}"));
        }
        Downloaded::Missing(why) => return Err(why),
    };
    if uri.extract {
        let (temp, root, dest) = (temp.to_path_buf(), sandbox.to_path_buf(), target.clone());
        // Dropped with this future (a kill, the fetch timeout): the
        // extraction then stops before its next entry.
        let cancel = CancelOnDrop::default();
        let flag = std::sync::Arc::clone(&cancel.0);
        let done =
            tokio::task::spawn_blocking(move || archive::extract(&temp, &root, &dest, max, &flag))
                .await
                .map_err(|e| format!("extraction failed: {e}"))?
                .map_err(|e| format!("cannot extract: {e}"))?;
        let into = if target.as_os_str().is_empty() {
            "the sandbox".to_owned()
        } else {
            target.display().to_string()
        };
        return Ok(format!(
            "fetched {url} ({bytes} bytes) and extracted {} entries ({} bytes) into {into}",
            done.entries, done.bytes
        ));
    }
    place(sandbox, temp, &target, uri.executable).await?;
    Ok(format!(
        "fetched {url} to {} ({bytes} bytes)",
        target.display()
    ))
}

/// Moves the downloaded `temp` to `sandbox/target`.
async fn place(
    sandbox: &Path,
    temp: &Path,
    target: &PathBuf,
    executable: bool,
) -> Result<(), String> {
    if let Some(parent) = target.parent() {
        let (root, parent) = (sandbox.to_path_buf(), parent.to_path_buf());
        tokio::task::spawn_blocking(move || create_dirs_inside(&root, &parent))
            .await
            .map_err(|e| format!("cannot create the directory: {e}"))??;
    }
    let dest = sandbox.join(target);
    match tokio::fs::symlink_metadata(&dest).await {
        Ok(m) if m.is_dir() => {
            return Err(format!(
                "{} is a directory in the sandbox",
                target.display()
            ));
        }
        // Replace an earlier file or link rather than write through it.
        Ok(_) => tokio::fs::remove_file(&dest)
            .await
            .map_err(|e| format!("cannot replace {}: {e}", target.display()))?,
        Err(_) => {}
    }
    tokio::fs::rename(temp, &dest)
        .await
        .map_err(|e| format!("cannot move the download to {}: {e}", target.display()))?;
    let mode = if executable { 0o755 } else { 0o644 };
    tokio::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
        .await
        .map_err(|e| format!("cannot set the mode of {}: {e}", target.display()))
}

/// One attempt at downloading `uri` into `temp` (created anew, so what an
/// earlier attempt left is gone).
async fn download_http(
    t: &Transfers,
    uri: &http::Uri,
    temp: &Path,
    max: u64,
) -> Result<Downloaded, Failed> {
    let request = http::Request::get(uri.clone())
        .body(
            Empty::<bytes::Bytes>::new()
                .map_err(|never| match never {})
                .boxed_unsync(),
        )
        .map_err(|e| Failed::definite(format!("bad request: {e}")))?;
    let response = t
        .client
        .request(request)
        .await
        .map_err(|e| Failed::transient(format!("request failed: {}", error_chain(&e))))?;
    let status = response.status();
    if status == StatusCode::NOT_FOUND || status == StatusCode::GONE {
        return Ok(Downloaded::Missing(format!("not found (HTTP {status})")));
    }
    if status.is_redirection() {
        return Err(Failed::definite(format!(
            "HTTP {status}: redirects are not followed"
        )));
    }
    if !status.is_success() {
        let message = format!("HTTP {status}");
        return Err(if super::transient_status(status) {
            Failed::transient(message)
        } else {
            Failed::definite(message)
        });
    }
    if let Some(len) = response
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        && len > max
    {
        return Err(Failed::definite(too_big(max)));
    }
    let mut body = response.into_body();
    let mut out = create_temp(temp).await.map_err(Failed::definite)?;
    let mut total: u64 = 0;
    while let Some(frame) = body.frame().await {
        // A body cut short (the server went away) fails here, also when
        // its length was announced: hyper checks it.
        let frame = frame
            .map_err(|e| Failed::transient(format!("download failed: {}", error_chain(&e))))?;
        let Ok(data) = frame.into_data() else {
            continue;
        };
        total += data.len() as u64;
        if total > max {
            return Err(Failed::definite(too_big(max)));
        }
        out.write_all(&data)
            .await
            .map_err(|e| Failed::definite(format!("cannot write the download: {e}")))?;
    }
    out.flush()
        .await
        .map_err(|e| Failed::definite(format!("cannot write the download: {e}")))?;
    Ok(Downloaded::Bytes(total))
}

async fn copy_file(path: &Path, temp: &Path, max: u64) -> Result<Downloaded, String> {
    let file = match tokio::fs::File::open(path).await {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(Downloaded::Missing("no such file".into()));
        }
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let meta = file
        .metadata()
        .await
        .map_err(|e| format!("cannot inspect {}: {e}", path.display()))?;
    if !meta.is_file() {
        return Err(format!("{} is not a regular file", path.display()));
    }
    if meta.len() > max {
        return Err(too_big(max));
    }
    let mut out = create_temp(temp).await?;
    let copied = tokio::io::copy(&mut file.take(max + 1), &mut out)
        .await
        .map_err(|e| format!("cannot copy {}: {e}", path.display()))?;
    if copied > max {
        return Err(too_big(max));
    }
    out.flush()
        .await
        .map_err(|e| format!("cannot write the download: {e}"))?;
    Ok(Downloaded::Bytes(copied))
}

async fn create_temp(temp: &Path) -> Result<tokio::fs::File, String> {
    tokio::fs::File::create(temp)
        .await
        .map_err(|e| format!("cannot create {}: {e}", temp.display()))
}

fn too_big(max: u64) -> String {
    format!("larger than the limit of {max} bytes (--fetch-max-bytes)")
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use crate::transfer::Limits;

    fn transfers(max: u64) -> Transfers {
        Transfers::new(Limits {
            fetch_max_bytes: max,
            fetch_timeout: Duration::from_secs(10),
            upload_timeout: Duration::from_secs(10),
            retry_for: Duration::ZERO,
            file_urls: true,
        })
    }

    fn file_uri(path: &Path, output_path: &str) -> pb::FetchUri {
        pb::FetchUri {
            url: format!("file://{}", path.display()),
            output_path: output_path.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn file_fetches_are_placed_limited_and_logged() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir(&sandbox).unwrap();
        let src = dir.path().join("tool");
        std::fs::write(&src, "0123456789").unwrap();

        let mut exe = file_uri(&src, "bin/tool");
        exe.executable = true;
        fetch_all(&transfers(10), &sandbox, &[exe]).await.unwrap();
        let placed = sandbox.join("bin/tool");
        assert_eq!(std::fs::read_to_string(&placed).unwrap(), "0123456789");
        let mode = std::fs::metadata(&placed).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o755);

        let err = fetch_all(&transfers(9), &sandbox, &[file_uri(&src, "big")])
            .await
            .unwrap_err();
        assert!(
            err.message.contains("larger than the limit of 9 bytes"),
            "{err}"
        );
        assert!(!sandbox.join("big").exists());
        assert!(!sandbox.join(".berth-fetch-0").exists());

        let missing = dir.path().join("missing");
        let err = fetch_all(&transfers(10), &sandbox, &[file_uri(&missing, "m")])
            .await
            .unwrap_err();
        assert_eq!(err.url, format!("file://{}", missing.display()));
        assert_eq!(err.message, "no such file");
        let mut optional = file_uri(&missing, "m");
        optional.optional = true;
        fetch_all(&transfers(10), &sandbox, &[optional.clone()])
            .await
            .unwrap();

        // An agent that allows no file:// URLs refuses them, optional ones
        // too (a refusal is not a missing file).
        let mut closed = transfers(10);
        closed.limits.file_urls = false;
        for uri in [file_uri(&src, "again"), optional] {
            let err = fetch_all(&closed, &sandbox, &[uri]).await.unwrap_err();
            assert_eq!(err.message, super::super::FILE_URLS_REFUSED);
        }
        assert!(!sandbox.join("again").exists());

        // A symlink in the sandbox does not redirect a fetch out of it.
        let outside = dir.path().join("outside");
        std::fs::create_dir(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, sandbox.join("link")).unwrap();
        let err = fetch_all(&transfers(10), &sandbox, &[file_uri(&src, "link/x")])
            .await
            .unwrap_err();
        assert!(err.message.contains("goes through a symlink"), "{err}");
        assert!(!outside.join("x").exists());

        let log = std::fs::read_to_string(sandbox.join("stderr")).unwrap();
        assert!(log.contains("to bin/tool (10 bytes)"), "{log}");
        assert!(log.contains("skipped optional"), "{log}");
        assert!(log.contains("berth: cannot fetch"), "{log}");
    }
}
