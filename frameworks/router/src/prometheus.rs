//! The Prometheus text format (version 0.0.4) of the router's metrics.
//!
//! Pure: it renders snapshots and gauges that the caller collected.

use std::collections::BTreeMap;
use std::fmt::Write;

use crate::stats::StatsSnapshot;

/// Gauges of one version of one app, read at render time.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Gauges {
    /// Requests and TCP connections in flight to its instances (draining
    /// ones included).
    pub in_flight: u64,
    /// Its instances in the table.
    pub backends: u64,
}

/// One app's metrics to render.
#[derive(Debug, Clone, Default)]
pub struct AppMetrics {
    /// The counters.
    pub stats: StatsSnapshot,
    /// Gauges per version.
    pub gauges: BTreeMap<String, Gauges>,
}

/// Escapes a label value.
pub fn escape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for c in value.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

struct Family {
    name: &'static str,
    kind: &'static str,
    help: &'static str,
    lines: String,
}

impl Family {
    fn new(name: &'static str, kind: &'static str, help: &'static str) -> Family {
        Family {
            name,
            kind,
            help,
            lines: String::new(),
        }
    }

    fn sample(&mut self, suffix: &str, labels: &str, value: impl std::fmt::Display) {
        let _ = writeln!(self.lines, "{}{suffix}{{{labels}}} {value}", self.name);
    }

    fn write(self, out: &mut String) {
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} {}", self.name, self.kind);
        out.push_str(&self.lines);
    }
}

/// Renders every app's metrics.
pub fn render(apps: &[AppMetrics]) -> String {
    let mut requests = Family::new(
        "berth_router_requests_total",
        "counter",
        "HTTP responses from instances, by app, version and status class.",
    );
    let mut failures = Family::new(
        "berth_router_upstream_failures_total",
        "counter",
        "Tries to instances that got no response: connect, timeout or reset.",
    );
    let mut duration = Family::new(
        "berth_router_request_duration_seconds",
        "histogram",
        "Time from sending a request to an instance to the end of its response.",
    );
    let mut bytes = Family::new(
        "berth_router_bytes_total",
        "counter",
        "Bytes proxied, by direction (in: to instances, out: to clients).",
    );
    let mut tcp = Family::new(
        "berth_router_tcp_connections_total",
        "counter",
        "TCP connections proxied to instances.",
    );
    let mut tcp_failures = Family::new(
        "berth_router_tcp_connect_failures_total",
        "counter",
        "TCP connections to instances that failed to connect.",
    );
    let mut client_failed = Family::new(
        "berth_router_client_failures_total",
        "counter",
        "Client requests answered with the router's own 502 or 504.",
    );
    let mut retries = Family::new(
        "berth_router_retries_total",
        "counter",
        "Tries of a request after its first.",
    );
    let mut in_flight = Family::new(
        "berth_router_in_flight",
        "gauge",
        "Requests and TCP connections in flight to instances.",
    );
    let mut backends = Family::new(
        "berth_router_backends",
        "gauge",
        "Instances in the route table.",
    );
    for app in apps {
        let a = escape(&app.stats.app);
        client_failed.sample("", &format!("app=\"{a}\""), app.stats.failed);
        retries.sample("", &format!("app=\"{a}\""), app.stats.retries);
        for (version, stats) in &app.stats.versions {
            let l = format!("app=\"{a}\",version=\"{}\"", escape(version));
            for (class, count) in stats.responses.labelled() {
                requests.sample("", &format!("{l},code_class=\"{class}\""), count);
            }
            for (kind, count) in [
                ("connect", stats.connect_failures),
                ("timeout", stats.timeouts),
                ("reset", stats.resets),
            ] {
                failures.sample("", &format!("{l},kind=\"{kind}\""), count);
            }
            for (le, count) in stats.latency.octave_counts() {
                duration.sample("_bucket", &format!("{l},le=\"{le}\""), count);
            }
            let count = stats.latency.count();
            duration.sample("_bucket", &format!("{l},le=\"+Inf\""), count);
            duration.sample("_sum", &l, stats.latency.sum_micros as f64 / 1e6);
            duration.sample("_count", &l, count);
            bytes.sample("", &format!("{l},direction=\"in\""), stats.bytes_in);
            bytes.sample("", &format!("{l},direction=\"out\""), stats.bytes_out);
            tcp.sample("", &l, stats.tcp_connections);
            tcp_failures.sample("", &l, stats.tcp_connect_failures);
        }
        for (version, gauges) in &app.gauges {
            let l = format!("app=\"{a}\",version=\"{}\"", escape(version));
            in_flight.sample("", &l, gauges.in_flight);
            backends.sample("", &l, gauges.backends);
        }
    }
    let mut out = String::new();
    for family in [
        requests,
        failures,
        duration,
        bytes,
        tcp,
        tcp_failures,
        client_failed,
        retries,
        in_flight,
        backends,
    ] {
        family.write(&mut out);
    }
    out
}

#[cfg(test)]
mod tests;
