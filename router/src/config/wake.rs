//! The wake keys of router.toml: the per-host `wake = ["wol", "ipmi"]` policy, the
//! proof-of-life deadlines and the wake drills.
//!
//! Defaults and why (measured in the lab, see the wake bench, and from vendors' docs):
//! - `wake_power_proof_ms = 5000`: in the lab (ipmi_sim, the wake bench) the BMC
//!   reports power on a median 30 ms after IPMI power-on (max 108 ms) and 59 ms after
//!   a magic packet; a real server's power rail comes up, as its BMC sees it, within a
//!   second or two of either (an expectation, not yet measured on real hardware). Five
//!   seconds leaves room for a slow BMC and a lost status reply (one BMC call may take
//!   up to its own 5 s timeout) while still moving on long before a boot would end: a
//!   lost magic packet costs 5.06 s before IPMI goes out, 5.24 s to the host up.
//! - `wake_boot_ms = 180000` (also read as the older `wake_deadline_ms`): real servers
//!   take one to three minutes from power-on to a running OS (firmware memory training
//!   dominates).
//! - `wake_resume_ms = 30000`: a host whose BMC already reads "on" while it sleeps
//!   (many report S3 as on) gives no power proof; a resume from S3 takes 3–5 s, so its
//!   genie is given this long before the next method.
//! - `drill_after_s = 604800` (7 days): a path unused for a week is worth proving before
//!   the day it is needed; one drill wakes one host for a minute or two.

use std::collections::HashSet;

use serde::{Deserialize, Serialize};

use super::RouterConfig;

/// One way to wake a host, as written in `wake = [...]`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WakeVia {
    /// Magic packets (from the router's `wol_interface` and, with `wol_relay`, a genie).
    Wol,
    /// IPMI chassis power-on through the host's BMC.
    Ipmi,
}

impl WakeVia {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Wol => "wol",
            Self::Ipmi => "ipmi",
        }
    }
}

impl std::fmt::Display for WakeVia {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

pub(super) fn default_power_proof_ms() -> u64 {
    5000
}
pub(super) fn default_boot_ms() -> u64 {
    180_000
}
pub(super) fn default_resume_ms() -> u64 {
    30_000
}
pub(super) fn default_drill_after_s() -> u64 {
    7 * 24 * 3600
}
pub(super) fn default_true() -> bool {
    true
}

impl RouterConfig {
    /// Whether magic packets can reach anything: sent by the router itself or relayed
    /// by a genie.
    pub fn wol_path(&self) -> bool {
        self.wol_interface.is_some() || self.wol_relay
    }

    /// Checks the wake keys; `Err((key, message))`.
    pub(super) fn validate_wake(&self) -> Result<(), (String, String)> {
        // A proof wait beyond the boot wait is cut to it where used (a request may
        // shorten the boot wait), so only the range is checked here.
        for (key, v, max) in [
            ("wake_power_proof_ms", self.wake_power_proof_ms, 3_600_000),
            ("wake_resume_ms", self.wake_resume_ms, 3_600_000),
            ("drill_after_s", self.drill_after_s, 10 * 365 * 24 * 3600),
        ] {
            if v == 0 || v > max {
                return Err((key.into(), format!("{v} must be above 0 and at most {max}")));
            }
        }
        for (i, h) in self.hosts.iter().enumerate() {
            let key = format!("host[{i}].wake");
            let Some(list) = &h.wake else { continue };
            let name = &h.name;
            if list.is_empty() {
                return Err((
                    key,
                    format!("host {name}: an empty wake list leaves no way to wake it (use \"wol\" and/or \"ipmi\", or leave it out)"),
                ));
            }
            let mut seen = HashSet::new();
            for m in list {
                if !seen.insert(*m) {
                    return Err((key, format!("host {name}: {m} is listed twice")));
                }
                match m {
                    WakeVia::Ipmi if h.bmc.is_none() => {
                        return Err((key, format!("host {name}: ipmi needs a bmc for this host")))
                    }
                    WakeVia::Wol if !self.wol_path() => {
                        return Err((
                            key,
                            format!("host {name}: wol needs wol_interface or wol_relay = true"),
                        ))
                    }
                    _ => {}
                }
            }
        }
        Ok(())
    }
}
