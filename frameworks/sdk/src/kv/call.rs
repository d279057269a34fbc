//! How a call reaches the leader: the known leader, found again after an
//! answer that says it moved; and which failures a call is repeated
//! after (see the module docs of [`super`]).

use berth_proto::key_value_client::KeyValueClient;
use berth_proto::leader::Leader;
use tokio::time::Instant;
use tonic::transport::Channel;

use super::{KvClient, RETRY_PAUSE};
use crate::{ErrorKind, SdkError};

/// Whether a call may be sent again after an answer that does not say it
/// was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Repeat {
    /// Repeating it does no harm (reads, lease calls): retried after any
    /// unavailability or missing answer.
    Safe,
    /// A write: retried only when the master certainly did not take it.
    IfNotTaken,
}

/// The master's answer to a follower's write (`CallError::NotLeader`):
/// the call was not proposed. A leader that lost its leadership with the
/// call in flight says "lost leadership" first.
pub(super) const NOT_LEADER_PREFIX: &str = "this master is not the leader";

/// Whether the master certainly did not take the call: a follower refused
/// it, or the connection was refused (nothing was sent).
pub(super) fn not_taken(status: &tonic::Status) -> bool {
    if status.code() != tonic::Code::Unavailable {
        return false;
    }
    // The master marks a follower's refusal; older masters only say so.
    let marked = status
        .metadata()
        .get("berth-call")
        .is_some_and(|v| v.as_bytes() == b"not-taken");
    if marked || status.message().starts_with(NOT_LEADER_PREFIX) {
        return true;
    }
    std::error::Error::source(status)
        .map(berth_proto::leader::innermost)
        .and_then(|e| e.downcast_ref::<std::io::Error>())
        .is_some_and(|e| e.kind() == std::io::ErrorKind::ConnectionRefused)
}

/// The error of a failed call: the master's answer, or the transport's
/// reason when the call did not reach a master's service.
pub(super) fn error_of(status: &tonic::Status) -> SdkError {
    if std::error::Error::source(status).is_some() {
        SdkError::Transport(berth_proto::leader::status_reason(status))
    } else {
        status.clone().into()
    }
}

impl KvClient {
    pub(super) fn deadline(&self) -> Instant {
        Instant::now() + self.inner.options.retry_for
    }

    /// The leader calls go to: the one known, or the one the masters name
    /// now (asking until `deadline`).
    pub(super) async fn leader(&self, deadline: Instant) -> Result<Leader, SdkError> {
        if let Some(l) = self.known_leader() {
            return Ok(l);
        }
        let mut masters = self.inner.masters.lock().await;
        // Another call may have found it while this one waited.
        if let Some(l) = self.known_leader() {
            return Ok(l);
        }
        let leader = masters
            .find_leader(deadline)
            .await
            .map_err(|no| SdkError::Transport(no.to_string()))?;
        *self.lock_leader() = Some(leader.clone());
        Ok(leader)
    }

    pub(super) fn known_leader(&self) -> Option<Leader> {
        self.lock_leader().clone()
    }

    fn lock_leader(&self) -> std::sync::MutexGuard<'_, Option<Leader>> {
        self.inner
            .leader
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Forgets the leader at `address`, if it is the one known.
    pub(super) fn forget(&self, address: &str) {
        let mut leader = self.lock_leader();
        if leader.as_ref().is_some_and(|l| l.address == address) {
            *leader = None;
        }
    }

    /// Asks the masters who leads now (one round) and whether it is the
    /// master at `address`; `None` when no master says it leads.
    pub(crate) async fn leads_still(&self, address: &str) -> Option<bool> {
        let leader = self.inner.masters.lock().await.probe().await.ok()?;
        Some(leader.address == address)
    }

    /// A client of the leader, for a stream; with its address.
    pub(crate) async fn stub(
        &self,
        deadline: Instant,
    ) -> Result<(KeyValueClient<Channel>, String), SdkError> {
        let leader = self.leader(deadline).await?;
        Ok((stub(&leader), leader.address))
    }

    /// Runs one call on the leader, looking for the leader again and
    /// repeating it as `repeat` allows until `deadline`. Returns the answer
    /// and whether the call was sent more than once.
    pub(super) async fn call<T, F, Fut>(
        &self,
        repeat: Repeat,
        deadline: Instant,
        mut f: F,
    ) -> Result<(T, bool), CallFailure>
    where
        F: FnMut(KeyValueClient<Channel>) -> Fut,
        Fut: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
    {
        let timeout = self.inner.options.call_timeout;
        let mut sent = 0_u32;
        loop {
            let leader = self
                .leader(deadline)
                .await
                .map_err(|e| CallFailure::new(e, sent))?;
            sent += 1;
            let failure = match tokio::time::timeout(timeout, f(stub(&leader))).await {
                Ok(Ok(answer)) => return Ok((answer.into_inner(), sent > 1)),
                Ok(Err(status)) => {
                    let again = match repeat {
                        Repeat::Safe => matches!(
                            status.code(),
                            tonic::Code::Unavailable
                                | tonic::Code::Cancelled
                                | tonic::Code::Unknown
                        ),
                        Repeat::IfNotTaken => not_taken(&status),
                    };
                    if !again {
                        return Err(CallFailure::new(error_of(&status), sent));
                    }
                    error_of(&status)
                }
                Err(_) => {
                    if repeat == Repeat::IfNotTaken {
                        return Err(CallFailure::new(SdkError::Timeout(timeout), sent));
                    }
                    SdkError::Timeout(timeout)
                }
            };
            tracing::debug!(master = %leader.address, error = %failure, "key-value call: looking for the leader again");
            self.forget(&leader.address);
            if Instant::now() + RETRY_PAUSE >= deadline {
                return Err(CallFailure::new(failure, sent));
            }
            tokio::time::sleep(RETRY_PAUSE).await;
        }
    }
}

/// A key-value client of `leader`'s channel.
pub(super) fn stub(leader: &Leader) -> KeyValueClient<Channel> {
    KeyValueClient::new(leader.channel.clone())
        .max_decoding_message_size(berth_proto::MAX_MESSAGE_BYTES)
}

/// A failed call, and how many times it was sent.
#[derive(Debug)]
pub(super) struct CallFailure {
    error: SdkError,
    sent: u32,
}

impl CallFailure {
    pub(super) fn new(error: SdkError, sent: u32) -> Self {
        Self { error, sent }
    }

    pub(super) fn kind(&self) -> ErrorKind {
        self.error.kind()
    }

    pub(super) fn repeated(&self) -> bool {
        self.sent > 1
    }

    pub(super) fn into_inner(self) -> SdkError {
        self.error
    }
}

impl From<CallFailure> for SdkError {
    fn from(f: CallFailure) -> Self {
        f.error
    }
}
