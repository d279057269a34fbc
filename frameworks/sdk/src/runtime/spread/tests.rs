use super::*;
use crate::shell_task;

fn offer(id: &str, agent: &str, resources: &str, attrs: &[(&str, &str)]) -> pb::Offer {
    pb::Offer {
        id: id.into(),
        agent_id: agent.into(),
        hostname: format!("{agent}.example"),
        resources: Some(resources_to_proto(&resources.parse().unwrap())),
        attributes: attrs
            .iter()
            .map(|(n, v)| pb::Attribute {
                name: (*n).into(),
                value: (*v).into(),
            })
            .collect(),
        ..Default::default()
    }
}

fn web(id: &str, ports: u32) -> Wanted {
    let mut p = Placement::new("/web");
    p.ports = ports;
    Wanted::new(shell_task(id, "web", "httpd", "cpus:1;mem:64").unwrap()).placement(p)
}

fn agents_of(launches: &[(OfferId, Vec<pb::TaskInfo>)]) -> Vec<(String, String)> {
    launches
        .iter()
        .flat_map(|(_, tasks)| {
            tasks
                .iter()
                .map(|t| (t.task_id.clone(), t.agent_id.clone()))
        })
        .collect()
}

#[test]
fn instances_spread_over_agents_before_doubling_up() {
    let offers = [
        offer("o1", "a1", "cpus:8;mem:1024", &[]),
        offer("o2", "a2", "cpus:8;mem:1024", &[]),
        offer("o3", "a3", "cpus:8;mem:1024", &[]),
    ];
    let wanted: Vec<Wanted> = (0..4).map(|i| web(&format!("w{i}"), 0)).collect();
    let refs: Vec<&Wanted> = wanted.iter().collect();
    let Spread {
        launches,
        used,
        unplaced,
    } = place_spread(&offers, &refs);
    assert!(unplaced.is_empty());
    assert_eq!(used.len(), 3);
    let placed = agents_of(&launches);
    let on = |a: &str| placed.iter().filter(|(_, ag)| ag == a).count();
    assert_eq!((on("a1"), on("a2"), on("a3")), (2, 1, 1));
}

#[test]
fn existing_instances_count_for_the_spread() {
    let offers = [
        offer("o1", "a1", "cpus:8;mem:1024", &[]),
        offer("o2", "a2", "cpus:8;mem:1024", &[]),
    ];
    let mut w = web("w9", 0);
    if let Some(p) = w.placement.as_mut() {
        p.existing = vec![Place::of_offer(&offers[0])];
    }
    let Spread { launches, .. } = place_spread(&offers, &[&w]);
    assert_eq!(agents_of(&launches), [("w9".into(), "a2".into())]);
}

#[test]
fn host_ports_come_from_the_offer_into_resources_mappings_and_env() {
    let offers = [offer(
        "o1",
        "a1",
        "cpus:8;mem:1024;ports:[31000-31001,31005-31009]",
        &[],
    )];
    let mut a = web("a", 3);
    a.task.container = Some(pb::ContainerInfo {
        image: "site:1".into(),
        port_mappings: vec![
            pb::PortMapping {
                container_port: 80,
                host_port: 0,
                protocol: "tcp".into(),
            },
            pb::PortMapping {
                container_port: 81,
                host_port: 32000,
                protocol: "tcp".into(),
            },
            pb::PortMapping {
                container_port: 82,
                host_port: 0,
                protocol: "tcp".into(),
            },
        ],
        ..Default::default()
    });
    a.task.health_check = Some(pb::HealthCheck {
        http: Some(pb::HttpCheck {
            port: 0,
            path: "/".into(),
            scheme: "http".into(),
        }),
        ..Default::default()
    });
    if let Some(p) = a.placement.as_mut() {
        p.health_port = Some(2);
    }
    let b = web("b", 3);
    let c = web("c", 2);
    let Spread {
        launches, unplaced, ..
    } = place_spread(&offers, &[&a, &b, &c]);
    // 7 ports: a takes 3, b takes 3, c needs 2 and finds 1.
    assert_eq!(
        unplaced
            .iter()
            .map(|t| t.task_id.as_str())
            .collect::<Vec<_>>(),
        ["c"]
    );
    let tasks = &launches[0].1;
    let a = &tasks[0];
    let ports = a.resources.as_ref().unwrap().ports.clone();
    let ports: Vec<(u64, u64)> = ports.iter().map(|r| (r.begin, r.end)).collect();
    assert_eq!(ports, [(31000, 31001), (31005, 31005)]);
    let hosts: Vec<u32> = a
        .container
        .as_ref()
        .unwrap()
        .port_mappings
        .iter()
        .map(|m| m.host_port)
        .collect();
    assert_eq!(
        hosts,
        [31000, 32000, 31001],
        "only host port 0 is filled in"
    );
    let env = &a.command.as_ref().unwrap().env;
    assert_eq!(env["PORT0"], "31000");
    assert_eq!(env["PORT2"], "31005");
    assert_eq!(env["PORT"], "31000");
    assert_eq!(env["PORTS"], "31000,31001,31005");
    let probed = a.health_check.as_ref().unwrap().http.as_ref().unwrap().port;
    assert_eq!(probed, 31005, "the health check probes the third port");
    let b_env = &tasks[1].command.as_ref().unwrap().env;
    assert_eq!(b_env["PORTS"], "31006,31007,31008");
}

#[test]
fn a_rule_sees_the_groups_agents_including_this_round() {
    let offers = [
        offer("o1", "a1", "cpus:8;mem:1024", &[("rack", "r1")]),
        offer("o2", "a2", "cpus:8;mem:1024", &[("rack", "r1")]),
        offer("o3", "a3", "cpus:8;mem:1024", &[("rack", "r2")]),
    ];
    // UNIQUE rack: at most one instance per rack.
    let unique_rack: Rule = Arc::new(|c: &Place, placed: &[Place]| {
        !placed
            .iter()
            .any(|p| p.attributes.get("rack") == c.attributes.get("rack"))
    });
    let wanted: Vec<Wanted> = (0..3)
        .map(|i| {
            let mut w = web(&format!("w{i}"), 0);
            if let Some(p) = w.placement.as_mut() {
                p.rule = Some(unique_rack.clone());
            }
            w
        })
        .collect();
    let refs: Vec<&Wanted> = wanted.iter().collect();
    let Spread {
        launches, unplaced, ..
    } = place_spread(&offers, &refs);
    let placed = agents_of(&launches);
    assert_eq!(placed.len(), 2);
    assert_eq!(unplaced.len(), 1, "a third rack does not exist");
    let racks: Vec<&str> = placed
        .iter()
        .map(|(_, a)| if a == "a3" { "r2" } else { "r1" })
        .collect();
    assert!(racks.contains(&"r1") && racks.contains(&"r2"));
}

#[test]
fn tags_and_resources_still_apply() {
    let offers = [
        offer("o1", "a1", "cpus:0.5;mem:1024", &[("tags", "gpu")]),
        offer("o2", "a2", "cpus:8;mem:1024", &[]),
        offer("o3", "a3", "cpus:8;mem:1024", &[("tags", "ssd,gpu")]),
    ];
    let w = web("w", 0).constraints([Constraint::Tag("gpu".into())]);
    let Spread { launches, used, .. } = place_spread(&offers, &[&w]);
    assert_eq!(
        agents_of(&launches),
        [("w".into(), "a3".into())],
        "a1 is too small"
    );
    assert_eq!(used, ["o3"]);
}

#[test]
fn tasks_without_a_placement_are_left_to_packing() {
    let offers = [offer("o1", "a1", "cpus:8;mem:1024", &[])];
    let packed = Wanted::new(shell_task("p", "p", "true", "cpus:1;mem:64").unwrap());
    let Spread {
        launches,
        used,
        unplaced,
    } = place_spread(&offers, &[&packed]);
    assert!(launches.is_empty() && used.is_empty() && unplaced.is_empty());
}
