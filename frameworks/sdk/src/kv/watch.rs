//! [`KvWatch`]: the keys with a prefix and their changes, re-watched
//! after every break so that the consumer never misses a change.

use berth_proto as pb;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::call::error_of;
use super::{Entry, KvClient};
use crate::{ErrorKind, SdkError};

/// Events queued for a consumer that reads slowly, before the watch waits
/// for it (the master then queues, and ends the watch with `ABORTED` when
/// its queue is full: the watch starts over with a [`WatchEvent::Reset`]).
const QUEUE: usize = 256;

/// What a [`KvWatch`] tells.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WatchEvent {
    /// Every key with the prefix as of `revision`, in key order: **replace
    /// everything** known of the prefix with these. Sent first, and again
    /// whenever the watch had to start over (the master it watched went
    /// away or stopped leading, the watch fell behind, the master's store
    /// was replaced by a snapshot); changes between two resets that were
    /// not sent are in the second one. Leases are not in it (see
    /// [`WatchEvent::Lease`]).
    Reset {
        /// The keys, with their values and versions.
        entries: Vec<Entry>,
        /// The store revision they are at.
        revision: u64,
    },
    /// A key was put, at `entry.mod_revision`.
    Put(Entry),
    /// A key was deleted.
    Deleted {
        /// The key.
        key: String,
        /// The store revision of the deletion.
        revision: u64,
    },
    /// A lease of the namespace changed hands or became free (whatever the
    /// watch's prefix). Only changes after the last reset are sent: to know
    /// who holds a lease at a reset, ask ([`KvClient::acquire`] answers who
    /// holds it).
    Lease {
        /// The lease.
        name: String,
        /// Its new holder; `None` when it became free.
        holder: Option<String>,
        /// Its epoch.
        epoch: u64,
        /// The store revision of the change.
        revision: u64,
    },
}

impl WatchEvent {
    /// The store revision the event is at.
    #[must_use]
    pub fn revision(&self) -> u64 {
        match self {
            WatchEvent::Reset { revision, .. }
            | WatchEvent::Deleted { revision, .. }
            | WatchEvent::Lease { revision, .. } => *revision,
            WatchEvent::Put(e) => e.mod_revision,
        }
    }
}

/// A watch of the keys with a prefix ([`KvClient::watch`]): a
/// [`WatchEvent::Reset`] with the current keys, then their changes in
/// revision order.
///
/// The watch follows the leader by itself. When its stream breaks (the
/// master stopped, the connection broke, the master ended it with
/// `ABORTED` because the watch fell behind or its store was replaced by a
/// snapshot) or the master it watches no longer leads
/// ([`KvOptions::watch_leader_check`](super::KvOptions::watch_leader_check)),
/// it watches again on the leader, and the first thing it sends then is a
/// [`WatchEvent::Reset`] with the whole current state. A consumer that
/// treats every reset as "replace everything" therefore never misses a
/// change; it may see a change twice (once as an event, once inside the
/// next reset), never out of order.
///
/// Dropping it ends the watch.
#[derive(Debug)]
pub struct KvWatch {
    events: mpsc::Receiver<Result<WatchEvent, SdkError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for KvWatch {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl KvWatch {
    /// The next event.
    ///
    /// # Errors
    /// When the watch cannot go on: the master refused it (a bad namespace
    /// or prefix: [`ErrorKind::Invalid`]). Every later call fails too.
    pub async fn next(&mut self) -> Result<WatchEvent, SdkError> {
        match self.events.recv().await {
            Some(event) => event,
            None => Err(SdkError::Transport("the watch has ended".to_owned())),
        }
    }
}

pub(super) fn start(client: KvClient, prefix: String) -> KvWatch {
    let (tx, events) = mpsc::channel(QUEUE);
    let task = tokio::spawn(run(client, prefix, tx));
    KvWatch { events, task }
}

type Tx = mpsc::Sender<Result<WatchEvent, SdkError>>;

/// Watches until the consumer goes away or the master refuses the watch.
async fn run(client: KvClient, prefix: String, tx: Tx) {
    let request = pb::KvWatchRequest {
        namespace: client.namespace().to_owned(),
        prefix,
    };
    loop {
        match once(&client, &request, &tx).await {
            Ok(Gone) => return,
            Err(e)
                if matches!(
                    e.kind(),
                    ErrorKind::Invalid
                        | ErrorKind::NotFound
                        | ErrorKind::PermissionDenied
                        | ErrorKind::Unsupported
                ) =>
            {
                let _ = tx.send(Err(e)).await;
                return;
            }
            Err(e) => {
                tracing::debug!(error = %e, "key-value watch broke; watching again");
            }
        }
        tokio::time::sleep(super::RETRY_PAUSE).await;
    }
}

/// The consumer went away.
struct Gone;

/// One watch on the leader, until it breaks (an error) or the consumer
/// goes away.
async fn once(client: &KvClient, request: &pb::KvWatchRequest, tx: &Tx) -> Result<Gone, SdkError> {
    use pb::kv_watch_event::Event;
    let timeout = client.options().call_timeout;
    let (mut stub, address) = client
        .stub(Instant::now() + client.options().retry_for)
        .await?;
    let forget = |e: SdkError| {
        client.forget(&address);
        e
    };
    let mut stream = tokio::time::timeout(timeout, stub.watch(request.clone()))
        .await
        .map_err(|_| forget(SdkError::Timeout(timeout)))?
        .map_err(|s| forget(error_of(&s)))?
        .into_inner();
    // The pages: the keys as of one revision.
    let mut entries = Vec::new();
    let revision = loop {
        let event = tokio::time::timeout(timeout, stream.message())
            .await
            .map_err(|_| forget(SdkError::Timeout(timeout)))?
            .map_err(|s| forget(error_of(&s)))?
            .ok_or_else(|| forget(ended()))?;
        match event.event {
            Some(Event::Page(page)) => {
                entries.extend(page.entries.into_iter().map(Entry::from));
                if page.last {
                    break page.revision;
                }
            }
            _ => {
                return Err(forget(SdkError::Transport(
                    "the watch sent a change before its last page".into(),
                )));
            }
        }
    };
    if tx
        .send(Ok(WatchEvent::Reset { entries, revision }))
        .await
        .is_err()
    {
        return Ok(Gone);
    }
    // The changes, while the master leads.
    let mut check = tokio::time::interval(client.options().watch_leader_check);
    check.tick().await;
    loop {
        tokio::select! {
            message = stream.message() => {
                let event = message
                    .map_err(|s| forget(error_of(&s)))?
                    .ok_or_else(|| forget(ended()))?;
                let Some(event) = change(event).map_err(forget)? else { continue };
                if tx.send(Ok(event)).await.is_err() {
                    return Ok(Gone);
                }
            }
            _ = check.tick() => {
                if client.leads_still(&address).await == Some(false) {
                    return Err(forget(SdkError::Transport(format!("the watched master {address} no longer leads"))));
                }
            }
            () = tx.closed() => return Ok(Gone),
        }
    }
}

fn ended() -> SdkError {
    SdkError::Transport("the master ended the watch".to_owned())
}

/// A change as a [`WatchEvent`]; `None` for a kind of change this SDK
/// does not know (a newer master's), which is logged and skipped.
///
/// # Errors
/// For a page after the last one: the stream is not what the contract
/// says, so the watch starts over.
fn change(event: pb::KvWatchEvent) -> Result<Option<WatchEvent>, SdkError> {
    use pb::kv_watch_change::Change;
    let c = match event.event {
        Some(pb::kv_watch_event::Event::Change(c)) => c,
        Some(pb::kv_watch_event::Event::Page(_)) => {
            return Err(SdkError::Transport(
                "the watch sent a page after its last one".to_owned(),
            ));
        }
        None => {
            tracing::warn!("skipping a key-value watch event this SDK does not know");
            return Ok(None);
        }
    };
    let Some(kind) = c.change else {
        tracing::warn!(
            revision = c.revision,
            "skipping a key-value change this SDK does not know"
        );
        return Ok(None);
    };
    Ok(Some(match kind {
        Change::Put(entry) => WatchEvent::Put(entry.into()),
        Change::Deleted(key) => WatchEvent::Deleted {
            key,
            revision: c.revision,
        },
        Change::Lease(l) => WatchEvent::Lease {
            name: l.name,
            holder: (!l.holder.is_empty()).then_some(l.holder),
            epoch: l.epoch,
            revision: c.revision,
        },
    }))
}

#[cfg(test)]
mod tests;
