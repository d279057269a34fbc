//! [`Event`] and the [`Events`] stream.

use std::fmt;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::task::{Context, Poll};

use berth_proto as pb;
use futures::Stream;
use tokio::sync::mpsc;

use crate::framework::Shared;

/// Something that happened to the framework, as delivered by [`Events`].
///
/// Heartbeats are handled inside the SDK and never appear here.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// The SDK is subscribed. The first event of every [`Events`] stream,
    /// and again after every successful re-subscription.
    ///
    /// After a re-subscription every offer held before is void (the master
    /// may have restarted or failed over); forget them. What happened to
    /// your tasks meanwhile arrives as updates: the SDK has asked for the
    /// state of every task (see
    /// [`FrameworkConfig::reconcile_on_resubscribe`](crate::FrameworkConfig::reconcile_on_resubscribe)).
    Subscribed {
        /// The framework id (the same for the life of the framework).
        framework_id: String,
        /// The id of the master serving the stream.
        master_id: String,
        /// Whether the subscription resumed an existing framework (after a
        /// disconnect, or with [`FrameworkConfig::framework_id`](crate::FrameworkConfig::framework_id)
        /// set) rather than registering a new one.
        resubscribed: bool,
    },
    /// New resource offers. Use them with
    /// [`Framework::accept`](crate::Framework::accept) or return them with
    /// [`Framework::decline`](crate::Framework::decline).
    Offers(Vec<pb::Offer>),
    /// An offer was withdrawn; accepting it fails.
    Rescind {
        /// The withdrawn offer.
        offer_id: String,
    },
    /// A task status update. Updates are delivered at least once: the same
    /// update (same uuid) may arrive twice.
    Update(pb::TaskStatus),
    /// An agent was removed; its tasks are lost (their updates follow).
    Failure {
        /// The removed agent.
        agent_id: String,
    },
    /// Fatal: the master removed the framework (torn down, failover timeout
    /// expired, or superseded by a newer instance). The stream ends after
    /// this event and every call fails with
    /// [`SdkError::Removed`](crate::SdkError::Removed).
    Error(String),
    /// The event stream to the master was lost (stream ended, error, or no
    /// heartbeat for three intervals). The SDK is re-subscribing with the
    /// same framework id; until the next [`Event::Subscribed`], calls fail
    /// with [`SdkError::NotSubscribed`](crate::SdkError::NotSubscribed) and
    /// held offers are void.
    Disconnected,
}

/// The framework's event stream, returned by [`subscribe`](crate::subscribe).
///
/// Read it with [`Events::next`] or as a [`futures::Stream`]. It ends
/// (`None`) after [`Event::Error`], after a successful
/// [`Framework::teardown`](crate::Framework::teardown), or when the
/// background task stops. Dropping it stops the SDK's background task:
/// the subscription is closed and calls fail with
/// [`SdkError::Removed`](crate::SdkError::Removed).
///
/// # Automatic acknowledgement
///
/// With [`FrameworkConfig::auto_acknowledge`](crate::FrameworkConfig::auto_acknowledge)
/// on (the default), an [`Event::Update`] carrying a uuid is acknowledged
/// when you ask for the *next* event (or drop the stream) — that is, after
/// you have handled it, never before you could see it. The acknowledgement
/// is sent by a background task; if it cannot be delivered (disconnected),
/// the agent resends the update and you see it again.
pub struct Events {
    rx: mpsc::Receiver<Event>,
    /// Where updates to acknowledge go; `None` with auto-acknowledge off.
    acker: Option<mpsc::UnboundedSender<pb::TaskStatus>>,
    /// The last update handed out, acknowledged on the next poll.
    pending_ack: Option<pb::TaskStatus>,
    /// For the count of queued acknowledgements.
    shared: Arc<Shared>,
}

impl fmt::Debug for Events {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Events")
            .field("auto_acknowledge", &self.acker.is_some())
            .field(
                "pending_ack",
                &self.pending_ack.as_ref().map(|s| &s.task_id),
            )
            .finish_non_exhaustive()
    }
}

impl Events {
    pub(crate) fn new(
        rx: mpsc::Receiver<Event>,
        acker: Option<mpsc::UnboundedSender<pb::TaskStatus>>,
        shared: Arc<Shared>,
    ) -> Self {
        Events {
            rx,
            acker,
            pending_ack: None,
            shared,
        }
    }

    /// The next event, or `None` when the stream has ended.
    ///
    /// Cancel-safe: dropping the future loses no event.
    pub async fn next(&mut self) -> Option<Event> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// Hands the pending acknowledgement to the background acker.
    fn flush_ack(&mut self) {
        if let (Some(status), Some(acker)) = (self.pending_ack.take(), &self.acker) {
            self.shared.acks_queued.fetch_add(1, Ordering::AcqRel);
            if acker.send(status).is_err() {
                self.shared.acks_queued.fetch_sub(1, Ordering::AcqRel);
                tracing::debug!("acknowledger gone; the agent will resend the update");
            }
        }
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.flush_ack();
        let event = std::task::ready!(self.rx.poll_recv(cx));
        self.hold_ack(event.as_ref());
        Poll::Ready(event)
    }

    /// The next event if one has arrived already, without waiting (`None`
    /// also when the stream ended: [`Events::next`] says so).
    pub(crate) fn try_next(&mut self) -> Option<Event> {
        self.flush_ack();
        let event = self.rx.try_recv().ok();
        self.hold_ack(event.as_ref());
        event
    }

    /// Keeps an update handed out, to acknowledge on the next poll.
    fn hold_ack(&mut self, event: Option<&Event>) {
        if let Some(Event::Update(status)) = event
            && self.acker.is_some()
            && !status.uuid.is_empty()
        {
            self.pending_ack = Some(status.clone());
        }
    }
}

impl Stream for Events {
    type Item = Event;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Event>> {
        self.get_mut().poll_event(cx)
    }
}

impl Drop for Events {
    fn drop(&mut self) {
        self.flush_ack();
    }
}
