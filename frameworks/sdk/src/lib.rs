//! The berth framework SDK: write a framework (a scheduler) for a berth
//! cluster.
//!
//! berth schedules in two levels, as Apache Mesos does: the master decides
//! how much of the cluster each framework is *offered*; the framework
//! decides what runs where. This crate is the framework's side of that
//! conversation. It
//!
//! - subscribes to the master ([`subscribe`]) and hands you an [`Events`]
//!   stream of offers, rescinds, task status updates and agent failures;
//! - keeps the subscription alive: it watches heartbeats (a stream silent
//!   for [`FrameworkConfig::heartbeat_timeout`], 4 s by default, is lost),
//!   and after a disconnect, a master restart or a failover it asks every
//!   known master at once who leads and re-subscribes there with the same
//!   framework id, typically within a few hundred milliseconds of the new
//!   leader's election;
//! - acknowledges agent status updates for you (after you have read them;
//!   see [`Events`]) unless you turn that off;
//! - gives you a cheap, cloneable [`Framework`] handle for the calls:
//!   accept, decline, revive, suppress, kill, acknowledge, reconcile,
//!   update pending, teardown;
//! - packs your tasks into offers with the bin-packing strategies of
//!   `berth-scheduler-core`, in the order given ([`pack_offers`]) or as
//!   tightly as it can ([`pack_offers_best`]), and builds tasks
//!   ([`shell_task`]);
//! - publishes the tasks that fit nowhere, with why ([`pending_tasks`],
//!   [`Framework::update_pending`]), for operators to see with
//!   `berth task pending`, and publishes them again after a
//!   re-subscription.
//!
//! - keeps a framework's state in the masters' replicated key-value store
//!   and chooses its active instance with a lease ([`kv`]), following the
//!   leader as the rest of the SDK does;
//!
//! - runs a framework for you if you let it ([`runtime`]): you state your
//!   intent (the tasks you want), a pure function decides the calls that
//!   close the gap to what the cluster has, and the runtime makes them,
//!   never launching a task twice and calling your hooks to save state
//!   before the calls that depend on it.
//!
//! What the bare SDK keeps: the ids of the tasks it believes live (launched
//! through it, or reported in a non-terminal state, and not reported ended
//! since), in memory, and after every subscription that resumes the
//! framework it reconciles them with the master, so that what happened to
//! them meanwhile arrives as [`Event::Update`]s (see
//! [`FrameworkConfig::reconcile_on_resubscribe`]; you need not call
//! [`Framework::reconcile_all`] yourself).
//!
//! What it is not: it persists nothing by itself (the [`kv`] client stores
//! what you give it). It does not retry scheduler calls (an
//! `ACCEPT` is not idempotent), hold offers for you, or re-launch anything;
//! after a re-subscription your held offers are void. If you need to survive
//! your own restart, store the framework id and pass it back in
//! [`FrameworkConfig::framework_id`], with a non-zero
//! [`FrameworkConfig::failover_timeout`]; the first subscription then
//! reconciles every task the master holds for the framework. The [`runtime`]
//! does the bookkeeping of your intent for you but stores nothing either: its
//! hooks tell you what to save.
//!
//! # Example
//!
//! ```no_run
//! use berth_sdk::{Event, FrameworkConfig, Strategy, pack_offers, shell_task, subscribe};
//!
//! # async fn run() -> Result<(), berth_sdk::SdkError> {
//! let config = FrameworkConfig::new("hello");
//! let (framework, mut events) = subscribe(vec!["127.0.0.1:5050".into()], config).await?;
//! let mut pending = vec![shell_task("hello-1", "hello", "echo hello", "cpus:0.1;mem:32")?];
//! while let Some(event) = events.next().await {
//!     match event {
//!         Event::Offers(offers) => {
//!             let plan = pack_offers(&offers, std::mem::take(&mut pending), Strategy::FirstFit)?;
//!             for (offer_id, tasks) in plan.launches {
//!                 framework.accept(vec![offer_id], tasks, None).await?;
//!             }
//!             framework.decline(plan.unused, None).await?;
//!             pending = plan.unplaced;
//!         }
//!         Event::Update(status) if status.state().is_terminal() => break,
//!         Event::Error(why) => eprintln!("removed: {why}"),
//!         _ => {}
//!     }
//! }
//! framework.teardown().await?;
//! # Ok(())
//! # }
//! ```
//!
//! See `examples/hello.rs` for a complete framework on the bare SDK, and
//! `examples/runtime_jobs.rs` for one on the [`runtime`].

#![warn(missing_docs)]

pub mod agents;
mod config;
mod connection;
mod driver;
mod error;
mod events;
mod framework;
pub mod kv;
mod packing;
pub mod runtime;

pub use berth_proto as proto;
pub use berth_scheduler_core::placement::{Explanation, Strategy};
pub use berth_scheduler_core::{AgentId, IdError, OfferId, Role, TaskId};
pub use config::{DEFAULT_HEARTBEAT_TIMEOUT, FrameworkConfig, MAX_FAILOVER_TIMEOUT};
pub use driver::subscribe;
pub use error::{BoxError, ErrorKind, RuntimeError, SdkError};
pub use events::{Event, Events};
pub use framework::{Framework, Roles};
pub use packing::{
    PackPlan, explain_unplaced, pack_offers, pack_offers_best, pending_task, pending_tasks,
    shell_task, task_resources,
};
