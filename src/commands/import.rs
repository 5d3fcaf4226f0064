//! `import`: load a view file into the store. The store must hold a valid
//! view once the file is laid over it (the file alone with `--replace`); the
//! schema's transitions hold as they do for `set` (`--force` overrides, and
//! says so in the history); every document changed is recorded in its
//! cluster's history; `--dry-run` and `--diff` show the changes key by key.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::cli::ImportArgs;
use crate::commands::transfer::read_view;
use crate::commands::Context;
use crate::document::encode_value;
use crate::error::{Error, Result};
use crate::history::{self, diff, Change, FieldChange};
use crate::layout::Layout;
use crate::output::{self, count, Format};
use crate::schema::{state_of, Schema};
use crate::store::{Compare, Entry, Op, StoreUrl, Txn, TxnOutcome};
use crate::{view, view_file};

/// What an import changes (or would), for people and scripts.
#[derive(Serialize)]
struct ImportReport {
    file: String,
    store: String,
    dry_run: bool,
    /// Documents in the file.
    documents: usize,
    /// Documents whose content changes, with what changes in each.
    changed: Vec<DocumentChange>,
    /// Keys deleted: documents the file lacks (with --replace) and sub-keys
    /// a document written whole replaces.
    deleted: Vec<String>,
    /// Transitions the schema refuses, let through by --force.
    forced: Vec<String>,
}

#[derive(Serialize)]
struct DocumentChange {
    key: String,
    changes: Vec<FieldChange>,
}

/// Runs `import`.
pub fn import(ctx: &Context, args: &ImportArgs) -> Result<()> {
    let format = ctx.format("import", &[Format::Table, Format::Json, Format::Yaml])?;
    let prefix = &ctx.settings.prefix;
    let file_tree = view::rebase(view_file::read(&args.file)?.1, prefix);
    let layout = ctx.layout();
    let store = ctx.open_store_consistent()?;
    // Importing into a file store creates the file.
    let creating = matches!(&ctx.settings.store, StoreUrl::File { path } if !path.exists());
    let (before, existing) = if creating {
        (Value::Object(Map::new()), Vec::new())
    } else {
        read_view(ctx, store.as_ref())?
    };
    let mut after = before.clone();
    if args.replace {
        after = file_tree.clone();
    } else {
        view::overlay(&mut after, &file_tree, prefix);
    }
    let checked = view::split(&after, prefix);
    if !checked.problems.is_empty() {
        return Err(Error::Invalid {
            subject: format!(
                "view {}{}",
                args.file.display(),
                if args.replace {
                    ""
                } else {
                    " (laid over the store's view)"
                }
            ),
            problems: checked.problems,
        });
    }
    let old_docs: BTreeMap<String, Value> =
        view::split(&before, prefix).documents.into_iter().collect();
    let new_docs: BTreeMap<String, Value> = checked.documents.into_iter().collect();
    let documents = view::split(&file_tree, prefix).documents;

    let refused = refused_transitions(&layout, &old_docs, &new_docs);
    if !refused.is_empty() && !args.force {
        return Err(Error::Invalid {
            subject: format!("import of {}", args.file.display()),
            problems: refused
                .into_iter()
                .map(|p| format!("{p} (--force lets it through, recorded in the history)"))
                .collect(),
        });
    }

    // What changes, document by document.
    let mut changed: Vec<DocumentChange> = old_docs
        .keys()
        .chain(new_docs.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|key| old_docs.get(*key) != new_docs.get(*key))
        .map(|key| DocumentChange {
            key: key.clone(),
            changes: diff(old_docs.get(key), new_docs.get(key)),
        })
        .collect();
    // A cluster's history is the record of changes, not one of them.
    changed.retain(|c| {
        let is_history = layout
            .relative(&c.key)
            .is_some_and(|r| r.starts_with("clusters/") && r.ends_with("/history"));
        !is_history && (!c.changes.is_empty() || !old_docs.contains_key(&c.key))
    });

    let doc_keys: BTreeSet<&str> = documents.iter().map(|(k, _)| k.as_str()).collect();
    let under = |key: &str, root: &str| key == root || key.starts_with(&format!("{root}/"));
    let mut ops = Vec::new();
    let mut deleted = Vec::new();
    if args.replace {
        // Named by document, whatever shape the store keeps them in.
        deleted.extend(
            old_docs
                .keys()
                .filter(|k| !new_docs.contains_key(*k))
                .cloned(),
        );
    }
    for entry in &existing {
        if doc_keys.contains(entry.key.as_str()) {
            continue;
        }
        let folded_into_a_document = doc_keys.iter().any(|d| under(&entry.key, d));
        if folded_into_a_document || args.replace {
            // A key outside every document (a stray one) is named too.
            let in_a_document = old_docs
                .keys()
                .any(|d| under(&entry.key, d) || under(d, &entry.key));
            if args.replace && !folded_into_a_document && !in_a_document {
                deleted.push(entry.key.clone());
            }
            ops.push(Op::Delete {
                key: entry.key.clone(),
            });
        }
    }
    for (key, doc) in &documents {
        ops.push(Op::Put {
            key: key.clone(),
            value: encode_value(doc),
        });
    }
    // Each cluster the import changes gets what changed in its history,
    // written in the same transaction, compared so a concurrent `set` is
    // not lost.
    let compares = record_history(
        ctx,
        args,
        &layout,
        &existing,
        (&old_docs, &new_docs),
        &changed,
        &refused,
        &mut ops,
    )?;
    // A history kept (and appended to) is not deleted.
    deleted.retain(|k| {
        !ops.iter()
            .any(|op| matches!(op, Op::Put { key, .. } if key == k))
    });

    let report = ImportReport {
        file: args.file.display().to_string(),
        store: store.describe(),
        dry_run: args.preview.dry_run,
        documents: documents.len(),
        changed,
        deleted,
        forced: refused,
    };
    if !args.preview.dry_run {
        // One transaction where the store allows (the file store always
        // does); past a store's limits, several — after checking that each
        // document fits in one, so a refusal writes nothing.
        let limits = store.txn_limits();
        if let Some(op) = limits.oversized(&ops) {
            return Err(Error::bad_key(
                op.key(),
                format!(
                    "this document is {} bytes, more than {} takes in one transaction; nothing was imported",
                    op.size(),
                    store.describe()
                ),
            ));
        }
        let mut compares = Some(compares);
        for ops in limits.split(ops) {
            match store.commit(&Txn {
                compares: compares.take().unwrap_or_default(),
                ops,
            })? {
                TxnOutcome::Committed { .. } => {}
                TxnOutcome::Conflict => {
                    return Err(Error::Conflict {
                        key: layout.clusters(),
                        reason: "a cluster's history changed while importing (another writer); nothing was imported, run it again".into(),
                    })
                }
            }
        }
    }
    match format {
        Format::Table => {
            output::print_text(&report.to_text(args.preview.diff || args.preview.dry_run))
        }
        format => output::print(&output::render(&report, format)),
    }
}

/// The state changes the cluster schemas' transitions refuse: a cluster's
/// desired state, and a node override's state against the state the node
/// had before.
fn refused_transitions(
    layout: &Layout,
    old: &BTreeMap<String, Value>,
    new: &BTreeMap<String, Value>,
) -> Vec<String> {
    let state = |docs: &BTreeMap<String, Value>, key: &str| -> Option<String> {
        docs.get(key)
            .and_then(|d| state_of(d).ok().flatten())
            .map(str::to_string)
    };
    let mut refused = Vec::new();
    for (key, doc) in new {
        let Some(relative) = layout.relative(key) else {
            continue;
        };
        let parts: Vec<&str> = relative.split('/').collect();
        let (cluster, before) = match parts.as_slice() {
            ["clusters", c, "desired"] => (*c, state(old, key)),
            ["clusters", c, "nodes", _] => (
                *c,
                state(old, key).or_else(|| state(old, &layout.desired(c))),
            ),
            _ => continue,
        };
        let Some(schema) = new
            .get(&layout.schema(cluster))
            .and_then(|s| Schema::from_document(&layout.schema(cluster), s).ok())
        else {
            continue;
        };
        let Ok(Some(to)) = state_of(doc) else {
            continue;
        };
        if let Err(problem) = schema.check_transition(before.as_deref(), to) {
            refused.push(format!("{key}: {problem}"));
        }
    }
    refused
}

/// Appends one history entry per changed document of each cluster, puts the
/// histories among `ops`, and returns the compares that keep them safe.
#[allow(clippy::too_many_arguments)]
fn record_history(
    ctx: &Context,
    args: &ImportArgs,
    layout: &Layout,
    existing: &[Entry],
    (old_docs, new_docs): (&BTreeMap<String, Value>, &BTreeMap<String, Value>),
    changed: &[DocumentChange],
    forced: &[String],
    ops: &mut Vec<Op>,
) -> Result<Vec<Compare>> {
    let mut by_cluster: BTreeMap<&str, Vec<&DocumentChange>> = BTreeMap::new();
    for c in changed {
        let Some(relative) = layout.relative(&c.key) else {
            continue;
        };
        let parts: Vec<&str> = relative.split('/').collect();
        if let ["clusters", cluster, part, ..] = parts.as_slice() {
            // A cluster the import creates is a view being loaded (a new
            // store, a restore): it starts with the file's history, if any.
            // One the import removes (--replace) goes with its history.
            let defined = |docs: &BTreeMap<String, Value>| {
                [layout.desired(cluster), layout.schema(cluster)]
                    .iter()
                    .any(|k| docs.contains_key(k))
            };
            if *part != "history" && defined(old_docs) && defined(new_docs) {
                by_cluster.entry(cluster).or_default().push(c);
            }
        }
    }
    let mut compares = Vec::new();
    for (cluster, changes) in by_cluster {
        let key = layout.history(cluster);
        // The file's own history (an export being restored), else the
        // store's: even --replace keeps the record of what happened.
        let mut history = new_docs.get(&key).or_else(|| old_docs.get(&key)).cloned();
        for c in changes {
            let mut change = Change::now(
                ctx.env,
                "import",
                &c.key,
                c.changes.clone(),
                args.reason.clone(),
            );
            change.forced = forced
                .iter()
                .any(|f| f.starts_with(&format!("{}: ", c.key)));
            history = Some(history::append(history.as_ref(), &key, change)?);
        }
        // Whatever entries hold the history (itself, its sub-keys, or a
        // whole section above it as the file store reads) must not change.
        let related = |e: &&Entry| {
            e.key == key
                || e.key.starts_with(&format!("{key}/"))
                || key.starts_with(&format!("{}/", e.key))
        };
        let holding: Vec<&Entry> = existing.iter().filter(related).collect();
        if holding.is_empty() {
            compares.push(Compare::Absent { key: key.clone() });
        }
        compares.extend(holding.into_iter().map(|e| Compare::Version {
            key: e.key.clone(),
            version: e.version,
        }));
        // One op per key (etcd refuses a transaction naming a key twice):
        // the history's put replaces a delete or put of it.
        ops.retain(|op| op.key() != key);
        ops.push(Op::Put {
            key,
            value: encode_value(&history.expect("at least one change")),
        });
    }
    Ok(compares)
}

impl ImportReport {
    fn to_text(&self, diff: bool) -> String {
        let mut out = String::new();
        if diff {
            for c in &self.changed {
                out.push_str(&history::diff_text(&c.key, &c.changes));
            }
        }
        for f in &self.forced {
            out.push_str(&format!("forced: {f}\n"));
        }
        out.push_str(&format!(
            "{} {} from {} into {}: {} changed",
            if self.dry_run {
                "would import"
            } else {
                "imported"
            },
            count(self.documents, "document"),
            self.file,
            self.store,
            count(self.changed.len(), "document"),
        ));
        if self.deleted.is_empty() {
            out.push('\n');
        } else {
            out.push_str(&format!(
                ", {} deleted:\n{}",
                count(self.deleted.len(), "key"),
                self.deleted
                    .iter()
                    .map(|k| format!("  {k}\n"))
                    .collect::<String>()
            ));
        }
        if self.dry_run {
            out.push_str("dry run: nothing was written\n");
        }
        out
    }
}
