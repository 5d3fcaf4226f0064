//! How a [`Txn`] becomes one ZooKeeper `multi`: pure planning from the
//! state of the znodes it touches, so that every assumption is guarded
//! inside the multi (see [`plan`]).

use std::collections::{BTreeSet, HashMap};

use crate::error::{Error, Result};
use crate::store::{Compare, Op, Txn};

/// The server's default `jute.maxbuffer`: it drops a connection whose
/// request is larger.
pub(super) const MAX_PACKET: usize = 0xfffff;
/// What one write request may carry, leaving room for its framing.
pub(super) const MAX_REQUEST_BYTES: usize = 1_000_000;
/// Framing of one operation in a multi, counted generously (headers,
/// version, flags and the ACL of a create).
pub(super) const OP_OVERHEAD: usize = 64;

/// A znode as the plan of a transaction sees it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) struct Node {
    /// Its data version.
    pub version: i32,
    /// Whether it holds a value (directories have empty data).
    pub has_data: bool,
    /// How many children it has.
    pub children: i32,
}

/// One operation of the multi a transaction becomes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Planned {
    Check {
        path: String,
        version: i32,
    },
    Create {
        path: String,
        data: Vec<u8>,
    },
    SetData {
        path: String,
        data: Vec<u8>,
        version: i32,
    },
    Delete {
        path: String,
        version: i32,
    },
}

impl Planned {
    pub(super) fn path(&self) -> &str {
        match self {
            Planned::Check { path, .. }
            | Planned::Create { path, .. }
            | Planned::SetData { path, .. }
            | Planned::Delete { path, .. } => path,
        }
    }

    fn size(&self) -> usize {
        OP_OVERHEAD
            + self.path().len()
            + match self {
                Planned::Create { data, .. } | Planned::SetData { data, .. } => data.len(),
                _ => 0,
            }
    }
}

/// The directories above a znode path, outermost first (`/a/b/c` gives
/// `/a`, `/a/b`).
pub(super) fn ancestors(path: &str) -> impl Iterator<Item = &str> {
    path.match_indices('/')
        .map(|(i, _)| &path[..i])
        .filter(|p| !p.is_empty())
}

fn parent(path: &str) -> Option<&str> {
    path.rsplit_once('/')
        .map(|(p, _)| p)
        .filter(|p| !p.is_empty())
}

fn depth(path: &str) -> usize {
    path.matches('/').count()
}

/// Turns a transaction into one multi, given the current state of every
/// znode it touches and the directories above them (`nodes`, whose compares
/// already hold). Every assumption the plan makes is guarded inside the
/// multi — a version check, or a `create` that fails if the znode appeared —
/// so it applies whole or not at all:
///
/// - each `Version` compare and each `Absent` compare on an existing
///   (data-less) znode is a version check, first;
/// - an `Absent` compare on a missing znode is guarded by creating and then
///   deleting its topmost missing directory, unless the plan creates that
///   directory anyway;
/// - deletes, deepest first: a znode with children keeps them and loses its
///   data; one without is deleted, and so is each directory above it that
///   the delete leaves empty (down to the chroot);
/// - puts: a data update at the version read, or a `create` of the key and
///   of each missing directory above it.
pub(super) fn plan(txn: &Txn, chroot: &str, nodes: &HashMap<String, Option<Node>>) -> Vec<Planned> {
    let mut state: HashMap<String, Node> = nodes
        .iter()
        .filter_map(|(p, n)| n.map(|n| (p.clone(), n)))
        .collect();
    let path_of = |key: &str| format!("{chroot}/{key}");
    let mut guards = Vec::new();
    let mut absent_missing = Vec::new();
    for compare in &txn.compares {
        match compare {
            Compare::Version { key, version } => guards.push(Planned::Check {
                path: path_of(key),
                version: *version as i32,
            }),
            Compare::Absent { key } => {
                let path = path_of(key);
                match state.get(&path) {
                    Some(n) => guards.push(Planned::Check {
                        path,
                        version: n.version,
                    }),
                    None => {
                        let top = ancestors(&path)
                            .chain([path.as_str()])
                            .find(|p| !state.contains_key(*p))
                            .unwrap_or(&path)
                            .to_string();
                        absent_missing.push(top);
                    }
                }
            }
        }
    }

    let puts: Vec<String> = txn
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Put { key, .. } => Some(path_of(key)),
            Op::Delete { .. } => None,
        })
        .collect();
    let mut deletes: Vec<String> = txn
        .ops
        .iter()
        .filter_map(|op| match op {
            Op::Delete { key } => Some(path_of(key)),
            Op::Put { .. } => None,
        })
        .collect();
    deletes.sort_by(|a, b| depth(b).cmp(&depth(a)).then_with(|| a.cmp(b)));
    deletes.dedup();
    let kept_for_a_put = |dir: &str| {
        puts.iter()
            .any(|p| p == dir || p.starts_with(&format!("{dir}/")))
    };

    let mut ops = Vec::new();
    for path in &deletes {
        let Some(node) = state.get(path).copied() else {
            continue;
        };
        if !node.has_data {
            continue;
        }
        if node.children > 0 {
            ops.push(Planned::SetData {
                path: path.clone(),
                data: Vec::new(),
                version: node.version,
            });
            state.insert(
                path.clone(),
                Node {
                    version: node.version + 1,
                    has_data: false,
                    ..node
                },
            );
            continue;
        }
        ops.push(Planned::Delete {
            path: path.clone(),
            version: node.version,
        });
        state.remove(path);
        // Directories this leaves empty go too.
        let mut up = parent(path);
        while let Some(dir) = up {
            let Some(d) = state.get_mut(dir) else { break };
            d.children = d.children.saturating_sub(1);
            let removable =
                dir.len() > chroot.len() && !d.has_data && d.children <= 0 && !kept_for_a_put(dir);
            if !removable {
                break;
            }
            ops.push(Planned::Delete {
                path: dir.to_string(),
                version: d.version,
            });
            state.remove(dir);
            up = parent(dir);
        }
    }

    let mut created = BTreeSet::new();
    for op in &txn.ops {
        let Op::Put { key, value } = op else { continue };
        let path = path_of(key);
        if let Some(node) = state.get_mut(&path) {
            ops.push(Planned::SetData {
                path: path.clone(),
                data: value.clone(),
                version: node.version,
            });
            node.version += 1;
            node.has_data = !value.is_empty();
            continue;
        }
        for dir in ancestors(&path).chain([path.as_str()]) {
            if state.contains_key(dir) {
                continue;
            }
            let data = if dir == path {
                value.clone()
            } else {
                Vec::new()
            };
            ops.push(Planned::Create {
                path: dir.to_string(),
                data,
            });
            created.insert(dir.to_string());
            if let Some(p) = parent(dir).and_then(|p| state.get_mut(p)) {
                p.children = p.children.saturating_add(1);
            }
            state.insert(
                dir.to_string(),
                Node {
                    version: 0,
                    has_data: dir == path && !value.is_empty(),
                    children: 0,
                },
            );
        }
    }

    absent_missing.sort();
    absent_missing.dedup();
    for top in absent_missing {
        if !created.contains(&top) {
            guards.push(Planned::Create {
                path: top.clone(),
                data: Vec::new(),
            });
            guards.push(Planned::Delete {
                path: top,
                version: 0,
            });
        }
    }
    guards.extend(ops);
    guards
}

/// Refuses a multi the server would drop the connection over, naming the
/// biggest value's key.
pub(super) fn check_size(plan: &[Planned], chroot: &str) -> Result<()> {
    let total: usize = plan.iter().map(Planned::size).sum();
    match plan.iter().max_by_key(|op| op.size()) {
        Some(biggest) if total > MAX_REQUEST_BYTES => {
            let path = biggest.path();
            let key = path
                .get(chroot.len() + 1..)
                .unwrap_or(path.trim_start_matches('/'));
            Err(too_big(key, total))
        }
        _ => Ok(()),
    }
}

pub(super) fn too_big(key: &str, size: usize) -> Error {
    Error::bad_key(
        key,
        format!(
            "this change is {size} bytes, more than ZooKeeper takes in one request \
             (jute.maxbuffer, {MAX_PACKET} bytes by default); keep documents well under 1 MiB"
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(version: i32, has_data: bool, children: i32) -> Option<Node> {
        Some(Node {
            version,
            has_data,
            children,
        })
    }

    fn nodes(list: &[(&str, Option<Node>)]) -> HashMap<String, Option<Node>> {
        list.iter().map(|(p, n)| (p.to_string(), *n)).collect()
    }

    fn put(key: &str, value: &str) -> Op {
        Op::Put {
            key: key.into(),
            value: value.as_bytes().to_vec(),
        }
    }

    #[test]
    fn ancestors_and_parents_of_paths() {
        assert_eq!(ancestors("/a/b/c").collect::<Vec<_>>(), ["/a", "/a/b"]);
        assert_eq!(ancestors("/a").count(), 0);
        assert_eq!(parent("/a/b"), Some("/a"));
        assert_eq!(parent("/a"), None);
    }

    #[test]
    fn a_put_updates_at_the_version_read_or_creates_missing_directories() {
        let txn = Txn {
            compares: vec![
                Compare::Version {
                    key: "p/d".into(),
                    version: 3,
                },
                Compare::Absent {
                    key: "p/c/web/x".into(),
                },
            ],
            ops: vec![put("p/d", "1"), put("p/c/web/x", "2")],
        };
        let state = nodes(&[
            ("/p", node(0, false, 1)),
            ("/p/d", node(3, true, 0)),
            ("/p/c", None),
            ("/p/c/web", None),
            ("/p/c/web/x", None),
        ]);
        assert_eq!(
            plan(&txn, "", &state),
            vec![
                Planned::Check {
                    path: "/p/d".into(),
                    version: 3
                },
                Planned::SetData {
                    path: "/p/d".into(),
                    data: b"1".to_vec(),
                    version: 3
                },
                Planned::Create {
                    path: "/p/c".into(),
                    data: vec![]
                },
                Planned::Create {
                    path: "/p/c/web".into(),
                    data: vec![]
                },
                Planned::Create {
                    path: "/p/c/web/x".into(),
                    data: b"2".to_vec()
                },
            ],
            "the creates guard the absent key: no extra guard"
        );
    }

    #[test]
    fn an_absent_key_that_is_not_written_is_guarded_by_create_and_delete() {
        let txn = Txn {
            compares: vec![
                Compare::Absent {
                    key: "p/r/web".into(),
                },
                Compare::Absent { key: "p/e".into() },
            ],
            ops: vec![put("p/d", "1")],
        };
        let state = nodes(&[
            ("/z", node(0, false, 1)),
            ("/z/p", node(0, false, 2)),
            ("/z/p/d", None),
            ("/z/p/r", None),
            ("/z/p/r/web", None),
            ("/z/p/e", node(4, false, 1)),
        ]);
        let planned = plan(&txn, "/z", &state);
        assert_eq!(
            planned,
            vec![
                Planned::Check {
                    path: "/z/p/e".into(),
                    version: 4
                },
                Planned::Create {
                    path: "/z/p/r".into(),
                    data: vec![]
                },
                Planned::Delete {
                    path: "/z/p/r".into(),
                    version: 0
                },
                Planned::Create {
                    path: "/z/p/d".into(),
                    data: b"1".to_vec()
                },
            ]
        );
    }

    #[test]
    fn deleting_a_key_with_children_keeps_them_and_empty_directories_go() {
        // p/a has sub-keys: its value is emptied. p/n/x/y is the last key
        // under p/n/x and p/n: both directories go, p stays (it holds p/a).
        let txn = Txn {
            compares: vec![],
            ops: vec![
                Op::Delete { key: "p/a".into() },
                Op::Delete {
                    key: "p/n/x/y".into(),
                },
            ],
        };
        let state = nodes(&[
            ("/p", node(0, false, 2)),
            ("/p/a", node(2, true, 1)),
            ("/p/n", node(0, false, 1)),
            ("/p/n/x", node(0, false, 1)),
            ("/p/n/x/y", node(7, true, 0)),
        ]);
        assert_eq!(
            plan(&txn, "", &state),
            vec![
                Planned::Delete {
                    path: "/p/n/x/y".into(),
                    version: 7
                },
                Planned::Delete {
                    path: "/p/n/x".into(),
                    version: 0
                },
                Planned::Delete {
                    path: "/p/n".into(),
                    version: 0
                },
                Planned::SetData {
                    path: "/p/a".into(),
                    data: vec![],
                    version: 2
                },
            ]
        );
    }

    #[test]
    fn a_document_replacing_its_sub_keys_keeps_its_own_znode() {
        // update() folds p/d from p/d/state and writes p/d whole.
        let txn = Txn {
            compares: vec![
                Compare::Version {
                    key: "p/d/state".into(),
                    version: 0,
                },
                Compare::Absent { key: "p/d".into() },
            ],
            ops: vec![
                Op::Delete {
                    key: "p/d/state".into(),
                },
                put("p/d", "{}"),
            ],
        };
        let state = nodes(&[
            ("/p", node(0, false, 1)),
            ("/p/d", node(0, false, 1)),
            ("/p/d/state", node(0, true, 0)),
        ]);
        assert_eq!(
            plan(&txn, "", &state),
            vec![
                Planned::Check {
                    path: "/p/d/state".into(),
                    version: 0
                },
                Planned::Check {
                    path: "/p/d".into(),
                    version: 0
                },
                Planned::Delete {
                    path: "/p/d/state".into(),
                    version: 0
                },
                Planned::SetData {
                    path: "/p/d".into(),
                    data: b"{}".to_vec(),
                    version: 0
                },
            ]
        );
    }

    #[test]
    fn the_chroot_is_created_but_never_removed() {
        let txn = Txn {
            compares: vec![],
            ops: vec![Op::Delete { key: "p".into() }],
        };
        let state = nodes(&[("/z", node(0, false, 1)), ("/z/p", node(1, true, 0))]);
        assert_eq!(
            plan(&txn, "/z", &state),
            vec![Planned::Delete {
                path: "/z/p".into(),
                version: 1
            }]
        );
        let txn = Txn {
            compares: vec![],
            ops: vec![put("p", "1")],
        };
        let state = nodes(&[("/y", None), ("/y/z", None), ("/y/z/p", None)]);
        let paths: Vec<String> = plan(&txn, "/y/z", &state)
            .iter()
            .map(|op| op.path().to_string())
            .collect();
        assert_eq!(paths, ["/y", "/y/z", "/y/z/p"]);
    }

    #[test]
    fn oversized_changes_are_refused_naming_the_key() {
        let plan = vec![Planned::SetData {
            path: "/p/big".into(),
            data: vec![b'x'; 2 << 20],
            version: 0,
        }];
        let err = check_size(&plan, "").unwrap_err();
        assert_eq!(err.exit_code(), 65);
        assert!(err.to_string().contains("p/big"), "{err}");
        assert!(check_size(
            &[Planned::Check {
                path: "/p".into(),
                version: 0
            }],
            ""
        )
        .is_ok());
    }
}
