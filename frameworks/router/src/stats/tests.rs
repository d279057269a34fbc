use std::sync::atomic::Ordering;

use super::*;

fn record(app: &AppCounters, version: &str, statuses: &[u16], ms: u64) {
    let v = app.version(version);
    for &s in statuses {
        v.requests.fetch_add(1, Ordering::Relaxed);
        v.response(s);
        v.latency.record(Duration::from_millis(ms));
    }
}

#[test]
fn snapshots_count_by_class() {
    let app = AppCounters::default();
    record(&app, "v1", &[200, 204, 301, 404, 500, 503, 101], 5);
    let v1 = app.snapshot("/web").version("v1");
    assert_eq!(v1.requests, 7);
    assert_eq!(
        v1.responses,
        ResponseClasses {
            informational: 1,
            success: 2,
            redirection: 1,
            client_error: 1,
            server_error: 2
        }
    );
    assert_eq!(v1.errors(), 2);
    assert_eq!(v1.latency.count(), 7);
}

#[test]
fn diff_gives_the_interval_error_rate_and_p99() {
    let app = AppCounters::default();
    record(&app, "v1", &[200; 100], 900);
    let first = app.snapshot("/web");
    record(&app, "v1", &[200; 8], 10);
    record(&app, "v1", &[500; 2], 10);
    record(&app, "v2", &[200; 5], 10);
    let second = app.snapshot("/web");
    let interval = diff(&second, &first);
    let v1 = interval.version("v1");
    assert_eq!(v1.requests, 10);
    assert_eq!(v1.error_rate(), Some(0.2));
    // The slow requests before the interval do not show in its p99.
    assert!(v1.quantile(0.99).unwrap() < Duration::from_millis(12));
    assert_eq!(interval.version("v2").requests, 5);
    assert_eq!(interval.version("v3").error_rate(), None);
}

#[test]
fn connection_failures_and_timeouts_are_errors() {
    let stats = VersionStats {
        requests: 10,
        connect_failures: 1,
        timeouts: 2,
        resets: 3,
        ..VersionStats::default()
    };
    assert_eq!(stats.errors(), 6);
    assert_eq!(stats.error_rate(), Some(0.6));
}
