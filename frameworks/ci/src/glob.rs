//! Path globs for `rules:changes`, `rules:exists` and `only:changes`, as
//! GitLab matches them: `*` and `?` stay within one path segment, `**/`
//! matches any number of directories, `{a,b}` is a choice.

/// Whether `path` (relative, `/`-separated) matches `pattern`.
pub fn glob_match(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim_start_matches("./");
    let path = path.trim_start_matches("./");
    expand_braces(pattern, 0)
        .iter()
        .any(|p| matches(p.as_bytes(), path.as_bytes()))
}

/// `a{b,c}d` → `abd`, `acd` (at most 64 alternatives, 4 levels).
fn expand_braces(pattern: &str, depth: usize) -> Vec<String> {
    let Some(open) = pattern.find('{') else {
        return vec![pattern.to_string()];
    };
    let Some(close_rel) = pattern[open..].find('}') else {
        return vec![pattern.to_string()];
    };
    if depth > 4 {
        return vec![pattern.to_string()];
    }
    let close = open + close_rel;
    let (head, body, tail) = (
        &pattern[..open],
        &pattern[open + 1..close],
        &pattern[close + 1..],
    );
    let mut out = Vec::new();
    for alt in body.split(',') {
        for rest in expand_braces(tail, depth + 1) {
            if out.len() < 64 {
                out.push(format!("{head}{alt}{rest}"));
            }
        }
    }
    out
}

fn matches(p: &[u8], s: &[u8]) -> bool {
    // memo[pi][si]: 0 unknown, 1 false, 2 true; bounds the work to |p|*|s|.
    let mut memo = vec![0u8; (p.len() + 1) * (s.len() + 1)];
    go(p, s, 0, 0, &mut memo)
}

fn go(p: &[u8], s: &[u8], pi: usize, si: usize, memo: &mut [u8]) -> bool {
    let idx = pi * (s.len() + 1) + si;
    if memo[idx] != 0 {
        return memo[idx] == 2;
    }
    let result = if pi == p.len() {
        si == s.len()
    } else if p[pi..].starts_with(b"**/") {
        // Zero or more whole directories.
        go(p, s, pi + 3, si, memo)
            || s[si..]
                .iter()
                .position(|&c| c == b'/')
                .is_some_and(|slash| go(p, s, pi, si + slash + 1, memo))
    } else if p[pi..].starts_with(b"**") {
        // Anything, across segments.
        (si..=s.len()).any(|k| go(p, s, pi + 2, k, memo))
    } else {
        match p[pi] {
            b'*' => {
                let seg_end = s[si..]
                    .iter()
                    .position(|&c| c == b'/')
                    .map_or(s.len(), |e| si + e);
                (si..=seg_end).any(|k| go(p, s, pi + 1, k, memo))
            }
            b'?' => si < s.len() && s[si] != b'/' && go(p, s, pi + 1, si + 1, memo),
            c => si < s.len() && s[si] == c && go(p, s, pi + 1, si + 1, memo),
        }
    };
    memo[idx] = if result { 2 } else { 1 };
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs() {
        assert!(glob_match("Dockerfile", "Dockerfile"));
        assert!(glob_match("*.md", "README.md"));
        assert!(!glob_match("*.md", "docs/a.md"));
        assert!(glob_match("docs/*", "docs/a.md"));
        assert!(glob_match("src/**/*.rs", "src/main.rs"));
        assert!(glob_match("src/**/*.rs", "src/a/b/c.rs"));
        assert!(!glob_match("src/**/*.rs", "srcx/a.rs"));
        assert!(glob_match("**/*.{rs,toml}", "x/Cargo.toml"));
        assert!(glob_match("docs/**", "docs/a/b"));
        assert!(glob_match("a?c", "abc"));
        assert!(!glob_match("a?c", "a/c"));
        assert!(glob_match("./Cargo.lock", "Cargo.lock"));
    }

    #[test]
    fn pathological_patterns_are_fast() {
        let p = "*a*a*a*a*a*a*a*a*a*a*a*a*b";
        let s = "a".repeat(200);
        assert!(!glob_match(p, &s));
    }
}
