//! Running pipelines: the state machine of a pipeline's jobs.

pub mod api;
pub mod collect;
pub mod expiry;
pub mod files;
pub mod git;
pub mod grpc;
pub mod log;
pub mod record;
/// The masker lives in `berth-proto`: agents mask task output with it too.
pub use berth_proto::mask;
pub mod repos;
pub mod resource_group;
pub mod runner;
pub mod source;
pub mod state;
pub mod store;
mod task;
