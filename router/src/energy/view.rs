//! From the cluster model to the planner's `ClusterView`.
//!
//! Two steps, so the second is pure and tested without a running router: [`observe`]
//! copies what matters out of the `Model` (inside the cluster task, cheap), and
//! [`build`] turns that copy plus the energy task's own records (CPU history, moves,
//! power changes) into a view and the id lists that give its positions meaning.
//!
//! Units: host CPU = its number of CPUs, VM demand = cores its qemu used (so a host
//! at 100 % runs as many busy vCPUs as it has CPUs), VM `cpu_max` = its vCPUs; memory
//! in MiB from `placement::capacity` and the VM specs.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use wisp_common::{HostId, VmId, VmRunState};
use wisp_planner::{ClusterView, HostIx, PlanHost, PlanPower, PlanVm};

use super::meter::{CpuMeter, HostWatts};
use crate::cluster::Model;
use crate::config::energy::EnergyConfig;
use crate::model::host::HostStatus;
use crate::store::Desired;
use crate::vms::placement::{capacity, VCPU_OVERCOMMIT};

/// A host as the cluster task sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedHost {
    pub id: HostId,
    pub status: HostStatus,
    pub linked: bool,
    pub maintenance: bool,
    pub standby: bool,
    /// Failed to wake by every method: the planner leaves it alone (`power/quarantine.rs`).
    pub quarantined: bool,
    /// CPUs (from its metrics), if it ever reported them.
    pub cpus: Option<usize>,
    pub cpu_percent: Option<f64>,
    /// vCPUs and MiB the router may place there.
    pub vcpus: u32,
    pub mem_mib: u64,
    /// VMs its genie reports: id, run state, qemu CPU time (ms), vCPUs, MiB.
    pub vms: Vec<(VmId, VmRunState, u64, u32, u64)>,
    /// How deep it sleeps, as stored when its sleep was verified.
    pub depth: Option<crate::api::types::SuspendMode>,
    /// False when its genie said its kernel offers no suspend-to-RAM.
    pub can_ram: bool,
    /// Its measured wake time (median of its recent wakes, request to genie heard).
    pub expected_wake_ms: Option<u64>,
}

/// A VM the router manages.
#[derive(Debug, Clone, PartialEq)]
pub struct ObservedVm {
    pub id: VmId,
    pub vcpus: u32,
    pub mem_mib: u64,
    pub host: Option<HostId>,
    /// Another operation (start, stop, migration) is in flight.
    pub busy: bool,
    /// The only hosts it may run on (`None`: every host may): hosts lacking one of
    /// its networks or its CPU model are left out (`Model::may_run_on`).
    pub only_on: Option<Vec<HostId>>,
}

/// What [`observe`] copies out of the model.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Observed {
    pub energy_mode: bool,
    pub hosts: Vec<ObservedHost>,
    pub vms: Vec<ObservedVm>,
    pub wake_wanted: BTreeSet<HostId>,
}

/// Runs inside the cluster task.
pub fn observe(m: &Model) -> Observed {
    let hosts = m
        .cluster
        .hosts
        .values()
        .map(|h| {
            let flags = m.persisted.hosts.get(&h.cfg.name);
            let cap = capacity(h);
            ObservedHost {
                id: h.cfg.name.clone(),
                status: h.status(),
                linked: h.link.is_some(),
                maintenance: flags.is_some_and(|f| f.maintenance),
                standby: flags.is_some_and(|f| f.standby),
                quarantined: flags.is_some_and(|f| f.quarantine.is_some()),
                cpus: h
                    .metrics
                    .as_ref()
                    .map(|x| x.per_cpu_percent.len())
                    .filter(|n| *n > 0),
                cpu_percent: h.metrics.as_ref().map(|x| f64::from(x.cpu_percent)),
                vcpus: cap.vcpus,
                mem_mib: cap.mem_mib,
                depth: flags.and_then(|f| f.depth),
                expected_wake_ms: flags.and_then(|f| f.wake.expected_ms()),
                can_ram: h
                    .power_caps
                    .as_ref()
                    .is_none_or(|c| c.sleep_states.is_empty() || c.can_suspend_to_ram()),
                vms: h
                    .vms
                    .iter()
                    .map(|v| {
                        (
                            v.id.clone(),
                            v.state.clone(),
                            v.cpu_time_ms,
                            v.vcpus,
                            v.mem_mib,
                        )
                    })
                    .collect(),
            }
        })
        .collect();
    let mut fits: HashMap<(Option<String>, String), Option<Vec<HostId>>> = HashMap::new();
    let vms = m
        .persisted
        .vms
        .iter()
        .filter(|(_, r)| r.desired == Desired::Running)
        .map(|(id, r)| {
            // What rules a host out is the VM's networks and CPU model: worked out once
            // per distinct pair, not once per VM and host (10,000 VMs × 1,000 hosts
            // would hold the cluster task for a noticeable time). Listed only when
            // some host is ruled out.
            let mut nets: Vec<&str> = r.spec.nics.iter().map(|n| n.network.as_str()).collect();
            nets.sort_unstable();
            nets.dedup();
            let only_on = fits
                .entry((r.spec.cpu_model.clone(), nets.join(",")))
                .or_insert_with(|| {
                    let hosts = m.cluster.hosts.values();
                    (!hosts.clone().all(|h| m.may_run_on(h, Some(&r.spec)))).then(|| {
                        hosts
                            .filter(|h| m.may_run_on(h, Some(&r.spec)))
                            .map(|h| h.cfg.name.clone())
                            .collect()
                    })
                })
                .clone();
            ObservedVm {
                id: id.clone(),
                vcpus: r.spec.vcpus,
                mem_mib: r.spec.mem_mib,
                host: r.host.clone(),
                busy: m.claims.is_held(id),
                only_on,
            }
        })
        .collect();
    Observed {
        energy_mode: m.persisted.energy_mode,
        hosts,
        vms,
        wake_wanted: m.wake_wanted.clone(),
    }
}

/// The planner's idea of a host's power state.
pub fn power_state(h: &ObservedHost) -> PlanPower {
    if h.maintenance || h.quarantined || h.status == HostStatus::Maintenance {
        return PlanPower::Unavailable;
    }
    match h.status {
        HostStatus::Up if h.linked && !h.standby => PlanPower::On,
        HostStatus::Standby => PlanPower::Asleep,
        HostStatus::Waking => PlanPower::Waking,
        // Down/fenced hosts failed (or were fenced): waking them is the operator's call.
        _ => PlanPower::Unavailable,
    }
}

/// The energy task's memory between rounds.
#[derive(Debug, Default)]
pub struct Records {
    pub meter: CpuMeter,
    /// When each VM last finished a move, on the task clock.
    pub moved_at: HashMap<VmId, f64>,
    /// Each host's power state and since when, on the task clock.
    pub power: BTreeMap<HostId, (PlanPower, f64)>,
}

impl Records {
    /// Feeds one observation: CPU readings and power-state changes.
    pub fn update(&mut self, obs: &Observed, now_s: f64) {
        for h in &obs.hosts {
            for (vm, state, cpu_ms, _, _) in &h.vms {
                if *state == VmRunState::Running {
                    self.meter.observe(vm, &h.id, *cpu_ms, now_s);
                }
            }
            let p = power_state(h);
            match self.power.get(&h.id) {
                Some((q, _)) if *q == p => {}
                _ => {
                    self.power.insert(h.id.clone(), (p, now_s));
                }
            }
        }
        let known: BTreeSet<&VmId> = obs
            .hosts
            .iter()
            .flat_map(|h| h.vms.iter().map(|v| &v.0))
            .chain(obs.vms.iter().map(|v| &v.id))
            .collect();
        self.meter.retain(|v| known.contains(v));
        self.moved_at.retain(|v, _| known.contains(v));
    }
}

/// A view and the ids at its positions.
#[derive(Debug, Clone, PartialEq)]
pub struct Snapshot {
    pub view: ClusterView,
    pub hosts: Vec<HostId>,
    pub vms: Vec<VmId>,
}

impl Snapshot {
    pub fn host(&self, ix: HostIx) -> &HostId {
        &self.hosts[ix.get()]
    }
    pub fn vm(&self, ix: wisp_planner::VmIx) -> &VmId {
        &self.vms[ix.get()]
    }
}

/// The planner's view of `obs` at `now_s`.
pub fn build(obs: &Observed, rec: &Records, cfg: &EnergyConfig, now_s: f64) -> Snapshot {
    let mut hosts = Vec::new();
    let mut views = Vec::new();
    let mut pos = HashMap::new();
    for h in &obs.hosts {
        let power = power_state(h);
        let cpus = h.cpus.map(|n| n as f64).unwrap_or_else(|| {
            // Never reported: guess from the configured vCPUs at the usual overcommit.
            (f64::from(h.vcpus) / f64::from(VCPU_OVERCOMMIT)).max(1.0)
        });
        pos.insert(h.id.clone(), HostIx(hosts.len() as u32));
        hosts.push(h.id.clone());
        views.push(PlanHost {
            cpu: cpus,
            mem_mb: h.mem_mib,
            power,
            power_model: cfg.power(&h.id).model(),
            // Measured when known; else the configured figure for its depth (a host
            // that sleeps powered off wakes through a full boot).
            wake_latency_s: h.expected_wake_ms.map(|ms| ms as f64 / 1000.0).unwrap_or(
                match h.depth {
                    Some(crate::api::types::SuspendMode::SoftOff) => cfg.wake_off_s,
                    _ => cfg.wake_latency_s,
                },
            ),
            power_changed_at_s: rec.power.get(&h.id).map(|p| p.1).unwrap_or(now_s),
        });
    }
    let by_id: HashMap<&HostId, &ObservedHost> = obs.hosts.iter().map(|h| (&h.id, h)).collect();
    let mut vms = Vec::new();
    let mut vm_views = Vec::new();
    let only_on = |v: &ObservedVm| {
        v.only_on
            .as_ref()
            .map(|hs| hs.iter().filter_map(|h| pos.get(h).copied()).collect())
    };
    let mut push = |id: &VmId,
                    vcpus: u32,
                    mem: u64,
                    host: Option<HostIx>,
                    frozen: bool,
                    only_on: Option<Vec<HostIx>>| {
        vms.push(id.clone());
        vm_views.push(PlanVm {
            mem_mb: mem,
            cpu_max: f64::from(vcpus),
            cpu_now: rec.meter.now(id),
            cpu_history: rec.meter.history(id),
            host,
            last_moved_at_s: if frozen {
                Some(now_s)
            } else {
                rec.moved_at.get(id).copied()
            },
            only_on,
        });
    };
    let managed: BTreeSet<&VmId> = obs.vms.iter().map(|v| &v.id).collect();
    for v in &obs.vms {
        let host = v.host.as_ref().and_then(|h| by_id.get(h).copied());
        match host {
            // Its host is proven off: the reconciler restarts it elsewhere; the planner
            // sees a VM to place (and wakes a host when nothing running has room).
            Some(h) if crate::vms::reconcile::proven_off(h.status) => {
                push(&v.id, v.vcpus, v.mem_mib, None, true, only_on(v))
            }
            Some(h) => {
                let running_there = h
                    .vms
                    .iter()
                    .any(|x| x.0 == v.id && x.1 == VmRunState::Running);
                // Only a VM running where it is placed, on a running host, with
                // nothing else in flight, may be moved.
                let movable = running_there && !v.busy && power_state(h) == PlanPower::On;
                let at = pos.get(&h.id).copied();
                push(&v.id, v.vcpus, v.mem_mib, at, !movable, only_on(v))
            }
            None => push(&v.id, v.vcpus, v.mem_mib, None, true, only_on(v)),
        }
    }
    // VMs the router did not create still take room on their host; never moved.
    for h in &obs.hosts {
        for (id, state, _, vcpus, mem) in &h.vms {
            if !managed.contains(id) && *state != VmRunState::Stopped {
                push(id, *vcpus, *mem, pos.get(&h.id).copied(), true, None);
            }
        }
    }
    Snapshot {
        view: ClusterView {
            now_s,
            hosts: views,
            vms: vm_views,
        },
        hosts,
        vms,
    }
}

/// Estimated draw of each host now, and what it would be with every host on.
/// Hosts the energy mode has no say over (failed, maintenance) count in neither.
pub fn watts(obs: &Observed, cfg: &EnergyConfig) -> Vec<(HostId, Option<HostWatts>)> {
    obs.hosts
        .iter()
        .map(|h| {
            let p = cfg.power(&h.id);
            let model = p.model();
            let w = match power_state(h) {
                PlanPower::On => {
                    let u = h.cpu_percent.unwrap_or(0.0) / 100.0;
                    let w = model.watts_at(u);
                    Some(HostWatts {
                        actual: w,
                        all_on: w,
                    })
                }
                PlanPower::Waking => Some(HostWatts {
                    actual: p.idle_watts,
                    all_on: p.idle_watts,
                }),
                PlanPower::Asleep | PlanPower::Off => Some(HostWatts {
                    actual: p.standby_watts,
                    all_on: p.idle_watts,
                }),
                PlanPower::Unavailable => None,
            };
            (h.id.clone(), w)
        })
        .collect()
}
