//! What a host can do about sleeping and waking, as its genie learns it, and how it
//! says it has just resumed. Sent in reports so the router never chooses a sleep depth
//! a host lacks and knows a silent host came back from sleep, not from a reboot.

use serde::{Deserialize, Serialize};

use crate::MacAddr;

/// The host's power abilities, learned from the kernel and the NIC.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PowerCaps {
    /// The words of `/sys/power/state` (e.g. `freeze mem disk`); empty when the file
    /// could not be read (then nothing is assumed).
    pub sleep_states: Vec<String>,
    /// The words of `/sys/power/mem_sleep`, the kernel's choice in brackets as it
    /// writes them (e.g. `s2idle [deep]`).
    #[serde(default)]
    pub mem_sleep: Vec<String>,
    /// Wake-on-LAN of the configured interface, from `ethtool`; `None` when no
    /// interface is configured or ethtool could not tell.
    #[serde(default)]
    pub wol: Option<WolCaps>,
    /// Why something above is unknown (e.g. "cannot read /sys/power/state: ...").
    #[serde(default)]
    pub notes: Vec<String>,
}

/// One NIC's Wake-on-LAN as `ethtool IFACE` shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WolCaps {
    pub interface: String,
    /// "Supports Wake-on" letters (e.g. `pumbg`).
    pub supported: String,
    /// "Wake-on" letters now armed (e.g. `g`; `d` is disabled).
    pub armed: String,
}

impl PowerCaps {
    /// Suspend-to-RAM is offered by the kernel (`mem` in /sys/power/state). A `mem`
    /// whose only variant is `s2idle` still counts: it freezes the host and wakes on
    /// the NIC, only with more standby draw.
    pub fn can_suspend_to_ram(&self) -> bool {
        self.sleep_states.iter().any(|s| s == "mem")
    }

    /// The magic-packet wake (`g`) is armed; `None` when unknown.
    pub fn wol_armed(&self) -> Option<bool> {
        self.wol.as_ref().map(|w| w.armed.contains('g'))
    }
}

/// Sent in the first report after the genie noticed its host resumed from sleep.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resumed {
    /// How long the host was away as the genie measured it (CLOCK_BOOTTIME's jump
    /// beyond CLOCK_MONOTONIC, or the gap between two heartbeat ticks).
    pub away_ms: u64,
    /// How it noticed.
    pub how: ResumeSign,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ResumeSign {
    /// CLOCK_BOOTTIME ran ahead of CLOCK_MONOTONIC: the kernel was suspended.
    BoottimeJump,
    /// The heartbeat loop was not scheduled for far longer than its period (a frozen
    /// host or process whose clocks kept running).
    HeartbeatGap,
}

/// A magic packet a genie sends for the router from its own segment.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WolRelay {
    pub mac: MacAddr,
    /// Frames of each kind (raw Ethernet and UDP broadcast) in the burst.
    pub burst: u32,
}
