//! The connection to the master: dial, `Attach`, register, answer pings,
//! hand the master's messages to the [`Agent`], and reconnect with backoff
//! (cycling through the configured masters) whenever the stream ends, errors
//! or stays silent for `master_timeout`.

use std::sync::Arc;
use std::time::Duration;

use berth_proto as pb;
use berth_proto::agent_api_client::AgentApiClient;
use berth_scheduler_core::AgentId;
use tokio::sync::{mpsc, watch};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Endpoint;

use crate::agent::Agent;

/// First reconnect delay.
const BACKOFF_INITIAL: Duration = Duration::from_millis(100);
/// Largest reconnect delay.
const BACKOFF_MAX: Duration = Duration::from_secs(5);
/// Longest time to establish a TCP connection to a master.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Buffer of the outbound stream.
const OUTBOUND_BUFFER: usize = 1024;

/// Keeps the agent attached to a master until `stop` becomes true.
pub(crate) async fn maintain(agent: Arc<Agent>, mut stop: watch::Receiver<bool>) {
    let masters: Vec<String> = agent
        .config
        .masters
        .iter()
        .map(|m| berth_proto::endpoint_uri(m))
        .collect();
    let mut index = 0usize;
    let mut backoff = BACKOFF_INITIAL;
    let mut hint: Option<String> = None;
    loop {
        if *stop.borrow() {
            break;
        }
        let Some(configured) = masters.get(index % masters.len().max(1)) else {
            tracing::error!("no master address configured");
            return;
        };
        // A follower names the leader: go there next instead of cycling.
        let uri = hint.take().unwrap_or_else(|| configured.clone());
        let uri = &uri;
        let outcome = tokio::select! {
            o = session(&agent, uri) => o,
            _ = stop.changed() => break,
        };
        agent.on_disconnected();
        if outcome.registered {
            backoff = BACKOFF_INITIAL;
        }
        if let Some(leader) = outcome.leader {
            tracing::info!(master = %uri, %leader, "not the leader; following it");
            hint = Some(berth_proto::endpoint_uri(&leader));
            tokio::select! {
                () = tokio::time::sleep(BACKOFF_INITIAL) => {}
                _ = stop.changed() => break,
            }
            continue;
        }
        tracing::warn!(master = %uri, reason = %outcome.reason, "disconnected from master; reconnecting");
        index = index.wrapping_add(1);
        let delay = jitter(backoff);
        backoff = (backoff * 2).min(BACKOFF_MAX);
        tokio::select! {
            () = tokio::time::sleep(delay) => {}
            _ = stop.changed() => break,
        }
    }
    agent.on_disconnected();
}

/// How a session ended.
struct Outcome {
    registered: bool,
    reason: String,
    /// The leader's address, when a follower refused the registration.
    leader: Option<String>,
}

/// The gRPC metadata key a follower master names the leader in.
const LEADER_METADATA_KEY: &str = "berth-leader";

/// One stream to one master, from dialling to its end.
async fn session(agent: &Arc<Agent>, uri: &str) -> Outcome {
    let mut registered = false;
    let mut leader = None;
    let reason = match run_session(agent, uri, &mut registered, &mut leader).await {
        Ok(()) => "stream ended".to_owned(),
        Err(e) => e,
    };
    Outcome {
        registered,
        reason,
        leader,
    }
}

async fn run_session(
    agent: &Arc<Agent>,
    uri: &str,
    registered: &mut bool,
    leader: &mut Option<String>,
) -> Result<(), String> {
    let timeout = agent.config.master_timeout;
    let endpoint = Endpoint::from_shared(uri.to_owned())
        .map_err(|e| format!("invalid master address {uri:?}: {e}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true);
    let channel = endpoint
        .connect()
        .await
        .map_err(|e| format!("cannot connect: {e}"))?;
    let mut client = AgentApiClient::new(channel).max_decoding_message_size(pb::MAX_MESSAGE_BYTES);
    let (tx, rx) = mpsc::channel(OUTBOUND_BUFFER);
    tx.try_send(agent.register_message())
        .map_err(|e| format!("cannot queue Register: {e}"))?;
    let response = tokio::time::timeout(timeout, client.attach(ReceiverStream::new(rx)))
        .await
        .map_err(|_| "no answer to Attach".to_owned())?
        .map_err(|s| {
            *leader = s
                .metadata()
                .get(LEADER_METADATA_KEY)
                .and_then(|v| v.to_str().ok())
                .filter(|v| !v.is_empty())
                .map(str::to_owned);
            format!("Attach failed: {s}")
        })?;
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
                tracing::info!(master = %uri, master_id = %r.master_id, ping_interval = r.ping_interval_seconds, "attached to master");
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

/// `d` scaled by a random factor in [0.5, 1.0).
fn jitter(d: Duration) -> Duration {
    let r = uuid::Uuid::new_v4().as_u128() % 1000;
    let factor = 0.5 + (r as f64) / 2000.0;
    d.mul_f64(factor)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jitter_in_range() {
        for _ in 0..100 {
            let j = jitter(Duration::from_millis(1000));
            assert!(
                j >= Duration::from_millis(500) && j < Duration::from_millis(1000),
                "{j:?}"
            );
        }
    }
}
