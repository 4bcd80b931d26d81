//! The knobs of consolidation (`Policy`) and their defaults.
//!
//! Thresholds are fractions of a host's CPU capacity, applied to *predicted* demand.
//! Hysteresis comes from three gaps: a host is overloaded above `upper`, a destination is
//! filled only up to `target < upper` (so a move never creates the next overload), and a
//! host is emptied only below `lower < target` (so a host is not emptied right after it
//! was filled). A VM that moved is frozen for `min_vm_move_interval_s`.

use serde::{Deserialize, Serialize};

/// How a VM's near-future CPU demand is predicted from its recent samples.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Prediction {
    /// How many of the most recent samples (plus `cpu_now`) to look at.
    pub window: usize,
    /// Predicted demand = max(now, mean + k_stddev × stddev) over the window, capped at
    /// the VM's `cpu_max`. PlanetLab demand is bursty, so k > 0 buys headroom.
    pub k_stddev: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Policy {
    /// A host whose predicted CPU exceeds `upper × capacity` is overloaded.
    pub upper: f64,
    /// Destinations are filled up to `target × capacity` of predicted CPU.
    pub target: f64,
    /// Hosts below `lower × capacity` predicted CPU are candidates to be emptied.
    pub lower: f64,
    /// Memory may be filled up to `mem_target × mem_mb` (1.0: no overcommit).
    pub mem_target: f64,
    pub prediction: Prediction,
    /// Destination choice: `true` puts a VM on the running host with the most room
    /// (worst fit), which spreads load over the hosts that stay on and so makes the next
    /// overload less likely; `false` is best fit (tightest host).
    pub spread: bool,
    /// Failover reserve: 0 = none; 1 = the running hosts keep enough free room
    /// (CPU up to `upper`, and memory) to absorb the largest running host (N+1).
    pub reserve_hosts: u32,
    /// Migrations per batch; batches run one after another.
    pub max_parallel_migrations: usize,
    /// Upper bound on migrations in one plan (overload relief is never cut).
    pub max_consolidation_migrations: usize,
    /// Most VMs moved to empty one host: emptying a crowded host costs more than it saves.
    pub max_evacuation_vms: usize,
    /// A VM that moved is not moved again for this long.
    pub min_vm_move_interval_s: f64,
    /// A host that changed power state is not put to sleep again for this long.
    pub min_awake_s: f64,
}

impl Default for Policy {
    /// The policy tuned on the PlanetLab traces (see the `planetlab` benchmark).
    fn default() -> Self {
        Self {
            upper: 1.0,
            target: 0.95,
            lower: 0.75,
            mem_target: 1.0,
            prediction: Prediction {
                window: 6,
                k_stddev: 0.0,
            },
            spread: true,
            reserve_hosts: 1,
            max_parallel_migrations: 8,
            max_consolidation_migrations: 64,
            max_evacuation_vms: 32,
            min_vm_move_interval_s: 1800.0,
            min_awake_s: 600.0,
        }
    }
}
