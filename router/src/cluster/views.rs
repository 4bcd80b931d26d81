//! JSON views of the cluster served by the API and printed by the CLI
//! (shapes documented in docs/CONTRACTS.md).

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wisp_common::{HostId, VmId};

use super::state::{HostStatus, PowerKnown};
use crate::store::Desired;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HostView {
    pub name: HostId,
    pub state: HostStatus,
    pub power: PowerKnown,
    pub address: String,
    pub last_report_age_ms: Option<u64>,
    pub genie_version: Option<String>,
    pub cpu_percent: Option<f32>,
    pub mem_total_bytes: Option<u64>,
    pub mem_used_bytes: Option<u64>,
    pub mem_available_bytes: Option<u64>,
    pub load_avg: Option<[f64; 3]>,
    pub uptime_s: Option<u64>,
    pub vms: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct VmView {
    pub name: VmId,
    /// Where it runs (or, if it runs nowhere, where it is placed).
    pub host: Option<HostId>,
    pub state: String,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub cpu_time_ms: Option<u64>,
    pub pid: Option<u32>,
    pub qmp_socket: Option<PathBuf>,
    pub desired: Option<Desired>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StatusView {
    pub version: String,
    pub uptime_s: u64,
    pub hosts_total: usize,
    pub hosts_up: usize,
    pub vms_total: usize,
    pub vms_running: usize,
    pub energy_mode: bool,
    pub reports_accepted: u64,
    pub reports_dropped: u64,
}
