//! Where a new or restarted VM goes: a simple, pure rule (the energy planner makes the
//! global packing decisions; this only has to find a host with room).
//!
//! Rule: among usable hosts where the VM fits on vCPUs and memory, the one with the
//! most free memory, so restarts after a failure spread instead of piling onto one
//! host. Ties break by name for determinism.

use wisp_common::{HostId, Resources, VmSpec};

use crate::cluster::Model;
use crate::model::host::{HostEntry, HostStatus};
use wisp_common::VmId;

/// vCPUs per physical CPU the router hands out when the config gives no figure: VMs
/// here are mostly idle, and QEMU threads share cores well at this ratio.
pub const VCPU_OVERCOMMIT: u32 = 4;

/// Memory kept for the host itself (kernel, genie, qemu overhead) when the config gives
/// no figure.
pub const HOST_RESERVED_MIB: u64 = 512;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Candidate {
    pub host: HostId,
    pub capacity: Resources,
    pub used: Resources,
}

impl Candidate {
    pub fn free(&self) -> Resources {
        self.capacity.saturating_sub(&self.used)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlacementError {
    #[error("no host has room for {need_vcpus} vCPUs and {need_mib} MiB (largest free: {best_vcpus} vCPUs, {best_mib} MiB on {best_host})")]
    NoRoom {
        need_vcpus: u32,
        need_mib: u64,
        best_host: String,
        best_vcpus: u32,
        best_mib: u64,
    },
    #[error("no host is up to place a VM on")]
    NoHostUp,
    #[error("host {host} has no room: the VM needs {need_vcpus} vCPUs and {need_mib} MiB, {free_vcpus} vCPUs and {free_mib} MiB are free")]
    HostFull {
        host: HostId,
        need_vcpus: u32,
        need_mib: u64,
        free_vcpus: u32,
        free_mib: u64,
    },
}

/// Picks a host for `need` among `cands`.
pub fn choose(cands: &[Candidate], need: Resources) -> Result<HostId, PlacementError> {
    if cands.is_empty() {
        return Err(PlacementError::NoHostUp);
    }
    let best = cands
        .iter()
        .filter(|c| need.fits_in(&c.free()))
        .max_by(|a, b| {
            a.free()
                .mem_mib
                .cmp(&b.free().mem_mib)
                .then_with(|| b.host.cmp(&a.host))
        });
    match best {
        Some(c) => Ok(c.host.clone()),
        None => {
            let roomiest = cands
                .iter()
                .max_by_key(|c| c.free().mem_mib)
                .expect("cands is not empty");
            Err(PlacementError::NoRoom {
                need_vcpus: need.vcpus,
                need_mib: need.mem_mib,
                best_host: roomiest.host.to_string(),
                best_vcpus: roomiest.free().vcpus,
                best_mib: roomiest.free().mem_mib,
            })
        }
    }
}

/// Checks that `need` fits on `c`.
pub fn check(c: &Candidate, need: Resources) -> Result<(), PlacementError> {
    let free = c.free();
    if need.fits_in(&free) {
        Ok(())
    } else {
        Err(PlacementError::HostFull {
            host: c.host.clone(),
            need_vcpus: need.vcpus,
            need_mib: need.mem_mib,
            free_vcpus: free.vcpus,
            free_mib: free.mem_mib,
        })
    }
}

/// What a host offers to VMs: the config's figure, else derived from its metrics.
pub fn capacity(h: &HostEntry) -> Resources {
    let m = h.metrics.as_ref();
    let vcpus = h.cfg.vcpus.unwrap_or_else(|| {
        m.map(|m| m.per_cpu_percent.len() as u32 * VCPU_OVERCOMMIT)
            .unwrap_or(0)
    });
    let mem_mib = h.cfg.mem_mib.unwrap_or_else(|| {
        m.map(|m| (m.mem_total_bytes / (1024 * 1024)).saturating_sub(HOST_RESERVED_MIB))
            .unwrap_or(0)
    });
    Resources::new(vcpus, mem_mib)
}

impl Model {
    /// Hosts that may receive VMs now (up, linked, not in maintenance), with what is
    /// used on each: managed VMs by their placement, unmanaged ones by report.
    /// `ignore` is left out of the usage (a VM being moved or restarted).
    pub fn candidates(&self, ignore: Option<&VmId>) -> Vec<Candidate> {
        self.cluster
            .hosts
            .values()
            .filter(|h| h.status() == HostStatus::Up && h.link.is_some())
            .filter(|h| {
                let rec = ignore.and_then(|vm| self.persisted.vms.get(vm));
                self.may_run_on(h, rec.map(|r| &r.spec))
            })
            .filter(|h| {
                !self
                    .persisted
                    .hosts
                    .get(&h.cfg.name)
                    .is_some_and(|r| r.maintenance || r.standby)
            })
            .map(|h| Candidate {
                host: h.cfg.name.clone(),
                capacity: capacity(h),
                used: self.used_on(&h.cfg.name, ignore),
            })
            .collect()
    }

    /// May `host` run VMs (it gives guests the cluster's CPU model: its report says so,
    /// `router hosts` shows it), and `spec` in particular (each of its NICs' networks
    /// and its own CPU model are there)? A host that never reported is not ruled out.
    pub fn may_run_on(&self, host: &HostEntry, spec: Option<&VmSpec>) -> bool {
        host.virt.as_ref().is_none_or(|v| {
            v.can_run_cpu(&self.config.cpu_model) && spec.is_none_or(|s| v.serves(s))
        })
    }

    /// When no awake host has room for `spec`: picks a sleeping (standby) host that is
    /// not in maintenance and may run it (as it last reported), asks for it to be woken
    /// (`wake_wanted`, served by the energy task) and returns it, so the caller can say
    /// so. None if there is nothing to wake.
    pub fn want_wake_for_room(&mut self, spec: &VmSpec) -> Option<HostId> {
        let standby = self
            .cluster
            .hosts
            .values()
            .filter(|h| h.status() == HostStatus::Standby && self.may_run_on(h, Some(spec)))
            .map(|h| h.cfg.name.clone())
            .find(|id| !self.persisted.hosts.get(id).is_some_and(|r| r.maintenance))?;
        self.wake_wanted.insert(standby.clone());
        Some(standby)
    }

    /// Resources in use on `host`.
    pub fn used_on(&self, host: &HostId, ignore: Option<&VmId>) -> Resources {
        let managed: Resources = self
            .persisted
            .vms
            .iter()
            .filter(|(id, r)| r.host.as_ref() == Some(host) && Some(*id) != ignore)
            .filter(|(_, r)| r.desired == crate::store::Desired::Running)
            .map(|(_, r)| r.spec.resources())
            .sum();
        // Migration targets hold memory before the record moves to them.
        let incoming: Resources = self
            .claims
            .iter()
            .filter(|(id, op)| {
                matches!(op, crate::cluster::Op::Migrate { to, .. } if to == host)
                    && Some(*id) != ignore
            })
            .filter_map(|(id, _)| self.persisted.vms.get(id))
            .map(|r| r.spec.resources())
            .sum();
        let unmanaged: Resources = self
            .cluster
            .hosts
            .get(host)
            .map(|h| {
                h.vms
                    .iter()
                    .filter(|v| !self.persisted.vms.contains_key(&v.id))
                    .map(|v| Resources::new(v.vcpus, v.mem_mib))
                    .sum()
            })
            .unwrap_or_default();
        managed + incoming + unmanaged
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn cand(name: &str, cap: (u32, u64), used: (u32, u64)) -> Candidate {
        Candidate {
            host: HostId::new(name).unwrap(),
            capacity: Resources::new(cap.0, cap.1),
            used: Resources::new(used.0, used.1),
        }
    }

    #[test]
    fn picks_most_free_memory_that_fits() {
        let c = [
            cand("a", (8, 1000), (0, 900)),
            cand("b", (8, 1000), (0, 200)),
            cand("c", (1, 4000), (1, 0)),
        ];
        assert_eq!(choose(&c, Resources::new(1, 64)).unwrap().as_str(), "b");
        // "c" has the memory but no vCPU left; nobody else has 850 MiB.
        assert!(matches!(
            choose(&c, Resources::new(1, 850)),
            Err(PlacementError::NoRoom { .. })
        ));
        let e = choose(&c, Resources::new(2, 900)).unwrap_err();
        assert!(matches!(e, PlacementError::NoRoom { .. }), "{e}");
        assert!(e.to_string().contains("900 MiB"), "{e}");
        assert_eq!(
            choose(&[], Resources::new(1, 1)),
            Err(PlacementError::NoHostUp)
        );
    }

    #[test]
    fn check_names_the_host_and_the_shortfall() {
        let e = check(&cand("a", (2, 512), (1, 500)), Resources::new(1, 64)).unwrap_err();
        let t = e.to_string();
        assert!(
            t.contains("host a") && t.contains("64 MiB") && t.contains("12 MiB"),
            "{t}"
        );
    }
}
