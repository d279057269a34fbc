//! What both APIs do with a definition's text before the definition's own
//! check: JSON or YAML text to JSON values (the definitions' strict
//! reading), an `id` in the body checked
//! against the one the request names, and the operations of a job's and
//! a schedule's replacement.

use berth_scheduler_core::error::quoted;
use serde_json::Value;

use crate::error::{FieldError, Invalid};
use crate::job::{JobDef, JobId, ParseError, ScheduleDef};
use crate::state::Op;

/// Parses a definition's text, JSON or YAML (`yaml`), into JSON values,
/// strictly ([`crate::job::text`]): [`ParseError::Syntax`] with the line
/// and column when it does not parse.
///
/// # Errors
/// As above.
pub(super) fn parse(text: &str, yaml: bool) -> Result<Value, ParseError> {
    if yaml {
        crate::job::text::yaml(text)
    } else {
        crate::job::text::json(text)
    }
}

/// Sets `v`'s `key` to `expected` when absent; a different value is
/// refused at `/key` (`what` names the object: `job`, `schedule`).
///
/// # Errors
/// [`Invalid`] at `/key`.
pub(super) fn same_id(v: &mut Value, key: &str, expected: &str, what: &str) -> Result<(), Invalid> {
    let Value::Object(m) = v else {
        return Ok(()); // not an object: the definition's own check says so
    };
    match m.get(key) {
        None | Some(Value::Null) => {
            m.insert(key.into(), Value::String(expected.into()));
            Ok(())
        }
        Some(Value::String(s)) if s == expected => Ok(()),
        Some(other) => {
            let given = match other {
                Value::String(s) => quoted(s).to_string(),
                _ => quoted(&other.to_string()).to_string(),
            };
            Err(Invalid {
                errors: vec![FieldError {
                    path: format!("/{key}"),
                    message: format!(
                        "is {given}, but the request names {what} {}: they must match, or leave it out",
                        quoted(expected)
                    ),
                }],
            })
        }
    }
}

/// The replacement of a job's definition by `v`: the job `id` names (the
/// path's; `None`: the body's own), its schedules kept when `v` has no
/// `schedules` (Metronome's PUT keeps them).
///
/// # Errors
/// [`Invalid`]: the definition's errors, or an `id` that is not `id`.
pub(super) fn update(id: Option<&JobId>, mut v: Value) -> Result<Op, Invalid> {
    let keep_schedules = matches!(&v, Value::Object(m) if !m.contains_key("schedules"));
    if let Some(id) = id {
        same_id(&mut v, "id", id.as_str(), "job")?;
    }
    let def = JobDef::from_value(&v)?;
    Ok(Op::Update {
        def,
        keep_schedules,
    })
}

/// A schedule read from `v`; with `id`, the one the request names
/// (`v`'s `id` must be it or absent).
///
/// # Errors
/// [`Invalid`]: the schedule's errors, or an `id` that is not `id`.
pub(super) fn schedule(id: Option<&str>, mut v: Value) -> Result<ScheduleDef, Invalid> {
    if let Some(id) = id {
        same_id(&mut v, "id", id, "schedule")?;
    }
    ScheduleDef::from_value(&v, "")
}
