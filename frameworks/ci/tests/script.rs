//! The rendered job script, run with the real `sh` in a temporary directory,
//! including SIGTERM (to the script, or to its whole process group).

#![allow(clippy::unwrap_used)]

use std::io::Read;
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use berth_ci::render;

fn lines(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

/// Runs the script for the given commands; returns (exit code, stdout).
fn run(before: &[&str], script: &[&str], after: &[&str]) -> (i32, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = render("job", &lines(before), &lines(script), &lines(after));
    let path = dir.path().join("job.sh");
    std::fs::write(&path, text).unwrap();
    let out = Command::new("sh")
        .arg(&path)
        .current_dir(dir.path())
        .process_group(0)
        .output()
        .unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        dir,
    )
}

/// What the commands write to stderr is in stdout, in the order written,
/// before the line that ends the job.
#[test]
fn stderr_and_stdout_are_one_stream_in_the_order_written() {
    let (code, out, _d) = run(
        &[],
        &[
            "echo one; echo two >&2; echo three",
            "ls /nonexistent-berth-dir",
        ],
        &["echo after >&2"],
    );
    assert_ne!(code, 0, "{out}");
    let at = |needle: &str| {
        out.find(needle)
            .unwrap_or_else(|| panic!("{needle:?} missing from {out:?}"))
    };
    assert!(at("\none\n") < at("\ntwo\n"), "{out}");
    assert!(at("\ntwo\n") < at("\nthree\n"), "{out}");
    assert!(at("\nthree\n") < at("No such file"), "{out}");
    assert!(at("No such file") < at("Running after_script"), "{out}");
    assert!(at("\nafter\n") < at("ERROR: Job failed"), "{out}");
}

/// The script marks its start on stderr, and writes nothing else there.
#[test]
fn the_script_marks_its_start_on_stderr_and_writes_nothing_else_there() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("job.sh");
    let text = render(
        "job",
        &lines(&["echo a >&2"]),
        &lines(&["echo b >&2; false"]),
        &lines(&["echo c >&2"]),
    );
    std::fs::write(&path, text).unwrap();
    let out = Command::new("sh")
        .arg(&path)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr),
        berth_ci::SCRIPT_START_MARKER
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("\na\n") && stdout.contains("\nb\n") && stdout.contains("\nc\n"),
        "{stdout}"
    );
}

#[test]
fn commands_are_printed_then_run() {
    let (code, out, _d) = run(&["echo before"], &["echo hello", "echo world"], &[]);
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        out,
        "Using shell: sh\n$ echo before\nbefore\n$ echo hello\nhello\n$ echo world\nworld\nJob succeeded\n"
    );
}

#[test]
fn first_failing_command_stops_the_job_and_its_code_is_kept() {
    let (code, out, _d) = run(&[], &["echo one", "sh -c 'exit 7'", "echo never"], &[]);
    assert_eq!(code, 7, "{out}");
    assert!(out.contains("one\n"));
    assert!(!out.contains("never\n"), "{out}");
    assert!(out.ends_with("ERROR: Job failed: exit code 7\n"), "{out}");
}

#[test]
fn a_failing_before_script_skips_script() {
    let (code, out, _d) = run(&["false"], &["echo script-ran"], &["echo after-ran"]);
    assert_eq!(code, 1);
    assert!(!out.contains("script-ran\n"));
    assert!(out.contains("after-ran\n"), "{out}");
}

#[test]
fn after_script_runs_after_failure_in_a_separate_shell() {
    let (code, out, _d) = run(
        &[],
        &["X=set-in-script", "cd /", "exit 3"],
        &["echo \"x=[$X]\"", "pwd"],
    );
    assert_eq!(code, 3, "{out}");
    let after = out
        .split("Running after_script\n")
        .nth(1)
        .expect("after_script section");
    // Neither the variable nor the directory change of the script leaks.
    assert!(
        after.starts_with("$ echo \"x=[$X]\"\nx=[]\n$ pwd\n"),
        "{out}"
    );
    assert!(!after.contains("\n/\n"), "{out}");
}

#[test]
fn after_script_failure_does_not_change_the_result() {
    let (code, out, _d) = run(&[], &["true"], &["false", "echo not-reached"]);
    assert_eq!(code, 0, "{out}");
    assert!(out.contains("WARNING: after_script failed"), "{out}");
    assert!(!out.contains("not-reached\n"));
}

#[test]
fn multi_line_commands_quotes_and_special_characters_survive() {
    let multi = "for i in 1 2; do\n  echo \"item $i\"\ndone\n";
    let (code, out, _d) = run(
        &[],
        &[
            multi,
            "echo 'single '\\''quoted'\\'' \"double\" $HOME-less \\$dollar'",
            "printf '%s\\n' \"a;b|c&d\" '`tick`' '$(sub)'",
            "echo ')' '(' '#not-comment' \"{\"",
        ],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert!(
        out.contains("$ for i in 1 2; do # collapsed multi-line command\nitem 1\nitem 2\n"),
        "{out}"
    );
    assert!(
        out.contains("\nsingle 'quoted' \"double\" $HOME-less \\$dollar\n"),
        "{out}"
    );
    assert!(out.contains("\na;b|c&d\n`tick`\n$(sub)\n"), "{out}");
    assert!(out.contains("\n) ( #not-comment {\n"), "{out}");
}

#[test]
fn a_failure_inside_a_multi_line_command_stops_it() {
    let (code, out, _d) = run(&[], &["echo a\nfalse\necho b"], &[]);
    assert_eq!(code, 1, "{out}");
    assert!(!out.contains("\nb\n"), "{out}");
}

#[test]
fn state_persists_between_commands_of_the_script() {
    let (code, out, d) = run(
        &["mkdir sub", "cd sub", "V=kept"],
        &["echo \"$V\" > file"],
        &[],
    );
    assert_eq!(code, 0, "{out}");
    assert_eq!(
        std::fs::read_to_string(d.path().join("sub/file")).unwrap(),
        "kept\n"
    );
}

#[test]
fn sigterm_is_forwarded_then_after_script_runs_and_exit_is_143() {
    // Only the script's own pid gets the signal: it must forward it.
    sigterm(false);
}

#[test]
fn sigterm_to_the_whole_process_group_runs_after_script_and_exits_143() {
    // What the agent's process containerizer does on a kill.
    sigterm(true);
}

fn sigterm(whole_group: bool) {
    let (code, seen, dir) = terminated(whole_group, None);
    assert_eq!(code, Some(143), "{seen}");
    assert!(seen.contains("Job cancelled (SIGTERM)"), "{seen}");
    assert!(
        seen.contains("Running after_script\n$ echo after-ran status=$CI_JOB_STATUS\nafter-ran status=canceled\n"),
        "{seen}"
    );
    assert!(seen.ends_with("ERROR: Job cancelled\n"), "{seen}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("term-seen")).unwrap(),
        "got-term\n",
        "the running command got SIGTERM"
    );
}

/// A SIGTERM once the job's `CI_JOB_TIMEOUT` has passed is the runner's
/// kill at the timeout: the log says so, and `after_script` sees `failed`;
/// one well before it is a cancel.
#[test]
fn sigterm_at_the_timeout_says_the_job_timed_out() {
    let (code, seen, _dir) = terminated(true, Some("1"));
    assert_eq!(code, Some(143), "{seen}");
    assert!(
        seen.contains("Job timed out after 1 seconds (SIGTERM)"),
        "{seen}"
    );
    assert!(seen.contains("after-ran status=failed\n"), "{seen}");
    assert!(
        seen.ends_with("ERROR: Job failed: execution took longer than 1 seconds\n"),
        "{seen}"
    );
    assert!(!seen.contains("cancelled"), "{seen}");

    let (code, seen, _dir) = terminated(true, Some("3600"));
    assert_eq!(code, Some(143), "{seen}");
    assert!(seen.ends_with("ERROR: Job cancelled\n"), "{seen}");
}

/// Runs a job whose command waits for SIGTERM, with `CI_JOB_TIMEOUT` set
/// to `timeout`, and sends it SIGTERM (to the script, or to its whole
/// process group) once the command runs; with a timeout, not before it
/// has passed. Returns the exit code, the output and the job's directory.
fn terminated(
    whole_group: bool,
    timeout: Option<&str>,
) -> (Option<i32>, String, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let text = render(
        "job",
        &[],
        &lines(&[
            "echo started",
            "trap 'echo got-term > term-seen; exit 1' TERM; touch ready; sleep 30 & wait $!",
        ]),
        &lines(&["echo after-ran status=$CI_JOB_STATUS"]),
    );
    let path = dir.path().join("job.sh");
    std::fs::write(&path, text).unwrap();
    let mut cmd = Command::new("sh");
    cmd.arg(&path)
        .current_dir(dir.path())
        .process_group(0)
        .stdout(Stdio::piped());
    if let Some(t) = timeout {
        cmd.env("CI_JOB_TIMEOUT", t);
    }
    let started = Instant::now();
    let mut child = cmd.spawn().unwrap();
    let mut stdout = child.stdout.take().unwrap();
    // Wait until the long command runs with its trap set.
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.path().join("ready").exists() {
        assert!(Instant::now() < deadline, "the command never started");
        std::thread::sleep(Duration::from_millis(20));
    }
    if timeout == Some("1") {
        // Past the timeout, as the runner's timer would be.
        std::thread::sleep(Duration::from_millis(1200).saturating_sub(started.elapsed()));
    }
    let pid = i32::try_from(child.id()).unwrap();
    let target = if whole_group {
        format!("-{pid}")
    } else {
        pid.to_string()
    };
    let killed = Command::new("kill")
        .args(["-TERM", "--", &target])
        .status()
        .unwrap();
    assert!(killed.success());
    let mut seen = String::new();
    stdout.read_to_string(&mut seen).unwrap();
    let status = child.wait().unwrap();
    (status.code(), seen, dir)
}

#[test]
fn the_script_is_valid_for_dash_and_bash_when_present() {
    for shell in ["dash", "bash", "busybox"] {
        let Ok(probe) = Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {shell}"))
            .output()
        else {
            continue;
        };
        if !probe.status.success() {
            continue;
        }
        let dir = tempfile::tempdir().unwrap();
        let text = render(
            "job",
            &[],
            &lines(&["echo 'it works'", "exit 4"]),
            &lines(&["echo after"]),
        );
        let path = dir.path().join("job.sh");
        std::fs::write(&path, text).unwrap();
        let mut cmd = Command::new(shell);
        if shell == "busybox" {
            cmd.arg("sh");
        }
        let out = cmd.arg(&path).process_group(0).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert_eq!(out.status.code(), Some(4), "{shell}: {stdout}");
        assert!(
            stdout.contains("it works\n") && stdout.contains("after\n"),
            "{shell}: {stdout}"
        );
    }
}
