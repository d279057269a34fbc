//! The app definition: a compatible subset of Marathon's, parsed from JSON
//! or YAML, validated whole (every error with its JSON path), normalized
//! (defaults filled, ids absolute, resources fixed-point, durations as
//! [`Duration`]) and rendered back in Marathon's shape.
//!
//! - [`AppDefinition::from_json`] / [`AppDefinition::from_yaml`] /
//!   [`AppDefinition::from_value`]: parse and validate (`parse.rs`, with the
//!   field readers in `read.rs`, containers and ports in `parse/ports.rs`,
//!   checks in `parse/checks.rs`, Marathon fields berth refuses or ignores
//!   in `parse/marathon.rs`, berth's own `deployment` key in `settings.rs`).
//! - [`AppDefinition::to_marathon_json`] (`render.rs`): the GET /v2/apps
//!   shape, defaults filled in.
//! - [`AppVersion`] and [`Change`] (`version.rs`): versions, and whether a
//!   change restarts instances or only scales.
//! - [`constraint`]: Marathon's placement constraints and their evaluator.

use std::collections::BTreeMap;
use std::time::Duration;

use berth_scheduler_core::resources::Scalar;
use serde_json::Value;

use crate::error::{Invalid, ParseError};

pub mod constraint;
mod id;
mod parse;
mod read;
mod render;
pub mod settings;
pub(crate) mod text;
mod version;

pub use constraint::{Constraint, ConstraintOp};
pub use id::AppId;
pub use settings::{Analysis, BlueGreen, Canary, CanaryStep, DeploymentSettings, Ratio, Strategy};
pub use version::{AppVersion, Change, VersionInfo};

#[cfg(test)]
mod tests;

/// A fraction in `[0, 1]` in parts per million (`0.5` is `500_000`).
/// Marathon's fractions are doubles; berth keeps six decimals.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize,
)]
pub struct Fraction(u32);

impl Fraction {
    /// Zero.
    pub const ZERO: Fraction = Fraction(0);
    /// One.
    pub const ONE: Fraction = Fraction(1_000_000);

    /// The fraction of `ppm` parts per million, capped at one.
    pub const fn from_ppm(ppm: u32) -> Fraction {
        if ppm > 1_000_000 {
            Fraction(1_000_000)
        } else {
            Fraction(ppm)
        }
    }

    /// Parts per million.
    pub const fn ppm(self) -> u32 {
        self.0
    }

    /// As `f64`, for rendering only.
    pub fn to_f64(self) -> f64 {
        f64::from(self.0) / 1e6
    }

    /// `ceil(n * self)`, exactly.
    pub fn ceil_mul(self, n: u32) -> u32 {
        let p = u64::from(n) * u64::from(self.0);
        u32::try_from(p.div_ceil(1_000_000)).unwrap_or(u32::MAX)
    }

    /// `floor(n * self)`, exactly.
    pub fn floor_mul(self, n: u32) -> u32 {
        let p = u64::from(n) * u64::from(self.0);
        u32::try_from(p / 1_000_000).unwrap_or(u32::MAX)
    }
}

/// What a task runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Neither `cmd` nor `args`: the image's own entrypoint and command.
    /// Only valid with a container image.
    None,
    /// `cmd`: a shell command line (`/bin/sh -c`).
    Shell(String),
    /// `args`: the argument vector (after the image's entrypoint, if any).
    Args(Vec<String>),
}

/// The container runtime Marathon names in `container.type`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ContainerKind {
    /// `DOCKER`.
    Docker,
    /// `MESOS` (Mesos's universal containerizer): berth runs its image with
    /// the same Docker containerizer as `DOCKER`.
    Mesos,
}

/// Docker's network mode (`container.docker.network`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// `BRIDGE`: port mappings from host ports to container ports.
    Bridge,
    /// `HOST`: the host's network; ports come from `portDefinitions`.
    Host,
    /// `NONE`: no network.
    None,
}

/// `container`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Container {
    /// `container.type`.
    pub kind: ContainerKind,
    /// `container.docker.image`; `None` only for a `MESOS` container without
    /// an image (the task then runs on the host as a process).
    pub image: Option<String>,
    /// `container.docker.network` (or `networks[0].mode`); default `HOST`.
    pub network: NetworkMode,
    /// `container.docker.forcePullImage`.
    pub force_pull_image: bool,
    /// `container.portMappings` (or the legacy `container.docker.portMappings`).
    pub port_mappings: Vec<PortMapping>,
}

/// `tcp`, `udp` or `udp,tcp`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// `tcp` (the default).
    Tcp,
    /// `udp`.
    Udp,
    /// `udp,tcp`: both.
    UdpTcp,
}

/// One of `container.portMappings`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortMapping {
    /// `containerPort`; 0 means "the same as the host port" in Marathon.
    pub container_port: u16,
    /// `hostPort`: `Some(0)` is any free port of the agent; `None` is no
    /// host port (absent in the definition).
    pub host_port: Option<u16>,
    /// `servicePort`: the router's port for the app; 0 is none.
    pub service_port: u16,
    /// `protocol`.
    pub protocol: Protocol,
    /// `name`.
    pub name: Option<String>,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
}

/// One of `portDefinitions` (host networking).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PortDefinition {
    /// `port`: the service port (the router's); 0 is none.
    pub port: u16,
    /// `protocol`.
    pub protocol: Protocol,
    /// `name`.
    pub name: Option<String>,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
}

/// The resources of one instance, fixed-point.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AppResources {
    /// `cpus` (default 1).
    pub cpus: Scalar,
    /// `mem` in MiB (default 128).
    pub mem: Scalar,
    /// `disk` in MiB (default 0).
    pub disk: Scalar,
}

/// A health check's `protocol`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HealthProtocol {
    /// `HTTP` (the default).
    Http,
    /// `HTTPS`.
    Https,
    /// `TCP`.
    Tcp,
    /// `COMMAND`.
    Command,
    /// `MESOS_HTTP`.
    MesosHttp,
    /// `MESOS_HTTPS`.
    MesosHttps,
    /// `MESOS_TCP`.
    MesosTcp,
}

/// One of `healthChecks`. berth runs every protocol on the agent (as
/// Mesos's `MESOS_*` checks); `HTTP` and `MESOS_HTTP` mean the same there.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    /// `protocol`.
    pub protocol: HealthProtocol,
    /// `path` (HTTP kinds only).
    pub path: Option<String>,
    /// `portIndex`: an index into the app's ports.
    pub port_index: Option<u32>,
    /// `port`: a fixed port.
    pub port: Option<u16>,
    /// `command.value` (`COMMAND` only).
    pub command: Option<String>,
    /// `gracePeriodSeconds` (default 300).
    pub grace_period: Duration,
    /// `intervalSeconds` (default 60).
    pub interval: Duration,
    /// `timeoutSeconds` (default 20).
    pub timeout: Duration,
    /// `maxConsecutiveFailures` (default 3; 0 never kills).
    pub max_consecutive_failures: u32,
    /// `delaySeconds` (default 15).
    pub delay: Duration,
    /// `ignoreHttp1xx` (default false).
    pub ignore_http_1xx: bool,
}

/// `HTTP` or `HTTPS`, for readiness checks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HttpScheme {
    /// `HTTP`.
    Http,
    /// `HTTPS`.
    Https,
}

/// One of `readinessChecks`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ReadinessCheck {
    /// `name` (default `readinessCheck`).
    pub name: String,
    /// `protocol` (default `HTTP`).
    pub protocol: HttpScheme,
    /// `path` (default `/`).
    pub path: String,
    /// `portName` (default `http-api`): must name one of the app's ports.
    pub port_name: String,
    /// `intervalSeconds` (default 30).
    pub interval: Duration,
    /// `timeoutSeconds` (default 10).
    pub timeout: Duration,
    /// `httpStatusCodesForReady` (default `[200]`).
    pub http_status_codes_for_ready: Vec<u16>,
    /// `preserveLastResponse` (default false).
    pub preserve_last_response: bool,
}

/// `upgradeStrategy`: how a rolling deployment replaces instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UpgradeStrategy {
    /// `minimumHealthCapacity` in [0, 1] (default 1).
    pub minimum_health_capacity: Fraction,
    /// `maximumOverCapacity` in [0, 1] (default 1).
    pub maximum_over_capacity: Fraction,
}

impl Default for UpgradeStrategy {
    fn default() -> Self {
        UpgradeStrategy {
            minimum_health_capacity: Fraction::ONE,
            maximum_over_capacity: Fraction::ONE,
        }
    }
}

/// The restart backoff of failed instances.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    /// `backoffSeconds` (default 1).
    pub initial: Duration,
    /// `backoffFactor` (default 1.15), fixed-point, at least 1.
    pub factor: Scalar,
    /// `maxLaunchDelaySeconds` (default 300, Marathon 1.5+'s default).
    pub max_launch_delay: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            initial: Duration::from_secs(1),
            factor: Scalar::from_milli_saturating(1150),
            max_launch_delay: Duration::from_secs(300),
        }
    }
}

/// `killSelection`: which instances go first when scaling down.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KillSelection {
    /// `YOUNGEST_FIRST` (the default).
    #[default]
    YoungestFirst,
    /// `OLDEST_FIRST`.
    OldestFirst,
}

/// `unreachableStrategy`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnreachableStrategy {
    /// `"disabled"`: instances on unreachable agents are never replaced.
    Disabled,
    /// Replace after `inactive_after`, forget after `expunge_after`
    /// (`inactive_after <= expunge_after`).
    Enabled {
        /// `inactiveAfterSeconds` (default 0).
        inactive_after: Duration,
        /// `expungeAfterSeconds` (default 0).
        expunge_after: Duration,
    },
}

impl Default for UnreachableStrategy {
    fn default() -> Self {
        UnreachableStrategy::Enabled {
            inactive_after: Duration::ZERO,
            expunge_after: Duration::ZERO,
        }
    }
}

/// A normalized, valid app definition. Build one with
/// [`AppDefinition::from_json`], [`AppDefinition::from_yaml`] or
/// [`AppDefinition::from_value`]; every field holds its value with
/// Marathon's default filled in.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AppDefinition {
    /// `id`, absolute.
    pub id: AppId,
    /// `cmd` / `args`.
    pub command: Command,
    /// `container`.
    pub container: Option<Container>,
    /// `portDefinitions` (host networking; empty with port mappings).
    pub port_definitions: Vec<PortDefinition>,
    /// `cpus`, `mem`, `disk`.
    pub resources: AppResources,
    /// `instances` (default 1).
    pub instances: u32,
    /// `env` (string values only).
    pub env: BTreeMap<String, String>,
    /// `labels`.
    pub labels: BTreeMap<String, String>,
    /// `healthChecks`.
    pub health_checks: Vec<HealthCheck>,
    /// `readinessChecks`.
    pub readiness_checks: Vec<ReadinessCheck>,
    /// `constraints`.
    pub constraints: Vec<Constraint>,
    /// `upgradeStrategy`.
    pub upgrade_strategy: UpgradeStrategy,
    /// `backoffSeconds`, `backoffFactor`, `maxLaunchDelaySeconds`.
    pub backoff: Backoff,
    /// `killSelection`.
    pub kill_selection: KillSelection,
    /// `unreachableStrategy`.
    pub unreachable_strategy: UnreachableStrategy,
    /// `dependencies`, absolute.
    pub dependencies: Vec<AppId>,
    /// `user`.
    pub user: Option<String>,
    /// `taskKillGracePeriodSeconds`.
    pub task_kill_grace_period: Option<Duration>,
    /// `acceptedResourceRoles`.
    pub accepted_resource_roles: Vec<String>,
    /// `role`.
    pub role: Option<String>,
    /// berth's own `deployment` settings.
    pub deployment: DeploymentSettings,
}

impl AppDefinition {
    /// Parses and validates a JSON app definition (a duplicate key is an
    /// error).
    pub fn from_json(text: &str) -> Result<AppDefinition, ParseError> {
        let value = text::json(text)?;
        Ok(Self::from_value(&value)?)
    }

    /// Parses and validates a YAML app definition (the same fields as
    /// JSON; merge keys are applied, tags and non-finite numbers refused).
    pub fn from_yaml(text: &str) -> Result<AppDefinition, ParseError> {
        let value = text::yaml(text)?;
        Ok(Self::from_value(&value)?)
    }

    /// Validates an app definition already parsed into JSON values,
    /// collecting every error.
    pub fn from_value(value: &Value) -> Result<AppDefinition, Invalid> {
        parse::parse(value)
    }

    /// The names of the app's ports, from port mappings or port
    /// definitions, in index order (`None` for unnamed ports).
    pub fn port_names(&self) -> Vec<Option<&str>> {
        match &self.container {
            Some(c) if !c.port_mappings.is_empty() => {
                c.port_mappings.iter().map(|p| p.name.as_deref()).collect()
            }
            _ => self
                .port_definitions
                .iter()
                .map(|p| p.name.as_deref())
                .collect(),
        }
    }

    /// The app's service ports (router ports), non-zero ones only.
    pub fn service_ports(&self) -> Vec<u16> {
        let ports: Vec<u16> = match &self.container {
            Some(c) if !c.port_mappings.is_empty() => {
                c.port_mappings.iter().map(|p| p.service_port).collect()
            }
            _ => self.port_definitions.iter().map(|p| p.port).collect(),
        };
        ports.into_iter().filter(|p| *p != 0).collect()
    }
}
