//! The job framework on the SDK runtime: the runtime's [`Scheduler`] over
//! the pure state ([`Jobs`]).
//!
//! Every change is stored before it has effects: an operation before it
//! is answered; due ticks (their runs and the cursors that passed them,
//! in one transaction per job) before the next decision launches them; a
//! launch's tasks before their accept (`before_launch`); an update's
//! effects before it is acknowledged. A write that fails stops the
//! framework (fail closed); the next active instance reads the stored
//! state back and goes on from it.
//!
//! The clock: the framework sleeps until [`Jobs::next_wakeup`] (the
//! earliest schedule tick from the timers, a run's deadline, a restart's
//! backoff), at most [`IDLE_WAKE`], and then runs [`Jobs::advance`].

use std::time::Duration;

use berth_proto as pb;
use berth_sdk::BoxError;
use berth_sdk::kv::{KvClient, LeaseRef, LeaseStatus};
use berth_sdk::runtime::{Control, Intent, Placement, Scheduler, Wanted};
use berth_sdk::{AgentId, TaskId};
use tokio::sync::mpsc;

use super::handle::Req;
use crate::api::{BackendError, FrameworkInfo};
use crate::state::{Jobs, TaskUpdate, WantedTask, Write};
use crate::time::Timestamp;

/// The key of the framework id.
pub const FRAMEWORK_ID_KEY: &str = "framework-id";
/// The longest the framework sleeps without a reason.
pub const IDLE_WAKE: Duration = Duration::from_secs(1);
/// Most API requests answered in one round.
const REQUEST_BATCH: usize = 64;

/// What woke the framework.
#[derive(Debug)]
enum Woken {
    Request(Box<Req>),
    Clock,
    Lost,
}

/// What a new framework is made of.
#[derive(Debug)]
pub struct Parts {
    /// The stored state, read back.
    pub jobs: Jobs,
    /// The framework id, if one was stored.
    pub framework_id: Option<String>,
    /// The store.
    pub kv: KvClient,
    /// The lease held.
    pub lease: LeaseRef,
    /// Flips when the lease is lost.
    pub lost: tokio::sync::watch::Receiver<LeaseStatus>,
    /// The API's requests.
    pub requests: mpsc::Receiver<Req>,
    /// This instance's API address, for `/v1/info`.
    pub address: Option<String>,
}

/// The framework (see the module docs).
pub struct JobsFramework {
    jobs: Jobs,
    framework_id: Option<String>,
    kv: KvClient,
    lease: LeaseRef,
    lost: tokio::sync::watch::Receiver<LeaseStatus>,
    requests: mpsc::Receiver<Req>,
    address: Option<String>,
    woken: Vec<Woken>,
    /// This round's answers, sent once its changes are stored: one write
    /// for a round's requests, however many.
    replies: Vec<Reply>,
}

/// An answer to send.
type Reply = Box<dyn FnOnce() + Send>;

impl std::fmt::Debug for JobsFramework {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobsFramework")
            .field("jobs", &self.jobs.len())
            .field("active_runs", &self.jobs.active_runs())
            .finish_non_exhaustive()
    }
}

impl JobsFramework {
    /// A framework from `parts`.
    #[must_use]
    pub fn new(parts: Parts) -> Self {
        JobsFramework {
            jobs: parts.jobs,
            framework_id: parts.framework_id,
            kv: parts.kv,
            lease: parts.lease,
            lost: parts.lost,
            requests: parts.requests,
            address: parts.address,
            woken: Vec::new(),
            replies: Vec::new(),
        }
    }

    /// Stores what changed; says in the log what happened.
    async fn store(&mut self) -> Result<(), BoxError> {
        for e in self.jobs.take_events() {
            tracing::info!("{e}");
        }
        let writes: Vec<Vec<Write>> = self.jobs.take_writes();
        if writes.is_empty() {
            return Ok(());
        }
        self.kv.write_fenced(&self.lease, writes).await?;
        Ok(())
    }

    /// Answers a request of the API: the answer goes out once this
    /// round's changes are stored (`on_changed`), so no one reads a change
    /// that might not be stored.
    fn answer(&mut self, req: Req) {
        let now = Timestamp::now();
        let reply: Reply = match req {
            Req::Jobs(r) => {
                let v = self.jobs.statuses(now);
                Box::new(move || drop(r.send(v)))
            }
            Req::Job(id, r) => {
                let v = self.jobs.status(&id, now);
                Box::new(move || drop(r.send(v)))
            }
            Req::Run(job, run, r) => {
                let v = self.jobs.run(&job, &run).cloned();
                Box::new(move || drop(r.send(v)))
            }
            Req::Apply(op, r) => {
                let random = (uuid::Uuid::new_v4().as_u128() & 0xffff_ffff) as u32;
                // A refused operation changed nothing.
                let v = self.jobs.apply(&op, now, random).map_err(BackendError::Op);
                Box::new(move || drop(r.send(v)))
            }
            Req::Secrets(r) => {
                let v = self.jobs.secret_paths();
                Box::new(move || drop(r.send(v)))
            }
            Req::Info(r) => {
                let v = FrameworkInfo {
                    framework_id: self.framework_id.clone(),
                    address: self.address.clone(),
                };
                Box::new(move || drop(r.send(v)))
            }
        };
        self.replies.push(reply);
    }

    /// One wanted task as the runtime takes it.
    fn wanted(w: WantedTask) -> Wanted {
        let base = if w.seen {
            Wanted::launched(w.task)
        } else if w.launched {
            Wanted::recovered(w.task)
        } else {
            Wanted::new(w.task)
        };
        if w.constraints.is_empty() {
            return base;
        }
        let constraints = std::sync::Arc::new(w.constraints);
        let rule: berth_sdk::runtime::Rule = std::sync::Arc::new(move |place, _others| {
            crate::state::allows(&constraints, &place.hostname, &place.attributes)
        });
        base.placement(Placement {
            group: String::new(),
            ports: 0,
            existing: Vec::new(),
            rule: Some(rule),
            health_port: None,
        })
    }
}

impl Scheduler for JobsFramework {
    fn intent(&self) -> Intent {
        let tasks = self
            .jobs
            .wanted(Timestamp::now())
            .into_iter()
            .map(Self::wanted)
            .collect();
        let stop = self
            .jobs
            .to_stop()
            .into_iter()
            .filter_map(|(task, agent)| {
                let task = TaskId::new(task).ok()?;
                let agent = (!agent.is_empty())
                    .then(|| AgentId::new(agent).ok())
                    .flatten();
                Some((task, agent))
            })
            .collect();
        let mut intent = Intent::new(tasks);
        intent.stop = stop;
        intent
    }

    async fn on_update(&mut self, status: &pb::TaskStatus) -> Result<Control, BoxError> {
        let now = Timestamp::now();
        self.jobs.update(&TaskUpdate::of(status), now);
        self.jobs.advance(now);
        self.store().await?;
        Ok(Control::Continue)
    }

    async fn before_launch(&mut self, tasks: &[pb::TaskInfo]) -> Result<(), BoxError> {
        let ids: Vec<String> = tasks.iter().map(|t| t.task_id.clone()).collect();
        self.jobs.launching(&ids, Timestamp::now());
        self.store().await
    }

    async fn on_subscribed(&mut self, framework_id: &str) -> Result<(), BoxError> {
        if self.framework_id.as_deref() != Some(framework_id) {
            let id = (
                FRAMEWORK_ID_KEY.to_owned(),
                Some(framework_id.as_bytes().to_vec()),
            );
            self.kv.write_fenced(&self.lease, vec![vec![id]]).await?;
            self.framework_id = Some(framework_id.to_owned());
        }
        self.jobs.advance(Timestamp::now());
        self.store().await
    }

    async fn changed(&mut self) -> Control {
        let now = Timestamp::now();
        let wait = self
            .jobs
            .next_wakeup()
            .map_or(IDLE_WAKE, |at| at.since(now).min(IDLE_WAKE));
        let woken = tokio::select! {
            req = self.requests.recv() => match req {
                Some(req) => Woken::Request(Box::new(req)),
                None => return Control::Stop,
            },
            _ = self.lost.changed() => Woken::Lost,
            () = tokio::time::sleep(wait) => Woken::Clock,
        };
        self.woken.push(woken);
        while self.woken.len() < REQUEST_BATCH {
            let Ok(req) = self.requests.try_recv() else {
                break;
            };
            self.woken.push(Woken::Request(Box::new(req)));
        }
        Control::Continue
    }

    async fn on_changed(&mut self) -> Result<Control, BoxError> {
        for woken in std::mem::take(&mut self.woken) {
            match woken {
                Woken::Request(req) => self.answer(*req),
                Woken::Clock => {}
                Woken::Lost => {
                    if !matches!(*self.lost.borrow(), LeaseStatus::Held) {
                        tracing::error!("lost the lease of the active instance; stopping");
                        return Ok(Control::Stop);
                    }
                }
            }
        }
        self.jobs.advance(Timestamp::now());
        self.store().await?;
        for reply in std::mem::take(&mut self.replies) {
            reply();
        }
        Ok(Control::Continue)
    }
}
