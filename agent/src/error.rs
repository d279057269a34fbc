//! The agent's error type.

use std::path::PathBuf;
use std::time::Duration;

use berth_scheduler_core::ResourceError;

/// Everything that can stop the agent from starting or running.
#[derive(Debug, thiserror::Error)]
pub enum AgentError {
    /// The configuration is unusable; the message says which field and why.
    #[error("invalid agent configuration: {0}")]
    Config(String),
    /// Resource detection or a configured resource quantity failed.
    #[error("resources: {0}")]
    Resources(#[from] ResourceError),
    /// Reading system information (for resource detection) failed.
    #[error("cannot detect resources from {path}: {source}")]
    Detect {
        /// The file or directory that could not be read.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// A filesystem operation on the work directory failed.
    #[error("work directory {path}: {source}")]
    WorkDir {
        /// The path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The listener's local address could not be read.
    #[error("listener: {0}")]
    Listener(std::io::Error),
    /// The checkpoint could not be opened, read or written.
    #[error("checkpoint: {0}")]
    Checkpoint(CheckpointError),
    /// A checkpoint write failed while the agent ran: it stopped rather
    /// than go on with a checkpoint that no longer says what it did.
    #[error("a checkpoint write failed, so the agent stopped: {0}")]
    CheckpointWrite(std::sync::Arc<CheckpointError>),
    /// An internal task of the agent failed (a bug).
    #[error("internal error: {0}")]
    Internal(String),
    /// The agent's own gRPC server failed.
    #[error("agent API server: {0}")]
    Server(#[from] tonic::transport::Error),
}

/// Errors of a containerizer operation.
#[derive(Debug, thiserror::Error)]
pub enum ContainerError {
    /// Preparing the sandbox (directories, log files) failed.
    #[error("cannot prepare sandbox {path}: {source}")]
    Sandbox {
        /// The sandbox path.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Spawning the task's process failed (e.g. argv[0] not found).
    #[error("cannot start {program:?}: {source}")]
    Spawn {
        /// The program that was to be started.
        program: String,
        /// The underlying error.
        source: std::io::Error,
    },
    /// The launch request was malformed.
    #[error("invalid launch: {0}")]
    Invalid(String),
    /// No container with this id is known to the containerizer.
    #[error("unknown container {0}")]
    UnknownContainer(String),
    /// A container with this id already exists.
    #[error("container {0} already exists")]
    DuplicateContainer(String),
    /// The Docker Engine refused or failed a request; the message is the
    /// daemon's own (e.g. "No such image: ...").
    #[error("docker: {0}")]
    Docker(String),
    /// The Docker Engine did not answer in time.
    #[error("docker daemon did not answer within {0:?}")]
    DaemonTimeout(Duration),
    /// An operation (e.g. a health check command) did not finish in time.
    #[error("timed out after {0:?}")]
    Timeout(Duration),
    /// Sending a signal failed for a reason other than the process being gone.
    #[error("cannot signal process group {pgid}: {source}")]
    Signal {
        /// The process group.
        pgid: i32,
        /// The errno.
        source: nix::Error,
    },
}

impl ContainerError {
    /// The exit code a shell or Docker gives a command that could not be
    /// started: 127 for a program that does not exist, 126 for one that
    /// cannot be executed (not executable, not a program), so a process
    /// task and a container report the same code. `None` for every other
    /// error (nothing ran that could have an exit code).
    #[must_use]
    pub fn exit_code(&self) -> Option<i32> {
        match self {
            ContainerError::Spawn { source, .. } => match source.raw_os_error() {
                Some(libc::ENOENT | libc::ENOTDIR) => Some(127),
                Some(libc::EACCES | libc::ENOEXEC | libc::EISDIR | libc::EPERM) => Some(126),
                _ => None,
            },
            // The daemon's words for the same failures (what `docker run`
            // maps to 127 and 126).
            ContainerError::Docker(message) => {
                let m = message.to_ascii_lowercase();
                if m.contains("executable file not found")
                    || m.contains("no such file or directory")
                {
                    Some(127)
                } else if m.contains("permission denied") {
                    Some(126)
                } else {
                    None
                }
            }
            _ => None,
        }
    }
}

/// Errors of the agent's checkpoint store ([`crate::checkpoint`]).
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    /// The database file could not be opened, read or written (I/O, a
    /// failed commit, the file held by another process, ...).
    #[error("checkpoint {path}: {source}")]
    Store {
        /// The redb file.
        path: PathBuf,
        /// The underlying redb error.
        #[source]
        source: redb::Error,
    },
    /// A stored record does not decode or contradicts its key.
    #[error("checkpoint table `{table}`, key {key}: corrupt record: {message}")]
    Corrupt {
        /// The table holding the record.
        table: &'static str,
        /// The record's key, printed.
        key: String,
        /// What is wrong with it.
        message: String,
    },
    /// The file was written by a newer agent with a schema this one does
    /// not know.
    #[error(
        "checkpoint {path} has schema version {found}, but this agent supports only \
         version {supported} and older; run a newer agent or move the file away \
         (its tasks are then forgotten)"
    )]
    NewerSchema {
        /// The redb file.
        path: PathBuf,
        /// The version found in the file.
        found: u32,
        /// The newest version this agent reads and writes.
        supported: u32,
    },
    /// A record to write is inconsistent (a bug of the caller), e.g. a
    /// status update of another task in a task's queue. Nothing was written.
    #[error("invalid checkpoint write: {0}")]
    Invalid(String),
    /// A record could not be encoded.
    #[error("cannot encode checkpoint record: {0}")]
    Encode(String),
}

/// An error and its sources, "a: b: c", each said once: the messages of
/// hyper and tonic alone are terse ("transport error"), the cause is in
/// their sources.
#[must_use]
pub fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

/// `s` as echoed in a message, quoted: at most its first 64 bytes, then
/// "… (N bytes)" when it is longer, so no input makes a message long.
#[must_use]
pub fn shown(s: &str) -> String {
    const MAX: usize = 64;
    if s.len() <= MAX {
        return format!("{s:?}");
    }
    let mut end = MAX;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{:?}… ({} bytes)", &s[..end], s.len())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn programs_that_cannot_start_have_the_shells_exit_codes() {
        let spawn = |errno| ContainerError::Spawn {
            program: "x".into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert_eq!(spawn(libc::ENOENT).exit_code(), Some(127));
        assert_eq!(spawn(libc::EACCES).exit_code(), Some(126));
        assert_eq!(spawn(libc::ENOEXEC).exit_code(), Some(126));
        assert_eq!(spawn(libc::ENOMEM).exit_code(), None);
        // Docker's words for the same failures, as `docker run` reads them.
        let docker = |m: &str| ContainerError::Docker(m.into()).exit_code();
        assert_eq!(
            docker(r#"failed to create task: exec: "nope": executable file not found in $PATH"#),
            Some(127)
        );
        assert_eq!(
            docker("exec: \"/x\": stat /x: no such file or directory"),
            Some(127)
        );
        assert_eq!(docker("exec: \"/etc\": permission denied"), Some(126));
        assert_eq!(docker("No such image: busybox:nope"), None);
        assert_eq!(ContainerError::Invalid("x".into()).exit_code(), None);
    }

    #[test]
    fn echoed_values_are_cut_at_64_bytes() {
        assert_eq!(shown("short"), "\"short\"");
        let long = "é".repeat(100);
        let s = shown(&long);
        assert!(s.ends_with("… (200 bytes)"), "{s}");
        assert!(s.len() < 64 + 20, "{s}");
    }
}
