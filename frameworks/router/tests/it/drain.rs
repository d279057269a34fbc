//! Draining: a removed backend finishes what it has, gets nothing new, and
//! says when it is done; shutdown lets in-flight requests finish.

use std::sync::atomic::Ordering;
use std::time::Duration;

use berth_router::DrainOutcome;

use crate::support::*;

#[tokio::test]
async fn a_removed_backend_finishes_its_slow_request_and_gets_nothing_new() {
    let leaving = TestBackend::http("leaving", "v1").await;
    let staying = TestBackend::http("staying", "v1").await;
    let (router, _shutdown, addr) = web_router(&[&leaving]).await;
    let slow = tokio::spawn(async move { get(&client(), addr, "/slow/1500").await });
    assert!(eventually(Duration::from_secs(3), || router.in_flight("leaving") == 1).await);
    assert_eq!(
        router
            .wait_drained("leaving", Duration::from_millis(10))
            .await,
        DrainOutcome::StillRouted
    );

    apply_web(&router, &[&staying]).await;
    let draining = router.draining();
    assert_eq!(draining.len(), 1);
    assert_eq!(
        (draining[0].instance.as_str(), draining[0].in_flight),
        ("leaving", 1)
    );
    let hits_before = leaving.hits();
    let client = client();
    for _ in 0..20 {
        assert_eq!(
            get(&client, addr, "/").await,
            (200, "staying v1".to_owned())
        );
    }
    assert_eq!(
        leaving.hits(),
        hits_before,
        "new requests reached a removed backend"
    );
    assert_eq!(
        router
            .wait_drained("leaving", Duration::from_millis(50))
            .await,
        DrainOutcome::TimedOut { in_flight: 1 }
    );

    assert_eq!(
        router.wait_drained("leaving", Duration::from_secs(5)).await,
        DrainOutcome::Drained
    );
    assert_eq!(slow.await.unwrap(), (200, "leaving v1".to_owned()));
    assert_eq!(router.in_flight("leaving"), 0);
    assert!(router.draining().is_empty());
    // Its connection was not pooled again: the backend sees it close.
    assert!(
        eventually(Duration::from_secs(2), || leaving
            .open_connections
            .load(Ordering::SeqCst)
            == 0)
        .await
    );
}

#[tokio::test]
async fn idle_pooled_connections_to_a_removed_backend_close() {
    let leaving = TestBackend::http("leaving", "v1").await;
    let staying = TestBackend::http("staying", "v1").await;
    let (router, _shutdown, addr) = web_router(&[&leaving]).await;
    let client = client();
    futures::future::join_all((0..8).map(|_| get(&client, addr, "/slow/50"))).await;
    assert!(leaving.open_connections.load(Ordering::SeqCst) > 0);
    apply_web(&router, &[&staying]).await;
    assert!(
        eventually(Duration::from_secs(2), || leaving
            .open_connections
            .load(Ordering::SeqCst)
            == 0)
        .await,
        "idle keep-alive connections to the removed backend stayed open"
    );
    assert_eq!(
        router.wait_drained("leaving", Duration::from_secs(1)).await,
        DrainOutcome::Drained
    );
}

#[tokio::test]
async fn shutdown_lets_in_flight_requests_finish() {
    let b = TestBackend::http("b", "v1").await;
    let (router, shutdown, addr) = web_router(&[&b]).await;
    let slow = tokio::spawn(async move { get(&client(), addr, "/slow/800").await });
    assert!(eventually(Duration::from_secs(3), || router.in_flight("b") == 1).await);
    shutdown.cancel();
    tokio::time::timeout(Duration::from_secs(5), router.closed())
        .await
        .unwrap();
    assert_eq!(slow.await.unwrap(), (200, "b v1".to_owned()));
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "still accepting"
    );
}

#[tokio::test]
async fn an_instance_listed_under_a_new_version_drains_the_old_one() {
    let x = TestBackend::http("x", "v1").await;
    let (router, _shutdown, addr) = web_router(&[&x]).await;
    let slow = tokio::spawn(async move { get(&client(), addr, "/slow/600").await });
    assert!(eventually(Duration::from_secs(3), || router.in_flight("x") == 1).await);
    let mut relabelled = x.as_backend();
    relabelled.version = "v2".into();
    let mut service = http_service("/web", &[], &[]);
    service.backends.push(relabelled);
    router.apply(table(vec![service])).await.unwrap();
    let draining = router.draining();
    assert_eq!(draining.len(), 1);
    assert_eq!(
        (draining[0].version.as_str(), draining[0].in_flight),
        ("v1", 1)
    );
    assert_eq!(get(&client(), addr, "/").await.0, 200);
    assert_eq!(slow.await.unwrap().0, 200);
    let stats = router.stats("/web").unwrap();
    assert_eq!(stats.version("v1").requests, 1);
    assert_eq!(stats.version("v2").requests, 1);
    assert!(eventually(Duration::from_secs(2), || router.draining().is_empty()).await);
    assert_eq!(
        router.wait_drained("x", Duration::from_millis(10)).await,
        DrainOutcome::StillRouted
    );
}
