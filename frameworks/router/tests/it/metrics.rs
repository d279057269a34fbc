//! Counters and latency against what the test sent.

use std::time::{Duration, Instant};

use berth_router::histogram::{bucket_of, upper_bound};
use futures::future::join_all;

use crate::support::*;

#[tokio::test]
async fn counts_match_what_was_sent() {
    let good = TestBackend::http("good", "v1").await;
    let (router, _shutdown) = router(test_config()).await;
    let mut service = http_service("/web", &[&good], &[("v1", 50), ("dead", 50)]);
    service.backends.push(berth_router::Backend {
        instance: "gone".into(),
        version: "dead".into(),
        addr: dead_addr().await,
    });
    router.apply(table(vec![service])).await.unwrap();
    let addr = router.bound("/web").unwrap();
    let before = router.stats("/web").unwrap();
    let client = client();
    for _ in 0..14 {
        assert_eq!(get(&client, addr, "/").await.0, 200);
    }
    for _ in 0..6 {
        assert_eq!(get(&client, addr, "/status/503").await.0, 503);
    }
    assert_eq!(get(&client, addr, "/status/404").await.0, 404);
    let interval = berth_router::diff(&router.stats("/web").unwrap(), &before);
    let v1 = interval.version("v1");
    let dead = interval.version("dead");
    assert_eq!(interval.client_requests, 21);
    // Smooth 50/50 weighting alternates first picks, starting with "dead"
    // (versions in name order): 11 of 21, each then retried on v1.
    assert_eq!(dead.requests, 11);
    assert_eq!(dead.connect_failures, 11);
    assert_eq!(interval.retries, 11);
    assert_eq!(interval.failed, 0);
    assert_eq!(v1.requests, 21);
    assert_eq!(v1.responses.success, 14);
    assert_eq!(v1.responses.server_error, 6);
    assert_eq!(v1.responses.client_error, 1);
    assert_eq!(v1.errors(), 6);
    assert_eq!(v1.latency.count(), 21);
    assert_eq!(dead.error_rate(), Some(1.0));
}

#[tokio::test]
async fn p99_is_within_bucket_precision_of_real_latencies() {
    let b = TestBackend::http("b", "v1").await;
    let (router, _shutdown, addr) = web_router(&[&b]).await;
    let client = client();
    // 100 requests: 98 fast, 2 taking 300 ms; the p99 is a slow one.
    let delays: Vec<u64> = (0..100)
        .map(|i| if i % 50 == 7 { 300 } else { 1 })
        .collect();
    let measured = join_all(delays.iter().map(|ms| {
        let client = client.clone();
        async move {
            let start = Instant::now();
            assert_eq!(get(&client, addr, &format!("/slow/{ms}")).await.0, 200);
            start.elapsed()
        }
    }))
    .await;
    let mut micros: Vec<u64> = measured.iter().map(|d| d.as_micros() as u64).collect();
    micros.sort_unstable();
    let p99 = router
        .stats("/web")
        .unwrap()
        .version("v1")
        .quantile(0.99)
        .unwrap();
    // The router times each request from sending to the end of its body,
    // inside what the client measured: its p99 lies between the backend's
    // delay and the bucket holding the client's own p99.
    assert!(p99 >= Duration::from_millis(300), "{p99:?}");
    let client_p99 = micros[98];
    assert!(
        p99 <= Duration::from_micros(upper_bound(bucket_of(client_p99))),
        "router p99 {p99:?}, client p99 {client_p99} µs"
    );
}
