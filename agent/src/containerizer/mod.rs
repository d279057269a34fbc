//! Containerizers: how a task's process is started, watched and stopped.
//!
//! Modelled on Mesos's `Containerizer` (`launch`, `wait`, `destroy`,
//! `recover`). The trait is object-safe (boxed futures), so the agent holds
//! an `Arc<dyn Containerizer>` and a Docker implementation can be added next
//! to [`process::ProcessContainerizer`] without touching the agent.

pub mod process;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use berth_scheduler_core::Resources;

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
    /// Run directly; `argv[0]` is looked up in `PATH`. Never empty.
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
    /// The sandbox directory (absolute). If it exists it is emptied first:
    /// a relaunched task id starts with a clean sandbox.
    pub sandbox: PathBuf,
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
