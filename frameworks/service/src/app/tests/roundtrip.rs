//! parse(render(app)) == app over generated definitions.

use proptest::prelude::*;
use serde_json::{Map, Value, json};

use super::super::AppDefinition;

fn name() -> impl Strategy<Value = String> {
    "[a-z][a-z0-9-]{0,6}[a-z0-9]"
}

fn labels() -> impl Strategy<Value = Value> {
    prop::collection::btree_map("[A-Z_]{1,6}", "[ -~]{0,8}", 0..3).prop_map(|m| json!(m))
}

fn health_check() -> impl Strategy<Value = Value> {
    (
        prop_oneof![
            Just("HTTP"),
            Just("TCP"),
            Just("COMMAND"),
            Just("MESOS_HTTP")
        ],
        0u64..400,
        2u64..100,
        0u32..10,
        any::<bool>(),
    )
        .prop_map(|(proto, grace, interval, fails, ignore)| {
            let mut m = Map::new();
            m.insert("protocol".into(), json!(proto));
            match proto {
                "COMMAND" => {
                    m.insert("command".into(), json!({"value": "true"}));
                }
                "TCP" => {
                    m.insert("portIndex".into(), json!(0));
                }
                _ => {
                    m.insert("path".into(), json!("/health"));
                    m.insert("portIndex".into(), json!(0));
                }
            }
            m.insert("gracePeriodSeconds".into(), json!(grace));
            m.insert("intervalSeconds".into(), json!(interval));
            m.insert("timeoutSeconds".into(), json!(interval - 1));
            m.insert("maxConsecutiveFailures".into(), json!(fails));
            m.insert("ignoreHttp1xx".into(), json!(ignore));
            Value::Object(m)
        })
}

fn constraint() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(json!(["hostname", "UNIQUE"])),
        (1u32..5).prop_map(|n| json!(["rack", "GROUP_BY", n.to_string()])),
        Just(json!(["zone", "GROUP_BY"])),
        Just(json!(["zone", "CLUSTER"])),
        name().prop_map(|v| json!(["zone", "CLUSTER", v])),
        Just(json!(["hostname", "LIKE", "web-[0-9]+"])),
        Just(json!(["rack", "UNLIKE", "r1|r2"])),
        (1u32..9).prop_map(|n| json!(["rack", "MAX_PER", n.to_string()])),
        name().prop_map(|v| json!(["ssd", "IS", v])),
    ]
}

fn deployment() -> impl Strategy<Value = Value> {
    let common = || (0u64..100, 0u64..2000, any::<bool>());
    prop_oneof![
        common().prop_map(|(m, p, r)| json!({"minHealthySeconds": m, "progressDeadlineSeconds": p, "autoRevert": r})),
        (common(), prop::option::of(20000u16..30000), 0u64..1000).prop_map(|((m, p, r), pp, k)| json!({
            "strategy": "blueGreen", "minHealthySeconds": m, "progressDeadlineSeconds": p, "autoRevert": r,
            "blueGreen": {"previewPort": pp, "keepOldSeconds": k}})),
        (common(), prop::collection::btree_set(1u8..100, 0..4), prop::option::of(0u64..100),
         1u64..100, 0u64..100, 0u32..=1000, prop::option::of(1u64..5000), prop::option::of(1000u32..5000))
            .prop_map(|((m, p, r), ws, pause, iv, minr, rate, p99, over)| {
                let mut steps: Vec<Value> = Vec::new();
                for w in ws {
                    steps.push(json!({"weight": w}));
                    steps.push(json!({"pause": pause}));
                }
                steps.push(json!({"weight": 100}));
                json!({"strategy": "canary", "minHealthySeconds": m, "progressDeadlineSeconds": p,
                    "autoRevert": r, "canary": {"steps": steps, "analysis": {
                        "intervalSeconds": iv, "minRequests": minr,
                        "maxErrorRate": f64::from(rate) / 1000.0, "maxP99LatencyMs": p99,
                        "maxErrorRateOverStable": over.map(|o| f64::from(o) / 1000.0),
                        "maxP99OverStable": null}}})
            }),
    ]
}

prop_compose! {
    fn app()(
        path in prop::collection::vec(name(), 1..3),
        cmd in prop_oneof![
            Just(json!({"cmd": "sleep 100"})),
            Just(json!({"args": ["serve", "--port", "80"]})),
            Just(json!({})),
        ],
        bridge in any::<bool>(),
        cpus in 1u64..64_000,
        mem in 0u64..1_000_000,
        disk in 0u64..1_000_000,
        instances in 0u32..50,
        env in labels(),
        lbls in labels(),
        hcs in prop::collection::vec(health_check(), 0..2),
        cons in prop::collection::vec(constraint(), 0..3),
        mhc in 0u32..=1000, moc in 0u32..=1000,
        backoff in 0u64..100, factor in 1000u64..5000, max_delay in 0u64..5000,
        oldest in any::<bool>(),
        unreachable in prop_oneof![Just(json!("disabled")),
            (0u64..100, 0u64..100).prop_map(|(a, b)| json!({"inactiveAfterSeconds": a.min(b), "expungeAfterSeconds": a.max(b)}))],
        user in prop::option::of(name()),
        grace in prop::option::of(0u64..100),
        dep in deployment(),
        service_port in 10000u16..11000,
    ) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(path.join("/")));
        for (k, v) in cmd.as_object().unwrap() { m.insert(k.clone(), v.clone()); }
        let rolling = dep.get("strategy").is_none();
        if bridge || m.get("cmd").is_none() && m.get("args").is_none() {
            let mapping = json!({"containerPort": 8080, "hostPort": 0, "servicePort": service_port,
                "protocol": "tcp", "name": "http-api", "labels": {}});
            m.insert("container".into(), json!({"type": "DOCKER", "docker": {
                "image": "shop/web:1", "network": if bridge { "BRIDGE" } else { "HOST" },
                "forcePullImage": bridge}, "portMappings": if bridge { json!([mapping]) } else { json!([]) }}));
        }
        if !bridge {
            m.insert("portDefinitions".into(), json!([{"port": service_port, "protocol": "udp,tcp", "name": "http-api"}]));
        }
        m.insert("readinessChecks".into(), json!([{"portName": "http-api", "httpStatusCodesForReady": [200, 204]}]));
        m.insert("cpus".into(), json!(cpus as f64 / 1000.0));
        m.insert("mem".into(), json!(mem as f64 / 1000.0));
        m.insert("disk".into(), json!(disk as f64 / 1000.0));
        m.insert("instances".into(), json!(instances));
        m.insert("env".into(), env);
        m.insert("labels".into(), lbls);
        m.insert("healthChecks".into(), json!(hcs));
        // One constraint per field: two on one field may contradict
        // (`ssd IS a` and `ssd IS b`), which is refused.
        let mut seen = Vec::new();
        let cons: Vec<Value> = cons.into_iter().filter(|c| { let dup = seen.contains(&c[0]); seen.push(c[0].clone()); !dup }).collect();
        m.insert("constraints".into(), json!(cons));
        if rolling {
            m.insert("upgradeStrategy".into(), json!({"minimumHealthCapacity": f64::from(mhc) / 1000.0,
                "maximumOverCapacity": f64::from(moc) / 1000.0}));
        }
        m.insert("backoffSeconds".into(), json!(backoff));
        m.insert("backoffFactor".into(), json!(factor as f64 / 1000.0));
        m.insert("maxLaunchDelaySeconds".into(), json!(max_delay));
        m.insert("killSelection".into(), json!(if oldest { "OLDEST_FIRST" } else { "YOUNGEST_FIRST" }));
        m.insert("unreachableStrategy".into(), unreachable);
        m.insert("dependencies".into(), json!(["/db", "cache"]));
        if let Some(u) = user { m.insert("user".into(), json!(u)); }
        if let Some(g) = grace { m.insert("taskKillGracePeriodSeconds".into(), json!(g)); }
        m.insert("acceptedResourceRoles".into(), json!(["*", "web"]));
        m.insert("deployment".into(), dep);
        Value::Object(m)
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn render_then_parse_is_identity(input in app()) {
        let app = AppDefinition::from_value(&input)
            .map_err(|e| TestCaseError::fail(format!("generated input invalid: {e}\n{input}")))?;
        let rendered = app.to_marathon_json();
        let again = AppDefinition::from_value(&rendered)
            .map_err(|e| TestCaseError::fail(format!("rendered output invalid: {e}\n{rendered}")))?;
        prop_assert_eq!(&again, &app);
        // Through text and YAML as well.
        let text = AppDefinition::from_json(&rendered.to_string()).unwrap();
        prop_assert_eq!(&text, &app);
        let yaml = yaml_serde::to_string(&rendered).unwrap();
        prop_assert_eq!(&AppDefinition::from_yaml(&yaml).unwrap(), &app);
    }
}
