//! The route table: what the router should serve, as the framework states it.
//!
//! The framework hands the router a whole [`RouteTable`] at a time; the
//! router compares it with the one it serves (pure functions here: which
//! listeners to open and close, which backends left) and switches to it.

use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, SocketAddr};

use serde::{Deserialize, Serialize};

use crate::error::TableError;

/// The largest weight of one version.
pub const MAX_WEIGHT: u32 = 1_000_000;
/// The most services in one table.
pub const MAX_SERVICES: usize = 10_000;
/// The most backends of one service.
pub const MAX_BACKENDS: usize = 10_000;

/// Everything the router serves; [`crate::Router::apply`] replaces the
/// whole table at once.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RouteTable {
    /// One entry per app service port.
    pub services: Vec<Service>,
}

/// The protocol a service port speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    /// HTTP/1.1, proxied request by request.
    Http,
    /// Any TCP stream, proxied connection by connection.
    Tcp,
}

/// One app's service port and where its traffic goes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Service {
    /// The app id (the key of the service in the router's APIs and metrics;
    /// an app with two service ports needs two ids, e.g. `/shop/web#1`).
    pub app: String,
    /// The port to listen on; 0 binds any free port, see
    /// [`crate::Router::bound`].
    pub port: u16,
    /// The address to listen on; none means the config's `default_bind`.
    pub bind: Option<IpAddr>,
    /// HTTP or TCP.
    pub protocol: Protocol,
    /// A second port that serves only one version (a blue/green test step).
    pub preview: Option<Preview>,
    /// The instances that may get new traffic (the framework lists healthy
    /// ones only).
    pub backends: Vec<Backend>,
    /// The share of new traffic per version. A version missing here has
    /// weight 0 (no new traffic), unless the map is empty: then every
    /// version among the backends has the same weight.
    pub weights: BTreeMap<String, u32>,
}

/// A port that serves one chosen version only.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    /// The port; 0 binds any free port, see [`crate::Router::bound_preview`].
    pub port: u16,
    /// The version it serves, whatever the weights say.
    pub version: String,
}

/// One instance of an app that can take traffic.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Backend {
    /// The instance (task) id.
    pub instance: String,
    /// The app version the instance runs.
    pub version: String,
    /// Where it listens.
    pub addr: SocketAddr,
}

/// Which of a service's listeners.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// The service port.
    Main,
    /// The preview port.
    Preview,
}

/// A listener the table asks for. Two tables asking for the same key keep
/// the same socket (so port 0 keeps its bound port across applies).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ListenerKey {
    /// The app.
    pub app: String,
    /// Service or preview port.
    pub role: Role,
    /// The address asked for (port 0: any).
    pub addr: SocketAddr,
    /// The protocol.
    pub protocol: Protocol,
}

/// A backend as the router tracks it; the same instance at another address
/// is another backend.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct BackendKey {
    /// The app.
    pub app: String,
    /// The instance.
    pub instance: String,
    /// Its address.
    pub addr: SocketAddr,
}

impl Service {
    /// The address of the service port, with `default_bind` filled in.
    pub fn main_addr(&self, default_bind: IpAddr) -> SocketAddr {
        SocketAddr::new(self.bind.unwrap_or(default_bind), self.port)
    }

    /// The listeners this service asks for.
    pub fn listener_keys(&self, default_bind: IpAddr) -> Vec<ListenerKey> {
        let ip = self.bind.unwrap_or(default_bind);
        let mut keys = vec![ListenerKey {
            app: self.app.clone(),
            role: Role::Main,
            addr: SocketAddr::new(ip, self.port),
            protocol: self.protocol,
        }];
        if let Some(preview) = &self.preview {
            keys.push(ListenerKey {
                app: self.app.clone(),
                role: Role::Preview,
                addr: SocketAddr::new(ip, preview.port),
                protocol: self.protocol,
            });
        }
        keys
    }

    /// The weight of each version that has backends, after the rule for an
    /// empty map (every version weight 1) and for missing versions (0).
    pub fn effective_weights(&self) -> BTreeMap<String, u32> {
        let versions: BTreeSet<&str> = self.backends.iter().map(|b| b.version.as_str()).collect();
        versions
            .into_iter()
            .map(|v| {
                let weight = if self.weights.is_empty() {
                    1
                } else {
                    self.weights.get(v).copied().unwrap_or(0)
                };
                (v.to_owned(), weight)
            })
            .collect()
    }

    /// The keys of this service's backends.
    pub fn backend_keys(&self) -> impl Iterator<Item = BackendKey> + '_ {
        self.backends.iter().map(|b| BackendKey {
            app: self.app.clone(),
            instance: b.instance.clone(),
            addr: b.addr,
        })
    }
}

impl RouteTable {
    /// Checks the table as a whole: ids present and unique, weights and
    /// sizes bounded, no two listeners on one fixed address.
    pub fn validate(&self, default_bind: IpAddr) -> Result<(), TableError> {
        if self.services.len() > MAX_SERVICES {
            return Err(TableError::TooLarge {
                what: "services",
                got: self.services.len(),
                max: MAX_SERVICES,
            });
        }
        let mut apps = BTreeSet::new();
        let mut addrs: BTreeMap<SocketAddr, &str> = BTreeMap::new();
        for service in &self.services {
            let app = service.app.as_str();
            if app.is_empty() {
                return Err(TableError::EmptyAppId);
            }
            if !apps.insert(app) {
                return Err(TableError::DuplicateApp(app.to_owned()));
            }
            validate_backends(service)?;
            for (version, &weight) in &service.weights {
                if weight > MAX_WEIGHT {
                    return Err(TableError::WeightTooLarge {
                        app: app.to_owned(),
                        version: version.clone(),
                        weight,
                        max: MAX_WEIGHT,
                    });
                }
            }
            if let Some(preview) = &service.preview
                && preview.port != 0
                && preview.port == service.port
            {
                return Err(TableError::PreviewOnServicePort(app.to_owned()));
            }
            for key in service.listener_keys(default_bind) {
                if key.addr.port() == 0 {
                    continue;
                }
                if let Some(other) = addrs.insert(key.addr, app) {
                    return Err(TableError::DuplicateAddress {
                        app: app.to_owned(),
                        other: other.to_owned(),
                        addr: key.addr,
                    });
                }
            }
        }
        Ok(())
    }

    /// Every listener the table asks for.
    pub fn listener_keys(&self, default_bind: IpAddr) -> BTreeSet<ListenerKey> {
        self.services
            .iter()
            .flat_map(|s| s.listener_keys(default_bind))
            .collect()
    }

    /// Every backend of the table.
    pub fn backend_keys(&self) -> BTreeSet<BackendKey> {
        self.services
            .iter()
            .flat_map(Service::backend_keys)
            .collect()
    }

    /// The service of one app.
    pub fn service(&self, app: &str) -> Option<&Service> {
        self.services.iter().find(|s| s.app == app)
    }
}

fn validate_backends(service: &Service) -> Result<(), TableError> {
    if service.backends.len() > MAX_BACKENDS {
        return Err(TableError::TooLarge {
            what: "backends in one service",
            got: service.backends.len(),
            max: MAX_BACKENDS,
        });
    }
    let mut instances = BTreeSet::new();
    for backend in &service.backends {
        if backend.instance.is_empty() || backend.version.is_empty() {
            return Err(TableError::EmptyBackendField(service.app.clone()));
        }
        if !instances.insert(backend.instance.as_str()) {
            return Err(TableError::DuplicateInstance {
                app: service.app.clone(),
                instance: backend.instance.clone(),
            });
        }
    }
    Ok(())
}

/// What switching from one table to the next changes.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TableDiff {
    /// Listeners the old table had and the new one does not.
    pub close: Vec<ListenerKey>,
    /// Listeners the new table asks for that are not open (a listener whose
    /// bind failed before is asked for again).
    pub open: Vec<ListenerKey>,
    /// Backends that left: they get no new traffic and start draining.
    pub removed: Vec<BackendKey>,
    /// Backends that arrived.
    pub added: Vec<BackendKey>,
}

/// Compares the listeners open now and the backends routed now with a new
/// table.
pub fn diff(
    open_now: &BTreeSet<ListenerKey>,
    backends_now: &BTreeSet<BackendKey>,
    next: &RouteTable,
    default_bind: IpAddr,
) -> TableDiff {
    let wanted = next.listener_keys(default_bind);
    let next_backends = next.backend_keys();
    TableDiff {
        close: open_now.difference(&wanted).cloned().collect(),
        open: wanted.difference(open_now).cloned().collect(),
        removed: backends_now.difference(&next_backends).cloned().collect(),
        added: next_backends.difference(backends_now).cloned().collect(),
    }
}

#[cfg(test)]
mod tests;
