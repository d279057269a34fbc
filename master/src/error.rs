//! Errors of the master library.

use std::path::PathBuf;

use berth_scheduler_core::quoted;

/// What can go wrong in the master outside a single API call.
#[derive(Debug, thiserror::Error)]
pub enum MasterError {
    /// The configuration is invalid.
    #[error("invalid master configuration: {0}")]
    Config(String),
    /// The registry store could not be opened or read.
    #[error("registry store at {path}: {message}")]
    Store {
        /// The redb file.
        path: PathBuf,
        /// What failed.
        message: String,
    },
    /// A stored record could not be decoded.
    #[error("corrupt registry record: {0}")]
    Corrupt(String),
    /// The gRPC server failed.
    #[error("server: {0}")]
    Server(String),
    /// I/O failed.
    #[error("I/O: {0}")]
    Io(#[from] std::io::Error),
}

/// Why the registry refused to apply a command. A refused command changes
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ApplyError {
    /// The framework is not in the registry.
    #[error("unknown framework {}", quoted(.0))]
    UnknownFramework(String),
    /// The agent is not in the registry.
    #[error("unknown agent {}", quoted(.0))]
    UnknownAgent(String),
    /// A task with this id is already active in the framework.
    #[error("task {} already exists in framework {}", quoted(.task), quoted(.framework))]
    DuplicateTask {
        /// The framework.
        framework: String,
        /// The task id.
        task: String,
    },
    /// Applying the command would allocate an agent beyond its resources.
    #[error("agent {} has {free} free; tasks need {need}", quoted(.agent))]
    Overcommit {
        /// The agent.
        agent: String,
        /// What is free on it.
        free: String,
        /// What the tasks need.
        need: String,
    },
    /// This master is not (or no longer) the leader; the command was not
    /// committed by it.
    #[error("this master is not the leader")]
    NotLeader,
    /// This master proposed the command but lost leadership before it was
    /// committed: the new leader may still commit it, so its outcome is
    /// unknown.
    #[error(
        "this master lost leadership before the command was committed; the new leader may \
         still commit it (reconcile before retrying)"
    )]
    LeadershipLost,
    /// Any other invariant the command would break.
    #[error("{0}")]
    Invalid(String),
    /// A condition of the command does not hold (a key-value compare, a
    /// lease taken by someone else): nothing changed.
    #[error("{0}")]
    Conflict(String),
    /// The command could not be committed now (Raft's queue is full, or it
    /// did not commit in time); the caller may retry. When it timed out it
    /// may still commit later.
    #[error("{0}")]
    Unavailable(String),
}

/// Why registry snapshot bytes could not be read.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    /// A snapshot of a version this master does not know (written by a
    /// newer berth).
    #[error("registry snapshot version {0} is not one this berth reads (it reads 0 to 2)")]
    Version(u8),
    /// The snapshot decodes but contradicts itself.
    #[error("inconsistent registry snapshot: {0}")]
    Inconsistent(String),
    /// The bytes do not decode.
    #[error("undecodable registry snapshot: {0}")]
    Decode(#[from] postcard::Error),
}

/// Why a Raft log entry written by the master (a proposal, or the context
/// of a membership change) could not be read. See [`crate::entry`].
#[derive(Debug, thiserror::Error)]
pub enum EntryError {
    /// An entry of a format version this master does not know (written by
    /// a newer berth).
    #[error(
        "log entry format version {0} is not one this berth reads (it reads 0 to {max}); \
         upgrade this master",
        max = crate::entry::ENTRY_VERSION
    )]
    Version(u8),
    /// The tag is not followed by a version and the guard byte.
    #[error("log entry header broken: its tag is not followed by a version and the guard byte")]
    Header,
    /// The value is followed by bytes that are not part of it.
    #[error("log entry has {0} unexpected trailing bytes")]
    Trailing(usize),
    /// The bytes do not decode.
    #[error("undecodable log entry: {0}")]
    Decode(#[from] postcard::Error),
}

/// Why the core refused a call or could not answer it. The core speaks only
/// this; the gRPC layer (`service.rs`) alone turns it into a
/// `tonic::Status`, one variant to one code, with the message unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum CallError {
    /// The call is malformed or names something invalid (INVALID_ARGUMENT).
    #[error("{0}")]
    InvalidArgument(String),
    /// The call names something the master does not know (NOT_FOUND).
    #[error("{0}")]
    NotFound(String),
    /// What the call would create exists already (ALREADY_EXISTS).
    #[error("{0}")]
    AlreadyExists(String),
    /// The call is valid but the cluster's state refuses it now
    /// (FAILED_PRECONDITION).
    #[error("{0}")]
    FailedPrecondition(String),
    /// The master cannot do it now; the caller may retry (UNAVAILABLE).
    #[error("{0}")]
    Unavailable(String),
    /// A bug of the master (INTERNAL).
    #[error("{0}")]
    Internal(String),
    /// This master is not the leader; `leader` is the leader's address
    /// when known, which callers follow (UNAVAILABLE, with the address in
    /// the `berth-leader` metadata).
    #[error("{}", not_leader_message(.leader.as_deref()))]
    NotLeader {
        /// The leader's API address, when known.
        leader: Option<String>,
    },
    /// This master lost leadership with the call's command in flight: the
    /// new leader may still commit it (UNAVAILABLE, with the leader's
    /// address like [`CallError::NotLeader`]).
    #[error("{}; {}", ApplyError::LeadershipLost, not_leader_message(.leader.as_deref()))]
    OutcomeUnknown {
        /// The leader's API address, when known.
        leader: Option<String>,
    },
}

impl CallError {
    /// INVALID_ARGUMENT with `message`.
    pub(crate) fn invalid_argument(message: impl Into<String>) -> Self {
        Self::InvalidArgument(message.into())
    }

    /// NOT_FOUND with `message`.
    pub(crate) fn not_found(message: impl Into<String>) -> Self {
        Self::NotFound(message.into())
    }

    /// ALREADY_EXISTS with `message`.
    pub(crate) fn already_exists(message: impl Into<String>) -> Self {
        Self::AlreadyExists(message.into())
    }

    /// FAILED_PRECONDITION with `message`.
    pub(crate) fn failed_precondition(message: impl Into<String>) -> Self {
        Self::FailedPrecondition(message.into())
    }

    /// UNAVAILABLE with `message`.
    pub(crate) fn unavailable(message: impl Into<String>) -> Self {
        Self::Unavailable(message.into())
    }

    /// INTERNAL with `message`.
    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::Internal(message.into())
    }
}

/// What a master that is not the leader answers, naming the leader when it
/// knows it.
fn not_leader_message(leader: Option<&str>) -> String {
    match leader {
        Some(addr) => format!("this master is not the leader; the leader is at {addr}"),
        None => "this master is not the leader and no leader is known yet".to_string(),
    }
}
