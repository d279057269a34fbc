//! A scripted fake master for the client's tests: a `KeyValue` service
//! that answers what each test says, next to a `GetLeader` that says it
//! leads.

use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto as pb;
use berth_proto::key_value_server::{KeyValue, KeyValueServer};
use berth_proto::testing::FakeLeader;
use futures::Stream;
use tokio::sync::mpsc;
use tokio_stream::wrappers::{ReceiverStream, TcpListenerStream};
use tonic::{Code, Request, Response, Status};

use super::{KvClient, KvOptions};

/// One scripted answer.
pub(crate) enum Say<T> {
    Reply(Result<T, Status>),
    /// Never answers.
    Hang,
}

pub(crate) fn ok<T>(t: T) -> Say<T> {
    Say::Reply(Ok(t))
}

pub(crate) fn err<T>(code: Code, message: &str) -> Say<T> {
    Say::Reply(Err(Status::new(code, message)))
}

pub(crate) type WatchItems = Vec<Result<pb::KvWatchEvent, Status>>;

#[derive(Default)]
pub(crate) struct Script {
    pub(crate) get: VecDeque<Say<pb::KvEntry>>,
    pub(crate) txn: VecDeque<Say<pb::KvTxnResponse>>,
    pub(crate) acquire: VecDeque<Say<pb::LeaseState>>,
    /// Empty: renewals succeed.
    pub(crate) keep_alive: VecDeque<Say<pb::LeaseState>>,
    /// Once empty, every renewal hangs (rather than succeeds).
    pub(crate) keep_alive_hangs: bool,
    pub(crate) release: VecDeque<Say<pb::Empty>>,
    /// Each watch call's events; the stream stays open after them unless
    /// the last one is an error.
    pub(crate) watch: VecDeque<WatchItems>,
    pub(crate) calls: BTreeMap<&'static str, usize>,
    /// Senders of open watch streams, kept so that they stay open.
    pub(crate) open: Vec<mpsc::Sender<Result<pb::KvWatchEvent, Status>>>,
}

#[derive(Clone, Default)]
pub(crate) struct Fake(Arc<Mutex<Script>>);

impl Fake {
    pub(crate) fn script(&self) -> std::sync::MutexGuard<'_, Script> {
        self.0.lock().unwrap()
    }

    pub(crate) fn calls(&self, method: &str) -> usize {
        self.script().calls.get(method).copied().unwrap_or(0)
    }

    async fn answer<T>(
        &self,
        method: &'static str,
        pick: impl FnOnce(&mut Script) -> Option<Say<T>>,
    ) -> Result<Response<T>, Status> {
        let say = {
            let mut s = self.script();
            *s.calls.entry(method).or_default() += 1;
            pick(&mut s)
        };
        match say {
            Some(Say::Reply(r)) => r.map(Response::new),
            Some(Say::Hang) => std::future::pending().await,
            None => Err(Status::internal(format!("{method}: unscripted"))),
        }
    }
}

pub(crate) fn held(epoch: u64) -> pb::LeaseState {
    pb::LeaseState {
        held: true,
        holder: "me".into(),
        epoch,
        remaining_ms: 1000,
    }
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::KvWatchEvent, Status>> + Send>>;

#[tonic::async_trait]
impl KeyValue for Fake {
    async fn get(&self, _: Request<pb::KvGetRequest>) -> Result<Response<pb::KvEntry>, Status> {
        self.answer("get", |s| s.get.pop_front()).await
    }

    async fn list(
        &self,
        _: Request<pb::KvListRequest>,
    ) -> Result<Response<pb::KvListResponse>, Status> {
        self.answer("list", |_| None).await
    }

    async fn txn(
        &self,
        _: Request<pb::KvTxnRequest>,
    ) -> Result<Response<pb::KvTxnResponse>, Status> {
        self.answer("txn", |s| s.txn.pop_front()).await
    }

    async fn acquire_lease(
        &self,
        _: Request<pb::AcquireLeaseRequest>,
    ) -> Result<Response<pb::LeaseState>, Status> {
        self.answer("acquire", |s| s.acquire.pop_front()).await
    }

    async fn keep_alive(
        &self,
        r: Request<pb::LeaseRef>,
    ) -> Result<Response<pb::LeaseState>, Status> {
        let epoch = r.into_inner().epoch;
        self.answer("keep_alive", |s| {
            s.keep_alive.pop_front().or(Some(if s.keep_alive_hangs {
                Say::Hang
            } else {
                ok(held(epoch))
            }))
        })
        .await
    }

    async fn release_lease(&self, _: Request<pb::LeaseRef>) -> Result<Response<pb::Empty>, Status> {
        self.answer("release", |s| s.release.pop_front()).await
    }

    type WatchStream = WatchStream;

    async fn watch(&self, _: Request<pb::KvWatchRequest>) -> Result<Response<WatchStream>, Status> {
        let mut s = self.script();
        *s.calls.entry("watch").or_default() += 1;
        let Some(items) = s.watch.pop_front() else {
            return Err(Status::invalid_argument(
                "namespace \"\" must be 1 to 64 bytes",
            ));
        };
        let (tx, rx) = mpsc::channel(items.len().max(1));
        let ends = items.last().is_some_and(Result::is_err);
        for item in items {
            tx.try_send(item).unwrap();
        }
        if !ends {
            s.open.push(tx);
        }
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Serves `fake` (and a `GetLeader` that says it leads) on a loopback port.
async fn serve(fake: Fake) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        tonic::transport::Server::builder()
            .add_service(KeyValueServer::new(fake))
            .add_service(FakeLeader::new().into_server())
            .serve_with_incoming(TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    addr
}

pub(crate) async fn client_of(fake: &Fake) -> KvClient {
    let addr = serve(fake.clone()).await;
    let options = KvOptions::default()
        .call_timeout(Duration::from_millis(300))
        .retry_for(Duration::from_secs(2));
    KvClient::connect(vec![addr.to_string()], "ns", options)
        .await
        .unwrap()
}

/// What a leader that lost its leadership with the call in flight says.
pub(crate) const LOST_LEADERSHIP: &str = "this master lost leadership before the command was committed; \
     the new leader may still commit it (reconcile before retrying); this master is not the \
     leader and no leader is known yet";
