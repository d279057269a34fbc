//! [`AppDefinition::to_marathon_json`]: the definition in Marathon's shape,
//! every default filled in, so that what GET returns can be POSTed again
//! (and parses back to the same definition).

use std::collections::BTreeMap;
use std::time::Duration;

use berth_scheduler_core::resources::Scalar;
use serde_json::{Map, Value, json};

use super::settings::{Analysis, CanaryStep, DeploymentSettings, Ratio, Strategy};
use super::{
    AppDefinition, Command, ContainerKind, Fraction, HealthCheck, HealthProtocol, HttpScheme,
    KillSelection, NetworkMode, PortDefinition, PortMapping, Protocol, ReadinessCheck,
    UnreachableStrategy,
};

fn scalar(s: Scalar) -> Value {
    if s.milli().is_multiple_of(1000) {
        json!(s.milli() / 1000)
    } else {
        json!(s.to_f64())
    }
}

fn fraction(f: Fraction) -> Value {
    if f.ppm().is_multiple_of(1_000_000) {
        json!(f.ppm() / 1_000_000)
    } else {
        json!(f.to_f64())
    }
}

fn ratio(r: Option<Ratio>) -> Value {
    r.map_or(Value::Null, |r| json!(r.to_f64()))
}

fn secs(d: Duration) -> Value {
    json!(d.as_secs())
}

fn labels(l: &BTreeMap<String, String>) -> Value {
    json!(l)
}

fn protocol(p: Protocol) -> &'static str {
    match p {
        Protocol::Tcp => "tcp",
        Protocol::Udp => "udp",
        Protocol::UdpTcp => "udp,tcp",
    }
}

fn put_opt(m: &mut Map<String, Value>, key: &str, v: Option<Value>) {
    if let Some(v) = v {
        m.insert(key.into(), v);
    }
}

fn port_mapping(p: &PortMapping) -> Value {
    let mut m = Map::new();
    m.insert("containerPort".into(), json!(p.container_port));
    put_opt(&mut m, "hostPort", p.host_port.map(|h| json!(h)));
    m.insert("servicePort".into(), json!(p.service_port));
    m.insert("protocol".into(), json!(protocol(p.protocol)));
    put_opt(&mut m, "name", p.name.as_ref().map(|n| json!(n)));
    m.insert("labels".into(), labels(&p.labels));
    Value::Object(m)
}

fn port_definition(p: &PortDefinition) -> Value {
    let mut m = Map::new();
    m.insert("port".into(), json!(p.port));
    m.insert("protocol".into(), json!(protocol(p.protocol)));
    put_opt(&mut m, "name", p.name.as_ref().map(|n| json!(n)));
    m.insert("labels".into(), labels(&p.labels));
    Value::Object(m)
}

fn health_check(h: &HealthCheck) -> Value {
    let proto = match h.protocol {
        HealthProtocol::Http => "HTTP",
        HealthProtocol::Https => "HTTPS",
        HealthProtocol::Tcp => "TCP",
        HealthProtocol::Command => "COMMAND",
        HealthProtocol::MesosHttp => "MESOS_HTTP",
        HealthProtocol::MesosHttps => "MESOS_HTTPS",
        HealthProtocol::MesosTcp => "MESOS_TCP",
    };
    let mut m = Map::new();
    m.insert("protocol".into(), json!(proto));
    put_opt(&mut m, "path", h.path.as_ref().map(|p| json!(p)));
    put_opt(&mut m, "portIndex", h.port_index.map(|p| json!(p)));
    put_opt(&mut m, "port", h.port.map(|p| json!(p)));
    put_opt(
        &mut m,
        "command",
        h.command.as_ref().map(|c| json!({ "value": c })),
    );
    m.insert("gracePeriodSeconds".into(), secs(h.grace_period));
    m.insert("intervalSeconds".into(), secs(h.interval));
    m.insert("timeoutSeconds".into(), secs(h.timeout));
    m.insert(
        "maxConsecutiveFailures".into(),
        json!(h.max_consecutive_failures),
    );
    m.insert("delaySeconds".into(), secs(h.delay));
    m.insert("ignoreHttp1xx".into(), json!(h.ignore_http_1xx));
    Value::Object(m)
}

fn readiness_check(r: &ReadinessCheck) -> Value {
    json!({
        "name": r.name,
        "protocol": match r.protocol { HttpScheme::Http => "HTTP", HttpScheme::Https => "HTTPS" },
        "path": r.path,
        "portName": r.port_name,
        "intervalSeconds": r.interval.as_secs(),
        "timeoutSeconds": r.timeout.as_secs(),
        "httpStatusCodesForReady": r.http_status_codes_for_ready,
        "preserveLastResponse": r.preserve_last_response,
    })
}

fn analysis(a: &Analysis) -> Value {
    json!({
        "intervalSeconds": a.interval.as_secs(),
        "minRequests": a.min_requests,
        "maxErrorRate": fraction(a.max_error_rate),
        "maxP99LatencyMs": a.max_p99_latency.map(|d| d.as_millis() as u64),
        "maxErrorRateOverStable": ratio(a.max_error_rate_over_stable),
        "maxP99OverStable": ratio(a.max_p99_over_stable),
    })
}

fn deployment(d: &DeploymentSettings) -> Value {
    let mut m = Map::new();
    m.insert("strategy".into(), json!(d.strategy.name()));
    m.insert("minHealthySeconds".into(), secs(d.min_healthy));
    m.insert(
        "progressDeadlineSeconds".into(),
        secs(d.progress_deadline.unwrap_or(Duration::ZERO)),
    );
    m.insert("autoRevert".into(), json!(d.auto_revert));
    match &d.strategy {
        Strategy::Rolling => {}
        Strategy::BlueGreen(bg) => {
            m.insert(
                "blueGreen".into(),
                json!({ "previewPort": bg.preview_port, "keepOldSeconds": bg.keep_old.as_secs() }),
            );
        }
        Strategy::Canary(c) => {
            let steps: Vec<Value> = c
                .steps
                .iter()
                .map(|s| match s {
                    CanaryStep::Weight(w) => json!({ "weight": w }),
                    CanaryStep::Pause(p) => json!({ "pause": p.map(|d| d.as_secs()) }),
                })
                .collect();
            m.insert(
                "canary".into(),
                json!({ "steps": steps, "analysis": analysis(&c.analysis) }),
            );
        }
    }
    Value::Object(m)
}

impl AppDefinition {
    /// The definition as Marathon's GET /v2/apps renders it (without
    /// `version`/`versionInfo`, which [`super::AppVersion`] adds), plus
    /// berth's `deployment`.
    pub fn to_marathon_json(&self) -> Value {
        let mut m = Map::new();
        m.insert("id".into(), json!(self.id.to_string()));
        match &self.command {
            Command::None => {}
            Command::Shell(c) => {
                m.insert("cmd".into(), json!(c));
            }
            Command::Args(a) => {
                m.insert("args".into(), json!(a));
            }
        }
        let network = self
            .container
            .as_ref()
            .map_or(NetworkMode::Host, |c| c.network);
        if let Some(c) = &self.container {
            let mut docker = Map::new();
            put_opt(&mut docker, "image", c.image.as_ref().map(|i| json!(i)));
            docker.insert(
                "network".into(),
                json!(match c.network {
                    NetworkMode::Bridge => "BRIDGE",
                    NetworkMode::Host => "HOST",
                    NetworkMode::None => "NONE",
                }),
            );
            docker.insert("forcePullImage".into(), json!(c.force_pull_image));
            docker.insert("privileged".into(), json!(false));
            docker.insert("parameters".into(), json!([]));
            let kind = match c.kind {
                ContainerKind::Docker => "DOCKER",
                ContainerKind::Mesos => "MESOS",
            };
            let mappings: Vec<Value> = c.port_mappings.iter().map(port_mapping).collect();
            m.insert(
                "container".into(),
                json!({ "type": kind, "docker": docker, "portMappings": mappings, "volumes": [] }),
            );
        }
        let defs: Vec<Value> = self.port_definitions.iter().map(port_definition).collect();
        m.insert("portDefinitions".into(), json!(defs));
        m.insert("requirePorts".into(), json!(false));
        if network != NetworkMode::None {
            let mode = if network == NetworkMode::Bridge {
                "container/bridge"
            } else {
                "host"
            };
            m.insert("networks".into(), json!([{ "mode": mode }]));
        }
        m.insert("cpus".into(), scalar(self.resources.cpus));
        m.insert("mem".into(), scalar(self.resources.mem));
        m.insert("disk".into(), scalar(self.resources.disk));
        m.insert("gpus".into(), json!(0));
        m.insert("instances".into(), json!(self.instances));
        m.insert("env".into(), labels(&self.env));
        m.insert("labels".into(), labels(&self.labels));
        let hcs: Vec<Value> = self.health_checks.iter().map(health_check).collect();
        m.insert("healthChecks".into(), json!(hcs));
        let rcs: Vec<Value> = self.readiness_checks.iter().map(readiness_check).collect();
        m.insert("readinessChecks".into(), json!(rcs));
        let cs: Vec<Value> = self
            .constraints
            .iter()
            .map(|c| match c.op.value() {
                Some(v) => json!([c.field, c.op.name(), v]),
                None => json!([c.field, c.op.name()]),
            })
            .collect();
        m.insert("constraints".into(), json!(cs));
        m.insert(
            "upgradeStrategy".into(),
            json!({
                "minimumHealthCapacity": fraction(self.upgrade_strategy.minimum_health_capacity),
                "maximumOverCapacity": fraction(self.upgrade_strategy.maximum_over_capacity),
            }),
        );
        m.insert("backoffSeconds".into(), secs(self.backoff.initial));
        m.insert("backoffFactor".into(), scalar(self.backoff.factor));
        m.insert(
            "maxLaunchDelaySeconds".into(),
            secs(self.backoff.max_launch_delay),
        );
        m.insert(
            "killSelection".into(),
            json!(match self.kill_selection {
                KillSelection::YoungestFirst => "YOUNGEST_FIRST",
                KillSelection::OldestFirst => "OLDEST_FIRST",
            }),
        );
        m.insert(
            "unreachableStrategy".into(),
            match self.unreachable_strategy {
                UnreachableStrategy::Disabled => json!("disabled"),
                UnreachableStrategy::Enabled {
                    inactive_after,
                    expunge_after,
                } => json!({
                    "inactiveAfterSeconds": inactive_after.as_secs(),
                    "expungeAfterSeconds": expunge_after.as_secs(),
                }),
            },
        );
        let deps: Vec<String> = self.dependencies.iter().map(ToString::to_string).collect();
        m.insert("dependencies".into(), json!(deps));
        put_opt(&mut m, "user", self.user.as_ref().map(|u| json!(u)));
        put_opt(
            &mut m,
            "taskKillGracePeriodSeconds",
            self.task_kill_grace_period.map(secs),
        );
        m.insert(
            "acceptedResourceRoles".into(),
            json!(self.accepted_resource_roles),
        );
        put_opt(&mut m, "role", self.role.as_ref().map(|r| json!(r)));
        m.insert("fetch".into(), json!([]));
        m.insert("deployment".into(), deployment(&self.deployment));
        Value::Object(m)
    }
}
