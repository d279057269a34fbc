//! The agents the framework's instances run on: their placement view
//! (hostname, attributes) for the constraints, and the address the router
//! reaches their host ports at (the host of the agent's own API address).

use std::collections::BTreeMap;
use std::net::IpAddr;

use berth_proto as pb;
use berth_sdk::runtime::Place;

/// What the framework knows of the agents, by agent id.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Agents {
    /// Each agent as placement rules see it.
    pub places: BTreeMap<String, Place>,
    /// Each agent's address, for the router.
    pub ips: BTreeMap<String, IpAddr>,
}

/// The host part of an agent's `host:port` API address (IPv6 in brackets).
fn host_of(address: &str) -> &str {
    let host = match address.rsplit_once(':') {
        Some((h, port)) if port.chars().all(|c| c.is_ascii_digit()) => h,
        _ => address,
    };
    host.trim_start_matches('[').trim_end_matches(']')
}

impl Agents {
    /// The agents of a master's list; `resolve` turns a host name that is
    /// not an IP address into one (or not).
    pub async fn from_views<F, Fut>(views: &[pb::AgentView], resolve: F) -> Agents
    where
        F: Fn(String) -> Fut,
        Fut: std::future::Future<Output = Option<IpAddr>>,
    {
        let mut agents = Agents::default();
        for v in views {
            let Some(info) = &v.info else { continue };
            agents.places.insert(
                v.id.clone(),
                Place {
                    agent_id: v.id.clone(),
                    hostname: info.hostname.clone(),
                    attributes: info
                        .attributes
                        .iter()
                        .map(|a| (a.name.clone(), a.value.clone()))
                        .collect(),
                },
            );
            let host = host_of(&info.address);
            let ip = match host.parse::<IpAddr>() {
                Ok(ip) => Some(ip),
                Err(_) => resolve(host.to_owned()).await,
            };
            if let Some(ip) = ip {
                agents.ips.insert(v.id.clone(), ip);
            }
        }
        agents
    }
}

/// Resolves a host name with the system's resolver.
pub async fn resolve(host: String) -> Option<IpAddr> {
    tokio::net::lookup_host((host.as_str(), 0))
        .await
        .ok()?
        .next()
        .map(|a| a.ip())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(id: &str, address: &str) -> pb::AgentView {
        pb::AgentView {
            id: id.into(),
            info: Some(pb::AgentInfo {
                hostname: format!("{id}.example"),
                address: address.into(),
                attributes: vec![pb::Attribute {
                    name: "rack".into(),
                    value: "r1".into(),
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn addresses_become_ips_and_names_are_resolved() {
        let views = [
            view("a1", "10.0.0.1:5051"),
            view("a2", "[fd00::2]:5051"),
            view("a3", "node3:5051"),
            view("a4", "unknown-host:5051"),
        ];
        let agents = Agents::from_views(&views, |h: String| async move {
            (h == "node3").then(|| "10.0.0.3".parse().unwrap())
        })
        .await;
        let ips: Vec<String> = agents.ips.values().map(ToString::to_string).collect();
        assert_eq!(ips, ["10.0.0.1", "fd00::2", "10.0.0.3"]);
        assert!(!agents.ips.contains_key("a4"));
        assert_eq!(agents.places["a4"].hostname, "a4.example");
        assert_eq!(agents.places["a1"].attributes["rack"], "r1");
    }
}
