//! Shell completion: clap's scripts, plus, for bash and fish, cluster and
//! node names completed from the store (`convergent complete-names`, a
//! hidden command the scripts call with the user's own settings).

use clap_complete::Shell;
use serde_json::Value;

use crate::cli::CompleteNamesArgs;
use crate::commands::Context;
use crate::document::fold;
use crate::entry::Entry;
use crate::error::Result;
use crate::layout::{check_name, Layout, NameKind};
use crate::output;

/// Completes `--cluster` and `--node` values from the store, then hands
/// everything else to clap's function.
const BASH_NAMES: &str = r#"
_convergent_names() {
    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}" i cluster=""
    case "$prev" in
        --cluster)
            COMPREPLY=($(compgen -W "$(convergent complete-names clusters 2>/dev/null)" -- "$cur"))
            return 0 ;;
        --node)
            for ((i = 1; i < COMP_CWORD - 1; i++)); do
                [[ "${COMP_WORDS[i]}" == --cluster ]] && cluster="${COMP_WORDS[i+1]}"
            done
            COMPREPLY=($(compgen -W "$(convergent complete-names nodes --cluster "$cluster" 2>/dev/null)" -- "$cur"))
            return 0 ;;
    esac
    _convergent "$@"
}
complete -F _convergent_names -o nosort -o bashdefault -o default convergent
"#;

const FISH_NAMES: &str = r#"
complete -c convergent -l cluster -x -a '(convergent complete-names clusters 2>/dev/null)'
complete -c convergent -l node -x -a '(convergent complete-names nodes --cluster (string match -r -- "(?<=--cluster[= ])[^ ]+" (commandline -p)) 2>/dev/null)'
"#;

/// The completion script for `shell`.
pub fn script(shell: Shell) -> String {
    let mut out = Vec::new();
    clap_complete::generate(shell, &mut crate::cli::command(), "convergent", &mut out);
    let mut text = String::from_utf8_lossy(&out).into_owned();
    match shell {
        Shell::Bash => text.push_str(BASH_NAMES),
        Shell::Fish => text.push_str(FISH_NAMES),
        _ => {}
    }
    text
}

/// Runs `complete-names`: the names, one a line; nothing when the store
/// cannot say (a completion must never print an error into a prompt).
pub fn names(ctx: &Context, args: &CompleteNamesArgs) -> Result<()> {
    let names = list(ctx, args).unwrap_or_default();
    // Only well-formed names: nothing a shell could take for syntax.
    let text: String = names
        .into_iter()
        .filter(|n| check_name(NameKind::Node, n).is_ok())
        .map(|n| n + "\n")
        .collect();
    output::print(&text)
}

fn list(ctx: &Context, args: &CompleteNamesArgs) -> Result<Vec<String>> {
    let layout = ctx.layout();
    let roots = match (args.what.as_str(), &args.cluster) {
        ("nodes", Some(cluster)) if check_name(NameKind::Cluster, cluster).is_ok() => {
            known_node_roots(&layout, cluster)
        }
        ("nodes", _) => return Ok(Vec::new()),
        _ => vec![layout.clusters()],
    };
    let store = ctx.open_store()?;
    let snapshot = store.read_trees(&roots)?;
    let mut names = Vec::new();
    for (root, entries) in roots.iter().zip(&snapshot.trees) {
        names.extend(names_in(root, entries)?);
    }
    names.sort();
    names.dedup();
    Ok(names)
}

/// Where a cluster's nodes are named: its reports, its overrides and its
/// static member list.
pub(super) fn known_node_roots(layout: &Layout, cluster: &str) -> Vec<String> {
    vec![
        layout.observed(cluster),
        layout.nodes(cluster),
        layout.members(cluster),
    ]
}

/// The names a tree holds: the keys of the map folded at `root`, or the
/// strings of a list there (a static member list).
pub(super) fn names_in(root: &str, entries: &[Entry]) -> Result<Vec<String>> {
    Ok(match fold(root, entries)?.map(|f| f.doc) {
        Some(Value::Object(map)) => map.keys().cloned().collect(),
        Some(Value::Array(members)) => members
            .iter()
            .filter_map(|m| m.as_str().map(str::to_string))
            .collect(),
        _ => Vec::new(),
    })
}
