//! Job reports through the real binary: `artifacts:reports:dotenv`
//! variables passed to the jobs that download the job's artifacts (and
//! not to the others), JUnit test results and `coverage:` shown at the end
//! of `berth ci run`, lint errors of `coverage` and `environment:on_stop`,
//! and environments recorded by `berth ci serve` (`berth ci environments`,
//! `environments stop`).

use berth_tests::dev::BerthDev;
use berth_tests::{ChildProcess, free_port};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn berth(args: &[&str]) -> (Option<i32>, String) {
    let out = Command::new(BERTH).args(args).output().expect("berth runs");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code(), text)
}

fn ci_run(dir: &Path) -> (Option<i32>, String) {
    let dir = dir.to_str().expect("utf-8 path");
    berth(&[
        "ci",
        "run",
        dir,
        "--no-docker",
        "--resources",
        "cpus:4;mem:4096;disk:10000",
    ])
}

const DOTENV_PIPELINE: &str = r#"stages: [build, test]
build:
  stage: build
  script:
    - echo 'VERSION=1.2.3' > build.env
    - echo 'this is not a variable' >> build.env
    - echo 'URL = http://example.invalid/?a=b' >> build.env
  artifacts:
    reports:
      dotenv: build.env
unrelated:
  stage: build
  script: [echo unrelated]
check:
  stage: test
  script:
    - test "$VERSION" = 1.2.3
    - test "$URL" = 'http://example.invalid/?a=b'
yaml_loses:
  stage: test
  variables:
    VERSION: from-yaml
  script:
    - test "$VERSION" = 1.2.3
needs_other:
  stage: test
  needs: [unrelated]
  script:
    - test -z "${VERSION:-}"
no_dependencies:
  stage: test
  dependencies: []
  script:
    - test -z "${VERSION:-}"
"#;

#[test]
fn dotenv_variables_reach_the_jobs_that_download_the_artifacts() {
    let repo = berth_tests::git_repo(&[(".gitlab-ci.yml", DOTENV_PIPELINE)]);
    let (code, out) = ci_run(repo.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("pipeline #1: success"), "{out}");
    // The bad line is named, not dropped silently.
    assert!(out.contains("build.env line 2: not KEY=value"), "{out}");
    assert!(out.contains("dotenv URL, VERSION"), "{out}");
}

const JUNIT: &str = r#"<?xml version="1.0" encoding="UTF-8"?>
<testsuites>
  <testsuite name="unit">
    <testcase classname="math" name="adds"/>
    <testcase classname="math" name="subtracts"/>
    <testcase classname="math" name="divides">
      <failure message="expected 2, got 3">assertion failed</failure>
    </testcase>
    <testcase classname="net" name="later"><skipped/></testcase>
  </testsuite>
</testsuites>
"#;

const REPORTS_PIPELINE: &str = r#"stages: [test, deploy]
unit:
  stage: test
  allow_failure: true
  coverage: '/TOTAL.*\s+(\d+%)$/'
  script:
    - mkdir -p out
    - cp junit.xml broken.xml out/
    - echo 'TOTAL    120   20   50%'
    - echo 'TOTAL    120   20   83%'
    - exit 1
  artifacts:
    reports:
      junit: out/*.xml
after:
  stage: deploy
  script: [echo after]
"#;

#[test]
fn junit_results_and_coverage_are_shown_at_the_end_of_a_run() {
    let repo = berth_tests::git_repo(&[
        (".gitlab-ci.yml", REPORTS_PIPELINE),
        ("junit.xml", JUNIT),
        ("broken.xml", "<testsuites><testcase name='x'>"),
    ]);
    let (code, out) = ci_run(repo.path());
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("pipeline #1: success (with allowed failures)"),
        "{out}"
    );
    assert!(
        out.contains("Tests: 2 passed, 1 failed, 1 skipped"),
        "{out}"
    );
    assert!(
        out.contains("FAILED math.divides: expected 2, got 3"),
        "{out}"
    );
    // The last matching line counts.
    assert!(out.contains("unit: coverage 83%"), "{out}");
    assert!(out.contains("Coverage: 83%"), "{out}");
    // The broken report is named.
    assert!(out.contains("out/broken.xml"), "{out}");
    assert!(out.contains("not counted"), "{out}");
}

#[test]
fn lint_checks_coverage_and_on_stop() {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join(".gitlab-ci.yml");
    std::fs::write(
        &file,
        "test:\n  coverage: '/TOTAL (\\d+%/'\n  script: [echo]\ndeploy:\n  environment:\n    name: review\n    on_stop: stop_review\n  script: [echo]\nstop_review:\n  environment:\n    name: other\n    action: stop\n  script: [echo]\n",
    )
    .expect("write");
    let (code, out) = berth(&["ci", "lint", file.to_str().expect("utf-8")]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("not a valid regular expression"), "{out}");
    assert!(out.contains("but stops the environment `other`"), "{out}");

    std::fs::write(
        &file,
        "test:\n  coverage: '/TOTAL (\\d+%)/'\n  script: [echo]\n  artifacts:\n    reports:\n      dotenv: a.env\ndeploy:\n  environment:\n    name: review\n    on_stop: stop_review\n  script: [echo]\nstop_review:\n  when: manual\n  environment:\n    name: review\n    action: stop\n  script: [echo]\n",
    )
    .expect("write");
    let (code, out) = berth(&["ci", "lint", file.to_str().expect("utf-8")]);
    assert_eq!(code, Some(0), "{out}");
    assert!(!out.contains("not supported"), "{out}");
}

/// `berth dev` and `berth ci serve` next to it, its data in `dir`.
fn start_ci_daemon(dir: &Path) -> (BerthDev, ChildProcess, String) {
    let dev = BerthDev::start(BERTH, "cpus:4;mem:4096;disk:10000", None);
    let server = format!("http://127.0.0.1:{}", free_port());
    let serve = ChildProcess(
        Command::new(BERTH)
            .args(["ci", "serve", "--master", &dev.master])
            .arg("--listen")
            .arg(server.trim_start_matches("http://"))
            .arg("--data-dir")
            .arg(dir.join("ci"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("berth ci serve starts"),
    );
    wait_for(30, "berth ci serve", || {
        berth(&["ci", "list", "--server", &server]).0 == Some(0)
    });
    (dev, serve, server)
}

fn wait_for(seconds: u64, what: &str, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(seconds);
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not done in {seconds} s");
        std::thread::sleep(Duration::from_millis(300));
    }
}

fn environments(server: &str) -> Vec<serde_json::Value> {
    let (code, out) = berth(&["ci", "environments", "--json", "--server", server]);
    assert_eq!(code, Some(0), "{out}");
    serde_json::from_str(&out).expect("JSON")
}

const DEPLOY_PIPELINE: &str = r#"stages: [deploy, cleanup]
deploy_review:
  stage: deploy
  script: [echo deploying]
  environment:
    name: review
    url: http://review.example.invalid
    on_stop: stop_review
stop_review:
  stage: cleanup
  when: manual
  script: [echo stopping]
  environment:
    name: review
    action: stop
"#;

#[test]
fn environments_record_deployments_and_stop_with_the_on_stop_job() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_dev, _serve, server) = start_ci_daemon(dir.path());
    let repo = berth_tests::git_repo(&[(".gitlab-ci.yml", DEPLOY_PIPELINE)]);
    let path = repo.path().to_str().expect("utf-8 path");
    let (code, out) = berth(&["ci", "trigger", path, "--server", &server]);
    assert_eq!(code, Some(0), "{out}");

    wait_for(60, "the deployment", || !environments(&server).is_empty());
    let envs = environments(&server);
    assert_eq!(envs.len(), 1, "{envs:?}");
    let env = &envs[0];
    assert_eq!(env["name"], "review");
    assert_eq!(env["state"], "available");
    assert_eq!(env["stop_job"], "stop_review");
    assert_eq!(env["last_deployment"]["pipeline"], 1);
    assert_eq!(env["last_deployment"]["job"], "deploy_review");
    assert_eq!(env["last_deployment"]["ref_name"], "main");
    assert_eq!(
        env["last_deployment"]["url"],
        "http://review.example.invalid"
    );

    let (code, out) = berth(&["ci", "environments", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("NAME") && out.contains("STATE"), "{out}");
    assert!(out.contains("review") && out.contains("available"), "{out}");
    assert!(out.contains("deploy_review") && out.contains("#1"), "{out}");

    let (code, out) = berth(&["ci", "environments", "stop", "nope", "--server", &server]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("no environment \"nope\""), "{out}");

    let (code, out) = berth(&["ci", "environments", "stop", "review", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    wait_for(60, "the stop job", || {
        environments(&server)
            .first()
            .is_some_and(|e| e["state"] == "stopped")
    });
    let envs = environments(&server);
    assert_eq!(envs[0]["stopped_by"]["job"], "stop_review", "{envs:?}");

    let (code, out) = berth(&["ci", "environments", "stop", "review", "--server", &server]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("stopped already"), "{out}");
}
