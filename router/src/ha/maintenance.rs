//! Maintenance mode: `router maintenance on HOST` takes a host out of the pool and
//! live-migrates every VM away, after which it can be powered off safely; `off`
//! returns it to the pool.

use wisp_common::{HostId, VmId};

use crate::api::types::MaintenanceReport;
use crate::cluster::state::HostEvent;
use crate::cluster::ClusterHandle;
use crate::events::EventKind;
use crate::store::Desired;
use crate::vms::migrate::migrate;
use crate::vms::{chain, placement, VmError};

/// Turns maintenance on (evacuating the host) or off.
pub async fn set(c: &ClusterHandle, host: HostId, on: bool) -> Result<MaintenanceReport, VmError> {
    let (id, vms, settings) = c
        .with(move |m| -> Result<_, VmError> {
            let id = host;
            if !m.cluster.hosts.contains_key(&id) {
                return Err(VmError::UnknownHost { host: id });
            }
            let id2 = id.clone();
            m.update(|p| p.hosts.entry(id2).or_default().maintenance = on)
                .map_err(VmError::Store)?;
            m.host_event(&id, HostEvent::MaintenanceSet { on });
            m.event(
                EventKind::Maintenance,
                Some(id.clone()),
                None,
                format!(
                    "host {id} maintenance {}",
                    if on {
                        "on: evacuating"
                    } else {
                        "off: back in the pool"
                    }
                ),
            );
            let vms: Vec<VmId> = if on {
                m.persisted
                    .vms
                    .iter()
                    .filter(|(_, r)| r.host.as_ref() == Some(&id) && r.desired == Desired::Running)
                    .map(|(v, _)| v.clone())
                    .collect()
            } else {
                Vec::new()
            };
            Ok((id, vms, m.config.migration))
        })
        .await
        .ok_or(VmError::Shutdown)??;
    let mut migrated = Vec::new();
    let mut failed = Vec::new();
    for vm in vms {
        let v = vm.clone();
        let target = c
            .with(move |m| {
                let need = m
                    .persisted
                    .vms
                    .get(&v)
                    .map(|r| r.spec.resources())
                    .unwrap_or_default();
                placement::choose(&m.candidates(Some(&v)), need)
            })
            .await
            .ok_or(VmError::Shutdown)?;
        match target {
            Ok(to) => match migrate(c, vm.clone(), to.clone(), settings).await {
                Ok(r) => migrated.push(r),
                Err(e) => failed.push((vm, chain(&e))),
            },
            Err(e) => failed.push((vm, e.to_string())),
        }
    }
    let message = if !on {
        format!("{id} is back in the pool")
    } else if failed.is_empty() {
        format!(
            "{id} is in maintenance and empty ({} VMs migrated): it can be powered off",
            migrated.len()
        )
    } else {
        format!(
            "{id} is in maintenance but {} VMs could not be moved: do not power it off yet",
            failed.len()
        )
    };
    Ok(MaintenanceReport {
        host: id,
        maintenance: on,
        migrated,
        failed,
        message,
    })
}
