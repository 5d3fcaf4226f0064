//! The command line, as clap parses it. Values are checked here only as far
//! as their type goes; [`crate::config`] layers them over the environment and
//! the config file.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::clock::HumanDuration;
use crate::layout::Prefix;
use crate::output::Format;
use crate::report::ReportStatus;

/// Let Chef recipes follow a fleet-wide desired state kept in a shared data
/// view (Consul KV, etcd, ZooKeeper or a YAML file).
#[derive(Debug, Parser)]
#[command(
    name = "convergent",
    version,
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

/// What `attributes` does when the store cannot be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum OnUnreachable {
    /// Serve the last-known-good result, marked stale, within --max-stale.
    Cache,
    /// Fail with exit 69.
    Fail,
}

/// The commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Resolve a node's desired state and print it as JSON node attributes
    Attributes(AttributesArgs),
    /// Show every resolved value with the layer and key that set it, and the rollout reasoning
    Explain(ExplainArgs),
    /// Record what a node converged to (its check-in), from the attributes file its run used
    Report(ReportArgs),
    /// Fleet view of a cluster: per node desired vs observed generation, check-in age, rollout
    Status(StatusArgs),
    /// Node agent: run a command when this node's resolved desired state changes
    Watch(WatchArgs),
    /// The orchestrator: move clusters through a plan's steps, batch by batch
    Rollout(RolloutArgs),
    /// Print the document at KEY (relative to the prefix), folded from its sub-keys
    Get(GetArgs),
    /// Change a cluster's (or one node's) desired state: compare-and-set, schema-checked
    Set(SetArgs),
    /// Remove keys from a cluster's (or one node's) desired document
    Unset(UnsetArgs),
    /// Load a YAML (or JSON) view file into the store
    Import(ImportArgs),
    /// Print the whole view as YAML (or JSON), in the format `import` reads
    Export(ExportArgs),
    /// Check a view or plan file without touching a store
    Validate(ValidateArgs),
    /// Print a shell completion script
    Completions(CompletionsArgs),
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

    /// Exit 1 unless every present member has converged (for monitoring)
    #[arg(long)]
    pub check: bool,
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

    /// Wait a random time up to this long before each run, so that a fleet
    /// does not run all at once
    #[arg(long, value_name = "DURATION", default_value = "0s")]
    pub splay: HumanDuration,

    /// Where to write the attributes file the program reads
    /// [default: next to the cache file, CLUSTER/NODE.attributes.json]
    #[arg(long, value_name = "FILE")]
    pub output: Option<PathBuf>,

    /// Also look again this often, in case a change notice was missed
    #[arg(long, value_name = "DURATION", default_value = "5m")]
    pub interval: HumanDuration,
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
    /// Resume a paused rollout (then run its plan again to go on)
    Resume(RolloutControlArgs),
    /// Stop releasing for good, keeping the record (rollback remains possible)
    Abort(RolloutControlArgs),
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
pub struct RolloutRollbackArgs {
    /// The cluster whose rollout to take back
    pub cluster: String,

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

    /// Allow creating a cluster that does not exist yet
    #[arg(long)]
    pub create: bool,

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

    /// Why, recorded in the cluster's history
    #[arg(long, value_name = "TEXT")]
    pub reason: Option<String>,

    /// Dotted keys to remove
    #[arg(value_name = "KEY", required_unless_present = "all")]
    pub keys: Vec<String>,
}

#[derive(Debug, Args)]
pub struct ImportArgs {
    /// The view file (YAML, or JSON)
    pub file: PathBuf,

    /// Also delete documents the file does not have (locks are kept)
    #[arg(long)]
    pub replace: bool,
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
pub struct CompletionsArgs {
    /// The shell
    #[arg(value_enum)]
    pub shell: clap_complete::Shell,
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn the_command_line_is_well_formed() {
        Cli::command().debug_assert();
    }
}
