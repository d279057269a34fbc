//! [`AppId`]: Marathon's path ids (`/shop/web`).
//!
//! An id is a `/`-separated path of segments; each segment is one or more
//! labels joined by `.`, a label being lowercase letters, digits and `-`,
//! neither starting nor ending with `-` (Marathon's `PathId` rule). A
//! relative id is taken relative to the root group, and `.` and `..`
//! segments are resolved, so `web`, `./web` and `/shop/../web` are all
//! `/web`. The root `/` itself is a group, not an app.

use std::fmt;

use berth_scheduler_core::error::quoted;

/// Longest accepted id, in bytes.
pub const MAX_ID_BYTES: usize = 512;

/// An absolute, normalized app id.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct AppId(Vec<String>);

impl AppId {
    /// Parses an id, relative ones against the root group. The error says
    /// what is wrong, quoting the input.
    pub fn parse(s: &str) -> Result<AppId, String> {
        Self::parse_in(s, &[])
    }

    /// Parses an id; a relative one is taken relative to the group
    /// `base` (its segments). Marathon resolves an app's `dependencies`
    /// against the app's own group.
    pub fn parse_in(s: &str, base: &[String]) -> Result<AppId, String> {
        if s.is_empty() {
            return Err("must not be empty".into());
        }
        if s.len() > MAX_ID_BYTES {
            return Err(format!("{} is longer than {MAX_ID_BYTES} bytes", quoted(s)));
        }
        let mut segs: Vec<String> = if s.starts_with('/') {
            Vec::new()
        } else {
            base.to_vec()
        };
        for seg in s.split('/') {
            match seg {
                "" | "." => {}
                ".." => {
                    if segs.pop().is_none() {
                        return Err(format!("{} goes above the root group", quoted(s)));
                    }
                }
                _ => {
                    if !valid_segment(seg) {
                        return Err(format!(
                            "{} is not a valid path: segment {} must be lowercase letters, digits, \
                             '-' and '.', each dot-separated part starting and ending with a letter or digit",
                            quoted(s),
                            quoted(seg)
                        ));
                    }
                    segs.push(seg.to_string());
                }
            }
        }
        if segs.is_empty() {
            return Err(format!("{} is the root group, not an app", quoted(s)));
        }
        Ok(AppId(segs))
    }

    /// `/invalid`: stands in for an id that did not parse while the rest
    /// of a definition is checked (the definition is refused then).
    pub(crate) fn placeholder() -> AppId {
        AppId(vec!["invalid".to_string()])
    }

    /// The segments, e.g. `["shop", "web"]`.
    pub fn segments(&self) -> &[String] {
        &self.0
    }

    /// The enclosing group's segments.
    pub fn group_segments(&self) -> &[String] {
        &self.0[..self.0.len().saturating_sub(1)]
    }

    /// The enclosing group's path, e.g. `/shop` for `/shop/web`, `/` for `/web`.
    pub fn group(&self) -> String {
        let n = self.0.len().saturating_sub(1);
        format!("/{}", self.0[..n].join("/"))
    }
}

fn valid_segment(seg: &str) -> bool {
    seg.split('.').all(|label| {
        let b = label.as_bytes();
        let ok = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
        match (b.first(), b.last()) {
            (Some(f), Some(l)) => ok(f) && ok(l) && b.iter().all(|c| ok(c) || *c == b'-'),
            _ => false,
        }
    })
}

impl fmt::Display for AppId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for s in &self.0 {
            write!(f, "/{s}")?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalizes_relative_and_dotted_ids() {
        for (input, want) in [
            ("web", "/web"),
            ("/shop/web", "/shop/web"),
            ("./web", "/web"),
            ("/shop/../web/", "/web"),
            ("shop//web", "/shop/web"),
            ("a.b-c/x1", "/a.b-c/x1"),
        ] {
            assert_eq!(AppId::parse(input).unwrap().to_string(), want, "{input}");
        }
        assert_eq!(AppId::parse("/shop/web").unwrap().group(), "/shop");
        assert_eq!(AppId::parse("/web").unwrap().group(), "/");
        let web = AppId::parse("/shop/web").unwrap();
        let dep = |s| AppId::parse_in(s, web.group_segments()).map(|i| i.to_string());
        assert_eq!(dep("cache").unwrap(), "/shop/cache");
        assert_eq!(dep("../db").unwrap(), "/db");
        assert_eq!(dep("/x/y").unwrap(), "/x/y");
        assert!(dep("../../db").is_err());
    }

    #[test]
    fn refuses_bad_ids() {
        for bad in [
            "", "/", "..", "/Web", "/-web", "/web-", "/a..b", "/a_b", "/a b", "/é",
        ] {
            assert!(AppId::parse(bad).is_err(), "{bad:?} accepted");
        }
        let long = "a".repeat(600);
        let err = AppId::parse(&long).unwrap_err();
        assert!(err.len() < 200, "{err}");
    }
}
