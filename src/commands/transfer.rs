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
use crate::store::{Entry, Op, StoreUrl, Txn, TxnOutcome};
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

/// Runs `import`: checks the whole file first, then writes every document
/// (replacing sub-keys it was folded from) in one transaction.
pub fn import(ctx: &Context, args: &ImportArgs) -> Result<()> {
    let (_, tree) = view_file::read(&args.file)?;
    let split = view::split(&tree, &ctx.settings.prefix);
    if !split.problems.is_empty() {
        return Err(Error::Invalid {
            subject: format!("view {}", args.file.display()),
            problems: split.problems,
        });
    }
    let layout = ctx.layout();
    let store = ctx.open_store()?;
    // Importing into a file store creates the file.
    let creating = matches!(&ctx.settings.store, StoreUrl::File { path } if !path.exists());
    let sections: Vec<String> = Layout::SECTIONS.iter().map(|s| layout.key(s)).collect();
    let existing: Vec<Entry> = if creating {
        Vec::new()
    } else {
        store
            .read_trees(&sections)?
            .trees
            .into_iter()
            .flatten()
            .collect()
    };

    let doc_keys: BTreeSet<&str> = split.documents.iter().map(|(k, _)| k.as_str()).collect();
    let under = |key: &str, root: &str| key == root || key.starts_with(&format!("{root}/"));
    let mut txn = Txn::default();
    for entry in &existing {
        if doc_keys.contains(entry.key.as_str()) {
            continue;
        }
        let folded_into_a_document = doc_keys.iter().any(|d| under(&entry.key, d));
        if folded_into_a_document || args.replace {
            txn.ops.push(Op::Delete {
                key: entry.key.clone(),
            });
        }
    }
    let deleted = txn.ops.len();
    for (key, doc) in &split.documents {
        txn.ops.push(Op::Put {
            key: key.clone(),
            value: encode_value(doc),
        });
    }
    // One transaction where the store allows (the file store always does);
    // past a store's limits, several.
    for ops in store.txn_limits().split(txn.ops) {
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
        split.documents.len(),
        args.file.display(),
        store.describe(),
        if deleted > 0 {
            format!(", {deleted} other keys deleted")
        } else {
            String::new()
        }
    ))
}

/// Runs `export`: the whole view, nested under the prefix, as `import` reads it.
pub fn export(ctx: &Context, args: &ExportArgs) -> Result<()> {
    let layout = ctx.layout();
    let store = ctx.open_store()?;
    // The view's sections, read in one call; locks are not part of a view.
    let sections: Vec<String> = Layout::SECTIONS.iter().map(|s| layout.key(s)).collect();
    let snapshot = store.read_trees(&sections)?;
    let mut view = Map::new();
    for ((name, key), entries) in Layout::SECTIONS.iter().zip(&sections).zip(&snapshot.trees) {
        if let Some(section) = fold(key, entries)? {
            view.insert(name.to_string(), section.doc);
        }
    }
    let view = Value::Object(view);
    let segments: Vec<&str> = ctx.settings.prefix.segments().collect();
    let tree = segments.iter().rev().fold(view, |inner, segment| {
        Value::Object(Map::from_iter([(segment.to_string(), inner)]))
    });
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
