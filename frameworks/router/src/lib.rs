//! berth's built-in router: the L7 (HTTP/1.1) and L4 (TCP) proxy in front
//! of the service framework's apps, in the role marathon-lb played for
//! Marathon, but changing routes in place instead of reloading.
//!
//! The framework states what to route as a whole [`RouteTable`] (per app:
//! a service port, the healthy instances with their versions, the weight of
//! each version, an optional preview port) and hands it to
//! [`Router::apply`]. The router opens and closes listeners to match,
//! splits new traffic across versions by weight (smooth weighted
//! round-robin, see [`balance`]) and within a version by least outstanding
//! requests, retries a request on another instance when connecting fails
//! (the rule is in the `http` module's docs), and drains instances that
//! left the table: they get no new requests, their in-flight ones finish,
//! and [`Router::wait_drained`] says when they may be stopped. Per app and
//! version it counts requests, response classes, failures, bytes and
//! latency ([`StatsSnapshot`]; diff two with [`stats::diff`]), and serves
//! them in Prometheus format on an admin endpoint.
//!
//! What it is not: it does not watch the framework's state (the caller
//! applies tables), check health (the table lists healthy instances only),
//! terminate TLS, speak HTTP/2 or pass protocol upgrades (WebSocket), or
//! kill instances (it only says when they are drained).
//!
//! Decisions are pure and unit-tested apart from the IO: [`balance`]
//! (backend choice), [`table`] (validation and diff), [`histogram`]
//! (buckets and percentiles), [`stats`] (snapshots and intervals),
//! [`prometheus`] (rendering).

#![warn(missing_docs)]

mod admin;
mod backend;
pub mod balance;
mod body;
pub mod config;
pub mod error;
pub mod histogram;
mod http;
mod listener;
pub mod prometheus;
mod route;
mod router;
pub mod stats;
pub mod table;
mod tcp;

pub use config::RouterConfig;
pub use error::{ConfigError, RouterError, TableError};
pub use router::{ApplyReport, DrainOutcome, Draining, ListenerStatus, Router, ServiceStatus};
pub use stats::{StatsSnapshot, VersionStats, diff};
pub use table::{Backend, Preview, Protocol, RouteTable, Service};
pub use tokio_util::sync::CancellationToken;
