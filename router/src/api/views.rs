//! The API's views are projections of the snapshot the cluster task publishes: the host
//! rows, the VM rows and the status summary (shapes in `types`). Reading them never
//! waits for the cluster task, which may be busy applying reports.

use std::collections::HashSet;

use super::types::{HostView, StatusView, VmView, VmViewState};
use crate::model::host::HostStatus;
use crate::model::snapshot::Snapshot;

/// One row per configured host.
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
            // What a silent host last reported is not current.
            vms: if h.status == HostStatus::Up || h.status == HostStatus::Suspect {
                h.vms.len()
            } else {
                0
            },
            quarantine: h.quarantine.clone(),
            expected_wake_ms: h.expected_wake_ms(),
            wake_ms: h
                .wake
                .methods
                .iter()
                .filter_map(|(m, s)| Some((*m, s.median()?)))
                .collect(),
            sleep: h
                .power_caps
                .as_ref()
                .map(|c| {
                    if c.can_suspend_to_ram() {
                        vec!["ram".to_owned(), "off".to_owned()]
                    } else {
                        vec!["off".to_owned()]
                    }
                })
                .unwrap_or_default(),
            wol_armed: h.power_caps.as_ref().and_then(|c| c.wol_armed()),
            accel: h.virt.as_ref().map(|v| v.accel.clone()),
            cpu_model_ok: h.cpu_model_ok,
            virt_note: match (h.cpu_model_ok, &h.virt) {
                (Some(false), _) => Some(format!(
                    "cannot give guests CPU model {}: gets no VMs",
                    snap.cpu_model
                )),
                (_, Some(v)) => v.accel_note.clone(),
                _ => None,
            },
        })
        .collect()
}

/// One row per VM known anywhere: every copy a connected genie reports, then every
/// stored VM seen nowhere (`not running`), sorted by name and host.
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
                state: VmViewState::Reported(v.state.clone()),
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
                state: VmViewState::NotRunning,
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

/// The one-paragraph summary of `router status`.
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
        vms_running: vms.iter().filter(|v| v.state.is_running()).count(),
        energy_mode: snap.energy_mode,
        reports_accepted: snap.reports_accepted,
        reports_dropped: snap.reports_dropped,
        // A replicated router's API layer says who leads (ha::status).
        role: "single".into(),
        leader: None,
    }
}
