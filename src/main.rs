//! The `convergent` binary: parse, run, print the error once, exit with its code.

use convergent::cli::Cli;
use convergent::error::{exit, Error};

fn main() {
    let cli = match Cli::parse_args() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; anything else is a usage error.
            if !e.use_stderr() {
                let _ = e.print();
                std::process::exit(exit::OK);
            }
            if wants_json(std::env::args()) {
                convergent::output::stderr_line(
                    &Error::Usage(e.kind().to_string() + ": " + &first_line(&e)).to_json(),
                );
            } else {
                let _ = e.print();
            }
            std::process::exit(exit::USAGE);
        }
    };
    std::process::exit(convergent::commands::main(cli));
}

/// Whether the command line asks for JSON, read before clap could parse it.
fn wants_json(args: impl Iterator<Item = String>) -> bool {
    let args: Vec<String> = args.collect();
    args.iter().any(|a| a == "--format=json")
        || args
            .windows(2)
            .any(|w| w[0] == "--format" && w[1] == "json")
}

/// The message of a clap error without its `Usage:` block.
fn first_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    text.lines()
        .next()
        .unwrap_or_default()
        .trim_start_matches("error: ")
        .to_string()
}
