//! Admin commands: node, framework, task, role and state.

use std::io::Write;

use anyhow::{anyhow, bail};
use berth_proto as pb;
use berth_proto::convert::resources_from_proto_opt;
use berth_scheduler_core::Resources;
use serde_json::json;

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
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, v)?;
    writeln!(out)?;
    Ok(())
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
        "exit_code": status.exit_code, "reason": status.reason, "message": status.message,
        "agent_address": t.agent_address, "healthy": status.healthy,
        "container_id": status.container_id,
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
    print!(
        "{}",
        render(
            &["ID", "HOSTNAME", "STATE", "TASKS", "USED", "TOTAL"],
            &rows
        )
    );
    Ok(())
}

pub(crate) async fn node_drain(client: &ClientOpts, id: &str, drain: bool) -> anyhow::Result<()> {
    let mut op = operator(client).await?;
    let req = pb::AgentRef {
        agent_id: id.to_string(),
    };
    if drain {
        op.drain_agent(req).await.map_err(rpc)?;
        println!("agent {id} is draining: no new offers; running tasks stay");
    } else {
        op.reactivate_agent(req).await.map_err(rpc)?;
        println!("agent {id} is active again");
    }
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
    print!(
        "{}",
        render(&["ID", "NAME", "ROLES", "STATUS", "TASKS", "USED"], &rows)
    );
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

pub(crate) async fn task_list(
    client: &ClientOpts,
    all: bool,
    framework: Option<String>,
) -> anyhow::Result<()> {
    let tasks = list_tasks(client, all, framework).await?;
    if client.json {
        return print_json(&json!(tasks.iter().map(task_json).collect::<Vec<_>>()));
    }
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            let status = t.status.clone().unwrap_or_default();
            vec![
                t.task_id.clone(),
                t.framework_id.clone(),
                t.agent_id.clone(),
                state_name(t.state).trim_start_matches("TASK_").to_string(),
                status
                    .exit_code
                    .map_or_else(|| "-".into(), |c| c.to_string()),
                res(t.resources.as_ref()),
                if status.ports.is_empty() {
                    "-".into()
                } else {
                    ports_text(&status.ports)
                },
            ]
        })
        .collect();
    print!(
        "{}",
        render(
            &[
                "ID",
                "FRAMEWORK",
                "AGENT",
                "STATE",
                "EXIT",
                "RESOURCES",
                "PORTS"
            ],
            &rows
        )
    );
    Ok(())
}

fn pending_json(p: &pb::PendingView) -> serde_json::Value {
    let t = p.task.clone().unwrap_or_default();
    let short = t.short_on.unwrap_or_default();
    json!({
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

pub(crate) async fn task_pending(
    client: &ClientOpts,
    framework: Option<String>,
) -> anyhow::Result<()> {
    let pending = operator(client)
        .await?
        .list_pending(pb::ListPendingRequest {
            framework_id: framework.unwrap_or_default(),
        })
        .await
        .map_err(rpc)?
        .into_inner()
        .tasks;
    if client.json {
        return print_json(&json!(pending.iter().map(pending_json).collect::<Vec<_>>()));
    }
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
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
    print!(
        "{}",
        render(&["ID", "FRAMEWORK", "RESOURCES", "WAITING", "WHY"], &rows)
    );
    Ok(())
}

pub(crate) async fn task_log(
    client: &ClientOpts,
    id: &str,
    follow: bool,
    stderr: bool,
) -> anyhow::Result<()> {
    let tasks = list_tasks(client, true, None).await?;
    let matching: Vec<&pb::TaskView> = tasks.iter().filter(|t| t.task_id == id).collect();
    let task = match matching.as_slice() {
        [] => bail!("no task {id:?} (see `berth task list --all`)"),
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
    let mut out: Box<dyn Write + Send> = Box::new(std::io::stdout());
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
    print!(
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
    );
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
    println!("role {role}: weight {weight}");
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
    operator(client).await?.set_quota(req).await.map_err(rpc)?;
    println!("role {role}: quota set");
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
    println!("leader:     {} at {}", leader.master_id, leader.address);
    println!("agents:     {}", s.agents.len());
    println!("frameworks: {}", s.frameworks.len());
    let active = s
        .tasks
        .iter()
        .filter(|t| !pb::TaskState::try_from(t.state).is_ok_and(pb::TaskState::is_terminal))
        .count();
    println!(
        "tasks:      {active} active, {} recently completed",
        s.tasks.len() - active
    );
    println!(
        "roles:      {}",
        s.roles
            .iter()
            .map(|r| r.name.as_str())
            .collect::<Vec<_>>()
            .join(", ")
    );
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
}
