use super::*;

fn version(json: &str) -> AppVersion {
    let def = AppDefinition::from_json(json).unwrap();
    AppVersion::first(def, crate::time::Timestamp::from_millis(1_700_000_000_000))
}

fn offer_place(agent: &str, rack: &str) -> Place {
    Place {
        agent_id: agent.into(),
        hostname: format!("{agent}.example"),
        attributes: [("rack".to_string(), rack.to_string())].into(),
    }
}

#[test]
fn a_bridge_app_maps_any_host_port_and_probes_it() {
    let v = version(
        r#"{
          "id": "/shop/web", "instances": 2, "cpus": 0.25, "mem": 64,
          "container": {"type": "DOCKER", "docker": {"image": "site:abc", "network": "BRIDGE"},
            "portMappings": [
              {"containerPort": 8080, "hostPort": 0, "servicePort": 10000, "name": "http"},
              {"containerPort": 9090, "hostPort": 31555, "name": "admin"}
            ]},
          "env": {"GREETING": "hi"},
          "labels": {"team": "web"},
          "healthChecks": [{"protocol": "MESOS_HTTP", "path": "/health", "portIndex": 0}]
        }"#,
    );
    let (task, placement) = instance_task(&v, "i0001", 3, Vec::new());
    assert_eq!(task.task_id, "shop_web.i0001.3");
    assert_eq!(task.name, "/shop/web");
    let c = task.container.as_ref().unwrap();
    assert_eq!(c.image, "site:abc");
    assert_eq!(c.network, "bridge");
    let maps: Vec<(u32, u32)> = c
        .port_mappings
        .iter()
        .map(|m| (m.container_port, m.host_port))
        .collect();
    assert_eq!(maps, [(8080, 0), (9090, 31555)]);
    // One port chosen at placement; the fixed one asked for as is.
    assert_eq!(placement.ports, 1);
    let r = task.resources.as_ref().unwrap();
    assert_eq!((r.cpus, r.mem), (0.25, 64.0));
    assert_eq!(
        r.ports.iter().map(|p| (p.begin, p.end)).collect::<Vec<_>>(),
        [(31555, 31555)]
    );
    // The check probes portIndex 0: the first dynamic port, set at placement.
    let http = task.health_check.as_ref().unwrap().http.as_ref().unwrap();
    assert_eq!((http.port, http.path.as_str()), (0, "/health"));
    assert_eq!(placement.health_port, Some(0));
    let env = &task.command.as_ref().unwrap().env;
    assert_eq!(env["GREETING"], "hi");
    assert_eq!(env["MARATHON_APP_ID"], "/shop/web");
    assert_eq!(env["BERTH_INSTANCE_ID"], "i0001");
    assert_eq!(task.labels[0].key, "team");
    assert_eq!(placement.group, "/shop/web");
    assert!(placement.rule.is_none());
}

#[test]
fn a_host_app_takes_one_port_per_definition_and_runs_its_command() {
    let v = version(
        r#"{"id": "api", "cmd": "exec ./api --port $PORT0", "cpus": 0.1, "mem": 32,
            "portDefinitions": [{"port": 0}, {"port": 0, "name": "metrics"}],
            "healthChecks": [{"protocol": "TCP", "portIndex": 1}]}"#,
    );
    let (task, placement) = instance_task(&v, "i1", 1, Vec::new());
    assert_eq!(
        task.command.as_ref().unwrap().shell,
        "exec ./api --port $PORT0"
    );
    assert!(task.container.is_none());
    assert_eq!(placement.ports, 2);
    assert_eq!(placement.health_port, Some(1));
    assert!(task.health_check.as_ref().unwrap().tcp.is_some());
}

#[test]
fn health_check_zeros_reach_the_agent_as_zeros() {
    let check = |fields: &str| {
        let v = version(&format!(
            r#"{{"id": "api", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32,
                "portDefinitions": [{{"port": 0}}],
                "healthChecks": [{{"protocol": "TCP" {fields}}}]}}"#
        ));
        let (task, _) = instance_task(&v, "i1", 1, Vec::new());
        task.health_check.unwrap()
    };
    // Marathon's defaults: 300 s of grace, killed after 3 failures.
    let hc = check("");
    assert_eq!(
        (hc.grace_period_seconds, hc.consecutive_failures),
        (300.0, 3)
    );
    // No grace period, never killed: zeros the agent must take literally.
    let hc = check(r#", "gracePeriodSeconds": 0, "maxConsecutiveFailures": 0"#);
    assert_eq!((hc.grace_period_seconds, hc.consecutive_failures), (0.0, 0));
    assert!(hc.literal_zeros);
}

#[test]
fn constraints_become_the_placement_rule() {
    let v = version(
        r#"{"id": "db", "cmd": "sleep 1000", "cpus": 0.1, "mem": 32, "instances": 3,
            "constraints": [["rack", "UNIQUE"]]}"#,
    );
    let (_, placement) = instance_task(&v, "i2", 1, vec![offer_place("a1", "r1")]);
    let rule = placement.rule.expect("a rule");
    let placed = [offer_place("a1", "r1")];
    assert!(!rule(&offer_place("a2", "r1"), &placed), "rack r1 is taken");
    assert!(rule(&offer_place("a3", "r2"), &placed));
    assert_eq!(placement.existing, placed);
}

#[test]
fn a_long_app_id_still_makes_a_valid_task_id() {
    let long = "a".repeat(60);
    let v = version(&format!(
        r#"{{"id": "/{long}/{long}/{long}/{long}", "cmd": "true", "cpus": 0.1, "mem": 32}}"#
    ));
    let (task, _) = instance_task(&v, "i3", 12, Vec::new());
    assert!(task.task_id.len() <= 255, "{}", task.task_id.len());
    assert!(
        berth_proto::task::validate_task(&task).is_ok(),
        "{:?}",
        berth_proto::task::validate_task(&task)
    );
}
