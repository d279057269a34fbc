use std::collections::BTreeMap;
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
fn a_table_losing_backends_is_told_apart() {
    assert!(fewer_backends(&table(1), &table(3)));
    assert!(!fewer_backends(&table(3), &table(3)));
    assert!(!fewer_backends(&table(4), &table(3)));
    assert!(!fewer_backends(&RouteTable::default(), &table(3)));
    let json = serde_json::to_vec(&table(2)).unwrap();
    assert_eq!(
        serde_json::from_slice::<RouteTable>(&json).unwrap(),
        table(2)
    );
}
