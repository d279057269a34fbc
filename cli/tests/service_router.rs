//! `berth router`, the standalone router, as real processes: three
//! `berth master`s, an agent, two `berth service serve` instances (active
//! and standby) and a `berth router` on another loopback address
//! (127.0.0.2) serving the app's service port from the published routes.
//!
//! 1. A SIGKILL of the active framework instance in the middle of a
//!    rolling update, under load through the standalone router: not one
//!    request fails, and the standby finishes the deployment.
//! 2. A SIGKILL of the standalone router in the middle of the next update,
//!    then a restart: it serves again from the published routes, no
//!    request through it fails from then on, and the deployment finishes.
//!    A SIGTERM stops it gracefully; its statistics record goes with it.
//!
//! After each deployment exactly the wanted instances run, all of the new
//! version, and the master launched no task twice and lost none.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use berth_sdk::kv::{KvClient, KvOptions};
use berth_tests::http::{json as http_json, request};
use berth_tests::{ChildProcess, free_port};
use serde_json::Value;

mod common;
use common::service::{
    busybox_present, check_settled, create_v1, ended, load, midway, pair, until, update,
};
use common::{BERTH, TermOnDrop, log_file};

const EDGE: &str = "127.0.0.2";

fn router(addrs: &[String], dir: &Path, run: usize) -> TermOnDrop {
    TermOnDrop(ChildProcess(
        Command::new(BERTH)
            .args(["router", "--master", &addrs.join(",")])
            .args(["--bind", EDGE, "--admin", "127.0.0.1:0"])
            .args(["--instance", "edge-1"])
            .stdout(Stdio::null())
            .stderr(log_file(dir, &format!("router-{run}")))
            .spawn()
            .expect("berth router starts"),
    ))
}

/// Until `front` answers 200 (the router applied a table with backends).
async fn serving(front: SocketAddr, dir: &Path) {
    until(
        Duration::from_secs(30),
        dir,
        "the standalone router serves",
        || async { matches!(request(front, "GET", "/", None).await, Ok((200, _))).then_some(()) },
    )
    .await;
}

/// The requests the standalone router's published record counts for
/// `/site`, over its versions.
async fn published_requests(kv: &KvClient) -> Option<u64> {
    let entry = kv.get("router-stats/edge-1").await.ok()??;
    let record: Value = serde_json::from_slice(&entry.value).ok()?;
    let versions = record["apps"]["/site"].as_object()?;
    Some(
        versions
            .values()
            .filter_map(|v| v["requests"].as_u64())
            .sum(),
    )
}

/// Waits until the deployment `dep` succeeded through `api`, then stops
/// the load: the requests it sent and those that failed.
async fn finish(
    api: SocketAddr,
    dep: &str,
    stop: Arc<AtomicBool>,
    running: tokio::task::JoinHandle<(usize, Vec<String>)>,
    dir: &Path,
) -> anyhow::Result<(usize, Vec<String>)> {
    let result = until(Duration::from_secs(90), dir, "the deployment", || {
        ended(api, dep)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let done = running.await?;
    assert_eq!(result["state"], "succeeded", "{result}");
    Ok(done)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_standalone_router_serves_through_failovers() -> anyhow::Result<()> {
    if !busybox_present() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut p = pair(dir.path(), "cpus:8;mem:8192;ports:[31900-31999]").await?;
    let (addrs, api_a, api_b) = (p.addrs.clone(), p.api_a, p.api_b);
    let mut edge = Some(router(&addrs, dir.path(), 1));

    let service_port = free_port();
    let front: SocketAddr = format!("{EDGE}:{service_port}").parse()?;
    create_v1(api_a, service_port, dir.path()).await?;
    serving(front, dir.path()).await;

    // 1. SIGKILL the active instance mid-update, under load through the
    //    standalone router.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(front, stop.clone());
    let (dep, v2) = update(api_a, "v2", service_port).await?;
    midway(api_a, &dep, dir.path()).await;
    drop(p.active.take());
    let (sent, failed) = finish(api_b, &dep, stop, running, dir.path()).await?;
    eprintln!(
        "through the framework's SIGKILL: {sent} requests through the standalone router, {} failed",
        failed.len()
    );
    assert!(sent > 50, "the load ran");
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    // No instance lost or duplicated: 3 of v1 then 3 of v2 were launched.
    let v2_instances = check_settled(api_b, &addrs, &v2, 6, dir.path()).await;
    let (status, body) = request(front, "GET", "/", None).await?;
    assert_eq!((status, body.trim()), (200, "v2"), "the router follows b");
    // Its statistics are published for the framework's canary analysis.
    let kv = KvClient::connect(addrs.clone(), "service", KvOptions::default()).await?;
    let counted = until(
        Duration::from_secs(10),
        dir.path(),
        "the router's record",
        || async { published_requests(&kv).await.filter(|n| *n >= 50) },
    )
    .await;
    assert!(counted >= 50, "{counted}");

    // 2. SIGKILL the standalone router mid-update, start it again.
    let (dep, v3) = update(api_b, "v3", service_port).await?;
    midway(api_b, &dep, dir.path()).await;
    if let Some(r) = edge.take() {
        common::signal(&r.0, "KILL");
    }
    edge = Some(router(&addrs, dir.path(), 2));
    serving(front, dir.path()).await;
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(front, stop.clone());
    let (sent, failed) = finish(api_b, &dep, stop, running, dir.path()).await?;
    eprintln!(
        "after the router's restart: {sent} requests through it, {} failed",
        failed.len()
    );
    assert!(sent > 10, "the load ran");
    assert!(failed.is_empty(), "requests failed: {failed:?}");
    let (status, body) = request(front, "GET", "/", None).await?;
    assert_eq!(
        (status, body.trim()),
        (200, "v3"),
        "the restarted router follows"
    );
    // The router's SIGKILL lost or duplicated no instance either.
    let v3_instances = check_settled(api_b, &addrs, &v3, 9, dir.path()).await;
    assert!(
        v3_instances.is_disjoint(&v2_instances),
        "every instance was replaced"
    );

    let (status, r) = http_json(api_b, "DELETE", "/v2/apps/site", None).await?;
    anyhow::ensure!(status == 200, "DELETE: {status} {r}");
    // SIGTERM: the router stops gracefully and withdraws its record.
    if let Some(mut r) = edge.take() {
        common::signal(&r.0, "TERM");
        let status = until(
            Duration::from_secs(15),
            dir.path(),
            "the router exits",
            || std::future::ready(r.0.0.try_wait().ok().flatten()),
        )
        .await;
        assert!(status.success(), "the router exited with {status}");
    }
    assert!(
        kv.get("router-stats/edge-1").await?.is_none(),
        "the stopped router's record is gone"
    );
    drop(p);
    Ok(())
}
