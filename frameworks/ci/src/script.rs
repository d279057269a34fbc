//! Rendering a planned job into the POSIX `sh` script its task runs.
//!
//! The script (for busybox sh, dash or bash):
//! - writes [`SCRIPT_START_MARKER`] to its standard error, then sends its
//!   standard error to its standard output (`exec 2>&1`),
//!   so the job's output is one stream in the order written, as GitLab's
//!   runner keeps it: a test's failure on stderr comes before the
//!   `ERROR: Job failed` that follows it, not in a file of its own;
//! - runs `before_script` then `script` in one subshell with `set -e`
//!   (and `pipefail` where the shell has it), printing each command as
//!   `$ command` before running it, so the first failing command stops it;
//! - runs `after_script` in a separate subshell, after a line
//!   `Running after_script`, whether the script failed or not (its failure
//!   does not change the job's result);
//! - prints `Job succeeded` or `ERROR: Job failed: exit code N` and exits
//!   with the script's exit code;
//! - on SIGTERM (cancel) sends SIGTERM to its process group, so the running
//!   command gets it, waits for the script part to end, runs after_script
//!   and exits 143. The whole group is signalled only when the script leads
//!   its process group (checked in `/proc`; the agent's process
//!   containerizer starts tasks so); otherwise just the script part's
//!   subshell is, and a command it started may outlive the cancel.
//! - Runs the script part in the background (to be able to wait for it
//!   while a signal arrives), so its standard input is `/dev/null`.
//!
//! Variables are not in the script: the executor passes
//! [`PlannedJob::variables`](crate::PlannedJob) as the task's environment,
//! which keeps secret values out of the script text.

use crate::plan::PlannedJob;

/// The line a job's script writes to its stderr before anything else,
/// before it sends its stderr to its stdout. The task's `stderr` then
/// holds the agent's lines from before the script (its fetches) above
/// this line and its lines from after (its uploads) below it, so the log
/// collector can put each where it belongs around `stdout` and leaves the
/// line itself out. Framed by ASCII record separators, so no ordinary
/// output is mistaken for it.
pub const SCRIPT_START_MARKER: &str = "\u{1e}berth-ci: job script starts\u{1e}\n";

/// Quotes `s` for sh as one word.
pub fn sh_quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', r"'\''"))
}

/// The line printed before a command: `$ command`; a multi-line command is
/// shown by its first line, as GitLab does.
fn echo_line(command: &str) -> String {
    let mut lines = command.trim_end_matches('\n').lines();
    let first = lines.next().unwrap_or_default();
    if lines.next().is_some() {
        format!("$ {first} # collapsed multi-line command")
    } else {
        format!("$ {first}")
    }
}

fn commands(out: &mut String, commands: &[String]) {
    for c in commands {
        out.push_str(&format!(
            "  printf '%s\\n' {}\n  eval {}\n",
            sh_quote(&echo_line(c)),
            sh_quote(c)
        ));
    }
}

/// The shell script for `job` (see the module docs for what it does).
pub fn render_script(job: &PlannedJob) -> String {
    render(
        &job.name,
        &job.before_script,
        &job.script,
        &job.after_script,
    )
}

/// The shell script for the given command lists.
pub fn render(
    name: &str,
    before_script: &[String],
    script: &[String],
    after_script: &[String],
) -> String {
    let mut s = String::new();
    s.push_str("#!/bin/sh\n");
    s.push_str(&format!(
        "# berth-ci job {}\n",
        name.replace(['\n', '\r'], " ")
    ));
    // Where the script starts, for the log collector (see the module
    // docs); then one stream, in the order written.
    s.push_str("printf '\\036berth-ci: job script starts\\036\\n' >&2\nexec 2>&1\n");
    s.push_str("berth_cancelled=0\nberth_pid=\n");
    // Signal the whole group only when this shell leads it (field 5 of
    // /proc/self/stat is the group id): otherwise the group is the caller's.
    s.push_str(
        "berth_leader=0\n\
         if read -r berth_stat < /proc/$$/stat 2>/dev/null; then\n  \
         set -- $berth_stat\n  \
         if [ \"$5\" = \"$$\" ]; then berth_leader=1; fi\n\
         fi\n",
    );
    s.push_str(
        "berth_on_term() {\n  \
         if [ \"$berth_cancelled\" = 1 ]; then return; fi\n  \
         berth_cancelled=1\n  \
         printf '%s\\n' 'Job cancelled (SIGTERM)'\n  \
         if [ \"$berth_leader\" = 1 ]; then\n    \
         kill -TERM 0 2>/dev/null\n  \
         elif [ -n \"$berth_pid\" ]; then\n    \
         kill -TERM \"$berth_pid\" 2>/dev/null\n  \
         fi\n\
         }\n",
    );
    s.push_str("trap berth_on_term TERM\n");
    s.push_str("(\n  set -e\n  (set -o pipefail) 2>/dev/null && set -o pipefail\n");
    commands(&mut s, before_script);
    commands(&mut s, script);
    s.push_str(") &\nberth_pid=$!\n");
    // `wait` returns early (> 128) when a trapped signal arrives; wait again
    // until the script part has really ended.
    s.push_str(
        "berth_rc=0\n\
         while :; do\n  \
         wait \"$berth_pid\"; berth_rc=$?\n  \
         if kill -0 \"$berth_pid\" 2>/dev/null; then continue; fi\n  \
         break\n\
         done\n",
    );
    if !after_script.is_empty() {
        s.push_str("printf '%s\\n' 'Running after_script'\n(\n  set -e\n");
        commands(&mut s, after_script);
        // Not `( ... ) || ...`: that would switch `set -e` off inside.
        s.push_str(
            ")\nberth_after_rc=$?\n\
             if [ \"$berth_after_rc\" -ne 0 ]; then\n  \
             printf '%s\\n' \"WARNING: after_script failed with exit code $berth_after_rc\"\n\
             fi\n",
        );
    }
    s.push_str(
        "if [ \"$berth_cancelled\" = 1 ]; then\n  \
         printf '%s\\n' 'ERROR: Job cancelled'\n  exit 143\n\
         fi\n\
         if [ \"$berth_rc\" -eq 0 ]; then\n  \
         printf '%s\\n' 'Job succeeded'\n\
         else\n  \
         printf '%s\\n' \"ERROR: Job failed: exit code $berth_rc\"\n\
         fi\n\
         exit \"$berth_rc\"\n",
    );
    s
}
