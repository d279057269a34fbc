//! The KeyValue gRPC service: the frameworks' key-value store
//! (`registry::kv`, `core::kv`). Calls become core requests; a watch reads
//! the keys once through the core and then follows the changes every
//! master publishes as it applies them.

use std::sync::Arc;

use berth_proto as pb;
use futures::Stream;
use tokio::sync::{broadcast, mpsc};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response, Status};

use super::{CoreHandle, stale, unexpected};
use crate::core::{KvBatch, KvCall, KvReply, OperatorCall, OperatorReply};
use crate::registry::kv::{Compare, KvChange, Op, Txn};

/// Bytes of values per page of a watch's first read.
const WATCH_PAGE_BYTES: usize = 2 * 1024 * 1024;
/// Watch events queued for a slow caller before the watch waits.
const WATCH_QUEUE: usize = 256;

/// The KeyValue service.
#[derive(Debug, Clone)]
pub(crate) struct KeyValueService {
    core: CoreHandle,
    events: broadcast::Sender<Arc<KvBatch>>,
}

impl KeyValueService {
    pub(crate) fn new(core: CoreHandle, events: broadcast::Sender<Arc<KvBatch>>) -> Self {
        Self { core, events }
    }

    async fn ask(&self, call: KvCall, stale_ok: bool) -> Result<KvReply, Status> {
        match self.core.operator(OperatorCall::Kv(call), stale_ok).await? {
            OperatorReply::Kv(reply) => Ok(reply),
            _ => Err(unexpected()),
        }
    }
}

/// A transaction request as the store takes it; only its shape is checked
/// here (the store checks the rest).
fn txn(req: pb::KvTxnRequest) -> Result<Txn, Status> {
    let compares = req
        .compares
        .into_iter()
        .enumerate()
        .map(|(i, c)| match c.compare {
            Some(pb::kv_compare::Compare::Version(v)) => Ok(Compare::Version {
                key: v.key,
                version: v.version,
            }),
            Some(pb::kv_compare::Compare::LeaseHeld(l)) => Ok(Compare::LeaseHeld {
                name: l.name,
                holder: l.holder,
                epoch: l.epoch,
            }),
            None => Err(Status::invalid_argument(format!("compare {i} is empty"))),
        })
        .collect::<Result<_, _>>()?;
    let ops = req
        .ops
        .into_iter()
        .enumerate()
        .map(|(i, o)| match o.op {
            Some(pb::kv_op::Op::Put(p)) => Ok(Op::Put {
                key: p.key,
                value: p.value,
            }),
            Some(pb::kv_op::Op::Delete(key)) => Ok(Op::Delete { key }),
            Some(pb::kv_op::Op::DeletePrefix(prefix)) => Ok(Op::DeletePrefix { prefix }),
            None => Err(Status::invalid_argument(format!("operation {i} is empty"))),
        })
        .collect::<Result<_, _>>()?;
    Ok(Txn {
        namespace: req.namespace,
        compares,
        ops,
    })
}

/// A change as a watch of `prefix` in `namespace` sends it, if it is one.
fn watched(change: &KvChange, namespace: &str, prefix: &str) -> Option<pb::KvWatchChange> {
    use pb::kv_watch_change::Change;
    let (ns, revision, change) = match change {
        KvChange::Put {
            namespace,
            key,
            entry,
        } => {
            if !key.starts_with(prefix) {
                return None;
            }
            (
                namespace,
                entry.mod_revision,
                Change::Put(crate::core::kv_entry_view(key, entry, true)),
            )
        }
        KvChange::Delete {
            namespace,
            key,
            revision,
        } => {
            if !key.starts_with(prefix) {
                return None;
            }
            (namespace, *revision, Change::Deleted(key.clone()))
        }
        KvChange::Lease {
            namespace,
            name,
            lease,
            revision,
        } => (
            namespace,
            *revision,
            Change::Lease(pb::LeaseChange {
                name: name.clone(),
                holder: lease.holder.clone().unwrap_or_default(),
                epoch: lease.epoch,
            }),
        ),
    };
    (ns == namespace).then_some(pb::KvWatchChange {
        revision,
        change: Some(change),
    })
}

/// The first read of a watch, in pages of at most [`WATCH_PAGE_BYTES`] of
/// values (at least one entry each; one empty page for no keys).
fn pages(entries: Vec<pb::KvEntry>, revision: u64) -> Vec<pb::KvWatchPage> {
    let mut groups: Vec<Vec<pb::KvEntry>> = Vec::new();
    let mut current = Vec::new();
    let mut bytes = 0;
    for e in entries {
        if !current.is_empty() && bytes + e.value.len() > WATCH_PAGE_BYTES {
            groups.push(std::mem::take(&mut current));
            bytes = 0;
        }
        bytes += e.value.len();
        current.push(e);
    }
    groups.push(current);
    let n = groups.len();
    groups
        .into_iter()
        .enumerate()
        .map(|(i, entries)| pb::KvWatchPage {
            entries,
            revision,
            last: i + 1 == n,
        })
        .collect()
}

type WatchStream = std::pin::Pin<Box<dyn Stream<Item = Result<pb::KvWatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl pb::key_value_server::KeyValue for KeyValueService {
    async fn get(&self, r: GrpcRequest<pb::KvGetRequest>) -> Result<Response<pb::KvEntry>, Status> {
        let stale_ok = stale(&r);
        let req = r.into_inner();
        let call = KvCall::Get {
            namespace: req.namespace,
            key: req.key,
        };
        match self.ask(call, stale_ok).await? {
            KvReply::Entry(e) => Ok(Response::new(e)),
            _ => Err(unexpected()),
        }
    }

    async fn list(
        &self,
        r: GrpcRequest<pb::KvListRequest>,
    ) -> Result<Response<pb::KvListResponse>, Status> {
        let stale_ok = stale(&r);
        match self.ask(KvCall::List(r.into_inner()), stale_ok).await? {
            KvReply::List(l) => Ok(Response::new(l)),
            _ => Err(unexpected()),
        }
    }

    async fn txn(
        &self,
        r: GrpcRequest<pb::KvTxnRequest>,
    ) -> Result<Response<pb::KvTxnResponse>, Status> {
        let txn = txn(r.into_inner())?;
        match self.ask(KvCall::Txn(txn), false).await? {
            KvReply::Txn(t) => Ok(Response::new(t)),
            _ => Err(unexpected()),
        }
    }

    async fn acquire_lease(
        &self,
        r: GrpcRequest<pb::AcquireLeaseRequest>,
    ) -> Result<Response<pb::LeaseState>, Status> {
        let req = r.into_inner();
        let call = KvCall::Acquire {
            namespace: req.namespace,
            name: req.name,
            holder: req.holder,
            ttl_ms: u64::from(req.ttl_seconds) * 1000,
        };
        match self.ask(call, false).await? {
            KvReply::Lease(l) => Ok(Response::new(l)),
            _ => Err(unexpected()),
        }
    }

    async fn keep_alive(
        &self,
        r: GrpcRequest<pb::LeaseRef>,
    ) -> Result<Response<pb::LeaseState>, Status> {
        match self.ask(KvCall::KeepAlive(r.into_inner()), false).await? {
            KvReply::Lease(l) => Ok(Response::new(l)),
            _ => Err(unexpected()),
        }
    }

    async fn release_lease(
        &self,
        r: GrpcRequest<pb::LeaseRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        match self.ask(KvCall::Release(r.into_inner()), false).await? {
            KvReply::Empty => Ok(Response::new(pb::Empty {})),
            _ => Err(unexpected()),
        }
    }

    type WatchStream = WatchStream;

    async fn watch(
        &self,
        r: GrpcRequest<pb::KvWatchRequest>,
    ) -> Result<Response<Self::WatchStream>, Status> {
        let stale_ok = stale(&r);
        let req = r.into_inner();
        // Subscribed before the read: a change applied meanwhile is both
        // in the read and in the queue, and its revision tells which.
        let mut changes = self.events.subscribe();
        let call = KvCall::WatchStart {
            namespace: req.namespace.clone(),
            prefix: req.prefix.clone(),
        };
        let KvReply::WatchStart { entries, revision } = self.ask(call, stale_ok).await? else {
            return Err(unexpected());
        };
        let (tx, rx) = mpsc::channel(WATCH_QUEUE);
        tokio::spawn(async move {
            use pb::kv_watch_event::Event;
            for page in pages(entries, revision) {
                let event = pb::KvWatchEvent {
                    event: Some(Event::Page(page)),
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            loop {
                let batch = tokio::select! {
                    batch = changes.recv() => batch,
                    () = tx.closed() => return,
                };
                let batch = match batch {
                    Ok(batch) => batch,
                    Err(broadcast::error::RecvError::Lagged(n)) => {
                        let _ = tx
                            .send(Err(Status::aborted(format!(
                                "the watch fell {n} changes behind; watch again"
                            ))))
                            .await;
                        return;
                    }
                    Err(broadcast::error::RecvError::Closed) => {
                        let _ = tx
                            .send(Err(Status::unavailable("master is shutting down")))
                            .await;
                        return;
                    }
                };
                let changes = match &*batch {
                    KvBatch::Reset => {
                        let _ = tx
                            .send(Err(Status::aborted(
                                "this master's store was replaced by a snapshot; watch again",
                            )))
                            .await;
                        return;
                    }
                    KvBatch::Changes(changes) => changes,
                };
                for c in changes {
                    if let Some(change) = watched(c, &req.namespace, &req.prefix)
                        && change.revision > revision
                    {
                        let event = pb::KvWatchEvent {
                            event: Some(Event::Change(change)),
                        };
                        if tx.send(Ok(event)).await.is_err() {
                            return;
                        }
                    }
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(key: &str, size: usize) -> pb::KvEntry {
        pb::KvEntry {
            key: key.into(),
            value: vec![0; size],
            ..Default::default()
        }
    }

    #[test]
    fn pages_hold_at_most_their_bytes_and_end_with_last() {
        let p = pages(Vec::new(), 7);
        assert_eq!(p.len(), 1);
        assert!(p[0].last && p[0].entries.is_empty() && p[0].revision == 7);

        let mb = 1024 * 1024;
        let p = pages(
            vec![
                entry("a", mb),
                entry("b", mb),
                entry("c", 1),
                entry("d", 3 * mb),
            ],
            9,
        );
        let keys: Vec<Vec<&str>> = p
            .iter()
            .map(|p| p.entries.iter().map(|e| e.key.as_str()).collect())
            .collect();
        assert_eq!(keys, [vec!["a", "b"], vec!["c"], vec!["d"]]);
        assert_eq!(p.iter().filter(|p| p.last).count(), 1);
        assert!(p[2].last);
    }

    #[test]
    fn empty_compares_and_ops_are_refused() {
        let req = pb::KvTxnRequest {
            namespace: "a".into(),
            compares: vec![pb::KvCompare { compare: None }],
            ops: vec![],
        };
        assert_eq!(txn(req).unwrap_err().message(), "compare 0 is empty");
        let req = pb::KvTxnRequest {
            namespace: "a".into(),
            compares: vec![],
            ops: vec![pb::KvOp { op: None }],
        };
        assert_eq!(txn(req).unwrap_err().message(), "operation 0 is empty");
    }

    #[test]
    fn a_watch_sees_its_namespace_and_prefix_only() {
        let put = |ns: &str, key: &str| KvChange::Put {
            namespace: ns.into(),
            key: key.into(),
            entry: crate::registry::kv::KvEntry {
                value: vec![],
                version: 1,
                create_revision: 3,
                mod_revision: 3,
            },
        };
        assert!(watched(&put("a", "apps/x"), "a", "apps/").is_some());
        assert!(watched(&put("a", "jobs/x"), "a", "apps/").is_none());
        assert!(watched(&put("b", "apps/x"), "a", "apps/").is_none());
        let lease = KvChange::Lease {
            namespace: "a".into(),
            name: "active".into(),
            lease: crate::registry::kv::LeaseRecord {
                holder: None,
                epoch: 2,
                ttl_ms: 1000,
            },
            revision: 4,
        };
        let seen = watched(&lease, "a", "apps/").unwrap();
        assert_eq!(seen.revision, 4);
    }
}
