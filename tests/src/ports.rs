//! Ports of 127.0.0.1 for the daemons tests start.

/// A port of 127.0.0.1 that is free now (for a daemon to listen on).
///
/// The port is taken from 20000–30999, below the kernel's ephemeral range
/// (32768–60999 by default): a port the kernel hands out to a listener
/// bound to port 0 or to an outgoing connection can then never be the one
/// a test has picked for a daemon it starts later. (A kernel-picked port
/// used to collide with it: the daemon could not bind, and the test talked
/// to a master's gRPC port instead.) Successive calls in one process step
/// through the range from a start that differs per process, so parallel
/// tests and test binaries do not pick the same port.
///
/// # Panics
/// If no port in the range can be bound at all.
#[must_use]
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 11_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let seed = {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        std::process::id().wrapping_mul(7919).wrapping_add(nanos) % SPAN
    };
    let _ = NEXT.compare_exchange(u32::MAX, seed, Ordering::Relaxed, Ordering::Relaxed);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = u16::try_from(LOW + n % SPAN).expect("the range is within u16");
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port of 127.0.0.1 in {LOW}..{}", LOW + SPAN)
}
