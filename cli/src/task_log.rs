//! Reading a task's log from its agent (`Agent.ReadLog`), for `berth task
//! log` and `berth run`, across restarts of the agent.
//!
//! [`stream_log`] delivers every byte of the file exactly once: it counts
//! the bytes it has written out and, when the stream breaks (the agent was
//! killed, restarted, frozen, or the network dropped), it reconnects with
//! backoff (100 ms doubling to 2 s) and asks again from that offset
//! (`ReadLogRequest.offset`); chunks are placed by their own `offset`, so a
//! repeated byte is dropped and a missing one is an error, never a silent
//! gap. While the agent is unreachable it says so once on stderr, and it
//! gives up after [`OUTAGE_LIMIT`] without a stream ([`OUTAGE_LIMIT_ONCE`]
//! for a log read once, not followed). A frozen agent is noticed by HTTP/2
//! keepalive pings (5 s, then 5 s to answer).
//!
//! What is not retried: answers the agent gave on purpose (an unknown task,
//! a bad request, a file it cannot read), and a failed write of our own
//! output (a closed pipe). An agent that comes back on another address is
//! not followed: the address is the caller's.

use std::io::Write;
use std::time::{Duration, Instant};

use anyhow::{Context, anyhow, bail};
use berth_agent::error::error_chain;
use berth_proto as pb;
use tonic::transport::Endpoint;

/// How long a followed log is waited for while its agent is unreachable
/// (counted from the last moment a stream was open), before [`stream_log`]
/// gives up. Long enough for an agent restart, short enough that a reader
/// of a dead agent's task does not hang.
pub(crate) const OUTAGE_LIMIT: Duration = Duration::from_secs(120);
/// The same for a log read once (not followed): the user waits for it.
pub(crate) const OUTAGE_LIMIT_ONCE: Duration = Duration::from_secs(10);
/// First wait before reconnecting; it doubles up to [`BACKOFF_MAX`].
const BACKOFF_FIRST: Duration = Duration::from_millis(100);
/// Longest wait between reconnection attempts.
const BACKOFF_MAX: Duration = Duration::from_secs(2);
/// Bound on one TCP connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Bound on the agent's first answer to a `ReadLog` call.
const CALL_TIMEOUT: Duration = Duration::from_secs(5);
/// HTTP/2 keepalive: a ping after this much silence, and as long again to
/// answer it (how a frozen agent is noticed mid-stream).
const KEEPALIVE: Duration = Duration::from_secs(5);

/// How one attempt ended, when not with the end of the log.
enum Failure {
    /// The agent could not be reached or the stream broke: try again.
    Retry(String),
    /// Trying again cannot help.
    Fatal(anyhow::Error),
}

/// Streams a task's `file` from the agent at `agent_address` into `out`
/// (to the end of the file, or with `follow` until the task has ended and
/// its file is read out), reconnecting across agent restarts as the module
/// docs say. Call it once per file: it never repeats a byte it wrote.
///
/// # Errors
/// No address, a refusal by the agent (unknown task, bad request, a file it
/// cannot read), a failed write to `out`, a gap in the chunks, or an agent
/// unreachable for longer than [`OUTAGE_LIMIT`] ([`OUTAGE_LIMIT_ONCE`]
/// without `follow`).
pub(crate) async fn stream_log(
    agent_address: &str,
    framework_id: &str,
    task_id: &str,
    file: pb::LogFile,
    follow: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<()> {
    let task = LogSource {
        agent_address,
        framework_id,
        task_id,
    };
    stream_log_from(&task, file, 0, follow, out)
        .await
        .map(|_| ())
}

/// Where a task's log is read.
#[derive(Debug, Clone, Copy)]
pub(crate) struct LogSource<'a> {
    /// The agent's `host:port`.
    pub(crate) agent_address: &'a str,
    /// The task's framework.
    pub(crate) framework_id: &'a str,
    /// The task.
    pub(crate) task_id: &'a str,
}

/// [`stream_log`] from byte `start` of the file (what a caller has shown
/// already); the offset reached, where the next read would start.
///
/// # Errors
/// As [`stream_log`].
pub(crate) async fn stream_log_from(
    task: &LogSource<'_>,
    file: pb::LogFile,
    start: u64,
    follow: bool,
    out: &mut (dyn Write + Send),
) -> anyhow::Result<u64> {
    let LogSource {
        agent_address,
        framework_id,
        task_id,
    } = *task;
    if agent_address.is_empty() {
        bail!("the task's agent did not register an address for its logs");
    }
    let endpoint = Endpoint::from_shared(pb::endpoint_uri(agent_address))
        .with_context(|| format!("invalid agent address {agent_address:?}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .http2_keep_alive_interval(KEEPALIVE)
        .keep_alive_timeout(KEEPALIVE)
        .keep_alive_while_idle(true);
    let request = |offset| pb::ReadLogRequest {
        task_id: task_id.to_string(),
        framework_id: framework_id.to_string(),
        file: file as i32,
        offset,
        follow,
    };
    let name = match file {
        pb::LogFile::Stderr => "stderr",
        _ => "stdout",
    };
    let limit = if follow {
        OUTAGE_LIMIT
    } else {
        OUTAGE_LIMIT_ONCE
    };
    let mut delivered = start;
    let mut last_open = Instant::now();
    let mut delay = BACKOFF_FIRST;
    let mut told = false;
    loop {
        let opened_before = last_open;
        match read_once(
            &endpoint,
            request(delivered),
            out,
            &mut delivered,
            &mut last_open,
        )
        .await
        {
            Ok(()) => return Ok(delivered),
            Err(Failure::Fatal(e)) => return Err(e),
            Err(Failure::Retry(why)) => {
                if last_open != opened_before {
                    // A stream was open: this is a new outage.
                    told = false;
                    delay = BACKOFF_FIRST;
                }
                let down_for = last_open.elapsed();
                if down_for > limit {
                    bail!(
                        "gave up reading the task's {name} from its agent at {agent_address}: \
                         unreachable for {}s ({why}); {delivered} bytes were shown",
                        down_for.as_secs()
                    );
                }
                if !told {
                    eprintln!(
                        "berth: the task's agent at {agent_address} is unreachable ({why}); \
                         retrying for up to {}s, then the task's {name} goes on where it stopped",
                        limit.as_secs()
                    );
                    told = true;
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(BACKOFF_MAX);
            }
        }
    }
}

/// One `ReadLog` call from `delivered`: writes what is new to `out` and
/// advances `delivered`; `last_open` is set while a stream is open.
async fn read_once(
    endpoint: &Endpoint,
    request: pb::ReadLogRequest,
    out: &mut (dyn Write + Send),
    delivered: &mut u64,
    last_open: &mut Instant,
) -> Result<(), Failure> {
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| Failure::Retry(error_chain(&e)))?;
    let mut client = pb::agent_client::AgentClient::new(channel);
    let mut stream = match tokio::time::timeout(CALL_TIMEOUT, client.read_log(request)).await {
        Ok(Ok(r)) => r.into_inner(),
        Ok(Err(status)) => return Err(classify(status)),
        Err(_) => {
            return Err(Failure::Retry(format!(
                "no answer within {}s",
                CALL_TIMEOUT.as_secs()
            )));
        }
    };
    loop {
        *last_open = Instant::now();
        let chunk = match stream.message().await {
            Ok(Some(c)) => c,
            Ok(None) => return Ok(()),
            Err(status) => return Err(classify(status)),
        };
        let fresh = fresh_part(chunk.offset, &chunk.data, *delivered).map_err(Failure::Fatal)?;
        if fresh.is_empty() {
            continue;
        }
        out.write_all(fresh)
            .and_then(|()| out.flush())
            .map_err(|e| {
                // Keep the error itself: a closed stdout is a quiet end
                // (`crate::out::is_closed`), not a failure.
                Failure::Fatal(anyhow::Error::from(e).context("cannot write the task's output"))
            })?;
        *delivered += fresh.len() as u64;
    }
}

/// The part of a chunk at `offset` not delivered yet, when `delivered`
/// bytes are: a chunk repeating delivered bytes (after a reconnection)
/// gives only its new tail; a chunk past `delivered` would leave a gap.
fn fresh_part(offset: u64, data: &[u8], delivered: u64) -> anyhow::Result<&[u8]> {
    if offset > delivered {
        bail!(
            "the agent sent the log from byte {offset}, but only {delivered} bytes were shown; \
             refusing to leave a gap"
        );
    }
    let skip = usize::try_from(delivered - offset).unwrap_or(usize::MAX);
    Ok(data.get(skip..).unwrap_or_default())
}

/// Whether a failed call is worth trying again: transport failures (ours:
/// they carry a source error) and the codes of an agent going away are;
/// an answer the agent gave on purpose is not.
fn classify(status: tonic::Status) -> Failure {
    use std::error::Error as _;
    let transport = status.source().is_some();
    match status.code() {
        tonic::Code::Unavailable
        | tonic::Code::Unknown
        | tonic::Code::Cancelled
        | tonic::Code::DeadlineExceeded
        | tonic::Code::Aborted => Failure::Retry(status_text(&status)),
        _ if transport => Failure::Retry(status_text(&status)),
        _ => Failure::Fatal(anyhow!("{}", status.message())),
    }
}

fn status_text(status: &tonic::Status) -> String {
    use std::error::Error as _;
    match status.source() {
        Some(source) => error_chain(source),
        None if status.message().is_empty() => format!("{:?}", status.code()),
        None => status.message().to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_are_placed_by_their_offset() {
        // In order.
        assert_eq!(fresh_part(0, b"abc", 0).unwrap(), b"abc");
        assert_eq!(fresh_part(3, b"def", 3).unwrap(), b"def");
        // A resend overlapping what was shown: only the new tail.
        assert_eq!(fresh_part(2, b"cdef", 3).unwrap(), b"def");
        // Wholly shown already: nothing.
        assert!(fresh_part(0, b"abc", 3).unwrap().is_empty());
        assert!(fresh_part(0, b"abc", 10).unwrap().is_empty());
        // A gap is an error naming both offsets.
        let e = fresh_part(5, b"x", 3).unwrap_err().to_string();
        assert!(
            e.contains("from byte 5") && e.contains("only 3 bytes"),
            "{e}"
        );
    }

    #[test]
    fn refusals_are_final_and_outages_are_retried() {
        let retried = |s: tonic::Status| matches!(classify(s), Failure::Retry(_));
        assert!(retried(tonic::Status::unavailable("agent going away")));
        assert!(retried(tonic::Status::unknown("stream reset")));
        assert!(retried(tonic::Status::cancelled("")));
        assert!(!retried(tonic::Status::not_found(
            "task \"x\" is not known"
        )));
        assert!(!retried(tonic::Status::invalid_argument("bad id")));
        assert!(!retried(tonic::Status::internal("cannot read stdout")));
        // An internal error of our own transport (it carries its source)
        // is an outage.
        let io = std::io::Error::new(std::io::ErrorKind::ConnectionReset, "reset by peer");
        let mut s = tonic::Status::internal("h2 protocol error");
        s.set_source(std::sync::Arc::new(io));
        assert!(retried(s));
    }

    #[tokio::test]
    async fn an_agent_that_never_answers_is_reported_with_the_reason() {
        // A port nothing listens on: the first attempt's reason is the
        // OS's, and a refusal-free address is not given up at once.
        let port = berth_tests::free_port();
        let endpoint = Endpoint::from_shared(format!("http://127.0.0.1:{port}"))
            .unwrap()
            .connect_timeout(CONNECT_TIMEOUT);
        let mut out = Vec::new();
        let (mut delivered, mut last_open) = (0, Instant::now());
        let r = read_once(
            &endpoint,
            pb::ReadLogRequest::default(),
            &mut out,
            &mut delivered,
            &mut last_open,
        )
        .await;
        match r {
            Err(Failure::Retry(why)) => {
                assert!(why.to_lowercase().contains("refused"), "{why}");
            }
            Err(Failure::Fatal(e)) => panic!("fatal: {e}"),
            Ok(()) => panic!("read from nothing"),
        }
        assert_eq!(delivered, 0);
    }
}
