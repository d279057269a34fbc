//! Proxying, weights, switches, retries and errors over HTTP.

use std::time::{Duration, Instant};

use berth_router::{ListenerStatus, Preview, RouterConfig, RouterError};
use bytes::Bytes;
use futures::future::join_all;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;

use crate::support::*;

#[tokio::test]
async fn weighted_split_95_5_within_tolerance() {
    let a1 = TestBackend::http("a1", "v1").await;
    let a2 = TestBackend::http("a2", "v1").await;
    let b1 = TestBackend::http("b1", "v2").await;
    let (router, _shutdown) = router(test_config()).await;
    let service = http_service("/web", &[&a1, &a2, &b1], &[("v1", 95), ("v2", 5)]);
    router.apply(table(vec![service])).await.unwrap();
    let addr = router.bound("/web").unwrap();
    let client = client();
    let mut v2 = 0;
    for chunk in 0..50 {
        let replies = join_all((0..20).map(|_| get(&client, addr, "/"))).await;
        for (status, body) in replies {
            assert_eq!(status, 200, "chunk {chunk}");
            if body.ends_with("v2") {
                v2 += 1;
            }
        }
    }
    // 1,000 requests at 5%: 50 expected; smooth weighting keeps it exact
    // barring retries, the tolerance allows for none being needed.
    assert!((45..=55).contains(&v2), "v2 got {v2} of 1000");
    assert_eq!(a1.hits() + a2.hits() + b1.hits(), 1000);
    assert!(
        a1.hits() > 400 && a2.hits() > 400,
        "least outstanding spreads v1"
    );
}

#[tokio::test]
async fn atomic_switch_sends_no_new_request_to_the_old_version() {
    let old = TestBackend::http("old", "v1").await;
    let new = TestBackend::http("new", "v2").await;
    let (router, _shutdown) = router(test_config()).await;
    let both = [&old, &new];
    router
        .apply(table(vec![http_service(
            "/web",
            &both,
            &[("v1", 100), ("v2", 0)],
        )]))
        .await
        .unwrap();
    let addr = router.bound("/web").unwrap();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let loaders: Vec<_> = (0..8)
        .map(|_| {
            let stop = stop.clone();
            tokio::spawn(async move {
                let client = client();
                let mut seen = Vec::new();
                while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                    let started = Instant::now();
                    let (status, body) = get(&client, addr, "/").await;
                    assert_eq!(status, 200);
                    seen.push((started, body));
                }
                seen
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await;
    router
        .apply(table(vec![http_service(
            "/web",
            &both,
            &[("v1", 0), ("v2", 100)],
        )]))
        .await
        .unwrap();
    let switched = Instant::now();
    tokio::time::sleep(Duration::from_millis(100)).await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let seen: Vec<_> = join_all(loaders)
        .await
        .into_iter()
        .flat_map(|r| r.unwrap())
        .collect();
    let after: Vec<_> = seen.iter().filter(|(t, _)| *t > switched).collect();
    assert!(after.len() > 10, "too few requests after the switch");
    assert!(after.iter().all(|(_, body)| body == "new v2"));
    assert!(seen.iter().any(|(_, body)| body == "old v1"));
}

#[tokio::test]
async fn only_backends_in_the_table_get_traffic() {
    let in1 = TestBackend::http("in1", "v1").await;
    let in2 = TestBackend::http("in2", "v1").await;
    let out = TestBackend::http("out", "v1").await;
    let (_router, _shutdown, addr) = web_router(&[&in1, &in2]).await;
    let client = client();
    for _ in 0..50 {
        assert_eq!(get(&client, addr, "/").await.0, 200);
    }
    assert_eq!(out.hits(), 0);
    assert_eq!(in1.hits() + in2.hits(), 50);
}

#[tokio::test]
async fn a_backend_killed_under_load_loses_no_request() {
    let backends = [
        TestBackend::http("k1", "v1").await,
        TestBackend::http("k2", "v1").await,
        TestBackend::http("k3", "v1").await,
    ];
    let (router, _shutdown) = router(test_config()).await;
    let refs: Vec<&TestBackend> = backends.iter().collect();
    router
        .apply(table(vec![http_service("/web", &refs, &[])]))
        .await
        .unwrap();
    let addr = router.bound("/web").unwrap();
    let workers: Vec<_> = (0..16)
        .map(|_| {
            tokio::spawn(async move {
                let client = client();
                let mut failures = 0;
                for _ in 0..60 {
                    if get(&client, addr, "/slow/2").await.0 != 200 {
                        failures += 1;
                    }
                }
                failures
            })
        })
        .collect();
    assert!(eventually(Duration::from_secs(5), || backends[0].hits() > 50).await);
    backends[0].kill();
    let killed_at = backends[0].hits();
    let failures: u32 = join_all(workers)
        .await
        .into_iter()
        .map(|r| r.unwrap())
        .sum();
    assert_eq!(failures, 0);
    assert!(
        backends[0].hits() <= killed_at + 16,
        "the dead backend kept answering"
    );
    let stats = router.stats("/web").unwrap();
    let v1 = stats.version("v1");
    assert_eq!(stats.failed, 0);
    assert!(
        v1.connect_failures + v1.resets > 0,
        "no try ever hit the dead backend: {v1:?}"
    );
    assert_eq!(stats.retries, v1.connect_failures + v1.resets);
}

#[tokio::test]
async fn no_backend_gets_a_502() {
    let (router, _shutdown) = router(test_config()).await;
    router
        .apply(table(vec![http_service("/empty", &[], &[])]))
        .await
        .unwrap();
    let addr = router.bound("/empty").unwrap();
    let (status, body) = get(&client(), addr, "/").await;
    assert_eq!(status, 502);
    assert_eq!(body, "no backend available\n");
    let stats = router.stats("/empty").unwrap();
    assert_eq!((stats.no_backend, stats.failed), (1, 1));
}

#[tokio::test]
async fn every_try_failing_gets_a_502_after_bounded_retries() {
    let (router, _shutdown) = router(RouterConfig {
        max_retries: 2,
        ..test_config()
    })
    .await;
    let mut service = http_service("/dead", &[], &[]);
    for i in 0..5 {
        service.backends.push(berth_router::Backend {
            instance: format!("d{i}"),
            version: "v1".into(),
            addr: dead_addr().await,
        });
    }
    router.apply(table(vec![service])).await.unwrap();
    let addr = router.bound("/dead").unwrap();
    let (status, body) = get(&client(), addr, "/").await;
    assert_eq!((status, body.as_str()), (502, "upstream failed\n"));
    let stats = router.stats("/dead").unwrap();
    assert_eq!(stats.version("v1").connect_failures, 3);
    assert_eq!(stats.retries, 2);
}

#[tokio::test]
async fn a_slow_backend_gets_a_504() {
    let slow = TestBackend::http("slow", "v1").await;
    let (router, _shutdown) = router(RouterConfig {
        upstream_timeout: Duration::from_millis(200),
        ..test_config()
    })
    .await;
    apply_web(&router, &[&slow]).await;
    let addr = router.bound("/web").unwrap();
    let (status, body) = get(&client(), addr, "/slow/2000").await;
    assert_eq!((status, body.as_str()), (504, "upstream timed out\n"));
    assert_eq!(router.stats("/web").unwrap().version("v1").timeouts, 1);
}

#[tokio::test]
async fn preview_port_serves_only_its_version() {
    let blue = TestBackend::http("blue", "v1").await;
    let green = TestBackend::http("green", "v2").await;
    let (router, _shutdown) = router(test_config()).await;
    let mut service = http_service("/web", &[&blue, &green], &[("v1", 100)]);
    service.preview = Some(Preview {
        port: 0,
        version: "v2".into(),
    });
    let report = router.apply(table(vec![service])).await.unwrap();
    assert!(matches!(
        report.services["/web"].preview,
        Some(ListenerStatus::Bound(_))
    ));
    let main = router.bound("/web").unwrap();
    let preview = router.bound_preview("/web").unwrap();
    assert_ne!(main, preview);
    let client = client();
    for _ in 0..10 {
        assert_eq!(get(&client, main, "/").await.1, "blue v1");
        assert_eq!(get(&client, preview, "/").await.1, "green v2");
    }
}

#[tokio::test]
async fn keep_alive_client_connection_follows_a_table_change() {
    let old = TestBackend::http("old", "v1").await;
    let new = TestBackend::http("new", "v2").await;
    let (router, _shutdown, addr) = web_router(&[&old]).await;
    let stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http1::handshake::<_, Full<Bytes>>(TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let ask = async |sender: &mut hyper::client::conn::http1::SendRequest<Full<Bytes>>| {
        sender.ready().await.unwrap();
        let req = hyper::Request::get("/")
            .header("host", "web")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let response = sender.send_request(req).await.unwrap();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        String::from_utf8(body.to_vec()).unwrap()
    };
    assert_eq!(ask(&mut sender).await, "old v1");
    router
        .apply(table(vec![http_service(
            "/web",
            &[&old, &new],
            &[("v2", 1)],
        )]))
        .await
        .unwrap();
    for _ in 0..5 {
        assert_eq!(ask(&mut sender).await, "new v2");
    }
    assert_eq!(router.bound("/web"), Some(addr), "the listener was kept");
}

#[tokio::test]
async fn applying_the_same_table_twice_changes_nothing() {
    let b = TestBackend::http("b", "v1").await;
    let (router, _shutdown) = router(test_config()).await;
    let t = table(vec![http_service("/web", &[&b], &[])]);
    let first = router.apply(t.clone()).await.unwrap();
    let second = router.apply(t.clone()).await.unwrap();
    assert_eq!(first, second);
    assert_eq!(router.table(), t);
    assert_eq!(
        get(&client(), router.bound("/web").unwrap(), "/").await.0,
        200
    );
}

#[tokio::test]
async fn a_bind_failure_does_not_affect_another_service() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let b = TestBackend::http("b", "v1").await;
    let (router, _shutdown) = router(test_config()).await;
    let mut clash = http_service("/clash", &[&b], &[]);
    clash.port = port;
    let fine = http_service("/fine", &[&b], &[]);
    let report = router.apply(table(vec![clash, fine])).await.unwrap();
    assert!(matches!(
        report.services["/clash"].main,
        ListenerStatus::Failed(_)
    ));
    assert_eq!(router.bound("/clash"), None);
    let addr = router.bound("/fine").unwrap();
    assert_eq!(get(&client(), addr, "/").await, (200, "b v1".to_owned()));
    // Once the port is free, the next apply binds it.
    drop(taken);
    let mut clash = http_service("/clash", &[&b], &[]);
    clash.port = port;
    let report = router
        .apply(table(vec![clash, http_service("/fine", &[&b], &[])]))
        .await
        .unwrap();
    assert!(matches!(
        report.services["/clash"].main,
        ListenerStatus::Bound(_)
    ));
    assert_eq!(router.bound("/fine"), Some(addr));
}

#[tokio::test]
async fn bad_config_and_bad_tables_are_refused() {
    let bad = RouterConfig {
        connect_timeout: Duration::ZERO,
        ..test_config()
    };
    let refused = berth_router::Router::start(bad, berth_router::CancellationToken::new()).await;
    assert!(matches!(refused, Err(RouterError::Config(_))));

    let b = TestBackend::http("b", "v1").await;
    let (router, _shutdown) = router(test_config()).await;
    let good = table(vec![http_service("/web", &[&b], &[])]);
    router.apply(good.clone()).await.unwrap();
    let dup = table(vec![
        http_service("/web", &[&b], &[]),
        http_service("/web", &[&b], &[]),
    ]);
    assert!(router.apply(dup).await.is_err());
    assert_eq!(router.table(), good, "a refused table changes nothing");
}

#[tokio::test]
async fn forwarded_headers_reach_the_backend_and_bodies_stream() {
    let b = TestBackend::http("b", "v1").await;
    let (router, _shutdown, addr) = web_router(&[&b]).await;
    let client = client();
    let (status, headers) = get(&client, addr, "/headers").await;
    assert_eq!(status, 200);
    assert!(headers.contains("x-forwarded-for: 127.0.0.1"), "{headers}");
    assert!(headers.contains("x-forwarded-proto: http"), "{headers}");
    assert!(
        headers.contains("forwarded: for=127.0.0.1;proto=http"),
        "{headers}"
    );
    assert!(!headers.contains("connection:"), "{headers}");

    let payload = vec![b'x'; 300_000];
    let req = hyper::Request::post(format!("http://{addr}/echo"))
        .body(Full::new(Bytes::from(payload.clone())))
        .unwrap();
    let response = client.request(req).await.unwrap();
    assert_eq!(response.headers()["x-berth-version"], "v1");
    let body = response.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(body.len(), payload.len());
    let v1 = router.stats("/web").unwrap().version("v1");
    assert_eq!(v1.bytes_in, 300_000);
}
