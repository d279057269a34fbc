//! Text to JSON values, strictly: a duplicate key in JSON is an error (not
//! "the last one wins"), and YAML's NaN, infinities and tags are refused
//! with their path instead of turning into `null`.

use berth_scheduler_core::error::quoted;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::read::{Ctx, child, item};
use crate::error::{Invalid, ParseError};

/// Parses JSON text, refusing duplicate keys.
pub(crate) fn json(text: &str) -> Result<Value, ParseError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let v = Strict.deserialize(&mut de)?;
    de.end()?;
    Ok(v)
}

/// Parses YAML text into JSON values.
pub(crate) fn yaml(text: &str) -> Result<Value, ParseError> {
    let mut y: yaml_serde::Value = yaml_serde::from_str(text)?;
    y.apply_merge()?;
    let mut ctx = Ctx::default();
    let v = convert(&mut ctx, &y, "");
    if ctx.errors.is_empty() {
        Ok(v)
    } else {
        Err(Invalid { errors: ctx.errors }.into())
    }
}

fn convert(ctx: &mut Ctx, y: &yaml_serde::Value, path: &str) -> Value {
    use yaml_serde::Value as Y;
    match y {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(*b),
        Y::Number(n) => {
            if let Some(u) = n.as_u64() {
                Value::from(u)
            } else if let Some(i) = n.as_i64() {
                Value::from(i)
            } else {
                match n.as_f64().and_then(Number::from_f64) {
                    Some(f) => Value::Number(f),
                    None => {
                        ctx.err(path, format!("{n} is not a finite number"));
                        Value::Null
                    }
                }
            }
        }
        Y::String(s) => Value::String(s.clone()),
        Y::Sequence(items) => Value::Array(
            items
                .iter()
                .enumerate()
                .map(|(i, it)| convert(ctx, it, &item(path, i)))
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
                        ctx.err(path, "a mapping key must be a string, number or boolean");
                        continue;
                    }
                };
                let v = convert(ctx, v, &child(path, &key));
                out.insert(key, v);
            }
            Value::Object(out)
        }
        Y::Tagged(t) => {
            ctx.err(
                path,
                format!(
                    "YAML tags are not supported ({})",
                    quoted(&t.tag.to_string())
                ),
            );
            Value::Null
        }
    }
}

/// A `serde_json::Value` seed that refuses duplicate object keys.
struct Strict;

impl<'de> DeserializeSeed<'de> for Strict {
    type Value = Value;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<Value, E> {
        Ok(Value::Bool(v))
    }
    fn visit_i64<E>(self, v: i64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_u64<E>(self, v: u64) -> Result<Value, E> {
        Ok(Value::from(v))
    }
    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        Number::from_f64(v)
            .map(Value::Number)
            .ok_or_else(|| E::custom("not a finite number"))
    }
    fn visit_str<E>(self, v: &str) -> Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }
    fn visit_string<E>(self, v: String) -> Result<Value, E> {
        Ok(Value::String(v))
    }
    fn visit_unit<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_none<E>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }
    fn visit_some<D: de::Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        Strict.deserialize(d)
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Strict)? {
            out.push(v);
        }
        Ok(Value::Array(out))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            if out.contains_key(&k) {
                return Err(de::Error::custom(format!("duplicate field {}", quoted(&k))));
            }
            let v = map.next_value_seed(Strict)?;
            out.insert(k, v);
        }
        Ok(Value::Object(out))
    }
}
