//! The process containerizer: each task is a plain process in its own
//! process group, with its sandbox as working directory.
//!
//! - Parent: a supervisor process of its own with
//!   [`TaskSupervisor::Program`] (it outlives the agent and records the
//!   task's exit status in the sandbox; see [`crate::supervisor`]), or the
//!   agent itself with [`TaskSupervisor::InAgent`].
//! - Sandbox: the directory given in the [`LaunchSpec`]; an existing one (a
//!   task id relaunched after its earlier run was forgotten) is removed and
//!   recreated, so every run starts clean. `stdout` and `stderr` files in it
//!   receive the task's output; stdin is `/dev/null`. A task with masked
//!   values writes into pipes read by its loggers instead
//!   ([`crate::logger`]), and its end is reported once they have written
//!   its last output (its group is killed first: nothing left behind keeps
//!   a pipe open).
//! - Environment: only `PATH` and `HOME` are inherited, then the task's own
//!   variables, then the `BERTH_*` variables (which win).
//! - Kill: SIGTERM to the whole group, SIGKILL to the group after the grace
//!   (and once more after the main process is gone, for stragglers). A
//!   supervised task's group is signalled only while its supervisor lives
//!   (its zombie holds the group's id until then).
//! - Exits: a supervised task's end is read from its supervisor's record
//!   once the supervisor is gone (waited for as a child, polled through
//!   its lock after a restart). The agent's own children are reaped by
//!   tokio; re-adopted unsupervised processes are polled (`waitpid(WNOHANG)`
//!   if they are our children, else `kill(pid, 0)`: their status is
//!   unknown).

use std::collections::{BTreeMap, HashMap};
use std::ffi::OsString;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{WaitPidFlag, WaitStatus, waitpid};
use nix::unistd::Pid;
use tokio::sync::watch;

use crate::logger;
use crate::supervisor::{self, Found, TaskSupervisor};

use super::{
    BoxFuture, Command, ContainerId, Containerizer, LaunchSpec, Launched, RecoverRecord,
    Termination, prepare_sandbox, wait_exit,
};
use crate::error::ContainerError;

/// `PATH` for tasks when the agent itself has none.
const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";
/// How often re-adopted processes and supervisors are checked.
const RECOVER_POLL: Duration = Duration::from_millis(100);

/// Runs tasks as process groups on the host. See the module docs.
#[derive(Debug, Default)]
pub struct ProcessContainerizer {
    containers: Mutex<HashMap<ContainerId, Container>>,
    /// Who is the parent of the tasks.
    supervisor: TaskSupervisor,
}

#[derive(Debug, Clone)]
struct Container {
    pgid: i32,
    exit: watch::Receiver<Option<Termination>>,
    /// Working directory and environment for `exec` (health checks).
    sandbox: PathBuf,
    env: BTreeMap<OsString, OsString>,
    /// Run by a supervisor: signal the group only while it lives.
    supervised: bool,
}

impl Container {
    /// Sends `sig` to the task's group, unless a supervised task's
    /// supervisor is gone (then the group's id may be someone else's, and
    /// the supervisor has killed what was left of the group).
    fn signal(&self, sig: Signal) -> Result<(), ContainerError> {
        if self.supervised {
            match supervisor::alive(&self.sandbox) {
                Ok(true) => {}
                Ok(false) => return Ok(()),
                Err(e) => {
                    return Err(ContainerError::Invalid(format!(
                        "cannot tell whether the task's supervisor lives: {e}"
                    )));
                }
            }
        }
        signal_group(self.pgid, sig)
    }
}

impl ProcessContainerizer {
    /// A containerizer with no containers whose tasks are the agent's own
    /// children ([`TaskSupervisor::InAgent`]).
    #[must_use]
    pub fn new() -> Self {
        Self::default()
    }

    /// A containerizer whose tasks run under `supervisor`.
    #[must_use]
    pub fn with_supervisor(supervisor: TaskSupervisor) -> Self {
        ProcessContainerizer {
            containers: Mutex::default(),
            supervisor,
        }
    }

    fn get(&self, id: &ContainerId) -> Result<Container, ContainerError> {
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
            .cloned()
            .ok_or_else(|| ContainerError::UnknownContainer(id.0.clone()))
    }

    fn insert(&self, id: ContainerId, c: Container) {
        self.containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, c);
    }

    async fn launch_inner(&self, spec: LaunchSpec) -> Result<Launched, ContainerError> {
        if self
            .containers
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(&spec.container_id)
        {
            return Err(ContainerError::DuplicateContainer(spec.container_id.0));
        }
        if let Some(c) = spec.container.as_ref().filter(|c| !c.services.is_empty()) {
            return Err(ContainerError::Invalid(format!(
                "the task has {} service container{} (GitLab CI `services:`), which only the \
                 Docker containerizer runs; the process containerizer runs a task as a host \
                 process, with no network of its own to put services on",
                c.services.len(),
                if c.services.len() == 1 { "" } else { "s" }
            )));
        }
        if !spec.sandbox_prepared {
            prepare_sandbox(&spec.sandbox).await?;
        }
        let (rx, pid, supervised) = match &self.supervisor {
            TaskSupervisor::InAgent => {
                let (rx, pid) = launch_in_agent(&spec)?;
                (rx, pid, false)
            }
            TaskSupervisor::Program { program, args } => {
                let (rx, pid) = launch_supervised(&spec, program, args).await?;
                (rx, pid, true)
            }
        };
        self.insert(
            spec.container_id.clone(),
            Container {
                pgid: pid,
                exit: rx,
                env: task_environment(&spec),
                sandbox: spec.sandbox.clone(),
                supervised,
            },
        );
        tracing::debug!(container = %spec.container_id, pid, supervised, task = %spec.task_id, "launched");
        Ok(Launched {
            container_id: spec.container_id,
            pid,
            pgid: pid,
        })
    }

    async fn destroy_inner(
        &self,
        id: &ContainerId,
        grace: Duration,
    ) -> Result<Termination, ContainerError> {
        let c = self.get(id)?;
        if let Some(t) = *c.exit.borrow() {
            c.signal(Signal::SIGKILL)?;
            return Ok(t);
        }
        c.signal(Signal::SIGTERM)?;
        let term = match tokio::time::timeout(grace, wait_exit(c.exit.clone())).await {
            Ok(t) => t,
            Err(_) => {
                tracing::info!(container = %id, grace_ms = grace.as_millis(), "grace period over; sending SIGKILL");
                c.signal(Signal::SIGKILL)?;
                wait_exit(c.exit.clone()).await
            }
        };
        // Whatever else is left of the group goes too.
        c.signal(Signal::SIGKILL)?;
        Ok(term)
    }

    fn recover_inner(&self, records: Vec<RecoverRecord>) -> Vec<ContainerId> {
        let mut adopted = Vec::new();
        for r in records {
            let found = supervisor::inspect(&r.sandbox, &r.container_id);
            let (tx, rx) = watch::channel(None);
            let supervised = match found {
                Found::Running => {
                    let (sandbox, id) = (r.sandbox.clone(), r.container_id.clone());
                    tokio::spawn(async move {
                        tx.send_replace(Some(supervisor_end(&sandbox, &id).await));
                    });
                    tracing::info!(container = %r.container_id, pid = r.pid, task = %r.task_id, "re-adopted supervised process");
                    true
                }
                Found::Ended(term) => {
                    tx.send_replace(Some(term));
                    tracing::info!(container = %r.container_id, pid = r.pid, task = %r.task_id, %term, "the task ended while the agent was down");
                    true
                }
                Found::Lost(info) => {
                    // The supervisor was killed: the task may run on,
                    // unwatched and not our child. Adopted only if it is
                    // the same process (its start time says so).
                    let same = info.as_ref().is_some_and(|i| {
                        i.task_pid == r.pid
                            && i.task_start.is_some()
                            && i.task_start == supervisor::process_start(r.pid)
                    });
                    if !same || !is_alive(r.pid, r.pgid) {
                        tracing::warn!(container = %r.container_id, pid = r.pid, task = %r.task_id, "not re-adopting: the task's supervisor is gone without recording its end");
                        continue;
                    }
                    tracing::warn!(container = %r.container_id, pid = r.pid, task = %r.task_id, "the task's supervisor is gone; re-adopting the task itself (its exit status will be unknown)");
                    self.spawn_unsupervised_watch(&r, tx);
                    false
                }
                Found::Unsupervised => {
                    if !is_alive(r.pid, r.pgid) {
                        tracing::info!(container = %r.container_id, pid = r.pid, task = %r.task_id, "not re-adopting: process is gone");
                        continue;
                    }
                    self.spawn_unsupervised_watch(&r, tx);
                    tracing::info!(container = %r.container_id, pid = r.pid, task = %r.task_id, "re-adopted process");
                    false
                }
            };
            self.insert(
                r.container_id.clone(),
                Container {
                    pgid: r.pgid,
                    exit: rx,
                    env: base_environment(),
                    sandbox: r.sandbox.clone(),
                    supervised,
                },
            );
            adopted.push(r.container_id);
        }
        adopted
    }

    /// Watches a re-adopted process that no supervisor of ours watches.
    fn spawn_unsupervised_watch(&self, r: &RecoverRecord, tx: watch::Sender<Option<Termination>>) {
        let pid = r.pid;
        let (pgid, logged, sandbox, id) = (
            r.pgid,
            !r.masked_values.is_empty(),
            r.sandbox.clone(),
            r.container_id.clone(),
        );
        tokio::spawn(async move {
            let term = poll_exit(pid).await;
            if logged {
                drain(pgid, &sandbox, &id).await;
            }
            tx.send_replace(Some(term));
        });
    }
}

/// Starts a task as a child of the agent; its exit is published on the
/// returned channel.
fn launch_in_agent(
    spec: &LaunchSpec,
) -> Result<(watch::Receiver<Option<Termination>>, i32), ContainerError> {
    let sandbox_err = |source| ContainerError::Sandbox {
        path: spec.sandbox.clone(),
        source,
    };
    let open = |name: &str| {
        std::fs::OpenOptions::new()
            .append(true)
            .open(spec.sandbox.join(name))
            .map_err(sandbox_err)
    };
    let logged = !spec.masked_values.is_empty();
    let output = |name: &str| -> Result<Stdio, ContainerError> {
        if !logged {
            return Ok(Stdio::from(open(name)?));
        }
        let file = logger::open_locked(&spec.sandbox.join(name)).map_err(sandbox_err)?;
        let pipe =
            logger::start(file, &spec.masked_values).map_err(|source| ContainerError::Spawn {
                program: "the task logger".into(),
                source,
            })?;
        Ok(Stdio::from(pipe))
    };
    let stdout = output("stdout")?;
    let stderr = output("stderr")?;

    let (mut cmd, program) = command_for(&spec.command)?;
    cmd.current_dir(&spec.sandbox)
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .env_clear()
        .envs(task_environment(spec))
        .process_group(0)
        .kill_on_drop(false);
    let mut child = cmd
        .spawn()
        .map_err(|source| ContainerError::Spawn { program, source })?;
    let pid = child
        .id()
        .and_then(|p| i32::try_from(p).ok())
        .ok_or_else(|| ContainerError::Invalid("spawned process has no pid".into()))?;
    // The pipes' writing ends went to the child; the parent's copies
    // are closed (dropped with `cmd`), so the loggers see the end of
    // the output when the task's processes are gone.
    drop(cmd);
    let (tx, rx) = watch::channel(None);
    let id = spec.container_id.clone();
    let sandbox = spec.sandbox.clone();
    tokio::spawn(async move {
        let term = match child.wait().await {
            Ok(status) => match (status.code(), status.signal()) {
                (Some(c), _) => Termination::Exited(c),
                (None, Some(s)) => Termination::Signaled(s),
                (None, None) => Termination::Unknown,
            },
            Err(e) => {
                tracing::error!(container = %id, error = %e, "waiting for task process failed");
                Termination::Unknown
            }
        };
        if logged {
            drain(pid, &sandbox, &id).await;
        }
        tx.send_replace(Some(term));
    });
    Ok((rx, pid))
}

/// Starts a task under a supervisor program; its exit (read from the
/// supervisor's record once the supervisor is gone) is published on the
/// returned channel.
async fn launch_supervised(
    spec: &LaunchSpec,
    program: &Path,
    args: &[OsString],
) -> Result<(watch::Receiver<Option<Termination>>, i32), ContainerError> {
    let stderr = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(spec.sandbox.join("stderr"))
        .map_err(|source| ContainerError::Sandbox {
            path: spec.sandbox.clone(),
            source,
        })?;
    let request = supervisor::Spec {
        version: supervisor::FORMAT_VERSION,
        container_id: spec.container_id.0.clone(),
        command: (&spec.command).into(),
        masked_values: spec.masked_values.clone(),
    };
    let env = task_environment(spec);
    let mut started =
        supervisor::start(program, args, &spec.sandbox, &env, stderr, &request).await?;
    let (tx, rx) = watch::channel(None);
    let (sandbox, id) = (spec.sandbox.clone(), spec.container_id.clone());
    tokio::spawn(async move {
        // Our child until the agent restarts: its end is the record's
        // moment. (A failed wait falls back to its lock.)
        if let Err(e) = started.supervisor.wait().await {
            tracing::warn!(container = %id, error = %e, "waiting for the task's supervisor failed; watching its lock");
        }
        tx.send_replace(Some(supervisor_end(&sandbox, &id).await));
    });
    Ok((rx, started.pid))
}

/// Waits until the supervisor of `id` in `sandbox` is gone (its lock is
/// free), then reads how the task ended (unknown without a record).
async fn supervisor_end(sandbox: &Path, id: &ContainerId) -> Termination {
    loop {
        let s = sandbox.to_path_buf();
        match tokio::task::spawn_blocking(move || supervisor::alive(&s)).await {
            Ok(Ok(false)) => break,
            Ok(Ok(true)) => {}
            Ok(Err(e)) => {
                tracing::warn!(container = %id, error = %e, "cannot tell whether the task's supervisor lives");
            }
            Err(e) => {
                tracing::warn!(container = %id, error = %e, "checking the task's supervisor failed");
            }
        }
        tokio::time::sleep(RECOVER_POLL).await;
    }
    let (s, i) = (sandbox.to_path_buf(), id.clone());
    match tokio::task::spawn_blocking(move || supervisor::read_exit(&s, &i)).await {
        Ok(Ok(Some(t))) => t,
        Ok(Ok(None)) => {
            tracing::warn!(container = %id, "the task's supervisor ended without recording the task's exit status");
            Termination::Unknown
        }
        Ok(Err(e)) => {
            tracing::warn!(container = %id, error = %e, "the task's exit record is unusable");
            Termination::Unknown
        }
        Err(e) => {
            tracing::warn!(container = %id, error = %e, "reading the task's exit record failed");
            Termination::Unknown
        }
    }
}

impl Containerizer for ProcessContainerizer {
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
        Box::pin(async move {
            self.containers
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .remove(id);
        })
    }

    fn recover(
        &self,
        records: Vec<RecoverRecord>,
    ) -> BoxFuture<'_, Result<Vec<ContainerId>, ContainerError>> {
        Box::pin(async move { Ok(self.recover_inner(records)) })
    }

    fn exec<'a>(
        &'a self,
        id: &'a ContainerId,
        command: Command,
        timeout: Duration,
    ) -> BoxFuture<'a, Result<i32, ContainerError>> {
        Box::pin(async move {
            let c = self.get(id)?;
            let (mut cmd, program) = command_for(&command)?;
            cmd.current_dir(&c.sandbox)
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .env_clear()
                .envs(&c.env)
                .process_group(0)
                .kill_on_drop(true);
            let mut child = cmd
                .spawn()
                .map_err(|source| ContainerError::Spawn { program, source })?;
            match tokio::time::timeout(timeout, child.wait()).await {
                Ok(Ok(status)) => Ok(status
                    .code()
                    .unwrap_or_else(|| 128 + status.signal().unwrap_or(0))),
                Ok(Err(e)) => Err(ContainerError::Invalid(format!(
                    "waiting for the command failed: {e}"
                ))),
                Err(_) => {
                    if let Some(pid) = child.id().and_then(|p| i32::try_from(p).ok()) {
                        let _ = signal_group(pid, Signal::SIGKILL);
                    }
                    Err(ContainerError::Timeout(timeout))
                }
            }
        })
    }
}

/// After a logged task's main process ended: kills what is left of its
/// group (as `destroy` would next), so nothing keeps its output pipes open,
/// then waits for its loggers to write the last of its output.
async fn drain(pgid: i32, sandbox: &std::path::Path, id: &ContainerId) {
    if let Err(e) = signal_group(pgid, Signal::SIGKILL) {
        tracing::warn!(container = %id, error = %e, "killing what is left of the task's group failed");
    }
    for name in ["stdout", "stderr"] {
        if !logger::wait_drained(sandbox.join(name), logger::DRAIN_TIMEOUT).await {
            tracing::warn!(container = %id, file = name, "the task logger did not finish in time; reporting the task's end without its last output");
        }
    }
}

/// A command ready to spawn, and the program's name for errors.
fn command_for(command: &Command) -> Result<(tokio::process::Command, String), ContainerError> {
    Ok(match command {
        Command::Shell(s) => {
            let mut c = tokio::process::Command::new("/bin/sh");
            c.arg("-c").arg(s);
            (c, "/bin/sh".to_owned())
        }
        Command::Argv(argv) => {
            let Some((first, rest)) = argv.split_first() else {
                return Err(ContainerError::Invalid("empty argv".into()));
            };
            let mut c = tokio::process::Command::new(first);
            c.args(rest);
            (c, first.clone())
        }
    })
}

/// `PATH` and `HOME` as the agent has them.
fn base_environment() -> BTreeMap<OsString, OsString> {
    let mut env = BTreeMap::new();
    env.insert(
        OsString::from("PATH"),
        std::env::var_os("PATH").unwrap_or_else(|| DEFAULT_PATH.into()),
    );
    if let Some(home) = std::env::var_os("HOME") {
        env.insert("HOME".into(), home);
    }
    env
}

/// The environment of a task: inherited `PATH`/`HOME`, the task's own
/// variables, then the `BERTH_*` variables.
#[must_use]
pub fn task_environment(spec: &LaunchSpec) -> BTreeMap<OsString, OsString> {
    let mut env = base_environment();
    for (k, v) in &spec.env {
        env.insert(k.into(), v.into());
    }
    let mut set = |k: &str, v: String| {
        env.insert(k.into(), v.into());
    };
    set("BERTH_TASK_ID", spec.task_id.clone());
    set("BERTH_FRAMEWORK_ID", spec.framework_id.clone());
    set("BERTH_AGENT_ID", spec.agent_id.clone());
    set("BERTH_SANDBOX", spec.sandbox.display().to_string());
    set("BERTH_CPUS", spec.resources.cpus.to_f64().to_string());
    set("BERTH_MEM", spec.resources.mem.to_f64().to_string());
    if !spec.resources.ports.is_empty() {
        let ports: Vec<String> = spec
            .resources
            .ports
            .ranges()
            .iter()
            .map(|&(b, e)| {
                if b == e {
                    b.to_string()
                } else {
                    format!("{b}-{e}")
                }
            })
            .collect();
        set("BERTH_PORTS", ports.join(","));
    }
    env
}

/// Sends `sig` to process group `pgid`; a group that no longer exists is fine.
fn signal_group(pgid: i32, sig: Signal) -> Result<(), ContainerError> {
    if pgid <= 1 {
        return Err(ContainerError::Invalid(format!(
            "refusing to signal process group {pgid}"
        )));
    }
    match signal::killpg(Pid::from_raw(pgid), sig) {
        Ok(()) | Err(Errno::ESRCH) => Ok(()),
        Err(source) => Err(ContainerError::Signal { pgid, source }),
    }
}

/// Whether `pid` is a live (non-zombie) process in group `pgid`.
fn is_alive(pid: i32, pgid: i32) -> bool {
    if pid <= 1 || pgid <= 1 {
        return false;
    }
    match nix::unistd::getpgid(Some(Pid::from_raw(pid))) {
        Ok(g) if g.as_raw() == pgid => !is_zombie(pid),
        _ => false,
    }
}

/// Whether `/proc/<pid>/stat` says the process is a zombie (or is gone).
fn is_zombie(pid: i32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return true;
    };
    // The state follows the parenthesised command name, which may contain
    // spaces or parentheses itself.
    stat.rfind(')')
        .and_then(|i| stat[i + 1..].split_whitespace().next())
        .is_some_and(|state| state == "Z" || state == "X")
}

/// Polls a re-adopted process until it is gone.
async fn poll_exit(pid: i32) -> Termination {
    let p = Pid::from_raw(pid);
    loop {
        match waitpid(p, Some(WaitPidFlag::WNOHANG)) {
            Ok(WaitStatus::Exited(_, code)) => return Termination::Exited(code),
            Ok(WaitStatus::Signaled(_, sig, _)) => return Termination::Signaled(sig as i32),
            Ok(_) => {}
            Err(Errno::ECHILD) => {
                // Not our child: we can only see whether it is still there.
                if matches!(signal::kill(p, None), Err(Errno::ESRCH)) || is_zombie(pid) {
                    return Termination::Unknown;
                }
            }
            Err(e) => {
                tracing::warn!(pid, error = %e, "waitpid on re-adopted process failed");
                return Termination::Unknown;
            }
        }
        tokio::time::sleep(RECOVER_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use super::*;

    fn spec(dir: &std::path::Path, command: Command) -> LaunchSpec {
        LaunchSpec {
            container_id: ContainerId::random(),
            framework_id: "fw-1".into(),
            task_id: "task-1".into(),
            agent_id: "agent-1".into(),
            sandbox: dir.join("sandboxes/fw-1/task-1"),
            sandbox_prepared: false,
            command,
            env: HashMap::from([("GREETING".to_owned(), "hello".to_owned())]),
            resources: "cpus:0.5;mem:128;ports:[31000-31002,31005-31005]"
                .parse()
                .unwrap(),
            container: None,
            masked_values: Vec::new(),
        }
    }

    fn sh(s: &str) -> Command {
        Command::Shell(s.to_owned())
    }

    fn pid_gone(pid: i32) -> bool {
        matches!(signal::kill(Pid::from_raw(pid), None), Err(Errno::ESRCH)) || is_zombie(pid)
    }

    #[tokio::test]
    async fn a_task_with_services_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let mut s = spec(dir.path(), sh("true"));
        let info = berth_proto::ContainerInfo {
            image: "img".into(),
            services: vec![berth_proto::ServiceContainer {
                image: "redis".into(),
                ..Default::default()
            }],
            ..Default::default()
        };
        s.container =
            Some(super::super::ContainerSpec::from_proto(&info, &s.resources.ports).unwrap());
        let e = ProcessContainerizer::new().launch(s).await.unwrap_err();
        assert!(
            e.to_string().starts_with(
                "invalid launch: the task has 1 service container (GitLab CI `services:`), \
                 which only the Docker containerizer runs"
            ),
            "{e}"
        );
    }

    #[tokio::test]
    async fn runs_shell_command_with_output_and_env() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        let s = spec(
            dir.path(),
            sh(
                "echo hi; echo err >&2; env | grep -E '^(BERTH_|GREETING)' | sort > env.txt; pwd > pwd.txt; exit 3",
            ),
        );
        let sandbox = s.sandbox.clone();
        let launched = c.launch(s).await.unwrap();
        assert_eq!(launched.pid, launched.pgid);
        let t = c.wait(&launched.container_id).await.unwrap();
        assert_eq!(t, Termination::Exited(3));
        assert_eq!(t.exit_code(), Some(3));
        assert_eq!(
            std::fs::read_to_string(sandbox.join("stdout")).unwrap(),
            "hi\n"
        );
        assert_eq!(
            std::fs::read_to_string(sandbox.join("stderr")).unwrap(),
            "err\n"
        );
        let env = std::fs::read_to_string(sandbox.join("env.txt")).unwrap();
        for want in [
            "BERTH_TASK_ID=task-1",
            "BERTH_FRAMEWORK_ID=fw-1",
            "BERTH_AGENT_ID=agent-1",
            "BERTH_CPUS=0.5",
            "BERTH_MEM=128",
            "BERTH_PORTS=31000-31002,31005",
            "GREETING=hello",
            &format!("BERTH_SANDBOX={}", sandbox.display()),
        ] {
            assert!(env.lines().any(|l| l == want), "missing {want} in\n{env}");
        }
        let pwd = std::fs::read_to_string(sandbox.join("pwd.txt")).unwrap();
        assert_eq!(
            std::fs::canonicalize(pwd.trim()).unwrap(),
            std::fs::canonicalize(&sandbox).unwrap()
        );
        // Waiting again gives the same answer.
        assert_eq!(
            c.wait(&launched.container_id).await.unwrap(),
            Termination::Exited(3)
        );
    }

    const S1: &str = "s3cret-value-1";
    const S2: &str = "other-secret-22";

    fn masked(dir: &std::path::Path, script: &str) -> LaunchSpec {
        let mut s = spec(dir, sh(script));
        s.env.insert("S1".into(), S1.into());
        s.env.insert("S2".into(), S2.into());
        s.masked_values = vec![S1.into(), S2.into()];
        s
    }

    fn read(path: std::path::PathBuf) -> String {
        std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
    }

    #[tokio::test]
    async fn masked_values_never_reach_the_sandbox_files() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        // Split across writes, on both streams, and at the very end
        // without a newline: all of it is in the files once `wait` returns.
        let s = masked(
            dir.path(),
            "printf 'a s3cr'; sleep 0.2; printf 'et-value-1 b\\n'; echo \"err $S2\" >&2; printf \"tail $S1\"; exit 4",
        );
        let sandbox = s.sandbox.clone();
        let l = c.launch(s).await.unwrap();
        assert_eq!(
            c.wait(&l.container_id).await.unwrap(),
            Termination::Exited(4)
        );
        assert_eq!(read(sandbox.join("stdout")), "a [MASKED] b\ntail [MASKED]");
        assert_eq!(read(sandbox.join("stderr")), "err [MASKED]\n");
    }

    #[tokio::test]
    async fn a_killed_masked_task_has_its_last_words_logged() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        let s = masked(
            dir.path(),
            "trap 'echo \"term $S1\"; exit 0' TERM; echo \"up $S1\"; while true; do sleep 0.05; done",
        );
        let sandbox = s.sandbox.clone();
        let l = c.launch(s).await.unwrap();
        let stdout = sandbox.join("stdout");
        let t0 = Instant::now();
        while !std::fs::read_to_string(&stdout)
            .unwrap_or_default()
            .contains("up")
        {
            assert!(
                t0.elapsed() < Duration::from_secs(10),
                "the task never started"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let t = c
            .destroy(&l.container_id, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(t, Termination::Exited(0));
        assert_eq!(read(stdout), "up [MASKED]\nterm [MASKED]\n");
    }

    #[tokio::test]
    async fn what_a_masked_task_leaves_behind_does_not_hold_its_end() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        // The background sleep holds the output pipe open.
        let s = masked(dir.path(), "sleep 600 & echo \"bg $S2\"; exit 0");
        let sandbox = s.sandbox.clone();
        let l = c.launch(s).await.unwrap();
        assert_eq!(
            c.wait(&l.container_id).await.unwrap(),
            Termination::Exited(0)
        );
        // Its group was killed, so the loggers ended (their lock is free)
        // rather than the wait giving up on them.
        for name in ["stdout", "stderr"] {
            assert!(logger::wait_drained(sandbox.join(name), Duration::ZERO).await);
        }
        assert_eq!(read(sandbox.join("stdout")), "bg [MASKED]\n");
    }

    #[tokio::test]
    async fn a_readopted_masked_task_ends_once_its_output_is_written() {
        let dir = tempfile::tempdir().unwrap();
        let first = ProcessContainerizer::new();
        let s = masked(
            dir.path(),
            "while [ ! -f go ]; do sleep 0.05; done; sleep 0.3; echo \"end $S1\"",
        );
        let sandbox = s.sandbox.clone();
        let l = first.launch(s.clone()).await.unwrap();
        // A second containerizer (an agent restarted) re-adopts it; the
        // loggers of the first go on (they are threads of this process
        // here, processes of their own under `berth agent`).
        let second = ProcessContainerizer::new();
        let record = RecoverRecord {
            container_id: l.container_id.clone(),
            framework_id: s.framework_id.clone(),
            task_id: s.task_id.clone(),
            pid: l.pid,
            pgid: l.pgid,
            sandbox: sandbox.clone(),
            masked_values: s.masked_values.clone(),
        };
        assert_eq!(
            second.recover(vec![record]).await.unwrap(),
            vec![l.container_id.clone()]
        );
        std::fs::write(sandbox.join("go"), b"").unwrap();
        second.wait(&l.container_id).await.unwrap();
        assert_eq!(read(sandbox.join("stdout")), "end [MASKED]\n");
    }

    #[tokio::test]
    async fn argv_not_found_is_a_spawn_error() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        let err = c
            .launch(spec(
                dir.path(),
                Command::Argv(vec!["/no/such/binary-xyz".into()]),
            ))
            .await
            .unwrap_err();
        assert!(matches!(err, ContainerError::Spawn { .. }), "{err}");
        assert!(err.to_string().contains("No such file"), "{err}");
    }

    #[tokio::test]
    async fn relaunch_cleans_sandbox() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        let s = spec(dir.path(), sh("echo first > marker"));
        let sandbox = s.sandbox.clone();
        let l = c.launch(s).await.unwrap();
        c.wait(&l.container_id).await.unwrap();
        assert!(sandbox.join("marker").exists());
        let l = c.launch(spec(dir.path(), sh("true"))).await.unwrap();
        c.wait(&l.container_id).await.unwrap();
        assert!(!sandbox.join("marker").exists());
    }

    #[tokio::test]
    async fn kill_lets_a_trapping_task_exit() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        let s = spec(
            dir.path(),
            sh("trap 'echo got-term; exit 7' TERM; echo ready; while true; do sleep 0.05; done"),
        );
        let sandbox = s.sandbox.clone();
        let l = c.launch(s).await.unwrap();
        wait_for_file_content(&sandbox.join("stdout"), "ready").await;
        let start = Instant::now();
        let t = c
            .destroy(&l.container_id, Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(t, Termination::Exited(7));
        assert!(start.elapsed() < Duration::from_secs(3));
        let out = std::fs::read_to_string(sandbox.join("stdout")).unwrap();
        assert!(out.contains("got-term"), "{out}");
    }

    #[tokio::test]
    async fn kill_escalates_to_sigkill_and_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let c = ProcessContainerizer::new();
        let s = spec(
            dir.path(),
            sh("trap '' TERM; sleep 60 & echo $! > grandchild.pid; echo ready; wait"),
        );
        let sandbox = s.sandbox.clone();
        let l = c.launch(s).await.unwrap();
        wait_for_file_content(&sandbox.join("stdout"), "ready").await;
        let grandchild: i32 = std::fs::read_to_string(sandbox.join("grandchild.pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert!(!pid_gone(grandchild));
        let start = Instant::now();
        let t = c
            .destroy(&l.container_id, Duration::from_millis(300))
            .await
            .unwrap();
        assert_eq!(t, Termination::Signaled(9));
        assert_eq!(t.exit_code(), Some(137));
        assert!(start.elapsed() >= Duration::from_millis(300));
        let deadline = Instant::now() + Duration::from_secs(2);
        while !pid_gone(grandchild) && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(pid_gone(grandchild), "grandchild {grandchild} survived");
        assert!(pid_gone(l.pid));
    }

    #[tokio::test]
    async fn recover_readopts_a_live_process() {
        let c = ProcessContainerizer::new();
        use std::os::unix::process::CommandExt;
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .process_group(0)
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let live = RecoverRecord {
            container_id: ContainerId::random(),
            framework_id: "fw".into(),
            task_id: "t-live".into(),
            pid,
            pgid: pid,
            sandbox: std::env::temp_dir(),
            masked_values: Vec::new(),
        };
        let dead = RecoverRecord {
            container_id: ContainerId::random(),
            framework_id: "fw".into(),
            task_id: "t-dead".into(),
            pid: i32::MAX - 7,
            pgid: i32::MAX - 7,
            sandbox: std::env::temp_dir(),
            masked_values: Vec::new(),
        };
        let adopted = c.recover(vec![live.clone(), dead]).await.unwrap();
        assert_eq!(adopted, vec![live.container_id.clone()]);
        let t = c
            .destroy(&live.container_id, Duration::from_secs(2))
            .await
            .unwrap();
        assert_eq!(t, Termination::Signaled(15));
        // Already reaped by the containerizer.
        assert!(child.try_wait().is_err() || pid_gone(pid));
        assert_eq!(c.wait(&live.container_id).await.unwrap(), t);
    }

    async fn wait_for_file_content(path: &std::path::Path, needle: &str) {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            if std::fs::read_to_string(path).is_ok_and(|s| s.contains(needle)) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "{} never contained {needle}",
                path.display()
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
