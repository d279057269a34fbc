//! What the router serves: for every app port with a service port, the
//! app's healthy instances that are not being killed, at their agent's
//! address and host port, split between versions as the app's deployment
//! says. Pure: the caller knows the agents' addresses.
//!
//! A port is proxied as HTTP unless the app's label `HAPROXY_<n>_MODE` (the
//! label marathon-lb reads, `<n>` the port's index) says `tcp`. The first
//! service port is the service `<app id>`, the others `<app id>#<n>`.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};

use berth_router::{Backend, Preview, Protocol, RouteTable, Service};

use crate::app::AppDefinition;
use crate::run::instances::Instances;
use crate::run::steer::Traffic;
use crate::time::Timestamp;

/// The service ports of an app, with their index among its ports.
#[must_use]
pub fn service_ports(def: &AppDefinition) -> Vec<(usize, u16)> {
    let ports: Vec<u16> = match &def.container {
        Some(c) if !c.port_mappings.is_empty() => {
            c.port_mappings.iter().map(|p| p.service_port).collect()
        }
        _ => def.port_definitions.iter().map(|p| p.port).collect(),
    };
    ports
        .into_iter()
        .enumerate()
        .filter(|(_, p)| *p != 0)
        .collect()
}

/// The router's name of port `index` of `app`.
#[must_use]
pub fn service_name(app: &str, index: usize) -> String {
    if index == 0 {
        app.to_owned()
    } else {
        format!("{app}#{index}")
    }
}

fn protocol(def: &AppDefinition, index: usize) -> Protocol {
    match def.labels.get(&format!("HAPROXY_{index}_MODE")) {
        Some(mode) if mode.eq_ignore_ascii_case("tcp") => Protocol::Tcp,
        _ => Protocol::Http,
    }
}

/// One app as the router sees it: its current definition (ports and
/// modes) and how its traffic is split.
#[derive(Debug, Clone, Copy)]
pub struct RoutedApp<'a> {
    /// The app's current definition.
    pub definition: &'a AppDefinition,
    /// The split of its running deployment, if any.
    pub traffic: Option<&'a Traffic>,
}

/// The whole table: `apps` by id, their `instances`, and each agent's
/// address by agent id (instances on agents without one are left out).
#[must_use]
pub fn route_table(
    apps: &BTreeMap<String, RoutedApp<'_>>,
    instances: &Instances,
    agents: &BTreeMap<String, IpAddr>,
) -> RouteTable {
    let mut services = Vec::new();
    for (id, app) in apps {
        let view = instances.planner_view(id);
        for (index, port) in service_ports(app.definition) {
            let backends: Vec<Backend> = view
                .iter()
                .filter(|i| i.healthy_since.is_some())
                .filter_map(|i| {
                    let run = instances.slots().get(&i.id)?.run.as_ref()?;
                    let ip = agents.get(&run.agent_id)?;
                    let host_port = *run.ports.get(index)?;
                    Some(Backend {
                        instance: i.id.clone(),
                        version: i.version.to_string(),
                        addr: SocketAddr::new(*ip, host_port),
                    })
                })
                .collect();
            let weights = app.traffic.map_or_else(BTreeMap::new, |t| {
                t.weights
                    .iter()
                    .map(|(v, w): (&Timestamp, &u8)| (v.to_string(), u32::from(*w)))
                    .collect()
            });
            let preview = app.traffic.and_then(|t| t.preview).and_then(|(v, p)| {
                (index == 0).then(|| Preview {
                    port: p,
                    version: v.to_string(),
                })
            });
            services.push(Service {
                app: service_name(id, index),
                port,
                bind: None,
                protocol: protocol(app.definition, index),
                preview,
                backends,
                weights,
            });
        }
    }
    RouteTable { services }
}

#[cfg(test)]
mod tests;
