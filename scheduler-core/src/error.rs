//! Error types of scheduler-core, one enum per concern.
//!
//! Every variant names the offending value and the exact problem, so the
//! message can be shown to an operator or a framework author as is.

use crate::ids::{AgentId, FrameworkId, OfferId, Role};

/// Formats an `f64` for error messages: plain decimal for ordinary
/// magnitudes, scientific notation for huge or tiny ones.
fn show_f64(v: &f64) -> String {
    let a = v.abs();
    if a != 0.0 && a.is_finite() && !(1e-6..1e16).contains(&a) {
        format!("{v:e}")
    } else {
        format!("{v}")
    }
}

/// An identifier (agent, framework, task, offer id or role name) failed
/// validation. `kind` is a human name such as `"task id"`, `value` the
/// offending input.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// The id was the empty string.
    #[error("invalid {kind}: must not be empty")]
    Empty {
        /// What kind of id this was, e.g. `"task id"`.
        kind: &'static str,
    },
    /// The id was longer than 255 bytes.
    #[error("invalid {kind} {value:?}: must be at most 255 bytes (got {len})")]
    TooLong {
        /// What kind of id this was.
        kind: &'static str,
        /// The offending id.
        value: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The id contained a forbidden character such as `/` or `\`.
    #[error("invalid {kind} {value:?}: must not contain {ch:?}")]
    ForbiddenChar {
        /// What kind of id this was.
        kind: &'static str,
        /// The offending id.
        value: String,
        /// The forbidden character.
        ch: char,
    },
    /// The id was `.` or `..` or contained `..`.
    #[error("invalid {kind} {value:?}: must not be '.' or contain '..'")]
    DotPath {
        /// What kind of id this was.
        kind: &'static str,
        /// The offending id.
        value: String,
    },
    /// The id contained a control character (including `\n`, `\0`, DEL).
    #[error("invalid {kind} {value:?}: must not contain control characters")]
    ControlChar {
        /// What kind of id this was.
        kind: &'static str,
        /// The offending id.
        value: String,
    },
    /// The id contained whitespace.
    #[error("invalid {kind} {value:?}: must not contain whitespace")]
    Whitespace {
        /// What kind of id this was.
        kind: &'static str,
        /// The offending id.
        value: String,
    },
    /// A role name started with `-`.
    #[error("invalid {kind} {value:?}: must not start with '-'")]
    LeadingDash {
        /// What kind of id this was.
        kind: &'static str,
        /// The offending id.
        value: String,
    },
}

/// A resource quantity or resource text was invalid.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResourceError {
    /// A scalar was negative.
    #[error("resource {name:?} must not be negative (got {})", show_f64(.value))]
    Negative {
        /// Resource name, e.g. `"cpus"`.
        name: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A scalar was NaN or infinite.
    #[error("resource {name:?} must be a finite number (got {value})")]
    NotFinite {
        /// Resource name.
        name: &'static str,
        /// The offending value.
        value: f64,
    },
    /// A scalar was a subnormal floating-point number.
    #[error("resource {name:?} must not be a subnormal number")]
    Subnormal {
        /// Resource name.
        name: &'static str,
    },
    /// A scalar exceeded [`crate::Scalar::MAX_UNITS`].
    #[error("resource {name:?} is absurdly large (got {}, at most 1000000000000)", show_f64(.value))]
    TooLarge {
        /// Resource name.
        name: &'static str,
        /// The offending value (in whole units).
        value: f64,
    },
    /// A port range had `begin > end`.
    #[error("invalid port range [{begin}-{end}]: begin is greater than end")]
    InvalidPortRange {
        /// First port of the range.
        begin: u64,
        /// Last port of the range.
        end: u64,
    },
    /// A port number exceeded 65535.
    #[error("port {value} is out of range (at most 65535)")]
    PortOutOfRange {
        /// The offending port number.
        value: u64,
    },
    /// Resource text could not be parsed.
    #[error("cannot parse resources {input:?}: {reason}")]
    Parse {
        /// The text (or the token of it) that failed.
        input: String,
        /// Why it failed.
        reason: String,
    },
    /// Resource text named a resource berth does not know.
    #[error("unknown resource {0:?} (known: cpus, mem, disk, gpus, ports)")]
    UnknownResource(String),
    /// Resource text named the same resource twice.
    #[error("duplicate resource {0:?}")]
    DuplicateResource(String),
    /// An addition exceeded [`crate::Scalar::MAX_UNITS`].
    #[error("resource {name:?} overflows: sum exceeds 1000000000000")]
    Overflow {
        /// Resource name.
        name: &'static str,
    },
}

/// An allocator call was rejected; the allocator state is unchanged.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum AllocatorError {
    /// The framework is not registered with the allocator.
    #[error("unknown framework {:?}", .0.as_str())]
    UnknownFramework(FrameworkId),
    /// The agent is not registered with the allocator.
    #[error("unknown agent {:?}", .0.as_str())]
    UnknownAgent(AgentId),
    /// A role weight was not a finite number in `(0, 1e6]`.
    #[error("invalid weight {value}: {reason}")]
    InvalidWeight {
        /// The offending weight.
        value: f64,
        /// Why it is invalid.
        reason: &'static str,
    },
    /// A quota was invalid (e.g. its guarantee exceeds its limit).
    #[error("invalid quota for role {:?}: {reason}", .role.as_str())]
    InvalidQuota {
        /// The role the quota was for.
        role: Role,
        /// Why it is invalid.
        reason: String,
    },
    /// Recorded usage exceeds what is free on the agent.
    #[error(
        "usage by framework {:?} in role {:?} on agent {:?} exceeds its free resources: \
         wanted [{wanted}], free [{free}]",
        .framework.as_str(),
        .role.as_str(),
        .agent.as_str()
    )]
    OverAllocation {
        /// The agent.
        agent: AgentId,
        /// The framework.
        framework: FrameworkId,
        /// The role.
        role: Role,
        /// What was asked for (text form).
        wanted: String,
        /// What is free to that role (text form).
        free: String,
    },
    /// A new agent total is smaller than what is allocated on it.
    #[error("new total of agent {:?} does not cover its allocated resources: {reason}", .agent.as_str())]
    TotalBelowAllocated {
        /// The agent.
        agent: AgentId,
        /// Which part does not fit.
        reason: String,
    },
    /// An internal invariant did not hold (reported by `check_invariants`).
    #[error("allocator invariant violated: {0}")]
    Invariant(String),
}

/// An offer operation (accept/decline) was rejected; the book is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OfferError {
    /// No offer ids were given.
    #[error("no offer ids given")]
    Empty,
    /// The offer id was never issued by this book.
    #[error("unknown offer {:?}", .0.as_str())]
    Unknown(OfferId),
    /// The same offer id was given twice.
    #[error("offer {:?} given more than once", .0.as_str())]
    Duplicate(OfferId),
    /// The offer was rescinded, expired or already used.
    #[error("offer {:?} was rescinded or already used", .0.as_str())]
    Rescinded(OfferId),
    /// The offer belongs to another framework.
    #[error("offer {:?} belongs to framework {:?}", .offer.as_str(), .owner.as_str())]
    NotYours {
        /// The offer.
        offer: OfferId,
        /// The framework that holds it.
        owner: FrameworkId,
    },
    /// The offers are on different agents; one accept may combine offers
    /// from one agent only.
    #[error("offers are on different agents; one accept may combine offers from one agent only")]
    DifferentAgents,
}
