//! The router with real HTTP and TCP traffic on loopback. Every test binds
//! port 0 and is bounded in time; none asserts on speed.

mod admin;
mod drain;
mod http;
mod load;
mod metrics;
mod support;
mod tcp;
