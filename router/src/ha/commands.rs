//! High availability's commands to the cluster task: listing the silent hosts the
//! fence reconciler must judge, applying its verdicts, and maintenance mode. The BMC
//! calls and migrations happen off the task, in the callers.

use tokio::time::Instant;
use wisp_common::{HostId, VmId};

use super::fence::{Verdict, Work};
use crate::cluster::{Command, Model};
use crate::config::MigrationConfig;
use crate::events::EventKind;
use crate::model::host::HostEvent;
use crate::store::Desired;
use crate::vms::placement::{self, PlacementError};
use crate::vms::VmError;

/// The silent hosts needing a verdict now; also raises or clears the router's
/// self-suspicion (see [`Model::fence_work`]).
pub(crate) struct FenceWork;

impl Command for FenceWork {
    type Output = Vec<Work>;
    const NAME: &'static str = "list hosts to fence";
    fn apply(self, m: &mut Model) -> Self::Output {
        m.fence_work(Instant::now())
    }
}

/// Applies a fence verdict if the host is still silent: the re-check is
/// [`Model::apply_verdict`]'s, done here on the task because the host may have
/// reported while its BMC was being asked.
pub(crate) struct ApplyVerdict {
    pub host: HostId,
    pub verdict: Verdict,
}

impl Command for ApplyVerdict {
    type Output = ();
    const NAME: &'static str = "apply a fence verdict";
    fn apply(self, m: &mut Model) -> Self::Output {
        m.apply_verdict(&self.host, &self.verdict)
    }
}

/// What turning maintenance on leaves to do.
pub(crate) struct Evacuation {
    /// VMs placed on the host and meant to run: each is to be migrated away.
    pub vms: Vec<VmId>,
    pub migration: MigrationConfig,
}

/// Turns maintenance on or off for `host`: stores the flag first (nothing is
/// acknowledged that was not stored), then the host's `MaintenanceSet` and the
/// `Maintenance` event. When turning it on, lists the VMs to move away, read in the
/// same step as the flag is stored.
pub(crate) struct SetMaintenance {
    pub host: HostId,
    pub on: bool,
}

impl Command for SetMaintenance {
    type Output = Result<Evacuation, VmError>;
    const NAME: &'static str = "set maintenance";
    fn apply(self, m: &mut Model) -> Self::Output {
        let (id, on) = (self.host, self.on);
        if !m.cluster.hosts.contains_key(&id) {
            return Err(VmError::UnknownHost { host: id });
        }
        m.update(|p| p.hosts.entry(id.clone()).or_default().maintenance = on)
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
        Ok(Evacuation {
            vms,
            migration: m.config.migration,
        })
    }
}

/// Where `vm` would go now if it moved (its own resources set aside where it is).
pub(crate) struct ChooseTarget {
    pub vm: VmId,
}

impl Command for ChooseTarget {
    type Output = Result<HostId, PlacementError>;
    const NAME: &'static str = "choose a migration target";
    fn apply(self, m: &mut Model) -> Self::Output {
        let need = m
            .persisted
            .vms
            .get(&self.vm)
            .map(|r| r.spec.resources())
            .unwrap_or_default();
        placement::choose(&m.candidates(Some(&self.vm)), need)
    }
}

/// The SLA report as of now (the book is kept by the cluster task's tick).
pub(crate) struct SlaNow;

impl Command for SlaNow {
    type Output = crate::api::types::SlaReport;
    const NAME: &'static str = "report availability";
    fn apply(self, m: &mut Model) -> Self::Output {
        m.sla_report()
    }
}
