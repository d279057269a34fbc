//! Helpers shared by the integration tests.
#![allow(dead_code)]

pub mod ci_fixture;

use berth_ci::{Config, Context, Diagnostic, MemoryRepository, ParseOptions, PipelineSource, Plan};

/// Parses, panicking with the diagnostics on error.
pub fn parse(text: &str) -> (Config, Vec<Diagnostic>) {
    match Config::parse(text, &ParseOptions::default()) {
        Ok(ok) => ok,
        Err(diags) => panic!(
            "expected the file to parse, got:\n{}",
            diags
                .iter()
                .map(|d| d.to_string())
                .collect::<Vec<_>>()
                .join("\n")
        ),
    }
}

/// Parses, expecting errors; returns every diagnostic as `L:C: kind: msg`.
pub fn errors(text: &str) -> Vec<String> {
    match Config::parse(text, &ParseOptions::default()) {
        Ok(_) => panic!("expected errors"),
        Err(diags) => diags.iter().map(|d| d.to_string()).collect(),
    }
}

/// Asserts that parsing fails with an error at `line:col` whose message
/// contains `needle`.
pub fn assert_error(text: &str, line: u32, col: u32, needle: &str) {
    let errs = errors(text);
    let prefix = format!("{line}:{col}: error: ");
    assert!(
        errs.iter()
            .any(|e| e.starts_with(&prefix) && e.contains(needle)),
        "no error `{prefix}...{needle}...` in:\n{}",
        errs.join("\n")
    );
}

/// Warnings of a file that parses.
pub fn warnings(text: &str) -> Vec<String> {
    parse(text).1.iter().map(|d| d.to_string()).collect()
}

/// A push to branch `main`.
pub fn push_main() -> Context {
    Context {
        project_name: "demo".into(),
        project_dir: "/builds/demo".into(),
        commit_sha: "0123456789abcdef0123456789abcdef01234567".into(),
        ref_name: "main".into(),
        ref_is_tag: false,
        default_branch: "main".into(),
        pipeline_id: 42,
        source: PipelineSource::Push,
        changed_files: None,
        secrets: Vec::new(),
        ..Default::default()
    }
}

/// Plans with an empty repository; panics on a plan error or no pipeline.
pub fn plan(text: &str, ctx: &Context) -> Plan {
    plan_with(text, ctx, &MemoryRepository::default())
}

/// Plans with `repo`.
pub fn plan_with(text: &str, ctx: &Context, repo: &MemoryRepository) -> Plan {
    let (config, _) = parse(text);
    config
        .plan(ctx, repo)
        .expect("plans")
        .expect("a pipeline is created")
}

/// The planned job names.
pub fn names(plan: &Plan) -> Vec<&str> {
    plan.jobs.iter().map(|j| j.name.as_str()).collect()
}

/// A planned job by name.
pub fn job<'a>(plan: &'a Plan, name: &str) -> &'a berth_ci::PlannedJob {
    plan.jobs
        .iter()
        .find(|j| j.name == name)
        .unwrap_or_else(|| panic!("no job `{name}` in {:?}", names(plan)))
}
