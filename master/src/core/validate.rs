//! What the master checks of a task's own fields (`TaskInfo`) and of an
//! agent's attributes, before anything is proposed.

use berth_proto as pb;
use berth_scheduler_core::{TaskId, quoted};

use super::MAX_NAME;
use crate::error::CallError;

/// Validates a task's own fields (not its fit in the offers) by the rules
/// the agent applies too ([`berth_proto::task`]); the agent checks what
/// needs its host, such as host ports against the task's resources, and
/// fails the task with its reason.
pub(super) fn validate_task(info: &pb::TaskInfo) -> Result<TaskId, CallError> {
    berth_proto::task::validate_task(info).map_err(|e| CallError::invalid_argument(e.to_string()))
}

/// Most attributes an agent may report.
const MAX_ATTRIBUTES: usize = 128;

/// Checks an agent's attributes: they are stored in the registry and shown
/// to every framework, so they are bounded like names.
pub(super) fn check_attributes(attributes: &[pb::Attribute]) -> Result<(), String> {
    if attributes.len() > MAX_ATTRIBUTES {
        return Err(format!(
            "{} attributes; at most {MAX_ATTRIBUTES} are allowed",
            attributes.len()
        ));
    }
    for a in attributes {
        if a.name.is_empty() || a.name.len() > 255 || a.name.chars().any(char::is_control) {
            return Err(format!(
                "attribute name {} must be 1 to 255 bytes without control characters",
                quoted(&a.name)
            ));
        }
        if a.value.len() > MAX_NAME || a.value.chars().any(char::is_control) {
            return Err(format!(
                "attribute {} has a value over {MAX_NAME} bytes or with control characters",
                quoted(&a.name)
            ));
        }
    }
    Ok(())
}
