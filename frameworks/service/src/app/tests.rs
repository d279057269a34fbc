use std::time::Duration;

use serde_json::json;

use super::*;
use crate::time::Timestamp;

/// What Marathon's GET /v2/apps/{id} returns for a typical app, read-only
/// fields included.
const MARATHON_GET: &str = r#"{
  "id": "/shop/web",
  "cmd": "python3 -m http.server $PORT0",
  "args": null,
  "user": null,
  "env": {"MODE": "prod"},
  "instances": 4,
  "cpus": 0.25,
  "mem": 64,
  "disk": 0,
  "gpus": 0,
  "executor": "",
  "constraints": [["hostname", "UNIQUE"], ["rack", "GROUP_BY", "2"]],
  "uris": [],
  "fetch": [],
  "storeUrls": [],
  "backoffSeconds": 1,
  "backoffFactor": 1.15,
  "maxLaunchDelaySeconds": 3600,
  "container": null,
  "healthChecks": [{"gracePeriodSeconds": 30, "intervalSeconds": 5, "timeoutSeconds": 2,
    "maxConsecutiveFailures": 3, "portIndex": 0, "path": "/health", "protocol": "HTTP",
    "ignoreHttp1xx": false, "delaySeconds": 15, "ipProtocol": "IPv4"}],
  "readinessChecks": [],
  "dependencies": [],
  "upgradeStrategy": {"minimumHealthCapacity": 0.5, "maximumOverCapacity": 0},
  "labels": {"team": "web"},
  "acceptedResourceRoles": null,
  "ipAddress": null,
  "version": "2024-01-02T03:04:05.006Z",
  "residency": null,
  "secrets": {},
  "taskKillGracePeriodSeconds": null,
  "unreachableStrategy": {"inactiveAfterSeconds": 0, "expungeAfterSeconds": 0},
  "killSelection": "YOUNGEST_FIRST",
  "ports": [10000],
  "portDefinitions": [{"port": 10000, "protocol": "tcp", "name": "http", "labels": {}}],
  "requirePorts": false,
  "networks": [{"mode": "host"}],
  "versionInfo": {"lastScalingAt": "2024-01-02T03:04:05.006Z", "lastConfigChangeAt": "2024-01-02T03:04:05.006Z"},
  "tasksStaged": 0, "tasksRunning": 4, "tasksHealthy": 4, "tasksUnhealthy": 0,
  "deployments": [],
  "tasks": [{"id": "shop_web.instance-1", "host": "a1"}]
}"#;

fn parse(v: serde_json::Value) -> Result<AppDefinition, Invalid> {
    AppDefinition::from_value(&v)
}

fn paths(inv: &Invalid) -> Vec<&str> {
    inv.errors.iter().map(|e| e.path.as_str()).collect()
}

#[test]
fn marathon_get_output_deploys() {
    let app = AppDefinition::from_json(MARATHON_GET).unwrap();
    assert_eq!(app.id.to_string(), "/shop/web");
    assert_eq!(
        app.command,
        Command::Shell("python3 -m http.server $PORT0".into())
    );
    assert_eq!(app.instances, 4);
    assert_eq!(app.resources.cpus.milli(), 250);
    assert_eq!(app.resources.mem.milli(), 64_000);
    assert_eq!(app.port_definitions.len(), 1);
    assert_eq!(app.port_definitions[0].port, 10000);
    assert_eq!(app.port_definitions[0].name.as_deref(), Some("http"));
    assert_eq!(app.service_ports(), vec![10000]);
    assert_eq!(app.health_checks[0].grace_period, Duration::from_secs(30));
    assert_eq!(app.health_checks[0].port_index, Some(0));
    assert_eq!(app.upgrade_strategy.minimum_health_capacity.ppm(), 500_000);
    assert_eq!(app.upgrade_strategy.maximum_over_capacity, Fraction::ZERO);
    assert_eq!(app.backoff.max_launch_delay, Duration::from_secs(3600));
    assert_eq!(app.constraints.len(), 2);
    assert_eq!(app.deployment, DeploymentSettings::default());
}

#[test]
fn defaults_are_marathons() {
    let app = parse(json!({"id": "web", "cmd": "sleep 1000"})).unwrap();
    assert_eq!(app.id.to_string(), "/web");
    assert_eq!(app.instances, 1);
    assert_eq!(app.resources.cpus.milli(), 1000);
    assert_eq!(app.resources.mem.milli(), 128_000);
    assert_eq!(app.resources.disk.milli(), 0);
    assert_eq!(app.upgrade_strategy, UpgradeStrategy::default());
    assert_eq!(app.backoff, Backoff::default());
    assert_eq!(app.backoff.max_launch_delay, Duration::from_secs(300));
    assert_eq!(app.kill_selection, KillSelection::YoungestFirst);
    assert_eq!(app.unreachable_strategy, UnreachableStrategy::default());
    assert_eq!(
        app.port_definitions.len(),
        1,
        "Marathon gives one port by default"
    );
    assert_eq!(app.port_definitions[0].port, 0);
}

#[test]
fn docker_bridge_app_with_legacy_port_mappings() {
    let app = parse(json!({
        "id": "/shop/api",
        "container": {"type": "DOCKER", "docker": {
            "image": "shop/api:1", "network": "BRIDGE", "forcePullImage": true,
            "portMappings": [{"containerPort": 8080, "hostPort": 0, "servicePort": 10001,
                              "protocol": "tcp", "name": "http-api"}],
            "privileged": false, "parameters": []
        }, "volumes": []},
        "readinessChecks": [{"path": "/ready"}],
        "instances": 2
    }))
    .unwrap();
    let c = app.container.as_ref().unwrap();
    assert_eq!(c.image.as_deref(), Some("shop/api:1"));
    assert_eq!(c.network, NetworkMode::Bridge);
    assert!(c.force_pull_image);
    assert_eq!(c.port_mappings[0].container_port, 8080);
    assert_eq!(c.port_mappings[0].host_port, Some(0));
    assert!(app.port_definitions.is_empty());
    assert_eq!(app.command, Command::None);
    assert_eq!(app.readiness_checks[0].port_name, "http-api");
    assert_eq!(
        app.readiness_checks[0].http_status_codes_for_ready,
        vec![200]
    );
    assert_eq!(app.service_ports(), vec![10001]);
}

#[test]
fn yaml_and_json_agree() {
    let yaml = "
id: /shop/web
cmd: python3 -m http.server $PORT0
instances: 4
cpus: 0.25
mem: 64
constraints:
  - [hostname, UNIQUE]
upgradeStrategy: {minimumHealthCapacity: 0.5, maximumOverCapacity: 0}
deployment:
  strategy: canary
  canary:
    steps: [{weight: 5}, {pause: 60}, {weight: 25}, {pause: null}, {weight: 100}]
";
    let from_yaml = AppDefinition::from_yaml(yaml);
    // upgradeStrategy is refused with canary: both readers must say so.
    let err = from_yaml.unwrap_err();
    assert!(
        matches!(&err, ParseError::Invalid(i) if i.has_path("/upgradeStrategy")),
        "{err}"
    );
    let yaml = yaml.replace(
        "upgradeStrategy: {minimumHealthCapacity: 0.5, maximumOverCapacity: 0}\n",
        "",
    );
    let a = AppDefinition::from_yaml(&yaml).unwrap();
    let b = AppDefinition::from_json(&a.to_marathon_json().to_string()).unwrap();
    assert_eq!(a, b);
    let Strategy::Canary(c) = &a.deployment.strategy else {
        panic!("not canary")
    };
    assert_eq!(
        c.steps,
        vec![
            CanaryStep::Weight(5),
            CanaryStep::Pause(Some(Duration::from_secs(60))),
            CanaryStep::Weight(25),
            CanaryStep::Pause(None),
            CanaryStep::Weight(100)
        ]
    );
}

#[test]
fn collects_every_error_with_its_path() {
    let err = parse(json!({
        "id": "/Shop",
        "cmd": "x",
        "args": ["y"],
        "cpus": -1,
        "mem": "lots",
        "disk": 1e300,
        "instances": 2.5,
        "instnces": 3,
        "upgradeStrategy": {"minimumHealthCapacity": 1.5, "maximumOverCapacity": -0.1},
        "healthChecks": [{"protocol": "FOO"}, {"protocol": "COMMAND"}],
        "unreachableStrategy": {"inactiveAfterSeconds": 10, "expungeAfterSeconds": 5},
        "killSelection": "RANDOM",
        "env": {"A": 1},
        "labels": ["x"]
    }))
    .unwrap_err();
    let p = paths(&err);
    for want in [
        "/id",
        "/cpus",
        "/mem",
        "/disk",
        "/instances",
        "/instnces",
        "/upgradeStrategy/minimumHealthCapacity",
        "/upgradeStrategy/maximumOverCapacity",
        "/healthChecks/0/protocol",
        "/healthChecks/1/command",
        "/unreachableStrategy",
        "/killSelection",
        "/env/A",
        "/labels",
        "/args",
    ] {
        assert!(p.contains(&want), "no error at {want}: {err}");
    }
    let typo = err.errors.iter().find(|e| e.path == "/instnces").unwrap();
    assert!(
        typo.message.contains("did you mean \"instances\""),
        "{}",
        typo.message
    );
    let body = err.to_marathon_json();
    assert_eq!(body["message"], "Object is not valid");
    let details = body["details"].as_array().unwrap();
    assert!(
        details
            .iter()
            .any(|d| d["path"] == "/upgradeStrategy/minimumHealthCapacity"
                && d["errors"][0].as_str().unwrap().contains("not in [0, 1]"))
    );
}

#[test]
fn refuses_unsupported_marathon_fields_unless_default() {
    let err = parse(json!({
        "id": "/x",
        "cmd": "x",
        "residency": {"taskLostBehavior": "WAIT_FOREVER"},
        "secrets": {"s": {"source": "db"}},
        "fetch": [{"uri": "http://x/y.tgz"}],
        "gpus": 1,
        "requirePorts": true,
        "ipAddress": {"networkName": "n"},
        "env": {"DB": {"secret": "s"}},
        "storeUrls": ["http://x"]
    }))
    .unwrap_err();
    for want in [
        "/residency",
        "/secrets",
        "/fetch",
        "/gpus",
        "/requirePorts",
        "/ipAddress",
        "/env/DB",
        "/storeUrls",
    ] {
        let e = err.errors.iter().find(|e| e.path == want);
        assert!(
            e.is_some_and(|e| e.message.contains("not supported by berth")),
            "{want}: {err}"
        );
    }
    let err = parse(json!({
        "id": "/x",
        "container": {"type": "DOCKER", "volumes": [{"containerPath": "/d"}],
            "docker": {"image": "i", "privileged": true, "parameters": [{"key": "a", "value": "b"}],
                       "network": "USER"}},
        "networks": [{"mode": "container", "name": "dcos"}]
    }))
    .unwrap_err();
    for want in [
        "/container/volumes",
        "/container/docker/privileged",
        "/container/docker/parameters",
        "/container/docker/network",
        "/networks/0/mode",
        "/networks/0/name",
    ] {
        assert!(err.has_path(want), "{want}: {err}");
    }
}

#[test]
fn strict_text_readers() {
    let dup = AppDefinition::from_json(r#"{"id": "/x", "cmd": "a", "cmd": "b"}"#).unwrap_err();
    assert!(dup.to_string().contains("duplicate field \"cmd\""), "{dup}");
    let nan = AppDefinition::from_yaml("id: /x\ncmd: a\ncpus: .nan\n").unwrap_err();
    assert!(
        matches!(&nan, ParseError::Invalid(i) if i.has_path("/cpus")),
        "{nan}"
    );
    let syntax = AppDefinition::from_json("{").unwrap_err();
    assert_eq!(syntax.to_marathon_json()["message"], "Invalid JSON");
}

#[test]
fn cross_field_rules() {
    let err = parse(json!({
        "id": "/x",
        "portDefinitions": [{"port": 10000}, {"port": 10000}],
        "healthChecks": [{"protocol": "TCP", "portIndex": 5}, {"protocol": "TCP", "path": "/h"}],
        "readinessChecks": [{"portName": "web"}]
    }))
    .unwrap_err();
    for want in [
        "/cmd",
        "/healthChecks/1/path",
        "/readinessChecks/0/portName",
        "/",
    ] {
        assert!(err.has_path(want), "{want}: {err}");
    }
    let err = parse(json!({
        "id": "/x", "cmd": "c",
        "container": {"docker": {"image": "i", "network": "HOST"},
                      "portMappings": [{"containerPort": 80}]}
    }))
    .unwrap_err();
    assert!(err.has_path("/container/portMappings"), "{err}");
    let err = parse(json!({
        "id": "/x", "cmd": "c",
        "healthChecks": [{"protocol": "TCP", "portIndex": 5}]
    }))
    .unwrap_err();
    assert_eq!(paths(&err), ["/healthChecks/0/portIndex"], "{err}");
    let app =
        parse(json!({"id": "/shop/web", "cmd": "c", "dependencies": ["cache", "../db"]})).unwrap();
    let deps: Vec<String> = app.dependencies.iter().map(ToString::to_string).collect();
    assert_eq!(deps, ["/shop/cache", "/db"]);
}

#[test]
fn deployment_settings_are_validated() {
    let err = parse(json!({
        "id": "/x", "cmd": "c",
        "deployment": {"strategy": "canary", "minHealthySeconds": -1,
            "canary": {"steps": [{"weight": 50}, {"weight": 20}, {"weight": 0}, {"pause": 5, "weight": 3}, {"weight": 90}],
                       "analysis": {"maxErrorRate": 2, "intervalSeconds": 0, "bogus": 1}},
            "blueGreen": {}}
    }))
    .unwrap_err();
    for want in [
        "/deployment/minHealthySeconds",
        "/deployment/canary/steps/1/weight",
        "/deployment/canary/steps/2/weight",
        "/deployment/canary/steps/3",
        "/deployment/canary/analysis/maxErrorRate",
        "/deployment/canary/analysis/intervalSeconds",
        "/deployment/canary/analysis/bogus",
        "/deployment/blueGreen",
    ] {
        assert!(err.has_path(want), "{want}: {err}");
    }
    let err = parse(json!({"id": "/x", "cmd": "c",
        "deployment": {"canary": {"steps": [{"weight": 20}]}}}))
    .unwrap_err();
    assert!(err.has_path("/deployment/canary"), "{err}");
    let err = parse(json!({"id": "/x", "cmd": "c",
        "deployment": {"strategy": "canary", "canary": {"steps": [{"weight": 20}]}}}))
    .unwrap_err();
    assert!(err.has_path("/deployment/canary/steps"), "{err}");

    let app = parse(
        json!({"id": "/x", "cmd": "c", "portDefinitions": [{"port": 10000}],
        "deployment": {"strategy": "blueGreen", "blueGreen": {"previewPort": 10001},
                       "progressDeadlineSeconds": 0, "autoRevert": false}}),
    )
    .unwrap();
    assert_eq!(app.deployment.progress_deadline, None);
    assert!(!app.deployment.auto_revert);
    assert_eq!(
        app.deployment.strategy,
        Strategy::BlueGreen(BlueGreen {
            preview_port: Some(10001),
            keep_old: Duration::from_secs(300)
        })
    );
}

#[test]
fn changes_tell_scale_from_restart() {
    let a = parse(json!({"id": "/x", "cmd": "c", "instances": 2})).unwrap();
    let mut b = a.clone();
    b.instances = 5;
    assert_eq!(a.changes(&a), Change::None);
    assert_eq!(a.changes(&b), Change::Scale { from: 2, to: 5 });
    let mut c = b.clone();
    c.env.insert("K".into(), "v".into());
    assert_eq!(a.changes(&c), Change::Restart);
    let mut d = a.clone();
    d.upgrade_strategy.minimum_health_capacity = Fraction::ZERO;
    assert_eq!(
        a.changes(&d),
        Change::Restart,
        "Marathon counts upgradeStrategy"
    );

    let v1 = AppVersion::first(a, Timestamp::from_secs(100));
    let (v2, ch) = v1.next(b, Timestamp::from_secs(200));
    assert_eq!(ch, Change::Scale { from: 2, to: 5 });
    assert_eq!(v2.config_version(), Timestamp::from_secs(100));
    assert_eq!(v2.info.last_scaling_at, Timestamp::from_secs(200));
    let (v3, ch) = v2.next(c, Timestamp::from_secs(300));
    assert_eq!(ch, Change::Restart);
    assert_eq!(v3.config_version(), Timestamp::from_secs(300));
    let j = v3.to_marathon_json();
    assert_eq!(j["version"], "1970-01-01T00:05:00.000Z");
    assert_eq!(
        j["versionInfo"]["lastConfigChangeAt"],
        "1970-01-01T00:05:00.000Z"
    );
    // What GET returns parses again to the same definition.
    assert_eq!(AppDefinition::from_value(&j).unwrap(), v3.definition);
}

mod roundtrip;

#[test]
fn a_second_health_check_is_refused_with_its_path() {
    let err = parse(json!({
        "id": "/x", "cmd": "c",
        "healthChecks": [{"protocol": "TCP"}, {"protocol": "COMMAND", "command": {"value": "true"}}]
    }))
    .unwrap_err();
    assert!(err.has_path("/healthChecks/1"), "{err}");
    assert!(
        err.to_string().contains("one health check per instance"),
        "{err}"
    );
    assert!(parse(json!({"id": "/x", "cmd": "c", "healthChecks": [{"protocol": "TCP"}]})).is_ok());
}

#[test]
fn https_checks_are_refused_with_their_path() {
    let err = parse(json!({
        "id": "/x", "cmd": "c",
        "portDefinitions": [{"port": 0, "name": "http-api"}],
        "healthChecks": [{"protocol": "MESOS_HTTPS"}],
        "readinessChecks": [{"protocol": "HTTPS", "portName": "http-api"}]
    }))
    .unwrap_err();
    assert!(err.has_path("/healthChecks/0/protocol"), "{err}");
    assert!(err.has_path("/readinessChecks/0/protocol"), "{err}");
    assert!(err.to_string().contains("not supported by berth"), "{err}");
}
