//! `convergent`: let Chef recipes follow a fleet-wide desired state kept in a
//! shared data view, and move that state through transitions by writing only
//! the view. See README.md for the tour and DESIGN.md for the contract.
//!
//! Where things are:
//! - [`cli`] parses the command line, [`config`] layers it over the
//!   environment and the config file, [`commands`] runs each command.
//! - [`store`] is the shared view behind one trait, one backend per file;
//!   [`entry`] is the key/value it hands back and [`env`] the environment
//!   seam, both below everything that uses them.
//! - [`document`] folds keys into documents and merges them; [`resolve`]
//!   computes a node's desired state from the layers of [`layout`];
//!   [`constraints`] are what one cluster requires of another, and
//!   [`compatible`] holds a node to a state whose constraints are met.
//! - [`rollout`] holds ranks, rollout records and plans; [`schema`] the
//!   allowed states; [`history`] who changed what; [`update`] the
//!   compare-and-set loop; [`cache`] the last-known-good results;
//!   [`local_file`] reads the local files we are given, within limits, and
//!   [`yaml_text`] bounds and redacts the YAML in them.

pub mod atomic_file;
pub mod build_info;
pub mod cache;
pub mod cli;
pub mod clock;
pub mod commands;
pub mod compatible;
pub mod config;
pub mod constraints;
pub mod document;
pub mod entry;
pub mod env;
pub mod error;
pub mod fleet;
pub mod health;
pub mod history;
pub mod layout;
pub mod local_file;
pub mod node_attributes;
pub mod output;
pub mod report;
pub mod resolve;
pub mod rollout;
pub mod schema;
pub mod skew;
pub mod store;
pub mod suggest;
pub mod update;
pub mod view;
pub mod view_file;
pub mod yaml;
pub mod yaml_text;
