//! `container`, `networks`, `portDefinitions` (and the legacy `ports`),
//! port mappings.

use std::collections::BTreeMap;

use berth_scheduler_core::error::quoted;
use serde_json::Value;

use super::super::read::{self, Ctx, Obj, item};
use super::super::{Container, ContainerKind, NetworkMode, PortDefinition, PortMapping, Protocol};
use super::marathon::{self, is_empty_or_null, is_false};
use super::{MAX_ITEMS, field};

/// Longest image reference, in bytes.
const MAX_IMAGE_BYTES: usize = 1024;

/// The top-level `networks` (Marathon 1.5+): `[]`, `[{"mode": "host"}]` or
/// `[{"mode": "container/bridge"}]` (what Marathon's GET returns for
/// default apps). Named container networks are not supported.
pub(super) fn networks(o: &mut Obj<'_>, ctx: &mut Ctx) -> Option<NetworkMode> {
    let (v, path) = o.get("networks")?;
    let items = read::array(ctx, v, &path, MAX_ITEMS)?;
    match items {
        [] => None,
        [one] => {
            let p = item(&path, 0);
            let mut n = Obj::new(ctx, one, &p)?;
            let mode = field(&mut n, ctx, "mode", read::string);
            let name = n.get("name");
            let _labels = n.get("labels").filter(|(v, _)| !is_empty_or_null(v));
            n.finish(ctx);
            let mode = match mode.as_deref() {
                Some("host") => Some(NetworkMode::Host),
                Some("container/bridge") => Some(NetworkMode::Bridge),
                Some(other) => {
                    ctx.err(
                        &format!("{p}/mode"),
                        format!(
                            "network mode {} is not supported by berth (host and container/bridge are)",
                            quoted(other)
                        ),
                    );
                    None
                }
                None => {
                    ctx.err(&format!("{p}/mode"), "is required");
                    None
                }
            };
            if let Some((_, np)) = name {
                ctx.err(&np, "named networks are not supported by berth");
            }
            if let Some((_, lp)) = _labels {
                ctx.err(&lp, "network labels are not supported by berth");
            }
            mode
        }
        _ => {
            ctx.err(&path, "more than one network is not supported by berth");
            None
        }
    }
}

/// `container`; `net` is the mode from `networks`, if given. Returns
/// `Some(None)` for a `MESOS` container with no image and no ports (the
/// same as no container).
pub(super) fn container(
    ctx: &mut Ctx,
    v: &Value,
    path: &str,
    net: Option<NetworkMode>,
) -> Option<Option<Container>> {
    let mut o = Obj::new(ctx, v, path)?;
    let kind = field(&mut o, ctx, "type", |c, v, p| {
        match read::string(c, v, p)?.as_str() {
            "DOCKER" => Some(ContainerKind::Docker),
            "MESOS" => Some(ContainerKind::Mesos),
            other => {
                c.err(p, format!("{} is not DOCKER or MESOS", quoted(other)));
                None
            }
        }
    })
    .unwrap_or(ContainerKind::Docker);
    let mut image = None;
    let mut docker_net = None;
    let mut force_pull_image = false;
    let mut legacy_mappings = None;
    if let Some((dv, dp)) = o.get("docker")
        && let Some(mut d) = Obj::new(ctx, dv, &dp)
    {
        image = field(&mut d, ctx, "image", |c, v, p| {
            read::text(c, v, p, MAX_IMAGE_BYTES)
        });
        docker_net = field(&mut d, ctx, "network", |c, v, p| {
            match read::string(c, v, p)?.as_str() {
                "BRIDGE" => Some(NetworkMode::Bridge),
                "HOST" => Some(NetworkMode::Host),
                "NONE" => Some(NetworkMode::None),
                "USER" => {
                    c.err(
                        p,
                        "USER networks are not supported by berth (BRIDGE, HOST and NONE are)",
                    );
                    None
                }
                other => {
                    c.err(
                        p,
                        format!("{} is not BRIDGE, HOST, USER or NONE", quoted(other)),
                    );
                    None
                }
            }
        });
        force_pull_image = field(&mut d, ctx, "forcePullImage", read::boolean).unwrap_or(false);
        legacy_mappings = field(&mut d, ctx, "portMappings", port_mappings);
        marathon::refuse_unless(&mut d, ctx, "parameters", is_empty_or_null);
        marathon::refuse_unless(&mut d, ctx, "privileged", is_false);
        marathon::refuse_unless(&mut d, ctx, "credential", Value::is_null);
        marathon::refuse_unless(&mut d, ctx, "pullConfig", Value::is_null);
        d.finish(ctx);
    }
    let mappings = field(&mut o, ctx, "portMappings", port_mappings);
    marathon::refuse_unless(&mut o, ctx, "volumes", is_empty_or_null);
    marathon::refuse_unless(&mut o, ctx, "linuxInfo", Value::is_null);
    o.finish(ctx);

    let port_mappings = match (mappings, legacy_mappings) {
        (Some(a), Some(b)) if !a.is_empty() && !b.is_empty() => {
            ctx.err(
                &format!("{path}/docker/portMappings"),
                "give port mappings once, in container.portMappings",
            );
            a
        }
        (Some(a), Some(b)) => {
            if a.is_empty() {
                b
            } else {
                a
            }
        }
        (Some(a), None) | (None, Some(a)) => a,
        (None, None) => Vec::new(),
    };
    if kind == ContainerKind::Docker && image.is_none() {
        ctx.err(
            &format!("{path}/docker/image"),
            "is required for a DOCKER container",
        );
    }
    let network = match (docker_net, net) {
        (Some(a), Some(b)) if a != b => {
            ctx.err(
                &format!("{path}/docker/network"),
                "disagrees with the top-level networks",
            );
            a
        }
        (Some(a), _) | (None, Some(a)) => a,
        (None, None) => NetworkMode::Host,
    };
    if network != NetworkMode::Bridge && !port_mappings.is_empty() {
        ctx.err(
            &format!("{path}/portMappings"),
            "port mappings need BRIDGE networking; with HOST use portDefinitions",
        );
    }
    if kind == ContainerKind::Mesos && image.is_none() && port_mappings.is_empty() {
        return Some(None);
    }
    Some(Some(Container {
        kind,
        image,
        network,
        force_pull_image,
        port_mappings,
    }))
}

fn protocol(ctx: &mut Ctx, v: &Value, path: &str) -> Option<Protocol> {
    match read::string(ctx, v, path)?.as_str() {
        "tcp" => Some(Protocol::Tcp),
        "udp" => Some(Protocol::Udp),
        "udp,tcp" => Some(Protocol::UdpTcp),
        other => {
            ctx.err(
                path,
                format!("{} is not tcp, udp or udp,tcp", quoted(other)),
            );
            None
        }
    }
}

/// A port name: Marathon's `^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`, at most 63 bytes.
pub(super) fn port_name(ctx: &mut Ctx, v: &Value, path: &str) -> Option<String> {
    let s = read::text(ctx, v, path, 63)?;
    let b = s.as_bytes();
    let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    let valid = b.first().is_some_and(ok)
        && b.last().is_some_and(ok)
        && b.iter().all(|c| ok(c) || *c == b'-');
    if !valid {
        ctx.err(
            path,
            format!(
                "{} must be lowercase letters, digits and '-', not at either end",
                quoted(&s)
            ),
        );
        return None;
    }
    Some(s)
}

fn port(ctx: &mut Ctx, v: &Value, path: &str) -> Option<u16> {
    read::int(ctx, v, path, 0, 65535).and_then(|p| u16::try_from(p).ok())
}

fn labels(o: &mut Obj<'_>, ctx: &mut Ctx) -> BTreeMap<String, String> {
    field(o, ctx, "labels", read::string_map).unwrap_or_default()
}

fn port_mappings(ctx: &mut Ctx, v: &Value, path: &str) -> Option<Vec<PortMapping>> {
    read::objects(ctx, v, path, MAX_ITEMS, |ctx, o| {
        let m = PortMapping {
            container_port: field(o, ctx, "containerPort", port).unwrap_or(0),
            host_port: field(o, ctx, "hostPort", port),
            service_port: field(o, ctx, "servicePort", port).unwrap_or(0),
            protocol: field(o, ctx, "protocol", protocol).unwrap_or(Protocol::Tcp),
            name: field(o, ctx, "name", port_name),
            labels: labels(o, ctx),
        };
        marathon::refuse_unless(o, ctx, "networkNames", is_empty_or_null);
        Some(m)
    })
}

/// `portDefinitions`, or the legacy `ports` (numbers), for host
/// networking. Absent, Marathon's default applies: one port, no service
/// port. With BRIDGE or NONE networking there are none.
pub(super) fn port_definitions(
    o: &mut Obj<'_>,
    ctx: &mut Ctx,
    network: NetworkMode,
) -> Vec<PortDefinition> {
    let defs = field(o, ctx, "portDefinitions", |ctx, v, path| {
        read::objects(ctx, v, path, MAX_ITEMS, |ctx, o| {
            Some(PortDefinition {
                port: field(o, ctx, "port", port).unwrap_or(0),
                protocol: field(o, ctx, "protocol", protocol).unwrap_or(Protocol::Tcp),
                name: field(o, ctx, "name", port_name),
                labels: labels(o, ctx),
            })
        })
    });
    let legacy = field(o, ctx, "ports", |ctx, v, path| {
        let items = read::array(ctx, v, path, MAX_ITEMS)?;
        let before = ctx.errors.len();
        let ports: Vec<u16> = items
            .iter()
            .enumerate()
            .filter_map(|(i, it)| port(ctx, it, &item(path, i)))
            .collect();
        (ctx.errors.len() == before).then_some(ports)
    });
    marathon::refuse_unless(o, ctx, "requirePorts", is_false);
    let defs = match (defs, legacy) {
        (Some(d), Some(l)) => {
            // Marathon's GET returns both; `ports` then lists the
            // definitions' ports and adds nothing.
            if d.iter().map(|p| p.port).ne(l.iter().copied()) {
                ctx.err(
                    "/ports",
                    "disagrees with portDefinitions; give only portDefinitions",
                );
            }
            Some(d)
        }
        (Some(d), None) => Some(d),
        (None, Some(l)) => Some(
            l.into_iter()
                .map(|port| PortDefinition {
                    port,
                    protocol: Protocol::Tcp,
                    name: None,
                    labels: BTreeMap::new(),
                })
                .collect(),
        ),
        (None, None) => None,
    };
    match (network, defs) {
        (NetworkMode::Host, Some(d)) => d,
        (NetworkMode::Host, None) => vec![PortDefinition {
            port: 0,
            protocol: Protocol::Tcp,
            name: None,
            labels: BTreeMap::new(),
        }],
        (_, Some(d)) if !d.is_empty() => {
            ctx.err(
                "/portDefinitions",
                "port definitions need HOST networking; with BRIDGE use container.portMappings",
            );
            Vec::new()
        }
        (_, _) => Vec::new(),
    }
}
