//! Running pipelines: the state machine of a pipeline's jobs.

pub mod api;
pub mod files;
pub mod mask;
pub mod runner;
pub mod source;
pub mod state;
pub mod store;
