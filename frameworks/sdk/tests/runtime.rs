//! The framework runtime end to end against the fake master: launches into
//! offers, acknowledges after the framework's hook, tears down when the
//! framework says so, never re-sends an accept of unknown outcome, and
//! stops (sending nothing) when the framework cannot save a launch.

// Test code: a panic is the failure report.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto as pb;
use berth_sdk::runtime::{Control, Intent, Runtime, Scheduler, Stopped, Wanted};
use berth_sdk::{BoxError, FrameworkConfig, RuntimeError, shell_task};
use pb::TaskState;
use pb::event::Event as Wire;
use support::{Call, FakeMaster, agent_update, master_update, wait_until};
use tonic::Code;

/// What the test framework did, for the test to look at.
#[derive(Debug, Default)]
struct Journal {
    /// Task ids saved as possibly launched, in order.
    saved: Vec<String>,
    /// Updates seen: task id and state.
    updates: Vec<(String, TaskState)>,
    framework_id: Option<String>,
}

/// Runs its tasks once each; tears down when all ended.
struct Jobs {
    tasks: Vec<pb::TaskInfo>,
    ended: HashMap<String, TaskState>,
    journal: Arc<Mutex<Journal>>,
    /// `before_launch` fails (a full disk).
    cannot_save: bool,
}

impl Jobs {
    fn new(ids: &[&str], journal: &Arc<Mutex<Journal>>) -> Jobs {
        Jobs {
            tasks: ids
                .iter()
                .map(|id| shell_task(*id, *id, "true", "cpus:1;mem:32").unwrap())
                .collect(),
            ended: HashMap::new(),
            journal: Arc::clone(journal),
            cannot_save: false,
        }
    }
}

impl Scheduler for Jobs {
    fn intent(&self) -> Intent {
        Intent::new(
            self.tasks
                .iter()
                .filter(|t| !self.ended.contains_key(&t.task_id))
                .cloned()
                .map(Wanted::new)
                .collect(),
        )
    }

    async fn on_update(&mut self, status: &pb::TaskStatus) -> Result<Control, BoxError> {
        let state = status.state();
        self.journal
            .lock()
            .unwrap()
            .updates
            .push((status.task_id.clone(), state));
        if state.is_terminal() {
            self.ended.insert(status.task_id.clone(), state);
        }
        Ok(if self.ended.len() == self.tasks.len() {
            Control::Teardown
        } else {
            Control::Continue
        })
    }

    async fn before_launch(&mut self, tasks: &[pb::TaskInfo]) -> Result<(), BoxError> {
        if self.cannot_save {
            return Err("disk full".into());
        }
        let mut journal = self.journal.lock().unwrap();
        journal
            .saved
            .extend(tasks.iter().map(|t| t.task_id.clone()));
        Ok(())
    }

    async fn on_subscribed(&mut self, framework_id: &str) -> Result<(), BoxError> {
        self.journal.lock().unwrap().framework_id = Some(framework_id.to_owned());
        Ok(())
    }
}

fn config() -> FrameworkConfig {
    FrameworkConfig::new("runtime-test")
        .failover_timeout(Duration::from_secs(30))
        .call_timeout(Duration::from_secs(5))
        .connect_timeout(Duration::from_secs(5))
}

fn offer(id: &str) -> pb::Offer {
    pb::Offer {
        id: id.into(),
        agent_id: "agent-1".into(),
        resources: Some(pb::Resources {
            cpus: 4.0,
            mem: 1024.0,
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn offers(ids: &[&str]) -> Wire {
    Wire::Offers(pb::Offers {
        offers: ids.iter().map(|id| offer(id)).collect(),
    })
}

fn accepts(fake: &FakeMaster) -> Vec<pb::AcceptRequest> {
    fake.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Accept(a) => Some(a),
            _ => None,
        })
        .collect()
}

fn launched_ids(accept: &pb::AcceptRequest) -> Vec<String> {
    accept
        .operations
        .iter()
        .filter_map(|op| {
            op.operation
                .as_ref()
                .map(|pb::operation::Operation::Launch(l)| l)
        })
        .flat_map(|l| l.tasks.iter().map(|t| t.task_id.clone()))
        .collect()
}

fn count(fake: &FakeMaster, pred: impl Fn(&Call) -> bool) -> usize {
    fake.calls().iter().filter(|c| pred(c)).count()
}

#[tokio::test]
async fn launches_acknowledges_and_tears_down() {
    let fake = FakeMaster::start(60.0, false).await;
    let journal = Arc::new(Mutex::new(Journal::default()));
    let mut jobs = Jobs::new(&["a", "b"], &journal);
    let runtime = Runtime::new(vec![fake.address()], config());
    let run = tokio::spawn(async move { runtime.run(&mut jobs).await });

    wait_until("subscribed", || fake.state().sender.is_some()).await;
    assert!(fake.subscribes()[0].partition_aware);
    fake.push(offers(&["o1", "o2"])).await;
    wait_until("the launch", || !accepts(&fake).is_empty()).await;
    let accept = accepts(&fake).remove(0);
    assert_eq!(accept.offer_ids, ["o1"]);
    assert_eq!(launched_ids(&accept), ["a", "b"]);
    assert_eq!(journal.lock().unwrap().saved, ["a", "b"]);
    // The unused offer is declined, and with nothing left to place, offers
    // are suppressed.
    wait_until("suppress", || {
        count(&fake, |c| matches!(c, Call::Suppress(_))) == 1
    })
    .await;
    let declined: Vec<_> = fake
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Decline(d) => Some(d.offer_ids),
            _ => None,
        })
        .collect();
    assert_eq!(declined, [vec!["o2".to_owned()]]);

    // Updates reach the framework, then are acknowledged.
    fake.push(Wire::Update(agent_update("a", 1, TaskState::TaskRunning)))
        .await;
    wait_until("the ack", || fake.acks().len() == 1).await;
    assert_eq!(fake.acks()[0].task_id, "a");
    assert_eq!(
        journal.lock().unwrap().updates,
        [("a".to_owned(), TaskState::TaskRunning)]
    );
    fake.push(Wire::Update(agent_update("a", 2, TaskState::TaskFinished)))
        .await;
    fake.push(Wire::Update(agent_update("b", 3, TaskState::TaskFailed)))
        .await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the runtime stops")
        .unwrap()
        .unwrap();
    assert_eq!(stopped, Stopped::TornDown);
    assert_eq!(count(&fake, |c| matches!(c, Call::Teardown(_))), 1);
    assert_eq!(fake.acks().len(), 3, "every update acknowledged once");
    // Nothing was launched twice.
    assert_eq!(accepts(&fake).len(), 1);
    // The id the SDK made and subscribed with is the one persisted.
    let subscribed = fake.subscribes()[0].id.clone();
    assert!(subscribed.starts_with("fw-") && fake.subscribes()[0].create);
    assert_eq!(
        journal.lock().unwrap().framework_id.as_deref(),
        Some(subscribed.as_str())
    );
}

#[tokio::test]
async fn an_accept_of_unknown_outcome_is_reconciled_and_resent_only_when_unknown() {
    let fake = FakeMaster::start(60.0, false).await;
    let journal = Arc::new(Mutex::new(Journal::default()));
    let mut jobs = Jobs::new(&["a"], &journal);
    let runtime = Runtime::new(vec![fake.address()], config());
    let run = tokio::spawn(async move { runtime.run(&mut jobs).await });
    wait_until("subscribed", || fake.state().sender.is_some()).await;

    // The master cannot say whether it committed the launch.
    fake.state().accept_error = Some((Code::Unavailable, "stepped down".into()));
    fake.push(offers(&["o1"])).await;
    wait_until("a reconciliation of the launch", || {
        fake.calls().iter().any(|c| {
            matches!(c, Call::Reconcile(r)
                if r.tasks.iter().map(|t| t.task_id.as_str()).eq(["a"]))
        })
    })
    .await;
    fake.state().accept_error = None;
    // New offers do not make it launch again while the answer is due.
    fake.push(offers(&["o2"])).await;
    wait_until("the offer declined", || {
        fake.calls()
            .iter()
            .any(|c| matches!(c, Call::Decline(d) if d.offer_ids == ["o2"]))
    })
    .await;
    assert_eq!(accepts(&fake).len(), 1);

    // The master does not have it: launched again, with the same id.
    fake.push(Wire::Update(master_update("a", TaskState::TaskUnknown)))
        .await;
    wait_until("a revive", || {
        fake.calls().iter().any(|c| matches!(c, Call::Revive(_)))
    })
    .await;
    fake.push(offers(&["o3"])).await;
    wait_until("the second launch", || accepts(&fake).len() == 2).await;
    let second = accepts(&fake).remove(1);
    assert_eq!(second.offer_ids, ["o3"]);
    assert_eq!(launched_ids(&second), ["a"]);
    // The framework never saw the bookkeeping answer.
    assert!(journal.lock().unwrap().updates.is_empty());
    assert_eq!(journal.lock().unwrap().saved, ["a", "a"]);

    fake.push(Wire::Update(agent_update("a", 1, TaskState::TaskFinished)))
        .await;
    let stopped = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the runtime stops")
        .unwrap()
        .unwrap();
    assert_eq!(stopped, Stopped::TornDown);
}

#[tokio::test]
async fn a_launch_that_cannot_be_saved_stops_the_runtime_before_it_is_sent() {
    let fake = FakeMaster::start(60.0, false).await;
    let journal = Arc::new(Mutex::new(Journal::default()));
    let mut jobs = Jobs::new(&["a"], &journal);
    jobs.cannot_save = true;
    let runtime = Runtime::new(vec![fake.address()], config());
    let run = tokio::spawn(async move { runtime.run(&mut jobs).await });
    wait_until("subscribed", || fake.state().sender.is_some()).await;
    fake.push(offers(&["o1"])).await;
    let result = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the runtime stops")
        .unwrap();
    match result {
        Err(RuntimeError::Framework { during, source }) => {
            assert_eq!(during, "saving a launch");
            assert_eq!(source.to_string(), "disk full");
        }
        other => panic!("expected a framework error, got {other:?}"),
    }
    assert!(accepts(&fake).is_empty(), "nothing launched");
}

#[tokio::test]
async fn a_removed_framework_stops_the_runtime_with_the_reason() {
    let fake = FakeMaster::start(60.0, false).await;
    let journal = Arc::new(Mutex::new(Journal::default()));
    let mut jobs = Jobs::new(&["a"], &journal);
    let runtime = Runtime::new(vec![fake.address()], config());
    let run = tokio::spawn(async move { runtime.run(&mut jobs).await });
    wait_until("subscribed", || fake.state().sender.is_some()).await;
    fake.push(Wire::Error(pb::Error {
        message: "failover timeout expired".into(),
    }))
    .await;
    let result = tokio::time::timeout(Duration::from_secs(5), run)
        .await
        .expect("the runtime stops")
        .unwrap();
    assert!(
        matches!(&result, Err(RuntimeError::Removed(why)) if why == "failover timeout expired"),
        "{result:?}"
    );
}
