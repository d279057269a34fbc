//! `berth ci run` through the real binary: child pipelines (`trigger:
//! include`, with and without `strategy: depend`, variables passed down, a
//! missing child file) and jobs stuck because no agent has their `tags`;
//! and `berth ci serve`, where a stuck job stays pending and `berth ci
//! show` says why, and which child pipeline a trigger job made.

use std::time::{Duration, Instant};

use common::ci::{berth, ci_run, start_ci_daemon};

mod common;

const PARENT_DEPEND: &str = r#"
stages: [build, child]
build:
  stage: build
  script: [echo built]
kid:
  stage: child
  variables:
    FROM_PARENT: "yes"
  trigger:
    include: ci/child.yml
    strategy: depend
"#;

const CHILD_PASSES: &str = r#"
check:
  script:
    - test "$FROM_PARENT" = yes
    - test "$CI_PIPELINE_SOURCE" = parent_pipeline
    - echo "child saw FROM_PARENT=$FROM_PARENT"
"#;

#[test]
fn a_depend_trigger_job_passes_with_its_child_and_the_child_gets_its_variables() {
    let repo = berth_tests::git_repo(&[
        (".gitlab-ci.yml", PARENT_DEPEND),
        ("ci/child.yml", CHILD_PASSES),
    ]);
    let (code, out) = ci_run(repo.path(), &[]);
    assert_eq!(code, Some(0), "{out}");
    // The child's jobs are shown, indented under its number.
    assert!(out.contains("  #2  success    check"), "{out}");
    assert!(
        out.lines().any(|l| l.contains("success")
            && l.contains("kid")
            && l.contains("-> child pipeline #2: success")),
        "{out}"
    );
    assert!(out.contains("child pipeline #2: success"), "{out}");
    assert!(out.contains("pipeline #1: success"), "{out}");
}

#[test]
fn a_failed_child_fails_its_depend_trigger_job_and_the_pipeline() {
    let child = format!("{CHILD_PASSES}broken:\n  script: [echo breaking, exit 4]\n");
    let repo = berth_tests::git_repo(&[
        (".gitlab-ci.yml", PARENT_DEPEND),
        ("ci/child.yml", child.as_str()),
    ]);
    let (code, out) = ci_run(repo.path(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(out.contains("  #2  success    check"), "{out}");
    assert!(out.contains("  #2  failed     broken"), "{out}");
    assert!(
        out.lines().any(|l| l.contains("failed")
            && l.contains("kid")
            && l.contains("-> child pipeline #2: failed")),
        "{out}"
    );
    // The child's failed job's log, and the trigger job's.
    assert!(out.contains("--- log of failed job #2/broken ---"), "{out}");
    assert!(out.contains("breaking"), "{out}");
    assert!(out.contains("--- log of failed job kid ---"), "{out}");
    assert!(out.contains("child pipeline #2 failed"), "{out}");
    assert!(out.contains("pipeline #1: failed"), "{out}");
}

#[test]
fn without_depend_the_trigger_job_passes_and_a_missing_child_file_fails_it() {
    let parent = r#"
kid:
  trigger: {include: [{local: child.yml}], forward: {yaml_variables: false}}
  variables: {FROM_PARENT: "yes"}
"#;
    // yaml_variables: false: the child does not get FROM_PARENT.
    let child = "check:\n  script: ['test -z \"$FROM_PARENT\"', exit 3]\n";
    let repo = berth_tests::git_repo(&[(".gitlab-ci.yml", parent), ("child.yml", child)]);
    let (code, out) = ci_run(repo.path(), &[]);
    // GitLab: the parent passes once the child exists; `ci run` still
    // waits for the child and shows it.
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("  #2  failed     check"), "{out}");
    assert!(out.contains("exit code 3"), "{out}");
    assert!(out.contains("child pipeline #2: failed"), "{out}");
    assert!(out.contains("pipeline #1: success"), "{out}");

    let missing = berth_tests::git_repo(&[(".gitlab-ci.yml", parent)]);
    let (code, out) = ci_run(missing.path(), &[]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        out.contains("the included file `child.yml` does not exist in the repository"),
        "{out}"
    );
}

#[test]
fn a_job_whose_tags_no_agent_has_fails_as_stuck_with_the_reason() {
    let repo = berth_tests::git_repo(&[(
        ".gitlab-ci.yml",
        "train:\n  tags: [gpu]\n  retry: {max: 1, when: stuck_or_timeout_failure}\n  script: [echo never]\nlint:\n  script: [echo linted]\n",
    )]);
    let started = Instant::now();
    let (code, out) = ci_run(repo.path(), &["--stuck-timeout", "2s"]);
    assert_eq!(code, Some(1), "{out}");
    assert!(
        started.elapsed() < Duration::from_secs(90),
        "took {:?}",
        started.elapsed()
    );
    assert!(out.contains("stuck      train"), "{out}");
    assert!(
        out.contains("This job is stuck because no agent has the tags [gpu]; the agents offer: "),
        "{out}"
    );
    // Retried once for that reason, then failed.
    assert!(out.contains("attempt 2"), "{out}");
    assert!(out.contains("stuck_or_timeout_failure"), "{out}");
    assert!(out.contains("failed after 2s stuck"), "{out}");
    assert!(out.contains("success    lint"), "{out}");
}

/// Waits until `berth ci show ID` prints `needle`; returns what it printed.
fn wait_show(server: &str, id: &str, needle: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, out) = berth(&["ci", "show", id, "--server", server]);
        if code == Some(0) && out.contains(needle) {
            return out;
        }
        assert!(Instant::now() < deadline, "no {needle:?} in:\n{out}");
        std::thread::sleep(Duration::from_millis(300));
    }
}

#[test]
fn ci_serve_keeps_a_stuck_job_pending_and_ci_show_says_why_and_names_the_child() {
    let dir = tempfile::tempdir().expect("tempdir");
    let (_dev, _serve, server) = start_ci_daemon(dir.path());
    let repo = berth_tests::git_repo(&[
        (
            ".gitlab-ci.yml",
            "kid:\n  trigger: {include: child.yml, strategy: depend}\n",
        ),
        (
            "child.yml",
            "train:\n  tags: [gpu]\n  script: [echo never]\n",
        ),
    ]);
    let path = repo.path().to_str().expect("utf-8 path");
    let (code, out) = berth(&["ci", "trigger", path, "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    let child = wait_show(
        &server,
        "2",
        "This job is stuck because no agent has the tags [gpu]; the agents offer: ",
    );
    assert!(child.contains("pending"), "{child}");
    assert!(child.contains("(child pipeline of #1, job kid)"), "{child}");
    let parent = wait_show(&server, "1", "-> child pipeline #2: running");
    assert!(parent.contains("running"), "{parent}");
    // No timeout in `ci serve`: still pending a while later.
    std::thread::sleep(Duration::from_secs(3));
    let (_, child) = berth(&["ci", "show", "2", "--server", &server]);
    assert!(
        child.contains("pending") && child.contains("stuck"),
        "{child}"
    );
    // The JSON view carries the links.
    let (_, json) = berth(&["ci", "show", "1", "--json", "--server", &server]);
    let view: serde_json::Value = serde_json::from_str(&json).expect("JSON");
    assert_eq!(view["children"], serde_json::json!([2]), "{json}");
    assert_eq!(view["jobs"][0]["child_pipeline"], 2, "{json}");
    // Canceling the parent cancels the child.
    let (code, out) = berth(&["ci", "cancel", "1", "--server", &server]);
    assert_eq!(code, Some(0), "{out}");
    wait_show(&server, "2", "canceled");
    wait_show(&server, "1", "-> child pipeline #2: canceled");
}
