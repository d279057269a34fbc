//! Agent-side health checks.
//!
//! Health checks run on the agent next to the task, as Mesos's do, not on
//! the scheduler (a scheduler probing every task of a large cluster itself is
//! what sank Marathon's checks at scale). This module has three parts:
//!
//! - [`HealthCheckSpec::from_proto`]: validates a `pb::HealthCheck` and fills
//!   in the defaults.
//! - [`Probe`]: one check — [`HttpProbe`] (a hand-written HTTP/1.1 `GET`)
//!   and [`TcpProbe`] (a connect), both to the agent host (normally
//!   127.0.0.1) on the check's host port, and [`CommandProbe`] (a command
//!   run through [`Containerizer::exec`]). [`probe_for`] builds the one a
//!   spec asks for.
//! - [`spawn_health_checker`]: the loop that runs a probe every interval and
//!   reports [`HealthEvent`]s. The decisions (grace period, failure counting)
//!   are made by a small pure tracker, so the loop itself only sleeps, probes
//!   and sends. A spec has a delay, an interval, a timeout, a grace period
//!   (failures before the task was ever healthy are ignored during it, as in
//!   Marathon) and a count of consecutive failures.
//!
//! What it is not: the loop does not kill the task. When it reports
//! [`HealthEvent::Unhealthy`] the agent kills the task (reason
//! `HEALTH_CHECK_FAILED`); the loop has stopped by then.

use std::fmt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use berth_proto as pb;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::{Instant, MissedTickBehavior};

use crate::containerizer::{BoxFuture, Command, ContainerId, Containerizer};
use crate::error::ContainerError;

/// Default wait before the first check (`delay_seconds` 0).
pub const DEFAULT_DELAY: Duration = Duration::ZERO;
/// Default grace period (`grace_period_seconds` 0).
pub const DEFAULT_GRACE_PERIOD: Duration = Duration::from_secs(10);
/// Default time between checks (`interval_seconds` 0).
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(10);
/// Default time one check may take (`timeout_seconds` 0).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(20);
/// Default failures in a row that get the task killed
/// (`consecutive_failures` 0).
pub const DEFAULT_CONSECUTIVE_FAILURES: u32 = 3;
/// The limits of a health check, shared with the master
/// ([`berth_proto::task::validate_health_check`]): the smallest interval
/// and timeout, the largest delay, grace period, interval and timeout (one
/// day), the longest HTTP check path in bytes.
pub use berth_proto::task::{MAX_DURATION, MAX_HTTP_PATH_BYTES, MIN_INTERVAL, MIN_TIMEOUT};

/// Longest line (status line or header) read from an HTTP answer.
const MAX_HTTP_LINE: u64 = 8 * 1024;
/// Most informational (1xx) answers skipped before the final status.
const MAX_INFORMATIONAL: usize = 8;
/// Most header lines of an informational answer skipped.
const MAX_INFORMATIONAL_HEADERS: usize = 100;
/// How much longer than its timeout the loop lets a probe run before it
/// gives up on it (at most; less for shorter timeouts). Probes bound
/// themselves; this is a backstop that leaves them time to clean up (e.g.
/// kill a command's process group) first.
const PROBE_SLACK: Duration = Duration::from_secs(1);

/// A validated health check of a task.
///
/// Built by [`HealthCheckSpec::from_proto`], which fills in defaults and
/// enforces bounds; a spec built directly is used as it is (a zero interval
/// is treated as 1 ms).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheckSpec {
    /// What to check.
    pub kind: CheckKind,
    /// Wait after the task started before the first check.
    pub delay: Duration,
    /// Time after the task started during which failures are ignored (not
    /// reported, not counted) as long as the task has never been healthy.
    pub grace_period: Duration,
    /// Time between the starts of two checks. Checks never overlap: a check
    /// that takes longer than the interval delays the next one.
    pub interval: Duration,
    /// Time one check may take before it counts as failed.
    pub timeout: Duration,
    /// Counted failures in a row that make the task unhealthy for good
    /// ([`HealthEvent::Unhealthy`]). 0 means never: the loop keeps
    /// reporting changes and never gives up (asked for in the proto with
    /// `literal_zeros`, see [`HealthCheckSpec::from_proto`]).
    pub consecutive_failures: u32,
}

/// What a health check probes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum CheckKind {
    /// A command run in the task's environment; healthy when it exits 0.
    Command(Command),
    /// An HTTP `GET` of `path` on the agent host's `port`; healthy on a 2xx
    /// or 3xx answer.
    Http {
        /// The host port.
        port: u16,
        /// The request path: starts with '/', printable ASCII without
        /// spaces, at most [`MAX_HTTP_PATH_BYTES`].
        path: String,
    },
    /// A TCP connect to the agent host's `port`; healthy when it opens.
    Tcp {
        /// The host port.
        port: u16,
    },
}

impl HealthCheckSpec {
    /// Validates a `pb::HealthCheck` by the rules the master applies too
    /// ([`berth_proto::task::validate_health_check`]) and fills in its
    /// defaults: 0 means the default for each duration (delay 0, grace
    /// period 10 s, interval 10 s, timeout 20 s) and for
    /// `consecutive_failures` (3), except that with `literal_zeros` a 0
    /// grace period is none and 0 `consecutive_failures` is never.
    ///
    /// # Errors
    /// A message naming the field and the rule it breaks.
    pub fn from_proto(hc: &pb::HealthCheck) -> Result<Self, String> {
        berth_proto::task::validate_health_check(hc).map_err(|e| e.to_string())?;
        let kind = match (&hc.command, &hc.http, &hc.tcp) {
            (Some(cmd), _, _) => CheckKind::Command(if cmd.argv.is_empty() {
                Command::Shell(cmd.shell.clone())
            } else {
                Command::Argv(cmd.argv.clone())
            }),
            (None, Some(http), _) => CheckKind::Http {
                port: port(http.port)?,
                path: if http.path.is_empty() {
                    "/".to_owned()
                } else {
                    http.path.clone()
                },
            },
            (None, None, Some(tcp)) => CheckKind::Tcp {
                port: port(tcp.port)?,
            },
            (None, None, None) => return Err("the health check sets no kind".into()),
        };
        let or = |secs: f64, default: Duration| {
            if secs == 0.0 {
                default
            } else {
                Duration::from_secs_f64(secs)
            }
        };
        Ok(HealthCheckSpec {
            kind,
            delay: or(hc.delay_seconds, DEFAULT_DELAY),
            grace_period: if hc.literal_zeros {
                Duration::from_secs_f64(hc.grace_period_seconds)
            } else {
                or(hc.grace_period_seconds, DEFAULT_GRACE_PERIOD)
            },
            interval: or(hc.interval_seconds, DEFAULT_INTERVAL),
            timeout: or(hc.timeout_seconds, DEFAULT_TIMEOUT),
            consecutive_failures: match hc.consecutive_failures {
                0 if !hc.literal_zeros => DEFAULT_CONSECUTIVE_FAILURES,
                n => n,
            },
        })
    }
}

/// A validated port number as the probe takes it.
fn port(value: u32) -> Result<u16, String> {
    u16::try_from(value).map_err(|_| format!("port {value} is not in 1-65535"))
}

/// One health check of one task.
pub trait Probe: Send + Sync {
    /// Runs the check once, taking at most about `timeout`. `Ok` when
    /// healthy; otherwise a message saying what failed (e.g. `HTTP 503 from
    /// 127.0.0.1:8080/health`).
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>>;
}

/// An HTTP/1.1 `GET`, healthy on a 2xx or 3xx answer.
///
/// Written by hand on a [`TcpStream`]: it sends `GET <path> HTTP/1.1` with
/// `Host` and `Connection: close`, reads the status line (skipping
/// informational 1xx answers) and closes the connection without reading the
/// body. Redirects are not followed: a 3xx is healthy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpProbe {
    /// Where to connect.
    pub addr: SocketAddr,
    /// The request path (validated by [`HealthCheckSpec::from_proto`]).
    pub path: String,
}

impl Probe for HttpProbe {
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            let status = tokio::time::timeout(timeout, http_get_status(self.addr, &self.path))
                .await
                .map_err(|_| {
                    format!(
                        "no HTTP answer from {}{} within {timeout:?}",
                        self.addr, self.path
                    )
                })??;
            if (200..400).contains(&status) {
                Ok(())
            } else {
                Err(format!("HTTP {status} from {}{}", self.addr, self.path))
            }
        })
    }
}

/// Sends the request and returns the status code of the final answer.
async fn http_get_status(addr: SocketAddr, path: &str) -> Result<u16, String> {
    let mut stream = TcpStream::connect(addr)
        .await
        .map_err(|e| connect_error(addr, &e))?;
    let request = format!(
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nUser-Agent: berth-agent\r\nAccept: */*\r\nConnection: close\r\n\r\n"
    );
    stream
        .write_all(request.as_bytes())
        .await
        .map_err(|e| format!("cannot send the HTTP request to {addr}: {e}"))?;
    let mut reader = BufReader::new(stream);
    for _ in 0..=MAX_INFORMATIONAL {
        let line = read_http_line(&mut reader, addr).await?;
        let status = parse_status_line(&line)
            .ok_or_else(|| format!("malformed HTTP status line from {addr}: {line:?}"))?;
        // 101 Switching Protocols is final; other 1xx answers (e.g. 103
        // Early Hints) are followed by headers and then the real answer.
        if !(100..200).contains(&status) || status == 101 {
            return Ok(status);
        }
        let mut headers = 0;
        while !read_http_line(&mut reader, addr).await?.is_empty() {
            headers += 1;
            if headers > MAX_INFORMATIONAL_HEADERS {
                return Err(format!(
                    "more than {MAX_INFORMATIONAL_HEADERS} header lines in an informational HTTP answer from {addr}"
                ));
            }
        }
    }
    Err(format!(
        "more than {MAX_INFORMATIONAL} informational HTTP answers from {addr}"
    ))
}

/// Reads one line of an HTTP answer, without its line ending.
async fn read_http_line(
    reader: &mut BufReader<TcpStream>,
    addr: SocketAddr,
) -> Result<String, String> {
    let mut line = Vec::new();
    let n = (&mut *reader)
        .take(MAX_HTTP_LINE)
        .read_until(b'\n', &mut line)
        .await
        .map_err(|e| format!("cannot read the HTTP answer from {addr}: {e}"))?;
    if n == 0 {
        return Err(format!(
            "{addr} closed the connection without an HTTP answer"
        ));
    }
    if line.last() != Some(&b'\n') {
        return Err(
            if u64::try_from(line.len()).is_ok_and(|l| l >= MAX_HTTP_LINE) {
                format!("HTTP answer line from {addr} is longer than {MAX_HTTP_LINE} bytes")
            } else {
                format!("{addr} closed the connection in the middle of the HTTP answer")
            },
        );
    }
    line.pop();
    if line.last() == Some(&b'\r') {
        line.pop();
    }
    Ok(String::from_utf8_lossy(&line).into_owned())
}

/// The status code of `HTTP/1.x NNN reason`, or `None` when malformed.
fn parse_status_line(line: &str) -> Option<u16> {
    let mut parts = line.splitn(3, ' ');
    let version = parts.next()?;
    let code = parts.next()?;
    if !version.starts_with("HTTP/1.")
        || code.len() != 3
        || !code.bytes().all(|b| b.is_ascii_digit())
    {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

/// The message for a failed connect.
fn connect_error(addr: SocketAddr, e: &std::io::Error) -> String {
    if e.kind() == std::io::ErrorKind::ConnectionRefused {
        format!("connection refused by {addr}")
    } else {
        format!("cannot connect to {addr}: {e}")
    }
}

/// A TCP connect, healthy when the connection opens (it is closed at once).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TcpProbe {
    /// Where to connect.
    pub addr: SocketAddr,
}

impl Probe for TcpProbe {
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match tokio::time::timeout(timeout, TcpStream::connect(self.addr)).await {
                Ok(Ok(_stream)) => Ok(()),
                Ok(Err(e)) => Err(connect_error(self.addr, &e)),
                Err(_) => Err(format!(
                    "cannot connect to {} within {timeout:?}",
                    self.addr
                )),
            }
        })
    }
}

/// A command run through [`Containerizer::exec`] in the task's container,
/// healthy when it exits 0.
#[derive(Clone, Debug)]
pub struct CommandProbe {
    /// The containerizer running the task.
    pub containerizer: Arc<dyn Containerizer>,
    /// The task's container.
    pub container: ContainerId,
    /// The command.
    pub command: Command,
}

impl Probe for CommandProbe {
    fn check(&self, timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(async move {
            match self
                .containerizer
                .exec(&self.container, self.command.clone(), timeout)
                .await
            {
                Ok(0) => Ok(()),
                Ok(status) => Err(format!("command exited with status {status}")),
                Err(ContainerError::Timeout(t)) => Err(format!("command timed out after {t:?}")),
                Err(e) => Err(format!("cannot run the command: {e}")),
            }
        })
    }
}

/// The probe for `spec`: HTTP and TCP checks connect to `host` (the agent
/// host, normally 127.0.0.1) on the spec's port; command checks run in
/// `container` through `containerizer`.
#[must_use]
pub fn probe_for(
    spec: &HealthCheckSpec,
    host: IpAddr,
    containerizer: Arc<dyn Containerizer>,
    container: ContainerId,
) -> Arc<dyn Probe> {
    match &spec.kind {
        CheckKind::Command(command) => Arc::new(CommandProbe {
            containerizer,
            container,
            command: command.clone(),
        }),
        CheckKind::Http { port, path } => Arc::new(HttpProbe {
            addr: SocketAddr::new(host, *port),
            path: path.clone(),
        }),
        CheckKind::Tcp { port } => Arc::new(TcpProbe {
            addr: SocketAddr::new(host, *port),
        }),
    }
}

/// What the health check loop reports.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthEvent {
    /// The first result, and every change between healthy and unhealthy.
    Changed {
        /// Whether the task is healthy now.
        healthy: bool,
        /// Why it is unhealthy; empty when healthy.
        message: String,
    },
    /// `failures` counted failures in a row reached the spec's
    /// `consecutive_failures`: the task should be killed. The last event of
    /// the loop, which has stopped.
    Unhealthy {
        /// The failures in a row.
        failures: u32,
        /// The last failure's message.
        message: String,
    },
}

/// The running loop of [`spawn_health_checker`]; dropping it stops the loop.
#[derive(Debug)]
pub struct HealthHandle {
    task: JoinHandle<()>,
}

impl HealthHandle {
    /// Whether the loop has stopped (after [`HealthEvent::Unhealthy`], or
    /// when the receiver of its events is gone).
    #[must_use]
    pub fn is_finished(&self) -> bool {
        self.task.is_finished()
    }
}

impl Drop for HealthHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Starts the health check loop of one task on the current Tokio runtime.
///
/// It waits until `started + delay`, then runs `probe` every `interval`
/// (one check at a time, each bounded by `timeout`) and sends to `events`:
/// [`HealthEvent::Changed`] for the first result and every change;
/// [`HealthEvent::Unhealthy`] once when `consecutive_failures` counted
/// failures come in a row, after which it stops. A success resets the
/// count. A failure within `grace_period` of `started` (by when it is
/// known) while the task has never been healthy is ignored: no event, not
/// counted. The loop also stops when `events` is closed, and when the
/// returned handle is dropped.
///
/// # Panics
/// When called outside a Tokio runtime.
pub fn spawn_health_checker(
    spec: HealthCheckSpec,
    probe: Arc<dyn Probe>,
    started: Instant,
    events: mpsc::Sender<HealthEvent>,
) -> HealthHandle {
    HealthHandle {
        task: tokio::spawn(run_checks(spec, probe, started, events)),
    }
}

/// The loop of [`spawn_health_checker`].
async fn run_checks(
    spec: HealthCheckSpec,
    probe: Arc<dyn Probe>,
    started: Instant,
    events: mpsc::Sender<HealthEvent>,
) {
    let Some(first) = started.checked_add(spec.delay) else {
        // A delay beyond the end of time: the first check never comes.
        return std::future::pending().await;
    };
    let mut ticks = tokio::time::interval_at(first, spec.interval.max(Duration::from_millis(1)));
    ticks.set_missed_tick_behavior(MissedTickBehavior::Delay);
    let backstop = spec.timeout.saturating_add(spec.timeout.min(PROBE_SLACK));
    let mut tracker = Tracker::new(&spec, started);
    loop {
        ticks.tick().await;
        let result = tokio::time::timeout(backstop, probe.check(spec.timeout))
            .await
            .unwrap_or_else(|_| {
                Err(format!(
                    "the check did not finish within {:?}",
                    spec.timeout
                ))
            });
        for event in tracker.record(Instant::now(), result) {
            if events.send(event).await.is_err() {
                tracing::debug!("health check events receiver gone; stopping the checks");
                return;
            }
        }
        if tracker.done {
            return;
        }
    }
}

/// The decisions of the loop, without IO or clocks: fed each result and the
/// time it was known, returns the events to report.
#[derive(Debug)]
struct Tracker {
    /// The task's start.
    started: Instant,
    /// Failures are ignored before `started + grace_period` until the task
    /// has been healthy once.
    grace_period: Duration,
    /// Counted failures in a row that end the loop; 0 for never.
    threshold: u32,
    /// The task passed a check at least once.
    ever_healthy: bool,
    /// The health last reported, if any.
    reported: Option<bool>,
    /// Counted failures in a row.
    failures: u32,
    /// `Unhealthy` was reported; nothing more will be.
    done: bool,
}

impl Tracker {
    fn new(spec: &HealthCheckSpec, started: Instant) -> Self {
        Tracker {
            started,
            grace_period: spec.grace_period,
            threshold: spec.consecutive_failures,
            ever_healthy: false,
            reported: None,
            failures: 0,
            done: false,
        }
    }

    /// Takes one check's result, known at `at`.
    fn record(&mut self, at: Instant, result: Result<(), String>) -> Vec<HealthEvent> {
        if self.done {
            return Vec::new();
        }
        let mut events = Vec::new();
        match result {
            Ok(()) => {
                self.ever_healthy = true;
                self.failures = 0;
                if self.reported != Some(true) {
                    self.reported = Some(true);
                    events.push(HealthEvent::Changed {
                        healthy: true,
                        message: String::new(),
                    });
                }
            }
            Err(message) => {
                if !self.ever_healthy && at.duration_since(self.started) < self.grace_period {
                    return events;
                }
                self.failures = self.failures.saturating_add(1);
                if self.reported != Some(false) {
                    self.reported = Some(false);
                    events.push(HealthEvent::Changed {
                        healthy: false,
                        message: message.clone(),
                    });
                }
                if self.threshold > 0 && self.failures >= self.threshold {
                    self.done = true;
                    events.push(HealthEvent::Unhealthy {
                        failures: self.failures,
                        message,
                    });
                }
            }
        }
        events
    }
}

impl fmt::Display for CheckKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CheckKind::Command(Command::Shell(s)) => write!(f, "command {s:?}"),
            CheckKind::Command(Command::Argv(argv)) => write!(f, "command {argv:?}"),
            CheckKind::Http { port, path } => write!(f, "HTTP GET :{port}{path}"),
            CheckKind::Tcp { port } => write!(f, "TCP connect :{port}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};

    use tokio::net::TcpListener;

    use super::*;
    use crate::containerizer::LaunchSpec;
    use crate::containerizer::process::ProcessContainerizer;

    /// Bound on every await of a test.
    const WAIT: Duration = Duration::from_secs(5);

    // ---- from_proto ----

    fn shell(s: &str) -> pb::CommandInfo {
        pb::CommandInfo {
            shell: s.into(),
            ..Default::default()
        }
    }

    fn http(port: u32, path: &str, scheme: &str) -> pb::HttpCheck {
        pb::HttpCheck {
            port,
            path: path.into(),
            scheme: scheme.into(),
        }
    }

    fn tcp_check(port: u32) -> pb::HealthCheck {
        pb::HealthCheck {
            tcp: Some(pb::TcpCheck { port }),
            ..Default::default()
        }
    }

    fn http_check(h: pb::HttpCheck) -> pb::HealthCheck {
        pb::HealthCheck {
            http: Some(h),
            ..Default::default()
        }
    }

    fn command_check(c: pb::CommandInfo) -> pb::HealthCheck {
        pb::HealthCheck {
            command: Some(c),
            ..Default::default()
        }
    }

    fn err(hc: &pb::HealthCheck) -> String {
        HealthCheckSpec::from_proto(hc).unwrap_err()
    }

    #[test]
    fn from_proto_fills_in_defaults() {
        let spec = HealthCheckSpec::from_proto(&tcp_check(8080)).unwrap();
        assert_eq!(
            spec,
            HealthCheckSpec {
                kind: CheckKind::Tcp { port: 8080 },
                delay: Duration::ZERO,
                grace_period: Duration::from_secs(10),
                interval: Duration::from_secs(10),
                timeout: Duration::from_secs(20),
                consecutive_failures: 3,
            }
        );
        let spec = HealthCheckSpec::from_proto(&http_check(http(80, "", ""))).unwrap();
        assert_eq!(
            spec.kind,
            CheckKind::Http {
                port: 80,
                path: "/".into()
            }
        );
    }

    #[test]
    fn from_proto_takes_given_values() {
        let hc = pb::HealthCheck {
            http: Some(http(65535, "/health?full=1", "http")),
            delay_seconds: 1.5,
            grace_period_seconds: 30.0,
            interval_seconds: 0.1,
            timeout_seconds: 0.01,
            consecutive_failures: 7,
            ..Default::default()
        };
        let spec = HealthCheckSpec::from_proto(&hc).unwrap();
        assert_eq!(
            spec,
            HealthCheckSpec {
                kind: CheckKind::Http {
                    port: 65535,
                    path: "/health?full=1".into()
                },
                delay: Duration::from_millis(1500),
                grace_period: Duration::from_secs(30),
                interval: Duration::from_millis(100),
                timeout: Duration::from_millis(10),
                consecutive_failures: 7,
            }
        );
        let argv = pb::CommandInfo {
            argv: vec!["test".into(), "-f".into(), "ok".into()],
            ..Default::default()
        };
        assert_eq!(
            HealthCheckSpec::from_proto(&command_check(argv))
                .unwrap()
                .kind,
            CheckKind::Command(Command::Argv(vec!["test".into(), "-f".into(), "ok".into()]))
        );
        assert_eq!(
            HealthCheckSpec::from_proto(&command_check(shell("true")))
                .unwrap()
                .kind,
            CheckKind::Command(Command::Shell("true".into()))
        );
    }

    /// The rules themselves are `berth_proto::task`'s (tested there);
    /// the agent refuses with their words.
    #[test]
    fn from_proto_applies_the_shared_rules() {
        assert_eq!(
            err(&pb::HealthCheck::default()),
            "the health check must set exactly one of command, http and tcp; none is set"
        );
        assert_eq!(
            err(&tcp_check(65536)),
            "health check tcp.port 65536 is out of range (1-65535)"
        );
        let mut hc = tcp_check(80);
        hc.interval_seconds = 0.05;
        assert_eq!(
            err(&hc),
            "health check interval_seconds must be at least 0.1 seconds, got 0.05"
        );
        let env = pb::CommandInfo {
            shell: "true".into(),
            env: HashMap::from([("A".to_owned(), "1".to_owned())]),
            ..Default::default()
        };
        assert!(err(&command_check(env)).contains("command.env is not supported"));
        // Tiny delays and grace periods are fine.
        let mut hc = tcp_check(80);
        hc.delay_seconds = 0.001;
        hc.grace_period_seconds = 0.001;
        let spec = HealthCheckSpec::from_proto(&hc).unwrap();
        assert_eq!(spec.delay, Duration::from_millis(1));
        assert_eq!(spec.grace_period, Duration::from_millis(1));
    }

    #[test]
    fn from_proto_zero_consecutive_failures_is_the_default() {
        let mut hc = tcp_check(80);
        hc.consecutive_failures = 0;
        assert_eq!(
            HealthCheckSpec::from_proto(&hc)
                .unwrap()
                .consecutive_failures,
            DEFAULT_CONSECUTIVE_FAILURES
        );
        hc.consecutive_failures = 1;
        assert_eq!(
            HealthCheckSpec::from_proto(&hc)
                .unwrap()
                .consecutive_failures,
            1
        );
    }

    #[test]
    fn from_proto_literal_zeros_mean_no_grace_period_and_never_kill() {
        let mut hc = tcp_check(80);
        hc.literal_zeros = true;
        let spec = HealthCheckSpec::from_proto(&hc).unwrap();
        assert_eq!(spec.grace_period, Duration::ZERO);
        assert_eq!(spec.consecutive_failures, 0, "never kill");
        // The durations that cannot be 0 keep their defaults.
        assert_eq!(spec.interval, Duration::from_secs(10));
        assert_eq!(spec.timeout, Duration::from_secs(20));
        hc.grace_period_seconds = 5.0;
        hc.consecutive_failures = 2;
        let spec = HealthCheckSpec::from_proto(&hc).unwrap();
        assert_eq!(
            (spec.grace_period, spec.consecutive_failures),
            (Duration::from_secs(5), 2)
        );
    }

    // ---- the tracker (pure) ----

    fn tracker(grace: Duration, threshold: u32, started: Instant) -> Tracker {
        let spec = HealthCheckSpec {
            kind: CheckKind::Tcp { port: 1 },
            delay: Duration::ZERO,
            grace_period: grace,
            interval: Duration::from_secs(1),
            timeout: Duration::from_secs(1),
            consecutive_failures: threshold,
        };
        Tracker::new(&spec, started)
    }

    fn changed(healthy: bool, message: &str) -> HealthEvent {
        HealthEvent::Changed {
            healthy,
            message: message.into(),
        }
    }

    fn fail(m: &str) -> Result<(), String> {
        Err(m.into())
    }

    #[test]
    fn tracker_reports_the_first_result_and_changes_only() {
        let t0 = Instant::now();
        let mut t = tracker(Duration::ZERO, 3, t0);
        assert_eq!(t.record(t0, Ok(())), vec![changed(true, "")]);
        assert_eq!(t.record(t0, Ok(())), vec![]);
        assert_eq!(t.record(t0, fail("a")), vec![changed(false, "a")]);
        assert_eq!(t.record(t0, fail("b")), vec![]);
        // A success resets the count.
        assert_eq!(t.record(t0, Ok(())), vec![changed(true, "")]);
        assert_eq!(t.record(t0, fail("c")), vec![changed(false, "c")]);
        assert_eq!(t.record(t0, fail("d")), vec![]);
        assert_eq!(
            t.record(t0, fail("e")),
            vec![HealthEvent::Unhealthy {
                failures: 3,
                message: "e".into()
            }]
        );
        assert!(t.done);
        assert_eq!(t.record(t0, fail("f")), vec![]);
        assert_eq!(t.record(t0, Ok(())), vec![]);
    }

    #[test]
    fn tracker_first_failure_can_be_the_last() {
        let t0 = Instant::now();
        let mut t = tracker(Duration::ZERO, 1, t0);
        assert_eq!(
            t.record(t0, fail("down")),
            vec![
                changed(false, "down"),
                HealthEvent::Unhealthy {
                    failures: 1,
                    message: "down".into()
                }
            ]
        );
    }

    #[test]
    fn tracker_ignores_failures_in_the_grace_period_until_healthy() {
        let t0 = Instant::now();
        let grace = Duration::from_secs(10);
        let mut t = tracker(grace, 2, t0);
        for s in 0..10 {
            assert_eq!(t.record(t0 + Duration::from_secs(s), fail("x")), vec![]);
        }
        assert_eq!(t.failures, 0);
        // The grace period is over: failures count.
        assert_eq!(t.record(t0 + grace, fail("y")), vec![changed(false, "y")]);
        assert_eq!(t.failures, 1);

        // Once healthy, failures count even within the grace period.
        let mut t = tracker(grace, 2, t0);
        assert_eq!(t.record(t0, Ok(())), vec![changed(true, "")]);
        assert_eq!(
            t.record(t0 + Duration::from_secs(1), fail("z")),
            vec![changed(false, "z")]
        );
        assert_eq!(
            t.record(t0 + Duration::from_secs(2), fail("z")),
            vec![HealthEvent::Unhealthy {
                failures: 2,
                message: "z".into()
            }]
        );
    }

    #[test]
    fn tracker_with_zero_threshold_never_gives_up() {
        let t0 = Instant::now();
        let mut t = tracker(Duration::ZERO, 0, t0);
        assert_eq!(t.record(t0, fail("x")), vec![changed(false, "x")]);
        for _ in 0..1000 {
            assert_eq!(t.record(t0, fail("x")), vec![]);
        }
        assert!(!t.done);
        assert_eq!(t.failures, 1001);
        assert_eq!(t.record(t0, Ok(())), vec![changed(true, "")]);
    }

    // ---- probes ----

    /// An HTTP server answering 200 while `ok` is set and 500 otherwise;
    /// records the request heads it gets.
    async fn http_server(ok: Arc<AtomicBool>) -> (SocketAddr, Arc<Mutex<Vec<String>>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let heads = Arc::new(Mutex::new(Vec::new()));
        let seen = Arc::clone(&heads);
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                let ok = Arc::clone(&ok);
                let seen = Arc::clone(&seen);
                tokio::spawn(async move {
                    let head = read_head(&mut conn).await;
                    seen.lock().unwrap().push(head);
                    let answer: &[u8] = if ok.load(Ordering::SeqCst) {
                        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok"
                    } else {
                        b"HTTP/1.1 500 Internal Server Error\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                    };
                    let _ = conn.write_all(answer).await;
                });
            }
        });
        (addr, heads)
    }

    /// A server answering every request with `answer` and closing.
    async fn raw_server(answer: &'static [u8]) -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    read_head(&mut conn).await;
                    let _ = conn.write_all(answer).await;
                });
            }
        });
        addr
    }

    /// Reads a request head (up to the blank line).
    async fn read_head(conn: &mut TcpStream) -> String {
        let mut head = Vec::new();
        let mut buf = [0u8; 1024];
        while !head.ends_with(b"\r\n\r\n") && head.len() < 16 * 1024 {
            match conn.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => head.extend_from_slice(&buf[..n]),
            }
        }
        String::from_utf8_lossy(&head).into_owned()
    }

    /// An address nothing listens on.
    async fn closed_port() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        listener.local_addr().unwrap()
    }

    #[tokio::test]
    async fn http_probe_sends_a_get_and_reads_the_status() {
        let ok = Arc::new(AtomicBool::new(true));
        let (addr, heads) = http_server(Arc::clone(&ok)).await;
        let probe = HttpProbe {
            addr,
            path: "/health?x=1".into(),
        };
        assert_eq!(probe.check(WAIT).await, Ok(()));
        let head = heads.lock().unwrap()[0].clone();
        assert!(head.starts_with("GET /health?x=1 HTTP/1.1\r\n"), "{head}");
        assert!(head.contains(&format!("\r\nHost: {addr}\r\n")), "{head}");
        assert!(head.contains("\r\nConnection: close\r\n"), "{head}");
        ok.store(false, Ordering::SeqCst);
        assert_eq!(
            probe.check(WAIT).await,
            Err(format!("HTTP 500 from {addr}/health?x=1"))
        );
    }

    #[tokio::test]
    async fn http_probe_status_classes() {
        for (answer, healthy) in [
            (&b"HTTP/1.1 204 No Content\r\n\r\n"[..], true),
            (
                b"HTTP/1.0 301 Moved Permanently\r\nLocation: /x\r\n\r\n",
                true,
            ),
            (b"HTTP/1.1 399 Odd\n\n", true),
            (b"HTTP/1.1 404 Not Found\r\n\r\n", false),
            (b"HTTP/1.1 503 Service Unavailable\r\n\r\n", false),
            (b"HTTP/1.1 199 Odd\r\n\r\n", false),
            (
                b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\nHTTP/1.1 200 OK\r\n\r\n",
                true,
            ),
        ] {
            let addr = raw_server(answer).await;
            let probe = HttpProbe {
                addr,
                path: "/".into(),
            };
            let got = probe.check(WAIT).await;
            assert_eq!(
                got.is_ok(),
                healthy,
                "{:?}: {got:?}",
                String::from_utf8_lossy(answer)
            );
        }
        let addr = raw_server(b"HTTP/1.1 404 Not Found\r\n\r\n").await;
        let probe = HttpProbe {
            addr,
            path: "/ready".into(),
        };
        assert_eq!(
            probe.check(WAIT).await,
            Err(format!("HTTP 404 from {addr}/ready"))
        );
    }

    #[tokio::test]
    async fn http_probe_failure_messages() {
        let root = |addr| HttpProbe {
            addr,
            path: "/".into(),
        };
        let addr = closed_port().await;
        assert_eq!(
            root(addr).check(WAIT).await,
            Err(format!("connection refused by {addr}"))
        );

        let addr = raw_server(b"SSH-2.0-OpenSSH\r\n").await;
        let e = root(addr).check(WAIT).await.unwrap_err();
        assert_eq!(
            e,
            format!("malformed HTTP status line from {addr}: \"SSH-2.0-OpenSSH\"")
        );

        let addr = raw_server(b"").await;
        assert_eq!(
            root(addr).check(WAIT).await,
            Err(format!(
                "{addr} closed the connection without an HTTP answer"
            ))
        );

        let addr = raw_server(b"HTTP/1.1 200").await;
        let e = root(addr).check(WAIT).await.unwrap_err();
        assert!(e.contains("in the middle of the HTTP answer"), "{e}");

        static LONG: std::sync::LazyLock<Vec<u8>> =
            std::sync::LazyLock::new(|| vec![b'H'; 10 * 1024]);
        let addr = raw_server(&LONG).await;
        let e = root(addr).check(WAIT).await.unwrap_err();
        assert!(e.contains("longer than 8192 bytes"), "{e}");

        // A listener that never answers (the kernel accepts the connection).
        let silent = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = silent.local_addr().unwrap();
        let timeout = Duration::from_millis(100);
        let start = Instant::now();
        assert_eq!(
            root(addr).check(timeout).await,
            Err(format!("no HTTP answer from {addr}/ within 100ms"))
        );
        assert!(start.elapsed() < WAIT);
    }

    #[tokio::test]
    async fn tcp_probe_connects() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let probe = TcpProbe { addr };
        assert_eq!(probe.check(WAIT).await, Ok(()));
        drop(listener);
        assert_eq!(
            probe.check(WAIT).await,
            Err(format!("connection refused by {addr}"))
        );
    }

    // ---- the loop ----

    /// A probe answering as `healthy` says, counting its calls; hangs
    /// while `hang` is set.
    #[derive(Debug, Default)]
    struct FakeProbe {
        healthy: AtomicBool,
        hang: AtomicBool,
        calls: AtomicU32,
    }

    impl FakeProbe {
        fn new(healthy: bool) -> Arc<Self> {
            let p = FakeProbe::default();
            p.healthy.store(healthy, Ordering::SeqCst);
            Arc::new(p)
        }

        fn calls(&self) -> u32 {
            self.calls.load(Ordering::SeqCst)
        }
    }

    impl Probe for FakeProbe {
        fn check(&self, _timeout: Duration) -> BoxFuture<'_, Result<(), String>> {
            let n = self.calls.fetch_add(1, Ordering::SeqCst) + 1;
            let healthy = self.healthy.load(Ordering::SeqCst);
            let hang = self.hang.load(Ordering::SeqCst);
            Box::pin(async move {
                if hang {
                    std::future::pending::<()>().await;
                }
                if healthy {
                    Ok(())
                } else {
                    Err(format!("fake failure {n}"))
                }
            })
        }
    }

    fn spec(kind: CheckKind, interval_ms: u64, grace_ms: u64, threshold: u32) -> HealthCheckSpec {
        HealthCheckSpec {
            kind,
            delay: Duration::ZERO,
            grace_period: Duration::from_millis(grace_ms),
            interval: Duration::from_millis(interval_ms),
            timeout: Duration::from_secs(1),
            consecutive_failures: threshold,
        }
    }

    fn fake_spec(interval_ms: u64, grace_ms: u64, threshold: u32) -> HealthCheckSpec {
        spec(CheckKind::Tcp { port: 1 }, interval_ms, grace_ms, threshold)
    }

    /// The next event, failing the test after [`WAIT`].
    async fn next(rx: &mut mpsc::Receiver<HealthEvent>) -> Option<HealthEvent> {
        tokio::time::timeout(WAIT, rx.recv())
            .await
            .expect("no health event in time")
    }

    #[tokio::test]
    async fn http_check_goes_healthy_then_unhealthy_and_stops() {
        let ok = Arc::new(AtomicBool::new(true));
        let (addr, _) = http_server(Arc::clone(&ok)).await;
        let spec = spec(
            CheckKind::Http {
                port: addr.port(),
                path: "/health".into(),
            },
            50,
            0,
            3,
        );
        let probe = probe_for(
            &spec,
            addr.ip(),
            Arc::new(ProcessContainerizer::new()),
            ContainerId::random(),
        );
        let (tx, mut rx) = mpsc::channel(16);
        let handle = spawn_health_checker(spec, probe, Instant::now(), tx);
        assert_eq!(next(&mut rx).await, Some(changed(true, "")));
        ok.store(false, Ordering::SeqCst);
        let message = format!("HTTP 500 from {addr}/health");
        assert_eq!(next(&mut rx).await, Some(changed(false, &message)));
        assert_eq!(
            next(&mut rx).await,
            Some(HealthEvent::Unhealthy {
                failures: 3,
                message
            })
        );
        // The loop has stopped: its sender is gone.
        assert_eq!(next(&mut rx).await, None);
        assert!(handle.is_finished());
    }

    #[tokio::test]
    async fn tcp_check_healthy_then_unhealthy_when_the_listener_goes() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let spec = spec(CheckKind::Tcp { port: addr.port() }, 50, 0, 2);
        let probe = probe_for(
            &spec,
            addr.ip(),
            Arc::new(ProcessContainerizer::new()),
            ContainerId::random(),
        );
        let (tx, mut rx) = mpsc::channel(16);
        let _handle = spawn_health_checker(spec, probe, Instant::now(), tx);
        assert_eq!(next(&mut rx).await, Some(changed(true, "")));
        drop(listener);
        let message = format!("connection refused by {addr}");
        assert_eq!(next(&mut rx).await, Some(changed(false, &message)));
        assert_eq!(
            next(&mut rx).await,
            Some(HealthEvent::Unhealthy {
                failures: 2,
                message
            })
        );
        assert_eq!(next(&mut rx).await, None);
    }

    #[tokio::test]
    async fn failures_in_the_grace_period_are_ignored() {
        let probe = FakeProbe::new(false);
        let grace = Duration::from_millis(300);
        let (tx, mut rx) = mpsc::channel(16);
        let started = Instant::now();
        let _handle = spawn_health_checker(
            fake_spec(20, 300, 2),
            Arc::clone(&probe) as Arc<dyn Probe>,
            started,
            tx,
        );
        let Some(HealthEvent::Changed { healthy: false, .. }) = next(&mut rx).await else {
            panic!("expected an unhealthy Changed");
        };
        assert!(
            started.elapsed() >= grace,
            "reported within the grace period"
        );
        // The checks of the grace period ran but did not count: the task is
        // declared unhealthy after exactly 2 counted failures.
        let Some(HealthEvent::Unhealthy {
            failures: 2,
            message,
        }) = next(&mut rx).await
        else {
            panic!("expected Unhealthy after 2 failures");
        };
        let last: u32 = message
            .strip_prefix("fake failure ")
            .and_then(|n| n.parse().ok())
            .unwrap();
        assert_eq!(last, probe.calls());
        assert!(
            last > 3,
            "only {last} checks ran; the grace period had some"
        );
    }

    #[tokio::test]
    async fn failures_count_in_the_grace_period_once_healthy() {
        let probe = FakeProbe::new(true);
        let (tx, mut rx) = mpsc::channel(16);
        let _handle = spawn_health_checker(
            fake_spec(20, 60_000, 2),
            Arc::clone(&probe) as Arc<dyn Probe>,
            Instant::now(),
            tx,
        );
        assert_eq!(next(&mut rx).await, Some(changed(true, "")));
        probe.healthy.store(false, Ordering::SeqCst);
        let Some(HealthEvent::Changed { healthy: false, .. }) = next(&mut rx).await else {
            panic!("expected an unhealthy Changed");
        };
        let Some(HealthEvent::Unhealthy { failures: 2, .. }) = next(&mut rx).await else {
            panic!("expected Unhealthy after 2 failures");
        };
    }

    #[tokio::test]
    async fn loop_stops_after_unhealthy() {
        let probe = FakeProbe::new(false);
        let (tx, mut rx) = mpsc::channel(16);
        let handle = spawn_health_checker(
            fake_spec(10, 0, 3),
            Arc::clone(&probe) as Arc<dyn Probe>,
            Instant::now(),
            tx,
        );
        assert_eq!(next(&mut rx).await, Some(changed(false, "fake failure 1")));
        assert_eq!(
            next(&mut rx).await,
            Some(HealthEvent::Unhealthy {
                failures: 3,
                message: "fake failure 3".into()
            })
        );
        assert_eq!(next(&mut rx).await, None);
        assert!(handle.is_finished());
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(probe.calls(), 3);
    }

    #[tokio::test]
    async fn dropping_the_handle_stops_the_loop() {
        let probe = FakeProbe::new(true);
        let (tx, mut rx) = mpsc::channel(16);
        let handle = spawn_health_checker(
            fake_spec(10, 0, 3),
            Arc::clone(&probe) as Arc<dyn Probe>,
            Instant::now(),
            tx,
        );
        assert_eq!(next(&mut rx).await, Some(changed(true, "")));
        drop(handle);
        // The aborted loop drops its sender.
        assert_eq!(next(&mut rx).await, None);
        let calls = probe.calls();
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert_eq!(probe.calls(), calls);
    }

    #[tokio::test]
    async fn loop_stops_when_the_receiver_is_gone() {
        let probe = FakeProbe::new(true);
        let (tx, rx) = mpsc::channel(16);
        drop(rx);
        let handle = spawn_health_checker(
            fake_spec(10, 0, 3),
            Arc::clone(&probe) as Arc<dyn Probe>,
            Instant::now(),
            tx,
        );
        tokio::time::timeout(WAIT, async {
            while !handle.is_finished() {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
        .await
        .expect("the loop did not stop");
        assert_eq!(probe.calls(), 1);
    }

    #[tokio::test]
    async fn first_check_waits_for_the_delay() {
        let probe = FakeProbe::new(true);
        let (tx, mut rx) = mpsc::channel(16);
        let started = Instant::now();
        let mut spec = fake_spec(10, 0, 3);
        spec.delay = Duration::from_millis(150);
        let _handle = spawn_health_checker(spec, Arc::clone(&probe) as Arc<dyn Probe>, started, tx);
        assert_eq!(next(&mut rx).await, Some(changed(true, "")));
        assert!(started.elapsed() >= Duration::from_millis(150));
    }

    #[tokio::test]
    async fn a_hanging_probe_fails_after_its_timeout() {
        let probe = FakeProbe::new(true);
        probe.hang.store(true, Ordering::SeqCst);
        let (tx, mut rx) = mpsc::channel(16);
        let mut spec = fake_spec(10, 0, 1);
        spec.timeout = Duration::from_millis(50);
        let started = Instant::now();
        let _handle = spawn_health_checker(spec, Arc::clone(&probe) as Arc<dyn Probe>, started, tx);
        let message = "the check did not finish within 50ms";
        assert_eq!(next(&mut rx).await, Some(changed(false, message)));
        assert_eq!(
            next(&mut rx).await,
            Some(HealthEvent::Unhealthy {
                failures: 1,
                message: message.into()
            })
        );
        // The backstop is the timeout plus at most the timeout again.
        let elapsed = started.elapsed();
        assert!(elapsed >= Duration::from_millis(50), "{elapsed:?}");
        assert!(elapsed < Duration::from_secs(1), "{elapsed:?}");
    }

    // ---- command checks through the process containerizer ----

    /// Launches `sleep 30` in a sandbox under `dir`.
    async fn sleeping_task(
        dir: &std::path::Path,
    ) -> (Arc<ProcessContainerizer>, ContainerId, std::path::PathBuf) {
        let containerizer = Arc::new(ProcessContainerizer::new());
        let spec = LaunchSpec {
            container_id: ContainerId::random(),
            framework_id: "fw-1".into(),
            task_id: "task-1".into(),
            agent_id: "agent-1".into(),
            sandbox: dir.join("sandboxes/fw-1/task-1"),
            sandbox_prepared: false,
            command: Command::Argv(vec!["sleep".into(), "30".into()]),
            env: HashMap::new(),
            resources: "cpus:0.1;mem:32".parse().unwrap(),
            container: None,
            masked_values: Vec::new(),
        };
        let sandbox = spec.sandbox.clone();
        let launched = containerizer.launch(spec).await.unwrap();
        (containerizer, launched.container_id, sandbox)
    }

    #[tokio::test]
    async fn command_probe_runs_in_the_container() {
        let dir = tempfile::tempdir().unwrap();
        let (containerizer, id, sandbox) = sleeping_task(dir.path()).await;
        let probe = |command: Command| CommandProbe {
            containerizer: Arc::clone(&containerizer) as Arc<dyn Containerizer>,
            container: id.clone(),
            command,
        };
        let test_ok = probe(Command::Shell(format!("test -f {}/ok", sandbox.display())));
        assert_eq!(
            test_ok.check(WAIT).await,
            Err("command exited with status 1".into())
        );
        std::fs::write(sandbox.join("ok"), "").unwrap();
        assert_eq!(test_ok.check(WAIT).await, Ok(()));
        // The working directory is the sandbox.
        let relative = probe(Command::Argv(vec!["test".into(), "-f".into(), "ok".into()]));
        assert_eq!(relative.check(WAIT).await, Ok(()));
        assert_eq!(
            probe(Command::Shell("exit 7".into())).check(WAIT).await,
            Err("command exited with status 7".into())
        );
        assert_eq!(
            probe(Command::Shell("sleep 5".into()))
                .check(Duration::from_millis(100))
                .await,
            Err("command timed out after 100ms".into())
        );
        let e = probe(Command::Argv(vec!["/nonexistent/check".into()]))
            .check(WAIT)
            .await
            .unwrap_err();
        assert!(e.starts_with("cannot run the command: cannot start"), "{e}");
        let unknown = CommandProbe {
            containerizer: Arc::clone(&containerizer) as Arc<dyn Containerizer>,
            container: ContainerId("nope".into()),
            command: Command::Shell("true".into()),
        };
        assert_eq!(
            unknown.check(WAIT).await,
            Err("cannot run the command: unknown container nope".into())
        );
        containerizer.destroy(&id, Duration::ZERO).await.unwrap();
    }

    #[tokio::test]
    async fn command_check_loop_follows_the_sandbox_file() {
        let dir = tempfile::tempdir().unwrap();
        let (containerizer, id, sandbox) = sleeping_task(dir.path()).await;
        let spec = spec(
            CheckKind::Command(Command::Shell("test -f ok".into())),
            50,
            0,
            0,
        );
        let probe = probe_for(
            &spec,
            IpAddr::from([127, 0, 0, 1]),
            Arc::clone(&containerizer) as Arc<dyn Containerizer>,
            id.clone(),
        );
        let (tx, mut rx) = mpsc::channel(16);
        let handle = spawn_health_checker(spec, probe, Instant::now(), tx);
        assert_eq!(
            next(&mut rx).await,
            Some(changed(false, "command exited with status 1"))
        );
        std::fs::write(sandbox.join("ok"), "").unwrap();
        assert_eq!(next(&mut rx).await, Some(changed(true, "")));
        std::fs::remove_file(sandbox.join("ok")).unwrap();
        assert_eq!(
            next(&mut rx).await,
            Some(changed(false, "command exited with status 1"))
        );
        drop(handle);
        containerizer.destroy(&id, Duration::ZERO).await.unwrap();
    }
}
