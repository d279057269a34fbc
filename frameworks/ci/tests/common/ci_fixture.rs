//! One CI framework on an in-process cluster, for the tests of the runner
//! (`runner.rs`) and of registered repositories (`repos.rs`): a runner on
//! a data directory (fresh, or one a stopped fixture left, to restart on
//! it), its file routes on a loopback port for the agents, and, when
//! asked, the repository service with its poller.

#![allow(clippy::unwrap_used)]

use std::path::Path;

use berth_ci::exec::repos::{self, Repos, ReposConfig};
use berth_ci::exec::runner::{self, RunnerConfig, RunnerHandle};
use berth_tests::Cluster;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// A running CI framework; [`CiFixture::shut`] stops it.
pub struct CiFixture {
    /// The runner.
    pub handle: RunnerHandle,
    stop: oneshot::Sender<()>,
    runner: JoinHandle<()>,
    server: JoinHandle<()>,
    repos: Option<RepoService>,
}

struct RepoService {
    repos: Repos,
    stop: oneshot::Sender<()>,
    poller: JoinHandle<()>,
}

/// Starts a runner for `cluster` on `data`, its jobs 0.1 cpu and 32 MB
/// unless they ask for more, its config changed by `tune`; serves its
/// file routes (sources, artifacts) on a loopback port.
pub async fn start(
    cluster: &Cluster,
    data: &Path,
    tune: impl FnOnce(&mut RunnerConfig),
) -> CiFixture {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    let mut config = RunnerConfig::new(vec![cluster.master_addr()], data.to_path_buf(), base);
    config.default_cpus = 0.1;
    config.default_mem = 32.0;
    tune(&mut config);
    let (stop, stopped) = oneshot::channel::<()>();
    let (handle, runner) = runner::start(config, async {
        let _ = stopped.await;
    })
    .await
    .unwrap();
    let router = handle.router();
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, router.into_make_service()).await;
    });
    CiFixture {
        handle,
        stop,
        runner,
        server,
        repos: None,
    }
}

impl CiFixture {
    /// Starts the repository service (and its poller) on the runner.
    pub async fn with_repos(mut self, config: ReposConfig) -> CiFixture {
        let (stop, stopped) = oneshot::channel::<()>();
        let (repos, poller) = repos::start(self.handle.clone(), config, async {
            let _ = stopped.await;
        })
        .await
        .unwrap();
        self.repos = Some(RepoService {
            repos,
            stop,
            poller,
        });
        self
    }

    /// The repository service, if started.
    pub fn repos(&self) -> Option<&Repos> {
        self.repos.as_ref().map(|r| &r.repos)
    }

    /// Stops the poller, then the runner, then the file server, and waits
    /// until they are gone, so that a new fixture can open the state file.
    pub async fn shut(self) {
        self.stop_within(None).await;
    }

    /// Waits until the runner stops on its own (it must, within `limit`),
    /// then stops the rest as [`CiFixture::shut`] does.
    pub async fn wait_stopped(self, limit: std::time::Duration) {
        self.stop_within(Some(limit)).await;
    }

    /// Stops the poller, then the runner (asked to, or on its own within
    /// `limit`), then the file server, and waits until they are gone.
    async fn stop_within(mut self, limit: Option<std::time::Duration>) {
        if let Some(service) = self.repos {
            let _ = service.stop.send(());
            let _ = service.poller.await;
        }
        match limit {
            None => {
                let _ = self.stop.send(());
                let _ = (&mut self.runner).await;
            }
            Some(limit) => {
                tokio::time::timeout(limit, &mut self.runner)
                    .await
                    .expect("the runner stops on its own")
                    .unwrap();
            }
        }
        self.server.abort();
        // The server's router holds a handle (and so the state file).
        let _ = self.server.await;
    }
}

/// One request to `router`, with a JSON body when `json` is given; the
/// status and the body.
pub async fn call(
    router: &axum::Router,
    method: &str,
    uri: &str,
    json: Option<serde_json::Value>,
    headers: &[(&str, &str)],
) -> (u16, String) {
    use http_body_util::BodyExt as _;
    use tower::ServiceExt as _;
    let mut builder = axum::http::Request::builder().method(method).uri(uri);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = match json {
        Some(v) => builder
            .header("content-type", "application/json")
            .body(axum::body::Body::from(v.to_string()))
            .unwrap(),
        None => builder.body(axum::body::Body::empty()).unwrap(),
    };
    let response = router.clone().oneshot(request).await.unwrap();
    let status = response.status().as_u16();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}
