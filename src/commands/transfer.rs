//! `get`, `import` and `export`: moving documents and whole views between
//! files and the store.

use std::collections::BTreeSet;

use serde_json::{Map, Value};

use crate::atomic_file;
use crate::cli::{ExportArgs, GetArgs, ImportArgs};
use crate::commands::Context;
use crate::document::{encode_value, fold, get_path};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::output::{self, Format};
use crate::store::{Entry, Op, Store, StoreUrl, Txn, TxnOutcome};
use crate::{view, view_file};

/// Runs `get`.
pub fn get(ctx: &Context, args: &GetArgs) -> Result<()> {
    let relative = args.key.trim_matches('/');
    if relative.is_empty()
        || relative
            .split('/')
            .any(|s| s.is_empty() || s == "." || s == "..")
    {
        return Err(Error::Usage(format!(
            "{:?} is not a key: give it relative to the prefix, e.g. clusters/web/desired",
            args.key
        )));
    }
    let layout = ctx.layout();
    let key = layout.key(relative);
    // The value may sit inside a document stored whole at a key above it.
    let (document, inner) = Layout::document_of(relative);
    let root = layout.key(&document);
    let store = ctx.open_store()?;
    let (entries, _) = store.read_tree(&root)?;
    let folded = fold(&root, &entries)?.map(|s| s.doc);
    let inner: Vec<String> = inner.iter().map(|s| s.to_string()).collect();
    let value = folded
        .as_ref()
        .and_then(|doc| get_path(doc, &inner))
        .ok_or_else(|| Error::bad_key(&key, "nothing is stored at this key"))?;
    output::print(&output::render(value, ctx.format_or(Format::Json)))
}

/// Runs `import`: checks that the store will hold a valid view once the file
/// is laid over it (the file alone with `--replace`), then writes every
/// document of the file, replacing sub-keys it was folded from, in one
/// transaction where the store allows.
pub fn import(ctx: &Context, args: &ImportArgs) -> Result<()> {
    let (_, file_tree) = view_file::read(&args.file)?;
    let prefix = &ctx.settings.prefix;
    let store = ctx.open_store()?;
    // Importing into a file store creates the file.
    let creating = matches!(&ctx.settings.store, StoreUrl::File { path } if !path.exists());
    let (mut after, existing) = if creating {
        (Value::Object(Map::new()), Vec::new())
    } else {
        read_view(ctx, store.as_ref())?
    };
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
    let documents = view::split(&file_tree, prefix).documents;

    let doc_keys: BTreeSet<&str> = documents.iter().map(|(k, _)| k.as_str()).collect();
    let under = |key: &str, root: &str| key == root || key.starts_with(&format!("{root}/"));
    let mut ops = Vec::new();
    for entry in &existing {
        if doc_keys.contains(entry.key.as_str()) {
            continue;
        }
        let folded_into_a_document = doc_keys.iter().any(|d| under(&entry.key, d));
        if folded_into_a_document || args.replace {
            ops.push(Op::Delete {
                key: entry.key.clone(),
            });
        }
    }
    let deleted = ops.len();
    for (key, doc) in &documents {
        ops.push(Op::Put {
            key: key.clone(),
            value: encode_value(doc),
        });
    }
    // One transaction where the store allows (the file store always does);
    // past a store's limits, several — after checking that each document
    // fits in one, so a refusal writes nothing.
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
    for ops in limits.split(ops) {
        match store.commit(&Txn {
            compares: Vec::new(),
            ops,
        })? {
            TxnOutcome::Committed { .. } => {}
            TxnOutcome::Conflict => unreachable!("a transaction without compares cannot conflict"),
        }
    }
    output::print(&format!(
        "imported {} documents from {} into {}{}\n",
        documents.len(),
        args.file.display(),
        store.describe(),
        if deleted > 0 {
            format!(", {deleted} other keys deleted")
        } else {
            String::new()
        }
    ))
}

/// The store's whole view as a tree nested under the prefix (as a view file
/// holds it), and the entries it was folded from. Only the view's sections
/// are read: locks are not part of a view, and a role on `P/` suffices.
fn read_view(ctx: &Context, store: &dyn Store) -> Result<(Value, Vec<Entry>)> {
    let layout = ctx.layout();
    let sections: Vec<String> = Layout::SECTIONS.iter().map(|s| layout.key(s)).collect();
    let snapshot = store.read_trees(&sections)?;
    let mut view = Map::new();
    for ((name, key), entries) in Layout::SECTIONS.iter().zip(&sections).zip(&snapshot.trees) {
        if let Some(section) = fold(key, entries)? {
            view.insert(name.to_string(), section.doc);
        }
    }
    let segments: Vec<&str> = ctx.settings.prefix.segments().collect();
    let tree = segments
        .iter()
        .rev()
        .fold(Value::Object(view), |inner, segment| {
            Value::Object(Map::from_iter([(segment.to_string(), inner)]))
        });
    Ok((tree, snapshot.trees.into_iter().flatten().collect()))
}

/// Runs `export`: the whole view, nested under the prefix, as `import` reads it.
pub fn export(ctx: &Context, args: &ExportArgs) -> Result<()> {
    let store = ctx.open_store()?;
    let (tree, _) = read_view(ctx, store.as_ref())?;
    let json = ctx.format_or(Format::Yaml) == Format::Json
        || args
            .output
            .as_ref()
            .is_some_and(|p| p.extension().is_some_and(|e| e == "json"));
    let bytes = view_file::render(&tree, json);
    match &args.output {
        Some(path) => atomic_file::write(path, &bytes, None),
        None => output::print(&String::from_utf8_lossy(&bytes)),
    }
}
