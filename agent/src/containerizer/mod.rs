//! Containerizers: how a task's process is started, watched and stopped.
//!
//! Modelled on Mesos's `Containerizer` (`launch`, `wait`, `destroy`,
//! `recover`). The trait is object-safe (boxed futures), so the agent holds
//! an `Arc<dyn Containerizer>`: [`process::ProcessContainerizer`] runs tasks
//! as host process groups, [`docker::DockerContainerizer`] as Docker
//! containers. Besides Mesos's four, the trait has `cleanup` (remove what
//! is left of an ended container) and `exec` (run a command in a running
//! one, for command health checks).
//!
//! [`ContainerSpec::from_proto`] validates a task's `ContainerInfo`.
//! Exit codes are the shell's for both: a signal N is 128 + N
//! ([`Termination::exit_code`]), a program that does not exist 127 and one
//! that cannot be executed 126 ([`ContainerError::exit_code`], which also
//! reads Docker's words for the same failures).

pub mod docker;
pub mod process;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::Duration;

use berth_proto as pb;
use berth_scheduler_core::{PortRanges, Resources};

use crate::error::ContainerError;

/// A boxed, sendable future (what the object-safe trait methods return).
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// Identifies one container (one run of one task) on this agent.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ContainerId(pub String);

impl ContainerId {
    /// A fresh random id.
    #[must_use]
    pub fn random() -> Self {
        ContainerId(uuid::Uuid::new_v4().to_string())
    }
}

impl fmt::Display for ContainerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// What to run.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Run as `/bin/sh -c <shell>`.
    Shell(String),
    /// Run directly; `argv[0]` is looked up in `PATH`. Empty only for a
    /// container, which then runs its image's own command.
    Argv(Vec<String>),
}

/// Everything a containerizer needs to start a task.
#[derive(Clone, Debug)]
pub struct LaunchSpec {
    /// The container to create.
    pub container_id: ContainerId,
    /// The task's framework id (already validated).
    pub framework_id: String,
    /// The task id (already validated).
    pub task_id: String,
    /// The agent's id (may be empty before the first registration).
    pub agent_id: String,
    /// The sandbox directory (absolute). If it exists it is emptied first
    /// (a relaunched task id starts with a clean sandbox), unless
    /// `sandbox_prepared` says the agent already did that.
    pub sandbox: PathBuf,
    /// The agent already ran [`prepare_sandbox`] and fetched the task's
    /// URIs into it: use the sandbox as it is.
    pub sandbox_prepared: bool,
    /// The command.
    pub command: Command,
    /// The task's own environment variables (keys validated).
    pub env: HashMap<String, String>,
    /// The task's resources (exported as `BERTH_CPUS`, `BERTH_MEM`,
    /// `BERTH_PORTS`).
    pub resources: Resources,
    /// The container image and its settings: `Some` for tasks run by the
    /// Docker containerizer, `None` for the process containerizer.
    pub container: Option<ContainerSpec>,
    /// Values replaced with `[MASKED]` in the task's output before it
    /// reaches the sandbox files (`TaskInfo.masked_values`, validated).
    pub masked_values: Vec<String>,
}

/// A validated `pb::ContainerInfo` with its host ports resolved (see
/// [`ContainerSpec::from_proto`]).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ContainerSpec {
    /// Image reference (not empty, no whitespace or NUL).
    pub image: String,
    /// Replaces the image's ENTRYPOINT when not empty.
    pub entrypoint: Vec<String>,
    /// Published ports; every `host_port` is one of the task's port
    /// resources and used once.
    pub ports: Vec<PortBinding>,
    /// Bind mounts (absolute paths on both sides).
    pub volumes: Vec<VolumeSpec>,
    /// User inside the container; empty means the image's.
    pub user: String,
    /// Network mode.
    pub network: NetworkMode,
    /// Service containers started before the task on a network of its
    /// own (bridge network only; see [`docker`]).
    pub services: Vec<ServiceSpec>,
}

/// A service container of a task (`ContainerInfo.services`, validated).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ServiceSpec {
    /// Image reference.
    pub image: String,
    /// Host names the task reaches it by on the task's network.
    pub aliases: Vec<String>,
    /// Replaces the image's ENTRYPOINT when not empty.
    pub entrypoint: Vec<String>,
    /// Replaces the image's CMD when not empty.
    pub command: Vec<String>,
    /// Its environment, sorted by name.
    pub env: Vec<(String, String)>,
}

/// A container port published on a host port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PortBinding {
    /// Port on the agent host (from the task's port resources).
    pub host_port: u16,
    /// Port inside the container.
    pub container_port: u16,
    /// Transport protocol.
    pub protocol: Protocol,
}

/// Transport protocol of a published port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Protocol {
    /// TCP.
    Tcp,
    /// UDP.
    Udp,
}

impl Protocol {
    /// "tcp" or "udp".
    #[must_use]
    pub fn as_str(self) -> &'static str {
        match self {
            Protocol::Tcp => "tcp",
            Protocol::Udp => "udp",
        }
    }
}

/// A bind mount from the agent host into a container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VolumeSpec {
    /// Absolute host path.
    pub host_path: PathBuf,
    /// Absolute path in the container.
    pub container_path: PathBuf,
    /// Mounted read-only.
    pub read_only: bool,
}

/// Docker network mode of a container.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NetworkMode {
    /// Docker's default bridge; ports are published.
    Bridge,
    /// The host's network namespace; ports are not mapped (the container
    /// binds host ports directly).
    Host,
    /// No network.
    None,
}

/// Where the Docker containerizer mounts the task's sandbox inside the
/// container (also its working directory and `BERTH_SANDBOX`); the
/// longest image reference accepted, in bytes.
pub use berth_proto::task::{CONTAINER_SANDBOX, MAX_IMAGE_LEN};

impl ContainerSpec {
    /// Validates a task's `ContainerInfo` by the rules the master applies
    /// too ([`berth_proto::task::validate_container`]) and resolves its
    /// host ports against `ports`, the task's port resources: a host port
    /// is one of `ports` and used once, and `0` takes the lowest port of
    /// `ports` not otherwise mapped.
    ///
    /// # Errors
    /// A message naming the offending field and why.
    pub fn from_proto(
        info: &pb::ContainerInfo,
        ports: &PortRanges,
    ) -> Result<ContainerSpec, String> {
        berth_proto::task::validate_container(info).map_err(|e| e.to_string())?;
        let network = match info.network.as_str() {
            "host" => NetworkMode::Host,
            "none" => NetworkMode::None,
            // "" or "bridge": validated above.
            _ => NetworkMode::Bridge,
        };
        Ok(ContainerSpec {
            image: info.image.clone(),
            entrypoint: info.entrypoint.clone(),
            ports: resolve_ports(&info.port_mappings, ports)?,
            volumes: volumes(&info.volumes),
            user: info.user.clone(),
            network,
            services: info
                .services
                .iter()
                .map(|s| {
                    let mut env: Vec<(String, String)> =
                        s.env.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
                    env.sort();
                    ServiceSpec {
                        image: s.image.clone(),
                        aliases: s.aliases.clone(),
                        entrypoint: s.entrypoint.clone(),
                        command: s.command.clone(),
                        env,
                    }
                })
                .collect(),
        })
    }
}

/// Gives each (validated) port mapping a host port from `ports`.
fn resolve_ports(
    mappings: &[pb::PortMapping],
    ports: &PortRanges,
) -> Result<Vec<PortBinding>, String> {
    if mappings.is_empty() {
        return Ok(Vec::new());
    }
    let available = ports.count();
    if mappings.len() as u64 > available {
        return Err(format!(
            "{} port mapping{} but the task has only {available} port{} in its resources",
            mappings.len(),
            if mappings.len() == 1 { "" } else { "s" },
            if available == 1 { "" } else { "s" }
        ));
    }
    // Explicit host ports first, so that a port picked for `host_port: 0`
    // never collides with one named later.
    let mut used = std::collections::BTreeSet::new();
    for (i, m) in mappings.iter().enumerate() {
        if m.host_port == 0 {
            continue;
        }
        let Some(port) = u16::try_from(m.host_port)
            .ok()
            .filter(|p| ports.contains_port(*p))
        else {
            return Err(format!(
                "port_mappings[{i}]: host port {} is not one of the task's ports {ports}",
                m.host_port
            ));
        };
        if !used.insert(port) {
            return Err(format!(
                "port_mappings[{i}]: host port {port} is mapped twice"
            ));
        }
    }
    let mut free = ports
        .ranges()
        .iter()
        .flat_map(|&(b, e)| b..=e)
        .filter(|p| !used.contains(p));
    let mut out = Vec::with_capacity(mappings.len());
    for (i, m) in mappings.iter().enumerate() {
        let out_of_range =
            |what: &str, p: u32| format!("port_mappings[{i}]: {what} port {p} is not in 1-65535");
        let container_port = u16::try_from(m.container_port)
            .map_err(|_| out_of_range("container", m.container_port))?;
        let protocol = if m.protocol.eq_ignore_ascii_case("udp") {
            Protocol::Udp
        } else {
            Protocol::Tcp
        };
        let host_port = if m.host_port == 0 {
            // Cannot run out: there are at least as many ports as mappings.
            free.next().ok_or_else(|| {
                format!("port_mappings[{i}]: no unused port left in the task's ports {ports}")
            })?
        } else {
            u16::try_from(m.host_port).map_err(|_| out_of_range("host", m.host_port))?
        };
        out.push(PortBinding {
            host_port,
            container_port,
            protocol,
        });
    }
    Ok(out)
}

/// The bind mounts of a (validated) container.
fn volumes(volumes: &[pb::Volume]) -> Vec<VolumeSpec> {
    volumes
        .iter()
        .map(|v| VolumeSpec {
            host_path: PathBuf::from(&v.host_path),
            container_path: PathBuf::from(&v.container_path),
            read_only: v.read_only,
        })
        .collect()
}

/// A started container.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Launched {
    /// The container.
    pub container_id: ContainerId,
    /// Its main process.
    pub pid: i32,
    /// Its process group (equal to `pid` for the process containerizer).
    pub pgid: i32,
}

/// How a container's main process ended.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Termination {
    /// It exited with this status.
    Exited(i32),
    /// It was killed by this signal number.
    Signaled(i32),
    /// It is gone but its status is unknown (a re-adopted process that is
    /// not this agent's child).
    Unknown,
    /// The kernel's OOM killer ended it for exceeding its memory limit
    /// (Docker's `State.OOMKilled`); the exit status, usually 137.
    OutOfMemory(i32),
}

impl Termination {
    /// The shell-style exit code: the status, or 128 + the signal number.
    #[must_use]
    pub fn exit_code(self) -> Option<i32> {
        match self {
            Termination::Exited(c) => Some(c),
            Termination::Signaled(s) => Some(128 + s),
            Termination::Unknown => None,
            Termination::OutOfMemory(c) => Some(c),
        }
    }
}

impl fmt::Display for Termination {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Termination::Exited(c) => write!(f, "exited with status {c}"),
            Termination::Signaled(s) => write!(f, "killed by signal {}", signal_name(*s)),
            Termination::Unknown => f.write_str("exited with an unknown status"),
            Termination::OutOfMemory(c) => write!(
                f,
                "killed by the OOM killer for exceeding its memory limit (status {c})"
            ),
        }
    }
}

/// The name of a signal number, e.g. `SIGKILL` for 9.
#[must_use]
pub fn signal_name(sig: i32) -> String {
    nix::sys::signal::Signal::try_from(sig)
        .map_or_else(|_| format!("signal {sig}"), |s| s.as_str().to_owned())
}

/// A container to re-adopt after an agent restart (from a checkpoint).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecoverRecord {
    /// The container's id.
    pub container_id: ContainerId,
    /// The task's framework.
    pub framework_id: String,
    /// The task.
    pub task_id: String,
    /// The main process (process containerizer; 0 for Docker).
    pub pid: i32,
    /// Its process group (process containerizer; 0 for Docker).
    pub pgid: i32,
    /// The task's sandbox.
    pub sandbox: PathBuf,
    /// The values masked in its output, as at launch.
    pub masked_values: Vec<String>,
}

/// Starts, watches and stops task containers.
pub trait Containerizer: Send + Sync + fmt::Debug {
    /// Prepares the sandbox and starts the container. Returns once the
    /// process is spawned.
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Launched, ContainerError>>;

    /// Resolves when the container's main process has ended (at once if it
    /// already has). May be called any number of times.
    fn wait<'a>(
        &'a self,
        id: &'a ContainerId,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>>;

    /// Stops the container: SIGTERM to its processes, SIGKILL after `grace`
    /// (or at once when the main process has exited, to clean up what is
    /// left). Resolves when the main process is gone.
    fn destroy<'a>(
        &'a self,
        id: &'a ContainerId,
        grace: Duration,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>>;

    /// Forgets a finished container (its sandbox stays on disk).
    fn cleanup<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, ()>;

    /// Re-adopts containers from before an agent restart; returns those
    /// now watched like launched ones. The process containerizer returns
    /// only those whose processes are still alive; the Docker containerizer
    /// also returns containers that exited while the agent was down (their
    /// `wait` resolves at once with the recorded exit), and removes
    /// containers carrying this agent's berth labels that are not in
    /// `records` (orphans), leaving every other container alone.
    fn recover(
        &self,
        records: Vec<RecoverRecord>,
    ) -> BoxFuture<'_, Result<Vec<ContainerId>, ContainerError>>;

    /// Runs `command` in the container's environment (inside the container
    /// for Docker; as a host process with the task's environment and its
    /// sandbox as working directory for the process containerizer) and
    /// returns its exit status, for command health checks. A command still
    /// running after `timeout` is killed and reported as
    /// [`ContainerError::Timeout`].
    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        command: Command,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<i32, ContainerError>>;
}

/// Removes and recreates a task's sandbox with empty `stdout` and
/// `stderr` files (every run starts this way: by the agent before it
/// fetches the task's URIs, else by the containerizer).
pub(crate) async fn prepare_sandbox(sandbox: &Path) -> Result<(), ContainerError> {
    let sandbox_err = |source| ContainerError::Sandbox {
        path: sandbox.to_path_buf(),
        source,
    };
    if tokio::fs::try_exists(sandbox).await.map_err(sandbox_err)? {
        tokio::fs::remove_dir_all(sandbox)
            .await
            .map_err(sandbox_err)?;
    }
    tokio::fs::create_dir_all(sandbox)
        .await
        .map_err(sandbox_err)?;
    for name in ["stdout", "stderr"] {
        tokio::fs::File::create(sandbox.join(name))
            .await
            .map_err(sandbox_err)?;
    }
    Ok(())
}

/// The termination a container's watcher publishes, once it has.
pub(crate) async fn wait_exit(
    mut rx: tokio::sync::watch::Receiver<Option<Termination>>,
) -> Termination {
    match rx.wait_for(Option::is_some).await {
        Ok(t) => t.unwrap_or(Termination::Unknown),
        // The watcher went away without a result: nothing more to learn.
        Err(_) => Termination::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ports() -> PortRanges {
        PortRanges::from_ranges(&[(31000, 31001), (31005, 31005)]).unwrap()
    }

    fn info(image: &str) -> pb::ContainerInfo {
        pb::ContainerInfo {
            image: image.to_owned(),
            ..Default::default()
        }
    }

    fn mapping(container_port: u32, host_port: u32, protocol: &str) -> pb::PortMapping {
        pb::PortMapping {
            container_port,
            host_port,
            protocol: protocol.to_owned(),
        }
    }

    fn volume(host: &str, container: &str, read_only: bool) -> pb::Volume {
        pb::Volume {
            host_path: host.to_owned(),
            container_path: container.to_owned(),
            read_only,
        }
    }

    fn err(info: &pb::ContainerInfo) -> String {
        ContainerSpec::from_proto(info, &ports()).unwrap_err()
    }

    #[test]
    fn minimal_spec() {
        let spec = ContainerSpec::from_proto(&info("berth/busybox:latest"), &ports()).unwrap();
        assert_eq!(
            spec,
            ContainerSpec {
                image: "berth/busybox:latest".into(),
                entrypoint: vec![],
                ports: vec![],
                volumes: vec![],
                user: String::new(),
                network: NetworkMode::Bridge,
                services: vec![],
            }
        );
    }

    #[test]
    fn image_rules() {
        assert_eq!(err(&info("")), "container image must not be empty");
        let long = "a".repeat(MAX_IMAGE_LEN + 1);
        assert_eq!(
            err(&info(&long)),
            format!(
                "container image {} must be at most 255 bytes without whitespace or control characters",
                berth_proto::quoted(&long)
            )
        );
        assert!(ContainerSpec::from_proto(&info(&"a".repeat(MAX_IMAGE_LEN)), &ports()).is_ok());
        for bad in ["busy box", "busybox\t", "busy\0box", "busy\nbox"] {
            let e = err(&info(bad));
            assert!(
                e.contains("must be at most 255 bytes without whitespace or control characters"),
                "{bad:?}: {e}"
            );
        }
    }

    #[test]
    fn entrypoint_without_nul() {
        let mut i = info("img");
        i.entrypoint = vec!["/bin/sh".into(), "-c".into()];
        assert_eq!(
            ContainerSpec::from_proto(&i, &ports()).unwrap().entrypoint,
            i.entrypoint
        );
        i.entrypoint.push("a\0b".into());
        assert_eq!(
            err(&i),
            r#"container entrypoint[2] "a\0b" contains a NUL byte"#
        );
    }

    #[test]
    fn network_modes() {
        for (text, want) in [
            ("", NetworkMode::Bridge),
            ("bridge", NetworkMode::Bridge),
            ("host", NetworkMode::Host),
            ("none", NetworkMode::None),
        ] {
            let mut i = info("img");
            i.network = text.into();
            assert_eq!(
                ContainerSpec::from_proto(&i, &ports()).unwrap().network,
                want,
                "{text}"
            );
        }
        // Network names are case-sensitive, as Docker's are.
        for bad in ["overlay", "HOST"] {
            let mut i = info("img");
            i.network = bad.into();
            assert_eq!(
                err(&i),
                format!(
                    "container network {bad:?} is not one of bridge, host, none \
                     (network names are case-sensitive, as in Docker)"
                )
            );
        }
    }

    #[test]
    fn port_mappings_resolve_host_ports() {
        let mut i = info("img");
        i.port_mappings = vec![
            mapping(80, 0, ""),
            mapping(443, 31000, "TCP"),
            mapping(53, 0, "udp"),
        ];
        let spec = ContainerSpec::from_proto(&i, &ports()).unwrap();
        assert_eq!(
            spec.ports,
            vec![
                // 31000 is named explicitly, so the automatic ones take the
                // next unused ports in ascending order.
                PortBinding {
                    host_port: 31001,
                    container_port: 80,
                    protocol: Protocol::Tcp
                },
                PortBinding {
                    host_port: 31000,
                    container_port: 443,
                    protocol: Protocol::Tcp
                },
                PortBinding {
                    host_port: 31005,
                    container_port: 53,
                    protocol: Protocol::Udp
                },
            ]
        );
    }

    #[test]
    fn port_mapping_rules() {
        let with = |m: Vec<pb::PortMapping>| {
            let mut i = info("img");
            i.port_mappings = m;
            i
        };
        assert_eq!(
            err(&with(vec![mapping(0, 0, "")])),
            "container port_mappings[0] 0:0 is out of range (ports are 1-65535; host port 0 picks one)"
        );
        assert_eq!(
            err(&with(vec![mapping(80, 0, ""), mapping(70000, 0, "")])),
            "container port_mappings[1] 0:70000 is out of range (ports are 1-65535; host port 0 picks one)"
        );
        assert_eq!(
            err(&with(vec![mapping(80, 0, "sctp")])),
            r#"container port_mappings[0] protocol "sctp" is not tcp or udp"#
        );
        assert_eq!(
            err(&with(vec![mapping(80, 31002, "")])),
            "port_mappings[0]: host port 31002 is not one of the task's ports [31000-31001,31005-31005]"
        );
        assert_eq!(
            err(&with(vec![mapping(80, 99999, "")])),
            "container port_mappings[0] 99999:80 is out of range (ports are 1-65535; host port 0 picks one)"
        );
        assert_eq!(
            err(&with(vec![
                mapping(80, 31000, ""),
                mapping(81, 31000, "udp")
            ])),
            "port_mappings[1]: host port 31000 is mapped twice"
        );
        assert_eq!(
            err(&with(vec![
                mapping(80, 0, ""),
                mapping(81, 0, ""),
                mapping(82, 0, ""),
                mapping(83, 0, ""),
            ])),
            "4 port mappings but the task has only 3 ports in its resources"
        );
        let e = ContainerSpec::from_proto(&with(vec![mapping(80, 0, "")]), &PortRanges::new())
            .unwrap_err();
        assert_eq!(
            e,
            "1 port mapping but the task has only 0 ports in its resources"
        );
        let e = ContainerSpec::from_proto(
            &with(vec![mapping(80, 31000, "")]),
            &PortRanges::range(31000, 31000),
        )
        .unwrap();
        assert_eq!(e.ports[0].host_port, 31000);
    }

    #[test]
    fn port_mappings_need_the_bridge_network() {
        for net in ["host", "none"] {
            let mut i = info("img");
            i.network = net.into();
            i.port_mappings = vec![mapping(80, 0, "")];
            let e = err(&i);
            assert!(
                e.starts_with("port mappings need the bridge network"),
                "{e}"
            );
        }
    }

    #[test]
    fn volume_rules() {
        let with = |v: Vec<pb::Volume>| {
            let mut i = info("img");
            i.volumes = v;
            i
        };
        let spec =
            ContainerSpec::from_proto(&with(vec![volume("/srv/data", "/data", true)]), &ports())
                .unwrap();
        assert_eq!(
            spec.volumes,
            vec![VolumeSpec {
                host_path: "/srv/data".into(),
                container_path: "/data".into(),
                read_only: true,
            }]
        );
        assert_eq!(
            err(&with(vec![volume("srv", "/data", false)])),
            r#"volumes[0]: host path "srv" is not absolute; a volume needs absolute paths on both sides"#
        );
        assert_eq!(
            err(&with(vec![volume("/srv", "", false)])),
            r#"volumes[0]: container path "" is not absolute; a volume needs absolute paths on both sides"#
        );
        assert_eq!(
            err(&with(vec![volume("/srv\0x", "/data", false)])),
            r#"volumes[0]: host path "/srv\0x" contains a NUL byte"#
        );
        assert_eq!(
            err(&with(vec![volume("/srv", "/da:ta", false)])),
            r#"volumes[0]: container path "/da:ta" contains ':', which Docker's bind syntax cannot express"#
        );
        assert_eq!(
            err(&with(vec![volume("/srv", "/data/../etc", false)])),
            r#"volumes[0]: container path "/data/../etc" must not contain "..""#
        );
        for sandbox in [
            "/mnt/berth/sandbox",
            "/mnt/berth/sandbox/",
            "/mnt//berth/sandbox",
        ] {
            let e = err(&with(vec![volume("/srv", sandbox, false)]));
            assert!(
                e.ends_with("is where the task's sandbox is mounted"),
                "{sandbox}: {e}"
            );
        }
        assert_eq!(
            err(&with(vec![
                volume("/a", "/data", false),
                volume("/b", "/data/", false)
            ])),
            r#"volumes[1]: container path "/data/" is mounted twice"#
        );
        // Inside the sandbox mount is fine.
        assert!(
            ContainerSpec::from_proto(
                &with(vec![volume("/srv", "/mnt/berth/sandbox/data", false)]),
                &ports()
            )
            .is_ok()
        );
    }

    #[test]
    fn user_rules() {
        let mut i = info("img");
        i.user = "1000:1000".into();
        assert_eq!(
            ContainerSpec::from_proto(&i, &ports()).unwrap().user,
            "1000:1000"
        );
        for bad in ["nobody x", "no\0body"] {
            i.user = bad.into();
            assert_eq!(
                err(&i),
                format!("container user {bad:?} must not contain whitespace or control characters")
            );
        }
    }
}
