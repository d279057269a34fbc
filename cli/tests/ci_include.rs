//! `berth ci run` of a pipeline whose jobs come from included files: a
//! job `extends` a template of an included file (its variables reach the
//! script), a glob includes a directory of jobs under a rule that holds,
//! and a rule that does not hold leaves a failing job out. And an include
//! berth refuses stops the run with the reason.

mod common;
use common::ci::ci_run;

const MAIN: &str = r#"include:
  - local: /ci/templates.yml
  - local: 'ci/jobs/*.yml'
    rules:
      - if: $CI_COMMIT_BRANCH == "main"
  - local: ci/left-out.yml
    rules:
      - if: $CI_COMMIT_BRANCH == "elsewhere"
variables:
  OWN: mine
check:
  extends: .tpl
  script:
    - test "$FROM_TEMPLATE" = yes
    - test "$OWN" = mine
    - echo template-ok
"#;

#[test]
fn jobs_extend_templates_of_included_files() {
    let repo = berth_tests::git_repo(&[
        (".gitlab-ci.yml", MAIN),
        (
            "ci/templates.yml",
            ".tpl:\n  variables:\n    FROM_TEMPLATE: \"yes\"\nvariables:\n  OWN: included\n",
        ),
        (
            "ci/jobs/extra.yml",
            "extra:\n  script:\n    - test -f ci/templates.yml\n    - echo extra-ran\n",
        ),
        ("ci/left-out.yml", "left-out-job:\n  script: [exit 1]\n"),
    ]);
    // `--play extra`: the name is checked against the file with its
    // includes (it is a job, though not a manual one).
    let (code, out) = ci_run(repo.path(), &["--play", "extra"]);
    assert_eq!(code, Some(0), "{out}");
    assert!(out.contains("not a manual job"), "{out}");
    assert!(out.contains("check"), "{out}");
    assert!(out.contains("extra"), "{out}");
    assert!(!out.contains("left-out-job"), "{out}");
}

#[test]
fn a_refused_or_missing_include_stops_the_run_with_the_reason() {
    let repo = berth_tests::git_repo(&[(
        ".gitlab-ci.yml",
        "include:\n  - template: Jobs/Build.gitlab-ci.yml\n  - local: ci/missing.yml\njob:\n  script: [x]\n",
    )]);
    let (code, out) = ci_run(repo.path(), &[]);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains(".gitlab-ci.yml:2:5: error: `include:template` (`Jobs/Build.gitlab-ci.yml`) is not supported"),
        "{out}"
    );
    assert!(
        out.contains(
            ".gitlab-ci.yml:3:12: error: the included file `ci/missing.yml` does not exist"
        ),
        "{out}"
    );
}
