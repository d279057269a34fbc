use std::time::Duration;

use crate::histogram::AtomicHistogram;
use crate::stats::{ResponseClasses, VersionStats};

use super::*;

fn sample_app() -> AppMetrics {
    let latency = AtomicHistogram::default();
    latency.record(Duration::from_millis(3));
    latency.record(Duration::from_millis(300));
    let v1 = VersionStats {
        requests: 2,
        responses: ResponseClasses {
            success: 1,
            server_error: 1,
            ..ResponseClasses::default()
        },
        latency: latency.snapshot(),
        ..VersionStats::default()
    };
    AppMetrics {
        stats: StatsSnapshot {
            app: "/shop/\"web\"".into(),
            versions: [("v1".to_owned(), v1)].into_iter().collect(),
            ..StatsSnapshot::default()
        },
        gauges: [(
            "v1".to_owned(),
            Gauges {
                in_flight: 3,
                backends: 2,
            },
        )]
        .into_iter()
        .collect(),
    }
}

#[test]
fn every_line_is_a_comment_or_a_sample() {
    let text = render(&[sample_app()]);
    for line in text.lines() {
        if line.starts_with("# HELP ") || line.starts_with("# TYPE ") {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap();
        assert!(value.parse::<f64>().is_ok(), "{line}");
        assert!(series.starts_with("berth_router_"), "{line}");
        assert!(series.ends_with('}'), "{line}");
    }
}

#[test]
fn samples_carry_the_counts() {
    let text = render(&[sample_app()]);
    let app = "app=\"/shop/\\\"web\\\"\",version=\"v1\"";
    assert!(text.contains(&format!(
        "berth_router_requests_total{{{app},code_class=\"5xx\"}} 1\n"
    )));
    assert!(text.contains(&format!(
        "berth_router_requests_total{{{app},code_class=\"2xx\"}} 1\n"
    )));
    assert!(text.contains(&format!(
        "berth_router_request_duration_seconds_bucket{{{app},le=\"+Inf\"}} 2\n"
    )));
    assert!(text.contains(&format!(
        "berth_router_request_duration_seconds_bucket{{{app},le=\"0.004096\"}} 1\n"
    )));
    assert!(text.contains(&format!("berth_router_in_flight{{{app}}} 3\n")));
    assert!(text.contains(&format!("berth_router_backends{{{app}}} 2\n")));
    assert!(text.contains("# TYPE berth_router_request_duration_seconds histogram\n"));
}

#[test]
fn escape_quotes_backslashes_and_newlines() {
    assert_eq!(escape("a\"b\\c\nd"), "a\\\"b\\\\c\\nd");
}
