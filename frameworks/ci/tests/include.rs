//! `include:`: every form GitLab documents (a path, a list, `local`,
//! globs, nested files, `rules`), the merge of included files, and the
//! errors: missing files, loops, limits, refused kinds, and diagnostics
//! that name the included file.

mod common;

use std::time::{Duration, Instant};

use berth_ci::{Config, Context, MemoryRepository, ParseOptions, Plan};
use common::*;

/// Parses `main` as `.gitlab-ci.yml` of `repo` for `ctx`.
fn parse_in(
    main: &str,
    repo: &MemoryRepository,
    ctx: &Context,
) -> Result<(Config, Vec<String>), Vec<String>> {
    Config::parse_in(main, ".gitlab-ci.yml", &ParseOptions::default(), repo, ctx)
        .map(|(c, w)| (c, w.iter().map(|d| d.to_string()).collect()))
        .map_err(|d| d.iter().map(|d| d.to_string()).collect())
}

fn ok(main: &str, files: &[(&str, &str)]) -> Config {
    let repo = MemoryRepository::new(files.iter().copied());
    match parse_in(main, &repo, &push_main()) {
        Ok((c, _)) => c,
        Err(e) => panic!("expected the file to parse, got:\n{}", e.join("\n")),
    }
}

fn errs(main: &str, files: &[(&str, &str)]) -> Vec<String> {
    let repo = MemoryRepository::new(files.iter().copied());
    match parse_in(main, &repo, &push_main()) {
        Ok(_) => panic!("expected errors"),
        Err(e) => e,
    }
}

fn has(errs: &[String], prefix: &str, needle: &str) {
    assert!(
        errs.iter()
            .any(|e| e.starts_with(prefix) && e.contains(needle)),
        "no `{prefix}...{needle}...` in:\n{}",
        errs.join("\n")
    );
}

fn planned(config: &Config) -> Plan {
    config
        .plan(&push_main(), &MemoryRepository::default())
        .expect("plans")
        .expect("a pipeline")
}

const TEMPLATES: &str =
    ".tpl:\n  image: alpine\n  variables:\n    FROM_TEMPLATE: \"yes\"\n  script: [echo template]\n";

#[test]
fn a_path_a_list_and_local_forms() {
    let files = [
        ("ci/templates.yml", TEMPLATES),
        ("ci/lint.yml", "lint:\n  script: [lint]\n"),
    ];
    // A string.
    let c = ok(
        "include: 'ci/templates.yml'\nbuild:\n  extends: .tpl\n",
        &files,
    );
    let p = planned(&c);
    assert_eq!(names(&p), ["build"]);
    assert_eq!(job(&p, "build").variables["FROM_TEMPLATE"], "yes");
    assert_eq!(job(&p, "build").script, ["echo template"]);
    assert_eq!(c.included_files(), ["ci/templates.yml"]);
    assert!(!c.has_include_rules());
    // A list of strings, one with a leading `/`.
    let c = ok(
        "include:\n  - /ci/templates.yml\n  - ci/lint.yml\nbuild:\n  extends: .tpl\n",
        &files,
    );
    assert_eq!(names(&planned(&c)), ["lint", "build"]);
    // `local:`, alone and in a list.
    let c = ok(
        "include:\n  local: ci/lint.yml\nbuild:\n  script: [b]\n",
        &files,
    );
    assert_eq!(names(&planned(&c)), ["lint", "build"]);
    let c = ok(
        "include:\n  - local: ./ci/lint.yml\n  - local: ci/templates.yml\nbuild:\n  extends: .tpl\n",
        &files,
    );
    assert_eq!(c.included_files(), ["ci/lint.yml", "ci/templates.yml"]);
}

#[test]
fn globs_match_as_gitlab_does() {
    let files = [
        ("ci/a.yml", "a:\n  script: [a]\n"),
        ("ci/b.yaml", "b:\n  script: [b]\n"),
        ("ci/c.yml", "c:\n  script: [c]\n"),
        ("ci/sub/d.yml", "d:\n  script: [d]\n"),
        ("ci/notes.txt", "not yaml"),
    ];
    // `*` stays in the directory; the matches are read in name order.
    let c = ok("include: 'ci/*.yml'\n", &files);
    assert_eq!(c.included_files(), ["ci/a.yml", "ci/c.yml"]);
    // `**` crosses directories.
    let c = ok("include:\n  - local: 'ci/**.yml'\n", &files);
    assert_eq!(c.included_files(), ["ci/a.yml", "ci/c.yml", "ci/sub/d.yml"]);
    // `**/` needs a subdirectory.
    let c = ok("include: 'ci/**/*.yml'\n", &files);
    assert_eq!(c.included_files(), ["ci/sub/d.yml"]);
    // A glob that matches nothing is an error.
    let e = errs("include: 'nope/*.yml'\njob: {script: x}\n", &files);
    has(&e, "1:10: error:", "matches no file");
}

#[test]
fn nested_includes_and_diamonds() {
    let files = [
        ("ci/base.yml", ".base:\n  variables: {BASE: \"1\"}\n"),
        (
            "ci/left.yml",
            "include: ci/base.yml\nleft:\n  extends: .base\n  script: [l]\n",
        ),
        (
            "ci/right.yml",
            "include: {local: ci/base.yml}\nright:\n  extends: .base\n  script: [r]\n",
        ),
    ];
    // base.yml is included twice (through left and right): allowed, and
    // each inclusion counts.
    let c = ok("include: [ci/left.yml, ci/right.yml]\n", &files);
    assert_eq!(
        c.included_files(),
        ["ci/left.yml", "ci/base.yml", "ci/right.yml", "ci/base.yml"]
    );
    let p = planned(&c);
    assert_eq!(job(&p, "left").variables["BASE"], "1");
    assert_eq!(job(&p, "right").variables["BASE"], "1");
}

#[test]
fn the_including_file_wins_the_deep_merge() {
    let included = "stages: [prep, check]\nvariables:\n  A: included\n  B: included\ndefault:\n  image: from-include\nworkflow:\n  rules:\n    - if: $CI_COMMIT_BRANCH == \"main\"\njob:\n  stage: check\n  variables: {X: \"1\", Y: \"1\"}\n  script: [included]\n  tags: [a, b]\n";
    let later = "variables:\n  B: later\n";
    let main = "include: [ci/one.yml, ci/two.yml]\nvariables:\n  A: main\njob:\n  variables: {Y: \"2\"}\n  tags: [c]\n";
    let c = ok(main, &[("ci/one.yml", included), ("ci/two.yml", later)]);
    // `stages` and `default` come from the included file.
    assert_eq!(c.stages(), [".pre", "prep", "check", ".post"]);
    let p = planned(&c);
    let j = job(&p, "job");
    assert_eq!(j.stage, "check");
    assert_eq!(
        j.image.as_ref().map(|i| i.name.as_str()),
        Some("from-include")
    );
    // Mappings merge key by key; the including file and later files win.
    assert_eq!(j.variables["A"], "main");
    assert_eq!(j.variables["B"], "later");
    assert_eq!(j.variables["X"], "1");
    assert_eq!(j.variables["Y"], "2");
    // Lists are replaced, not appended.
    assert_eq!(j.tags, ["c"]);
    assert_eq!(j.script, ["included"]);
    // The included `workflow` applies: no pipeline on another branch.
    let other = Context {
        ref_name: "feature".into(),
        ..push_main()
    };
    assert!(
        c.plan(&other, &MemoryRepository::default())
            .unwrap()
            .is_none()
    );
}

#[test]
fn references_and_extends_reach_included_jobs() {
    let files = [(
        "ci/setup.yml",
        ".setup:\n  before_script: [echo setup]\n  script: [echo base]\n",
    )];
    let main = "include: ci/setup.yml\njob:\n  script:\n    - !reference [.setup, before_script]\n    - echo own\n";
    let p = planned(&ok(main, &files));
    assert_eq!(job(&p, "job").script, ["echo setup", "echo own"]);
}

#[test]
fn rules_if_sees_predefined_and_global_variables() {
    let files = [
        ("ci/main-only.yml", "main-only:\n  script: [m]\n"),
        ("ci/flag.yml", "flagged:\n  script: [f]\n"),
    ];
    let main = "variables:\n  EXTRA: \"on\"\ninclude:\n  - local: ci/main-only.yml\n    rules:\n      - if: $CI_COMMIT_BRANCH == \"main\"\n  - local: ci/flag.yml\n    rules:\n      - if: $EXTRA == \"off\"\n        when: never\n      - if: $EXTRA == \"on\"\njob:\n  script: [x]\n";
    let repo = MemoryRepository::new(files);
    let (c, _) = parse_in(main, &repo, &push_main()).unwrap();
    assert!(c.has_include_rules());
    assert_eq!(c.included_files(), ["ci/main-only.yml", "ci/flag.yml"]);
    let feature = Context {
        ref_name: "feature".into(),
        ..push_main()
    };
    let (c, _) = parse_in(main, &repo, &feature).unwrap();
    assert_eq!(c.included_files(), ["ci/flag.yml"]);
    // A secret variable is seen too; `when: never` excludes the file.
    let off = Context {
        secrets: vec![berth_ci::SecretVariable {
            name: "EXTRA".into(),
            value: "off".into(),
            masked: false,
        }],
        ..push_main()
    };
    let (c, _) = parse_in(main, &repo, &off).unwrap();
    assert_eq!(c.included_files(), ["ci/main-only.yml"]);
}

#[test]
fn rules_exists_and_changes() {
    let main = "include:\n  - local: ci/docker.yml\n    rules:\n      - exists: [Dockerfile]\n  - local: ci/docs.yml\n    rules:\n      - changes: ['docs/**/*']\njob:\n  script: [x]\n";
    let docker = ("ci/docker.yml", "docker:\n  script: [d]\n");
    let docs = ("ci/docs.yml", "docs:\n  script: [d]\n");
    let with_dockerfile = MemoryRepository::new([docker, docs, ("Dockerfile", "FROM x\n")]);
    let without = MemoryRepository::new([docker, docs]);
    let docs_changed = Context {
        changed_files: Some(vec!["docs/guide/a.md".into()]),
        ..push_main()
    };
    let code_changed = Context {
        changed_files: Some(vec!["src/main.rs".into()]),
        ..push_main()
    };
    let (c, _) = parse_in(main, &with_dockerfile, &code_changed).unwrap();
    assert_eq!(c.included_files(), ["ci/docker.yml"]);
    let (c, _) = parse_in(main, &without, &docs_changed).unwrap();
    assert_eq!(c.included_files(), ["ci/docs.yml"]);
}

#[test]
fn variables_in_paths() {
    let c = ok(
        "include: ci/$CI_PIPELINE_SOURCE.yml\n",
        &[("ci/push.yml", "on-push:\n  script: [p]\n")],
    );
    assert_eq!(c.included_files(), ["ci/push.yml"]);
}

#[test]
fn missing_files_bad_paths_and_bad_entries() {
    let job = "job:\n  script: [x]\n";
    let e = errs(&format!("include: ci/none.yml\n{job}"), &[]);
    has(&e, "1:10: error:", "`ci/none.yml` does not exist");
    // The missing file is the only error (no echo of what it would define).
    assert_eq!(e.len(), 1, "{e:?}");
    let e = errs(&format!("include: ../outside.yml\n{job}"), &[]);
    has(&e, "1:10: error:", "leaves the repository");
    let e = errs(&format!("include: ci/a.json\n{job}"), &[]);
    has(&e, "1:10: error:", "must end in `.yml` or `.yaml`");
    let e = errs(&format!("include:\n  - lokal: a.yml\n{job}"), &[]);
    has(&e, "2:5: error:", "unknown key `lokal`");
    let e = errs(&format!("include:\n{job}"), &[]);
    has(&e, "1:1: error:", "`include` is empty");
    let e = errs(&format!("include:\n  - [a.yml]\n{job}"), &[]);
    has(&e, "2:5: error:", "must be a path or a mapping");
    let e = errs(
        &format!("include:\n  - local: a.yml\n    inputs: {{x: 1}}\n{job}"),
        &[("a.yml", "a:\n  script: [a]\n")],
    );
    has(&e, "3:5: error:", "`include:inputs` is not supported");
    let e = errs(
        &format!(
            "include:\n  - local: a.yml\n    rules:\n      - if: $X\n        when: manual\n{job}"
        ),
        &[("a.yml", "a:\n  script: [a]\n")],
    );
    has(&e, "5:15: error:", "must be `always` or `never`");
}

#[test]
fn remote_project_template_and_component_are_refused() {
    let job = "job:\n  script: [x]\n";
    for (entry, kind) in [
        ("'https://example.com/ci.yml'", "include:remote"),
        ("{remote: 'https://example.com/ci.yml'}", "include:remote"),
        ("{project: group/tools, file: ci.yml}", "include:project"),
        ("{template: Auto-DevOps.gitlab-ci.yml}", "include:template"),
        (
            "{component: gitlab.com/org/comp/build@1.0}",
            "include:component",
        ),
    ] {
        let e = errs(&format!("include: {entry}\n{job}"), &[]);
        assert!(
            e.iter().any(|e| e.contains(kind)
                && e.contains("not supported")
                && e.contains("commit it in this repository and include it with `local: path`")),
            "{entry}: {e:?}"
        );
    }
}

#[test]
fn diagnostics_in_included_files_name_them() {
    let files = [
        (
            "ci/templates.yml",
            "# templates\n.tpl:\n  script: [x]\n  scirpt: [y]\n",
        ),
        ("ci/broken.yml", "job:\n  script: [a\n"),
        (
            "ci/warn.yml",
            "w:\n  script: [x]\n  release: {tag_name: v1}\n",
        ),
    ];
    let e = errs("include: ci/templates.yml\njob:\n  extends: .tpl\n", &files);
    has(
        &e,
        "ci/templates.yml:4:3: error:",
        "unknown key `scirpt` in the job `job`",
    );
    let e = errs("include: ci/broken.yml\n", &files);
    has(&e, "ci/broken.yml:2:11: error:", "invalid YAML");
    // Warnings too; the main file's keep their plain form.
    let repo = MemoryRepository::new(files);
    let (_, w) = parse_in(
        "include: ci/warn.yml\nmine:\n  script: [x]\n  hooks: {}\n",
        &repo,
        &push_main(),
    )
    .unwrap();
    assert!(w[0].starts_with("4:3: warning: `hooks`"), "{w:?}");
    assert!(
        w[1].starts_with("ci/warn.yml:3:3: warning: `release`"),
        "{w:?}"
    );
}

#[test]
fn a_loop_is_an_error() {
    let files = [
        ("ci/a.yml", "include: ci/b.yml\na:\n  script: [a]\n"),
        ("ci/b.yml", "include: /ci/a.yml\nb:\n  script: [b]\n"),
        ("ci/self.yml", "include: ci/self.yml\n"),
    ];
    let e = errs("include: ci/a.yml\n", &files);
    has(
        &e,
        "ci/b.yml:1:10: error:",
        "`include` forms a loop: .gitlab-ci.yml -> ci/a.yml -> ci/b.yml -> ci/a.yml",
    );
    let e = errs("include: ci/self.yml\n", &files);
    has(&e, "ci/self.yml:1:10: error:", "forms a loop");
    // Including the main file is a loop too.
    let e = errs(
        "include: .gitlab-ci.yml\njob: {script: [x]}\n",
        &[(".gitlab-ci.yml", "")],
    );
    has(&e, "1:10: error:", "forms a loop");
}

#[test]
fn too_many_files_and_too_deep() {
    // 151 distinct files.
    let many: Vec<(String, String)> = (0..151)
        .map(|i| (format!("ci/f{i:03}.yml"), format!("j{i}:\n  script: [x]\n")))
        .collect();
    let repo = MemoryRepository::new(many.iter().map(|(p, t)| (p.as_str(), t.as_str())));
    let list: String = (0..151).map(|i| format!("  - ci/f{i:03}.yml\n")).collect();
    let e = parse_in(&format!("include:\n{list}"), &repo, &push_main()).unwrap_err();
    has(&e, "152:5: error:", "more than 150 files are included");
    // 150 is fine.
    let list: String = (0..150).map(|i| format!("  - ci/f{i:03}.yml\n")).collect();
    let (c, _) = parse_in(&format!("include:\n{list}"), &repo, &push_main()).unwrap();
    assert_eq!(c.included_files().len(), 150);
    // A chain of 101 nested files.
    let chain: Vec<(String, String)> = (0..=101)
        .map(|i| {
            (
                format!("n{i}.yml"),
                format!("include: n{}.yml\nj{i}:\n  script: [x]\n", i + 1),
            )
        })
        .collect();
    let repo = MemoryRepository::new(chain.iter().map(|(p, t)| (p.as_str(), t.as_str())));
    let e = parse_in("include: n0.yml\n", &repo, &push_main()).unwrap_err();
    has(&e, "n99.yml:1:10: error:", "nests more than 100 files deep");
}

#[test]
fn a_glob_over_thousands_of_files_is_refused_quickly() {
    let files: Vec<(String, String)> = (0..20_000)
        .map(|i| {
            (
                format!("ci/gen/f{i:05}.yml"),
                "x:\n  script: [x]\n".to_string(),
            )
        })
        .collect();
    let repo = MemoryRepository::new(files);
    let start = Instant::now();
    let e = parse_in("include: 'ci/**.yml'\n", &repo, &push_main()).unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(2),
        "{:?}",
        start.elapsed()
    );
    has(
        &e,
        "1:10: error:",
        "matches more files than can be included (at most 150",
    );
}

#[test]
fn the_size_and_node_limits_count_every_file() {
    let big = format!("big:\n  script: [x]\n# {}\n", "x".repeat(600));
    let files = [("a.yml", big.as_str()), ("b.yml", big.as_str())];
    let small = ParseOptions {
        max_bytes: 1000,
        ..ParseOptions::default()
    };
    let repo = MemoryRepository::new(files);
    let main = "include: [a.yml, b.yml]\n";
    let e = Config::parse_in(main, ".gitlab-ci.yml", &small, &repo, &push_main()).unwrap_err();
    let e: Vec<String> = e.iter().map(|d| d.to_string()).collect();
    has(
        &e,
        "1:18: error:",
        &format!(
            "the included file `b.yml` ({} bytes) brings the pipeline's files to {} bytes, more than the limit of 1000 bytes",
            big.len(),
            main.len() + 2 * big.len()
        ),
    );
    let few = ParseOptions {
        max_nodes: 30,
        ..ParseOptions::default()
    };
    let list = "v:\n  variables: {A: 1, B: 2, C: 3, D: 4, E: 5, F: 6, G: 7}\n  script: [x]\n";
    let repo = MemoryRepository::new([("a.yml", list), ("b.yml", list)]);
    let e = Config::parse_in(main, ".gitlab-ci.yml", &few, &repo, &push_main()).unwrap_err();
    assert!(
        e.iter()
            .any(|d| d.message.contains("more than 30 YAML nodes")),
        "{e:?}"
    );
}

#[test]
fn parse_without_a_repository_refuses_include() {
    let e = errors("include: ci/a.yml\njob:\n  script: [x]\n");
    assert!(
        e.iter()
            .any(|e| e.starts_with("1:1: error:") && e.contains("needs the repository")),
        "{e:?}"
    );
}
