//! Definition text (JSON or YAML) to a `serde_json::Value`, strictly: a key
//! given twice in one object is a syntax error at its line and column (not
//! "the last one wins"), and so are YAML's non-finite numbers (`.nan`,
//! `.inf`) and tags (`!tag`), which have no JSON value. YAML anchors and
//! aliases are resolved; a merge key (`<<`) is not applied, so it is
//! reported as an unknown field.

use std::fmt;

use berth_scheduler_core::error::quoted;
use serde::de::{self, DeserializeSeed, Deserializer, EnumAccess, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use super::ParseError;

/// The JSON text as a value.
pub(super) fn json(text: &str) -> Result<Value, ParseError> {
    let mut de = serde_json::Deserializer::from_str(text);
    let syntax = |e: serde_json::Error| syntax("JSON", e.line(), e.column(), &e.to_string());
    let value = Exact.deserialize(&mut de).map_err(syntax)?;
    de.end().map_err(syntax)?;
    Ok(value)
}

/// The YAML text (one document) as a value.
pub(super) fn yaml(text: &str) -> Result<Value, ParseError> {
    Exact
        .deserialize(yaml_serde::Deserializer::from_str(text))
        .map_err(|e| {
            let (line, column) = e.location().map_or((0, 0), |l| (l.line(), l.column()));
            syntax("YAML", line, column, &e.to_string())
        })
}

/// A syntax error; the parsers' own "at line L column C" suffix is dropped
/// since [`ParseError::Syntax`] shows the position itself.
fn syntax(format: &'static str, line: usize, column: usize, message: &str) -> ParseError {
    let message = message
        .strip_suffix(&format!(" at line {line} column {column}"))
        .unwrap_or(message)
        .to_owned();
    ParseError::Syntax {
        format,
        line,
        column,
        message,
    }
}

/// Deserializes any self-describing input to a JSON value, refusing what
/// JSON cannot say or says twice.
struct Exact;

impl<'de> DeserializeSeed<'de> for Exact {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Exact)
    }
}

impl<'de> Visitor<'de> for Exact {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a value JSON can hold")
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E: de::Error>(self) -> Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(Exact)
    }

    fn visit_bool<E: de::Error>(self, b: bool) -> Result<Value, E> {
        Ok(b.into())
    }

    fn visit_u64<E: de::Error>(self, n: u64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_i64<E: de::Error>(self, n: i64) -> Result<Value, E> {
        Ok(n.into())
    }

    fn visit_f64<E: de::Error>(self, n: f64) -> Result<Value, E> {
        match Number::from_f64(n) {
            Some(n) => Ok(Value::Number(n)),
            None => Err(E::custom(format!("{n} is not a finite number"))),
        }
    }

    fn visit_str<E: de::Error>(self, s: &str) -> Result<Value, E> {
        Ok(s.into())
    }

    fn visit_string<E: de::Error>(self, s: String) -> Result<Value, E> {
        Ok(s.into())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(256));
        while let Some(item) = seq.next_element_seed(Exact)? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Value, A::Error> {
        let mut object = Map::new();
        while let Some(key) = map.next_key::<String>()? {
            if object.contains_key(&key) {
                let message = format!("the key {} is given twice", quoted(&key));
                return Err(de::Error::custom(message));
            }
            let value = map.next_value_seed(Exact)?;
            object.insert(key, value);
        }
        Ok(Value::Object(object))
    }

    fn visit_enum<A: EnumAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        Err(de::Error::custom(
            "YAML tags are not supported (JSON has no equivalent)",
        ))
    }
}
