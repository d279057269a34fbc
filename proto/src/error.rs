//! Errors of the rules this crate holds for the master and the agent alike.
//!
//! Each names the offending value cut short (see
//! [`berth_scheduler_core::quoted`]), so a caller's error never echoes
//! unbounded input.

use berth_scheduler_core::quoted;

/// A `host:port` address given on the wire (a new master's, an agent's)
/// is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AddressError {
    /// The address is empty.
    #[error("address must not be empty")]
    Empty,
    /// The address is longer than [`crate::MAX_ADDRESS_BYTES`].
    #[error("address {} is {len} bytes; at most {} are allowed", quoted(.address), crate::MAX_ADDRESS_BYTES)]
    TooLong {
        /// The address as given.
        address: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The address is not `host:port` (optionally behind `http://` or
    /// `https://`): no port, a port that is not 1-65535, an empty host,
    /// whitespace or control characters.
    #[error("address {} is not HOST:PORT ({reason})", quoted(.address))]
    Malformed {
        /// The address as given.
        address: String,
        /// What is wrong with it.
        reason: &'static str,
    },
}

/// A task asks for less than every task, or every container task, needs
/// (see [`crate::minimums`]).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum MinimumError {
    /// No cpus or no memory at all.
    #[error(
        "task {} asks for no {resource}: every task needs a positive {resource} request",
        quoted(.task)
    )]
    NotPositive {
        /// The task id.
        task: String,
        /// `"cpus"` or `"mem"`.
        resource: &'static str,
    },
    /// A container task under Docker's minimum.
    #[error(
        "task {} asks for {got} {resource}; a container task needs at least {min} \
         (Docker's minimum)",
        quoted(.task)
    )]
    BelowContainerMinimum {
        /// The task id.
        task: String,
        /// `"cpus"` or `"mem"` (MiB).
        resource: &'static str,
        /// What it asks for.
        got: f64,
        /// The minimum.
        min: f64,
    },
}
