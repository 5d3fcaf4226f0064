//! The `convergent` binary: parse, run, print the error once, exit with its code.

use clap::Parser;

use convergent::cli::Cli;
use convergent::error::exit;

fn main() {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            // --help and --version are not errors; anything else is a usage error.
            let code = if e.use_stderr() {
                exit::USAGE
            } else {
                exit::OK
            };
            let _ = e.print();
            std::process::exit(code);
        }
    };
    if let Err(e) = convergent::commands::run(cli) {
        eprintln!("convergent: error: {e}");
        std::process::exit(e.exit_code());
    }
}
