//! `berth ci run` through the real binary: variables that use the job's
//! directories get the job's real paths (shell and Docker jobs), scripts
//! run under bash where there is one, the predefined variables,
//! `CI_JOB_STATUS` in `after_script`, `rules:changes` on a pipeline that is
//! not a push, and lint's warnings at the start of the run and of the job's
//! log. Each job checks its own expectations in its script, so a wrong
//! value fails the job (and the run).

use std::path::{Path, PathBuf};
use std::process::Command;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

struct Run {
    code: Option<i32>,
    out: String,
    data: tempfile::TempDir,
}

impl Run {
    /// The stored log of the first attempt of job `job`, the `index`th
    /// job of the plan (stages, then file order).
    fn log(&self, index: usize, job: &str) -> String {
        let logs: Vec<PathBuf> = berth_tests::files_under(&self.data.path().join("ci/logs"));
        let path = logs
            .iter()
            .find(|p| {
                p.file_name()
                    .is_some_and(|n| n.to_string_lossy() == format!("{index}-1.log"))
            })
            .unwrap_or_else(|| panic!("no log of {job} among {logs:?}\n{}", self.out));
        std::fs::read_to_string(path).expect("the log reads")
    }
}

fn ci_run(repo: &Path, docker: bool) -> Run {
    let data = tempfile::tempdir().expect("tempdir");
    let mut cmd = Command::new(BERTH);
    cmd.args(["ci", "run"])
        .arg(repo)
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

/// The position of `needle` in `text`, or a panic that shows `text`.
fn at(text: &str, needle: &str) -> usize {
    text.find(needle)
        .unwrap_or_else(|| panic!("no {needle:?} in:\n{text}"))
}

const PATHS: &str = r#"
variables:
  OUT_DIR: "$CI_PROJECT_DIR/out"
  PIP_CACHE_DIR: "$CI_PROJECT_DIR/.cache/pip"
  DEEP: "$OUT_DIR/deeper"
  LITERAL: "$$CI_PROJECT_DIR/x"
  NOT_RUN: "$CI_PROJECT_DIR/$$(echo nope) *"
  BUILDS: "${CI_BUILDS_DIR}/b"
stages: [build, test]
paths:
  stage: build
  variables:
    CARGO_HOME: $CI_PROJECT_DIR/cargo
  script:
    - test "$OUT_DIR" = "$CI_PROJECT_DIR/out"
    - test "$PIP_CACHE_DIR" = "$CI_PROJECT_DIR/.cache/pip"
    - test "$CARGO_HOME" = "$CI_PROJECT_DIR/cargo"
    - test "$DEEP" = "$CI_PROJECT_DIR/out/deeper"
    - test "$LITERAL" = '$CI_PROJECT_DIR/x'
    - test "$NOT_RUN" = "$CI_PROJECT_DIR/"'$(echo nope) *'
    - test "$BUILDS" = "$CI_BUILDS_DIR/b"
    - test "$(pwd)" = "$CI_PROJECT_DIR"
    - test -f "$CI_PROJECT_DIR/.gitlab-ci.yml"
    - case "$CI_PROJECT_DIR" in "$CI_BUILDS_DIR"/*) ;; *) exit 7;; esac
    - case "$CI_PROJECT_DIR" in /mnt/berth/*) exit 8;; esac
    - mkdir -p "$OUT_DIR" "$PIP_CACHE_DIR" && echo made > "$OUT_DIR/made"
    - echo cached > "$PIP_CACHE_DIR/wheel"
  cache:
    key: pip
    paths: [.cache/pip]
  artifacts:
    paths: ["$CI_PROJECT_DIR/out"]
uses:
  stage: test
  script:
    - test "$(cat out/made)" = made
    - test "$(cat "$OUT_DIR/made")" = made
bash:
  stage: build
  script:
    - echo 'export SOURCED=yes' > env.sh
    - source ./env.sh
    - test "$SOURCED" = yes
    - '[[ "$SOURCED" == y* ]]'
    - arr=(a b c); test "${#arr[@]}" = 3
    - if false | true; then exit 9; fi
    - test -n "$BASH_VERSION"
"#;

/// Variables that use `CI_PROJECT_DIR`/`CI_BUILDS_DIR` (directly or
/// through others) are the shell job's real host paths, literal `$$` and
/// `$(...)` stay literal, an artifact path written with `$CI_PROJECT_DIR`
/// reaches the next job, and scripts run under bash (`source`, `[[`,
/// arrays, pipefail), which the log says.
#[test]
fn shell_jobs_get_real_paths_and_bash() {
    let repo = berth_tests::git_repo(&[(".gitlab-ci.yml", PATHS)]);
    let run = ci_run(repo.path(), false);
    assert_eq!(run.code, Some(0), "{}", run.out);
    let log = run.log(0, "paths");
    assert!(log.contains("Using shell: bash"), "{log}");
    // berth's own line comes before the job's first command.
    assert!(
        at(&log, "Using shell: bash") < at(&log, "$ test \"$OUT_DIR\""),
        "{log}"
    );
    assert!(run.log(1, "bash").contains("Using shell: bash"));
    assert!(run.log(2, "uses").contains("Job succeeded"));
}

const PREDEFINED: &str = r#"
deploy:
  timeout: 10m
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    url: https://$CI_ENVIRONMENT_SLUG.example.com
  script:
    - test "$GITLAB_CI" = true
    - test "$CI" = true
    - test "$CI_SERVER" = yes
    - test "$CI_ENVIRONMENT_NAME" = review/main
    - case "$CI_ENVIRONMENT_SLUG" in review-main-??????) ;; *) exit 2;; esac
    - test "$CI_ENVIRONMENT_URL" = "https://$CI_ENVIRONMENT_SLUG.example.com"
    - test "$CI_COMMIT_TITLE" = first
    - test "$CI_COMMIT_MESSAGE" = first
    - test -z "$CI_COMMIT_DESCRIPTION"
    - test "$CI_COMMIT_BEFORE_SHA" = 0000000000000000000000000000000000000000
    - echo "$CI_COMMIT_TIMESTAMP" | grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}'
    - case "$CI_COMMIT_AUTHOR" in *" <"*">") ;; *) exit 3;; esac
    - test "$CI_JOB_NAME" = deploy
    - test "$CI_JOB_STAGE" = test
    - test "$CI_JOB_TIMEOUT" = 600
    - test "$CI_JOB_STATUS" = running
    - echo "$CI_JOB_STARTED_AT" | grep -Eq '^[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}Z$'
    - test "$CI_PIPELINE_IID" = "$CI_PIPELINE_ID"
    - test "$CI_PIPELINE_SOURCE" = web
    - test "$CI_PIPELINE_URL" = "$CI_SERVER_URL/ci/v1/pipelines/$CI_PIPELINE_ID"
    - test "$CI_JOB_URL" = "$CI_SERVER_URL/ci/v1/pipelines/$CI_PIPELINE_ID/jobs/deploy"
    - test "$CI_SERVER_URL" = "$CI_SERVER_PROTOCOL://$CI_SERVER_HOST:$CI_SERVER_PORT"
    - test "$CI_SERVER_PROTOCOL" = http
    - test "$CI_SERVER_HOST" = 127.0.0.1
    - test "$CI_SERVER_NAME" = berth
    - test -n "$CI_SERVER_VERSION"
    - test "$CI_RUNNER_VERSION" = "$CI_SERVER_VERSION"
    - test "$CI_PROJECT_PATH" = "berth/$CI_PROJECT_NAME"
    - test "$CI_PROJECT_NAMESPACE" = berth
    - test -d "$CI_REPOSITORY_URL/.git"
    - test -n "$CI_RUNNER_ID"
    - test "$CI_RUNNER_DESCRIPTION" = "berth agent $CI_RUNNER_ID"
    - test "$CI_RUNNER_TAGS" = '[]'
    - case "$CI_RUNNER_EXECUTABLE_ARCH" in linux/?*) ;; *) exit 4;; esac
    - test -n "$CI_CONCURRENT_ID"
    - test "$CI_NODE_TOTAL" = 1
changes:
  rules:
    - changes: [not-in-this-commit.txt]
  script: [echo the changes job ran]
passes:
  script: ["true"]
  after_script:
    - echo "status-marker-$CI_JOB_STATUS"
fails:
  allow_failure: true
  script: [exit 3]
  after_script:
    - test "$CI_JOB_STATUS" = failed
    - echo "status-marker-$CI_JOB_STATUS"
ignored:
  hooks:
    pre_get_sources_script: [echo never]
  script: [echo ignored-job-ran]
"#;

/// The predefined variables a job commonly reads; `CI_JOB_STATUS` in
/// `after_script`; `rules:changes` is true on a web pipeline; lint's
/// warning is printed before the jobs run and starts the job's log.
#[test]
fn predefined_variables_status_changes_and_notices() {
    let repo = berth_tests::git_repo(&[(".gitlab-ci.yml", PREDEFINED)]);
    let run = ci_run(repo.path(), false);
    assert_eq!(run.code, Some(0), "{}", run.out);
    assert!(run.log(0, "deploy").contains("Job succeeded"));
    assert!(run.log(1, "changes").contains("the changes job ran"));
    assert!(run.log(2, "passes").contains("status-marker-success"));
    let fails = run.log(3, "fails");
    assert!(fails.contains("status-marker-failed"), "{fails}");
    assert!(!fails.contains("after_script failed"), "{fails}");
    // The warning, at the start of the run and as the job log's first
    // line of the script's output.
    let warning = "`hooks` are not supported";
    assert!(
        at(&run.out, warning) < at(&run.out, "pipeline #"),
        "{}",
        run.out
    );
    let log = run.log(4, "ignored");
    assert!(at(&log, warning) < at(&log, "Using shell:"), "{log}");
    assert!(
        at(&log, "Using shell:") < at(&log, "ignored-job-ran"),
        "{log}"
    );
}

/// A Docker job (busybox: no bash, so sh) gets the container's paths in
/// the variables that use `CI_PROJECT_DIR`.
#[test]
fn docker_job_gets_container_paths_and_sh() {
    if !berth_tests::docker_ready("docker_job_gets_container_paths_and_sh") {
        return;
    }
    let yaml = r#"
variables:
  OUT_DIR: "$CI_PROJECT_DIR/out"
in-image:
  image: berth/busybox:latest
  script:
    - test "$CI_PROJECT_DIR" = "/mnt/berth/sandbox/$CI_PROJECT_NAME"
    - test "$CI_BUILDS_DIR" = /mnt/berth/sandbox
    - test "$OUT_DIR" = "/mnt/berth/sandbox/$CI_PROJECT_NAME/out"
    - test "$(pwd)" = "$CI_PROJECT_DIR"
    - test -z "$BASH_VERSION"
"#;
    let repo = berth_tests::git_repo(&[(".gitlab-ci.yml", yaml)]);
    let run = ci_run(repo.path(), true);
    assert_eq!(run.code, Some(0), "{}", run.out);
    let log = run.log(0, "in-image");
    assert!(log.contains("Using shell: sh"), "{log}");
}
