//! Offer packing: decide which of your tasks go into which offers.
//!
//! [`pack_offers`] runs `berth_scheduler_core::placement::pack` over the
//! offers' resources and the tasks' resources, and returns a [`PackPlan`]:
//! the tasks to launch per offer (with `agent_id` filled in), the offers
//! that received nothing (decline them) and the tasks that did not fit
//! (keep them for the next offers). It places the tasks in the order given,
//! so earlier tasks win when the offers are short. [`pack_offers_best`]
//! packs the same way into a [`PackPlan`], but chooses the order itself
//! (`berth_scheduler_core::placement::repack`): the batch takes fewer
//! offers, at the price of that priority. [`explain_unplaced`] says why a task
//! fits in none of the offers; [`pending_tasks`] turns the unplaced tasks
//! and their explanations into the pending work to publish with
//! [`Framework::update_pending`](crate::Framework::update_pending).
//! [`shell_task`] builds a `TaskInfo`.

use berth_proto as pb;
use berth_proto::convert::{resources_from_proto, resources_from_proto_opt, resources_to_proto};
use berth_scheduler_core::Packing;
use berth_scheduler_core::placement::{Explanation, Strategy, explain, pack, repack};
use berth_scheduler_core::{Resources, TaskId};

use crate::{OfferId, SdkError};

/// The result of [`pack_offers`].
#[derive(Debug, Clone, PartialEq, Default)]
pub struct PackPlan {
    /// Per offer that received tasks, in offer order: the offer id and the
    /// tasks to launch in it, in the order given. Each is one
    /// [`Framework::accept`](crate::Framework::accept) call.
    pub launches: Vec<(OfferId, Vec<pb::TaskInfo>)>,
    /// Ids of the offers that received no task, in offer order; decline
    /// them (or hold them briefly).
    pub unused: Vec<OfferId>,
    /// Tasks that fit in no offer, in the order given.
    pub unplaced: Vec<pb::TaskInfo>,
}

impl PackPlan {
    /// The number of tasks placed into offers.
    #[must_use]
    pub fn placed(&self) -> usize {
        self.launches.iter().map(|(_, tasks)| tasks.len()).sum()
    }
}

/// The validated resources of a task.
///
/// # Errors
/// [`SdkError::InvalidTask`] naming the task and the invalid field
/// (negative, NaN, infinite or huge scalars, bad port ranges). A task
/// without resources has empty resources.
pub fn task_resources(task: &pb::TaskInfo) -> Result<Resources, SdkError> {
    resources_from_proto_opt(task.resources.as_ref()).map_err(|e| SdkError::InvalidTask {
        task_id: task.task_id.clone(),
        reason: e.to_string(),
    })
}

/// Packs `tasks` into `offers` with `strategy` (first fit, best fit, worst
/// fit or Tetris; see `berth_scheduler_core::placement`). Deterministic: tasks are
/// placed in the order given.
///
/// Each placed task's `agent_id` is set to its offer's agent (overwriting
/// what was there). An offer whose own resources are invalid is treated as
/// empty and lands in [`PackPlan::unused`]; one whose id is not a valid
/// [`OfferId`] (no master makes one) is left out of the plan.
///
/// # Errors
/// [`SdkError::InvalidTask`] if a task's resources are invalid, naming the
/// task; nothing is packed then.
pub fn pack_offers(
    offers: &[pb::Offer],
    tasks: Vec<pb::TaskInfo>,
    strategy: Strategy,
) -> Result<PackPlan, SdkError> {
    plan_with(offers, tasks, |bins, items| pack(bins, items, strategy))
}

/// Packs `tasks` into `offers` as tightly as it can: all tasks are known at
/// once, so it chooses the order (`berth_scheduler_core::placement::repack`:
/// the largest offers first, each filled with tasks whose shapes keep its
/// free cpu and memory in proportion to what is left to place). A batch
/// then takes fewer offers than with any [`Strategy`] in the order given,
/// and fewer tasks are left unplaced for want of a well-shaped offer. Ports
/// must fit as in [`pack_offers`]. Deterministic.
///
/// Unlike [`pack_offers`], the order of `tasks` is not a priority: when
/// the offers cannot hold them all, the ones left in
/// [`PackPlan::unplaced`] are not necessarily the last ones given. Use
/// [`pack_offers`] when earlier tasks must go first. Within each offer the
/// tasks keep the order given; so does [`PackPlan::unplaced`].
///
/// ```
/// # use berth_sdk::{proto, pack_offers, pack_offers_best, shell_task, Strategy};
/// let offer = |id: &str, cpus: f64, mem: f64| proto::Offer {
///     id: id.into(),
///     agent_id: format!("agent-{id}"),
///     resources: Some(proto::Resources { cpus, mem, ..Default::default() }),
///     ..Default::default()
/// };
/// let offers = [offer("o1", 4.0, 4096.0), offer("o2", 4.0, 4096.0), offer("o3", 4.0, 4096.0)];
/// // Three cpu-heavy tasks, then three memory-heavy ones: each offer holds
/// // one of each.
/// let tasks = || {
///     let task = |id: String, res: &str| shell_task(id.clone(), id, "true", res).unwrap();
///     let mut t: Vec<_> = (0..3).map(|i| task(format!("c{i}"), "cpus:2;mem:1024")).collect();
///     t.extend((0..3).map(|i| task(format!("m{i}"), "cpus:2;mem:3072")));
///     t
/// };
/// let best = pack_offers_best(&offers, tasks()).unwrap();
/// assert_eq!(best.placed(), 6);
/// // In the order given, first fit pairs the cpu-heavy tasks, strands
/// // memory and leaves a task out.
/// let first = pack_offers(&offers, tasks(), Strategy::FirstFit).unwrap();
/// assert_eq!(first.placed(), 5);
/// ```
///
/// # Errors
/// [`SdkError::InvalidTask`] if a task's resources are invalid, naming the
/// task; nothing is packed then.
pub fn pack_offers_best(
    offers: &[pb::Offer],
    tasks: Vec<pb::TaskInfo>,
) -> Result<PackPlan, SdkError> {
    plan_with(offers, tasks, repack)
}

/// The [`PackPlan`] of packing `tasks` into `offers` with `packer` over
/// their resources (see [`pack_offers`] for invalid offers and tasks).
fn plan_with(
    offers: &[pb::Offer],
    tasks: Vec<pb::TaskInfo>,
    packer: impl FnOnce(&[Resources], &[Resources]) -> Packing,
) -> Result<PackPlan, SdkError> {
    let items = tasks
        .iter()
        .map(task_resources)
        .collect::<Result<Vec<_>, _>>()?;
    // An offer whose id is not an id names nothing to accept or decline.
    let offers: Vec<(OfferId, &pb::Offer)> = offers
        .iter()
        .filter_map(|o| match OfferId::new(o.id.as_str()) {
            Ok(id) => Some((id, o)),
            Err(e) => {
                tracing::warn!(error = %e, "offer with an invalid id; not used");
                None
            }
        })
        .collect();
    let bins = offer_resources(offers.iter().map(|(_, o)| *o));
    let packing = packer(&bins, &items);

    let mut per_offer: Vec<Vec<pb::TaskInfo>> = vec![Vec::new(); offers.len()];
    let mut unplaced = Vec::new();
    for (mut task, slot) in tasks.into_iter().zip(packing.assignments) {
        match slot.and_then(|i| offers.get(i).map(|(_, o)| (i, o))) {
            Some((i, offer)) => {
                task.agent_id.clone_from(&offer.agent_id);
                per_offer[i].push(task);
            }
            None => unplaced.push(task),
        }
    }
    let mut plan = PackPlan {
        unplaced,
        ..PackPlan::default()
    };
    for ((id, _), tasks) in offers.into_iter().zip(per_offer) {
        if tasks.is_empty() {
            plan.unused.push(id);
        } else {
            plan.launches.push((id, tasks));
        }
    }
    Ok(plan)
}

/// The resources of each offer; an offer whose resources are invalid
/// counts as empty (and is logged).
fn offer_resources<'a>(offers: impl IntoIterator<Item = &'a pb::Offer>) -> Vec<Resources> {
    offers
        .into_iter()
        .map(|o| {
            resources_from_proto_opt(o.resources.as_ref()).unwrap_or_else(|e| {
                tracing::warn!(offer_id = %o.id, error = %e, "offer with invalid resources; not used");
                Resources::empty()
            })
        })
        .collect()
}

/// Why `task` fits in none of `offers`: how many offers are short of each
/// resource (cpus, mem, disk, gpus, ports). Its `Display` is a sentence
/// such as `no node fits: 12 short on mem, 3 short on cpus, 0 filtered by
/// constraints`; `fit` counts the offers that would take the task. An offer
/// with invalid resources counts as empty.
///
/// ```
/// # use berth_sdk::proto;
/// let offer = proto::Offer {
///     id: "o1".into(),
///     resources: Some(proto::Resources { cpus: 1.0, mem: 128.0, ..Default::default() }),
///     ..Default::default()
/// };
/// let task = berth_sdk::shell_task("big", "big", "true", "cpus:4;mem:64").unwrap();
/// let why = berth_sdk::explain_unplaced(&[offer], &task).unwrap();
/// assert_eq!(why.per_dimension.cpus, 1);
/// assert_eq!(why.to_string(), "no node fits: 1 short on cpus, 0 filtered by constraints");
/// ```
///
/// # Errors
/// [`SdkError::InvalidTask`] if the task's resources are invalid.
pub fn explain_unplaced(
    offers: &[pb::Offer],
    task: &pb::TaskInfo,
) -> Result<Explanation, SdkError> {
    let item = task_resources(task)?;
    Ok(explain(&offer_resources(offers), &item))
}

/// The pending-work entry of `task` that waits because of `why`: its id,
/// name and resources, the counts of `why`, and as reason its sentence
/// about offers, e.g. `no offer fits: 3 short on mem` (for a task that fit
/// in some offers but lost them to other tasks: `2 of 3 offers fit: 1 short
/// on mem; the ones that fit went to other tasks`). `since` is left 0 for
/// [`Framework::update_pending`](crate::Framework::update_pending) to fill
/// in.
#[must_use]
pub fn pending_task(task: &pb::TaskInfo, why: &Explanation) -> pb::PendingTask {
    let count = |n: usize| u64::try_from(n).unwrap_or(u64::MAX);
    let mut reason = why.describe("offer");
    if why.fit > 0 {
        reason.push_str("; the ones that fit went to other tasks");
    }
    let d = &why.per_dimension;
    pb::PendingTask {
        task_id: task.task_id.clone(),
        name: task.name.clone(),
        resources: task.resources.clone(),
        reason,
        considered: count(why.nodes),
        fit: count(why.fit),
        short_on: Some(pb::DimensionCounts {
            cpus: count(d.cpus),
            mem: count(d.mem),
            disk: count(d.disk),
            gpus: count(d.gpus),
            ports: count(d.ports),
        }),
        filtered: why
            .per_constraint
            .iter()
            .map(|(c, n)| pb::ConstraintCount {
                constraint: c.to_string(),
                count: count(*n),
            })
            .collect(),
        since: 0.0,
    }
}

/// The pending work of a packing: for each of `unplaced` (a
/// [`PackPlan::unplaced`]), [`pending_task`] with the explanation of why it
/// fits in none of `offers` (the offers it was packed against).
///
/// ```
/// # use berth_sdk::{proto, pack_offers, pending_tasks, shell_task, Strategy};
/// let offer = proto::Offer {
///     id: "o1".into(),
///     resources: Some(proto::Resources { cpus: 4.0, mem: 1024.0, ..Default::default() }),
///     ..Default::default()
/// };
/// let task = shell_task("big", "big", "true", "cpus:1;mem:4096").unwrap();
/// let plan = pack_offers(&[offer.clone()], vec![task], Strategy::FirstFit).unwrap();
/// let pending = pending_tasks(&[offer], &plan.unplaced).unwrap();
/// assert_eq!(pending[0].reason, "no offer fits: 1 short on mem");
/// assert_eq!(pending[0].short_on.as_ref().unwrap().mem, 1);
/// // framework.update_pending(pending).await?;
/// ```
///
/// # Errors
/// [`SdkError::InvalidTask`] if a task's resources are invalid.
pub fn pending_tasks(
    offers: &[pb::Offer],
    unplaced: &[pb::TaskInfo],
) -> Result<Vec<pb::PendingTask>, SdkError> {
    let bins = offer_resources(offers);
    unplaced
        .iter()
        .map(|t| Ok(pending_task(t, &explain(&bins, &task_resources(t)?))))
        .collect()
}

/// Builds a task that runs `cmd` with `/bin/sh -c`, using `resources` in
/// the Mesos text form (`"cpus:0.5;mem:64;ports:[31000-31000]"`).
///
/// ```
/// let task = berth_sdk::shell_task("t-1", "hello", "echo hi", "cpus:0.1;mem:32").unwrap();
/// assert_eq!(task.command.unwrap().shell, "echo hi");
/// assert_eq!(task.resources.unwrap().mem, 32.0);
/// ```
///
/// # Errors
/// [`SdkError::InvalidTask`] for an invalid task id (empty, over 255 bytes,
/// `/`, `\`, `..`, whitespace or control characters), an empty command or
/// unparsable or invalid resources.
pub fn shell_task(
    id: impl Into<String>,
    name: impl Into<String>,
    cmd: impl Into<String>,
    resources: &str,
) -> Result<pb::TaskInfo, SdkError> {
    let id = id.into();
    let cmd = cmd.into();
    let invalid = |reason: String| SdkError::InvalidTask {
        task_id: id.clone(),
        reason,
    };
    TaskId::new(id.as_str()).map_err(|e| invalid(e.to_string()))?;
    if cmd.trim().is_empty() {
        return Err(invalid("the command must not be empty".to_owned()));
    }
    let parsed: Resources = resources.parse().map_err(|e| invalid(format!("{e}")))?;
    let wire = resources_to_proto(&parsed);
    // Round-trip check: what we send is what we parsed.
    debug_assert!(resources_from_proto(&wire).is_ok());
    Ok(pb::TaskInfo {
        task_id: id.clone(),
        name: name.into(),
        agent_id: String::new(),
        resources: Some(wire),
        command: Some(pb::CommandInfo {
            shell: cmd,
            ..Default::default()
        }),
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn offer(id: &str, agent: &str, res: &str) -> pb::Offer {
        let r: Resources = res.parse().unwrap();
        pb::Offer {
            id: id.into(),
            agent_id: agent.into(),
            resources: Some(resources_to_proto(&r)),
            ..Default::default()
        }
    }

    fn task(id: &str, res: &str) -> pb::TaskInfo {
        shell_task(id, id, "true", res).unwrap()
    }

    fn ids(tasks: &[pb::TaskInfo]) -> Vec<&str> {
        tasks.iter().map(|t| t.task_id.as_str()).collect()
    }

    #[test]
    fn places_tasks_and_fills_agent_ids() {
        let offers = [
            offer("o1", "a1", "cpus:1;mem:128"),
            offer("o2", "a2", "cpus:2;mem:256"),
            offer("o3", "a3", "cpus:0.1;mem:1"),
        ];
        let tasks = vec![
            task("t1", "cpus:1;mem:100"),
            task("t2", "cpus:1;mem:100"),
            task("t3", "cpus:1;mem:100"),
            task("big", "cpus:8"),
            task("t4", "cpus:0.5"),
        ];
        let plan = pack_offers(&offers, tasks, Strategy::FirstFit).unwrap();
        assert_eq!(plan.launches.len(), 2);
        let (o1, in1) = &plan.launches[0];
        assert_eq!(o1, "o1");
        assert_eq!(ids(in1), ["t1"]);
        assert!(in1.iter().all(|t| t.agent_id == "a1"));
        let (o2, in2) = &plan.launches[1];
        assert_eq!(o2, "o2");
        assert_eq!(ids(in2), ["t2", "t3"]);
        assert!(in2.iter().all(|t| t.agent_id == "a2"));
        assert_eq!(ids(&plan.unplaced), ["big", "t4"]);
        assert_eq!(plan.unused, ["o3"]);
        assert_eq!(plan.placed(), 3);
    }

    #[test]
    fn strategies_differ() {
        let offers = [
            offer("small", "a1", "cpus:1"),
            offer("large", "a2", "cpus:4"),
        ];
        let best = pack_offers(&offers, vec![task("t", "cpus:1")], Strategy::BestFit).unwrap();
        assert_eq!(best.launches[0].0, "small");
        let worst = pack_offers(&offers, vec![task("t", "cpus:1")], Strategy::WorstFit).unwrap();
        assert_eq!(worst.launches[0].0, "large");
        assert_eq!(worst.unused, ["small"]);
    }

    #[test]
    fn best_packing_takes_fewer_offers() {
        // Three offers of 4 cpus and 4 GiB; three cpu-heavy tasks come
        // before three memory-heavy ones.
        let offers = [
            offer("o1", "a1", "cpus:4;mem:4096"),
            offer("o2", "a2", "cpus:4;mem:4096"),
            offer("o3", "a3", "cpus:4;mem:4096"),
        ];
        let tasks = || {
            let mut t: Vec<pb::TaskInfo> = (0..3)
                .map(|i| task(&format!("c{i}"), "cpus:2;mem:1024"))
                .collect();
            t.extend((0..3).map(|i| task(&format!("m{i}"), "cpus:2;mem:3072")));
            t
        };
        let best = pack_offers_best(&offers, tasks()).unwrap();
        assert_eq!(best.placed(), 6);
        assert!(best.unplaced.is_empty());
        assert!(best.unused.is_empty());
        for (id, in_offer) in &best.launches {
            // One of each shape per offer, in the order given, with the
            // offer's agent.
            assert_eq!(in_offer.len(), 2, "{id}");
            assert!(in_offer[0].task_id.starts_with('c'));
            assert!(in_offer[1].task_id.starts_with('m'));
            let agent = format!("a{}", &id.as_str()[1..]);
            assert!(in_offer.iter().all(|t| t.agent_id == agent));
        }
        // In the order given, first and best fit pair the cpu-heavy tasks
        // and strand memory.
        for strategy in [Strategy::FirstFit, Strategy::BestFit] {
            let plan = pack_offers(&offers, tasks(), strategy).unwrap();
            assert!(plan.placed() < 6, "{strategy}");
        }
    }

    #[test]
    fn best_packing_checks_ports_and_tasks() {
        let offers = [offer("o", "a", "cpus:4;ports:[31000-31001]")];
        let tasks = vec![
            task("p1", "cpus:1;ports:[31000-31000]"),
            task("p2", "cpus:1;ports:[31000-31000]"),
            task("big", "cpus:8"),
        ];
        let plan = pack_offers_best(&offers, tasks).unwrap();
        assert_eq!(plan.placed(), 1);
        assert_eq!(ids(&plan.unplaced), ["p2", "big"]);
        let mut bad = task("nan-task", "cpus:1");
        bad.resources = Some(pb::Resources {
            cpus: f64::NAN,
            ..Default::default()
        });
        assert!(matches!(
            pack_offers_best(&offers, vec![bad]),
            Err(SdkError::InvalidTask { task_id, .. }) if task_id == "nan-task"
        ));
        let plan = pack_offers_best(&[], vec![task("t", "cpus:1")]).unwrap();
        assert_eq!(ids(&plan.unplaced), ["t"]);
    }

    #[test]
    fn ports_must_fit() {
        let offers = [offer("o", "a", "cpus:4;ports:[31000-31001]")];
        let tasks = vec![
            task("p1", "cpus:1;ports:[31000-31000]"),
            task("p2", "cpus:1;ports:[31000-31000]"),
        ];
        let plan = pack_offers(&offers, tasks, Strategy::FirstFit).unwrap();
        assert_eq!(ids(&plan.launches[0].1), ["p1"]);
        assert_eq!(ids(&plan.unplaced), ["p2"]);
    }

    #[test]
    fn rejects_invalid_task_resources_naming_the_task() {
        let offers = [offer("o", "a", "cpus:4")];
        let mut bad = task("nan-task", "cpus:1");
        bad.resources = Some(pb::Resources {
            cpus: f64::NAN,
            ..Default::default()
        });
        let err =
            pack_offers(&offers, vec![task("ok", "cpus:1"), bad], Strategy::FirstFit).unwrap_err();
        match &err {
            SdkError::InvalidTask { task_id, reason } => {
                assert_eq!(task_id, "nan-task");
                assert!(reason.contains("cpus"), "{reason}");
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(err.to_string().contains("nan-task"));
    }

    #[test]
    fn no_offers_or_no_tasks() {
        let plan = pack_offers(&[], vec![task("t", "cpus:1")], Strategy::FirstFit).unwrap();
        assert_eq!(ids(&plan.unplaced), ["t"]);
        let offers = [offer("o", "a", "cpus:1")];
        let plan = pack_offers(&offers, Vec::new(), Strategy::FirstFit).unwrap();
        assert!(plan.launches.is_empty());
        assert_eq!(plan.unused, ["o"]);
    }

    #[test]
    fn offer_with_invalid_resources_is_unused() {
        let mut o = offer("bad", "a", "cpus:1");
        o.resources = Some(pb::Resources {
            cpus: -1.0,
            ..Default::default()
        });
        let plan = pack_offers(&[o], vec![task("t", "cpus:1")], Strategy::FirstFit).unwrap();
        assert_eq!(plan.unused, ["bad"]);
        assert_eq!(ids(&plan.unplaced), ["t"]);
    }

    #[test]
    fn explains_unplaced_tasks() {
        let offers = [
            offer("o1", "a1", "cpus:1;mem:128"),
            offer("o2", "a2", "cpus:8;mem:64;ports:[31000-31000]"),
        ];
        let t = task("t", "cpus:2;mem:100;ports:[31000-31000]");
        let plan = pack_offers(&offers, vec![t.clone()], Strategy::FirstFit).unwrap();
        assert_eq!(ids(&plan.unplaced), ["t"]);
        let why = explain_unplaced(&offers, &t).unwrap();
        assert_eq!(why.fit, 0);
        assert_eq!(why.per_dimension.cpus, 1);
        assert_eq!(why.per_dimension.mem, 1);
        assert_eq!(why.per_dimension.ports, 1);
        assert_eq!(
            why.to_string(),
            "no node fits: 1 short on cpus, 1 short on mem, 1 short on ports, 0 filtered by constraints"
        );
        let mut bad = task("bad", "cpus:1");
        bad.resources = Some(pb::Resources {
            mem: -1.0,
            ..Default::default()
        });
        assert!(matches!(
            explain_unplaced(&offers, &bad),
            Err(SdkError::InvalidTask { .. })
        ));
    }

    #[test]
    fn pending_tasks_carry_the_explanation() {
        let offers = [
            offer("o1", "a1", "cpus:1;mem:128"),
            offer("o2", "a2", "cpus:8;mem:64"),
        ];
        let tasks = vec![
            task("small", "cpus:1;mem:64"),
            task("again", "cpus:1;mem:64"),
            task("third", "cpus:1;mem:64"),
            task("big", "cpus:2;mem:100"),
        ];
        let plan = pack_offers(&offers, tasks, Strategy::FirstFit).unwrap();
        assert_eq!(ids(&plan.unplaced), ["third", "big"]);
        let pending = pending_tasks(&offers, &plan.unplaced).unwrap();
        assert_eq!(pending.len(), 2);
        // `third` fits in both offers on its own; `small` and `again` took
        // what it needed.
        assert_eq!(pending[0].task_id, "third");
        assert_eq!(pending[0].considered, 2);
        assert_eq!(pending[0].fit, 2);
        assert_eq!(
            pending[0].reason,
            "2 of 2 offers fit; the ones that fit went to other tasks"
        );
        let big = &pending[1];
        assert_eq!(big.task_id, "big");
        assert_eq!(big.name, "big");
        assert_eq!(big.fit, 0);
        let short = big.short_on.unwrap();
        assert_eq!((short.cpus, short.mem, short.ports), (1, 1, 0));
        assert_eq!(big.reason, "no offer fits: 1 short on cpus, 1 short on mem");
        assert!(big.filtered.is_empty());
        assert_eq!(big.since, 0.0);
        assert_eq!(big.resources, plan.unplaced[1].resources);
    }

    #[test]
    fn shell_task_validates() {
        let t = shell_task("t-1", "n", "echo hi", "cpus:0.5;mem:64;ports:[31000-31002]").unwrap();
        assert_eq!(t.task_id, "t-1");
        assert_eq!(t.name, "n");
        assert_eq!(t.command.as_ref().unwrap().shell, "echo hi");
        let r = t.resources.unwrap();
        assert!((r.cpus - 0.5).abs() < 1e-9);
        assert_eq!(
            r.ports,
            [pb::Range {
                begin: 31000,
                end: 31002
            }]
        );
        for (id, cmd, res, needle) in [
            ("", "x", "cpus:1", "empty"),
            ("a/b", "x", "cpus:1", "/"),
            ("a b", "x", "cpus:1", "whitespace"),
            ("ok", " ", "cpus:1", "command"),
            ("ok", "x", "cpus:NaN", "cpus"),
            ("ok", "x", "cpus:-1", "negative"),
            ("ok", "x", "bogus:1", "bogus"),
        ] {
            let err = shell_task(id, "n", cmd, res).unwrap_err().to_string();
            assert!(err.contains(needle), "{id:?} {cmd:?} {res:?}: {err}");
        }
    }
}
