//! etcd's JSON gateway encoding: base64 keys and values, key ranges, and
//! 64-bit numbers sent as strings; pure functions, tested on their own.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;
use serde_json::Value;

pub(super) fn b64(bytes: impl AsRef<[u8]>) -> String {
    B64.encode(bytes)
}

/// The end of the range of keys starting with `prefix` (etcd's rule: the
/// prefix with its last byte incremented, dropping trailing 0xff bytes).
pub(super) fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

/// Whether `key` is `root` or under it (`root/…`).
pub(super) fn in_tree(key: &[u8], root: &[u8]) -> bool {
    key.strip_prefix(root)
        .is_some_and(|rest| rest.is_empty() || rest.starts_with(b"/"))
}

/// A 64-bit field, which the gateway sends as a string (or leaves out when 0).
pub(super) fn number(v: &Value) -> u64 {
    match v {
        Value::String(s) => s.parse().unwrap_or(0),
        Value::Number(n) => n.as_u64().unwrap_or(0),
        _ => 0,
    }
}

/// The key an operation body is about, for messages.
pub(super) fn key_of(body: &Value) -> String {
    body.get("key")
        .and_then(Value::as_str)
        .and_then(|k| B64.decode(k).ok())
        .map(|k| String::from_utf8_lossy(&k).into_owned())
        .unwrap_or_else(|| "(etcd)".into())
}
#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn prefix_ends_follow_etcd() {
        assert_eq!(prefix_end(b"/app/config/"), b"/app/config0");
        assert_eq!(prefix_end(b"p\xff"), b"q");
        assert_eq!(prefix_end(b"\xff\xff"), b"\0");
    }

    #[test]
    fn a_tree_is_its_root_and_what_is_under_it() {
        assert!(in_tree(
            b"p/clusters/web/nodes/web-1",
            b"p/clusters/web/nodes/web-1"
        ));
        assert!(in_tree(
            b"p/clusters/web/nodes/web-1/a",
            b"p/clusters/web/nodes/web-1"
        ));
        assert!(!in_tree(
            b"p/clusters/web/nodes/web-10",
            b"p/clusters/web/nodes/web-1"
        ));
        assert!(!in_tree(
            b"p/clusters/web/nodes/web-1-a",
            b"p/clusters/web/nodes/web-1"
        ));
    }

    #[test]
    fn numbers_come_as_strings_or_not_at_all() {
        assert_eq!(number(&json!("2324035595417139493")), 2324035595417139493);
        assert_eq!(number(&json!(7)), 7);
        assert_eq!(number(&Value::Null), 0);
    }
}
