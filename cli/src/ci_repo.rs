//! The repository a pipeline file is parsed in, outside the runner: where
//! `berth ci lint` and `berth ci run --play` read the files `include`
//! names, and the [`Context`] `include` rules are evaluated against.

use std::path::{Path, PathBuf};

use berth_ci::exec::source::{self, Revision};
use berth_ci::{Context, DirRepository, PipelineSource, Repository, SecretVariable};

/// The context of a pipeline of `rev` (as the runner makes it, but for
/// the pipeline's id, which is not known yet).
pub(crate) fn context_of(
    rev: &Revision,
    source: PipelineSource,
    secrets: Vec<SecretVariable>,
) -> Context {
    berth_ci::exec::runner::revision_context(rev, source, secrets, 0, "")
}

enum Files {
    Git(Box<Revision>),
    Dir(DirRepository),
}

/// The repository of a file `berth ci lint` checks: the git working tree
/// it is in (as `berth ci run --dirty` would run it), else its directory.
pub(crate) struct LintRepository {
    files: Files,
    /// The file's path in the repository.
    pub(crate) path: String,
    /// What `include` rules are evaluated against: a push of the current
    /// branch.
    pub(crate) context: Context,
    /// The repository's directory, as shown.
    pub(crate) shown_root: String,
    /// The context in words.
    pub(crate) described: String,
}

impl LintRepository {
    /// The repository of `file` (None: standard input, read as the
    /// `.gitlab-ci.yml` of the current directory's repository).
    pub(crate) fn find(file: Option<&Path>) -> LintRepository {
        let file = file.map(|f| std::path::absolute(f).unwrap_or_else(|_| f.to_path_buf()));
        let dir = match file.as_deref().and_then(Path::parent) {
            Some(d) => d.to_path_buf(),
            None => std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
        };
        match source::resolve(&dir, None, true) {
            Ok(rev) => {
                let top = match rev.subdir.trim_end_matches('/') {
                    "" => rev.root.clone(),
                    sub => rev.root.join(sub),
                };
                let path = in_repository(file.as_deref(), &top);
                let kind = if rev.is_tag { "tag" } else { "branch" };
                let described = format!(
                    "a push of {kind} `{}` (the repository's current {kind}, its working tree)",
                    rev.ref_name
                );
                LintRepository {
                    path,
                    context: context_of(&rev, PipelineSource::Push, Vec::new()),
                    shown_root: top.display().to_string(),
                    described,
                    files: Files::Git(Box::new(rev)),
                }
            }
            Err(e) => {
                let name = dir
                    .file_name()
                    .map(|n| n.to_string_lossy().into_owned())
                    .unwrap_or_else(|| "project".into());
                LintRepository {
                    path: in_repository(file.as_deref(), &dir),
                    context: Context {
                        project_name: name.clone(),
                        project_dir: format!("/mnt/berth/sandbox/{name}"),
                        commit_sha: "0".repeat(40),
                        ref_name: "main".into(),
                        default_branch: "main".into(),
                        ..Context::default()
                    },
                    shown_root: dir.display().to_string(),
                    described: format!("a push of branch `main` ({e})"),
                    files: Files::Dir(DirRepository::new(dir)),
                }
            }
        }
    }

    /// The files `include` reads.
    pub(crate) fn repository(&self) -> &dyn Repository {
        match &self.files {
            Files::Git(rev) => &**rev,
            Files::Dir(dir) => dir,
        }
    }
}

/// `file`'s path relative to `top`, `/`-separated (`.gitlab-ci.yml` for
/// standard input).
fn in_repository(file: Option<&Path>, top: &Path) -> String {
    let Some(file) = file else {
        return ".gitlab-ci.yml".into();
    };
    let top = top.canonicalize().unwrap_or_else(|_| top.to_path_buf());
    let full = file.canonicalize().unwrap_or_else(|_| file.to_path_buf());
    match full.strip_prefix(&top) {
        Ok(rel) => rel.to_string_lossy().replace('\\', "/"),
        Err(_) => file
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| ".gitlab-ci.yml".into()),
    }
}
