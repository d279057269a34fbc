//! Field readers over `serde_json::Value` that collect errors with their
//! JSON paths instead of stopping at the first one.
//!
//! Every reader takes the value and its path, and returns `None` after
//! recording an error in [`Ctx`]; a JSON `null` is the same as an absent
//! field. [`Obj`] reads an object's fields by name and, in
//! [`Obj::finish`], reports the fields nobody asked for as unknown (with a
//! "did you mean").

use std::collections::BTreeMap;
use std::time::Duration;

use berth_scheduler_core::error::quoted;
use berth_scheduler_core::resources::Scalar;
use serde_json::{Map, Value};

use super::Fraction;
use crate::error::FieldError;

/// The errors found so far.
#[derive(Debug, Default)]
pub(crate) struct Ctx {
    pub(crate) errors: Vec<FieldError>,
}

impl Ctx {
    /// Records `message` at `path`.
    pub(crate) fn err(&mut self, path: &str, message: impl Into<String>) {
        let path = if path.is_empty() { "/" } else { path };
        self.errors.push(FieldError {
            path: path.to_string(),
            message: message.into(),
        });
    }
}

/// The path of `key` under `path`.
pub(crate) fn child(path: &str, key: &str) -> String {
    format!("{path}/{key}")
}

/// The path of item `i` under `path`.
pub(crate) fn item(path: &str, i: usize) -> String {
    format!("{path}/{i}")
}

/// A JSON type's name for messages.
pub(crate) fn kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

fn expected(ctx: &mut Ctx, path: &str, what: &str, v: &Value) {
    ctx.err(path, format!("expected {what}, got {}", kind(v)));
}

/// An object being read field by field.
#[derive(Debug)]
pub(crate) struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: String,
    asked: Vec<&'static str>,
}

impl<'a> Obj<'a> {
    /// `v` as an object, or an error.
    pub(crate) fn new(ctx: &mut Ctx, v: &'a Value, path: &str) -> Option<Obj<'a>> {
        match v {
            Value::Object(map) => Some(Obj {
                map,
                path: path.to_string(),
                asked: Vec::new(),
            }),
            other => {
                expected(ctx, path, "an object", other);
                None
            }
        }
    }

    /// The path of this object.
    pub(crate) fn path(&self) -> &str {
        &self.path
    }

    /// Field `key` with its path, `None` when absent or `null`.
    pub(crate) fn get(&mut self, key: &'static str) -> Option<(&'a Value, String)> {
        match self.get_raw(key) {
            Some((Value::Null, _)) | None => None,
            some => some,
        }
    }

    /// Field `key` with its path, `null` included.
    pub(crate) fn get_raw(&mut self, key: &'static str) -> Option<(&'a Value, String)> {
        self.asked.push(key);
        self.map.get(key).map(|v| (v, child(&self.path, key)))
    }

    /// Reports every field not asked for as unknown.
    pub(crate) fn finish(self, ctx: &mut Ctx) {
        for key in self.map.keys() {
            if self.asked.iter().any(|a| a == key) {
                continue;
            }
            let mut msg = format!("unknown field {}", quoted(key));
            if let Some(near) = nearest(key, &self.asked) {
                msg.push_str(&format!("; did you mean {near:?}?"));
            }
            ctx.err(&child(&self.path, key), msg);
        }
    }
}

/// The known name closest to `key`, if close enough to be a typo.
fn nearest<'k>(key: &str, known: &[&'k str]) -> Option<&'k str> {
    let lower = key.to_ascii_lowercase();
    known
        .iter()
        .map(|k| (edit_distance(&lower, &k.to_ascii_lowercase()), *k))
        .filter(|(d, k)| *d <= 2.max(k.len() / 4))
        .min_by_key(|(d, _)| *d)
        .map(|(_, k)| k)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let sub = prev[j] + usize::from(ca != *cb);
            cur[j + 1] = sub.min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

/// A string.
pub(crate) fn string(ctx: &mut Ctx, v: &Value, path: &str) -> Option<String> {
    match v {
        Value::String(s) => Some(s.clone()),
        other => {
            expected(ctx, path, "a string", other);
            None
        }
    }
}

/// A non-empty string of at most `max` bytes.
pub(crate) fn text(ctx: &mut Ctx, v: &Value, path: &str, max: usize) -> Option<String> {
    let s = string(ctx, v, path)?;
    if s.is_empty() {
        ctx.err(path, "must not be empty");
        return None;
    }
    if s.len() > max {
        ctx.err(path, format!("{} is longer than {max} bytes", quoted(&s)));
        return None;
    }
    Some(s)
}

/// A boolean.
pub(crate) fn boolean(ctx: &mut Ctx, v: &Value, path: &str) -> Option<bool> {
    match v {
        Value::Bool(b) => Some(*b),
        other => {
            expected(ctx, path, "a boolean", other);
            None
        }
    }
}

/// An integer in `min..=max`.
pub(crate) fn int(ctx: &mut Ctx, v: &Value, path: &str, min: u64, max: u64) -> Option<u64> {
    let Value::Number(n) = v else {
        expected(ctx, path, "an integer", v);
        return None;
    };
    match n.as_u64() {
        Some(i) if (min..=max).contains(&i) => Some(i),
        Some(i) => {
            ctx.err(path, format!("{i} is not in [{min}, {max}]"));
            None
        }
        None if n.is_i64() => {
            ctx.err(path, format!("{n} is negative; must be in [{min}, {max}]"));
            None
        }
        None => {
            ctx.err(path, format!("{n} is not an integer"));
            None
        }
    }
}

/// Whole seconds in `0..=max` as a duration.
pub(crate) fn secs(ctx: &mut Ctx, v: &Value, path: &str, max: u64) -> Option<Duration> {
    int(ctx, v, path, 0, max).map(Duration::from_secs)
}

/// A finite number.
pub(crate) fn number(ctx: &mut Ctx, v: &Value, path: &str) -> Option<f64> {
    match v.as_f64() {
        Some(f) if f.is_finite() => Some(f),
        Some(f) => {
            ctx.err(path, format!("{f} is not a finite number"));
            None
        }
        None => {
            expected(ctx, path, "a number", v);
            None
        }
    }
}

/// A fraction in [0, 1], kept to six decimals.
pub(crate) fn fraction(ctx: &mut Ctx, v: &Value, path: &str) -> Option<Fraction> {
    let f = number(ctx, v, path)?;
    if !(0.0..=1.0).contains(&f) {
        ctx.err(path, format!("{f} is not in [0, 1]"));
        return None;
    }
    Some(Fraction::from_ppm((f * 1e6).round() as u32))
}

/// A fixed-point quantity in `[min, max]` (milli-unit precision).
pub(crate) fn scalar(ctx: &mut Ctx, v: &Value, path: &str, min: f64, max: f64) -> Option<Scalar> {
    let f = number(ctx, v, path)?;
    if f < min || f > max {
        ctx.err(path, format!("{f} is not in [{min}, {max}]"));
        return None;
    }
    match Scalar::from_f64("value", f) {
        Ok(s) => Some(s),
        Err(e) => {
            ctx.err(path, e.to_string());
            None
        }
    }
}

/// An array, to be read item by item.
pub(crate) fn array<'a>(
    ctx: &mut Ctx,
    v: &'a Value,
    path: &str,
    max_items: usize,
) -> Option<&'a [Value]> {
    match v {
        Value::Array(items) if items.len() <= max_items => Some(items),
        Value::Array(items) => {
            ctx.err(
                path,
                format!(
                    "has {} items; at most {max_items} are accepted",
                    items.len()
                ),
            );
            None
        }
        other => {
            expected(ctx, path, "an array", other);
            None
        }
    }
}

/// An array of objects, each read by `each` (which records its own
/// errors); unknown fields of each are reported after `each`.
pub(crate) fn objects<'a, T>(
    ctx: &mut Ctx,
    v: &'a Value,
    path: &str,
    max_items: usize,
    mut each: impl FnMut(&mut Ctx, &mut Obj<'a>) -> Option<T>,
) -> Option<Vec<T>> {
    let items = array(ctx, v, path, max_items)?;
    let before = ctx.errors.len();
    let mut out = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let Some(mut o) = Obj::new(ctx, it, &item(path, i)) else {
            continue;
        };
        let t = each(ctx, &mut o);
        o.finish(ctx);
        out.extend(t);
    }
    (ctx.errors.len() == before).then_some(out)
}

/// An array of strings, each checked by `each` (which records its own
/// errors and returns `None` for a bad item).
pub(crate) fn strings<T>(
    ctx: &mut Ctx,
    v: &Value,
    path: &str,
    max_items: usize,
    mut each: impl FnMut(&mut Ctx, String, &str) -> Option<T>,
) -> Option<Vec<T>> {
    let items = array(ctx, v, path, max_items)?;
    let before = ctx.errors.len();
    let mut out = Vec::with_capacity(items.len());
    for (i, it) in items.iter().enumerate() {
        let p = item(path, i);
        if let Some(s) = string(ctx, it, &p)
            && let Some(t) = each(ctx, s, &p)
        {
            out.push(t);
        }
    }
    (ctx.errors.len() == before).then_some(out)
}

/// Most keys in a string map (`env`, `labels`).
pub(crate) const MAX_MAP_KEYS: usize = 1024;
/// Longest key or value in a string map, in bytes.
pub(crate) const MAX_MAP_BYTES: usize = 64 * 1024;

/// An object of string values (`labels`). `what` names the map in
/// messages.
pub(crate) fn string_map(ctx: &mut Ctx, v: &Value, path: &str) -> Option<BTreeMap<String, String>> {
    let Value::Object(map) = v else {
        expected(ctx, path, "an object of strings", v);
        return None;
    };
    if map.len() > MAX_MAP_KEYS {
        ctx.err(
            path,
            format!(
                "has {} keys; at most {MAX_MAP_KEYS} are accepted",
                map.len()
            ),
        );
        return None;
    }
    let before = ctx.errors.len();
    let mut out = BTreeMap::new();
    for (k, val) in map {
        let p = child(path, k);
        if k.is_empty() || k.len() > MAX_MAP_BYTES {
            ctx.err(&p, format!("key must be 1 to {MAX_MAP_BYTES} bytes"));
            continue;
        }
        match val {
            Value::String(s) if s.len() <= MAX_MAP_BYTES => {
                out.insert(k.clone(), s.clone());
            }
            Value::String(_) => ctx.err(&p, format!("value is longer than {MAX_MAP_BYTES} bytes")),
            other => expected(ctx, &p, "a string", other),
        }
    }
    (ctx.errors.len() == before).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn suggests_near_names_only() {
        assert_eq!(nearest("instnces", &["instances", "id"]), Some("instances"));
        assert_eq!(nearest("CPUS", &["cpus", "mem"]), Some("cpus"));
        assert_eq!(nearest("wholly-different", &["cpus", "mem"]), None);
    }
}
