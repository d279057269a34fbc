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
