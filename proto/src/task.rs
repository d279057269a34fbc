//! Validation of a `TaskInfo`: the rules the master applies when a task is
//! accepted and the agent applies again when it is told to run it.
//!
//! One function per part ([`validate_task`], [`validate_command`],
//! [`validate_labels`], [`validate_container`], [`validate_health_check`]),
//! each returning a typed error that quotes the bad value cut short
//! ([`berth_scheduler_core::quoted`]). Both daemons call them, so both
//! refuse the same input with the same words. What needs the agent's host
//! or the task's resources stays in the agent: resolving host ports against
//! the task's port resources, the defaults of a health check, the launch.
//!
//! Case: network names are exact, as Docker's are (`docker run --network
//! Host` looks for a network named "Host"), so only `bridge`, `host` and
//! `none` in lowercase (or empty for bridge) are accepted. Port protocols
//! are taken in any case, as Docker's `-p 80:80/TCP` is.

use std::path::{Component, Path};
use std::time::Duration;

use berth_scheduler_core::TaskId;

pub use crate::error::{
    CommandError, ContainerInfoError, HealthCheckError, LabelError, TaskError, TaskRuleError,
};
use crate::{CommandInfo, ContainerInfo, HealthCheck, Label, TaskInfo};

/// Longest task name, in bytes.
pub const MAX_TASK_NAME_BYTES: usize = 1024;
/// Longest `kill_grace_period_seconds` (a year); the agent waits at most an
/// hour whatever it says.
pub const MAX_KILL_GRACE_SECONDS: f64 = 365.0 * 24.0 * 3600.0;
/// Longest image reference, in bytes.
pub const MAX_IMAGE_LEN: usize = 255;
/// Where the Docker containerizer mounts the task's sandbox inside the
/// container (so no volume may be mounted there).
pub const CONTAINER_SANDBOX: &str = "/mnt/berth/sandbox";
/// Longest health check duration (one day).
pub const MAX_DURATION: Duration = Duration::from_secs(24 * 60 * 60);
/// Shortest health check interval, when one is given.
pub const MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Shortest health check timeout, when one is given.
pub const MIN_TIMEOUT: Duration = Duration::from_millis(10);
/// Longest HTTP health check path, in bytes.
pub const MAX_HTTP_PATH_BYTES: usize = 2048;
/// Most labels one task may carry.
pub const MAX_LABELS: usize = 64;
/// Longest label key, in bytes.
pub const MAX_LABEL_KEY_BYTES: usize = 255;
/// Longest label value, in bytes.
pub const MAX_LABEL_VALUE_BYTES: usize = 4096;

/// Checks a task's own fields (not its resources nor its fit in an
/// offer): a valid id; a name of at most [`MAX_TASK_NAME_BYTES`]; a
/// command ([`validate_command`]; a container task may leave it empty to
/// run its image's CMD); environment variable names not empty and without
/// '=' or NUL, values without NUL; its labels ([`validate_labels`]); a
/// kill grace period of 0 to [`MAX_KILL_GRACE_SECONDS`]; its container
/// ([`validate_container`]) and health check ([`validate_health_check`]);
/// its transfers ([`crate::transfer`]) and masked values
/// ([`crate::mask`]).
///
/// # Errors
/// A [`TaskError`] naming the task, the field and the rule.
pub fn validate_task(info: &TaskInfo) -> Result<TaskId, TaskError> {
    let id = TaskId::new(info.task_id.as_str())?;
    let invalid = |error| TaskError::Invalid {
        task: info.task_id.clone(),
        error,
    };
    if info.name.len() > MAX_TASK_NAME_BYTES {
        return Err(invalid(TaskRuleError::NameTooLong {
            len: info.name.len(),
        }));
    }
    let default_command = CommandInfo::default();
    let command = match (&info.command, &info.container) {
        (Some(c), _) => c,
        // A container without a command runs its image's own CMD.
        (None, Some(_)) => &default_command,
        (None, None) => return Err(invalid(TaskRuleError::NoCommand)),
    };
    let image_cmd = info.container.is_some() && command.shell.is_empty() && command.argv.is_empty();
    if !image_cmd {
        validate_command(command).map_err(|e| invalid(TaskRuleError::Command(e)))?;
    }
    // Sorted, so that the first bad variable reported is always the same.
    let mut env: Vec<_> = command.env.iter().collect();
    env.sort();
    for (name, value) in env {
        if name.is_empty() {
            return Err(invalid(TaskRuleError::EnvNameEmpty));
        }
        if name.contains('=') || name.contains('\0') {
            return Err(invalid(TaskRuleError::EnvName { name: name.clone() }));
        }
        if value.contains('\0') {
            return Err(invalid(TaskRuleError::EnvValueNul { name: name.clone() }));
        }
    }
    validate_labels(&info.labels).map_err(|e| invalid(TaskRuleError::Label(e)))?;
    let grace = info.kill_grace_period_seconds;
    if !grace.is_finite() || !(0.0..=MAX_KILL_GRACE_SECONDS).contains(&grace) {
        return Err(invalid(TaskRuleError::KillGrace { value: grace }));
    }
    if let Some(c) = &info.container {
        validate_container(c).map_err(|e| invalid(TaskRuleError::Container(e)))?;
    }
    if let Some(h) = &info.health_check {
        validate_health_check(h).map_err(|e| invalid(TaskRuleError::HealthCheck(e)))?;
    }
    crate::transfer::validate_task_transfers(info)
        .map_err(|e| invalid(TaskRuleError::Transfer(e)))?;
    crate::mask::validate_task_masks(info).map_err(|e| invalid(TaskRuleError::Mask(e)))?;
    Ok(id)
}

/// Checks a command's shape: exactly one of `shell` and `argv`, a
/// non-empty `argv[0]`, no NUL byte anywhere (its environment is checked by
/// [`validate_task`]; a health check's must be empty).
///
/// # Errors
/// A [`CommandError`].
pub fn validate_command(command: &CommandInfo) -> Result<(), CommandError> {
    match (command.shell.is_empty(), command.argv.is_empty()) {
        (true, true) => return Err(CommandError::Neither),
        (false, false) => return Err(CommandError::Both),
        _ => {}
    }
    if command.argv.first().is_some_and(String::is_empty) {
        return Err(CommandError::EmptyArgv0);
    }
    if let Some(text) = std::iter::once(&command.shell)
        .chain(&command.argv)
        .find(|s| s.contains('\0'))
    {
        return Err(CommandError::Nul { text: text.clone() });
    }
    Ok(())
}

/// Checks a task's labels: at most [`MAX_LABELS`] of them; each key not
/// empty, at most [`MAX_LABEL_KEY_BYTES`] and without NUL; each value at
/// most [`MAX_LABEL_VALUE_BYTES`] and without NUL. Keys may repeat, as in
/// Mesos. The first bad label, by position, is the one reported.
///
/// # Errors
/// A [`LabelError`] naming the label by its index.
pub fn validate_labels(labels: &[Label]) -> Result<(), LabelError> {
    use LabelError as E;
    if labels.len() > MAX_LABELS {
        return Err(E::TooMany {
            count: labels.len(),
        });
    }
    for (index, Label { key, value }) in labels.iter().enumerate() {
        if key.is_empty() {
            return Err(E::KeyEmpty { index });
        }
        if key.len() > MAX_LABEL_KEY_BYTES {
            return Err(E::KeyTooLong {
                index,
                key: key.clone(),
            });
        }
        if key.contains('\0') {
            return Err(E::KeyNul {
                index,
                key: key.clone(),
            });
        }
        if value.len() > MAX_LABEL_VALUE_BYTES {
            return Err(E::ValueTooLong {
                index,
                key: key.clone(),
                value: value.clone(),
            });
        }
        if value.contains('\0') {
            return Err(E::ValueNul {
                index,
                key: key.clone(),
                value: value.clone(),
            });
        }
    }
    Ok(())
}

/// Checks a task's container: the image is not empty, at most
/// [`MAX_IMAGE_LEN`] bytes, without whitespace or control characters;
/// entrypoint strings hold no NUL; the network is `""` (bridge),
/// `"bridge"`, `"host"` or `"none"`, exactly (see the module doc), and only
/// the bridge network takes port mappings; a container port is 1-65535, a
/// host port 0-65535 (0 picks one), a protocol `""`, `"tcp"` or `"udp"` in
/// any case; both paths of a volume are absolute, without NUL or ':'
/// (Docker's bind syntax), the container path has no `..`, is not
/// [`CONTAINER_SANDBOX`] and is mounted once; the user has no whitespace
/// or control characters; the service containers as
/// [`services::validate_services`] says. Whether the host ports are the
/// task's is the agent's to check, against the task's resources.
///
/// # Errors
/// A [`ContainerInfoError`] naming the field.
pub fn validate_container(c: &ContainerInfo) -> Result<(), ContainerInfoError> {
    use ContainerInfoError as E;
    if c.image.is_empty() {
        return Err(E::ImageEmpty);
    }
    if c.image.len() > MAX_IMAGE_LEN
        || c.image
            .chars()
            .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        return Err(E::Image {
            image: c.image.clone(),
        });
    }
    if let Some((index, arg)) = c
        .entrypoint
        .iter()
        .enumerate()
        .find(|(_, a)| a.contains('\0'))
    {
        return Err(E::EntrypointNul {
            index,
            arg: arg.clone(),
        });
    }
    match c.network.as_str() {
        "" | "bridge" => {}
        "host" | "none" if !c.port_mappings.is_empty() => {
            return Err(E::PortsNeedBridge {
                network: c.network.clone(),
            });
        }
        "host" | "none" => {}
        _ => {
            return Err(E::Network {
                network: c.network.clone(),
            });
        }
    }
    for (index, m) in c.port_mappings.iter().enumerate() {
        if m.container_port == 0 || m.container_port > 65535 || m.host_port > 65535 {
            return Err(E::PortRange {
                index,
                host_port: m.host_port,
                container_port: m.container_port,
            });
        }
        if !matches!(m.protocol.to_ascii_lowercase().as_str(), "" | "tcp" | "udp") {
            return Err(E::Protocol {
                index,
                protocol: m.protocol.clone(),
            });
        }
    }
    let mut mounted: Vec<&Path> = Vec::with_capacity(c.volumes.len());
    for (index, v) in c.volumes.iter().enumerate() {
        for (side, path) in [("host", &v.host_path), ("container", &v.container_path)] {
            let path = path.clone();
            if !path.starts_with('/') {
                return Err(E::VolumeNotAbsolute { index, side, path });
            }
            if path.contains('\0') {
                return Err(E::VolumeNul { index, side, path });
            }
            if path.contains(':') {
                return Err(E::VolumeColon { index, side, path });
            }
        }
        let path = Path::new(&v.container_path);
        let shown = || v.container_path.clone();
        if path.components().any(|c| c == Component::ParentDir) {
            return Err(E::VolumeParent {
                index,
                path: shown(),
            });
        }
        // Path equality compares components, so "/a//b/" is "/a/b".
        if path == Path::new(CONTAINER_SANDBOX) {
            return Err(E::VolumeOnSandbox {
                index,
                path: shown(),
            });
        }
        if mounted.contains(&path) {
            return Err(E::VolumeTwice {
                index,
                path: shown(),
            });
        }
        mounted.push(path);
    }
    if c.user
        .chars()
        .any(|ch| ch.is_whitespace() || ch.is_control())
    {
        return Err(E::User {
            user: c.user.clone(),
        });
    }
    services::validate_services(&c.network, &c.services).map_err(E::Service)?;
    Ok(())
}

/// Checks a task's health check: exactly one of `command`, `http` and
/// `tcp`; a command as [`validate_command`] says, without `env` (the check
/// runs with the task's environment); `http.port`, `tcp.port` 1-65535;
/// `http.scheme` empty or "http" (https is not supported); `http.path`
/// empty (meaning "/") or starting with '/', printable ASCII without
/// whitespace, at most [`MAX_HTTP_PATH_BYTES`]; durations finite and not
/// negative, 0 for the default, otherwise at most [`MAX_DURATION`], the
/// interval at least [`MIN_INTERVAL`] and the timeout at least
/// [`MIN_TIMEOUT`].
///
/// # Errors
/// A [`HealthCheckError`] naming the field.
pub fn validate_health_check(h: &HealthCheck) -> Result<(), HealthCheckError> {
    use HealthCheckError as E;
    let set: Vec<&'static str> = [
        ("command", h.command.is_some()),
        ("http", h.http.is_some()),
        ("tcp", h.tcp.is_some()),
    ]
    .into_iter()
    .filter_map(|(name, is_set)| is_set.then_some(name))
    .collect();
    if set.len() != 1 {
        return Err(E::Kinds { set });
    }
    if let Some(command) = &h.command {
        validate_command(command).map_err(E::Command)?;
        if !command.env.is_empty() {
            return Err(E::CommandEnv);
        }
    }
    if let Some(tcp) = &h.tcp {
        port("tcp.port", tcp.port)?;
    }
    if let Some(http) = &h.http {
        port("http.port", http.port)?;
        match http.scheme.as_str() {
            "" | "http" => {}
            "https" => return Err(E::Https),
            other => {
                return Err(E::Scheme {
                    scheme: other.to_owned(),
                });
            }
        }
        let path = http.path.as_str();
        if !path.is_empty() && !path.starts_with('/') {
            return Err(E::PathRelative {
                path: path.to_owned(),
            });
        }
        if path.len() > MAX_HTTP_PATH_BYTES {
            return Err(E::PathTooLong { len: path.len() });
        }
        if let Some(found) = path.chars().find(|c| !c.is_ascii_graphic()) {
            return Err(E::PathChars { found });
        }
    }
    for (field, value, min) in [
        ("delay_seconds", h.delay_seconds, Duration::ZERO),
        (
            "grace_period_seconds",
            h.grace_period_seconds,
            Duration::ZERO,
        ),
        ("interval_seconds", h.interval_seconds, MIN_INTERVAL),
        ("timeout_seconds", h.timeout_seconds, MIN_TIMEOUT),
    ] {
        seconds(field, value, min)?;
    }
    Ok(())
}

fn port(field: &'static str, port: u32) -> Result<(), HealthCheckError> {
    match port {
        0 => Err(HealthCheckError::PortMissing { field }),
        1..=65535 => Ok(()),
        _ => Err(HealthCheckError::PortRange { field, port }),
    }
}

/// A health check duration: finite, not negative, 0 (the default) or
/// between `min` and [`MAX_DURATION`].
fn seconds(field: &'static str, value: f64, min: Duration) -> Result<(), HealthCheckError> {
    let bad = |rule: String| Err(HealthCheckError::Duration { field, rule, value });
    if !value.is_finite() {
        return bad("be a finite number of seconds".into());
    }
    if value < 0.0 {
        return bad("not be negative".into());
    }
    if value == 0.0 {
        return Ok(());
    }
    if value > MAX_DURATION.as_secs_f64() {
        return bad(format!("be at most {} seconds", MAX_DURATION.as_secs()));
    }
    if value < min.as_secs_f64() {
        return bad(format!("be at least {} seconds", min.as_secs_f64()));
    }
    Ok(())
}

pub mod services;

#[cfg(test)]
mod tests;
