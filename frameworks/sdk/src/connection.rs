//! Where the masters are and how to reach the leader: the SDK's side of
//! [`berth_proto::leader`], which decides for frameworks, agents and the CLI
//! alike which master to talk to.

use berth_proto::leader::{Leader, Masters, MastersError};
use berth_proto::scheduler_client::SchedulerClient;
use tonic::transport::Channel;

use crate::SdkError;

/// A gRPC client of the master's scheduler service.
pub(crate) type Client = SchedulerClient<Channel>;

/// The known masters, checked: `host:port` addresses or URIs.
pub(crate) fn masters(addresses: &[String]) -> Result<Masters, SdkError> {
    Masters::new(addresses).map_err(|e| match e {
        MastersError::Empty => SdkError::InvalidConfig("no master addresses given".to_owned()),
        e @ MastersError::Address(_) => SdkError::InvalidConfig(e.to_string()),
    })
}

/// A scheduler client of `leader`, over the channel the probe used.
pub(crate) fn client(leader: &Leader) -> Client {
    SchedulerClient::new(leader.channel.clone())
        .max_decoding_message_size(berth_proto::MAX_MESSAGE_BYTES)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn bad_addresses_are_invalid_config() {
        assert!(matches!(masters(&[]), Err(SdkError::InvalidConfig(_))));
        assert!(matches!(
            masters(&[" ".into()]),
            Err(SdkError::InvalidConfig(_))
        ));
        assert!(matches!(
            masters(&["a b:1".into()]),
            Err(SdkError::InvalidConfig(_))
        ));
        assert!(masters(&["127.0.0.1:5050".into(), "http://h:1".into()]).is_ok());
    }
}
