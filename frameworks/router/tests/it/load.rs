//! A small load while the table flips between versions every 50 ms.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn load_across_table_changes_has_no_error() {
    let v1 = [
        TestBackend::http("a1", "v1").await,
        TestBackend::http("a2", "v1").await,
    ];
    let v2 = [
        TestBackend::http("b1", "v2").await,
        TestBackend::http("b2", "v2").await,
    ];
    let (router, _shutdown) = router(test_config()).await;
    let all: Vec<&TestBackend> = v1.iter().chain(v2.iter()).collect();
    // Three shapes: all on v1, a 50/50 split, all on v2 with v1 removed.
    let tables = [
        table(vec![http_service("/web", &all[..2], &[])]),
        table(vec![http_service("/web", &all, &[("v1", 1), ("v2", 1)])]),
        table(vec![http_service("/web", &all[2..], &[])]),
    ];
    router.apply(tables[0].clone()).await.unwrap();
    let addr = router.bound("/web").unwrap();
    let applies = Arc::new(AtomicUsize::new(0));
    let flipper = {
        let router = router.clone();
        let tables = tables.clone();
        let applies = applies.clone();
        tokio::spawn(async move {
            loop {
                tokio::time::sleep(Duration::from_millis(50)).await;
                let n = applies.fetch_add(1, Ordering::SeqCst) + 1;
                router.apply(tables[n % 3].clone()).await.unwrap();
                assert_eq!(router.bound("/web"), Some(addr));
            }
        })
    };
    let workers: Vec<_> = (0..32)
        .map(|w| {
            tokio::spawn(async move {
                let client = client();
                let mut errors = Vec::new();
                for i in 0..63 {
                    // Slow enough that the load spans many table changes.
                    let path = if (w + i) % 2 == 0 { "/slow/20" } else { "/" };
                    let (status, body) = get(&client, addr, path).await;
                    if status != 200 {
                        errors.push((status, body));
                    }
                }
                errors
            })
        })
        .collect();
    let mut errors = Vec::new();
    for worker in workers {
        errors.extend(worker.await.unwrap());
    }
    flipper.abort();
    let applies = applies.load(Ordering::SeqCst);
    assert!(
        applies >= 6,
        "the table changed only {applies} times during the load"
    );
    assert!(
        errors.is_empty(),
        "{} errors, first {:?}",
        errors.len(),
        errors.first()
    );
    let stats = router.stats("/web").unwrap();
    assert_eq!(stats.client_requests, 32 * 63);
    assert_eq!(stats.failed, 0);
    assert!(stats.version("v1").requests > 0 && stats.version("v2").requests > 0);
}
