//! What the service framework's end-to-end tests share: a master, an agent
//! (process or Docker containerizer) and the framework with its router in
//! this process; plain HTTP requests; waiting for a deployment's end; a
//! load generator that records every request.

// Each test file uses a part of this module.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_service::serve::{ServeConfig, serve};
use berth_tests::Cluster;
use serde_json::Value;
use tokio::time::Instant;

pub use berth_tests::http::{json as json_of, request as http};

/// The deployment id in the answer to `POST /v2/apps` or `PUT
/// /v2/apps/{id}`.
pub fn deployment_id(answer: &Value) -> anyhow::Result<String> {
    answer["deploymentId"]
        .as_str()
        .or_else(|| answer["deployments"][0]["id"].as_str())
        .map(str::to_owned)
        .ok_or_else(|| anyhow::anyhow!("no deployment id in {answer}"))
}

/// Waits until deployment `id` ends; its result.
pub async fn deployed(api: SocketAddr, id: &str, within: Duration) -> anyhow::Result<Value> {
    Ok(wait_deployment(api, id, within, |d| d["berth"]["result"] != "running")
        .await?["berth"]["result"]
        .clone())
}

/// Polls deployment `id` every 100 ms until `until` holds for it, within
/// `within`; the deployment as last read.
pub async fn wait_deployment(
    api: SocketAddr,
    id: &str,
    within: Duration,
    until: impl Fn(&Value) -> bool,
) -> anyhow::Result<Value> {
    let deadline = Instant::now() + within;
    loop {
        let (status, d) = json_of(api, "GET", &format!("/v2/deployments/{id}"), None).await?;
        anyhow::ensure!(status == 200, "GET deployment: {status} {d}");
        if until(&d) {
            return Ok(d);
        }
        anyhow::ensure!(Instant::now() < deadline, "deployment {id} still at {d}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Which containerizer the harness's agent runs instances with.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Instances {
    /// Processes (busybox on the host).
    Process,
    /// Docker containers of [`berth_tests::TEST_IMAGE`].
    Docker,
}

/// A master, an agent and the service framework with its router, in this
/// process.
pub struct Harness {
    pub cluster: Cluster,
    pub api: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), berth_service::serve::ServeError>>,
    /// The Docker agent's work directory: its containers carry it as
    /// their owner label.
    docker_owner: Option<String>,
}

impl Harness {
    /// `None` (with a notice) when busybox, or for `Docker` the daemon or
    /// the test image, is missing outside CI; under CI (`CI` set) that
    /// fails the test. The agent offers host ports `ports` (tests running
    /// at once need ranges of their own: their instances share the
    /// machine).
    pub async fn start(kind: Instances, ports: &str) -> anyhow::Result<Option<Harness>> {
        match kind {
            Instances::Process if which_busybox().is_none() => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "CI is set but busybox is not installed"
                );
                eprintln!("skipping: busybox is not installed");
                return Ok(None);
            }
            Instances::Docker if !berth_tests::docker_ready("the service framework's bars") => {
                return Ok(None);
            }
            _ => {}
        }
        berth_tests::init_logging();
        let resources = format!("cpus:4;mem:2048;disk:1024;ports:[{ports}]");
        let mut cluster = Cluster::start(&[]).await?;
        let owner = cluster.dir.path().join("agent-0").display().to_string();
        cluster
            .add_agent_with(&resources, |c| {
                if kind == Instances::Docker {
                    c.docker = true;
                    c.default_kill_grace = Duration::from_secs(1);
                }
            })
            .await?;
        cluster.wait_agents(1, Duration::from_secs(10)).await?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let api = listener.local_addr()?;
        let config = ServeConfig {
            masters: vec![cluster.master.addr.to_string()],
            name: "service".into(),
            holder: "test-1".into(),
            listen: api,
            router: Some(berth_router::RouterConfig::default()),
        };
        let (stop, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let served = tokio::spawn(serve(config, listener, async move {
            let _ = stop_rx.await;
        }));
        let h = Harness {
            cluster,
            api,
            stop: Some(stop),
            served,
            docker_owner: (kind == Instances::Docker).then_some(owner),
        };
        // The API answers 503 until the lease is held.
        let deadline = Instant::now() + Duration::from_secs(20);
        while !matches!(http(api, "GET", "/ping", None).await, Ok((200, _))) {
            anyhow::ensure!(Instant::now() < deadline, "the API did not come up");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Some(h))
    }

    /// Adds `app` and waits until its first deployment succeeded.
    pub async fn add(&self, app: &Value, within: Duration) -> anyhow::Result<()> {
        let (status, created) = json_of(self.api, "POST", "/v2/apps", Some(app)).await?;
        anyhow::ensure!(status == 201, "POST /v2/apps: {status} {created}");
        let result = deployed(self.api, &deployment_id(&created)?, within).await?;
        anyhow::ensure!(result["state"] == "succeeded", "first deployment: {result}");
        Ok(())
    }

    /// Puts `app` (a new version of an app); its deployment's id.
    pub async fn update(&self, app: &Value) -> anyhow::Result<String> {
        let id = app["id"].as_str().unwrap_or_default();
        let (status, updated) =
            json_of(self.api, "PUT", &format!("/v2/apps{id}"), Some(app)).await?;
        anyhow::ensure!(status == 200, "PUT /v2/apps{id}: {status} {updated}");
        deployment_id(&updated)
    }

    /// Stops the framework (it must end cleanly), then the agents.
    pub async fn stop(mut self) -> anyhow::Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(20), &mut self.served).await???;
        // Stopped (not dropped), the agents kill their tasks: none is left
        // holding a port for the next test.
        for agent in &mut self.cluster.agents {
            agent.stop().await?;
        }
        Ok(())
    }
}

impl Drop for Harness {
    fn drop(&mut self) {
        // A failed test leaves no container behind.
        if let Some(owner) = &self.docker_owner {
            berth_tests::remove_owned_containers(owner);
        }
    }
}

/// One request of the load, as the load generator saw it.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// When it was sent, since the load started.
    pub at: Duration,
    /// How long its answer took.
    pub took: Duration,
    /// The status and the body (trimmed), or why there was no answer.
    pub result: Result<(u16, String), String>,
}

impl Outcome {
    /// A 200 answer.
    pub fn ok(&self) -> bool {
        matches!(&self.result, Ok((200, _)))
    }

    /// The body of a 200 answer.
    pub fn body(&self) -> Option<&str> {
        match &self.result {
            Ok((200, body)) => Some(body),
            _ => None,
        }
    }
}

/// A steady load through the router: `workers` tasks, each sending one
/// `GET path` every `workers / rate` seconds on a fresh connection
/// (`connection: close`), recording every outcome. A worker whose request
/// takes longer than its period sends the next one at once (the rate
/// achieved is reported, not assumed).
pub struct Load {
    stop: Arc<AtomicBool>,
    started: Instant,
    workers: Vec<tokio::task::JoinHandle<Vec<Outcome>>>,
}

impl Load {
    /// Starts the load; see [`Load`].
    pub fn start(front: SocketAddr, path: &'static str, rate: u32, workers: u32) -> Load {
        let stop = Arc::new(AtomicBool::new(false));
        let started = Instant::now();
        let period = Duration::from_secs(u64::from(workers)) / rate.max(1);
        let workers = (0..workers)
            .map(|w| {
                let stop = stop.clone();
                tokio::spawn(async move {
                    // Staggered, so the workers' requests interleave.
                    let first = started + period * w / workers.max(1);
                    let mut tick = tokio::time::interval_at(first, period);
                    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                    let mut seen = Vec::new();
                    while !stop.load(Ordering::Relaxed) {
                        tick.tick().await;
                        let sent = Instant::now();
                        let result = match http(front, "GET", path, None).await {
                            Ok((status, body)) => Ok((status, body.trim().to_owned())),
                            Err(e) => Err(e.to_string()),
                        };
                        seen.push(Outcome {
                            at: sent - started,
                            took: sent.elapsed(),
                            result,
                        });
                    }
                    seen
                })
            })
            .collect();
        Load {
            stop,
            started,
            workers,
        }
    }

    /// How long the load has run.
    pub fn elapsed(&self) -> Duration {
        self.started.elapsed()
    }

    /// Stops the load; every outcome, in the order sent.
    pub async fn stop(self) -> anyhow::Result<Report> {
        self.stop.store(true, Ordering::Relaxed);
        let elapsed = self.started.elapsed();
        let mut outcomes = Vec::new();
        for w in self.workers {
            outcomes.extend(w.await?);
        }
        outcomes.sort_by_key(|o| o.at);
        Ok(Report { outcomes, elapsed })
    }
}

/// What a [`Load`] saw.
#[derive(Debug)]
pub struct Report {
    /// Every request, in the order sent.
    pub outcomes: Vec<Outcome>,
    /// How long the load ran.
    pub elapsed: Duration,
}

impl Report {
    /// The requests sent within `[from, to)` (times since the load
    /// started).
    pub fn between(&self, from: Duration, to: Duration) -> Vec<&Outcome> {
        self.outcomes
            .iter()
            .filter(|o| o.at >= from && o.at < to)
            .collect()
    }

    /// The requests that did not get a 200.
    pub fn failed(&self) -> Vec<&Outcome> {
        self.outcomes.iter().filter(|o| !o.ok()).collect()
    }

    /// Requests per second achieved.
    pub fn rate(&self) -> f64 {
        self.outcomes.len() as f64 / self.elapsed.as_secs_f64().max(f64::EPSILON)
    }

    /// When the first and the last answer (of any status) with `body`
    /// were sent.
    pub fn span_of(&self, body: &str) -> Option<(Duration, Duration)> {
        let mut with = self
            .outcomes
            .iter()
            .filter(|o| matches!(&o.result, Ok((_, b)) if b == body));
        let first = with.next()?.at;
        Some((first, with.next_back().map_or(first, |o| o.at)))
    }

    /// The `p`-quantile of the answers' latency.
    pub fn latency(&self, p: f64) -> Duration {
        let mut took: Vec<Duration> = self.outcomes.iter().map(|o| o.took).collect();
        took.sort();
        let i = ((took.len() as f64 * p).ceil() as usize).saturating_sub(1);
        took.get(i).copied().unwrap_or_default()
    }

    /// One line for the test's output.
    pub fn summary(&self, name: &str) -> String {
        format!(
            "{name}: {} requests in {:.1}s ({:.0}/s), {} failed, p50 {:?}, p99 {:?}",
            self.outcomes.len(),
            self.elapsed.as_secs_f64(),
            self.rate(),
            self.failed().len(),
            self.latency(0.5),
            self.latency(0.99),
        )
    }
}

/// Where busybox is on `PATH`.
pub fn which_busybox() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join("busybox"))
        .find(|p| p.is_file())
}
