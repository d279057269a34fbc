//! How the admin commands reach the cluster: the leading master, found by
//! asking every `--master` address at once ([`berth_proto::leader`]), so
//! that a master that is down, frozen or cut off is passed over, and every
//! call with a deadline, so that none hangs ([`CALL_TIMEOUT`], 10 s).

use std::time::Duration;

use anyhow::anyhow;
use berth_proto::leader::{Leader, Masters};
use berth_proto::operator_client::OperatorClient;
use tokio::time::Instant;
use tonic::transport::Channel;

use crate::ClientOpts;

/// How long the commands look for a leading master (an election takes one
/// or two seconds).
pub(crate) const FIND_TIMEOUT: Duration = Duration::from_secs(5);
/// Deadline of one call to a master.
pub(crate) const CALL_TIMEOUT: Duration = Duration::from_secs(10);
/// Longest wait for a TCP connection to a master.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// The masters named by `--master` / `BERTH_MASTER`.
pub(crate) fn masters(client: &ClientOpts) -> anyhow::Result<Masters> {
    Masters::new(&client.master).map_err(|e| anyhow!("{e} (use --master or BERTH_MASTER)"))
}

/// The leading master, or why none could be found (what each master
/// answered: `connection refused`, `no answer within 1s`, …).
pub(crate) async fn leader(client: &ClientOpts) -> anyhow::Result<Leader> {
    masters(client)?
        .find_leader(Instant::now() + FIND_TIMEOUT)
        .await
        .map_err(|no| anyhow!("cannot reach the cluster: {no}"))
}

/// A client of the operator API on `address`, with `deadline` on every
/// call.
pub(crate) fn operator_at(
    address: &str,
    deadline: Duration,
) -> anyhow::Result<OperatorClient<Channel>> {
    let endpoint = berth_proto::leader::endpoint(address, CONNECT_TIMEOUT)?.timeout(deadline);
    Ok(OperatorClient::new(endpoint.connect_lazy())
        .max_decoding_message_size(berth_proto::MAX_MESSAGE_BYTES))
}

/// A client of the leading master's operator API, every call bounded by
/// [`CALL_TIMEOUT`]: writes and linearizable reads go where they can be
/// served.
pub(crate) async fn operator(client: &ClientOpts) -> anyhow::Result<OperatorClient<Channel>> {
    let leader = leader(client).await?;
    operator_at(&leader.address, CALL_TIMEOUT)
}
