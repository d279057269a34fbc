//! `berth ci lint` on real files: output format and exit codes, for good,
//! bad, standard input, missing and oversized files.

use std::io::Write;
use std::process::{Command, Output, Stdio};

const BERTH: &str = env!("CARGO_BIN_EXE_berth");

fn lint(args: &[&str], dir: &std::path::Path) -> Output {
    Command::new(BERTH)
        .arg("ci")
        .arg("lint")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("berth runs")
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[test]
fn a_good_file_exits_0_with_warnings_listed() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".gitlab-ci.yml"),
        "stages: [build, test]\nbuild:\n  stage: build\n  script: make\n  release: {tag_name: v1}\ntest:\n  stage: test\n  script: make test\n",
    )
    .unwrap();
    // The default file is .gitlab-ci.yml in the current directory.
    let out = lint(&[], dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert_eq!(
        text,
        ".gitlab-ci.yml:5:3: warning: `release` is not supported and is ignored\n\
         .gitlab-ci.yml: 2 jobs in 2 stages, 0 errors, 1 warning\n"
    );
}

#[test]
fn a_bad_file_exits_1_with_file_line_column_errors() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("ci.yml"),
        "build:\n  scirpt: make\ntest:\n  script: make test\n  when: later\n",
    )
    .unwrap();
    let out = lint(&["ci.yml"], dir.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("ci.yml:1:1: error: the job `build` has no `script`\n"),
        "{text}"
    );
    assert!(
        text.contains(
            "ci.yml:2:3: error: unknown key `scirpt` in the job `build`; did you mean `script`?\n"
        ),
        "{text}"
    );
    assert!(
        text.contains("ci.yml:5:9: error: `when` must be one of"),
        "{text}"
    );
    assert!(
        text.ends_with("ci.yml: 0 jobs in 0 stages, 3 errors, 0 warnings\n"),
        "{text}"
    );
}

#[test]
fn stdin_and_missing_files() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(BERTH)
        .args(["ci", "lint", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"job:\n  script: echo hi\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0));
    assert_eq!(
        stdout(&out),
        "<stdin>: 1 job in 1 stage, 0 errors, 0 warnings\n"
    );

    let out = lint(&["nope.yml"], dir.path());
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read nope.yml"));
}

#[test]
fn an_oversized_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("big.yml"), "job: {script: x}\n".repeat(100)).unwrap();
    let out = lint(&["big.yml", "--max-bytes", "100"], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("big.yml:1:1: error: the file is"),
        "{}",
        stdout(&out)
    );
}
