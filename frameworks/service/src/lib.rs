//! berth's long-running service framework (issue 14): the pure core and
//! its HTTP API.
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
//! - [`state`]: the framework's intent over all apps (pure): current and
//!   kept versions, the running deployment and history of each app; the
//!   operations (add, update, patch, scale, restart, rollback, remove,
//!   promote, cancel a deployment, record a planner step) checked against
//!   the whole set with Marathon's refusals ([`error::OpError`]); what an
//!   operation would do ([`state::PlanView`]); the key-value writes each
//!   operation causes and [`state::Services::load`] from the stored keys
//!   (versioned format, golden bytes). Forced operations and cancelling
//!   are here (see the module).
//!
//! - [`api`] (async, axum; the only module that is not pure): Marathon's
//!   REST API, a compatible subset (`/v2/apps`, versions, tasks,
//!   deployments, info, ping; berth's promote and plan), over the
//!   [`api::ServiceBackend`] trait the runtime implements;
//!   [`api::InMemory`] is the reference backend over [`state::Services`]
//!   with fake instances. [`api::grpc`] is the same API over gRPC
//!   (`berth.service.v1`), served on the same port.
//!
//! **Not built yet** (the integrator wires these on top): the framework's
//! IO (offers, launching through the SDK runtime, health and status
//! events), the key-value client, the CLI, and the router
//! (a separate crate).
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

pub mod api;
pub mod app;
pub mod deploy;
pub mod error;
pub mod run;
pub mod serve;
pub mod state;
pub mod time;

pub use app::{AppDefinition, AppId, AppVersion, Change};
pub use error::{FieldError, Invalid, ParseError};
pub use time::Timestamp;
