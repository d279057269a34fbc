//! Finding the leading master: the one place where frameworks (the SDK),
//! agents and the CLI decide which master to talk to.
//!
//! Every master answers `Operator.GetLeader` from its own view, leader or
//! not. Only an answer in which a master says that *it* leads (its
//! `master_id` and `leading_since` set) is trusted: a follower's hint may
//! name a leader that just died or froze, and waiting on that address is
//! how clients used to lose seconds after a failover. So [`Masters::probe`]
//! asks every known master at once, each with a short deadline, and takes
//! the self-declared leader with the highest term (an old leader cut off
//! from the others may still believe it leads until it notices, one
//! election timeout later). Addresses that followers name and the client
//! did not know (a master added at run time) are asked from the next round
//! on. [`Masters::find_leader`] repeats rounds, [`PROBE_INTERVAL`] apart,
//! until a master leads or the caller's deadline passes, and then says
//! what each master answered (`connection refused`, `no answer within
//! 1s`, `follower; no leader known`), so that a user learns why.
//!
//! Each master gets one lazily connected [`Channel`], reused for the probes
//! and handed out with the [`Leader`] for the caller's own calls and
//! streams: HTTP/2 keep-alive pings on it notice a frozen peer.
//!
//! Timing: each probe may take [`PROBE_TIMEOUT`]; rounds run every
//! [`PROBE_INTERVAL`], slowing to [`SLOW_PROBE_INTERVAL`] once no master
//! has led for [`SLOW_AFTER`]. [`NoLeader`] carries each master's answer,
//! with the OS's reason for a failed connection ([`status_reason`]).

use std::fmt;
use std::time::Duration;

use tokio::time::Instant;
use tonic::transport::{Channel, Endpoint};

use crate::AddressError;
use crate::operator_client::OperatorClient;

/// How long one master may take to answer a probe (connect included).
pub const PROBE_TIMEOUT: Duration = Duration::from_secs(1);
/// Pause between two rounds of probes while no master leads.
pub const PROBE_INTERVAL: Duration = Duration::from_millis(100);
/// Pause between rounds once no master has led for [`SLOW_AFTER`]: the
/// cluster is down or being restarted, not electing.
pub const SLOW_PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// See [`SLOW_PROBE_INTERVAL`].
pub const SLOW_AFTER: Duration = Duration::from_secs(30);
/// After a master said it leads, how long the others of the round may
/// still answer.
const CLAIM_GRACE: Duration = Duration::from_millis(100);
/// Interval of HTTP/2 keep-alive pings on master connections.
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(2);
/// A connection whose keep-alive ping is not answered within this long is
/// closed (the master is frozen or cut off).
pub const KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(2);
/// Most masters a client keeps: the configured ones plus ones learned from
/// hints. A group has at most a handful; the bound stops a misbehaving
/// master from growing the list.
const MAX_MASTERS: usize = 16;

/// A list of master addresses that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MastersError {
    /// No address at all.
    #[error("no master address given")]
    Empty,
    /// An address that is not `host:port` or a URI.
    #[error("invalid master address: {0}")]
    Address(#[from] AddressError),
}

/// The leading master, as it said itself.
#[derive(Debug, Clone)]
pub struct Leader {
    /// The address the client reached it at (`host:port` as configured or
    /// learned; URIs as given).
    pub address: String,
    /// A channel to it, for the caller's calls and streams.
    pub channel: Channel,
    /// The term it leads in.
    pub term: u64,
    /// Seconds since the Unix epoch when it took over.
    pub leading_since: f64,
}

/// What one master answered a probe.
#[derive(Debug, Clone, PartialEq)]
pub enum Answer {
    /// It leads.
    Leads {
        /// The term.
        term: u64,
        /// When it took over (seconds since the Unix epoch).
        leading_since: f64,
    },
    /// It follows; `hint` is the leader it believes in, if any.
    Follows {
        /// The leader's address as the follower knows it.
        hint: Option<String>,
    },
    /// No usable answer: the reason (the OS's, when there is one).
    Failed(String),
}

/// No master said it leads before the deadline: what each one answered in
/// the last round.
#[derive(Debug, Clone, PartialEq)]
pub struct NoLeader {
    /// Each master's address and answer, in the order they are known.
    pub answers: Vec<(String, Answer)>,
}

impl NoLeader {
    /// Whether every master failed to answer at all (nothing listens, or
    /// nothing answers): the cluster is down or unreachable, rather than
    /// electing a leader.
    #[must_use]
    pub fn all_unreachable(&self) -> bool {
        self.answers
            .iter()
            .all(|(_, a)| matches!(a, Answer::Failed(_)))
    }
}

impl fmt::Display for NoLeader {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.all_unreachable() {
            f.write_str("no master answered")?;
        } else {
            f.write_str("no master leads")?;
        }
        let mut sep = " (";
        for (address, answer) in &self.answers {
            write!(f, "{sep}{address}: ")?;
            match answer {
                Answer::Leads { term, .. } => write!(f, "leads in term {term}")?,
                Answer::Follows { hint: Some(h) } => write!(f, "follower; names {h} as leader")?,
                Answer::Follows { hint: None } => f.write_str("follower; no leader known")?,
                Answer::Failed(reason) => f.write_str(reason)?,
            }
            sep = "; ";
        }
        if !self.answers.is_empty() {
            f.write_str(")")?;
        }
        Ok(())
    }
}

impl std::error::Error for NoLeader {}

#[derive(Debug, Clone)]
struct Master {
    address: String,
    channel: Channel,
}

/// The masters a client knows and a channel to each; see the module docs.
#[derive(Debug, Clone)]
pub struct Masters {
    masters: Vec<Master>,
    probe_timeout: Duration,
}

impl Masters {
    /// The masters at `addresses` (`host:port` or `http://host:port`).
    ///
    /// # Errors
    /// [`MastersError`] for an empty list or an address that is not one
    /// ([`crate::check_address`]).
    pub fn new<S: AsRef<str>>(addresses: &[S]) -> Result<Self, MastersError> {
        let mut masters = Masters {
            masters: Vec::new(),
            probe_timeout: PROBE_TIMEOUT,
        };
        for a in addresses {
            let a = a.as_ref().trim();
            crate::check_address(a)?;
            masters.learn(a)?;
        }
        if masters.masters.is_empty() {
            return Err(MastersError::Empty);
        }
        Ok(masters)
    }

    /// Sets how long one master may take to answer a probe.
    #[must_use]
    pub fn with_probe_timeout(mut self, timeout: Duration) -> Self {
        self.probe_timeout = timeout.max(Duration::from_millis(10));
        self
    }

    /// The known addresses, configured ones first.
    pub fn addresses(&self) -> impl Iterator<Item = &str> {
        self.masters.iter().map(|m| m.address.as_str())
    }

    /// The channel to the known master at `address`, if it is known.
    #[must_use]
    pub fn channel(&self, address: &str) -> Option<Channel> {
        self.masters
            .iter()
            .find(|m| m.address == address)
            .map(|m| m.channel.clone())
    }

    /// Adds `address` unless known (or the list is full).
    fn learn(&mut self, address: &str) -> Result<(), AddressError> {
        if self.masters.iter().any(|m| m.address == address) || self.masters.len() >= MAX_MASTERS {
            return Ok(());
        }
        let channel = lazy_channel(address, self.probe_timeout)?;
        self.masters.push(Master {
            address: address.to_owned(),
            channel,
        });
        Ok(())
    }

    /// One round: asks every known master at once who leads. Returns the
    /// self-declared leader with the highest term, or every answer.
    ///
    /// # Errors
    /// [`NoLeader`] when no master says it leads.
    pub async fn probe(&mut self) -> Result<Leader, NoLeader> {
        use futures::StreamExt as _;
        let timeout = self.probe_timeout;
        let mut pending: futures::stream::FuturesUnordered<_> = self
            .masters
            .iter()
            .enumerate()
            .map(|(i, m)| {
                let channel = m.channel.clone();
                async move { (i, ask(channel, timeout).await) }
            })
            .collect();
        let mut answers: Vec<Answer> =
            vec![Answer::Failed(format!("no answer within {timeout:?}")); self.masters.len()];
        // Once a master says it leads, the others get CLAIM_GRACE more to
        // answer (one may lead in a higher term), not the whole probe
        // timeout: a frozen or cut-off master must not hold up the round.
        let mut grace: Option<Instant> = None;
        loop {
            let next = match grace {
                Some(until) => match tokio::time::timeout_at(until, pending.next()).await {
                    Ok(next) => next,
                    Err(_) => break,
                },
                None => pending.next().await,
            };
            let Some((i, answer)) = next else { break };
            if grace.is_none() && matches!(answer, Answer::Leads { .. }) {
                grace = Some(Instant::now() + CLAIM_GRACE);
            }
            answers[i] = answer;
        }
        let mut best: Option<(usize, u64, f64)> = None;
        let mut hints = Vec::new();
        for (i, answer) in answers.iter().enumerate() {
            match answer {
                Answer::Leads {
                    term,
                    leading_since,
                } => {
                    if best.is_none_or(|(_, t, _)| *term > t) {
                        best = Some((i, *term, *leading_since));
                    }
                }
                Answer::Follows { hint: Some(h) } => hints.push(h.clone()),
                Answer::Follows { hint: None } | Answer::Failed(_) => {}
            }
        }
        if let Some((i, term, leading_since)) = best {
            let m = &self.masters[i];
            return Ok(Leader {
                address: m.address.clone(),
                channel: m.channel.clone(),
                term,
                leading_since,
            });
        }
        let answers = self
            .masters
            .iter()
            .map(|m| m.address.clone())
            .zip(answers)
            .collect();
        for h in hints {
            // A master added at run time: ask it from the next round on. A
            // hint that is not an address is the master's problem; ignore it.
            if crate::check_address(&h).is_ok() {
                let _ = self.learn(&h);
            }
        }
        Err(NoLeader { answers })
    }

    /// Probes until a master says it leads, or `deadline` passes: every
    /// [`PROBE_INTERVAL`], and every [`SLOW_PROBE_INTERVAL`] after
    /// [`SLOW_AFTER`] without a leader. Always makes at least one round.
    ///
    /// # Errors
    /// [`NoLeader`]: the answers of the last round.
    pub async fn find_leader(&mut self, deadline: Instant) -> Result<Leader, NoLeader> {
        let start = Instant::now();
        loop {
            let last = match self.probe().await {
                Ok(leader) => return Ok(leader),
                Err(no) => no,
            };
            let pause = if start.elapsed() >= SLOW_AFTER {
                SLOW_PROBE_INTERVAL
            } else {
                PROBE_INTERVAL
            };
            if Instant::now() + pause >= deadline {
                return Err(last);
            }
            tokio::time::sleep(pause).await;
        }
    }
}

/// A channel to `address` that connects on first use, with a connect
/// timeout of `connect_timeout` and keep-alive pings.
///
/// # Errors
/// [`AddressError::Invalid`] when `address` is not an address.
pub fn lazy_channel(address: &str, connect_timeout: Duration) -> Result<Channel, AddressError> {
    Ok(endpoint(address, connect_timeout)?.connect_lazy())
}

/// The endpoint [`lazy_channel`] connects to, for callers that set more
/// (a deadline on every request, say).
///
/// # Errors
/// [`AddressError::Invalid`] when `address` is not an address.
pub fn endpoint(address: &str, connect_timeout: Duration) -> Result<Endpoint, AddressError> {
    let uri = crate::endpoint_uri(address);
    let endpoint = Endpoint::from_shared(uri).map_err(|_| AddressError::Malformed {
        address: address.to_owned(),
        reason: "it is not a URI",
    })?;
    Ok(endpoint
        .connect_timeout(connect_timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(KEEPALIVE_INTERVAL)
        .keep_alive_timeout(KEEPALIVE_TIMEOUT)
        .keep_alive_while_idle(true))
}

/// Asks one master who leads, within `timeout`.
async fn ask(channel: Channel, timeout: Duration) -> Answer {
    let mut client = OperatorClient::new(channel);
    match tokio::time::timeout(timeout, client.get_leader(crate::Empty {})).await {
        Err(_) => Answer::Failed(format!("no answer within {timeout:?}")),
        Ok(Err(status)) => Answer::Failed(status_reason(&status)),
        Ok(Ok(reply)) => {
            let info = reply.into_inner();
            if !info.master_id.is_empty() && info.leading_since > 0.0 {
                Answer::Leads {
                    term: info.term,
                    leading_since: info.leading_since,
                }
            } else {
                Answer::Follows {
                    hint: (!info.address.trim().is_empty()).then(|| info.address.clone()),
                }
            }
        }
    }
}

/// A status's message with the innermost cause behind it, so that a failed
/// connection reads `connection refused` rather than `transport error`.
#[must_use]
pub fn status_reason(status: &tonic::Status) -> String {
    let mut reason = status.message().to_owned();
    if let Some(cause) = std::error::Error::source(status).map(innermost) {
        let cause = cause.to_string();
        if !reason.contains(&cause) {
            if reason.is_empty() {
                reason = cause;
            } else {
                reason = format!("{reason}: {cause}");
            }
        }
    }
    if reason.is_empty() {
        format!("{:?}", status.code())
    } else {
        reason
    }
}

/// The last error of `e`'s source chain (`e` itself when it has none).
#[must_use]
pub fn innermost<'a>(
    e: &'a (dyn std::error::Error + 'static),
) -> &'a (dyn std::error::Error + 'static) {
    let mut e = e;
    while let Some(next) = e.source() {
        e = next;
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bad_addresses_are_refused() {
        assert_eq!(Masters::new::<&str>(&[]).unwrap_err(), MastersError::Empty);
        assert!(matches!(
            Masters::new(&[" "]),
            Err(MastersError::Address(AddressError::Empty))
        ));
        assert!(matches!(
            Masters::new(&["a b:1"]),
            Err(MastersError::Address(AddressError::Malformed { .. }))
        ));
        let long = "x".repeat(100_000);
        let err = Masters::new(&[format!("{long} :1")])
            .unwrap_err()
            .to_string();
        assert!(err.len() < 400, "{} bytes", err.len());
    }

    #[tokio::test]
    async fn duplicates_are_kept_once() {
        let m = Masters::new(&["127.0.0.1:1", "127.0.0.1:1", "127.0.0.1:2"]).unwrap();
        assert_eq!(
            m.addresses().collect::<Vec<_>>(),
            ["127.0.0.1:1", "127.0.0.1:2"]
        );
    }

    #[tokio::test]
    async fn nothing_listening_is_reported_with_the_os_reason() {
        // Bind then drop: the port is very likely free afterwards.
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let mut m = Masters::new(&[addr.as_str()]).unwrap();
        let started = std::time::Instant::now();
        let err = m
            .find_leader(Instant::now() + Duration::from_millis(300))
            .await
            .unwrap_err();
        assert!(started.elapsed() < Duration::from_secs(3));
        assert!(err.all_unreachable());
        let text = err.to_string();
        assert!(text.starts_with("no master answered ("), "{text}");
        assert!(text.to_lowercase().contains("refused"), "{text}");
    }

    #[test]
    fn no_leader_reads_well() {
        let no = NoLeader {
            answers: vec![
                ("a:1".into(), Answer::Failed("connection refused".into())),
                (
                    "b:2".into(),
                    Answer::Follows {
                        hint: Some("a:1".into()),
                    },
                ),
                ("c:3".into(), Answer::Follows { hint: None }),
            ],
        };
        assert!(!no.all_unreachable());
        assert_eq!(
            no.to_string(),
            "no master leads (a:1: connection refused; b:2: follower; names a:1 as leader; \
             c:3: follower; no leader known)"
        );
    }
}
