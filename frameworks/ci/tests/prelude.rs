//! The job's task script (prelude and shell choice) run by the real
//! shells there are (busybox sh, dash, bash): variables that use the
//! job's directories get the real ones, values are not read again by the
//! shell, `CI_JOB_STATUS` reaches `after_script`.

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::process::Command;

use berth_ci::{
    Config, Context, MemoryRepository, ParseOptions, PlannedJob, prelude, render_script,
};

const YAML: &str = r#"
variables:
  OUT_DIR: "$CI_PROJECT_DIR/out"
  DEEP: "${OUT_DIR}/a:$CI_PROJECT_DIR/b"
  LITERAL: "$$CI_PROJECT_DIR"
  ODD: "$CI_BUILDS_DIR/`echo no` $$(echo no) \\ * '"
job:
  script:
    - test "$OUT_DIR" = "$CI_PROJECT_DIR/out"
    - test "$DEEP" = "$CI_PROJECT_DIR/out/a:$CI_PROJECT_DIR/b"
    - test "$LITERAL" = '$CI_PROJECT_DIR'
    - printf '%s\n' "$ODD" > odd.txt
    - exit 4
  after_script:
    - echo "status=$CI_JOB_STATUS"
"#;

fn job() -> PlannedJob {
    let (config, _) = Config::parse(YAML, &ParseOptions::default()).unwrap();
    let ctx = Context {
        project_name: "app".into(),
        project_dir: "/mnt/berth/sandbox/app".into(),
        ref_name: "main".into(),
        ..Context::default()
    };
    let plan = config
        .plan(&ctx, &MemoryRepository::default())
        .unwrap()
        .unwrap();
    plan.jobs[0].clone()
}

/// Runs `script` with `shell` (argv before the script) in a sandbox;
/// returns (exit code, output, sandbox).
fn run(
    shell: &[&str],
    script: &str,
    env: &HashMap<String, String>,
) -> (i32, String, tempfile::TempDir) {
    let sandbox = tempfile::tempdir().unwrap();
    std::fs::create_dir(sandbox.path().join("app")).unwrap();
    let out = Command::new(shell[0])
        .args(&shell[1..])
        .arg("-c")
        .arg(script)
        .arg("x")
        .arg(shell.last().unwrap())
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap())
        .envs(env)
        .env("BERTH_SANDBOX", sandbox.path())
        .env("BERTH_AGENT_ID", "agent-1")
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.code().unwrap_or(-1), text, sandbox)
}

#[test]
fn the_prelude_gives_real_paths_in_every_shell() {
    let job = job();
    // The plan shows the container's path, and keeps placeholders for
    // the job's script.
    assert_eq!(job.variables["OUT_DIR"], "/mnt/berth/sandbox/app/out");
    assert!(job.dir_variables["OUT_DIR"].ends_with("/out"));
    assert!(!job.dir_variables["OUT_DIR"].contains("/mnt/berth"));
    assert!(
        !job.dir_variables.contains_key("LITERAL"),
        "{:?}",
        job.dir_variables
    );
    let env: HashMap<String, String> = job.environment(7).into_iter().collect();
    let names: Vec<&str> = ["DEEP", "ODD", "OUT_DIR"].into();
    let inner = format!("{}{}", prelude("app", &names), render_script(&job));
    let mut ran = 0;
    for shell in [&["busybox", "sh"][..], &["dash"][..], &["bash"][..]] {
        if Command::new("sh")
            .arg("-c")
            .arg(format!("command -v {} >/dev/null", shell[0]))
            .status()
            .is_ok_and(|s| !s.success())
        {
            continue;
        }
        ran += 1;
        let (code, out, sandbox) = run(shell, &inner, &env);
        assert_eq!(code, 4, "{shell:?}: {out}");
        assert!(out.contains("status=failed"), "{shell:?}: {out}");
        assert!(!out.contains("after_script failed"), "{shell:?}: {out}");
        let odd = std::fs::read_to_string(sandbox.path().join("app/odd.txt")).unwrap();
        assert_eq!(
            odd,
            format!("{}/`echo no` $(echo no) \\ * '\n", sandbox.path().display()),
            "{shell:?}"
        );
    }
    assert!(ran >= 1, "no shell to run the script with");
}

#[test]
fn the_task_script_uses_bash_when_there_is_one() {
    let job = job();
    let mut env: HashMap<String, String> = job.environment(7).into_iter().collect();
    env.insert("CI_JOB_TIMEOUT".into(), "60".into());
    let script = berth_ci::task_script(&job, "app", &env);
    let (code, out, _sandbox) = run(&["sh"], &script, &env);
    assert_eq!(code, 4, "{out}");
    let has_bash = Command::new("sh")
        .args(["-c", "command -v bash >/dev/null"])
        .status()
        .is_ok_and(|s| s.success());
    let shell = if has_bash { "bash" } else { "sh" };
    assert!(out.contains(&format!("Using shell: {shell}\n")), "{out}");
}
