//! The allocator as it was before decline filters moved into a per-agent
//! book (commit 572c52c), kept as a reference model: `allocator_equivalence`
//! checks that the current allocator makes exactly the same decisions.
//! Only the types private to the allocator module are copied; the public
//! ones (resources, ids, `Allocated`, ...) are the crate's own.

#![allow(dead_code, clippy::unwrap_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use berth_scheduler_core::{
    AgentId, AgentResources, Allocated, Allocation, AllocatorConfig, AllocatorError, DrfSorter,
    FrameworkId, PortRanges, Quota, Resources, Role, RoleInfo, ScalarKind, Sorter, Time, Weight,
};

fn normalized(mut a: AgentResources) -> AgentResources {
    a.reserved.retain(|_, r| !r.is_empty());
    a
}

fn alloc_intersection(a: &Allocated, b: &Allocated) -> Allocated {
    Allocated {
        unreserved: a.unreserved.intersection(&b.unreserved),
        reserved: a.reserved.intersection(&b.reserved),
    }
}

fn alloc_saturating_sub(a: &Allocated, b: &Allocated) -> Allocated {
    Allocated {
        unreserved: a.unreserved.saturating_sub(&b.unreserved),
        reserved: a.reserved.saturating_sub(&b.reserved),
    }
}

#[derive(Clone, Debug)]
struct AgentState {
    total: AgentResources,
    free: AgentResources,
    active: bool,
    allocations: BTreeMap<(FrameworkId, Role), Allocated>,
}

impl AgentState {
    /// What `role` could be offered here before caps: its reservation and
    /// the unreserved pool.
    fn free_reserved(&self, role: &Role) -> Option<&Resources> {
        self.free.reserved.get(role)
    }
}

#[derive(Clone, Debug)]
struct Filter {
    resources: Resources,
    expires: Time,
}

#[derive(Clone, Debug, Default)]
struct FrameworkState {
    roles: BTreeSet<Role>,
    active: bool,
    suppressed: BTreeSet<Role>,
    /// Decline filters: role → agent → filters.
    filters: BTreeMap<Role, BTreeMap<AgentId, Vec<Filter>>>,
    /// Scalars allocated per role.
    allocated: BTreeMap<Role, Resources>,
    /// Where this framework holds allocations.
    placements: BTreeSet<(AgentId, Role)>,
}

impl FrameworkState {
    fn eligible(&self, role: &Role) -> bool {
        self.active && self.roles.contains(role) && !self.suppressed.contains(role)
    }

    /// Whether an active filter refuses `offer` of `role` on `agent`.
    fn filtered(&self, role: &Role, agent: &AgentId, offer: &Allocated, now: Time) -> bool {
        let Some(filters) = self.filters.get(role).and_then(|m| m.get(agent)) else {
            return false;
        };
        let total = offer.total();
        filters
            .iter()
            .any(|f| now < f.expires && f.resources.contains(&total))
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
    sorter: DrfSorter<FrameworkId>,
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
pub struct RefAllocator {
    config: AllocatorConfig,
    agents: BTreeMap<AgentId, AgentState>,
    frameworks: BTreeMap<FrameworkId, FrameworkState>,
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

impl RefAllocator {
    /// An allocator with no agents, frameworks or roles.
    pub fn new(config: AllocatorConfig) -> Self {
        RefAllocator {
            config,
            agents: BTreeMap::new(),
            frameworks: BTreeMap::new(),
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
    fn refresh(&mut self, framework: &FrameworkId, role: &Role) {
        let eligible = self
            .frameworks
            .get(framework)
            .is_some_and(|f| f.eligible(role));
        let Some(state) = self.roles.get_mut(role) else {
            return;
        };
        if eligible {
            state.sorter.activate(framework);
        } else {
            state.sorter.deactivate(framework);
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
        let holds = self
            .frameworks
            .get(framework)
            .is_some_and(|f| f.roles.contains(role) || f.allocated.contains_key(role));
        if !holds && let Some(state) = self.roles.get_mut(role) {
            state.sorter.remove_client(framework);
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
        self.frameworks.entry(id.clone()).or_default().active = active;
        self.set_framework_roles(&id, roles);
    }

    fn set_framework_roles(&mut self, id: &FrameworkId, roles: BTreeSet<Role>) {
        let Some(fw) = self.frameworks.get_mut(id) else {
            return;
        };
        let old = std::mem::replace(&mut fw.roles, roles.clone());
        fw.suppressed.retain(|r| roles.contains(r));
        fw.filters.retain(|r, _| roles.contains(r));
        for role in &roles {
            let state = self.ensure_role(role);
            state.subscribed.insert(id.clone());
            state.sorter.add_client(id.clone());
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
        let Some(fw) = self.frameworks.remove(id) else {
            return;
        };
        let roles: BTreeSet<Role> = fw
            .roles
            .union(&fw.allocated.keys().cloned().collect())
            .cloned()
            .collect();
        for role in roles {
            if let Some(state) = self.roles.get_mut(&role) {
                state.subscribed.remove(id);
                state.sorter.remove_client(id);
            }
            self.refresh(id, &role);
            self.gc_role(&role);
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
        let touched: Vec<Role> = match roles {
            Some(r) => {
                for role in r {
                    fw.suppressed.remove(role);
                    fw.filters.remove(role);
                }
                r.iter().cloned().collect()
            }
            None => {
                fw.filters.clear();
                std::mem::take(&mut fw.suppressed).into_iter().collect()
            }
        };
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
        let total = normalized(total);
        self.add_reservations(&total);
        self.total += &scalars(&total.total());
        self.totals_dirty = true;
        self.agents.insert(
            id,
            AgentState {
                free: total.clone(),
                total,
                active,
                allocations: BTreeMap::new(),
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
        let total = normalized(total);
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
        if let Some(fw) = self.frameworks.get_mut(framework) {
            *fw.allocated.entry(role.clone()).or_default() += &amount;
            fw.placements.insert((agent_id.clone(), role.clone()));
        }
        if !self.roles.contains_key(role) {
            self.ensure_role(role);
        }
        if let Some(state) = self.roles.get_mut(role) {
            state.allocated += &amount;
            if !state.sorter.contains(framework) {
                state.sorter.add_client(framework.clone());
            }
            state.sorter.allocated(framework, &amount);
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
        *entry = alloc_saturating_sub(entry, alloc);
        let now_empty = entry.is_empty();
        if now_empty {
            agent.allocations.remove(&key);
        }
        agent.free.unreserved += &alloc.unreserved;
        if !alloc.reserved.is_empty() {
            *agent.free.reserved.entry(role.clone()).or_default() += &alloc.reserved;
        }

        let amount = scalars(&alloc.total());
        if let Some(fw) = self.frameworks.get_mut(framework) {
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
            state.sorter.unallocated(framework, &amount);
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
        if let Some(held) = a.allocations.get(&(framework.clone(), role.clone())) {
            let actual = alloc_intersection(held, resources);
            if !actual.is_empty() {
                self.release(agent, framework, role, &actual);
            }
        }
        if let Some(d) = refuse
            && !d.is_zero()
            && let Some(fw) = self.frameworks.get_mut(framework)
        {
            fw.filters
                .entry(role.clone())
                .or_default()
                .entry(agent.clone())
                .or_default()
                .push(Filter {
                    resources: resources.total(),
                    expires: now + d,
                });
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

    fn prune_filters(&mut self, now: Time) {
        for fw in self.frameworks.values_mut() {
            if fw.filters.is_empty() {
                continue;
            }
            fw.filters.retain(|_, by_agent| {
                by_agent.retain(|_, fs| {
                    fs.retain(|f| now < f.expires);
                    !fs.is_empty()
                });
                !by_agent.is_empty()
            });
        }
    }

    /// Runs one allocation cycle at time `now` and returns the new
    /// allocations; their resources are allocated to the frameworks until
    /// [`Allocator::recover`]ed. Deterministic: the same sequence of calls
    /// gives the same result.
    pub fn allocate(&mut self, now: Time) -> Vec<Allocation> {
        self.sync_totals();
        self.prune_filters(now);
        let mut out = CycleOutput::default();
        self.allocate_quota(now, &mut out);
        self.allocate_fair(now, &mut out);
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
        out.allocations.push(Allocation {
            framework,
            agent,
            role,
            resources: alloc,
        });
    }

    /// The first framework of `role` (DRF order) eligible for `offer` on
    /// `agent`.
    fn pick_framework(
        &self,
        role: &Role,
        agent: &AgentId,
        offer: &Allocated,
        now: Time,
    ) -> Option<FrameworkId> {
        let state = self.roles.get(role)?;
        state
            .sorter
            .iter_sorted()
            .find(|fw| {
                self.frameworks
                    .get(*fw)
                    .is_some_and(|f| f.eligible(role) && !f.filtered(role, agent, offer, now))
            })
            .cloned()
    }

    /// Stage 1: quota guarantees.
    fn allocate_quota(&mut self, now: Time, out: &mut CycleOutput) {
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
                if let Some(fw) = self.pick_framework(&role, &agent_id, &offer, now) {
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
        self.config.is_allocatable(&offer.total()).then_some(offer)
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
        self.config.is_allocatable(&offer.total()).then_some(offer)
    }

    /// Stage 2: fair sharing of what is left, whole agents at a time.
    fn allocate_fair(&mut self, now: Time, out: &mut CycleOutput) {
        if self.role_sorter.active_len() == 0 {
            return;
        }
        let mut headroom = self.headroom();
        let agent_ids: Vec<AgentId> = self
            .agents
            .iter()
            .filter(|(_, a)| a.active)
            .map(|(id, _)| id.clone())
            .collect();
        let mut served: Vec<Role> = Vec::new();
        for agent_id in agent_ids {
            served.clear();
            while let Some((role, fw, offer)) =
                self.fair_candidate(&agent_id, &served, &headroom, now)
            {
                headroom.consume(&role, &offer.unreserved);
                served.push(role.clone());
                self.emit(out, agent_id.clone(), fw, role, offer, false);
            }
        }
    }

    /// The next (role, framework, offer) on `agent_id` in stage 2.
    fn fair_candidate(
        &self,
        agent_id: &AgentId,
        served: &[Role],
        headroom: &Headroom,
        now: Time,
    ) -> Option<(Role, FrameworkId, Allocated)> {
        let agent = self.agents.get(agent_id)?;
        let unreserved_useful = self.config.is_allocatable(&agent.free.unreserved);
        let try_role = |role: &Role| -> Option<(Role, FrameworkId, Allocated)> {
            if served.contains(role) {
                return None;
            }
            let offer = self.fair_offer(agent, role, headroom)?;
            let fw = self.pick_framework(role, agent_id, &offer, now)?;
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
        Ok(())
    }
}
