//! Task supervisors: a small process per process task that is the task's
//! parent, outlives the agent and records how the task ended, so a task
//! that ends while its agent is down is still reported with its true exit
//! status (the pattern of containerd-shim and of Mesos's executor).
//!
//! With [`TaskSupervisor::Program`] (what `berth agent` and `berth dev`
//! configure: `berth task-supervisor`, whose whole work is
//! [`run_program`]) the process containerizer starts the supervisor instead
//! of the task:
//!
//! 1. The agent starts the program with the sandbox as its working
//!    directory, the task's environment, its stderr appended to the
//!    sandbox's `stderr`, and writes the [`Spec`] (command, masked values,
//!    container id; JSON) to its stdin.
//! 2. The supervisor starts a session of its own (`setsid`: no signal of
//!    the agent's group or terminal reaches it), takes an exclusive `flock`
//!    on [`SUPERVISOR_FILE`] in the sandbox, which it holds for its whole
//!    life, and starts the task in a process group of its own (the group
//!    the agent's kills go to, as without a supervisor). A task with masked
//!    values writes into pipes that threads of the supervisor mask into the
//!    sandbox files (see [`crate::logger`]), so a restart of the agent
//!    loses none of its output and leaves none of it unmasked.
//! 3. It writes the task's pid and start time into [`SUPERVISOR_FILE`] and
//!    answers the agent on stdout with one JSON line (the task's pid, or
//!    why it could not start it, with the errno), then closes its stdout.
//! 4. It waits for the task with `waitid(WNOWAIT)`: the task stays a
//!    zombie, so its pid and process group cannot be reused, while the
//!    supervisor kills what is left of the group, waits (at most
//!    [`crate::logger::DRAIN_TIMEOUT`]) for the masking threads to write
//!    the last output, and records the status in [`EXIT_FILE`] durably
//!    (a temporary file, fsync, rename, fsync of the sandbox). Then it
//!    reaps the task and exits, which frees the lock.
//!
//! The agent knows a supervisor is alive by its lock: a lock that can be
//! taken means the process is gone (a lock dies with its process, so a
//! reused pid fools nobody). It signals a task's group only while the lock
//! is held, i.e. while the zombie still holds the pid. After a restart it
//! re-adopts every supervised task from its checkpoint: a held lock is
//! watched until it is free; a free lock with an exit record is a task
//! that ended while the agent was down, reported with the recorded status
//! (and its outputs uploaded then). Every file is checked against the
//! container id, so an earlier run's files are never taken for this one's.
//! A supervisor killed without writing a record leaves a task that is
//! re-adopted only if its `/proc` start time is the one recorded (its
//! status then unknown).
//!
//! [`TaskSupervisor::InAgent`], the library's default (the in-process test
//! harness and the benches cannot exec `berth`), runs tasks as children of
//! the agent's own process. What it loses: a task that ends while the agent
//! is down ends with an unknown status (reported `TASK_FAILED` with reason
//! `CONTAINER_RECOVERY_FAILED`, outputs not uploaded), and a task with
//! masked values dies of SIGPIPE at its next write once the agent's
//! process is gone (its masking threads were the agent's).
//!
//! Tested with real supervisor processes in `agent/tests/supervisor.rs`, a
//! test binary that is its own supervisor program (no libtest harness).

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Seek, Write};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use nix::errno::Errno;
use nix::sys::signal::{self, Signal};
use nix::sys::wait::{Id, WaitPidFlag, WaitStatus, waitid};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::containerizer::{Command, ContainerId, Termination};
use crate::error::{ContainerError, shown};

/// The supervisor's lock and information file in the sandbox: locked
/// (`flock`, exclusive) for the supervisor's whole life; holds an [`Info`].
pub const SUPERVISOR_FILE: &str = ".berth-supervisor";
/// The task's recorded exit status in the sandbox: an [`ExitRecord`].
pub const EXIT_FILE: &str = ".berth-exit";
/// Where the exit record is written before it is renamed into place.
const EXIT_TEMP: &str = ".berth-exit.tmp";
/// The version of the spec, the answer, the information and the exit
/// record (all JSON). A supervisor refuses a spec of a newer version; the
/// agent reads records of this version only.
pub const FORMAT_VERSION: u32 = 1;
/// Largest spec a supervisor reads (a task is at most the 4 MiB of a gRPC
/// message).
const MAX_SPEC_BYTES: u64 = 16 << 20;
/// Largest answer, information or exit record read.
const MAX_RECORD_BYTES: u64 = 64 << 10;
/// How long the agent waits for a supervisor's answer.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(10);

/// Who is the parent of a process task. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TaskSupervisor {
    /// The agent's own process (tasks do not outlive it as its children;
    /// see the module docs for what that loses).
    #[default]
    InAgent,
    /// A program, run as `program args...`, that does what
    /// [`run_program`] does (`berth task-supervisor`).
    Program {
        /// The executable.
        program: PathBuf,
        /// Its first arguments.
        args: Vec<OsString>,
    },
}

/// What the agent tells a supervisor to run (on its stdin, JSON).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Spec {
    /// [`FORMAT_VERSION`].
    pub(crate) version: u32,
    /// The container (one run of the task): written into every record, so
    /// records of an earlier run are never mistaken for this one's.
    pub(crate) container_id: String,
    /// What to run.
    pub(crate) command: SpecCommand,
    /// Values masked in the output; none: the task writes its files itself.
    pub(crate) masked_values: Vec<String>,
}

/// A task's command, as in [`Command`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub(crate) enum SpecCommand {
    /// `/bin/sh -c <shell>`.
    Shell(String),
    /// The program and its arguments; never empty.
    Argv(Vec<String>),
}

impl From<&Command> for SpecCommand {
    fn from(c: &Command) -> Self {
        match c {
            Command::Shell(s) => SpecCommand::Shell(s.clone()),
            Command::Argv(v) => SpecCommand::Argv(v.clone()),
        }
    }
}

/// The supervisor's answer (one JSON line on its stdout).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Answer {
    version: u32,
    /// The task's pid (and process group), when it started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pid: Option<i32>,
    /// Why it did not start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    /// The errno of a failed start (`ENOENT`: no such program, ...).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    errno: Option<i32>,
}

/// What [`SUPERVISOR_FILE`] holds once the task runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Info {
    /// [`FORMAT_VERSION`].
    pub(crate) version: u32,
    /// The container this supervisor runs.
    pub(crate) container_id: String,
    /// The supervisor's own pid.
    pub(crate) supervisor_pid: i32,
    /// The task's pid, also its process group.
    pub(crate) task_pid: i32,
    /// The task's start time (`/proc/<pid>/stat` field 22, clock ticks
    /// since boot), against pid reuse when the supervisor is gone.
    pub(crate) task_start: Option<u64>,
}

/// How a task ended, as recorded in [`EXIT_FILE`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ExitRecord {
    /// [`FORMAT_VERSION`].
    pub(crate) version: u32,
    /// The container whose end this is.
    pub(crate) container_id: String,
    /// Exited or killed by a signal.
    #[serde(flatten)]
    pub(crate) status: RecordedStatus,
}

/// An exit status: the two ways a process ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub(crate) enum RecordedStatus {
    /// `exit(code)`.
    Exited {
        /// The exit code.
        code: i32,
    },
    /// Killed by this signal.
    Signaled {
        /// The signal number.
        signal: i32,
    },
}

impl From<RecordedStatus> for Termination {
    fn from(s: RecordedStatus) -> Self {
        match s {
            RecordedStatus::Exited { code } => Termination::Exited(code),
            RecordedStatus::Signaled { signal } => Termination::Signaled(signal),
        }
    }
}

// ---------------------------------------------------------------------
// The agent's side.
// ---------------------------------------------------------------------

/// A task started under a supervisor.
#[derive(Debug)]
pub(crate) struct Started {
    /// The task's pid and process group.
    pub(crate) pid: i32,
    /// The supervisor (a child of the agent until the agent restarts).
    pub(crate) supervisor: tokio::process::Child,
}

/// Starts `program args...` as the supervisor of `spec` in `sandbox`,
/// with `env` as the task's environment and `stderr` (the sandbox's
/// `stderr`, appending) for its own messages, and waits for its answer.
///
/// # Errors
/// [`ContainerError::Spawn`] for the supervisor itself or for the task
/// (with the errno the supervisor reported, so "no such program" stays
/// `ENOENT`), [`ContainerError::Invalid`] for a supervisor that did not
/// answer properly (it is killed).
pub(crate) async fn start(
    program: &Path,
    args: &[OsString],
    sandbox: &Path,
    env: &std::collections::BTreeMap<OsString, OsString>,
    stderr: File,
    spec: &Spec,
) -> Result<Started, ContainerError> {
    let input = serde_json::to_vec(spec)
        .map_err(|e| ContainerError::Invalid(format!("cannot encode the supervisor spec: {e}")))?;
    let mut child = tokio::process::Command::new(program)
        .args(args)
        .current_dir(sandbox)
        .env_clear()
        .envs(env)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::from(stderr))
        .kill_on_drop(false)
        .spawn()
        .map_err(|source| ContainerError::Spawn {
            program: format!("the task supervisor {}", program.display()),
            source,
        })?;
    let answer = tokio::time::timeout(ANSWER_TIMEOUT, converse(&mut child, &input)).await;
    let answer = match answer {
        Ok(Ok(a)) => a,
        Ok(Err(why)) => return Err(refuse(&mut child, why).await),
        Err(_) => {
            return Err(refuse(&mut child, format!("no answer within {ANSWER_TIMEOUT:?}")).await);
        }
    };
    match answer {
        Answer {
            pid: Some(pid),
            error: None,
            ..
        } if pid > 1 => Ok(Started {
            pid,
            supervisor: child,
        }),
        Answer {
            pid: None,
            error: Some(message),
            errno,
            ..
        } => {
            // It exits by itself; reap it.
            let _ = child.wait().await;
            let source = match errno {
                Some(n) if n > 0 => io::Error::from_raw_os_error(n),
                _ => io::Error::other(message),
            };
            Err(ContainerError::Spawn {
                program: program_name(&spec.command),
                source,
            })
        }
        other => Err(refuse(&mut child, format!("a malformed answer {other:?}")).await),
    }
}

/// The program a command starts, for messages.
fn program_name(c: &SpecCommand) -> String {
    match c {
        SpecCommand::Shell(_) => "/bin/sh".into(),
        SpecCommand::Argv(v) => v.first().cloned().unwrap_or_default(),
    }
}

/// Kills a supervisor that did not answer properly; the error to return.
async fn refuse(child: &mut tokio::process::Child, why: String) -> ContainerError {
    let _ = child.start_kill();
    let _ = child.wait().await;
    ContainerError::Invalid(format!("the task supervisor failed: {why}"))
}

/// Writes the spec, reads the answer: the last line of the supervisor's
/// stdout up to its end (a supervisor closes its stdout once it answered).
async fn converse(child: &mut tokio::process::Child, input: &[u8]) -> Result<Answer, String> {
    let mut stdin = child.stdin.take().ok_or("no stdin pipe")?;
    let stdout = child.stdout.take().ok_or("no stdout pipe")?;
    let write = async move {
        stdin.write_all(input).await?;
        stdin.shutdown().await
    };
    let mut out = Vec::new();
    let mut limited = stdout.take(MAX_RECORD_BYTES);
    let read = limited.read_to_end(&mut out);
    let (written, read) = tokio::join!(write, read);
    written.map_err(|e| format!("cannot send the spec: {e}"))?;
    read.map_err(|e| format!("cannot read the answer: {e}"))?;
    let text = String::from_utf8_lossy(&out);
    let line = text
        .lines()
        .rev()
        .find(|l| !l.trim().is_empty())
        .ok_or("it exited without answering")?;
    let answer: Answer =
        serde_json::from_str(line).map_err(|e| format!("cannot read its answer: {e}"))?;
    if answer.version != FORMAT_VERSION {
        return Err(format!("answer of version {}", answer.version));
    }
    Ok(answer)
}

/// Whether the supervisor of the task in `sandbox` is alive: someone holds
/// the lock of its [`SUPERVISOR_FILE`]. A missing file is "no".
///
/// # Errors
/// The file cannot be opened or locked for another reason.
pub(crate) fn alive(sandbox: &Path) -> io::Result<bool> {
    let file = match File::open(sandbox.join(SUPERVISOR_FILE)) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(e),
    };
    match file.try_lock_shared() {
        // Dropping the file releases the lock at once.
        Ok(()) => Ok(false),
        Err(std::fs::TryLockError::WouldBlock) => Ok(true),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Reads a small JSON record of `container_id` from `path`: `None` when
/// the file does not exist; an error when it is not a record of this
/// version and container.
fn read_record<T: for<'de> Deserialize<'de>>(
    path: &Path,
    container_id: &ContainerId,
    version_and_id: impl Fn(&T) -> (u32, &str),
) -> Result<Option<T>, String> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(format!("cannot open {}: {e}", path.display())),
    };
    let mut bytes = Vec::new();
    file.take(MAX_RECORD_BYTES)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let record: T = serde_json::from_slice(&bytes)
        .map_err(|e| format!("{} is not a record: {e}", path.display()))?;
    let (version, id) = version_and_id(&record);
    if version != FORMAT_VERSION {
        return Err(format!(
            "{} has version {version}, not {FORMAT_VERSION}",
            path.display()
        ));
    }
    if id != container_id.0 {
        return Err(format!(
            "{} belongs to container {}, not {container_id}",
            path.display(),
            shown(id)
        ));
    }
    Ok(Some(record))
}

/// The recorded end of `container_id`'s task in `sandbox`, if recorded.
///
/// # Errors
/// The record exists but cannot be read, or is not this container's.
pub(crate) fn read_exit(
    sandbox: &Path,
    container_id: &ContainerId,
) -> Result<Option<Termination>, String> {
    read_record(&sandbox.join(EXIT_FILE), container_id, |r: &ExitRecord| {
        (r.version, r.container_id.as_str())
    })
    .map(|r| r.map(|r| r.status.into()))
}

/// The supervisor's information about `container_id`'s task, if it wrote
/// it (it does before it answers).
pub(crate) fn read_info(sandbox: &Path, container_id: &ContainerId) -> Option<Info> {
    read_record(&sandbox.join(SUPERVISOR_FILE), container_id, |r: &Info| {
        (r.version, r.container_id.as_str())
    })
    .map_err(|e| tracing::debug!(container = %container_id, "no supervisor information: {e}"))
    .ok()
    .flatten()
    .filter(|i| i.task_pid > 1)
}

/// What the sandbox says about a supervised task after an agent restart.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Found {
    /// No supervisor ran this container (an agent without supervisors
    /// started it).
    Unsupervised,
    /// Its supervisor is alive.
    Running,
    /// It ended this way (the supervisor recorded it and is gone).
    Ended(Termination),
    /// The supervisor is gone without a record (it was killed): the task
    /// may still run, unwatched; `Info` says which process it was.
    Lost(Option<Info>),
}

/// Looks at the sandbox of `container_id`. Blocking (small file reads).
pub(crate) fn inspect(sandbox: &Path, container_id: &ContainerId) -> Found {
    let lock = sandbox.join(SUPERVISOR_FILE);
    if !lock.exists() {
        return Found::Unsupervised;
    }
    match alive(sandbox) {
        Ok(true) => return Found::Running,
        Ok(false) => {}
        Err(e) => {
            tracing::warn!(container = %container_id, error = %e, "cannot tell whether the task's supervisor lives; assuming it does");
            return Found::Running;
        }
    }
    match read_exit(sandbox, container_id) {
        Ok(Some(t)) => Found::Ended(t),
        Ok(None) => Found::Lost(read_info(sandbox, container_id)),
        Err(e) => {
            tracing::warn!(container = %container_id, error = %e, "the task's exit record is unusable");
            Found::Lost(read_info(sandbox, container_id))
        }
    }
}

/// The start time of process `pid` (`/proc/<pid>/stat` field 22), if it
/// exists.
pub(crate) fn process_start(pid: i32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The fields after the command name, which may hold spaces or ')'.
    let rest = &stat[stat.rfind(')')? + 1..];
    // Field 3 (state) is the first after the name; 22 is the 20th.
    rest.split_whitespace().nth(19)?.parse().ok()
}

// ---------------------------------------------------------------------
// The supervisor's side.
// ---------------------------------------------------------------------

/// The supervisor program (`berth task-supervisor`): runs the task of the
/// spec on stdin in the working directory (the sandbox), records its end;
/// returns the process's exit code (0 once the end is recorded). See the
/// module docs. Blocking; call it on a thread that may block.
#[must_use]
pub fn run_program() -> i32 {
    // Out of the agent's session and process group: its signals and its
    // terminal's do not reach us. (Fails only for a group leader, which a
    // freshly spawned child is not.)
    let _ = nix::unistd::setsid();
    let sandbox = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => return answer_failure(&format!("no working directory: {e}"), None),
    };
    let spec = match read_spec(io::stdin()) {
        Ok(s) => s,
        Err(why) => return answer_failure(&why, None),
    };
    let mut lock = match take_lock(&sandbox) {
        Ok(f) => f,
        Err(why) => return answer_failure(&why, None),
    };
    let (stdout, stderr, loggers) = match outputs(&sandbox, &spec.masked_values) {
        Ok(o) => o,
        Err(why) => return answer_failure(&why, None),
    };
    let mut cmd = match &spec.command {
        SpecCommand::Shell(s) => {
            let mut c = std::process::Command::new("/bin/sh");
            c.arg("-c").arg(s);
            c
        }
        SpecCommand::Argv(argv) => {
            let Some((first, rest)) = argv.split_first() else {
                return answer_failure("empty argv", None);
            };
            let mut c = std::process::Command::new(first);
            c.args(rest);
            c
        }
    };
    use std::os::unix::process::CommandExt as _;
    cmd.stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .process_group(0);
    let mut child = match cmd.spawn() {
        Ok(c) => c,
        Err(e) => return answer_failure(&e.to_string(), e.raw_os_error()),
    };
    // Our copies of the pipes' writing ends go, so the masking threads see
    // the end of the output when the task's processes are gone.
    drop(cmd);
    let Some(pid) = i32::try_from(child.id()).ok().filter(|p| *p > 1) else {
        return answer_failure("the task has no usable pid", None);
    };
    let info = Info {
        version: FORMAT_VERSION,
        container_id: spec.container_id.clone(),
        supervisor_pid: i32::try_from(std::process::id()).unwrap_or(0),
        task_pid: pid,
        task_start: process_start(pid),
    };
    if let Err(e) = write_info(&mut lock, &info) {
        say(&format!("cannot write {SUPERVISOR_FILE}: {e}"));
    }
    answer(&Answer {
        version: FORMAT_VERSION,
        pid: Some(pid),
        error: None,
        errno: None,
    });

    let status = wait_keeping_zombie(pid, &mut child);
    // What the task left behind goes with it: nothing keeps its output
    // pipes open, nothing runs on unwatched. The zombie still holds the
    // group's id.
    match signal::killpg(Pid::from_raw(pid), Signal::SIGKILL) {
        Ok(()) | Err(Errno::ESRCH | Errno::EPERM) => {}
        Err(e) => say(&format!(
            "cannot kill what is left of the task's group: {e}"
        )),
    }
    loggers.join(crate::logger::DRAIN_TIMEOUT);
    let code = match status {
        Some(status) => {
            let record = ExitRecord {
                version: FORMAT_VERSION,
                container_id: spec.container_id,
                status,
            };
            match write_exit(&sandbox, &record) {
                Ok(()) => 0,
                Err(e) => {
                    // Without the record the agent reports the end as
                    // unknown; this line tells the user why.
                    say(&format!("cannot record the task's exit status: {e}"));
                    3
                }
            }
        }
        None => 3,
    };
    // Reaped only now: until here the pid was not free for reuse.
    let _ = child.wait();
    drop(lock);
    code
}

/// One `berth: ...` line on our stderr (the sandbox's `stderr`).
fn say(line: &str) {
    let _ = writeln!(io::stderr(), "berth: task supervisor: {line}");
}

/// Answers the agent: one line, then stdout goes to `/dev/null` so the
/// agent sees its end at once.
fn answer(a: &Answer) {
    let mut out = io::stdout();
    if let Ok(line) = serde_json::to_string(a) {
        let _ = writeln!(out, "{line}");
        let _ = out.flush();
    }
    if let Ok(null) = File::options().write(true).open("/dev/null") {
        let _ = nix::unistd::dup2_stdout(null);
    }
}

/// Answers a failed start; the exit code of the supervisor.
fn answer_failure(why: &str, errno: Option<i32>) -> i32 {
    answer(&Answer {
        version: FORMAT_VERSION,
        pid: None,
        error: Some(why.to_owned()),
        errno,
    });
    1
}

fn read_spec(input: impl Read) -> Result<Spec, String> {
    let mut bytes = Vec::new();
    input
        .take(MAX_SPEC_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(|e| format!("cannot read the spec: {e}"))?;
    if bytes.len() as u64 > MAX_SPEC_BYTES {
        return Err(format!("the spec is larger than {MAX_SPEC_BYTES} bytes"));
    }
    let spec: Spec =
        serde_json::from_slice(&bytes).map_err(|e| format!("the spec is not valid: {e}"))?;
    if spec.version != FORMAT_VERSION {
        return Err(format!(
            "the spec has version {}; this supervisor reads version {FORMAT_VERSION}",
            spec.version
        ));
    }
    if let SpecCommand::Argv(v) = &spec.command
        && v.first().is_none_or(String::is_empty)
    {
        return Err("the spec's argv is empty".into());
    }
    Ok(spec)
}

/// Creates and locks [`SUPERVISOR_FILE`] (exclusive, for our whole life).
fn take_lock(sandbox: &Path) -> Result<File, String> {
    let path = sandbox.join(SUPERVISOR_FILE);
    let file = File::options()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "another supervisor holds {} (the task runs already)",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("cannot lock {}: {e}", path.display())),
    }
}

fn write_info(lock: &mut File, info: &Info) -> io::Result<()> {
    let bytes = serde_json::to_vec(info).map_err(io::Error::other)?;
    lock.set_len(0)?;
    lock.rewind()?;
    lock.write_all(&bytes)?;
    lock.flush()
}

/// Writes the exit record durably: a temporary file, fsync, rename, fsync
/// of the directory.
fn write_exit(sandbox: &Path, record: &ExitRecord) -> io::Result<()> {
    let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
    let temp = sandbox.join(EXIT_TEMP);
    let mut f = File::create(&temp)?;
    f.write_all(&bytes)?;
    f.sync_all()?;
    drop(f);
    std::fs::rename(&temp, sandbox.join(EXIT_FILE))?;
    File::open(sandbox)?.sync_all()
}

/// The threads masking a task's output, if it has masked values.
struct Loggers(Vec<std::sync::mpsc::Receiver<()>>);

impl Loggers {
    /// Waits until every thread wrote its last output, at most `timeout`.
    fn join(self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        for done in self.0 {
            let left = deadline.saturating_duration_since(Instant::now());
            if done.recv_timeout(left) == Err(std::sync::mpsc::RecvTimeoutError::Timeout) {
                say(
                    "the task's output was still being written; its end is recorded without waiting more",
                );
                return;
            }
        }
    }
}

/// The task's stdout and stderr: the sandbox files themselves, or pipes
/// whose masking threads append to them.
fn outputs(sandbox: &Path, masks: &[String]) -> Result<(Stdio, Stdio, Loggers), String> {
    let open = |name: &str| {
        let path = sandbox.join(name);
        File::options()
            .create(true)
            .append(true)
            .open(&path)
            .map_err(|e| format!("cannot open {}: {e}", path.display()))
    };
    if masks.is_empty() {
        return Ok((
            Stdio::from(open("stdout")?),
            Stdio::from(open("stderr")?),
            Loggers(Vec::new()),
        ));
    }
    let mut ends = Vec::new();
    let mut done = Vec::new();
    for name in ["stdout", "stderr"] {
        let file = open(name)?;
        let (reader, writer) = io::pipe().map_err(|e| format!("cannot make a pipe: {e}"))?;
        let (tx, rx) = std::sync::mpsc::channel();
        let masker = berth_proto::mask::Masker::new(masks);
        std::thread::Builder::new()
            .name(format!("mask-{name}"))
            .spawn(move || {
                if let Err(e) = crate::logger::filter(reader, file, masker) {
                    say(&format!("writing the task's {name} failed: {e}"));
                }
                let _ = tx.send(());
            })
            .map_err(|e| format!("cannot start a masking thread: {e}"))?;
        ends.push(Stdio::from(writer));
        done.push(rx);
    }
    let stderr = ends.pop().ok_or("no stderr pipe")?;
    let stdout = ends.pop().ok_or("no stdout pipe")?;
    Ok((stdout, stderr, Loggers(done)))
}

/// Waits until the task ends and returns how, leaving it a zombie (its pid
/// stays taken) when the kernel can say how without reaping it; `None`
/// when nothing can be learned.
fn wait_keeping_zombie(pid: i32, child: &mut std::process::Child) -> Option<RecordedStatus> {
    loop {
        match waitid(
            Id::Pid(Pid::from_raw(pid)),
            WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT,
        ) {
            Ok(WaitStatus::Exited(_, code)) => return Some(RecordedStatus::Exited { code }),
            Ok(WaitStatus::Signaled(_, sig, _)) => {
                return Some(RecordedStatus::Signaled { signal: sig as i32 });
            }
            Ok(_) | Err(Errno::EINTR) => {}
            // A status nix cannot express (a real-time signal): reap it to
            // learn it.
            Err(_) => break,
        }
    }
    use std::os::unix::process::ExitStatusExt as _;
    match child.wait() {
        Ok(s) => match (s.code(), s.signal()) {
            (Some(code), _) => Some(RecordedStatus::Exited { code }),
            (None, Some(signal)) => Some(RecordedStatus::Signaled { signal }),
            (None, None) => None,
        },
        Err(e) => {
            say(&format!("cannot wait for the task: {e}"));
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_records_golden_bytes() {
        let exited = ExitRecord {
            version: 1,
            container_id: "c-1".into(),
            status: RecordedStatus::Exited { code: 3 },
        };
        let signaled = ExitRecord {
            version: 1,
            container_id: "c-1".into(),
            status: RecordedStatus::Signaled { signal: 9 },
        };
        let golden_exited = r#"{"version":1,"container_id":"c-1","status":"exited","code":3}"#;
        let golden_signaled =
            r#"{"version":1,"container_id":"c-1","status":"signaled","signal":9}"#;
        assert_eq!(serde_json::to_string(&exited).unwrap(), golden_exited);
        assert_eq!(serde_json::to_string(&signaled).unwrap(), golden_signaled);
        assert_eq!(
            serde_json::from_str::<ExitRecord>(golden_exited).unwrap(),
            exited
        );
        assert_eq!(
            serde_json::from_str::<ExitRecord>(golden_signaled).unwrap(),
            signaled
        );
        assert_eq!(Termination::from(signaled.status), Termination::Signaled(9));
    }

    #[test]
    fn spec_answer_and_info_golden_bytes() {
        let spec = Spec {
            version: 1,
            container_id: "c-1".into(),
            command: SpecCommand::Argv(vec!["echo".into(), "hi".into()]),
            masked_values: vec!["s3cret-value".into()],
        };
        let golden = r#"{"version":1,"container_id":"c-1","command":{"argv":["echo","hi"]},"masked_values":["s3cret-value"]}"#;
        assert_eq!(serde_json::to_string(&spec).unwrap(), golden);
        assert_eq!(read_spec(golden.as_bytes()).unwrap(), spec);
        let shell =
            r#"{"version":1,"container_id":"c","command":{"shell":"exit 3"},"masked_values":[]}"#;
        assert_eq!(
            read_spec(shell.as_bytes()).unwrap().command,
            SpecCommand::Shell("exit 3".into())
        );
        let running = Answer {
            version: 1,
            pid: Some(42),
            error: None,
            errno: None,
        };
        assert_eq!(
            serde_json::to_string(&running).unwrap(),
            r#"{"version":1,"pid":42}"#
        );
        let failed = Answer {
            version: 1,
            pid: None,
            error: Some("No such file or directory (os error 2)".into()),
            errno: Some(2),
        };
        assert_eq!(
            serde_json::to_string(&failed).unwrap(),
            r#"{"version":1,"error":"No such file or directory (os error 2)","errno":2}"#
        );
        let info = Info {
            version: 1,
            container_id: "c-1".into(),
            supervisor_pid: 10,
            task_pid: 11,
            task_start: Some(12345),
        };
        assert_eq!(
            serde_json::to_string(&info).unwrap(),
            r#"{"version":1,"container_id":"c-1","supervisor_pid":10,"task_pid":11,"task_start":12345}"#
        );
    }

    #[test]
    fn bad_specs_are_refused_with_a_reason() {
        for (input, want) in [
            ("", "the spec is not valid"),
            ("{", "the spec is not valid"),
            (
                r#"{"version":2,"container_id":"c","command":{"shell":"x"},"masked_values":[]}"#,
                "the spec has version 2; this supervisor reads version 1",
            ),
            (
                r#"{"version":1,"container_id":"c","command":{"argv":[]},"masked_values":[]}"#,
                "the spec's argv is empty",
            ),
            (
                r#"{"version":1,"container_id":"c","command":{"argv":[""]},"masked_values":[]}"#,
                "the spec's argv is empty",
            ),
        ] {
            let err = read_spec(input.as_bytes()).unwrap_err();
            assert!(err.starts_with(want), "{input}: {err}");
        }
        let huge = vec![b' '; usize::try_from(MAX_SPEC_BYTES).unwrap() + 1];
        assert!(
            read_spec(huge.as_slice())
                .unwrap_err()
                .contains("larger than")
        );
    }

    #[test]
    fn records_of_another_container_or_version_are_not_taken() {
        let dir = tempfile::tempdir().unwrap();
        let id = ContainerId("c-1".into());
        assert_eq!(read_exit(dir.path(), &id), Ok(None));
        assert_eq!(inspect(dir.path(), &id), Found::Unsupervised);
        let record = ExitRecord {
            version: 1,
            container_id: "c-1".into(),
            status: RecordedStatus::Exited { code: 0 },
        };
        write_exit(dir.path(), &record).unwrap();
        assert!(!dir.path().join(EXIT_TEMP).exists());
        assert_eq!(read_exit(dir.path(), &id), Ok(Some(Termination::Exited(0))));
        let other = ContainerId("c-2".into());
        let err = read_exit(dir.path(), &other).unwrap_err();
        assert!(
            err.contains(r#"belongs to container "c-1", not c-2"#),
            "{err}"
        );
        std::fs::write(
            dir.path().join(EXIT_FILE),
            r#"{"version":7,"container_id":"c-1","status":"exited","code":0}"#,
        )
        .unwrap();
        assert!(
            read_exit(dir.path(), &id)
                .unwrap_err()
                .contains("version 7")
        );
        std::fs::write(dir.path().join(EXIT_FILE), "garbage").unwrap();
        assert!(
            read_exit(dir.path(), &id)
                .unwrap_err()
                .contains("is not a record")
        );

        // A lock file: held means running; free without a record, lost.
        write_exit(dir.path(), &record).unwrap();
        let mut lock = take_lock(dir.path()).unwrap();
        assert_eq!(inspect(dir.path(), &id), Found::Running);
        assert!(
            take_lock(dir.path())
                .unwrap_err()
                .contains("another supervisor")
        );
        let info = Info {
            version: 1,
            container_id: "c-1".into(),
            supervisor_pid: 10,
            task_pid: 11,
            task_start: None,
        };
        write_info(&mut lock, &info).unwrap();
        drop(lock);
        assert_eq!(
            inspect(dir.path(), &id),
            Found::Ended(Termination::Exited(0))
        );
        std::fs::remove_file(dir.path().join(EXIT_FILE)).unwrap();
        assert_eq!(inspect(dir.path(), &id), Found::Lost(Some(info)));
        assert_eq!(inspect(dir.path(), &other), Found::Lost(None));
    }

    #[test]
    fn start_time_of_this_process_is_read() {
        let me = i32::try_from(std::process::id()).unwrap();
        let t = process_start(me).unwrap();
        assert!(t > 0);
        assert_eq!(process_start(me), Some(t));
        assert_eq!(process_start(i32::MAX - 3), None);
    }
}
