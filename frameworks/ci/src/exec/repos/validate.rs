//! Validation of a repository to register ([`NewRepo`]), before anything
//! is read: its path or URL, branch names, poll interval and webhook
//! secret (of which only the SHA-256 is kept).

use std::time::Duration;

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{RepoError, redact};

/// The poll interval of a repository added without one.
pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(60);
/// The shortest poll interval.
pub const MIN_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// The longest poll interval.
pub const MAX_POLL_INTERVAL: Duration = Duration::from_secs(24 * 3600);
/// The shortest webhook secret.
pub const MIN_SECRET_LEN: usize = 16;
/// The longest webhook secret.
pub const MAX_SECRET_LEN: usize = 256;
/// The most branches one repository may watch.
pub const MAX_BRANCHES: usize = 100;
/// The longest repository URL or path.
pub const MAX_URL_LEN: usize = 4096;

/// The URL schemes a remote repository may have.
const SCHEMES: [&str; 5] = ["file", "http", "https", "ssh", "git"];

/// `POST /ci/v1/repos`: a repository to register.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewRepo {
    /// An absolute path on the framework's machine, or a URL `git` fetches.
    pub url: String,
    /// The branches to watch; the repository's default branch when empty.
    #[serde(default)]
    pub branches: Vec<String>,
    /// Seconds between polls (default 60, 1 to 86400).
    #[serde(default)]
    pub poll_interval_secs: Option<u64>,
    /// The webhook secret (16 to 256 printable ASCII characters); without
    /// one the repository takes no webhooks.
    #[serde(default)]
    pub webhook_secret: Option<String>,
}

/// A [`NewRepo`] checked without touching the repository.
#[derive(Debug, Clone)]
pub(super) struct Checked {
    pub(super) url: String,
    pub(super) remote: bool,
    pub(super) branches: Vec<String>,
    pub(super) poll_interval_secs: u64,
    pub(super) secret_sha256: Option<String>,
}

/// Checks what can be checked of a new repository without reading it.
pub(super) fn check_new(new: &NewRepo) -> Result<Checked, RepoError> {
    let bad = |m: String| Err(RepoError::Invalid(m));
    let url = new.url.trim();
    let remote = match classify(url) {
        Ok(remote) => remote,
        Err(m) => return bad(m),
    };
    if new.branches.len() > MAX_BRANCHES {
        return bad(format!(
            "at most {MAX_BRANCHES} branches, not {}",
            new.branches.len()
        ));
    }
    let mut branches: Vec<String> = Vec::new();
    for b in &new.branches {
        let b = b.strip_prefix("refs/heads/").unwrap_or(b);
        if let Err(m) = check_branch_name(b) {
            return bad(m);
        }
        if branches.iter().any(|x| x == b) {
            return bad(format!("branch {b:?} is given twice"));
        }
        branches.push(b.to_string());
    }
    let poll_interval_secs = new
        .poll_interval_secs
        .unwrap_or(DEFAULT_POLL_INTERVAL.as_secs());
    if !(MIN_POLL_INTERVAL.as_secs()..=MAX_POLL_INTERVAL.as_secs()).contains(&poll_interval_secs) {
        return bad(format!(
            "the poll interval must be from {} s to {} s, not {poll_interval_secs} s",
            MIN_POLL_INTERVAL.as_secs(),
            MAX_POLL_INTERVAL.as_secs()
        ));
    }
    let secret_sha256 = match &new.webhook_secret {
        None => None,
        Some(secret) => {
            if let Err(m) = check_secret(secret) {
                return bad(m);
            }
            Some(sha256_hex(secret.as_bytes()))
        }
    };
    Ok(Checked {
        url: url.to_string(),
        remote,
        branches,
        poll_interval_secs,
        secret_sha256,
    })
}

/// Whether `url` is a remote (`true`) or a local path (`false`), or why it
/// is neither.
fn classify(url: &str) -> Result<bool, String> {
    if url.is_empty() {
        return Err("the repository's path or URL is empty".into());
    }
    if url.len() > MAX_URL_LEN {
        return Err(format!(
            "the repository's path or URL is longer than {MAX_URL_LEN} bytes"
        ));
    }
    if url.chars().any(char::is_control) {
        return Err("the repository's path or URL contains control characters".into());
    }
    if url.starts_with('-') {
        return Err(format!("{:?} cannot start with '-'", redact(url)));
    }
    if url.starts_with('/') {
        return Ok(false);
    }
    if let Some((scheme, rest)) = url.split_once("://") {
        let scheme = scheme.to_ascii_lowercase();
        if !SCHEMES.contains(&scheme.as_str()) {
            return Err(format!(
                "{} has an unsupported scheme {scheme:?} (use {})",
                redact(url),
                SCHEMES.join(", ")
            ));
        }
        if rest.is_empty() || rest.chars().any(char::is_whitespace) {
            return Err(format!("{} is not a valid URL", redact(url)));
        }
        return Ok(true);
    }
    // scp-like `[user@]host:path`, as git reads it: a colon before any
    // slash.
    if let Some((host, path)) = url.split_once(':')
        && !host.is_empty()
        && !host.contains('/')
        && !path.is_empty()
        && !host.chars().any(char::is_whitespace)
        && !host.contains("::")
        && !path.starts_with(':')
    {
        return Ok(true);
    }
    Err(format!(
        "{:?} is neither an absolute path nor a URL ({}://…, or user@host:path)",
        redact(url),
        SCHEMES.join("://…, ")
    ))
}

/// Checks a branch name as git does (`git check-ref-format --branch`).
pub fn check_branch_name(name: &str) -> Result<(), String> {
    let bad = |why: &str| Err(format!("{name:?} is not a valid branch name: {why}"));
    if name.is_empty() {
        return bad("it is empty");
    }
    if name.len() > 255 {
        return bad("it is longer than 255 bytes");
    }
    if name.starts_with('-') {
        return bad("it starts with '-'");
    }
    if name == "@" || name == "HEAD" {
        return bad("it is reserved");
    }
    if let Some(c) = name
        .chars()
        .find(|c| c.is_control() || " ~^:?*[\\".contains(*c))
    {
        return bad(&format!("it contains {c:?}"));
    }
    if name.contains("..") || name.contains("@{") || name.contains("//") {
        return bad("it contains '..', '@{' or '//'");
    }
    if name.starts_with('/') || name.ends_with('/') || name.ends_with('.') {
        return bad("it starts or ends with '/', or ends with '.'");
    }
    if name
        .split('/')
        .any(|c| c.starts_with('.') || c.ends_with(".lock"))
    {
        return bad("a part starts with '.' or ends with '.lock'");
    }
    Ok(())
}

fn check_secret(secret: &str) -> Result<(), String> {
    let len = secret.chars().count();
    if len < MIN_SECRET_LEN {
        return Err(format!(
            "the webhook secret must be at least {MIN_SECRET_LEN} characters, not {len}"
        ));
    }
    if len > MAX_SECRET_LEN {
        return Err(format!(
            "the webhook secret must be at most {MAX_SECRET_LEN} characters, not {len}"
        ));
    }
    if !secret.chars().all(|c| c.is_ascii_graphic()) {
        return Err(
            "the webhook secret must be printable ASCII without spaces (it is sent in an HTTP header)"
                .into(),
        );
    }
    Ok(())
}

pub(super) fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Compares a presented token with the stored SHA-256 in constant time
/// (the digests are compared, so not even the length leaks).
pub(super) fn secret_matches(token: &str, expected_sha256: &str) -> bool {
    let given = sha256_hex(token.as_bytes());
    if given.len() != expected_sha256.len() {
        return false;
    }
    given
        .bytes()
        .zip(expected_sha256.bytes())
        .fold(0u8, |acc, (a, b)| acc | (a ^ b))
        == 0
}

/// The project name of a URL: its last path segment without `.git`.
pub(super) fn project_of_url(url: &str) -> String {
    let path = match url.split_once("://") {
        Some((_, rest)) => rest.split_once('/').map_or("", |(_, p)| p),
        None => url.split_once(':').map_or(url, |(_, p)| p),
    };
    let last = path
        .trim_end_matches('/')
        .rsplit('/')
        .next()
        .unwrap_or_default();
    let name = last.strip_suffix(".git").unwrap_or(last);
    if name.is_empty() {
        "project".to_string()
    } else {
        name.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new(url: &str) -> NewRepo {
        NewRepo {
            url: url.into(),
            branches: vec![],
            poll_interval_secs: None,
            webhook_secret: None,
        }
    }

    fn invalid(new: &NewRepo) -> String {
        match check_new(new) {
            Err(RepoError::Invalid(m)) => m,
            other => panic!("expected an invalid input, got {other:?}"),
        }
    }

    #[test]
    fn paths_and_urls_are_told_apart_and_bad_ones_refused() {
        assert_eq!(classify("/srv/git/project"), Ok(false));
        for url in [
            "file:///srv/git/project.git",
            "https://example.com/group/project.git",
            "HTTP://example.com/p",
            "ssh://git@example.com:2222/p.git",
            "git://example.com/p",
            "git@example.com:group/project.git",
        ] {
            assert_eq!(classify(url), Ok(true), "{url}");
        }
        for (url, why) in [
            ("", "is empty"),
            ("relative/path", "neither an absolute path nor a URL"),
            ("ext::sh -c touch% /tmp/pwned", "neither an absolute path"),
            ("ftp://example.com/p", "unsupported scheme \"ftp\""),
            ("--upload-pack=evil", "cannot start with '-'"),
            ("/srv/a\nb", "control characters"),
            ("https://", "not a valid URL"),
        ] {
            let err = classify(url).unwrap_err();
            assert!(err.contains(why), "{url:?}: {err}");
        }
    }

    #[test]
    fn new_repositories_are_checked_before_anything_is_read() {
        let ok = check_new(&NewRepo {
            url: " /srv/p ".into(),
            branches: vec!["main".into(), "refs/heads/release/1.x".into()],
            poll_interval_secs: Some(30),
            webhook_secret: Some("0123456789abcdef".into()),
        })
        .unwrap();
        assert_eq!(ok.url, "/srv/p");
        assert_eq!(ok.branches, ["main", "release/1.x"]);
        assert_eq!(ok.poll_interval_secs, 30);
        assert_eq!(
            ok.secret_sha256.as_deref(),
            Some(sha256_hex(b"0123456789abcdef").as_str()),
            "only the digest is kept"
        );
        assert_eq!(check_new(&new("/srv/p")).unwrap().poll_interval_secs, 60);

        let mut n = new("/srv/p");
        n.poll_interval_secs = Some(0);
        assert!(invalid(&n).contains("from 1 s to 86400 s, not 0 s"));
        n.poll_interval_secs = Some(86_401);
        assert!(invalid(&n).contains("not 86401 s"));
        let mut n = new("/srv/p");
        n.webhook_secret = Some("short".into());
        assert!(invalid(&n).contains("at least 16 characters, not 5"));
        n.webhook_secret = Some("x".repeat(257));
        assert!(invalid(&n).contains("at most 256"));
        n.webhook_secret = Some("has spaces in it, sadly".into());
        assert!(invalid(&n).contains("printable ASCII"));
        let mut n = new("/srv/p");
        n.branches = vec!["main".into(), "main".into()];
        assert!(invalid(&n).contains("given twice"));
        n.branches = vec!["a..b".into()];
        assert!(invalid(&n).contains("not a valid branch name"));
        n.branches = vec!["x".into(); MAX_BRANCHES + 1];
        assert!(invalid(&n).contains("at most 100 branches"));
    }

    #[test]
    fn branch_names_follow_gits_rules() {
        for ok in ["main", "feature/x", "release-1.2", "a/b/c", "v1.0_rc"] {
            assert_eq!(check_branch_name(ok), Ok(()), "{ok}");
        }
        for bad in [
            "", "-x", "a b", "a..b", "a~1", "a^", "a:b", "a?", "a*", "a[", "a\\b", "/a", "a/",
            "a.", "a//b", ".hidden", "a/.b", "x.lock", "a@{1}", "@", "HEAD", "tab\t",
        ] {
            assert!(check_branch_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn secrets_compare_by_digest() {
        let stored = sha256_hex(b"correct horse battery staple");
        assert!(secret_matches("correct horse battery staple", &stored));
        assert!(!secret_matches("correct horse battery stapl", &stored));
        assert!(!secret_matches("", &stored));
        assert!(!secret_matches("correct horse battery staple", "abc"));
    }

    #[test]
    fn projects_are_named_after_the_urls_last_segment() {
        assert_eq!(
            project_of_url("https://example.com/g/project.git"),
            "project"
        );
        assert_eq!(project_of_url("file:///srv/git/web/"), "web");
        assert_eq!(project_of_url("git@example.com:group/api.git"), "api");
        assert_eq!(project_of_url("https://example.com"), "project");
    }
}
