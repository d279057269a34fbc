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
//! - on SIGTERM (cancel, or the runner's kill at the job's `timeout`)
//!   says which it was (a SIGTERM within 2 s of `CI_JOB_TIMEOUT` seconds
//!   after the script started, or later, is the timeout: `ERROR: Job
//!   failed: execution took longer than N seconds`, and `after_script`
//!   sees `CI_JOB_STATUS=failed`), and sends SIGTERM to its process group, so the running
//!   command gets it, waits for the script part to end, runs after_script
//!   and exits 143. The whole group is signalled only when the script leads
//!   its process group (checked in `/proc`; the agent's process
//!   containerizer starts tasks so); otherwise just the script part's
//!   subshell is, and a command it started may outlive the cancel.
//! - Runs the script part in the background (to be able to wait for it
//!   while a signal arrives), so its standard input is `/dev/null`.
//!
//! - sets `CI_JOB_STATUS` (`running`, then `success`, `failed` or
//!   `canceled` for `after_script`, as GitLab's runner does);
//! - starts its output with the job's notices (what berth ignores of the
//!   job's definition) and a line `Using shell: bash` (or `sh`).
//!
//! A task runs [`task_script`]: a wrapper that runs the job's script with
//! `bash` where the job's environment has one (the host for a shell job,
//! the image for a Docker job), as GitLab's shell and Docker executors do,
//! else with `sh`; and a prelude (see [`prelude`]) that sets the job's
//! directories and the variables known only where the job runs.
//!
//! Variables are not in the script: the executor passes
//! [`PlannedJob::variables`](crate::PlannedJob) as the task's environment,
//! which keeps secret values out of the script text.

use std::collections::HashMap;

use crate::plan::PlannedJob;
use crate::predefined::{BUILDS_DIR_PLACEHOLDER, PROJECT_DIR_PLACEHOLDER};
use crate::vars::is_name;

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
    render_job(
        &job.name,
        &job.notices,
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
    render_job(name, &[], before_script, script, after_script)
}

/// Whether `name` can be a shell variable's name.
fn is_shell_name(name: &str) -> bool {
    is_name(name) && !name.starts_with(|c: char| c.is_ascii_digit())
}

/// The script of a job's task: [`prelude`] then [`render_script`], run by
/// `bash` where the job's environment has it, else by `sh` (the script is
/// given to `bash -c` as a value, not read again by the shell); `env` is
/// the task's environment (its variables whose values hold a directory
/// placeholder get the job's real directory).
pub fn task_script(job: &PlannedJob, project: &str, env: &HashMap<String, String>) -> String {
    let mut names: Vec<&str> = env
        .iter()
        .filter(|(k, v)| {
            is_shell_name(k)
                && (v.contains(PROJECT_DIR_PLACEHOLDER) || v.contains(BUILDS_DIR_PLACEHOLDER))
        })
        .map(|(k, _)| k.as_str())
        .collect();
    names.sort_unstable();
    let inner = format!("{}{}", prelude(project, &names), render_script(job));
    format!(
        r#"berth_job_script={}
if command -v bash >/dev/null 2>&1; then
  exec bash -c "$berth_job_script" berth-ci bash
fi
set -- sh
eval "$berth_job_script"
"#,
        sh_quote(&inner)
    )
}

/// `berth_sub NAME PLACEHOLDER DIR`: every PLACEHOLDER in `$NAME` becomes
/// DIR, by parameter expansion; only the name is evaluated, never the
/// value.
const SUBSTITUTE: &str = r#"berth_sub() {
  eval "berth_v=\${$1}"
  berth_out=
  while :; do
    case $berth_v in
      *"$2"*) berth_out=$berth_out${berth_v%%"$2"*}$3; berth_v=${berth_v#*"$2"} ;;
      *) break ;;
    esac
  done
  eval "$1=\$berth_out\$berth_v; export $1"
}
"#;

/// The variables only the agent's host knows.
const RUNNER_VARIABLES: &str = r#"CI_JOB_STARTED_AT=$(date -u +%Y-%m-%dT%H:%M:%SZ)
CI_RUNNER_ID=${BERTH_AGENT_ID:-}
CI_RUNNER_DESCRIPTION="berth agent $CI_RUNNER_ID"
case $(uname -s 2>/dev/null) in
  Linux) berth_os=linux ;;
  Darwin) berth_os=darwin ;;
  *) berth_os=$(uname -s 2>/dev/null) ;;
esac
case $(uname -m 2>/dev/null) in
  x86_64|amd64) berth_arch=amd64 ;;
  aarch64|arm64) berth_arch=arm64 ;;
  i?86) berth_arch=386 ;;
  armv*) berth_arch=arm ;;
  *) berth_arch=$(uname -m 2>/dev/null) ;;
esac
CI_RUNNER_EXECUTABLE_ARCH=$berth_os/$berth_arch
export CI_JOB_STARTED_AT CI_RUNNER_ID CI_RUNNER_DESCRIPTION CI_RUNNER_EXECUTABLE_ARCH
"#;

/// The start of a job's script (POSIX `sh`; prints nothing; `$1` names
/// the shell): `CI_BUILDS_DIR` is the task's sandbox and `CI_PROJECT_DIR`
/// the checkout in it (`project`); the variables `names` get them in
/// place of the plan's placeholders (by parameter expansion: the values
/// are not read again by the shell); `CI_JOB_STARTED_AT` and the
/// `CI_RUNNER_*` variables of the agent are set; the script goes to the
/// project directory.
pub fn prelude(project: &str, names: &[&str]) -> String {
    let mut s = String::new();
    s.push_str("berth_shell=${1:-sh}\n");
    s.push_str(&format!(
        "CI_BUILDS_DIR=$BERTH_SANDBOX\nCI_PROJECT_DIR=\"$BERTH_SANDBOX\"/{}\nexport CI_BUILDS_DIR CI_PROJECT_DIR\n",
        sh_quote(project)
    ));
    if !names.is_empty() {
        s.push_str(SUBSTITUTE);
        let octal = |p: &str| sh_quote(&p.replace('\u{1e}', "\\036"));
        s.push_str(&format!(
            "berth_ph_project=$(printf {})\nberth_ph_builds=$(printf {})\n",
            octal(PROJECT_DIR_PLACEHOLDER),
            octal(BUILDS_DIR_PLACEHOLDER),
        ));
        s.push_str(&format!(
            "for berth_name in {}; do\n  berth_sub \"$berth_name\" \"$berth_ph_builds\" \"$CI_BUILDS_DIR\"\n  berth_sub \"$berth_name\" \"$berth_ph_project\" \"$CI_PROJECT_DIR\"\ndone\n",
            names.join(" ")
        ));
    }
    s.push_str(RUNNER_VARIABLES);
    s.push_str("cd \"$CI_PROJECT_DIR\" || exit 1\n");
    s
}

/// The shell script for the given notices and command lists.
fn render_job(
    name: &str,
    notices: &[String],
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
    for notice in notices {
        s.push_str(&format!(
            "printf '%s\\n' {}\n",
            sh_quote(&format!("WARNING: {}", notice.replace(['\n', '\r'], " ")))
        ));
    }
    s.push_str("printf 'Using shell: %s\\n' \"${berth_shell:-sh}\"\n");
    s.push_str("CI_JOB_STATUS=running; export CI_JOB_STATUS\n");
    s.push_str("berth_cancelled=0\nberth_timed_out=0\nberth_pid=\n");
    // When the job started, to tell a kill at its `timeout` from a cancel:
    // both arrive as SIGTERM.
    s.push_str("berth_started=$(date +%s 2>/dev/null) || berth_started=\n");
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
         berth_now=$(date +%s 2>/dev/null) || berth_now=\n  \
         case \"$CI_JOB_TIMEOUT\" in ''|*[!0-9]*) ;; *)\n    \
         if [ -n \"$berth_started\" ] && [ -n \"$berth_now\" ] \
         && [ $((berth_now - berth_started + 2)) -ge \"$CI_JOB_TIMEOUT\" ]; then\n      \
         berth_timed_out=1\n    \
         fi ;;\n  \
         esac\n  \
         if [ \"$berth_timed_out\" = 1 ]; then\n    \
         printf '%s\\n' \"Job timed out after $CI_JOB_TIMEOUT seconds (SIGTERM)\"\n  \
         else\n    \
         printf '%s\\n' 'Job cancelled (SIGTERM)'\n  \
         fi\n  \
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
    s.push_str(
        "if [ \"$berth_timed_out\" = 1 ]; then CI_JOB_STATUS=failed\n\
         elif [ \"$berth_cancelled\" = 1 ]; then CI_JOB_STATUS=canceled\n\
         elif [ \"$berth_rc\" -eq 0 ]; then CI_JOB_STATUS=success\n\
         else CI_JOB_STATUS=failed; fi\n",
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
        "if [ \"$berth_timed_out\" = 1 ]; then\n  \
         printf '%s\\n' \"ERROR: Job failed: execution took longer than $CI_JOB_TIMEOUT seconds\"\n  \
         exit 143\n\
         fi\n\
         if [ \"$berth_cancelled\" = 1 ]; then\n  \
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
