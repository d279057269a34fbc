//! Validated identifier newtypes: [`AgentId`], [`FrameworkId`], [`TaskId`],
//! [`OfferId`] and [`Role`].
//!
//! Ids end up in file paths (sandboxes), URLs and logs, so they are checked
//! once at the edge: non-empty, at most 255 bytes, no `/` or `\`, not `.` and
//! no `..`, no control characters, no whitespace. Deserializing validates too.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

pub use crate::error::IdError;

/// Longest allowed id, in bytes.
pub const MAX_ID_LEN: usize = 255;

/// Checks the rules shared by every id kind.
fn validate(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s.is_empty() {
        return Err(IdError::Empty { kind });
    }
    let value = || s.to_owned();
    if s.len() > MAX_ID_LEN {
        return Err(IdError::TooLong {
            kind,
            value: value(),
            len: s.len(),
        });
    }
    if let Some(ch) = s.chars().find(|c| *c == '/' || *c == '\\') {
        return Err(IdError::ForbiddenChar {
            kind,
            value: value(),
            ch,
        });
    }
    if s == "." || s.contains("..") {
        return Err(IdError::DotPath {
            kind,
            value: value(),
        });
    }
    if s.chars().any(char::is_control) {
        return Err(IdError::ControlChar {
            kind,
            value: value(),
        });
    }
    if s.chars().any(char::is_whitespace) {
        return Err(IdError::Whitespace {
            kind,
            value: value(),
        });
    }
    Ok(())
}

macro_rules! id_type {
    ($(#[$meta:meta])* $name:ident, $kind:literal, $check:path) => {
        $(#[$meta])*
        #[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(try_from = "String", into = "String")]
        pub struct $name(String);

        impl $name {
            /// Validates `s` and wraps it.
            pub fn new(s: impl Into<String>) -> Result<Self, IdError> {
                let s = s.into();
                $check($kind, &s)?;
                Ok(Self(s))
            }

            /// The id as a string slice.
            pub fn as_str(&self) -> &str {
                &self.0
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(&self.0)
            }
        }

        impl FromStr for $name {
            type Err = IdError;
            fn from_str(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<String> for $name {
            type Error = IdError;
            fn try_from(s: String) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl TryFrom<&str> for $name {
            type Error = IdError;
            fn try_from(s: &str) -> Result<Self, IdError> {
                Self::new(s)
            }
        }

        impl From<$name> for String {
            fn from(id: $name) -> String {
                id.0
            }
        }

        impl AsRef<str> for $name {
            fn as_ref(&self) -> &str {
                &self.0
            }
        }

        impl PartialEq<str> for $name {
            fn eq(&self, other: &str) -> bool {
                self.0 == other
            }
        }

        impl PartialEq<&str> for $name {
            fn eq(&self, other: &&str) -> bool {
                self.0 == *other
            }
        }

        impl PartialEq<String> for $name {
            fn eq(&self, other: &String) -> bool {
                self.0 == *other
            }
        }
    };
}

id_type!(
    /// Identifies an agent (a machine offering resources).
    AgentId,
    "agent id",
    validate
);
id_type!(
    /// Identifies a framework (a scheduler that receives offers).
    FrameworkId,
    "framework id",
    validate
);
id_type!(
    /// Identifies a task of a framework.
    TaskId,
    "task id",
    validate
);
id_type!(
    /// Identifies an offer made to a framework.
    OfferId,
    "offer id",
    validate
);
id_type!(
    /// A role: the unit of fair sharing, weights, quotas and reservations.
    /// `"*"` is the default role; other names must not start with `-`.
    Role,
    "role",
    validate_role
);

/// Role rules: the common ones, except that `"*"` is the default role, and
/// names must not start with `-`.
fn validate_role(kind: &'static str, s: &str) -> Result<(), IdError> {
    if s == Role::DEFAULT {
        return Ok(());
    }
    validate(kind, s)?;
    if s.starts_with('-') {
        return Err(IdError::LeadingDash {
            kind,
            value: s.to_owned(),
        });
    }
    Ok(())
}

impl Role {
    /// Name of the default role, `"*"`.
    pub const DEFAULT: &'static str = "*";

    /// The default role `"*"`.
    pub fn default_role() -> Role {
        Role(Self::DEFAULT.to_owned())
    }

    /// Whether this is the default role `"*"`.
    pub fn is_default(&self) -> bool {
        self.0 == Self::DEFAULT
    }
}

impl Default for Role {
    fn default() -> Self {
        Role::default_role()
    }
}

impl OfferId {
    /// Wraps text built by this crate from an already sanitized prefix.
    pub(crate) fn from_trusted(s: String) -> OfferId {
        debug_assert!(validate("offer id", &s).is_ok(), "{s:?}");
        OfferId(s)
    }
}

/// Makes `s` usable as the start of an id: replaces every character an id
/// may not hold (and the second dot of `..`) by `_`, truncates to `max`
/// bytes, and substitutes `"offer"` for an empty result.
pub(crate) fn sanitize_prefix(s: &str, max: usize) -> String {
    let mut out = String::with_capacity(s.len().min(max));
    for c in s.chars() {
        if out.len() + c.len_utf8() > max {
            break;
        }
        let bad = c == '/' || c == '\\' || c.is_control() || c.is_whitespace();
        let dotdot = c == '.' && out.ends_with('.');
        out.push(if bad || dotdot { '_' } else { c });
    }
    if out.is_empty() {
        out.push_str("offer");
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn valid_ids() {
        for s in ["a", "task-1", "web.v2", "f_1:2", "é", "x*y"] {
            assert_eq!(TaskId::new(s).unwrap().as_str(), s);
            assert_eq!(AgentId::new(s).unwrap().to_string(), s);
        }
        assert_eq!(TaskId::new("a".repeat(255)).unwrap().as_str().len(), 255);
    }

    #[test]
    fn empty() {
        let e = TaskId::new("").unwrap_err();
        assert_eq!(e, IdError::Empty { kind: "task id" });
        assert_eq!(e.to_string(), "invalid task id: must not be empty");
    }

    #[test]
    fn too_long() {
        let e = AgentId::new("a".repeat(256)).unwrap_err();
        assert!(matches!(e, IdError::TooLong { len: 256, .. }), "{e:?}");
        assert!(e.to_string().contains("at most 255 bytes (got 256)"));
    }

    #[test]
    fn slash_and_backslash() {
        let e = TaskId::new("a/b").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid task id "a/b": must not contain '/'"#
        );
        let e = FrameworkId::new(r"a\b").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid framework id "a\\b": must not contain '\\'"#
        );
    }

    #[test]
    fn dots() {
        for s in [".", "..", "a..b", "..x"] {
            let e = OfferId::new(s).unwrap_err();
            assert!(matches!(e, IdError::DotPath { .. }), "{s}: {e:?}");
        }
        assert!(OfferId::new(".a").is_ok());
        assert!(OfferId::new("a.b.c").is_ok());
    }

    #[test]
    fn control_characters() {
        for s in ["a\nb", "a\0b", "a\u{7f}", "\u{1b}[31m", "a\u{85}"] {
            let e = TaskId::new(s).unwrap_err();
            assert!(matches!(e, IdError::ControlChar { .. }), "{s:?}: {e:?}");
        }
        let e = TaskId::new("a\nb").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid task id "a\nb": must not contain control characters"#
        );
    }

    #[test]
    fn whitespace() {
        for s in ["a b", " a", "a\u{a0}b", "a\u{2003}"] {
            let e = TaskId::new(s).unwrap_err();
            assert!(matches!(e, IdError::Whitespace { .. }), "{s:?}: {e:?}");
        }
    }

    #[test]
    fn roles() {
        assert_eq!(Role::default_role().as_str(), "*");
        assert_eq!(Role::default(), Role::new("*").unwrap());
        assert!(Role::default().is_default());
        assert!(Role::new("web").is_ok());
        let e = Role::new("-web").unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"invalid role "-web": must not start with '-'"#
        );
        assert!(matches!(
            Role::new("a/b"),
            Err(IdError::ForbiddenChar { .. })
        ));
        assert!(matches!(
            Role::new(""),
            Err(IdError::Empty { kind: "role" })
        ));
        // Other id kinds may start with '-'.
        assert!(TaskId::new("-x").is_ok());
    }

    #[test]
    fn conversions() {
        let id: TaskId = "t1".parse().unwrap();
        let s: String = id.clone().into();
        assert_eq!(s, "t1");
        assert_eq!(TaskId::try_from("t1".to_owned()).unwrap(), id);
        assert_eq!(id.as_ref(), "t1");
        assert!("a b".parse::<TaskId>().is_err());
    }

    #[test]
    fn serde_validates() {
        let id = AgentId::new("a1").unwrap();
        let json = serde_json::to_string(&id).unwrap();
        assert_eq!(json, r#""a1""#);
        assert_eq!(serde_json::from_str::<AgentId>(&json).unwrap(), id);
        let err = serde_json::from_str::<AgentId>(r#""a/1""#).unwrap_err();
        assert!(err.to_string().contains("must not contain '/'"), "{err}");
        assert!(serde_json::from_str::<Role>(r#""-r""#).is_err());
        assert_eq!(
            serde_json::from_str::<Role>(r#""*""#).unwrap(),
            Role::default()
        );
    }

    #[test]
    fn sanitized_offer_ids_are_valid() {
        for p in ["m1", "", ".", "a/b c", "x..y", &"z".repeat(400)] {
            let prefix = sanitize_prefix(p, 200);
            let id = OfferId::from_trusted(format!("{prefix}-O18446744073709551615"));
            assert!(OfferId::new(id.as_str()).is_ok(), "{p:?} -> {id:?}");
        }
    }
}
