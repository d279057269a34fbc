//! What both APIs do with a definition's text before the definition's own
//! check: JSON or YAML text to JSON values, an `id` in the body checked
//! against the one the request names, and the operations of a job's and
//! a schedule's replacement.

use berth_scheduler_core::error::quoted;
use serde_json::{Map, Value};

use crate::error::{FieldError, Invalid};
use crate::job::{JobDef, JobId, ParseError, ScheduleDef};
use crate::state::Op;

/// Parses a definition's text, JSON or YAML (`yaml`), into JSON values:
/// [`ParseError::Syntax`] with the line and column when it does not
/// parse, [`ParseError::Invalid`] for YAML that has no JSON equivalent.
///
/// # Errors
/// As above.
pub(super) fn parse(text: &str, yaml: bool) -> Result<Value, ParseError> {
    if !yaml {
        return serde_json::from_str(text).map_err(|e| {
            let m = e.to_string();
            ParseError::Syntax {
                format: "JSON",
                line: e.line(),
                column: e.column(),
                message: without_location(&m).to_owned(),
            }
        });
    }
    let y: yaml_serde::Value = yaml_serde::from_str(text).map_err(|e| {
        let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
        let m = e.to_string();
        ParseError::Syntax {
            format: "YAML",
            line,
            column,
            message: without_location(&m).to_owned(),
        }
    })?;
    let mut errors = Vec::new();
    let v = yaml_to_json(&y, "", &mut errors);
    if errors.is_empty() {
        Ok(v)
    } else {
        Err(Invalid { errors }.into())
    }
}

/// A parser's message without the location it appends (the error says
/// it once).
fn without_location(m: &str) -> &str {
    m.split(" at line ").next().unwrap_or(m)
}

/// A YAML value as JSON; what JSON cannot hold (NaN, tags, keys that are
/// not scalars) is an error at its path.
fn yaml_to_json(y: &yaml_serde::Value, path: &str, errors: &mut Vec<FieldError>) -> Value {
    use yaml_serde::Value as Y;
    let err = |errors: &mut Vec<FieldError>, m: String| {
        errors.push(FieldError {
            path: if path.is_empty() {
                "/".into()
            } else {
                path.into()
            },
            message: m,
        });
    };
    match y {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else if let Some(f) = n.as_f64().and_then(serde_json::Number::from_f64) {
                Value::Number(f)
            } else {
                err(errors, format!("{n} is not a finite number"));
                Value::Null
            }
        }
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, it)| yaml_to_json(it, &format!("{path}/{i}"), errors))
                .collect(),
        ),
        Y::Mapping(m) => {
            let mut out = Map::new();
            for (k, v) in m {
                let key = match k {
                    Y::String(s) => s.clone(),
                    Y::Number(n) => n.to_string(),
                    Y::Bool(b) => b.to_string(),
                    _ => {
                        err(
                            errors,
                            "a mapping key must be a string, number or boolean".into(),
                        );
                        continue;
                    }
                };
                let child = format!("{path}/{}", key.replace('~', "~0").replace('/', "~1"));
                let v = yaml_to_json(v, &child, errors);
                out.insert(key, v);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            err(
                errors,
                format!(
                    "YAML tags are not supported ({})",
                    quoted(&t.tag.to_string())
                ),
            );
            Value::Null
        }
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
