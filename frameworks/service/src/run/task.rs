//! One instance of an app version as a task: the `TaskInfo` the agent
//! runs and the [`Placement`] the SDK runtime spreads it with.
//!
//! - **Ids.** An instance is a slot the deployment created; each launch of
//!   it is a task `<app>.<instance>.<attempt>` (`shop_web.i3f2….2`): the
//!   runtime launches a task id at most once, so a relaunch after a
//!   failure is the next attempt.
//! - **Ports.** `HOST` networking takes one host port per port definition;
//!   `BRIDGE` one per port mapping, mapped to its container port. A port
//!   of 0 (or none) is any free port of the offer, chosen at placement; a
//!   fixed one is asked for as is. The task learns them as `PORT0`…,
//!   `PORT`, `PORTS` (set at placement) and its health check probes the
//!   one its `portIndex` names.
//! - **Placement.** Instances of an app spread over agents; its
//!   constraints become the runtime's rule, evaluated against the agents
//!   its other instances run on.
//! - **Environment.** The app's `env`, then `MARATHON_APP_ID`,
//!   `MARATHON_APP_VERSION` and `BERTH_INSTANCE_ID`, as Marathon sets the
//!   first two.

use std::sync::Arc;

use berth_proto as pb;
use berth_proto::convert::resources_to_proto;
use berth_scheduler_core::{PortRanges, Resources};
use berth_sdk::runtime::{Place, Placement};

use crate::app::constraint::{AgentView, allows_all};
use crate::app::{AppDefinition, AppVersion, Command, HealthProtocol, NetworkMode, Protocol};

/// Longest part of a task id taken from the app id.
const MAX_SLUG: usize = 160;

/// The part of task ids that names the app: its path, `/` as `_`.
#[must_use]
pub fn app_slug(def: &AppDefinition) -> String {
    let mut slug = def.id.segments().join("_");
    if slug.len() > MAX_SLUG {
        let mut end = MAX_SLUG;
        while !slug.is_char_boundary(end) {
            end -= 1;
        }
        slug.truncate(end);
    }
    slug
}

/// The task id of `attempt` of `instance`.
#[must_use]
pub fn task_id(def: &AppDefinition, instance: &str, attempt: u32) -> String {
    format!("{}.{instance}.{attempt}", app_slug(def))
}

/// The host ports an instance asks for, in the app's port order: `None`
/// for any free port, `Some(p)` for port `p`.
#[must_use]
pub fn host_ports(def: &AppDefinition) -> Vec<Option<u16>> {
    let fixed = |p: Option<u16>| p.filter(|p| *p != 0);
    match &def.container {
        Some(c) if c.network == NetworkMode::Bridge => {
            c.port_mappings.iter().map(|m| fixed(m.host_port)).collect()
        }
        Some(c) if c.network == NetworkMode::None => Vec::new(),
        _ => def.port_definitions.iter().map(|_| None).collect(),
    }
}

/// The task of `attempt` of `instance` of `version`, and how to place it
/// given the agents the app's other instances run on.
#[must_use]
pub fn instance_task(
    version: &AppVersion,
    instance: &str,
    attempt: u32,
    others: Vec<Place>,
) -> (pb::TaskInfo, Placement) {
    let def = &version.definition;
    let ports = host_ports(def);
    let fixed: Vec<u16> = ports.iter().flatten().copied().collect();
    let dynamic = u32::try_from(ports.iter().filter(|p| p.is_none()).count()).unwrap_or(u32::MAX);
    let mut resources = Resources::empty();
    resources.cpus = def.resources.cpus;
    resources.mem = def.resources.mem;
    resources.disk = def.resources.disk;
    if !fixed.is_empty() {
        let ranges: Vec<(u64, u64)> = fixed
            .iter()
            .map(|p| (u64::from(*p), u64::from(*p)))
            .collect();
        resources.ports = PortRanges::from_ranges(&ranges).unwrap_or_default();
    }
    let mut env = def.env.clone();
    env.insert("MARATHON_APP_ID".into(), def.id.to_string());
    env.insert("MARATHON_APP_VERSION".into(), version.version.to_string());
    env.insert("BERTH_INSTANCE_ID".into(), instance.to_string());
    let mut command = pb::CommandInfo {
        env: env.into_iter().collect(),
        ..Default::default()
    };
    match &def.command {
        Command::Shell(s) => command.shell.clone_from(s),
        Command::Args(a) => command.argv.clone_from(a),
        Command::None => {}
    }
    let container = def.container.as_ref().and_then(|c| {
        let image = c.image.clone()?;
        let network = match c.network {
            NetworkMode::Bridge => "bridge",
            NetworkMode::Host => "host",
            NetworkMode::None => "none",
        };
        let port_mappings = if c.network == NetworkMode::Bridge {
            c.port_mappings
                .iter()
                .map(|m| pb::PortMapping {
                    container_port: u32::from(m.container_port),
                    host_port: u32::from(m.host_port.unwrap_or(0)),
                    protocol: match m.protocol {
                        Protocol::Udp => "udp".into(),
                        _ => "tcp".into(),
                    },
                })
                .collect()
        } else {
            Vec::new()
        };
        Some(pb::ContainerInfo {
            image,
            port_mappings,
            network: network.into(),
            ..Default::default()
        })
    });
    let (health_check, health_port) = health(def, &ports);
    let task = pb::TaskInfo {
        task_id: task_id(def, instance, attempt),
        name: def.id.to_string(),
        resources: Some(resources_to_proto(&resources)),
        command: Some(command),
        labels: def
            .labels
            .iter()
            .map(|(k, v)| pb::Label {
                key: k.clone(),
                value: v.clone(),
            })
            .collect(),
        kill_grace_period_seconds: def.task_kill_grace_period.map_or(0.0, |d| d.as_secs_f64()),
        container,
        health_check,
        ..Default::default()
    };
    let mut placement = Placement::new(def.id.to_string());
    placement.ports = dynamic;
    placement.existing = others;
    placement.health_port = health_port;
    if !def.constraints.is_empty() {
        let constraints = def.constraints.clone();
        let instances = def.instances;
        placement.rule = Some(Arc::new(move |candidate: &Place, placed: &[Place]| {
            let view = |p: &Place| AgentView {
                hostname: p.hostname.clone(),
                attributes: p.attributes.clone(),
            };
            let placed: Vec<AgentView> = placed.iter().map(view).collect();
            let refs: Vec<&AgentView> = placed.iter().collect();
            allows_all(&constraints, &view(candidate), &refs, instances)
        }));
    }
    (task, placement)
}

/// The agent's health check of an instance, and which of its dynamic
/// ports the check probes (set at placement).
fn health(def: &AppDefinition, ports: &[Option<u16>]) -> (Option<pb::HealthCheck>, Option<u32>) {
    let Some(hc) = def.health_checks.first() else {
        return (None, None);
    };
    let secs = |d: std::time::Duration| d.as_secs_f64();
    let mut check = pb::HealthCheck {
        grace_period_seconds: secs(hc.grace_period),
        interval_seconds: secs(hc.interval),
        timeout_seconds: secs(hc.timeout),
        consecutive_failures: hc.max_consecutive_failures,
        delay_seconds: secs(hc.delay),
        // Marathon's 0 grace period is none, its 0 failures never kill.
        literal_zeros: true,
        ..Default::default()
    };
    // The port probed: a fixed `port`, or the `portIndex`-th host port
    // (fixed, or dynamic and known only at placement).
    let index = hc.port_index.unwrap_or(0) as usize;
    let (fixed, dynamic) = match hc.port {
        Some(p) => (u32::from(p), None),
        None => match ports.get(index) {
            Some(Some(p)) => (u32::from(*p), None),
            Some(None) => {
                let nth = ports[..index].iter().filter(|p| p.is_none()).count();
                (0, u32::try_from(nth).ok())
            }
            None => (0, None),
        },
    };
    match hc.protocol {
        HealthProtocol::Http
        | HealthProtocol::Https
        | HealthProtocol::MesosHttp
        | HealthProtocol::MesosHttps => {
            let scheme = if matches!(
                hc.protocol,
                HealthProtocol::Https | HealthProtocol::MesosHttps
            ) {
                "https"
            } else {
                "http"
            };
            check.http = Some(pb::HttpCheck {
                port: fixed,
                path: hc.path.clone().unwrap_or_else(|| "/".into()),
                scheme: scheme.into(),
            });
        }
        HealthProtocol::Tcp | HealthProtocol::MesosTcp => {
            check.tcp = Some(pb::TcpCheck { port: fixed });
        }
        HealthProtocol::Command => {
            check.command = Some(pb::CommandInfo {
                shell: hc.command.clone().unwrap_or_default(),
                ..Default::default()
            });
            return (Some(check), None);
        }
    }
    (Some(check), dynamic)
}

#[cfg(test)]
mod tests;
