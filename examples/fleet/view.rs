//! `fleet view`: a realistic view of a fleet of N web nodes, for benchmarks.
//!
//! Defaults, a `web` cluster with a schema, 1% of its nodes with an override
//! (every hundredth), a small `db` cluster, a report from every web node at
//! the generation it resolves to (so `status` has the whole fleet to read),
//! and with `--rollout` an active rollout of `web` half-way through.

use std::io::Write;
use std::path::Path;

use serde_json::{json, Map, Value};

use convergent::clock::now_rfc3339;
use convergent::document::encode_value;
use convergent::layout::{Layout, Prefix};
use convergent::report::{ObservedReport, ReportStatus};
use convergent::resolve::{ClusterInputs, Layer, LayerKind};
use convergent::rollout::plan::Plan;
use convergent::rollout::state::RolloutState;
use convergent::store::Entry;
use convergent::view_file;

use super::{node_name, Options};

/// The plan whose first step the `--rollout` view is part-way through.
const PLAN: &str = "name: bench-2.4.1\nsteps:\n  - cluster: web\n    set: {version: '2.4.1'}\n    strategy: {canary: 1, batch: 10%}\n";

/// Runs `fleet view`.
pub fn run(args: &[String]) -> Result<(), String> {
    let options = Options::parse(args, &["rollout"])?;
    let nodes: usize = options.parsed("nodes", 10)?;
    let tree = fleet_view(nodes, options.flag("rollout"))?;
    std::io::stdout()
        .write_all(&view_file::render(&tree, false))
        .map_err(|e| e.to_string())
}

fn entry(key: &str, doc: &Value) -> Vec<Entry> {
    vec![Entry {
        key: key.to_string(),
        value: encode_value(doc),
        version: 1,
    }]
}

/// The view as a tree under the default prefix.
pub fn fleet_view(nodes: usize, rollout: bool) -> Result<Value, String> {
    let layout = Layout::new(&Prefix::default());
    let defaults = json!({"log_level": "info", "chef": {"interval": "30m"}, "ntp_servers": ["ntp1.example.com", "ntp2.example.com"]});
    let schema = json!({"states": ["off", "waiting", "converged"]});
    let desired =
        json!({"state": "converged", "version": "2.4.0", "app": {"port": 8080, "workers": 8}});
    let record = rollout
        .then(|| {
            let plan = Plan::parse(Path::new("bench-plan.yml"), PLAN).map_err(|e| e.to_string())?;
            let mut state = RolloutState::new(&plan, 0, "bench@fleet");
            state.threshold = 0.5;
            state.peak = 0.5;
            state.batches = 5;
            state.moved_at = Some(now_rfc3339());
            Ok::<Value, String>(state.to_document())
        })
        .transpose()?;

    let inputs = ClusterInputs::from_trees(
        &layout,
        "web",
        &entry(&layout.defaults(), &defaults),
        &entry(&layout.schema("web"), &schema),
        &entry(&layout.desired("web"), &desired),
        &record
            .as_ref()
            .map(|r| entry(&layout.rollout("web"), r))
            .unwrap_or_default(),
    )
    .map_err(|e| e.to_string())?;

    let mut overrides = Map::new();
    let mut observed = Map::new();
    let reported_at = now_rfc3339();
    for i in 1..=nodes {
        let node = node_name(i);
        let node_override = (i % 100 == 0).then(|| {
            if i % 1000 == 0 {
                json!({"state": "off"})
            } else {
                json!({"app": {"workers": 4}})
            }
        });
        let layer = match &node_override {
            Some(doc) => Layer::from_entries(
                LayerKind::NodeOverride,
                &layout.node_override("web", &node),
                &entry(&layout.node_override("web", &node), doc),
            )
            .map_err(|e| e.to_string())?,
            None => None,
        };
        let resolution = inputs
            .resolve(&node, layer.as_ref())
            .map_err(|e| e.to_string())?;
        if let Some(doc) = node_override {
            overrides.insert(node.clone(), doc);
        }
        let report = ObservedReport {
            offers: convergent::constraints::offers(&resolution.desired),
            generation: resolution.generation,
            status: ReportStatus::Success,
            state: resolution.state,
            reported_at: reported_at.clone(),
            duration_s: Some(40.0),
            message: None,
            convergent_version: env!("CARGO_PKG_VERSION").to_string(),
            stale: false,
            version: None,
            health: None,
        };
        observed.insert(node, serde_json::to_value(report).expect("serializes"));
    }

    let mut web = json!({"schema": schema, "desired": desired});
    if !overrides.is_empty() {
        web["nodes"] = Value::Object(overrides);
    }
    let mut root = json!({
        "defaults": defaults,
        "clusters": {
            "web": web,
            "db": {"schema": schema, "desired": {"state": "converged", "version": "5.0"}},
        },
        "observed": {"web": observed},
    });
    if let Some(r) = record {
        root["rollouts"] = json!({"web": r});
    }
    Ok(json!({"convergent": root}))
}
