//! The hierarchical allocator: decides how much of which agent each
//! framework is offered, by Dominant Resource Fairness over roles, with
//! weights, quotas, static reservations, decline filters and
//! suppress/revive — after Mesos's `HierarchicalDRFAllocator`.
//!
//! The allocator is a pure state machine. The master feeds it events
//! (frameworks and agents coming and going, resources recovered from
//! declined offers and finished tasks) and calls [`Allocator::allocate`]
//! periodically; each call returns the new allocations, which the master
//! turns into offers. Time is passed in; nothing here reads a clock.
//!
//! # The cycle
//!
//! 1. **Quota.** Roles whose allocation is below their quota guarantee are
//!    visited in DRF order on every active agent and get the role's
//!    reservations there plus unreserved resources up to the guarantee.
//! 2. **Fair share.** On each active agent (by id), the role with the lowest
//!    `dominant_share / weight` that has an eligible framework gets, for its
//!    lowest-share framework, everything left on the agent that the role may
//!    use: its reservations plus the unreserved pool, capped by its quota
//!    limit and by the headroom kept for other roles' unmet guarantees.
//!    Each role is served at most once per agent per cycle.
//!
//! Offers smaller than [`AllocatorConfig::min_allocatable`] are not made.
//! Ports are never counted in shares or quotas.
//!
//! # Decline filters and the cost of a cycle
//!
//! A framework that declines an offer with a refuse duration is not offered
//! those resources (or less) of that agent in that role until the filter
//! expires. Filters are kept per agent, grouped by the declined resources,
//! with a count of the eligible frameworks in each group (`filters.rs`), so
//! an agent on which every eligible framework of a role has declined the
//! offer is skipped without visiting the frameworks: a cycle in which
//! everything is filtered costs about one offer computation per (agent,
//! role), not one filter lookup per (agent, framework). Inside the
//! allocator, frameworks also have a dense index that travels with them in
//! the role sorters, so walking past filtered frameworks needs no lookup by
//! name.
//!
//! # Offer limit
//!
//! With [`AllocatorConfig::offer_limit`], a framework holding that many
//! offers is not eligible. Offers a cycle makes are counted as it makes
//! them; the master reports the count its offer book holds before each
//! cycle with [`Allocator::set_outstanding_offers`]. A cycle stops
//! scanning agents once no framework is eligible.
//!
//! # Grants, recovery, and the reference model
//!
//! An [`Allocated`] grant keeps the part reserved to the role apart from
//! the unreserved part; [`Allocated::take`] carves a task out of it.
//! [`Allocator::add_used`] records usage that already exists (tasks found
//! running after a restart); [`Allocator::recover`] returns resources, with a
//! decline filter when asked. The differential proptest
//! `tests/allocator_equivalence.rs` checks this allocator against the
//! earlier, simpler one kept in `tests/reference/`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ops::Bound::{Excluded, Unbounded};
use std::time::Duration;

use serde::{Deserialize, Serialize};

pub use crate::error::AllocatorError;
use crate::error::ResourceError;
use crate::ids::{AgentId, FrameworkId, Role};
use crate::resources::{PortRanges, Resources, Scalar, ScalarKind};
use crate::sorter::{DrfSorter, Sorter};
use crate::time::Time;
use filters::{FilterBook, FilterGroup, FwIdx, Slot};

mod filters;

/// A role's weight in fair sharing, fixed-point milli-units (`1.0 == 1000`).
/// A role with weight 3 is entitled to three times the share of a role with
/// weight 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(try_from = "u64", into = "u64")]
pub struct Weight(u64);

impl Weight {
    /// Weight one, the default.
    pub const ONE: Weight = Weight(1000);
    /// Largest weight, 1e6.
    pub const MAX: Weight = Weight(1_000_000_000);

    /// A weight from user input: finite, greater than zero (at least 0.001
    /// after rounding to milli-units) and at most 1e6.
    pub fn new(value: f64) -> Result<Weight, AllocatorError> {
        let invalid = |reason| AllocatorError::InvalidWeight { value, reason };
        if !value.is_finite() {
            return Err(invalid("must be a finite number"));
        }
        if value <= 0.0 {
            return Err(invalid("must be greater than zero"));
        }
        if value > 1e6 {
            return Err(invalid("must be at most 1000000"));
        }
        let milli = (value * 1000.0).round() as u64;
        if milli == 0 {
            return Err(invalid("must be at least 0.001"));
        }
        Ok(Weight(milli))
    }

    /// The weight as `f64`.
    pub fn to_f64(self) -> f64 {
        self.0 as f64 / 1000.0
    }

    /// The weight in milli-units.
    pub fn milli(self) -> u64 {
        self.0
    }
}

impl Default for Weight {
    fn default() -> Self {
        Weight::ONE
    }
}

impl TryFrom<u64> for Weight {
    type Error = AllocatorError;
    fn try_from(milli: u64) -> Result<Weight, AllocatorError> {
        if milli == 0 || milli > Weight::MAX.0 {
            return Err(AllocatorError::InvalidWeight {
                value: milli as f64 / 1000.0,
                reason: "must be greater than zero and at most 1000000",
            });
        }
        Ok(Weight(milli))
    }
}

impl From<Weight> for u64 {
    fn from(w: Weight) -> u64 {
        w.0
    }
}

/// A role's quota: a guarantee the allocator satisfies before fair sharing,
/// and an optional limit the role is never allocated beyond. Ports are
/// ignored.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Quota {
    /// Resources the role is offered first, before fair sharing.
    pub guarantee: Resources,
    /// Resources the role is never allocated beyond, if set.
    pub limit: Option<Resources>,
}

/// The resources of one agent: an unreserved pool and static reservations
/// per role.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct AgentResources {
    /// Resources any role may be offered.
    pub unreserved: Resources,
    /// Resources only the given role may be offered.
    pub reserved: BTreeMap<Role, Resources>,
}

impl AgentResources {
    /// Unreserved plus all reservations.
    pub fn total(&self) -> Resources {
        let mut t = self.unreserved.clone();
        for r in self.reserved.values() {
            t += r;
        }
        t
    }

    /// An agent with only unreserved resources.
    pub fn unreserved(resources: Resources) -> AgentResources {
        AgentResources {
            unreserved: resources,
            reserved: BTreeMap::new(),
        }
    }

    /// Drops empty reservation entries.
    fn normalized(mut self) -> AgentResources {
        self.reserved.retain(|_, r| !r.is_empty());
        self
    }
}

/// Resources drawn from one agent for one role: the part reserved to that
/// role and the part from the unreserved pool.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocated {
    /// Drawn from the agent's unreserved pool.
    pub unreserved: Resources,
    /// Drawn from the agent's reservation for the role.
    pub reserved: Resources,
}

impl Allocated {
    /// Both parts together.
    pub fn total(&self) -> Resources {
        &self.unreserved + &self.reserved
    }

    /// Whether both parts are empty.
    pub fn is_empty(&self) -> bool {
        self.unreserved.is_empty() && self.reserved.is_empty()
    }

    /// Part-wise sum; an error if a scalar overflows.
    pub fn checked_add(&self, other: &Allocated) -> Result<Allocated, ResourceError> {
        Ok(Allocated {
            unreserved: self.unreserved.checked_add(&other.unreserved)?,
            reserved: self.reserved.checked_add(&other.reserved)?,
        })
    }

    /// Whether each part of `self` contains the same part of `other`.
    pub fn contains(&self, other: &Allocated) -> bool {
        self.unreserved.contains(&other.unreserved) && self.reserved.contains(&other.reserved)
    }

    /// Removes `want` from `self`, drawing each scalar from `reserved` first
    /// and then `unreserved`, and ports likewise. Returns the split taken,
    /// or `None` (and `self` unchanged) if `want` is not contained in
    /// [`Allocated::total`].
    pub fn take(&mut self, want: &Resources) -> Option<Allocated> {
        let mut from_reserved = Resources {
            ports: want.ports.intersection(&self.reserved.ports),
            ..Resources::default()
        };
        let mut from_unreserved = Resources {
            ports: want.ports.difference(&self.reserved.ports),
            ..Resources::default()
        };
        if !self.unreserved.ports.contains(&from_unreserved.ports) {
            return None;
        }
        for k in ScalarKind::ALL {
            let w = want.scalar(k);
            let r = w.min(self.reserved.scalar(k));
            let u = w.saturating_sub(r);
            if u > self.unreserved.scalar(k) {
                return None;
            }
            *from_reserved.scalar_mut(k) = r;
            *from_unreserved.scalar_mut(k) = u;
        }
        self.reserved = self.reserved.saturating_sub(&from_reserved);
        self.unreserved = self.unreserved.saturating_sub(&from_unreserved);
        Some(Allocated {
            unreserved: from_unreserved,
            reserved: from_reserved,
        })
    }

    /// Whether `r` contains [`Allocated::total`], without building it.
    fn within(&self, r: &Resources) -> bool {
        ScalarKind::ALL.iter().all(|&k| {
            r.scalar(k)
                >= self
                    .unreserved
                    .scalar(k)
                    .saturating_add(self.reserved.scalar(k))
        }) && r.ports.contains(&self.unreserved.ports)
            && r.ports.contains(&self.reserved.ports)
    }

    /// Part-wise intersection.
    fn intersection(&self, other: &Allocated) -> Allocated {
        Allocated {
            unreserved: self.unreserved.intersection(&other.unreserved),
            reserved: self.reserved.intersection(&other.reserved),
        }
    }

    /// Part-wise saturating difference.
    fn saturating_sub(&self, other: &Allocated) -> Allocated {
        Allocated {
            unreserved: self.unreserved.saturating_sub(&other.unreserved),
            reserved: self.reserved.saturating_sub(&other.reserved),
        }
    }
}

/// Resources newly allocated to a framework by [`Allocator::allocate`]: the
/// master turns each into one offer.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocation {
    /// Who gets the resources.
    pub framework: FrameworkId,
    /// Where they are.
    pub agent: AgentId,
    /// On behalf of which of the framework's roles.
    pub role: Role,
    /// What, split into reserved and unreserved parts.
    pub resources: Allocated,
}

/// Allocator tuning.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocatorConfig {
    /// Refuse duration for declines that do not say (Mesos: 5 s). The
    /// allocator does not apply it by itself: callers pass it to
    /// [`Allocator::recover`].
    pub default_refuse: Duration,
    /// An offer is made only if it holds at least one of these scalar
    /// quantities (default: cpus 0.01 *or* mem 32). Empty means any
    /// non-empty offer.
    pub min_allocatable: Resources,
    /// Most offers one framework may hold at once (`None`: no limit, as in
    /// Mesos). A framework holding that many is skipped by allocation
    /// cycles until some are accepted, declined or rescinded (the caller
    /// reports its count with [`Allocator::set_outstanding_offers`]). With
    /// many frameworks and many agents this bounds the offers made to
    /// frameworks that use one agent at a time, which otherwise decline
    /// nearly every offer they get.
    pub offer_limit: Option<usize>,
}

impl Default for AllocatorConfig {
    fn default() -> Self {
        AllocatorConfig {
            offer_limit: None,
            default_refuse: Duration::from_secs(5),
            min_allocatable: Resources {
                cpus: Scalar::from_milli_saturating(10),
                mem: Scalar::from_units(32),
                ..Resources::default()
            },
        }
    }
}

impl AllocatorConfig {
    /// Whether `r` is big enough to offer: it holds at least one of the
    /// non-zero scalars of `min_allocatable` (or, if that is empty, is
    /// non-empty).
    pub fn is_allocatable(&self, r: &Resources) -> bool {
        let min = &self.min_allocatable;
        if min.scalars_empty() {
            return !r.is_empty();
        }
        ScalarKind::ALL.iter().any(|k| {
            let m = min.scalar(*k);
            !m.is_zero() && r.scalar(*k) >= m
        })
    }

    /// [`AllocatorConfig::is_allocatable`] of `a.total()`, without building
    /// it.
    fn allocatable(&self, a: &Allocated) -> bool {
        let min = &self.min_allocatable;
        if min.scalars_empty() {
            return !a.is_empty();
        }
        ScalarKind::ALL.iter().any(|&k| {
            let m = min.scalar(k);
            !m.is_zero() && a.unreserved.scalar(k).saturating_add(a.reserved.scalar(k)) >= m
        })
    }
}

/// What the allocator knows about a role, for the operator API.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct RoleInfo {
    /// The role.
    pub role: Role,
    /// Its weight (one unless set).
    pub weight: Weight,
    /// Its quota, if any.
    pub quota: Option<Quota>,
    /// Scalars allocated to it over all agents (ports are not summed).
    pub allocated: Resources,
    /// Frameworks subscribed to it, by id.
    pub frameworks: Vec<FrameworkId>,
}

#[derive(Clone, Debug)]
struct AgentState {
    total: AgentResources,
    free: AgentResources,
    active: bool,
    allocations: BTreeMap<(FrameworkId, Role), Allocated>,
    /// Where the agent's decline filters are in the [`FilterBook`].
    slot: Slot,
}

impl AgentState {
    /// What `role` could be offered here before caps: its reservation and
    /// the unreserved pool.
    fn free_reserved(&self, role: &Role) -> Option<&Resources> {
        self.free.reserved.get(role)
    }
}

/// A framework as a client of a role's sorter: ordered by id (the dense
/// index rides along so that a cycle can check filters without looking the
/// framework up by name).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
struct FwKey {
    id: FrameworkId,
    idx: FwIdx,
}

#[derive(Clone, Debug)]
struct FrameworkState {
    /// Dense index, unique among known frameworks (reused after removal).
    idx: FwIdx,
    roles: BTreeSet<Role>,
    active: bool,
    suppressed: BTreeSet<Role>,
    /// Agent slots where this framework may have decline filters, per role
    /// (a superset: filters that expired are not removed from here). The
    /// filters themselves are in the allocator's [`FilterBook`].
    filter_slots: BTreeMap<Role, BTreeSet<Slot>>,
    /// Roles in which the framework's filters are counted as eligible in
    /// the [`FilterBook`]: the roles where it was eligible at the last
    /// [`Allocator::refresh`].
    counted: BTreeSet<Role>,
    /// Scalars allocated per role.
    allocated: BTreeMap<Role, Resources>,
    /// Where this framework holds allocations.
    placements: BTreeSet<(AgentId, Role)>,
    /// Offers it holds (see [`AllocatorConfig::offer_limit`]).
    offers_out: usize,
    /// Whether it holds as many offers as the limit allows.
    at_offer_limit: bool,
}

impl FrameworkState {
    fn new(idx: FwIdx) -> FrameworkState {
        FrameworkState {
            idx,
            roles: BTreeSet::new(),
            active: false,
            suppressed: BTreeSet::new(),
            filter_slots: BTreeMap::new(),
            counted: BTreeSet::new(),
            allocated: BTreeMap::new(),
            placements: BTreeSet::new(),
            offers_out: 0,
            at_offer_limit: false,
        }
    }

    fn eligible(&self, role: &Role) -> bool {
        self.active
            && !self.at_offer_limit
            && self.roles.contains(role)
            && !self.suppressed.contains(role)
    }

    fn key(&self, id: &FrameworkId) -> FwKey {
        FwKey {
            id: id.clone(),
            idx: self.idx,
        }
    }
}

#[derive(Clone, Debug, Default)]
struct RoleState {
    weight: Option<Weight>,
    quota: Option<Quota>,
    /// Frameworks subscribed to the role.
    subscribed: BTreeSet<FrameworkId>,
    /// Frameworks subscribed to the role or holding allocations in it;
    /// active = eligible for offers in this role.
    sorter: DrfSorter<FwKey>,
    /// Scalars allocated to the role.
    allocated: Resources,
    /// Number of agents with a reservation for the role.
    reservations: usize,
}

impl RoleState {
    fn is_unused(&self) -> bool {
        self.weight.is_none()
            && self.quota.is_none()
            && self.sorter.is_empty()
            && self.allocated.is_empty()
            && self.reservations == 0
    }

    /// Guarantee minus allocation (scalars), empty without quota.
    fn unmet_guarantee(&self) -> Resources {
        match &self.quota {
            Some(q) => scalars(&q.guarantee).saturating_sub(&self.allocated),
            None => Resources::empty(),
        }
    }

    /// Per-scalar room left below the quota limit; `None` = unlimited.
    fn limit_room(&self) -> Option<Resources> {
        let limit = self.quota.as_ref()?.limit.as_ref()?;
        Some(scalars(limit).saturating_sub(&self.allocated))
    }

    fn weight(&self) -> Weight {
        self.weight.unwrap_or(Weight::ONE)
    }
}

fn scalars(r: &Resources) -> Resources {
    Resources {
        ports: PortRanges::new(),
        ..r.clone()
    }
}

/// Caps every scalar of `r` by `cap` (ports untouched).
fn cap_scalars(r: &Resources, cap: &Resources) -> Resources {
    let mut out = r.clone();
    for k in ScalarKind::ALL {
        let v = out.scalar(k).min(cap.scalar(k));
        *out.scalar_mut(k) = v;
    }
    out
}

/// The Mesos-style hierarchical DRF allocator. See the module docs.
#[derive(Clone, Debug)]
pub struct Allocator {
    config: AllocatorConfig,
    agents: BTreeMap<AgentId, AgentState>,
    frameworks: BTreeMap<FrameworkId, FrameworkState>,
    /// Indices of removed frameworks, for reuse.
    free_fw_idx: Vec<FwIdx>,
    /// One past the largest framework index handed out.
    next_fw_idx: FwIdx,
    /// Decline filters, by agent.
    filters: FilterBook,
    roles: BTreeMap<Role, RoleState>,
    /// Roles; active = has at least one eligible framework.
    role_sorter: DrfSorter<Role>,
    /// Sum of all agents' totals (scalars only).
    total: Resources,
    /// The sorters' totals lag `total`; refreshed at the next cycle.
    totals_dirty: bool,
}

/// The allocations of one cycle, with an index of stage-1 allocations so
/// a stage-2 allocation of the same (agent, framework, role) merges into
/// one.
#[derive(Debug, Default)]
struct CycleOutput {
    allocations: Vec<Allocation>,
    index: HashMap<(AgentId, FrameworkId, Role), usize>,
}

/// Scratch space of one cycle for [`Allocator::pick_framework`]: which
/// frameworks refuse the offer at hand, by dense index.
#[derive(Debug)]
struct Marks {
    /// `stamp[idx] == round`: framework `idx` is marked.
    stamp: Vec<u32>,
    round: u32,
}

impl Marks {
    /// Room for framework indices below `len`.
    fn new(len: FwIdx) -> Marks {
        Marks {
            stamp: vec![0; len as usize],
            round: 0,
        }
    }

    /// Clears all marks.
    fn next(&mut self) {
        self.round = self.round.wrapping_add(1);
        if self.round == 0 {
            self.stamp.fill(0);
            self.round = 1;
        }
    }

    fn mark(&mut self, idx: FwIdx) {
        if let Some(s) = self.stamp.get_mut(idx as usize) {
            *s = self.round;
        }
    }

    fn is_marked(&self, idx: FwIdx) -> bool {
        self.stamp.get(idx as usize) == Some(&self.round)
    }
}

/// Headroom bookkeeping for stage 2: unreserved resources kept back for
/// quota roles whose guarantee is not yet met.
#[derive(Debug, Default)]
struct Headroom {
    /// Sum of unmet guarantees not coverable by the roles' own free
    /// reservations.
    required: Resources,
    /// Unreserved resources free on active agents.
    available: Resources,
    /// Per quota role, its share of `required`.
    unmet: BTreeMap<Role, Resources>,
}

impl Headroom {
    /// How much unreserved `role` may take without eating into the headroom
    /// of other roles.
    fn allowance(&self, role: &Role) -> Resources {
        let own = self.unmet.get(role).cloned().unwrap_or_default();
        let others = self.required.saturating_sub(&own);
        self.available.saturating_sub(&others)
    }

    fn consume(&mut self, role: &Role, unreserved: &Resources) {
        let u = scalars(unreserved);
        self.available = self.available.saturating_sub(&u);
        if let Some(unmet) = self.unmet.get_mut(role) {
            let covered = unmet.intersection(&u);
            *unmet = unmet.saturating_sub(&covered);
            self.required = self.required.saturating_sub(&covered);
        }
    }
}

impl Allocator {
    /// An allocator with no agents, frameworks or roles.
    pub fn new(config: AllocatorConfig) -> Self {
        Allocator {
            config,
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
            free_fw_idx: Vec::new(),
            next_fw_idx: 0,
            filters: FilterBook::default(),
            roles: BTreeMap::new(),
            role_sorter: DrfSorter::new(),
            total: Resources::empty(),
            totals_dirty: false,
        }
    }

    /// The configuration.
    pub fn config(&self) -> &AllocatorConfig {
        &self.config
    }

    // ----- roles -------------------------------------------------------

    fn ensure_role(&mut self, role: &Role) -> &mut RoleState {
        if !self.roles.contains_key(role) {
            let mut state = RoleState::default();
            state.sorter.set_total(self.total.clone());
            self.roles.insert(role.clone(), state);
            self.role_sorter.add_client(role.clone());
        }
        // Just inserted if it was missing.
        self.roles.entry(role.clone()).or_default()
    }

    /// Forgets `role` if nothing refers to it any more.
    fn gc_role(&mut self, role: &Role) {
        if self.roles.get(role).is_some_and(RoleState::is_unused) {
            self.roles.remove(role);
            self.role_sorter.remove_client(role);
        }
    }

    /// Re-derives whether `framework` is eligible in `role` and whether the
    /// role has any eligible framework.
    ///
    /// Also keeps the [`FilterBook`]'s eligible counts: when the framework's
    /// eligibility in `role` changed, its filters there are re-counted.
    fn refresh(&mut self, framework: &FrameworkId, role: &Role) {
        let mut key = None;
        let mut eligible = false;
        if let Some(f) = self.frameworks.get_mut(framework) {
            eligible = f.eligible(role);
            key = Some(f.key(framework));
            if f.counted.contains(role) != eligible {
                if eligible {
                    f.counted.insert(role.clone());
                } else {
                    f.counted.remove(role);
                }
                if let Some(slots) = f.filter_slots.get_mut(role) {
                    let book = &mut self.filters;
                    slots.retain(|&slot| book.set_counted(slot, role, f.idx, eligible));
                    if slots.is_empty() {
                        f.filter_slots.remove(role);
                    }
                }
            }
        }
        let Some(state) = self.roles.get_mut(role) else {
            return;
        };
        if let Some(key) = &key {
            if eligible {
                state.sorter.activate(key);
            } else {
                state.sorter.deactivate(key);
            }
        }
        if state.sorter.active_len() > 0 {
            self.role_sorter.activate(role);
        } else {
            self.role_sorter.deactivate(role);
        }
    }

    /// Removes `framework` from `role`'s sorter when it is neither
    /// subscribed nor holding allocations there.
    fn maybe_drop_client(&mut self, framework: &FrameworkId, role: &Role) {
        if let Some(f) = self.frameworks.get(framework)
            && !f.roles.contains(role)
            && !f.allocated.contains_key(role)
            && let Some(state) = self.roles.get_mut(role)
        {
            state.sorter.remove_client(&f.key(framework));
        }
        self.refresh(framework, role);
        self.gc_role(role);
    }

    /// Sets the weight of `role`.
    pub fn set_weight(&mut self, role: Role, weight: Weight) {
        self.ensure_role(&role).weight = Some(weight);
        self.role_sorter.set_weight(&role, weight);
    }

    /// The weight of `role` (one unless set).
    pub fn weight(&self, role: &Role) -> Weight {
        self.roles.get(role).map_or(Weight::ONE, RoleState::weight)
    }

    /// Sets the quota of `role`. Rejects a guarantee that exceeds the limit
    /// and a quota on the default role `"*"`.
    pub fn set_quota(&mut self, role: Role, quota: Quota) -> Result<(), AllocatorError> {
        if role.is_default() {
            return Err(AllocatorError::InvalidQuota {
                role,
                reason: "the default role \"*\" cannot have a quota".to_owned(),
            });
        }
        if let Some(limit) = &quota.limit
            && !limit.contains_scalars(&quota.guarantee)
        {
            return Err(AllocatorError::InvalidQuota {
                role,
                reason: format!(
                    "guarantee [{}] exceeds limit [{}]",
                    scalars(&quota.guarantee),
                    scalars(limit)
                ),
            });
        }
        self.ensure_role(&role).quota = Some(quota);
        Ok(())
    }

    /// Removes the quota of `role`, if any.
    pub fn remove_quota(&mut self, role: &Role) {
        if let Some(state) = self.roles.get_mut(role) {
            state.quota = None;
        }
        self.gc_role(role);
    }

    // ----- frameworks --------------------------------------------------

    /// Adds a framework subscribed to `roles`. Adding a known framework
    /// updates its roles and activity instead.
    pub fn add_framework(&mut self, id: FrameworkId, roles: BTreeSet<Role>, active: bool) {
        if !self.frameworks.contains_key(&id) {
            let idx = match self.free_fw_idx.pop() {
                Some(idx) => idx,
                None => {
                    let idx = self.next_fw_idx;
                    self.next_fw_idx += 1;
                    idx
                }
            };
            self.frameworks.insert(id.clone(), FrameworkState::new(idx));
        }
        if let Some(fw) = self.frameworks.get_mut(&id) {
            fw.active = active;
        }
        self.set_framework_roles(&id, roles);
    }

    fn set_framework_roles(&mut self, id: &FrameworkId, roles: BTreeSet<Role>) {
        let Some(fw) = self.frameworks.get_mut(id) else {
            return;
        };
        let key = fw.key(id);
        let old = std::mem::replace(&mut fw.roles, roles.clone());
        fw.suppressed.retain(|r| roles.contains(r));
        let dropped: Vec<Role> = fw
            .filter_slots
            .keys()
            .filter(|r| !roles.contains(*r))
            .cloned()
            .collect();
        for role in dropped {
            self.drop_filters(id, &role);
        }
        for role in &roles {
            let state = self.ensure_role(role);
            state.subscribed.insert(id.clone());
            state.sorter.add_client(key.clone());
            self.refresh(id, role);
        }
        for role in old.difference(&roles) {
            if let Some(state) = self.roles.get_mut(role) {
                state.subscribed.remove(id);
            }
            self.maybe_drop_client(id, role);
        }
    }

    /// Changes the roles of a framework. Allocations in roles it leaves are
    /// kept until recovered; it gets no new offers in them.
    pub fn update_framework(
        &mut self,
        id: &FrameworkId,
        roles: BTreeSet<Role>,
    ) -> Result<(), AllocatorError> {
        if !self.frameworks.contains_key(id) {
            return Err(AllocatorError::UnknownFramework(id.clone()));
        }
        self.set_framework_roles(id, roles);
        Ok(())
    }

    /// Removes a framework: its allocations return to the free pool and its
    /// filters are dropped.
    pub fn remove_framework(&mut self, id: &FrameworkId) {
        let Some(fw) = self.frameworks.get(id) else {
            return;
        };
        let placements: Vec<(AgentId, Role)> = fw.placements.iter().cloned().collect();
        for (agent, role) in placements {
            let alloc = self
                .agents
                .get(&agent)
                .and_then(|a| a.allocations.get(&(id.clone(), role.clone())))
                .cloned();
            if let Some(alloc) = alloc {
                self.release(&agent, id, &role, &alloc);
            }
        }
        let filter_roles: Vec<Role> = self
            .frameworks
            .get(id)
            .map(|fw| fw.filter_slots.keys().cloned().collect())
            .unwrap_or_default();
        for role in filter_roles {
            self.drop_filters(id, &role);
        }
        let Some(fw) = self.frameworks.remove(id) else {
            return;
        };
        let key = fw.key(id);
        self.free_fw_idx.push(fw.idx);
        let roles: BTreeSet<Role> = fw
            .roles
            .union(&fw.allocated.keys().cloned().collect())
            .cloned()
            .collect();
        for role in roles {
            if let Some(state) = self.roles.get_mut(&role) {
                state.subscribed.remove(id);
                state.sorter.remove_client(&key);
            }
            self.refresh(id, &role);
            self.gc_role(&role);
        }
    }

    /// Drops the decline filters of `framework` in `role`.
    fn drop_filters(&mut self, framework: &FrameworkId, role: &Role) {
        let Some(fw) = self.frameworks.get_mut(framework) else {
            return;
        };
        let Some(slots) = fw.filter_slots.remove(role) else {
            return;
        };
        for slot in slots {
            self.filters.remove(slot, role, fw.idx);
        }
    }

    fn set_framework_active(&mut self, id: &FrameworkId, active: bool) {
        let Some(fw) = self.frameworks.get_mut(id) else {
            return;
        };
        fw.active = active;
        let roles: Vec<Role> = fw.roles.iter().cloned().collect();
        for role in roles {
            self.refresh(id, &role);
        }
    }

    /// Makes a framework eligible for offers again.
    pub fn activate_framework(&mut self, id: &FrameworkId) {
        self.set_framework_active(id, true);
    }

    /// Stops offers to a framework; its allocations and filters are kept.
    pub fn deactivate_framework(&mut self, id: &FrameworkId) {
        self.set_framework_active(id, false);
    }

    /// Stops offers to `framework` in `roles` (all its roles if `None`)
    /// until [`Allocator::revive`]. Unknown frameworks are ignored.
    pub fn suppress(&mut self, framework: &FrameworkId, roles: Option<&BTreeSet<Role>>) {
        let Some(fw) = self.frameworks.get_mut(framework) else {
            return;
        };
        let roles: Vec<Role> = match roles {
            Some(r) => r
                .iter()
                .filter(|r| fw.roles.contains(*r))
                .cloned()
                .collect(),
            None => fw.roles.iter().cloned().collect(),
        };
        fw.suppressed.extend(roles.iter().cloned());
        for role in roles {
            self.refresh(framework, &role);
        }
    }

    /// Un-suppresses `framework` in `roles` (all if `None`) and clears its
    /// decline filters for them. Unknown frameworks are ignored.
    pub fn revive(&mut self, framework: &FrameworkId, roles: Option<&BTreeSet<Role>>) {
        let Some(fw) = self.frameworks.get_mut(framework) else {
            return;
        };
        let (touched, filtered): (Vec<Role>, Vec<Role>) = match roles {
            Some(r) => {
                for role in r {
                    fw.suppressed.remove(role);
                }
                (r.iter().cloned().collect(), r.iter().cloned().collect())
            }
            None => (
                std::mem::take(&mut fw.suppressed).into_iter().collect(),
                fw.filter_slots.keys().cloned().collect(),
            ),
        };
        for role in filtered {
            self.drop_filters(framework, &role);
        }
        for role in touched {
            self.refresh(framework, &role);
        }
    }

    // ----- agents ------------------------------------------------------

    fn add_reservations(&mut self, total: &AgentResources) {
        for role in total.reserved.keys() {
            self.ensure_role(role).reservations += 1;
        }
    }

    fn remove_reservations(&mut self, total: &AgentResources) {
        for role in total.reserved.keys() {
            if let Some(state) = self.roles.get_mut(role) {
                state.reservations = state.reservations.saturating_sub(1);
            }
            self.gc_role(role);
        }
    }

    fn recompute_total(&mut self) {
        let mut t = Resources::empty();
        for a in self.agents.values() {
            t += &scalars(&a.total.total());
        }
        self.total = t;
        self.totals_dirty = true;
    }

    /// Adds an agent. Adding a known agent replaces it (its allocations are
    /// dropped first, as by [`Allocator::remove_agent`]).
    pub fn add_agent(&mut self, id: AgentId, total: AgentResources, active: bool) {
        if self.agents.contains_key(&id) {
            self.remove_agent(&id);
        }
        let total = total.normalized();
        self.add_reservations(&total);
        self.total += &scalars(&total.total());
        self.totals_dirty = true;
        let slot = self.filters.attach(&id);
        self.agents.insert(
            id,
            AgentState {
                free: total.clone(),
                total,
                active,
                allocations: BTreeMap::new(),
                slot,
            },
        );
    }

    /// Changes an agent's resources (e.g. after a reservation changed).
    /// Rejected if the new total does not cover what is allocated on it.
    pub fn update_agent_total(
        &mut self,
        id: &AgentId,
        total: AgentResources,
    ) -> Result<(), AllocatorError> {
        let total = total.normalized();
        let agent = self
            .agents
            .get(id)
            .ok_or_else(|| AllocatorError::UnknownAgent(id.clone()))?;
        let mut used_unreserved = Resources::empty();
        let mut used_reserved: BTreeMap<Role, Resources> = BTreeMap::new();
        for ((_, role), a) in &agent.allocations {
            used_unreserved += &a.unreserved;
            if !a.reserved.is_empty() {
                *used_reserved.entry(role.clone()).or_default() += &a.reserved;
            }
        }
        let below = |what: String| AllocatorError::TotalBelowAllocated {
            agent: id.clone(),
            reason: what,
        };
        let free_unreserved = total
            .unreserved
            .checked_sub(&used_unreserved)
            .ok_or_else(|| {
                below(format!(
                    "unreserved [{}] does not cover allocated [{}]",
                    total.unreserved, used_unreserved
                ))
            })?;
        let mut free_reserved = BTreeMap::new();
        for (role, r) in &total.reserved {
            let used = used_reserved.get(role).cloned().unwrap_or_default();
            let free = r.checked_sub(&used).ok_or_else(|| {
                below(format!(
                    "reservation of role {role:?} [{r}] does not cover allocated [{used}]",
                    role = role.as_str()
                ))
            })?;
            if !free.is_empty() {
                free_reserved.insert(role.clone(), free);
            }
        }
        if let Some((role, used)) = used_reserved
            .iter()
            .find(|(role, _)| !total.reserved.contains_key(*role))
        {
            return Err(below(format!(
                "role {:?} has [{used}] of reserved resources allocated but the new total has no reservation for it",
                role.as_str()
            )));
        }
        let old = agent.total.clone();
        self.remove_reservations(&old);
        self.add_reservations(&total);
        if let Some(agent) = self.agents.get_mut(id) {
            agent.free = AgentResources {
                unreserved: free_unreserved,
                reserved: free_reserved,
            };
            agent.total = total;
        }
        self.recompute_total();
        Ok(())
    }

    /// Removes an agent; allocations on it are dropped.
    pub fn remove_agent(&mut self, id: &AgentId) {
        let Some(agent) = self.agents.get(id) else {
            return;
        };
        let allocs: Vec<((FrameworkId, Role), Allocated)> = agent
            .allocations
            .iter()
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        for ((fw, role), alloc) in allocs {
            self.release(id, &fw, &role, &alloc);
        }
        if let Some(agent) = self.agents.remove(id) {
            self.remove_reservations(&agent.total);
            self.filters.detach(agent.slot);
        }
        self.recompute_total();
    }

    /// Makes an agent eligible for offers again (after a drain).
    pub fn activate_agent(&mut self, id: &AgentId) {
        if let Some(a) = self.agents.get_mut(id) {
            a.active = true;
        }
    }

    /// Drains an agent: no new offers on it; existing allocations are kept.
    pub fn deactivate_agent(&mut self, id: &AgentId) {
        if let Some(a) = self.agents.get_mut(id) {
            a.active = false;
        }
    }

    // ----- allocation bookkeeping --------------------------------------

    /// Moves `alloc` from the agent's free pool to `framework` in `role`.
    /// The caller has checked that the free pool holds it.
    fn record(
        &mut self,
        agent_id: &AgentId,
        framework: &FrameworkId,
        role: &Role,
        alloc: &Allocated,
    ) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        agent.free.unreserved = agent.free.unreserved.saturating_sub(&alloc.unreserved);
        if !alloc.reserved.is_empty()
            && let Some(r) = agent.free.reserved.get_mut(role)
        {
            *r = r.saturating_sub(&alloc.reserved);
            if r.is_empty() {
                agent.free.reserved.remove(role);
            }
        }
        let key = (framework.clone(), role.clone());
        let entry = agent.allocations.entry(key).or_default();
        entry.unreserved += &alloc.unreserved;
        entry.reserved += &alloc.reserved;

        let amount = scalars(&alloc.total());
        let mut key = None;
        if let Some(fw) = self.frameworks.get_mut(framework) {
            *fw.allocated.entry(role.clone()).or_default() += &amount;
            fw.placements.insert((agent_id.clone(), role.clone()));
            key = Some(fw.key(framework));
        }
        if !self.roles.contains_key(role) {
            self.ensure_role(role);
        }
        if let Some(state) = self.roles.get_mut(role) {
            state.allocated += &amount;
            if let Some(key) = key {
                if !state.sorter.contains(&key) {
                    state.sorter.add_client(key.clone());
                }
                state.sorter.allocated(&key, &amount);
            }
        }
        self.role_sorter.allocated(role, &amount);
        self.refresh(framework, role);
    }

    /// Returns `alloc` (which must be part of the allocation) to the free
    /// pool.
    fn release(
        &mut self,
        agent_id: &AgentId,
        framework: &FrameworkId,
        role: &Role,
        alloc: &Allocated,
    ) {
        let Some(agent) = self.agents.get_mut(agent_id) else {
            return;
        };
        let key = (framework.clone(), role.clone());
        let Some(entry) = agent.allocations.get_mut(&key) else {
            return;
        };
        *entry = entry.saturating_sub(alloc);
        let now_empty = entry.is_empty();
        if now_empty {
            agent.allocations.remove(&key);
        }
        agent.free.unreserved += &alloc.unreserved;
        if !alloc.reserved.is_empty() {
            *agent.free.reserved.entry(role.clone()).or_default() += &alloc.reserved;
        }

        let amount = scalars(&alloc.total());
        let mut key = None;
        if let Some(fw) = self.frameworks.get_mut(framework) {
            key = Some(fw.key(framework));
            if let Some(a) = fw.allocated.get_mut(role) {
                *a = a.saturating_sub(&amount);
            }
            if now_empty {
                fw.placements.remove(&(agent_id.clone(), role.clone()));
                if !fw.placements.iter().any(|(_, r)| r == role) {
                    fw.allocated.remove(role);
                }
            }
        }
        if let Some(state) = self.roles.get_mut(role) {
            state.allocated = state.allocated.saturating_sub(&amount);
            if let Some(key) = &key {
                state.sorter.unallocated(key, &amount);
            }
        }
        self.role_sorter.unallocated(role, &amount);
        self.maybe_drop_client(framework, role);
    }

    /// Records usage that already exists (tasks found running after a
    /// master restart or an agent re-registration). Rejected if the agent
    /// or framework is unknown or the usage exceeds what is free.
    pub fn add_used(
        &mut self,
        agent: &AgentId,
        framework: &FrameworkId,
        role: &Role,
        used: &Allocated,
    ) -> Result<(), AllocatorError> {
        let a = self
            .agents
            .get(agent)
            .ok_or_else(|| AllocatorError::UnknownAgent(agent.clone()))?;
        if !self.frameworks.contains_key(framework) {
            return Err(AllocatorError::UnknownFramework(framework.clone()));
        }
        let free = Allocated {
            unreserved: a.free.unreserved.clone(),
            reserved: a.free_reserved(role).cloned().unwrap_or_default(),
        };
        if !free.contains(used) {
            return Err(AllocatorError::OverAllocation {
                agent: agent.clone(),
                framework: framework.clone(),
                role: role.clone(),
                wanted: format!(
                    "unreserved: {}; reserved: {}",
                    used.unreserved, used.reserved
                ),
                free: format!(
                    "unreserved: {}; reserved: {}",
                    free.unreserved, free.reserved
                ),
            });
        }
        if used.is_empty() {
            return Ok(());
        }
        self.record(agent, framework, role, used);
        Ok(())
    }

    /// Returns resources allocated to `framework` in `role` on `agent` to
    /// the free pool (a declined offer, a finished task). With a non-zero
    /// `refuse`, also installs a decline filter: the framework is not
    /// offered those resources (or less) of this agent in this role until
    /// `now + refuse`. Resources not actually allocated are ignored; unknown
    /// agents and frameworks are ignored (they may have been removed).
    pub fn recover(
        &mut self,
        agent: &AgentId,
        framework: &FrameworkId,
        role: &Role,
        resources: &Allocated,
        refuse: Option<Duration>,
        now: Time,
    ) {
        if !self.frameworks.contains_key(framework) {
            return;
        }
        let Some(a) = self.agents.get(agent) else {
            return;
        };
        let slot = a.slot;
        if let Some(held) = a.allocations.get(&(framework.clone(), role.clone())) {
            let actual = held.intersection(resources);
            if !actual.is_empty() {
                self.release(agent, framework, role, &actual);
            }
        }
        if let Some(d) = refuse
            && !d.is_zero()
            && let Some(fw) = self.frameworks.get_mut(framework)
        {
            let counted = fw.counted.contains(role);
            self.filters
                .add(slot, role, fw.idx, counted, resources.total(), now + d);
            match fw.filter_slots.get_mut(role) {
                Some(slots) => {
                    slots.insert(slot);
                }
                None => {
                    fw.filter_slots.insert(role.clone(), BTreeSet::from([slot]));
                }
            }
        }
    }

    // ----- the cycle ---------------------------------------------------

    fn sync_totals(&mut self) {
        if !self.totals_dirty {
            return;
        }
        self.role_sorter.set_total(self.total.clone());
        for state in self.roles.values_mut() {
            state.sorter.set_total(self.total.clone());
        }
        self.totals_dirty = false;
    }

    /// Drops filters expired at `now`. (Only memory: an expired filter
    /// refuses nothing anyway.)
    fn prune_filters(&mut self, now: Time) {
        self.filters.prune(now);
    }

    /// Runs one allocation cycle at time `now` and returns the new
    /// allocations; their resources are allocated to the frameworks until
    /// [`Allocator::recover`]ed. Deterministic: the same sequence of calls
    /// gives the same result.
    pub fn allocate(&mut self, now: Time) -> Vec<Allocation> {
        self.sync_totals();
        self.prune_filters(now);
        let mut out = CycleOutput::default();
        let mut marks = Marks::new(self.next_fw_idx);
        self.allocate_quota(now, &mut out, &mut marks);
        self.allocate_fair(now, &mut out, &mut marks);
        out.allocations
    }

    fn emit(
        &mut self,
        out: &mut CycleOutput,
        agent: AgentId,
        framework: FrameworkId,
        role: Role,
        alloc: Allocated,
        remember: bool,
    ) {
        self.record(&agent, &framework, &role, &alloc);
        // Stage 2 serves each (agent, role) once, so only stage-1
        // allocations can need merging; the index holds just those.
        if !out.index.is_empty() {
            let key = (agent.clone(), framework.clone(), role.clone());
            if let Some(&i) = out.index.get(&key)
                && let Some(prev) = out.allocations.get_mut(i)
            {
                prev.resources.unreserved += &alloc.unreserved;
                prev.resources.reserved += &alloc.reserved;
                return;
            }
        }
        if remember {
            out.index.insert(
                (agent.clone(), framework.clone(), role.clone()),
                out.allocations.len(),
            );
        }
        if self.config.offer_limit.is_some() {
            let count = self
                .frameworks
                .get(&framework)
                .map_or(0, |f| f.offers_out + 1);
            self.set_outstanding_offers(&framework, count);
        }
        out.allocations.push(Allocation {
            framework,
            agent,
            role,
            resources: alloc,
        });
    }

    /// Tells the allocator how many offers `framework` holds now (offers
    /// made by [`Allocator::allocate`] are counted by it; the caller reports
    /// the count after offers are accepted, declined or rescinded). Only
    /// matters with an [`AllocatorConfig::offer_limit`]. Unknown frameworks
    /// are ignored.
    pub fn set_outstanding_offers(&mut self, framework: &FrameworkId, count: usize) {
        let limit = self.config.offer_limit;
        let Some(fw) = self.frameworks.get_mut(framework) else {
            return;
        };
        fw.offers_out = count;
        let at_limit = limit.is_some_and(|l| count >= l);
        if fw.at_offer_limit != at_limit {
            fw.at_offer_limit = at_limit;
            let roles: Vec<Role> = fw.roles.iter().cloned().collect();
            for role in roles {
                self.refresh(framework, &role);
            }
        }
    }

    /// The first framework of `role` (DRF order) eligible for `offer` on
    /// the agent whose filters are in `slot`.
    ///
    /// The active clients of the role's sorter are exactly its eligible
    /// frameworks ([`Allocator::refresh`] keeps them so), so the walk only
    /// has to skip frameworks with a filter refusing the offer. If one
    /// group of filters covering the offer holds every eligible framework,
    /// nobody is visited. Otherwise the first few frameworks are checked
    /// one by one, and past those the refusing frameworks are marked once
    /// so that the rest of the walk is a lookup per framework.
    fn pick_framework(
        &self,
        role: &Role,
        slot: Slot,
        offer: &Allocated,
        now: Time,
        marks: &mut Marks,
    ) -> Option<FrameworkId> {
        /// Frameworks checked one by one before marking.
        const SHORT_WALK: usize = 16;
        let state = self.roles.get(role)?;
        let active = state.sorter.active_len();
        if active == 0 {
            return None;
        }
        let covering: Vec<&FilterGroup> = self.filters.covering(slot, role, offer).collect();
        let mut order = state.sorter.iter_sorted();
        if covering.is_empty() {
            return order.next().map(|k| self.picked(k, role));
        }
        if covering
            .iter()
            .any(|g| g.all_in_force(now) && g.eligible == active)
        {
            return None;
        }
        for key in order.by_ref().take(SHORT_WALK) {
            if !covering.iter().any(|g| g.refuses(key.idx, now)) {
                return Some(self.picked(key, role));
            }
        }
        marks.next();
        for g in &covering {
            for (&idx, e) in &g.frameworks {
                if now < e.expires {
                    marks.mark(idx);
                }
            }
        }
        order
            .find(|k| !marks.is_marked(k.idx))
            .map(|k| self.picked(k, role))
    }

    /// Whether every eligible framework of `role` refuses everything `role`
    /// could be offered on `agent` (its free unreserved resources and its
    /// reservation there): then no offer of `role` there finds a taker,
    /// whatever caps shape it, and [`Allocator::fair_offer`] need not build
    /// one. A shortcut only: `false` proves nothing.
    fn refused_whole(&self, agent: &AgentState, role: &Role, now: Time) -> bool {
        let Some(state) = self.roles.get(role) else {
            return true;
        };
        let active = state.sorter.active_len();
        active == 0
            || self
                .filters
                .covering_parts(
                    agent.slot,
                    role,
                    &agent.free.unreserved,
                    agent.free_reserved(role),
                )
                .any(|g| g.all_in_force(now) && g.eligible == active)
    }

    /// The id of a framework [`Allocator::pick_framework`] chose.
    fn picked(&self, key: &FwKey, role: &Role) -> FrameworkId {
        debug_assert!(
            self.frameworks
                .get(&key.id)
                .is_some_and(|f| f.idx == key.idx && f.eligible(role)),
            "sorter client {} active in {role} but not eligible",
            key.id
        );
        key.id.clone()
    }

    /// Stage 1: quota guarantees.
    fn allocate_quota(&mut self, now: Time, out: &mut CycleOutput, marks: &mut Marks) {
        let mut quota_roles: Vec<Role> = self
            .roles
            .iter()
            .filter(|(role, s)| {
                !s.unmet_guarantee().scalars_empty() && self.role_sorter.is_active(role)
            })
            .map(|(r, _)| r.clone())
            .collect();
        if quota_roles.is_empty() {
            return;
        }
        let agent_ids: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| a.active)
            .map(|(id, _)| id.clone())
            .collect();
        for agent_id in agent_ids {
            quota_roles.retain(|r| {
                self.roles
                    .get(r)
                    .is_some_and(|s| !s.unmet_guarantee().scalars_empty())
                    && self.role_sorter.is_active(r)
            });
            if quota_roles.is_empty() {
                return;
            }
            // DRF order among the quota roles, by weighted share then name.
            let mut ordered: Vec<(f64, Role)> = quota_roles
                .iter()
                .map(|r| (self.role_sorter.share(r).unwrap_or(0.0), r.clone()))
                .collect();
            ordered.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(&b.1)));
            for (_, role) in ordered {
                let Some(offer) = self.quota_offer(&agent_id, &role) else {
                    continue;
                };
                let Some(slot) = self.agents.get(&agent_id).map(|a| a.slot) else {
                    continue;
                };
                if let Some(fw) = self.pick_framework(&role, slot, &offer, now, marks) {
                    self.emit(out, agent_id.clone(), fw, role, offer, true);
                }
            }
        }
    }

    /// What stage 1 would offer `role` on `agent`: its reservation there
    /// (capped by its limit) plus unreserved resources up to its unmet
    /// guarantee, with the unreserved ports.
    fn quota_offer(&self, agent_id: &AgentId, role: &Role) -> Option<Allocated> {
        let agent = self.agents.get(agent_id)?;
        let state = self.roles.get(role)?;
        let need = state.unmet_guarantee();
        if need.scalars_empty() {
            return None;
        }
        let room = state.limit_room();
        let mut reserved = agent.free_reserved(role).cloned().unwrap_or_default();
        if let Some(room) = &room {
            reserved = cap_scalars(&reserved, room);
        }
        let mut cap = need.saturating_sub(&reserved);
        if let Some(room) = &room {
            cap = cap_scalars(&cap, &room.saturating_sub(&reserved));
        }
        let mut unreserved = cap_scalars(&agent.free.unreserved, &cap);
        if unreserved.scalars_empty() {
            unreserved.ports = PortRanges::new();
        }
        let offer = Allocated {
            unreserved,
            reserved,
        };
        self.config.allocatable(&offer).then_some(offer)
    }

    fn headroom(&self) -> Headroom {
        let mut h = Headroom::default();
        for (role, s) in &self.roles {
            let unmet = s.unmet_guarantee();
            if unmet.scalars_empty() {
                continue;
            }
            let mut own_free = Resources::empty();
            for a in self.agents.values().filter(|a| a.active) {
                if let Some(r) = a.free_reserved(role) {
                    own_free += &scalars(r);
                }
            }
            let unmet = unmet.saturating_sub(&own_free);
            if !unmet.scalars_empty() {
                h.required += &unmet;
                h.unmet.insert(role.clone(), unmet);
            }
        }
        if h.unmet.is_empty() {
            return h;
        }
        for a in self.agents.values().filter(|a| a.active) {
            h.available += &scalars(&a.free.unreserved);
        }
        h
    }

    /// What stage 2 would offer `role` on `agent`.
    fn fair_offer(
        &self,
        agent: &AgentState,
        role: &Role,
        headroom: &Headroom,
    ) -> Option<Allocated> {
        let state = self.roles.get(role)?;
        let room = state.limit_room();
        let mut reserved = agent.free_reserved(role).cloned().unwrap_or_default();
        let mut unreserved = agent.free.unreserved.clone();
        if let Some(room) = &room {
            reserved = cap_scalars(&reserved, room);
            unreserved = cap_scalars(&unreserved, &room.saturating_sub(&reserved));
        }
        if !headroom.unmet.is_empty() {
            unreserved = cap_scalars(&unreserved, &headroom.allowance(role));
        }
        if unreserved.scalars_empty() && !reserved.scalars_empty() {
            // Ports alone are not worth keeping back, but do not hand them
            // out without the scalars to use them.
            unreserved.ports = PortRanges::new();
        }
        let offer = Allocated {
            unreserved,
            reserved,
        };
        self.config.allocatable(&offer).then_some(offer)
    }

    /// Stage 2: fair sharing of what is left, whole agents at a time.
    fn allocate_fair(&mut self, now: Time, out: &mut CycleOutput, marks: &mut Marks) {
        if self.role_sorter.active_len() == 0 {
            return;
        }
        let mut headroom = self.headroom();
        let mut served: Vec<Role> = Vec::new();
        // Active agents by id. The scan runs over the map itself and stops
        // only at agents that get something: the others (all of them, when
        // everything is filtered) cost no clone and no lookup.
        let mut after: Option<AgentId> = None;
        loop {
            if self.role_sorter.active_len() == 0 {
                // Every framework is suppressed, filtered out or at its
                // offer limit (which can happen during the cycle).
                return;
            }
            let rest = match &after {
                None => self.agents.range::<AgentId, _>(..),
                Some(id) => self.agents.range((Excluded(id), Unbounded)),
            };
            let next = rest.filter(|(_, a)| a.active).find_map(|(id, agent)| {
                self.fair_candidate(agent, &[], &headroom, now, marks)
                    .map(|c| (id.clone(), c))
            });
            let Some((agent_id, first)) = next else {
                return;
            };
            served.clear();
            let mut candidate = Some(first);
            while let Some((role, fw, offer)) = candidate {
                headroom.consume(&role, &offer.unreserved);
                served.push(role.clone());
                self.emit(out, agent_id.clone(), fw, role, offer, false);
                candidate = self
                    .agents
                    .get(&agent_id)
                    .and_then(|agent| self.fair_candidate(agent, &served, &headroom, now, marks));
            }
            after = Some(agent_id);
        }
    }

    /// The next (role, framework, offer) on `agent` in stage 2, given the
    /// roles already `served` there this cycle.
    fn fair_candidate(
        &self,
        agent: &AgentState,
        served: &[Role],
        headroom: &Headroom,
        now: Time,
        marks: &mut Marks,
    ) -> Option<(Role, FrameworkId, Allocated)> {
        let unreserved_useful = self.config.is_allocatable(&agent.free.unreserved);
        let mut try_role = |role: &Role| -> Option<(Role, FrameworkId, Allocated)> {
            if served.contains(role) || self.refused_whole(agent, role, now) {
                return None;
            }
            let offer = self.fair_offer(agent, role, headroom)?;
            let fw = self.pick_framework(role, agent.slot, &offer, now, marks)?;
            Some((role.clone(), fw, offer))
        };
        if unreserved_useful {
            self.role_sorter.iter_sorted().find_map(try_role)
        } else {
            // Only reservations can still be offered: visit just the roles
            // reserving here, in DRF order.
            let mut roles: Vec<(f64, &Role)> = agent
                .free
                .reserved
                .keys()
                .filter(|r| self.role_sorter.is_active(r))
                .map(|r| (self.role_sorter.share(r).unwrap_or(0.0), r))
                .collect();
            if roles.is_empty() {
                return None;
            }
            roles.sort_by(|a, b| a.0.total_cmp(&b.0).then_with(|| a.1.cmp(b.1)));
            roles.into_iter().find_map(|(_, r)| try_role(r))
        }
    }

    // ----- introspection -----------------------------------------------

    /// What is free on `agent` (unreserved and per-role reserved), or
    /// `None` if the agent is unknown.
    pub fn free(&self, agent: &AgentId) -> Option<AgentResources> {
        self.agents.get(agent).map(|a| a.free.clone())
    }

    /// The total of `agent`, or `None` if unknown.
    pub fn agent_total(&self, agent: &AgentId) -> Option<&AgentResources> {
        self.agents.get(agent).map(|a| &a.total)
    }

    /// What `framework` holds on `agent` per role.
    pub fn allocations_on(&self, agent: &AgentId) -> Vec<(FrameworkId, Role, Allocated)> {
        self.agents
            .get(agent)
            .map(|a| {
                a.allocations
                    .iter()
                    .map(|((f, r), al)| (f.clone(), r.clone(), al.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Scalars allocated to `framework`, summed over agents and roles
    /// (ports are not summed across agents).
    pub fn allocated_to(&self, framework: &FrameworkId) -> Resources {
        let mut t = Resources::empty();
        if let Some(fw) = self.frameworks.get(framework) {
            for r in fw.allocated.values() {
                t += r;
            }
        }
        t
    }

    /// Scalars allocated to `role` over all agents.
    pub fn role_allocated(&self, role: &Role) -> Resources {
        self.roles
            .get(role)
            .map(|s| s.allocated.clone())
            .unwrap_or_default()
    }

    /// Every role that has a framework, weight, quota, reservation or
    /// allocation, by name.
    pub fn roles(&self) -> Vec<RoleInfo> {
        self.roles
            .iter()
            .map(|(role, s)| RoleInfo {
                role: role.clone(),
                weight: s.weight(),
                quota: s.quota.clone(),
                allocated: s.allocated.clone(),
                frameworks: s.subscribed.iter().cloned().collect(),
            })
            .collect()
    }

    /// `allocated_to(framework)` as a dominant share of the cluster total.
    pub fn dominant_share(&self, framework: &FrameworkId) -> f64 {
        self.allocated_to(framework).dominant_share(&self.total)
    }

    /// Sum of all agents' totals, scalars only (active or not).
    pub fn cluster_total(&self) -> Resources {
        self.total.clone()
    }

    /// Known agent ids.
    pub fn agent_ids(&self) -> impl Iterator<Item = &AgentId> + '_ {
        self.agents.keys()
    }

    /// Known framework ids.
    pub fn framework_ids(&self) -> impl Iterator<Item = &FrameworkId> + '_ {
        self.frameworks.keys()
    }

    /// Checks the bookkeeping: on every agent, free plus allocations equals
    /// the total, part by part; framework and role sums match. For tests
    /// and debugging; `O(agents × allocations)`.
    pub fn check_invariants(&self) -> Result<(), AllocatorError> {
        let bad = |s: String| Err(AllocatorError::Invariant(s));
        let mut fw_sums: BTreeMap<(FrameworkId, Role), Resources> = BTreeMap::new();
        let mut role_sums: BTreeMap<Role, Resources> = BTreeMap::new();
        for (id, a) in &self.agents {
            let mut unres = a.free.unreserved.clone();
            let mut res = a.free.reserved.clone();
            for ((fw, role), al) in &a.allocations {
                if al.is_empty() {
                    return bad(format!("empty allocation entry on {id} for {fw}/{role}"));
                }
                if !unres.ports.intersection(&al.unreserved.ports).is_empty() {
                    return bad(format!("port allocated twice on {id}"));
                }
                unres = unres
                    .checked_add(&al.unreserved)
                    .map_err(|e| AllocatorError::Invariant(e.to_string()))?;
                let r = res.entry(role.clone()).or_default();
                *r = r
                    .checked_add(&al.reserved)
                    .map_err(|e| AllocatorError::Invariant(e.to_string()))?;
                *fw_sums.entry((fw.clone(), role.clone())).or_default() += &scalars(&al.total());
                *role_sums.entry(role.clone()).or_default() += &scalars(&al.total());
                if !self
                    .frameworks
                    .get(fw)
                    .is_some_and(|f| f.placements.contains(&(id.clone(), role.clone())))
                {
                    return bad(format!(
                        "allocation of {fw}/{role} on {id} missing from placements"
                    ));
                }
            }
            res.retain(|_, r| !r.is_empty());
            if unres != a.total.unreserved {
                return bad(format!(
                    "agent {id}: free + allocated unreserved [{unres}] != total [{}]",
                    a.total.unreserved
                ));
            }
            if res != a.total.reserved {
                return bad(format!(
                    "agent {id}: free + allocated reservations != total"
                ));
            }
        }
        for (id, fw) in &self.frameworks {
            for (role, r) in &fw.allocated {
                let expect = fw_sums
                    .get(&(id.clone(), role.clone()))
                    .cloned()
                    .unwrap_or_default();
                if *r != expect {
                    return bad(format!(
                        "framework {id} role {role}: allocated [{r}] != sum [{expect}]"
                    ));
                }
            }
        }
        for (role, s) in &self.roles {
            let expect = role_sums.get(role).cloned().unwrap_or_default();
            if s.allocated != expect {
                return bad(format!(
                    "role {role}: allocated [{}] != sum [{expect}]",
                    s.allocated
                ));
            }
        }
        self.check_eligibility().or_else(bad)?;
        self.check_filters().or_else(bad)
    }

    /// The sorters' active clients are exactly the eligible frameworks,
    /// and framework indices are unique.
    fn check_eligibility(&self) -> Result<(), String> {
        let mut seen = BTreeSet::new();
        for (id, f) in &self.frameworks {
            if f.idx >= self.next_fw_idx || self.free_fw_idx.contains(&f.idx) {
                return Err(format!("framework {id}: index {} is free", f.idx));
            }
            if !seen.insert(f.idx) {
                return Err(format!("framework {id}: index {} reused", f.idx));
            }
            let eligible: BTreeSet<Role> =
                f.roles.iter().filter(|r| f.eligible(r)).cloned().collect();
            if eligible != f.counted {
                return Err(format!("framework {id}: counted roles are stale"));
            }
        }
        for (role, s) in &self.roles {
            for key in s.sorter.clients() {
                let Some(f) = self.frameworks.get(&key.id).filter(|f| f.idx == key.idx) else {
                    return Err(format!("role {role}: unknown sorter client {}", key.id));
                };
                if s.sorter.is_active(key) != f.eligible(role) {
                    return Err(format!(
                        "role {role}: {} active in the sorter is not eligibility",
                        key.id
                    ));
                }
            }
        }
        for (id, f) in &self.frameworks {
            for role in &f.roles {
                let active = self
                    .roles
                    .get(role)
                    .is_some_and(|s| s.sorter.is_active(&f.key(id)));
                if active != f.eligible(role) {
                    return Err(format!("framework {id}: sorter of {role} out of date"));
                }
            }
        }
        Ok(())
    }

    /// The filter book agrees with the agents and frameworks.
    fn check_filters(&self) -> Result<(), String> {
        self.filters.check()?;
        for (id, a) in &self.agents {
            if !self.filters.is_attached(a.slot, id) {
                return Err(format!("agent {id}: filter slot {} not attached", a.slot));
            }
        }
        let by_idx: BTreeMap<FwIdx, (&FrameworkId, &FrameworkState)> = self
            .frameworks
            .iter()
            .map(|(id, f)| (f.idx, (id, f)))
            .collect();
        for (slot, agent, role, g) in self.filters.groups() {
            for (idx, e) in &g.frameworks {
                let Some((id, f)) = by_idx.get(idx) else {
                    return Err(format!("filter on {agent} of unknown framework {idx}"));
                };
                if e.counted != f.counted.contains(role) {
                    return Err(format!("filter of {id} on {agent} role {role}: miscounted"));
                }
                if !f.filter_slots.get(role).is_some_and(|s| s.contains(&slot)) {
                    return Err(format!(
                        "filter of {id} on {agent} role {role}: not indexed"
                    ));
                }
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests;
