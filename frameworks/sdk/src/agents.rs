//! The cluster's agents as the masters list them: what a framework needs
//! to reach its tasks (an agent's address) or to place by attributes
//! beyond what offers show (the agents its tasks already run on).

use std::time::Duration;

use berth_proto as pb;

/// How long one master may take to list the agents.
const LIST_TIMEOUT: Duration = Duration::from_secs(10);

/// The agents, from the first of `masters` that lists them. A follower's
/// possibly stale list will do (the read is `berth-read: stale`): agents
/// change seldom, and a missing one is asked for again later.
///
/// Returns `None` when no master answered.
pub async fn list_agents(masters: &[String]) -> Option<Vec<pb::AgentView>> {
    for master in masters {
        let Ok(endpoint) = tonic::transport::Endpoint::from_shared(pb::endpoint_uri(master)) else {
            continue;
        };
        let Ok(channel) = endpoint
            .connect_timeout(Duration::from_secs(3))
            .timeout(LIST_TIMEOUT)
            .connect()
            .await
        else {
            continue;
        };
        let mut client = pb::operator_client::OperatorClient::new(channel)
            .max_decoding_message_size(pb::MAX_MESSAGE_BYTES);
        let mut request = tonic::Request::new(pb::Empty {});
        request.metadata_mut().insert(
            "berth-read",
            tonic::metadata::MetadataValue::from_static("stale"),
        );
        if let Ok(list) = client.list_agents(request).await {
            return Some(list.into_inner().agents);
        }
    }
    None
}
