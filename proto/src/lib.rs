//! berth's wire protocol.
//!
//! The protobuf messages and tonic services of the three APIs of the master
//! (scheduler, agent, operator), the agent's own log API, the CI
//! framework's API ([`ci`]), the service framework's ([`service`]) and
//! the job framework's ([`jobs`]),
//! generated at build time from the .proto files
//! under `proto/berth/`, laid out as their packages say.
//! Every message and field is documented in the .proto files; the
//! generated Rust items carry those comments. prost drops the enum's name
//! from its values: `LOG_FILE_STDOUT` is `LogFile::Stdout`.
//!
//! This crate holds wire types only. Validation and conversion into
//! berth's domain types (fixed-point resources, validated ids) live with the
//! code that receives them, in `berth-scheduler-core` terms. The exceptions
//! are the rules the master and the agent both apply and must apply alike:
//! [`transfer`] (a task's fetched URIs and uploaded outputs), [`mask`]
//! (masked values), [`minimums`] (the least a task may ask for), [`task`]
//! (a `TaskInfo`'s own fields: command, environment, container, health
//! check) and [`check_address`].
//!
//! It also holds what every client and service shares about the wire:
//! finding the leading master ([`leader`]), [`endpoint_uri`], and
//! [`bounded_status`], which cuts the message of any error a gRPC service
//! sends to [`MAX_STATUS_MESSAGE_BYTES`] (behind the per-value cut of
//! [`quoted`]); the master's services, the agent's `ReadLog` and the CI
//! framework's APIs pass their errors through it.

/// Version 1 of the berth protocol (`package berth.v1`).
#[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
pub mod v1 {
    tonic::include_proto!("berth.v1");
}

pub use v1::*;

/// The CI framework's API (`package berth.ci.v1`, `ci.proto`), served by
/// `berth ci serve` next to its HTTP/JSON API.
pub mod ci {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
    pub mod v1 {
        tonic::include_proto!("berth.ci.v1");
    }
}

/// The service framework's API (`package berth.service.v1`,
/// `service.proto`), served by `berth service serve` next to its
/// Marathon-compatible HTTP API.
pub mod service {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
    pub mod v1 {
        tonic::include_proto!("berth.service.v1");
    }
}

/// The job framework's API (`package berth.jobs.v1`, `jobs.proto`),
/// served by `berth jobs serve` next to its Metronome-compatible HTTP API.
pub mod jobs {
    /// Version 1.
    #[allow(missing_docs, clippy::all, clippy::pedantic, rust_2018_idioms)]
    pub mod v1 {
        tonic::include_proto!("berth.jobs.v1");
    }
}

/// Largest gRPC message berth decodes (tonic's default, 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

pub mod convert;
pub mod error;
pub mod golden;
pub mod leader;
pub mod mask;
pub mod minimums;
pub mod task;
pub mod testing;
pub mod transfer;

pub use berth_scheduler_core::quoted;
pub use error::AddressError;

/// Longest master or agent address accepted on the wire, in bytes (a DNS
/// name has at most 253).
pub const MAX_ADDRESS_BYTES: usize = 255;

/// Checks an address a master or an agent is reached at, as `AddMember`
/// and an agent's `Register` carry it: `host:port`, optionally behind
/// `http://` or `https://`, with a port of 1-65535, at most
/// [`MAX_ADDRESS_BYTES`]. Why here: the master stores these addresses in
/// its replicated state and hands them to every client, so a bad one must
/// be refused where it arrives, with the same words wherever it arrives.
///
/// # Errors
/// An [`AddressError`] saying what is wrong.
pub fn check_address(address: &str) -> Result<(), AddressError> {
    let malformed = |reason| AddressError::Malformed {
        address: address.to_owned(),
        reason,
    };
    if address.is_empty() {
        return Err(AddressError::Empty);
    }
    if address.len() > MAX_ADDRESS_BYTES {
        return Err(AddressError::TooLong {
            address: address.to_owned(),
            len: address.len(),
        });
    }
    if address.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(malformed("it contains whitespace or control characters"));
    }
    let rest = address
        .strip_prefix("http://")
        .or_else(|| address.strip_prefix("https://"))
        .unwrap_or(address);
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(malformed("no port"));
    };
    if host.is_empty() || host.contains('/') {
        return Err(malformed("no host before the port"));
    }
    match port.parse::<u16>() {
        Ok(p) if p > 0 => Ok(()),
        _ => Err(malformed("the port is not a number from 1 to 65535")),
    }
}

/// Turns a master or agent address as users write it (`host:port`,
/// `http://host:port`) into the URI tonic connects to.
#[must_use]
pub fn endpoint_uri(address: &str) -> String {
    let address = address.trim();
    if address.contains("://") {
        address.to_string()
    } else {
        format!("http://{address}")
    }
}

/// Longest error message berth's gRPC services send, in bytes.
pub const MAX_STATUS_MESSAGE_BYTES: usize = 2048;

/// `status` with its message cut to [`MAX_STATUS_MESSAGE_BYTES`] (at a char
/// boundary, saying how long it was); its code and metadata (such as the
/// `berth-leader` redirect) are kept.
///
/// Why: every value an error quotes is cut short where it is quoted
/// ([`berth_scheduler_core::quoted`]), but a message can still add up
/// (a pipeline's diagnostics, a tool's output); the message travels in the
/// `grpc-message` trailer, percent-encoding can triple its bytes, and
/// standard clients refuse trailers over 8 KiB (grpcio: "received metadata
/// size exceeds hard limit"), so the caller would never learn why it was
/// refused. Each service passes its errors through this once.
#[must_use]
pub fn bounded_status(status: tonic::Status) -> tonic::Status {
    match bounded_message(status.message()) {
        std::borrow::Cow::Borrowed(_) => status,
        std::borrow::Cow::Owned(cut) => {
            tonic::Status::with_metadata(status.code(), cut, status.metadata().clone())
        }
    }
}

/// `message` cut to [`MAX_STATUS_MESSAGE_BYTES`] at a char boundary, with
/// `… (message cut; N bytes)` when it was longer; the one rule for how
/// long an error message berth sends may be (see [`bounded_status`]),
/// also for messages built by libraries that echo input (HTTP routing
/// errors that quote a path).
#[must_use]
pub fn bounded_message(message: &str) -> std::borrow::Cow<'_, str> {
    if message.len() <= MAX_STATUS_MESSAGE_BYTES {
        return std::borrow::Cow::Borrowed(message);
    }
    let mut end = MAX_STATUS_MESSAGE_BYTES;
    while !message.is_char_boundary(end) {
        end -= 1;
    }
    std::borrow::Cow::Owned(format!(
        "{}… (message cut; {} bytes)",
        &message[..end],
        message.len()
    ))
}

#[cfg(test)]
mod tests {
    use super::{AddressError, MAX_STATUS_MESSAGE_BYTES, bounded_status, check_address};

    #[test]
    fn long_status_messages_are_cut_and_keep_code_and_metadata() {
        let short = tonic::Status::invalid_argument("short");
        assert_eq!(bounded_status(short).message(), "short");
        let mut long = tonic::Status::unavailable("é".repeat(5000));
        long.metadata_mut()
            .insert("berth-leader", "127.0.0.1:1".parse().expect("ascii"));
        let cut = bounded_status(long);
        assert_eq!(cut.code(), tonic::Code::Unavailable);
        assert!(cut.message().len() <= MAX_STATUS_MESSAGE_BYTES + 64);
        assert!(cut.message().ends_with("é… (message cut; 10000 bytes)"));
        assert_eq!(
            cut.metadata()
                .get("berth-leader")
                .and_then(|v| v.to_str().ok()),
            Some("127.0.0.1:1")
        );
    }

    #[test]
    fn addresses_are_host_and_port() {
        for good in [
            "127.0.0.1:5050",
            "http://m1:5050",
            "https://m:1/",
            "[::1]:5050",
        ] {
            assert_eq!(check_address(good), Ok(()), "{good}");
        }
        assert_eq!(check_address(""), Err(AddressError::Empty));
        for (bad, needle) in [
            ("m1", "no port"),
            (":5050", "no host"),
            ("m1:0", "1 to 65535"),
            ("m1:70000", "1 to 65535"),
            ("m1:x", "1 to 65535"),
            ("m 1:5050", "whitespace"),
            ("http://a/b:5050", "no host"),
        ] {
            let e = check_address(bad).unwrap_err().to_string();
            assert!(e.contains(needle), "{bad}: {e}");
        }
        let huge = format!("{}:5050", "h".repeat(1 << 20));
        let e = check_address(&huge).unwrap_err().to_string();
        assert!(e.len() < 200 && e.contains("(1048581 bytes)"), "{e}");
    }

    #[test]
    fn endpoint_uri_adds_a_scheme_once() {
        assert_eq!(
            super::endpoint_uri("127.0.0.1:5050"),
            "http://127.0.0.1:5050"
        );
        assert_eq!(super::endpoint_uri(" http://h:1 "), "http://h:1");
        assert_eq!(super::endpoint_uri("https://h:1"), "https://h:1");
    }
}
