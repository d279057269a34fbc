//! Test backends (small hyper servers and TCP echo servers), a router
//! started on loopback, and client helpers.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::time::Duration;

use berth_router::{
    Backend, CancellationToken, Protocol, RouteTable, Router, RouterConfig, Service,
};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinSet;

/// A backend the test runs: answers `"{id} {version}"`; `/slow/{ms}` after
/// a delay, `/status/{code}` with that status, `/echo` with the body sent.
#[derive(Debug)]
pub struct TestBackend {
    pub id: String,
    pub version: String,
    pub addr: SocketAddr,
    pub hits: Arc<AtomicU64>,
    pub open_connections: Arc<AtomicI64>,
    kill: CancellationToken,
}

impl TestBackend {
    pub async fn http(id: &str, version: &str) -> TestBackend {
        Self::start(id, version, Protocol::Http).await
    }

    /// A TCP backend: on connect it sends `"{id}\n"`, then echoes.
    pub async fn tcp_echo(id: &str, version: &str) -> TestBackend {
        Self::start(id, version, Protocol::Tcp).await
    }

    async fn start(id: &str, version: &str, protocol: Protocol) -> TestBackend {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("a bound address");
        let backend = TestBackend {
            id: id.to_owned(),
            version: version.to_owned(),
            addr,
            hits: Arc::default(),
            open_connections: Arc::default(),
            kill: CancellationToken::new(),
        };
        let (kill, hits, open) = (
            backend.kill.clone(),
            backend.hits.clone(),
            backend.open_connections.clone(),
        );
        let answer = format!("{id} {version}");
        tokio::spawn(async move {
            let mut connections = JoinSet::new();
            loop {
                tokio::select! {
                    _ = kill.cancelled() => break,
                    Ok((stream, _)) = listener.accept() => {
                        let (hits, open, answer) = (hits.clone(), open.clone(), answer.clone());
                        open.fetch_add(1, Ordering::SeqCst);
                        connections.spawn(async move {
                            match protocol {
                                Protocol::Http => serve_http(stream, hits, answer).await,
                                Protocol::Tcp => serve_echo(stream, hits, answer).await,
                            }
                            open.fetch_sub(1, Ordering::SeqCst);
                        });
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                }
            }
            // Dies: the listener closes and every connection is cut.
            drop(listener);
            connections.shutdown().await;
            open.store(0, Ordering::SeqCst);
        });
        backend
    }

    /// Kills the backend: closes its listener and cuts its connections.
    pub fn kill(&self) {
        self.kill.cancel();
    }

    pub fn hits(&self) -> u64 {
        self.hits.load(Ordering::SeqCst)
    }

    pub fn as_backend(&self) -> Backend {
        Backend {
            instance: self.id.clone(),
            version: self.version.clone(),
            addr: self.addr,
        }
    }
}

async fn serve_http(stream: tokio::net::TcpStream, hits: Arc<AtomicU64>, answer: String) {
    let service = service_fn(move |req: Request<Incoming>| {
        let (hits, answer) = (hits.clone(), answer.clone());
        async move {
            hits.fetch_add(1, Ordering::SeqCst);
            let path = req.uri().path().to_owned();
            let mut status = StatusCode::OK;
            let mut body = Bytes::from(answer);
            if let Some(ms) = path.strip_prefix("/slow/") {
                let ms: u64 = ms.parse().unwrap_or(0);
                tokio::time::sleep(Duration::from_millis(ms)).await;
            } else if let Some(code) = path.strip_prefix("/status/") {
                status = StatusCode::from_u16(code.parse().unwrap_or(500))
                    .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            } else if path == "/echo" {
                body = match req.into_body().collect().await {
                    Ok(collected) => collected.to_bytes(),
                    Err(_) => Bytes::from_static(b"body broke"),
                };
            } else if path == "/headers" {
                let mut lines: Vec<String> = req
                    .headers()
                    .iter()
                    .map(|(k, v)| format!("{k}: {}", v.to_str().unwrap_or("?")))
                    .collect();
                lines.sort();
                body = Bytes::from(lines.join("\n"));
            }
            let mut response = Response::new(Full::new(body));
            *response.status_mut() = status;
            Ok::<_, Infallible>(response)
        }
    });
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(stream), service)
        .await;
}

async fn serve_echo(mut stream: tokio::net::TcpStream, hits: Arc<AtomicU64>, answer: String) {
    hits.fetch_add(1, Ordering::SeqCst);
    let id = answer.split(' ').next().unwrap_or("").to_owned();
    if stream
        .write_all(format!("{id}\n").as_bytes())
        .await
        .is_err()
    {
        return;
    }
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if stream.write_all(&buf[..n]).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// A router on loopback with a test config; its shutdown token.
pub async fn router(config: RouterConfig) -> (Router, CancellationToken) {
    let shutdown = CancellationToken::new();
    let router = Router::start(config, shutdown.clone())
        .await
        .expect("the router starts");
    (router, shutdown)
}

/// A router with the test config serving `/web` over `backends` (equal
/// weights): the router, its shutdown token, the service address.
pub async fn web_router(backends: &[&TestBackend]) -> (Router, CancellationToken, SocketAddr) {
    let (router, shutdown) = router(test_config()).await;
    apply_web(&router, backends).await;
    let addr = router.bound("/web").expect("/web is bound");
    (router, shutdown, addr)
}

/// Makes `/web` route to `backends` only, with equal weights.
pub async fn apply_web(router: &Router, backends: &[&TestBackend]) {
    router
        .apply(table(vec![http_service("/web", backends, &[])]))
        .await
        .expect("a valid table");
}

pub fn test_config() -> RouterConfig {
    RouterConfig {
        connect_timeout: Duration::from_secs(1),
        upstream_timeout: Duration::from_secs(5),
        shutdown_grace: Duration::from_secs(3),
        ..RouterConfig::default()
    }
}

/// An HTTP service on port 0 over these backends, with these weights.
pub fn http_service(app: &str, backends: &[&TestBackend], weights: &[(&str, u32)]) -> Service {
    Service {
        app: app.to_owned(),
        port: 0,
        bind: None,
        protocol: Protocol::Http,
        preview: None,
        backends: backends.iter().map(|b| b.as_backend()).collect(),
        weights: weights
            .iter()
            .map(|(v, w)| ((*v).to_owned(), *w))
            .collect::<BTreeMap<_, _>>(),
    }
}

pub fn table(services: Vec<Service>) -> RouteTable {
    RouteTable { services }
}

pub type TestClient = Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>;

/// A keep-alive HTTP client.
pub fn client() -> TestClient {
    Client::builder(TokioExecutor::new()).build_http()
}

/// GET `path` at `addr`: status and body.
pub async fn get(client: &TestClient, addr: SocketAddr, path: &str) -> (u16, String) {
    let uri = format!("http://{addr}{path}");
    let response = client
        .get(uri.parse().expect("a valid uri"))
        .await
        .expect("the router answers");
    let status = response.status().as_u16();
    let body = response
        .into_body()
        .collect()
        .await
        .expect("a whole body")
        .to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// A port nothing listens on (bound, then released).
pub async fn dead_addr() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind a loopback port");
    listener.local_addr().expect("a bound address")
}

/// Polls `check` every 10 ms until it holds, for at most `within`.
pub async fn eventually(within: Duration, mut check: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if check() {
            return true;
        }
        if tokio::time::Instant::now() > deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}
