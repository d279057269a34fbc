//! Errors of the job framework's pure core.
//!
//! A job definition is checked whole: [`Invalid`] carries every problem
//! found, each as a [`FieldError`] with the field's JSON path in
//! Metronome's style (`/run/cpus`, `/schedules/0/cron`; `/` is the
//! definition itself). It renders to Metronome's answer shape with
//! [`Invalid::to_json`]: `{"message": "Object is not valid", "details":
//! [{"path": …, "errors": […]}]}`.
//!
//! OWNED BY THE DEFINITIONS HELPER (may be extended).

use std::fmt;

/// One problem with one field of a job definition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FieldError {
    /// The field's JSON path; `/` is the whole definition.
    pub path: String,
    /// What is wrong, readable as is; quotes of input are capped by
    /// `berth_scheduler_core::error::quoted`.
    pub message: String,
}

impl fmt::Display for FieldError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.path, self.message)
    }
}

/// A definition that is not valid: every problem found.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub struct Invalid {
    /// The problems, at least one.
    pub errors: Vec<FieldError>,
}

impl fmt::Display for Invalid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for e in &self.errors {
            if !first {
                f.write_str("; ")?;
            }
            first = false;
            write!(f, "{e}")?;
        }
        Ok(())
    }
}

impl Invalid {
    /// Metronome's answer for an invalid object: `{"message": "Object is
    /// not valid", "details": [{"path": …, "errors": […]}]}`, one detail per
    /// path in the order the paths were first met.
    #[must_use]
    pub fn to_json(&self) -> serde_json::Value {
        let mut details: Vec<(&str, Vec<&str>)> = Vec::new();
        for e in &self.errors {
            match details.iter_mut().find(|(p, _)| *p == e.path) {
                Some((_, messages)) => messages.push(&e.message),
                None => details.push((&e.path, vec![&e.message])),
            }
        }
        let details: Vec<serde_json::Value> = details
            .into_iter()
            .map(|(path, errors)| serde_json::json!({ "path": path, "errors": errors }))
            .collect();
        serde_json::json!({ "message": "Object is not valid", "details": details })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn renders_metronome_details_grouped_by_path_in_first_seen_order() {
        let e = |path: &str, message: &str| FieldError {
            path: path.into(),
            message: message.into(),
        };
        let invalid = Invalid {
            errors: vec![e("/run/cpus", "a"), e("/id", "b"), e("/run/cpus", "c")],
        };
        assert_eq!(
            invalid.to_json(),
            json!({
                "message": "Object is not valid",
                "details": [
                    {"path": "/run/cpus", "errors": ["a", "c"]},
                    {"path": "/id", "errors": ["b"]},
                ],
            })
        );
    }
}
