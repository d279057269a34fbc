//! Standard output of the `berth` command, where a closed pipe is a quiet
//! end.
//!
//! Rust ignores SIGPIPE, so a write to a pipe whose reader is gone (`berth
//! state --json | head -1`) fails with `BrokenPipe`, and `print!` panics on
//! it. Everything the command prints on stdout goes through [`Stdout`] (or
//! the [`out!`] and [`outln!`] macros) instead: a closed pipe becomes a
//! [`StdoutClosed`] error, which ends a command early with status 0 and no
//! message ([`is_closed`]), the way `cat` or `ls` end in a pipeline.

use std::fmt;
use std::io::{self, Write};

/// The reader of stdout went away: nothing more can be shown, and nothing
/// is wrong.
#[derive(Debug)]
pub(crate) struct StdoutClosed;

impl fmt::Display for StdoutClosed {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("standard output was closed")
    }
}

impl std::error::Error for StdoutClosed {}

/// Turns a `BrokenPipe` into [`StdoutClosed`]; other errors stay.
fn closed(e: io::Error) -> io::Error {
    if e.kind() == io::ErrorKind::BrokenPipe {
        io::Error::new(io::ErrorKind::BrokenPipe, StdoutClosed)
    } else {
        e
    }
}

/// The process's stdout, whose writes fail with [`StdoutClosed`] once the
/// reader is gone.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Stdout;

impl Write for Stdout {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        io::stdout().lock().write(buf).map_err(closed)
    }

    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        io::stdout().lock().write_all(buf).map_err(closed)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stdout().lock().flush().map_err(closed)
    }
}

/// Writes formatted text to stdout and flushes it, so that a closed pipe
/// shows now and not when the process exits.
///
/// # Errors
/// [`StdoutClosed`] (as an `io::Error`) when the reader is gone.
pub(crate) fn print(args: fmt::Arguments<'_>) -> io::Result<()> {
    let mut out = io::stdout().lock();
    out.write_fmt(args)
        .and_then(|()| out.flush())
        .map_err(closed)
}

/// Whether an error is (or was caused by) a closed stdout.
pub(crate) fn is_closed(e: &anyhow::Error) -> bool {
    e.chain().any(|cause| {
        cause.is::<StdoutClosed>()
            || cause
                .downcast_ref::<io::Error>()
                .and_then(io::Error::get_ref)
                .is_some_and(|inner| inner.is::<StdoutClosed>())
    })
}

/// `print!` to stdout through [`print`]: evaluates to `io::Result<()>`.
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::out::print(format_args!($($arg)*))
    };
}

/// `println!` to stdout through [`print`]: evaluates to `io::Result<()>`.
macro_rules! outln {
    () => {
        $crate::out::print(format_args!("\n"))
    };
    ($($arg:tt)*) => {
        $crate::out::print(format_args!("{}\n", format_args!($($arg)*)))
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_a_closed_stdout_is_a_quiet_end() {
        let pipe = anyhow::Error::from(closed(io::Error::from(io::ErrorKind::BrokenPipe)));
        assert!(is_closed(&pipe));
        assert!(is_closed(&pipe.context("printing the table")));
        assert!(is_closed(&anyhow::Error::from(StdoutClosed)));
        // A broken pipe elsewhere (a socket, a child's stdin) is an error.
        let socket = anyhow::Error::from(io::Error::from(io::ErrorKind::BrokenPipe));
        assert!(!is_closed(&socket));
        assert!(!is_closed(&anyhow::anyhow!("no master")));
        assert_eq!(
            closed(io::Error::from(io::ErrorKind::NotFound)).kind(),
            io::ErrorKind::NotFound
        );
    }
}
