//! `attributes`: resolve a node's desired state and print it as JSON node
//! attributes; fall back to the last-known-good cache when the store is down.

use std::time::SystemTime;

use crate::atomic_file;
use crate::cache::{Cache, CacheKey};
use crate::cli::AttributesArgs;
use crate::clock::{format_age, now_rfc3339};
use crate::commands::Context;
use crate::compatible::resolve_compatible;
use crate::config::OnUnreachable;
use crate::error::{Error, Result};
use crate::node_attributes::AttributesDocument;
use crate::output::{self, Format};
use crate::resolve::read_node_inputs;
use crate::store::Store;

/// Runs `attributes`.
pub fn run(ctx: &Context, args: &AttributesArgs) -> Result<()> {
    // The file is for `chef-client -j`: JSON only.
    let format = match args.output {
        Some(_) => ctx.format_from_flag("attributes --output", &[Format::Json])?,
        None => ctx.format_from_flag("attributes", &[Format::Json, Format::Yaml])?,
    };
    let (cluster, node) = ctx.node_target(&args.target)?;
    ctx.check_output(args.output.as_deref())?;
    let (store_url, prefix) = (
        ctx.settings.store.to_string(),
        ctx.settings.prefix.to_string(),
    );
    let key = cache_key(&store_url, &prefix, &cluster, &node);
    let cache = Cache::new(ctx.settings.cache_dir.clone(), ctx.env);

    let store = ctx.open_store();
    let fetched = store.and_then(|store| {
        let seen = cache
            .load(&key, SystemTime::now())
            .ok()
            .and_then(|c| c.attributes.convergent.source.revision);
        fetch_not_behind(ctx, store.as_ref(), seen, &cluster, &node)
    });
    let document = match fetched {
        Ok(document) => {
            // The store answered: a cache that cannot be written (a full or
            // read-only /var) must not stop the run; it only loses the
            // fallback for the next outage, so say so.
            if let Err(e) = cache.save(&key, &document) {
                crate::output::warn(&format!(
                    "convergent: warning: the result could not be cached ({e}); \
                     the next run the store cannot serve has no fallback"
                ));
            }
            document
        }
        Err(e) if e.is_unavailable() && ctx.settings.on_unreachable == OnUnreachable::Cache => {
            from_cache(ctx, &cache, &key, e)?
        }
        Err(e) => return Err(e),
    };

    let text = match format {
        Format::Yaml => output::render(&document, Format::Yaml),
        _ => document.to_json(),
    };
    match &args.output {
        Some(path) => atomic_file::write(path, text.as_bytes(), None),
        None => output::print(&text),
    }
}

/// Reads and resolves a node's attributes from the store.
pub fn fetch(
    ctx: &Context,
    store: &dyn Store,
    cluster: &str,
    node: &str,
) -> Result<AttributesDocument> {
    let fetched_at = now_rfc3339();
    let layout = ctx.layout();
    let inputs = read_node_inputs(store, &layout, cluster, node)?;
    let gated = resolve_compatible(
        store,
        &layout,
        &inputs,
        node,
        ctx.settings.member_ttl,
        SystemTime::now(),
    )?;
    Ok(AttributesDocument::from_gated(
        &gated,
        store.kind(),
        inputs.revision,
        fetched_at,
    ))
}

/// Reads the node's attributes, and when the answer is at a lower revision
/// than the cache recorded (`seen`), reads again consistently: a Consul
/// server restarted and not yet caught up answers default reads with an old
/// index and old data, as if they were current. The consistent answer then
/// stands even if it is still lower — a quorum confirmed it, and a lower
/// revision is legitimate after a snapshot restore or, on Consul (whose
/// revision is the newest `ModifyIndex` among the keys read), after the
/// newest key was deleted. When the consistent read cannot be made, the
/// store counts as unavailable, so the cache is served marked stale (within
/// `--max-stale`) and the old answer never passes as fresh.
pub fn fetch_not_behind(
    ctx: &Context,
    store: &dyn Store,
    seen: Option<u64>,
    cluster: &str,
    node: &str,
) -> Result<AttributesDocument> {
    let document = fetch(ctx, store, cluster, node)?;
    let read = document.convergent.source.revision;
    if !went_back(seen, read) {
        return Ok(document);
    }
    let Some(consistent) = store.consistent() else {
        // Its reads already are the strongest it offers.
        return Ok(document);
    };
    crate::output::warn(&format!(
        "convergent: warning: store {} answered revision {} where this node has already \
         seen {}; reading again consistently",
        store.describe(),
        read.unwrap_or(0),
        seen.unwrap_or(0)
    ));
    fetch(ctx, consistent.as_ref(), cluster, node)
}

/// Whether a read at `read` is behind the revision `seen` before.
fn went_back(seen: Option<u64>, read: Option<u64>) -> bool {
    matches!((seen, read), (Some(seen), Some(read)) if read < seen)
}

/// The cache entry of one node's attributes.
pub fn cache_key<'a>(
    store: &'a str,
    prefix: &'a str,
    cluster: &'a str,
    node: &'a str,
) -> CacheKey<'a> {
    CacheKey {
        store,
        prefix,
        cluster,
        node,
    }
}

/// The cached result marked stale, when one is there and young enough.
fn from_cache(
    ctx: &Context,
    cache: &Cache,
    key: &CacheKey,
    unavailable: Error,
) -> Result<AttributesDocument> {
    let (store, reason) = match unavailable {
        Error::Unavailable { store, reason } => (store, reason),
        other => return Err(other),
    };
    let no_cache = |cache: String| Error::UnavailableNoCache {
        store: store.clone(),
        reason: reason.clone(),
        cache,
    };
    let cached = cache.load(key, SystemTime::now()).map_err(no_cache)?;
    let max_stale = ctx.settings.max_stale.as_secs();
    if cached.age_s > max_stale {
        return Err(no_cache(format!(
            "{} is {} old, more than --max-stale {}",
            cached.path.display(),
            format_age(cached.age_s),
            format_age(max_stale)
        )));
    }
    crate::output::warn(&format!(
        "convergent: warning: store {store} is unavailable ({reason}); using the cached result from {}, fetched {} ago",
        cached.path.display(),
        format_age(cached.age_s)
    ));
    let mut document = cached.attributes;
    document.convergent.source.stale = true;
    document.convergent.source.cache_age_s = Some(cached.age_s);
    Ok(document)
}

#[cfg(test)]
mod tests {
    use super::went_back;

    #[test]
    fn only_a_lower_known_revision_is_behind() {
        assert!(went_back(Some(3300), Some(7)));
        assert!(!went_back(Some(7), Some(7)));
        assert!(!went_back(Some(7), Some(3300)));
        // Nothing to compare: a first run, or a store without revisions.
        assert!(!went_back(None, Some(7)));
        assert!(!went_back(Some(7), None));
    }
}
