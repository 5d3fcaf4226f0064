//! One file per command; `run` dispatches.

pub mod attributes;
mod completion;
mod edit;
mod explain;
pub mod health;
mod history;
mod import;
mod manual;
pub mod report;
mod rollout;
mod status;
mod transfer;
mod validate;
pub mod watch;

use crate::cli::{Cli, Command, NodeTarget};
use crate::config::Settings;
use crate::env::{process_env, Env};
use crate::error::{Error, Result};
use crate::layout::Layout;
use crate::output::Format;
use crate::store::{self, Store, StoreOptions};

/// What every command needs: the settings and the environment.
pub struct Context<'e> {
    /// The effective settings.
    pub settings: Settings,
    /// The environment (a seam for tests).
    pub env: Env<'e>,
}

impl Context<'_> {
    /// The key layout under the configured prefix.
    pub fn layout(&self) -> Layout {
        Layout::new(&self.settings.prefix)
    }

    /// Refuses an `--output` that would overwrite the store's own files
    /// (the file store's view, its locks or temporaries).
    pub fn check_output(&self, output: Option<&std::path::Path>) -> Result<()> {
        match output {
            Some(path) if self.settings.store.owns_file(path) => Err(Error::Usage(format!(
                "--output {} is a file of the store {}: it would overwrite the view",
                path.display(),
                self.settings.store
            ))),
            _ => Ok(()),
        }
    }

    /// Opens the configured store reading only what a quorum confirmed,
    /// for whatever acts on what it reads (the orchestrator): a server that
    /// just restarted must not make it conclude that a record is gone.
    pub fn open_store_consistent(&self) -> Result<Box<dyn Store>> {
        let store = self.open_store()?;
        Ok(store.consistent().unwrap_or(store))
    }

    /// Opens the configured store.
    pub fn open_store(&self) -> Result<Box<dyn Store>> {
        store::open(
            &self.settings.store,
            &StoreOptions {
                timeout: self.settings.timeout,
            },
            self.env,
        )
    }

    /// The output format of `command`, which can print `allowed` (the
    /// first is its default): the one asked for, else the default. A
    /// `--format` flag the command cannot honour is refused (exit 64); a
    /// format from the environment or config file is a default for every
    /// command, so where it does not apply the command's own is used.
    pub fn format(&self, command: &str, allowed: &[Format]) -> Result<Format> {
        if let Some(asked) = self.settings.format_flag {
            if !allowed.contains(&asked) {
                return Err(refuse_format(command, asked, allowed));
            }
            return Ok(asked);
        }
        Ok(self
            .settings
            .format
            .filter(|f| allowed.contains(f))
            .unwrap_or(allowed[0]))
    }

    /// The output format of a node-path command (`attributes`, `report`),
    /// which the cookbook reads: only a `--format` flag changes it, never
    /// the environment or a config file shared with operators.
    pub fn format_from_flag(&self, command: &str, allowed: &[Format]) -> Result<Format> {
        match self.settings.format_flag {
            Some(asked) if !allowed.contains(&asked) => Err(refuse_format(command, asked, allowed)),
            Some(asked) => Ok(asked),
            None => Ok(allowed[0]),
        }
    }

    /// The cluster and node of a node command, from the flags or else the
    /// environment / config file.
    pub fn node_target(&self, target: &NodeTarget) -> Result<(String, String)> {
        let cluster = target
            .cluster
            .clone()
            .or_else(|| self.settings.cluster.clone());
        let node = target.node.clone().or_else(|| self.settings.node.clone());
        match (cluster, node) {
            (Some(c), Some(n)) => Ok((c, n)),
            (c, _) => Err(Error::Usage(format!(
                "missing --{}: name it on the command line, with CONVERGENT_{}, or in the config file",
                if c.is_none() { "cluster" } else { "node" },
                if c.is_none() { "CLUSTER" } else { "NODE" },
            ))),
        }
    }
}

/// The usage error for a `--format` a command cannot honour.
pub fn refuse_format(command: &str, asked: Format, allowed: &[Format]) -> Error {
    let names: Vec<&str> = allowed.iter().map(|f| f.name()).collect();
    Error::Usage(if names.is_empty() {
        format!(
            "--format {} does not apply to `{command}`: it takes no --format",
            asked.name()
        )
    } else {
        format!(
            "--format {} does not apply to `{command}`: it prints {}",
            asked.name(),
            names.join(" or ")
        )
    })
}

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    run_with_env(cli, &process_env)
}

/// Runs a parsed command line and reports a failure on stderr: as one JSON
/// object when JSON output was asked for, else as one line. The exit code.
pub fn main(cli: Cli) -> i32 {
    let json_errors = cli.global.format.or_else(|| {
        process_env("CONVERGENT_FORMAT").and_then(|f| clap::ValueEnum::from_str(&f, true).ok())
    }) == Some(Format::Json);
    match run(cli) {
        Ok(()) => crate::error::exit::OK,
        Err(e) => {
            if json_errors {
                crate::output::stderr_line(&e.to_json());
            } else {
                crate::output::warn(&format!("convergent: error: {e}"));
            }
            e.exit_code()
        }
    }
}

/// Runs a parsed command line against a given environment.
pub fn run_with_env(cli: Cli, env: Env) -> Result<()> {
    // These describe the binary itself: no settings, no config file.
    match &cli.command {
        Command::Completions(args) => {
            if let Some(asked) = cli.global.format {
                return Err(refuse_format("completions", asked, &[]));
            }
            return crate::output::print(&completion::script(args.shell));
        }
        Command::Version => {
            if let Some(asked) = cli.global.format {
                return Err(refuse_format("version", asked, &[]));
            }
            return crate::output::print(&format!("convergent {}\n", crate::build_info::VERSION));
        }
        Command::Man(args) => return manual::run(args),
        _ => {}
    }
    let ctx = Context {
        settings: Settings::load(&cli.global.flags(), env)?,
        env,
    };
    match &cli.command {
        Command::Attributes(args) => attributes::run(&ctx, args),
        Command::Explain(args) => explain::run(&ctx, args),
        Command::Report(args) => report::run(&ctx, args),
        Command::Health(args) => health::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::Watch(args) => watch::run(&ctx, args),
        Command::Rollout(args) => rollout::run(&ctx, args),
        Command::Get(args) => transfer::get(&ctx, args),
        Command::Set(args) => edit::set(&ctx, args),
        Command::Unset(args) => edit::unset(&ctx, args),
        Command::History(args) => history::show(&ctx, args),
        Command::Revert(args) => history::revert(&ctx, args),
        Command::Import(args) => import::import(&ctx, args),
        Command::Export(args) => transfer::export(&ctx, args),
        Command::Validate(args) => validate::run(&ctx, args),
        Command::Completions(_) | Command::Version | Command::Man(_) => {
            unreachable!("handled above")
        }
        Command::CompleteNames(args) => completion::names(&ctx, args),
    }
}
