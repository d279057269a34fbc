//! The connection to the master: find the leader, `Attach`, register,
//! answer pings, hand the master's messages to the [`Agent`], and start over
//! whenever the stream ends, errors or stays silent.
//!
//! The leader is found by asking every configured master at once who leads
//! ([`berth_proto::leader`]), every 100 ms while none does: a follower's
//! hint that still names a dead or frozen leader is never waited on. A
//! master that stays silent (no message, not even a ping) for
//! `master_timeout` (4 s by default; at least two of the master's ping
//! intervals) is taken as lost: frozen, or cut off, and left within about
//! 5 s. Registering and re-registering carry the agent's running tasks.

use std::sync::Arc;
use std::time::Duration;

use berth_proto as pb;
use berth_proto::agent_api_client::AgentApiClient;
use berth_proto::leader::{Leader, Masters};
use berth_scheduler_core::AgentId;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_stream::wrappers::ReceiverStream;

use crate::agent::Agent;

/// Pause after a session that ended without a registration (the leader
/// refused it, or stepped down meanwhile) before asking again who leads.
const RETRY_PAUSE: Duration = Duration::from_millis(200);
/// How long one round of leader finding may take before it is logged and
/// started over.
const FIND_ROUND: Duration = Duration::from_secs(30);
/// A stream is lost when nothing arrived for this many of the master's
/// ping intervals, even if `master_timeout` is shorter.
const MISSED_PINGS: u32 = 2;
/// Buffer of the outbound stream.
const OUTBOUND_BUFFER: usize = 1024;

/// Keeps the agent attached to the leading master until `stop` becomes
/// true.
pub(crate) async fn maintain(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let mut masters = match Masters::new(&agent.config.masters) {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("cannot attach to a master: {e}");
            return;
        }
    };
    loop {
        if *stop.borrow() {
            break;
        }
        let found = tokio::select! {
            found = masters.find_leader(Instant::now() + FIND_ROUND) => found,
            _ = stop.changed() => break,
        };
        let leader = match found {
            Ok(leader) => leader,
            Err(no) => {
                tracing::warn!("cannot attach to a master: {no}; still trying");
                continue;
            }
        };
        let outcome = tokio::select! {
            o = session(&agent, &leader) => o,
            _ = stop.changed() => break,
        };
        agent.on_disconnected();
        tracing::warn!(master = %leader.address, reason = %outcome.reason, "disconnected from master; finding the leader");
        if !outcome.registered {
            tokio::select! {
                () = tokio::time::sleep(RETRY_PAUSE) => {}
                _ = stop.changed() => break,
            }
        }
    }
    agent.on_disconnected();
}

/// How a session ended.
struct Outcome {
    registered: bool,
    reason: String,
}

/// One stream to the leader, from `Attach` to its end.
async fn session(agent: &Arc<Agent>, leader: &Leader) -> Outcome {
    let mut registered = false;
    let reason = match run_session(agent, leader, &mut registered).await {
        Ok(()) => "stream ended".to_owned(),
        Err(e) => e,
    };
    Outcome { registered, reason }
}

/// How long the stream may stay silent: `master_timeout`, but at least
/// [`MISSED_PINGS`] ping intervals once the master said how often it pings.
fn silence_limit(master_timeout: Duration, ping_interval_seconds: Option<f64>) -> Duration {
    let pings = ping_interval_seconds
        .filter(|s| s.is_finite() && *s > 0.0)
        .map_or(Duration::ZERO, |s| {
            Duration::from_secs_f64(s.min(3600.0)) * MISSED_PINGS
        });
    master_timeout.max(pings)
}

async fn run_session(
    agent: &Arc<Agent>,
    leader: &Leader,
    registered: &mut bool,
) -> Result<(), String> {
    let uri = leader.address.as_str();
    let mut timeout = silence_limit(agent.config.master_timeout, None);
    let mut client = AgentApiClient::new(leader.channel.clone())
        .max_decoding_message_size(pb::MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
    // The tasks it reports are checkpointed before the master hears of
    // them, as every status update is.
    let register = agent.register_message();
    agent
        .writer
        .flushed()
        .await
        .map_err(|e| format!("cannot register: {e}"))?;
    tx.try_send(register)
        .map_err(|e| format!("cannot queue Register: {e}"))?;
    let response = tokio::time::timeout(timeout, client.attach(ReceiverStream::new(rx)))
        .await
        .map_err(|_| "no answer to Attach".to_owned())?
        .map_err(|s| format!("Attach failed: {}", berth_proto::leader::status_reason(&s)))?;
    let mut inbound = response.into_inner();
    loop {
        let msg = match tokio::time::timeout(timeout, inbound.message()).await {
            Err(_) => return Err(format!("nothing from the master for {timeout:?}")),
            Ok(Err(status)) => return Err(format!("stream error: {status}")),
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(m))) => m,
        };
        let Some(msg) = msg.message else {
            tracing::debug!("empty message from master; ignored");
            continue;
        };
        match msg {
            pb::master_message::Message::Registered(r) if !*registered => {
                AgentId::new(r.agent_id.as_str())
                    .map_err(|e| format!("master sent an invalid agent id: {e}"))?;
                timeout = silence_limit(agent.config.master_timeout, Some(r.ping_interval_seconds));
                tracing::info!(master = %uri, master_id = %r.master_id, term = leader.term, ping_interval = r.ping_interval_seconds, "attached to master");
                *registered = true;
                agent.on_registered(r.agent_id, tx.clone());
            }
            pb::master_message::Message::Ping(p) => {
                // Answer even before registration: the stream is alive.
                let _ = tx.try_send(pb::AgentMessage {
                    message: Some(pb::agent_message::Message::Pong(pb::Pong { seq: p.seq })),
                });
            }
            other if *registered => agent.handle(other),
            _ => tracing::warn!("message from master before Registered; ignored"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_limit_is_the_timeout_or_two_pings() {
        let s = Duration::from_secs;
        assert_eq!(silence_limit(s(4), None), s(4));
        assert_eq!(silence_limit(s(4), Some(1.0)), s(4));
        assert_eq!(silence_limit(s(4), Some(5.0)), s(10));
        assert_eq!(silence_limit(s(4), Some(f64::NAN)), s(4));
        assert_eq!(silence_limit(s(4), Some(-1.0)), s(4));
    }
}
