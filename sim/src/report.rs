//! What a simulation run measured: CloudSim's metrics plus a time series for plots.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One planning step of the simulation.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct StepSample {
    pub t_s: f64,
    /// Hosts with non-zero utilisation at the end of the step (CloudSim's "active").
    pub hosts_active: usize,
    /// Hosts powered on after the step's plan.
    pub hosts_on: usize,
    /// Mean power over the step, W.
    pub power_w: f64,
    /// Total VM CPU demand at the start of the step, MIPS.
    pub demand_mips: f64,
    pub migrations: usize,
}

/// Metrics with CloudSim's definitions (fractions, not percent).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct SimReport {
    pub scenario: String,
    pub vms: usize,
    pub hosts: usize,
    pub energy_kwh: f64,
    /// Of `energy_kwh`: drawn by sleeping hosts (realistic scenario only).
    pub standby_kwh: f64,
    /// Fraction of active-host time with requested MIPS above capacity.
    pub slatah: f64,
    /// MIPS lost to migration / MIPS requested.
    pub pdm: f64,
    /// SLATAH × PDM.
    pub slav: f64,
    /// energy (kWh) × SLAV.
    pub esv: f64,
    pub migrations: usize,
    /// Of `migrations`: moves off overloaded hosts (the rest empty hosts to sleep).
    pub overload_migrations: usize,
    /// CloudSim's count: transitions of a host from active (utilisation > 0) to inactive,
    /// starting from "active" (so a host never used counts once).
    pub host_shutdowns: usize,
    /// Hosts the planner put to sleep / woke.
    pub sleeps: usize,
    /// Suspended hosts moved to soft-off (S3 → S5) by the depth policy.
    pub deepenings: usize,
    /// Mean number of hosts asleep in S3 (the rest of the sleepers are in S5).
    pub mean_s3_hosts: f64,
    pub wakes: usize,
    /// Demand not served because a host was full / demand (not a CloudSim metric).
    pub unserved: f64,
    pub mean_active_hosts: f64,
    /// Overloaded host-steps the planner could not relieve.
    pub unresolved_overloads: usize,
    /// Serving all demand at the most efficient host's full-load point, kWh.
    pub bound_kwh: f64,
    pub series: Vec<StepSample>,
}

impl fmt::Display for SimReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(
            f,
            "scenario {}: {} VMs on {} hosts, {} steps",
            self.scenario,
            self.vms,
            self.hosts,
            self.series.len()
        )?;
        writeln!(
            f,
            "  energy          {:>10.2} kWh  (standby {:.2} kWh)",
            self.energy_kwh, self.standby_kwh
        )?;
        writeln!(
            f,
            "  physical bound  {:>10.2} kWh  (energy / bound = {:.3})",
            self.bound_kwh,
            if self.bound_kwh > 0.0 {
                self.energy_kwh / self.bound_kwh
            } else {
                0.0
            }
        )?;
        writeln!(
            f,
            "  migrations      {:>10}  ({} for overloads)",
            self.migrations, self.overload_migrations
        )?;
        writeln!(f, "  SLAV            {:>10.5} %", self.slav * 100.0)?;
        writeln!(f, "  SLATAH          {:>10.2} %", self.slatah * 100.0)?;
        writeln!(f, "  PDM             {:>10.3} %", self.pdm * 100.0)?;
        writeln!(f, "  ESV             {:>10.6}", self.esv)?;
        writeln!(
            f,
            "  host shutdowns  {:>10}  (CloudSim's count)",
            self.host_shutdowns
        )?;
        writeln!(f, "  sleeps / wakes  {:>10} / {}", self.sleeps, self.wakes)?;
        writeln!(
            f,
            "  asleep in S3    {:>10.1} hosts on average ({} moved on to S5)",
            self.mean_s3_hosts, self.deepenings
        )?;
        writeln!(
            f,
            "  mean active     {:>10.1} hosts",
            self.mean_active_hosts
        )?;
        writeln!(f, "  unserved demand {:>10.3} %", self.unserved * 100.0)?;
        write!(
            f,
            "  unresolved overloads {} host-steps",
            self.unresolved_overloads
        )
    }
}
