//! Consul KV keys and entries: percent-encoding for URLs, the `/v1/kv/`
//! path of a key, which keys a tree holds, and entries decoded from answers.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::store::Entry;

/// Percent-encodes `text` for a URL, keeping `/` when `keep_slash` (KV keys
/// go in the path, and Consul decodes it).
pub(super) fn encode(text: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The `/v1/kv/…` path of a key.
pub(super) fn kv_path(key: &str) -> Result<String> {
    if key.is_empty() || key.starts_with('/') {
        return Err(Error::bad_key(
            key,
            "a Consul key must not be empty or begin with `/`",
        ));
    }
    Ok(format!("/v1/kv/{}", encode(key, true)))
}

/// Whether `key` is `root` or under `root/` (a Consul tree of `web-1` also
/// holds `web-10`).
pub(super) fn under(key: &str, root: &str) -> bool {
    key == root
        || key
            .strip_prefix(root)
            .is_some_and(|rest| rest.starts_with('/') || root.ends_with('/'))
}

/// An entry of a KV answer (`{"Key", "Value": base64 or null, "ModifyIndex", …}`).
pub(super) fn entry_of(kv: &Value) -> Result<Entry> {
    let key = kv
        .get("Key")
        .and_then(Value::as_str)
        .ok_or_else(|| Error::bad_key("(consul)", "an entry came back without a key"))?
        .to_string();
    let value = match kv.get("Value") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => B64
            .decode(text)
            .map_err(|e| Error::bad_key(&key, format!("the value is not base64: {e}")))?,
        Some(other) => {
            return Err(Error::bad_key(
                &key,
                format!("the value is neither base64 text nor null: {other}"),
            ))
        }
    };
    Ok(Entry {
        version: kv.get("ModifyIndex").and_then(Value::as_u64).unwrap_or(0),
        key,
        value,
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn keys_are_encoded_per_segment_and_trees_end_at_a_slash() {
        assert_eq!(
            kv_path("convergent/clusters/web a/x?y#z").unwrap(),
            "/v1/kv/convergent/clusters/web%20a/x%3Fy%23z"
        );
        assert!(kv_path("/abs").is_err());
        assert!(under("p/nodes/web-1", "p/nodes/web-1"));
        assert!(under("p/nodes/web-1/state", "p/nodes/web-1"));
        assert!(!under("p/nodes/web-10", "p/nodes/web-1"));
        assert!(under("p/x", "p/"));
    }

    #[test]
    fn entries_decode_base64_and_null_values() {
        let e = entry_of(&json!({"Key": "k", "Value": "eyJhIjoxfQ==", "ModifyIndex": 7})).unwrap();
        assert_eq!((e.value.as_slice(), e.version), (&b"{\"a\":1}"[..], 7));
        let e = entry_of(&json!({"Key": "k", "Value": null, "ModifyIndex": 8})).unwrap();
        assert!(e.value.is_empty());
        let err = entry_of(&json!({"Key": "k/bad", "Value": "not base64!"})).unwrap_err();
        assert!(err.to_string().contains("k/bad"), "{err}");
    }
}
