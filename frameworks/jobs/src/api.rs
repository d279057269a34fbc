//! Metronome's HTTP API, a compatible subset, over [`JobsBackend`].
//!
//! OWNED BY THE API HELPER.

mod backend;

pub use backend::{BackendError, FrameworkInfo, JobsBackend};
