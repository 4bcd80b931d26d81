//! The planner's input: a snapshot of the cluster (`ClusterView`).
//!
//! The view is built by whoever calls the planner (the router daemon from its cluster
//! model, the simulator from a trace). Hosts and VMs are addressed by their position in
//! the view's vectors (`HostIx`, `VmIx`); the caller keeps the mapping to its own ids
//! (e.g. `wisp_common::HostId`). `now_s` is part of the view because the planner reads
//! no clock.

use serde::{Deserialize, Serialize};

use crate::watts::PowerModel;

/// Position of a host in `ClusterView::hosts`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct HostIx(pub u32);

/// Position of a VM in `ClusterView::vms`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct VmIx(pub u32);

impl HostIx {
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

impl VmIx {
    pub fn get(self) -> usize {
        self.0 as usize
    }
}

/// Power state of a host as the router last observed it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum PlanPower {
    /// Running and able to host VMs.
    On,
    /// Suspended to RAM (S3): wakes in `wake_latency_s`.
    Asleep,
    /// A wake was sent; it will be `On` soon. Can be a migration target once up.
    Waking,
    /// Powered off (S5): wakes like `Asleep`, usually with a longer latency.
    Off,
    /// Failed, fenced, in maintenance: never a target, never woken by the planner.
    Unavailable,
}

impl PlanPower {
    /// Can the planner wake this host?
    pub fn wakeable(self) -> bool {
        matches!(self, PlanPower::Asleep | PlanPower::Off)
    }
}

/// One host: capacity, power state and power model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanHost {
    /// CPU capacity in MIPS (or any unit, as long as VM demand uses the same one).
    pub cpu: f64,
    /// Memory capacity in MB.
    pub mem_mb: u64,
    pub power: PlanPower,
    pub power_model: PowerModel,
    /// Seconds from a wake request to the host accepting VMs.
    pub wake_latency_s: f64,
    /// When the host last changed power state (same clock as `ClusterView::now_s`):
    /// a host woken recently is not put back to sleep (hysteresis).
    pub power_changed_at_s: f64,
}

/// One VM: memory, CPU demand now and recently, placement.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PlanVm {
    /// Memory the VM needs on its host, MB (also what a live migration copies).
    pub mem_mb: u64,
    /// The most CPU the VM can use (its vCPUs × per-core capacity), same unit as `PlanHost::cpu`.
    pub cpu_max: f64,
    /// CPU demand now.
    pub cpu_now: f64,
    /// Recent CPU demand samples, oldest first (may exclude `cpu_now`; may be empty).
    pub cpu_history: Vec<f64>,
    /// Where the VM runs; `None` for a VM that still has to be placed.
    pub host: Option<HostIx>,
    /// When the VM last finished a migration (same clock as `now_s`).
    pub last_moved_at_s: Option<f64>,
    /// The only hosts the VM may run on (`None`: any). A host lacking one of the VM's
    /// networks or its CPU model is left out: the planner neither moves the VM there
    /// nor wakes that host for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub only_on: Option<Vec<HostIx>>,
}

/// The snapshot the planner plans against.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct ClusterView {
    /// Current time in seconds on the caller's clock.
    pub now_s: f64,
    pub hosts: Vec<PlanHost>,
    pub vms: Vec<PlanVm>,
}
