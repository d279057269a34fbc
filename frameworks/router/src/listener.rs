//! One listening socket and its connections: accept until told to close,
//! then let open connections finish within a grace period.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::oneshot;
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

/// Accepts connections on `listener` and runs `handle` on each, until
/// `close` fires. Then the socket is closed (and `closed` told so), each
/// connection's token is cancelled (HTTP connections finish their request
/// and close; TCP ones go on), and connections still open after `grace`
/// are cut.
pub(crate) async fn run<H, F>(
    listener: TcpListener,
    close: CancellationToken,
    grace: Duration,
    closed: oneshot::Sender<()>,
    handle: H,
) where
    H: Fn(TcpStream, SocketAddr, CancellationToken) -> F,
    F: Future<Output = ()> + Send + 'static,
{
    let mut connections = JoinSet::new();
    loop {
        tokio::select! {
            _ = close.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    let _ = stream.set_nodelay(true);
                    connections.spawn(handle(stream, peer, close.child_token()));
                }
                Err(error) => {
                    // Out of file descriptors and the like: wait, go on.
                    tracing::warn!(%error, "accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    drop(listener);
    let _ = closed.send(());
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(grace, drain).await.is_err() {
        tracing::info!(
            open = connections.len(),
            "grace period over; cutting connections"
        );
        connections.shutdown().await;
    }
}
