//! The service framework through failures, as real processes: three
//! `berth master`s, an agent, and two `berth service serve` instances (one
//! active, one standby). A rolling deployment goes on through a SIGKILL of
//! the active framework instance (and with it its router), and another
//! through a SIGKILL of the leading master; afterwards exactly the wanted
//! instances run, every one of the new version, and no task was launched
//! twice or left behind.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use berth_tests::free_port;
use berth_tests::http::{json as http_json, request};

mod common;
use common::service::{
    busybox_present, check_settled, create_v1, ended, load, master_tasks, midway, pair, until,
    update,
};
use common::{leader, signal};

/// The lease's time to live (`berth_service::serve::LEASE_TTL`): the
/// standby takes over at most this long after the active one died, plus
/// its polling and loading.
const TAKEOVER_WITHIN: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deployments_go_on_through_a_framework_and_a_master_kill() -> anyhow::Result<()> {
    if !busybox_present() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let mut p = pair(dir.path(), "cpus:8;mem:8192;ports:[31500-31599]").await?;
    let (addrs, api_a, api_b) = (p.addrs.clone(), p.api_a, p.api_b);
    // The standby answers, and says what it is.
    let (status, body) = until(Duration::from_secs(10), dir.path(), "b answers", || async {
        request(api_b, "GET", "/v2/apps", None).await.ok()
    })
    .await;
    assert_eq!(status, 503, "{body}");
    assert!(body.contains("standby"), "{body}");

    let service_port = free_port();
    let front: SocketAddr = format!("127.0.0.1:{service_port}").parse()?;
    create_v1(api_a, service_port, dir.path()).await?;

    // 1. SIGKILL the active instance (its router goes with it) in the middle
    //    of a rolling update; the standby takes over and finishes it.
    //    The router runs in the framework's process, so the service port
    //    is down until the standby has taken over: measured, not asserted.
    let stop = Arc::new(AtomicBool::new(false));
    let running = load(front, stop.clone());
    let (dep, v2) = update(api_a, "v2", service_port).await?;
    midway(api_a, &dep, dir.path()).await;
    let killed_at = Instant::now();
    drop(p.active.take());
    until(TAKEOVER_WITHIN, dir.path(), "instance b active", || async {
        matches!(request(api_b, "GET", "/ping", None).await, Ok((200, _))).then_some(())
    })
    .await;
    let took_over = killed_at.elapsed();
    let result = until(Duration::from_secs(90), dir.path(), "v2 deployed", || {
        ended(api_b, &dep)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = running.await?;
    assert_eq!(result["state"], "succeeded", "{result}");
    eprintln!(
        "through the framework's SIGKILL: {sent} requests, {} failed while no router ran",
        failed.len()
    );
    let v2_instances = check_settled(api_b, &addrs, &v2, 6, dir.path()).await;
    let (status, body) = request(front, "GET", "/", None).await?;
    assert_eq!((status, body.trim()), (200, "v2"), "b's router serves v2");
    eprintln!("the standby took over {took_over:?} after the active instance's SIGKILL");

    // 2. SIGKILL the leading master in the middle of the next update, under
    //    load through the router: the deployment goes on, no request fails.
    stop.store(false, Ordering::Relaxed);
    let running = load(front, stop.clone());
    let (dep, v3) = update(api_b, "v3", service_port).await?;
    midway(api_b, &dep, dir.path()).await;
    let id = leader(&addrs).await.expect("a leader");
    let leader_ix = usize::try_from(id)? - 1;
    if let Some(m) = &p.masters[leader_ix] {
        signal(m, "KILL");
    }
    p.masters[leader_ix] = None;
    let result = until(Duration::from_secs(90), dir.path(), "v3 deployed", || {
        ended(api_b, &dep)
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let (sent, failed) = running.await?;
    assert_eq!(result["state"], "succeeded", "{result}");
    let v3_instances = check_settled(api_b, &addrs, &v3, 9, dir.path()).await;
    assert!(
        v3_instances.is_disjoint(&v2_instances),
        "every instance was replaced"
    );
    eprintln!(
        "through the master's SIGKILL: {sent} requests, {} failed",
        failed.len()
    );
    assert!(sent > 50, "the load ran");
    assert!(failed.is_empty(), "requests failed: {failed:?}");

    // Remove the app, so no task outlives the test.
    let (status, r) = http_json(api_b, "DELETE", "/v2/apps/site", None).await?;
    anyhow::ensure!(status == 200, "DELETE: {status} {r}");
    until(
        Duration::from_secs(30),
        dir.path(),
        "the app's tasks ended",
        || async {
            let (running, _) = master_tasks(&addrs).await?;
            running.is_empty().then_some(())
        },
    )
    .await;
    drop(p);
    Ok(())
}
