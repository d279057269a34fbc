//! One test (at least) per supported keyword: parse, then plan, then check
//! what the executor gets.

mod common;

use std::time::Duration;

use berth_ci::{
    ArtifactsWhen, CachePolicy, CacheWhen, MemoryRepository, PipelineSource, SecretVariable, When,
};
use common::*;

#[test]
fn default_stages_and_default_stage_test() {
    let (config, _) = parse("a:\n  script: x\n");
    assert_eq!(
        config.stages(),
        [".pre", "build", "test", "deploy", ".post"]
    );
    let p = plan("a:\n  script: x\n", &push_main());
    assert_eq!(p.stages, ["test"]);
    assert_eq!(job(&p, "a").stage, "test");
}

#[test]
fn stages_with_pre_and_post_first_and_last() {
    let text = "stages: [one, two]\nlate:\n  stage: .post\n  script: x\nearly:\n  stage: .pre\n  script: x\nb:\n  stage: two\n  script: x\na:\n  stage: one\n  script: x\n";
    let (config, _) = parse(text);
    assert_eq!(config.stages(), [".pre", "one", "two", ".post"]);
    let p = plan(text, &push_main());
    assert_eq!(names(&p), ["early", "a", "b", "late"]);
    assert_eq!(p.stages, [".pre", "one", "two", ".post"]);
    assert_eq!(job(&p, "b").stage_index, 2);
}

#[test]
fn hidden_jobs_are_not_run() {
    let p = plan(".tmpl:\n  script: x\nreal:\n  script: y\n", &push_main());
    assert_eq!(names(&p), ["real"]);
}

#[test]
fn extends_multi_level_deep_merge_arrays_replaced() {
    let text = r#"
.base:
  image: alpine
  variables: {A: base, B: base}
  script: [base]
  tags: [x, y]
.mid:
  extends: .base
  variables: {B: mid, C: mid}
  tags: [z]
.other:
  retry: 2
job:
  extends: [.mid, .other]
  variables: {C: job}
"#;
    let p = plan(text, &push_main());
    let j = job(&p, "job");
    assert_eq!(j.image.as_ref().unwrap().name, "alpine");
    assert_eq!(j.variables["A"], "base");
    assert_eq!(j.variables["B"], "mid");
    assert_eq!(j.variables["C"], "job");
    assert_eq!(j.script, ["base"]);
    assert_eq!(j.tags, ["z"]);
    assert_eq!(j.retry.max, 2);
}

#[test]
fn anchors_and_merge_keys() {
    let text = r#"
.defaults: &defaults
  image: rust:1
  before_script: [setup]
.vars: &vars
  variables: {X: "1"}
job:
  <<: [*defaults, *vars]
  script: [run]
  after_script: &after [cleanup]
other:
  script: [run]
  after_script: *after
"#;
    let p = plan(text, &push_main());
    let j = job(&p, "job");
    assert_eq!(j.image.as_ref().unwrap().name, "rust:1");
    assert_eq!(j.before_script, ["setup"]);
    assert_eq!(j.variables["X"], "1");
    assert_eq!(job(&p, "other").after_script, ["cleanup"]);
}

#[test]
fn default_section_applies_unless_the_job_sets_it() {
    let text = r#"
default:
  image: alpine
  before_script: [def-before]
  after_script: [def-after]
  retry: 1
  timeout: 30m
  interruptible: true
  tags: [linux]
  cache: {key: k, paths: [c/]}
  artifacts: {paths: [out/]}
a:
  script: a
b:
  image: debian
  before_script: [own]
  script: b
"#;
    let p = plan(text, &push_main());
    let a = job(&p, "a");
    assert_eq!(a.image.as_ref().unwrap().name, "alpine");
    assert_eq!(a.before_script, ["def-before"]);
    assert_eq!(a.after_script, ["def-after"]);
    assert_eq!(a.retry.max, 1);
    assert_eq!(a.timeout, Some(Duration::from_secs(1800)));
    assert!(a.interruptible);
    assert_eq!(a.tags, ["linux"]);
    assert_eq!(a.caches[0].key, "k");
    assert_eq!(a.artifacts.as_ref().unwrap().paths, ["out/"]);
    let b = job(&p, "b");
    assert_eq!(b.image.as_ref().unwrap().name, "debian");
    assert_eq!(b.before_script, ["own"]);
}

#[test]
fn global_image_and_scripts_act_as_defaults() {
    let p = plan(
        "image: alpine\nbefore_script: [g]\njob:\n  script: x\n",
        &push_main(),
    );
    let j = job(&p, "job");
    assert_eq!(j.image.as_ref().unwrap().name, "alpine");
    assert_eq!(j.before_script, ["g"]);
}

#[test]
fn workflow_rules_decide_whether_a_pipeline_is_created() {
    let text = r#"
workflow:
  rules:
    - if: $CI_COMMIT_TAG
      when: never
    - if: $CI_COMMIT_BRANCH == $CI_DEFAULT_BRANCH
      variables: {DEPLOY: "yes"}
    - if: $CI_PIPELINE_SOURCE == "web"
job:
  script: echo $DEPLOY
  only: [branches, tags]
"#;
    let p = plan(text, &push_main());
    assert_eq!(p.variables["DEPLOY"], "yes");
    assert_eq!(job(&p, "job").variables["DEPLOY"], "yes");
    let (config, _) = parse(text);
    let repo = MemoryRepository::default();
    let mut tag = push_main();
    tag.ref_name = "v1".into();
    tag.ref_is_tag = true;
    assert!(config.plan(&tag, &repo).unwrap().is_none());
    let mut feature = push_main();
    feature.ref_name = "feature".into();
    assert!(config.plan(&feature, &repo).unwrap().is_none());
    feature.source = PipelineSource::Web;
    assert!(config.plan(&feature, &repo).unwrap().is_some());
}

#[test]
fn image_string_and_mapping_with_variables() {
    let text = r#"
variables: {RUST: "1.95"}
a:
  image: rust:$RUST
  script: x
b:
  image:
    name: "registry.local/${RUST}/img"
    entrypoint: [""]
  script: x
"#;
    let p = plan(text, &push_main());
    assert_eq!(job(&p, "a").image.as_ref().unwrap().name, "rust:1.95");
    let b = job(&p, "b").image.as_ref().unwrap();
    assert_eq!(b.name, "registry.local/1.95/img");
    assert_eq!(b.entrypoint.as_deref(), Some(&[String::new()][..]));
}

#[test]
fn variables_global_job_override_forms_and_expansion() {
    let text = r#"
variables:
  A: global
  B: global
  NUM: 3
  FLAG: true
  DESCRIBED: {value: "v", description: "a described variable"}
  RAW: {value: "$A", expand: false}
  DIR: $CI_PROJECT_DIR/out
  DOLLAR: "$$HOME"
job:
  variables:
    B: job
    BOTH: "${A}-$B"
  script: x
"#;
    let p = plan(text, &push_main());
    let v = &job(&p, "job").variables;
    assert_eq!(v["A"], "global");
    assert_eq!(v["B"], "job");
    assert_eq!(v["NUM"], "3");
    assert_eq!(v["FLAG"], "true");
    assert_eq!(v["DESCRIBED"], "v");
    assert_eq!(v["RAW"], "$A");
    assert_eq!(v["DIR"], "/builds/demo/out");
    assert_eq!(v["DOLLAR"], "$HOME");
    assert_eq!(v["BOTH"], "global-job");
}

#[test]
fn scripts_string_list_and_nested_lists_flattened() {
    let text = r#"
.setup: &setup [one, two]
job:
  before_script: single
  script:
    - *setup
    - [three, [four]]
    - |
      multi
      line
  after_script: [after]
"#;
    let p = plan(text, &push_main());
    let j = job(&p, "job");
    assert_eq!(j.before_script, ["single"]);
    assert_eq!(j.script, ["one", "two", "three", "four", "multi\nline\n"]);
    assert_eq!(j.after_script, ["after"]);
}

#[test]
fn reference_tags() {
    let text = r#"
.setup:
  script: [setup-1, setup-2]
  vars:
    deep: [deep-1]
job:
  script:
    - !reference [.setup, script]
    - own
    - !reference [.setup, vars, deep]
"#;
    let p = plan(text, &push_main());
    assert_eq!(
        job(&p, "job").script,
        ["setup-1", "setup-2", "own", "deep-1"]
    );
}

#[test]
fn needs_dag_across_stages_and_empty_needs() {
    let text = r#"
stages: [build, test, deploy]
build-a: {stage: build, script: x}
build-b: {stage: build, script: x}
lint: {stage: test, needs: [], script: x}
test-a:
  stage: test
  needs: [build-a, {job: build-b, artifacts: false}]
  script: x
deploy: {stage: deploy, script: x}
"#;
    let p = plan(text, &push_main());
    assert_eq!(job(&p, "lint").needs.as_deref(), Some(&[][..]));
    let needs = job(&p, "test-a").needs.clone().unwrap();
    assert_eq!(needs.len(), 2);
    assert_eq!(needs[0].job, "build-a");
    assert!(needs[0].artifacts);
    assert_eq!(needs[1].job, "build-b");
    assert!(!needs[1].artifacts);
    assert!(job(&p, "deploy").needs.is_none());
}

#[test]
fn needs_in_the_same_stage_is_allowed() {
    let p = plan("a: {script: x}\nb: {script: x, needs: [a]}\n", &push_main());
    assert_eq!(job(&p, "b").needs.as_ref().unwrap()[0].job, "a");
}

#[test]
fn needs_on_a_parallel_job_needs_every_instance() {
    let p = plan(
        "stages: [a, b]\nbuild: {stage: a, parallel: 2, script: x}\nuse: {stage: b, needs: [build], script: x}\n",
        &push_main(),
    );
    let needs: Vec<_> = job(&p, "use")
        .needs
        .clone()
        .unwrap()
        .into_iter()
        .map(|n| n.job)
        .collect();
    assert_eq!(needs, ["build 1/2", "build 2/2"]);
}

#[test]
fn optional_needs_on_excluded_or_missing_jobs_are_dropped() {
    let text = r#"
stages: [a, b]
only-tags: {stage: a, only: [tags], script: x}
use:
  stage: b
  needs: [{job: only-tags, optional: true}, {job: nowhere, optional: true}]
  script: x
"#;
    let p = plan(text, &push_main());
    assert_eq!(job(&p, "use").needs.as_deref(), Some(&[][..]));
}

#[test]
fn dependencies_name_earlier_jobs() {
    let p = plan(
        "stages: [a, b]\nx: {stage: a, script: x}\ny: {stage: a, script: y}\nz: {stage: b, dependencies: [x], script: z}\nw: {stage: b, dependencies: [], script: w}\n",
        &push_main(),
    );
    assert_eq!(
        job(&p, "z").dependencies.as_deref(),
        Some(&["x".to_string()][..])
    );
    assert_eq!(job(&p, "w").dependencies.as_deref(), Some(&[][..]));
}

#[test]
fn artifacts_all_fields() {
    let text = r#"
variables: {OUT: target}
job:
  script: x
  artifacts:
    name: "build-$CI_COMMIT_REF_SLUG"
    paths: [$OUT/release/app, docs/]
    exclude: ["$OUT/**/*.d"]
    expire_in: 1 week
    when: always
    reports:
      junit: [report.xml]
"#;
    let p = plan(text, &push_main());
    let a = job(&p, "job").artifacts.clone().unwrap();
    assert_eq!(a.name.as_deref(), Some("build-main"));
    assert_eq!(a.paths, ["target/release/app", "docs/"]);
    assert_eq!(a.exclude, ["target/**/*.d"]);
    assert_eq!(a.expire_in, Some(Duration::from_secs(7 * 86_400)));
    assert_eq!(a.when, ArtifactsWhen::Always);
    assert_eq!(a.junit, ["report.xml"]);
    assert!(!a.expire_never);
}

#[test]
fn artifacts_expire_in_never_differs_from_no_expire_in() {
    let text = "keep:\n  script: x\n  artifacts:\n    paths: [a]\n    expire_in: never\nplain:\n  script: x\n  artifacts:\n    paths: [a]\n";
    let p = plan(text, &push_main());
    let keep = job(&p, "keep").artifacts.clone().unwrap();
    assert!(keep.expire_never);
    assert_eq!(keep.expire_in, None);
    // Without expire_in: the executor's default (GitLab's 30 days).
    let plain = job(&p, "plain").artifacts.clone().unwrap();
    assert!(!plain.expire_never);
    assert_eq!(plain.expire_in, None);
}

#[test]
fn artifacts_untracked_and_other_reports_warn() {
    let w = warnings(
        "job:\n  script: x\n  artifacts:\n    untracked: true\n    reports:\n      coverage_report: {}\n",
    );
    assert!(
        w.iter()
            .any(|w| w.starts_with("4:5: warning:") && w.contains("untracked")),
        "{w:?}"
    );
    assert!(
        w.iter()
            .any(|w| w.starts_with("6:7: warning:") && w.contains("coverage_report")),
        "{w:?}"
    );
}

#[test]
fn cache_text_key_files_key_and_list() {
    let text = r#"
job:
  script: x
  cache:
    - key: cargo-$CI_COMMIT_REF_SLUG
      paths: [.cargo/]
      policy: pull
      when: always
    - key:
        files: [Cargo.lock]
        prefix: $CI_JOB_NAME
      paths: [target/]
    - key: {files: [missing.lock]}
      paths: [x/]
      policy: push
"#;
    let repo = MemoryRepository::new([("Cargo.lock", "lock v1")]);
    let p = plan_with(text, &push_main(), &repo);
    let c = &job(&p, "job").caches;
    assert_eq!(c[0].key, "cargo-main");
    assert_eq!(c[0].paths, [".cargo/"]);
    assert_eq!(c[0].policy, CachePolicy::Pull);
    assert_eq!(c[0].when, CacheWhen::Always);
    assert!(
        c[1].key.starts_with("job-") && c[1].key.len() == 4 + 40,
        "{}",
        c[1].key
    );
    assert_eq!(c[2].key, "default");
    assert_eq!(c[2].policy, CachePolicy::Push);
    // The files key follows the file's contents.
    let repo2 = MemoryRepository::new([("Cargo.lock", "lock v2")]);
    let p2 = plan_with(text, &push_main(), &repo2);
    assert_ne!(job(&p2, "job").caches[1].key, c[1].key);
    let p3 = plan_with(text, &push_main(), &repo);
    assert_eq!(job(&p3, "job").caches[1].key, c[1].key);
}

#[test]
fn rules_if_when_allow_failure_variables_start_in() {
    let text = r#"
job:
  script: x
  variables: {LEVEL: job}
  rules:
    - if: $CI_COMMIT_BRANCH == "release"
      when: manual
    - if: $CI_COMMIT_BRANCH == "main"
      when: delayed
      start_in: 10 minutes
      allow_failure: true
      variables: {LEVEL: rule}
    - when: never
"#;
    let p = plan(text, &push_main());
    let j = job(&p, "job");
    assert_eq!(j.when, When::Delayed);
    assert_eq!(j.start_in, Some(Duration::from_secs(600)));
    assert!(j.allow_failure.any);
    assert_eq!(j.variables["LEVEL"], "rule");
    let mut release = push_main();
    release.ref_name = "release".into();
    let p = plan(text, &release);
    let j = job(&p, "job");
    assert_eq!(j.when, When::Manual);
    // A manual job from rules is not allowed to fail by default (GitLab).
    assert!(!j.allow_failure.any);
    let mut other = push_main();
    other.ref_name = "other".into();
    let (config, _) = parse(text);
    assert_eq!(
        config.plan(&other, &MemoryRepository::default()),
        Err(berth_ci::PlanError::Empty)
    );
}

#[test]
fn rules_changes_and_exists() {
    let text = r#"
docs:
  script: x
  rules:
    - changes: ["docs/**/*.md"]
rust:
  script: x
  rules:
    - exists: [Cargo.toml]
node:
  script: x
  rules:
    - exists: {paths: [package.json]}
always:
  script: x
"#;
    let repo = MemoryRepository::new([("Cargo.toml", "")]);
    let mut ctx = push_main();
    ctx.changed_files = Some(vec!["src/main.rs".into()]);
    assert_eq!(names(&plan_with(text, &ctx, &repo)), ["rust", "always"]);
    ctx.changed_files = Some(vec!["docs/guide/a.md".into()]);
    assert_eq!(
        names(&plan_with(text, &ctx, &repo)),
        ["docs", "rust", "always"]
    );
    // Unknown changes (a new branch): `changes` is true.
    ctx.changed_files = None;
    assert_eq!(
        names(&plan_with(text, &ctx, &repo)),
        ["docs", "rust", "always"]
    );
}

#[test]
fn rules_can_use_job_and_matrix_variables() {
    let text = r#"
job:
  script: x
  variables: {KIND: fast}
  parallel:
    matrix:
      - OS: [linux, windows]
  rules:
    - if: $OS == "linux" && $KIND == "fast"
"#;
    assert_eq!(names(&plan(text, &push_main())), ["job: [linux]"]);
}

#[test]
fn only_except_refs_keywords_regex_and_names() {
    let text = r#"
branches: {script: x, only: [branches]}
tags: {script: x, only: [tags]}
mrs: {script: x, only: [merge_requests]}
regex: {script: x, only: ["/^rel-.*$/"]}
named: {script: x, only: [main]}
not-main: {script: x, except: [main]}
web: {script: x, only: [web]}
plain: {script: x}
"#;
    assert_eq!(
        names(&plan(text, &push_main())),
        ["branches", "named", "plain"]
    );
    let mut tag = push_main();
    tag.ref_name = "rel-1".into();
    tag.ref_is_tag = true;
    assert_eq!(
        names(&plan(text, &tag)),
        ["tags", "regex", "not-main", "plain"]
    );
    let mut mr = push_main();
    mr.ref_name = "feature".into();
    mr.source = PipelineSource::MergeRequestEvent;
    // `except` alone keeps the default `only: [branches, tags]`, which a
    // merge request pipeline is not.
    assert_eq!(names(&plan(text, &mr)), ["mrs"]);
    let mut web = push_main();
    web.source = PipelineSource::Web;
    assert!(names(&plan(text, &web)).contains(&"web"));
}

#[test]
fn only_except_hash_form() {
    let text = r#"
job:
  script: x
  only:
    refs: [branches]
    variables: [$DEPLOY == "yes"]
    changes: [src/**/*]
  except:
    variables: [$SKIP]
"#;
    let mut ctx = push_main();
    ctx.secrets.push(SecretVariable {
        name: "DEPLOY".into(),
        value: "yes".into(),
        masked: false,
    });
    ctx.changed_files = Some(vec!["src/lib.rs".into()]);
    assert_eq!(names(&plan(text, &ctx)), ["job"]);
    ctx.changed_files = Some(vec!["README.md".into()]);
    let (config, _) = parse(text);
    assert!(config.plan(&ctx, &MemoryRepository::default()).is_err());
    ctx.changed_files = None;
    ctx.secrets.push(SecretVariable {
        name: "SKIP".into(),
        value: "1".into(),
        masked: false,
    });
    assert!(config.plan(&ctx, &MemoryRepository::default()).is_err());
}

#[test]
fn when_values() {
    let text = r#"
stages: [a, b]
build: {stage: a, script: x}
on-fail: {stage: b, when: on_failure, script: x}
always: {stage: b, when: always, script: x}
manual: {stage: b, when: manual, script: x}
never: {stage: b, when: never, script: x}
later: {stage: b, when: delayed, start_in: 30 minutes, script: x}
"#;
    let p = plan(text, &push_main());
    assert_eq!(names(&p), ["build", "on-fail", "always", "manual", "later"]);
    assert_eq!(job(&p, "on-fail").when, When::OnFailure);
    assert_eq!(job(&p, "always").when, When::Always);
    assert_eq!(job(&p, "later").when, When::Delayed);
    assert_eq!(job(&p, "later").start_in, Some(Duration::from_secs(1800)));
    // Manual jobs may fail by default, as in GitLab.
    assert_eq!(job(&p, "manual").when, When::Manual);
    assert!(job(&p, "manual").allow_failure.any);
    assert!(!job(&p, "build").allow_failure.any);
}

#[test]
fn allow_failure_bool_and_exit_codes() {
    let text = "a: {script: x, allow_failure: true}\nb: {script: x, allow_failure: {exit_codes: 137}}\nc: {script: x, allow_failure: {exit_codes: [1, 2]}}\nd: {script: x, when: manual, allow_failure: false}\n";
    let p = plan(text, &push_main());
    assert!(job(&p, "a").allow_failure.allows(5));
    let b = &job(&p, "b").allow_failure;
    assert!(b.allows(137) && !b.allows(1));
    assert_eq!(job(&p, "c").allow_failure.exit_codes, [1, 2]);
    assert!(!job(&p, "d").allow_failure.any);
}

#[test]
fn retry_int_and_mapping() {
    let text = r#"
a: {script: x, retry: 2}
b:
  script: x
  retry:
    max: 1
    when: [runner_system_failure, stuck_or_timeout_failure]
    exit_codes: [137]
c:
  script: x
  retry: {max: 2, when: script_failure}
"#;
    let p = plan(text, &push_main());
    assert_eq!(job(&p, "a").retry.max, 2);
    let b = &job(&p, "b").retry;
    assert_eq!(b.max, 1);
    assert_eq!(
        b.when,
        ["runner_system_failure", "stuck_or_timeout_failure"]
    );
    assert_eq!(b.exit_codes, [137]);
    assert_eq!(job(&p, "c").retry.when, ["script_failure"]);
}

#[test]
fn timeout_human_forms() {
    let text = "a: {script: x, timeout: 1h 30m}\nb: {script: x, timeout: 90 minutes}\nc: {script: x, timeout: 3600}\nd: {script: x, timeout: \"2h\"}\n";
    let p = plan(text, &push_main());
    assert_eq!(job(&p, "a").timeout, Some(Duration::from_secs(5400)));
    assert_eq!(job(&p, "b").timeout, Some(Duration::from_secs(5400)));
    assert_eq!(job(&p, "c").timeout, Some(Duration::from_secs(3600)));
    assert_eq!(job(&p, "d").timeout, Some(Duration::from_secs(7200)));
}

#[test]
fn parallel_count() {
    let p = plan("t:\n  parallel: 3\n  script: x\n", &push_main());
    assert_eq!(names(&p), ["t 1/3", "t 2/3", "t 3/3"]);
    let j = job(&p, "t 2/3");
    assert_eq!(j.variables["CI_NODE_INDEX"], "2");
    assert_eq!(j.variables["CI_NODE_TOTAL"], "3");
    assert_eq!(j.variables["CI_JOB_NAME"], "t 2/3");
    assert_eq!(j.base_name, "t");
}

#[test]
fn parallel_matrix_cartesian_products() {
    let text = r#"
test:
  script: x
  parallel:
    matrix:
      - PROVIDER: aws
        STACK: [monitoring, app1]
      - PROVIDER: [gcp, vultr]
        STACK: data
"#;
    let p = plan(text, &push_main());
    assert_eq!(
        names(&p),
        [
            "test: [aws, monitoring]",
            "test: [aws, app1]",
            "test: [gcp, data]",
            "test: [vultr, data]"
        ]
    );
    let j = job(&p, "test: [vultr, data]");
    assert_eq!(j.variables["PROVIDER"], "vultr");
    assert_eq!(j.variables["STACK"], "data");
    assert_eq!(
        j.matrix,
        [
            ("PROVIDER".into(), "vultr".into()),
            ("STACK".into(), "data".into())
        ]
    );
    assert_eq!(j.parallel.unwrap().index, 4);
    assert_eq!(j.parallel.unwrap().total, 4);
}

#[test]
fn tags_environment_interruptible_resource_group() {
    let text = r#"
variables: {ARCH: arm64}
a:
  script: x
  tags: [docker, $ARCH]
  environment: production
  interruptible: true
  resource_group: prod-$ARCH
b:
  script: x
  environment:
    name: review/$CI_COMMIT_REF_SLUG
    url: https://$CI_COMMIT_REF_SLUG.example.com
    action: stop
"#;
    let p = plan(text, &push_main());
    let a = job(&p, "a");
    assert_eq!(a.tags, ["docker", "arm64"]);
    assert_eq!(a.environment.as_ref().unwrap().name, "production");
    assert_eq!(a.environment.as_ref().unwrap().action, "start");
    assert!(a.interruptible);
    assert_eq!(a.resource_group.as_deref(), Some("prod-arm64"));
    let b = job(&p, "b").environment.clone().unwrap();
    assert_eq!(b.name, "review/main");
    assert_eq!(b.url.as_deref(), Some("https://main.example.com"));
    assert_eq!(b.action, "stop");
}

#[test]
fn predefined_variables() {
    let p = plan(
        "stages: [build]\nb:\n  stage: build\n  script: x\n",
        &push_main(),
    );
    let v = &job(&p, "b").variables;
    assert_eq!(v["CI"], "true");
    assert_eq!(v["CI_PROJECT_DIR"], "/builds/demo");
    assert_eq!(v["CI_PROJECT_NAME"], "demo");
    assert_eq!(
        v["CI_COMMIT_SHA"],
        "0123456789abcdef0123456789abcdef01234567"
    );
    assert_eq!(v["CI_COMMIT_SHORT_SHA"], "01234567");
    assert_eq!(v["CI_COMMIT_REF_NAME"], "main");
    assert_eq!(v["CI_COMMIT_REF_SLUG"], "main");
    assert_eq!(v["CI_COMMIT_BRANCH"], "main");
    assert!(!v.contains_key("CI_COMMIT_TAG"));
    assert_eq!(v["CI_DEFAULT_BRANCH"], "main");
    assert_eq!(v["CI_PIPELINE_ID"], "42");
    assert_eq!(v["CI_PIPELINE_SOURCE"], "push");
    assert_eq!(v["CI_JOB_NAME"], "b");
    assert_eq!(v["CI_JOB_STAGE"], "build");
    assert!(!v.contains_key("CI_NODE_INDEX"));
    assert!(
        !v.contains_key("CI_JOB_ID"),
        "assigned later by the executor"
    );

    let mut tag = push_main();
    tag.ref_name = "Release/V1.0".into();
    tag.ref_is_tag = true;
    tag.source = PipelineSource::Schedule;
    let p = plan("b:\n  script: x\n", &tag);
    let v = &job(&p, "b").variables;
    assert_eq!(v["CI_COMMIT_TAG"], "Release/V1.0");
    assert_eq!(v["CI_COMMIT_REF_SLUG"], "release-v1-0");
    assert!(!v.contains_key("CI_COMMIT_BRANCH"));
    assert_eq!(v["CI_PIPELINE_SOURCE"], "schedule");
}

#[test]
fn secret_variables_win_are_not_expanded_and_masked_ones_are_listed() {
    let mut ctx = push_main();
    ctx.secrets = vec![
        SecretVariable {
            name: "TOKEN".into(),
            value: "s3cr3t-$X".into(),
            masked: true,
        },
        SecretVariable {
            name: "A".into(),
            value: "project".into(),
            masked: false,
        },
    ];
    let p = plan(
        "variables: {A: yaml, USE: \"$TOKEN\"}\njob:\n  script: x\n",
        &ctx,
    );
    let v = &job(&p, "job").variables;
    assert_eq!(v["TOKEN"], "s3cr3t-$X");
    assert_eq!(v["A"], "project");
    assert_eq!(v["USE"], "s3cr3t-$X");
    assert_eq!(p.masked, ["TOKEN"]);
}

#[test]
fn unsupported_keywords_warn() {
    let text = r#"
# (`include` is tested in include.rs)
job:
  script: x
  image: alpine
  coverage: '/\d+%/'
  release: {tag_name: v1}
  secrets: {}
  id_tokens: {}
  hooks: {}
  inherit: {default: false}
down:
  trigger: {include: child.yml}
pages:
  script: x
"#;
    let w = warnings(text);
    for (pos, word) in [
        ("7:3", "release"),
        ("8:3", "secrets"),
        ("9:3", "id_tokens"),
        ("10:3", "hooks"),
        ("11:3", "inherit"),
        ("14:1", "pages"),
    ] {
        assert!(
            w.iter()
                .any(|w| w.starts_with(&format!("{pos}: warning:")) && w.contains(word)),
            "no warning {pos} {word} in {w:#?}"
        );
    }
    // `coverage` is supported.
    assert!(!w.iter().any(|w| w.contains("coverage")), "{w:#?}");
    // A trigger job is a job (it starts a child pipeline), not warned of.
    assert!(!w.iter().any(|w| w.contains("trigger")), "{w:#?}");
    let p = plan(text, &push_main());
    assert_eq!(names(&p), ["job", "down", "pages"]);
    assert_eq!(job(&p, "job").coverage.as_deref(), Some(r"/\d+%/"));
}

#[test]
fn dir_repository_lists_files_and_reads_only_inside() {
    use berth_ci::{DirRepository, Repository};
    let dir = tempfile::tempdir().expect("tempdir");
    std::fs::create_dir_all(dir.path().join("src/a")).expect("mkdir");
    std::fs::create_dir_all(dir.path().join(".git")).expect("mkdir");
    std::fs::write(dir.path().join("src/a/lib.rs"), "x").expect("write");
    std::fs::write(dir.path().join("Cargo.toml"), "[package]").expect("write");
    std::fs::write(dir.path().join(".git/HEAD"), "ref").expect("write");
    let repo = DirRepository::new(dir.path());
    let mut files = repo.files();
    files.sort();
    assert_eq!(files, ["Cargo.toml", "src/a/lib.rs"]);
    assert_eq!(repo.read("Cargo.toml").as_deref(), Some(&b"[package]"[..]));
    assert_eq!(repo.read("../etc/passwd"), None);
    assert_eq!(repo.read("/etc/passwd"), None);
    // exists and key:files through the directory.
    let text = "job:\n  script: x\n  rules: [{exists: [\"src/**/*.rs\"]}]\n  cache: {key: {files: [Cargo.toml]}}\n";
    let (config, _) = parse(text);
    let p = config
        .plan(&push_main(), &repo)
        .expect("plans")
        .expect("a pipeline");
    assert_eq!(p.jobs[0].caches[0].key.len(), 40);
}

#[test]
fn variable_reference_cycles_and_long_chains_terminate() {
    let mut text = String::from("variables:\n  A: \"$B\"\n  B: \"x$A\"\n");
    for i in 0..2000 {
        text.push_str(&format!("  V{i}: \"$V{}\"\n", i + 1));
    }
    text.push_str("  V2000: end\njob:\n  script: x\n");
    let p = plan(&text, &push_main());
    let v = &job(&p, "job").variables;
    // The cycle ends in an empty reference; the deep chain is cut, not a crash.
    assert_eq!(v["B"], "x");
    assert_eq!(v["V1999"], "end");
    assert!(v["V0"].starts_with('$') || v["V0"] == "end");
}

#[test]
fn reports_dotenv_coverage_and_on_stop_are_parsed_and_checked() {
    let text = "build:\n  script: x\n  coverage: '/TOTAL (\\d+%)/'\n  artifacts:\n    reports:\n      dotenv: [build.env, more.env]\n      junit: out.xml\ndeploy:\n  script: x\n  environment: {name: review, on_stop: stop_review}\nstop_review:\n  script: x\n  when: manual\n  environment: {name: review, action: stop}\n";
    let w = warnings(text);
    assert!(w.is_empty(), "{w:#?}");
    let p = plan(text, &push_main());
    let a = job(&p, "build").artifacts.clone().unwrap();
    assert_eq!(a.dotenv, ["build.env", "more.env"]);
    assert_eq!(a.junit, ["out.xml"]);
    assert_eq!(
        job(&p, "build").coverage.as_deref(),
        Some(r"/TOTAL (\d+%)/")
    );
    let env = job(&p, "deploy").environment.clone().unwrap();
    assert_eq!(env.on_stop.as_deref(), Some("stop_review"));

    for (bad, why) in [
        (
            "a:\n  script: x\n  coverage: 'TOTAL'\n",
            "3:13: error: `coverage` must be a regular expression between slashes",
        ),
        (
            "a:\n  script: x\n  coverage: '/(unclosed/'\n",
            "3:13: error: `coverage` \"/(unclosed/\" is not a valid regular expression",
        ),
        (
            "a:\n  script: x\n  environment: {name: r, on_stop: nope}\n",
            "names `nope`, which is not a job",
        ),
        (
            "a:\n  script: x\n  environment: {name: r, on_stop: b}\nb:\n  script: x\n",
            "but has no `environment`",
        ),
        (
            "a:\n  script: x\n  environment: {name: r, on_stop: b}\nb:\n  script: x\n  environment: r\n",
            "is `start`, not `stop`",
        ),
        (
            "a:\n  script: x\n  environment: {name: r, on_stop: b}\nb:\n  script: x\n  environment: {name: s, action: stop}\n",
            "but stops the environment `s`",
        ),
    ] {
        let shown = errors(bad);
        assert!(shown.iter().any(|d| d.contains(why)), "{bad}: {shown:#?}");
    }
}
