//! `validate`: check a view file or a plan file without touching a store.

use serde_json::json;

use crate::cli::ValidateArgs;
use crate::commands::Context;
use crate::error::{Error, Result};
use crate::output::{self, count, Format};
use crate::rollout::graph;
use crate::rollout::plan::Plan;
use crate::{view, view_file};

/// Runs `validate`.
pub fn run(ctx: &Context, args: &ValidateArgs) -> Result<()> {
    let format = ctx.format("validate", &[Format::Table, Format::Json, Format::Yaml])?;
    let (text, tree) = view_file::read(&args.file)?;
    let file = args.file.display();
    if tree.get("steps").is_some() {
        let plan = Plan::parse(&args.file, &text)?;
        let clusters: Vec<&str> = plan.steps.iter().map(|s| s.cluster.as_str()).collect();
        if format != Format::Table {
            let result = json!({
                "file": file.to_string(), "valid": true, "kind": "plan",
                "name": plan.name, "steps": plan.steps.len(), "clusters": clusters,
            });
            return output::print(&output::render(&result, format));
        }
        return output::print_text(&format!(
            "{file}: valid plan {:?}: {} ({})\n",
            plan.name,
            count(plan.steps.len(), "step"),
            graph::summary(&plan)
        ));
    }
    let split = view::split(
        &view::rebase(tree, &ctx.settings.prefix),
        &ctx.settings.prefix,
    );
    if !split.problems.is_empty() {
        return Err(Error::Invalid {
            subject: format!("view {file}"),
            problems: split.problems,
        });
    }
    if format != Format::Table {
        let result = json!({
            "file": file.to_string(), "valid": true, "kind": "view",
            "clusters": split.clusters, "node_overrides": split.node_overrides,
            "rollouts": split.rollouts, "documents": split.documents.len(),
        });
        return output::print(&output::render(&result, format));
    }
    output::print_text(&format!(
        "{file}: valid view: {}, {}, {}, {}\n",
        count(split.clusters, "cluster"),
        count(split.node_overrides, "node override"),
        count(split.rollouts, "rollout"),
        count(split.documents.len(), "document")
    ))
}
