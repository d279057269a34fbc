//! Realistic pipeline files under `tests/fixtures/`, planned end to end.

mod common;

use std::time::Duration;

use berth_ci::{ArtifactsWhen, MemoryRepository, SecretVariable, When, render_script};
use common::*;

fn fixture(name: &str) -> String {
    let path = format!("{}/tests/fixtures/{name}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

#[test]
fn rust_crate_build_then_test_with_target_artifact() {
    let text = fixture("rust-crate.yml");
    let repo = MemoryRepository::new([("Cargo.lock", "# lock")]);
    let p = plan_with(&text, &push_main(), &repo);
    assert_eq!(p.stages, ["build", "test"]);
    assert_eq!(names(&p), ["build", "test"]);
    let build = job(&p, "build");
    assert_eq!(build.image.as_ref().unwrap().name, "rust:1.95");
    assert_eq!(build.before_script, ["rustc --version", "cargo --version"]);
    assert_eq!(build.script, ["cargo build --locked --all-targets"]);
    let a = build.artifacts.as_ref().unwrap();
    assert_eq!(a.paths, ["target/"]);
    assert_eq!(a.expire_in, Some(Duration::from_secs(86_400)));
    assert_eq!(build.variables["CARGO_HOME"], "/builds/demo/.cargo");
    assert!(build.caches[0].key.starts_with("cargo-"));
    assert!(build.interruptible);
    let test = job(&p, "test");
    assert_eq!(test.stage_index, 1);
    // No needs: it waits for the build stage and gets its artifacts.
    assert!(test.needs.is_none() && test.dependencies.is_none());
    assert_eq!(test.artifacts.as_ref().unwrap().when, ArtifactsWhen::Always);
    assert_eq!(test.artifacts.as_ref().unwrap().junit, ["target/junit.xml"]);
    assert_eq!(test.timeout, Some(Duration::from_secs(1800)));
    assert_eq!(test.caches[0].key, build.caches[0].key);
    let script = render_script(test);
    assert!(
        script.contains("eval 'cargo test --locked -- --test-threads=2'"),
        "{script}"
    );
}

#[test]
fn needs_dag() {
    let p = plan(&fixture("dag.yml"), &push_main());
    let needs = |name: &str| -> Vec<String> {
        job(&p, name)
            .needs
            .clone()
            .unwrap()
            .into_iter()
            .map(|n| n.job)
            .collect()
    };
    assert!(needs("lint").is_empty());
    assert_eq!(needs("test-linux"), ["build-linux"]);
    assert_eq!(needs("test-mac"), ["build-mac"]);
    assert_eq!(
        needs("deploy"),
        ["test-linux", "test-mac", "build-linux", "build-mac"]
    );
    assert_eq!(p.stages, ["build", "test", "deploy"]);
}

#[test]
fn parallel_matrix_and_shards() {
    let p = plan(&fixture("matrix.yml"), &push_main());
    assert_eq!(
        names(&p),
        [
            "build: [stable, x86_64]",
            "build: [stable, aarch64]",
            "build: [beta, x86_64]",
            "build: [beta, aarch64]",
            "build: [nightly, x86_64]",
            "shard 1/3",
            "shard 2/3",
            "shard 3/3",
        ]
    );
    let j = job(&p, "build: [beta, aarch64]");
    assert_eq!(j.tags, ["aarch64"]);
    assert_eq!(j.variables["TOOLCHAIN"], "beta");
    assert_eq!(job(&p, "shard 3/3").variables["CI_NODE_INDEX"], "3");
}

#[test]
fn manual_deploys() {
    let text = fixture("manual-deploy.yml");
    let p = plan(&text, &push_main());
    assert_eq!(names(&p), ["unit", "staging"]);
    let staging = job(&p, "staging");
    assert_eq!(staging.when, When::Manual);
    assert_eq!(staging.resource_group.as_deref(), Some("staging"));
    assert_eq!(
        staging.environment.as_ref().unwrap().url.as_deref(),
        Some("https://staging.example.com")
    );

    let mut tag = push_main();
    tag.ref_name = "v2.0.0".into();
    tag.ref_is_tag = true;
    let p = plan(&text, &tag);
    assert_eq!(names(&p), ["unit", "production"]);
    let prod = job(&p, "production");
    assert_eq!(prod.when, When::Manual);
    assert!(prod.allow_failure.any, "manual jobs may fail by default");
}

#[test]
fn masked_secret() {
    let text = fixture("masked-secret.yml");
    let (config, _) = parse(&text);
    // Without the token the job does not run, so there is no pipeline.
    assert!(
        config
            .plan(&push_main(), &MemoryRepository::default())
            .is_err()
    );
    let mut ctx = push_main();
    ctx.secrets.push(SecretVariable {
        name: "REGISTRY_TOKEN".into(),
        value: "glpat-0123456789".into(),
        masked: true,
    });
    let p = plan(&text, &ctx);
    assert_eq!(p.masked, ["REGISTRY_TOKEN"]);
    let publish = job(&p, "publish");
    assert_eq!(publish.variables["REGISTRY_TOKEN"], "glpat-0123456789");
    // The secret reaches the job through its environment, not its script.
    assert!(!render_script(publish).contains("glpat"));
}

#[test]
fn bad_fixture_reports_every_problem() {
    let errs = errors(&fixture("bad.yml"));
    let expected = [
        "4:10: error: the stage `biuld` of job `build` is not one of the stages (.pre, build, test, .post); did you mean `build`?",
        "7:1: error: the job `test` has no `script`",
        "9:3: error: unknown key `scirpt` in the job `test`; did you mean `script`?",
        "10:11: error: the job `test` needs `buidl`, which is not a job; did you mean `build`?",
        "7:1: error: the job `test` has `services` but no `image`: service containers run only \
         next to a Docker job (a job without `image` runs as a shell process); add `image:` to \
         the job (or to `default:`)",
    ];
    for e in expected {
        assert!(errs.iter().any(|x| x == e), "missing `{e}` in {errs:#?}");
    }
}
