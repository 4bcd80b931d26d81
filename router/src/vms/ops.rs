//! The lifecycle operations: create, start, stop, restart, delete. Each claims the VM
//! in the model, stores the new desired state first (so a router crash mid-way is
//! finished by the reconciler after restart), then asks the genie and reports what
//! happened and how long it took.

use std::time::Instant;

use wisp_common::proto::{Command, Outcome, VmStatus};
use wisp_common::{HostId, VmId, VmSpec};

use super::commands::{
    Forget, Placed, PlanCreate, PlanStart, PlanStop, StartPlan, StopPlan, UndoCreate,
};
use super::VmError;
use crate::api::types::{OpKind, OpReport};
use crate::cluster::{ClusterHandle, Model};
use crate::events::EventKind;
use crate::link::GenieLink;
use crate::model::host::HostStatus;

/// A NIC's MAC before PlanCreate assigns one (all zero: unicast, never a real NIC's).
pub const UNASSIGNED_MAC: wisp_common::MacAddr = wisp_common::MacAddr([0; 6]);

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
                // A new placement ends whatever migration was in flight.
                r.migrating = None;
            }
        })
    }

    /// Forgets the migration of `vm` recorded in flight (it ended without moving it).
    pub fn end_in_flight(&mut self, vm: &VmId) -> Result<(), crate::store::StoreError> {
        if self
            .persisted
            .vms
            .get(vm)
            .is_none_or(|r| r.migrating.is_none())
        {
            return Ok(());
        }
        self.update(|p| {
            if let Some(r) = p.vms.get_mut(vm) {
                r.migrating = None;
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

/// The longest kernel command line accepted (the genie checks it too).
const MAX_APPEND: usize = 4096;
/// The most NICs a VM may have (the genie checks it too).
const MAX_NICS: usize = 8;

fn check_spec(spec: &VmSpec) -> Result<(), VmError> {
    let field = |field: &str, reason: String| VmError::BadField {
        vm: spec.name.clone(),
        field: field.to_owned(),
        reason,
    };
    if (spec.initrd.is_some() || spec.append.is_some()) && spec.kernel.is_none() {
        return Err(field(
            "kernel",
            "--initrd and --append need --kernel".into(),
        ));
    }
    if spec
        .append
        .as_ref()
        .is_some_and(|a| a.len() > MAX_APPEND || a.contains(['\0', '\n']))
    {
        return Err(field(
            "append",
            format!("at most {MAX_APPEND} bytes on one line"),
        ));
    }
    if spec.nics.len() > MAX_NICS {
        return Err(field("nic", format!("at most {MAX_NICS} NICs")));
    }
    for (i, n) in spec.nics.iter().enumerate() {
        let ok = !n.network.is_empty()
            && n.network
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if !ok {
            return Err(field(
                &format!("nic{i} network"),
                format!(
                    "{:?} is not a network name (letters, digits, - and _)",
                    n.network
                ),
            ));
        }
        if !wisp_common::vm::mac_is_unicast(&n.mac) {
            return Err(field(
                &format!("nic{i} mac"),
                format!("{} is a multicast address, not a NIC's", n.mac),
            ));
        }
        if spec.nics[..i].iter().any(|o| o.mac == n.mac) {
            return Err(field(
                &format!("nic{i} mac"),
                format!("{} is given to two NICs", n.mac),
            ));
        }
    }
    if let Some(m) = &spec.cpu_model {
        let ok = !m.is_empty()
            && m.chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if !ok {
            return Err(field("cpu_model", format!("{m:?} is not a CPU model name")));
        }
    }
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
    for p in [&spec.disk, &spec.kernel, &spec.initrd]
        .into_iter()
        .flatten()
    {
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
    mut spec: VmSpec,
    host: Option<HostId>,
    nics: Vec<super::NicRequest>,
) -> Result<OpReport, VmError> {
    // The cluster's CPU model is fixed in the VM's spec now, so it stays the same on
    // every host for the VM's life (a later change of router.toml applies to new VMs).
    if spec.cpu_model.is_none() {
        spec.cpu_model = Some(c.config().cpu_model.clone());
    }
    // Placeholders for the MACs to generate: PlanCreate gives each a unique one.
    spec.nics
        .extend(nics.into_iter().map(|n| wisp_common::NicSpec {
            network: n.network,
            mac: n.mac.unwrap_or(UNASSIGNED_MAC),
        }));
    check_spec(&spec)?;
    let t0 = Instant::now();
    let vm = spec.name.clone();
    let (
        Placed {
            host,
            epoch,
            link,
            claim: _claim,
        },
        spec,
    ) = c
        .run(PlanCreate { spec, host })
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
        let _ = c
            .run(UndoCreate {
                vm: vm.clone(),
                epoch,
            })
            .await;
    }
    finish(c, &vm, &host, OpKind::Create, t0, r).await
}

/// Sets a VM's desired state to running and starts it where it is placed (or on a
/// host with room if its host is not usable).
pub async fn start(c: &ClusterHandle, vm: VmId) -> Result<OpReport, VmError> {
    let t0 = Instant::now();
    let plan = c
        .run(PlanStart { vm: vm.clone() })
        .await
        .ok_or(VmError::Shutdown)??;
    match plan {
        StartPlan::Go {
            placed:
                Placed {
                    host,
                    epoch,
                    link,
                    claim: _claim,
                },
            spec,
        } => {
            let r = start_on(&link, &host, *spec, epoch).await;
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
    let StopPlan {
        targets,
        claim: _claim,
    } = c
        .run(PlanStop {
            vm: vm.clone(),
            delete,
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
        let stored = c
            .run(Forget { vm: vm.clone() })
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
    let on = r
        .host
        .as_ref()
        .map(|h| format!(" on {h}"))
        .unwrap_or_default();
    r.message = format!("restart of {}{on} done in {} ms", r.vm, r.elapsed_ms);
    Ok(r)
}
