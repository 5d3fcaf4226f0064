//! `convergent man` (hidden): the man pages, rendered from the command line
//! definition so that they never drift from `--help`. scripts/release ships
//! them in the tarballs and the Debian package.

use std::path::Path;

use crate::atomic_file;
use crate::build_info;
use crate::cli::{self, ManArgs};
use crate::error::Result;

/// Prints convergent(1), or writes every page (convergent.1 and one per
/// command, e.g. convergent-set.1) into `--dir`.
pub fn run(args: &ManArgs) -> Result<()> {
    // A page's title line takes one line: the bare version, not the
    // multi-line `--version` text.
    let mut command = cli::command()
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_subcommand(true);
    command.build();
    match &args.dir {
        None => crate::output::print(&String::from_utf8_lossy(&render(&command))),
        Some(dir) => write_pages(&command, dir),
    }
}

/// Writes the page of `command` and of each visible subcommand, recursively.
fn write_pages(command: &clap::Command, dir: &Path) -> Result<()> {
    for sub in command.get_subcommands().filter(|s| !s.is_hide_set()) {
        write_pages(sub, dir)?;
    }
    let man = clap_mangen::Man::new(command.clone());
    atomic_file::write(&dir.join(man.get_filename()), &render(command), Some(0o644))
}

fn render(command: &clap::Command) -> Vec<u8> {
    let mut out = Vec::new();
    clap_mangen::Man::new(command.clone())
        .date(build_info::BUILD_DATE)
        .render(&mut out)
        .expect("rendering into memory cannot fail");
    out
}
