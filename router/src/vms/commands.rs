//! The VM lifecycle's commands to the cluster task. Each plans or records one step of
//! an operation atomically on the model: the checks, the claim, the stored desired
//! state and the event happen together or not at all. The I/O (asking genies) happens
//! between commands, outside the task, while the operation holds its claim.

use tokio::time::Instant;
use wisp_common::proto::MigrationProgress;
use wisp_common::time::unix_ms;
use wisp_common::{HostId, VmId, VmRunState, VmSpec};

use super::{placement, NotRunning, VmError};
use crate::cluster::{Claim, Command, Model, Op};
use crate::events::EventKind;
use crate::link::GenieLink;
use crate::store::{Desired, InFlightMigration, StoreError, VmRecord};

/// Where a new or restarted VM goes, under which epoch, held by which claim.
#[derive(Debug)]
pub struct Placed {
    pub host: HostId,
    pub epoch: u64,
    pub link: GenieLink,
    pub claim: Claim,
}

/// Checks a create, places the VM, stores its record and claims it.
#[derive(Debug)]
pub struct PlanCreate {
    pub spec: VmSpec,
    pub host: Option<HostId>,
}

impl Command for PlanCreate {
    /// Where, and the spec as stored (MACs assigned).
    type Output = Result<(Placed, VmSpec), VmError>;
    const NAME: &'static str = "plan a VM's create";

    fn apply(self, m: &mut Model) -> Self::Output {
        let mut s = self.spec;
        if m.persisted.vms.contains_key(&s.name) || !m.observed(&s.name).is_empty() {
            return Err(VmError::NameTaken { vm: s.name.clone() });
        }
        super::devices::check_and_assign(&mut s, &m.persisted.vms)?;
        let mut cands = m.candidates(None);
        let had_hosts = !cands.is_empty();
        let known: std::collections::BTreeSet<String> = cands
            .iter()
            .filter_map(|c| m.cluster.hosts[&c.host].virt.as_ref())
            .flat_map(|v| v.networks.iter().cloned())
            .collect();
        let cpu_somewhere = s.cpu_model.as_deref().is_none_or(|cpu| {
            cands.iter().any(|c| {
                m.cluster.hosts[&c.host]
                    .virt
                    .as_ref()
                    .is_none_or(|v| v.can_run_cpu(cpu))
            })
        });
        if had_hosts && !cpu_somewhere {
            return Err(VmError::BadField {
                vm: s.name.clone(),
                field: "cpu_model".into(),
                reason: format!(
                    "no up host can give guests CPU model {}",
                    s.cpu_model.as_deref().unwrap_or_default()
                ),
            });
        }
        // Only hosts where each NIC's network and the CPU model are (hosts not saying
        // are tried).
        cands.retain(|c| {
            m.cluster.hosts[&c.host]
                .virt
                .as_ref()
                .is_none_or(|v| v.serves(&s))
        });
        if had_hosts && cands.is_empty() {
            let nets: Vec<&str> = s.nics.iter().map(|n| n.network.as_str()).collect();
            return Err(VmError::BadField {
                vm: s.name.clone(),
                field: "nic".into(),
                reason: format!(
                    "no up host has all of the networks {nets:?} (genie.toml [networks] with an existing bridge; up hosts have {known:?})"
                ),
            });
        }
        let host = match self.host {
            Some(id) => {
                if !m.cluster.hosts.contains_key(&id) {
                    return Err(VmError::UnknownHost { host: id });
                }
                let cpu = s.cpu_model.as_deref().unwrap_or_default();
                let virt = m.cluster.hosts[&id].virt.as_ref();
                if virt.is_some_and(|v| !cpu.is_empty() && !v.can_run_cpu(cpu)) {
                    return Err(VmError::BadField {
                        vm: s.name.clone(),
                        field: "host".into(),
                        reason: format!("{id} cannot give guests CPU model {cpu}"),
                    });
                }
                if let Some(n) =
                    virt.and_then(|v| s.nics.iter().find(|n| !v.networks.contains(&n.network)))
                {
                    return Err(VmError::BadField {
                        vm: s.name.clone(),
                        field: "nic".into(),
                        reason: format!(
                            "network {:?} is not on {id} (its genie.toml [networks] and bridges)",
                            n.network
                        ),
                    });
                }
                let cand =
                    cands
                        .iter()
                        .find(|c| c.host == id)
                        .ok_or_else(|| VmError::HostNotUp {
                            host: id.clone(),
                            state: m.cluster.hosts[&id].status(),
                        })?;
                placement::check(cand, s.resources()).map_err(VmError::Placement)?;
                id
            }
            None => placement::choose(&cands, s.resources()).map_err(|e| {
                match m.want_wake_for_room(&s) {
                    Some(h) => VmError::Waking { host: h, cause: e },
                    None => VmError::Placement(e),
                }
            })?,
        };
        let link = m.link_of(&host)?;
        // Held before the record exists, so nothing acts on the new VM before its first
        // start is done.
        let claim = m.claim(&s.name, Op::Start { host: host.clone() })?;
        let epoch = m.new_epoch()?;
        let record = VmRecord {
            spec: s.clone(),
            desired: Desired::Running,
            host: Some(host.clone()),
            epoch,
            created_at_ms: unix_ms(),
            migrating: None,
        };
        m.update(|p| {
            p.vms.insert(s.name.clone(), record);
        })
        .map_err(VmError::Store)?;
        m.event(
            EventKind::VmCreated,
            Some(host.clone()),
            Some(s.name.clone()),
            format!(
                "VM {} created ({} vCPU, {} MiB) on {host}",
                s.name, s.vcpus, s.mem_mib
            ),
        );
        Ok((
            Placed {
                host,
                epoch,
                link,
                claim,
            },
            s,
        ))
    }
}

/// Forgets a VM whose create its host refused, if the record is still that create's.
#[derive(Debug)]
pub struct UndoCreate {
    pub vm: VmId,
    pub epoch: u64,
}

impl Command for UndoCreate {
    type Output = ();
    const NAME: &'static str = "undo a refused create";

    fn apply(self, m: &mut Model) {
        if m.persisted
            .vms
            .get(&self.vm)
            .is_some_and(|r| r.epoch == self.epoch)
        {
            let _ = m.update(|p| p.vms.remove(&self.vm));
        }
    }
}

/// What a start does.
#[derive(Debug)]
pub enum StartPlan {
    /// A copy already runs there.
    Already(HostId),
    /// Start it with this placement.
    Go { placed: Placed, spec: Box<VmSpec> },
}

/// Sets a VM's desired state to running and decides where it starts: where it is
/// placed if that host can take it, else on a host with room (a new epoch).
#[derive(Debug)]
pub struct PlanStart {
    pub vm: VmId,
}

impl Command for PlanStart {
    type Output = Result<StartPlan, VmError>;
    const NAME: &'static str = "plan a VM's start";

    fn apply(self, m: &mut Model) -> Self::Output {
        let v = self.vm;
        let rec = m
            .persisted
            .vms
            .get(&v)
            .cloned()
            .ok_or(VmError::NotFound { vm: v.clone() })?;
        if rec.desired != Desired::Running {
            m.update(|p| {
                if let Some(r) = p.vms.get_mut(&v) {
                    r.desired = Desired::Running;
                }
            })
            .map_err(VmError::Store)?;
        }
        if let Some((h, _)) = m.observed(&v).into_iter().next() {
            return Ok(StartPlan::Already(h));
        }
        let cands = m.candidates(Some(&v));
        let placed_ok = rec
            .host
            .as_ref()
            .and_then(|h| cands.iter().find(|c| &c.host == h));
        let (host, epoch) = match placed_ok {
            Some(c) if placement::check(c, rec.spec.resources()).is_ok() => {
                (c.host.clone(), rec.epoch)
            }
            _ => {
                let h =
                    placement::choose(&cands, rec.spec.resources()).map_err(VmError::Placement)?;
                let e = m.new_epoch()?;
                m.set_placement(&v, &h, e).map_err(VmError::Store)?;
                (h, e)
            }
        };
        let link = m.link_of(&host)?;
        let claim = m.claim(&v, Op::Start { host: host.clone() })?;
        Ok(StartPlan::Go {
            placed: Placed {
                host,
                epoch,
                link,
                claim,
            },
            spec: Box::new(rec.spec),
        })
    }
}

/// The copies a stop or delete must reach, held by its claim.
#[derive(Debug)]
pub struct StopPlan {
    pub targets: Vec<(HostId, GenieLink)>,
    pub claim: Claim,
}

/// Records a stop (desired state stopped) or prepares a delete, and lists the copies
/// to stop: every reported copy (a stopped one only for a delete).
#[derive(Debug)]
pub struct PlanStop {
    pub vm: VmId,
    pub delete: bool,
}

impl Command for PlanStop {
    type Output = Result<StopPlan, VmError>;
    const NAME: &'static str = "plan a VM's stop or delete";

    fn apply(self, m: &mut Model) -> Self::Output {
        let (v, delete) = (self.vm, self.delete);
        let managed = m.persisted.vms.contains_key(&v);
        let seen = m.observed(&v);
        if !managed && seen.is_empty() {
            return Err(VmError::NotFound { vm: v.clone() });
        }
        if managed && !delete {
            m.update(|p| {
                if let Some(r) = p.vms.get_mut(&v) {
                    r.desired = Desired::Stopped;
                }
            })
            .map_err(VmError::Store)?;
        }
        let mut targets = Vec::new();
        for (h, status) in seen {
            if !delete && status.state == VmRunState::Stopped {
                continue;
            }
            targets.push((h.clone(), m.link_of(&h)?));
        }
        let host = targets.first().map(|(h, _)| h.clone());
        let op = if delete {
            Op::Delete
        } else {
            Op::Stop { host }
        };
        let claim = m.claim(&v, op)?;
        m.sla_planned_stop(&v);
        Ok(StopPlan { targets, claim })
    }
}

/// Removes a deleted VM's record.
#[derive(Debug)]
pub struct Forget {
    pub vm: VmId,
}

impl Command for Forget {
    type Output = Result<(), StoreError>;
    const NAME: &'static str = "forget a deleted VM";

    fn apply(self, m: &mut Model) -> Self::Output {
        m.update(|p| p.vms.remove(&self.vm)).map(|_| ())
    }
}

/// A live migration about to run: both ends, the spec, the new epoch, the claim.
#[derive(Debug)]
pub struct MigrationPlan {
    pub from: HostId,
    pub to: HostId,
    pub spec: VmSpec,
    pub epoch: u64,
    pub src: GenieLink,
    pub dst: GenieLink,
    pub claim: Claim,
}

/// Checks a migration (the VM runs where it is placed, the destination is up and has
/// room), claims the VM and stores a new epoch for the destination's copy.
#[derive(Debug)]
pub struct PlanMigrate {
    pub vm: VmId,
    pub to: HostId,
}

impl Command for PlanMigrate {
    type Output = Result<MigrationPlan, VmError>;
    const NAME: &'static str = "plan a live migration";

    fn apply(self, m: &mut Model) -> Self::Output {
        let (v, to) = (self.vm, self.to);
        let rec = m
            .persisted
            .vms
            .get(&v)
            .cloned()
            .ok_or(VmError::NotFound { vm: v.clone() })?;
        if !m.cluster.hosts.contains_key(&to) {
            return Err(VmError::UnknownHost { host: to });
        }
        let seen = m.observed(&v);
        let from = seen
            .iter()
            .find(|(h, s)| Some(h) == rec.host.as_ref() && s.state == VmRunState::Running)
            .map(|(h, _)| h.clone())
            .ok_or_else(|| VmError::NotRunning {
                vm: v.clone(),
                state: seen
                    .first()
                    .map(|(h, s)| NotRunning::Reported {
                        host: h.clone(),
                        state: s.state.clone(),
                    })
                    .unwrap_or(NotRunning::Nowhere),
            })?;
        if from == to {
            return Err(VmError::SameHost {
                vm: v.clone(),
                host: to,
            });
        }
        if rec.desired != Desired::Running {
            return Err(VmError::NotRunning {
                vm: v.clone(),
                state: NotRunning::DesiredStopped,
            });
        }
        let cands = m.candidates(Some(&v));
        let cand = cands
            .iter()
            .find(|c| c.host == to)
            .ok_or_else(|| VmError::HostNotUp {
                host: to.clone(),
                state: m.cluster.hosts[&to].status(),
            })?;
        placement::check(cand, rec.spec.resources()).map_err(VmError::Placement)?;
        let src = m.link_of(&from)?;
        let dst = m.link_of(&to)?;
        let claim = m.claim(
            &v,
            Op::Migrate {
                from: from.clone(),
                to: to.clone(),
            },
        )?;
        // The epoch is stored before use, with the migration itself: after a router
        // crash or a takeover mid-migration the destination's copy is recognised as
        // the newer placement, and the reconciler lets the source finish streaming.
        let epoch = m.new_epoch()?;
        let in_flight = InFlightMigration {
            to: to.clone(),
            epoch,
            since_ms: unix_ms(),
        };
        m.update(|p| {
            if let Some(r) = p.vms.get_mut(&v) {
                r.migrating = Some(in_flight);
            }
        })
        .map_err(VmError::Store)?;
        Ok(MigrationPlan {
            from,
            to,
            spec: rec.spec,
            epoch,
            src,
            dst,
            claim,
        })
    }
}

/// Keeps the latest progress of a migration for `router vm show`.
#[derive(Debug)]
pub struct NoteProgress {
    pub vm: VmId,
    pub progress: MigrationProgress,
}

impl Command for NoteProgress {
    type Output = ();
    const NAME: &'static str = "note migration progress";

    fn apply(self, m: &mut Model) {
        m.progress.insert(self.vm, self.progress);
    }
}

/// Ends a migration: drops its progress and, if QEMU finished, moves the placement to
/// the destination under the migration's epoch.
#[derive(Debug)]
pub struct EndMigration {
    pub vm: VmId,
    pub to: HostId,
    pub epoch: u64,
    pub completed: bool,
    /// Failed with the source genie lost: its qemu may still be streaming, so the
    /// migration stays recorded in flight for the reconciler to see it end.
    pub in_doubt: bool,
}

impl Command for EndMigration {
    type Output = Result<(), VmError>;
    const NAME: &'static str = "end a live migration";

    fn apply(self, m: &mut Model) -> Self::Output {
        m.progress.remove(&self.vm);
        if self.completed {
            m.set_placement(&self.vm, &self.to, self.epoch)
                .map_err(VmError::Store)
        } else if self.in_doubt {
            Ok(())
        } else {
            m.end_in_flight(&self.vm).map_err(VmError::Store)
        }
    }
}

/// The reconciler's pass: decides up to `budget` actions and claims their VMs.
#[derive(Debug)]
pub struct PlanActions {
    pub budget: usize,
}

impl Command for PlanActions {
    type Output = Vec<(super::reconcile::Action, Claim)>;
    const NAME: &'static str = "plan the reconciler's actions";

    fn apply(self, m: &mut Model) -> Self::Output {
        m.plan_vm_actions(Instant::now(), unix_ms(), self.budget)
    }
}

/// Records how a reconciler action ended, and releases its VM after the retry time
/// is recorded (so the next pass sees both together).
#[derive(Debug)]
pub struct ActionDone {
    pub vm: VmId,
    pub host: HostId,
    pub what: &'static str,
    pub ms: u128,
    /// The failure, with its cause chain, if it failed.
    pub failed: Option<String>,
    pub claim: Claim,
}

impl Command for ActionDone {
    type Output = ();
    const NAME: &'static str = "record a reconciler action";

    fn apply(self, m: &mut Model) {
        let Self {
            vm,
            host,
            what,
            ms,
            failed,
            claim,
        } = self;
        match failed {
            None => {
                // Its effect shows in the genie's next report, not yet in the model: a
                // pass before that report would repeat the action (a no-op at the
                // genie, but a second "done" in the events).
                let hold = super::reconcile::SEEN_AFTER;
                m.retry_after.insert(vm.clone(), Instant::now() + hold);
                let kind = if what == "start" {
                    EventKind::VmRestarted
                } else {
                    EventKind::VmStopped
                };
                m.event(
                    kind,
                    Some(host.clone()),
                    Some(vm.clone()),
                    format!("{what} of {vm} on {host} done in {ms} ms"),
                );
            }
            Some(e) => {
                let retry = super::reconcile::RETRY_AFTER;
                m.retry_after.insert(vm.clone(), Instant::now() + retry);
                m.event(
                    EventKind::Error,
                    Some(host.clone()),
                    Some(vm.clone()),
                    format!(
                        "{what} of {vm} on {host} failed: {e}; retrying in {} s",
                        retry.as_secs()
                    ),
                );
            }
        }
        drop(claim);
    }
}
