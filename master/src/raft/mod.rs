//! Raft replication of the registry, on tikv's raft-rs.
//!
//! - [`storage`]: the raft log, hard state and snapshots in redb
//!   (`RaftStorage` implements `raft::Storage`).
//! - [`node`]: the loop around `raft::RawNode` that honours the Ready
//!   contract and hands committed entries to the state machine.
//! - [`transport`]: raft messages between masters over gRPC
//!   (`RaftTransport.Stream`), one bounded queue per peer.
//!
//! The master core (`crate::core`) proposes registry commands through the
//! node and applies what it hands back.

pub mod transport;

use raft::eraftpb::Message;

pub mod node;
pub mod storage;
#[cfg(test)]
mod tests;

/// Sends raft messages to peers. Implementations never block the raft
/// loop: a message that cannot be queued is dropped (raft retransmits).
pub trait Transport: Send + Sync + 'static {
    /// Queues messages for their `to` peers.
    fn send(&self, messages: Vec<Message>);
    /// Sets (Some) or removes (None) the address of a peer.
    fn set_peer(&self, id: u64, address: Option<String>);
}

/// A `slog` drain that forwards raft-rs's log records to `tracing`, so
/// raft's logs land with the rest of the master's.
#[derive(Debug, Clone, Copy, Default)]
pub struct TracingDrain;

impl slog::Drain for TracingDrain {
    type Ok = ();
    type Err = slog::Never;

    fn log(&self, record: &slog::Record<'_>, _: &slog::OwnedKVList) -> Result<(), slog::Never> {
        match record.level() {
            slog::Level::Critical | slog::Level::Error => {
                tracing::error!(target: "raft", "{}", record.msg())
            }
            slog::Level::Warning => tracing::warn!(target: "raft", "{}", record.msg()),
            slog::Level::Info => tracing::info!(target: "raft", "{}", record.msg()),
            slog::Level::Debug | slog::Level::Trace => {
                tracing::debug!(target: "raft", "{}", record.msg())
            }
        }
        Ok(())
    }
}

/// A logger for raft-rs that writes through `tracing`.
pub fn logger() -> slog::Logger {
    slog::Logger::root(TracingDrain, slog::o!())
}
