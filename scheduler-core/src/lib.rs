//! berth's scheduling core: the domain model and the decisions of a
//! Mesos-style two-level scheduler, as a pure library.
//!
//! What it is:
//!
//! - [`ids`]: validated identifiers ([`AgentId`], [`FrameworkId`],
//!   [`TaskId`], [`OfferId`], [`Role`]).
//! - [`resources`]: fixed-point resources ([`Scalar`], [`PortRanges`],
//!   [`Resources`]) and their Mesos text form.
//! - [`time`]: [`Time`], a caller-supplied point in time.
//! - [`allocator`] and [`sorter`]: the hierarchical DRF allocator (roles,
//!   weights, quotas, reservations, decline filters, suppress/revive) that
//!   decides how much of which agent each framework is offered.
//! - [`offers`]: the leader's book of outstanding offers.
//! - [`placement`]: bin-packing of task requests into offers, for framework
//!   SDKs ([`pack`], [`placement::explain`]), and the indexed [`Placer`] with
//!   its strategies (first, best and worst fit, Tetris) and packing-quality
//!   measures, for the simulator.
//! - [`workload`]: nodes and tasks for the simulator: generators (Mesos'
//!   multi-framework benchmark, a trace-like heterogeneous cluster) and a
//!   JSON/CSV file format.
//!
//! What it is not: it does no IO, reads no clock, spawns no threads and uses
//! no ambient randomness (time and any seed are arguments; the workload
//! generators run their own seeded PRNG). It does not persist
//! anything, talk to agents or frameworks, or know about the wire protocol;
//! the master, agent and SDK crates do that around it. Same inputs, same
//! outputs — which is what makes it simulatable at 10,000 agents.

pub mod allocator;
pub mod error;
pub mod ids;
pub mod offers;
pub mod placement;
pub mod resources;
pub mod sorter;
pub mod time;
pub mod workload;

pub use allocator::{
    AgentResources, Allocated, Allocation, Allocator, AllocatorConfig, Quota, RoleInfo, Weight,
};
pub use error::{
    AllocatorError, IdError, MAX_QUOTED_BYTES, OfferError, Quoted, ResourceError, quoted,
};
pub use ids::{AgentId, FrameworkId, OfferId, Role, TaskId};
pub use offers::{Offer, OfferBook};
pub use placement::{Packing, Placer, Strategy, Unplaced, pack};
pub use resources::{PortRanges, Resources, Scalar, ScalarKind};
pub use sorter::{DrfSorter, Sorter};
pub use time::Time;
