//! View files on disk: strict parsing and careful YAML output.
//!
//! Parsing refuses duplicate keys (serde would silently keep the last one,
//! and an operator's copy-paste slip would change the fleet). Output quotes
//! every string a YAML 1.1 reader (Ruby's Psych, PyYAML) could take for
//! something else — `off`, `yes`, `5.0`, `2024-01-01` — so files written here
//! mean the same thing to every tool that reads them.

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
        to_yaml(tree).into_bytes()
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

/// Longest flow-style list (`[a, b]`) written on one line.
const FLOW_WIDTH: usize = 72;

/// Renders a value as block-style YAML.
pub fn to_yaml(value: &Value) -> String {
    let mut out = String::new();
    match value {
        Value::Object(map) if !map.is_empty() => write_map(&mut out, map, 0),
        Value::Array(items) if !items.is_empty() && flow(items).is_none() => {
            write_seq(&mut out, items, 0)
        }
        other => {
            out.push_str(&inline(other));
            out.push('\n');
        }
    }
    out
}

fn indent(out: &mut String, n: usize) {
    out.extend(std::iter::repeat_n(' ', n));
}

/// Longest key written as a plain `key: value`: YAML readers refuse an
/// implicit key longer than 1024 characters, so longer ones are written
/// explicitly (`? key` then `: value`), which every reader takes.
const MAX_IMPLICIT_KEY: usize = 1000;

fn write_map(out: &mut String, map: &Map<String, Value>, at: usize) {
    for (key, value) in map {
        indent(out, at);
        let key = scalar(key);
        if key.chars().count() > MAX_IMPLICIT_KEY {
            out.push_str("? ");
            out.push_str(&key);
            out.push('\n');
            indent(out, at);
        } else {
            out.push_str(&key);
        }
        out.push(':');
        match value {
            Value::Object(inner) if !inner.is_empty() => {
                out.push('\n');
                write_map(out, inner, at + 2);
            }
            Value::Array(items) if !items.is_empty() && flow(items).is_none() => {
                out.push('\n');
                write_seq(out, items, at + 2);
            }
            other => {
                out.push(' ');
                out.push_str(&inline(other));
                out.push('\n');
            }
        }
    }
}

fn write_seq(out: &mut String, items: &[Value], at: usize) {
    for item in items {
        indent(out, at);
        out.push_str("- ");
        let nested = match item {
            Value::Object(inner) if !inner.is_empty() => {
                let mut block = String::new();
                write_map(&mut block, inner, at + 2);
                Some(block)
            }
            Value::Array(inner) if !inner.is_empty() && flow(inner).is_none() => {
                let mut block = String::new();
                write_seq(&mut block, inner, at + 2);
                Some(block)
            }
            _ => None,
        };
        match nested {
            // The block's first line goes on the dash's line.
            Some(block) => out.push_str(&block[at + 2..]),
            None => {
                out.push_str(&inline(item));
                out.push('\n');
            }
        }
    }
}

/// A list of scalars short enough for one line, as `[a, b]`.
fn flow(items: &[Value]) -> Option<String> {
    let all_scalars = items.iter().all(|v| match v {
        Value::Array(a) => a.is_empty(),
        Value::Object(m) => m.is_empty(),
        _ => true,
    });
    if !all_scalars {
        return None;
    }
    let text = format!(
        "[{}]",
        items.iter().map(inline).collect::<Vec<_>>().join(", ")
    );
    (text.len() <= FLOW_WIDTH).then_some(text)
}

fn inline(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        Value::Array(items) => {
            flow(items).unwrap_or_else(|| serde_json::to_string(value).expect("serializes"))
        }
        Value::Object(_) => serde_json::to_string(value).expect("serializes"),
    }
}

/// A string as a YAML scalar: plain when no YAML 1.1 or 1.2 reader could
/// take it for anything but this string, else double-quoted.
fn scalar(s: &str) -> String {
    const WORDS: [&str; 9] = ["y", "yes", "n", "no", "true", "false", "on", "off", "null"];
    let plain = s
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "_-./".contains(c))
        && !WORDS.iter().any(|w| w.eq_ignore_ascii_case(s));
    if plain {
        return s.to_string();
    }
    // A JSON string is a valid YAML double-quoted scalar once the characters
    // YAML does not allow raw (DEL, C1 controls, U+FFFE/U+FFFF) and those
    // libyaml takes for line breaks (U+2028, U+2029) or a byte-order mark are
    // escaped too; JSON already escapes those below U+0020.
    let json = serde_json::to_string(s).expect("a string serializes");
    let mut out = String::with_capacity(json.len());
    for c in json.chars() {
        match c {
            '\u{7f}'..='\u{9f}'
            | '\u{2028}'
            | '\u{2029}'
            | '\u{feff}'
            | '\u{fffe}'
            | '\u{ffff}' => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

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

    #[test]
    fn yaml_1_1_traps_are_quoted() {
        let text = to_yaml(
            &json!({"states": ["off", "waiting", "on", "Yes", "n"], "version": "5.0", "v2": "2.4.1", "when": "2024-01-01", "name": "web-01"}),
        );
        assert_eq!(
            text,
            "name: web-01\nstates: [\"off\", waiting, \"on\", \"Yes\", \"n\"]\nv2: \"2.4.1\"\nversion: \"5.0\"\nwhen: \"2024-01-01\"\n"
        );
    }

    #[test]
    fn nested_structures_read_well() {
        let v = json!({"a": {"b": [{"x": 1, "y": [1, 2]}, [{"z": null}]], "e": {}, "l": []}});
        let text = to_yaml(&v);
        assert_eq!(
            text,
            "a:\n  b:\n    - x: 1\n      \"y\": [1, 2]\n    - - z: null\n  e: {}\n  l: []\n"
        );
        assert_eq!(parse_yaml(&text).unwrap(), v);
    }

    #[test]
    fn keys_too_long_for_an_implicit_key_are_written_explicitly() {
        let long = "k".repeat(5000);
        let quoted = format!("{}é\"", "q".repeat(1100));
        let v = json!({
            "a": {long.clone(): {"b": 1, long.clone(): [1, {"x": 2}]}},
            "s": [{long.clone(): "v", "y": 1}],
            quoted.clone(): null,
            "short": 1,
        });
        let text = to_yaml(&v);
        assert!(text.contains(&format!("? {long}\n")), "{text}");
        assert_eq!(parse_yaml(&text).unwrap(), v);
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            any::<i64>().prop_map(|n| json!(n)),
            (-1e9f64..1e9).prop_map(|f| json!(f)),
            ".*".prop_map(Value::String),
            prop_oneof![
                Just("off"),
                Just("yes"),
                Just("5.0"),
                Just("- x"),
                Just("a: b"),
                Just("#c"),
                Just("")
            ]
            .prop_map(|s| Value::String(s.to_string())),
        ];
        leaf.prop_recursive(4, 40, 6, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..6).prop_map(Value::Array),
                prop::collection::btree_map(
                    prop_oneof![4 => ".*", 1 => "[a-z:# \"é]{990,1100}"],
                    inner,
                    0..6
                )
                .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
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

        #[test]
        fn emitted_yaml_parses_back_equal(v in json_value()) {
            let doc = json!({"root": v});
            let text = to_yaml(&doc);
            let back = parse_yaml(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(back, doc);
        }
    }
}
