//! Git repositories for the tests of the CI framework: made from a list of
//! files, or from a directory of the source tree (the example repositories
//! and the compatibility suite).

use std::path::Path;

/// Runs `git` in `dir` with a fixed identity (tests of the CI framework).
///
/// # Panics
/// If git cannot run or the command fails.
pub fn git(dir: &Path, args: &[&str]) {
    let status = std::process::Command::new("git")
        .arg("-C")
        .arg(dir)
        .args(args)
        .env("GIT_AUTHOR_NAME", "berth-tests")
        .env("GIT_AUTHOR_EMAIL", "tests@example.invalid")
        .env("GIT_COMMITTER_NAME", "berth-tests")
        .env("GIT_COMMITTER_EMAIL", "tests@example.invalid")
        .stdout(std::process::Stdio::null())
        .status()
        .expect("git runs");
    assert!(status.success(), "git {args:?} failed in {}", dir.display());
}

/// A new git repository holding `files` (path, contents), committed on
/// `main`.
///
/// # Panics
/// If the files cannot be written or git fails.
#[must_use]
pub fn git_repo(files: &[(&str, &str)]) -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("a temporary directory");
    git(dir.path(), &["init", "-q", "-b", "main"]);
    for (name, text) in files {
        let path = dir.path().join(name);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).expect("the file's directory");
        }
        std::fs::write(path, text).expect("the file");
    }
    git(dir.path(), &["add", "."]);
    git(dir.path(), &["commit", "-q", "-m", "first"]);
    dir
}

/// The files under `root` (text, `/`-separated relative paths), without
/// build output (`target`, `__pycache__`).
///
/// # Panics
/// If a file cannot be read as text.
#[must_use]
pub fn dir_files(root: &Path) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        let entries = std::fs::read_dir(&dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries.flatten() {
            let path = entry.path();
            if path.is_dir() {
                if path
                    .file_name()
                    .is_some_and(|n| n != "target" && n != "__pycache__")
                {
                    stack.push(path);
                }
                continue;
            }
            let rel = path.strip_prefix(root).unwrap_or(&path);
            let text = std::fs::read_to_string(&path)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            out.push((rel.to_string_lossy().replace('\\', "/"), text));
        }
    }
    out.sort();
    out
}

/// A new git repository holding a copy of the files under `root`,
/// committed on `main`.
///
/// # Panics
/// As [`dir_files`] and [`git_repo`].
#[must_use]
pub fn git_repo_of_dir(root: &Path) -> tempfile::TempDir {
    let files = dir_files(root);
    let refs: Vec<(&str, &str)> = files
        .iter()
        .map(|(p, t)| (p.as_str(), t.as_str()))
        .collect();
    git_repo(&refs)
}
