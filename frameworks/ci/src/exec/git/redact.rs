//! Credential redaction: a repository URL's password or token never
//! leaves it, not in the API, the logs, nor git's error messages (every
//! error of [`super::Git`] passes through here).

/// A repository URL cut around its userinfo: `before` + `userinfo` + `@`
/// + `after`.
struct Userinfo<'a> {
    before: &'a str,
    userinfo: &'a str,
    after: &'a str,
    /// An `http://` or `https://` URL: a user without a password there is
    /// a token.
    http: bool,
}

/// Finds the userinfo of a URL (`scheme://userinfo@host/...`) or of git's
/// scp form (`userinfo@host:path`); `None` for a local path or a URL
/// without one.
///
/// A `user:password` userinfo runs to the *last* `@`: a password may hold
/// a raw `/` or `@` (git and curl then disagree on where the host starts),
/// so this may take an `@` in the path for the end of the userinfo and
/// hide too much, never too little. A userinfo without `:` ends at the
/// first `@`; an `@` after a `/` (in the path) is no userinfo.
fn userinfo(url: &str) -> Option<Userinfo<'_>> {
    if url.starts_with('/') {
        return None;
    }
    let (start, http) = match url.find("://") {
        Some(i) => {
            let scheme = url[..i].to_ascii_lowercase();
            (i + 3, scheme == "http" || scheme == "https")
        }
        None => (0, false),
    };
    let body = &url[start..];
    let first_at = body.find('@')?;
    let head = &body[..first_at];
    let end = if head.contains(':') {
        body.rfind('@')?
    } else if head.contains('/') {
        return None;
    } else {
        first_at
    };
    Some(Userinfo {
        before: &url[..start],
        userinfo: &body[..end],
        after: &body[end + 1..],
        http,
    })
}

/// Whether a user name is really a token: 20 characters or more, or a
/// known token prefix (GitHub's `ghp_`…, GitLab's `glpat-`…).
fn looks_like_token(user: &str) -> bool {
    const PREFIXES: [&str; 10] = [
        "ghp_",
        "gho_",
        "ghu_",
        "ghs_",
        "ghr_",
        "github_pat_",
        "glpat-",
        "gldt-",
        "glrt-",
        "glcbt-",
    ];
    user.chars().count() >= 20 || PREFIXES.iter().any(|p| user.starts_with(p))
}

/// What of a userinfo is secret: the password, and the user when it is a
/// token (always for http(s) without a password).
fn secret_parts(info: &Userinfo<'_>) -> Vec<String> {
    let mut parts = Vec::new();
    match info.userinfo.split_once(':') {
        Some((user, password)) => {
            parts.push(password.to_string());
            if looks_like_token(user) {
                parts.push(user.to_string());
            }
        }
        None if info.http || looks_like_token(info.userinfo) => {
            parts.push(info.userinfo.to_string());
        }
        None => {}
    }
    parts.retain(|p| !p.is_empty());
    parts
}

/// `url` with the secrets of its userinfo hidden, for showing and logging:
/// `user:password@` becomes `user:***@`, a token (`https://TOKEN@host`,
/// any user name without a password in an http(s) URL, or one that
/// looks like a token) becomes `***@`. A plain user
/// name without a password (`git@host:path`, `ssh://git@host/path`) is
/// no secret and stays. Local paths are returned as they are.
pub fn redact(url: &str) -> String {
    let Some(info) = userinfo(url) else {
        return url.to_string();
    };
    if secret_parts(&info).is_empty() {
        return url.to_string();
    }
    let shown = match info.userinfo.split_once(':') {
        Some((user, _)) if !looks_like_token(user) => format!("{user}:***"),
        _ => "***".to_string(),
    };
    format!("{}{shown}@{}", info.before, info.after)
}

/// A message (git's error output, say) with every URL in it
/// [redacted](redact), and every secret of `url`'s userinfo (4 characters
/// or more; shorter ones would mangle the text) replaced by `***`, however
/// git quoted or reshaped the URL around it.
pub fn redact_message(text: &str, url: &str) -> String {
    let mut out = text.replace(url, &redact(url));
    if let Some(info) = userinfo(url) {
        for secret in secret_parts(&info) {
            if secret.chars().count() >= 4 {
                out = out.replace(&secret, "***");
            }
        }
    }
    redact_urls_in(&out)
}

/// `text` with each `scheme://…` in it (up to white space or a quote)
/// [redacted](redact).
pub fn redact_urls_in(text: &str) -> String {
    let scheme_char = |c: char| c.is_ascii_alphanumeric() || "+.-".contains(c);
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let start = rest[..i]
            .char_indices()
            .rev()
            .find(|(_, c)| !scheme_char(*c))
            .map_or(0, |(p, c)| p + c.len_utf8());
        let end = rest[i..]
            .find(|c: char| c.is_whitespace() || "'\"<>`".contains(c))
            .map_or(rest.len(), |p| i + p);
        out.push_str(&rest[..start]);
        out.push_str(&redact(&rest[start..end]));
        rest = &rest[end..];
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_and_tokens_in_urls_are_hidden() {
        let token = "ghp_0123456789abcdefghijklmnopqrstuvwxyz";
        let token_url = format!("https://{token}@github.com/o/r.git");
        let token_user = format!("https://{token}:x-oauth-basic@github.com/o/r");
        for (url, shown) in [
            (
                "https://bot:hunter2@example.com/g/p.git",
                "https://bot:***@example.com/g/p.git",
            ),
            // A user without a password in an http(s) URL is a token.
            ("https://TOKEN@example.com/p", "https://***@example.com/p"),
            ("HTTP://bot@example.com/p", "HTTP://***@example.com/p"),
            (token_url.as_str(), "https://***@github.com/o/r.git"),
            // A token as the user, with a dummy password.
            (token_user.as_str(), "https://***@github.com/o/r"),
            (
                "https://x-access-token:ghs_secret@github.com/o/r",
                "https://x-access-token:***@github.com/o/r",
            ),
            // Passwords with a raw `/` or `@`.
            (
                "https://bot:pa/ss@example.com/g/p",
                "https://bot:***@example.com/g/p",
            ),
            (
                "https://bot:p@ss/w@rd@example.com/p",
                "https://bot:***@example.com/p",
            ),
            (
                "ssh://git:secret@example.com/p.git",
                "ssh://git:***@example.com/p.git",
            ),
            ("git://u:pw@example.com/p", "git://u:***@example.com/p"),
            ("ssh://glpat-abc@example.com/p", "ssh://***@example.com/p"),
            // scp form.
            (
                "deploy:s3cret@example.com:group/p.git",
                "deploy:***@example.com:group/p.git",
            ),
            (
                "glpat-abcdefghijklmnop@example.com:p.git",
                "***@example.com:p.git",
            ),
        ] {
            assert_eq!(redact(url), shown, "{url}");
            assert_eq!(redact(shown), shown, "{shown} stays as it is");
        }
        // User names are no secret; paths and URLs without userinfo stay.
        for url in [
            "git@example.com:group/p.git",
            "ssh://git@example.com:2222/p.git",
            "/srv/p",
            "/srv/p@2",
            "file:///srv/git/p.git",
            "https://example.com/g/p@v2.git",
            "https://example.com/g/p.git",
        ] {
            assert_eq!(redact(url), url);
        }
    }

    #[test]
    fn gits_messages_lose_the_secrets_of_the_url() {
        let url = "https://bot:hunter2secret@example.com/g/p.git";
        let git = "fatal: unable to access 'https://bot:hunter2secret@example.com/g/p.git/': error 403\nremote: bad password hunter2secret\nsee https://other:pw1234@mirror.example.com/x";
        let shown = redact_message(git, url);
        assert!(!shown.contains("hunter2secret"), "{shown}");
        assert!(!shown.contains("pw1234"), "{shown}");
        assert!(
            shown.contains("'https://bot:***@example.com/g/p.git/'"),
            "{shown}"
        );
        assert!(shown.contains("https://other:***@mirror.example.com/x"));
        // Git may echo the URL without its userinfo, and the token alone.
        let token = "glpat-0123456789abcdefghij";
        let url = format!("https://{token}@gitlab.example.com/g/p.git");
        let git = format!(
            "remote: HTTP Basic: Access denied ({token})\nfatal: Authentication failed for 'https://gitlab.example.com/g/p.git/'"
        );
        let shown = redact_message(&git, &url);
        assert!(!shown.contains(token), "{shown}");
        assert!(shown.contains("Access denied (***)"), "{shown}");
        assert_eq!(redact_message("plain text", "/srv/p"), "plain text");
    }
}
