//! Command-level tests: the real `convergent` binary, run as a process,
//! against real stores. One binary, a module per topic; tests that hold for
//! every store are written once and instantiated per backend by
//! `store_suite!` (see `support`).

mod support;

mod attributes;
mod cache;
mod config;
mod consul;
mod consul_fixtures;
mod edit;
mod etcd;
mod explain;
mod fleet;
mod health;
mod health_gate;
mod hostile;
mod hostile_output;
mod operator;
mod plan_rollback;
pub(crate) mod rollout;
mod store_api;
mod stores;
mod tier_plans;
mod tiers;
mod tour;
mod transfer;
mod validate;
mod watch;
mod watch_fleet;
mod yaml_readers;
mod zookeeper;
