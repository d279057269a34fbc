//! The shell's half of the core: every channel, and the execution of the
//! [`Action`]s the handlers push.
//!
//! A request arrives with a oneshot channel for its answer; the shell
//! parks the channel ([`Core::park`]) and hands the handlers a [`Caller`]
//! token instead, so a handler answers with data: an [`Action::Reply`]
//! naming the caller. An agent's stream arrives with its Register and
//! waits here, by connection, for the answer. A stream to a framework or
//! an agent is opened by the answer that accepts its Subscribe or
//! Register, whose payload is the stream's first message (SUBSCRIBED,
//! REGISTERED), and ended by [`Action::CloseFramework`] or
//! [`Action::CloseAgent`], after its last message if it has one
//! (superseded, removed, no longer leader). Sends find the stream open
//! when they are executed; a full or closed stream is handed back to the
//! handlers as its framework or agent disconnecting. The shell also makes
//! the Raft requests handlers ask for (a ReadIndex, a membership change)
//! on tasks of their own, and reports a refusal back as a [`RaftReport`].

use std::marker::PhantomData;

use super::*;

/// A caller waiting for an answer of type `T`: a token the shell resolves
/// to the caller's reply channel. Plain data, so handlers and their
/// continuations hold it and tests compare it.
pub(crate) struct Caller<T> {
    id: u64,
    answer: PhantomData<fn() -> T>,
}

impl<T> Caller<T> {
    /// The caller parked as `id`.
    pub(super) fn new(id: u64) -> Self {
        Self {
            id,
            answer: PhantomData,
        }
    }
}

impl<T> Clone for Caller<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Caller<T> {}

impl<T> PartialEq for Caller<T> {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl<T> Eq for Caller<T> {}

impl<T> std::fmt::Debug for Caller<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Caller({})", self.id)
    }
}

/// The reply channels of the callers of one kind waiting for an answer.
pub(super) struct Waiting<T> {
    next: u64,
    senders: HashMap<u64, oneshot::Sender<Result<T, CallError>>>,
}

impl<T> Default for Waiting<T> {
    fn default() -> Self {
        Self {
            next: 0,
            senders: HashMap::new(),
        }
    }
}

impl<T> Waiting<T> {
    /// Keeps `reply` until the caller is answered; the token names it.
    pub(super) fn park(&mut self, reply: oneshot::Sender<Result<T, CallError>>) -> Caller<T> {
        self.next += 1;
        self.senders.insert(self.next, reply);
        Caller::new(self.next)
    }

    /// Answers a parked caller (a caller that went away is not told).
    fn answer(&mut self, to: Caller<T>, result: Result<T, CallError>) {
        match self.senders.remove(&to.id) {
            Some(reply) => {
                let _ = reply.send(result);
            }
            None => warn!(caller = to.id, "an answer for a caller that is not waiting"),
        }
    }
}

/// A committed subscription, as a handler answers it: executing the
/// answer opens the framework's stream with `first` as its first event.
#[derive(Debug, PartialEq)]
pub(crate) struct Subscribed {
    pub framework: FrameworkId,
    pub first: pb::Subscribed,
}

/// A committed registration, as a handler answers it: executing the answer
/// opens the agent's stream with `first` as its first message.
#[derive(Debug, PartialEq)]
pub(crate) struct Registered {
    pub agent: AgentId,
    pub first: pb::Registered,
}

/// An answer to a caller.
#[derive(Debug, PartialEq)]
pub(super) enum Reply {
    /// To a Subscribe. Success opens the framework's stream: SUBSCRIBED
    /// first, then whatever is sent to the framework; the caller gets the
    /// receiving end.
    Subscribe {
        to: Caller<Subscription>,
        result: Result<Subscribed, CallError>,
    },
    /// To a scheduler call.
    Call {
        to: Caller<CallReply>,
        result: Result<CallReply, CallError>,
    },
    /// To the Register of the agent on connection `conn`. Success opens its
    /// stream (REGISTERED first); an error ends it.
    Register {
        conn: u64,
        result: Result<Registered, CallError>,
    },
    /// To an operator call.
    Operator {
        to: Caller<OperatorReply>,
        result: Result<OperatorReply, CallError>,
    },
}

/// A request the shell made to Raft for a handler that Raft refused (what
/// it accepts comes back on the applied channel).
#[derive(Debug)]
pub(super) enum RaftReport {
    /// The ReadIndex with this context (this master no longer leads).
    ReadRefused { ctx: Vec<u8> },
    /// The membership change `seq`.
    MembershipRefused { seq: u64, error: ProposeError },
}

/// Applied key-value commands a watcher may fall behind by before its
/// watch ends (it watches again).
const KV_WATCH_QUEUE: usize = 4096;

/// The channels the shell holds; handlers never touch them.
pub(super) struct Io {
    /// Open framework streams: each framework's stream id and sender.
    frameworks: HashMap<FrameworkId, (String, EventTx)>,
    /// Open agent streams: each agent's connection and sender.
    agents: HashMap<AgentId, (u64, AgentTx)>,
    /// Agents' streams from their Register to its answer, with the
    /// caller, by connection.
    registering: HashMap<u64, (AgentTx, oneshot::Sender<Result<(), CallError>>)>,
    pub(super) subscribers: Waiting<Subscription>,
    pub(super) calls: Waiting<CallReply>,
    pub(super) operators: Waiting<OperatorReply>,
    /// The key-value store's changes, for the watches of every caller
    /// (each subscribes; nobody listening is fine).
    pub(super) kv_events: tokio::sync::broadcast::Sender<Arc<KvBatch>>,
    /// Refusals of the Raft requests the shell made, for the run loop.
    reports: mpsc::UnboundedSender<RaftReport>,
    pub(super) reports_rx: mpsc::UnboundedReceiver<RaftReport>,
}

impl Io {
    pub(super) fn new() -> Self {
        let (reports, reports_rx) = mpsc::unbounded_channel();
        Self {
            frameworks: HashMap::new(),
            agents: HashMap::new(),
            registering: HashMap::new(),
            subscribers: Waiting::default(),
            calls: Waiting::default(),
            operators: Waiting::default(),
            kv_events: tokio::sync::broadcast::channel(KV_WATCH_QUEUE).0,
            reports,
            reports_rx,
        }
    }
}

impl Core {
    /// Parks a request's reply channel (and an agent's stream) with the
    /// shell, turning the request into the [`Input`] the handlers take.
    /// `None` when the shell answered it itself: a Register whose stream
    /// closed before it was handled.
    pub(super) fn park(&mut self, req: Request) -> Option<Input> {
        Some(match req {
            Request::Subscribe { info, reply } => {
                Input::Subscribe(info, self.io.subscribers.park(reply))
            }
            Request::Call { call, reply } => Input::Call(call, self.io.calls.park(reply)),
            Request::AgentRegister {
                conn,
                register,
                tx,
                reply,
            } => {
                if tx.is_closed() {
                    let _ = reply.send(Err(CallError::unavailable(
                        "agent stream closed during registration",
                    )));
                    return None;
                }
                self.io.registering.insert(conn, (tx, reply));
                Input::AgentRegister { conn, register }
            }
            Request::Operator {
                call,
                stale_ok,
                reply,
            } => Input::Operator(call, stale_ok, self.io.operators.park(reply)),
            Request::Stream(event) => Input::Stream(event),
        })
    }

    /// Answers a caller: pushed as an [`Action::Reply`], executed once the
    /// handler returns.
    pub(super) fn reply(&mut self, reply: Reply) {
        self.actions.push(Action::Reply(reply));
    }

    /// Executes the IO the handlers asked for, in order. Executing one can
    /// push more (a send to a full stream disconnects its framework or
    /// agent, which may send in turn); those run next, before the rest, in
    /// the order a handler sending inline would have sent them.
    pub(super) fn execute_actions(&mut self) {
        let mut queue: VecDeque<Action> = std::mem::take(&mut self.actions).into();
        while let Some(action) = queue.pop_front() {
            match action {
                Action::ToFramework { framework, event } => self.deliver_event(&framework, event),
                Action::ToAgent { agent, message } => self.deliver_to_agent(&agent, message),
                Action::Reply(reply) => self.execute_reply(reply),
                Action::CloseFramework {
                    framework,
                    stream_id,
                    last,
                } => {
                    if self
                        .io
                        .frameworks
                        .get(&framework)
                        .is_some_and(|(open, _)| *open == stream_id)
                        && let Some((_, tx)) = self.io.frameworks.remove(&framework)
                        && let Some(last) = last
                    {
                        // The stream ends when `tx` drops, after `last`.
                        let _ = tx.try_send(last.map(event));
                    }
                }
                Action::CloseAgent { agent, conn } => {
                    if self.io.agents.get(&agent).is_some_and(|(c, _)| *c == conn) {
                        self.io.agents.remove(&agent);
                    }
                }
                Action::ReadIndex { ctx } => {
                    let (raft, reports) = (self.raft.clone(), self.io.reports.clone());
                    tokio::spawn(async move {
                        if raft.read_index(ctx.clone()).await.is_err() {
                            let _ = reports.send(RaftReport::ReadRefused { ctx });
                        }
                    });
                }
                Action::ChangeMembership {
                    seq,
                    change,
                    context,
                } => {
                    let (raft, reports) = (self.raft.clone(), self.io.reports.clone());
                    tokio::spawn(async move {
                        if let Err(error) = raft.propose_conf_change(change, context).await {
                            let _ = reports.send(RaftReport::MembershipRefused { seq, error });
                        }
                    });
                }
                Action::KvChanged(batch) => {
                    // No watcher listening is not an error.
                    let _ = self.io.kv_events.send(batch);
                }
                Action::Snapshot { index, data } => {
                    let raft = self.raft.clone();
                    tokio::spawn(async move {
                        if let Err(e) = raft.compact(index, data).await {
                            warn!(index, "snapshot failed (the log keeps everything): {e}");
                        }
                    });
                }
            }
            for pushed in std::mem::take(&mut self.actions).into_iter().rev() {
                queue.push_front(pushed);
            }
        }
    }

    /// Executes an [`Action::Reply`]; an answer that accepts a Subscribe
    /// or a Register opens the stream first.
    fn execute_reply(&mut self, reply: Reply) {
        match reply {
            Reply::Subscribe { to, result } => {
                let result = result.map(|s| {
                    let (tx, events) = mpsc::channel(FRAMEWORK_QUEUE);
                    let stream_id = s.first.stream_id.clone();
                    // A new channel has room for its first event.
                    let _ = tx.try_send(Ok(event(pb::event::Event::Subscribed(s.first))));
                    self.io
                        .frameworks
                        .insert(s.framework.clone(), (stream_id.clone(), tx));
                    Subscription {
                        framework: s.framework,
                        stream_id,
                        events,
                    }
                });
                self.io.subscribers.answer(to, result);
            }
            Reply::Call { to, result } => self.io.calls.answer(to, result),
            Reply::Operator { to, result } => self.io.operators.answer(to, result),
            Reply::Register { conn, result } => {
                let Some((tx, reply)) = self.io.registering.remove(&conn) else {
                    warn!(conn, "an answer for a registration that is not waiting");
                    return;
                };
                let result = result.and_then(|r| self.open_agent_stream(conn, r, tx));
                let _ = reply.send(result);
            }
        }
    }

    /// Opens an agent's stream with its REGISTERED. If the stream closed
    /// meanwhile, the agent's connection closes: it is registered but not
    /// connected, and has until its ping timeout to come back.
    fn open_agent_stream(
        &mut self,
        conn: u64,
        registered: Registered,
        tx: AgentTx,
    ) -> Result<(), CallError> {
        let first = pb::MasterMessage {
            message: Some(pb::master_message::Message::Registered(registered.first)),
        };
        if tx.try_send(Ok(first)).is_err() {
            self.agent_closed(conn);
            return Err(CallError::unavailable(
                "agent stream closed during registration",
            ));
        }
        self.io.agents.insert(registered.agent, (conn, tx));
        Ok(())
    }

    /// Executes an [`Action::ToFramework`]: queues the event on the
    /// framework's open stream (dropped if it has none); a full or closed
    /// stream disconnects the framework.
    fn deliver_event(&mut self, framework: &FrameworkId, ev: pb::event::Event) {
        let Some((stream_id, tx)) = self.io.frameworks.get(framework) else {
            return;
        };
        if let Err(e) = tx.try_send(Ok(event(ev))) {
            warn!(framework = %framework, "event stream {}; dropping the connection", match e {
                mpsc::error::TrySendError::Full(_) => "is full",
                mpsc::error::TrySendError::Closed(_) => "is closed",
            });
            let stream_id = stream_id.clone();
            // Dropping the sender ends the stream; the framework re-subscribes.
            self.io.frameworks.remove(framework);
            self.framework_stream_failed(framework, &stream_id);
        }
    }

    /// Executes an [`Action::ToAgent`]: queues the message on the agent's
    /// open stream (dropped if it has none); a full or closed stream counts
    /// as the agent's connection closing.
    fn deliver_to_agent(&mut self, agent: &AgentId, message: pb::master_message::Message) {
        let Some((conn, tx)) = self.io.agents.get(agent) else {
            debug!(agent = %agent, "agent not connected; message dropped");
            return;
        };
        let message = pb::MasterMessage {
            message: Some(message),
        };
        if tx.try_send(Ok(message)).is_err() {
            warn!(agent = %agent, "agent stream full or closed; dropping the connection");
            let conn = *conn;
            self.io.agents.remove(agent);
            self.agent_closed(conn);
        }
    }
}
