//! The one way the CI framework runs `git`: bounded in time, never
//! prompting, with bounded captured output, and with errors that quote
//! git's message cut short and without the credentials of a repository
//! URL ([`redact`]).
//!
//! - **Time.** A command still running at its [`Git`]'s timeout is killed
//!   with everything it started: git runs in a process group of its own,
//!   and the whole group gets `SIGKILL` (a `git-remote-https` or `ssh` left
//!   behind would go on holding the output pipes, and a stalled server the
//!   connection). A dropped [`Git::run`] future kills the group too.
//! - **No prompt.** stdin is `/dev/null`, `GIT_TERMINAL_PROMPT=0`, and
//!   ssh runs with `BatchMode=yes` unless `GIT_SSH_COMMAND` is set: a
//!   repository that wants a password fails at once instead of waiting for
//!   an answer nobody gives.
//! - **Output.** stdout is captured up to the [`Git`]'s limit (more is an
//!   error, never a silently cut answer), stderr up to [`MAX_STDERR`]; an
//!   error shows at most [`MAX_SHOWN_STDERR`] bytes of it, after every URL
//!   in it and the secrets of the command's repository URL were hidden.
//!
//! [`Git::run`] is for async code (fetching remotes); [`Git::run_blocking`]
//! is for [`super::source`], whose readers of a commit are called from
//! `spawn_blocking` and from plain threads (the planner's repository
//! view), where no runtime can be entered.

pub mod redact;

use std::ffi::{OsStr, OsString};
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use tokio::io::AsyncReadExt as _;

use self::redact::{redact_message, redact_urls_in};

/// The longest a git command reading a local repository may take (a `git
/// archive` of a large tree included).
pub const LOCAL_TIMEOUT: Duration = Duration::from_secs(600);
/// The most stdout a git command may write by default (file lists, a file
/// read from a commit).
pub const MAX_STDOUT: usize = 64 << 20;
/// The most stderr kept of a git command.
pub const MAX_STDERR: usize = 64 << 10;
/// The most bytes of git's stderr an error shows.
pub const MAX_SHOWN_STDERR: usize = 1024;
/// The most bytes of a command's arguments an error shows.
pub const MAX_SHOWN_ARGS: usize = 256;

/// Why a git command gave no answer.
#[derive(Debug, thiserror::Error)]
pub enum GitError {
    /// `git` itself could not be started.
    #[error("cannot run git ({0}); is git installed?")]
    NoGit(std::io::Error),
    /// Killed at the timeout.
    #[error("git {command} timed out after {}", seconds(.timeout))]
    TimedOut {
        /// The git command (`clone`, `fetch`, …).
        command: String,
        /// The timeout.
        timeout: Duration,
    },
    /// More stdout than allowed.
    #[error("git {command} wrote more than {limit} bytes")]
    TooMuchOutput {
        /// The git command.
        command: String,
        /// The limit.
        limit: usize,
    },
    /// git exited with an error: its message, cut short and with
    /// credentials hidden, or its exit status when it said nothing.
    #[error("{}", failure(.command, .status, .stderr))]
    Failed {
        /// The git command.
        command: String,
        /// How it exited.
        status: ExitStatus,
        /// What it said on stderr (trimmed, redacted, cut short).
        stderr: String,
    },
    /// Waiting for git or reading its output failed.
    #[error("git {command}: {source}")]
    Io {
        /// The git command.
        command: String,
        /// The error.
        source: std::io::Error,
    },
}

fn seconds(d: &Duration) -> String {
    if d.subsec_millis() == 0 {
        format!("{} s", d.as_secs())
    } else {
        format!("{:.1} s", d.as_secs_f64())
    }
}

fn failure(command: &str, status: &ExitStatus, stderr: &str) -> String {
    if stderr.is_empty() {
        format!("git {command} exited with {status}")
    } else {
        stderr.to_string()
    }
}

/// One git command: its arguments, the repository it runs in (`git -C`),
/// and the repository URL whose credentials its errors must not show.
#[derive(Debug, Clone)]
pub struct GitCommand {
    dir: Option<PathBuf>,
    args: Vec<OsString>,
    url: Option<String>,
}

impl GitCommand {
    /// `git ARGS…`.
    pub fn new<I, S>(args: I) -> GitCommand
    where
        I: IntoIterator<Item = S>,
        S: AsRef<OsStr>,
    {
        GitCommand {
            dir: None,
            args: args.into_iter().map(|a| a.as_ref().to_owned()).collect(),
            url: None,
        }
    }

    /// Runs in the repository at `dir` (`git -C DIR ARGS…`).
    #[must_use]
    pub fn in_dir(mut self, dir: &Path) -> GitCommand {
        self.dir = Some(dir.to_path_buf());
        self
    }

    /// Hides the credentials of `url` (the repository fetched) in errors,
    /// however git quoted them; see [`redact_message`].
    #[must_use]
    pub fn hiding(mut self, url: &str) -> GitCommand {
        self.url = Some(url.to_string());
        self
    }

    /// The git command's name for messages: its first argument.
    fn name(&self) -> String {
        let first = self
            .args
            .first()
            .map(|a| a.to_string_lossy().into_owned())
            .unwrap_or_default();
        first.chars().take(32).collect()
    }

    /// The arguments as a message shows them: joined by spaces,
    /// credentials hidden, cut short.
    pub fn args_shown(&self) -> String {
        let joined = self
            .args
            .iter()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ");
        cut(&self.hide(&joined), MAX_SHOWN_ARGS)
    }

    /// `text` with every URL in it and the command's credentials hidden.
    fn hide(&self, text: &str) -> String {
        match &self.url {
            Some(url) => redact_message(text, url),
            None => redact_urls_in(text),
        }
    }

    /// git's stderr as an error shows it: trimmed, hidden, then cut short
    /// (hidden first, so that a cut never leaves half a secret).
    fn shown_stderr(&self, stderr: &Bounded) -> String {
        let hidden = self.hide(String::from_utf8_lossy(&stderr.bytes).trim());
        if stderr.overflowed {
            // Its length is not known: more than was kept.
            let shown = prefix(&hidden, MAX_SHOWN_STDERR);
            return format!("{shown}… (more than {MAX_STDERR} bytes)");
        }
        cut(&hidden, MAX_SHOWN_STDERR)
    }
}

/// `text` cut to at most `max` bytes (at a char boundary), with `… (N
/// bytes)` when it was longer.
fn cut(text: &str, max: usize) -> String {
    let shown = prefix(text, max);
    if shown.len() == text.len() {
        text.to_string()
    } else {
        format!("{shown}… ({} bytes)", text.len())
    }
}

/// The first `max` bytes of `text` at most, cut at a char boundary.
fn prefix(text: &str, max: usize) -> &str {
    let mut end = text.len().min(max);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    &text[..end]
}

/// How git runs: the program, the timeout and the stdout limit.
#[derive(Debug, Clone)]
pub struct Git {
    program: OsString,
    timeout: Duration,
    max_stdout: usize,
}

impl Git {
    /// `git` from `PATH`, killed after `timeout`, with at most
    /// [`MAX_STDOUT`] bytes of stdout.
    pub fn new(timeout: Duration) -> Git {
        Git {
            program: OsString::from("git"),
            timeout,
            max_stdout: MAX_STDOUT,
        }
    }

    /// Runs `program` instead of `git` (a test's stand-in).
    #[must_use]
    pub fn program(mut self, program: impl Into<OsString>) -> Git {
        self.program = program.into();
        self
    }

    /// Allows at most `bytes` of stdout.
    #[must_use]
    pub fn max_stdout(mut self, bytes: usize) -> Git {
        self.max_stdout = bytes;
        self
    }

    /// The command as it is started, in a process group of its own.
    fn command(&self, cmd: &GitCommand) -> std::process::Command {
        use std::os::unix::process::CommandExt as _;
        let mut command = std::process::Command::new(&self.program);
        if let Some(dir) = &cmd.dir {
            command.arg("-C").arg(dir);
        }
        command
            .args(&cmd.args)
            .env("GIT_TERMINAL_PROMPT", "0")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0);
        if std::env::var_os("GIT_SSH_COMMAND").is_none() {
            command.env("GIT_SSH_COMMAND", "ssh -o BatchMode=yes");
        }
        command
    }

    /// What a finished command's status and output mean.
    fn answer(
        &self,
        cmd: &GitCommand,
        status: ExitStatus,
        stdout: Bounded,
        stderr: Bounded,
    ) -> Result<Vec<u8>, GitError> {
        if !status.success() {
            return Err(GitError::Failed {
                command: cmd.name(),
                status,
                stderr: cmd.shown_stderr(&stderr),
            });
        }
        if stdout.overflowed {
            return Err(GitError::TooMuchOutput {
                command: cmd.name(),
                limit: self.max_stdout,
            });
        }
        Ok(stdout.bytes)
    }

    /// Runs `cmd`; returns its stdout.
    pub async fn run(&self, cmd: &GitCommand) -> Result<Vec<u8>, GitError> {
        let io = |source| GitError::Io {
            command: cmd.name(),
            source,
        };
        let mut command = tokio::process::Command::from(self.command(cmd));
        command.kill_on_drop(true);
        let mut child = command.spawn().map_err(GitError::NoGit)?;
        let mut group = Group::of(child.id());
        let stdout = child.stdout.take();
        let stderr = child.stderr.take();
        let finished = tokio::time::timeout(self.timeout, async {
            tokio::join!(
                read_async(stdout, self.max_stdout),
                read_async(stderr, MAX_STDERR),
                child.wait()
            )
        })
        .await;
        let Ok((stdout, stderr, status)) = finished else {
            group.kill();
            let _ = child.wait().await;
            return Err(GitError::TimedOut {
                command: cmd.name(),
                timeout: self.timeout,
            });
        };
        group.disarm();
        self.answer(
            cmd,
            status.map_err(io)?,
            stdout.map_err(io)?,
            stderr.map_err(io)?,
        )
    }

    /// Runs `cmd` on this thread (which must not be an async worker: it
    /// waits); returns its stdout.
    pub fn run_blocking(&self, cmd: &GitCommand) -> Result<Vec<u8>, GitError> {
        let io = |source| GitError::Io {
            command: cmd.name(),
            source,
        };
        let mut child = self.command(cmd).spawn().map_err(GitError::NoGit)?;
        let mut group = Group::of(Some(child.id()));
        let limit = self.max_stdout;
        let stdout = child
            .stdout
            .take()
            .map(|out| std::thread::spawn(move || read_bounded(out, limit)));
        let stderr = child
            .stderr
            .take()
            .map(|err| std::thread::spawn(move || read_bounded(err, MAX_STDERR)));
        let deadline = Instant::now() + self.timeout;
        let mut pause = Duration::from_millis(1);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io)? {
                break Some(status);
            }
            let now = Instant::now();
            if now >= deadline {
                break None;
            }
            std::thread::sleep(pause.min(deadline - now));
            pause = (pause * 2).min(Duration::from_millis(20));
        };
        let Some(status) = status else {
            // Not reaped yet, so the group is still git's.
            group.kill();
            let _ = child.wait();
            return Err(GitError::TimedOut {
                command: cmd.name(),
                timeout: self.timeout,
            });
        };
        group.disarm();
        let join = |reader: Option<std::thread::JoinHandle<std::io::Result<Bounded>>>| match reader
        {
            None => Ok(Bounded::default()),
            Some(reader) => reader
                .join()
                .unwrap_or_else(|_| Err(std::io::Error::other("the reader panicked"))),
        };
        let stdout = join(stdout).map_err(io)?;
        let stderr = join(stderr).map_err(io)?;
        self.answer(cmd, status, stdout, stderr)
    }
}

/// A command's process group, killed when dropped unless disarmed.
struct Group(Option<i32>);

impl Group {
    fn of(pid: Option<u32>) -> Group {
        Group(pid.and_then(|pid| i32::try_from(pid).ok()))
    }

    /// Kills every process of the group.
    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // Gone already (ESRCH) is as good.
            let _ = killpg(Pid::from_raw(pgid), Signal::SIGKILL);
        }
    }

    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for Group {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Output read up to a limit; the rest was read and dropped.
#[derive(Debug, Default)]
struct Bounded {
    bytes: Vec<u8>,
    overflowed: bool,
}

fn read_bounded(mut from: impl Read, limit: usize) -> std::io::Result<Bounded> {
    let mut bytes = Vec::new();
    (&mut from)
        .take(u64::try_from(limit).unwrap_or(u64::MAX))
        .read_to_end(&mut bytes)?;
    let rest = std::io::copy(&mut from, &mut std::io::sink())?;
    Ok(Bounded {
        bytes,
        overflowed: rest > 0,
    })
}

async fn read_async(
    from: Option<impl tokio::io::AsyncRead + Unpin>,
    limit: usize,
) -> std::io::Result<Bounded> {
    let Some(mut from) = from else {
        return Ok(Bounded::default());
    };
    let mut bytes = Vec::new();
    (&mut from)
        .take(u64::try_from(limit).unwrap_or(u64::MAX))
        .read_to_end(&mut bytes)
        .await?;
    let rest = tokio::io::copy(&mut from, &mut tokio::io::sink()).await?;
    Ok(Bounded {
        bytes,
        overflowed: rest > 0,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A stand-in for git: `sh -c SCRIPT`.
    fn sh(timeout: Duration) -> Git {
        Git::new(timeout).program("sh")
    }

    fn script(text: &str) -> GitCommand {
        GitCommand::new(["-c", text])
    }

    /// A script that outlives its shell: the `sleep` it starts holds the
    /// output pipes, as a `git-remote-https` does git's.
    const HANGS: &str = "sleep 60; echo never";

    #[test]
    fn a_hanging_command_is_killed_with_its_children_at_the_timeout() {
        let started = Instant::now();
        let err = sh(Duration::from_millis(300))
            .run_blocking(&script(HANGS))
            .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, GitError::TimedOut { .. }), "{err:?}");
        assert_eq!(err.to_string(), "git -c timed out after 0.3 s");
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }

    #[tokio::test]
    async fn a_hanging_command_is_killed_with_its_children_at_the_timeout_async() {
        let started = Instant::now();
        let err = sh(Duration::from_millis(300))
            .run(&script(HANGS))
            .await
            .unwrap_err();
        let took = started.elapsed();
        assert!(matches!(err, GitError::TimedOut { .. }), "{err:?}");
        assert!(took < Duration::from_secs(10), "took {took:?}");
    }

    #[tokio::test]
    async fn a_dropped_run_kills_the_group() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("marker");
        // The child writes the marker a second after start, unless killed.
        let text = format!("(sleep 1; touch '{}') & wait", marker.display());
        let git = sh(Duration::from_secs(60));
        let cmd = script(&text);
        let run = git.run(&cmd);
        assert!(
            tokio::time::timeout(Duration::from_millis(200), run)
                .await
                .is_err()
        );
        tokio::time::sleep(Duration::from_millis(1500)).await;
        assert!(!marker.exists(), "the group outlived the dropped run");
    }

    #[test]
    fn answers_with_stdout_and_runs_without_a_prompt() {
        let git = sh(Duration::from_secs(30));
        let out = git
            .run_blocking(&script(
                "echo \"$GIT_TERMINAL_PROMPT\"; test -t 0 || echo no-tty; read x || echo eof",
            ))
            .unwrap();
        assert_eq!(String::from_utf8(out).unwrap(), "0\nno-tty\neof\n");
    }

    #[tokio::test]
    async fn failures_show_stderr_cut_short_without_credentials() {
        let url = "https://bot:hunter2-secret@example.com/g/p.git";
        let text = format!(
            "echo \"fatal: unable to access '{url}/': denied (hunter2-secret)\" >&2; \
             echo 'see https://other:pw-1234@mirror.example.com/x' >&2; exit 3"
        );
        let cmd = script(&text).hiding(url);
        for err in [
            sh(Duration::from_secs(30)).run_blocking(&cmd).unwrap_err(),
            sh(Duration::from_secs(30)).run(&cmd).await.unwrap_err(),
        ] {
            let GitError::Failed { status, .. } = &err else {
                panic!("{err:?}");
            };
            assert_eq!(status.code(), Some(3));
            let shown = err.to_string();
            assert!(!shown.contains("hunter2-secret"), "{shown}");
            assert!(!shown.contains("pw-1234"), "{shown}");
            assert!(shown.contains("'https://bot:***@example.com/g/p.git/'"));
            assert!(shown.contains("https://other:***@mirror.example.com/x"));
        }
        // A long message is cut; a silent failure shows the exit status.
        let long = sh(Duration::from_secs(30))
            .run_blocking(&script("head -c 100000 /dev/zero | tr '\\0' x >&2; exit 1"))
            .unwrap_err()
            .to_string();
        assert!(long.len() < MAX_SHOWN_STDERR + 64, "{}", long.len());
        assert!(long.ends_with("… (more than 65536 bytes)"), "{long}");
        let silent = sh(Duration::from_secs(30))
            .run(&script("exit 4"))
            .await
            .unwrap_err()
            .to_string();
        assert_eq!(silent, "git -c exited with exit status: 4");
    }

    #[tokio::test]
    async fn too_much_output_is_an_error_not_a_cut_answer() {
        let git = sh(Duration::from_secs(30)).max_stdout(1000);
        let exact = script("head -c 1000 /dev/zero");
        assert_eq!(git.run_blocking(&exact).unwrap().len(), 1000);
        assert_eq!(git.run(&exact).await.unwrap().len(), 1000);
        let more = script("head -c 100000 /dev/zero");
        for err in [
            git.run_blocking(&more).unwrap_err(),
            git.run(&more).await.unwrap_err(),
        ] {
            assert!(
                matches!(err, GitError::TooMuchOutput { limit: 1000, .. }),
                "{err:?}"
            );
        }
    }

    #[test]
    fn a_missing_program_says_so() {
        let err = Git::new(Duration::from_secs(5))
            .program("/nonexistent/git")
            .run_blocking(&GitCommand::new(["status"]))
            .unwrap_err();
        assert!(matches!(err, GitError::NoGit(_)), "{err:?}");
        assert!(err.to_string().contains("is git installed?"), "{err}");
    }

    #[test]
    fn real_git_runs_in_the_directory_given() {
        let repo = berth_tests::git_repo(&[("README", "hi\n")]);
        let out = Git::new(LOCAL_TIMEOUT)
            .run_blocking(
                &GitCommand::new(["rev-parse", "--is-inside-work-tree"]).in_dir(repo.path()),
            )
            .unwrap();
        assert_eq!(out, b"true\n");
    }
}
