//! A small HTTP file server on 127.0.0.1 for the fetcher and uploader
//! tests, and tar.gz helpers.
//!
//! Routes: `GET /files/{name}` serves what [`FileServer::serve`] put there
//! (404 otherwise); `GET /stall` accepts the request and never answers;
//! `PUT /upload/{name}` stores the body (see [`FileServer::uploads`]) and
//! answers 201.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::routing::{get, put};

/// An upload the server received.
#[derive(Debug, Clone)]
pub struct Upload {
    /// Its `Content-Type` header.
    pub content_type: String,
    /// Its body.
    pub body: Vec<u8>,
}

#[derive(Debug, Default)]
struct Files {
    served: BTreeMap<String, Vec<u8>>,
    uploads: BTreeMap<String, Upload>,
    /// `GET` requests seen, by path.
    requests: Vec<String>,
}

type Shared = Arc<Mutex<Files>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, Files> {
    s.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The server; stopped when dropped.
#[derive(Debug)]
pub struct FileServer {
    /// Where it listens.
    pub addr: SocketAddr,
    files: Shared,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn serve_file(
    State(files): State<Shared>,
    Path(name): Path<String>,
) -> Result<Vec<u8>, StatusCode> {
    let mut f = lock(&files);
    f.requests.push(format!("/files/{name}"));
    f.served.get(&name).cloned().ok_or(StatusCode::NOT_FOUND)
}

async fn stall(State(files): State<Shared>) -> StatusCode {
    lock(&files).requests.push("/stall".into());
    std::future::pending::<()>().await;
    StatusCode::OK
}

async fn receive(
    State(files): State<Shared>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> StatusCode {
    let content_type = headers
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    lock(&files).uploads.insert(
        name,
        Upload {
            content_type,
            body: body.to_vec(),
        },
    );
    StatusCode::CREATED
}

impl FileServer {
    /// Starts a server on 127.0.0.1 with an ephemeral port.
    ///
    /// # Errors
    /// If the port cannot be bound.
    pub async fn start() -> anyhow::Result<Self> {
        let files: Shared = Arc::default();
        let app = Router::new()
            .route("/files/{name}", get(serve_file))
            .route("/stall", get(stall))
            .route("/upload/{name}", put(receive))
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(Arc::clone(&files));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let task = tokio::spawn(async move {
            if let Err(e) = axum::serve(listener, app).await {
                tracing::error!(error = %e, "test file server failed");
            }
        });
        Ok(FileServer { addr, files, task })
    }

    /// `http://<addr><path>`.
    #[must_use]
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Serves `data` at `/files/<name>`.
    pub fn serve(&self, name: &str, data: Vec<u8>) {
        lock(&self.files).served.insert(name.to_owned(), data);
    }

    /// The uploads received so far, by name.
    #[must_use]
    pub fn uploads(&self) -> BTreeMap<String, Upload> {
        lock(&self.files).uploads.clone()
    }

    /// The paths of the `GET` requests seen so far.
    #[must_use]
    pub fn requests(&self) -> Vec<String> {
        lock(&self.files).requests.clone()
    }
}

/// A tar.gz of `(path, content, mode)` files.
///
/// # Panics
/// If the archive cannot be built (in memory; it always can).
#[must_use]
pub fn tar_gz(files: &[(&str, &[u8], u32)]) -> Vec<u8> {
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    for (path, data, mode) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(*mode);
        h.set_cksum();
        tar.append_data(&mut h, path, *data).expect("in-memory tar");
    }
    let mut gz = tar.into_inner().expect("in-memory tar");
    gz.flush().expect("in-memory gzip");
    gz.finish().expect("in-memory gzip")
}

/// The entries of a tar.gz: path (without a trailing `/`), type, content.
///
/// # Errors
/// If it is not a readable tar.gz.
pub fn tar_gz_entries(data: &[u8]) -> anyhow::Result<Vec<(String, tar::EntryType, Vec<u8>)>> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(data));
    let mut out = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let path = entry
            .path()?
            .to_string_lossy()
            .trim_end_matches('/')
            .to_owned();
        let kind = entry.header().entry_type();
        let mut content = Vec::new();
        entry.read_to_end(&mut content)?;
        out.push((path, kind, content));
    }
    Ok(out)
}
