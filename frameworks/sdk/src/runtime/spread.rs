//! Placement of long-running tasks: one at a time, spread over agents,
//! with host ports taken from the offer and a framework's own rule.
//!
//! Batch work packs ([`pack_offers`](crate::pack_offers)); a service's
//! instances should rather spread (one agent's loss takes few of them), may
//! need host ports the agent chooses ("any free port", Marathon's
//! `hostPort: 0`), and obey rules that depend on where the group's other
//! instances are (Marathon's `UNIQUE`, `GROUP_BY`, `MAX_PER`, …). A task
//! wanted with a [`Placement`] goes through this pass:
//!
//! - candidates are the offers that fit its scalars, hold `ports` free
//!   ports, allow its [`Constraint`]s and its rule, given where the group's
//!   tasks run ([`Placement::existing`]) plus those placed in this round;
//! - of those, the offer whose agent runs the fewest tasks of the group
//!   wins (ties: the first offer);
//! - its ports are the lowest free ones of the offer: they go into the
//!   task's resources, into the container's port mappings whose host port
//!   is 0 (in order), and into the environment as `PORT0`…, `PORT` (the
//!   first) and `PORTS` (all, comma-separated), as Marathon sets them.
//!
//! Pure and deterministic, like the rest of [`decide`](super::decide).

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;

use berth_proto as pb;
use berth_proto::convert::{resources_from_proto_opt, resources_to_proto};
use berth_scheduler_core::{PortRanges, Resources};

use super::decide::{Constraint, Wanted};
use crate::OfferId;

/// An agent as a placement rule sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Place {
    /// The agent's id.
    pub agent_id: String,
    /// The agent's hostname.
    pub hostname: String,
    /// The agent's attributes, by name.
    pub attributes: BTreeMap<String, String>,
}

impl Place {
    /// The agent of an offer.
    #[must_use]
    pub fn of_offer(offer: &pb::Offer) -> Place {
        Place {
            agent_id: offer.agent_id.clone(),
            hostname: offer.hostname.clone(),
            attributes: offer
                .attributes
                .iter()
                .map(|a| (a.name.clone(), a.value.clone()))
                .collect(),
        }
    }
}

/// A framework's placement rule: may a task of the group go to
/// `candidate`, given the agents the group's tasks run on (one entry per
/// task)?
pub type Rule = Arc<dyn Fn(&Place, &[Place]) -> bool + Send + Sync>;

/// How a task is placed by the spread pass (see the module docs).
#[derive(Clone)]
pub struct Placement {
    /// The group whose tasks spread together and that the rule counts (an
    /// app's id).
    pub group: String,
    /// How many host ports the task takes from the offer.
    pub ports: u32,
    /// Where the group's tasks run already, one entry per task.
    pub existing: Vec<Place>,
    /// The rule, if the framework has one.
    pub rule: Option<Rule>,
    /// Which of the ports taken from the offer (0 for the first) the
    /// task's HTTP or TCP health check probes (Marathon's `portIndex`).
    pub health_port: Option<u32>,
}

impl Placement {
    /// A placement in `group` with no ports, no rule and nothing running.
    #[must_use]
    pub fn new(group: impl Into<String>) -> Self {
        Placement {
            group: group.into(),
            ports: 0,
            existing: Vec::new(),
            rule: None,
            health_port: None,
        }
    }
}

impl fmt::Debug for Placement {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Placement")
            .field("group", &self.group)
            .field("ports", &self.ports)
            .field("existing", &self.existing.len())
            .field("rule", &self.rule.as_ref().map(|_| "…"))
            .finish()
    }
}

impl PartialEq for Placement {
    fn eq(&self, other: &Self) -> bool {
        self.group == other.group
            && self.ports == other.ports
            && self.existing == other.existing
            && self.health_port == other.health_port
            && match (&self.rule, &other.rule) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
    }
}

/// What is left of one offer during the pass.
struct Left<'a> {
    offer: &'a pb::Offer,
    free: Resources,
    place: Place,
    tasks: Vec<pb::TaskInfo>,
}

/// What the spread pass placed.
#[derive(Debug, Default)]
pub(super) struct Spread {
    /// The tasks to launch per offer.
    pub launches: Vec<(OfferId, Vec<pb::TaskInfo>)>,
    /// The offers that got a task: used up (one accept per offer).
    pub used: Vec<String>,
    /// The tasks that found no offer.
    pub unplaced: Vec<pb::TaskInfo>,
}

/// Places the `waiting` tasks that have a [`Placement`], in order, into
/// `offers`.
/// How many ports of `free` are left once `taken` are.
fn free_ports(free: &PortRanges, taken: &PortRanges) -> u64 {
    if taken.is_empty() {
        // The common case (any free ports): no set to build.
        free.count()
    } else {
        free.difference(taken).count()
    }
}

pub(super) fn place_spread(offers: &[pb::Offer], waiting: &[&Wanted]) -> Spread {
    let mut left: Vec<Left<'_>> = offers
        .iter()
        .filter_map(|o| {
            let free = resources_from_proto_opt(o.resources.as_ref()).ok()?;
            Some(Left {
                offer: o,
                free,
                place: Place::of_offer(o),
                tasks: Vec::new(),
            })
        })
        .collect();
    // Per group, where its tasks are placed in this round.
    let mut placed: BTreeMap<&str, Vec<Place>> = BTreeMap::new();
    let mut unplaced = Vec::new();
    for w in waiting {
        let Some(p) = &w.placement else { continue };
        let Ok(need) = resources_from_proto_opt(w.task.resources.as_ref()) else {
            unplaced.push(w.task.clone());
            continue;
        };
        let mut group: Vec<Place> = p.existing.clone();
        group.extend(placed.get(p.group.as_str()).into_iter().flatten().cloned());
        let best = left
            .iter()
            .enumerate()
            .filter(|(_, l)| {
                l.free.contains(&need)
                    && free_ports(&l.free.ports, &need.ports) >= u64::from(p.ports)
                    && w.constraints.iter().all(|c| allows(c, l.offer))
                    && p.rule.as_ref().is_none_or(|rule| rule(&l.place, &group))
            })
            .min_by_key(|(i, l)| {
                let on_agent = group
                    .iter()
                    .filter(|g| g.agent_id == l.place.agent_id)
                    .count();
                (on_agent, *i)
            })
            .map(|(i, _)| i);
        let Some(i) = best else {
            unplaced.push(w.task.clone());
            continue;
        };
        let l = &mut left[i];
        let ports = l
            .free
            .ports
            .difference(&need.ports)
            .take_first(u64::from(p.ports))
            .unwrap_or_default();
        let taken = need.ports.union(&ports);
        let rest = l.free.ports.difference(&taken);
        l.free = l.free.saturating_sub(&need);
        l.free.ports = rest;
        let mut task = w.task.clone();
        task.agent_id.clone_from(&l.offer.agent_id);
        assign_ports(&mut task, &need, &ports, p.health_port);
        l.tasks.push(task);
        placed
            .entry(p.group.as_str())
            .or_default()
            .push(l.place.clone());
    }
    let mut launches = Vec::new();
    let mut used = Vec::new();
    for l in left {
        if l.tasks.is_empty() {
            continue;
        }
        used.push(l.offer.id.clone());
        match OfferId::new(l.offer.id.as_str()) {
            Ok(id) => launches.push((id, l.tasks)),
            Err(_) => unplaced.extend(l.tasks),
        }
    }
    Spread {
        launches,
        used,
        unplaced,
    }
}

fn allows(c: &Constraint, offer: &pb::Offer) -> bool {
    c.allows(&offer.attributes)
}

/// Puts the chosen host `ports` into the task: its resources, its
/// container's port mappings with host port 0 (in order), its environment,
/// and its health check's port (the `health_port`-th).
fn assign_ports(
    task: &mut pb::TaskInfo,
    need: &Resources,
    ports: &PortRanges,
    health_port: Option<u32>,
) {
    if ports.is_empty() {
        return;
    }
    let list: Vec<u16> = ports.ranges().iter().flat_map(|&(a, b)| a..=b).collect();
    let probed = health_port.and_then(|i| list.get(usize::try_from(i).ok()?));
    if let (Some(port), Some(check)) = (probed, task.health_check.as_mut()) {
        if let Some(http) = check.http.as_mut() {
            http.port = u32::from(*port);
        }
        if let Some(tcp) = check.tcp.as_mut() {
            tcp.port = u32::from(*port);
        }
    }
    task.resources = Some(resources_to_proto(
        &need.clone().with_ports(need.ports.union(ports)),
    ));
    let mut next = list.iter();
    if let Some(container) = task.container.as_mut() {
        for m in container
            .port_mappings
            .iter_mut()
            .filter(|m| m.host_port == 0)
        {
            match next.next() {
                Some(p) => m.host_port = u32::from(*p),
                None => break,
            }
        }
    }
    let command = task.command.get_or_insert_with(Default::default);
    for (i, p) in list.iter().enumerate() {
        command.env.insert(format!("PORT{i}"), p.to_string());
    }
    if let Some(first) = list.first() {
        command.env.insert("PORT".into(), first.to_string());
    }
    let all: Vec<String> = list.iter().map(ToString::to_string).collect();
    command.env.insert("PORTS".into(), all.join(","));
}

#[cfg(test)]
mod tests;
