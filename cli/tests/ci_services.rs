//! `services:` through the real binary: `berth ci run` starts a Docker
//! job's service containers on a network of the job's own, the job reaches
//! them by alias, and nothing of them is left after the run; a shell job
//! with services is refused, and an agent without Docker fails the job
//! with the reason instead of running it without them.

#![allow(clippy::unwrap_used)]

use std::path::Path;
use std::process::Command;

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

/// `berth ci run` of `dir` with its own data directory: exit code, output
/// (stdout then stderr) and every stored job log.
fn ci_run(dir: &Path, docker: bool) -> (Option<i32>, String, String, tempfile::TempDir) {
    let data = tempfile::tempdir().unwrap();
    let mut cmd = Command::new(BERTH);
    cmd.args(["ci", "run"])
        .arg(dir)
        .args(["--resources", "cpus:4;mem:4096;disk:10000", "--data-dir"])
        .arg(data.path());
    if !docker {
        cmd.arg("--no-docker");
    }
    let out = cmd.output().expect("berth runs");
    let logs: String = berth_tests::files_under(&data.path().join("ci/logs"))
        .into_iter()
        .map(|p| std::fs::read_to_string(p).unwrap())
        .collect();
    (
        out.status.code(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ),
        logs,
        data,
    )
}

/// The `berth.owner` labels of every container or network Docker has that
/// belong to an agent under `data` (what a run left behind).
fn leftovers(data: &Path) -> Vec<String> {
    let data = data.canonicalize().unwrap().display().to_string();
    let mut out = Vec::new();
    for args in [
        &[
            "ps",
            "-a",
            "--format",
            "{{.Names}} {{.Label \"berth.owner\"}}",
        ][..],
        &[
            "network",
            "ls",
            "--format",
            "{{.Name}} {{.Label \"berth.owner\"}}",
        ][..],
    ] {
        let o = Command::new("docker").args(args).output().unwrap();
        assert!(o.status.success(), "docker {args:?}: {o:?}");
        out.extend(
            String::from_utf8_lossy(&o.stdout)
                .lines()
                .filter(|l| l.contains(&data))
                .map(String::from),
        );
    }
    out
}

const PIPELINE: &str = r#"
variables:
  WHO: the service
check:
  image: berth/busybox:latest
  services:
    - name: berth/busybox:latest
      alias: web
      command:
        - sh
        - -c
        - mkdir -p /www && echo "hello from $WHO, job $CI_JOB_NAME" > /www/index.html && exec httpd -f -p 8080 -h /www
  script:
    - wget -qO- http://web:8080/ | grep 'hello from the service, job check'
    - wget -qO- http://berth-busybox:8080/ | grep hello
    - echo the job talked to its service
"#;

#[test]
fn a_docker_job_reaches_its_service_by_alias() {
    if !berth_tests::docker_ready("a_docker_job_reaches_its_service_by_alias") {
        return;
    }
    let repo = berth_tests::git_repo(&[(".gitlab-ci.yml", PIPELINE)]);
    let (code, out, logs, data) = ci_run(repo.path(), true);
    assert_eq!(code, Some(0), "{out}\n{logs}");
    assert!(
        logs.contains(
            "Starting service berth/busybox:latest as berth__busybox, berth-busybox, web ...\n"
        ),
        "{logs}"
    );
    assert!(logs.contains("the job talked to its service"), "{logs}");
    assert!(!out.contains("not supported"), "{out}");
    assert_eq!(leftovers(data.path()), Vec::<String>::new());
}

#[test]
fn a_failing_service_fails_the_job_with_its_output() {
    if !berth_tests::docker_ready("a_failing_service_fails_the_job_with_its_output") {
        return;
    }
    let pipeline = "check:\n  image: berth/busybox:latest\n  services:\n    - name: berth/busybox:latest\n      alias: db\n      command: [sh, -c, 'echo no database here >&2; exit 3']\n  script: [echo the job ran]\n";
    let repo = berth_tests::git_repo(&[(".gitlab-ci.yml", pipeline)]);
    let (code, out, logs, data) = ci_run(repo.path(), true);
    assert_ne!(code, Some(0), "{out}\n{logs}");
    let all = format!("{out}\n{logs}");
    assert!(
        all.contains("service berth/busybox:latest as berth__busybox, berth-busybox, db exited with status 3 before the job started"),
        "{all}"
    );
    assert!(all.contains("no database here"), "{all}");
    assert!(!logs.contains("the job ran"), "{logs}");
    assert_eq!(leftovers(data.path()), Vec::<String>::new());
}

#[test]
fn a_shell_job_with_services_is_refused() {
    let repo = berth_tests::git_repo(&[(
        ".gitlab-ci.yml",
        "check:\n  services: [postgres]\n  script: [echo hi]\n",
    )]);
    let (code, out, _, _) = ci_run(repo.path(), false);
    assert_eq!(code, Some(2), "{out}");
    assert!(
        out.contains("the job `check` has `services` but no `image`"),
        "{out}"
    );
}

#[test]
fn without_docker_a_job_with_services_fails_with_the_reason() {
    let repo = berth_tests::git_repo(&[(".gitlab-ci.yml", PIPELINE)]);
    let (code, out, logs, _) = ci_run(repo.path(), false);
    assert_ne!(code, Some(0), "{out}\n{logs}");
    let all = format!("{out}\n{logs}");
    assert!(all.contains("no Docker daemon"), "{all}");
    assert!(!all.contains("the job talked to its service"), "{all}");
}
