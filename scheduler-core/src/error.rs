//! Error types of scheduler-core, one enum per concern.
//!
//! Every variant names the offending value and the exact problem, so the
//! message can be shown to an operator or a framework author as is.
//!
//! [`quoted`] is the one way an error message in any crate quotes input:
//! at most [`MAX_QUOTED_BYTES`] of it, escaped, then `… (N bytes)` when it
//! was longer, so that a megabyte id never comes back as a megabyte
//! message.

use std::fmt;

use crate::ids::{AgentId, FrameworkId, OfferId, Role};

/// The most bytes of one input value an error message quotes.
pub const MAX_QUOTED_BYTES: usize = 64;

/// Quotes `value` for an error message, cut short: at most
/// [`MAX_QUOTED_BYTES`] bytes of it (at a char boundary), escaped as Rust's
/// `{:?}` does, and, when it was cut, `… (N bytes)` after the closing quote.
///
/// Why: errors travel back to callers in gRPC trailers and HTTP bodies, and
/// a message that echoes a megabyte id makes a trailer standard clients
/// refuse (grpcio: "received metadata size exceeds hard limit"), so the
/// caller never learns why it was refused. Every message that quotes input
/// goes through this one function, in every crate.
#[must_use]
pub fn quoted(value: &str) -> Quoted<'_> {
    Quoted(value)
}

/// An input value as an error message quotes it; see [`quoted`].
#[derive(Debug, Clone, Copy)]
pub struct Quoted<'a>(&'a str);

impl fmt::Display for Quoted<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0;
        if s.len() <= MAX_QUOTED_BYTES {
            return write!(f, "{s:?}");
        }
        let mut end = MAX_QUOTED_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        write!(f, "{:?}… ({} bytes)", &s[..end], s.len())
    }
}

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
    #[error("invalid {kind} {}: must be at most 255 bytes (got {len})", quoted(.value))]
    TooLong {
        /// What kind of id this was.
        kind: &'static str,
        /// The offending id.
        value: String,
        /// Its length in bytes.
        len: usize,
    },
    /// The id contained a forbidden character such as `/` or `\`.
    #[error("invalid {kind} {}: must not contain {ch:?}", quoted(.value))]
    ForbiddenChar {
        /// What kind of id this was.
        kind: &'static str,
        /// The offending id.
        value: String,
        /// The forbidden character.
        ch: char,
    },
    /// The id was `.` or `..` or contained `..`.
    #[error("invalid {kind} {}: must not be '.' or contain '..'", quoted(.value))]
    DotPath {
        /// What kind of id this was.
        kind: &'static str,
        /// The offending id.
        value: String,
    },
    /// The id contained a control character (including `\n`, `\0`, DEL).
    #[error("invalid {kind} {}: must not contain control characters", quoted(.value))]
    ControlChar {
        /// What kind of id this was.
        kind: &'static str,
        /// The offending id.
        value: String,
    },
    /// The id contained whitespace.
    #[error("invalid {kind} {}: must not contain whitespace", quoted(.value))]
    Whitespace {
        /// What kind of id this was.
        kind: &'static str,
        /// The offending id.
        value: String,
    },
    /// A role name started with `-`.
    #[error("invalid {kind} {}: must not start with '-'", quoted(.value))]
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
    #[error("cannot parse resources {}: {reason}", quoted(.input))]
    Parse {
        /// The text (or the token of it) that failed.
        input: String,
        /// Why it failed.
        reason: String,
    },
    /// Resource text named a resource berth does not know.
    #[error("unknown resource {} (known: cpus, mem, disk, gpus, ports)", quoted(.0))]
    UnknownResource(String),
    /// Resource text named the same resource twice.
    #[error("duplicate resource {}", quoted(.0))]
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
    #[error("unknown framework {}", quoted(.0.as_str()))]
    UnknownFramework(FrameworkId),
    /// The agent is not registered with the allocator.
    #[error("unknown agent {}", quoted(.0.as_str()))]
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
    #[error("invalid quota for role {}: {reason}", quoted(.role.as_str()))]
    InvalidQuota {
        /// The role the quota was for.
        role: Role,
        /// Why it is invalid.
        reason: String,
    },
    /// Recorded usage exceeds what is free on the agent.
    #[error(
        "usage by framework {} in role {} on agent {} exceeds its free resources: \
         wanted [{wanted}], free [{free}]",
        quoted(.framework.as_str()),
        quoted(.role.as_str()),
        quoted(.agent.as_str())
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
    #[error("new total of agent {} does not cover its allocated resources: {reason}", quoted(.agent.as_str()))]
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
    #[error("unknown offer {}", quoted(.0.as_str()))]
    Unknown(OfferId),
    /// The same offer id was given twice.
    #[error("offer {} given more than once", quoted(.0.as_str()))]
    Duplicate(OfferId),
    /// The offer was rescinded, expired or already used.
    #[error("offer {} was rescinded or already used", quoted(.0.as_str()))]
    Rescinded(OfferId),
    /// The offer belongs to another framework.
    #[error("offer {} belongs to framework {}", quoted(.offer.as_str()), quoted(.owner.as_str()))]
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::TaskId;

    #[test]
    fn short_values_are_quoted_whole() {
        assert_eq!(quoted("a b").to_string(), r#""a b""#);
        assert_eq!(quoted("x\ny").to_string(), r#""x\ny""#);
        let exact = "e".repeat(MAX_QUOTED_BYTES);
        assert_eq!(quoted(&exact).to_string(), format!("{exact:?}"));
    }

    #[test]
    fn long_values_are_cut_at_a_char_boundary_with_their_length() {
        let long = "a".repeat(1 << 20);
        let shown = quoted(&long).to_string();
        assert_eq!(
            shown,
            format!("\"{}\"… (1048576 bytes)", "a".repeat(MAX_QUOTED_BYTES))
        );
        // 'é' is two bytes: 63 bytes of 'a' then 'é' straddles byte 64.
        let straddle = format!("{}é{}", "a".repeat(63), "z".repeat(100));
        assert_eq!(
            quoted(&straddle).to_string(),
            format!("\"{}\"… (165 bytes)", "a".repeat(63))
        );
        // Escaping can grow the quoted part, but only by a bounded factor.
        let controls = "\u{1}".repeat(1 << 20);
        assert!(quoted(&controls).to_string().len() < 16 * MAX_QUOTED_BYTES);
    }

    #[test]
    fn id_errors_quote_huge_ids_cut_short() {
        let huge = "x".repeat(1 << 20);
        let e = TaskId::new(huge).unwrap_err().to_string();
        assert!(e.len() < 200, "{} bytes", e.len());
        assert!(e.contains("(1048576 bytes)"), "{e}");
        assert!(
            e.ends_with("must be at most 255 bytes (got 1048576)"),
            "{e}"
        );
        let spaced = format!("{} {}", "y".repeat(100), "y".repeat(100));
        let e = TaskId::new(spaced).unwrap_err().to_string();
        assert!(
            e.ends_with("(201 bytes): must not contain whitespace"),
            "{e}"
        );
    }
}
