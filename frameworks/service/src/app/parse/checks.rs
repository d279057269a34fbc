//! `healthChecks` and `readinessChecks`.

use std::time::Duration;

use berth_scheduler_core::error::quoted;
use serde_json::Value;

use super::super::read::{self, Ctx, Obj, child, item};
use super::super::{HealthCheck, HealthProtocol, HttpScheme, ReadinessCheck};
use super::marathon::{self};
use super::{MAX_CMD_BYTES, MAX_ITEMS, MAX_SECONDS, field};

/// Longest HTTP path of a check, in bytes.
const MAX_PATH_BYTES: usize = 1024;

fn secs_or(o: &mut Obj<'_>, ctx: &mut Ctx, key: &'static str, default: u64) -> Duration {
    field(o, ctx, key, |c, v, p| read::secs(c, v, p, MAX_SECONDS))
        .unwrap_or(Duration::from_secs(default))
}

fn http_path(ctx: &mut Ctx, v: &Value, path: &str) -> Option<String> {
    let s = read::text(ctx, v, path, MAX_PATH_BYTES)?;
    if !s.starts_with('/') {
        ctx.err(path, format!("{} must start with '/'", quoted(&s)));
        return None;
    }
    Some(s)
}

fn health_protocol(ctx: &mut Ctx, v: &Value, path: &str) -> Option<HealthProtocol> {
    use HealthProtocol::*;
    Some(match read::string(ctx, v, path)?.as_str() {
        "HTTP" => Http,
        "TCP" => Tcp,
        "COMMAND" => Command,
        "MESOS_HTTP" => MesosHttp,
        "MESOS_TCP" => MesosTcp,
        https @ ("HTTPS" | "MESOS_HTTPS") => {
            ctx.err(
                path,
                format!("{https} is not supported by berth: its agents probe plain HTTP"),
            );
            return None;
        }
        other => {
            ctx.err(
                path,
                format!(
                    "{} is not HTTP, HTTPS, TCP, COMMAND, MESOS_HTTP, MESOS_HTTPS or MESOS_TCP",
                    quoted(other)
                ),
            );
            return None;
        }
    })
}

/// `healthChecks`.
pub(super) fn health_checks(ctx: &mut Ctx, v: &Value, path: &str) -> Option<Vec<HealthCheck>> {
    read::objects(ctx, v, path, 16, |ctx, o| {
        let protocol = field(o, ctx, "protocol", health_protocol).unwrap_or(HealthProtocol::Http);
        let hc = HealthCheck {
            protocol,
            path: field(o, ctx, "path", http_path),
            port_index: field(o, ctx, "portIndex", |c, v, p| {
                read::int(c, v, p, 0, MAX_ITEMS as u64).and_then(|i| u32::try_from(i).ok())
            }),
            port: field(o, ctx, "port", |c, v, p| {
                read::int(c, v, p, 1, 65535).and_then(|i| u16::try_from(i).ok())
            }),
            command: o.get("command").and_then(|(v, p)| {
                let mut c = Obj::new(ctx, v, &p)?;
                let value = field(&mut c, ctx, "value", |c, v, p| {
                    read::text(c, v, p, MAX_CMD_BYTES)
                });
                c.finish(ctx);
                if value.is_none() {
                    ctx.err(&child(&p, "value"), "is required");
                }
                value
            }),
            grace_period: secs_or(o, ctx, "gracePeriodSeconds", 300),
            interval: secs_or(o, ctx, "intervalSeconds", 60),
            timeout: secs_or(o, ctx, "timeoutSeconds", 20),
            max_consecutive_failures: field(o, ctx, "maxConsecutiveFailures", |c, v, p| {
                read::int(c, v, p, 0, 1_000_000).and_then(|i| u32::try_from(i).ok())
            })
            .unwrap_or(3),
            delay: secs_or(o, ctx, "delaySeconds", 15),
            ignore_http_1xx: field(o, ctx, "ignoreHttp1xx", read::boolean).unwrap_or(false),
        };
        marathon::refuse_unless(o, ctx, "ipProtocol", |v| {
            v.is_null() || v.as_str() == Some("IPv4")
        });
        let p = o.path().to_string();
        check_health(ctx, &p, &hc);
        Some(hc)
    })
}

fn check_health(ctx: &mut Ctx, p: &str, hc: &HealthCheck) {
    use HealthProtocol::*;
    let is_http = matches!(hc.protocol, Http | Https | MesosHttp | MesosHttps);
    if hc.path.is_some() && !is_http {
        ctx.err(&child(p, "path"), "only HTTP and HTTPS checks have a path");
    }
    if hc.protocol == Command {
        if hc.command.is_none() {
            ctx.err(&child(p, "command"), "a COMMAND check needs command.value");
        }
        if hc.port.is_some() || hc.port_index.is_some() {
            ctx.err(p, "a COMMAND check has no port or portIndex");
        }
    } else {
        if hc.command.is_some() {
            ctx.err(&child(p, "command"), "only COMMAND checks have a command");
        }
        if hc.port.is_some() && hc.port_index.is_some() {
            ctx.err(p, "give port or portIndex, not both");
        }
    }
    if hc.interval.is_zero() {
        ctx.err(&child(p, "intervalSeconds"), "must be at least 1");
    }
    if hc.timeout.is_zero() || hc.timeout >= hc.interval.max(Duration::from_secs(1)) {
        ctx.err(
            &child(p, "timeoutSeconds"),
            format!(
                "must be at least 1 and less than intervalSeconds ({})",
                hc.interval.as_secs()
            ),
        );
    }
}

/// `readinessChecks`.
pub(super) fn readiness_checks(
    ctx: &mut Ctx,
    v: &Value,
    path: &str,
) -> Option<Vec<ReadinessCheck>> {
    read::objects(ctx, v, path, 1, |ctx, o| {
        let rc = ReadinessCheck {
            name: field(o, ctx, "name", |c, v, p| read::text(c, v, p, 255))
                .unwrap_or_else(|| "readinessCheck".into()),
            protocol: field(o, ctx, "protocol", |c, v, p| {
                match read::string(c, v, p)?.as_str() {
                    "HTTP" => Some(HttpScheme::Http),
                    "HTTPS" => {
                        c.err(p, "HTTPS is not supported by berth: it probes plain HTTP");
                        None
                    }
                    other => {
                        c.err(p, format!("{} is not HTTP or HTTPS", quoted(other)));
                        None
                    }
                }
            })
            .unwrap_or(HttpScheme::Http),
            path: field(o, ctx, "path", http_path).unwrap_or_else(|| "/".into()),
            port_name: field(o, ctx, "portName", super::ports::port_name)
                .unwrap_or_else(|| "http-api".into()),
            interval: secs_or(o, ctx, "intervalSeconds", 30),
            timeout: secs_or(o, ctx, "timeoutSeconds", 10),
            http_status_codes_for_ready: field(o, ctx, "httpStatusCodesForReady", |c, v, p| {
                let items = read::array(c, v, p, 64)?;
                let before = c.errors.len();
                let codes: Vec<u16> = items
                    .iter()
                    .enumerate()
                    .filter_map(|(j, it)| {
                        read::int(c, it, &item(p, j), 100, 999).and_then(|x| u16::try_from(x).ok())
                    })
                    .collect();
                if codes.is_empty() && c.errors.len() == before {
                    c.err(p, "must list at least one status code");
                }
                (c.errors.len() == before).then_some(codes)
            })
            .unwrap_or_else(|| vec![200]),
            preserve_last_response: field(o, ctx, "preserveLastResponse", read::boolean)
                .unwrap_or(false),
        };
        let p = o.path().to_string();
        if rc.timeout.is_zero() || rc.timeout >= rc.interval {
            ctx.err(
                &child(&p, "timeoutSeconds"),
                format!(
                    "must be at least 1 and less than intervalSeconds ({})",
                    rc.interval.as_secs()
                ),
            );
        }
        Some(rc)
    })
}
