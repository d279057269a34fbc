//! The gRPC layer: turns calls into core [`Request`]s and replies back into
//! responses. Only this module speaks `tonic::Status` to the outside.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use berth_proto as pb;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, oneshot};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request as GrpcRequest, Response, Status, Streaming};
use tracing::debug;

use crate::core::{
    AGENT_QUEUE, CallReply, OperatorCall, OperatorReply, Request, SchedulerCall, StreamEvent,
};
use crate::error::CallError;

mod kv;

pub(crate) use self::kv::KeyValueService;

/// How long an agent has to send Register after opening its stream.
const REGISTER_TIMEOUT: Duration = Duration::from_secs(10);

/// The gRPC metadata key naming the leader's address on redirects.
pub const LEADER_METADATA_KEY: &str = "berth-leader";

/// The gRPC metadata key a follower's refusal carries, with the value
/// [`NOT_TAKEN`]: the call was not proposed, so sending it again (to the
/// leader) cannot apply it twice. A leader that lost leadership with the
/// call in flight answers the same code without it: outcome unknown.
pub const CALL_METADATA_KEY: &str = "berth-call";

/// See [`CALL_METADATA_KEY`].
pub const NOT_TAKEN: &str = "not-taken";

/// The gRPC status of a call error: one code per variant, the message as
/// the core wrote it; redirects carry the leader's address in the
/// `berth-leader` metadata, which the SDK, the agent and the CLI follow.
pub(crate) fn status(e: CallError) -> Status {
    let redirect = |leader: Option<String>, message: String| {
        let mut status = Status::unavailable(message);
        if let Some(addr) = leader
            && let Ok(value) = addr.parse()
        {
            status.metadata_mut().insert(LEADER_METADATA_KEY, value);
        }
        status
    };
    match e {
        CallError::InvalidArgument(m) => Status::invalid_argument(m),
        CallError::NotFound(m) => Status::not_found(m),
        CallError::AlreadyExists(m) => Status::already_exists(m),
        CallError::FailedPrecondition(m) => Status::failed_precondition(m),
        CallError::Unavailable(m) => Status::unavailable(m),
        CallError::Internal(m) => Status::internal(m),
        CallError::NotLeader { ref leader } => {
            let mut status = redirect(leader.clone(), e.to_string());
            status.metadata_mut().insert(
                CALL_METADATA_KEY,
                tonic::metadata::MetadataValue::from_static(NOT_TAKEN),
            );
            status
        }
        CallError::OutcomeUnknown { ref leader } => redirect(leader.clone(), e.to_string()),
    }
}

/// What a call error looks like on the wire, for the core's tests.
#[cfg(test)]
impl CallError {
    pub(crate) fn code(&self) -> tonic::Code {
        status(self.clone()).code()
    }

    pub(crate) fn message(&self) -> String {
        status(self.clone()).message().to_string()
    }
}

/// A stream of the core's messages to a peer, as gRPC items.
fn as_grpc<T>(
    rx: mpsc::Receiver<Result<T, CallError>>,
) -> impl Stream<Item = Result<T, Status>> + Unpin {
    ReceiverStream::new(rx).map(|item| item.map_err(status))
}

/// Handle to the core shared by the three services.
#[derive(Debug, Clone)]
pub(crate) struct CoreHandle {
    tx: mpsc::Sender<Request>,
    next_conn: Arc<AtomicU64>,
}

impl CoreHandle {
    pub(crate) fn new(tx: mpsc::Sender<Request>) -> Self {
        Self {
            tx,
            next_conn: Arc::new(AtomicU64::new(1)),
        }
    }

    async fn ask<T>(
        &self,
        make: impl FnOnce(oneshot::Sender<Result<T, CallError>>) -> Request,
    ) -> Result<T, Status> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(make(reply))
            .await
            .map_err(|_| Status::unavailable("master is shutting down"))?;
        rx.await
            .map_err(|_| Status::unavailable("master is shutting down"))?
            .map_err(|e| pb::bounded_status(status(e)))
    }

    async fn call(&self, call: SchedulerCall) -> Result<CallReply, Status> {
        self.ask(|reply| Request::Call { call, reply }).await
    }

    pub(crate) async fn operator(
        &self,
        call: OperatorCall,
        stale_ok: bool,
    ) -> Result<OperatorReply, Status> {
        self.ask(|reply| Request::Operator {
            call,
            stale_ok,
            reply,
        })
        .await
    }
}

/// A stream that tells the core when it is dropped (the peer went away).
struct Notifying<S> {
    inner: S,
    on_drop: Option<(mpsc::Sender<Request>, Request)>,
}

impl<S: Stream + Unpin> Stream for Notifying<S> {
    type Item = S::Item;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.inner.poll_next_unpin(cx)
    }
}

impl<S> Drop for Notifying<S> {
    fn drop(&mut self) {
        let Some((tx, req)) = self.on_drop.take() else {
            return;
        };
        // Never block in drop. The notification names the stream (stream id
        // or connection id), so a late one cannot affect a newer stream.
        match tx.try_send(req) {
            Ok(()) | Err(mpsc::error::TrySendError::Closed(_)) => {}
            Err(mpsc::error::TrySendError::Full(req)) => {
                // The core is busy: deliver it later, if a runtime is still
                // there (dropped outside one, e.g. at shutdown, the core is
                // gone too, and `tokio::spawn` would panic).
                if let Ok(rt) = tokio::runtime::Handle::try_current() {
                    rt.spawn(async move {
                        let _ = tx.send(req).await;
                    });
                }
            }
        }
    }
}

// ----- scheduler ------------------------------------------------------------

/// The Scheduler service.
#[derive(Debug, Clone)]
pub(crate) struct SchedulerService(pub(crate) CoreHandle);

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

fn empty(reply: CallReply) -> Response<pb::Empty> {
    debug_assert!(matches!(reply, CallReply::Empty));
    Response::new(pb::Empty {})
}

#[tonic::async_trait]
impl pb::scheduler_server::Scheduler for SchedulerService {
    type SubscribeStream = EventStream;

    async fn subscribe(
        &self,
        request: GrpcRequest<pb::SubscribeRequest>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let info = request
            .into_inner()
            .framework
            .ok_or_else(|| Status::invalid_argument("subscribe: framework info is missing"))?;
        let sub = self
            .0
            .ask(|reply| Request::Subscribe { info, reply })
            .await?;
        let closed = Request::Stream(StreamEvent::FrameworkStreamClosed {
            framework: sub.framework.clone(),
            stream_id: sub.stream_id.clone(),
        });
        let stream = Notifying {
            inner: as_grpc(sub.events),
            on_drop: Some((self.0.tx.clone(), closed)),
        };
        Ok(Response::new(Box::pin(stream)))
    }

    async fn accept(
        &self,
        r: GrpcRequest<pb::AcceptRequest>,
    ) -> Result<Response<pb::AcceptResponse>, Status> {
        match self.0.call(SchedulerCall::Accept(r.into_inner())).await? {
            CallReply::Accept(resp) => Ok(Response::new(resp)),
            CallReply::Empty => Ok(Response::new(pb::AcceptResponse::default())),
        }
    }

    async fn decline(
        &self,
        r: GrpcRequest<pb::DeclineRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.0
            .call(SchedulerCall::Decline(r.into_inner()))
            .await
            .map(empty)
    }

    async fn revive(
        &self,
        r: GrpcRequest<pb::ReviveRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.0
            .call(SchedulerCall::Revive(r.into_inner()))
            .await
            .map(empty)
    }

    async fn suppress(
        &self,
        r: GrpcRequest<pb::SuppressRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.0
            .call(SchedulerCall::Suppress(r.into_inner()))
            .await
            .map(empty)
    }

    async fn kill(&self, r: GrpcRequest<pb::KillRequest>) -> Result<Response<pb::Empty>, Status> {
        self.0
            .call(SchedulerCall::Kill(r.into_inner()))
            .await
            .map(empty)
    }

    async fn acknowledge(
        &self,
        r: GrpcRequest<pb::AcknowledgeRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.0
            .call(SchedulerCall::Acknowledge(r.into_inner()))
            .await
            .map(empty)
    }

    async fn reconcile(
        &self,
        r: GrpcRequest<pb::ReconcileRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.0
            .call(SchedulerCall::Reconcile(r.into_inner()))
            .await
            .map(empty)
    }

    async fn teardown(
        &self,
        r: GrpcRequest<pb::TeardownRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.0
            .call(SchedulerCall::Teardown(r.into_inner()))
            .await
            .map(empty)
    }

    async fn update_pending(
        &self,
        r: GrpcRequest<pb::UpdatePendingRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        self.0
            .call(SchedulerCall::UpdatePending(r.into_inner()))
            .await
            .map(empty)
    }
}

// ----- agents ---------------------------------------------------------------

/// The AgentApi service.
#[derive(Debug, Clone)]
pub(crate) struct AgentService(pub(crate) CoreHandle);

type MasterStream = Pin<Box<dyn Stream<Item = Result<pb::MasterMessage, Status>> + Send>>;

#[tonic::async_trait]
impl pb::agent_api_server::AgentApi for AgentService {
    type AttachStream = MasterStream;

    async fn attach(
        &self,
        request: GrpcRequest<Streaming<pb::AgentMessage>>,
    ) -> Result<Response<Self::AttachStream>, Status> {
        let mut inbound = request.into_inner();
        let first = tokio::time::timeout(REGISTER_TIMEOUT, inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Register within 10 seconds"))??
            .ok_or_else(|| Status::invalid_argument("stream ended before Register"))?;
        let Some(pb::agent_message::Message::Register(register)) = first.message else {
            return Err(Status::invalid_argument(
                "the first message must be Register",
            ));
        };
        let conn = self.0.next_conn.fetch_add(1, Ordering::Relaxed);
        let (tx, rx) = mpsc::channel(AGENT_QUEUE);
        self.0
            .ask(|reply| Request::AgentRegister {
                conn,
                register,
                tx,
                reply,
            })
            .await?;

        let core = self.0.tx.clone();
        tokio::spawn(async move {
            loop {
                match inbound.message().await {
                    Ok(Some(message)) => {
                        if core
                            .send(Request::Stream(StreamEvent::AgentMessage { conn, message }))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(e) => {
                        debug!(conn, "agent stream error: {e}");
                        break;
                    }
                }
            }
            let _ = core
                .send(Request::Stream(StreamEvent::AgentClosed { conn }))
                .await;
        });
        let stream = Notifying {
            inner: as_grpc(rx),
            on_drop: Some((
                self.0.tx.clone(),
                Request::Stream(StreamEvent::AgentClosed { conn }),
            )),
        };
        Ok(Response::new(Box::pin(stream)))
    }
}

// ----- operator -------------------------------------------------------------

/// The Operator service.
#[derive(Debug, Clone)]
pub(crate) struct OperatorService(pub(crate) CoreHandle);

pub(crate) fn unexpected() -> Status {
    Status::internal("unexpected reply from the master core")
}

/// The metadata key a caller sets to `stale` to accept a possibly stale
/// read from any master.
pub const READ_METADATA_KEY: &str = "berth-read";

pub(crate) fn stale<T>(r: &GrpcRequest<T>) -> bool {
    r.metadata()
        .get(READ_METADATA_KEY)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("stale"))
}

/// Runs an operator call and extracts the expected reply variant.
macro_rules! answer {
    ($svc:expr, $req:expr, $call:expr, $variant:path) => {{
        let stale_ok = stale(&$req);
        match $svc.0.operator($call, stale_ok).await? {
            $variant(v) => Ok(Response::new(v)),
            _ => Err(unexpected()),
        }
    }};
}

/// Runs an operator call that answers nothing.
macro_rules! done {
    ($svc:expr, $call:expr) => {{
        $svc.0.operator($call, false).await?;
        Ok(Response::new(pb::Empty {}))
    }};
}

#[tonic::async_trait]
impl pb::operator_server::Operator for OperatorService {
    async fn get_state(
        &self,
        r: GrpcRequest<pb::Empty>,
    ) -> Result<Response<pb::ClusterState>, Status> {
        let stale_ok = stale(&r);
        match self.0.operator(OperatorCall::State, stale_ok).await? {
            OperatorReply::State(s) => Ok(Response::new(*s)),
            _ => Err(unexpected()),
        }
    }

    async fn list_agents(
        &self,
        r: GrpcRequest<pb::Empty>,
    ) -> Result<Response<pb::AgentList>, Status> {
        answer!(self, r, OperatorCall::Agents, OperatorReply::Agents)
    }

    async fn list_frameworks(
        &self,
        r: GrpcRequest<pb::Empty>,
    ) -> Result<Response<pb::FrameworkList>, Status> {
        answer!(self, r, OperatorCall::Frameworks, OperatorReply::Frameworks)
    }

    async fn list_tasks(
        &self,
        r: GrpcRequest<pb::ListTasksRequest>,
    ) -> Result<Response<pb::TaskList>, Status> {
        let stale_ok = stale(&r);
        match self
            .0
            .operator(OperatorCall::Tasks(r.into_inner()), stale_ok)
            .await?
        {
            OperatorReply::Tasks(t) => Ok(Response::new(t)),
            _ => Err(unexpected()),
        }
    }

    async fn list_roles(
        &self,
        r: GrpcRequest<pb::Empty>,
    ) -> Result<Response<pb::RoleList>, Status> {
        answer!(self, r, OperatorCall::Roles, OperatorReply::Roles)
    }

    async fn drain_agent(
        &self,
        r: GrpcRequest<pb::AgentRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        done!(self, OperatorCall::Drain(r.into_inner().agent_id))
    }

    async fn reactivate_agent(
        &self,
        r: GrpcRequest<pb::AgentRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        done!(self, OperatorCall::Reactivate(r.into_inner().agent_id))
    }

    async fn get_leader(
        &self,
        r: GrpcRequest<pb::Empty>,
    ) -> Result<Response<pb::LeaderInfo>, Status> {
        answer!(self, r, OperatorCall::Leader, OperatorReply::Leader)
    }

    async fn set_weight(
        &self,
        r: GrpcRequest<pb::SetWeightRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        done!(self, OperatorCall::SetWeight(r.into_inner()))
    }

    async fn set_quota(
        &self,
        r: GrpcRequest<pb::SetQuotaRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        done!(self, OperatorCall::SetQuota(r.into_inner()))
    }

    async fn remove_quota(
        &self,
        r: GrpcRequest<pb::RoleRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        done!(self, OperatorCall::RemoveQuota(r.into_inner().role))
    }

    async fn list_members(
        &self,
        r: GrpcRequest<pb::Empty>,
    ) -> Result<Response<pb::MemberList>, Status> {
        answer!(self, r, OperatorCall::Members, OperatorReply::Members)
    }

    async fn add_member(
        &self,
        r: GrpcRequest<pb::AddMemberRequest>,
    ) -> Result<Response<pb::AddMemberResponse>, Status> {
        match self
            .0
            .operator(OperatorCall::AddMember(r.into_inner()), false)
            .await?
        {
            OperatorReply::AddMember(a) => Ok(Response::new(a)),
            _ => Err(unexpected()),
        }
    }

    async fn remove_member(
        &self,
        r: GrpcRequest<pb::RemoveMemberRequest>,
    ) -> Result<Response<pb::Empty>, Status> {
        done!(self, OperatorCall::RemoveMember(r.into_inner().id))
    }

    async fn teardown_framework(
        &self,
        r: GrpcRequest<pb::FrameworkRef>,
    ) -> Result<Response<pb::Empty>, Status> {
        done!(self, OperatorCall::Teardown(r.into_inner().framework_id))
    }

    async fn list_pending(
        &self,
        r: GrpcRequest<pb::ListPendingRequest>,
    ) -> Result<Response<pb::PendingList>, Status> {
        let stale_ok = stale(&r);
        match self
            .0
            .operator(OperatorCall::Pending(r.into_inner()), stale_ok)
            .await?
        {
            OperatorReply::Pending(p) => Ok(Response::new(p)),
            _ => Err(unexpected()),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn call_errors_become_the_statuses_callers_know() {
        for (e, code) in [
            (
                CallError::invalid_argument("a"),
                tonic::Code::InvalidArgument,
            ),
            (CallError::not_found("a"), tonic::Code::NotFound),
            (CallError::already_exists("a"), tonic::Code::AlreadyExists),
            (
                CallError::failed_precondition("a"),
                tonic::Code::FailedPrecondition,
            ),
            (CallError::unavailable("a"), tonic::Code::Unavailable),
            (CallError::internal("a"), tonic::Code::Internal),
        ] {
            let s = status(e);
            assert_eq!((s.code(), s.message()), (code, "a"));
            assert!(s.metadata().get(LEADER_METADATA_KEY).is_none());
        }
    }

    #[test]
    fn redirects_name_the_leader_in_message_and_metadata() {
        let s = status(CallError::NotLeader {
            leader: Some("10.0.0.1:5050".into()),
        });
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert_eq!(
            s.message(),
            "this master is not the leader; the leader is at 10.0.0.1:5050"
        );
        assert_eq!(
            s.metadata()
                .get(LEADER_METADATA_KEY)
                .and_then(|v| v.to_str().ok()),
            Some("10.0.0.1:5050")
        );
        assert_eq!(
            s.metadata()
                .get(CALL_METADATA_KEY)
                .and_then(|v| v.to_str().ok()),
            Some(NOT_TAKEN),
            "a follower's refusal says the call was not taken"
        );

        let s = status(CallError::NotLeader { leader: None });
        assert_eq!(
            s.message(),
            "this master is not the leader and no leader is known yet"
        );
        assert!(s.metadata().get(LEADER_METADATA_KEY).is_none());

        let s = status(CallError::OutcomeUnknown {
            leader: Some("10.0.0.2:5050".into()),
        });
        assert_eq!(s.code(), tonic::Code::Unavailable);
        assert!(
            s.metadata().get(CALL_METADATA_KEY).is_none(),
            "an outcome unknown is not 'not taken'"
        );
        assert!(
            s.message().starts_with("this master lost leadership")
                && s.message().ends_with(
                    "(reconcile before retrying); this master is not the leader; \
                     the leader is at 10.0.0.2:5050"
                ),
            "{}",
            s.message()
        );
        assert_eq!(
            s.metadata()
                .get(LEADER_METADATA_KEY)
                .and_then(|v| v.to_str().ok()),
            Some("10.0.0.2:5050")
        );
    }
}
