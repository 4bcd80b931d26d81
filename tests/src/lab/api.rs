//! The router CLI's JSON rows (docs/CONTRACTS.md "Router CLI JSON"), typed for tests:
//! hosts, VMs, events and migration reports.
//!
//! Declared here rather than borrowed from the router crate: tests check the contract,
//! not the router's own idea of it. Unknown fields are ignored so additive contract
//! changes do not break the tests.

use serde::Deserialize;

/// One row of `router hosts --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct HostRow {
    pub name: String,
    pub state: String,
    pub power: String,
    pub address: Option<String>,
    pub last_report_age_ms: Option<u64>,
    pub genie_version: Option<String>,
    pub cpu_percent: Option<f64>,
    pub mem_total_bytes: Option<u64>,
    pub mem_used_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    pub load_avg: Option<[f64; 3]>,
    pub uptime_s: Option<u64>,
    pub vms: Option<u64>,
}

/// One row of `router vms --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct VmRow {
    pub name: String,
    pub host: Option<String>,
    pub state: String,
    pub vcpus: Option<u32>,
    pub mem_mib: Option<u64>,
    pub cpu_time_ms: Option<u64>,
    pub pid: Option<u32>,
    pub qmp_socket: Option<String>,
    pub desired: Option<String>,
}

/// One event of `router events --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct EventRow {
    pub at_ms: u64,
    pub kind: String,
    #[serde(default)]
    pub host: Option<String>,
    #[serde(default)]
    pub vm: Option<String>,
    pub message: String,
}

/// `router vm migrate NAME --to HOST --json`.
#[derive(Debug, Clone, Deserialize)]
pub struct MigrationRow {
    pub vm: String,
    pub from: String,
    pub to: String,
    pub total_ms: u64,
    pub downtime_ms: u64,
    pub to_migrate_command_ms: u64,
    pub elapsed_ms: u64,
}
