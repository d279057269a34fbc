//! The service framework as a process against a real (in-process) master
//! and agent: an app of busybox httpd instances is deployed, served through
//! the router, and rolled to a new version under a steady load without a
//! failed request.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    // Chunked bodies (axum's JSON is not chunked; busybox's is plain).
    Ok((status, body))
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_app_is_deployed_routed_and_rolled_without_failed_requests() -> anyhow::Result<()> {
    if which_busybox().is_none() {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI is set but busybox is not installed"
        );
        eprintln!("skipping: busybox is not installed");
        return Ok(());
    }
    berth_tests::init_logging();
    let cluster = Cluster::start(&["cpus:4;mem:2048;disk:1024;ports:[31000-31099]"]).await?;
    let masters = vec![cluster.master.addr.to_string()];
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let api = listener.local_addr()?;
    let service_port = berth_tests::free_port();
    let config = ServeConfig {
        masters,
        name: "service".into(),
        holder: "test-1".into(),
        listen: api,
        router: Some(berth_router::RouterConfig::default()),
    };
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
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
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let load = {
        let (stop, ok, failed) = (stop.clone(), ok.clone(), failed.clone());
        tokio::spawn(async move {
            let mut errors = Vec::new();
            while !stop.load(Ordering::Relaxed) {
                match http(front, "GET", "/", None).await {
                    Ok((200, _)) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                    }
                    other => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        errors.push(format!("{other:?}"));
                    }
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            errors
        })
    };
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
    let errors = load.await?;
    let (status, body) = http(front, "GET", "/", None).await?;
    assert_eq!((status, body.trim()), (200, "v2"));
    eprintln!(
        "rolling update under load: {} requests answered, {} failed",
        ok.load(Ordering::Relaxed),
        failed.load(Ordering::Relaxed)
    );
    assert!(ok.load(Ordering::Relaxed) > 20, "the load ran");
    assert!(
        errors.is_empty(),
        "failed requests during the rollout: {errors:?}"
    );

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(20), served).await???;
    Ok(())
}

fn which_busybox() -> Option<std::path::PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| std::path::Path::new(d).join("busybox"))
        .find(|p| p.is_file())
}
