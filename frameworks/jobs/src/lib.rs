//! berth's batch and cron job framework (issue 15).
//!
//! - [`job`]: the job definition, a compatible subset of Metronome's, with
//!   berth's additions; parsed from JSON or YAML and validated whole.
//! - [`schedule`]: cron expressions in IANA time zones, next ticks under
//!   the daylight-saving rule, due and missed ticks, [`schedule::Timers`].
//! - [`run`]: runs and their tasks; run ids derived from what started them.
//! - [`state`]: the pure state (jobs, schedule cursors, active runs,
//!   history), operations, the clock's and updates' effects, and the
//!   key-value writes of each change.
//! - [`api`]: Metronome's HTTP API (`/v1/jobs`) over
//!   [`api::JobsBackend`], and its gRPC twin.
//! - [`serve`]: the framework as a process (`berth jobs serve`): the lease,
//!   the store, the SDK runtime.

pub mod api;
pub mod error;
pub mod job;
pub mod run;
pub mod schedule;
pub mod serve;
pub mod state;
pub mod time;

pub use error::{FieldError, Invalid};
pub use job::{JobDef, JobId};
pub use run::{Run, RunId, RunStatus};
pub use time::Timestamp;
