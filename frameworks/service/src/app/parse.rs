//! Parsing and validation of a whole app definition.
//!
//! Reads every field (collecting all errors), then checks the rules that
//! span fields: a command or an image, health checks' port indices,
//! readiness checks' port names, service ports unique, and the deployment
//! strategy against `upgradeStrategy`.

use std::time::Duration;

use berth_scheduler_core::error::quoted;
use berth_scheduler_core::resources::Scalar;
use serde_json::Value;

use super::read::{self, Ctx, Obj, child, item};
use super::settings::{self, Strategy};
use super::{
    AppDefinition, AppId, AppResources, Backoff, Command, KillSelection, UnreachableStrategy,
    UpgradeStrategy, constraint,
};
use crate::error::Invalid;

mod checks;
mod marathon;
mod ports;

/// Most instances one app may ask for.
pub const MAX_INSTANCES: u64 = 100_000;
/// Largest `cpus` accepted.
pub const MAX_CPUS: f64 = 100_000.0;
/// Largest `mem` and `disk` accepted, in MiB (1 PiB).
pub const MAX_MIB: f64 = 1_073_741_824.0;
/// Most items in any list field.
pub const MAX_ITEMS: usize = 256;
/// Longest `cmd`, in bytes.
pub const MAX_CMD_BYTES: usize = 64 * 1024;
/// Largest seconds value accepted anywhere (about 100 years).
pub const MAX_SECONDS: u64 = 3_153_600_000;
/// Longest short string (user, role, names), in bytes.
pub const MAX_NAME_BYTES: usize = 255;

/// Reads `key` of `o` with `f`, `None` when absent or invalid.
pub(super) fn field<'a, T>(
    o: &mut Obj<'a>,
    ctx: &mut Ctx,
    key: &'static str,
    f: impl FnOnce(&mut Ctx, &'a Value, &str) -> Option<T>,
) -> Option<T> {
    let (v, p) = o.get(key)?;
    f(ctx, v, &p)
}

pub(super) fn parse(v: &Value) -> Result<AppDefinition, Invalid> {
    let mut ctx = Ctx::default();
    let Some(mut o) = Obj::new(&mut ctx, v, "") else {
        return Err(Invalid { errors: ctx.errors });
    };

    let id = match o.get("id") {
        Some((v, p)) => read::string(&mut ctx, v, &p).and_then(|s| match AppId::parse(&s) {
            Ok(id) => Some(id),
            Err(e) => {
                ctx.err(&p, e);
                None
            }
        }),
        None => {
            ctx.err("/id", "is required");
            None
        }
    };
    let cmd = field(&mut o, &mut ctx, "cmd", |c, v, p| {
        read::text(c, v, p, MAX_CMD_BYTES)
    });
    let args = field(&mut o, &mut ctx, "args", |c, v, p| {
        read::strings(c, v, p, MAX_ITEMS, |_, s, _| Some(s))
    });
    let net = ports::networks(&mut o, &mut ctx);
    let container = field(&mut o, &mut ctx, "container", |c, v, p| {
        ports::container(c, v, p, net)
    })
    .flatten();
    let network = container
        .as_ref()
        .map(|c| c.network)
        .or(net)
        .unwrap_or(super::NetworkMode::Host);
    let port_definitions = ports::port_definitions(&mut o, &mut ctx, network);

    let cpus = field(&mut o, &mut ctx, "cpus", |c, v, p| {
        let s = read::scalar(c, v, p, 0.0, MAX_CPUS)?;
        if s.is_zero() {
            c.err(p, "must be at least 0.001");
            return None;
        }
        Some(s)
    });
    let mem = field(&mut o, &mut ctx, "mem", |c, v, p| {
        read::scalar(c, v, p, 0.0, MAX_MIB)
    });
    let disk = field(&mut o, &mut ctx, "disk", |c, v, p| {
        read::scalar(c, v, p, 0.0, MAX_MIB)
    });
    let instances = field(&mut o, &mut ctx, "instances", |c, v, p| {
        read::int(c, v, p, 0, MAX_INSTANCES)
    });
    let env = field(&mut o, &mut ctx, "env", env).unwrap_or_default();
    let labels = field(&mut o, &mut ctx, "labels", read::string_map).unwrap_or_default();
    let health_checks =
        field(&mut o, &mut ctx, "healthChecks", checks::health_checks).unwrap_or_default();
    let readiness_checks = field(
        &mut o,
        &mut ctx,
        "readinessChecks",
        checks::readiness_checks,
    )
    .unwrap_or_default();
    let constraints =
        field(&mut o, &mut ctx, "constraints", constraint::parse_list).unwrap_or_default();
    let upgrade_given = o.get("upgradeStrategy").is_some();
    let upgrade_strategy =
        field(&mut o, &mut ctx, "upgradeStrategy", upgrade_strategy).unwrap_or_default();
    let defaults = Backoff::default();
    let backoff = Backoff {
        initial: field(&mut o, &mut ctx, "backoffSeconds", |c, v, p| {
            read::secs(c, v, p, MAX_SECONDS)
        })
        .unwrap_or(defaults.initial),
        factor: field(&mut o, &mut ctx, "backoffFactor", |c, v, p| {
            read::scalar(c, v, p, 1.0, 1000.0)
        })
        .unwrap_or(defaults.factor),
        max_launch_delay: field(&mut o, &mut ctx, "maxLaunchDelaySeconds", |c, v, p| {
            read::secs(c, v, p, MAX_SECONDS)
        })
        .unwrap_or(defaults.max_launch_delay),
    };
    let kill_selection = field(
        &mut o,
        &mut ctx,
        "killSelection",
        |c, v, p| match read::string(c, v, p)?.as_str() {
            "YOUNGEST_FIRST" => Some(KillSelection::YoungestFirst),
            "OLDEST_FIRST" => Some(KillSelection::OldestFirst),
            other => {
                c.err(
                    p,
                    format!("{} is not YOUNGEST_FIRST or OLDEST_FIRST", quoted(other)),
                );
                None
            }
        },
    )
    .unwrap_or_default();
    let unreachable_strategy =
        field(&mut o, &mut ctx, "unreachableStrategy", unreachable).unwrap_or_default();
    let group: Vec<String> = id
        .as_ref()
        .map(|i| i.group_segments().to_vec())
        .unwrap_or_default();
    let dependencies = field(&mut o, &mut ctx, "dependencies", |c, v, p| {
        read::strings(c, v, p, MAX_ITEMS, |c, s, p| {
            match AppId::parse_in(&s, &group) {
                Ok(id) => Some(id),
                Err(e) => {
                    c.err(p, e);
                    None
                }
            }
        })
    })
    .unwrap_or_default();
    let user = field(&mut o, &mut ctx, "user", |c, v, p| {
        read::text(c, v, p, MAX_NAME_BYTES)
    });
    let task_kill_grace_period =
        field(&mut o, &mut ctx, "taskKillGracePeriodSeconds", |c, v, p| {
            read::secs(c, v, p, MAX_SECONDS)
        });
    let accepted_resource_roles = field(&mut o, &mut ctx, "acceptedResourceRoles", |c, v, p| {
        read::strings(c, v, p, MAX_ITEMS, |c, s, p| {
            (!s.is_empty() && s.len() <= MAX_NAME_BYTES)
                .then_some(s)
                .or_else(|| {
                    c.err(p, format!("role must be 1 to {MAX_NAME_BYTES} bytes"));
                    None
                })
        })
    })
    .unwrap_or_default();
    let role = field(&mut o, &mut ctx, "role", |c, v, p| {
        read::text(c, v, p, MAX_NAME_BYTES)
    });
    let deployment = field(&mut o, &mut ctx, "deployment", settings::parse).unwrap_or_default();
    marathon::top_level(&mut o, &mut ctx);
    o.finish(&mut ctx);

    let command = match (cmd, args) {
        (Some(_), Some(_)) => {
            ctx.err("/args", "give either cmd or args, not both");
            Command::None
        }
        (Some(c), None) => Command::Shell(c),
        (None, Some(a)) if !a.is_empty() => Command::Args(a),
        (None, _) => Command::None,
    };
    let has_image = container.as_ref().is_some_and(|c| c.image.is_some());
    if command == Command::None && !has_image {
        ctx.err("/cmd", "an app needs cmd, args or container.docker.image");
    }
    if upgrade_given
        && upgrade_strategy != UpgradeStrategy::default()
        && !matches!(deployment.strategy, Strategy::Rolling)
    {
        ctx.err(
            "/upgradeStrategy",
            format!(
                "applies to rolling deployments only, and deployment.strategy is {}; \
                 remove it or use its defaults (1, 1)",
                deployment.strategy.name()
            ),
        );
    }

    let app = AppDefinition {
        id: id.unwrap_or_else(AppId::placeholder),
        command,
        container,
        port_definitions,
        resources: AppResources {
            cpus: cpus.unwrap_or(Scalar::from_units(1)),
            mem: mem.unwrap_or(Scalar::from_units(128)),
            disk: disk.unwrap_or(Scalar::ZERO),
        },
        instances: instances.map_or(1, |i| u32::try_from(i).unwrap_or(u32::MAX)),
        env,
        labels,
        health_checks,
        readiness_checks,
        constraints,
        upgrade_strategy,
        backoff,
        kill_selection,
        unreachable_strategy,
        dependencies,
        user,
        task_kill_grace_period,
        accepted_resource_roles,
        role,
        deployment,
    };
    cross_checks(&mut ctx, &app);
    if ctx.errors.is_empty() {
        Ok(app)
    } else {
        Err(Invalid { errors: ctx.errors })
    }
}

/// The rules that span fields.
fn cross_checks(ctx: &mut Ctx, app: &AppDefinition) {
    let names = app.port_names();
    if app.health_checks.len() > 1 {
        ctx.err(
            &item("/healthChecks", 1),
            "berth runs one health check per instance (its agent probes it); give one".to_string(),
        );
    }
    for (i, hc) in app.health_checks.iter().enumerate() {
        if let Some(ix) = hc.port_index
            && ix as usize >= names.len()
        {
            ctx.err(
                &child(&item("/healthChecks", i), "portIndex"),
                format!("{ix} is out of range: the app has {} ports", names.len()),
            );
        }
    }
    for (i, rc) in app.readiness_checks.iter().enumerate() {
        if !names.contains(&Some(rc.port_name.as_str())) {
            ctx.err(
                &child(&item("/readinessChecks", i), "portName"),
                format!("no port of the app is named {}", quoted(&rc.port_name)),
            );
        }
    }
    for why in constraint::contradictions(&app.constraints, app.instances) {
        ctx.err("/constraints", why);
    }
    let mut seen: Vec<u16> = Vec::new();
    for p in app.service_ports() {
        if seen.contains(&p) {
            ctx.err("/", format!("service port {p} is given twice"));
        }
        seen.push(p);
    }
    if let Strategy::BlueGreen(bg) = &app.deployment.strategy
        && let Some(pp) = bg.preview_port
        && seen.contains(&pp)
    {
        ctx.err(
            "/deployment/blueGreen/previewPort",
            format!("{pp} is also a service port of the app"),
        );
    }
}

/// `env`: string values; Marathon's secret references are refused.
fn env(ctx: &mut Ctx, v: &Value, path: &str) -> Option<std::collections::BTreeMap<String, String>> {
    if let Value::Object(map) = v {
        let mut bad = false;
        for (k, val) in map {
            if let Value::Object(o) = val
                && o.contains_key("secret")
            {
                ctx.err(
                    &child(path, k),
                    "secret references are not supported by berth; give the value itself",
                );
                bad = true;
            }
        }
        if bad {
            return None;
        }
    }
    read::string_map(ctx, v, path)
}

fn upgrade_strategy(ctx: &mut Ctx, v: &Value, path: &str) -> Option<UpgradeStrategy> {
    let mut o = Obj::new(ctx, v, path)?;
    let d = UpgradeStrategy::default();
    let s = UpgradeStrategy {
        minimum_health_capacity: field(&mut o, ctx, "minimumHealthCapacity", read::fraction)
            .unwrap_or(d.minimum_health_capacity),
        maximum_over_capacity: field(&mut o, ctx, "maximumOverCapacity", read::fraction)
            .unwrap_or(d.maximum_over_capacity),
    };
    o.finish(ctx);
    Some(s)
}

fn unreachable(ctx: &mut Ctx, v: &Value, path: &str) -> Option<UnreachableStrategy> {
    if let Value::String(s) = v {
        if s == "disabled" {
            return Some(UnreachableStrategy::Disabled);
        }
        ctx.err(
            path,
            format!("{} is not \"disabled\" or an object", quoted(s)),
        );
        return None;
    }
    let mut o = Obj::new(ctx, v, path)?;
    let inactive = field(&mut o, ctx, "inactiveAfterSeconds", |c, v, p| {
        read::secs(c, v, p, MAX_SECONDS)
    });
    let expunge = field(&mut o, ctx, "expungeAfterSeconds", |c, v, p| {
        read::secs(c, v, p, MAX_SECONDS)
    });
    o.finish(ctx);
    let inactive_after = inactive.unwrap_or(Duration::ZERO);
    let expunge_after = expunge.unwrap_or(Duration::ZERO);
    if inactive_after > expunge_after {
        ctx.err(
            path,
            format!(
                "inactiveAfterSeconds ({}) must not be greater than expungeAfterSeconds ({})",
                inactive_after.as_secs(),
                expunge_after.as_secs()
            ),
        );
        return None;
    }
    Some(UnreachableStrategy::Enabled {
        inactive_after,
        expunge_after,
    })
}
