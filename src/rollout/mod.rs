//! Rollouts: moving a cluster's desired state batch by batch.
//!
//! The node side lives here from the start (a node must resolve whether it is
//! released): [`rank`] gives each node its stable place in a rollout, and
//! [`record`] reads the rollout record the orchestrator keeps at `P/rollouts/C`.
//! [`plan`] is the orchestrator's input file.

pub mod batches;
pub mod compat;
pub mod control;
pub mod graph;
pub mod kick;
pub mod orchestrator;
pub mod plan;
pub mod preflight;
pub mod rank;
pub mod record;
pub mod standing;
pub mod state;
