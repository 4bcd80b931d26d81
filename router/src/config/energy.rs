//! The `[energy]` table of router.toml: whether energy-saving mode is on by default,
//! how often the planner runs, the thresholds it plans with (mapped onto
//! `wisp_planner::Policy`), and the per-host power model used for the watts and kWh
//! figures of `router energy status`.

use std::collections::BTreeMap;

use serde::Deserialize;
use wisp_common::HostId;
use wisp_planner::{Policy, PowerModel};

/// How an emptied host is put to sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SleepMode {
    /// Per host: suspend-to-RAM for the hosts the cluster may need soon, soft-off for
    /// the others and for hosts that cannot suspend; a suspended host left unneeded
    /// for `s3_grace_s` is powered off (`wisp_planner::depth`).
    Auto,
    /// Suspend-to-RAM through the genie (Wake-on-LAN armed first): wakes in seconds.
    Suspend,
    /// ACPI soft-off through the BMC: draws less, boots in minutes.
    Off,
}

/// A host's power draw, watts.
#[derive(Debug, Clone, Copy, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HostDraw {
    pub idle_watts: f64,
    pub max_watts: f64,
    pub standby_watts: f64,
}

impl HostDraw {
    pub fn model(&self) -> PowerModel {
        PowerModel::linear(self.idle_watts, self.max_watts)
    }
}

#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyConfig {
    /// Energy mode when the operator never chose with `router energy on|off`.
    #[serde(default)]
    pub enabled: bool,
    /// Seconds between planner runs. 30 s: the planner's CPU history then spans the
    /// last three minutes (window 6), long enough not to chase a single burst.
    #[serde(default = "default_interval_s")]
    pub interval_s: f64,
    /// Default power model (a typical 1U server when not given).
    #[serde(default = "default_idle")]
    pub idle_watts: f64,
    #[serde(default = "default_max")]
    pub max_watts: f64,
    #[serde(default = "default_standby")]
    pub standby_watts: f64,
    /// Per-host power models overriding the default.
    #[serde(default)]
    pub hosts: BTreeMap<HostId, HostDraw>,
    /// Seconds from a wake request to the host accepting VMs (the planner wakes hosts
    /// this far ahead).
    #[serde(default = "default_wake_latency_s")]
    pub wake_latency_s: f64,
    #[serde(default = "default_sleep")]
    pub sleep: SleepMode,
    /// Seconds from a soft-off host's power-on to accepting VMs (a full boot); the
    /// suspend-to-RAM figure is `wake_latency_s`. Used by the sleep-depth choice
    /// until a host's wake was measured.
    #[serde(default = "default_wake_off_s")]
    pub wake_off_s: f64,
    /// A suspended host that the cluster has not counted as needed soon for this long
    /// is powered off (less standby draw, slower wake). An hour by default: powering a
    /// host off and booting it soon after costs more than the watts saved.
    #[serde(default = "default_s3_grace_s")]
    pub s3_grace_s: f64,
    /// Thresholds (fractions of a host's CPUs, on predicted demand); see `Policy`.
    #[serde(default)]
    pub upper: Option<f64>,
    #[serde(default)]
    pub target: Option<f64>,
    #[serde(default)]
    pub lower: Option<f64>,
    /// 1 = keep room to absorb the loss of the largest running host (N+1).
    #[serde(default)]
    pub reserve_hosts: Option<u32>,
    #[serde(default)]
    pub max_parallel_migrations: Option<usize>,
    /// A VM that moved is not moved again for this long.
    #[serde(default)]
    pub min_vm_move_interval_s: Option<f64>,
    /// A host that changed power state is not put to sleep again for this long.
    #[serde(default)]
    pub min_awake_s: Option<f64>,
}

fn default_interval_s() -> f64 {
    30.0
}
fn default_idle() -> f64 {
    100.0
}
fn default_max() -> f64 {
    250.0
}
fn default_standby() -> f64 {
    8.0
}
fn default_wake_latency_s() -> f64 {
    20.0
}
fn default_sleep() -> SleepMode {
    SleepMode::Auto
}
fn default_wake_off_s() -> f64 {
    // A typical 1U server's POST and OS boot.
    150.0
}
fn default_s3_grace_s() -> f64 {
    3600.0
}

impl Default for EnergyConfig {
    fn default() -> Self {
        Self {
            enabled: false,
            interval_s: default_interval_s(),
            idle_watts: default_idle(),
            max_watts: default_max(),
            standby_watts: default_standby(),
            hosts: BTreeMap::new(),
            wake_latency_s: default_wake_latency_s(),
            sleep: default_sleep(),
            wake_off_s: default_wake_off_s(),
            s3_grace_s: default_s3_grace_s(),
            upper: None,
            target: None,
            lower: None,
            reserve_hosts: None,
            max_parallel_migrations: None,
            min_vm_move_interval_s: None,
            min_awake_s: None,
        }
    }
}

impl EnergyConfig {
    /// The daemon's policy (`Policy::default()`) with the configured overrides.
    pub fn policy(&self) -> Policy {
        let mut p = Policy::default();
        if let Some(v) = self.upper {
            p.upper = v;
        }
        if let Some(v) = self.target {
            p.target = v;
        }
        if let Some(v) = self.lower {
            p.lower = v;
        }
        if let Some(v) = self.reserve_hosts {
            p.reserve_hosts = v;
        }
        if let Some(v) = self.max_parallel_migrations {
            p.max_parallel_migrations = v.max(1);
        }
        if let Some(v) = self.min_vm_move_interval_s {
            p.min_vm_move_interval_s = v;
        }
        if let Some(v) = self.min_awake_s {
            p.min_awake_s = v;
        }
        p
    }

    /// The power figures of `host`.
    pub fn power(&self, host: &HostId) -> HostDraw {
        self.hosts.get(host).copied().unwrap_or(HostDraw {
            idle_watts: self.idle_watts,
            max_watts: self.max_watts,
            standby_watts: self.standby_watts,
        })
    }

    /// Cross-field rules; `Err((key, message))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        // Every number must be finite: NaN passes no comparison and infinity breaks
        // the timers built from it (a panic even with the mode off).
        for (key, v) in [
            ("energy.interval_s", Some(self.interval_s)),
            ("energy.idle_watts", Some(self.idle_watts)),
            ("energy.max_watts", Some(self.max_watts)),
            ("energy.standby_watts", Some(self.standby_watts)),
            ("energy.wake_latency_s", Some(self.wake_latency_s)),
            ("energy.wake_off_s", Some(self.wake_off_s)),
            ("energy.s3_grace_s", Some(self.s3_grace_s)),
            ("energy.upper", self.upper),
            ("energy.target", self.target),
            ("energy.lower", self.lower),
            ("energy.min_vm_move_interval_s", self.min_vm_move_interval_s),
            ("energy.min_awake_s", self.min_awake_s),
        ] {
            if let Some(v) = v.filter(|v| !v.is_finite() || v.abs() > 1e9) {
                return Err((
                    key.into(),
                    format!("{v} is not a finite number of sensible size"),
                ));
            }
        }
        if !(self.interval_s > 0.0 && self.interval_s <= 86_400.0) {
            return Err((
                "energy.interval_s".into(),
                format!(
                    "{} must be above 0 and at most 86400 (a day)",
                    self.interval_s
                ),
            ));
        }
        if self.wake_off_s <= 0.0 || self.wake_latency_s < 0.0 || self.s3_grace_s < 0.0 {
            return Err((
                "energy.wake_off_s".into(),
                format!(
                    "wake_off_s ({}) must be above 0, wake_latency_s ({}) and s3_grace_s ({}) at least 0",
                    self.wake_off_s, self.wake_latency_s, self.s3_grace_s
                ),
            ));
        }
        let p = self.policy();
        if !(0.0 < p.lower && p.lower < p.target && p.target <= p.upper) {
            return Err((
                "energy.lower".into(),
                format!(
                    "thresholds must satisfy 0 < lower < target <= upper (hysteresis), got lower {} target {} upper {}",
                    p.lower, p.target, p.upper
                ),
            ));
        }
        for (name, hp) in
            std::iter::once((None, self.power(&HostId::new("default").expect("valid id"))))
                .chain(self.hosts.iter().map(|(h, p)| (Some(h), *p)))
        {
            let finite = [hp.idle_watts, hp.max_watts, hp.standby_watts]
                .iter()
                .all(|w| w.is_finite() && *w <= 1e9);
            if !finite
                || hp.idle_watts < 0.0
                || hp.max_watts < hp.idle_watts
                || hp.standby_watts < 0.0
            {
                return Err((
                    match name {
                        Some(h) => format!("energy.hosts.{h}"),
                        None => "energy.max_watts".into(),
                    },
                    "need finite watts with 0 <= idle_watts <= max_watts and standby_watts >= 0"
                        .into(),
                ));
            }
        }
        Ok(())
    }
}
