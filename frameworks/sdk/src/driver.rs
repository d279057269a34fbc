//! Subscription and the background driver that keeps it alive.
//!
//! [`subscribe`] makes the first subscription itself, then spawns
//! [`Driver::run`], which reads the master's event stream, drops heartbeats,
//! forwards everything else to [`Events`], watches the heartbeat deadline,
//! and re-subscribes with the same framework id when the stream is lost.
//!
//! Every (re-)subscription first finds the leader by asking all known
//! masters at once ([`berth_proto::leader`]): a follower's hint is never
//! followed blindly, so a hint that still names a leader that just died or
//! froze costs nothing. A frozen leader is noticed when its stream stays
//! silent for [`FrameworkConfig::heartbeat_timeout`].

use std::sync::Arc;
use std::time::Duration;

use berth_proto as pb;
use pb::event::Event as Wire;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tonic::Streaming;

use berth_proto::leader::{Masters, PROBE_INTERVAL};

use crate::connection::{Client, client, masters};
use crate::framework::{Link, Phase, Shared};
use crate::{Event, Events, Framework, FrameworkConfig, SdkError};

/// Events buffered between the driver and the user.
const EVENT_BUFFER: usize = 1024;
/// Heartbeat interval assumed when the master sends a nonsensical one.
const DEFAULT_HEARTBEAT: Duration = Duration::from_secs(15);
/// A stream is lost when nothing arrived for this many heartbeat
/// intervals, even if the configured heartbeat timeout is shorter.
const MISSED_HEARTBEATS: u32 = 2;
/// How long one round of leader finding may take before a re-subscription
/// attempt starts over (the attempts go on until they succeed).
const FIND_ROUND: Duration = Duration::from_secs(30);
/// Most tasks asked about in one reconciliation call.
const RECONCILE_BATCH: usize = 1000;

/// A live subscription: the stream and what `SUBSCRIBED` said.
struct Subscription {
    client: Client,
    /// The leader's address, as the SDK reached it.
    uri: String,
    stream: Streaming<pb::Event>,
    framework_id: String,
    stream_id: String,
    master_id: String,
    heartbeat: Duration,
}

impl Subscription {
    fn link(&self) -> Link {
        Link::Connected {
            client: self.client.clone(),
            stream_id: self.stream_id.clone(),
            master_uri: self.uri.clone(),
            master_id: self.master_id.clone(),
        }
    }
}

/// Why a subscription attempt failed.
enum AttemptError {
    /// Worth trying again (maybe at another address).
    Retry(String),
    /// Never going to work: the framework is gone or the request is bad.
    Fatal(SdkError),
}

/// How long a stream may stay silent before it counts as lost: the
/// configured heartbeat timeout, but never less than [`MISSED_HEARTBEATS`]
/// of the master's heartbeat intervals (a master configured with slow
/// heartbeats would otherwise look dead between two of them).
fn silence_limit(timeout: Duration, interval: Duration) -> Duration {
    timeout.max(interval * MISSED_HEARTBEATS)
}

/// The heartbeat interval from `SUBSCRIBED`, sanitized.
fn heartbeat_interval(seconds: f64) -> Duration {
    if seconds.is_finite() && seconds > 0.0 {
        Duration::from_secs_f64(seconds.clamp(0.01, 3600.0))
    } else {
        DEFAULT_HEARTBEAT
    }
}

/// Sorts an error status of `Subscribe` into retryable and fatal. A
/// redirect needs no special handling: the next attempt asks every master
/// who leads.
fn classify(status: &tonic::Status) -> AttemptError {
    match status.code() {
        tonic::Code::NotFound => {
            AttemptError::Fatal(SdkError::Removed(status.message().to_owned()))
        }
        tonic::Code::InvalidArgument
        | tonic::Code::PermissionDenied
        | tonic::Code::Unauthenticated => AttemptError::Fatal(status.clone().into()),
        _ => AttemptError::Retry(format!(
            "{:?}: {}",
            status.code(),
            berth_proto::leader::status_reason(status)
        )),
    }
}

/// One subscription attempt: find the leader (asking every master until
/// one leads or `deadline`), call `Subscribe` there, wait for
/// `SUBSCRIBED`.
async fn attempt(
    masters: &mut Masters,
    config: &FrameworkConfig,
    id: &str,
    create: bool,
    deadline: Instant,
) -> Result<Subscription, AttemptError> {
    let leader = masters
        .find_leader(deadline)
        .await
        .map_err(|no| AttemptError::Retry(no.to_string()))?;
    let uri = leader.address.clone();
    let mut client = client(&leader);
    let wait = config.call_timeout;
    let request = pb::SubscribeRequest {
        framework: Some(pb::FrameworkInfo {
            create,
            ..config.to_info(id)
        }),
    };
    let mut stream = match tokio::time::timeout(wait, client.subscribe(request)).await {
        Err(_) => return Err(AttemptError::Retry(format!("{uri}: subscribe timed out"))),
        Ok(Err(status)) => return Err(classify(&status)),
        Ok(Ok(response)) => response.into_inner(),
    };
    let first = match tokio::time::timeout(wait, stream.message()).await {
        Err(_) => return Err(AttemptError::Retry(format!("{uri}: no SUBSCRIBED event"))),
        Ok(Err(status)) => return Err(classify(&status)),
        Ok(Ok(None)) => return Err(AttemptError::Retry(format!("{uri}: stream ended at once"))),
        Ok(Ok(Some(event))) => event,
    };
    let subscribed = match first.event {
        Some(Wire::Subscribed(s)) => s,
        Some(Wire::Error(e)) => return Err(AttemptError::Fatal(SdkError::Removed(e.message))),
        other => {
            return Err(AttemptError::Retry(format!(
                "{uri}: first event was not SUBSCRIBED: {other:?}"
            )));
        }
    };
    if subscribed.framework_id.is_empty() || subscribed.stream_id.is_empty() {
        return Err(AttemptError::Retry(format!(
            "{uri}: SUBSCRIBED without framework or stream id"
        )));
    }
    if subscribed.framework_id != id {
        return Err(AttemptError::Fatal(SdkError::Removed(format!(
            "re-subscribed as framework {:?} but the master answered for {:?}",
            id, subscribed.framework_id
        ))));
    }
    Ok(Subscription {
        client,
        uri,
        stream,
        framework_id: subscribed.framework_id,
        stream_id: subscribed.stream_id,
        master_id: subscribed.master_id,
        heartbeat: heartbeat_interval(subscribed.heartbeat_interval_seconds),
    })
}

/// Subscribes a framework to a berth master and returns its call handle and
/// event stream.
///
/// `masters` are `host:port` addresses (or `http://` URIs) of the masters.
/// All of them are asked at once who leads (every 100 ms while none does),
/// for up to [`FrameworkConfig::connect_timeout`], and the framework
/// subscribes to the one that says it leads. Returns once that master
/// answered `SUBSCRIBED`; that event is also the first one on [`Events`].
///
/// Must be called inside a tokio runtime: it spawns the background task
/// that reads events, watches heartbeats and re-subscribes after a
/// disconnect. That task lives as long as the returned [`Events`].
///
/// # Errors
/// - [`SdkError::InvalidConfig`]: the config or an address is invalid.
/// - [`SdkError::Removed`]: the master does not know
///   [`FrameworkConfig::framework_id`] (`NOT_FOUND`; its failover timeout
///   expired).
/// - [`SdkError::Rpc`]: the master refused the subscription
///   ([`ErrorKind::Invalid`](crate::ErrorKind::Invalid)).
/// - [`SdkError::Transport`]: no master led within the connect timeout; the
///   message says what each master answered (e.g. `connection refused`).
pub async fn subscribe(
    masters: Vec<String>,
    config: FrameworkConfig,
) -> Result<(Framework, Events), SdkError> {
    config.validate()?;
    let mut masters = self::masters(&masters)?;
    // A new framework makes its own id, so that a Subscribe whose answer
    // is lost can be sent again: the master knows the id then, and the
    // retry re-subscribes instead of registering a second framework.
    let resubscribing = config.framework_id.is_some();
    let id = config
        .framework_id
        .clone()
        .unwrap_or_else(|| format!("fw-{}", uuid::Uuid::new_v4().simple()));
    let deadline = Instant::now() + config.connect_timeout;
    let sub = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let why = match tokio::time::timeout(
            left,
            attempt(&mut masters, &config, &id, !resubscribing, deadline),
        )
        .await
        {
            Ok(Ok(sub)) => break sub,
            Ok(Err(AttemptError::Fatal(e))) => return Err(e),
            Ok(Err(AttemptError::Retry(why))) => why,
            Err(_) => format!("no subscription within {:?}", config.connect_timeout),
        };
        tracing::debug!(reason = %why, "subscription attempt failed");
        if Instant::now() + PROBE_INTERVAL >= deadline {
            return Err(SdkError::Transport(why));
        }
        tokio::time::sleep(PROBE_INTERVAL).await;
    };
    tracing::info!(
        framework_id = %sub.framework_id,
        master = %sub.uri,
        "subscribed"
    );

    let auto_ack = config.auto_acknowledge;
    let shared = Arc::new(Shared::new(config, sub.framework_id.clone(), sub.link()));
    let framework = Framework {
        shared: Arc::clone(&shared),
    };
    let (tx, rx) = mpsc::channel(EVENT_BUFFER);
    let first = Event::Subscribed {
        framework_id: sub.framework_id.clone(),
        master_id: sub.master_id.clone(),
        resubscribed: resubscribing,
    };
    // The channel is new and empty: this cannot fail for lack of room.
    if tx.try_send(first).is_err() {
        return Err(SdkError::Transport("event channel closed".to_owned()));
    }
    let (ack_tx, acker) = if auto_ack {
        let (ack_tx, ack_rx) = mpsc::unbounded_channel();
        let task = tokio::spawn(acknowledge_in_background(framework.clone(), ack_rx));
        (Some(ack_tx), Some(task))
    } else {
        (None, None)
    };
    let events_shared = Arc::clone(&shared);
    let driver = Driver {
        acker,
        shutdown: shared.phase.subscribe(),
        shared,
        masters,
        tx,
        resumed: resubscribing,
    };
    tokio::spawn(driver.run(sub));
    Ok((framework, Events::new(rx, ack_tx, events_shared)))
}

/// Acknowledgements sent at once by one framework. One at a time is slower
/// than the rate updates arrive at under load (each call waits a round trip
/// through the leader), and every update not acknowledged within the agent's
/// resend delay is sent again; a few calls in flight keep up.
const ACKS_IN_FLIGHT: usize = 32;

/// Sends the acknowledgements queued by [`Events`], up to
/// [`ACKS_IN_FLIGHT`] at a time. Order between tasks does not matter; the
/// updates of one task never overlap here, because an agent sends a task's
/// next update only after the previous one is acknowledged.
async fn acknowledge_in_background(
    framework: Framework,
    mut rx: mpsc::UnboundedReceiver<pb::TaskStatus>,
) {
    let mut calls = tokio::task::JoinSet::new();
    let mut open = true;
    while open || !calls.is_empty() {
        tokio::select! {
            status = rx.recv(), if open && calls.len() < ACKS_IN_FLIGHT => match status {
                Some(status) => {
                    let framework = framework.clone();
                    calls.spawn(async move { acknowledge_one(&framework, &status).await });
                }
                None => open = false,
            },
            Some(_) = calls.join_next(), if !calls.is_empty() => {}
        }
    }
}

/// Sends one queued acknowledgement and counts it as no longer queued.
async fn acknowledge_one(framework: &Framework, status: &pb::TaskStatus) {
    let result = framework.acknowledge(status).await;
    framework
        .shared
        .acks_queued
        .fetch_sub(1, std::sync::atomic::Ordering::AcqRel);
    match result {
        Ok(()) => {}
        // Expected while re-subscribing or after removal.
        Err(e @ (SdkError::NotSubscribed | SdkError::Removed(_))) => tracing::debug!(
            task_id = %status.task_id,
            error = %e,
            "status update not acknowledged; its agent will resend it"
        ),
        Err(e) => tracing::warn!(
            task_id = %status.task_id,
            error = %e,
            "could not acknowledge a status update; its agent will resend it"
        ),
    }
}

/// How reading one stream ended.
enum Pump {
    /// The stream is gone; re-subscribe.
    Lost(String),
    /// The master sent ERROR: the framework is removed.
    Fatal(String),
    /// The user dropped [`Events`] or tore the framework down.
    Stop,
}

/// Completes when the driver should stop: teardown, or [`Events`] dropped.
async fn stopped(phase: &mut watch::Receiver<Phase>, tx: &mpsc::Sender<Event>) {
    tokio::select! {
        _ = phase.wait_for(|p| *p == Phase::Stopped) => {}
        () = tx.closed() => {}
    }
}

/// The background task of one framework.
struct Driver {
    shared: Arc<Shared>,
    masters: Masters,
    tx: mpsc::Sender<Event>,
    shutdown: watch::Receiver<Phase>,
    /// The acknowledger task, if auto-acknowledge is on.
    acker: Option<tokio::task::JoinHandle<()>>,
    /// The first subscription resumed an existing framework.
    resumed: bool,
}

impl Driver {
    async fn run(mut self, mut sub: Subscription) {
        if self.resumed {
            self.reconcile(&sub).await;
        }
        loop {
            let pumped = self.pump(&mut sub.stream, sub.heartbeat).await;
            if !matches!(pumped, Pump::Stop) && self.torn_down().await {
                return self.stop().await;
            }
            match pumped {
                Pump::Lost(why) => {
                    tracing::warn!(
                        framework_id = %self.shared.framework_id,
                        master = %sub.uri,
                        reason = %why,
                        "lost the event stream; re-subscribing"
                    );
                }
                Pump::Fatal(why) => {
                    tracing::error!(
                        framework_id = %self.shared.framework_id,
                        reason = %why,
                        "the master removed the framework"
                    );
                    self.fail(why).await;
                    return;
                }
                Pump::Stop => return self.stop().await,
            }
            self.shared.set_link(Link::Disconnected);
            if !self.emit(Event::Disconnected).await {
                return self.stop().await;
            }
            sub = match self.resubscribe().await {
                Ok(Some(sub)) => sub,
                Ok(None) => return self.stop().await,
                Err(e) => {
                    tracing::error!(
                        framework_id = %self.shared.framework_id,
                        error = %e,
                        "re-subscription refused"
                    );
                    self.fail(e.to_string()).await;
                    return;
                }
            };
            tracing::info!(
                framework_id = %self.shared.framework_id,
                master = %sub.uri,
                master_id = %sub.master_id,
                "re-subscribed"
            );
            // Before the handle can make calls on the new stream, so a
            // newer list from the user is never overtaken by this one.
            self.republish_pending(&sub).await;
            self.reconcile(&sub).await;
            self.shared.set_link(sub.link());
            let event = Event::Subscribed {
                framework_id: sub.framework_id.clone(),
                master_id: sub.master_id.clone(),
                resubscribed: true,
            };
            if !self.emit(event).await {
                return self.stop().await;
            }
        }
    }

    /// Publishes the last pending set again on a new subscription: a new
    /// leader holds none. If the user publishes a newer set meanwhile (its
    /// call fails while disconnected, but the set is remembered), that one
    /// is sent too. Failures are logged; the next re-subscription tries
    /// again.
    async fn republish_pending(&self, sub: &Subscription) {
        // Each round sends the newest set; more rounds than this means the
        // user publishes faster than the master answers.
        for _ in 0..3 {
            let Some((generation, tasks)) = self.shared.pending_snapshot() else {
                return;
            };
            let count = tasks.len();
            let request = pb::UpdatePendingRequest {
                header: Some(pb::CallHeader {
                    framework_id: self.shared.framework_id.clone(),
                    stream_id: sub.stream_id.clone(),
                }),
                tasks,
            };
            let mut client = sub.client.clone();
            let wait = self.shared.config.call_timeout;
            match tokio::time::timeout(wait, client.update_pending(request)).await {
                Ok(Ok(_)) => tracing::debug!(tasks = count, "pending work published again"),
                Ok(Err(status)) => tracing::warn!(
                    code = ?status.code(),
                    message = %status.message(),
                    "could not publish pending work again"
                ),
                Err(_) => tracing::warn!("publishing pending work again timed out"),
            }
            if self.shared.pending_generation() == generation {
                return;
            }
        }
    }

    /// Reconciles on a subscription that resumed the framework (unless
    /// configured off), so that updates the master made while the
    /// framework was away (`TASK_LOST` for a task of a removed agent, say)
    /// are not missed: the answers come as updates on the new stream.
    /// Explicitly for the tasks the SDK believes live (the master answers
    /// `TASK_LOST`, or `TASK_UNKNOWN` when partition-aware, for one it does
    /// not know, which implicit reconciliation would not mention);
    /// implicitly when it knows of none (a framework process started again
    /// with its id), which lists every task the master holds. Failures are
    /// logged; the framework can still call
    /// [`Framework::reconcile`](crate::Framework::reconcile).
    async fn reconcile(&self, sub: &Subscription) {
        if !self.shared.config.reconcile_on_resubscribe {
            return;
        }
        let live = self.shared.live_tasks();
        let batches: Vec<Vec<pb::ReconcileTask>> = if live.is_empty() {
            vec![Vec::new()]
        } else {
            live.chunks(RECONCILE_BATCH).map(<[_]>::to_vec).collect()
        };
        let wait = self.shared.config.call_timeout;
        for tasks in batches {
            let count = tasks.len();
            let request = pb::ReconcileRequest {
                header: Some(pb::CallHeader {
                    framework_id: self.shared.framework_id.clone(),
                    stream_id: sub.stream_id.clone(),
                }),
                tasks,
            };
            let mut client = sub.client.clone();
            match tokio::time::timeout(wait, client.reconcile(request)).await {
                Ok(Ok(_)) => tracing::debug!(tasks = count, "reconciling after subscribing"),
                Ok(Err(status)) => {
                    tracing::warn!(
                        code = ?status.code(),
                        message = %status.message(),
                        "could not reconcile after subscribing"
                    );
                    return;
                }
                Err(_) => {
                    tracing::warn!("reconciling after subscribing timed out");
                    return;
                }
            }
        }
    }

    /// Whether the stream ended because of our own teardown: waits for an
    /// in-flight teardown call to finish, then says whether it succeeded.
    async fn torn_down(&mut self) -> bool {
        let phase = self.shutdown.wait_for(|p| *p != Phase::TearingDown).await;
        !matches!(phase.as_deref(), Ok(Phase::Running))
    }

    /// Marks the framework removed and tells the user, ending the stream.
    async fn fail(&mut self, why: String) {
        self.shared.set_link(Link::Removed(why.clone()));
        // Dropping `self.tx` afterwards ends the stream.
        let _ = self.tx.send(Event::Error(why)).await;
    }

    /// Marks the handle unusable after the user stopped listening.
    /// When [`Events`] was dropped, its last acknowledgement may still be
    /// queued: let the acknowledger finish (bounded by the call timeout)
    /// before the link goes away.
    async fn stop(&mut self) {
        if self.tx.is_closed()
            && let Some(acker) = self.acker.take()
            && tokio::time::timeout(self.shared.config.call_timeout, acker)
                .await
                .is_err()
        {
            tracing::debug!("acknowledger did not finish in time");
        }
        self.shared
            .set_link(Link::Removed("the event stream was closed".to_owned()));
    }

    /// Hands `event` to the user; `false` if the driver should stop.
    async fn emit(&mut self, event: Event) -> bool {
        tokio::select! {
            () = stopped(&mut self.shutdown, &self.tx) => false,
            sent = self.tx.send(event) => sent.is_ok(),
        }
    }

    /// Reads one stream until it ends, fails, stays silent for the
    /// heartbeat timeout (at least [`MISSED_HEARTBEATS`] intervals) or
    /// carries ERROR.
    async fn pump(&mut self, stream: &mut Streaming<pb::Event>, heartbeat: Duration) -> Pump {
        let limit = silence_limit(self.shared.config.heartbeat_timeout, heartbeat);
        loop {
            let next = tokio::select! {
                () = stopped(&mut self.shutdown, &self.tx) => return Pump::Stop,
                next = tokio::time::timeout(limit, stream.message()) => next,
            };
            let wire = match next {
                Err(_) => return Pump::Lost(format!("no event for {limit:?}")),
                Ok(Err(status)) => {
                    return Pump::Lost(format!("{:?}: {}", status.code(), status.message()));
                }
                Ok(Ok(None)) => return Pump::Lost("the master closed the stream".to_owned()),
                Ok(Ok(Some(event))) => event,
            };
            let event = match wire.event {
                Some(Wire::Heartbeat(_)) => continue,
                None => {
                    tracing::debug!("ignoring an event of a kind this SDK does not know");
                    continue;
                }
                Some(Wire::Subscribed(_)) => {
                    tracing::warn!("ignoring a second SUBSCRIBED event on one stream");
                    continue;
                }
                Some(Wire::Error(e)) => return Pump::Fatal(e.message),
                Some(Wire::Offers(o)) => Event::Offers(o.offers),
                Some(Wire::Rescind(r)) => Event::Rescind {
                    offer_id: r.offer_id,
                },
                Some(Wire::Update(status)) => {
                    self.shared.track(&status);
                    Event::Update(status)
                }
                Some(Wire::Failure(f)) => Event::Failure {
                    agent_id: f.agent_id,
                },
            };
            if !self.emit(event).await {
                return Pump::Stop;
            }
        }
    }

    /// Re-subscribes with the framework's id until it works (`Ok(Some)`),
    /// the driver should stop (`Ok(None)`) or the master refuses for good
    /// (`Err`). The first attempt starts at once: it asks every master who
    /// leads, so it does not wait on the master that was just lost.
    async fn resubscribe(&mut self) -> Result<Option<Subscription>, SdkError> {
        let id = self.shared.framework_id.clone();
        loop {
            let deadline = Instant::now() + FIND_ROUND;
            let result = tokio::select! {
                () = stopped(&mut self.shutdown, &self.tx) => return Ok(None),
                r = attempt(&mut self.masters, &self.shared.config, &id, false, deadline) => r,
            };
            match result {
                Ok(sub) => return Ok(Some(sub)),
                Err(AttemptError::Fatal(e)) => return Err(e),
                Err(AttemptError::Retry(why)) => {
                    tracing::debug!(reason = %why, "re-subscription attempt failed");
                }
            }
            tokio::select! {
                () = stopped(&mut self.shutdown, &self.tx) => return Ok(None),
                () = tokio::time::sleep(PROBE_INTERVAL) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn silence_limit_is_the_timeout_or_two_intervals() {
        let s = Duration::from_secs;
        assert_eq!(silence_limit(s(4), s(1)), s(4));
        assert_eq!(silence_limit(s(4), s(5)), s(10));
    }

    #[test]
    fn heartbeat_sanitized() {
        assert_eq!(heartbeat_interval(2.0), Duration::from_secs(2));
        assert_eq!(heartbeat_interval(0.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(f64::NAN), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(-1.0), DEFAULT_HEARTBEAT);
        assert_eq!(heartbeat_interval(1e12), Duration::from_secs(3600));
        assert_eq!(heartbeat_interval(1e-9), Duration::from_millis(10));
    }
}
