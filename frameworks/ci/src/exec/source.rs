//! A repository's commit as the jobs see it: its identity (sha, ref,
//! changed files) and a `.tar.gz` of its files, which the agents fetch into
//! each job's sandbox before the script starts.
//!
//! This uses the `git` command, as GitLab's runner does: no library reads
//! every repository format git itself writes. It runs through
//! [`super::git`] (no prompt, bounded output, killed after
//! [`LOCAL_TIMEOUT`]). Every function here blocks; call them from
//! `spawn_blocking` in async code.

use std::ffi::OsStr;
use std::fs::File;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use super::git::{Git, GitCommand, GitError, LOCAL_TIMEOUT};

/// What went wrong reading a repository.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// `git` itself could not be run.
    #[error("cannot run git ({0}); is git installed?")]
    NoGit(std::io::Error),
    /// A git command failed.
    #[error("git {args} failed in {dir}: {stderr}")]
    Git {
        /// The arguments.
        args: String,
        /// The repository.
        dir: PathBuf,
        /// What git said.
        stderr: String,
    },
    /// git gave no answer in {dir}: it timed out, wrote too much, or its
    /// output could not be read.
    #[error("cannot read {dir}: {source}")]
    Run {
        /// The repository.
        dir: PathBuf,
        /// Why.
        source: GitError,
    },
    /// Not a repository.
    #[error("{0} is not a git repository (or any of its parents)")]
    NotARepository(PathBuf),
    /// Writing the archive failed.
    #[error("cannot write the source archive {path}: {source}")]
    Write {
        /// The archive.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
}

/// A commit and where it is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Revision {
    /// The repository's top directory.
    pub root: PathBuf,
    /// Its name (the top directory's name), for `CI_PROJECT_NAME`.
    pub project_name: String,
    /// Full commit sha.
    pub sha: String,
    /// Branch or tag name (`HEAD` when detached and no name was given).
    pub ref_name: String,
    /// The ref is a tag.
    pub is_tag: bool,
    /// The repository's default branch (origin's HEAD, else `main` or
    /// `master` if one exists, else the current branch).
    pub default_branch: String,
    /// Files changed by the commit (against its first parent; every file
    /// for a root commit), plus uncommitted changes when the working tree
    /// is used. For `rules:changes`.
    pub changed_files: Vec<String>,
    /// The working tree, uncommitted changes included, is what runs.
    pub dirty: bool,
    /// The project's directory inside the repository, `""` for the root or
    /// e.g. `"examples/web/"`: a subdirectory with its own
    /// `.gitlab-ci.yml` is a project of its own (as in a monorepo), and
    /// only its files are the job's checkout.
    pub subdir: String,
    /// The commit's message, author and time, and (for a push) the sha
    /// the branch pointed at before.
    pub commit: crate::CommitInfo,
}

/// Runs git in `dir`; its stdout. A command that ran and failed is
/// [`SourceError::Git`] (for many commands here an answer: "no such
/// ref"); one that gave no answer is another error.
fn git_bytes<I, S>(dir: &Path, args: I) -> Result<Vec<u8>, SourceError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    let command = GitCommand::new(args).in_dir(dir);
    Git::new(LOCAL_TIMEOUT)
        .run_blocking(&command)
        .map_err(|e| match e {
            GitError::NoGit(e) => SourceError::NoGit(e),
            GitError::Failed { stderr, .. } => SourceError::Git {
                args: command.args_shown(),
                dir: dir.to_path_buf(),
                stderr,
            },
            source => SourceError::Run {
                dir: dir.to_path_buf(),
                source,
            },
        })
}

fn git<I, S>(dir: &Path, args: I) -> Result<String, SourceError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    git_bytes(dir, args).map(|out| String::from_utf8_lossy(&out).into_owned())
}

/// Whether a git command that answers by its exit status (`show-ref
/// --verify`, `merge-base --is-ancestor`) said yes; an error only when git
/// gave no answer.
fn git_says_yes<I, S>(dir: &Path, args: I) -> Result<bool, SourceError>
where
    I: IntoIterator<Item = S>,
    S: AsRef<OsStr>,
{
    match git_bytes(dir, args) {
        Ok(_) => Ok(true),
        Err(SourceError::Git { .. }) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The top directory of the repository `dir` is in: its working tree, or
/// the repository itself when it is bare (a mirror has no working tree).
fn top(dir: &Path) -> Result<(PathBuf, bool), SourceError> {
    match git(dir, ["rev-parse", "--show-toplevel"]) {
        Ok(out) => Ok((PathBuf::from(out.trim()), false)),
        Err(SourceError::Git { .. }) => {
            let bare = git(dir, ["rev-parse", "--is-bare-repository"])
                .is_ok_and(|out| out.trim() == "true");
            if !bare {
                return Err(SourceError::NotARepository(dir.to_path_buf()));
            }
            let git_dir = git(dir, ["rev-parse", "--absolute-git-dir"])?;
            Ok((PathBuf::from(git_dir.trim()), true))
        }
        Err(e) => Err(e),
    }
}

/// Reads the revision to run: `reference` (a branch, tag or sha) or HEAD;
/// `dirty` runs the working tree as it is, on top of HEAD. `dir` may be a
/// bare repository (not with `dirty`).
pub fn resolve(dir: &Path, reference: Option<&str>, dirty: bool) -> Result<Revision, SourceError> {
    let (root, bare) = top(dir)?;
    if bare && dirty {
        return Err(SourceError::Git {
            args: "status".into(),
            dir: root,
            stderr: "a bare repository has no working tree to run".into(),
        });
    }
    let rev = reference.unwrap_or("HEAD");
    if rev.starts_with('-') {
        return Err(SourceError::Git {
            args: format!("rev-parse {rev}"),
            dir: root,
            stderr: "a revision cannot start with '-'".into(),
        });
    }
    let sha = git(
        &root,
        [
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("{rev}^{{commit}}"),
        ],
    )
    .map_err(|_| SourceError::Git {
        args: format!("rev-parse {rev}"),
        dir: root.clone(),
        stderr: format!("no commit named {rev:?}"),
    })?
    .trim()
    .to_string();
    let (ref_name, is_tag) = match reference {
        Some(r)
            if git_says_yes(
                &root,
                ["show-ref", "--verify", "--quiet", &format!("refs/tags/{r}")],
            )? =>
        {
            (r.to_string(), true)
        }
        Some(r) => (r.to_string(), false),
        None => match git(&root, ["symbolic-ref", "--quiet", "--short", "HEAD"]) {
            Ok(branch) => (branch.trim().to_string(), false),
            Err(_) => ("HEAD".to_string(), false),
        },
    };
    let default_branch = default_branch(&root, &ref_name);
    // A subdirectory with its own pipeline is the project.
    let prefix = git(dir, ["rev-parse", "--show-prefix"])?.trim().to_string();
    let subdir = if !prefix.is_empty() && dir.join(".gitlab-ci.yml").is_file() {
        prefix
    } else {
        String::new()
    };
    let mut changed_files = changed_files(&root, &sha)?;
    if dirty {
        let status = git(
            &root,
            ["status", "--porcelain", "-z", "--untracked-files=all"],
        )?;
        for entry in status.split('\0').filter(|e| e.len() > 3) {
            changed_files.push(entry[3..].to_string());
        }
        changed_files.sort();
        changed_files.dedup();
    }
    let changed_files = changed_files
        .into_iter()
        .filter_map(|f| f.strip_prefix(subdir.as_str()).map(str::to_string))
        .collect();
    let project_name = root
        .join(&subdir)
        .file_name()
        .map(|n| {
            let name = n.to_string_lossy();
            // `project.git`, a bare repository's usual name, is `project`.
            match name.strip_suffix(".git") {
                Some(stem) if bare && !stem.is_empty() => stem.to_string(),
                _ => name.into_owned(),
            }
        })
        .unwrap_or_else(|| "project".into());
    let commit = commit_info(&root, &sha)?;
    Ok(Revision {
        root,
        project_name,
        sha,
        ref_name,
        is_tag,
        default_branch,
        changed_files,
        dirty,
        subdir,
        commit,
    })
}

/// The message, author (`Name <email>`) and commit time (ISO 8601) of
/// commit `sha`.
fn commit_info(root: &Path, sha: &str) -> Result<crate::CommitInfo, SourceError> {
    let out = git(root, ["log", "-1", "--format=%an%x00%ae%x00%cI%x00%B", sha])?;
    let mut parts = out.splitn(4, '\0');
    let mut next = || parts.next().unwrap_or_default().to_string();
    let (name, email, timestamp, message) = (next(), next(), next(), next());
    Ok(crate::CommitInfo {
        message: message.trim_end_matches('\n').to_string(),
        timestamp,
        author: format!("{name} <{email}>"),
        before_sha: None,
    })
}

/// The files that differ between commits `before` and `sha` (for a push:
/// what it changed); None when `before` is not a commit of the repository
/// (40 zeros: a new branch).
pub fn changed_between(
    dir: &Path,
    before: &str,
    sha: &str,
) -> Result<Option<Vec<String>>, SourceError> {
    let (root, _) = top(dir)?;
    if before.starts_with('-')
        || !git_says_yes(
            &root,
            [
                "rev-parse",
                "--verify",
                "--quiet",
                &format!("{before}^{{commit}}"),
            ],
        )?
    {
        return Ok(None);
    }
    let out = git(&root, ["diff", "--name-only", "-z", before, sha])?;
    Ok(Some(
        out.split('\0')
            .filter(|s| !s.is_empty())
            .map(str::to_string)
            .collect(),
    ))
}

fn default_branch(root: &Path, current: &str) -> String {
    if let Ok(out) = git(
        root,
        [
            "symbolic-ref",
            "--quiet",
            "--short",
            "refs/remotes/origin/HEAD",
        ],
    ) {
        let name = out.trim();
        return name.strip_prefix("origin/").unwrap_or(name).to_string();
    }
    for candidate in ["main", "master"] {
        if git(
            root,
            [
                "show-ref",
                "--verify",
                "--quiet",
                &format!("refs/heads/{candidate}"),
            ],
        )
        .is_ok()
        {
            return candidate.to_string();
        }
    }
    current.to_string()
}

/// Whether the revision's ref is a branch of the repository (or of its
/// `origin`): not a tag, a commit sha or a detached `HEAD`. Only branch
/// pipelines supersede each other (auto-cancel).
pub fn is_branch(rev: &Revision) -> bool {
    if rev.is_tag || rev.ref_name.is_empty() || rev.ref_name == "HEAD" {
        return false;
    }
    [
        format!("refs/heads/{}", rev.ref_name),
        format!("refs/remotes/origin/{}", rev.ref_name),
    ]
    .iter()
    .any(|r| git(&rev.root, ["show-ref", "--verify", "--quiet", r.as_str()]).is_ok())
}

fn changed_files(root: &Path, sha: &str) -> Result<Vec<String>, SourceError> {
    let has_parent = git_says_yes(
        root,
        ["rev-parse", "--verify", "--quiet", &format!("{sha}^")],
    )?;
    let out = if has_parent {
        git(root, ["diff", "--name-only", "-z", &format!("{sha}^"), sha])?
    } else {
        git(root, ["ls-tree", "-r", "--name-only", "-z", sha])?
    };
    Ok(out
        .split('\0')
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// The commit branch `branch` points at in the repository at `dir`, `None`
/// when there is no such branch.
pub fn branch_head(dir: &Path, branch: &str) -> Result<Option<String>, SourceError> {
    let (root, _) = top(dir)?;
    match git(
        &root,
        [
            "rev-parse",
            "--verify",
            "--quiet",
            &format!("refs/heads/{branch}^{{commit}}"),
        ],
    ) {
        Ok(out) => Ok(Some(out.trim().to_string())),
        Err(SourceError::Git { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The repository's default branch: origin's HEAD if it has an `origin`;
/// in a bare repository (a mirror) the branch its HEAD names (the remote's
/// default branch); else `main` or `master` if one exists, else the
/// branch checked out. `None` when none of them is a branch with a commit.
pub fn default_branch_of(dir: &Path) -> Result<Option<String>, SourceError> {
    let (root, bare) = top(dir)?;
    let head = git(&root, ["symbolic-ref", "--quiet", "HEAD"])
        .ok()
        .and_then(|out| out.trim().strip_prefix("refs/heads/").map(str::to_string));
    let mut candidates = Vec::new();
    if let Ok(out) = git(
        &root,
        [
            "symbolic-ref",
            "--quiet",
            "--short",
            "refs/remotes/origin/HEAD",
        ],
    ) {
        let name = out.trim();
        candidates.push(name.strip_prefix("origin/").unwrap_or(name).to_string());
    }
    if bare {
        candidates.extend(head.clone());
    }
    candidates.extend(["main".to_string(), "master".to_string()]);
    candidates.extend(head);
    for name in candidates {
        if branch_head(&root, &name)?.is_some() {
            return Ok(Some(name));
        }
    }
    Ok(None)
}

/// Whether commit `sha` is in the repository and is branch `branch`'s head
/// or one of its ancestors.
pub fn on_branch(dir: &Path, sha: &str, branch: &str) -> Result<bool, SourceError> {
    let (root, _) = top(dir)?;
    if !git_says_yes(&root, ["cat-file", "-e", &format!("{sha}^{{commit}}")])? {
        return Ok(false);
    }
    git_says_yes(
        &root,
        [
            "merge-base",
            "--is-ancestor",
            sha,
            &format!("refs/heads/{branch}"),
        ],
    )
}

/// Reads a file of the revision (the pipeline definition, files for
/// `cache:key:files` and `rules:exists`): from the commit, or from the
/// working tree when dirty. `None` when the file does not exist.
pub fn read_file(rev: &Revision, path: &str) -> Result<Option<Vec<u8>>, SourceError> {
    let path = format!("{}{path}", rev.subdir);
    if rev.dirty {
        let full = rev.root.join(&path);
        return match std::fs::read(&full) {
            Ok(bytes) => Ok(Some(bytes)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(SourceError::Write {
                path: full,
                source: e,
            }),
        };
    }
    match git_bytes(
        &rev.root,
        ["cat-file", "blob", &format!("{}:{path}", rev.sha)],
    ) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(SourceError::Git { .. }) => Ok(None),
        Err(e) => Err(e),
    }
}

/// The revision's file names (for `rules:exists`).
pub fn list_files(rev: &Revision) -> Result<Vec<String>, SourceError> {
    let out = if rev.dirty {
        git(
            &rev.root,
            [
                "ls-files",
                "-z",
                "--cached",
                "--others",
                "--exclude-standard",
            ],
        )?
    } else {
        git(&rev.root, ["ls-tree", "-r", "--name-only", "-z", &rev.sha])?
    };
    Ok(out
        .split('\0')
        .filter_map(|s| s.strip_prefix(rev.subdir.as_str()))
        .filter(|s| !s.is_empty())
        .map(str::to_string)
        .collect())
}

/// The revision as a [`crate::Repository`] (for `include` and the rules
/// of a parse that is not the runner's, e.g. `berth ci lint`): every call
/// asks git or the working tree; a file git cannot read is missing.
impl crate::Repository for Revision {
    fn files(&self) -> Vec<String> {
        list_files(self).unwrap_or_default()
    }

    fn read(&self, path: &str) -> Option<Vec<u8>> {
        read_file(self, path).ok().flatten()
    }
}

/// Writes the revision's files as a `.tar.gz` to `dest`: the commit's tree
/// (`git archive`), or the working tree's tracked and untracked files not
/// ignored by `.gitignore` when dirty. Returns the archive's size.
pub fn write_archive(rev: &Revision, dest: &Path) -> Result<u64, SourceError> {
    let write_err = |source| SourceError::Write {
        path: dest.to_path_buf(),
        source,
    };
    if !rev.dirty {
        let tree = format!("{}:{}", rev.sha, rev.subdir);
        // git runs in the repository: a relative destination (a relative
        // `--data-dir`) would land there, or nowhere.
        let out = std::path::absolute(dest)
            .map_err(write_err)?
            .to_string_lossy()
            .into_owned();
        git(&rev.root, ["archive", "--format=tar.gz", "-o", &out, &tree])?;
    } else {
        let file = File::create(dest).map_err(write_err)?;
        let gz = flate2::write::GzEncoder::new(BufWriter::new(file), flate2::Compression::fast());
        let mut tar = tar::Builder::new(gz);
        tar.follow_symlinks(false);
        for name in list_files(rev)? {
            let path = rev.root.join(&rev.subdir).join(&name);
            // Deleted but still in the index: not part of the tree.
            match std::fs::symlink_metadata(&path) {
                Ok(meta) if meta.is_file() || meta.file_type().is_symlink() => {
                    tar.append_path_with_name(&path, &name).map_err(write_err)?;
                }
                Ok(_) | Err(_) => {}
            }
        }
        let gz = tar.into_inner().map_err(write_err)?;
        let mut buf = gz.finish().map_err(write_err)?;
        buf.flush().map_err(write_err)?;
        buf.get_ref().sync_all().map_err(write_err)?;
    }
    Ok(std::fs::metadata(dest).map_err(write_err)?.len())
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::io::Read as _;

    use super::*;

    use berth_tests::git as sh;

    fn repo() -> tempfile::TempDir {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        sh(d, &["init", "-q", "-b", "main"]);
        std::fs::write(d.join("README"), "hello\n").unwrap();
        std::fs::create_dir(d.join("src")).unwrap();
        std::fs::write(d.join("src/lib.rs"), "pub fn f() {}\n").unwrap();
        std::fs::write(d.join(".gitignore"), "target/\n").unwrap();
        sh(d, &["add", "."]);
        sh(d, &["commit", "-q", "-m", "first"]);
        std::fs::write(d.join("src/lib.rs"), "pub fn f() -> u8 { 1 }\n").unwrap();
        sh(d, &["commit", "-q", "-am", "second"]);
        dir
    }

    fn entries(archive: &Path) -> BTreeMap<String, String> {
        let gz = flate2::read::GzDecoder::new(File::open(archive).unwrap());
        let mut tar = tar::Archive::new(gz);
        let mut out = BTreeMap::new();
        for entry in tar.entries().unwrap() {
            let mut entry = entry.unwrap();
            if entry.header().entry_type().is_file() {
                let name = entry.path().unwrap().to_string_lossy().into_owned();
                let mut text = String::new();
                entry.read_to_string(&mut text).unwrap();
                out.insert(name, text);
            }
        }
        out
    }

    #[test]
    fn only_branches_are_branches() {
        let dir = repo();
        let d = dir.path();
        sh(d, &["tag", "v1"]);
        sh(d, &["branch", "feature"]);
        let head = resolve(d, None, false).unwrap();
        assert!(is_branch(&head), "{head:?}");
        assert!(is_branch(&resolve(d, Some("feature"), false).unwrap()));
        assert!(is_branch(&resolve(d, None, true).unwrap()), "dirty HEAD");
        assert!(!is_branch(&resolve(d, Some("v1"), false).unwrap()), "a tag");
        let sha = head.sha.clone();
        assert!(!is_branch(&resolve(d, Some(&sha), false).unwrap()), "a sha");
        sh(d, &["checkout", "-q", "--detach"]);
        let detached = resolve(d, None, false).unwrap();
        assert_eq!(detached.ref_name, "HEAD");
        assert!(!is_branch(&detached));
    }

    #[test]
    fn resolves_head_and_archives_the_commit() {
        let dir = repo();
        // An uncommitted change and an ignored file are not in the commit.
        std::fs::write(dir.path().join("README"), "changed\n").unwrap();
        std::fs::create_dir(dir.path().join("target")).unwrap();
        std::fs::write(dir.path().join("target/out"), "x").unwrap();
        let rev = resolve(dir.path(), None, false).unwrap();
        assert_eq!(rev.ref_name, "main");
        assert!(!rev.is_tag);
        assert_eq!(rev.default_branch, "main");
        assert_eq!(rev.sha.len(), 40);
        assert_eq!(rev.changed_files, ["src/lib.rs"]);
        let out = dir.path().join("src.tar.gz");
        let size = write_archive(&rev, &out).unwrap();
        assert!(size > 0);
        let files = entries(&out);
        assert_eq!(files["README"], "hello\n", "the committed version");
        assert_eq!(files["src/lib.rs"], "pub fn f() -> u8 { 1 }\n");
        assert!(!files.contains_key("target/out"));
        assert_eq!(read_file(&rev, "README").unwrap().unwrap(), b"hello\n");
        assert_eq!(read_file(&rev, "nope").unwrap(), None);
    }

    #[test]
    fn dirty_archives_the_working_tree_without_ignored_files() {
        let dir = repo();
        std::fs::write(dir.path().join("README"), "changed\n").unwrap();
        std::fs::write(dir.path().join("new.txt"), "new\n").unwrap();
        std::fs::create_dir(dir.path().join("target")).unwrap();
        std::fs::write(dir.path().join("target/out"), "x").unwrap();
        let rev = resolve(dir.path(), None, true).unwrap();
        assert!(rev.dirty);
        assert_eq!(rev.changed_files, ["README", "new.txt", "src/lib.rs"]);
        let out = tempfile::tempdir().unwrap();
        let archive = out.path().join("src.tar.gz");
        write_archive(&rev, &archive).unwrap();
        let files = entries(&archive);
        assert_eq!(files["README"], "changed\n");
        assert_eq!(files["new.txt"], "new\n");
        assert!(!files.contains_key("target/out"), "ignored");
        assert_eq!(read_file(&rev, "new.txt").unwrap().unwrap(), b"new\n");
    }

    #[test]
    fn a_subdirectory_with_its_own_pipeline_is_the_project() {
        let dir = repo();
        let sub = dir.path().join("examples/web");
        std::fs::create_dir_all(&sub).unwrap();
        std::fs::write(sub.join(".gitlab-ci.yml"), "job:\n  script: [echo]\n").unwrap();
        std::fs::write(sub.join("index.html"), "hi\n").unwrap();
        sh(dir.path(), &["add", "."]);
        sh(dir.path(), &["commit", "-q", "-m", "web"]);
        let rev = resolve(&sub, None, false).unwrap();
        assert_eq!(rev.subdir, "examples/web/");
        assert_eq!(rev.project_name, "web");
        assert_eq!(rev.changed_files, [".gitlab-ci.yml", "index.html"]);
        assert!(read_file(&rev, ".gitlab-ci.yml").unwrap().is_some());
        assert_eq!(list_files(&rev).unwrap(), [".gitlab-ci.yml", "index.html"]);
        let out = tempfile::tempdir().unwrap();
        let archive = out.path().join("src.tar.gz");
        write_archive(&rev, &archive).unwrap();
        let files = entries(&archive);
        assert_eq!(
            files.keys().collect::<Vec<_>>(),
            [".gitlab-ci.yml", "index.html"]
        );
        let dirty = resolve(&sub, None, true).unwrap();
        write_archive(&dirty, &archive).unwrap();
        assert_eq!(entries(&archive)["index.html"], "hi\n");
        // Its parent without a pipeline of its own is the repository.
        let parent = resolve(&dir.path().join("examples"), None, false).unwrap();
        assert_eq!(parent.subdir, "");
    }

    #[test]
    fn resolves_tags_branches_and_refuses_bad_names() {
        let dir = repo();
        sh(dir.path(), &["tag", "v1.0"]);
        sh(dir.path(), &["branch", "feature/x", "HEAD~1"]);
        let tag = resolve(dir.path(), Some("v1.0"), false).unwrap();
        assert!(tag.is_tag);
        assert_eq!(tag.ref_name, "v1.0");
        let branch = resolve(dir.path(), Some("feature/x"), false).unwrap();
        assert!(!branch.is_tag);
        assert_ne!(branch.sha, tag.sha);
        assert_eq!(branch.default_branch, "main");
        assert_eq!(
            branch.changed_files,
            [".gitignore", "README", "src/lib.rs"],
            "a root commit changes every file"
        );
        let err = resolve(dir.path(), Some("no-such-ref"), false).unwrap_err();
        assert!(err.to_string().contains("no commit named"), "{err}");
        let err = resolve(dir.path(), Some("--output=/tmp/x"), false).unwrap_err();
        assert!(err.to_string().contains("cannot start with '-'"), "{err}");
        let plain = tempfile::tempdir().unwrap();
        let err = resolve(plain.path(), None, false).unwrap_err();
        assert!(matches!(err, SourceError::NotARepository(_)), "{err}");
    }

    #[test]
    fn bare_mirrors_resolve_and_branches_are_read() {
        let dir = repo();
        sh(dir.path(), &["branch", "feature/x", "HEAD~1"]);
        sh(dir.path(), &["checkout", "-q", "feature/x"]);
        let first = branch_head(dir.path(), "feature/x").unwrap().unwrap();
        let second = branch_head(dir.path(), "main").unwrap().unwrap();
        assert_eq!(branch_head(dir.path(), "nope").unwrap(), None);
        // A working tree's default is main, whatever is checked out.
        assert_eq!(
            default_branch_of(dir.path()).unwrap().as_deref(),
            Some("main")
        );
        assert!(
            on_branch(dir.path(), &first, "main").unwrap(),
            "an ancestor"
        );
        assert!(!on_branch(dir.path(), &second, "feature/x").unwrap());
        assert!(!on_branch(dir.path(), &"ab".repeat(20), "main").unwrap());

        let out = tempfile::tempdir().unwrap();
        let mirror = out.path().join("app.git");
        let status = std::process::Command::new("git")
            .args(["clone", "-q", "--mirror"])
            .arg(dir.path())
            .arg(&mirror)
            .status()
            .unwrap();
        assert!(status.success());
        // The mirror's HEAD names the branch checked out at the origin.
        assert_eq!(
            default_branch_of(&mirror).unwrap().as_deref(),
            Some("feature/x")
        );
        let rev = resolve(&mirror, Some(&second), false).unwrap();
        assert_eq!(rev.sha, second);
        assert_eq!(rev.project_name, "app", "without .git");
        assert_eq!(rev.subdir, "");
        assert_eq!(read_file(&rev, "README").unwrap().unwrap(), b"hello\n");
        let archive = out.path().join("src.tar.gz");
        write_archive(&rev, &archive).unwrap();
        assert_eq!(entries(&archive)["src/lib.rs"], "pub fn f() -> u8 { 1 }\n");
        let err = resolve(&mirror, None, true).unwrap_err();
        assert!(err.to_string().contains("no working tree"), "{err}");
    }
}
