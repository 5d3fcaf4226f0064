//! `get` and `export`: reading documents and whole views out of the store
//! (`import` has its own module).

use serde_json::{Map, Value};

use crate::atomic_file;
use crate::cli::{ExportArgs, GetArgs};
use crate::commands::Context;
use crate::document::{fold, get_path};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::output::{self, Format};
use crate::store::{Entry, Store};
use crate::view_file;

/// Runs `get`.
pub fn get(ctx: &Context, args: &GetArgs) -> Result<()> {
    let format = ctx.format("get", &[Format::Json, Format::Yaml])?;
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
    output::print(&output::render(value, format))
}

/// The store's whole view as a tree nested under the prefix (as a view file
/// holds it), and the entries it was folded from. Only the view's sections
/// are read: locks are not part of a view, and a role on `P/` suffices.
pub(super) fn read_view(ctx: &Context, store: &dyn Store) -> Result<(Value, Vec<Entry>)> {
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
    let format = ctx.format("export", &[Format::Yaml, Format::Json])?;
    let store = ctx.open_store()?;
    let (tree, _) = read_view(ctx, store.as_ref())?;
    let json = format == Format::Json
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
