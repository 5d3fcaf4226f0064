//! `fleet`: the tools behind `scripts/bench` and `scripts/simulate`, built on
//! the `convergent` library. Not part of the product.
//!
//! ```text
//! fleet view --nodes N [--rollout]            a view of N web nodes, as YAML, on stdout
//! fleet simulate --store URL --nodes N ...    N simulated nodes in one process
//! fleet proxy --to H:P --stats FILE           a counting HTTP proxy on loopback
//! fleet watchers --store URL --count N ...    N real `watch` agent loops in one process
//! fleet mark FILE                             the agents' program: logs its start
//! ```
//!
//! Run with `cargo run --release --example fleet -- SUBCOMMAND …`.

mod proxy;
mod simulate;
mod view;
mod watchers;

use std::process::ExitCode;
use std::time::Duration;

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let result = match args.first().map(String::as_str) {
        Some("view") => view::run(&args[1..]),
        Some("simulate") => simulate::run(&args[1..]),
        Some("proxy") => proxy::run(&args[1..]),
        Some("watchers") => watchers::run(&args[1..]),
        Some("mark") => watchers::mark(&args[1..]),
        _ => Err(
            "usage: fleet view|simulate|proxy|watchers|mark [OPTIONS] (see examples/fleet/main.rs)"
                .into(),
        ),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fleet: {e}");
            ExitCode::from(2)
        }
    }
}

/// `--name VALUE` options of a subcommand, each at most once.
pub struct Options {
    pairs: Vec<(String, String)>,
    flags: Vec<String>,
}

impl Options {
    /// Parses `args`; names in `flags` take no value.
    pub fn parse(args: &[String], flags: &[&str]) -> Result<Options, String> {
        let mut out = Options {
            pairs: Vec::new(),
            flags: Vec::new(),
        };
        let mut it = args.iter();
        while let Some(arg) = it.next() {
            let name = arg
                .strip_prefix("--")
                .ok_or_else(|| format!("unexpected argument {arg:?}"))?;
            if flags.contains(&name) {
                out.flags.push(name.to_string());
            } else {
                let value = it.next().ok_or_else(|| format!("--{name} needs a value"))?;
                out.pairs.push((name.to_string(), value.clone()));
            }
        }
        Ok(out)
    }

    /// The value of `--name`, if given.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.pairs
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The value of `--name`, which must be given.
    pub fn required(&self, name: &str) -> Result<&str, String> {
        self.get(name)
            .ok_or_else(|| format!("--{name} is required"))
    }

    /// `--name` parsed, or `default`.
    pub fn parsed<T: std::str::FromStr>(&self, name: &str, default: T) -> Result<T, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| format!("--{name} {v:?} is not valid")),
        }
    }

    /// A duration option (`30s`, `500ms`).
    pub fn duration(&self, name: &str, default: Duration) -> Result<Duration, String> {
        match self.get(name) {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v).map_err(|e| format!("--{name} {v:?}: {e}")),
        }
    }

    /// Whether the flag `--name` was given.
    pub fn flag(&self, name: &str) -> bool {
        self.flags.iter().any(|f| f == name)
    }
}

/// The name of web node `i` (from 1): `web-00001`.
pub fn node_name(i: usize) -> String {
    format!("web-{i:05}")
}
