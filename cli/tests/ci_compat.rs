//! The compatibility suite: pipeline files written the way real projects
//! write them (`frameworks/ci/compat/<name>/`, one repository each), run
//! unchanged through the real binary with `berth ci run`. Each job checks
//! its own expectations in its script (`test "$X" = …`), so a wrong
//! implementation fails the job; the tests assert the pipeline's result,
//! each job's status as printed, and what `berth ci run` reports (tests,
//! coverage, child pipelines).

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// One `berth ci run` of a fixture: its exit code, its output and its data
/// directory (the stored logs).
struct Run {
    code: Option<i32>,
    out: String,
    data: tempfile::TempDir,
}

impl Run {
    /// Asserts a progress line `<status> <job>`.
    fn has(&self, status: &str, job: &str) {
        let needle = format!("  {status:<10} {job}");
        assert!(
            self.out.contains(&needle),
            "no line {needle:?} in:\n{}",
            self.out
        );
    }

    /// Asserts that `job` is not part of the pipeline.
    fn lacks(&self, job: &str) {
        assert!(
            !self
                .out
                .lines()
                .any(|l| l.split_whitespace().nth(1) == Some(job)),
            "{job} should not run:\n{}",
            self.out
        );
    }

    /// Every stored job log, one after the other.
    fn logs(&self) -> String {
        berth_tests::files_under(&self.data.path().join("ci/logs"))
            .into_iter()
            .map(|p| std::fs::read_to_string(p).unwrap())
            .collect()
    }
}

/// A repository holding the fixture `name`, committed.
fn fixture(name: &str) -> tempfile::TempDir {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../frameworks/ci/compat")
        .join(name);
    berth_tests::git_repo_of_dir(&root)
}

/// Runs the fixture `name` (with Docker when `docker`).
fn run(name: &str, docker: bool) -> Run {
    run_repo(&fixture(name), docker)
}

/// Runs the pipeline of `repo`'s HEAD.
fn run_repo(repo: &tempfile::TempDir, docker: bool) -> Run {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BERTH);
    cmd.args(["ci", "run"])
        .arg(repo.path())
        .args(["--resources", "cpus:4;mem:4096;disk:10000", "--data-dir"])
        .arg(data.path());
    if !docker {
        cmd.arg("--no-docker");
    }
    let out = cmd.output().expect("berth runs");
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

/// Runs a fixture that must pass, with every one of `jobs` successful.
fn passes(name: &str, jobs: &[&str]) -> Run {
    let run = run(name, false);
    assert_eq!(run.code, Some(0), "{name}:\n{}", run.out);
    for job in jobs {
        run.has("success", job);
    }
    run
}

/// pip's cache inside the project (`$CI_PROJECT_DIR/.cache/pip`, cached
/// and found again by a later job), `source venv/bin/activate` under bash,
/// JUnit reports with a failed test, and coverage from the log.
#[test]
fn python_with_a_pip_cache_a_virtualenv_junit_and_coverage() {
    let run = passes("python-pip", &["unit", "cache-reused"]);
    run.has("failed", "integration");
    let out = &run.out;
    assert!(out.contains("3 passed"), "unit's tests: {out}");
    assert!(out.contains("1 skipped"), "{out}");
    assert!(out.contains("1 failed"), "integration's tests: {out}");
    assert!(out.contains("test_add_negative"), "the failed test: {out}");
    assert!(out.contains("82"), "the coverage of unit: {out}");
    assert!(run.logs().contains("Using shell: bash"), "{}", run.logs());
}

/// `CARGO_HOME: $CI_PROJECT_DIR/cargo`: the registry lands inside the
/// checkout, where the branch's cache keeps it for the next job.
#[test]
fn rust_with_cargo_home_in_the_project() {
    passes("rust-cargo-home", &["build", "test"]);
}

/// bash in scripts: arrays, associative arrays, `[[ ]]`, pipefail.
#[test]
fn go_with_bash_scripts_and_a_hidden_template() {
    passes("go-modules", &["format", "vet"]);
}

/// `include:` of a local file, of a glob, nested, and one its rules leave
/// out; jobs extending included templates and `!reference` into them.
#[test]
fn node_style_pipeline_in_included_files() {
    let run = passes("node-include", &["install", "unit"]);
    run.lacks("publish");
}

/// `rules:changes` are true on a pipeline that is not a push: the last
/// commit changed only the docs, yet `berth ci run` (a `web` pipeline)
/// runs the jobs of every service.
#[test]
fn monorepo_rules_changes_on_a_run_that_is_not_a_push() {
    let repo = fixture("monorepo-changes");
    std::fs::write(repo.path().join("docs/index.md"), "# docs, changed\n").unwrap();
    berth_tests::git(repo.path(), &["commit", "-q", "-am", "docs only"]);
    let run = run_repo(&repo, false);
    assert_eq!(run.code, Some(0), "{}", run.out);
    run.has("success", "api");
    run.has("success", "web");
    run.lacks("docs-on-push");
}

/// A child pipeline from a file of the same commit, with a variable passed
/// down, that the trigger job waits for.
#[test]
fn child_pipeline_with_strategy_depend() {
    let run = passes("child-pipeline", &["prepare", "components"]);
    assert!(run.out.contains("child-test"), "{}", run.out);
    assert!(run.logs().contains("the child ran"), "{}", run.logs());
}

/// Versions passed on by a dotenv report to the jobs that take the job's
/// artifacts (and not to the others), and a job's environment variables.
#[test]
fn dotenv_release_versions_and_an_environment() {
    passes(
        "dotenv-release",
        &["version", "release", "unrelated", "deploy-review"],
    );
}

/// GitLab's predefined variables, and `CI_JOB_STATUS` in `after_script`.
#[test]
fn predefined_variables_and_the_job_status_in_after_script() {
    let run = passes("shell-features", &["predefined"]);
    run.has("failed", "after-status");
    assert!(
        run.logs().contains("after_script saw CI_JOB_STATUS=failed"),
        "{}",
        run.logs()
    );
}

/// A Docker job with a service container reached by its alias.
#[test]
fn docker_job_with_a_service() {
    if !berth_tests::docker_ready("ci_compat::docker_job_with_a_service") {
        return;
    }
    let run = run("docker-service", true);
    assert_eq!(run.code, Some(0), "{}", run.out);
    run.has("success", "smoke");
}
