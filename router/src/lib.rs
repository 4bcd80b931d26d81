//! router: the brain of wisp. A daemon (`router serve`) that keeps the cluster model
//! from genie reports and drives power, placement, failover and energy saving; and a
//! CLI (`router hosts`, `router vms`, ...) that talks to it over a local HTTP API.

pub mod api;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod daemon;
pub mod energy;
pub mod events;
pub mod ha;
pub mod link;
pub mod metrics;
pub mod model;
pub mod power;
pub mod store;
pub mod vms;
pub mod web;
