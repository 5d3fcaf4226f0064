//! The skew matrix `status` shows: which versions each tier runs (from its
//! check-ins) and, for every constraint the view declares between tiers,
//! whether it holds now.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use crate::compatible::Observed;
use crate::constraints::{evaluate, offered, plain, Check};
use crate::error::Result;
use crate::layout::Layout;
use crate::report::ReportStatus;
use crate::rollout::compat::Declared;
use crate::store::Store;

/// Versions live per tier and the constraints between tiers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Skew {
    /// Per cluster involved in a constraint: its live nodes' offered
    /// `version`, with how many run it.
    pub versions: BTreeMap<String, BTreeMap<String, usize>>,
    /// Every constraint: who requires, in which state, and how it fares.
    pub constraints: Vec<SkewRow>,
}

/// One constraint between two tiers.
#[derive(Clone, Debug, Serialize)]
pub struct SkewRow {
    /// The cluster that requires.
    pub cluster: String,
    /// `desired` (its standing state) or `rollout` (its rollout's state).
    pub state: &'static str,
    /// The evaluation against the required cluster's check-ins.
    pub check: Check,
}

/// The skew matrix of the clusters that `cluster` requires or is required
/// by; empty when no constraint involves it.
pub fn read(
    store: &dyn Store,
    layout: &Layout,
    cluster: &str,
    member_ttl: Duration,
    now: SystemTime,
) -> Result<Skew> {
    let declared = Declared::read(store, layout)?;
    let mut observed = Observed::new(store, layout);
    let mut out = Skew::default();
    for (requirer, state, req) in declared.requirements() {
        if requirer != cluster && req.cluster != cluster {
            continue;
        }
        for tier in [&requirer, &req.cluster] {
            if !out.versions.contains_key(tier) {
                let counts = live_versions(observed.reports(tier)?, member_ttl, now);
                out.versions.insert(tier.clone(), counts);
            }
        }
        let check = evaluate(&req, observed.reports(&req.cluster)?, member_ttl, now);
        out.constraints.push(SkewRow {
            cluster: requirer,
            state,
            check,
        });
    }
    Ok(out)
}

fn live_versions(
    reports: &crate::compatible::Reports,
    member_ttl: Duration,
    now: SystemTime,
) -> BTreeMap<String, usize> {
    let mut out = BTreeMap::new();
    for r in reports.values().filter_map(|r| r.as_ref().ok()) {
        let live = r
            .reported_time()
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_none_or(|age| age <= member_ttl);
        if !live {
            continue;
        }
        let version = offered(r, "version").map_or("?".to_string(), |v| plain(&v));
        let label = if r.status == ReportStatus::Success {
            version
        } else {
            format!("{version} (failed)")
        };
        *out.entry(label).or_default() += 1;
    }
    out
}

impl Skew {
    /// The matrix as text, for `status`; empty when no constraint applies.
    pub fn to_text(&self) -> String {
        if self.constraints.is_empty() {
            return String::new();
        }
        let mut out = String::from("\nskew (versions live per tier, from check-ins):\n");
        for (tier, versions) in &self.versions {
            let list: Vec<String> = versions.iter().map(|(v, n)| format!("{v} x{n}")).collect();
            out.push_str(&format!(
                "  {tier:<12} {}\n",
                if list.is_empty() {
                    "no live node".to_string()
                } else {
                    list.join(", ")
                }
            ));
        }
        out.push_str("constraints:\n");
        for row in &self.constraints {
            out.push_str(&format!(
                "  {} {} ({}) requires {}: {} of {} live match, {} needed\n",
                if row.check.met { "holds " } else { "UNMET " },
                row.cluster,
                row.state,
                row.check.requires,
                row.check.matching,
                row.check.live,
                row.check.needed
            ));
        }
        out
    }
}
