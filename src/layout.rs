//! The key layout of the shared view, and the rules for the names in it.
//!
//! All keys live under one prefix `P` (default `convergent`):
//!
//! | key | holds |
//! |---|---|
//! | `P/defaults` | document merged under every cluster |
//! | `P/clusters/C/schema` | allowed states and transitions |
//! | `P/clusters/C/desired` | the cluster's desired document |
//! | `P/clusters/C/nodes/N` | per-node override |
//! | `P/clusters/C/history` | who changed the desired state, newest last |
//! | `P/rollouts/C` | the active rollout of cluster C |
//! | `P/observed/C/N` | what node N last converged to |
//! | `P/locks/…` | orchestrator locks |

use std::fmt;
use std::str::FromStr;

/// The root of all keys, validated: `/`-separated segments, each a valid name.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Prefix(String);

impl Default for Prefix {
    fn default() -> Self {
        Prefix("convergent".to_string())
    }
}

impl FromStr for Prefix {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.is_empty() {
            return Err("the prefix must not be empty".into());
        }
        for segment in s.split('/') {
            check_segment(segment).map_err(|why| format!("prefix {s:?}: {why}"))?;
        }
        Ok(Prefix(s.to_string()))
    }
}

impl fmt::Display for Prefix {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl Prefix {
    /// The prefix's path segments (`a/b` gives `["a", "b"]`).
    pub fn segments(&self) -> impl Iterator<Item = &str> {
        self.0.split('/')
    }
}

/// What a name names, for error messages.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum NameKind {
    Cluster,
    Node,
    Rollout,
    /// A health check's name.
    Check,
    /// A plan step's name.
    Step,
}

impl fmt::Display for NameKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            NameKind::Cluster => "cluster name",
            NameKind::Node => "node name",
            NameKind::Rollout => "rollout id",
            NameKind::Check => "check name",
            NameKind::Step => "step name",
        })
    }
}

/// Longest name accepted: a DNS name's limit, and far below every store's key limit.
pub const MAX_NAME_LEN: usize = 253;

/// Checks a cluster or node name (or rollout id). A name becomes a key
/// segment, and the orchestrator hands node and cluster names to kick
/// commands (`ssh {node} …`), so only host-like names pass: ASCII letters,
/// digits, `.`, `-` and `_`, starting with a letter or digit. That keeps a
/// name from ever reading as an option (`-oProxyCommand=…`), a shell word
/// (`$(id)`, `;id`), a placeholder (`{cluster}`), or a look-alike built
/// with invisible or bidirectional characters (`we\u{200B}b`).
pub fn check_name(kind: NameKind, name: &str) -> Result<(), String> {
    check_segment(name)
        .and_then(|()| check_host_like(name))
        .map_err(|why| format!("invalid {kind} \"{}\": {why}", name.escape_default()))
}

fn check_host_like(name: &str) -> Result<(), String> {
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err("it must start with an ASCII letter or digit".into());
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_')))
    {
        return Err(format!(
            "it may hold only ASCII letters, digits, `.`, `-` and `_`, not {}",
            describe(c)
        ));
    }
    Ok(())
}

/// A character named so that it reads unambiguously in a terminal.
fn describe(c: char) -> String {
    if c.is_ascii_graphic() {
        format!("`{c}`")
    } else {
        format!("U+{:04X}", c as u32)
    }
}

fn check_segment(s: &str) -> Result<(), String> {
    if s.is_empty() {
        return Err("it is empty".into());
    }
    if s.len() > MAX_NAME_LEN {
        return Err(format!("it is longer than {MAX_NAME_LEN} bytes"));
    }
    if s == "." || s.contains("..") {
        return Err("it must not be `.` or contain `..`".into());
    }
    if let Some(c) = s
        .chars()
        .find(|c| *c == '/' || c.is_whitespace() || c.is_control() || is_invisible(*c))
    {
        let what = match c {
            '/' => "`/`".to_string(),
            c if c.is_control() => format!("the control character U+{:04X}", c as u32),
            c if is_invisible(c) => format!("the invisible character U+{:04X}", c as u32),
            c => format!("whitespace (U+{:04X})", c as u32),
        };
        return Err(format!("it must not contain {what}"));
    }
    Ok(())
}

/// Zero-width, bidirectional-control and other format characters: they make
/// one name print as another (`we\u{200B}b` as `web`).
fn is_invisible(c: char) -> bool {
    matches!(c as u32,
        0x00AD | 0x034F | 0x061C | 0x115F | 0x1160 | 0x17B4 | 0x17B5 | 0x180B..=0x180F
        | 0x200B..=0x200F | 0x202A..=0x202E | 0x2060..=0x206F | 0x3164 | 0xFE00..=0xFE0F
        | 0xFEFF | 0xFFA0 | 0xFFF0..=0xFFFB | 0xE0000..=0xE0FFF)
}

/// Builds the store keys of the view under one prefix.
#[derive(Clone, Debug)]
pub struct Layout {
    prefix: String,
}

impl Layout {
    /// The layout under `prefix`.
    pub fn new(prefix: &Prefix) -> Self {
        Layout {
            prefix: prefix.0.clone(),
        }
    }

    /// The prefix itself, the root of every key.
    pub fn root(&self) -> &str {
        &self.prefix
    }

    /// `P/<relative>`: a key given relative to the prefix.
    pub fn key(&self, relative: &str) -> String {
        format!("{}/{}", self.prefix, relative)
    }

    /// The sections of a view under the prefix, in the order a file shows
    /// them; everything else under `P/` (locks) is not part of the view.
    pub const SECTIONS: [&'static str; 5] =
        ["clusters", "defaults", "observed", "plans", "rollouts"];

    /// `P/defaults`
    pub fn defaults(&self) -> String {
        self.key("defaults")
    }

    /// `P/clusters`
    pub fn clusters(&self) -> String {
        self.key("clusters")
    }

    /// `P/clusters/C/schema`
    pub fn schema(&self, cluster: &str) -> String {
        self.key(&format!("clusters/{cluster}/schema"))
    }

    /// `P/clusters/C/desired`
    pub fn desired(&self, cluster: &str) -> String {
        self.key(&format!("clusters/{cluster}/desired"))
    }

    /// `P/clusters/C/nodes`
    pub fn nodes(&self, cluster: &str) -> String {
        self.key(&format!("clusters/{cluster}/nodes"))
    }

    /// `P/clusters/C/nodes/N`
    pub fn node_override(&self, cluster: &str, node: &str) -> String {
        self.key(&format!("clusters/{cluster}/nodes/{node}"))
    }

    /// `P/clusters/C/members`
    pub fn members(&self, cluster: &str) -> String {
        self.key(&format!("clusters/{cluster}/members"))
    }

    /// `P/clusters/C/history`
    pub fn history(&self, cluster: &str) -> String {
        self.key(&format!("clusters/{cluster}/history"))
    }

    /// `P/rollouts/C`
    pub fn rollout(&self, cluster: &str) -> String {
        self.key(&format!("rollouts/{cluster}"))
    }

    /// `P/observed/C`
    pub fn observed(&self, cluster: &str) -> String {
        self.key(&format!("observed/{cluster}"))
    }

    /// `P/observed/C/N`
    pub fn observed_node(&self, cluster: &str, node: &str) -> String {
        self.key(&format!("observed/{cluster}/{node}"))
    }

    /// `P/plans/NAME`
    pub fn plan(&self, name: &str) -> String {
        self.key(&format!("plans/{name}"))
    }

    /// `P/locks/NAME`
    pub fn lock(&self, name: &str) -> String {
        self.key(&format!("locks/{name}"))
    }

    /// `P/locks`
    pub fn locks(&self) -> String {
        self.key("locks")
    }

    /// Whether a key relative to the prefix is where a document of the view
    /// lives (`clusters/web/desired`), rather than above or inside one.
    pub fn is_document(relative: &str) -> bool {
        let segments: Vec<&str> = relative.split('/').collect();
        matches!(
            segments.as_slice(),
            ["defaults"]
                | ["clusters", _, "schema" | "desired" | "history" | "members"]
                | ["clusters", _, "nodes", _]
                | ["rollouts", _]
                | ["plans", _]
                | ["observed", _, _]
        )
    }

    /// Splits a key relative to the prefix into the document that holds it
    /// and the path inside that document: `clusters/web/desired/app/port`
    /// is `app.port` of the document `clusters/web/desired`. Keys above the
    /// documents (`clusters/web`) are their own root.
    pub fn document_of(relative: &str) -> (String, Vec<&str>) {
        let segments: Vec<&str> = relative.split('/').collect();
        let depth = match segments.as_slice() {
            ["defaults", ..] => 1,
            ["clusters", _, "nodes", _, ..] => 4,
            ["clusters", _, "schema" | "desired" | "history" | "members", ..] => 3,
            ["rollouts", _, ..] | ["plans", _, ..] => 2,
            ["observed", _, _, ..] => 3,
            _ => segments.len(),
        };
        let depth = depth.min(segments.len());
        (segments[..depth].join("/"), segments[depth..].to_vec())
    }

    /// The key relative to the prefix, or `None` when it is outside it.
    pub fn relative<'k>(&self, key: &'k str) -> Option<&'k str> {
        key.strip_prefix(self.prefix.as_str())?.strip_prefix('/')
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_reject_separators_dots_whitespace_and_controls() {
        for bad in [
            "", "a/b", "..", ".", "a..b", "a b", "a\tb", "a\u{7}b", "web\n",
        ] {
            assert!(check_name(NameKind::Node, bad).is_err(), "{bad:?} accepted");
        }
        for good in ["web-01", "db.example.com", "a_b", "x", "9lives", "WEB-01"] {
            assert!(check_name(NameKind::Node, good).is_ok(), "{good:?} refused");
        }
        assert!(check_name(NameKind::Node, &"a".repeat(254)).is_err());
    }

    #[test]
    fn names_that_become_options_words_or_placeholders_are_refused() {
        for bad in [
            "-oProxyCommand=touch${IFS}PWNED",
            "$(id)",
            ";id",
            "--help",
            "{cluster}",
            "{node}",
            "`id`",
            "a|b",
            "_x",
            ".hidden",
            "Ünïcode",
        ] {
            let err = check_name(NameKind::Node, bad).unwrap_err();
            assert!(err.starts_with("invalid node name"), "{err}");
        }
    }

    #[test]
    fn invisible_and_bidi_characters_are_refused_in_names_and_prefixes() {
        for bad in [
            "we\u{200B}b",
            "web\u{202E}10-",
            "w\u{FEFF}eb",
            "web\u{2066}",
        ] {
            let err = check_name(NameKind::Cluster, bad).unwrap_err();
            // The message shows the hidden character, not a look-alike.
            assert!(err.contains("\\u{"), "{err}");
            assert!(bad.parse::<Prefix>().is_err(), "prefix {bad:?} accepted");
        }
    }

    #[test]
    fn error_names_the_kind_and_the_name() {
        let err = check_name(NameKind::Cluster, "a/b").unwrap_err();
        assert!(err.contains("cluster name \"a/b\""), "{err}");
        assert!(err.contains("`/`"), "{err}");
    }

    #[test]
    fn prefix_may_have_several_segments() {
        let p: Prefix = "apps/convergent".parse().unwrap();
        assert_eq!(p.segments().collect::<Vec<_>>(), ["apps", "convergent"]);
        assert!("apps//x".parse::<Prefix>().is_err());
        assert!("/apps".parse::<Prefix>().is_err());
        assert!("a/../b".parse::<Prefix>().is_err());
    }

    #[test]
    fn keys_inside_documents_find_their_document() {
        assert_eq!(
            Layout::document_of("clusters/web/desired/app/port"),
            ("clusters/web/desired".to_string(), vec!["app", "port"])
        );
        assert_eq!(
            Layout::document_of("clusters/web/nodes/web-07/state"),
            ("clusters/web/nodes/web-07".to_string(), vec!["state"])
        );
        assert_eq!(
            Layout::document_of("defaults"),
            ("defaults".to_string(), vec![])
        );
        assert_eq!(
            Layout::document_of("clusters/web"),
            ("clusters/web".to_string(), vec![])
        );
        assert_eq!(
            Layout::document_of("observed/web/web-01/generation"),
            ("observed/web/web-01".to_string(), vec!["generation"])
        );
    }

    #[test]
    fn layout_builds_keys_under_the_prefix() {
        let l = Layout::new(&Prefix::default());
        assert_eq!(l.desired("web"), "convergent/clusters/web/desired");
        assert_eq!(
            l.node_override("web", "web-07"),
            "convergent/clusters/web/nodes/web-07"
        );
        assert_eq!(l.rollout("web"), "convergent/rollouts/web");
        assert_eq!(l.relative("convergent/defaults"), Some("defaults"));
        assert_eq!(l.relative("convergentx/defaults"), None);
    }
}
