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
    /// Any host may be emptied when the running hosts' mean predicted CPU utilisation
    /// stays below `lower_mean` afterwards (0 disables): with `spread`, hosts carry
    /// similar loads and none falls below `lower` on its own.
    pub lower_mean: f64,
    /// Memory may be filled up to `mem_target × mem_mb` (1.0: no overcommit).
    pub mem_target: f64,
    pub prediction: Prediction,
    /// A VM is moved only to a host with room for mean + `move_k_stddev` × stddev of its
    /// recent demand (at least its prediction): moved VMs land where their bursts fit.
    pub move_k_stddev: f64,
    /// Destination choice: `true` puts a VM on the running host with the most room
    /// (worst fit), which spreads load over the hosts that stay on and so makes the next
    /// overload less likely; `false` is best fit (tightest host).
    pub spread: bool,
    /// With `spread`, a VM shed by an overloaded host goes to the roomiest running host
    /// that consolidation keeps (predicted load at least `lower`), and only when none
    /// has room to the roomiest of all. The roomiest hosts are usually the light ones
    /// about to be emptied: a VM landed there is frozen for `min_vm_move_interval_s` and
    /// keeps its host running, or moves twice. (With `spread_consolidation` it applies to
    /// the VMs of a host being emptied too.)
    pub relieve_onto_kept: bool,
    /// Destination choice when emptying a host. Best fit (`false`) keeps the moved VMs,
    /// which are frozen for a while, on few hosts, so the others stay free to be emptied.
    pub spread_consolidation: bool,
    /// Before waking a host for a VM shed by an overloaded host, try a running host that
    /// takes it up to `upper` (not just `target`).
    pub squeeze_before_wake: bool,
    /// Destinations are searched on the most efficient hosts (MIPS per watt at full
    /// load, in 5 % tiers) first, and consolidation never moves a VM to a less efficient
    /// host; `false` ignores efficiency when choosing destinations.
    pub prefer_efficient_hosts: bool,
    /// Hosts less efficient than the best running ones are candidates to be emptied below
    /// this fraction of their capacity (at least `lower`): their VMs cost fewer watts on a
    /// better host.
    pub lower_less_efficient: f64,
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
    /// For a real cluster run by the daemon: headroom for bursts (pack to 85 % of the
    /// predicted mean + 1 σ), N+1 reserve, two migrations at a time, a VM stays at least
    /// 30 min where it landed, a woken host stays up at least 15 min.
    fn default() -> Self {
        Self {
            upper: 1.0,
            target: 0.85,
            lower: 0.5,
            lower_mean: 0.0,
            mem_target: 1.0,
            prediction: Prediction {
                window: 6,
                k_stddev: 1.0,
            },
            move_k_stddev: 2.0,
            spread: true,
            relieve_onto_kept: false,
            spread_consolidation: false,
            squeeze_before_wake: true,
            prefer_efficient_hosts: true,
            lower_less_efficient: 0.5,
            reserve_hosts: 1,
            max_parallel_migrations: 2,
            max_consolidation_migrations: 16,
            max_evacuation_vms: 32,
            min_vm_move_interval_s: 1800.0,
            min_awake_s: 900.0,
        }
    }
}

impl Policy {
    /// Tolerates planned overloads of 5 % to save energy: a host is relieved only above
    /// 105 % of its capacity, destinations are filled to 100 % of current demand, hosts
    /// are emptied below 72 % (75 % for less efficient ones), a VM that moved stays
    /// 50 min, moved VMs land where mean + 1.5 σ of their last hour fits. About 1 % less
    /// energy and fewer migrations than `planetlab_no_overload` on PlanetLab, for about
    /// twice its SLATAH (over LR-MMT's on held-out days) and SLAV (`planetlab` bench of
    /// wisp-sim).
    pub fn planetlab_balanced() -> Self {
        Self {
            upper: 1.05,
            target: 1.0,
            lower: 0.72,
            lower_mean: 0.0,
            mem_target: 1.0,
            prediction: Prediction {
                window: 12,
                k_stddev: 0.0,
            },
            move_k_stddev: 1.5,
            spread: true,
            relieve_onto_kept: false,
            spread_consolidation: false,
            squeeze_before_wake: true,
            prefer_efficient_hosts: true,
            lower_less_efficient: 0.75,
            reserve_hosts: 0,
            // CloudSim starts every migration of a round at once.
            max_parallel_migrations: usize::MAX,
            max_consolidation_migrations: usize::MAX,
            max_evacuation_vms: 32,
            min_vm_move_interval_s: 3000.0,
            min_awake_s: 0.0,
        }
    }

    /// The PlanetLab policy (`Scenario::cloudsim().default_policy()` in wisp-sim): never
    /// plans an overload (relieve above 100 %, fill to 100 % of current demand), a VM
    /// shed by an overloaded host goes to a host that stays on (`relieve_onto_kept`),
    /// hosts are emptied below 65 % (75 % for less efficient ones) when they hold at most
    /// 16 VMs, a VM that moved stays an hour, moved VMs land where mean + 1.5 σ of their
    /// last hour fits.
    ///
    /// Chosen by its worst goal ratio over 16 synthetic held-out days built from the
    /// traces (`examples/heldout.rs`, seeds 101–116), never on the real days: 1.080,
    /// against 1.091 (1.084 with upper 1.02) for the best of 76 knob variants without
    /// `relieve_onto_kept` (upper 1.0–1.05, lower 0.55–0.8, freeze 40–90 min, headroom
    /// 1–2 σ), and 1.070 for this one with upper 1.02, which tolerates 2 % overloads for
    /// about twice the SLATAH (its worst SLATAH ratio is 0.99): within 1 % we keep the
    /// policy that plans no overload. Energy is the goal it misses: 1.08 × the 0.80 × LR-MMT proxy at worst on
    /// held-out days; lowering energy costs migrations or SLATAH beyond their goals (see
    /// sim/README.md).
    pub fn planetlab_no_overload() -> Self {
        Self {
            upper: 1.0,
            lower: 0.65,
            move_k_stddev: 1.5,
            relieve_onto_kept: true,
            max_evacuation_vms: 16,
            min_vm_move_interval_s: 3600.0,
            ..Self::planetlab_balanced()
        }
    }
}
