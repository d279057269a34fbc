//! Errors of the service framework's pure core.
//!
//! An app definition is checked whole: [`Invalid`] carries every problem
//! found, each as a [`FieldError`] with the field's JSON path in
//! Marathon's style (`/upgradeStrategy/minimumHealthCapacity`,
//! `/healthChecks/0/protocol`; `/` is the definition itself). It renders to
//! Marathon's answer shape with [`Invalid::to_marathon_json`]:
//! `{"message": "Object is not valid", "details": [{"path": …, "errors": […]}]}`.

use std::fmt;

use serde_json::{Value, json};

/// One problem with one field of an app definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's JSON path, e.g. `/container/docker/image`; `/` is the
    /// whole definition.
    pub path: String,
    /// What is wrong, readable as is. Quotes of input are capped by
    /// `berth_scheduler_core::error::quoted`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// An app definition that is not valid: every problem found, in the order
/// the fields were read.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    /// The problems, at least one.
    pub errors: Vec<FieldError>,
}

impl Invalid {
    /// Whether some error is reported at exactly `path`.
    pub fn has_path(&self, path: &str) -> bool {
        self.errors.iter().any(|e| e.path == path)
    }

    /// Marathon's answer to an invalid definition (HTTP 422):
    /// `{"message": "Object is not valid", "details": [{"path": "/x",
    /// "errors": ["…"]}]}`, one detail per path, in first-seen order.
    pub fn to_marathon_json(&self) -> Value {
        let mut details: Vec<(String, Vec<String>)> = Vec::new();
        for e in &self.errors {
            match details.iter_mut().find(|(p, _)| *p == e.path) {
                Some((_, msgs)) => msgs.push(e.message.clone()),
                None => details.push((e.path.clone(), vec![e.message.clone()])),
            }
        }
        let details: Vec<Value> = details
            .into_iter()
            .map(|(path, errors)| json!({ "path": path, "errors": errors }))
            .collect();
        json!({ "message": "Object is not valid", "details": details })
    }
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid app definition")?;
        for (i, e) in self.errors.iter().enumerate() {
            let sep = if i == 0 { ": " } else { "; " };
            write!(f, "{sep}{e}")?;
        }
        Ok(())
    }
}

/// Why a text could not be turned into an app definition.
#[derive(Debug, thiserror::Error)]
pub enum ParseError {
    /// The text is not JSON.
    #[error("not valid JSON: {0}")]
    Json(#[from] serde_json::Error),
    /// The text is not YAML (or not YAML that maps to JSON: e.g. non-string
    /// keys).
    #[error("not valid YAML: {0}")]
    Yaml(#[from] yaml_serde::Error),
    /// The text is well-formed but the definition is not valid.
    #[error(transparent)]
    Invalid(#[from] Invalid),
}

impl ParseError {
    /// Marathon's error body for this error: the field errors for an
    /// invalid definition, `{"message": "Invalid JSON", "details": [...]}`
    /// for a syntax error.
    pub fn to_marathon_json(&self) -> Value {
        match self {
            ParseError::Invalid(inv) => inv.to_marathon_json(),
            other => json!({
                "message": "Invalid JSON",
                "details": [{ "path": "/", "errors": [other.to_string()] }],
            }),
        }
    }
}
