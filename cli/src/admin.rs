//! Admin commands: node, framework, task, role and state.
//!
//! They print on stdout through [`crate::out`] (a closed pipe ends them
//! quietly) and take ids as a unique prefix ([`resolve_id`]). Among them:
//! `berth task pending`, which names the draining agents under its table,
//! and `berth framework teardown`.

use std::io::Write;

use anyhow::{anyhow, bail};
use berth_proto as pb;
use berth_proto::convert::resources_from_proto_opt;
use berth_scheduler_core::Resources;
use serde_json::json;

use berth_proto::quoted;

use crate::ClientOpts;
pub(crate) use crate::client::operator;
use crate::table::render;
use crate::task_log::stream_log;

fn rpc(e: tonic::Status) -> anyhow::Error {
    anyhow!("{}", e.message())
}

/// Resources in Mesos text form ("-" when empty or invalid).
pub(crate) fn res(r: Option<&pb::Resources>) -> String {
    match resources_from_proto_opt(r) {
        Ok(r) if r != Resources::empty() => r.to_string(),
        _ => "-".into(),
    }
}

fn res_json(r: Option<&pb::Resources>) -> serde_json::Value {
    let r = r.cloned().unwrap_or_default();
    json!({
        "cpus": r.cpus, "mem": r.mem, "disk": r.disk, "gpus": r.gpus,
        "ports": r.ports.iter().map(|p| json!([p.begin, p.end])).collect::<Vec<_>>(),
    })
}

fn state_name(s: i32) -> String {
    pb::TaskState::try_from(s)
        .map_or_else(|_| format!("UNKNOWN({s})"), |s| s.as_str_name().to_string())
}

pub(crate) fn print_json(v: &serde_json::Value) -> anyhow::Result<()> {
    outln!("{}", serde_json::to_string_pretty(v)?)?;
    Ok(())
}

/// A kind of id the commands take as a prefix, and where to see them.
#[derive(Debug, Clone, Copy)]
pub(crate) struct IdKind {
    /// "agent", "framework", "task".
    name: &'static str,
    /// The command that lists them.
    listed_by: &'static str,
}

/// Agent ids.
pub(crate) const AGENT: IdKind = IdKind {
    name: "agent",
    listed_by: "berth node list",
};
/// Framework ids.
pub(crate) const FRAMEWORK: IdKind = IdKind {
    name: "framework",
    listed_by: "berth framework list",
};
/// Task ids.
pub(crate) const TASK: IdKind = IdKind {
    name: "task",
    listed_by: "berth task list --all",
};

/// How many candidates an ambiguous prefix names.
const CANDIDATES_SHOWN: usize = 5;

/// The id among `known` that `given` names: itself, or the only one it is
/// a prefix of (as Docker and Nomad take ids). An ambiguous prefix is an
/// error naming the candidates (a few, in order), an unknown id one that
/// says so.
pub(crate) fn resolve_id<'a>(
    kind: IdKind,
    given: &str,
    known: impl IntoIterator<Item = &'a str>,
) -> anyhow::Result<String> {
    if given.is_empty() {
        bail!("the {} id is empty", kind.name);
    }
    let mut matching: Vec<&str> = known.into_iter().filter(|k| k.starts_with(given)).collect();
    matching.sort_unstable();
    matching.dedup();
    if matching.contains(&given) {
        return Ok(given.to_string());
    }
    match matching.as_slice() {
        [] => bail!(
            "no {} {} (see `{}`)",
            kind.name,
            quoted(given),
            kind.listed_by
        ),
        [one] => Ok((*one).to_string()),
        many => bail!(
            "{} is the start of {} {} ids: {}{}; give more of it",
            quoted(given),
            many.len(),
            kind.name,
            many.iter()
                .take(CANDIDATES_SHOWN)
                .map(|c| quoted(c).to_string())
                .collect::<Vec<_>>()
                .join(", "),
            if many.len() > CANDIDATES_SHOWN {
                ", …"
            } else {
                ""
            }
        ),
    }
}

/// Seconds since the Unix epoch now.
fn now_secs() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// How long a task has run (to its end, or to `now`): `None` before its
/// first TASK_RUNNING.
fn run_seconds(t: &pb::TaskView, now: f64) -> Option<f64> {
    (t.running_at > 0.0).then(|| {
        let end = if t.ended_at > 0.0 { t.ended_at } else { now };
        (end - t.running_at).max(0.0)
    })
}

fn agent_json(a: &pb::AgentView) -> serde_json::Value {
    let info = a.info.clone().unwrap_or_default();
    json!({
        "id": a.id, "hostname": info.hostname, "address": info.address, "state": a.state,
        "connected": a.connected, "total": res_json(a.total.as_ref()), "used": res_json(a.used.as_ref()),
        "offered": res_json(a.offered.as_ref()), "tasks": a.task_count,
        "attributes": info.attributes.iter().map(|x| json!([x.name, x.value])).collect::<Vec<_>>(),
        "registered_at": a.registered_at,
    })
}

fn framework_json(f: &pb::FrameworkView) -> serde_json::Value {
    let info = f.info.clone().unwrap_or_default();
    json!({
        "id": info.id, "name": info.name, "roles": info.roles, "connected": f.connected,
        "failover_timeout_seconds": info.failover_timeout_seconds, "partition_aware": info.partition_aware,
        "used": res_json(f.used.as_ref()), "offered": res_json(f.offered.as_ref()), "tasks": f.task_count,
        "disconnected_at": f.disconnected_at, "registered_at": f.registered_at,
    })
}

fn task_json(t: &pb::TaskView) -> serde_json::Value {
    let status = t.status.clone().unwrap_or_default();
    json!({
        "id": t.task_id, "name": t.name, "framework_id": t.framework_id, "agent_id": t.agent_id,
        "state": state_name(t.state), "role": t.role, "resources": res_json(t.resources.as_ref()),
        "exit_code": status.exit_code, "reason": status.reason().short_name(), "message": status.message,
        "agent_address": t.agent_address, "healthy": status.healthy,
        "container_id": status.container_id,
        "launched_at": t.launched_at, "running_at": t.running_at, "ended_at": t.ended_at,
        "duration_seconds": run_seconds(t, now_secs()),
        "ports": status.ports.iter().map(|p| json!({
            "host_port": p.host_port, "container_port": p.container_port,
            "protocol": if p.protocol.is_empty() { "tcp" } else { p.protocol.as_str() },
        })).collect::<Vec<_>>(),
    })
}

fn role_json(r: &pb::RoleView) -> serde_json::Value {
    json!({
        "name": r.name, "weight": r.weight, "guarantee": r.guarantee.as_ref().map(|g| res_json(Some(g))),
        "limit": r.limit.as_ref().map(|l| res_json(Some(l))), "allocated": res_json(r.allocated.as_ref()),
        "frameworks": r.frameworks,
    })
}

pub(crate) async fn node_list(client: &ClientOpts) -> anyhow::Result<()> {
    let agents = operator(client)
        .await?
        .list_agents(pb::Empty {})
        .await
        .map_err(rpc)?
        .into_inner()
        .agents;
    if client.json {
        return print_json(&json!(agents.iter().map(agent_json).collect::<Vec<_>>()));
    }
    let rows: Vec<Vec<String>> = agents
        .iter()
        .map(|a| {
            let info = a.info.clone().unwrap_or_default();
            vec![
                a.id.clone(),
                info.hostname,
                if info.address.is_empty() {
                    "-".into()
                } else {
                    info.address
                },
                if a.connected {
                    a.state.clone()
                } else {
                    format!("{} (disconnected)", a.state)
                },
                a.task_count.to_string(),
                res(a.used.as_ref()),
                res(a.total.as_ref()),
            ]
        })
        .collect();
    out!(
        "{}",
        render(
            &[
                "ID", "HOSTNAME", "ADDRESS", "STATE", "TASKS", "USED", "TOTAL"
            ],
            &rows
        )
    )?;
    Ok(())
}

pub(crate) async fn node_drain(
    client: &ClientOpts,
    given: &str,
    drain: bool,
) -> anyhow::Result<()> {
    let mut op = operator(client).await?;
    let agents = op
        .list_agents(pb::Empty {})
        .await
        .map_err(rpc)?
        .into_inner()
        .agents;
    let id = resolve_id(AGENT, given, agents.iter().map(|a| a.id.as_str()))?;
    let req = pb::AgentRef {
        agent_id: id.clone(),
    };
    if drain {
        op.drain_agent(req).await.map_err(rpc)?;
    } else {
        op.reactivate_agent(req).await.map_err(rpc)?;
    }
    if client.json {
        let state = if drain { "DRAINING" } else { "ACTIVE" };
        return print_json(&json!({"agent_id": id, "state": state}));
    }
    if drain {
        outln!("agent {id} is draining: no new offers; running tasks stay")?;
    } else {
        outln!("agent {id} is active again")?;
    }
    Ok(())
}

/// `berth framework teardown`: the framework is removed as by its own
/// TEARDOWN call (its tasks are killed, it is forgotten).
pub(crate) async fn framework_teardown(client: &ClientOpts, given: &str) -> anyhow::Result<()> {
    let id = framework_id(client, given, &[]).await?;
    operator(client)
        .await?
        .teardown_framework(pb::FrameworkRef {
            framework_id: id.clone(),
        })
        .await
        .map_err(rpc)?;
    if client.json {
        return print_json(&json!({"framework_id": id, "torn_down": true}));
    }
    outln!("framework {id} is torn down: its tasks are being killed")?;
    Ok(())
}

pub(crate) async fn framework_list(client: &ClientOpts) -> anyhow::Result<()> {
    let fws = operator(client)
        .await?
        .list_frameworks(pb::Empty {})
        .await
        .map_err(rpc)?
        .into_inner()
        .frameworks;
    if client.json {
        return print_json(&json!(fws.iter().map(framework_json).collect::<Vec<_>>()));
    }
    let rows: Vec<Vec<String>> = fws
        .iter()
        .map(|f| {
            let info = f.info.clone().unwrap_or_default();
            vec![
                info.id,
                info.name,
                info.roles.join(","),
                if f.connected {
                    "connected".into()
                } else {
                    "disconnected".into()
                },
                f.task_count.to_string(),
                res(f.used.as_ref()),
            ]
        })
        .collect();
    out!(
        "{}",
        render(&["ID", "NAME", "ROLES", "STATUS", "TASKS", "USED"], &rows)
    )?;
    Ok(())
}

pub(crate) async fn list_tasks(
    client: &ClientOpts,
    all: bool,
    framework: Option<String>,
) -> anyhow::Result<Vec<pb::TaskView>> {
    Ok(operator(client)
        .await?
        .list_tasks(pb::ListTasksRequest {
            framework_id: framework.unwrap_or_default(),
            include_completed: all,
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .tasks)
}

/// Host ports and what they map to, e.g. `31000->80/tcp,31001`.
pub(crate) fn ports_text(ports: &[pb::PortMapping]) -> String {
    ports
        .iter()
        .map(|p| {
            let proto = if p.protocol.is_empty() {
                "tcp"
            } else {
                p.protocol.as_str()
            };
            if p.host_port == p.container_port {
                p.host_port.to_string()
            } else {
                format!("{}->{}/{proto}", p.host_port, p.container_port)
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

/// The framework `given` names (a unique prefix) among the registered
/// ones and `also` (frameworks already removed, whose completed tasks are
/// still listed).
async fn framework_id(client: &ClientOpts, given: &str, also: &[&str]) -> anyhow::Result<String> {
    let frameworks = operator(client)
        .await?
        .list_frameworks(pb::Empty {})
        .await
        .map_err(rpc)?
        .into_inner()
        .frameworks;
    let registered = frameworks
        .iter()
        .filter_map(|f| f.info.as_ref())
        .map(|i| i.id.as_str());
    resolve_id(FRAMEWORK, given, registered.chain(also.iter().copied()))
}

/// [`framework_id`] of a `--framework` option, if given.
async fn framework_arg(
    client: &ClientOpts,
    given: Option<String>,
    also: &[&str],
) -> anyhow::Result<Option<String>> {
    match given {
        Some(given) => framework_id(client, &given, also).await.map(Some),
        None => Ok(None),
    }
}

pub(crate) async fn task_list(
    client: &ClientOpts,
    all: bool,
    framework: Option<String>,
) -> anyhow::Result<()> {
    let mut tasks = list_tasks(client, all, None).await?;
    let known: Vec<&str> = tasks.iter().map(|t| t.framework_id.as_str()).collect();
    if let Some(framework) = framework_arg(client, framework, &known).await? {
        tasks.retain(|t| t.framework_id == framework);
    }
    if client.json {
        return print_json(&json!(tasks.iter().map(task_json).collect::<Vec<_>>()));
    }
    let now = now_secs();
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let status = t.status.clone().unwrap_or_default();
            let ran = run_seconds(t, now);
            vec![
                t.task_id.clone(),
                t.framework_id.clone(),
                t.agent_id.clone(),
                state_name(t.state).trim_start_matches("TASK_").to_string(),
                status
                    .exit_code
                    .map_or_else(|| "-".into(), |c| c.to_string()),
                if ran.is_some() {
                    format!("{} ago", duration_text(now - t.running_at))
                } else {
                    "-".into()
                },
                ran.map_or_else(|| "-".into(), duration_text),
                res(t.resources.as_ref()),
                if status.ports.is_empty() {
                    "-".into()
                } else {
                    ports_text(&status.ports)
                },
            ]
        })
        .collect();
    out!(
        "{}",
        render(
            &[
                "ID",
                "FRAMEWORK",
                "AGENT",
                "STATE",
                "EXIT",
                "STARTED",
                "DURATION",
                "RESOURCES",
                "PORTS"
            ],
            &rows
        )
    )?;
    Ok(())
}

fn pending_json(p: &pb::PendingView, draining: &[serde_json::Value]) -> serde_json::Value {
    let t = p.task.clone().unwrap_or_default();
    let short = t.short_on.unwrap_or_default();
    json!({
        "draining_agents": draining,
        "task_id": t.task_id, "name": t.name, "framework_id": p.framework_id,
        "framework_name": p.framework_name, "connected": p.connected,
        "resources": res_json(t.resources.as_ref()), "reason": t.reason,
        "considered": t.considered, "fit": t.fit,
        "short_on": {"cpus": short.cpus, "mem": short.mem, "disk": short.disk, "gpus": short.gpus, "ports": short.ports},
        "filtered": t.filtered.iter().map(|c| json!({"constraint": c.constraint, "count": c.count})).collect::<Vec<_>>(),
        "since": t.since, "updated_at": p.updated_at,
    })
}

/// Why a pending task waits: the framework's sentence, or one made of its
/// counts when it gave none (`3 considered: 2 short on mem, 1 filtered by
/// zone == z4`).
pub(crate) fn pending_reason(t: &pb::PendingTask) -> String {
    if !t.reason.is_empty() {
        return t.reason.clone();
    }
    let short = t.short_on.unwrap_or_default();
    let mut parts: Vec<String> = [
        ("cpus", short.cpus),
        ("mem", short.mem),
        ("disk", short.disk),
        ("gpus", short.gpus),
        ("ports", short.ports),
    ]
    .into_iter()
    .filter(|(_, n)| *n > 0)
    .map(|(name, n)| format!("{n} short on {name}"))
    .collect();
    parts.extend(
        t.filtered
            .iter()
            .filter(|c| c.count > 0)
            .map(|c| format!("{} filtered by {}", c.count, c.constraint)),
    );
    if t.fit > 0 {
        parts.push(format!("{} fit", t.fit));
    }
    if parts.is_empty() {
        format!("{} considered", t.considered)
    } else {
        format!("{} considered: {}", t.considered, parts.join(", "))
    }
}

/// A duration in seconds as `45s`, `12m05s`, `3h20m` or `2d04h`.
pub(crate) fn duration_text(secs: f64) -> String {
    // Whole seconds; negative (clock skew) counts as 0.
    let s = if secs.is_finite() && secs > 0.0 {
        secs as u64
    } else {
        0
    };
    match s {
        0..60 => format!("{s}s"),
        60..3600 => format!("{}m{:02}s", s / 60, s % 60),
        3600..86_400 => format!("{}h{:02}m", s / 3600, s % 3600 / 60),
        _ => format!("{}d{:02}h", s / 86_400, s % 86_400 / 3600),
    }
}

/// What a draining agent has free: offered to nobody while it drains.
fn free(a: &pb::AgentView) -> Resources {
    let total = resources_from_proto_opt(a.total.as_ref()).unwrap_or_default();
    let used = resources_from_proto_opt(a.used.as_ref()).unwrap_or_default();
    total.checked_sub(&used).unwrap_or_default()
}

/// The lines under `berth task pending`'s table that name the draining
/// agents: frameworks explain a wait with the offers they got, and a
/// draining agent makes none, so its free resources never appear in their
/// reasons.
fn draining_lines(agents: &[&pb::AgentView]) -> Vec<String> {
    agents
        .iter()
        .map(|a| {
            let free = free(a);
            let host = a
                .info
                .as_ref()
                .map(|i| i.hostname.as_str())
                .filter(|h| !h.is_empty())
                .map_or_else(String::new, |h| format!(" ({h})"));
            format!(
                "agent {}{host} is draining: its free {} is offered to no framework (`berth node reactivate {}` offers it again)",
                a.id,
                if free == Resources::empty() {
                    "nothing".to_string()
                } else {
                    free.to_string()
                },
                a.id
            )
        })
        .collect()
}

pub(crate) async fn task_pending(
    client: &ClientOpts,
    framework: Option<String>,
) -> anyhow::Result<()> {
    let framework = framework_arg(client, framework, &[]).await?;
    let mut op = operator(client).await?;
    let pending = op
        .list_pending(pb::ListPendingRequest {
            framework_id: framework.unwrap_or_default(),
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .tasks;
    let agents = if pending.is_empty() {
        Vec::new()
    } else {
        op.list_agents(pb::Empty {})
            .await
            .map_err(rpc)?
            .into_inner()
            .agents
    };
    let draining: Vec<&pb::AgentView> = agents.iter().filter(|a| a.state == "DRAINING").collect();
    if client.json {
        let draining: Vec<serde_json::Value> = draining
            .iter()
            .map(|a| {
                let info = a.info.clone().unwrap_or_default();
                json!({
                    "id": a.id, "hostname": info.hostname, "address": info.address,
                    "free": res_json(Some(&berth_proto::convert::resources_to_proto(&free(a)))),
                })
            })
            .collect();
        return print_json(&json!(
            pending
                .iter()
                .map(|p| pending_json(p, &draining))
                .collect::<Vec<_>>()
        ));
    }
    let now = now_secs();
    let rows: Vec<Vec<String>> = pending
        .iter()
        .map(|p| {
            let t = p.task.clone().unwrap_or_default();
            vec![
                t.task_id.clone(),
                p.framework_id.clone(),
                res(t.resources.as_ref()),
                if t.since > 0.0 {
                    duration_text(now - t.since)
                } else {
                    "-".into()
                },
                pending_reason(&t),
            ]
        })
        .collect();
    out!(
        "{}",
        render(&["ID", "FRAMEWORK", "RESOURCES", "WAITING", "WHY"], &rows)
    )?;
    for line in draining_lines(&draining) {
        outln!("{line}")?;
    }
    Ok(())
}

pub(crate) async fn task_log(
    client: &ClientOpts,
    id: &str,
    follow: bool,
    stderr: bool,
) -> anyhow::Result<()> {
    if client.json {
        bail!(
            "--json does not apply to `berth task log`: a log is text (`berth task list --json` has the task's details)"
        );
    }
    let tasks = list_tasks(client, true, None).await?;
    let id = resolve_id(TASK, id, tasks.iter().map(|t| t.task_id.as_str()))?;
    let matching: Vec<&pb::TaskView> = tasks.iter().filter(|t| t.task_id == id).collect();
    let task = match matching.as_slice() {
        [] => bail!("no task {} (see `berth task list --all`)", quoted(&id)),
        [one] => *one,
        many => {
            // The same id in several frameworks: prefer an active one.
            many.iter()
                .find(|t| !pb::TaskState::try_from(t.state).is_ok_and(pb::TaskState::is_terminal))
                .copied()
                .unwrap_or(many[many.len() - 1])
        }
    };
    let file = if stderr {
        pb::LogFile::Stderr
    } else {
        pb::LogFile::Stdout
    };
    let mut out: Box<dyn Write + Send> = Box::new(crate::out::Stdout);
    stream_log(
        &task.agent_address,
        &task.framework_id,
        &task.task_id,
        file,
        follow,
        &mut out,
    )
    .await
}

pub(crate) async fn role_list(client: &ClientOpts) -> anyhow::Result<()> {
    let roles = operator(client)
        .await?
        .list_roles(pb::Empty {})
        .await
        .map_err(rpc)?
        .into_inner()
        .roles;
    if client.json {
        return print_json(&json!(roles.iter().map(role_json).collect::<Vec<_>>()));
    }
    let rows: Vec<Vec<String>> = roles
        .iter()
        .map(|r| {
            vec![
                r.name.clone(),
                format!("{}", r.weight),
                res(r.guarantee.as_ref()),
                res(r.limit.as_ref()),
                res(r.allocated.as_ref()),
                r.frameworks.len().to_string(),
            ]
        })
        .collect();
    out!(
        "{}",
        render(
            &[
                "ROLE",
                "WEIGHT",
                "GUARANTEE",
                "LIMIT",
                "ALLOCATED",
                "FRAMEWORKS"
            ],
            &rows
        )
    )?;
    Ok(())
}

pub(crate) async fn role_weight(
    client: &ClientOpts,
    role: &str,
    weight: f64,
) -> anyhow::Result<()> {
    operator(client)
        .await?
        .set_weight(pb::SetWeightRequest {
            role: role.to_string(),
            weight,
        })
        .await
        .map_err(rpc)?;
    if client.json {
        return print_json(&json!({"role": role, "weight": weight}));
    }
    outln!("role {role}: weight {weight}")?;
    Ok(())
}

pub(crate) async fn role_quota(
    client: &ClientOpts,
    role: &str,
    guarantee: &str,
    limit: Option<&str>,
) -> anyhow::Result<()> {
    let parse = |s: &str| -> anyhow::Result<pb::Resources> {
        let r: Resources = s.parse().map_err(|e| anyhow!("{e}"))?;
        Ok(berth_proto::convert::resources_to_proto(&r))
    };
    let req = pb::SetQuotaRequest {
        role: role.to_string(),
        guarantee: Some(parse(guarantee)?),
        limit: limit.map(parse).transpose()?,
    };
    let shown = json!({
        "role": role,
        "guarantee": res_json(req.guarantee.as_ref()),
        "limit": req.limit.as_ref().map(|l| res_json(Some(l))),
    });
    operator(client).await?.set_quota(req).await.map_err(rpc)?;
    if client.json {
        return print_json(&shown);
    }
    outln!("role {role}: quota set")?;
    Ok(())
}

pub(crate) async fn state(client: &ClientOpts) -> anyhow::Result<()> {
    let s = operator(client)
        .await?
        .get_state(pb::Empty {})
        .await
        .map_err(rpc)?
        .into_inner();
    let leader = s.leader.clone().unwrap_or_default();
    let v = json!({
        "leader": {"master_id": leader.master_id, "address": leader.address},
        "agents": s.agents.iter().map(agent_json).collect::<Vec<_>>(),
        "frameworks": s.frameworks.iter().map(framework_json).collect::<Vec<_>>(),
        "tasks": s.tasks.iter().map(task_json).collect::<Vec<_>>(),
        "roles": s.roles.iter().map(role_json).collect::<Vec<_>>(),
    });
    if client.json {
        return print_json(&v);
    }
    outln!("leader:     {} at {}", leader.master_id, leader.address)?;
    outln!("agents:     {}", s.agents.len())?;
    outln!("frameworks: {}", s.frameworks.len())?;
    let active = s
        .tasks
        .iter()
        .filter(|t| !pb::TaskState::try_from(t.state).is_ok_and(pb::TaskState::is_terminal))
        .count();
    outln!(
        "tasks:      {active} active, {} recently completed",
        s.tasks.len() - active
    )?;
    outln!(
        "roles:      {}",
        s.roles
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pending_reason_falls_back_to_the_counts() {
        let mut t = pb::PendingTask {
            considered: 3,
            short_on: Some(pb::DimensionCounts {
                mem: 2,
                ..Default::default()
            }),
            filtered: vec![pb::ConstraintCount {
                constraint: "zone == z4".into(),
                count: 1,
            }],
            ..Default::default()
        };
        assert_eq!(
            pending_reason(&t),
            "3 considered: 2 short on mem, 1 filtered by zone == z4"
        );
        t.reason = "no offer fits: 2 short on mem".into();
        assert_eq!(pending_reason(&t), "no offer fits: 2 short on mem");
        assert_eq!(pending_reason(&pb::PendingTask::default()), "0 considered");
    }

    #[test]
    fn durations_read_short() {
        assert_eq!(duration_text(-3.0), "0s");
        assert_eq!(duration_text(f64::NAN), "0s");
        assert_eq!(duration_text(45.9), "45s");
        assert_eq!(duration_text(725.0), "12m05s");
        assert_eq!(duration_text(12_000.0), "3h20m");
        assert_eq!(duration_text(187_200.0), "2d04h");
    }

    #[test]
    fn ids_resolve_from_a_unique_prefix() {
        let known = ["fw-1a2b", "fw-1a3c", "fw-9", "agent-x"];
        let resolve = |given: &str| resolve_id(FRAMEWORK, given, known);
        assert_eq!(resolve("fw-9").unwrap(), "fw-9");
        assert_eq!(resolve("fw-1a2").unwrap(), "fw-1a2b");
        assert_eq!(resolve("a").unwrap(), "agent-x");
        let e = resolve("fw-1a").unwrap_err().to_string();
        assert_eq!(
            e,
            "\"fw-1a\" is the start of 2 framework ids: \"fw-1a2b\", \"fw-1a3c\"; give more of it"
        );
        let e = resolve("fw-2").unwrap_err().to_string();
        assert_eq!(e, "no framework \"fw-2\" (see `berth framework list`)");
        assert!(resolve("").unwrap_err().to_string().contains("empty"));
        // An id that is also the prefix of others is itself.
        assert_eq!(resolve_id(TASK, "t1", ["t1", "t10", "t11"]).unwrap(), "t1");
        // Many candidates: a few are named, in order.
        let many: Vec<String> = (0..8).map(|i| format!("run-{i}")).collect();
        let e = resolve_id(TASK, "run", many.iter().map(String::as_str))
            .unwrap_err()
            .to_string();
        assert!(
            e.starts_with("\"run\" is the start of 8 task ids: \"run-0\", \"run-1\", \"run-2\", \"run-3\", \"run-4\", …;"),
            "{e}"
        );
        // A huge argument is not echoed whole.
        let huge = "x".repeat(100_000);
        let e = resolve_id(AGENT, &huge, ["a1"]).unwrap_err().to_string();
        assert!(e.len() < 200, "{e}");
        assert!(e.contains("(100000 bytes)"), "{e}");
    }

    #[test]
    fn draining_agents_are_named_with_what_they_leave_unoffered() {
        let agent = |id: &str, state: &str, total: &str, used: &str| pb::AgentView {
            id: id.into(),
            state: state.into(),
            info: Some(pb::AgentInfo {
                hostname: format!("host-{id}"),
                ..Default::default()
            }),
            total: Some(berth_proto::convert::resources_to_proto(
                &total.parse().unwrap(),
            )),
            used: Some(berth_proto::convert::resources_to_proto(
                &used.parse().unwrap(),
            )),
            ..Default::default()
        };
        let a = agent("a1", "DRAINING", "cpus:4;mem:1024", "cpus:1;mem:24");
        let b = agent("a2", "DRAINING", "cpus:1", "cpus:1");
        assert_eq!(
            draining_lines(&[&a, &b]),
            [
                "agent a1 (host-a1) is draining: its free cpus:3;mem:1000 is offered to no framework (`berth node reactivate a1` offers it again)",
                "agent a2 (host-a2) is draining: its free nothing is offered to no framework (`berth node reactivate a2` offers it again)",
            ]
        );
    }

    #[test]
    fn run_time_is_from_first_running_to_the_end_or_now() {
        let t = |running_at: f64, ended_at: f64| pb::TaskView {
            running_at,
            ended_at,
            ..Default::default()
        };
        assert_eq!(run_seconds(&t(0.0, 0.0), 100.0), None);
        assert_eq!(run_seconds(&t(0.0, 50.0), 100.0), None);
        assert_eq!(run_seconds(&t(40.0, 0.0), 100.0), Some(60.0));
        assert_eq!(run_seconds(&t(40.0, 45.5), 100.0), Some(5.5));
        assert_eq!(run_seconds(&t(40.0, 0.0), 30.0), Some(0.0), "clock skew");
    }
}
