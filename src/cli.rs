//! The command line, as clap parses it. Values are checked here only as far
//! as their type goes; [`crate::config`] layers them over the environment and
//! the config file.

use std::path::PathBuf;

use clap::{Args, CommandFactory, FromArgMatches, Parser, Subcommand};

use crate::clock::HumanDuration;
use crate::config::{Flags, OnUnreachable};
use crate::layout::Prefix;
use crate::output::Format;
use crate::report::ReportStatus;

/// Let Chef recipes follow a fleet-wide desired state kept in a shared data
/// view (Consul KV, etcd, ZooKeeper or a YAML file).
#[derive(Debug, Parser)]
#[command(
    name = "convergent",
    version = crate::build_info::VERSION,
    propagate_version = true,
    max_term_width = 100
)]
pub struct Cli {
    #[command(flatten)]
    pub global: GlobalArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Options every command takes. Each can also come from the environment or
/// the config file: flag > environment > config file > default.
#[derive(Debug, Default, Args)]
pub struct GlobalArgs {
    /// Where the view lives: file:PATH, consul://H:P, etcd://H:P[,H:P…], zk://H:P[,H:P…][/chroot]
    /// [env: CONVERGENT_STORE] [default: file:/etc/convergent/view.yml]
    // Parsed in `config`, not by clap: clap would echo a URL carrying a
    // password back in its error message.
    #[arg(long, global = true, value_name = "URL")]
    pub store: Option<String>,

    /// Root of all keys [env: CONVERGENT_PREFIX] [default: convergent]
    #[arg(long, global = true, value_name = "P")]
    pub prefix: Option<Prefix>,

    /// YAML config file [env: CONVERGENT_CONFIG] [default: /etc/convergent/config.yml if present]
    #[arg(long, global = true, value_name = "PATH")]
    pub config: Option<PathBuf>,

    /// Output format, where it applies [env: CONVERGENT_FORMAT]
    #[arg(long, global = true, value_enum)]
    pub format: Option<Format>,

    /// Folder of the last-known-good cache [env: CONVERGENT_CACHE_DIR]
    /// [default: /var/cache/convergent, else a per-user folder]
    #[arg(long, global = true, value_name = "DIR")]
    pub cache_dir: Option<PathBuf>,

    /// Oldest cached result served when the store is unreachable
    /// [env: CONVERGENT_MAX_STALE] [default: 24h]
    #[arg(long, global = true, value_name = "DURATION")]
    pub max_stale: Option<HumanDuration>,

    /// When the store cannot be reached: serve the cache, or fail
    /// [env: CONVERGENT_ON_UNREACHABLE] [default: cache]
    #[arg(long, global = true, value_enum)]
    pub on_unreachable: Option<OnUnreachable>,

    /// Bound on every store request [env: CONVERGENT_TIMEOUT] [default: 5s]
    #[arg(long, global = true, value_name = "DURATION")]
    pub timeout: Option<HumanDuration>,
}

/// The options every command accepts (so a wrapper such as the cookbook can
/// pass the same ones to each), by clap id.
const GLOBAL_IDS: [&str; 8] = [
    "store",
    "prefix",
    "config",
    "format",
    "cache_dir",
    "max_stale",
    "on_unreachable",
    "timeout",
];

/// Which global options a command's `--help` shows: the ones it uses. The
/// others are still accepted, only not advertised.
fn applicable(command: &str) -> &'static [&'static str] {
    const STORE: &[&str] = &["store", "prefix", "config", "format", "timeout"];
    match command {
        "attributes" => &GLOBAL_IDS,
        "watch" => &[
            "store",
            "prefix",
            "config",
            "cache_dir",
            "max_stale",
            "on_unreachable",
            "timeout",
        ],
        "validate" => &["prefix", "config", "format"],
        "completions" | "version" | "man" => &[],
        "complete-names" => &["store", "prefix", "config", "timeout"],
        _ => STORE,
    }
}

/// The command line as clap sees it, with each subcommand's help showing
/// only the global options that apply to it: the others get a hidden copy
/// in that subcommand (clap copies a global option only where a command has
/// none of that name), still accepted, only not advertised.
pub fn command() -> clap::Command {
    let cmd = Cli::command();
    let globals: Vec<clap::Arg> = cmd
        .get_arguments()
        .filter(|a| GLOBAL_IDS.contains(&a.get_id().as_str()))
        .cloned()
        .collect();
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    let mut cmd = cmd;
    for name in names {
        let shown = applicable(&name);
        let hidden: Vec<clap::Arg> = globals
            .iter()
            .filter(|a| !shown.contains(&a.get_id().as_str()))
            .map(|a| a.clone().hide(true))
            .collect();
        cmd = cmd.mut_subcommand(&name, |sub| with_hidden(sub, &hidden));
    }
    cmd
}

/// Adds the hidden copies to a command and to its own subcommands.
fn with_hidden(mut cmd: clap::Command, hidden: &[clap::Arg]) -> clap::Command {
    for arg in hidden {
        cmd = cmd.arg(arg.clone());
    }
    let names: Vec<String> = cmd
        .get_subcommands()
        .map(|s| s.get_name().to_string())
        .collect();
    for name in names {
        cmd = cmd.mut_subcommand(&name, |sub| with_hidden(sub, hidden));
    }
    cmd
}

impl Cli {
    /// Parses the process's command line (see [`command`]).
    pub fn parse_args() -> Result<Cli, clap::Error> {
        let matches = command().try_get_matches()?;
        Cli::from_arg_matches(&matches)
    }
}

impl GlobalArgs {
    /// The flags as [`crate::config`] layers them.
    pub fn flags(&self) -> Flags {
        Flags {
            store: self.store.clone(),
            prefix: self.prefix.clone(),
            config: self.config.clone(),
            format: self.format,
            cache_dir: self.cache_dir.clone(),
            max_stale: self.max_stale,
            on_unreachable: self.on_unreachable,
            timeout: self.timeout,
        }
    }
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve a node's desired state and print it as JSON node attributes
    #[command(
        after_help = "Examples:\n  convergent attributes --cluster web --node web-01\n  convergent attributes --cluster web --node web-01 --output /var/lib/convergent/web.json"
    )]
    Attributes(AttributesArgs),
    /// Show every resolved value with the layer and key that set it, and the rollout reasoning
    #[command(
        after_help = "Examples:\n  convergent explain --cluster web --node web-07\n  convergent explain --cluster web --node web-07 app.workers"
    )]
    Explain(ExplainArgs),
    /// Record what a node converged to (its check-in), from the attributes file its run used
    #[command(
        after_help = "Examples:\n  convergent report --status success --attributes /var/lib/convergent/web.json --duration 41.3\n  convergent report --status failure --attributes /var/lib/convergent/web.json --message Chef::Exceptions::Exec"
    )]
    Report(ReportArgs),
    /// Re-run this node's health checks and re-report its health, without a chef run (for a timer)
    Health(HealthArgs),
    /// Fleet view of a cluster: per node desired vs observed generation, check-in age, rollout
    #[command(
        after_help = "Examples:\n  convergent status --cluster web\n  convergent status --cluster web --check --expect 10 >/dev/null || alert"
    )]
    Status(StatusArgs),
    /// Node agent: run a command when this node's resolved desired state changes
    #[command(
        after_help = "Examples:\n  convergent watch --cluster web --node web-01 --splay 30s --exec chef-client -- -j /var/lib/convergent/web.json"
    )]
    Watch(WatchArgs),
    /// The orchestrator: move clusters through a plan's steps, batch by batch
    #[command(
        after_help = "Examples:\n  convergent rollout run plan.yml --dry-run\n  convergent rollout run plan.yml\n  convergent rollout status web\n  convergent rollout pause web --reason \"error rate\""
    )]
    Rollout(RolloutArgs),
    /// Print the document at KEY (relative to the prefix), folded from its sub-keys
    #[command(
        after_help = "Examples:\n  convergent get clusters/web/desired\n  convergent get clusters/web/nodes/web-07 --format yaml"
    )]
    Get(GetArgs),
    /// Change a cluster's (or one node's) desired state: compare-and-set, schema-checked
    #[command(
        after_help = "Examples:\n  convergent set --cluster web --node web-04 state=off --reason \"disk swap\"\n  convergent set --cluster db version='\"5.10\"' --dry-run\n  convergent set --cluster web app.workers=12 --diff"
    )]
    Set(SetArgs),
    /// Remove keys from a cluster's (or one node's) desired document
    #[command(
        after_help = "Examples:\n  convergent unset --cluster web --node web-04 state\n  convergent unset --cluster web --node web-04 --all"
    )]
    Unset(UnsetArgs),
    /// A cluster's changes (who, when, why, what) and its rollout events, oldest first
    #[command(
        after_help = "Examples:\n  convergent history web\n  convergent history web --limit 5 --format json"
    )]
    History(HistoryArgs),
    /// Undo one change from a cluster's history: a new compare-and-set write
    /// restoring its before-values, itself recorded
    #[command(
        after_help = "Examples:\n  convergent history web\n  convergent revert web 9b79f586 --dry-run\n  convergent revert web 9b79f586 --reason \"wrong node\""
    )]
    Revert(RevertArgs),
    /// Load a YAML (or JSON) view file into the store
    #[command(
        after_help = "Examples:\n  convergent import view.yml --dry-run --diff\n  convergent import view.yml --reason \"restore\"\n  convergent import view.yml --replace"
    )]
    Import(ImportArgs),
    /// Print the whole view as YAML (or JSON), in the format `import` reads
    #[command(
        after_help = "Examples:\n  convergent export > view.yml\n  convergent export --format json --output view.json"
    )]
    Export(ExportArgs),
    /// Check a view or plan file without touching a store
    #[command(
        after_help = "Examples:\n  convergent validate view.yml\n  convergent validate plan.yml"
    )]
    Validate(ValidateArgs),
    /// Print a shell completion script
    #[command(
        after_help = "Examples:\n  convergent completions bash > /etc/bash_completion.d/convergent\n  convergent completions fish > ~/.config/fish/completions/convergent.fish"
    )]
    Completions(CompletionsArgs),
    /// Print the version, the commit and date of the build, the target and the store backends
    Version,
    /// Print the man page (roff), or write every page into a folder
    #[command(hide = true)]
    Man(ManArgs),
    /// Print cluster or node names from the store, one a line, for the
    /// completion scripts (errors print nothing)
    #[command(hide = true)]
    CompleteNames(CompleteNamesArgs),
}

/// Which node to resolve.
#[derive(Debug, Args)]
pub struct NodeTarget {
    /// The cluster [env: CONVERGENT_CLUSTER]
    #[arg(long)]
    pub cluster: Option<String>,

    /// The node [env: CONVERGENT_NODE]
    #[arg(long)]
    pub node: Option<String>,
}

#[derive(Debug, Args)]
pub struct AttributesArgs {
    #[command(flatten)]
    pub target: NodeTarget,

    /// Write the document to FILE atomically instead of printing it
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ExplainArgs {
    #[command(flatten)]
    pub target: NodeTarget,

    /// Only this key of the desired document (dotted, e.g. `app.version`)
    pub key: Option<String>,
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub target: NodeTarget,

    /// How the run ended
    #[arg(long, value_enum)]
    pub status: ReportStatus,

    /// The attributes file the run used (what `attributes --output` wrote);
    /// gives the generation, state, cluster and node (the configured cluster
    /// is only a default; a --cluster or node that disagrees is refused)
    #[arg(
        long,
        value_name = "FILE",
        required_unless_present = "generation",
        conflicts_with = "generation"
    )]
    pub attributes: Option<PathBuf>,

    /// The generation the run applied, when there is no attributes file
    #[arg(long, value_name = "G")]
    pub generation: Option<String>,

    /// The desired `state` the run applied (with --generation)
    #[arg(long, requires = "generation")]
    pub state: Option<String>,

    /// A short message, e.g. the exception class of a failed run
    #[arg(long, value_name = "TEXT")]
    pub message: Option<String>,

    /// How long the run took, in seconds
    #[arg(long, value_name = "SECONDS")]
    pub duration: Option<f64>,

    /// The recipe's health checks (JSON/YAML `{checks: {NAME: CHECK}}`),
    /// run with those of the view (`desired.health`) after a successful run
    #[arg(long, value_name = "FILE")]
    pub checks: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct HealthArgs {
    #[command(flatten)]
    pub target: NodeTarget,

    /// The attributes file the node's last run used (its `desired.health`
    /// gives the view's checks) [default: the node's desired state read
    /// from the store, when it is the one the node converged to]
    #[arg(long, value_name = "FILE")]
    pub attributes: Option<PathBuf>,

    /// The recipe's health checks (as for `report --checks`)
    #[arg(long, value_name = "FILE")]
    pub checks: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct StatusArgs {
    /// The cluster [env: CONVERGENT_CLUSTER]
    #[arg(long)]
    pub cluster: Option<String>,

    /// A member that has not reported for this long is absent
    /// [env: CONVERGENT_MEMBER_TTL] [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub member_ttl: Option<HumanDuration>,

    /// Exit 1 unless every present member has converged, the cluster has
    /// members, and as many are present as expected (for monitoring)
    #[arg(long)]
    pub check: bool,

    /// With --check: at least N members must be present (the cluster's
    /// static members always are expected)
    #[arg(long, value_name = "N", requires = "check")]
    pub expect: Option<usize>,

    /// Also show the constraints other clusters place on this one (the skew
    /// matrix; shown anyway when this cluster declares `requires`)
    #[arg(long)]
    pub skew: bool,
}

#[derive(Debug, Args)]
pub struct WatchArgs {
    #[command(flatten)]
    pub target: NodeTarget,

    /// The program to run when the desired state changes (no shell; its
    /// arguments go after `--`)
    #[arg(long, value_name = "PROGRAM")]
    pub exec: String,

    /// Arguments of the program, after `--`
    #[arg(last = true, value_name = "ARGS")]
    pub args: Vec<String>,

    /// Wait up to this long before each run, so that a fleet does not run
    /// all at once
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub splay: HumanDuration,

    /// How much of the splay to wait: a random share each time, or a fixed
    /// share derived from the cluster and node names (predictable per node)
    #[arg(long, value_enum, default_value = "random")]
    pub splay_from: SplayFrom,

    /// Where to write the attributes file the program reads
    /// [default: next to the cache file, CLUSTER/NODE+attributes.json]
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also look again this often, in case a change notice was missed
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub interval: HumanDuration,

    /// Re-run the health checks and re-report health this often between
    /// runs (0s: never)
    #[arg(long, value_name = "DURATION", default_value = "30s")]
    pub health_interval: HumanDuration,

    /// The recipe's health checks (as for `report --checks`)
    #[arg(long, value_name = "FILE")]
    pub checks: Option<PathBuf>,
}

/// How `watch` picks its wait within the splay.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum SplayFrom {
    /// A random share of the splay before each run.
    Random,
    /// The same share every time for a given node: SPLAY × u, u the rank of
    /// NODE in the id `splay/CLUSTER` (see README, "Rollouts").
    Node,
}

#[derive(Debug, Args)]
pub struct RolloutArgs {
    #[command(subcommand)]
    pub command: RolloutCommand,
}

/// What `rollout` does.
#[derive(Debug, Subcommand)]
pub enum RolloutCommand {
    /// Run a plan, or resume it where its records in the store say it stopped
    Run(RolloutRunArgs),
    /// Show the active rollouts: threshold, released/converged/failed/absent, history
    Status(RolloutStatusArgs),
    /// Pause a cluster's rollout: nothing more is released until `resume`
    Pause(RolloutControlArgs),
    /// Resume a paused rollout, or every paused step of a plan (then run the plan again to go on)
    Resume(RolloutResumeArgs),
    /// Stop releasing for good, keeping the record (rollback remains possible)
    Abort(RolloutControlArgs),
    /// Let a `promote: manual` rollout go on past its first batch (the canary)
    Promote(RolloutControlArgs),
    /// Take a cluster's rollout back, batch by batch, highest ranks first
    Rollback(RolloutRollbackArgs),
}

/// How the orchestrator runs.
#[derive(Debug, Args)]
pub struct OrchestratorArgs {
    /// A node silent for longer is absent: not batched, never waited for
    /// [env: CONVERGENT_MEMBER_TTL] [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub member_ttl: Option<HumanDuration>,

    /// How often to read the fleet while waiting
    #[arg(long, value_name = "DURATION", default_value = "2s")]
    pub poll: HumanDuration,

    /// TTL of the plan's lock: how soon a crashed orchestrator's lock frees itself
    #[arg(long, value_name = "DURATION", default_value = "15s")]
    pub lock_ttl: HumanDuration,

    /// Wait this long for a lock held by someone else instead of failing at once
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub lock_wait: HumanDuration,
}

#[derive(Debug, Args)]
pub struct RolloutRunArgs {
    /// The plan file (YAML)
    pub plan: PathBuf,

    /// Show which current members fall in which batch of each step; write nothing
    #[arg(long)]
    pub dry_run: bool,

    #[command(flatten)]
    pub options: OrchestratorArgs,
}

#[derive(Debug, Args)]
pub struct RolloutStatusArgs {
    /// Only this cluster
    pub cluster: Option<String>,

    /// A node silent for longer is absent [default: 1h]
    #[arg(long, value_name = "DURATION")]
    pub member_ttl: Option<HumanDuration>,
}

#[derive(Debug, Args)]
pub struct RolloutControlArgs {
    /// The cluster whose rollout this is
    pub cluster: String,

    /// Why, recorded in the rollout's history
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct RolloutResumeArgs {
    /// The cluster whose rollout this is
    #[arg(required_unless_present = "plan", conflicts_with = "plan")]
    pub cluster: Option<String>,

    /// Resume every paused step of this plan instead (the step that
    /// stopped and the ones paused with it)
    #[arg(long, value_name = "NAME")]
    pub plan: Option<String>,

    /// Why, recorded in each rollout's history
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct RolloutRollbackArgs {
    /// The cluster whose rollout to take back (its plan's earlier steps stay applied)
    #[arg(required_unless_present = "plan", conflicts_with = "plan")]
    pub cluster: Option<String>,

    /// Roll back a whole plan instead: the step under way, then every done
    /// step, last first, each batch by batch
    #[arg(long, value_name = "NAME")]
    pub plan: Option<String>,

    /// Take every node back at once (emergencies: restarts a whole tier)
    #[arg(long)]
    pub all_at_once: bool,

    #[command(flatten)]
    pub options: OrchestratorArgs,
}

#[derive(Debug, Args)]
pub struct GetArgs {
    /// Key relative to the prefix, e.g. clusters/web/desired
    pub key: String,
}

#[derive(Debug, Args)]
pub struct SetArgs {
    /// The cluster
    #[arg(long)]
    pub cluster: String,

    /// Change this node's override instead of the cluster's desired document
    #[arg(long)]
    pub node: Option<String>,

    /// Allow creating a cluster that does not exist yet, or an override
    /// for a node that never reported and is not a static member
    #[arg(long)]
    pub create: bool,

    #[command(flatten)]
    pub preview: PreviewArgs,

    /// Why, recorded in the cluster's history
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// KEY=VALUE pairs: KEY is dotted (`app.version`); VALUE is JSON where
    /// valid (`5`, `true`, `[1,2]`, `"5.1"`), else a plain string
    #[arg(required = true, value_name = "KEY=VALUE")]
    pub assignments: Vec<String>,
}

#[derive(Debug, Args)]
pub struct UnsetArgs {
    /// The cluster
    #[arg(long)]
    pub cluster: String,

    /// Change this node's override instead of the cluster's desired document
    #[arg(long)]
    pub node: Option<String>,

    /// Remove the node's whole override (with --node)
    #[arg(long, requires = "node", conflicts_with = "keys")]
    pub all: bool,

    #[command(flatten)]
    pub preview: PreviewArgs,

    /// Why, recorded in the cluster's history
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Dotted keys to remove
    #[arg(value_name = "KEY", required_unless_present = "all")]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct HistoryArgs {
    /// The cluster
    pub cluster: String,

    /// Only the latest N lines
    #[arg(long, value_name = "N")]
    pub limit: Option<usize>,
}

#[derive(Debug, Args)]
pub struct RevertArgs {
    /// The cluster
    pub cluster: String,

    /// The change to undo: its ENTRY id from `convergent history CLUSTER`
    pub entry: String,

    #[command(flatten)]
    pub preview: PreviewArgs,

    /// Why, recorded in the cluster's history
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The view file (YAML, or JSON)
    pub file: PathBuf,

    /// Also delete documents the file does not have (locks are kept); each
    /// deleted key is named
    #[arg(long)]
    pub replace: bool,

    #[command(flatten)]
    pub preview: PreviewArgs,

    /// Let state changes through that the cluster schema's transitions
    /// refuse; recorded as forced in the cluster's history
    #[arg(long)]
    pub force: bool,

    /// Why, recorded in the history of each cluster the import changes
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,
}

/// Seeing a write before (or instead of) making it.
#[derive(Debug, Args)]
pub struct PreviewArgs {
    /// Show what would change, key by key, and write nothing
    #[arg(long)]
    pub dry_run: bool,

    /// Show what changes, key by key, as `-`/`+` lines (with --dry-run: what would)
    #[arg(long)]
    pub diff: bool,
}

#[derive(Debug, Args)]
pub struct ExportArgs {
    /// Write to FILE atomically instead of printing
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct ValidateArgs {
    /// A view file or a plan file (a plan has `steps`)
    pub file: PathBuf,
}

#[derive(Debug, Args)]
pub struct CompleteNamesArgs {
    /// `clusters`, or `nodes` (of --cluster)
    #[arg(value_parser = ["clusters", "nodes"])]
    pub what: String,

    /// The cluster whose nodes to list
    #[arg(long)]
    pub cluster: Option<String>,
}

#[derive(Debug, Args)]
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[derive(Debug, Args)]
pub struct ManArgs {
    /// Write convergent.1 and one page per command (convergent-set.1, …) into DIR
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
        command().debug_assert();
    }
}
