//! The service framework as a process against a real (in-process) master
//! and agent: an app of busybox httpd instances is deployed, served through
//! the router, and rolled to a new version under a steady load without a
//! failed request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_service::serve::{ServeConfig, serve};
use berth_tests::Cluster;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One HTTP/1.1 request on a fresh connection: (status, body).
async fn http(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, String)> {
    let mut s = tokio::time::timeout(Duration::from_secs(5), tokio::net::TcpStream::connect(addr))
        .await??;
    let body = body.map(Value::to_string).unwrap_or_default();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nhost: {addr}\r\nconnection: close\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(10), s.read_to_end(&mut out)).await??;
    let text = String::from_utf8_lossy(&out).to_string();
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| anyhow::anyhow!("no status line: {text:?}"))?;
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((text.as_str(), ""));
    // busybox's CGI answers are chunked.
    let chunked = head
        .lines()
        .any(|l| l.to_ascii_lowercase().starts_with("transfer-encoding:") && l.contains("chunked"));
    Ok((
        status,
        if chunked {
            berth_tests::dechunk(body)
        } else {
            body.to_string()
        },
    ))
}

async fn json_of(
    addr: SocketAddr,
    method: &str,
    path: &str,
    body: Option<&Value>,
) -> anyhow::Result<(u16, Value)> {
    let (status, text) = http(addr, method, path, body).await?;
    Ok((
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    ))
}

/// Waits until deployment `id` ends; its result.
async fn deployed(api: SocketAddr, id: &str, within: Duration) -> anyhow::Result<Value> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let (status, d) = json_of(api, "GET", &format!("/v2/deployments/{id}"), None).await?;
        anyhow::ensure!(status == 200, "GET deployment: {status} {d}");
        if d["berth"]["result"] != "running" {
            return Ok(d["berth"]["result"].clone());
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "deployment {id} still running: {d}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

fn site(version: &str, service_port: u16) -> Value {
    json!({
        "id": "/site",
        "cmd": format!("mkdir -p www && echo {version} > www/index.html && exec busybox httpd -f -p 127.0.0.1:$PORT0 -h www"),
        "cpus": 0.1,
        "mem": 32,
        "instances": 2,
        "portDefinitions": [{"port": service_port, "name": "http"}],
        "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/", "portIndex": 0,
                          "gracePeriodSeconds": 10, "intervalSeconds": 2,
                          "timeoutSeconds": 1, "maxConsecutiveFailures": 3,
                          "delaySeconds": 1}],
        "upgradeStrategy": {"minimumHealthCapacity": 1, "maximumOverCapacity": 0.5},
        "backoffSeconds": 1
    })
}

/// A master, an agent and the service framework with its router, in this
/// process.
struct Harness {
    cluster: Cluster,
    api: SocketAddr,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    served: tokio::task::JoinHandle<Result<(), berth_service::serve::ServeError>>,
}

impl Harness {
    /// `None` (with a notice) when busybox is missing outside CI. The
    /// agent offers host ports `ports` (tests running at once need ranges
    /// of their own: their instances share the machine).
    async fn start(ports: &str) -> anyhow::Result<Option<Harness>> {
        if which_busybox().is_none() {
            assert!(
                std::env::var_os("CI").is_none(),
                "CI is set but busybox is not installed"
            );
            eprintln!("skipping: busybox is not installed");
            return Ok(None);
        }
        berth_tests::init_logging();
        let cluster =
            Cluster::start(&[&format!("cpus:4;mem:2048;disk:1024;ports:[{ports}]")]).await?;
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
        // The API answers once the lease is held.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        while http(api, "GET", "/ping", None).await.is_err() {
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "the API did not come up"
            );
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Ok(Some(Harness {
            cluster,
            api,
            stop: Some(stop),
            served,
        }))
    }

    /// Stops the framework (it must end cleanly), then the agents.
    async fn stop(mut self) -> anyhow::Result<()> {
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

/// Requests `path` through the router every 20 ms until `stop`: the
/// statuses seen, in order.
fn load(
    front: SocketAddr,
    path: &'static str,
    stop: Arc<AtomicBool>,
) -> tokio::task::JoinHandle<Vec<Result<u16, String>>> {
    tokio::spawn(async move {
        let mut seen = Vec::new();
        while !stop.load(Ordering::Relaxed) {
            seen.push(match http(front, "GET", path, None).await {
                Ok((status, _)) => Ok(status),
                Err(e) => Err(e.to_string()),
            });
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        seen
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_deployed_routed_and_rolled_without_failed_requests() -> anyhow::Result<()> {
    let Some(h) = Harness::start("31000-31099").await? else {
        return Ok(());
    };
    let api = h.api;
    let service_port = berth_tests::free_port();
    let (status, created) =
        json_of(api, "POST", "/v2/apps", Some(&site("v1", service_port))).await?;
    anyhow::ensure!(status == 201, "POST /v2/apps: {status} {created}");
    let dep = created["deployments"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let result = deployed(api, &dep, Duration::from_secs(60)).await?;
    assert_eq!(result["state"], "succeeded", "{result}");
    let front: SocketAddr = format!("127.0.0.1:{service_port}").parse()?;
    let (status, body) = http(front, "GET", "/", None).await?;
    assert_eq!((status, body.trim()), (200, "v1"));
    let (_, tasks) = json_of(api, "GET", "/v2/apps/site/tasks", None).await?;
    assert_eq!(tasks["tasks"].as_array().map(Vec::len), Some(2), "{tasks}");

    // A steady load through the router while v2 rolls out.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(front, "/", stop.clone());
    let (status, updated) =
        json_of(api, "PUT", "/v2/apps/site", Some(&site("v2", service_port))).await?;
    anyhow::ensure!(status == 200, "PUT /v2/apps/site: {status} {updated}");
    let dep = updated["deploymentId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let result = deployed(api, &dep, Duration::from_secs(90)).await?;
    assert_eq!(result["state"], "succeeded", "{result}");
    stop.store(true, Ordering::Relaxed);
    let seen = running.await?;
    let (status, body) = http(front, "GET", "/", None).await?;
    assert_eq!((status, body.trim()), (200, "v2"));
    let failed: Vec<_> = seen.iter().filter(|s| **s != Ok(200)).collect();
    eprintln!(
        "rolling update under load: {} requests, {} failed",
        seen.len(),
        failed.len()
    );
    assert!(seen.len() > 20, "the load ran");
    assert!(
        failed.is_empty(),
        "failed requests during the rollout: {failed:?}"
    );
    h.stop().await
}

/// A CGI page that answers 500 to about one request in `one_in` (never
/// with 0), and a static index for the health check.
fn cgi_site(version: &str, one_in: u32, service_port: u16) -> Value {
    let fail = if one_in == 0 {
        String::new()
    } else {
        format!(
            "if [ $((RANDOM %% {one_in})) = 0 ]; then echo \"Status: 500 Internal Server Error\"; fi\\n"
        )
    };
    let mut app = site(version, service_port);
    app["cmd"] = Value::String(format!(
        "mkdir -p www/cgi-bin && printf '#!/bin/busybox sh\\n{fail}echo \"Content-Type: text/plain\"\\necho\\necho {version}\\n' > www/cgi-bin/page && chmod +x www/cgi-bin/page && echo ok > www/index.html && exec busybox httpd -f -p 127.0.0.1:$PORT0 -h www"
    ));
    app["deployment"] = json!({
        "strategy": "canary",
        "canary": {
            "steps": [{"weight": 20}, {"pause": 60}, {"weight": 100}],
            "analysis": {"intervalSeconds": 3, "minRequests": 5, "maxErrorRate": 0.05}
        }
    });
    app.as_object_mut().map(|o| o.remove("upgradeStrategy"));
    app
}

/// The canary bar in small: a canary that answers 500 to one
/// request in five is rolled back by the router's own measurements, and
/// the stable version goes on serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_canary_that_fails_one_request_in_five_is_rolled_back() -> anyhow::Result<()> {
    let Some(h) = Harness::start("31100-31199").await? else {
        return Ok(());
    };
    let api = h.api;
    let service_port = berth_tests::free_port();
    let front: SocketAddr = format!("127.0.0.1:{service_port}").parse()?;
    let (status, created) = json_of(
        api,
        "POST",
        "/v2/apps",
        Some(&cgi_site("v1", 0, service_port)),
    )
    .await?;
    anyhow::ensure!(status == 201, "POST /v2/apps: {status} {created}");
    let dep = created["deployments"][0]["id"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert_eq!(
        deployed(api, &dep, Duration::from_secs(60)).await?["state"],
        "succeeded"
    );
    let (status, body) = http(front, "GET", "/cgi-bin/page", None).await?;
    assert_eq!((status, body.trim()), (200, "v1"));

    let stop = Arc::new(AtomicBool::new(false));
    let running = load(front, "/cgi-bin/page", stop.clone());
    let (status, updated) = json_of(
        api,
        "PUT",
        "/v2/apps/site",
        Some(&cgi_site("v2", 5, service_port)),
    )
    .await?;
    anyhow::ensure!(status == 200, "PUT /v2/apps/site: {status} {updated}");
    let dep = updated["deploymentId"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let started = tokio::time::Instant::now();
    let result = deployed(api, &dep, Duration::from_secs(60)).await?;
    let took = started.elapsed();
    stop.store(true, Ordering::Relaxed);
    let seen = running.await?;
    assert_eq!(result["state"], "rolledBack", "{result}");
    let errors = seen.iter().filter(|s| **s != Ok(200)).count();
    eprintln!(
        "canary rolled back after {took:?}: {} requests, {errors} errors ({:.1} %): {}",
        seen.len(),
        100.0 * errors as f64 / seen.len().max(1) as f64,
        result["why"]
    );
    // The stable version serves alone again.
    for _ in 0..20 {
        let (status, body) = http(front, "GET", "/cgi-bin/page", None).await?;
        assert_eq!((status, body.trim()), (200, "v1"));
    }
    let (_, app) = json_of(api, "GET", "/v2/apps/site", None).await?;
    assert!(
        app["app"]["cmd"]
            .as_str()
            .unwrap_or_default()
            .contains("echo v1"),
        "{app}"
    );
    h.stop().await
}

fn which_busybox() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join("busybox"))
        .find(|p| p.is_file())
}
