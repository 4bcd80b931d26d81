//! Maintenance mode: `router maintenance on HOST` takes a host out of the pool and
//! live-migrates every VM away, after which it can be powered off safely; `off`
//! returns it to the pool.

use wisp_common::error::chain;
use wisp_common::HostId;

use super::commands::{ChooseTarget, Evacuation, SetMaintenance};
use crate::api::types::MaintenanceReport;
use crate::cluster::ClusterHandle;
use crate::vms::migrate::migrate;
use crate::vms::VmError;

/// Turns maintenance on (evacuating the host) or off.
pub async fn set(c: &ClusterHandle, host: HostId, on: bool) -> Result<MaintenanceReport, VmError> {
    let Evacuation { vms, migration } = c
        .run(SetMaintenance {
            host: host.clone(),
            on,
        })
        .await
        .ok_or(VmError::Shutdown)??;
    let mut migrated = Vec::new();
    let mut failed = Vec::new();
    for vm in vms {
        let target = c
            .run(ChooseTarget { vm: vm.clone() })
            .await
            .ok_or(VmError::Shutdown)?;
        match target {
            Ok(to) => match migrate(c, vm.clone(), to.clone(), migration).await {
                Ok(r) => migrated.push(r),
                Err(e) => failed.push((vm, chain(&e))),
            },
            Err(e) => failed.push((vm, e.to_string())),
        }
    }
    let message = if !on {
        format!("{host} is back in the pool")
    } else if failed.is_empty() {
        format!(
            "{host} is in maintenance and empty ({} VMs migrated): it can be powered off",
            migrated.len()
        )
    } else {
        format!(
            "{host} is in maintenance but {} VMs could not be moved: do not power it off yet",
            failed.len()
        )
    };
    Ok(MaintenanceReport {
        host,
        maintenance: on,
        migrated,
        failed,
        message,
    })
}
