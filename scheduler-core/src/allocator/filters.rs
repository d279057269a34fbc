//! Decline filters, stored by agent so that a cycle visiting an agent finds
//! all of that agent's filters in one place.
//!
//! A filter says: framework `f` is not offered, in role `r` on agent `a`,
//! anything contained in `resources` until `expires`. Frameworks usually
//! decline the same thing (what was free on the agent), so filters of one
//! (agent, role) are grouped by their resources; a group maps each
//! framework to its latest expiry (two filters with the same resources
//! refuse exactly what the later-expiring one refuses).
//!
//! Each group counts its frameworks that are eligible for offers in the
//! role. When that count equals the number of eligible frameworks of the
//! role and the group covers an offer, every eligible framework refuses it:
//! the cycle skips the (agent, role) without visiting the frameworks. This
//! is what keeps a cycle cheap when everyone has declined everything (Mesos's
//! DeclineOffers benchmark). The count is kept by the allocator: it tells
//! the book when a framework's eligibility in a role changes
//! ([`FilterBook::set_counted`]).
//!
//! Agents are addressed by a dense slot. A slot outlives its agent while it
//! holds filters (filters are keyed by agent id: an agent removed and added
//! again keeps them) and is reused once it is empty and its agent is gone.

use std::collections::BTreeMap;

use super::Allocated;
use crate::ids::{AgentId, Role};
use crate::resources::{Resources, Scalar, ScalarKind};
use crate::time::Time;

/// Dense handle of a framework inside the allocator.
pub(super) type FwIdx = u32;

/// Dense handle of an agent's filters.
pub(super) type Slot = u32;

/// One framework's filter in a group.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Entry {
    /// The filter refuses offers until this time (exclusive).
    pub(super) expires: Time,
    /// Whether the framework is eligible in the role (counted in
    /// [`FilterGroup::eligible`]).
    pub(super) counted: bool,
}

/// Filters of one (agent, role) with the same resources.
#[derive(Clone, Debug)]
pub(super) struct FilterGroup {
    /// Offers contained in these resources are refused.
    pub(super) resources: Resources,
    /// Framework → its filter.
    pub(super) frameworks: BTreeMap<FwIdx, Entry>,
    /// How many entries are `counted`.
    pub(super) eligible: usize,
    /// No entry expires before this.
    pub(super) min_expires: Time,
}

impl FilterGroup {
    /// Whether framework `fw` refuses what this group covers at `now`.
    pub(super) fn refuses(&self, fw: FwIdx, now: Time) -> bool {
        self.frameworks.get(&fw).is_some_and(|e| now < e.expires)
    }

    /// Whether every entry is in force at `now`.
    pub(super) fn all_in_force(&self, now: Time) -> bool {
        now < self.min_expires
    }

    fn recompute(&mut self) {
        self.eligible = self.frameworks.values().filter(|e| e.counted).count();
        self.min_expires = self
            .frameworks
            .values()
            .map(|e| e.expires)
            .min()
            .unwrap_or(Time::ZERO);
    }
}

#[derive(Clone, Debug, Default)]
struct FilterSlot {
    /// The agent the filters are about (meaningless while free).
    agent: Option<AgentId>,
    /// Whether the agent is known to the allocator.
    present: bool,
    /// Role → groups.
    roles: BTreeMap<Role, Vec<FilterGroup>>,
}

/// All decline filters. See the module docs.
#[derive(Clone, Debug, Default)]
pub(super) struct FilterBook {
    slots: Vec<FilterSlot>,
    free: Vec<Slot>,
    by_agent: BTreeMap<AgentId, Slot>,
    /// No filter expires before this; `None` if there are none. Lets
    /// [`FilterBook::prune`] return at once in the common case.
    next_expiry: Option<Time>,
}

impl FilterBook {
    /// The slot of `agent`, which has just been added to the allocator.
    pub(super) fn attach(&mut self, agent: &AgentId) -> Slot {
        if let Some(&slot) = self.by_agent.get(agent) {
            if let Some(s) = self.slots.get_mut(slot as usize) {
                s.present = true;
            }
            return slot;
        }
        let fresh = FilterSlot {
            agent: Some(agent.clone()),
            present: true,
            roles: BTreeMap::new(),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(s) = self.slots.get_mut(slot as usize) {
                    *s = fresh;
                }
                slot
            }
            None => {
                self.slots.push(fresh);
                Slot::try_from(self.slots.len() - 1).unwrap_or(Slot::MAX)
            }
        };
        self.by_agent.insert(agent.clone(), slot);
        slot
    }

    /// The agent of `slot` has been removed. Its filters are kept (and the
    /// slot with them) until they expire or are revived.
    pub(super) fn detach(&mut self, slot: Slot) {
        if let Some(s) = self.slots.get_mut(slot as usize) {
            s.present = false;
        }
        self.maybe_free(slot);
    }

    fn maybe_free(&mut self, slot: Slot) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        if s.present || !s.roles.is_empty() {
            return;
        }
        if let Some(agent) = s.agent.take() {
            self.by_agent.remove(&agent);
            self.free.push(slot);
        }
    }

    /// Installs a filter of framework `fw` (`counted` as eligible in
    /// `role` or not) on `slot`.
    pub(super) fn add(
        &mut self,
        slot: Slot,
        role: &Role,
        fw: FwIdx,
        counted: bool,
        resources: Resources,
        expires: Time,
    ) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let groups = match s.roles.get_mut(role) {
            Some(g) => g,
            None => s.roles.entry(role.clone()).or_default(),
        };
        let group = match groups.iter().position(|g| g.resources == resources) {
            Some(i) => &mut groups[i],
            None => {
                groups.push(FilterGroup {
                    resources,
                    frameworks: BTreeMap::new(),
                    eligible: 0,
                    min_expires: expires,
                });
                let last = groups.len() - 1;
                &mut groups[last]
            }
        };
        match group.frameworks.get_mut(&fw) {
            Some(e) => e.expires = e.expires.max(expires),
            None => {
                group.frameworks.insert(fw, Entry { expires, counted });
                if counted {
                    group.eligible += 1;
                }
            }
        }
        group.min_expires = group.min_expires.min(expires);
        self.next_expiry = Some(self.next_expiry.map_or(expires, |t| t.min(expires)));
    }

    /// Removes the filters of `fw` in `role` on `slot`.
    pub(super) fn remove(&mut self, slot: Slot, role: &Role, fw: FwIdx) {
        let Some(s) = self.slots.get_mut(slot as usize) else {
            return;
        };
        let Some(groups) = s.roles.get_mut(role) else {
            return;
        };
        for g in groups.iter_mut() {
            if let Some(e) = g.frameworks.remove(&fw)
                && e.counted
            {
                g.eligible -= 1;
            }
        }
        groups.retain(|g| !g.frameworks.is_empty());
        if groups.is_empty() {
            s.roles.remove(role);
            self.maybe_free(slot);
        }
    }

    /// Marks the filters of `fw` in `role` on `slot` as counted or not.
    /// Returns whether `fw` has filters there.
    pub(super) fn set_counted(
        &mut self,
        slot: Slot,
        role: &Role,
        fw: FwIdx,
        counted: bool,
    ) -> bool {
        let Some(groups) = self
            .slots
            .get_mut(slot as usize)
            .and_then(|s| s.roles.get_mut(role))
        else {
            return false;
        };
        let mut found = false;
        for g in groups.iter_mut() {
            if let Some(e) = g.frameworks.get_mut(&fw) {
                found = true;
                if e.counted != counted {
                    e.counted = counted;
                    if counted {
                        g.eligible += 1;
                    } else {
                        g.eligible -= 1;
                    }
                }
            }
        }
        found
    }

    /// The groups of (`slot`, `role`) whose resources contain all of
    /// `offer`.
    pub(super) fn covering<'a>(
        &'a self,
        slot: Slot,
        role: &Role,
        offer: &'a Allocated,
    ) -> impl Iterator<Item = &'a FilterGroup> + 'a {
        self.slots
            .get(slot as usize)
            .and_then(|s| s.roles.get(role))
            .into_iter()
            .flatten()
            .filter(move |g| offer.within(&g.resources))
    }

    /// The groups of (`slot`, `role`) whose resources contain
    /// `unreserved` plus `reserved`.
    pub(super) fn covering_parts<'a>(
        &'a self,
        slot: Slot,
        role: &Role,
        unreserved: &'a Resources,
        reserved: Option<&'a Resources>,
    ) -> impl Iterator<Item = &'a FilterGroup> + 'a {
        self.slots
            .get(slot as usize)
            .and_then(|s| s.roles.get(role))
            .into_iter()
            .flatten()
            .filter(move |g| {
                ScalarKind::ALL.iter().all(|&k| {
                    let want = unreserved
                        .scalar(k)
                        .saturating_add(reserved.map_or(Scalar::ZERO, |r| r.scalar(k)));
                    g.resources.scalar(k) >= want
                }) && g.resources.ports.contains(&unreserved.ports)
                    && reserved.is_none_or(|r| g.resources.ports.contains(&r.ports))
            })
    }

    /// Drops filters expired at `now`.
    pub(super) fn prune(&mut self, now: Time) {
        match self.next_expiry {
            Some(t) if t <= now => {}
            _ => return,
        }
        let mut next: Option<Time> = None;
        let mut emptied = Vec::new();
        for (i, s) in self.slots.iter_mut().enumerate() {
            if s.roles.is_empty() {
                continue;
            }
            s.roles.retain(|_, groups| {
                for g in groups.iter_mut() {
                    if now < g.min_expires {
                        continue;
                    }
                    g.frameworks.retain(|_, e| now < e.expires);
                    g.recompute();
                }
                groups.retain(|g| !g.frameworks.is_empty());
                for g in groups.iter() {
                    next = Some(next.map_or(g.min_expires, |t| t.min(g.min_expires)));
                }
                !groups.is_empty()
            });
            if s.roles.is_empty() {
                emptied.push(Slot::try_from(i).unwrap_or(Slot::MAX));
            }
        }
        self.next_expiry = next;
        for slot in emptied {
            self.maybe_free(slot);
        }
    }

    /// Every (slot, agent, role, group), for invariant checks.
    pub(super) fn groups(&self) -> impl Iterator<Item = (Slot, &AgentId, &Role, &FilterGroup)> {
        self.slots.iter().enumerate().flat_map(|(i, s)| {
            let slot = Slot::try_from(i).unwrap_or(Slot::MAX);
            s.agent.iter().flat_map(move |agent| {
                s.roles
                    .iter()
                    .flat_map(move |(role, gs)| gs.iter().map(move |g| (slot, agent, role, g)))
            })
        })
    }

    /// Checks the book's own bookkeeping: counts, expiry bounds, the slot
    /// index and the free list.
    pub(super) fn check(&self) -> Result<(), String> {
        for (slot, agent, role, g) in self.groups() {
            let where_ = || format!("filters of {agent} (slot {slot}) role {role}");
            if g.frameworks.is_empty() {
                return Err(format!("{}: empty group", where_()));
            }
            let counted = g.frameworks.values().filter(|e| e.counted).count();
            if counted != g.eligible {
                return Err(format!(
                    "{}: eligible count {} != {counted}",
                    where_(),
                    g.eligible
                ));
            }
            if g.frameworks.values().any(|e| e.expires < g.min_expires) {
                return Err(format!("{}: min_expires too late", where_()));
            }
            if self.next_expiry.is_none_or(|t| t > g.min_expires) {
                return Err(format!("{}: next_expiry too late", where_()));
            }
        }
        for (i, s) in self.slots.iter().enumerate() {
            let slot = Slot::try_from(i).unwrap_or(Slot::MAX);
            match &s.agent {
                Some(agent) => {
                    if self.by_agent.get(agent) != Some(&slot) {
                        return Err(format!("slot {slot} of {agent} not indexed"));
                    }
                    if !s.present && s.roles.is_empty() {
                        return Err(format!("slot {slot} of {agent} should be free"));
                    }
                    if self.free.contains(&slot) {
                        return Err(format!("slot {slot} of {agent} is on the free list"));
                    }
                }
                None => {
                    if !self.free.contains(&slot) {
                        return Err(format!("slot {slot} is lost"));
                    }
                }
            }
        }
        if self.by_agent.len() + self.free.len() != self.slots.len() {
            return Err("slot index and free list do not add up".to_owned());
        }
        Ok(())
    }

    /// Whether `slot` is in use for `agent` and marked present.
    pub(super) fn is_attached(&self, slot: Slot, agent: &AgentId) -> bool {
        self.slots
            .get(slot as usize)
            .is_some_and(|s| s.present && s.agent.as_ref() == Some(agent))
    }
}
