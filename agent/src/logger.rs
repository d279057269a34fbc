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
//! Who runs the loggers depends on the task's parent
//! ([`crate::supervisor::TaskSupervisor`]):
//! - under a supervisor process (`berth agent`, `berth dev`), threads of
//!   the supervisor run [`filter`]: they outlive an agent restart, the task
//!   goes on writing and nothing is lost or left unmasked; the supervisor
//!   records the task's end only after they wrote its last output;
//! - in the agent ([`start`], the library's default), a thread of the agent
//!   does the same. When the agent's process ends the pipe has no reader,
//!   and the task's next write fails (SIGPIPE). The agent opens the file and
//!   locks it (`flock`, exclusive) before the logger starts and hands the
//!   logger the locked file: the lock is held until the logger has written
//!   its last byte. [`wait_drained`] takes the lock to know that a task's
//!   output is all in the file, and the process containerizer reports a
//!   task's end only after that (bounded by [`DRAIN_TIMEOUT`]). A task
//!   without masked values writes its files directly and holds no lock, so
//!   waiting for it costs nothing.

use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use berth_proto::mask::Masker;

/// How long a task's end waits for its loggers to write its last output.
/// A logger still running then (a process the task left behind holds the
/// pipe open) goes on; the task's end is reported without waiting more.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How often [`wait_drained`] tries the lock.
const DRAIN_POLL: Duration = Duration::from_millis(10);

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

/// Starts the logger of one stream on a thread of the agent: returns the
/// pipe's writing end, for the task. `output` is the locked file from
/// [`open_locked`].
///
/// # Errors
/// The pipe or the thread could not be made.
pub(crate) fn start(output: File, masked_values: &[String]) -> io::Result<io::PipeWriter> {
    let (reader, writer) = io::pipe()?;
    let masker = Masker::new(masked_values);
    std::thread::Builder::new()
        .name("berth-task-logger".into())
        .spawn(move || {
            if let Err(e) = filter(reader, output, masker) {
                tracing::warn!(error = %e, "task logger failed");
            }
        })?;
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
