use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_router::histogram::{Histogram, bucket_of};
use berth_router::{Backend, Protocol, RouteTable, Service};

use super::*;

const V1: &str = "2026-01-01T00:00:00.000Z";

fn hist(micros: &[(u64, u64)]) -> Histogram {
    let mut h = Histogram::default();
    for &(value, count) in micros {
        h.buckets[bucket_of(value)] += count;
    }
    h
}

fn source(
    started: u64,
    requests: u64,
    errors: u64,
    h: Histogram,
) -> (u64, BTreeMap<String, (u64, u64, Histogram)>) {
    (
        started,
        BTreeMap::from([(V1.to_owned(), (requests, errors, h))]),
    )
}

#[test]
fn interval_adds_every_source_since_its_baseline() {
    let baseline = Sources::from([
        (String::new(), source(0, 10, 1, hist(&[(1_000, 10)]))),
        (
            "edge-a".to_owned(),
            source(5, 100, 0, hist(&[(1_000, 100)])),
        ),
    ]);
    let now = Sources::from([
        (String::new(), source(0, 30, 2, hist(&[(1_000, 30)]))),
        (
            "edge-a".to_owned(),
            source(5, 180, 3, hist(&[(1_000, 100), (500_000, 80)])),
        ),
        // Restarted after the baseline: counts from zero.
        ("edge-b".to_owned(), source(9, 7, 0, hist(&[(1_000, 7)]))),
    ]);
    let stats = interval(&now, &baseline);
    let v = &stats[&Timestamp::parse_rfc3339(V1).unwrap()];
    assert_eq!(v.requests, 20 + 80 + 7);
    assert_eq!(v.errors, 1 + 3);
    // 80 of 107 took 500 ms: the p99 is theirs, from edge-a's histogram.
    let p99 = v.p99.unwrap();
    assert!(
        p99 >= Duration::from_millis(500) && p99 < Duration::from_millis(600),
        "{p99:?}"
    );
}

#[test]
fn a_restarted_source_is_not_subtracted_from_its_old_counts() {
    let baseline = Sources::from([(
        "edge-a".to_owned(),
        source(5, 1_000, 9, hist(&[(1_000, 1_000)])),
    )]);
    let now = Sources::from([("edge-a".to_owned(), source(6, 4, 1, hist(&[(1_000, 4)])))]);
    let v = &interval(&now, &baseline)[&Timestamp::parse_rfc3339(V1).unwrap()];
    assert_eq!((v.requests, v.errors), (4, 1));
}

#[test]
fn counts_keep_only_nonempty_buckets_and_read_back() {
    let stats = berth_router::VersionStats {
        requests: 3,
        latency: hist(&[(1_000, 2), (70_000, 1)]),
        ..berth_router::VersionStats::default()
    };
    let c = Counts::of(&stats);
    assert_eq!(c.latency.len(), 2);
    assert_eq!(c.histogram(), stats.latency);
    let json = serde_json::to_string(&c).unwrap();
    assert!(json.len() < 100, "{json}");
}

#[test]
fn freshness_follows_the_record_time() {
    let r = RouterRecord {
        at_ms: 10_000,
        ..RouterRecord::default()
    };
    assert!(r.fresh(10_000 + 5_999));
    assert!(!r.fresh(10_000 + 6_000));
}

fn table(backends: usize) -> RouteTable {
    RouteTable {
        services: vec![Service {
            app: "/site".into(),
            port: 10_000,
            bind: None,
            protocol: Protocol::Http,
            preview: None,
            backends: (0..backends)
                .map(|i| Backend {
                    instance: format!("i{i}"),
                    version: V1.into(),
                    addr: format!("127.0.0.1:{}", 20_000 + i).parse().unwrap(),
                })
                .collect(),
            weights: BTreeMap::new(),
        }],
    }
}

#[test]
fn a_table_leaving_out_settling_instances_is_told_apart() {
    let all = |_: &str| true;
    let only_i0 = |i: &str| i == "i0";
    assert!(drops_settling(&table(1), &table(3), all));
    // i1 and i2 left, but are not settling (killed, or known unhealthy).
    assert!(!drops_settling(&table(1), &table(3), only_i0));
    assert!(!drops_settling(&table(3), &table(3), all));
    assert!(!drops_settling(&table(4), &table(3), all));
    assert!(drops_settling(&RouteTable::default(), &table(3), all));
    let json = serde_json::to_vec(&table(2)).unwrap();
    assert_eq!(
        serde_json::from_slice::<RouteTable>(&json).unwrap(),
        table(2)
    );
}

fn edge(published: Option<RouteTable>, version: u64, records: Vec<(&str, RouterRecord)>) -> Edge {
    let records = records
        .into_iter()
        .map(|(n, r)| (n.to_owned(), r))
        .collect();
    Edge {
        records: Arc::new(Mutex::new(records)),
        version: Arc::new(AtomicU64::new(version)),
        last: Arc::new(Mutex::new(published)),
        since: tokio::time::Instant::now(),
        loaded: Arc::new(AtomicBool::new(true)),
        _reader: Arc::new(AbortOnDrop(tokio::spawn(async {}))),
    }
}

fn record(routes_version: u64, draining: &[(&str, u64)]) -> RouterRecord {
    RouterRecord {
        at_ms: unix_ms(),
        routes_version,
        draining: draining
            .iter()
            .map(|(i, n)| ((*i).to_owned(), *n))
            .collect(),
        ..RouterRecord::default()
    }
}

#[tokio::test]
async fn a_drain_waits_for_every_fresh_router() {
    // No standalone router: nothing to wait for.
    assert_eq!(edge(None, 0, vec![]).remote_left("i2"), 0);
    // The table without i2 is not published yet (held back): wait.
    let held = edge(Some(table(3)), 7, vec![("a", record(7, &[]))]);
    assert_eq!(held.remote_left("i2"), 1);
    // Published at version 8; router a applied it, b has not yet.
    let e = edge(
        Some(table(2)),
        8,
        vec![("a", record(8, &[("i2", 2)])), ("b", record(7, &[]))],
    );
    assert_eq!(e.remote_left("i2"), 2 + 1);
    let e = edge(
        Some(table(2)),
        8,
        vec![("a", record(8, &[])), ("b", record(9, &[("i0", 4)]))],
    );
    assert_eq!(e.remote_left("i2"), 0);
    // A stale record does not count.
    let mut old = record(1, &[("i2", 5)]);
    old.at_ms -= 60_000;
    let e = edge(Some(table(2)), 8, vec![("gone", old)]);
    assert_eq!(e.remote_left("i2"), 0);
    assert_eq!(e.wait_drained("i2", Duration::from_secs(1)).await, 0);
}
