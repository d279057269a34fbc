//! Task loggers: a task's output masked before it reaches its sandbox.
//!
//! A process task with `TaskInfo.masked_values` does not write its
//! sandbox's `stdout` and `stderr` itself. Each goes into a pipe read by a
//! logger, which replaces the values with `[MASKED]` (a streaming
//! [`Masker`], so a value split across writes is caught too) and appends the
//! rest to the file, as Mesos's container loggers sit between a task and its
//! log files. Nothing unmasked is ever written to the sandbox, so the log
//! API and everything that reads the files see only masked text. (A Docker
//! task's output comes through Docker's log API; the agent masks it as it
//! follows it, see the Docker containerizer.)
//!
//! Two kinds, [`TaskLogger`]:
//! - [`TaskLogger::Program`]: a process of its own, `berth task-logger`
//!   (whose whole work is [`run_program`]): its stdin is the pipe, its
//!   stdout the sandbox file, the values come in the environment variable
//!   [`MASKS_ENV`]. In a process group of its own, it is not hit by the
//!   task's kill, and it outlives an agent restart: the task goes on writing
//!   and nothing is lost or left unmasked. `berth agent` and `berth dev`
//!   use it.
//! - [`TaskLogger::InAgent`]: a thread of the agent does the same. When the
//!   agent's process ends the pipe has no reader, and the task's next write
//!   fails (SIGPIPE). The library's default, for embedding and tests.
//!
//! Either way, the agent opens the file and locks it (`flock`, exclusive)
//! before the logger starts, and hands the logger the locked file: the lock
//! is held until the logger has written its last byte and exited.
//! [`wait_drained`] takes the lock to know that a task's output is all in
//! the file, and the process containerizer reports a task's end only after
//! that (bounded by [`DRAIN_TIMEOUT`]), for a task it re-adopted after a
//! restart too. A task without masked values writes its files directly and
//! holds no lock, so waiting for it costs nothing.

use std::ffi::OsString;
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proto::mask::Masker;

/// Environment variable holding the values a program logger masks, as a
/// JSON array of strings.
pub const MASKS_ENV: &str = "BERTH_TASK_LOGGER_MASKS";

/// How long a task's end waits for its loggers to write its last output.
/// A logger still running then (a process the task left behind holds the
/// pipe open) goes on; the task's end is reported without waiting more.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`wait_drained`] tries the lock.
const DRAIN_POLL: Duration = Duration::from_millis(10);

/// Who masks a process task's output. See the module docs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum TaskLogger {
    /// A thread of the agent.
    #[default]
    InAgent,
    /// A program, run as `program args...` with the pipe as stdin, the
    /// sandbox file as stdout and the values in [`MASKS_ENV`]; it must do
    /// what [`run_program`] does (`berth task-logger`).
    Program {
        /// The executable.
        program: PathBuf,
        /// Its first arguments.
        args: Vec<OsString>,
    },
}

/// Copies `input` to `output` until end of input, masking as it goes;
/// every chunk read is written at once (the sandbox file is followed live).
/// Returns the bytes written.
///
/// # Errors
/// Reading or writing failed.
pub fn filter(mut input: impl Read, mut output: impl Write, mut masker: Masker) -> io::Result<u64> {
    let mut buf = vec![0u8; 64 * 1024];
    let mut written = 0u64;
    loop {
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let out = masker.push(&buf[..n]);
        output.write_all(&out)?;
        written += out.len() as u64;
    }
    let out = masker.finish();
    output.write_all(&out)?;
    output.flush()?;
    Ok(written + out.len() as u64)
}

/// The logger program: masks stdin to stdout with the values in
/// [`MASKS_ENV`]; returns the process's exit code. If the values cannot be
/// read, it writes no output at all (rather than output it cannot mask):
/// one line saying so, then it reads stdin to its end and drops it, so the
/// task is not stopped by a broken pipe.
#[must_use]
pub fn run_program() -> i32 {
    use std::os::fd::AsFd as _;
    // Unbuffered: every chunk reaches the file at once (Rust's stdout is
    // line-buffered, which would hold a line being written back).
    let (Ok(stdin), Ok(stdout)) = (
        io::stdin().as_fd().try_clone_to_owned(),
        io::stdout().as_fd().try_clone_to_owned(),
    ) else {
        return 1;
    };
    let (stdin, mut stdout) = (File::from(stdin), File::from(stdout));
    let masks = std::env::var(MASKS_ENV)
        .map_err(|e| format!("{MASKS_ENV}: {e}"))
        .and_then(|raw| {
            serde_json::from_str::<Vec<String>>(&raw)
                .map_err(|e| format!("{MASKS_ENV} is not a JSON array of strings: {e}"))
        });
    match masks {
        Ok(values) => match filter(stdin, stdout, Masker::new(values)) {
            Ok(_) => 0,
            Err(_) => 1,
        },
        Err(why) => {
            // Best effort: the line is all it can say.
            let _ = writeln!(stdout, "[berth] the task logger dropped this output: {why}");
            let _ = io::copy(&mut { stdin }, &mut io::sink());
            2
        }
    }
}

/// Opens a sandbox log file for a logger: appending, and locked until the
/// logger (which inherits the lock with the file) is done.
///
/// # Errors
/// The file cannot be opened, or another logger holds it.
pub(crate) fn open_locked(path: &Path) -> io::Result<File> {
    let file = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    match file.try_lock() {
        Ok(()) => Ok(file),
        Err(std::fs::TryLockError::WouldBlock) => Err(io::Error::new(
            io::ErrorKind::WouldBlock,
            format!("{} is held by another logger", path.display()),
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(e),
    }
}

/// Starts the logger of one stream: returns the pipe's writing end, for the
/// task. `output` is the locked file from [`open_locked`].
///
/// # Errors
/// The pipe or the logger could not be made.
pub(crate) fn start(
    logger: &TaskLogger,
    output: File,
    masked_values: &[String],
) -> io::Result<io::PipeWriter> {
    let (reader, writer) = io::pipe()?;
    match logger {
        TaskLogger::InAgent => {
            let masker = Masker::new(masked_values);
            std::thread::Builder::new()
                .name("berth-task-logger".into())
                .spawn(move || {
                    if let Err(e) = filter(reader, output, masker) {
                        tracing::warn!(error = %e, "task logger failed");
                    }
                })?;
        }
        TaskLogger::Program { program, args } => {
            let masks = serde_json::to_string(masked_values).map_err(io::Error::other)?;
            // Reaped by tokio when it exits (the handle is dropped).
            tokio::process::Command::new(program)
                .args(args)
                .stdin(std::process::Stdio::from(reader))
                .stdout(std::process::Stdio::from(output))
                .stderr(std::process::Stdio::null())
                .env_clear()
                .env(MASKS_ENV, masks)
                .process_group(0)
                .kill_on_drop(false)
                .spawn()
                .map_err(|e| {
                    io::Error::new(
                        e.kind(),
                        format!("starting the task logger {}: {e}", program.display()),
                    )
                })?;
        }
    }
    Ok(writer)
}

/// Waits until no logger holds `path` (its lock is free), at most
/// `timeout`. Returns whether it is free; a missing file counts as free.
pub(crate) async fn wait_drained(path: PathBuf, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    loop {
        let p = path.clone();
        let free = tokio::task::spawn_blocking(move || match File::open(&p) {
            Ok(f) => match f.try_lock() {
                Ok(()) => Ok(true),
                Err(std::fs::TryLockError::WouldBlock) => Ok(false),
                Err(std::fs::TryLockError::Error(e)) => Err(e),
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(true),
            Err(e) => Err(e),
        })
        .await;
        match free {
            Ok(Ok(true)) => return true,
            Ok(Ok(false)) => {}
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot tell whether the task logger is done");
                return false;
            }
            Err(_) => return false,
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(DRAIN_POLL).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A reader that hands out its chunks one `read` at a time.
    struct Chunks(Vec<&'static [u8]>);

    impl Read for Chunks {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.0.is_empty() {
                return Ok(0);
            }
            let c = self.0.remove(0);
            buf[..c.len()].copy_from_slice(c);
            Ok(c.len())
        }
    }

    #[test]
    fn filter_masks_values_split_across_reads_and_keeps_the_rest() {
        let input = Chunks(vec![
            b"token=sup",
            b"er-secret-1 and ",
            b"super-sec",
            b"ret-1\ntail",
        ]);
        let mut out = Vec::new();
        let n = filter(input, &mut out, Masker::new(["super-secret-1"])).unwrap();
        assert_eq!(
            String::from_utf8(out.clone()).unwrap(),
            "token=[MASKED] and [MASKED]\ntail"
        );
        assert_eq!(n, out.len() as u64);
    }

    #[test]
    fn a_locked_file_is_not_drained_until_its_holder_closes_it() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("stdout");
        let held = open_locked(&path).unwrap();
        // A second logger for the same file is refused.
        assert_eq!(
            open_locked(&path).unwrap_err().kind(),
            io::ErrorKind::WouldBlock
        );
        // The lock is shared with a copy of the descriptor, as a child
        // process inherits it, and lasts until the last copy closes.
        let copy = held.try_clone().unwrap();
        drop(held);
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        assert!(!rt.block_on(wait_drained(path.clone(), Duration::from_millis(50))));
        drop(copy);
        assert!(rt.block_on(wait_drained(path.clone(), Duration::from_millis(50))));
        assert!(rt.block_on(wait_drained(dir.path().join("missing"), Duration::ZERO)));
    }
}
