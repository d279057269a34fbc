//! A rolling upgrade over random health and timing: the planner never
//! kills a healthy instance when that leaves fewer than minHealthy healthy,
//! and the plan ends with exactly the new instances.

use proptest::prelude::*;
use serde_json::json;

use super::super::*;
use crate::app::AppDefinition;

fn version(instances: u32, mhc: u32, moc: u32, min_healthy: u64, at: Timestamp) -> AppVersion {
    let v = json!({"id": "/web", "cmd": format!("serve {at}"), "instances": instances,
        "portDefinitions": [{"port": 0}],
        "healthChecks": [{"protocol": "TCP", "portIndex": 0}],
        "upgradeStrategy": {"minimumHealthCapacity": f64::from(mhc) / 10.0,
                            "maximumOverCapacity": f64::from(moc) / 10.0},
        "deployment": {"minHealthySeconds": min_healthy, "progressDeadlineSeconds": 0}});
    AppVersion::first(AppDefinition::from_value(&v).unwrap(), at)
}

struct Slot {
    inst: Instance,
    healthy_at: u64,
    killed_at: Option<u64>,
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(300))]

    #[test]
    fn rolling_keeps_min_healthy_and_terminates(
        old_n in 0u32..8,
        new_n in 1u32..8,
        mhc in 0u32..=10,
        moc in 0u32..=10,
        min_healthy in 0u64..4,
        delays in prop::collection::vec(0u64..6, 1..16),
        flaps in prop::collection::vec(prop::option::of(0usize..16), 0..40),
    ) {
        let a = version(old_n.max(1), mhc, moc, min_healthy, Timestamp::from_secs(1));
        let b = version(new_n, mhc, moc, min_healthy, Timestamp::from_secs(2));
        let (va, vb) = (a.config_version(), b.config_version());
        let mut slots: Vec<Slot> = (0..old_n)
            .map(|k| Slot {
                inst: Instance {
                    id: format!("old{k}"), version: va, state: InstanceState::Healthy,
                    healthy_since: Some(Timestamp::from_secs(0)), launched_at: Timestamp::from_secs(0),
                    agent: "a".into(),
                },
                healthy_at: 0,
                killed_at: None,
            })
            .collect();
        let start = 100u64;
        let mut d = Deployment::new(Some(&a), Some(&b), Timestamp::from_secs(start));
        let min_healthy_n = Target::of(&b).min_healthy_count();
        let mut launched = 0usize;
        let mut finished = false;
        let mut floor = None;
        for t in start..start + 400 {
            let now = Timestamp::from_secs(t);
            slots.retain(|s| s.killed_at.is_none_or(|k| k >= t));
            for s in &mut slots {
                if s.inst.state != InstanceState::Healthy && t >= s.healthy_at {
                    s.inst.state = InstanceState::Healthy;
                    s.inst.healthy_since = Some(now);
                }
            }
            if let Some(Some(k)) = flaps.get((t - start) as usize)
                && !slots.is_empty()
            {
                let len = slots.len();
                let s = &mut slots[k % len];
                // Unhealthy for a while, then healthy again (the runtime
                // would restart it otherwise).
                if s.inst.state == InstanceState::Healthy {
                    s.inst.state = InstanceState::Running;
                    s.inst.healthy_since = None;
                    s.healthy_at = t + 3;
                }
            }
            let observed: Vec<Instance> = slots.iter().map(|s| s.inst.clone()).collect();
            let (from, to) = (d.from.clone().unwrap(), d.to.clone().unwrap());
            let healthy = |i: &Instance| {
                !d.killed.contains(&i.id)
                    && if i.version == to.version { to.counts(i, now) } else { from.healthy(i) }
            };
            let healthy_before = observed.iter().filter(|i| healthy(i)).count() as u32;
            // Kills may never leave fewer than minHealthy healthy, or fewer
            // than were healthy at the start if that was already less.
            let floor = *floor.get_or_insert(min_healthy_n.min(healthy_before));
            let (next, actions) = step(&d, &observed, &RouterStats::new(), now);
            let mut healthy_killed = 0u32;
            for act in &actions {
                match act {
                    Action::Launch { version, count } => {
                        prop_assert_eq!(*version, vb);
                        for _ in 0..*count {
                            slots.push(Slot {
                                inst: Instance {
                                    id: format!("new{launched}"), version: vb,
                                    state: InstanceState::Staging, healthy_since: None,
                                    launched_at: now, agent: "a".into(),
                                },
                                healthy_at: t + delays[launched % delays.len()],
                                killed_at: None,
                            });
                            launched += 1;
                        }
                    }
                    Action::Kill { instance, .. } => {
                        let s = slots.iter_mut().find(|s| &s.inst.id == instance).unwrap();
                        prop_assert!(s.killed_at.is_none(), "killed twice: {}", instance);
                        if healthy(&s.inst) {
                            healthy_killed += 1;
                        }
                        s.killed_at = Some(t);
                    }
                    Action::Finished => finished = true,
                    other => prop_assert!(false, "unexpected {:?}", other),
                }
            }
            if healthy_killed > 0 {
                prop_assert!(
                    healthy_before - healthy_killed >= floor,
                    "at {}: killed {} healthy of {}, minHealthy {}, floor {}",
                    t, healthy_killed, healthy_before, min_healthy_n, floor
                );
            }
            let capacity = Target::of(&b).max_capacity() + 1;
            let live_new = slots.iter().filter(|s| s.inst.version == vb).count() as u32;
            prop_assert!(live_new <= new_n, "more new instances than wanted");
            prop_assert!(
                slots.len() as u32 <= capacity.max(old_n + live_new),
                "over capacity"
            );
            d = next;
            if finished {
                break;
            }
        }
        prop_assert!(finished, "did not finish: {:?}", d.view(&slots.iter().map(|s| s.inst.clone()).collect::<Vec<_>>(), Timestamp::from_secs(start + 400)));
        prop_assert_eq!(d.state.clone(), State::Succeeded);
        prop_assert!(slots.iter().all(|s| s.inst.version == vb || s.killed_at.is_some()));
        prop_assert_eq!(slots.iter().filter(|s| s.inst.version == vb && s.killed_at.is_none()).count() as u32, new_n);
    }
}
