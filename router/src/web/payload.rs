//! The dashboard's picture of the cluster at one moment, as JSON: the API's own host
//! and VM rows (so the page and the CLI never disagree), each host with the names of
//! its VMs and each VM with the operation in flight and its migration's progress, the
//! energy status and the kWh saved today.

use serde::Serialize;
use wisp_common::proto::MigrationProgress;
use wisp_common::VmId;

use crate::api::types::{HostView, Op, VmView};
use crate::api::views;
use crate::energy::EnergyStatus;
use crate::model::snapshot::Snapshot;

#[derive(Serialize)]
struct HostRow {
    #[serde(flatten)]
    view: HostView,
    /// Stored flag: the operator put it in maintenance (its state says so too while
    /// it is heard).
    maintenance: bool,
    /// The names of the VMs reported there, for the host's card.
    vm_names: Vec<VmId>,
}

#[derive(Serialize)]
struct VmRow {
    #[serde(flatten)]
    view: VmView,
    op: Option<Op>,
    migration: Option<MigrationProgress>,
}

#[derive(Serialize)]
struct Payload<'a> {
    at_ms: u64,
    hosts: Vec<HostRow>,
    vms: Vec<VmRow>,
    energy: &'a EnergyStatus,
    saved_today_kwh: f64,
    /// Since when "today" counts: midnight UTC, or this router's start if later.
    today_since_ms: u64,
}

/// The frame's JSON. Serializing plain data cannot fail; if it ever did, the page
/// gets an `error` it shows rather than a frame it cannot read.
pub fn build(
    snap: &Snapshot,
    energy: &EnergyStatus,
    now_ms: u64,
    saved_today_kwh: f64,
    today_since_ms: u64,
) -> String {
    let vm_rows = views::vm_views(snap);
    let hosts = views::host_views(snap)
        .into_iter()
        .map(|view| {
            let vm_names = vm_rows
                .iter()
                .filter(|v| v.host.as_ref() == Some(&view.name) && v.cpu_time_ms.is_some())
                .map(|v| v.name.clone())
                .collect();
            let maintenance = snap.host(&view.name).is_some_and(|h| h.maintenance);
            HostRow {
                view,
                maintenance,
                vm_names,
            }
        })
        .collect();
    let vms = vm_rows
        .into_iter()
        .map(|view| VmRow {
            op: snap.ops.get(&view.name).cloned(),
            migration: snap.progress.get(&view.name).cloned(),
            view,
        })
        .collect();
    let p = Payload {
        at_ms: now_ms,
        hosts,
        vms,
        energy,
        saved_today_kwh,
        today_since_ms,
    };
    serde_json::to_string(&p).unwrap_or_else(|e| {
        serde_json::json!({ "error": format!("cannot encode the cluster picture: {e}") })
            .to_string()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_cluster_is_a_frame_with_empty_lists() {
        let st = EnergyStatus::default();
        let json = build(&Snapshot::empty(), &st, 42, 0.5, 7);
        let v: serde_json::Value = serde_json::from_str(&json).expect("JSON");
        assert_eq!(v["at_ms"], 42);
        assert_eq!(v["hosts"], serde_json::json!([]));
        assert_eq!(v["vms"], serde_json::json!([]));
        assert_eq!(v["saved_today_kwh"], 0.5);
        assert_eq!(v["energy"]["enabled"], false);
    }
}
