//! YAML output that means the same to every reader: quotes every string a
//! YAML 1.1 reader (Ruby's Psych, PyYAML) could take for something else —
//! `off`, `yes`, `5.0`, `2024-01-01`, a timestamp — and writes numbers in a
//! form both YAML 1.1 and 1.2 read as numbers. Every YAML `convergent`
//! writes (view files, `export`, `--format yaml`) goes through here.

use serde_json::{Map, Number, Value};

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
        Value::Number(n) => number(n),
        Value::String(s) => scalar(s),
        Value::Array(items) => {
            flow(items).unwrap_or_else(|| serde_json::to_string(value).expect("serializes"))
        }
        Value::Object(_) => serde_json::to_string(value).expect("serializes"),
    }
}

/// A number as YAML 1.1 and 1.2 readers all take it: serde_json writes
/// `1e21`, which PyYAML reads as a string (its floats need a dot and a signed
/// exponent), so such a float becomes `1.0e+21`.
fn number(n: &Number) -> String {
    let text = n.to_string();
    let Some((mantissa, exponent)) = text.split_once(['e', 'E']) else {
        return text;
    };
    let mantissa = if mantissa.contains('.') {
        mantissa.to_string()
    } else {
        format!("{mantissa}.0")
    };
    let exponent = if exponent.starts_with(['-', '+']) {
        exponent.to_string()
    } else {
        format!("+{exponent}")
    };
    format!("{mantissa}e{exponent}")
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
    use crate::error::Result;
    use crate::view_file::parse;
    use proptest::prelude::*;
    use serde_json::json;
    use std::path::Path;

    fn parse_yaml(text: &str) -> Result<Value> {
        parse(Path::new("v.yml"), text)
    }

    #[test]
    fn floats_keep_a_dot_and_a_signed_exponent() {
        let text = to_yaml(&json!({"a": 1e21, "b": 1.5e-7, "c": 0.25, "d": 12}));
        assert_eq!(text, "a: 1.0e+21\nb: 1.5e-7\nc: 0.25\nd: 12\n");
        assert_eq!(
            parse_yaml(&text).unwrap(),
            json!({"a": 1e21, "b": 1.5e-7, "c": 0.25, "d": 12})
        );
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
        #[test]
        fn emitted_yaml_parses_back_equal(v in json_value()) {
            let doc = json!({"root": v});
            let text = to_yaml(&doc);
            let back = parse_yaml(&text).map_err(|e| TestCaseError::fail(format!("{e}\n{text}")))?;
            prop_assert_eq!(back, doc);
        }
    }
}
