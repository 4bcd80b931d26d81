//! The API's views are projections of the cluster model: the host rows, the VM rows and
//! the status summary (shapes in `types`). Free functions of a `&Model` rather than
//! model methods, so the model stays plain data and the same projection can be taken
//! of whatever snapshot the cluster task publishes.

use std::collections::HashSet;

use tokio::time::Instant;

use super::types::{HostView, StatusView, VmView, VmViewState};
use crate::cluster::Model;
use crate::model::host::HostStatus;

/// One row per configured host.
pub fn host_views(m: &Model, now: Instant) -> Vec<HostView> {
    m.cluster
        .hosts
        .values()
        .map(|h| HostView {
            name: h.cfg.name.clone(),
            state: h.status(),
            power: h.power(),
            address: h.cfg.address.to_string(),
            last_report_age_ms: h.report_age(now).map(|a| a.as_millis() as u64),
            genie_version: h.link.as_ref().map(|l| l.genie_version.clone()),
            cpu_percent: h.metrics.as_ref().map(|m| m.cpu_percent),
            mem_total_bytes: h.metrics.as_ref().map(|m| m.mem_total_bytes),
            mem_used_bytes: h.metrics.as_ref().map(|m| m.mem_used_bytes),
            mem_available_bytes: h.metrics.as_ref().map(|m| m.mem_available_bytes),
            load_avg: h.metrics.as_ref().map(|m| m.load_avg),
            uptime_s: h.metrics.as_ref().map(|m| m.uptime_s),
            // What a silent host last reported is not current.
            vms: if h.status() == HostStatus::Up || h.status() == HostStatus::Suspect {
                h.vms.len()
            } else {
                0
            },
        })
        .collect()
}

/// One row per VM known anywhere: every copy a connected genie reports, then every
/// stored VM seen nowhere (`not running`), sorted by name and host.
pub fn vm_views(m: &Model) -> Vec<VmView> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    for h in m.cluster.hosts.values() {
        if h.link.is_none() {
            // What an unreachable genie last said is not current.
            continue;
        }
        for v in &h.vms {
            seen.insert(v.id.clone());
            out.push(VmView {
                name: v.id.clone(),
                host: Some(h.cfg.name.clone()),
                state: VmViewState::Reported(v.state.clone()),
                vcpus: v.vcpus,
                mem_mib: v.mem_mib,
                cpu_time_ms: Some(v.cpu_time_ms),
                pid: v.pid,
                qmp_socket: Some(v.qmp_socket.clone()),
                desired: m.persisted.vms.get(&v.id).map(|r| r.desired),
            });
        }
    }
    for (id, r) in &m.persisted.vms {
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
pub fn status_view(m: &Model) -> StatusView {
    let vms = vm_views(m);
    StatusView {
        version: env!("CARGO_PKG_VERSION").into(),
        uptime_s: m.started.elapsed().as_secs(),
        hosts_total: m.cluster.hosts.len(),
        hosts_up: m
            .cluster
            .hosts
            .values()
            .filter(|h| h.status() == HostStatus::Up)
            .count(),
        vms_total: vms.len(),
        vms_running: vms.iter().filter(|v| v.state.is_running()).count(),
        energy_mode: m.persisted.energy_mode,
        reports_accepted: m.reports_accepted,
        reports_dropped: m.reports_dropped,
    }
}
