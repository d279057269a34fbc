//! The uploader: archives and uploads a task's outputs after its command
//! exits, before the terminal status update.
//!
//! For each output whose `when` matches the outcome, the matching files go
//! into a tar.gz (`.berth-output-<i>.tar.gz` in the sandbox, removed
//! afterwards), which is PUT to an `http://` URL or written to a `file://`
//! path, each attempt within `upload_timeout`, an HTTP PUT tried again as
//! [`super`] says for `retry_for`. No matching files: nothing is uploaded and
//! the result says "no files matched". Each result goes into the terminal
//! update; a failure is reported there and in the task's `stderr`, and does
//! not change the task's state.

use std::path::Path;

use berth_proto as pb;
use berth_proto::output_upload::When;
use berth_proto::transfer::{Location, compile_globs, parse_url};
use bytes::Bytes;
use http_body_util::{BodyExt, StreamBody};
use hyper::body::Frame;

use super::archive;
use super::{Failed, Transfers, bounded, log_line, shown_url};
use crate::error::error_chain;

/// Size of the chunks an archive is sent in.
const CHUNK: usize = 64 * 1024;

/// Whether an output is uploaded when the task ended that way.
pub(crate) fn wanted(o: &pb::OutputUpload, success: bool) -> bool {
    match When::try_from(o.when) {
        Ok(When::OnSuccess) => success,
        Ok(When::OnFailure) => !success,
        Ok(When::Always) => true,
        // Refused by validation; never uploaded.
        Err(_) => false,
    }
}

/// Uploads the outputs whose `when` matches `success` (the command exited
/// with status 0 and was not killed), in order; returns their results.
pub(crate) async fn upload_all(
    t: &Transfers,
    sandbox: &Path,
    outputs: &[pb::OutputUpload],
    success: bool,
) -> Vec<pb::OutputResult> {
    let mut results = Vec::new();
    for (i, o) in outputs.iter().enumerate() {
        if !wanted(o, success) {
            continue;
        }
        let url = shown_url(&o.url);
        let name = if o.name.is_empty() {
            format!("outputs[{i}]")
        } else {
            o.name.clone()
        };
        let temp = sandbox.join(format!("{}output-{i}.tar.gz", archive::AGENT_FILE_PREFIX));
        // The archive, the attempts and the waits between them.
        let timeout = t.limits.upload_timeout + t.limits.retry_for;
        let outcome =
            match tokio::time::timeout(timeout, upload_one(t, sandbox, o, &temp, &name)).await {
                Ok(r) => r,
                Err(_) => Err((
                    format!("timed out after {timeout:?}"),
                    archive::Built::default(),
                )),
            };
        let _ = tokio::fs::remove_file(&temp).await;
        let result = match outcome {
            Ok(built) => {
                log_line(
                    sandbox,
                    &format!(
                        "uploaded {name} ({} files, {} bytes) to {url}",
                        built.files, built.bytes
                    ),
                )
                .await;
                pb::OutputResult {
                    url: o.url.clone(),
                    name: o.name.clone(),
                    ok: true,
                    error: String::new(),
                    files: built.files,
                    bytes: built.bytes,
                }
            }
            Err((error, built)) => {
                let error = bounded(error);
                log_line(sandbox, &format!("cannot upload {name} to {url}: {error}")).await;
                pb::OutputResult {
                    url: o.url.clone(),
                    name: o.name.clone(),
                    ok: false,
                    error,
                    files: built.files,
                    bytes: built.bytes,
                }
            }
        };
        results.push(result);
    }
    results
}

/// Results for outputs that will not be uploaded (a kill cancelled the
/// uploads, or the task's exit is unknown because it ended while the agent
/// was down): each of `outputs`, not ok, with `error`.
pub(crate) fn not_uploaded(outputs: &[pb::OutputUpload], error: &str) -> Vec<pb::OutputResult> {
    outputs
        .iter()
        .map(|o| pb::OutputResult {
            url: o.url.clone(),
            name: o.name.clone(),
            ok: false,
            error: error.to_owned(),
            files: 0,
            bytes: 0,
        })
        .collect()
}

/// Builds and sends one output; on failure also what was built.
async fn upload_one(
    t: &Transfers,
    sandbox: &Path,
    o: &pb::OutputUpload,
    temp: &Path,
    name: &str,
) -> Result<archive::Built, (String, archive::Built)> {
    let none = archive::Built::default();
    let location = parse_url(&o.url).map_err(|e| (e, none))?;
    if matches!(location, Location::File(_)) && !t.limits.file_urls {
        return Err((super::FILE_URLS_REFUSED.into(), none));
    }
    let include = compile_globs("paths", &o.paths).map_err(|e| (e, none))?;
    let exclude = compile_globs("exclude", &o.exclude).map_err(|e| (e, none))?;
    let (root, out) = (sandbox.to_path_buf(), temp.to_path_buf());
    let built =
        tokio::task::spawn_blocking(move || archive::build(&root, &include, &exclude, &out))
            .await
            .map_err(|e| (format!("building the archive failed: {e}"), none))?
            .map_err(|e| (e, none))?;
    if built.files == 0 {
        return Err(("no files matched".into(), built));
    }
    let sent = match location {
        Location::Http(uri) => {
            super::retrying(
                &t.limits,
                sandbox,
                &format!("uploading {name} to {}", shown_url(&o.url)),
                t.limits.upload_timeout,
                || put(t, uri.clone(), temp, built.bytes),
            )
            .await
        }
        Location::File(path) => write_new(temp, &path).await,
    };
    sent.map(|()| built).map_err(|e| (e, built))
}

/// Copies the archive to `path`, which must not exist yet (an upload never
/// replaces a file of the agent host).
async fn write_new(archive: &Path, path: &Path) -> Result<(), String> {
    let mut out = tokio::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(path)
        .await
        .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
    let mut src = tokio::fs::File::open(archive)
        .await
        .map_err(|e| format!("cannot open the archive: {e}"))?;
    tokio::io::copy(&mut src, &mut out)
        .await
        .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
    tokio::io::AsyncWriteExt::flush(&mut out)
        .await
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}

/// One attempt at PUTting the file `archive` (`len` bytes) to `uri`,
/// streamed.
async fn put(t: &Transfers, uri: http::Uri, archive: &Path, len: u64) -> Result<(), Failed> {
    let file = tokio::fs::File::open(archive)
        .await
        .map_err(|e| Failed::definite(format!("cannot open the archive: {e}")))?;
    let chunks = futures::stream::unfold(file, |mut file| async move {
        use tokio::io::AsyncReadExt;
        let mut buf = vec![0u8; CHUNK];
        match file.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok(Frame::data(Bytes::from(buf))), file))
            }
            Err(e) => Some((Err(e), file)),
        }
    });
    let body = StreamBody::new(chunks).boxed_unsync();
    let request = http::Request::put(uri)
        .header(http::header::CONTENT_TYPE, "application/gzip")
        .header(http::header::CONTENT_LENGTH, len)
        .body(body)
        .map_err(|e| Failed::definite(format!("bad request: {e}")))?;
    let response = t
        .client
        .request(request)
        .await
        .map_err(|e| Failed::transient(format!("request failed: {}", error_chain(&e))))?;
    let status = response.status();
    if status.is_success() {
        Ok(())
    } else if super::transient_status(status) {
        Err(Failed::transient(format!("HTTP {status}")))
    } else {
        Err(Failed::definite(format!("HTTP {status}")))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn when_matches_the_outcome() {
        let o = |when: When| pb::OutputUpload {
            when: when as i32,
            ..Default::default()
        };
        assert!(wanted(&o(When::OnSuccess), true));
        assert!(!wanted(&o(When::OnSuccess), false));
        assert!(!wanted(&o(When::OnFailure), true));
        assert!(wanted(&o(When::OnFailure), false));
        assert!(wanted(&o(When::Always), true) && wanted(&o(When::Always), false));
        let bad = pb::OutputUpload {
            when: 9,
            ..Default::default()
        };
        assert!(!wanted(&bad, true) && !wanted(&bad, false));
    }

    #[tokio::test]
    async fn file_urls_get_the_archive_but_never_replace_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let sandbox = dir.path().join("sandbox");
        std::fs::create_dir_all(sandbox.join("out")).unwrap();
        std::fs::write(sandbox.join("out/a.txt"), "a").unwrap();
        std::fs::write(sandbox.join("stderr"), "").unwrap();
        let dest = dir.path().join("artifacts.tar.gz");
        let t = Transfers::new(super::super::Limits {
            fetch_max_bytes: 1 << 20,
            fetch_timeout: std::time::Duration::from_secs(10),
            upload_timeout: std::time::Duration::from_secs(10),
            retry_for: std::time::Duration::ZERO,
            file_urls: true,
        });
        let outputs = vec![pb::OutputUpload {
            url: format!("file://{}", dest.display()),
            paths: vec!["out/*.txt".into()],
            name: "artifacts".into(),
            ..Default::default()
        }];
        let results = upload_all(&t, &sandbox, &outputs, true).await;
        assert_eq!(results.len(), 1);
        assert!(results[0].ok, "{:?}", results[0]);
        assert_eq!(results[0].files, 1);
        assert_eq!(results[0].bytes, std::fs::metadata(&dest).unwrap().len());
        // Nothing of the agent's own is left in the sandbox.
        assert!(!sandbox.join(".berth-output-0.tar.gz").exists());

        let again = upload_all(&t, &sandbox, &outputs, true).await;
        assert!(!again[0].ok);
        assert!(
            again[0].error.starts_with("cannot create"),
            "{:?}",
            again[0]
        );
        let log = std::fs::read_to_string(sandbox.join("stderr")).unwrap();
        assert!(log.contains("berth: uploaded artifacts (1 files,"), "{log}");
        assert!(
            log.contains("berth: cannot upload artifacts to file://"),
            "{log}"
        );

        // Not wanted on failure: no result at all.
        assert!(upload_all(&t, &sandbox, &outputs, false).await.is_empty());

        // An agent that allows no file:// URLs writes nothing there.
        let mut closed = t.clone();
        closed.limits.file_urls = false;
        let elsewhere = dir.path().join("elsewhere.tar.gz");
        let outputs = vec![pb::OutputUpload {
            url: format!("file://{}", elsewhere.display()),
            ..outputs[0].clone()
        }];
        let refused = upload_all(&closed, &sandbox, &outputs, true).await;
        assert!(!refused[0].ok);
        assert_eq!(refused[0].error, super::super::FILE_URLS_REFUSED);
        assert!(!elsewhere.exists());
    }
}
