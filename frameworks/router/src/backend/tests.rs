use std::net::SocketAddr;

use super::*;

fn state() -> Arc<BackendState> {
    let key = BackendKey {
        app: "/web".into(),
        instance: "i1".into(),
        addr: SocketAddr::from(([127, 0, 0, 1], 1)),
    };
    Arc::new(BackendState::new(key, "v1".into(), Arc::default(), 4))
}

#[test]
fn guards_count_in_flight() {
    let b = state();
    let g1 = b.acquire().unwrap();
    let g2 = b.acquire().unwrap();
    assert_eq!(b.in_flight(), 2);
    drop(g1);
    assert_eq!(b.in_flight(), 1);
    drop(g2);
    assert_eq!(b.in_flight(), 0);
    assert_eq!(b.idle_count(), 0);
}

#[test]
fn an_unrouted_backend_takes_no_new_request() {
    let b = state();
    b.unroute();
    assert!(b.acquire().is_none());
    assert_eq!(b.in_flight(), 0);
    b.route();
    assert!(b.acquire().is_some());
}

#[tokio::test]
async fn wait_idle_resolves_when_the_last_request_ends() {
    let b = state();
    let guard = b.acquire().unwrap();
    b.unroute();
    assert_eq!(b.wait_idle(Duration::from_millis(20)).await, 1);
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move { b.wait_idle(Duration::from_secs(5)).await })
    };
    tokio::time::sleep(Duration::from_millis(20)).await;
    drop(guard);
    assert_eq!(waiter.await.unwrap(), 0);
}
