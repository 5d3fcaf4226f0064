//! JSON documents of the view: decoding store values, folding a tree of keys
//! into one document, deep merge with provenance, and the canonical form
//! behind `generation`.
//!
//! Merge rules (the design's): maps merge deeply, arrays and scalars replace,
//! and in a layer merge `null` removes a key.

use serde_json::{Map, Value};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;

use crate::entry::Entry;
use crate::error::{Error, Result};
use crate::view_file;

/// A path into a document: the keys of nested maps, outermost first.
pub type Path = Vec<String>;

/// Decodes a raw store value.
///
/// Values are JSON where valid. Text that starts like a JSON document or a
/// JSON string (`{`, `[`, `"`) must be valid JSON, so a broken document is an
/// error naming the key rather than a surprising string; a map with a key
/// twice is refused, as in a view file. Other text that is not JSON (`off`,
/// `2.4.1`) is a plain string, and so is an integer too large to be kept
/// exactly (`123456789012345678901234567890` would become a float). An
/// empty value is `null`.
pub fn decode_value(key: &str, raw: &[u8]) -> Result<Value> {
    let text = std::str::from_utf8(raw)
        .map_err(|e| Error::bad_key(key, format!("value is not UTF-8 text: {e}")))?;
    let text = text.trim();
    if text.is_empty() {
        return Ok(Value::Null);
    }
    match view_file::json_strict(text) {
        Ok(Value::Number(n)) if n.is_f64() && is_integer_literal(text) => {
            Ok(Value::String(text.to_string()))
        }
        Ok(value) => Ok(value),
        Err(e) if text.starts_with(['{', '[', '"']) => {
            Err(Error::bad_key(key, format!("value is not valid JSON: {e}")))
        }
        Err(_) => Ok(Value::String(text.to_string())),
    }
}

/// `-?[0-9]+`: an integer written without fraction or exponent.
fn is_integer_literal(text: &str) -> bool {
    let digits = text.strip_prefix('-').unwrap_or(text);
    !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit())
}

/// Encodes a value for the store: compact JSON.
pub fn encode_value(value: &Value) -> Vec<u8> {
    canonical_json(value).into_bytes()
}

/// A document together with the origin of each of its leaves.
///
/// Leaves are the values that are not non-empty maps: scalars, arrays, `null`
/// and empty maps. `O` is what "origin" means to the caller: a store key when
/// folding one tree, a layer and key when resolving a node.
#[derive(Clone, Debug, PartialEq)]
pub struct Sourced<O> {
    /// The document.
    pub doc: Value,
    /// Origin of every leaf of `doc`, by path.
    pub sources: BTreeMap<Path, O>,
}

impl<O: Clone> Sourced<O> {
    /// An empty map with no origins.
    pub fn empty_map() -> Self {
        Sourced {
            doc: Value::Object(Map::new()),
            sources: BTreeMap::new(),
        }
    }

    /// The part under the top-level key `key`, with its origins, if any.
    pub fn child(&self, key: &str) -> Option<Sourced<O>> {
        let doc = self.doc.get(key)?.clone();
        // Paths sort by their first key: the child's are one contiguous run.
        let sources = self
            .sources
            .range(vec![key.to_string()]..)
            .take_while(|(path, _)| path.first().is_some_and(|p| p == key))
            .map(|(path, origin)| (path[1..].to_vec(), origin.clone()))
            .collect();
        Some(Sourced { doc, sources })
    }

    /// A document whose every leaf has the same origin.
    pub fn uniform(doc: Value, origin: O) -> Self {
        let sources = leaves(&doc)
            .into_iter()
            .map(|(path, _)| (path, origin.clone()))
            .collect();
        Sourced { doc, sources }
    }
}

/// What `null` means in an overlay.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nulls {
    /// `null` is a value like any other (folding keys inside one layer).
    Keep,
    /// `null` removes the key (merging one layer over another).
    Remove,
}

/// Lays `value` over the node at `at` in `target`: maps merge deeply,
/// everything else replaces. `origin(path)` gives the origin of the leaf of
/// `value` at the absolute `path`.
///
/// Fails with the path of the value in the way when `at` runs through a
/// scalar or an array.
pub fn overlay<O: Clone>(
    target: &mut Sourced<O>,
    at: &[String],
    value: &Value,
    nulls: Nulls,
    origin: &dyn Fn(&[String]) -> O,
) -> std::result::Result<(), Path> {
    let mut path: Path = Vec::with_capacity(at.len() + 4);
    let mut node = &mut target.doc;
    for segment in at {
        if node.is_null() {
            target.sources.remove(&path);
            *node = Value::Object(Map::new());
        }
        match node {
            Value::Object(map) => {
                if map.is_empty() {
                    target.sources.remove(&path);
                }
                path.push(segment.clone());
                node = map.entry(segment.clone()).or_insert(Value::Null);
            }
            _ => return Err(path),
        }
    }
    merge_node(node, &mut path, value, nulls, &mut target.sources, origin);
    Ok(())
}

fn merge_node<O: Clone>(
    node: &mut Value,
    path: &mut Path,
    value: &Value,
    nulls: Nulls,
    sources: &mut BTreeMap<Path, O>,
    origin: &dyn Fn(&[String]) -> O,
) {
    if let (Value::Object(base), Value::Object(over)) = (&mut *node, value) {
        if over.is_empty() {
            if base.is_empty() && !path.is_empty() {
                // Both are empty-map leaves: the later one sets it.
                sources.insert(path.clone(), origin(path));
            }
            return;
        }
        // An empty-map leaf stops being a leaf once something lands in it.
        let was_leaf = if base.is_empty() {
            sources.remove(path)
        } else {
            None
        };
        for (key, child) in over {
            path.push(key.clone());
            if child.is_null() && nulls == Nulls::Remove {
                if base.remove(key).is_some() {
                    remove_under(sources, path);
                }
            } else {
                let slot = base.entry(key.clone()).or_insert(Value::Null);
                merge_node(slot, path, child, nulls, sources, origin);
            }
            path.pop();
        }
        // Left empty (every key removed by a null): an empty-map leaf again,
        // set by whoever emptied it unless it was empty to begin with.
        if base.is_empty() && !path.is_empty() {
            let o = was_leaf.unwrap_or_else(|| origin(path));
            sources.insert(path.clone(), o);
        }
        return;
    }
    remove_under(sources, path);
    let replacement = match nulls {
        Nulls::Keep => value.clone(),
        Nulls::Remove => strip_nulls(value),
    };
    for (leaf, _) in leaves_at(&replacement, path) {
        let o = origin(&leaf);
        sources.insert(leaf, o);
    }
    *node = replacement;
}

fn remove_under<O>(sources: &mut BTreeMap<Path, O>, path: &[String]) {
    let doomed: Vec<Path> = sources
        .range(path.to_vec()..)
        .take_while(|(p, _)| p.starts_with(path))
        .map(|(p, _)| p.clone())
        .collect();
    for p in doomed {
        sources.remove(&p);
    }
}

/// `base` with `overlay` laid over it (maps merge deeply, the rest replaces).
pub fn merged(base: &Value, overlay_doc: &Value, nulls: Nulls) -> Value {
    let mut target: Sourced<()> = Sourced {
        doc: base.clone(),
        sources: BTreeMap::new(),
    };
    overlay(&mut target, &[], overlay_doc, nulls, &|_| ())
        .expect("a merge at the root has nothing in the way");
    target.doc
}

/// `value` without any map entry whose value is `null`, at any depth.
pub fn strip_nulls(value: &Value) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .filter(|(_, v)| !v.is_null())
                .map(|(k, v)| (k.clone(), strip_nulls(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

/// Every leaf of `doc` with its path: scalars, arrays, `null` and empty maps
/// (but an empty document has no leaves).
pub fn leaves(doc: &Value) -> Vec<(Path, &Value)> {
    leaves_at(doc, &[])
}

fn leaves_at<'v>(doc: &'v Value, base: &[String]) -> Vec<(Path, &'v Value)> {
    let mut out = Vec::new();
    if base.is_empty() && doc.as_object().is_some_and(Map::is_empty) {
        return out;
    }
    let mut stack: Vec<(Path, &Value)> = vec![(base.to_vec(), doc)];
    while let Some((path, value)) = stack.pop() {
        match value {
            Value::Object(map) if !map.is_empty() => {
                for (k, v) in map.iter().rev() {
                    let mut child = path.clone();
                    child.push(k.clone());
                    stack.push((child, v));
                }
            }
            _ => out.push((path, value)),
        }
    }
    out
}

/// The document at each of `keys`, folded from the tree read under it
/// (`trees[i]` read for `keys[i]`, as a store's `read_trees` answers).
pub fn fold_each(keys: &[String], trees: &[Vec<Entry>]) -> Result<Vec<Option<Value>>> {
    keys.iter()
        .zip(trees)
        .map(|(key, entries)| Ok(fold(key, entries)?.map(|s| s.doc)))
        .collect()
}

/// Folds the entries of one tree — the key `root` and the keys under
/// `root/` — into one document, each leaf remembering the key that set it.
///
/// A value at `root` is the base; deeper keys are laid over it, shallower
/// first, so `root/state = off` wins over `"state"` inside the value at
/// `root`. Keys ending in `/` with an empty value are directory markers
/// (Consul's UI writes them) and are skipped. Returns `None` when nothing (or
/// only `null`) is there.
pub fn fold<'e>(
    root: &str,
    entries: impl IntoIterator<Item = &'e Entry>,
) -> Result<Option<Sourced<String>>> {
    let mut ordered: Vec<(Path, &Entry)> = Vec::new();
    for entry in entries {
        let rest = if entry.key == root {
            ""
        } else if let Some(rest) = entry
            .key
            .strip_prefix(root)
            .and_then(|r| r.strip_prefix('/'))
        {
            rest
        } else {
            continue; // another tree's key: not ours to fold
        };
        if rest.ends_with('/') && entry.value.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        let path: Path = if rest.is_empty() {
            Vec::new()
        } else {
            rest.split('/').map(str::to_string).collect()
        };
        if path.iter().any(String::is_empty) {
            return Err(Error::bad_key(
                &entry.key,
                "key has an empty path segment (`//`)",
            ));
        }
        ordered.push((path, entry));
    }
    ordered.sort_by(|a, b| a.0.len().cmp(&b.0.len()).then_with(|| a.0.cmp(&b.0)));

    let mut out = Sourced {
        doc: Value::Null,
        sources: BTreeMap::new(),
    };
    for (path, entry) in ordered {
        let value = decode_value(&entry.key, &entry.value)?;
        overlay(&mut out, &path, &value, Nulls::Keep, &|_| entry.key.clone()).map_err(
            |blocker| {
                let blocker_key = if blocker.is_empty() {
                    root.to_string()
                } else {
                    format!("{root}/{}", blocker.join("/"))
                };
                Error::bad_key(
                    &entry.key,
                    format!("conflicts with key {blocker_key}, whose value is not a map"),
                )
            },
        )?;
    }
    Ok((!out.doc.is_null()).then_some(out))
}

/// Parses a dotted path (`app.version`) as given on the command line.
pub fn parse_path(text: &str) -> std::result::Result<Path, String> {
    let depth = text.split('.').count();
    if depth > MAX_PATH_DEPTH {
        return Err(format!(
            "a key path of {depth} components is deeper than the limit of {MAX_PATH_DEPTH}"
        ));
    }
    let path: Path = text.split('.').map(str::to_string).collect();
    if path.iter().any(String::is_empty) {
        return Err(format!(
            "{text:?} is not a key path: use dotted names such as `state` or `app.version`"
        ));
    }
    Ok(path)
}

/// Most components a key path may have: documents nest this deep at most,
/// well within what every reader of the view (YAML, JSON) takes.
pub const MAX_PATH_DEPTH: usize = 32;

/// Renders a path as dotted text (`app.version`); the root renders as `.`.
pub fn display_path(path: &[String]) -> String {
    if path.is_empty() {
        ".".to_string()
    } else {
        path.join(".")
    }
}

/// The value at `path`, if any.
pub fn get_path<'v>(doc: &'v Value, path: &[String]) -> Option<&'v Value> {
    path.iter()
        .try_fold(doc, |node, key| node.as_object()?.get(key))
}

/// Sets `path` to `value`, creating maps on the way. Fails with the path of
/// the value in the way when a scalar or array blocks it.
pub fn set_path(doc: &mut Value, path: &[String], value: Value) -> std::result::Result<(), Path> {
    let mut node = doc;
    for (depth, key) in path.iter().enumerate() {
        if node.is_null() {
            *node = Value::Object(Map::new());
        }
        node = match node {
            Value::Object(map) => map.entry(key.clone()).or_insert(Value::Null),
            _ => return Err(path[..depth].to_vec()),
        };
    }
    *node = value;
    Ok(())
}

/// Removes `path`; returns whether something was there. Maps left empty by
/// the removal are removed too.
pub fn remove_path(doc: &mut Value, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else {
        return false;
    };
    let Some(Value::Object(map)) = parents
        .iter()
        .try_fold(&mut *doc, |node, key| node.as_object_mut()?.get_mut(key))
    else {
        return false;
    };
    let removed = map.remove(last).is_some();
    if removed && map.is_empty() && !parents.is_empty() {
        remove_path(doc, parents);
    }
    removed
}

/// The canonical JSON of a document: keys sorted bytewise, no whitespace,
/// numbers as `serde_json` prints them. Equal documents give equal text on
/// every node and every store.
pub fn canonical_json(value: &Value) -> String {
    // serde_json's map is a BTreeMap (no `preserve_order`), so keys come sorted.
    serde_json::to_string(value).expect("a JSON value always serializes")
}

/// The generation of a desired document: the first 16 hex digits (64 bits)
/// of the SHA-256 of its canonical JSON.
pub fn generation(desired: &Value) -> String {
    let digest = Sha256::digest(canonical_json(desired).as_bytes());
    digest[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// True when `text` looks like a generation (16 lowercase hex digits).
pub fn is_generation(text: &str) -> bool {
    text.len() == 16
        && text
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use serde_json::json;

    fn entry(key: &str, value: &str) -> Entry {
        Entry {
            key: key.to_string(),
            value: value.as_bytes().to_vec(),
            version: 1,
        }
    }

    fn merged(layers: &[Value]) -> Value {
        let mut acc: Sourced<usize> = Sourced::empty_map();
        for (i, layer) in layers.iter().enumerate() {
            overlay(&mut acc, &[], layer, Nulls::Remove, &|_| i).unwrap();
        }
        acc.doc
    }

    #[test]
    fn decode_follows_json_where_valid() {
        assert_eq!(decode_value("k", b"off").unwrap(), json!("off"));
        assert_eq!(decode_value("k", b"2.4.1").unwrap(), json!("2.4.1"));
        assert_eq!(decode_value("k", b"5.1").unwrap(), json!(5.1));
        assert_eq!(decode_value("k", b"true").unwrap(), json!(true));
        assert_eq!(decode_value("k", b"\"5.1\"").unwrap(), json!("5.1"));
        assert_eq!(decode_value("k", b"{\"a\": 1}\n").unwrap(), json!({"a": 1}));
        assert_eq!(decode_value("k", b"").unwrap(), Value::Null);
        assert_eq!(decode_value("k", b"off\n").unwrap(), json!("off"));
    }

    #[test]
    fn decode_refuses_broken_documents_naming_the_key() {
        for raw in ["{\"state\": ", "[1, 2", "\"unterminated"] {
            let err = decode_value("convergent/clusters/web/desired", raw.as_bytes()).unwrap_err();
            let text = err.to_string();
            assert!(text.contains("convergent/clusters/web/desired"), "{text}");
            assert!(text.contains("not valid JSON"), "{text}");
            assert_eq!(err.exit_code(), 65);
        }
        assert!(decode_value("k", &[0xff, 0xfe]).is_err());
    }

    #[test]
    fn merge_is_deep_for_maps_and_replaces_the_rest() {
        let out = merged(&[
            json!({"a": {"x": 1, "y": 2}, "list": [1, 2, 3], "s": "base"}),
            json!({"a": {"y": 20, "z": 30}, "list": [9], "s": {"now": "map"}}),
        ]);
        assert_eq!(
            out,
            json!({"a": {"x": 1, "y": 20, "z": 30}, "list": [9], "s": {"now": "map"}})
        );
    }

    #[test]
    fn null_removes_a_key_in_a_layer_merge() {
        let out = merged(&[
            json!({"a": {"x": 1, "y": 2}, "b": 1}),
            json!({"a": {"x": null}, "b": null, "c": null}),
        ]);
        assert_eq!(out, json!({"a": {"y": 2}}));
    }

    #[test]
    fn nested_nulls_inside_a_replacement_are_dropped() {
        let out = merged(&[json!({"a": 1}), json!({"a": {"x": null, "y": 1}})]);
        assert_eq!(out, json!({"a": {"y": 1}}));
    }

    #[test]
    fn empty_map_overlay_keeps_what_is_below() {
        assert_eq!(
            merged(&[json!({"a": {"x": 1}}), json!({"a": {}})]),
            json!({"a": {"x": 1}})
        );
        assert_eq!(merged(&[json!({}), json!({"a": {}})]), json!({"a": {}}));
    }

    #[test]
    fn provenance_follows_the_winning_layer() {
        let mut acc: Sourced<&str> = Sourced::empty_map();
        overlay(
            &mut acc,
            &[],
            &json!({"a": {"x": 1, "y": 2}, "b": [1]}),
            Nulls::Remove,
            &|_| "defaults",
        )
        .unwrap();
        overlay(
            &mut acc,
            &[],
            &json!({"a": {"y": 3}, "b": {"k": true}}),
            Nulls::Remove,
            &|_| "node",
        )
        .unwrap();
        let origin = |p: &[&str]| {
            acc.sources
                .get(&p.iter().map(|s| s.to_string()).collect::<Path>())
                .copied()
        };
        assert_eq!(origin(&["a", "x"]), Some("defaults"));
        assert_eq!(origin(&["a", "y"]), Some("node"));
        assert_eq!(origin(&["b", "k"]), Some("node"));
        assert_eq!(
            origin(&["b"]),
            None,
            "the replaced array is no longer a leaf"
        );
        assert_eq!(acc.sources.len(), leaves(&acc.doc).len());
    }

    #[test]
    fn fold_combines_a_document_and_scalar_keys() {
        let root = "p/clusters/web/desired";
        let entries = vec![
            entry("p/clusters/web/desired/version", "2.4.1"),
            entry(
                root,
                r#"{"state": "converged", "version": "2.4.0", "app": {"port": 80}}"#,
            ),
            entry("p/clusters/web/desired/state", "off"),
            entry("p/clusters/web/desired/app/workers", "8"),
        ];
        let folded = fold(root, &entries).unwrap().unwrap();
        assert_eq!(
            folded.doc,
            json!({"state": "off", "version": "2.4.1", "app": {"port": 80, "workers": 8}})
        );
        assert_eq!(
            folded.sources[&vec!["state".to_string()]],
            "p/clusters/web/desired/state"
        );
        assert_eq!(
            folded.sources[&vec!["app".to_string(), "port".to_string()]],
            root
        );
    }

    #[test]
    fn fold_skips_directory_markers_and_other_trees() {
        let entries = vec![entry("p/x/", ""), entry("p/x/a", "1"), entry("p/xy", "2")];
        let folded = fold("p/x", &entries).unwrap().unwrap();
        assert_eq!(folded.doc, json!({"a": 1}));
        assert!(fold("p/x", &[entry("p/x/", "")]).unwrap().is_none());
        assert!(fold("p/x", &[]).unwrap().is_none());
    }

    #[test]
    fn fold_reports_a_scalar_in_the_way() {
        let entries = vec![entry("p/d", r#"{"a": "scalar"}"#), entry("p/d/a/b", "1")];
        let err = fold("p/d", &entries).unwrap_err().to_string();
        assert!(err.contains("p/d/a/b") && err.contains("p/d/a"), "{err}");
    }

    #[test]
    fn canonical_json_sorts_keys_and_generation_is_stable() {
        let a = json!({"b": 1, "a": {"d": [1, 2], "c": "x"}});
        assert_eq!(canonical_json(&a), r#"{"a":{"c":"x","d":[1,2]},"b":1}"#);
        let b: Value = serde_json::from_str(r#"{"a":{"c":"x","d":[1,2]},"b":1}"#).unwrap();
        assert_eq!(generation(&a), generation(&b));
        assert!(is_generation(&generation(&a)));
        // Pinned so that a change of canonical form is a visible, deliberate change.
        assert_eq!(
            generation(&json!({"state": "off"})),
            generation(&json!({"state": "off"}))
        );
        assert_ne!(
            generation(&json!({"state": "off"})),
            generation(&json!({"state": "on"}))
        );
    }

    fn json_value() -> impl Strategy<Value = Value> {
        let leaf = prop_oneof![
            Just(Value::Null),
            any::<bool>().prop_map(Value::Bool),
            (-1000i64..1000).prop_map(|n| json!(n)),
            "[a-c]{0,2}".prop_map(Value::String),
        ];
        leaf.prop_recursive(3, 24, 4, |inner| {
            prop_oneof![
                prop::collection::vec(inner.clone(), 0..3).prop_map(Value::Array),
                prop::collection::btree_map("[a-d]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect())),
            ]
        })
    }

    fn json_map() -> impl Strategy<Value = Value> {
        prop::collection::btree_map("[a-d]", json_value(), 0..4)
            .prop_map(|m| Value::Object(m.into_iter().collect()))
    }

    fn merge_two(a: &Value, b: &Value) -> Sourced<char> {
        let mut acc = Sourced::empty_map();
        overlay(&mut acc, &[], a, Nulls::Remove, &|_| 'a').unwrap();
        overlay(&mut acc, &[], b, Nulls::Remove, &|_| 'b').unwrap();
        acc
    }

    proptest! {
        #[test]
        fn merge_properties(a in json_map(), b in json_map()) {
            let m = merge_two(&a, &b);
            // Every non-null leaf of the overlay is in the result, unchanged.
            for (path, value) in leaves(&strip_nulls(&b)) {
                if value.is_object() { continue; } // an empty map merges into what is there
                prop_assert_eq!(get_path(&m.doc, &path), Some(value));
                prop_assert_eq!(m.sources.get(&path), Some(&'b'));
            }
            // A leaf of the base survives unless the overlay touches its path.
            for (path, value) in leaves(&strip_nulls(&a)) {
                // Touched: the overlay has a value at the path itself, or a
                // non-map at a path above it.
                let touched = get_path(&b, &path).is_some()
                    || (0..path.len()).any(|n| get_path(&b, &path[..n]).is_some_and(|v| !v.is_object()));
                if !touched {
                    prop_assert_eq!(get_path(&m.doc, &path), Some(value));
                }
            }
            // Map entries set to null never survive a layer merge.
            if let Value::Object(map) = &m.doc {
                prop_assert!(map.values().all(|v| !v.is_null()));
            }
            // Origins are exactly the leaves.
            let leaf_paths: Vec<Path> = leaves(&m.doc).into_iter().map(|(p, _)| p).collect();
            let mut source_paths: Vec<Path> = m.sources.keys().cloned().collect();
            let mut sorted = leaf_paths.clone();
            sorted.sort();
            source_paths.sort();
            prop_assert_eq!(sorted, source_paths);
        }

        #[test]
        fn merging_the_same_overlay_twice_changes_nothing(a in json_map(), b in json_map()) {
            let once = merge_two(&a, &b).doc;
            let twice = merge_two(&once, &b).doc;
            prop_assert_eq!(once, twice);
        }

        #[test]
        fn empty_layers_are_neutral(a in json_map()) {
            let stripped = strip_nulls(&a);
            prop_assert_eq!(&merge_two(&a, &json!({})).doc, &stripped);
            prop_assert_eq!(&merge_two(&json!({}), &a).doc, &stripped);
        }

        #[test]
        fn folding_one_document_gives_it_back(doc in json_map()) {
            let entries = [Entry { key: "p/d".into(), value: encode_value(&doc), version: 1 }];
            let folded = fold("p/d", &entries).unwrap();
            prop_assert_eq!(folded.map(|f| f.doc), Some(doc));
        }
    }

    #[test]
    fn path_helpers() {
        let mut doc = json!({});
        set_path(&mut doc, &parse_path("a.b").unwrap(), json!(1)).unwrap();
        assert_eq!(doc, json!({"a": {"b": 1}}));
        assert_eq!(get_path(&doc, &parse_path("a.b").unwrap()), Some(&json!(1)));
        assert!(set_path(&mut doc, &parse_path("a.b.c").unwrap(), json!(1)).is_err());
        assert!(remove_path(&mut doc, &parse_path("a.b").unwrap()));
        assert_eq!(doc, json!({}));
        assert!(parse_path("a..b").is_err());
        assert!(parse_path("").is_err());
    }
}
