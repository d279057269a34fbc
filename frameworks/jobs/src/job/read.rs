//! Typed readers over a `serde_json::Value` that record every problem in a
//! [`Report`] (with the field's JSON path) instead of stopping at the first.
//!
//! [`Fields`] walks an object: [`Fields::take`] hands out one field as a
//! [`Field`] (its value and path; `null` counts as absent), and
//! [`Fields::close`] reports every key nobody took as an unknown field,
//! suggesting the known name it is closest to. A [`Field`] converts itself
//! (`text`, `uint`, `milli`, `items`…), returning `None` after recording
//! why not.

use std::collections::BTreeMap;
use std::fmt::Display;

use berth_scheduler_core::error::quoted;
use serde_json::{Map, Value};

use crate::error::{FieldError, Invalid};

/// Longest key or value of a string map (labels, env), in bytes.
pub(crate) const MAX_ENTRY_BYTES: usize = 64 * 1024;
/// Most keys of a string map.
pub(crate) const MAX_KEYS: usize = 1024;

/// The problems found so far.
#[derive(Debug, Default)]
pub(crate) struct Report {
    errors: Vec<FieldError>,
}

impl Report {
    /// Records `message` at `path` (`""` is the document itself, `/`).
    pub(crate) fn at(&mut self, path: &str, message: impl Into<String>) {
        self.errors.push(FieldError {
            path: if path.is_empty() { "/" } else { path }.to_owned(),
            message: message.into(),
        });
    }

    /// How many problems are recorded (to tell whether a part added any).
    pub(crate) fn count(&self) -> usize {
        self.errors.len()
    }

    /// `value` if it was read and nothing was recorded; else every problem.
    pub(crate) fn finish<T>(mut self, value: Option<T>) -> Result<T, Invalid> {
        match value {
            Some(v) if self.errors.is_empty() => Ok(v),
            _ => {
                if self.errors.is_empty() {
                    // A reader returned `None` without saying why (none
                    // does): still never an empty `Invalid`.
                    self.at("", "the definition could not be read");
                }
                Err(Invalid {
                    errors: self.errors,
                })
            }
        }
    }
}

/// The path of `key` (a name or an index) under `path`.
pub(crate) fn sub(path: &str, key: impl Display) -> String {
    format!("{path}/{key}")
}

/// How a JSON value's type is named in messages.
pub(crate) fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(n) if n.is_f64() => "a number with a fraction",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

/// An object being read key by key.
pub(crate) struct Fields<'v> {
    map: &'v Map<String, Value>,
    path: String,
    taken: Vec<&'static str>,
}

impl<'v> Fields<'v> {
    /// `v` as an object at `path`, or `None` after recording a type error.
    pub(crate) fn of(r: &mut Report, v: &'v Value, path: &str) -> Option<Fields<'v>> {
        let Value::Object(map) = v else {
            r.at(path, format!("expected an object, got {}", type_name(v)));
            return None;
        };
        Some(Fields {
            map,
            path: path.to_owned(),
            taken: Vec::new(),
        })
    }

    /// The object's path.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Whether the object has no keys.
    pub(crate) fn is_empty(&self) -> bool {
        self.map.is_empty()
    }

    /// The field `key`, `None` when absent or `null`.
    pub(crate) fn take(&mut self, key: &'static str) -> Option<Field<'v>> {
        self.taken.push(key);
        match self.map.get(key) {
            None | Some(Value::Null) => None,
            Some(value) => Some(Field {
                value,
                path: sub(&self.path, key),
            }),
        }
    }

    /// The field `key`, or an "is required" error at its path.
    pub(crate) fn require(&mut self, r: &mut Report, key: &'static str) -> Option<Field<'v>> {
        let f = self.take(key);
        if f.is_none() {
            r.at(&sub(&self.path, key), "is required");
        }
        f
    }

    /// Accepts `key` without reading it (read-only fields of Metronome's
    /// answers, which a client may send back).
    pub(crate) fn skip(&mut self, key: &'static str) {
        self.taken.push(key);
    }

    /// Reports every key not taken as an unknown field.
    pub(crate) fn close(self, r: &mut Report) {
        for key in self.map.keys() {
            if self.taken.contains(&key.as_str()) {
                continue;
            }
            let mut message = format!("unknown field {}", quoted(key));
            if let Some(known) = closest(key, &self.taken) {
                message.push_str(&format!(" (did you mean \"{known}\"?)"));
            }
            r.at(&sub(&self.path, key), message);
        }
    }
}

/// The known key that `key` most likely misspells: the same but for case,
/// `_` and `-`, at most two edits away (a quarter of its length for long
/// names), or the known key cut short or with a suffix (`forcePull`,
/// `maxLaunchDelaySeconds`).
fn closest(key: &str, known: &[&'static str]) -> Option<&'static str> {
    let squash = |s: &str| -> Vec<u8> {
        s.bytes()
            .filter(|b| *b != b'_' && *b != b'-')
            .map(|b| b.to_ascii_lowercase())
            .collect()
    };
    let key = squash(key);
    let mut best: Option<(usize, &'static str)> = None;
    for k in known {
        let known = squash(k);
        let (short, long) = if key.len() < known.len() {
            (&key, &known)
        } else {
            (&known, &key)
        };
        let d = if short.len() >= 4 && long.starts_with(short) {
            1
        } else {
            edits(&key, &known)
        };
        let limit = 2.max(k.len() / 4);
        if d <= limit && best.is_none_or(|(bd, _)| d < bd) {
            best = Some((d, k));
        }
    }
    best.map(|(_, k)| k)
}

/// Levenshtein distance between two byte strings (one row kept).
fn edits(a: &[u8], b: &[u8]) -> usize {
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, x) in a.iter().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, y) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (diagonal + usize::from(x != y))
                .min(above + 1)
                .min(row[j] + 1);
            diagonal = above;
        }
    }
    row[b.len()]
}

/// One field: its value and its path.
pub(crate) struct Field<'v> {
    pub(crate) value: &'v Value,
    pub(crate) path: String,
}

impl<'v> Field<'v> {
    /// Records `message` at this field.
    pub(crate) fn bad(&self, r: &mut Report, message: impl Into<String>) {
        r.at(&self.path, message);
    }

    fn wrong_type(&self, r: &mut Report, wanted: &str) {
        self.bad(
            r,
            format!("expected {wanted}, got {}", type_name(self.value)),
        );
    }

    /// A string.
    pub(crate) fn string(&self, r: &mut Report) -> Option<&'v str> {
        if let Value::String(s) = self.value {
            Some(s)
        } else {
            self.wrong_type(r, "a string");
            None
        }
    }

    /// A string of at most `max` bytes, empty allowed.
    pub(crate) fn bounded(&self, r: &mut Report, max: usize) -> Option<String> {
        let s = self.string(r)?;
        if s.len() > max {
            self.bad(r, format!("{} is longer than {max} bytes", quoted(s)));
            return None;
        }
        Some(s.to_owned())
    }

    /// A non-empty string of at most `max` bytes.
    pub(crate) fn text(&self, r: &mut Report, max: usize) -> Option<String> {
        let s = self.bounded(r, max)?;
        if s.is_empty() {
            self.bad(r, "must not be empty");
            return None;
        }
        Some(s)
    }

    /// A boolean.
    pub(crate) fn boolean(&self, r: &mut Report) -> Option<bool> {
        if let Value::Bool(b) = self.value {
            Some(*b)
        } else {
            self.wrong_type(r, "a boolean");
            None
        }
    }

    /// A finite number.
    pub(crate) fn number(&self, r: &mut Report) -> Option<f64> {
        match self.value.as_f64() {
            Some(f) if f.is_finite() => Some(f),
            _ => {
                self.wrong_type(r, "a number");
                None
            }
        }
    }

    /// A whole number in `min..=max` (`5.0` is accepted as 5).
    pub(crate) fn uint(&self, r: &mut Report, min: u64, max: u64) -> Option<u64> {
        let Value::Number(n) = self.value else {
            self.wrong_type(r, "a whole number");
            return None;
        };
        let whole = match (n.as_u64(), n.as_i64(), n.as_f64()) {
            (Some(u), _, _) => Some(u),
            (None, Some(_), _) => None,
            (None, None, Some(f)) if f >= 0.0 && f.fract() == 0.0 && f <= max as f64 => {
                Some(f as u64)
            }
            (None, None, Some(f)) if f >= 0.0 && f.fract() != 0.0 => {
                self.bad(r, format!("{n} is not a whole number"));
                return None;
            }
            _ => None,
        };
        match whole {
            Some(u) if (min..=max).contains(&u) => Some(u),
            Some(u) => {
                self.bad(r, format!("{u} is out of range: {}", span(min, max)));
                None
            }
            None if n.as_f64().is_some_and(|f| f < 0.0) => {
                self.bad(r, format!("{n} is negative: {}", span(min, max)));
                None
            }
            None => {
                self.bad(r, format!("{n} is out of range: {}", span(min, max)));
                None
            }
        }
    }

    /// A whole number in `min..=max` as a `u32` (`max` must fit).
    pub(crate) fn u32(&self, r: &mut Report, min: u32, max: u32) -> Option<u32> {
        self.uint(r, min.into(), max.into())
            .and_then(|u| u32::try_from(u).ok())
    }

    /// A number in thousandths (rounded), in `min..=max` thousandths.
    pub(crate) fn milli(&self, r: &mut Report, min: u64, max: u64) -> Option<u64> {
        let f = self.number(r)?;
        let limits = span_milli(min, max);
        if f < 0.0 {
            self.bad(r, format!("{f} is negative: {limits}"));
            return None;
        }
        let m = (f * 1000.0).round();
        if m < min as f64 || m > max as f64 {
            self.bad(r, format!("{f} is out of range: {limits}"));
            return None;
        }
        Some(m as u64)
    }

    /// `Some` if `count` is at most `max`; else records the problem.
    fn at_most(&self, r: &mut Report, count: usize, max: usize, what: &str) -> Option<()> {
        if count > max {
            self.bad(r, format!("has {count} {what}; at most {max} are accepted"));
            return None;
        }
        Some(())
    }

    /// An array of at most `max` items, each as a field of its own.
    pub(crate) fn items(&self, r: &mut Report, max: usize) -> Option<Vec<Field<'v>>> {
        let Value::Array(items) = self.value else {
            self.wrong_type(r, "an array");
            return None;
        };
        self.at_most(r, items.len(), max, "items")?;
        Some(
            items
                .iter()
                .enumerate()
                .map(|(i, value)| Field {
                    value,
                    path: sub(&self.path, i),
                })
                .collect(),
        )
    }

    /// An object's entries (at most [`MAX_KEYS`], keys 1 to
    /// [`MAX_ENTRY_BYTES`] bytes), each value as a field of its own.
    pub(crate) fn entries(&self, r: &mut Report) -> Option<Vec<(&'v str, Field<'v>)>> {
        let Value::Object(map) = self.value else {
            self.wrong_type(r, "an object");
            return None;
        };
        self.at_most(r, map.len(), MAX_KEYS, "keys")?;
        let mut out = Vec::with_capacity(map.len());
        for (k, value) in map {
            let field = Field {
                value,
                path: sub(&self.path, k),
            };
            if k.is_empty() || k.len() > MAX_ENTRY_BYTES {
                field.bad(r, format!("a key must be 1 to {MAX_ENTRY_BYTES} bytes"));
                continue;
            }
            out.push((k.as_str(), field));
        }
        Some(out)
    }

    /// An object of strings (`labels`).
    pub(crate) fn string_map(&self, r: &mut Report) -> Option<BTreeMap<String, String>> {
        let before = r.count();
        let mut out = BTreeMap::new();
        for (k, f) in self.entries(r)? {
            if let Some(v) = f.bounded(r, MAX_ENTRY_BYTES) {
                out.insert(k.to_owned(), v);
            }
        }
        (r.count() == before).then_some(out)
    }

    /// This field as an object to read key by key.
    pub(crate) fn fields(&self, r: &mut Report) -> Option<Fields<'v>> {
        Fields::of(r, self.value, &self.path)
    }
}

fn span(min: u64, max: u64) -> String {
    if max == u64::MAX {
        format!("must be at least {min}")
    } else {
        format!("must be between {min} and {max}")
    }
}

fn span_milli(min: u64, max: u64) -> String {
    let show = |m: u64| {
        if m.is_multiple_of(1000) {
            (m / 1000).to_string()
        } else {
            (m as f64 / 1000.0).to_string()
        }
    };
    format!("must be between {} and {}", show(min), show(max))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn read<T>(
        v: Value,
        f: impl FnOnce(&Field<'_>, &mut Report) -> Option<T>,
    ) -> (Option<T>, Vec<String>) {
        let mut r = Report::default();
        let field = Field {
            value: &v,
            path: "/x".into(),
        };
        let out = f(&field, &mut r);
        let errors = r.errors.iter().map(ToString::to_string).collect();
        (out, errors)
    }

    #[test]
    fn whole_numbers_take_integral_floats_and_name_the_problem_otherwise() {
        assert_eq!(read(json!(5), |f, r| f.uint(r, 1, 10)).0, Some(5));
        assert_eq!(read(json!(5.0), |f, r| f.uint(r, 1, 10)).0, Some(5));
        assert_eq!(
            read(json!(5.5), |f, r| f.uint(r, 1, 10)).1,
            ["/x: 5.5 is not a whole number"]
        );
        assert_eq!(
            read(json!(-3), |f, r| f.uint(r, 1, 10)).1,
            ["/x: -3 is negative: must be between 1 and 10"]
        );
        assert_eq!(read(json!(11), |f, r| f.uint(r, 1, u64::MAX)).0, Some(11));
        assert_eq!(
            read(json!(0), |f, r| f.uint(r, 1, u64::MAX)).1,
            ["/x: 0 is out of range: must be at least 1"]
        );
        assert_eq!(
            read(json!("5"), |f, r| f.uint(r, 1, 10)).1,
            ["/x: expected a whole number, got a string"]
        );
    }

    #[test]
    fn thousandths_round_and_keep_their_bounds() {
        assert_eq!(read(json!(0.5), |f, r| f.milli(r, 1, 5000)).0, Some(500));
        assert_eq!(
            read(json!(1.2345), |f, r| f.milli(r, 1, 5000)).0,
            Some(1235)
        );
        assert_eq!(
            read(json!(0.0001), |f, r| f.milli(r, 1, 5000)).1,
            ["/x: 0.0001 is out of range: must be between 0.001 and 5"]
        );
        assert_eq!(
            read(json!(-1), |f, r| f.milli(r, 0, 5000)).1,
            ["/x: -1 is negative: must be between 0 and 5"]
        );
    }

    #[test]
    fn unknown_keys_suggest_near_names_only() {
        assert_eq!(closest("timeZone", &["id", "timezone"]), Some("timezone"));
        assert_eq!(
            closest("max_launch_delay", &["maxLaunchDelay", "mem"]),
            Some("maxLaunchDelay")
        );
        assert_eq!(closest("comands", &["cmd", "args"]), None);
        assert_eq!(closest("cpu", &["cpus", "gpus"]), Some("cpus"));
    }

    #[test]
    fn string_maps_refuse_non_strings_with_their_path() {
        let (out, errors) = read(json!({"a": "1", "b": 2}), |f, r| f.string_map(r));
        assert_eq!(out, None);
        assert_eq!(errors, ["/x/b: expected a string, got a number"]);
    }
}
