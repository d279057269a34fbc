//! The CI framework's files on disk — source archives, artifacts, caches —
//! and the HTTP routes the agents use to fetch and upload them.
//!
//! Layout under the data directory:
//!
//! ```text
//! sources/<pipeline>.tar.gz            the commit's files (until it expires)
//! artifacts/<pipeline>/<job>.tar.gz    a job's artifacts (latest attempt)
//! caches/<project hash>/<key>.tar.gz   a cache, per project and key
//! reports/<pipeline>/<kind>/<job>.tar.gz  a job's dotenv or JUnit reports,
//!                                      until the runner has read them
//! ```
//!
//! A cache belongs to a project: its directory is the SHA-256 (hex) of the
//! pipeline's project key (`PipelineRecord::project_key`: the repository
//! and subdirectory, not the project's name), so two repositories whose
//! projects have the same name never share (or poison) each other's
//! caches. Caches stored before, under `caches/<project name>/`, are no
//! longer read: a cache miss only costs a rebuild.
//!
//! Every URL carries the pipeline's token (`?token=`), a random secret
//! made for the pipeline, so that only the tasks the framework launched
//! can read or write its files. Uploads stream to a temporary file and are
//! renamed into place when complete: a reader never sees half an archive,
//! and a failed upload leaves the previous version.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path as UrlPath, Query, Request, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use futures::StreamExt as _;
use serde::Deserialize;
use tokio::io::AsyncWriteExt as _;

/// Who may read and write a pipeline's files.
pub trait Access: Send + Sync + 'static {
    /// The token and project key of a pipeline, if it exists.
    fn pipeline(&self, id: u64) -> Option<PipelineAccess>;
}

/// What [`Access`] knows about a pipeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PipelineAccess {
    /// The pipeline's secret.
    pub token: String,
    /// Its project's key (`PipelineRecord::project_key`; caches are per
    /// project).
    pub project_key: String,
}

/// The files, on disk.
#[derive(Debug, Clone)]
pub struct FileStore {
    root: PathBuf,
    max_upload: u64,
}

/// What can go wrong with a file name.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NameError {
    /// Empty or too long.
    #[error("{what} must have 1 to 255 bytes")]
    Length {
        /// What was named.
        what: &'static str,
    },
}

/// Turns a job name or cache key into a file name: bytes other than ASCII
/// letters, digits, `-` and `_` are written as `%XX`, so that no name can
/// reach outside its directory (`..`, `/`) and different names never
/// share a file.
pub fn file_name(what: &'static str, name: &str) -> Result<String, NameError> {
    if name.is_empty() || name.len() > 255 {
        return Err(NameError::Length { what });
    }
    let mut out = String::with_capacity(name.len());
    for b in name.bytes() {
        if b.is_ascii_alphanumeric() || b == b'-' || b == b'_' {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    Ok(out)
}

/// The directory name of a project's caches: the SHA-256 of its key, in
/// hex (fixed length, nothing to escape, different keys never collide).
fn project_dir_name(project_key: &str) -> String {
    use sha2::Digest as _;
    sha2::Sha256::digest(project_key.as_bytes())
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

impl FileStore {
    /// Files under `root`; uploads larger than `max_upload` bytes are
    /// refused.
    pub fn new(root: impl Into<PathBuf>, max_upload: u64) -> std::io::Result<FileStore> {
        let root = root.into();
        for dir in ["sources", "artifacts", "caches", "reports", "tmp"] {
            std::fs::create_dir_all(root.join(dir))?;
        }
        Ok(FileStore { root, max_upload })
    }

    /// The source archive of a pipeline.
    pub fn source(&self, pipeline: u64) -> PathBuf {
        self.root.join("sources").join(format!("{pipeline}.tar.gz"))
    }

    /// A job's artifacts archive.
    pub fn artifacts(&self, pipeline: u64, job: &str) -> Result<PathBuf, NameError> {
        Ok(self
            .root
            .join("artifacts")
            .join(pipeline.to_string())
            .join(format!("{}.tar.gz", file_name("a job name", job)?)))
    }

    /// A job's uploaded reports of one kind.
    pub fn report(&self, pipeline: u64, kind: ReportKind, job: &str) -> Result<PathBuf, NameError> {
        Ok(self
            .root
            .join("reports")
            .join(pipeline.to_string())
            .join(kind.as_str())
            .join(format!("{}.tar.gz", file_name("a job name", job)?)))
    }

    /// A project's cache archive for a key; `project_key` is the project's
    /// key (any length: the directory is its SHA-256).
    pub fn cache(&self, project_key: &str, key: &str) -> Result<PathBuf, NameError> {
        // Old caches, under the escaped project name, are ignored (a miss
        // is harmless); a 64-hex-digit directory is never such a name
        // unless a project was named exactly so, and those are not written
        // any more.
        Ok(self
            .root
            .join("caches")
            .join(project_dir_name(project_key))
            .join(format!("{}.tar.gz", file_name("a cache key", key)?)))
    }

    /// Deletes a pipeline's source and artifacts at once (the expiry sweep
    /// deletes each on its own time instead, see `super::expiry`).
    pub fn remove_pipeline(&self, pipeline: u64) -> std::io::Result<()> {
        match std::fs::remove_file(self.source(pipeline)) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        for dir in ["artifacts", "reports"] {
            match std::fs::remove_dir_all(self.root.join(dir).join(pipeline.to_string())) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// A temporary file next to the others (same file system, so a rename
    /// moves it into place).
    pub fn temp_path(&self) -> PathBuf {
        self.root
            .join("tmp")
            .join(format!("upload-{}", uuid::Uuid::new_v4().simple()))
    }
}

/// The kinds of report a job uploads for the runner to read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReportKind {
    /// `artifacts:reports:dotenv`.
    Dotenv,
    /// `artifacts:reports:junit`.
    Junit,
}

impl ReportKind {
    /// Its name in URLs and paths.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Dotenv => "dotenv",
            Self::Junit => "junit",
        }
    }

    /// The kind a URL segment names.
    pub fn parse(s: &str) -> Option<ReportKind> {
        match s {
            "dotenv" => Some(Self::Dotenv),
            "junit" => Some(Self::Junit),
            _ => None,
        }
    }

    /// The name of its upload (in the task's outputs and the agent's log).
    pub fn output_name(self) -> &'static str {
        match self {
            Self::Dotenv => "reports:dotenv",
            Self::Junit => "reports:junit",
        }
    }
}

/// The URL paths, relative to the framework's HTTP address.
pub mod urls {
    use super::{NameError, ReportKind, file_name};

    /// A job's reports of one kind (upload only).
    pub fn report(
        pipeline: u64,
        kind: ReportKind,
        job: &str,
        token: &str,
    ) -> Result<String, NameError> {
        Ok(format!(
            "/ci/v1/files/reports/{pipeline}/{}/{}?token={token}",
            kind.as_str(),
            file_name("a job name", job)?
        ))
    }

    /// The source archive.
    pub fn source(pipeline: u64, token: &str) -> String {
        format!("/ci/v1/files/sources/{pipeline}?token={token}")
    }

    /// A job's artifacts.
    pub fn artifacts(pipeline: u64, job: &str, token: &str) -> Result<String, NameError> {
        Ok(format!(
            "/ci/v1/files/artifacts/{pipeline}/{}?token={token}",
            file_name("a job name", job)?
        ))
    }

    /// A cache.
    pub fn cache(pipeline: u64, key: &str, token: &str) -> Result<String, NameError> {
        Ok(format!(
            "/ci/v1/files/caches/{pipeline}/{}?token={token}",
            file_name("a cache key", key)?
        ))
    }
}

#[derive(Clone)]
struct Files {
    store: FileStore,
    access: Arc<dyn Access>,
}

#[derive(Debug, Deserialize)]
struct TokenQuery {
    token: Option<String>,
}

/// The routes under `/ci/v1/files/`.
pub fn router(store: FileStore, access: Arc<dyn Access>) -> Router {
    Router::new()
        .route("/ci/v1/files/sources/{pipeline}", get(get_source))
        .route(
            "/ci/v1/files/artifacts/{pipeline}/{job}",
            get(get_artifacts).put(put_artifacts),
        )
        .route(
            "/ci/v1/files/reports/{pipeline}/{kind}/{job}",
            axum::routing::put(put_report),
        )
        .route(
            "/ci/v1/files/caches/{pipeline}/{key}",
            get(get_cache).put(put_cache),
        )
        .with_state(Files { store, access })
}

fn refuse(status: StatusCode, message: impl Into<String>) -> Response {
    (status, message.into()).into_response()
}

/// A request refused before any file is touched.
struct Refusal(StatusCode, String);

impl IntoResponse for Refusal {
    fn into_response(self) -> Response {
        refuse(self.0, self.1)
    }
}

/// Checks the token; returns the pipeline's access.
fn check(files: &Files, pipeline: u64, query: &TokenQuery) -> Result<PipelineAccess, Refusal> {
    let access = files
        .access
        .pipeline(pipeline)
        .ok_or_else(|| Refusal(StatusCode::NOT_FOUND, format!("no pipeline {pipeline}")))?;
    match &query.token {
        Some(t) if constant_time_eq(t.as_bytes(), access.token.as_bytes()) => Ok(access),
        _ => Err(Refusal(
            StatusCode::FORBIDDEN,
            "a valid token is required".into(),
        )),
    }
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Undoes [`file_name`]'s escaping of a URL segment (axum has already
/// percent-decoded it once, so the segment is the original name).
fn name_in_url(what: &'static str, segment: &str) -> Result<String, Refusal> {
    file_name(what, segment).map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))?;
    Ok(segment.to_string())
}

async fn send_file(path: &Path) -> Response {
    match tokio::fs::File::open(path).await {
        Ok(file) => {
            let len = file.metadata().await.map(|m| m.len()).ok();
            let body = Body::from_stream(tokio_util::io::ReaderStream::new(file));
            let mut response = Response::new(body);
            response.headers_mut().insert(
                header::CONTENT_TYPE,
                header::HeaderValue::from_static("application/gzip"),
            );
            if let Some(len) = len {
                response
                    .headers_mut()
                    .insert(header::CONTENT_LENGTH, header::HeaderValue::from(len));
            }
            response
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            refuse(StatusCode::NOT_FOUND, "no such file")
        }
        Err(e) => refuse(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
    }
}

/// Streams the request body into `dest` through a temporary file.
async fn receive_file(store: &FileStore, dest: &Path, request: Request) -> Response {
    let temp = store.temp_path();
    let result = async {
        if let Some(parent) = dest.parent() {
            tokio::fs::create_dir_all(parent).await?;
        }
        let mut file = tokio::fs::File::create(&temp).await?;
        let mut body = request.into_body().into_data_stream();
        let mut size: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            size += chunk.len() as u64;
            if size > store.max_upload {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::FileTooLarge,
                    format!("the upload is larger than {} bytes", store.max_upload),
                ));
            }
            file.write_all(&chunk).await?;
        }
        file.sync_all().await?;
        drop(file);
        tokio::fs::rename(&temp, dest).await?;
        Ok::<u64, std::io::Error>(size)
    }
    .await;
    match result {
        Ok(size) => (StatusCode::CREATED, format!("stored {size} bytes")).into_response(),
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            let status = if e.kind() == std::io::ErrorKind::FileTooLarge {
                StatusCode::PAYLOAD_TOO_LARGE
            } else {
                StatusCode::INTERNAL_SERVER_ERROR
            };
            refuse(status, e.to_string())
        }
    }
}

async fn get_source(
    State(files): State<Files>,
    UrlPath(pipeline): UrlPath<u64>,
    Query(query): Query<TokenQuery>,
) -> Response {
    if let Err(r) = check(&files, pipeline, &query) {
        return r.into_response();
    }
    send_file(&files.store.source(pipeline)).await
}

/// The artifacts file a request names, once its token is checked.
fn artifacts_path(
    files: &Files,
    pipeline: u64,
    job: &str,
    query: &TokenQuery,
) -> Result<PathBuf, Refusal> {
    check(files, pipeline, query)?;
    let job = name_in_url("a job name", job)?;
    files
        .store
        .artifacts(pipeline, &job)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))
}

/// The cache file a request names (in the pipeline's project), once its
/// token is checked.
fn cache_path(
    files: &Files,
    pipeline: u64,
    key: &str,
    query: &TokenQuery,
) -> Result<PathBuf, Refusal> {
    let access = check(files, pipeline, query)?;
    let key = name_in_url("a cache key", key)?;
    files
        .store
        .cache(&access.project_key, &key)
        .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))
}

async fn get_artifacts(
    State(files): State<Files>,
    UrlPath((pipeline, job)): UrlPath<(u64, String)>,
    Query(query): Query<TokenQuery>,
) -> Response {
    match artifacts_path(&files, pipeline, &job, &query) {
        Ok(path) => send_file(&path).await,
        Err(r) => r.into_response(),
    }
}

async fn put_artifacts(
    State(files): State<Files>,
    UrlPath((pipeline, job)): UrlPath<(u64, String)>,
    Query(query): Query<TokenQuery>,
    request: Request,
) -> Response {
    match artifacts_path(&files, pipeline, &job, &query) {
        Ok(path) => receive_file(&files.store, &path, request).await,
        Err(r) => r.into_response(),
    }
}

async fn put_report(
    State(files): State<Files>,
    UrlPath((pipeline, kind, job)): UrlPath<(u64, String, String)>,
    Query(query): Query<TokenQuery>,
    request: Request,
) -> Response {
    let path = (|| {
        check(&files, pipeline, &query)?;
        let kind = ReportKind::parse(&kind).ok_or_else(|| {
            Refusal(
                StatusCode::NOT_FOUND,
                format!("no report kind {:?}", crate::diag::cut_to(&kind, 40)),
            )
        })?;
        let job = name_in_url("a job name", &job)?;
        files
            .store
            .report(pipeline, kind, &job)
            .map_err(|e| Refusal(StatusCode::BAD_REQUEST, e.to_string()))
    })();
    match path {
        Ok(path) => receive_file(&files.store, &path, request).await,
        Err(r) => r.into_response(),
    }
}

async fn get_cache(
    State(files): State<Files>,
    UrlPath((pipeline, key)): UrlPath<(u64, String)>,
    Query(query): Query<TokenQuery>,
) -> Response {
    match cache_path(&files, pipeline, &key, &query) {
        Ok(path) => send_file(&path).await,
        Err(r) => r.into_response(),
    }
}

async fn put_cache(
    State(files): State<Files>,
    UrlPath((pipeline, key)): UrlPath<(u64, String)>,
    Query(query): Query<TokenQuery>,
    request: Request,
) -> Response {
    match cache_path(&files, pipeline, &key, &query) {
        Ok(path) => receive_file(&files.store, &path, request).await,
        Err(r) => r.into_response(),
    }
}

#[cfg(test)]
mod tests;
