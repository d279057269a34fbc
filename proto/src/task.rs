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
/// or control characters. Whether the host ports are the task's is the
/// agent's to check, against the task's resources.
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{HttpCheck, PortMapping, TcpCheck, Volume};

    fn shell(s: &str) -> CommandInfo {
        CommandInfo {
            shell: s.into(),
            ..Default::default()
        }
    }

    fn task(command: Option<CommandInfo>) -> TaskInfo {
        TaskInfo {
            task_id: "t1".into(),
            command,
            ..Default::default()
        }
    }

    fn image(i: &str) -> ContainerInfo {
        ContainerInfo {
            image: i.into(),
            ..Default::default()
        }
    }

    fn err(t: &TaskInfo) -> String {
        validate_task(t).unwrap_err().to_string()
    }

    fn container_err(c: &ContainerInfo) -> ContainerInfoError {
        validate_container(c).unwrap_err()
    }

    fn tcp(port: u32) -> HealthCheck {
        HealthCheck {
            tcp: Some(TcpCheck { port }),
            ..Default::default()
        }
    }

    fn http(port: u32, path: &str, scheme: &str) -> HealthCheck {
        HealthCheck {
            http: Some(HttpCheck {
                port,
                path: path.into(),
                scheme: scheme.into(),
            }),
            ..Default::default()
        }
    }

    fn hc_err(h: &HealthCheck) -> String {
        validate_health_check(h).unwrap_err().to_string()
    }

    #[test]
    fn a_plain_task_passes_and_returns_its_id() {
        assert_eq!(
            validate_task(&task(Some(shell("true")))).unwrap().as_str(),
            "t1"
        );
    }

    #[test]
    fn task_id_and_name() {
        let mut t = task(Some(shell("true")));
        t.task_id = "a/b".into();
        assert!(matches!(validate_task(&t), Err(TaskError::Id(_))));
        assert!(err(&t).contains("invalid task id \"a/b\""), "{}", err(&t));
        let mut t = task(Some(shell("true")));
        t.name = "n".repeat(MAX_TASK_NAME_BYTES);
        assert!(validate_task(&t).is_ok());
        t.name.push('n');
        assert_eq!(err(&t), "task \"t1\": name longer than 1024 bytes (1025)");
    }

    #[test]
    fn command_shape() {
        assert_eq!(
            err(&task(None)),
            "task \"t1\": the task has no command (and no container whose image has one)"
        );
        assert_eq!(
            err(&task(Some(CommandInfo::default()))),
            "task \"t1\": the command needs `shell` or `argv`; neither is set"
        );
        let both = CommandInfo {
            shell: "true".into(),
            argv: vec!["true".into()],
            ..Default::default()
        };
        assert_eq!(validate_command(&both), Err(CommandError::Both));
        let empty0 = CommandInfo {
            argv: vec![String::new(), "x".into()],
            ..Default::default()
        };
        assert_eq!(validate_command(&empty0), Err(CommandError::EmptyArgv0));
        let nul_arg = CommandInfo {
            argv: vec!["echo".into(), "a\0b".into()],
            ..Default::default()
        };
        assert_eq!(
            validate_command(&nul_arg).unwrap_err().to_string(),
            "the command \"a\\0b\" contains a NUL byte"
        );
        assert!(matches!(
            validate_command(&shell("tr\0ue")),
            Err(CommandError::Nul { .. })
        ));
        // A container task may leave the command empty (the image's CMD)...
        let mut t = task(None);
        t.container = Some(image("busybox"));
        assert!(validate_task(&t).is_ok());
        t.command = Some(CommandInfo::default());
        assert!(validate_task(&t).is_ok());
        // ...but a command it gives is checked.
        t.command = Some(both);
        assert!(err(&t).ends_with("both are set"), "{}", err(&t));
    }

    #[test]
    fn environment() {
        let with = |k: &str, v: &str| {
            let mut c = shell("true");
            c.env.insert(k.into(), v.into());
            task(Some(c))
        };
        assert!(validate_task(&with("A", "1")).is_ok());
        assert_eq!(
            err(&with("", "x")),
            "task \"t1\": invalid environment variable name \"\": it must not be empty"
        );
        for bad in ["A=B", "A\0B"] {
            assert!(
                err(&with(bad, "x")).contains("it must not contain '=' or NUL"),
                "{bad:?}"
            );
        }
        assert_eq!(
            err(&with("A", "x\0")),
            "task \"t1\": environment variable \"A\" must not contain NUL"
        );
        // A huge name is quoted cut short.
        let huge = format!("{}=", "k".repeat(1 << 20));
        let e = err(&with(&huge, "v"));
        assert!(e.len() < 300 && e.contains("(1048577 bytes)"), "{e}");
    }

    fn label(key: &str, value: &str) -> Label {
        Label {
            key: key.into(),
            value: value.into(),
        }
    }

    fn with_labels(labels: Vec<Label>) -> TaskInfo {
        let mut t = task(Some(shell("true")));
        t.labels = labels;
        t
    }

    #[test]
    fn labels_at_their_limits_pass() {
        let full = |i: usize| {
            let key = format!("{i:0>width$}", width = MAX_LABEL_KEY_BYTES);
            label(&key, &"v".repeat(MAX_LABEL_VALUE_BYTES))
        };
        let t = with_labels((0..MAX_LABELS).map(full).collect());
        assert_eq!(
            validate_task(&t).map(|id| id.as_str().to_owned()),
            Ok("t1".to_owned())
        );
        // Empty values and repeated keys are fine.
        assert_eq!(validate_labels(&[label("k", ""), label("k", "")]), Ok(()));
    }

    #[test]
    fn too_many_labels() {
        let t = with_labels(vec![label("k", "v"); MAX_LABELS + 1]);
        assert_eq!(
            validate_task(&t),
            Err(TaskError::Invalid {
                task: "t1".into(),
                error: TaskRuleError::Label(LabelError::TooMany { count: 65 }),
            })
        );
        assert_eq!(err(&t), "task \"t1\": 65 labels; at most 64 are allowed");
    }

    #[test]
    fn label_keys() {
        let t = with_labels(vec![label("a", "1"), label("", "2")]);
        assert_eq!(
            validate_labels(&t.labels),
            Err(LabelError::KeyEmpty { index: 1 })
        );
        assert_eq!(err(&t), "task \"t1\": labels[1]: the key must not be empty");

        let long = "k".repeat(MAX_LABEL_KEY_BYTES + 1);
        assert!(matches!(
            validate_labels(&[label(&long, "v")]),
            Err(LabelError::KeyTooLong { index: 0, .. })
        ));
        let e = err(&with_labels(vec![label(&long, "v")]));
        assert_eq!(
            e,
            format!(
                "task \"t1\": labels[0]: key \"{}\"… (256 bytes) must be at most 255 bytes",
                "k".repeat(64)
            )
        );

        assert_eq!(
            err(&with_labels(vec![label("a\0b", "v")])),
            r#"task "t1": labels[0]: key "a\0b" contains a NUL byte"#
        );
    }

    #[test]
    fn label_values() {
        let long = "v".repeat(MAX_LABEL_VALUE_BYTES + 1);
        assert!(matches!(
            validate_labels(&[label("k", &long)]),
            Err(LabelError::ValueTooLong { index: 0, .. })
        ));
        let e = err(&with_labels(vec![label("k", "ok"), label("k", &long)]));
        assert_eq!(
            e,
            format!(
                "task \"t1\": labels[1] \"k\": value \"{}\"… (4097 bytes) must be at most 4096 bytes",
                "v".repeat(64)
            )
        );
        // A huge value is never echoed whole.
        let e = err(&with_labels(vec![label("k", &"v".repeat(1 << 20))]));
        assert!(e.len() < 200, "{e}");

        assert_eq!(
            err(&with_labels(vec![label("k", "x\0")])),
            r#"task "t1": labels[0] "k": value "x\0" contains a NUL byte"#
        );
    }

    #[test]
    fn kill_grace_period() {
        for good in [0.0, 1.5, MAX_KILL_GRACE_SECONDS] {
            let mut t = task(Some(shell("true")));
            t.kill_grace_period_seconds = good;
            assert!(validate_task(&t).is_ok(), "{good}");
        }
        for bad in [-1.0, f64::NAN, f64::INFINITY, MAX_KILL_GRACE_SECONDS * 2.0] {
            let mut t = task(Some(shell("true")));
            t.kill_grace_period_seconds = bad;
            assert!(
                err(&t).contains("kill_grace_period_seconds must be a finite number"),
                "{bad}"
            );
        }
    }

    #[test]
    fn container_image() {
        assert!(validate_container(&image(&"a".repeat(MAX_IMAGE_LEN))).is_ok());
        assert_eq!(container_err(&image("")), ContainerInfoError::ImageEmpty);
        for bad in [
            "busy box",
            "busybox\t",
            "busy\0box",
            "busy\nbox",
            &"a".repeat(MAX_IMAGE_LEN + 1),
        ] {
            assert!(
                matches!(container_err(&image(bad)), ContainerInfoError::Image { .. }),
                "{bad:?}"
            );
        }
        let e = container_err(&image(&"a".repeat(1 << 20))).to_string();
        assert!(
            e.contains("(1048576 bytes) must be at most 255 bytes without whitespace"),
            "{e}"
        );
    }

    #[test]
    fn container_entrypoint_and_user() {
        let mut c = image("img");
        c.entrypoint = vec!["/bin/sh".into(), "-c".into()];
        c.user = "1000:1000".into();
        assert!(validate_container(&c).is_ok());
        c.entrypoint.push("a\0b".into());
        assert_eq!(
            container_err(&c).to_string(),
            r#"container entrypoint[2] "a\0b" contains a NUL byte"#
        );
        let mut c = image("img");
        for bad in ["nobody x", "no\0body"] {
            c.user = bad.into();
            assert_eq!(
                container_err(&c).to_string(),
                format!("container user {bad:?} must not contain whitespace or control characters")
            );
        }
    }

    #[test]
    fn container_network_is_case_sensitive() {
        for good in ["", "bridge", "host", "none"] {
            let mut c = image("img");
            c.network = good.into();
            assert!(validate_container(&c).is_ok(), "{good}");
        }
        for bad in ["overlay", "HOST", "Bridge", "None"] {
            let mut c = image("img");
            c.network = bad.into();
            assert_eq!(
                container_err(&c).to_string(),
                format!(
                    "container network {bad:?} is not one of bridge, host, none \
                     (network names are case-sensitive, as in Docker)"
                )
            );
        }
    }

    fn mapping(container_port: u32, host_port: u32, protocol: &str) -> PortMapping {
        PortMapping {
            container_port,
            host_port,
            protocol: protocol.into(),
        }
    }

    #[test]
    fn port_mappings() {
        let with = |m: Vec<PortMapping>| {
            let mut c = image("img");
            c.port_mappings = m;
            c
        };
        assert!(
            validate_container(&with(vec![
                mapping(80, 0, ""),
                mapping(443, 31000, "TCP"),
                mapping(53, 65535, "udp"),
            ]))
            .is_ok()
        );
        for (bad, index) in [
            (vec![mapping(0, 0, "")], 0),
            (vec![mapping(80, 0, ""), mapping(70000, 0, "")], 1),
            (vec![mapping(80, 65536, "")], 0),
        ] {
            assert!(
                matches!(
                    container_err(&with(bad)),
                    ContainerInfoError::PortRange { index: i, .. } if i == index
                ),
                "{index}"
            );
        }
        assert_eq!(
            container_err(&with(vec![mapping(0, 0, "")])).to_string(),
            "container port_mappings[0] 0:0 is out of range (ports are 1-65535; host port 0 picks one)"
        );
        assert_eq!(
            container_err(&with(vec![mapping(80, 0, "sctp")])).to_string(),
            "container port_mappings[0] protocol \"sctp\" is not tcp or udp"
        );
        for net in ["host", "none"] {
            let mut c = with(vec![mapping(80, 0, "")]);
            c.network = net.into();
            let e = container_err(&c).to_string();
            assert!(
                e.starts_with("port mappings need the bridge network"),
                "{e}"
            );
        }
    }

    fn volume(host: &str, container: &str) -> Volume {
        Volume {
            host_path: host.into(),
            container_path: container.into(),
            read_only: false,
        }
    }

    #[test]
    fn volumes() {
        let with = |v: Vec<Volume>| {
            let mut c = image("img");
            c.volumes = v;
            c
        };
        let e = |v: Vec<Volume>| container_err(&with(v)).to_string();
        assert!(validate_container(&with(vec![volume("/srv/data", "/data")])).is_ok());
        // Inside the sandbox mount is fine.
        assert!(validate_container(&with(vec![volume("/srv", "/mnt/berth/sandbox/data")])).is_ok());
        assert_eq!(
            e(vec![volume("srv", "/data")]),
            r#"volumes[0]: host path "srv" is not absolute; a volume needs absolute paths on both sides"#
        );
        assert_eq!(
            e(vec![volume("/srv", "")]),
            r#"volumes[0]: container path "" is not absolute; a volume needs absolute paths on both sides"#
        );
        assert_eq!(
            e(vec![volume("/srv\0x", "/data")]),
            r#"volumes[0]: host path "/srv\0x" contains a NUL byte"#
        );
        assert_eq!(
            e(vec![volume("/srv", "/da:ta")]),
            r#"volumes[0]: container path "/da:ta" contains ':', which Docker's bind syntax cannot express"#
        );
        assert_eq!(
            e(vec![volume("/srv", "/data/../etc")]),
            r#"volumes[0]: container path "/data/../etc" must not contain "..""#
        );
        for sandbox in [
            "/mnt/berth/sandbox",
            "/mnt/berth/sandbox/",
            "/mnt//berth/sandbox",
        ] {
            let e = e(vec![volume("/srv", sandbox)]);
            assert!(
                e.ends_with("is where the task's sandbox is mounted"),
                "{sandbox}: {e}"
            );
        }
        assert_eq!(
            e(vec![volume("/a", "/data"), volume("/b", "/data/")]),
            r#"volumes[1]: container path "/data/" is mounted twice"#
        );
    }

    #[test]
    fn health_check_kinds() {
        assert!(validate_health_check(&tcp(80)).is_ok());
        assert_eq!(
            hc_err(&HealthCheck::default()),
            "the health check must set exactly one of command, http and tcp; none is set"
        );
        let mut h = tcp(80);
        h.http = http(80, "/", "").http;
        assert_eq!(
            hc_err(&h),
            "the health check must set exactly one of command, http and tcp; http and tcp are set"
        );
        h.command = Some(shell("true"));
        assert!(hc_err(&h).ends_with("all three are set"));
        h.http = None;
        assert!(hc_err(&h).ends_with("command and tcp are set"));
    }

    #[test]
    fn health_check_command() {
        let command = |c: CommandInfo| HealthCheck {
            command: Some(c),
            ..Default::default()
        };
        assert!(validate_health_check(&command(shell("true"))).is_ok());
        assert_eq!(
            hc_err(&command(CommandInfo::default())),
            "health check: the command needs `shell` or `argv`; neither is set"
        );
        let both = CommandInfo {
            shell: "true".into(),
            argv: vec!["true".into()],
            ..Default::default()
        };
        assert!(hc_err(&command(both)).ends_with("both are set"));
        let empty0 = CommandInfo {
            argv: vec![String::new(), "x".into()],
            ..Default::default()
        };
        assert_eq!(
            hc_err(&command(empty0)),
            "health check: the command's argv[0] must not be empty"
        );
        assert!(hc_err(&command(shell("tr\0ue"))).contains("NUL"));
        let nul_arg = CommandInfo {
            argv: vec!["test".into(), "a\0b".into()],
            ..Default::default()
        };
        assert!(hc_err(&command(nul_arg)).contains("NUL"));
        let mut env = shell("true");
        env.env.insert("A".into(), "1".into());
        assert!(hc_err(&command(env)).contains("command.env is not supported"));
    }

    #[test]
    fn health_check_ports() {
        assert_eq!(
            hc_err(&tcp(0)),
            "health check tcp.port is required (1-65535)"
        );
        assert_eq!(
            hc_err(&tcp(65536)),
            "health check tcp.port 65536 is out of range (1-65535)"
        );
        assert_eq!(
            hc_err(&http(0, "/", "")),
            "health check http.port is required (1-65535)"
        );
        assert_eq!(
            hc_err(&http(70000, "/", "")),
            "health check http.port 70000 is out of range (1-65535)"
        );
        assert!(validate_health_check(&tcp(65535)).is_ok());
    }

    #[test]
    fn health_check_http_path_and_scheme() {
        assert!(validate_health_check(&http(80, "", "")).is_ok());
        assert!(validate_health_check(&http(80, "/health?full=1", "http")).is_ok());
        assert_eq!(
            hc_err(&http(80, "health", "")),
            "health check http.path must start with '/', got \"health\""
        );
        for bad in ["/a b", "/a\tb", "/a\nb", "/a\0b", "/caf\u{e9}"] {
            let e = hc_err(&http(80, bad, ""));
            assert!(
                e.contains("printable ASCII without whitespace"),
                "{bad:?}: {e}"
            );
        }
        let longest = format!("/{}", "a".repeat(MAX_HTTP_PATH_BYTES - 1));
        assert!(validate_health_check(&http(80, &longest, "")).is_ok());
        assert_eq!(
            hc_err(&http(80, &format!("{longest}a"), "")),
            "health check http.path must be at most 2048 bytes, got 2049"
        );
        assert!(hc_err(&http(80, "/", "https")).contains("\"https\" is not supported"));
        assert_eq!(
            hc_err(&http(80, "/", "ftp")),
            "health check http.scheme must be empty or \"http\", got \"ftp\""
        );
    }

    #[test]
    fn health_check_durations() {
        type Set = fn(&mut HealthCheck, f64);
        let fields: [(&str, Set); 4] = [
            ("delay_seconds", |h, v| h.delay_seconds = v),
            ("grace_period_seconds", |h, v| h.grace_period_seconds = v),
            ("interval_seconds", |h, v| h.interval_seconds = v),
            ("timeout_seconds", |h, v| h.timeout_seconds = v),
        ];
        for (name, set) in fields {
            let with = |v: f64| {
                let mut h = tcp(80);
                set(&mut h, v);
                h
            };
            for (v, rule) in [
                (-1.0, "not be negative, got -1"),
                (f64::NAN, "be a finite number of seconds, got NaN"),
                (f64::INFINITY, "be a finite number of seconds, got inf"),
                (86_400.5, "be at most 86400 seconds, got 86400.5"),
            ] {
                assert_eq!(hc_err(&with(v)), format!("health check {name} must {rule}"));
            }
            assert!(validate_health_check(&with(86_400.0)).is_ok(), "{name}");
            assert!(validate_health_check(&with(0.0)).is_ok(), "{name}");
        }
        let mut h = tcp(80);
        h.interval_seconds = 0.05;
        assert_eq!(
            hc_err(&h),
            "health check interval_seconds must be at least 0.1 seconds, got 0.05"
        );
        let mut h = tcp(80);
        h.timeout_seconds = 0.001;
        assert_eq!(
            hc_err(&h),
            "health check timeout_seconds must be at least 0.01 seconds, got 0.001"
        );
        let mut h = tcp(80);
        h.delay_seconds = 0.001;
        h.grace_period_seconds = 0.001;
        assert!(validate_health_check(&h).is_ok());
    }

    #[test]
    fn task_wraps_container_health_transfer_and_mask_errors() {
        let mut t = task(Some(shell("true")));
        t.container = Some(image(""));
        assert_eq!(err(&t), "task \"t1\": container image must not be empty");
        let mut t = task(Some(shell("true")));
        t.health_check = Some(tcp(0));
        assert_eq!(
            err(&t),
            "task \"t1\": health check tcp.port is required (1-65535)"
        );
        let mut t = task(Some(shell("true")));
        if let Some(c) = t.command.as_mut() {
            c.uris = vec![crate::FetchUri {
                url: "ftp://x".into(),
                ..Default::default()
            }];
        }
        assert!(matches!(
            validate_task(&t),
            Err(TaskError::Invalid {
                error: TaskRuleError::Transfer(_),
                ..
            })
        ));
        let mut t = task(Some(shell("true")));
        t.masked_values = vec!["short".into()];
        assert!(matches!(
            validate_task(&t),
            Err(TaskError::Invalid {
                error: TaskRuleError::Mask(_),
                ..
            })
        ));
    }
}
