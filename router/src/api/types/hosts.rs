//! Host and cluster shapes of the API: the host rows of `GET /v1/hosts`, the summary of
//! `GET /v1/status`, maintenance (`POST /v1/hosts/{name}/maintenance`) and the SLA
//! report of `GET /v1/sla`.

use serde::{Deserialize, Serialize};
use wisp_common::{HostId, VmId};

use super::vms::MigrationReport;
use crate::model::host::{HostStatus, PowerKnown};

/// One row of `GET /v1/hosts` (`router hosts --json`).
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
    /// Why it is quarantined (failed to wake by every method; `router power clear`).
    #[serde(default)]
    pub quarantine: Option<String>,
    /// Median measured wake, request to genie heard (`None`: never measured).
    #[serde(default)]
    pub expected_wake_ms: Option<u64>,
    /// Median measured wake per method, from the attempt to the genie heard.
    #[serde(default)]
    pub wake_ms: std::collections::BTreeMap<crate::config::WakeVia, u64>,
    /// Sleep depths the host offers, as its genie learned them: `ram` (suspend to
    /// RAM, in /sys/power/state) and `off` (soft-off, always); empty when not known yet.
    #[serde(default)]
    pub sleep: Vec<String>,
    /// Wake-on-LAN armed on its NIC (`ethtool`), when known.
    #[serde(default)]
    pub wol_armed: Option<bool>,
    /// What its VMs run on (`kvm`, `tcg`), when known.
    #[serde(default)]
    pub accel: Option<String>,
    /// False when the host cannot give guests the cluster's `cpu_model`: it gets no VMs.
    #[serde(default)]
    pub cpu_model_ok: Option<bool>,
    /// Why the accelerator or the CPU model is not as configured.
    #[serde(default)]
    pub virt_note: Option<String>,
}

/// `GET /v1/status` (`router status --json`).
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
    /// `single` (no `[ha]`), `leader` or `follower`: the role of the router asked.
    #[serde(default = "role_single")]
    pub role: String,
    /// The leading router's name (replicated routers; null when none is known).
    #[serde(default)]
    pub leader: Option<String>,
}

fn role_single() -> String {
    "single".into()
}

/// `POST /v1/hosts/{name}/maintenance`.
#[derive(Debug, Serialize, Deserialize)]
pub struct MaintenanceRequest {
    pub on: bool,
}

/// What turning maintenance on or off did.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct MaintenanceReport {
    pub host: HostId,
    pub maintenance: bool,
    pub migrated: Vec<MigrationReport>,
    /// VMs that could not be moved, with the reason.
    pub failed: Vec<(VmId, String)>,
    pub message: String,
}

/// One row of `router sla`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlaRow {
    pub vm: VmId,
    pub availability_30d: f64,
    pub availability_total: f64,
    pub downtime_30d_s: f64,
    pub downtime_total_s: f64,
    pub incidents_30d: usize,
    pub incidents_total: usize,
    pub down_now: bool,
    pub meets_target: bool,
}

/// `GET /v1/sla`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SlaReport {
    pub target: f64,
    pub vms: Vec<SlaRow>,
    /// Mean availability over VMs (30 days).
    pub cluster_availability_30d: f64,
    pub cluster_downtime_30d_s: f64,
    pub cluster_incidents_30d: usize,
}
