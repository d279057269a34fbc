//! The example repositories under `examples/`, each run end to end through
//! the real binary: the example's files are committed into a fresh git
//! repository and `berth ci run` runs it on its embedded cluster; the tests
//! assert the exit code, the jobs' statuses as printed, and the stored logs
//! and artifacts. One test per scenario.

#![allow(clippy::unwrap_used)]

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// A fresh repository holding a copy of `examples/<name>`, committed.
fn example_repo(name: &str) -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../examples")
        .join(name);
    assert!(
        root.join(".gitlab-ci.yml").is_file(),
        "examples/{name} has no .gitlab-ci.yml"
    );
    berth_tests::git_repo_of_dir(&root)
}

/// One `berth ci run`: its exit code, its output (stdout then stderr) and
/// its data directory.
struct Run {
    code: Option<i32>,
    out: String,
    data: tempfile::TempDir,
}

impl Run {
    /// Every stored job log, by path.
    fn logs(&self) -> Vec<(PathBuf, String)> {
        berth_tests::files_under(&self.data.path().join("ci/logs"))
            .into_iter()
            .map(|p| {
                let text = std::fs::read_to_string(&p).unwrap();
                (p, text)
            })
            .collect()
    }

    /// The stored logs, one after the other.
    fn all_logs(&self) -> String {
        self.logs().into_iter().map(|(_, t)| t).collect()
    }

    /// The position of a progress line `<status> <job>` in the output.
    fn line(&self, status: &str, job: &str) -> usize {
        let needle = format!("  {status:<10} {job}");
        self.out
            .find(&needle)
            .unwrap_or_else(|| panic!("no line {needle:?} in:\n{}", self.out))
    }
}

fn command(repo: &Path, data: &Path, docker: bool, extra: &[&str]) -> Command {
    let mut cmd = Command::new(BERTH);
    cmd.args(["ci", "run"])
        .arg(repo)
        .args(["--resources", "cpus:4;mem:4096;disk:10000", "--data-dir"])
        .arg(data)
        .args(extra);
    if !docker {
        cmd.arg("--no-docker");
    }
    cmd
}

fn ci_run(repo: &Path, docker: bool, extra: &[&str]) -> Run {
    let data = tempfile::tempdir().unwrap();
    let out = command(repo, data.path(), docker, extra)
        .output()
        .expect("berth runs");
    Run {
        code: out.status.code(),
        out: format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        data,
    }
}

/// Waits (at most `limit`) until `done` holds.
fn wait_until(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// examples/ci-allow-failure: allowed failures (any, and by exit code)
/// let the pipeline pass; with `--var BREAK_UNIT=yes` a failure that is not
/// allowed fails it, skips the next stage and shows the job's log.
#[test]
fn allow_failure_example_passes_with_warnings_until_a_real_failure() {
    let repo = example_repo("ci-allow-failure");
    let run = ci_run(repo.path(), false, &[]);
    assert_eq!(run.code, Some(0), "{}", run.out);
    run.line("success", "build");
    run.line("failed", "lint");
    run.line("failed", "integration");
    run.line("success", "unit");
    run.line("success", "deploy");
    assert!(
        run.out.contains("--- log of failed job lint ---"),
        "{}",
        run.out
    );
    assert!(run.out.contains("lint found 2 warnings"), "{}", run.out);
    assert!(
        run.out
            .contains("pipeline #1: success (with allowed failures)"),
        "{}",
        run.out
    );
    let logs = run.all_logs();
    assert!(logs.contains("unit: 3 of 3 tests passed"), "{logs}");
    assert!(logs.contains("deploying app v1"), "the artifact: {logs}");

    let run = ci_run(repo.path(), false, &["--var", "BREAK_UNIT=yes"]);
    assert_eq!(run.code, Some(1), "{}", run.out);
    run.line("failed", "unit");
    run.line("skipped", "deploy");
    let out = &run.out;
    assert!(out.contains("--- log of failed job unit ---"), "{out}");
    assert!(out.contains("unit: 1 of 3 tests failed"), "{out}");
    assert!(out.contains("unit cleans up"), "after_script ran: {out}");
    assert!(out.contains("ERROR: Job failed: exit code 7"), "{out}");
    assert!(
        !out.contains("unit tests done"),
        "the script stopped: {out}"
    );
    assert!(!run.all_logs().contains("deploying"), "deploy never ran");
    assert!(out.contains("pipeline #1: failed"), "{out}");
}

/// examples/ci-needs-dag: jobs start as soon as what they need has passed
/// (test-fast runs while build-slow still sleeps), with only the artifacts
/// of what they need.
#[test]
fn needs_dag_example_starts_each_job_when_its_needs_pass() {
    let repo = example_repo("ci-needs-dag");
    let run = ci_run(repo.path(), false, &[]);
    assert_eq!(run.code, Some(0), "{}", run.out);
    for job in [
        "build-fast",
        "build-slow",
        "lint",
        "test-fast",
        "test-slow",
        "package",
    ] {
        run.line("success", job);
    }
    // Not stage order: test-fast (stage test) and lint passed before
    // build-slow (stage build) did.
    let slow = run.line("success", "build-slow");
    assert!(run.line("success", "test-fast") < slow, "{}", run.out);
    assert!(run.line("success", "lint") < slow, "{}", run.out);
    assert!(run.line("success", "package") > run.line("success", "test-slow"));
    let logs = run.all_logs();
    assert!(
        logs.contains("test-fast has only the artifacts of build-fast"),
        "{logs}"
    );
    assert!(logs.contains("package is fast part+slow part+"), "{logs}");
    assert!(run.out.contains("pipeline #1: success"), "{}", run.out);
}

/// examples/ci-matrix: one job per combination, each with its variables;
/// the next stage gets all their artifacts.
#[test]
fn matrix_example_runs_one_job_per_combination() {
    let repo = example_repo("ci-matrix");
    let run = ci_run(repo.path(), false, &[]);
    assert_eq!(run.code, Some(0), "{}", run.out);
    let combos = [
        ("linux", "amd64"),
        ("linux", "arm64"),
        ("freebsd", "amd64"),
        ("freebsd", "arm64"),
        ("plan9", "386"),
    ];
    let logs = run.all_logs();
    for (os, arch) in combos {
        run.line("success", &format!("build: [{os}, {arch}]"));
        assert!(logs.contains(&format!("built {os}/{arch}")), "{logs}");
    }
    assert_eq!(
        run.out.matches("success    build: [").count(),
        5,
        "{}",
        run.out
    );
    run.line("success", "collect");
    assert!(logs.contains("collect has all 5 builds"), "{logs}");
}

/// examples/ci-manual: manual jobs wait; `--play` plays one, which gets
/// the build's artifact; the other stays manual and the pipeline passes.
/// A `--play` naming no job is refused before anything runs.
#[test]
fn manual_example_waits_until_a_job_is_played() {
    let repo = example_repo("ci-manual");
    let run = ci_run(repo.path(), false, &["--play", "deploy-staging"]);
    assert_eq!(run.code, Some(0), "{}", run.out);
    run.line("success", "build");
    run.line("manual", "deploy-staging");
    let played = run.line("success", "deploy-staging");
    assert!(played > run.line("manual", "deploy-staging"));
    run.line("manual", "deploy-production");
    assert!(
        !run.out.contains("success    deploy-production"),
        "{}",
        run.out
    );
    let logs = run.all_logs();
    assert!(logs.contains("deploying v1.2.3 to staging"), "{logs}");
    assert!(!logs.contains("to production"), "{logs}");
    assert!(run.out.contains("pipeline #1: success"), "{}", run.out);

    let run = ci_run(repo.path(), false, &["--play", "deploy-everywhere"]);
    assert_eq!(run.code, Some(2), "{}", run.out);
    assert!(run.out.contains("has no job of that name"), "{}", run.out);
    assert!(run.out.contains("deploy-production"), "lists the jobs");
    assert!(
        !run.data.path().join("ci").exists(),
        "nothing ran: {:?}",
        berth_tests::files_under(run.data.path())
    );
}

/// examples/ci-cancel: Ctrl-C cancels the pipeline: the running job gets
/// SIGTERM and its after_script runs, the next stage never starts, and
/// `berth ci run` exits 1 once the job has ended.
#[test]
fn cancel_example_is_canceled_by_ctrl_c() {
    let repo = example_repo("ci-cancel");
    let data = tempfile::tempdir().unwrap();
    let out_path = data.path().join("out.txt");
    let run_data = data.path().join("run");
    let mut child = command(repo.path(), &run_data, false, &[])
        .stdout(std::fs::File::create(&out_path).unwrap())
        .stderr(Stdio::piped())
        .spawn()
        .expect("berth runs");
    // slow-test is the first job: logs/1/0-1.log.
    let log = run_data.join("ci/logs/1/0-1.log");
    wait_until(Duration::from_secs(60), "slow-test to start", || {
        std::fs::read_to_string(&log).is_ok_and(|t| t.contains("slow-test started"))
    });
    let sent = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(sent.success());
    let deadline = Instant::now() + Duration::from_secs(40);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("berth ci run did not end after Ctrl-C");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut child.stderr.take().unwrap(), &mut stderr).unwrap();
    let out = std::fs::read_to_string(&out_path).unwrap();
    assert_eq!(status.code(), Some(1), "{out}{stderr}");
    assert!(stderr.contains("canceling pipeline #1"), "{stderr}");
    assert!(out.contains("canceled   slow-test"), "{out}");
    assert!(out.contains("canceled   deploy"), "{out}");
    assert!(out.contains("pipeline #1: canceled"), "{out}");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(
        text.contains("after_script of slow-test removes the test database"),
        "{text}"
    );
    assert!(!text.contains("slow-test finished"), "{text}");
    // deploy (job 1) never started: no log of it.
    assert!(!run_data.join("ci/logs/1/1-1.log").exists());
}

const SECRET: &str = "hunter2-but-longer-4242";

/// examples/ci-masked-secret: the secret given with `--secret` reaches the
/// job, and no stored log (nor what `berth ci run` prints) holds it.
#[test]
fn masked_secret_example_never_stores_the_secret() {
    let repo = example_repo("ci-masked-secret");
    let secret = format!("DEPLOY_TOKEN={SECRET}");
    let run = ci_run(repo.path(), false, &["--secret", &secret]);
    assert_eq!(run.code, Some(0), "{}", run.out);
    run.line("success", "deploy");
    assert!(!run.out.contains(SECRET), "{}", run.out);
    let logs = run.all_logs();
    assert!(logs.contains("using token [MASKED]"), "{logs}");
    assert!(logs.contains("token on stderr [MASKED]"), "{logs}");
    assert!(logs.contains("Bearer [MASKED]"), "{logs}");
    // The job had the real value.
    assert!(
        logs.contains(&format!("the token has {} characters", SECRET.len())),
        "{logs}"
    );
    let stored = run.logs();
    assert!(!stored.is_empty());
    // Neither the CI logs nor the agent's sandbox files (its log API's
    // source) hold it: the agent's task loggers masked it first.
    let mut sandbox_files = 0;
    for path in berth_tests::files_under(run.data.path()) {
        let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
        let sandbox_log = name == "stdout" || name == "stderr";
        if path.extension().is_some_and(|e| e == "log") || sandbox_log {
            let text = String::from_utf8_lossy(&std::fs::read(&path).unwrap()).into_owned();
            assert!(
                !text.contains(SECRET),
                "{} holds the secret",
                path.display()
            );
            if sandbox_log && text.contains("[MASKED]") {
                sandbox_files += 1;
            }
        }
    }
    // The job's script sends its stderr to its stdout (one stream, in the
    // order written): the sandbox's stdout holds both, masked.
    assert_eq!(
        sandbox_files,
        1,
        "the job's stdout, masked, under {}",
        run.data.path().display()
    );

    // Without the secret the job says how to give it.
    let run = ci_run(repo.path(), false, &[]);
    assert_eq!(run.code, Some(1), "{}", run.out);
    assert!(
        run.out.contains("run with --secret DEPLOY_TOKEN=VALUE"),
        "{}",
        run.out
    );
}

/// examples/ci-docker: jobs with `image` run in containers of the local
/// busybox image, and an artifact made in one reaches the next.
#[test]
fn docker_example_runs_in_the_busybox_image() {
    if !berth_tests::docker_ready("docker_example_runs_in_the_busybox_image") {
        return;
    }
    let repo = example_repo("ci-docker");
    let run = ci_run(repo.path(), true, &[]);
    assert_eq!(run.code, Some(0), "{}", run.out);
    run.line("success", "build");
    run.line("success", "test");
    let logs = run.all_logs();
    // The image has no /etc/os-release (the host does), and the project is
    // under the container's sandbox mount.
    assert!(
        logs.contains("build runs inside the busybox image"),
        "{logs}"
    );
    assert!(logs.contains("built in /mnt/berth/sandbox/"), "{logs}");
    assert!(
        logs.contains("test got the artifact from the other container"),
        "{logs}"
    );
}

/// examples/rust-crate: a Rust crate built, then tested with the build's
/// `target/` passed on as an artifact (needs cargo on this machine).
#[test]
fn rust_crate_example_builds_and_tests() {
    let repo = example_repo("rust-crate");
    let run = ci_run(repo.path(), false, &[]);
    assert_eq!(run.code, Some(0), "{}", run.out);
    run.line("success", "build");
    run.line("success", "test");
    assert!(run.out.contains("pipeline #1: success"), "{}", run.out);
}

/// Every example's pipeline file passes `berth ci lint` without errors or
/// warnings.
#[test]
fn every_example_lints_clean() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples");
    let mut seen = 0;
    for entry in std::fs::read_dir(&root).unwrap().flatten() {
        let file = entry.path().join(".gitlab-ci.yml");
        if !file.exists() {
            continue;
        }
        seen += 1;
        let out = Command::new(BERTH)
            .args(["ci", "lint"])
            .arg(&file)
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(out.status.success(), "{text}");
        assert!(text.contains(", 0 errors, 0 warnings"), "{text}");
        assert!(
            entry.path().join("README.md").exists(),
            "{} has no README.md",
            entry.path().display()
        );
    }
    assert!(seen >= 8, "only {seen} examples");
}
