//! `berth ci lint` on real files: output format and exit codes, for good,
//! bad, standard input, missing and oversized files, and files that
//! `include` others.

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
    // The file's real size, not the bytes read to find it too big.
    assert!(
        stdout(&out).contains(
            "big.yml:1:1: error: the file is 1700 bytes, more than the limit of 100 bytes"
        ),
        "{}",
        stdout(&out)
    );
    // Standard input is not read to its end.
    let mut child = Command::new(BERTH)
        .args(["ci", "lint", "-", "--max-bytes", "100"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .expect("berth runs");
    let mut stdin = child.stdin.take().expect("stdin");
    // The reader stops early: a write error (broken pipe) is expected.
    let _ = stdin.write_all("job: {script: x}\n".repeat(100).as_bytes());
    drop(stdin);
    let out = child.wait_with_output().expect("berth ends");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains("<stdin>:1:1: error: the file is more than 100 bytes"),
        "{}",
        stdout(&out)
    );
}

#[test]
fn an_unclosed_bracket_is_reported_where_it_opens() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join(".gitlab-ci.yml"),
        "job:\n  script: [make\n\n",
    )
    .unwrap();
    let out = lint(&[], dir.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).starts_with(
            ".gitlab-ci.yml:2:11: error: invalid YAML: this `[` is never closed (the file ends at line 3)\n"
        ),
        "{}",
        stdout(&out)
    );
}

#[test]
fn included_files_are_read_from_the_repository_and_named_in_errors() {
    let main = "include:\n  - local: ci/templates.yml\n  - local: ci/main-only.yml\n    rules:\n      - if: $CI_COMMIT_BRANCH == \"main\"\nbuild:\n  extends: .tpl\n";
    let repo = berth_tests::git_repo(&[
        (".gitlab-ci.yml", main),
        ("ci/templates.yml", ".tpl:\n  script: [make]\n"),
        ("ci/main-only.yml", "release:\n  script: [make release]\n"),
    ]);
    let out = lint(&[], repo.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    let root = repo.path().canonicalize().unwrap();
    assert!(
        text.contains(&format!(
            ".gitlab-ci.yml: includes ci/templates.yml, ci/main-only.yml from {}\n",
            root.display()
        )),
        "{text}"
    );
    assert!(
        text.contains(".gitlab-ci.yml: include rules evaluated for a push of branch `main` (the repository's current branch, its working tree)\n"),
        "{text}"
    );
    assert!(
        text.ends_with(".gitlab-ci.yml: 2 jobs in 1 stage, 0 errors, 0 warnings\n"),
        "{text}"
    );
    // On another branch the rule leaves the file out; the working tree
    // (uncommitted) is what is read; errors name the included file.
    berth_tests::git(repo.path(), &["checkout", "-q", "-b", "topic"]);
    std::fs::write(
        repo.path().join("ci/templates.yml"),
        ".tpl:\n  script: [make]\n  scirpt: [x]\n",
    )
    .unwrap();
    let out = lint(&[], repo.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.starts_with("ci/templates.yml:3:3: error: unknown key `scirpt` in the job `build`"),
        "{text}"
    );
    // A remote include is refused, saying how to vendor it.
    std::fs::write(
        repo.path().join(".gitlab-ci.yml"),
        "include: 'https://example.com/ci.yml'\njob: {script: [x]}\n",
    )
    .unwrap();
    let out = lint(&[], repo.path());
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stdout(&out).contains(".gitlab-ci.yml:1:10: error: `include:remote` (`https://example.com/ci.yml`) is not supported"),
        "{}",
        stdout(&out)
    );
    // Outside a git repository the file's directory is the repository.
    let plain = tempfile::tempdir().unwrap();
    std::fs::create_dir(plain.path().join("ci")).unwrap();
    std::fs::write(plain.path().join("ci/jobs.yml"), "a:\n  script: [x]\n").unwrap();
    std::fs::write(plain.path().join("pipeline.yml"), "include: ci/jobs.yml\n").unwrap();
    let out = lint(&["pipeline.yml"], plain.path());
    let text = stdout(&out);
    assert_eq!(out.status.code(), Some(0), "{text}");
    assert!(
        text.ends_with("pipeline.yml: 1 job in 1 stage, 0 errors, 0 warnings\n"),
        "{text}"
    );
}
