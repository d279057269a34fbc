//! The Docker containerizer: each task is a Docker container, created and
//! watched through the Docker Engine API (bollard).
//!
//! - Naming and ownership: the container of berth container `<id>` is named
//!   `berth-<id>` and labelled `berth.owner` (a string unique to this agent
//!   on this machine: the agent passes its work directory), `berth.agent_id`,
//!   `berth.framework_id`, `berth.task_id` and `berth.container_id`. Recovery
//!   finds containers by name and removes orphans by the owner label;
//!   containers without this agent's owner label are never touched.
//! - Sandbox: prepared exactly as by the process containerizer (removed and
//!   recreated, with `stdout` and `stderr` files), bind-mounted at
//!   [`CONTAINER_SANDBOX`], which is the working directory and
//!   `BERTH_SANDBOX`.
//! - Environment: the task's variables and the `BERTH_*` variables; `PATH`
//!   and `HOME` come from the image unless the task sets them.
//! - Limits: `cpus` becomes `NanoCpus`, `mem` the memory limit with no swap
//!   on top (so a task over its limit is OOM-killed, reported as
//!   [`Termination::OutOfMemory`]).
//! - Processes: Docker's init (`--init`) is PID 1, so a task's main process
//!   gets SIGTERM's default action and zombies are reaped. The exit status
//!   is the container's exit code: a task killed by signal `n` is reported as
//!   `Exited(128 + n)`.
//! - Logs: a follower task streams the container's log (json-file driver)
//!   into the sandbox's `stdout` and `stderr`, and records the timestamp of
//!   the last line written in `.berth-log-since`, so the follower of a
//!   re-adopted container resumes without duplicating lines. `wait` resolves
//!   only after the follower has written the container's last output. The
//!   task's masked values are replaced as the follower writes (a streaming
//!   masker per stream), so the sandbox files never hold them. Docker's own
//!   log of the container holds the raw output until the container is
//!   removed, after the task ends. A value can only be split across Docker
//!   messages inside a line longer than Docker's 16 KiB message: if the
//!   agent stops right then, the few bytes the masker held back are lost,
//!   never written unmasked.
//! - Timeouts: every Docker call is bounded by the `call_timeout` given to
//!   [`DockerContainerizer::connect`] ([`ContainerError::DaemonTimeout`]),
//!   except the long ones: waiting for an exit, following logs, and pulling
//!   an image (bounded by [`DockerContainerizer::with_pull_timeout`]).
//! - Services: a task with service containers gets a network of its own
//!   with them on it, removed with the task (see `services.rs`).
//! - Also: `recover` re-adopts this agent's containers, `exec` runs a
//!   command health check inside a container.
//!
//! Its tests need a Docker daemon and the local test image; without a
//! daemon they skip, or fail when `CI` is set (see `tests.rs`).

use std::collections::{HashMap, HashSet};
use std::ffi::OsStr;
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use bollard::Docker;
use bollard::container::LogOutput;
use bollard::errors::Error as DockerError;
use bollard::exec::{StartExecOptions, StartExecResults};
use bollard::models::{
    ContainerCreateBody, ContainerState, ContainerStateStatusEnum, ExecConfig, HostConfig, Mount,
    MountType, PortMap,
};
use bollard::query_parameters::{
    CreateContainerOptionsBuilder, CreateImageOptionsBuilder, KillContainerOptionsBuilder,
    ListContainersOptionsBuilder, LogsOptionsBuilder, RemoveContainerOptionsBuilder,
    WaitContainerOptionsBuilder,
};
use futures::StreamExt;
use tokio::io::AsyncWriteExt;
use tokio::sync::watch;
use tokio::task::{AbortHandle, JoinHandle};

use super::process::task_environment;
use super::{
    BoxFuture, CONTAINER_SANDBOX, Command, ContainerId, ContainerSpec, Containerizer, LaunchSpec,
    Launched, NetworkMode, RecoverRecord, Termination, prepare_sandbox, wait_exit,
};
use berth_proto::mask::Masker;

use crate::error::ContainerError;

mod services;
use services::remove_task_services;
pub use services::{LABEL_SERVICE, LABEL_SERVICES, network_name, service_container_name};

/// Label holding the owner (the agent's unique string) of a container.
pub const LABEL_OWNER: &str = "berth.owner";
/// Label holding the agent id.
pub const LABEL_AGENT_ID: &str = "berth.agent_id";
/// Label holding the framework id.
pub const LABEL_FRAMEWORK_ID: &str = "berth.framework_id";
/// Label holding the task id.
pub const LABEL_TASK_ID: &str = "berth.task_id";
/// Label holding the berth [`ContainerId`].
pub const LABEL_CONTAINER_ID: &str = "berth.container_id";
/// Sandbox file recording the timestamp of the last log line written.
pub const LOG_SINCE_FILE: &str = ".berth-log-since";

/// How long pulling a missing image may take, unless configured.
pub const DEFAULT_PULL_TIMEOUT: Duration = Duration::from_secs(300);
/// How long `wait` waits for the log follower to write a container's last
/// output after the container has exited.
const LOG_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);
/// First and longest pause between retries of a failed wait or log stream.
const RETRY_MIN: Duration = Duration::from_millis(200);
const RETRY_MAX: Duration = Duration::from_secs(5);
/// How often `exec` asks whether an exec'd command has its exit status yet.
const EXEC_POLL: Duration = Duration::from_millis(20);

/// Runs tasks as Docker containers. See the module docs.
#[derive(Debug)]
pub struct DockerContainerizer {
    docker: Docker,
    owner: String,
    call_timeout: Duration,
    pull_timeout: Duration,
    /// The host address bridge tasks' ports are published on.
    task_bind: IpAddr,
    containers: Mutex<HashMap<ContainerId, Container>>,
}

/// A container this containerizer watches.
#[derive(Debug)]
struct Container {
    handle: Handle,
    /// The watcher and the log follower, stopped when the container is
    /// forgotten or the containerizer dropped.
    tasks: Vec<AbortHandle>,
    /// Whether the task has service containers (and their network).
    services: bool,
}

#[derive(Debug, Clone)]
struct Handle {
    /// Docker's id of the container.
    docker_id: String,
    exit: watch::Receiver<Option<Termination>>,
}

/// A failed Docker call: no answer in time, or the daemon's error.
#[derive(Debug)]
enum CallError {
    Timeout(Duration),
    Docker(DockerError),
}

impl CallError {
    /// Whether the daemon answered with this HTTP status.
    fn is_status(&self, code: u16) -> bool {
        matches!(self, CallError::Docker(DockerError::DockerResponseServerError { status_code, .. }) if *status_code == code)
    }

    fn is_not_found(&self) -> bool {
        self.is_status(404)
    }
}

impl From<CallError> for ContainerError {
    fn from(e: CallError) -> Self {
        match e {
            CallError::Timeout(d) => ContainerError::DaemonTimeout(d),
            CallError::Docker(e) => ContainerError::Docker(docker_message(&e)),
        }
    }
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout(d) => write!(f, "docker daemon did not answer within {d:?}"),
            CallError::Docker(e) => f.write_str(&docker_message(e)),
        }
    }
}

/// The daemon's own message for a refused request, else bollard's text.
fn docker_message(e: &DockerError) -> String {
    match e {
        DockerError::DockerResponseServerError { message, .. } => message.clone(),
        DockerError::DockerStreamError { error } => error.clone(),
        other => other.to_string(),
    }
}

/// Runs one Docker call, bounded by `limit`.
async fn bounded<T>(
    limit: Duration,
    call: impl Future<Output = Result<T, DockerError>>,
) -> Result<T, CallError> {
    match tokio::time::timeout(limit, call).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(CallError::Docker(e)),
        Err(_) => Err(CallError::Timeout(limit)),
    }
}

/// The Docker name of berth container `id`.
#[must_use]
pub fn container_name(id: &ContainerId) -> String {
    format!("berth-{id}")
}

impl DockerContainerizer {
    /// Connects to the local Docker Engine (`DOCKER_HOST` if it is a
    /// `unix://` socket, else `/var/run/docker.sock`), negotiates the API
    /// version down to the daemon's and pings it. `owner` must be unique to
    /// this agent on this machine (the agent passes its absolute work
    /// directory): containers labelled with it belong to this containerizer.
    ///
    /// # Errors
    ///
    /// [`ContainerError::Invalid`] for an empty owner,
    /// [`ContainerError::Docker`] when the daemon is absent or refuses, and
    /// [`ContainerError::DaemonTimeout`] when it does not answer within
    /// `call_timeout`.
    pub async fn connect(owner: String, call_timeout: Duration) -> Result<Self, ContainerError> {
        if owner.is_empty() {
            return Err(ContainerError::Invalid(
                "the Docker containerizer's owner must not be empty".into(),
            ));
        }
        if call_timeout.is_zero() {
            return Err(ContainerError::Invalid(
                "the Docker call timeout must be positive".into(),
            ));
        }
        let docker = Docker::connect_with_local_defaults()
            .map_err(|e| ContainerError::Docker(docker_message(&e)))?;
        Self::connect_with(docker, owner, call_timeout).await
    }

    /// [`DockerContainerizer::connect`] over a given client.
    async fn connect_with(
        docker: Docker,
        owner: String,
        call_timeout: Duration,
    ) -> Result<Self, ContainerError> {
        // Only a backstop: every call is bounded by our own timeouts.
        let docker =
            docker.with_timeout(call_timeout.max(DEFAULT_PULL_TIMEOUT) + Duration::from_secs(1));
        let docker = bounded(call_timeout, docker.negotiate_version()).await?;
        bounded(call_timeout, docker.ping()).await?;
        Ok(DockerContainerizer {
            docker,
            owner,
            call_timeout,
            pull_timeout: DEFAULT_PULL_TIMEOUT,
            task_bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            containers: Mutex::new(HashMap::new()),
        })
    }

    /// Sets how long pulling a missing image may take (default
    /// [`DEFAULT_PULL_TIMEOUT`]).
    #[must_use]
    pub fn with_pull_timeout(mut self, timeout: Duration) -> Self {
        self.pull_timeout = timeout;
        self
    }

    /// Sets the host address tasks' ports are published on (default
    /// `0.0.0.0`, every interface; the agent passes its
    /// [`crate::AgentConfig::task_bind`]).
    #[must_use]
    pub fn with_task_bind(mut self, ip: IpAddr) -> Self {
        self.task_bind = ip;
        self
    }

    /// The host address tasks' ports are published on.
    #[must_use]
    pub fn task_bind(&self) -> IpAddr {
        self.task_bind
    }

    /// The owner string this containerizer labels its containers with.
    #[must_use]
    pub fn owner(&self) -> &str {
        &self.owner
    }

    /// The Docker client (for tools and tests that inspect containers).
    #[must_use]
    pub fn client(&self) -> &Docker {
        &self.docker
    }

    /// Docker's id of a container this containerizer watches.
    ///
    /// # Errors
    ///
    /// [`ContainerError::UnknownContainer`] for an id it does not watch.
    pub fn docker_id(&self, id: &ContainerId) -> Result<String, ContainerError> {
        Ok(self.get(id)?.docker_id)
    }

    async fn call<T>(
        &self,
        call: impl Future<Output = Result<T, DockerError>>,
    ) -> Result<T, CallError> {
        bounded(self.call_timeout, call).await
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<ContainerId, Container>> {
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn get(&self, id: &ContainerId) -> Result<Handle, ContainerError> {
        self.lock()
            .get(id)
            .map(|c| c.handle.clone())
            .ok_or_else(|| ContainerError::UnknownContainer(id.0.clone()))
    }

    async fn launch_inner(&self, spec: LaunchSpec) -> Result<Launched, ContainerError> {
        let Some(container) = spec.container.as_ref() else {
            return Err(ContainerError::Invalid(
                "the Docker containerizer needs a container image (LaunchSpec.container is None)"
                    .into(),
            ));
        };
        if self.lock().contains_key(&spec.container_id) {
            return Err(ContainerError::DuplicateContainer(spec.container_id.0));
        }
        if !spec.sandbox_prepared {
            prepare_sandbox(&spec.sandbox).await?;
        }
        self.ensure_image(&container.image).await?;
        let mut body = create_body(&spec, container, &self.owner, self.task_bind)?;
        let network = self.start_services(&spec, container).await?;
        if let Some(network) = &network {
            if let Some(host) = body.host_config.as_mut() {
                host.network_mode = Some(network.clone());
            }
            if let Some(labels) = body.labels.as_mut() {
                labels.insert(
                    LABEL_SERVICES.to_owned(),
                    container.services.len().to_string(),
                );
            }
        }
        let removing_services = || async {
            if network.is_some() {
                remove_task_services(
                    &self.docker,
                    &self.owner,
                    &spec.container_id,
                    self.call_timeout,
                )
                .await;
            }
        };
        let name = container_name(&spec.container_id);
        let created = match self
            .call(self.docker.create_container(
                Some(CreateContainerOptionsBuilder::new().name(&name).build()),
                body,
            ))
            .await
        {
            Ok(c) => c,
            Err(e) => {
                removing_services().await;
                return Err(e.into());
            }
        };
        for w in &created.warnings {
            tracing::warn!(container = %spec.container_id, warning = %w, "docker warns about the container");
        }
        if let Err(e) = self
            .call(self.docker.start_container(&created.id, None))
            .await
        {
            self.remove_quietly(&created.id).await;
            removing_services().await;
            return Err(e.into());
        }
        self.adopt(
            &spec.container_id,
            created.id.clone(),
            spec.sandbox.clone(),
            &spec.masked_values,
            network.is_some(),
        );
        tracing::debug!(container = %spec.container_id, docker_id = %created.id, task = %spec.task_id, image = %container.image, "launched");
        Ok(Launched {
            container_id: spec.container_id,
            pid: 0,
            pgid: 0,
        })
    }

    /// Makes sure `image` is present locally, pulling it if it is not.
    async fn ensure_image(&self, image: &str) -> Result<(), ContainerError> {
        let missing = match self.call(self.docker.inspect_image(image)).await {
            Ok(_) => return Ok(()),
            Err(e) if e.is_not_found() => e.to_string(),
            Err(e) => return Err(e.into()),
        };
        let reference = pull_reference(image);
        tracing::info!(image = %reference, "image not present; pulling it");
        let pull = async {
            let options = CreateImageOptionsBuilder::new()
                .from_image(&reference)
                .build();
            let mut progress = self.docker.create_image(Some(options), None, None);
            while let Some(item) = progress.next().await {
                item?;
            }
            Ok::<(), DockerError>(())
        };
        match tokio::time::timeout(self.pull_timeout, pull).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => Err(ContainerError::Docker(format!(
                "image {image} is not available ({missing}) and pulling it failed: {}",
                docker_message(&e)
            ))),
            Err(_) => Err(ContainerError::Docker(format!(
                "image {image} is not available ({missing}) and pulling it did not finish within {:?}",
                self.pull_timeout
            ))),
        }
    }

    /// Starts the log follower and the exit watcher of a container and
    /// remembers it; the watcher removes its services (if it has some)
    /// once it exits.
    fn adopt(
        &self,
        id: &ContainerId,
        docker_id: String,
        sandbox: PathBuf,
        masked: &[String],
        services: bool,
    ) {
        let (tx, rx) = watch::channel(None);
        let follower = tokio::spawn(follow_logs(
            self.docker.clone(),
            docker_id.clone(),
            sandbox,
            Masker::new(masked),
            self.call_timeout,
            id.clone(),
        ));
        let follower_abort = follower.abort_handle();
        let watcher = tokio::spawn(watch_exit(
            self.docker.clone(),
            docker_id.clone(),
            self.call_timeout,
            follower,
            tx,
            id.clone(),
            services.then(|| self.owner.clone()),
        ));
        let old = self.lock().insert(
            id.clone(),
            Container {
                handle: Handle {
                    docker_id,
                    exit: rx,
                },
                tasks: vec![follower_abort, watcher.abort_handle()],
                services,
            },
        );
        if let Some(old) = old {
            old.tasks.iter().for_each(AbortHandle::abort);
        }
    }

    /// Sends `signal` to the container's main process; a container that is
    /// not running or gone is fine.
    async fn kill(&self, docker_id: &str, signal: &str) -> Result<(), ContainerError> {
        let options = KillContainerOptionsBuilder::new().signal(signal).build();
        match self
            .call(self.docker.kill_container(docker_id, Some(options)))
            .await
        {
            Ok(()) => Ok(()),
            Err(e) if e.is_status(409) || e.is_not_found() => Ok(()),
            Err(e) => Err(e.into()),
        }
    }

    /// Force-removes a container (killing it if it runs); failures are
    /// logged.
    async fn remove_quietly(&self, docker_id: &str) {
        let options = RemoveContainerOptionsBuilder::new().force(true).build();
        match self
            .call(self.docker.remove_container(docker_id, Some(options)))
            .await
        {
            Ok(()) => {}
            Err(e) if e.is_not_found() => {}
            Err(e) => tracing::warn!(docker_id, error = %e, "removing container failed"),
        }
    }

    async fn destroy_inner(
        &self,
        id: &ContainerId,
        grace: Duration,
    ) -> Result<Termination, ContainerError> {
        let c = self.get(id)?;
        if let Some(t) = *c.exit.borrow() {
            // Docker kills what is left when the main process ends.
            return Ok(t);
        }
        self.kill(&c.docker_id, "SIGTERM").await?;
        if let Ok(t) = tokio::time::timeout(grace, wait_exit(c.exit.clone())).await {
            return Ok(t);
        }
        tracing::info!(container = %id, grace_ms = grace.as_millis(), "grace period over; sending SIGKILL");
        self.kill(&c.docker_id, "SIGKILL").await?;
        tokio::time::timeout(
            self.call_timeout + LOG_DRAIN_TIMEOUT,
            wait_exit(c.exit.clone()),
        )
        .await
        .map_err(|_| ContainerError::DaemonTimeout(self.call_timeout))
    }

    async fn cleanup_inner(&self, id: &ContainerId) {
        let Some(c) = self.lock().remove(id) else {
            return;
        };
        self.remove_quietly(&c.handle.docker_id).await;
        c.tasks.iter().for_each(AbortHandle::abort);
        if c.services {
            remove_task_services(&self.docker, &self.owner, id, self.call_timeout).await;
        }
    }

    async fn recover_inner(
        &self,
        records: Vec<RecoverRecord>,
    ) -> Result<Vec<ContainerId>, ContainerError> {
        let known: HashSet<String> = records.iter().map(|r| r.container_id.0.clone()).collect();
        let mut adopted = Vec::new();
        for r in records {
            if self.lock().contains_key(&r.container_id) {
                adopted.push(r.container_id);
                continue;
            }
            let name = container_name(&r.container_id);
            let info = match self.call(self.docker.inspect_container(&name, None)).await {
                Ok(info) => info,
                Err(e) if e.is_not_found() => {
                    tracing::info!(container = %r.container_id, task = %r.task_id, "not re-adopting: docker container is gone");
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let labels = info
                .config
                .as_ref()
                .and_then(|c| c.labels.as_ref())
                .cloned()
                .unwrap_or_default();
            if labels.get(LABEL_OWNER) != Some(&self.owner) {
                tracing::warn!(container = %r.container_id, docker_name = %name, "not re-adopting: the docker container does not carry this agent's owner label");
                continue;
            }
            let Some(docker_id) = info.id else {
                tracing::warn!(container = %r.container_id, "not re-adopting: docker reported no container id");
                continue;
            };
            if matches!(observe(info.state.as_ref()), Observed::Created) {
                tracing::info!(container = %r.container_id, docker_id, "removing a container that never started");
                self.remove_quietly(&docker_id).await;
                continue;
            }
            tracing::info!(container = %r.container_id, docker_id, task = %r.task_id, "re-adopted container");
            self.adopt(
                &r.container_id,
                docker_id,
                r.sandbox.clone(),
                &r.masked_values,
                labels.contains_key(LABEL_SERVICES),
            );
            adopted.push(r.container_id);
        }
        self.remove_orphans(&known).await?;
        let watched: HashSet<String> = self.lock().keys().map(|k| k.0.clone()).collect();
        self.remove_orphan_services(&watched).await?;
        Ok(adopted)
    }

    /// Removes every container with this agent's owner label whose berth id
    /// is not in `known`.
    async fn remove_orphans(&self, known: &HashSet<String>) -> Result<(), ContainerError> {
        let filters = HashMap::from([("label", vec![format!("{LABEL_OWNER}={}", self.owner)])]);
        let options = ListContainersOptionsBuilder::new()
            .all(true)
            .filters(&filters)
            .build();
        let list = self
            .call(self.docker.list_containers(Some(options)))
            .await?;
        for summary in list {
            let labels = summary.labels.unwrap_or_default();
            // The daemon filtered on the label already; never touch another
            // owner's container even if it did not.
            if labels.get(LABEL_OWNER) != Some(&self.owner) {
                continue;
            }
            let berth_id = labels.get(LABEL_CONTAINER_ID);
            if berth_id.is_some_and(|b| known.contains(b)) {
                continue;
            }
            let Some(docker_id) = summary.id else {
                continue;
            };
            tracing::warn!(docker_id, container = ?berth_id, task = ?labels.get(LABEL_TASK_ID), "removing orphan container: not among the recovered tasks");
            self.remove_quietly(&docker_id).await;
        }
        Ok(())
    }

    async fn exec_inner(
        &self,
        id: &ContainerId,
        command: Command,
        timeout: Duration,
    ) -> Result<i32, ContainerError> {
        let c = self.get(id)?;
        let config = ExecConfig {
            cmd: Some(argv(&command)?),
            attach_stdout: Some(true),
            attach_stderr: Some(true),
            working_dir: Some(CONTAINER_SANDBOX.to_owned()),
            ..Default::default()
        };
        let exec = self
            .call(self.docker.create_exec(&c.docker_id, config))
            .await?;
        let deadline = tokio::time::Instant::now() + timeout;
        let run = async {
            let started = self
                .call(self.docker.start_exec(
                    &exec.id,
                    Some(StartExecOptions {
                        detach: false,
                        tty: false,
                        output_capacity: None,
                    }),
                ))
                .await?;
            if let StartExecResults::Attached { mut output, input } = started {
                // The output is not kept; its end means the command ended.
                while let Some(item) = output.next().await {
                    if item.is_err() {
                        break;
                    }
                }
                drop(input);
            }
            // The exit status follows the end of the output shortly.
            loop {
                let info = self.call(self.docker.inspect_exec(&exec.id)).await?;
                if info.running != Some(true) {
                    let code = info.exit_code.ok_or_else(|| {
                        ContainerError::Docker(format!(
                            "exec {} ended without an exit code",
                            exec.id
                        ))
                    })?;
                    return i32::try_from(code).map_err(|_| {
                        ContainerError::Docker(format!("exec exit code {code} out of range"))
                    });
                }
                tokio::time::sleep(EXEC_POLL).await;
            }
        };
        match tokio::time::timeout_at(deadline, run).await {
            Ok(r) => r,
            Err(_) => {
                self.kill_exec(&exec.id, &c.docker_id).await;
                Err(ContainerError::Timeout(timeout))
            }
        }
    }

    /// Best effort: SIGKILLs a timed-out exec'd process. Docker has no API
    /// for it, so this works when the daemon runs on this host and in our
    /// pid namespace: the pid is signalled only if `/proc/<pid>/cgroup`
    /// names the container.
    async fn kill_exec(&self, exec_id: &str, docker_id: &str) {
        let Ok(info) = self.call(self.docker.inspect_exec(exec_id)).await else {
            return;
        };
        let Some(pid) = info
            .pid
            .and_then(|p| i32::try_from(p).ok())
            .filter(|p| *p > 1)
        else {
            return;
        };
        if info.running != Some(true) {
            return;
        }
        let in_container = tokio::fs::read_to_string(format!("/proc/{pid}/cgroup"))
            .await
            .is_ok_and(|cg| cg.contains(docker_id));
        if !in_container {
            tracing::warn!(
                exec_id,
                pid,
                "cannot kill the timed-out exec: its process is not visible here"
            );
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

impl Drop for DockerContainerizer {
    fn drop(&mut self) {
        // The containers keep running (an agent restart re-adopts them);
        // only our watchers and log followers stop.
        for c in self.lock().values() {
            c.tasks.iter().for_each(AbortHandle::abort);
        }
    }
}

impl Containerizer for DockerContainerizer {
    fn launch(&self, spec: LaunchSpec) -> BoxFuture<'_, Result<Launched, ContainerError>> {
        Box::pin(self.launch_inner(spec))
    }

    fn wait<'a>(
        &'a self,
        id: &'a ContainerId,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
        Box::pin(async move {
            let c = self.get(id)?;
            Ok(wait_exit(c.exit).await)
        })
    }

    fn destroy<'a>(
        &'a self,
        id: &'a ContainerId,
        grace: Duration,
    ) -> BoxFuture<'a, Result<Termination, ContainerError>> {
        Box::pin(self.destroy_inner(id, grace))
    }

    fn cleanup<'a>(&'a self, id: &'a ContainerId) -> BoxFuture<'a, ()> {
        Box::pin(self.cleanup_inner(id))
    }

    fn recover(
        &self,
        records: Vec<RecoverRecord>,
    ) -> BoxFuture<'_, Result<Vec<ContainerId>, ContainerError>> {
        Box::pin(self.recover_inner(records))
    }

    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        command: Command,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<i32, ContainerError>> {
        Box::pin(self.exec_inner(id, command, timeout))
    }
}

/// The reference to pull for `image`: with `:latest` added when it names
/// neither a tag nor a digest (the API would pull every tag otherwise).
fn pull_reference(image: &str) -> String {
    let last = image.rsplit('/').next().unwrap_or(image);
    if image.contains('@') || last.contains(':') {
        image.to_owned()
    } else {
        format!("{image}:latest")
    }
}

/// The container's command line.
fn argv(command: &Command) -> Result<Vec<String>, ContainerError> {
    match command {
        Command::Shell(s) => Ok(vec!["/bin/sh".into(), "-c".into(), s.clone()]),
        Command::Argv(v) if v.is_empty() => Err(ContainerError::Invalid("empty argv".into())),
        Command::Argv(v) => Ok(v.clone()),
    }
}

/// `KEY=value` pairs: the task's variables and the `BERTH_*` ones, with
/// `BERTH_SANDBOX` the path inside the container; the agent's `PATH` and
/// `HOME` are left out (the image's stand) unless the task sets them.
fn container_environment(spec: &LaunchSpec) -> Vec<String> {
    let mut env = task_environment(spec);
    for key in ["PATH", "HOME"] {
        if !spec.env.contains_key(key) {
            env.remove(OsStr::new(key));
        }
    }
    env.insert("BERTH_SANDBOX".into(), CONTAINER_SANDBOX.into());
    env.iter()
        .map(|(k, v)| format!("{}={}", k.to_string_lossy(), v.to_string_lossy()))
        .collect()
}

/// The create request for a task, its ports published on host address
/// `bind`.
fn create_body(
    spec: &LaunchSpec,
    container: &ContainerSpec,
    owner: &str,
    bind: IpAddr,
) -> Result<ContainerCreateBody, ContainerError> {
    let labels = HashMap::from([
        (LABEL_OWNER.to_owned(), owner.to_owned()),
        (LABEL_AGENT_ID.to_owned(), spec.agent_id.clone()),
        (LABEL_FRAMEWORK_ID.to_owned(), spec.framework_id.clone()),
        (LABEL_TASK_ID.to_owned(), spec.task_id.clone()),
        (LABEL_CONTAINER_ID.to_owned(), spec.container_id.0.clone()),
    ]);
    let mut exposed: Vec<String> = Vec::new();
    let mut bindings = PortMap::new();
    if container.network == NetworkMode::Bridge {
        for p in &container.ports {
            let key = format!("{}/{}", p.container_port, p.protocol.as_str());
            if !exposed.contains(&key) {
                exposed.push(key.clone());
            }
            bindings
                .entry(key)
                .or_insert_with(|| Some(Vec::new()))
                .get_or_insert_with(Vec::new)
                .push(bollard::models::PortBinding {
                    host_ip: Some(bind.to_string()),
                    host_port: Some(p.host_port.to_string()),
                });
        }
    }
    let cpus_milli = u64::from(spec.resources.cpus);
    let mem_milli_mib = u64::from(spec.resources.mem);
    let memory = (mem_milli_mib > 0)
        .then(|| i64::try_from(u128::from(mem_milli_mib) * 1024 * 1024 / 1000).unwrap_or(i64::MAX));
    let nano_cpus = (cpus_milli > 0)
        .then(|| i64::try_from(u128::from(cpus_milli) * 1_000_000).unwrap_or(i64::MAX));
    let binds: Vec<String> = container
        .volumes
        .iter()
        .map(|v| {
            format!(
                "{}:{}:{}",
                v.host_path.display(),
                v.container_path.display(),
                if v.read_only { "ro" } else { "rw" }
            )
        })
        .collect();
    let host_config = HostConfig {
        // The sandbox path may contain ':' (task ids may), which the
        // `Binds` syntax cannot express; a mount can.
        mounts: Some(vec![Mount {
            target: Some(CONTAINER_SANDBOX.to_owned()),
            source: Some(spec.sandbox.display().to_string()),
            typ: Some(MountType::BIND),
            read_only: Some(false),
            ..Default::default()
        }]),
        binds: (!binds.is_empty()).then_some(binds),
        nano_cpus,
        memory,
        // No swap on top of the memory limit, so exceeding it OOM-kills.
        memory_swap: memory,
        port_bindings: (!bindings.is_empty()).then_some(bindings),
        network_mode: Some(
            match container.network {
                NetworkMode::Bridge => "bridge",
                NetworkMode::Host => "host",
                NetworkMode::None => "none",
            }
            .to_owned(),
        ),
        init: Some(true),
        ..Default::default()
    };
    Ok(ContainerCreateBody {
        image: Some(container.image.clone()),
        // No command: the image's own CMD runs (Marathon's Docker apps
        // without `cmd` or `args`).
        cmd: match &spec.command {
            Command::Argv(v) if v.is_empty() => None,
            command => Some(argv(command)?),
        },
        entrypoint: (!container.entrypoint.is_empty()).then(|| container.entrypoint.clone()),
        env: Some(container_environment(spec)),
        working_dir: Some(CONTAINER_SANDBOX.to_owned()),
        user: (!container.user.is_empty()).then(|| container.user.clone()),
        labels: Some(labels),
        exposed_ports: (!exposed.is_empty()).then_some(exposed),
        attach_stdin: Some(false),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        tty: Some(false),
        host_config: Some(host_config),
        ..Default::default()
    })
}

/// What Docker says about a container.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Observed {
    /// Created but never started.
    Created,
    /// Running (or paused, or restarting).
    Running,
    /// Its main process has ended.
    Exited(Termination),
}

fn observe(state: Option<&ContainerState>) -> Observed {
    let Some(state) = state else {
        return Observed::Exited(Termination::Unknown);
    };
    match state.status {
        Some(ContainerStateStatusEnum::CREATED) => Observed::Created,
        Some(
            ContainerStateStatusEnum::RUNNING
            | ContainerStateStatusEnum::PAUSED
            | ContainerStateStatusEnum::RESTARTING,
        ) => Observed::Running,
        _ if state.running == Some(true) => Observed::Running,
        _ => {
            let code = state.exit_code.and_then(|c| i32::try_from(c).ok());
            Observed::Exited(match (code, state.oom_killed) {
                (Some(c), Some(true)) => Termination::OutOfMemory(c),
                (Some(c), _) => Termination::Exited(c),
                (None, _) => Termination::Unknown,
            })
        }
    }
}

/// Waits until the container has exited (or is gone) and returns how it
/// ended. Daemon failures are retried: the container outlives them.
async fn wait_for_exit(docker: &Docker, docker_id: &str, call_timeout: Duration) -> Termination {
    let mut backoff = RETRY_MIN;
    loop {
        let options = WaitContainerOptionsBuilder::new()
            .condition("not-running")
            .build();
        let mut waited = docker.wait_container(docker_id, Some(options));
        match waited.next().await {
            // bollard reports a non-zero exit as an error.
            Some(Ok(_) | Err(DockerError::DockerContainerWaitError { .. })) | None => {}
            Some(Err(e)) => {
                tracing::debug!(docker_id, error = %docker_message(&e), "waiting for container failed");
            }
        }
        match bounded(call_timeout, docker.inspect_container(docker_id, None)).await {
            Ok(info) => match observe(info.state.as_ref()) {
                Observed::Exited(t) => return t,
                Observed::Running | Observed::Created => {}
            },
            Err(e) if e.is_not_found() => {
                tracing::warn!(docker_id, "container vanished before its exit was seen");
                return Termination::Unknown;
            }
            Err(e) => {
                tracing::warn!(docker_id, error = %e, "inspecting container failed; retrying")
            }
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
}

/// The exit watcher of one container: publishes its termination once the
/// log follower has written its last output.
async fn watch_exit(
    docker: Docker,
    docker_id: String,
    call_timeout: Duration,
    follower: JoinHandle<()>,
    tx: watch::Sender<Option<Termination>>,
    id: ContainerId,
    services_owner: Option<String>,
) {
    let term = wait_for_exit(&docker, &docker_id, call_timeout).await;
    // The services go with the task, before its end is published.
    if let Some(owner) = services_owner {
        remove_task_services(&docker, &owner, &id, call_timeout).await;
    }
    if tokio::time::timeout(LOG_DRAIN_TIMEOUT, follower)
        .await
        .is_err()
    {
        tracing::warn!(container = %id, "log follower did not finish after the container exited");
    }
    tracing::debug!(container = %id, termination = %term, "container exited");
    tx.send_replace(Some(term));
}

/// A point in time as Docker's log timestamps give it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct LogTime {
    /// Seconds since the Unix epoch.
    secs: i64,
    /// Nanoseconds within the second.
    nanos: u32,
}

/// Parses an RFC 3339 timestamp (`2024-05-01T12:00:00.123456789Z`, any
/// number of fraction digits, `Z` or a `±HH:MM` offset).
fn parse_rfc3339(s: &str) -> Option<LogTime> {
    fn num(s: &str, at: usize, len: usize) -> Option<i64> {
        let d = s.get(at..at + len)?;
        if d.bytes().all(|b| b.is_ascii_digit()) {
            d.parse().ok()
        } else {
            None
        }
    }
    let b = s.as_bytes();
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || !matches!(b[10], b'T' | b't' | b' ')
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (year, month, day) = (num(s, 0, 4)?, num(s, 5, 2)?, num(s, 8, 2)?);
    let (hour, minute, second) = (num(s, 11, 2)?, num(s, 14, 2)?, num(s, 17, 2)?);
    if !(1..=12).contains(&month)
        || !(1..=31).contains(&day)
        || hour > 23
        || minute > 59
        || second > 60
    {
        return None;
    }
    let mut rest = &s[19..];
    let mut nanos: u32 = 0;
    if let Some(frac) = rest.strip_prefix('.') {
        let digits = frac.bytes().take_while(u8::is_ascii_digit).count();
        if digits == 0 {
            return None;
        }
        for (i, d) in frac.bytes().take(digits).enumerate() {
            if i < 9 {
                nanos += u32::from(d - b'0') * 10u32.pow(8 - u32::try_from(i).ok()?);
            }
        }
        rest = &frac[digits..];
    }
    let offset = match rest {
        "Z" | "z" => 0,
        _ => {
            let sign = match rest.as_bytes().first()? {
                b'+' => 1,
                b'-' => -1,
                _ => return None,
            };
            if rest.len() != 6 || rest.as_bytes()[3] != b':' {
                return None;
            }
            sign * (num(rest, 1, 2)? * 3600 + num(rest, 4, 2)? * 60)
        }
    };
    let days = days_from_civil(year, month, day);
    Some(LogTime {
        secs: days * 86_400 + hour * 3600 + minute * 60 + second - offset,
        nanos,
    })
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's
/// algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// Splits a timestamped log message into its time (and its text form) and
/// its content.
fn split_timestamp(message: &[u8]) -> Option<(LogTime, &str, &[u8])> {
    let space = message.iter().position(|&b| b == b' ')?;
    let raw = std::str::from_utf8(&message[..space]).ok()?;
    let t = parse_rfc3339(raw)?;
    Some((t, raw, &message[space + 1..]))
}

/// Appends a container's log to its sandbox files. See [`follow_logs`].
#[derive(Debug)]
struct LogFollower {
    docker: Docker,
    docker_id: String,
    sandbox: PathBuf,
    stdout: tokio::fs::File,
    stderr: tokio::fs::File,
    /// The task's masked values, one masker per stream.
    out_mask: Masker,
    err_mask: Masker,
    /// The timestamp of the last line written, and as Docker wrote it.
    last: Option<(LogTime, String)>,
}

/// Why a log pass stopped.
#[derive(Debug)]
enum FollowError {
    /// The daemon failed; worth retrying.
    Docker(String),
    /// Writing the sandbox failed; not worth retrying.
    Io(std::io::Error),
}

impl LogFollower {
    async fn open(
        docker: Docker,
        docker_id: String,
        sandbox: PathBuf,
        masker: Masker,
    ) -> std::io::Result<Self> {
        let mut append = tokio::fs::OpenOptions::new();
        append.create(true).append(true);
        let stdout = append.open(sandbox.join("stdout")).await?;
        let stderr = append.open(sandbox.join("stderr")).await?;
        let last = match tokio::fs::read_to_string(sandbox.join(LOG_SINCE_FILE)).await {
            Ok(s) => {
                let raw = s.trim().to_owned();
                let parsed = parse_rfc3339(&raw);
                if parsed.is_none() {
                    tracing::warn!(docker_id, since = %raw, "ignoring unreadable log position");
                }
                parsed.map(|t| (t, raw))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => return Err(e),
        };
        Ok(LogFollower {
            docker,
            docker_id,
            sandbox,
            stdout,
            stderr,
            out_mask: masker.clone(),
            err_mask: masker,
            last,
        })
    }

    /// Streams the log once, from the recorded position; `follow` keeps
    /// the stream open until the container stops.
    async fn pass(&mut self, follow: bool) -> Result<(), FollowError> {
        let since = self
            .last
            .as_ref()
            .and_then(|(t, _)| i32::try_from(t.secs).ok())
            .unwrap_or(0);
        let options = LogsOptionsBuilder::new()
            .follow(follow)
            .stdout(true)
            .stderr(true)
            .timestamps(true)
            .since(since)
            .build();
        let mut batches = self
            .docker
            .logs(&self.docker_id, Some(options))
            .ready_chunks(256);
        // Lines up to the position recorded before this pass were written
        // by an earlier pass; nothing after it was. Only that position
        // tells a repeated line: within one pass Docker sends each line
        // once, and not in timestamp order across the two streams (each
        // has its own copier, so a stdout line written just after a stderr
        // line can carry an earlier timestamp and follow it in the log).
        let resume = self.last.as_ref().map(|(t, _)| *t);
        while let Some(batch) = batches.next().await {
            let mut out = Vec::new();
            let mut err = Vec::new();
            let mut failed = None;
            let mut newest = None;
            for item in batch {
                let (to_err, message) = match item {
                    Ok(LogOutput::StdOut { message } | LogOutput::Console { message }) => {
                        (false, message)
                    }
                    Ok(LogOutput::StdErr { message }) => (true, message),
                    Ok(LogOutput::StdIn { .. }) => continue,
                    Err(e) => {
                        failed = Some(docker_message(&e));
                        break;
                    }
                };
                let content = match split_timestamp(&message) {
                    Some((t, raw, content)) => {
                        if resume.is_some_and(|last| t <= last) {
                            continue;
                        }
                        let later = newest
                            .as_ref()
                            .or(self.last.as_ref())
                            .is_none_or(|(n, _)| t > *n);
                        if later {
                            newest = Some((t, raw.to_owned()));
                        }
                        content
                    }
                    None => &message[..],
                };
                if to_err {
                    err.extend(self.err_mask.push(content));
                } else {
                    out.extend(self.out_mask.push(content));
                }
            }
            self.write(&out, &err, newest)
                .await
                .map_err(FollowError::Io)?;
            if let Some(e) = failed {
                return Err(FollowError::Docker(e));
            }
        }
        Ok(())
    }

    /// Appends output and then records the position it reached.
    async fn write(
        &mut self,
        out: &[u8],
        err: &[u8],
        newest: Option<(LogTime, String)>,
    ) -> std::io::Result<()> {
        if !out.is_empty() {
            self.stdout.write_all(out).await?;
            self.stdout.flush().await?;
        }
        if !err.is_empty() {
            self.stderr.write_all(err).await?;
            self.stderr.flush().await?;
        }
        if let Some((t, raw)) = newest {
            let tmp = self.sandbox.join(format!("{LOG_SINCE_FILE}.tmp"));
            tokio::fs::write(&tmp, format!("{raw}\n")).await?;
            tokio::fs::rename(&tmp, self.sandbox.join(LOG_SINCE_FILE)).await?;
            self.last = Some((t, raw));
        }
        Ok(())
    }
}

/// The log follower of one container: follows its log into the sandbox
/// until it stops, then reads what is left (a follow stream may end before
/// the last lines). Daemon failures while the container runs are retried
/// from the recorded position.
async fn follow_logs(
    docker: Docker,
    docker_id: String,
    sandbox: PathBuf,
    masker: Masker,
    call_timeout: Duration,
    id: ContainerId,
) {
    let mut f = match LogFollower::open(docker.clone(), docker_id.clone(), sandbox, masker).await {
        Ok(f) => f,
        Err(e) => {
            tracing::error!(container = %id, error = %e, "cannot open the sandbox's log files; not following the container's output");
            return;
        }
    };
    let mut backoff = RETRY_MIN;
    loop {
        match f.pass(true).await {
            Ok(()) => {}
            Err(FollowError::Io(e)) => {
                tracing::error!(container = %id, error = %e, "writing the container's output failed; not following it any more");
                return;
            }
            Err(FollowError::Docker(e)) => {
                tracing::warn!(container = %id, error = %e, "following the container's log failed");
            }
        }
        match bounded(call_timeout, docker.inspect_container(&docker_id, None)).await {
            Ok(info) => match observe(info.state.as_ref()) {
                Observed::Exited(_) => break,
                Observed::Running | Observed::Created => {}
            },
            Err(e) if e.is_not_found() => return,
            Err(e) => tracing::warn!(container = %id, error = %e, "inspecting container failed"),
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(RETRY_MAX);
    }
    match f.pass(false).await {
        Ok(()) => {}
        Err(FollowError::Io(e)) => {
            tracing::error!(container = %id, error = %e, "writing the container's output failed");
            return;
        }
        Err(FollowError::Docker(e)) => {
            tracing::warn!(container = %id, error = %e, "reading the container's last output failed");
        }
    }
    // The end of the output: what the maskers held back (a possible start
    // of a value that never came) is output after all.
    let (out, err) = (f.out_mask.finish(), f.err_mask.finish());
    if let Err(e) = f.write(&out, &err, None).await {
        tracing::error!(container = %id, error = %e, "writing the container's output failed");
    }
}

#[cfg(test)]
mod tests;
