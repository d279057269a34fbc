//! What the master checks of a task's own fields (`TaskInfo`) and of an
//! agent's attributes, before anything is proposed.

use berth_proto as pb;
use berth_scheduler_core::{Quoted, TaskId, quoted};

use super::{MAX_NAME, seconds};
use crate::error::CallError;

/// Validates a task's own fields (not its fit in the offers).
pub(super) fn validate_task(info: &pb::TaskInfo) -> Result<TaskId, CallError> {
    let id = TaskId::new(info.task_id.clone())
        .map_err(|e| CallError::invalid_argument(e.to_string()))?;
    let name = quoted(&info.task_id);
    if info.name.len() > MAX_NAME {
        return Err(CallError::invalid_argument(format!(
            "task {name}: name longer than {MAX_NAME} bytes"
        )));
    }
    if let Some(c) = &info.container {
        validate_container(name, c)?;
    }
    if let Some(h) = &info.health_check {
        validate_health_check(name, h)?;
    }
    let default_command = pb::CommandInfo::default();
    let command = match (&info.command, &info.container) {
        (Some(c), _) => c,
        // A container without a command runs its image's own CMD.
        (None, Some(_)) => &default_command,
        (None, None) => {
            return Err(CallError::invalid_argument(format!(
                "task {name} has no command"
            )));
        }
    };
    match (command.shell.is_empty(), command.argv.is_empty()) {
        (true, true) if info.container.is_some() => {}
        (true, true) => {
            return Err(CallError::invalid_argument(format!(
                "task {name}: command needs `shell` or `argv`"
            )));
        }
        (false, false) => {
            return Err(CallError::invalid_argument(format!(
                "task {name}: command must set only one of `shell` and `argv`"
            )));
        }
        _ => {}
    }
    if command.argv.first().is_some_and(String::is_empty) {
        return Err(CallError::invalid_argument(format!(
            "task {name}: argv[0] is empty"
        )));
    }
    for key in command.env.keys() {
        if key.is_empty() || key.contains('=') || key.contains('\0') {
            return Err(CallError::invalid_argument(format!(
                "task {name}: invalid environment variable name {}",
                quoted(key)
            )));
        }
    }
    seconds("kill_grace_period_seconds", info.kill_grace_period_seconds)
        .map_err(|e| CallError::invalid_argument(format!("task {name}: {e}")))?;
    // The URIs it fetches and the outputs it uploads; the agent checks them
    // again with the same rules.
    berth_proto::transfer::validate_task_transfers(info)
        .map_err(|e| CallError::invalid_argument(format!("task {name}: {e}")))?;
    berth_proto::mask::validate_task_masks(info)
        .map_err(|e| CallError::invalid_argument(format!("task {name}: {e}")))?;
    Ok(id)
}

/// Checks what the master can of a task's container (the agent checks the
/// rest, such as host ports against the task's resources, and fails the
/// task with its reason).
fn validate_container(name: Quoted<'_>, c: &pb::ContainerInfo) -> Result<(), CallError> {
    let bad = |m: String| {
        Err(CallError::invalid_argument(format!(
            "task {name}: container {m}"
        )))
    };
    if c.image.is_empty() {
        return bad("image must not be empty".into());
    }
    if c.image.len() > 255
        || c.image
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        return bad(format!(
            "image {} must be at most 255 bytes without whitespace or control characters",
            quoted(&c.image)
        ));
    }
    if !matches!(c.network.as_str(), "" | "bridge" | "host" | "none") {
        return bad(format!(
            "network {} is not one of bridge, host, none",
            quoted(&c.network)
        ));
    }
    for m in &c.port_mappings {
        if m.container_port == 0 || m.container_port > 65535 || m.host_port > 65535 {
            return bad(format!(
                "port mapping {}:{} is out of range (ports are 1-65535; host port 0 picks one)",
                m.host_port, m.container_port
            ));
        }
        if !matches!(m.protocol.to_ascii_lowercase().as_str(), "" | "tcp" | "udp") {
            return bad(format!(
                "port protocol {} is not tcp or udp",
                quoted(&m.protocol)
            ));
        }
    }
    for v in &c.volumes {
        if !v.host_path.starts_with('/') || !v.container_path.starts_with('/') {
            return bad(format!(
                "volume {}:{} needs absolute paths on both sides",
                quoted(&v.host_path),
                quoted(&v.container_path)
            ));
        }
    }
    Ok(())
}

/// Checks the shape of a task's health check (the agent validates it in
/// full).
fn validate_health_check(name: Quoted<'_>, h: &pb::HealthCheck) -> Result<(), CallError> {
    let kinds = usize::from(h.command.is_some())
        + usize::from(h.http.is_some())
        + usize::from(h.tcp.is_some());
    if kinds != 1 {
        return Err(CallError::invalid_argument(format!(
            "task {name}: a health check needs exactly one of command, http and tcp ({kinds} set)"
        )));
    }
    let port = h
        .http
        .as_ref()
        .map(|x| x.port)
        .or(h.tcp.as_ref().map(|x| x.port));
    if let Some(p) = port
        && (p == 0 || p > 65535)
    {
        return Err(CallError::invalid_argument(format!(
            "task {name}: health check port {p} is out of range (1-65535)"
        )));
    }
    for (field, v) in [
        ("grace_period_seconds", h.grace_period_seconds),
        ("interval_seconds", h.interval_seconds),
        ("timeout_seconds", h.timeout_seconds),
        ("delay_seconds", h.delay_seconds),
    ] {
        seconds(field, v)
            .map_err(|e| CallError::invalid_argument(format!("task {name}: health check {e}")))?;
    }
    Ok(())
}

/// Most attributes an agent may report.
const MAX_ATTRIBUTES: usize = 128;

/// Checks an agent's attributes: they are stored in the registry and shown
/// to every framework, so they are bounded like names.
pub(super) fn check_attributes(attributes: &[pb::Attribute]) -> Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "{} attributes; at most {MAX_ATTRIBUTES} are allowed",
            attributes.len()
        ));
    }
    for a in attributes {
        if a.name.is_empty() || a.name.len() > 255 || a.name.chars().any(char::is_control) {
            return Err(format!(
                "attribute name {} must be 1 to 255 bytes without control characters",
                quoted(&a.name)
            ));
        }
        if a.value.len() > MAX_NAME || a.value.chars().any(char::is_control) {
            return Err(format!(
                "attribute {} has a value over {MAX_NAME} bytes or with control characters",
                quoted(&a.name)
            ));
        }
    }
    Ok(())
}
