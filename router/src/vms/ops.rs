//! The lifecycle operations: create, start, stop, restart, delete. Each claims the VM
//! in the model, stores the new desired state first (so a router crash mid-way is
//! finished by the reconciler after restart), then asks the genie and reports what
//! happened and how long it took.

use std::time::Instant;

use wisp_common::proto::{Command, Outcome, VmStatus};
use wisp_common::time::unix_ms;
use wisp_common::{HostId, VmId, VmRunState, VmSpec};

use super::placement;
use super::VmError;
use crate::api::types::{OpKind, OpReport};
use crate::cluster::state::HostStatus;
use crate::cluster::{Claim, ClusterHandle, Model, Op};
use crate::events::EventKind;
use crate::link::GenieLink;
use crate::store::{Desired, VmRecord};

/// How long a guest gets to shut down after ACPI power-down before `quit`.
pub const GRACEFUL_STOP_MS: u64 = 30_000;

impl Model {
    /// The genie link of an up host.
    pub fn link_of(&self, host: &HostId) -> Result<GenieLink, VmError> {
        let h = self
            .cluster
            .hosts
            .get(host)
            .ok_or_else(|| VmError::UnknownHost { host: host.clone() })?;
        match (&h.link, h.status()) {
            (
                Some(l),
                HostStatus::Up | HostStatus::Suspect | HostStatus::Maintenance | HostStatus::Waking,
            ) => Ok(l.handle.clone()),
            _ => Err(VmError::HostNotUp {
                host: host.clone(),
                state: h.status(),
            }),
        }
    }

    /// Where `vm` is reported by a connected genie.
    pub fn observed(&self, vm: &VmId) -> Vec<(HostId, VmStatus)> {
        self.cluster
            .hosts
            .values()
            .filter(|h| h.link.is_some())
            .filter_map(|h| {
                h.vms
                    .iter()
                    .find(|v| &v.id == vm)
                    .map(|v| (h.cfg.name.clone(), v.clone()))
            })
            .collect()
    }

    /// Records that `vm` is placed on `host` under `epoch` (stored before anything
    /// acts on it; rolled back if the store fails).
    pub fn set_placement(
        &mut self,
        vm: &VmId,
        host: &HostId,
        epoch: u64,
    ) -> Result<(), crate::store::StoreError> {
        self.update(|p| {
            if let Some(r) = p.vms.get_mut(vm) {
                r.host = Some(host.clone());
                r.epoch = epoch;
            }
        })
    }

    /// Allocates a fencing epoch (stored before use, so it is never handed out twice).
    pub fn new_epoch(&mut self) -> Result<u64, VmError> {
        self.update(|p| {
            let e = p.next_epoch.max(1);
            p.next_epoch = e + 1;
            e
        })
        .map_err(VmError::Store)
    }
}

fn check_spec(spec: &VmSpec) -> Result<(), VmError> {
    if spec.vcpus == 0 || spec.vcpus > 64 {
        return Err(VmError::BadSpec {
            reason: format!("vcpus must be 1 to 64, not {}", spec.vcpus),
        });
    }
    if spec.mem_mib < 16 {
        return Err(VmError::BadSpec {
            reason: format!("mem must be at least 16 MiB, not {}", spec.mem_mib),
        });
    }
    for p in [&spec.disk, &spec.kernel].into_iter().flatten() {
        if !p.is_absolute() {
            return Err(VmError::BadSpec {
                reason: format!(
                    "{} must be an absolute path on storage every server reaches",
                    p.display()
                ),
            });
        }
    }
    Ok(())
}

/// Sends `cmd` about `vm` to the genie on `host` and expects `Outcome::Done`.
pub async fn run_done(
    link: &GenieLink,
    host: &HostId,
    vm: &VmId,
    cmd: Command,
) -> Result<(), VmError> {
    match link.command(cmd, None).await.map_err(VmError::Link)? {
        Outcome::Done => Ok(()),
        Outcome::Failed { error } => Err(VmError::Genie {
            vm: vm.clone(),
            host: host.clone(),
            message: error,
        }),
        other => Err(VmError::Unexpected {
            vm: vm.clone(),
            host: host.clone(),
            answer: format!("{other:?}"),
        }),
    }
}

/// Asks the genie on `host` to start `spec` with `epoch`.
pub async fn start_on(
    link: &GenieLink,
    host: &HostId,
    spec: VmSpec,
    epoch: u64,
) -> Result<(), VmError> {
    let vm = spec.name.clone();
    run_done(link, host, &vm, Command::StartVm { spec, epoch }).await
}

/// Asks the genie on `host` to stop (or delete) `vm`.
pub async fn stop_on(
    link: &GenieLink,
    host: &HostId,
    vm: &VmId,
    force: bool,
    delete: bool,
) -> Result<(), VmError> {
    let cmd = if delete {
        Command::DeleteVm { vm: vm.clone() }
    } else {
        Command::StopVm {
            vm: vm.clone(),
            force,
            timeout_ms: if force { 0 } else { GRACEFUL_STOP_MS },
        }
    };
    run_done(link, host, vm, cmd).await
}

async fn finish(
    c: &ClusterHandle,
    vm: &VmId,
    host: &HostId,
    action: OpKind,
    t0: Instant,
    result: Result<(), VmError>,
) -> Result<OpReport, VmError> {
    let elapsed_ms = t0.elapsed().as_millis() as u64;
    let (kind, message) = match &result {
        Ok(()) => (
            match action {
                OpKind::Stop => EventKind::VmStopped,
                OpKind::Delete => EventKind::VmDeleted,
                OpKind::Create | OpKind::Start | OpKind::Restart => EventKind::VmStarted,
            },
            format!("{action} of {vm} on {host} done in {elapsed_ms} ms"),
        ),
        Err(e) => (
            EventKind::Error,
            format!("{action} of {vm} on {host} failed: {}", super::chain(e)),
        ),
    };
    c.record(kind, Some(host.clone()), Some(vm.clone()), message.clone())
        .await;
    result.map(|()| OpReport {
        vm: vm.clone(),
        host: Some(host.clone()),
        action,
        elapsed_ms,
        message,
    })
}

/// Creates a VM and starts it on `host` (or a host with room).
pub async fn create(
    c: &ClusterHandle,
    spec: VmSpec,
    host: Option<HostId>,
) -> Result<OpReport, VmError> {
    check_spec(&spec)?;
    let t0 = Instant::now();
    let vm = spec.name.clone();
    let s = spec.clone();
    let (host, epoch, link, _claim) = c
        .with(move |m| -> Result<_, VmError> {
            if m.persisted.vms.contains_key(&s.name) || !m.observed(&s.name).is_empty() {
                return Err(VmError::NameTaken { vm: s.name.clone() });
            }
            let cands = m.candidates(None);
            let host =
                match host {
                    Some(id) => {
                        if !m.cluster.hosts.contains_key(&id) {
                            return Err(VmError::UnknownHost { host: id });
                        }
                        let cand = cands.iter().find(|c| c.host == id).ok_or_else(|| {
                            VmError::HostNotUp {
                                host: id.clone(),
                                state: m.cluster.hosts[&id].status(),
                            }
                        })?;
                        placement::check(cand, s.resources()).map_err(VmError::Placement)?;
                        id
                    }
                    None => placement::choose(&cands, s.resources()).map_err(|e| {
                        match m.want_wake_for_room() {
                            Some(h) => VmError::Waking { host: h, cause: e },
                            None => VmError::Placement(e),
                        }
                    })?,
                };
            let link = m.link_of(&host)?;
            // Held before the record exists, so nothing acts on the new VM before its
            // first start is done.
            let claim = m.claim(&s.name, Op::Start { host: host.clone() })?;
            let epoch = m.new_epoch()?;
            let record = VmRecord {
                spec: s.clone(),
                desired: Desired::Running,
                host: Some(host.clone()),
                epoch,
                created_at_ms: unix_ms(),
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
            Ok((host, epoch, link, claim))
        })
        .await
        .ok_or(VmError::Shutdown)??;
    let r = start_on(&link, &host, spec, epoch).await;
    if matches!(r, Err(VmError::Genie { .. } | VmError::Unexpected { .. })) {
        // The host refused the VM (a kernel qemu cannot load, a qemu error): undo the
        // create, so a failed create changes nothing — no record the reconciler would
        // retry forever, no capacity held, the name free again. A lost link is
        // different: the VM may be starting, and the reconciler finishes the job from
        // the stored record. The VM is still claimed, so nothing races with this.
        let _ = stop_on(&link, &host, &vm, true, true).await;
        let v = vm.clone();
        let _ = c
            .with(move |m| {
                if m.persisted.vms.get(&v).is_some_and(|r| r.epoch == epoch) {
                    let _ = m.update(|p| p.vms.remove(&v));
                }
            })
            .await;
    }
    finish(c, &vm, &host, OpKind::Create, t0, r).await
}

enum StartPlan {
    Already(HostId),
    Go(HostId, u64, GenieLink, VmSpec, Claim),
}

/// Sets a VM's desired state to running and starts it where it is placed (or on a
/// host with room if its host is not usable).
pub async fn start(c: &ClusterHandle, vm: VmId) -> Result<OpReport, VmError> {
    let t0 = Instant::now();
    let v = vm.clone();
    let plan = c
        .with(move |m| -> Result<_, VmError> {
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
                    let h = placement::choose(&cands, rec.spec.resources())
                        .map_err(VmError::Placement)?;
                    let e = m.new_epoch()?;
                    m.set_placement(&v, &h, e).map_err(VmError::Store)?;
                    (h, e)
                }
            };
            let link = m.link_of(&host)?;
            let claim = m.claim(&v, Op::Start { host: host.clone() })?;
            Ok(StartPlan::Go(host, epoch, link, rec.spec, claim))
        })
        .await
        .ok_or(VmError::Shutdown)??;
    match plan {
        StartPlan::Go(host, epoch, link, spec, _claim) => {
            let r = start_on(&link, &host, spec, epoch).await;
            finish(c, &vm, &host, OpKind::Start, t0, r).await
        }
        StartPlan::Already(host) => Ok(OpReport {
            vm: vm.clone(),
            host: Some(host.clone()),
            action: OpKind::Start,
            elapsed_ms: 0,
            message: format!("{vm} already runs on {host}"),
        }),
    }
}

/// Sets a VM's desired state to stopped and stops it wherever it runs.
pub async fn stop(c: &ClusterHandle, vm: VmId, force: bool) -> Result<OpReport, VmError> {
    stop_or_delete(c, vm, force, false).await
}

/// Stops a VM and forgets it.
pub async fn delete(c: &ClusterHandle, vm: VmId) -> Result<OpReport, VmError> {
    stop_or_delete(c, vm, true, true).await
}

async fn stop_or_delete(
    c: &ClusterHandle,
    vm: VmId,
    force: bool,
    delete: bool,
) -> Result<OpReport, VmError> {
    let t0 = Instant::now();
    let v = vm.clone();
    let (targets, _claim) = c
        .with(move |m| -> Result<_, VmError> {
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
            let mut out = Vec::new();
            for (h, status) in seen {
                if !delete && status.state == VmRunState::Stopped {
                    continue;
                }
                out.push((h.clone(), m.link_of(&h)?));
            }
            let host = out.first().map(|(h, _)| h.clone());
            let op = if delete {
                Op::Delete
            } else {
                Op::Stop { host }
            };
            let claim = m.claim(&v, op)?;
            Ok((out, claim))
        })
        .await
        .ok_or(VmError::Shutdown)??;
    let action = if delete { OpKind::Delete } else { OpKind::Stop };
    let mut last_host = None;
    let mut result = Ok(());
    for (host, link) in &targets {
        last_host = Some(host.clone());
        if let Err(e) = stop_on(link, host, &vm, force, delete).await {
            result = Err(e);
            break;
        }
    }
    if delete && result.is_ok() {
        let v = vm.clone();
        let stored = c
            .with(move |m| m.update(|p| p.vms.remove(&v)).map(|_| ()))
            .await
            .ok_or(VmError::Shutdown)?;
        result = stored.map_err(VmError::Store);
    }
    match last_host {
        Some(h) => finish(c, &vm, &h, action, t0, result).await,
        None => {
            result?;
            Ok(OpReport {
                vm: vm.clone(),
                host: None,
                action,
                elapsed_ms: t0.elapsed().as_millis() as u64,
                message: format!("{vm} was not running; {action} recorded"),
            })
        }
    }
}

/// Stop, then start.
pub async fn restart(c: &ClusterHandle, vm: VmId) -> Result<OpReport, VmError> {
    let t0 = Instant::now();
    stop(c, vm.clone(), false).await?;
    let mut r = start(c, vm).await?;
    r.action = OpKind::Restart;
    r.elapsed_ms = t0.elapsed().as_millis() as u64;
    Ok(r)
}
