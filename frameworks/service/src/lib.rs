//! berth's long-running service framework (issue 14): the pure core.
//!
//! **Built so far** (pure: no IO, no async runtime, no clock reads; time is
//! an argument):
//!
//! - [`app`]: the app definition, a compatible subset of Marathon's, read
//!   from JSON or YAML, validated whole with Marathon-style field paths
//!   ([`error::Invalid`] renders Marathon's `{"message": "Object is not
//!   valid", "details": [...]}`), normalized (absolute ids, fixed-point
//!   resources, [`std::time::Duration`]s, defaults filled) and rendered back
//!   for GET /v2/apps; versions and what a change needs (restart or scale);
//!   berth's own `deployment` settings (rolling, blue/green, canary; see
//!   [`app::settings`]); the placement constraint evaluator
//!   ([`app::constraint`]).
//! - [`deploy`]: the deployment planner, a pure state machine from version
//!   A to version B: rolling (Marathon's `upgradeStrategy`, Nomad's
//!   minimum healthy time, progress deadline and auto-revert), scale, start,
//!   stop, blue/green and canary with analysis of the router's statistics.
//!
//! **Not built yet** (the integrator wires these on top): the framework's
//! IO (offers, launching through the SDK runtime, health and status
//! events), storage of apps, versions and deployments in the master's
//! key-value API, the HTTP `/v2/...` and gRPC APIs, the CLI, and the
//! router (a separate crate).
//!
//! The planner's [`deploy::Deployment`] derives serde so the integrator can
//! store it; its stored format has no version or golden bytes yet.
//! Cancelling a deployment (Marathon's `force`) is the caller's: start a
//! new [`deploy::Deployment`] from what runs.
//!
//! Marathon compatibility choices:
//! - `maxLaunchDelaySeconds` defaults to 300 (Marathon 1.5+; 1.x before it
//!   used 3600).
//! - Read-only fields of Marathon's GET output (`version`, `versionInfo`,
//!   `tasks*`, `deployments`, `lastTaskFailure`, `readinessCheckResults`)
//!   are ignored on input, as Marathon ignores them.
//! - Fields berth does not support (`residency`, `secrets`, `fetch`,
//!   `uris`, `ipAddress`, `gpus`, `storeUrls`, volumes, docker
//!   `parameters`, `privileged`, `requirePorts`, named networks, USER
//!   networking, `check`, `executorResources`, `resourceLimits`, `tty`,
//!   secret references in `env`) are refused with their path and "not
//!   supported by berth", unless they hold Marathon's default.
//! - Fractions (`minimumHealthCapacity`, …) keep six decimals; resources
//!   three (milli-units).

pub mod app;
pub mod deploy;
pub mod error;
pub mod run;
pub mod time;

pub use app::{AppDefinition, AppId, AppVersion, Change};
pub use error::{FieldError, Invalid, ParseError};
pub use time::Timestamp;
