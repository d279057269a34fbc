//! The predefined variables a plan gives every job (`CI_*`, `GITLAB_CI`),
//! and the placeholders that stand for the job's real directories.
//!
//! Where a job's checkout is (`CI_PROJECT_DIR`) is known only on the agent
//! that runs it: under the task's sandbox, a host directory for a shell
//! job, `/mnt/berth/sandbox` in a container. A plan therefore sets
//! `CI_PROJECT_DIR` and `CI_BUILDS_DIR` to private placeholders
//! ([`PROJECT_DIR_PLACEHOLDER`], [`BUILDS_DIR_PLACEHOLDER`]), so every
//! variable that uses them, directly or through other variables
//! (`PIP_CACHE_DIR: $CI_PROJECT_DIR/.cache/pip`), carries the placeholder
//! in [`PlannedJob::dir_variables`](crate::PlannedJob) (and the directory
//! shown, a Docker job's, in `PlannedJob::variables`). The job's script
//! prelude ([`crate::script::prelude`]) replaces the placeholders with the
//! real directories before the job's commands run. Everything a plan
//! shows (variables, image, paths, tags, environment, rules) uses
//! [`Context::project_dir`] instead, through [`shown`].

use sha2::{Digest, Sha256};

use crate::plan::Context;
use crate::vars::ref_slug;

/// What `CI_PROJECT_DIR` is in a planned job's variables until the job's
/// script replaces it with the job's real project directory.
pub const PROJECT_DIR_PLACEHOLDER: &str = "\u{1e}berth-ci:CI_PROJECT_DIR\u{1e}";

/// What `CI_BUILDS_DIR` is in a planned job's variables until the job's
/// script replaces it with the directory the checkout is in.
pub const BUILDS_DIR_PLACEHOLDER: &str = "\u{1e}berth-ci:CI_BUILDS_DIR\u{1e}";

/// The commit details of `CI_COMMIT_*`, read from git.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CommitInfo {
    /// The whole message (`CI_COMMIT_MESSAGE`).
    pub message: String,
    /// The commit time, ISO 8601 (`CI_COMMIT_TIMESTAMP`).
    pub timestamp: String,
    /// `Name <email>` (`CI_COMMIT_AUTHOR`).
    pub author: String,
    /// The commit the branch pointed at before a push
    /// (`CI_COMMIT_BEFORE_SHA`); None: 40 zeros, as GitLab.
    pub before_sha: Option<String>,
}

/// The value of `CI_RUNNER_VERSION` and `CI_SERVER_VERSION`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The namespace of every berth project (`CI_PROJECT_NAMESPACE`): berth
/// has no groups.
pub const NAMESPACE: &str = "berth";

/// `value` with the directory placeholders replaced by the directories
/// shown (`Context::project_dir` and its parent).
pub fn shown(ctx: &Context, value: &str) -> String {
    if !value.contains('\u{1e}') {
        return value.to_string();
    }
    value
        .replace(PROJECT_DIR_PLACEHOLDER, &ctx.project_dir)
        .replace(BUILDS_DIR_PLACEHOLDER, &builds_dir(&ctx.project_dir))
}

/// The directory the project directory is in.
fn builds_dir(project_dir: &str) -> String {
    match project_dir.trim_end_matches('/').rsplit_once('/') {
        Some(("", _)) => "/".to_string(),
        Some((parent, _)) => parent.to_string(),
        None => ".".to_string(),
    }
}

/// A path relative to the project directory: `$CI_PROJECT_DIR/out` (as
/// shown) is `out`, as GitLab reads artifact and cache paths.
pub fn relative_path(ctx: &Context, path: String) -> String {
    let dir = ctx.project_dir.trim_end_matches('/');
    if dir.is_empty() {
        return path;
    }
    if path == dir {
        return ".".to_string();
    }
    match path.strip_prefix(dir).and_then(|p| p.strip_prefix('/')) {
        Some(rest) if !rest.is_empty() => rest.to_string(),
        _ => path,
    }
}

/// `CI_ENVIRONMENT_SLUG`: the name lowercased, every character but `a-z`
/// and `0-9` a `-`, no `-` twice or at the end, starting with a letter
/// (`env-` put before otherwise), at most 24 characters; a name that had
/// to change this way or is longer gets the first 6 hex digits of its
/// SHA-256 after a `-`, so that two names do not share a slug.
pub fn environment_slug(name: &str) -> String {
    let mut slug = String::new();
    for c in name.chars().flat_map(char::to_lowercase) {
        let c = if c.is_ascii_alphanumeric() { c } else { '-' };
        if c == '-' && (slug.is_empty() || slug.ends_with('-')) {
            continue;
        }
        slug.push(c);
    }
    if !slug.starts_with(|c: char| c.is_ascii_lowercase()) {
        slug = format!("env-{slug}");
    }
    let slug = slug.trim_end_matches('-').to_string();
    if slug == name && slug.len() <= 24 {
        return slug;
    }
    let hash: String = Sha256::digest(name.as_bytes())[..3]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect();
    let head: String = slug.chars().take(17).collect();
    format!("{}-{hash}", head.trim_end_matches('-'))
}

/// `scheme`, `host` and `port` of a URL (`http://h:8080/x`); the port is
/// the scheme's default when none is written.
fn url_parts(url: &str) -> (String, String, String) {
    let (scheme, rest) = url.split_once("://").unwrap_or(("http", url));
    let authority = rest.split('/').next().unwrap_or_default();
    let authority = authority.rsplit('@').next().unwrap_or_default();
    let (host, port) = match authority.rsplit_once(':') {
        Some((h, p)) if !p.is_empty() && p.chars().all(|c| c.is_ascii_digit()) => {
            (h.to_string(), p.to_string())
        }
        _ => (
            authority.to_string(),
            if scheme == "https" { "443" } else { "80" }.to_string(),
        ),
    };
    (scheme.to_string(), host, port)
}

/// The pipeline-level predefined variables.
pub(crate) fn pipeline(ctx: &Context) -> Vec<(&'static str, String)> {
    let server = ctx.server_url.trim_end_matches('/');
    let (protocol, host, port) = url_parts(server);
    let commit = &ctx.commit;
    let mut lines = commit.message.lines();
    let title = lines.next().unwrap_or_default().to_string();
    let description = lines
        .skip_while(|l| l.trim().is_empty())
        .collect::<Vec<_>>()
        .join("\n");
    let path = format!("{NAMESPACE}/{}", ctx.project_name);
    let mut v = vec![
        ("CI", "true".to_string()),
        ("GITLAB_CI", "true".to_string()),
        ("CI_SERVER", "yes".to_string()),
        ("CI_SERVER_NAME", "berth".to_string()),
        ("CI_SERVER_VERSION", VERSION.to_string()),
        ("CI_SERVER_URL", server.to_string()),
        ("CI_SERVER_HOST", host),
        ("CI_SERVER_PORT", port),
        ("CI_SERVER_PROTOCOL", protocol),
        ("CI_RUNNER_VERSION", VERSION.to_string()),
        ("CI_PROJECT_DIR", PROJECT_DIR_PLACEHOLDER.to_string()),
        ("CI_BUILDS_DIR", BUILDS_DIR_PLACEHOLDER.to_string()),
        ("CI_PROJECT_NAME", ctx.project_name.clone()),
        ("CI_PROJECT_NAMESPACE", NAMESPACE.to_string()),
        ("CI_PROJECT_PATH", path.clone()),
        ("CI_PROJECT_PATH_SLUG", ref_slug(&path)),
        ("CI_PROJECT_URL", server.to_string()),
        ("CI_REPOSITORY_URL", ctx.repository_url.clone()),
        ("CI_COMMIT_SHA", ctx.commit_sha.clone()),
        (
            "CI_COMMIT_SHORT_SHA",
            ctx.commit_sha.chars().take(8).collect(),
        ),
        ("CI_COMMIT_REF_NAME", ctx.ref_name.clone()),
        ("CI_COMMIT_REF_SLUG", ref_slug(&ctx.ref_name)),
        ("CI_COMMIT_REF_PROTECTED", "false".to_string()),
        ("CI_COMMIT_MESSAGE", commit.message.clone()),
        ("CI_COMMIT_TITLE", title),
        ("CI_COMMIT_DESCRIPTION", description),
        ("CI_COMMIT_TIMESTAMP", commit.timestamp.clone()),
        ("CI_COMMIT_AUTHOR", commit.author.clone()),
        (
            "CI_COMMIT_BEFORE_SHA",
            commit.before_sha.clone().unwrap_or_else(|| "0".repeat(40)),
        ),
        ("CI_DEFAULT_BRANCH", ctx.default_branch.clone()),
        ("CI_PIPELINE_ID", ctx.pipeline_id.to_string()),
        ("CI_PIPELINE_IID", ctx.pipeline_id.to_string()),
        (
            "CI_PIPELINE_URL",
            format!("{server}/ci/v1/pipelines/{}", ctx.pipeline_id),
        ),
        ("CI_PIPELINE_SOURCE", ctx.source.as_str().to_string()),
        ("CI_NODE_TOTAL", "1".to_string()),
    ];
    if ctx.ref_is_tag {
        v.push(("CI_COMMIT_TAG", ctx.ref_name.clone()));
    } else {
        v.push(("CI_COMMIT_BRANCH", ctx.ref_name.clone()));
    }
    v
}

/// `CI_JOB_URL` of job `name` of `ctx`'s pipeline.
pub(crate) fn job_url(ctx: &Context, name: &str) -> String {
    let encoded: String = name
        .bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect();
    format!(
        "{}/ci/v1/pipelines/{}/jobs/{encoded}",
        ctx.server_url.trim_end_matches('/'),
        ctx.pipeline_id
    )
}

/// `CI_RUNNER_TAGS`: the job's tags (which its agent has) as GitLab
/// writes them, a JSON list.
pub(crate) fn runner_tags(tags: &[String]) -> String {
    serde_json::to_string(tags).unwrap_or_else(|_| "[]".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_slugs() {
        assert_eq!(environment_slug("production"), "production");
        let review = environment_slug("review/Feature_X");
        assert!(review.starts_with("review-feature-x-"), "{review}");
        assert_eq!(review.len(), "review-feature-x-".len() + 6);
        let digits = environment_slug("1st");
        assert!(digits.starts_with("env-1st-"), "{digits}");
        let long = environment_slug("a-very-long-environment-name-indeed");
        assert!(long.len() <= 24, "{long}");
        assert_ne!(long, environment_slug("a-very-long-environment-name-other"));
    }

    #[test]
    fn url_parts_default_ports() {
        assert_eq!(
            url_parts("http://10.0.0.1:8080"),
            ("http".into(), "10.0.0.1".into(), "8080".into())
        );
        assert_eq!(
            url_parts("https://ci.example.com/x"),
            ("https".into(), "ci.example.com".into(), "443".into())
        );
    }

    #[test]
    fn shown_and_relative_paths() {
        let ctx = Context {
            project_dir: "/mnt/berth/sandbox/app".into(),
            ..Context::default()
        };
        let v = format!("{PROJECT_DIR_PLACEHOLDER}/out:{BUILDS_DIR_PLACEHOLDER}");
        assert_eq!(
            shown(&ctx, &v),
            "/mnt/berth/sandbox/app/out:/mnt/berth/sandbox"
        );
        assert_eq!(
            relative_path(&ctx, "/mnt/berth/sandbox/app/out".into()),
            "out"
        );
        assert_eq!(relative_path(&ctx, "/mnt/berth/sandbox/app".into()), ".");
        assert_eq!(relative_path(&ctx, "/elsewhere/x".into()), "/elsewhere/x");
        assert_eq!(relative_path(&ctx, "dist/".into()), "dist/");
    }
}
