//! View files on disk: strict parsing, and output through [`crate::yaml`].
//!
//! Parsing refuses duplicate keys (serde would silently keep the last one,
//! and an operator's copy-paste slip would change the fleet).

use std::fmt;
use std::path::Path;

use serde::de::{self, Deserialize, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::error::{Error, Result};
use crate::local_file;
use crate::yaml_text;

/// Reads and parses a view file; every problem names the file.
pub fn read(path: &Path) -> Result<(String, Value)> {
    let text =
        local_file::read_text(path, local_file::MAX_VIEW_BYTES).map_err(|e| Error::BadFile {
            path: path.to_path_buf(),
            problem: format!("the file {e}"),
        })?;
    let tree = parse(path, &text)?;
    Ok((text, tree))
}

/// Parses the text of a view file at `path`: YAML, or JSON when the name ends
/// in `.json`. Errors name the file, line and column; the top level must be a
/// map (an empty file is an empty map).
pub fn parse(path: &Path, text: &str) -> Result<Value> {
    let bad = |problem: String| Error::BadFile {
        path: path.to_path_buf(),
        problem,
    };
    // Parse errors name the position, never the content: the file may not
    // be ours (`validate /etc/shadow`).
    let Strict(tree) = if is_json(path) {
        serde_json::from_str(text).map_err(|e| {
            bad(format!(
                "invalid JSON: {}",
                yaml_text::redact(&e.to_string())
            ))
        })?
    } else {
        yaml_text::check_nesting(text).map_err(|e| bad(format!("invalid YAML: {e}")))?;
        serde_yaml::from_str(text).map_err(|e| {
            bad(format!(
                "invalid YAML: {}",
                yaml_text::redact(&e.to_string())
            ))
        })?
    };
    match tree {
        Value::Null => Ok(Value::Object(Map::new())),
        Value::Object(_) => Ok(tree),
        other => Err(bad(format!(
            "the top level must be a map of keys, found {}",
            kind_of(&other)
        ))),
    }
}

/// What a value is, without what it holds.
fn kind_of(value: &Value) -> &'static str {
    match value {
        Value::Null => "nothing",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a number",
        Value::String(_) => "a string",
        Value::Array(_) => "a list",
        Value::Object(_) => "a map",
    }
}

/// Parses JSON text with duplicate map keys refused (serde would keep the
/// last one silently).
pub fn json_strict(text: &str) -> serde_json::Result<Value> {
    serde_json::from_str::<Strict>(text).map(|Strict(v)| v)
}

/// True for a `.json` file name.
pub fn is_json(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "json")
}

/// Renders a view tree as YAML, or pretty JSON when `json`.
pub fn render(tree: &Value, json: bool) -> Vec<u8> {
    if json {
        let mut out = serde_json::to_vec_pretty(tree).expect("a JSON value always serializes");
        out.push(b'\n');
        out
    } else {
        crate::yaml::to_yaml(tree).into_bytes()
    }
}

/// A JSON value deserialized with duplicate map keys refused.
struct Strict(Value);

impl<'de> Deserialize<'de> for Strict {
    fn deserialize<D: Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        d.deserialize_any(StrictVisitor).map(Strict)
    }
}

struct StrictVisitor;

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a YAML or JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> std::result::Result<Value, E> {
        Ok(Value::Bool(v))
    }

    fn visit_i64<E>(self, v: i64) -> std::result::Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_u64<E>(self, v: u64) -> std::result::Result<Value, E> {
        Ok(Value::Number(v.into()))
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> std::result::Result<Value, E> {
        Number::from_f64(v).map(Value::Number).ok_or_else(|| {
            E::custom(format!(
                "{v} is not a finite number, which JSON cannot hold"
            ))
        })
    }

    fn visit_str<E>(self, v: &str) -> std::result::Result<Value, E> {
        Ok(Value::String(v.to_string()))
    }

    fn visit_string<E>(self, v: String) -> std::result::Result<Value, E> {
        Ok(Value::String(v))
    }

    fn visit_unit<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_none<E>(self) -> std::result::Result<Value, E> {
        Ok(Value::Null)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> std::result::Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> std::result::Result<Value, A::Error> {
        let mut items = Vec::new();
        while let Some(Strict(item)) = seq.next_element()? {
            items.push(item);
        }
        Ok(Value::Array(items))
    }

    fn visit_map<A: MapAccess<'de>>(self, mut access: A) -> std::result::Result<Value, A::Error> {
        let mut map = Map::new();
        while let Some(key) = access.next_key::<String>()? {
            if map.contains_key(&key) {
                return Err(de::Error::custom(format!("duplicate key {key:?}")));
            }
            let Strict(value) = access.next_value()?;
            map.insert(key, value);
        }
        Ok(Value::Object(map))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn parse_yaml(text: &str) -> Result<Value> {
        parse(Path::new("v.yml"), text)
    }

    #[test]
    fn duplicate_keys_are_refused_with_their_line() {
        let err = parse_yaml("a:\n  b: 1\n  b: 2\n").unwrap_err().to_string();
        assert!(
            err.contains("duplicate key \"b\"") && err.contains("line 2"),
            "{err}"
        );
        let err = parse(Path::new("v.json"), r#"{"a": 1, "a": 2}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("duplicate key \"a\""), "{err}");
    }

    proptest! {
        /// Whatever the text, parsing ends with a tree or an error naming
        /// the file: no panic, and nesting past the limit always refused.
        #[test]
        fn arbitrary_text_parses_or_is_refused(
            text in "[ -~\n\té\u{200B}]{0,300}",
            open in prop::collection::vec(prop_oneof![Just("{a: "), Just("["), Just("- ")], 0..100),
        ) {
            let deep = format!("a: {}{text}", open.concat());
            for candidate in [&text, &deep] {
                if let Err(e) = parse_yaml(candidate) {
                    prop_assert!(e.to_string().contains("v.yml"), "{e}");
                }
            }
            let flow = open.iter().filter(|o| **o != "- ").count();
            if flow > crate::yaml_text::MAX_FLOW_DEPTH && !text.contains(['#', '"', '\'', '\n']) {
                prop_assert!(parse_yaml(&deep).is_err());
            }
        }
    }
}
