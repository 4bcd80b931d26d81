//! High availability's commands to the cluster task: listing the silent hosts the
//! fence reconciler must judge, applying its verdicts, and maintenance mode. The BMC
//! calls and migrations happen off the task, in the callers.

use tokio::time::Instant;
use wisp_common::{HostId, VmId};

use super::fence::{Verdict, Work};
use crate::api::types::{SlaReport, SlaRow};
use crate::cluster::{Command, Model};
use crate::config::MigrationConfig;
use crate::events::EventKind;
use crate::model::host::HostEvent;
use crate::model::sla::{TARGET, WINDOW_MS};
use crate::store::Desired;
use crate::vms::placement::{self, PlacementError};
use crate::vms::VmError;
use wisp_common::time::unix_ms;

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
    type Output = SlaReport;
    const NAME: &'static str = "report availability";
    fn apply(self, m: &mut Model) -> Self::Output {
        // The book as of now, not as of the last tick: a VM created a moment ago is
        // listed (with nothing against it), one deleted a moment ago is not.
        m.account_sla(Instant::now());
        let now = unix_ms();
        let from = now.saturating_sub(WINDOW_MS);
        let mut rows = Vec::new();
        for (vm, s) in &m.sla.vms {
            if !m.persisted.vms.contains_key(vm) {
                continue;
            }
            let (d30, n30) = s.downtime(from, now);
            let (dall, nall) = s.downtime(0, now);
            let a30 = s.availability(from, now);
            rows.push(SlaRow {
                vm: vm.clone(),
                availability_30d: a30,
                availability_total: s.availability(0, now),
                downtime_30d_s: d30 as f64 / 1000.0,
                downtime_total_s: dall as f64 / 1000.0,
                incidents_30d: n30,
                incidents_total: nall,
                down_now: s.incidents.last().is_some_and(|i| i.end_ms.is_none()),
                meets_target: a30 >= TARGET,
            });
        }
        let n = rows.len().max(1) as f64;
        SlaReport {
            target: TARGET,
            cluster_availability_30d: if rows.is_empty() {
                1.0
            } else {
                rows.iter().map(|r| r.availability_30d).sum::<f64>() / n
            },
            // `+ 0.0`: an empty f64 sum is -0.0, which would print as "-0.0".
            cluster_downtime_30d_s: rows.iter().map(|r| r.downtime_30d_s).sum::<f64>() + 0.0,
            cluster_incidents_30d: rows.iter().map(|r| r.incidents_30d).sum(),
            vms: rows,
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use wisp_common::{HostId, VmId, VmSpec};

    use super::*;
    use crate::cluster::Command;
    use crate::store::{PersistedState, VmRecord};

    /// A VM created since the last tick is in the report at once (CI once read an
    /// empty report right after a create), and a deleted one is gone at once.
    #[tokio::test]
    async fn the_sla_report_is_as_of_now_not_of_the_last_tick() {
        let text = "listen = \"127.0.0.1:0\"\nstate_dir = \"/nonexistent\"\nsecret_file = \"/nonexistent\"\n\
                    [[host]]\nname = \"h1\"\nmac = \"02:00:00:00:00:01\"\naddress = \"10.0.0.1\"\n";
        let mut m = Model::for_test(text, PersistedState::empty());
        m.tick(Instant::now());
        let vm = VmId::new("vm1").unwrap();
        m.persisted.vms.insert(
            vm.clone(),
            VmRecord {
                spec: VmSpec::new(vm.clone(), 1, 64),
                desired: Desired::Running,
                host: Some(HostId::new("h1").unwrap()),
                epoch: 1,
                created_at_ms: unix_ms(),
                migrating: None,
            },
        );
        let r = SlaNow.apply(&mut m);
        assert_eq!(r.vms.len(), 1, "{r:?}");
        assert_eq!(
            (r.vms[0].vm.clone(), r.vms[0].incidents_total),
            (vm.clone(), 0)
        );
        m.persisted.vms.remove(&vm);
        assert!(SlaNow.apply(&mut m).vms.is_empty());
    }
}
