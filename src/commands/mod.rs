//! One file per command; `run` dispatches.

pub mod attributes;
mod edit;
mod explain;
mod manual;
mod report;
mod rollout;
mod status;
mod transfer;
mod validate;
pub mod watch;

use clap::CommandFactory;

use crate::cli::{Cli, Command, NodeTarget};
use crate::config::{process_env, Env, Settings};
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

    /// The output format: the one asked for, else the command's default.
    pub fn format_or(&self, default: Format) -> Format {
        self.settings.format.unwrap_or(default)
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

/// Runs a parsed command line.
pub fn run(cli: Cli) -> Result<()> {
    run_with_env(cli, &process_env)
}

/// Runs a parsed command line against a given environment.
pub fn run_with_env(cli: Cli, env: Env) -> Result<()> {
    // These describe the binary itself: no settings, no config file.
    match &cli.command {
        Command::Completions(args) => {
            let mut out = Vec::new();
            clap_complete::generate(args.shell, &mut Cli::command(), "convergent", &mut out);
            return crate::output::print(&String::from_utf8_lossy(&out));
        }
        Command::Version => {
            return crate::output::print(&format!("convergent {}\n", crate::build_info::VERSION));
        }
        Command::Man(args) => return manual::run(args),
        _ => {}
    }
    let ctx = Context {
        settings: Settings::load(&cli.global, env)?,
        env,
    };
    match &cli.command {
        Command::Attributes(args) => attributes::run(&ctx, args),
        Command::Explain(args) => explain::run(&ctx, args),
        Command::Report(args) => report::run(&ctx, args),
        Command::Status(args) => status::run(&ctx, args),
        Command::Watch(args) => watch::run(&ctx, args),
        Command::Rollout(args) => rollout::run(&ctx, args),
        Command::Get(args) => transfer::get(&ctx, args),
        Command::Set(args) => edit::set(&ctx, args),
        Command::Unset(args) => edit::unset(&ctx, args),
        Command::Import(args) => transfer::import(&ctx, args),
        Command::Export(args) => transfer::export(&ctx, args),
        Command::Validate(args) => validate::run(&ctx, args),
        Command::Completions(_) | Command::Version | Command::Man(_) => {
            unreachable!("handled above")
        }
    }
}
