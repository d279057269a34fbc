//! `trigger:` parsing: child pipelines of the same commit are parsed into
//! the plan; multi-project pipelines and files not of this commit are
//! refused with their position.

mod common;

use berth_ci::Trigger;
use common::*;

fn trigger_of(text: &str, name: &str) -> Trigger {
    let p = plan(text, &push_main());
    job(&p, name).trigger.clone().expect("a trigger")
}

#[test]
fn trigger_include_forms_parse() {
    let t = trigger_of("kid:\n  trigger:\n    include: ci/child.yml\n", "kid");
    assert_eq!(
        t,
        Trigger {
            include: vec!["ci/child.yml".into()],
            depend: false,
            forward_yaml_variables: true,
            forward_pipeline_variables: false,
        }
    );
    let t = trigger_of(
        "kid:\n  trigger:\n    include:\n      - local: a.yml\n      - b.yml\n    strategy: depend\n    forward:\n      yaml_variables: false\n      pipeline_variables: true\n",
        "kid",
    );
    assert_eq!(
        t,
        Trigger {
            include: vec!["a.yml".into(), "b.yml".into()],
            depend: true,
            forward_yaml_variables: false,
            forward_pipeline_variables: true,
        }
    );
    // Several files make one child pipeline, as one file's `include:`.
    assert!(warnings("kid:\n  trigger: {include: [a.yml, b.yml]}\n").is_empty());
    // `/child.yml` is the repository's root.
    let t = trigger_of("kid:\n  trigger: {include: [{local: /child.yml}]}\n", "kid");
    assert_eq!(t.include, ["child.yml"]);
    // A trigger job needs no script, and is not warned about.
    assert!(warnings("kid:\n  trigger: {include: c.yml}\n").is_empty());
}

#[test]
fn multi_project_triggers_are_refused() {
    assert_error(
        "down:\n  trigger: my-group/other\n",
        2,
        12,
        "multi-project pipeline",
    );
    assert_error(
        "down:\n  trigger:\n    project: my-group/other\n",
        3,
        5,
        "multi-project pipeline",
    );
}

#[test]
fn child_files_not_of_this_commit_are_refused() {
    for (entry, word) in [
        ("{artifact: gen.yml, job: make}", "artifact"),
        ("{project: g/p, file: a.yml}", "another project"),
        ("{template: Jobs/Build.gitlab-ci.yml}", "template"),
        ("{remote: 'https://x/y.yml'}", "remote"),
    ] {
        let text = format!("kid:\n  trigger:\n    include: [{entry}]\n");
        let e = errors(&text);
        assert!(
            e.iter().any(|e| e.starts_with("3:") && e.contains(word)),
            "{entry}: {e:#?}"
        );
    }
    let e = errors("kid:\n  trigger:\n    include: ../up.yml\n");
    assert!(
        e.iter().any(|e| e.contains("inside the repository")),
        "{e:#?}"
    );
}

#[test]
fn a_trigger_job_with_a_script_or_a_bad_strategy_is_an_error() {
    assert_error(
        "kid:\n  script: [x]\n  trigger: {include: c.yml}\n",
        1,
        1,
        "both `trigger` and `script`",
    );
    assert_error(
        "kid:\n  trigger: {include: c.yml, strategy: wait}\n",
        2,
        39,
        "must be `depend`",
    );
    assert_error(
        "kid:\n  trigger: {strategy: depend}\n",
        2,
        12,
        "needs `include`",
    );
    assert_error(
        "kid:\n  trigger: {include: c.yml, forward: {yaml: true}}\n",
        2,
        39,
        "unknown key `yaml`",
    );
}
