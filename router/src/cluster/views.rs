//! JSON views of the cluster served by the API and printed by the CLI (shapes
//! documented in docs/CONTRACTS.md): projections of a published [`Snapshot`], so
//! reading them never waits for the cluster task.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use wisp_common::{HostId, VmId};

use std::collections::HashSet;

use super::snapshot::Snapshot;
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

/// The hosts, as `router hosts` shows them.
pub fn host_views(snap: &Snapshot) -> Vec<HostView> {
    snap.hosts
        .iter()
        .map(|h| HostView {
            name: h.name.clone(),
            state: h.status,
            power: h.power,
            address: h.address.clone(),
            last_report_age_ms: h.report_age_ms,
            genie_version: h.genie_version.clone(),
            cpu_percent: h.metrics.as_ref().map(|m| m.cpu_percent),
            mem_total_bytes: h.metrics.as_ref().map(|m| m.mem_total_bytes),
            mem_used_bytes: h.metrics.as_ref().map(|m| m.mem_used_bytes),
            mem_available_bytes: h.metrics.as_ref().map(|m| m.mem_available_bytes),
            load_avg: h.metrics.as_ref().map(|m| m.load_avg),
            uptime_s: h.metrics.as_ref().map(|m| m.uptime_s),
            vms: if h.status == HostStatus::Up || h.status == HostStatus::Suspect {
                h.vms.len()
            } else {
                0
            },
        })
        .collect()
}

/// Every VM: each copy a connected genie reports, and each managed VM that runs
/// nowhere, as `router vms` shows them.
pub fn vm_views(snap: &Snapshot) -> Vec<VmView> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for h in &snap.hosts {
        if !h.linked() {
            // What an unreachable genie last said is not current.
            continue;
        }
        for v in &h.vms {
            seen.insert(v.id.clone());
            out.push(VmView {
                name: v.id.clone(),
                host: Some(h.name.clone()),
                state: v.state.to_string(),
                vcpus: v.vcpus,
                mem_mib: v.mem_mib,
                cpu_time_ms: Some(v.cpu_time_ms),
                pid: v.pid,
                qmp_socket: Some(v.qmp_socket.clone()),
                desired: snap.records.get(&v.id).map(|r| r.desired),
            });
        }
    }
    for (id, r) in &snap.records {
        if !seen.contains(id) {
            out.push(VmView {
                name: id.clone(),
                host: r.host.clone(),
                state: "not running".into(),
                vcpus: r.spec.vcpus,
                mem_mib: r.spec.mem_mib,
                cpu_time_ms: None,
                pid: None,
                qmp_socket: None,
                desired: Some(r.desired),
            });
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name).then(a.host.cmp(&b.host)));
    out
}

/// The one-screen summary of `router status`.
pub fn status_view(snap: &Snapshot) -> StatusView {
    let vms = vm_views(snap);
    StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: snap
            .taken_at
            .saturating_duration_since(snap.router_started)
            .as_secs(),
        hosts_total: snap.hosts.len(),
        hosts_up: snap
            .hosts
            .iter()
            .filter(|h| h.status == HostStatus::Up)
            .count(),
        vms_total: vms.len(),
        vms_running: vms.iter().filter(|v| v.state == "running").count(),
        energy_mode: snap.energy_mode,
        reports_accepted: snap.reports_accepted,
        reports_dropped: snap.reports_dropped,
    }
}
