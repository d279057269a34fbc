//! A small HTTP file server on 127.0.0.1 for the fetcher and uploader
//! tests, and tar.gz helpers.
//!
//! Routes: `GET /files/{name}` serves what [`FileServer::serve`] put there
//! (404 otherwise); `GET /stall` accepts the request and never answers;
//! `PUT /upload/{name}` stores the body (see [`FileServer::uploads`]) and
//! answers 201.
//!
//! Faults, for the tests of retries: [`FileServer::stop`] and
//! [`FileServer::restart`] (on the same address, with the same files),
//! [`FileServer::answer_next`] (the next requests get an error status) and
//! [`FileServer::cut_next`] (the next downloads break off halfway).

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
    /// Statuses the next requests of `/files` and `/upload` get instead.
    failures: std::collections::VecDeque<StatusCode>,
    /// How many more downloads break off after half their body.
    cuts: usize,
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
    task: Option<tokio::task::JoinHandle<()>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Drop for FileServer {
    fn drop(&mut self) {
        if let Some(task) = &self.task {
            task.abort();
        }
    }
}

async fn serve_file(
    State(files): State<Shared>,
    Path(name): Path<String>,
) -> axum::response::Response {
    use axum::response::IntoResponse as _;
    let (data, cut) = {
        let mut f = lock(&files);
        f.requests.push(format!("/files/{name}"));
        if let Some(status) = f.failures.pop_front() {
            return status.into_response();
        }
        let Some(data) = f.served.get(&name).cloned() else {
            return StatusCode::NOT_FOUND.into_response();
        };
        let cut = f.cuts > 0;
        f.cuts = f.cuts.saturating_sub(1);
        (data, cut)
    };
    if !cut {
        return data.into_response();
    }
    // The whole length announced, half the body sent, then the connection
    // breaks.
    let len = data.len();
    let half = Bytes::from(data[..len / 2].to_vec());
    let body = futures::stream::iter([
        Ok(half),
        Err(std::io::Error::other("the server broke off the download")),
    ]);
    (
        [(axum::http::header::CONTENT_LENGTH, len.to_string())],
        axum::body::Body::from_stream(body),
    )
        .into_response()
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
    let mut f = lock(&files);
    if let Some(status) = f.failures.pop_front() {
        return status;
    }
    f.uploads.insert(
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
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let mut server = FileServer {
            addr: listener.local_addr()?,
            files: Arc::default(),
            task: None,
            stop: None,
        };
        server.serve_on(listener);
        Ok(server)
    }

    fn serve_on(&mut self, listener: tokio::net::TcpListener) {
        let app = Router::new()
            .route("/files/{name}", get(serve_file))
            .route("/stall", get(stall))
            .route("/upload/{name}", put(receive))
            .layer(axum::extract::DefaultBodyLimit::max(64 << 20))
            .with_state(Arc::clone(&self.files));
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        self.stop = Some(stop);
        self.task = Some(tokio::spawn(async move {
            let served = axum::serve(listener, app).with_graceful_shutdown(async move {
                let _ = stopped.await;
            });
            if let Err(e) = served.await {
                tracing::error!(error = %e, "test file server failed");
            }
        }));
    }

    /// Stops listening (a connection is refused from now on) and ends the
    /// open requests (given a second to finish).
    pub async fn stop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(mut task) = self.task.take()
            && tokio::time::timeout(std::time::Duration::from_secs(1), &mut task)
                .await
                .is_err()
        {
            task.abort();
        }
    }

    /// Listens again on the same address, serving the same files.
    ///
    /// # Errors
    /// If the address cannot be bound again within 5 s.
    pub async fn restart(&mut self) -> anyhow::Result<()> {
        self.stop().await;
        let mut tries = 0;
        let listener = loop {
            match tokio::net::TcpListener::bind(self.addr).await {
                Ok(l) => break l,
                Err(e) if tries < 50 => {
                    tries += 1;
                    tracing::debug!(error = %e, "the file server's address is not free yet");
                    tokio::time::sleep(std::time::Duration::from_millis(100)).await;
                }
                Err(e) => return Err(e.into()),
            }
        };
        self.serve_on(listener);
        Ok(())
    }

    /// The next `times` requests of `/files` or `/upload` are answered
    /// `status` (and change nothing).
    pub fn answer_next(&self, status: StatusCode, times: usize) {
        let mut f = lock(&self.files);
        f.failures.extend(std::iter::repeat_n(status, times));
    }

    /// The next `times` downloads of `/files` announce their whole length,
    /// send half and break the connection.
    pub fn cut_next(&self, times: usize) {
        lock(&self.files).cuts += times;
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
