//! `validate`: check a view file or a plan file without touching a store.

use crate::cli::ValidateArgs;
use crate::commands::Context;
use crate::error::{Error, Result};
use crate::output;
use crate::rollout::plan::Plan;
use crate::{view, view_file};

/// Runs `validate`.
pub fn run(ctx: &Context, args: &ValidateArgs) -> Result<()> {
    let (text, tree) = view_file::read(&args.file)?;
    let file = args.file.display();
    if tree.get("steps").is_some() {
        let plan = Plan::parse(&args.file, &text)?;
        let clusters: Vec<&str> = plan.steps.iter().map(|s| s.cluster.as_str()).collect();
        return output::print(&format!(
            "{file}: valid plan {:?}: {} ({})\n",
            plan.name,
            output::count(plan.steps.len(), "step"),
            clusters.join(" -> ")
        ));
    }
    let split = view::split(&tree, &ctx.settings.prefix);
    if !split.problems.is_empty() {
        return Err(Error::Invalid {
            subject: format!("view {file}"),
            problems: split.problems,
        });
    }
    output::print(&format!(
        "{file}: valid view: {}, {}, {}, {}\n",
        output::count(split.clusters, "cluster"),
        output::count(split.node_overrides, "node override"),
        output::count(split.rollouts, "rollout"),
        output::count(split.documents.len(), "document")
    ))
}
