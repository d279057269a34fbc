//! Simulated frameworks, written against the public SDK (`berth_sdk`):
//! subscribe, pack short tasks into offers (`pack_offers`, first fit),
//! accept one offer per call, decline the rest with a short refuse filter,
//! keep at most `in_flight` tasks launched and not yet terminal (suppressing
//! offers while full and reviving when half the room is free, unless told
//! not to), and let the SDK acknowledge every status update.
//!
//! Each launch records its offer→launch latency: from the moment the
//! `Offers` event was read to the moment the master answered the accept
//! (the launch committed by a quorum and sent to the agent).

use std::collections::HashMap;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use berth_proto as pb;
use berth_sdk::{Event, Events, Framework, OfferId, Roles, SdkError, Strategy, pack_offers};
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;

use crate::agents::DURATION_LABEL;
use crate::stats::{C, Counters, Rng};

/// Refuse filter for offers declined while draining: long enough that
/// nothing comes back before the run ends.
const DRAIN_REFUSE: Duration = Duration::from_secs(3600);

/// Where the run is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Launch tasks.
    Launch,
    /// Launch nothing more; wait for the tasks in flight to finish.
    Drain,
    /// Stop reading events and return.
    Stop,
}

/// The measured window: launches whose offer arrived at or after `.0` and
/// whose accept was answered by `.1` count towards the latencies.
pub(crate) type Window = Arc<OnceLock<(Instant, Instant)>>;

/// What every simulated framework shares.
#[derive(Debug)]
pub(crate) struct Workload {
    /// The task every launch copies (id, duration and agent filled in).
    pub(crate) template: pb::TaskInfo,
    /// Task durations, uniform in this range of milliseconds.
    pub(crate) duration_ms: (u64, u64),
    /// Tasks launched and not yet terminal, per framework.
    pub(crate) in_flight: usize,
    /// Suppress offers while full; revive at [`revive_at`] free.
    pub(crate) suppress: bool,
    /// Refuse filter of declined offers and of accepted offers' remainder.
    pub(crate) refuse: Duration,
    pub(crate) counters: Arc<Counters>,
    pub(crate) window: Window,
}

/// What one framework measured.
#[derive(Debug, Default)]
pub(crate) struct FrameworkResult {
    /// Offer→launch latencies of the launches inside the window, one per
    /// task.
    pub(crate) latencies: Vec<Duration>,
    /// Tasks still in flight when the framework stopped.
    pub(crate) left_in_flight: usize,
    /// The first call error, for the report.
    pub(crate) first_error: Option<String>,
}

/// The answer to one accept, sent back to the framework's loop.
struct AcceptDone {
    task_ids: Vec<String>,
    received: Instant,
    result: Result<Vec<String>, SdkError>,
    answered: Instant,
}

/// A task launched (or being launched) by this framework.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tracked {
    Accepting,
    Launched,
    Running,
}

/// How much room a full framework waits for before it revives offers: half
/// its tasks in flight (at least one), so that it does not suppress and
/// revive for every task that ends.
pub(crate) fn revive_at(in_flight: usize) -> usize {
    (in_flight / 2).max(1)
}

/// Whether a framework with `in_flight` tasks of at most `cap` wants offers,
/// given whether it wanted them so far.
fn wants_offers(wanted: bool, in_flight: usize, cap: usize) -> bool {
    let room = cap.saturating_sub(in_flight);
    if wanted {
        room > 0
    } else {
        room >= revive_at(cap)
    }
}

/// Sends the framework's wish for offers to the master, one call at a
/// time and in order (a revive must not overtake the suppress before it);
/// wishes that change while a call is out are folded into the next call.
async fn offer_control(
    framework: Framework,
    mut want: watch::Receiver<bool>,
    errors: mpsc::UnboundedSender<String>,
    counters: Arc<Counters>,
) {
    let mut sent = true;
    while want.changed().await.is_ok() {
        let now = *want.borrow_and_update();
        if now == sent {
            continue;
        }
        let result = if now {
            counters.inc(C::Revives);
            framework.revive(Roles::All).await
        } else {
            counters.inc(C::Suppresses);
            framework.suppress(Roles::All).await
        };
        match result {
            Ok(()) => sent = now,
            Err(e) => {
                counters.inc(C::CallErrors);
                let _ = errors.send(format!("suppress/revive: {e}"));
            }
        }
    }
}

/// One framework's event loop; returns when `phase` becomes
/// [`Phase::Stop`] or the event stream ends.
pub(crate) async fn run(
    index: usize,
    framework: Framework,
    mut events: Events,
    work: Arc<Workload>,
    mut phase: watch::Receiver<Phase>,
    drained: mpsc::UnboundedSender<usize>,
) -> FrameworkResult {
    let counters = Arc::clone(&work.counters);
    let mut out = FrameworkResult::default();
    let mut rng = Rng::new(index as u64 + 1);
    let mut tasks: HashMap<String, Tracked> = HashMap::new();
    let mut seq = 0u64;
    let (done_tx, mut done_rx) = mpsc::unbounded_channel::<AcceptDone>();
    let (err_tx, mut err_rx) = mpsc::unbounded_channel::<String>();
    let mut draining = false;
    let mut reported_drained = false;
    let (want_tx, want_rx) = watch::channel(true);
    tokio::spawn(offer_control(
        framework.clone(),
        want_rx,
        err_tx.clone(),
        Arc::clone(&counters),
    ));
    loop {
        if work.suppress && !draining {
            let wanted = *want_tx.borrow();
            let now = wants_offers(wanted, tasks.len(), work.in_flight);
            if now != wanted {
                let _ = want_tx.send(now);
            }
        }
        if draining && !reported_drained && tasks.is_empty() {
            reported_drained = true;
            let _ = drained.send(index);
        }
        tokio::select! {
            changed = phase.changed() => {
                let now = *phase.borrow_and_update();
                if changed.is_err() || now == Phase::Stop {
                    break;
                }
                if now == Phase::Drain && !draining {
                    draining = true;
                    // No more offers; those held are declined as they come.
                    let _ = want_tx.send(false);
                }
            }
            Some(done) = done_rx.recv() => {
                match done.result {
                    Ok(launched) => {
                        counters.add(C::Launched, launched.len() as u64);
                        let latency = done.answered - done.received;
                        if let Some((start, end)) = work.window.get()
                            && done.received >= *start
                            && done.answered <= *end
                        {
                            out.latencies
                                .extend(std::iter::repeat_n(latency, launched.len()));
                        }
                        for id in &launched {
                            if let Some(t) = tasks.get_mut(id)
                                && *t == Tracked::Accepting
                            {
                                *t = Tracked::Launched;
                            }
                        }
                        // Asked for but not launched: never in flight.
                        for id in done.task_ids.iter().filter(|id| !launched.contains(id)) {
                            if tasks.get(id) == Some(&Tracked::Accepting) {
                                tasks.remove(id);
                            }
                        }
                    }
                    Err(e) => {
                        counters.inc(C::CallErrors);
                        out.first_error
                            .get_or_insert_with(|| format!("accept: {e}"));
                        for id in &done.task_ids {
                            tasks.remove(id);
                        }
                    }
                }
            }
            Some(e) = err_rx.recv() => {
                out.first_error.get_or_insert(e);
            }
            event = events.next() => {
                let Some(event) = event else {
                    counters.inc(C::FrameworkErrors);
                    out.first_error
                        .get_or_insert_with(|| "the event stream ended".into());
                    break;
                };
                match event {
                    Event::Offers(offers) => {
                        let received = Instant::now();
                        counters.add(C::Offers, offers.len() as u64);
                        if draining {
                            let ids = offer_ids(offers.into_iter().map(|o| o.id).collect());
                            decline(&framework, ids, DRAIN_REFUSE, &err_tx, &counters);
                            continue;
                        }
                        let room = work.in_flight.saturating_sub(tasks.len());
                        let batch: Vec<pb::TaskInfo> = (0..room)
                            .map(|_| {
                                seq += 1;
                                let ms = rng.between(work.duration_ms.0, work.duration_ms.1);
                                new_task(&work.template, index, seq, ms)
                            })
                            .collect();
                        let plan = match pack_offers(&offers, batch, Strategy::FirstFit) {
                            Ok(p) => p,
                            Err(e) => {
                                counters.inc(C::CallErrors);
                                out.first_error.get_or_insert_with(|| format!("pack: {e}"));
                                berth_sdk::PackPlan {
                                    unused: offer_ids(offers.iter().map(|o| o.id.clone()).collect()),
                                    ..Default::default()
                                }
                            }
                        };
                        for (offer_id, launch) in plan.launches {
                            let task_ids: Vec<String> =
                                launch.iter().map(|t| t.task_id.clone()).collect();
                            for id in &task_ids {
                                tasks.insert(id.clone(), Tracked::Accepting);
                            }
                            counters.inc(C::AcceptCalls);
                            let f = framework.clone();
                            let done_tx = done_tx.clone();
                            let refuse = work.refuse;
                            tokio::spawn(async move {
                                let result = f
                                    .accept(vec![offer_id], launch, Some(refuse))
                                    .await
                                    .map(|ids| ids.into_iter().map(String::from).collect());
                                let _ = done_tx.send(AcceptDone {
                                    task_ids,
                                    received,
                                    result,
                                    answered: Instant::now(),
                                });
                            });
                        }
                        if !plan.unused.is_empty() {
                            decline(&framework, plan.unused, work.refuse, &err_tx, &counters);
                        }
                    }
                    Event::Update(status) => on_update(&status, &mut tasks, &counters),
                    Event::Subscribed { resubscribed: true, .. } => {
                        // After a lost stream (a leader change): ask for the
                        // state of every task, as a framework should.
                        spawn_call(&framework, &err_tx, &counters, |f| async move {
                            f.reconcile_all().await
                        });
                    }
                    Event::Rescind { .. } | Event::Subscribed { .. } | Event::Failure { .. } => {}
                    Event::Disconnected => {
                        counters.inc(C::FrameworkErrors);
                        out.first_error
                            .get_or_insert_with(|| "the event stream was lost".into());
                    }
                    Event::Error(why) => {
                        counters.inc(C::FrameworkErrors);
                        out.first_error.get_or_insert(format!("removed: {why}"));
                        break;
                    }
                }
            }
        }
    }
    out.left_in_flight = tasks.len();
    out
}

/// Tracks a task's status update.
fn on_update(status: &pb::TaskStatus, tasks: &mut HashMap<String, Tracked>, counters: &Counters) {
    let state = status.state();
    match state {
        pb::TaskState::TaskStaging | pb::TaskState::TaskStarting => {}
        pb::TaskState::TaskRunning => {
            if let Some(t) = tasks.get_mut(&status.task_id)
                && *t != Tracked::Running
            {
                *t = Tracked::Running;
                counters.inc(C::Running);
            }
        }
        pb::TaskState::TaskFinished => {
            // Updates arrive at least once: count each task once.
            if tasks.remove(&status.task_id).is_some() {
                counters.inc(C::Finished);
            }
        }
        s if s.is_terminal() => {
            if tasks.remove(&status.task_id).is_some() {
                counters.inc(C::Unexpected);
            }
        }
        // UNREACHABLE, KILLING, UNKNOWN: not expected here.
        _ => counters.inc(C::Unexpected),
    }
}

/// A copy of `template` with its own id and duration.
fn new_task(template: &pb::TaskInfo, framework: usize, seq: u64, ms: u64) -> pb::TaskInfo {
    let mut task = template.clone();
    task.task_id = format!("f{framework}-t{seq}");
    task.labels.push(pb::Label {
        key: DURATION_LABEL.into(),
        value: ms.to_string(),
    });
    task
}

fn decline(
    framework: &Framework,
    ids: Vec<OfferId>,
    refuse: Duration,
    errors: &mpsc::UnboundedSender<String>,
    counters: &Arc<Counters>,
) {
    counters.add(C::OffersDeclined, ids.len() as u64);
    spawn_call(framework, errors, counters, move |f| async move {
        f.decline(ids, Some(refuse)).await
    });
}

/// The master's offer ids as the SDK takes them (one that is not an id
/// cannot name an offer, and is left out).
fn offer_ids(ids: Vec<String>) -> Vec<OfferId> {
    ids.into_iter()
        .filter_map(|id| OfferId::new(id).ok())
        .collect()
}

/// Runs a call in the background; a failure is counted and reported.
fn spawn_call<F, Fut>(
    framework: &Framework,
    errors: &mpsc::UnboundedSender<String>,
    counters: &Arc<Counters>,
    call: F,
) where
    F: FnOnce(Framework) -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<(), SdkError>> + Send,
{
    let f = framework.clone();
    let errors = errors.clone();
    let counters = Arc::clone(counters);
    tokio::spawn(async move {
        if let Err(e) = call(f).await {
            counters.inc(C::CallErrors);
            let _ = errors.send(e.to_string());
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn updates_count_each_task_once() {
        let counters = Counters::default();
        let mut tasks = HashMap::from([
            ("a".to_string(), Tracked::Launched),
            ("b".to_string(), Tracked::Accepting),
        ]);
        let status = |id: &str, state: pb::TaskState| pb::TaskStatus {
            task_id: id.into(),
            state: state as i32,
            ..Default::default()
        };
        for _ in 0..2 {
            on_update(
                &status("a", pb::TaskState::TaskRunning),
                &mut tasks,
                &counters,
            );
        }
        // A task whose accept answer has not been read yet still counts.
        on_update(
            &status("b", pb::TaskState::TaskRunning),
            &mut tasks,
            &counters,
        );
        assert_eq!(counters.get(C::Running), 2);
        for _ in 0..2 {
            on_update(
                &status("a", pb::TaskState::TaskFinished),
                &mut tasks,
                &counters,
            );
        }
        on_update(&status("b", pb::TaskState::TaskLost), &mut tasks, &counters);
        on_update(
            &status("zz", pb::TaskState::TaskFinished),
            &mut tasks,
            &counters,
        );
        assert_eq!(counters.get(C::Finished), 1);
        assert_eq!(counters.get(C::Unexpected), 1);
        assert!(tasks.is_empty());
    }

    #[test]
    fn tasks_get_their_id_and_duration() {
        let template = berth_sdk::shell_task("x", "load", "true", "cpus:0.1;mem:32").unwrap();
        let t = new_task(&template, 3, 17, 42);
        assert_eq!(t.task_id, "f3-t17");
        assert_eq!(
            crate::agents::task_duration(&t),
            Some(Duration::from_millis(42))
        );
        assert_eq!(t.resources, template.resources);
    }

    #[test]
    fn full_frameworks_suppress_and_revive_at_half_room() {
        assert_eq!(revive_at(50), 25);
        assert_eq!(revive_at(1), 1);
        // Wanting offers: keep wanting until full.
        assert!(wants_offers(true, 49, 50));
        assert!(!wants_offers(true, 50, 50));
        // Suppressed: wait for half the room.
        assert!(!wants_offers(false, 26, 50));
        assert!(wants_offers(false, 25, 50));
        assert!(wants_offers(false, 0, 1));
        assert!(!wants_offers(false, 1, 1));
    }
}
