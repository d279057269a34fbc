//! The admin endpoint: health, Prometheus text, the applied routes.

use berth_router::RouterConfig;

use crate::support::*;

#[tokio::test]
async fn admin_serves_metrics_health_and_routes() {
    let b = TestBackend::http("b", "v1").await;
    let (router, _shutdown) = router(RouterConfig {
        admin_addr: Some("127.0.0.1:0".parse().unwrap()),
        ..test_config()
    })
    .await;
    router
        .apply(table(vec![http_service("/shop/web", &[&b], &[])]))
        .await
        .unwrap();
    let addr = router.bound("/shop/web").unwrap();
    let admin = router.admin_addr().unwrap();
    let client = client();
    for _ in 0..3 {
        get(&client, addr, "/").await;
    }
    get(&client, addr, "/status/500").await;

    assert_eq!(
        get(&client, admin, "/healthz").await,
        (200, "ok\n".to_owned())
    );

    let (status, text) = get(&client, admin, "/metrics").await;
    assert_eq!(status, 200);
    let mut samples = std::collections::BTreeMap::new();
    for line in text.lines() {
        if line.starts_with('#') {
            assert!(
                line.starts_with("# HELP ") || line.starts_with("# TYPE "),
                "{line}"
            );
            continue;
        }
        let (series, value) = line.rsplit_once(' ').expect("a sample line");
        let value: f64 = value.parse().expect("a number");
        samples.insert(series.to_owned(), value);
    }
    let l = "app=\"/shop/web\",version=\"v1\"";
    assert_eq!(
        samples[&format!("berth_router_requests_total{{{l},code_class=\"2xx\"}}")],
        3.0
    );
    assert_eq!(
        samples[&format!("berth_router_requests_total{{{l},code_class=\"5xx\"}}")],
        1.0
    );
    assert_eq!(
        samples[&format!("berth_router_request_duration_seconds_count{{{l}}}")],
        4.0
    );
    assert_eq!(
        samples[&format!("berth_router_request_duration_seconds_bucket{{{l},le=\"+Inf\"}}")],
        4.0
    );
    assert_eq!(samples[&format!("berth_router_backends{{{l}}}")], 1.0);
    assert_eq!(samples[&format!("berth_router_in_flight{{{l}}}")], 0.0);

    let (status, json) = get(&client, admin, "/v1/routes").await;
    assert_eq!(status, 200);
    let routes: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(routes["table"]["services"][0]["app"], "/shop/web");
    assert_eq!(
        routes["report"]["services"]["/shop/web"]["main"]["bound"],
        addr.to_string()
    );
    assert_eq!(routes["draining"].as_array().unwrap().len(), 0);
}
