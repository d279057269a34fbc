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

use crate::app::AppId;
use crate::state::DeploymentId;

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

/// Why an operation on the services ([`crate::state::Services::apply`])
/// was refused. Nothing changed. [`OpError::status`] is Marathon's HTTP
/// status for it.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum OpError {
    /// The definition, or the operation's argument, is not valid (422).
    #[error(transparent)]
    Invalid(#[from] Invalid),
    /// No such app (404).
    #[error("App '{0}' does not exist")]
    UnknownApp(AppId),
    /// No such kept version (404).
    #[error("App '{app}' does not exist in version {version}")]
    UnknownVersion {
        /// The app.
        app: AppId,
        /// The version asked for.
        version: String,
    },
    /// Adding an app that exists (409).
    #[error("An app with id [{0}] already exists.")]
    Exists(AppId),
    /// The app has a running deployment and `force` was not given (409).
    #[error(
        "App is locked by one or more deployments. Override with the option '?force=true'. \
         View details at '/v2/deployments/{deployment}'."
    )]
    Locked {
        /// The app.
        app: AppId,
        /// The running deployment.
        deployment: DeploymentId,
    },
    /// No running deployment has this id (404); the id as quoted.
    #[error("DeploymentPlan {0} does not exist")]
    UnknownDeployment(String),
    /// Removing an app that another app depends on (409).
    #[error("App '{app}' is a dependency of '{by}'")]
    DependedOn {
        /// The app being removed.
        app: AppId,
        /// An app that depends on it.
        by: AppId,
    },
    /// `promote` with no paused deployment (409).
    #[error("App '{app}' has nothing to promote: {why}")]
    NotPaused {
        /// The app.
        app: AppId,
        /// Why.
        why: String,
    },
    /// The caller passed a deployment id already in use (500: the
    /// caller's bug).
    #[error("deployment id {0} is already in use")]
    DuplicateDeploymentId(DeploymentId),
}

impl OpError {
    /// Marathon's HTTP status for the error.
    pub fn status(&self) -> u16 {
        match self {
            OpError::Invalid(_) => 422,
            OpError::UnknownApp(_)
            | OpError::UnknownVersion { .. }
            | OpError::UnknownDeployment(_) => 404,
            OpError::Exists(_)
            | OpError::Locked { .. }
            | OpError::DependedOn { .. }
            | OpError::NotPaused { .. } => 409,
            OpError::DuplicateDeploymentId(_) => 500,
        }
    }

    /// Marathon's error body: `{"message": …}`, with `details` for 422 and
    /// for an unknown version (at `/version`, the field a rollback gives),
    /// and `deployments: [{"id": …}]` for a locked app.
    pub fn to_marathon_json(&self) -> Value {
        match self {
            OpError::Invalid(inv) => inv.to_marathon_json(),
            OpError::UnknownVersion { .. } => json!({
                "message": self.to_string(),
                "details": [{ "path": "/version", "errors": [self.to_string()] }],
            }),
            OpError::Locked { deployment, .. } => json!({
                "message": self.to_string(),
                "deployments": [{ "id": deployment.as_str() }],
            }),
            other => json!({ "message": other.to_string() }),
        }
    }
}

impl Invalid {
    /// One error at `path`.
    pub fn at(path: &str, message: impl Into<String>) -> Invalid {
        Invalid {
            errors: vec![FieldError {
                path: path.to_string(),
                message: message.into(),
            }],
        }
    }
}

/// Why stored entries could not be loaded
/// ([`crate::state::Services::load`]). Fail closed: nothing is loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// A key outside `apps/`, `versions/` and `deployments/`.
    #[error("key {0} is not one of the service framework's")]
    UnknownKey(String),
    /// A value that does not decode.
    #[error("{key}: {why}")]
    Corrupt {
        /// The key.
        key: String,
        /// What is wrong.
        why: String,
    },
    /// A value written by a newer format.
    #[error("{key}: format {format} is newer than this build reads (up to {supported})")]
    UnsupportedFormat {
        /// The key.
        key: String,
        /// The value's format.
        format: u64,
        /// The newest format read.
        supported: u64,
    },
    /// Entries that do not fit together (a version without its app, a
    /// deployment naming a missing version, …).
    #[error("inconsistent stored state: {0}")]
    Inconsistent(String),
}
