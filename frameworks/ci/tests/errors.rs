//! One test per error, with its exact line and column; and the limits that
//! keep hostile files from hanging or exhausting memory (the billion
//! laughs, size, nesting and `extends` depth); and a proptest that parsing
//! and planning never panic.

mod common;

use std::time::{Duration, Instant};

use berth_ci::{Config, MemoryRepository, ParseOptions, PlanError};
use common::*;

#[test]
fn invalid_yaml() {
    assert_error("job:\n  script: a: b\n", 2, 12, "invalid YAML");
}

#[test]
fn unclosed_brackets_and_quotes_are_reported_where_they_open() {
    // The parser notices at the end of the file; the error names the
    // opening.
    assert_error(
        "job:\n  script: [a\n",
        2,
        11,
        "invalid YAML: this `[` is never closed (the file ends at line 2)",
    );
    assert_error(
        "job:\n  variables: {A: 1\n  # more\n",
        2,
        14,
        "this `{` is never closed (the file ends at line 3)",
    );
    assert_error(
        "job:\n  script:\n    - \"echo hi\n    - b\n",
        3,
        7,
        "the quoted string that starts here is never closed (the file ends at line 4)",
    );
    assert_error(
        "job:\n  script: 'it\n",
        2,
        11,
        "quoted string that starts here is never closed",
    );
    // A bracket whose content is wrong: the error is where the parser
    // stopped, and names the bracket it is in.
    let errs = errors("job:\n  script: [a, b: c: d]\nother: x\n");
    assert!(
        errs.iter()
            .any(|e| e.contains("(inside the `[` opened at line 2, column 11)")),
        "{errs:?}"
    );
}

#[test]
fn duplicate_keys() {
    assert_error("job:\n  script: a\n  script: b\n", 3, 3, "appears twice");
}

#[test]
fn root_must_be_a_mapping() {
    assert_error("- a\n- b\n", 1, 1, "must be a mapping");
}

#[test]
fn empty_file() {
    assert_error("", 1, 1, "empty");
}

#[test]
fn no_visible_job() {
    assert_error(".hidden:\n  script: x\n", 1, 1, "defines no job");
}

#[test]
fn job_must_be_a_mapping() {
    assert_error("job: echo\n", 1, 1, "must be a mapping");
    // A misspelled global keyword gets a suggestion.
    assert_error(
        "stage: [a]\njob: {script: x}\n",
        1,
        1,
        "did you mean the keyword `stages`",
    );
}

#[test]
fn unknown_job_key_with_suggestion() {
    assert_error(
        "job:\n  script: x\n  artifact:\n    paths: [a]\n",
        3,
        3,
        "did you mean `artifacts`?",
    );
    let errs = errors("job:\n  script: x\n  zzzzzzzz: 1\n");
    assert!(
        errs.iter()
            .any(|e| e.starts_with("3:3: error: unknown key `zzzzzzzz`")
                && !e.contains("did you mean")),
        "{errs:?}"
    );
}

#[test]
fn missing_script() {
    assert_error("stages: [a]\njob:\n  stage: a\n", 2, 1, "has no `script`");
}

#[test]
fn script_line_that_is_a_mapping() {
    assert_error("job:\n  script:\n    - echo a: b\n", 3, 7, "quote lines");
}

#[test]
fn unknown_stage() {
    assert_error(
        "stages: [build]\njob:\n  stage: biuld\n  script: x\n",
        3,
        10,
        "did you mean `build`?",
    );
}

#[test]
fn stage_listed_twice() {
    assert_error(
        "stages: [a, a]\njob: {script: x, stage: a}\n",
        1,
        13,
        "listed twice",
    );
}

#[test]
fn extends_missing_parent() {
    assert_error(
        ".base: {image: x}\njob:\n  extends: .bsae\n  script: x\n",
        3,
        12,
        "did you mean `.base`?",
    );
}

#[test]
fn extends_cycle() {
    let text = ".a:\n  extends: .b\n.b:\n  extends: .a\njob:\n  extends: .a\n  script: x\n";
    assert_error(text, 4, 12, "cycle");
}

#[test]
fn extends_depth_limit() {
    let mut text = String::from(".t0:\n  script: x\n");
    for i in 1..=12 {
        text.push_str(&format!(".t{i}:\n  extends: .t{}\n", i - 1));
    }
    text.push_str("job:\n  extends: .t12\n");
    let errs = errors(&text);
    assert!(
        errs.iter().any(|e| e.contains("more than 11 levels")),
        "{errs:?}"
    );
}

#[test]
fn needs_unknown_job() {
    assert_error(
        "a: {script: x}\nb:\n  script: x\n  needs: [aa]\n",
        4,
        11,
        "not a job",
    );
}

#[test]
fn a_broken_job_is_not_reported_again_as_missing() {
    let text =
        "a:\n  extends: .nope\n  script: x\nb:\n  needs: [a]\n  dependencies: [a]\n  script: x\n";
    let errs = errors(text);
    assert_eq!(errs.len(), 1, "{errs:?}");
    assert!(
        errs[0].starts_with("2:12: error: `extends` names `.nope`"),
        "{errs:?}"
    );
}

#[test]
fn needs_later_stage() {
    let text = "stages: [one, two]\nearly:\n  stage: one\n  needs: [late]\n  script: x\nlate:\n  stage: two\n  script: x\n";
    assert_error(text, 4, 11, "later stage two");
}

#[test]
fn needs_cycle() {
    let text = "a:\n  needs: [b]\n  script: x\nb:\n  needs: [a]\n  script: x\n";
    let errs = errors(text);
    assert!(errs.iter().any(|e| e.contains("form a cycle")), "{errs:?}");
}

#[test]
fn needs_on_excluded_job_is_a_plan_error_unless_optional() {
    let text = "stages: [a, b]\nt: {stage: a, only: [tags], script: x}\nu: {stage: b, needs: [t], script: x}\n";
    let (config, _) = parse(text);
    let err = config
        .plan(&push_main(), &MemoryRepository::default())
        .unwrap_err();
    assert!(
        matches!(&err, PlanError::Job { job, message } if job == "u" && message.contains("optional: true")),
        "{err}"
    );
}

#[test]
fn dependencies_must_be_earlier() {
    let text = "stages: [a, b]\nx:\n  stage: b\n  script: x\ny:\n  stage: a\n  dependencies: [x]\n  script: x\n";
    assert_error(text, 7, 18, "not in an earlier stage");
    assert_error("x: {script: x, dependencies: [nope]}\n", 1, 31, "not a job");
}

#[test]
fn bad_when_retry_parallel_timeout() {
    assert_error(
        "job: {script: x, when: sometimes}\n",
        1,
        24,
        "`when` must be one of",
    );
    assert_error("job: {script: x, retry: 3}\n", 1, 25, "0, 1 or 2");
    assert_error(
        "job:\n  script: x\n  retry:\n    when: [script_falure]\n",
        4,
        11,
        "did you mean `script_failure`?",
    );
    assert_error(
        "job: {script: x, parallel: 201}\n",
        1,
        28,
        "between 1 and 200",
    );
    assert_error(
        "job:\n  script: x\n  timeout: \"an hour\"\n",
        3,
        13,
        "not a duration",
    );
    assert_error(
        "job: {script: x, timeout: 3 fortnights}\n",
        1,
        27,
        "unknown time unit",
    );
}

#[test]
fn matrix_too_big() {
    let text = "job:\n  script: x\n  parallel:\n    matrix:\n      - A: [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15]\n        B: [1,2,3,4,5,6,7,8,9,10,11,12,13,14]\n";
    assert_error(text, 5, 7, "makes 210 jobs");
}

#[test]
fn delayed_without_start_in_and_start_in_without_delayed() {
    assert_error("job: {script: x, when: delayed}\n", 1, 1, "no `start_in`");
    assert_error(
        "job:\n  script: x\n  start_in: 5m\n",
        3,
        3,
        "needs `when: delayed`",
    );
    assert_error(
        "job:\n  script: x\n  rules: [{when: delayed}]\n",
        1,
        1,
        "a rule of job `job` is `when: delayed`",
    );
}

#[test]
fn rules_with_only_is_an_error() {
    assert_error(
        "job:\n  script: x\n  rules: [{when: always}]\n  only: [main]\n",
        4,
        3,
        "together with `rules`",
    );
}

#[test]
fn if_expression_errors_map_to_the_yaml_column() {
    // Plain scalar: the expression starts at column 11.
    assert_error(
        "job:\n  script: x\n  rules:\n    - if: $A == main\n",
        4,
        17,
        "unexpected word `main`",
    );
    // Quoted: one more for the quote.
    assert_error(
        "job:\n  script: x\n  rules:\n    - if: '$A =~ \"x\"'\n",
        4,
        15,
        "right side",
    );
    assert_error(
        "workflow:\n  rules:\n    - if: ($A\njob: {script: x}\n",
        3,
        14,
        "expected `)`",
    );
}

#[test]
fn workflow_when_must_be_always_or_never() {
    assert_error(
        "workflow:\n  rules:\n    - when: manual\njob: {script: x}\n",
        3,
        7,
        "always` or `never",
    );
}

#[test]
fn invalid_variable_name() {
    assert_error(
        "variables:\n  BAD-NAME: x\njob: {script: x}\n",
        2,
        3,
        "not a valid variable name",
    );
}

#[test]
fn too_many_caches() {
    let text = "job:\n  script: x\n  cache: [{key: a}, {key: b}, {key: c}, {key: d}, {key: e}]\n";
    assert_error(text, 3, 10, "at most 4 caches");
}

#[test]
fn cache_key_with_slash_is_a_plan_error() {
    let (config, _) = parse("job:\n  script: x\n  cache: {key: a/$CI_COMMIT_REF_NAME}\n");
    let err = config
        .plan(&push_main(), &MemoryRepository::default())
        .unwrap_err();
    assert!(err.to_string().contains("must not contain `/`"), "{err}");
}

#[test]
fn reference_to_missing_key() {
    assert_error(
        ".a: {script: [x]}\njob:\n  script: !reference [.a, scripts]\n",
        3,
        27,
        "does not exist",
    );
}

#[test]
fn more_than_one_document() {
    assert_error(
        "a: {script: x}\n---\nb: {script: x}\n",
        3,
        1,
        "more than one YAML document",
    );
    // A spec header is warned about and the second document is used.
    let w = warnings("spec:\n  inputs: {}\n---\nb: {script: x}\n");
    assert!(
        w.iter()
            .any(|w| w.starts_with("1:1: warning:") && w.contains("spec")),
        "{w:?}"
    );
}

#[test]
fn errors_are_all_reported_sorted() {
    let errs = errors("a:\n  scrpt: x\nb:\n  script: x\n  when: later\n");
    assert!(errs.len() >= 3, "{errs:?}");
    let lines: Vec<u32> = errs
        .iter()
        .map(|e| e.split(':').next().unwrap().parse().unwrap())
        .collect();
    let mut sorted = lines.clone();
    sorted.sort();
    assert_eq!(lines, sorted);
}

/// A "billion laughs" document: 9 levels of 10 aliases each would expand to
/// 10^9 nodes. It must be refused quickly, without building it.
#[test]
fn billion_laughs_is_refused_in_bounded_time_and_memory() {
    let mut text = String::from("a0: &a0 [lol]\n");
    for i in 1..10 {
        let refs = vec![format!("*a{}", i - 1); 10].join(", ");
        text.push_str(&format!("a{i}: &a{i} [{refs}]\n"));
    }
    text.push_str("job:\n  script: *a9\n");
    let start = Instant::now();
    let errs = errors(&text);
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "took {:?}",
        start.elapsed()
    );
    assert!(
        errs.iter().any(|e| e.contains("expands to more than")),
        "{errs:?}"
    );
}

#[test]
fn oversized_file_is_refused() {
    let text = format!("job:\n  script: x\n# {}\n", "x".repeat(2 << 20));
    let errs = errors(&text);
    assert!(
        errs.iter().any(|e| e.starts_with(&format!(
            "1:1: error: the file is {} bytes, more than the limit of 1048576 bytes",
            text.len()
        ))),
        "{errs:?}"
    );
    // The limit is configurable.
    let small = ParseOptions {
        max_bytes: 10,
        ..ParseOptions::default()
    };
    assert!(Config::parse("job: {script: x}\n", &small).is_err());
}

#[test]
fn deep_nesting_is_refused() {
    let text = format!(
        "job: {{script: x, variables: {}{}}}\n",
        "[".repeat(10_000),
        "]".repeat(10_000)
    );
    let errs = errors(&text);
    // The parser's own recursion limit or ours, whichever comes first.
    assert!(
        errs.iter()
            .any(|e| e.contains("nests deeper") || e.contains("recursion limit")),
        "{errs:?}"
    );
    // Ours, below the parser's.
    let text = format!(
        "job: {{script: x, variables: {}{}}}\n",
        "[".repeat(70),
        "]".repeat(70)
    );
    let errs = errors(&text);
    assert!(
        errs.iter()
            .any(|e| e.contains("nests deeper than 64 levels")),
        "{errs:?}"
    );
}

mod never_panics {
    use berth_ci::{Config, MemoryRepository, ParseOptions};
    use proptest::prelude::*;

    /// Lines built from pipeline-ish fragments, so the generator reaches
    /// deep into the parser, not just the YAML scanner.
    fn fragment() -> impl Strategy<Value = String> {
        prop_oneof![
            Just("job:".to_string()),
            Just("  script: x".to_string()),
            Just("  stage: build".to_string()),
            Just("  needs: [job]".to_string()),
            Just("  extends: .t".to_string()),
            Just(".t: &a {script: [y], tags: [t]}".to_string()),
            Just("  <<: *a".to_string()),
            Just("  parallel: {matrix: [{A: [1, 2]}]}".to_string()),
            Just("  rules: [{if: '$A == \"1\" || $B =~ /x/i'}]".to_string()),
            Just("  script: !reference [.t, script]".to_string()),
            Just("stages: [build, test]".to_string()),
            Just("  cache: {key: {files: [a]}, paths: [p]}".to_string()),
            "[ -~]{0,30}",
        ]
    }

    proptest! {
        #[test]
        fn parse_and_plan_never_panic(lines in proptest::collection::vec(fragment(), 0..12)) {
            let text = lines.join("\n");
            if let Ok((config, _)) = Config::parse(&text, &ParseOptions::default()) {
                let ctx = crate::common::push_main();
                let _ = config.plan(&ctx, &MemoryRepository::default());
            }
        }
    }
}

#[test]
fn malformed_keyword_values() {
    // (file, line, column, part of the message)
    let cases: &[(&str, u32, u32, &str)] = &[
        (
            "job:\n  script: x\n  image: {entrypoint: [sh]}\n",
            3,
            10,
            "`image` needs a `name`",
        ),
        (
            "job:\n  script: x\n  environment: {url: u}\n",
            3,
            16,
            "`environment` needs a `name`",
        ),
        (
            "job:\n  script: x\n  environment: {name: n, action: deploy}\n",
            3,
            34,
            "environment:action",
        ),
        (
            "job:\n  script: x\n  cache: {key: {files: [a, b, c]}}\n",
            3,
            24,
            "one or two files",
        ),
        (
            "job:\n  script: x\n  cache: {policy: sometimes}\n",
            3,
            19,
            "pull, push or pull-push",
        ),
        (
            "job:\n  script: x\n  artifacts: {when: later}\n",
            3,
            21,
            "on_success, on_failure or always",
        ),
        (
            "job:\n  script: x\n  needs: [{artifacts: true}]\n",
            3,
            11,
            "needs a `job`",
        ),
        (
            "job:\n  script: x\n  needs: build\n",
            3,
            10,
            "must be a list",
        ),
        (
            "job:\n  script: x\n  allow_failure: {exit_codes: [one]}\n",
            3,
            32,
            "integer",
        ),
        (
            "job:\n  script: x\n  allow_failure: maybe\n",
            3,
            18,
            "true, false or `exit_codes",
        ),
        (
            "job:\n  script: x\n  variables: {A: [1, 2]}\n",
            3,
            18,
            "not a list",
        ),
        (
            "job:\n  script: x\n  extends: {a: b}\n",
            3,
            12,
            "job name or a list of job names",
        ),
        (
            "job:\n  script: x\n  interruptible: yes\n",
            3,
            18,
            "true or false",
        ),
        (
            "job:\n  script: x\n  tags: docker\n",
            3,
            9,
            "list of strings",
        ),
        (
            "job:\n  script: x\n  parallel: {matrix: [{A: []}]}\n",
            3,
            27,
            "has no values",
        ),
        (
            "job:\n  script: x\n  rules: {if: $A}\n",
            3,
            10,
            "`rules` must be a list",
        ),
        (
            "job:\n  script: x\n  rules: [{iff: $A}]\n",
            3,
            12,
            "did you mean `if`?",
        ),
        ("job:\n  script: x\n  script: y\n", 3, 3, "appears twice"),
        ("job:\n  script: x\n  <<: 5\n", 3, 7, "merge key"),
        (
            "? [a]\n: b\njob: {script: x}\n",
            1,
            3,
            "keys must be strings",
        ),
        (
            "job:\n  script: !reference []\n",
            2,
            11,
            "needs a list of keys",
        ),
        (
            "workflow:\n  rules: [{if: $A, allow_failure: true}]\njob: {script: x}\n",
            2,
            20,
            "unknown key `allow_failure`",
        ),
        (
            "variables: [A]\njob: {script: x}\n",
            1,
            12,
            "mapping of names to values",
        ),
        (
            "default:\n  stage: build\njob: {script: x}\n",
            2,
            3,
            "unknown key `stage` in `default`",
        ),
        (
            "job:\n  script: x\n  only: [main, \"/(/\"]\n",
            3,
            17,
            "invalid regex in `only`",
        ),
        (
            "job:\n  script: x\n  except:\n    refs: ['/[/']\n",
            4,
            13,
            "invalid regex in `except:refs`",
        ),
    ];
    for (text, line, col, needle) in cases {
        assert_error(text, *line, *col, needle);
    }
}

#[test]
fn too_many_jobs_once_parallel_is_expanded() {
    let mut text = String::new();
    for i in 0..6 {
        text.push_str(&format!("j{i}:\n  script: x\n  parallel: 200\n"));
    }
    assert_error(&text, 1, 1, "the limit is 1000");
}
