//! The router's errors: one enum per caller-visible failure kind.
//!
//! Any message that quotes input (an app id, an instance id, a version)
//! goes through [`berth_scheduler_core::error::quoted`], which caps the echo.

use std::net::SocketAddr;

use berth_scheduler_core::error::quoted;

/// A [`crate::RouterConfig`] that [`crate::RouterConfig::validate`] refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// A duration that must be positive is zero.
    #[error("{field} must be greater than zero")]
    ZeroDuration {
        /// The config field.
        field: &'static str,
    },
    /// A duration is longer than the router accepts.
    #[error("{field} must be at most {max_secs} s")]
    DurationTooLong {
        /// The config field.
        field: &'static str,
        /// The largest accepted value, in seconds.
        max_secs: u64,
    },
    /// `max_retries` is above the bound.
    #[error("max_retries is {got}, at most {max} is allowed")]
    TooManyRetries {
        /// The value given.
        got: u32,
        /// The bound.
        max: u32,
    },
    /// `max_idle_per_backend` is above the bound.
    #[error("max_idle_per_backend is {got}, at most {max} is allowed")]
    PoolTooLarge {
        /// The value given.
        got: usize,
        /// The bound.
        max: usize,
    },
}

/// A [`crate::RouteTable`] that [`crate::Router::apply`] refused whole; the
/// applied table is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TableError {
    /// An app id is empty.
    #[error("an app id is empty")]
    EmptyAppId,
    /// Two services have the same app id.
    #[error("app {} appears twice", quoted(.0))]
    DuplicateApp(String),
    /// An instance id or version is empty.
    #[error("app {}: a backend has an empty instance id or version", quoted(.0))]
    EmptyBackendField(String),
    /// One app lists the same instance twice.
    #[error("app {}: instance {} appears twice", quoted(.app), quoted(.instance))]
    DuplicateInstance {
        /// The app.
        app: String,
        /// The instance.
        instance: String,
    },
    /// Two listeners of the table ask for the same fixed address.
    #[error("app {}: address {addr} is also asked for by app {}", quoted(.app), quoted(.other))]
    DuplicateAddress {
        /// The app refused.
        app: String,
        /// The app that asked first.
        other: String,
        /// The address.
        addr: SocketAddr,
    },
    /// The preview port is the service port.
    #[error("app {}: the preview port equals the service port", quoted(.0))]
    PreviewOnServicePort(String),
    /// A weight is above [`crate::table::MAX_WEIGHT`].
    #[error("app {}: weight {weight} of version {} is above {max}", quoted(.app), quoted(.version))]
    WeightTooLarge {
        /// The app.
        app: String,
        /// The version.
        version: String,
        /// The weight given.
        weight: u32,
        /// The bound.
        max: u32,
    },
    /// The table has more services or backends than the router accepts.
    #[error("the table has {got} {what}, at most {max} are accepted")]
    TooLarge {
        /// What is counted.
        what: &'static str,
        /// The count.
        got: usize,
        /// The bound.
        max: usize,
    },
}

/// A failure starting the router.
#[derive(Debug, thiserror::Error)]
pub enum RouterError {
    /// The configuration is invalid.
    #[error("invalid router config: {0}")]
    Config(#[from] ConfigError),
    /// The admin endpoint could not listen.
    #[error("cannot listen on admin address {addr}: {source}")]
    AdminBind {
        /// The address.
        addr: SocketAddr,
        /// The cause.
        source: std::io::Error,
    },
}
