//! The router's configuration and its validation.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::error::ConfigError;

/// The most retries of one request the config may ask for.
pub const MAX_RETRIES: u32 = 5;
/// The most idle pooled connections per backend the config may ask for.
pub const MAX_IDLE_PER_BACKEND: usize = 1024;
/// The longest timeout or grace period the config may ask for.
pub const MAX_DURATION: Duration = Duration::from_secs(3600);

/// How the router behaves; check it with [`RouterConfig::validate`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouterConfig {
    /// The address services listen on when their table entry names none.
    pub default_bind: IpAddr,
    /// Where the admin endpoint (`/metrics`, `/healthz`, `/v1/routes`)
    /// listens; none to run without it.
    pub admin_addr: Option<SocketAddr>,
    /// How long connecting to a backend may take before it counts as a
    /// connection failure (and the request is retried elsewhere).
    pub connect_timeout: Duration,
    /// How long a backend may take to send response headers once the
    /// request is sent; past it the client gets 504.
    pub upstream_timeout: Duration,
    /// How many times one request or TCP connection may be retried on
    /// another backend after a failure the retry rule allows.
    pub max_retries: u32,
    /// How many idle keep-alive connections are kept per backend.
    pub max_idle_per_backend: usize,
    /// How long a listener's or the router's open client connections may
    /// finish their requests after it closes, before they are cut.
    pub shutdown_grace: Duration,
    /// Seeds the balancing state; two routers with the same seed and the
    /// same table choose the same sequence of versions.
    pub seed: u64,
    /// Whether proxied HTTP responses carry `x-berth-version` (the version
    /// of the instance that answered) and `x-berth-instance`.
    pub version_header: bool,
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            default_bind: IpAddr::V4(Ipv4Addr::LOCALHOST),
            admin_addr: None,
            connect_timeout: Duration::from_secs(2),
            upstream_timeout: Duration::from_secs(60),
            max_retries: 2,
            max_idle_per_backend: 32,
            shutdown_grace: Duration::from_secs(10),
            seed: 0,
            version_header: true,
        }
    }
}

impl RouterConfig {
    /// Checks every field against its bounds; returns the config unchanged
    /// when they hold.
    pub fn validate(self) -> Result<Self, ConfigError> {
        for (field, value) in [
            ("connect_timeout", self.connect_timeout),
            ("upstream_timeout", self.upstream_timeout),
            ("shutdown_grace", self.shutdown_grace),
        ] {
            if value.is_zero() {
                return Err(ConfigError::ZeroDuration { field });
            }
            if value > MAX_DURATION {
                return Err(ConfigError::DurationTooLong {
                    field,
                    max_secs: MAX_DURATION.as_secs(),
                });
            }
        }
        if self.max_retries > MAX_RETRIES {
            return Err(ConfigError::TooManyRetries {
                got: self.max_retries,
                max: MAX_RETRIES,
            });
        }
        if self.max_idle_per_backend > MAX_IDLE_PER_BACKEND {
            return Err(ConfigError::PoolTooLarge {
                got: self.max_idle_per_backend,
                max: MAX_IDLE_PER_BACKEND,
            });
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests;
