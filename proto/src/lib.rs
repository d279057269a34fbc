//! berth's wire protocol.
//!
//! The protobuf messages and tonic services of the three APIs of the master
//! (scheduler, agent, operator), the agent's own log API and the CI
//! framework's API ([`ci`]), generated from `proto/*.proto` at build time.
//! Every message and field is documented in the .proto files; the
//! generated Rust items carry those comments.
//!
//! This crate holds wire types only. Validation and conversion into
//! berth's domain types (fixed-point resources, validated ids) live with the
//! code that receives them, in `berth-scheduler-core` terms. The exception
//! is [`transfer`]: the rules for a task's fetched URIs and uploaded outputs,
//! which the master and the agent both apply and must apply alike.

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

/// Largest gRPC message berth decodes (tonic's default, 4 MiB).
pub const MAX_MESSAGE_BYTES: usize = 4 * 1024 * 1024;

pub mod convert;
pub mod leader;
pub mod mask;
pub mod testing;
pub mod transfer;

/// Longest piece of an input value that error messages quote.
pub const QUOTE_BYTES: usize = 64;

/// `value` as error messages quote it: whole when it is at most
/// [`QUOTE_BYTES`] long, otherwise its first bytes (cut at a character
/// boundary) followed by `… (N bytes)`, so that no message grows with its
/// input.
#[must_use]
pub fn cut(value: &str) -> String {
    if value.len() <= QUOTE_BYTES {
        return value.to_owned();
    }
    let mut end = QUOTE_BYTES;
    while !value.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes)", &value[..end], value.len())
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

#[cfg(test)]
mod tests {
    #[test]
    fn cut_keeps_short_values_and_bounds_long_ones() {
        assert_eq!(super::cut("abc"), "abc");
        let long = "é".repeat(1000);
        let c = super::cut(&long);
        assert!(c.ends_with("… (2000 bytes)"), "{c}");
        assert!(c.len() <= super::QUOTE_BYTES + 20);
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
