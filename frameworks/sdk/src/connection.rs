//! Where the masters are and how to reach one: the only place that decides
//! which address to try next.
//!
//! [`Endpoints`] rotates through the configured master addresses; a leader
//! hint from a follower (see [`leader_hint`]) jumps the queue once.
//! [`Backoff`] spaces out attempts: 100 ms doubling to 5 s, with jitter.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::Duration;

use berth_proto::scheduler_client::SchedulerClient;
use tonic::transport::{Channel, Endpoint};

use crate::SdkError;

/// A gRPC client of the master's scheduler service.
pub(crate) type Client = SchedulerClient<Channel>;

/// Metadata key under which a follower master names the leader's address
/// in an error status. Provisional: the wire protocol does not define it
/// yet (it arrives with Raft).
pub(crate) const LEADER_METADATA_KEY: &str = "berth-leader";

/// The master addresses and which one to try next.
#[derive(Debug, Clone)]
pub(crate) struct Endpoints {
    uris: Vec<String>,
    next: usize,
    hint: Option<String>,
}

impl Endpoints {
    /// Checks and normalizes the addresses (`host:port` or a URI).
    pub(crate) fn new(masters: Vec<String>) -> Result<Self, SdkError> {
        if masters.is_empty() {
            return Err(SdkError::InvalidConfig(
                "no master addresses given".to_owned(),
            ));
        }
        let mut uris = Vec::with_capacity(masters.len());
        for m in &masters {
            if m.trim().is_empty() {
                return Err(SdkError::InvalidConfig("empty master address".to_owned()));
            }
            let uri = berth_proto::endpoint_uri(m);
            if let Err(e) = Endpoint::from_shared(uri.clone()) {
                return Err(SdkError::InvalidConfig(format!(
                    "invalid master address {m:?}: {e}"
                )));
            }
            uris.push(uri);
        }
        Ok(Endpoints {
            uris,
            next: 0,
            hint: None,
        })
    }

    /// The address to try next: a pending leader hint, otherwise the
    /// configured addresses in turn.
    pub(crate) fn next_uri(&mut self) -> String {
        if let Some(hint) = self.hint.take() {
            return hint;
        }
        let uri = self.uris[self.next % self.uris.len()].clone();
        self.next = (self.next + 1) % self.uris.len();
        uri
    }

    /// Remembers that the leader is at `addr`; the next attempt goes there.
    pub(crate) fn redirect(&mut self, addr: &str) {
        if !addr.trim().is_empty() {
            self.hint = Some(berth_proto::endpoint_uri(addr));
        }
    }

    /// Follows a leader hint in `status`, if any; returns whether there was
    /// one.
    pub(crate) fn follow(&mut self, status: &tonic::Status) -> bool {
        match leader_hint(status) {
            Some(addr) => {
                self.redirect(&addr);
                true
            }
            None => false,
        }
    }
}

/// The leader address a follower put into an error status, if any.
pub(crate) fn leader_hint(status: &tonic::Status) -> Option<String> {
    status
        .metadata()
        .get(LEADER_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|s| !s.trim().is_empty())
}

/// Opens a connection to the master at `uri`.
pub(crate) async fn connect(uri: &str, timeout: Duration) -> Result<Client, SdkError> {
    let endpoint = Endpoint::from_shared(uri.to_owned())
        .map_err(|e| SdkError::InvalidConfig(format!("invalid master address {uri:?}: {e}")))?
        .connect_timeout(timeout)
        .tcp_nodelay(true)
        .http2_keep_alive_interval(Duration::from_secs(30))
        .keep_alive_while_idle(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| SdkError::Transport(format!("{uri}: {e}")))?;
    Ok(SchedulerClient::new(channel).max_decoding_message_size(berth_proto::MAX_MESSAGE_BYTES))
}

/// Exponential backoff with jitter: 100 ms doubling to 5 s.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    current: Duration,
}

impl Backoff {
    /// First delay.
    pub(crate) const MIN: Duration = Duration::from_millis(100);
    /// Largest delay.
    pub(crate) const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Backoff { current: Self::MIN }
    }

    /// The next delay: uniformly random in `[d/2, d]`, where `d` doubles
    /// from [`Backoff::MIN`] up to [`Backoff::MAX`] with every call.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let d = self.current;
        self.current = (d * 2).min(Self::MAX);
        let half = d / 2;
        let mut h = RandomState::new().build_hasher();
        h.write_u128(
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |t| t.as_nanos()),
        );
        let frac = (h.finish() % 1001) as u32;
        half + half * frac / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn endpoints_rotate_and_follow_hints() {
        let mut e = Endpoints::new(vec!["a:1".into(), "http://b:2".into()]).unwrap();
        assert_eq!(e.next_uri(), "http://a:1");
        assert_eq!(e.next_uri(), "http://b:2");
        assert_eq!(e.next_uri(), "http://a:1");
        let mut status = tonic::Status::unavailable("not the leader");
        status
            .metadata_mut()
            .insert(LEADER_METADATA_KEY, "c:3".parse().unwrap());
        assert!(e.follow(&status));
        assert_eq!(e.next_uri(), "http://c:3");
        assert_eq!(e.next_uri(), "http://b:2");
        assert!(!e.follow(&tonic::Status::unavailable("down")));
    }

    #[test]
    fn endpoints_reject_bad_input() {
        assert!(matches!(
            Endpoints::new(vec![]),
            Err(SdkError::InvalidConfig(_))
        ));
        assert!(Endpoints::new(vec![" ".into()]).is_err());
        assert!(Endpoints::new(vec!["a b:1".into()]).is_err());
    }

    #[test]
    fn backoff_doubles_with_jitter_up_to_max() {
        let mut b = Backoff::new();
        let mut ceiling = Backoff::MIN;
        for _ in 0..12 {
            let d = b.next_delay();
            assert!(d >= ceiling / 2 && d <= ceiling, "{d:?} vs {ceiling:?}");
            ceiling = (ceiling * 2).min(Backoff::MAX);
        }
        assert!(b.next_delay() >= Backoff::MAX / 2);
        assert!(Backoff::new().next_delay() <= Backoff::MIN);
    }
}
