//! The TCP proxy: echo through the router, and draining of open
//! connections.

use std::time::Duration;

use berth_router::{DrainOutcome, Protocol, Service};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;

use crate::support::*;

fn tcp_service(backends: &[&TestBackend]) -> Service {
    Service {
        protocol: Protocol::Tcp,
        ..http_service("/db", backends, &[])
    }
}

/// Connects through the router: the backend's greeting, and the stream.
async fn connect(addr: std::net::SocketAddr) -> (String, BufReader<TcpStream>) {
    let mut stream = BufReader::new(TcpStream::connect(addr).await.expect("the router accepts"));
    let mut greeting = String::new();
    stream.read_line(&mut greeting).await.expect("a greeting");
    (greeting.trim().to_owned(), stream)
}

async fn echo(stream: &mut BufReader<TcpStream>, line: &str) -> String {
    stream
        .get_mut()
        .write_all(format!("{line}\n").as_bytes())
        .await
        .expect("write through the router");
    let mut back = String::new();
    stream.read_line(&mut back).await.expect("the echo");
    back.trim().to_owned()
}

#[tokio::test]
async fn tcp_echo_and_draining() {
    let first = TestBackend::tcp_echo("t1", "v1").await;
    let second = TestBackend::tcp_echo("t2", "v2").await;
    let (router, _shutdown) = router(test_config()).await;
    router
        .apply(table(vec![tcp_service(&[&first])]))
        .await
        .unwrap();
    let addr = router.bound("/db").unwrap();
    let (greeting, mut old) = connect(addr).await;
    assert_eq!(greeting, "t1");
    assert_eq!(echo(&mut old, "hello").await, "hello");
    assert_eq!(router.in_flight("t1"), 1);

    router
        .apply(table(vec![tcp_service(&[&second])]))
        .await
        .unwrap();
    assert_eq!(router.draining().len(), 1);
    let (greeting, mut new) = connect(addr).await;
    assert_eq!(
        greeting, "t2",
        "a new connection went to the removed backend"
    );
    assert_eq!(echo(&mut new, "world").await, "world");
    // The old connection still works while it drains.
    assert_eq!(echo(&mut old, "still here").await, "still here");
    assert_eq!(
        router.wait_drained("t1", Duration::from_millis(50)).await,
        DrainOutcome::TimedOut { in_flight: 1 }
    );
    drop(old);
    assert_eq!(
        router.wait_drained("t1", Duration::from_secs(5)).await,
        DrainOutcome::Drained
    );
    drop(new);
    assert!(eventually(Duration::from_secs(2), || router.in_flight("t2") == 0).await);
    let stats = router.stats("/db").unwrap();
    assert_eq!(stats.version("v1").tcp_connections, 1);
    assert_eq!(stats.version("v2").tcp_connections, 1);
    assert_eq!(
        stats.version("v1").bytes_in,
        "hello\nstill here\n".len() as u64
    );
}

#[tokio::test]
async fn tcp_connect_failure_is_retried() {
    let live = TestBackend::tcp_echo("live", "v1").await;
    let (router, _shutdown) = router(test_config()).await;
    let mut service = tcp_service(&[&live]);
    service.backends.push(berth_router::Backend {
        instance: "dead".into(),
        version: "v0".into(),
        addr: dead_addr().await,
    });
    service.weights = [("v0".to_owned(), 1), ("v1".to_owned(), 1)].into();
    router.apply(table(vec![service])).await.unwrap();
    let addr = router.bound("/db").unwrap();
    for _ in 0..4 {
        let (greeting, _stream) = connect(addr).await;
        assert_eq!(greeting, "live");
    }
    let stats = router.stats("/db").unwrap();
    assert_eq!(stats.version("v0").tcp_connect_failures, 2);
    assert_eq!(stats.version("v1").tcp_connections, 4);
}
