//! The SDK's error type and its kinds.

/// What kind of failure an [`SdkError`] is: what a caller needs to decide
/// what to do next, without knowing the wire protocol.
///
/// New kinds may be added; match with a wildcard arm.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ErrorKind {
    /// The input is invalid (a config, a task, an offer id, a list): the
    /// call was refused and nothing changed. The same call fails again.
    Invalid,
    /// The master does not know what the call names (a framework that is
    /// not registered, an unknown task); nothing changed.
    NotFound,
    /// What the call would create exists already; nothing changed.
    AlreadyExists,
    /// The master refused the call in its current state: the subscription
    /// it came on ended or was superseded, or the state it needs no longer
    /// holds (a task id taken meanwhile). Nothing changed; reconcile, or
    /// retry after the next [`Event::Subscribed`](crate::Event::Subscribed).
    Conflict,
    /// The framework may not do this; nothing changed.
    PermissionDenied,
    /// The master does not implement the call; nothing changed.
    Unsupported,
    /// The SDK has no live subscription right now (it is re-subscribing);
    /// the call was not sent.
    NotSubscribed,
    /// The framework was removed; the handle is useless from now on.
    Removed,
    /// No master could be reached, or the master could not serve the call
    /// now (it stepped down, or could not commit in time): the call may
    /// still have taken effect.
    Unavailable,
    /// The call got no answer (timeout, lost connection): it may or may not
    /// have taken effect.
    OutcomeUnknown,
    /// Another failure the master reported (an internal error, or an answer
    /// this SDK does not know); the call may have taken effect.
    Other,
}

impl ErrorKind {
    /// The kind of a gRPC status code, as the master answers calls.
    fn of_code(code: tonic::Code) -> Self {
        use tonic::Code;
        match code {
            Code::InvalidArgument | Code::OutOfRange => ErrorKind::Invalid,
            Code::NotFound => ErrorKind::NotFound,
            Code::AlreadyExists => ErrorKind::AlreadyExists,
            Code::FailedPrecondition => ErrorKind::Conflict,
            Code::PermissionDenied | Code::Unauthenticated => ErrorKind::PermissionDenied,
            Code::Unimplemented => ErrorKind::Unsupported,
            Code::Unavailable => ErrorKind::Unavailable,
            Code::DeadlineExceeded | Code::Cancelled => ErrorKind::OutcomeUnknown,
            Code::Ok
            | Code::Unknown
            | Code::ResourceExhausted
            | Code::Aborted
            | Code::Internal
            | Code::DataLoss => ErrorKind::Other,
        }
    }
}

/// Why an SDK operation failed.
///
/// [`SdkError::kind`] says what kind of failure it is (bad input, a stale
/// subscription, an unreachable master, …); [`SdkError::outcome_unknown`]
/// whether the call may have taken effect anyway.
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
    /// The master answered the call with an error.
    #[error("master refused the call ({kind:?}): {message}")]
    Rpc {
        /// What kind of error the master answered, e.g.
        /// [`ErrorKind::Invalid`] or [`ErrorKind::Conflict`].
        kind: ErrorKind,
        /// The master's message.
        message: String,
    },
    /// A request the SDK cannot send as it is (a key-value transaction
    /// larger than a gRPC message, a lease time to live that is not whole
    /// seconds); nothing was sent.
    #[error("invalid request: {0}")]
    InvalidRequest(String),
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
    /// What kind of failure this is.
    #[must_use]
    pub fn kind(&self) -> ErrorKind {
        match self {
            SdkError::InvalidConfig(_)
            | SdkError::InvalidTask { .. }
            | SdkError::InvalidRequest(_) => ErrorKind::Invalid,
            SdkError::Rpc { kind, .. } => *kind,
            SdkError::NotSubscribed => ErrorKind::NotSubscribed,
            SdkError::Removed(_) => ErrorKind::Removed,
            SdkError::Transport(_) => ErrorKind::Unavailable,
            SdkError::Timeout(_) | SdkError::ConnectionLost => ErrorKind::OutcomeUnknown,
        }
    }

    /// Whether a call that failed this way may still have taken effect:
    /// it timed out, its connection was lost, no master could be reached,
    /// or the master answered [`ErrorKind::Unavailable`] (a leader that
    /// stepped down, or could not commit in time, may have replicated the
    /// change already, and the next leader then commits it) or
    /// [`ErrorKind::Other`] (an answer that does not say the call was
    /// refused). Reconcile before doing it again. `false` for refusals that
    /// change nothing ([`ErrorKind::Invalid`], [`ErrorKind::Conflict`],
    /// [`ErrorKind::NotFound`], …) and for calls never sent
    /// ([`SdkError::NotSubscribed`]).
    #[must_use]
    pub fn outcome_unknown(&self) -> bool {
        matches!(
            self.kind(),
            ErrorKind::Unavailable | ErrorKind::OutcomeUnknown | ErrorKind::Other
        )
    }
}

impl From<tonic::Status> for SdkError {
    fn from(status: tonic::Status) -> Self {
        SdkError::Rpc {
            kind: ErrorKind::of_code(status.code()),
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

#[cfg(test)]
mod tests {
    use super::*;
    use tonic::Code;

    fn rpc(code: Code) -> SdkError {
        tonic::Status::new(code, "m").into()
    }

    #[test]
    fn master_answers_map_to_kinds() {
        let cases = [
            (Code::InvalidArgument, ErrorKind::Invalid, false),
            (Code::OutOfRange, ErrorKind::Invalid, false),
            (Code::NotFound, ErrorKind::NotFound, false),
            (Code::AlreadyExists, ErrorKind::AlreadyExists, false),
            (Code::FailedPrecondition, ErrorKind::Conflict, false),
            (Code::PermissionDenied, ErrorKind::PermissionDenied, false),
            (Code::Unauthenticated, ErrorKind::PermissionDenied, false),
            (Code::Unimplemented, ErrorKind::Unsupported, false),
            (Code::Unavailable, ErrorKind::Unavailable, true),
            (Code::DeadlineExceeded, ErrorKind::OutcomeUnknown, true),
            (Code::Cancelled, ErrorKind::OutcomeUnknown, true),
            (Code::Internal, ErrorKind::Other, true),
            (Code::Unknown, ErrorKind::Other, true),
            (Code::ResourceExhausted, ErrorKind::Other, true),
        ];
        for (code, kind, unknown) in cases {
            let e = rpc(code);
            assert_eq!(e.kind(), kind, "{code:?}");
            assert_eq!(e.outcome_unknown(), unknown, "{code:?}");
            assert_eq!(
                e,
                SdkError::Rpc {
                    kind,
                    message: "m".to_owned()
                }
            );
        }
    }

    #[test]
    fn sdk_errors_have_kinds() {
        let cases = [
            (
                SdkError::InvalidConfig(String::new()),
                ErrorKind::Invalid,
                false,
            ),
            (
                SdkError::InvalidTask {
                    task_id: "t".to_owned(),
                    reason: String::new(),
                },
                ErrorKind::Invalid,
                false,
            ),
            (
                SdkError::InvalidRequest(String::new()),
                ErrorKind::Invalid,
                false,
            ),
            (SdkError::NotSubscribed, ErrorKind::NotSubscribed, false),
            (SdkError::Removed(String::new()), ErrorKind::Removed, false),
            (
                SdkError::Transport(String::new()),
                ErrorKind::Unavailable,
                true,
            ),
            (
                SdkError::Timeout(std::time::Duration::from_secs(1)),
                ErrorKind::OutcomeUnknown,
                true,
            ),
            (SdkError::ConnectionLost, ErrorKind::OutcomeUnknown, true),
        ];
        for (e, kind, unknown) in cases {
            assert_eq!(e.kind(), kind, "{e:?}");
            assert_eq!(e.outcome_unknown(), unknown, "{e:?}");
        }
    }
}
