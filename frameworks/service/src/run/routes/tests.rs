use super::*;
use crate::app::AppVersion;
use berth_proto as pb;

const T0: u64 = 1_700_000_000_000;

fn at(secs: u64) -> Timestamp {
    Timestamp::from_millis(T0 + secs * 1000)
}

fn app(extra: &str) -> AppVersion {
    let json = format!(
        r#"{{"id": "/shop/web", "cmd": "httpd", "cpus": 0.1, "mem": 32, "instances": 3,
            "portDefinitions": [{{"port": 10000}}, {{"port": 0}}, {{"port": 10002}}] {extra}}}"#
    );
    AppVersion::first(crate::app::AppDefinition::from_json(&json).unwrap(), at(0))
}

/// Instances i1 (healthy, a1), i2 (staging, a1), i3 (healthy, a2, being
/// drained), launched with host ports 31000 + 10 * n + k.
fn instances(v: &AppVersion) -> Instances {
    let mut inst = Instances::default();
    let ids: Vec<String> = (1..=3).map(|n| format!("i{n}")).collect();
    inst.create("/shop/web", v.config_version(), &ids, at(0));
    let tasks: Vec<pb::TaskInfo> = (1..=3)
        .map(|n| {
            let mut env = std::collections::HashMap::new();
            for k in 0..3 {
                env.insert(format!("PORT{k}"), (31000 + 10 * n + k).to_string());
            }
            pb::TaskInfo {
                task_id: format!("shop_web.i{n}.1"),
                agent_id: if n == 3 { "a2".into() } else { "a1".into() },
                command: Some(pb::CommandInfo {
                    env,
                    ..Default::default()
                }),
                ..Default::default()
            }
        })
        .collect();
    inst.launching(&tasks, &|_, _| Some(v));
    for n in [1, 3] {
        inst.on_status(
            &pb::TaskStatus {
                task_id: format!("shop_web.i{n}.1"),
                state: pb::TaskState::TaskRunning as i32,
                ..Default::default()
            },
            &|_| crate::app::Backoff::default(),
            &|_| false,
            at(1),
        );
    }
    inst
}

fn one_app<'a>(v: &'a AppVersion, traffic: Option<&'a Traffic>) -> BTreeMap<String, RoutedApp<'a>> {
    [(
        "/shop/web".to_string(),
        RoutedApp {
            definition: &v.definition,
            traffic,
        },
    )]
    .into()
}

fn agents() -> BTreeMap<String, IpAddr> {
    [
        ("a1".to_string(), "10.0.0.1".parse().unwrap()),
        ("a2".to_string(), "10.0.0.2".parse().unwrap()),
    ]
    .into()
}

#[test]
fn each_service_port_routes_to_the_healthy_instances_host_ports() {
    let v = app("");
    let mut inst = instances(&v);
    let apps = one_app(&v, None);
    let table = route_table(&apps, &inst, &agents());
    let names: Vec<(&str, u16)> = table
        .services
        .iter()
        .map(|s| (s.app.as_str(), s.port))
        .collect();
    assert_eq!(
        names,
        [("/shop/web", 10000), ("/shop/web#2", 10002)],
        "port 1 has no service port"
    );
    let addrs: Vec<String> = table.services[0]
        .backends
        .iter()
        .map(|b| b.addr.to_string())
        .collect();
    assert_eq!(
        addrs,
        ["10.0.0.1:31010", "10.0.0.2:31030"],
        "i2 is not running yet"
    );
    let addrs: Vec<String> = table.services[1]
        .backends
        .iter()
        .map(|b| b.addr.to_string())
        .collect();
    assert_eq!(addrs, ["10.0.0.1:31012", "10.0.0.2:31032"]);
    assert!(
        table
            .services
            .iter()
            .all(|s| s.protocol == Protocol::Http && s.weights.is_empty())
    );

    // An instance being drained leaves the table at once.
    inst.kill("i3", true, at(2));
    let table = route_table(&apps, &inst, &agents());
    assert_eq!(table.services[0].backends.len(), 1);
}

#[test]
fn weights_preview_and_tcp_mode_come_through() {
    let v = app(r#", "labels": {"HAPROXY_0_MODE": "tcp"}"#);
    let inst = instances(&v);
    let traffic = Traffic {
        weights: [(at(0), 95), (at(50), 5)].into(),
        preview: Some((at(50), 9090)),
    };
    let apps = one_app(&v, Some(&traffic));
    let table = route_table(&apps, &inst, &agents());
    let main = &table.services[0];
    assert_eq!(main.protocol, Protocol::Tcp);
    assert_eq!(table.services[1].protocol, Protocol::Http);
    assert_eq!(main.weights[&at(0).to_string()], 95);
    assert_eq!(main.weights[&at(50).to_string()], 5);
    assert_eq!(main.preview.as_ref().map(|p| p.port), Some(9090));
    assert!(
        table.services[1].preview.is_none(),
        "the preview serves the first port"
    );
}

#[test]
fn instances_on_agents_without_an_address_are_left_out() {
    let v = app("");
    let inst = instances(&v);
    let apps = one_app(&v, None);
    let only_a1: BTreeMap<String, IpAddr> =
        [("a1".to_string(), "10.0.0.1".parse().unwrap())].into();
    let table = route_table(&apps, &inst, &only_a1);
    assert_eq!(table.services[0].backends.len(), 1);
}
