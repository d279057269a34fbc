//! The SDK's error type.

/// Why an SDK operation failed.
///
/// Errors from the master keep their gRPC code in [`SdkError::Rpc`], so a
/// caller can tell bad input (`INVALID_ARGUMENT`, nothing changed) from a
/// stale subscription (`FAILED_PRECONDITION`) and from an unreachable master
/// (`UNAVAILABLE`).
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum SdkError {
    /// The [`FrameworkConfig`](crate::FrameworkConfig) or the master
    /// address list is invalid; nothing was sent.
    #[error("invalid framework config: {0}")]
    InvalidConfig(String),
    /// A task built or packed by the SDK's helpers is invalid; `task_id`
    /// names it.
    #[error("invalid task {task_id:?}: {reason}")]
    InvalidTask {
        /// The offending task's id.
        task_id: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The master answered the call with an error status.
    #[error("master refused the call ({code:?}): {message}")]
    Rpc {
        /// The gRPC status code, e.g. `InvalidArgument` or
        /// `FailedPrecondition`.
        code: tonic::Code,
        /// The master's message.
        message: String,
    },
    /// The SDK has no live subscription right now (it is re-subscribing
    /// after a disconnect); retry after the next
    /// [`Event::Subscribed`](crate::Event::Subscribed).
    #[error("not subscribed to a master (re-subscribing)")]
    NotSubscribed,
    /// The framework was removed by the master (torn down, or its failover
    /// timeout expired) or replaced by a newer instance; the handle is
    /// useless from now on.
    #[error("framework removed: {0}")]
    Removed(String),
    /// No master could be reached.
    #[error("cannot reach a master: {0}")]
    Transport(String),
    /// A call got no answer within the configured call timeout; it may or
    /// may not have taken effect.
    #[error("call timed out after {0:?}; its outcome is unknown")]
    Timeout(std::time::Duration),
    /// The event stream was lost while the call waited for its answer (the
    /// master died, froze or stepped down); the call may or may not have
    /// taken effect, and the SDK is re-subscribing.
    #[error("the connection to the master was lost during the call; its outcome is unknown")]
    ConnectionLost,
}

impl SdkError {
    /// The gRPC code of an [`SdkError::Rpc`], `None` for other errors.
    #[must_use]
    pub fn code(&self) -> Option<tonic::Code> {
        match self {
            SdkError::Rpc { code, .. } => Some(*code),
            _ => None,
        }
    }

    /// Whether a call that failed this way may still have taken effect:
    /// it timed out, its connection was lost, or the master answered
    /// `UNAVAILABLE` (a leader that stepped down, or could not commit in
    /// time, may have replicated the change already, and the next leader
    /// then commits it) or another code that does not say the call was
    /// refused. Reconcile before doing it again. `false` for refusals that
    /// change nothing (`INVALID_ARGUMENT`, `FAILED_PRECONDITION`,
    /// `NOT_FOUND`, …) and for calls never sent ([`SdkError::NotSubscribed`]).
    #[must_use]
    pub fn outcome_unknown(&self) -> bool {
        match self {
            SdkError::Timeout(_) | SdkError::ConnectionLost | SdkError::Transport(_) => true,
            SdkError::Rpc { code, .. } => !matches!(
                code,
                tonic::Code::InvalidArgument
                    | tonic::Code::FailedPrecondition
                    | tonic::Code::NotFound
                    | tonic::Code::AlreadyExists
                    | tonic::Code::PermissionDenied
                    | tonic::Code::Unauthenticated
                    | tonic::Code::OutOfRange
                    | tonic::Code::Unimplemented
            ),
            SdkError::InvalidConfig(_)
            | SdkError::InvalidTask { .. }
            | SdkError::NotSubscribed
            | SdkError::Removed(_) => false,
        }
    }
}

impl From<tonic::Status> for SdkError {
    fn from(status: tonic::Status) -> Self {
        SdkError::Rpc {
            code: status.code(),
            message: status.message().to_owned(),
        }
    }
}

/// An error of the framework's own code (its persistence, mostly), as the
/// [`Scheduler`](crate::runtime::Scheduler) hooks return it.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Why [`Runtime::run`](crate::runtime::Runtime::run) stopped with an
/// error.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The subscription could not be made, or a call failed in a way that
    /// ends the runtime.
    #[error(transparent)]
    Sdk(#[from] SdkError),
    /// The master removed the framework (torn down elsewhere, failover
    /// timeout expired, or superseded by a newer instance).
    #[error("the framework was removed: {0}")]
    Removed(String),
    /// The event stream ended without a reason.
    #[error("the event stream ended")]
    Ended,
    /// A hook of the framework failed (typically a durable write); the
    /// runtime stops rather than act on state it could not save. `during`
    /// says which hook.
    #[error("the framework failed while {during}: {source}")]
    Framework {
        /// What the runtime was doing.
        during: &'static str,
        /// The framework's error.
        #[source]
        source: BoxError,
    },
}
