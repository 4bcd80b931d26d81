//! Power shapes of the API: chassis status rows (`GET /v1/power[/{host}]`), chassis
//! control (`POST /v1/power/{host}/{action}`), wake and suspend
//! (`POST /v1/hosts/{host}/wake|suspend`).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use wisp_bmc::PowerAction;
use wisp_common::{HostId, VmId};

pub use crate::config::WakeVia;
use crate::model::host::{HostStatus, PowerKnown};

/// A chassis control word of the API and the CLI (`router power on|off|soft|cycle|reset`).
/// The BMC's own [`PowerAction`] carries no serde and no parsing; this is its face
/// at the edge.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ChassisAction {
    /// Power up.
    On,
    /// Hard power down.
    Off,
    /// ACPI soft shutdown.
    Soft,
    /// Power down, then up.
    Cycle,
    /// Hard reset.
    Reset,
}

impl ChassisAction {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Soft => "soft",
            Self::Cycle => "cycle",
            Self::Reset => "reset",
        }
    }
}

impl fmt::Display for ChassisAction {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Not a chassis control word.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown power action {0:?}: use on, off, soft, cycle or reset")]
pub struct UnknownAction(pub String);

impl FromStr for ChassisAction {
    type Err = UnknownAction;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "on" => Ok(Self::On),
            "off" => Ok(Self::Off),
            "soft" => Ok(Self::Soft),
            "cycle" => Ok(Self::Cycle),
            "reset" => Ok(Self::Reset),
            other => Err(UnknownAction(other.to_owned())),
        }
    }
}

impl From<ChassisAction> for PowerAction {
    fn from(a: ChassisAction) -> Self {
        match a {
            ChassisAction::On => PowerAction::On,
            ChassisAction::Off => PowerAction::Off,
            ChassisAction::Soft => PowerAction::Soft,
            ChassisAction::Cycle => PowerAction::Cycle,
            ChassisAction::Reset => PowerAction::Reset,
        }
    }
}

impl From<PowerAction> for ChassisAction {
    fn from(a: PowerAction) -> Self {
        match a {
            PowerAction::On => ChassisAction::On,
            PowerAction::Off => ChassisAction::Off,
            PowerAction::Soft => ChassisAction::Soft,
            PowerAction::Cycle => ChassisAction::Cycle,
            PowerAction::Reset => ChassisAction::Reset,
        }
    }
}

/// One host's answer to `GET /v1/power[/{host}]`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PowerStatusRow {
    pub host: HostId,
    /// The BMC address asked (`None`: the host has no BMC configured).
    pub bmc: Option<String>,
    /// What the BMC said; `unknown` when it could not be asked.
    pub power: PowerKnown,
    /// The host's status in the cluster model after recording the answer.
    pub state: HostStatus,
    /// Why the BMC could not be asked (names the BMC address, never the password).
    pub error: Option<String>,
    pub elapsed_ms: u64,
    /// Why the host is quarantined (failed to wake by every method), if it is.
    #[serde(default)]
    pub quarantine: Option<String>,
    /// Median measured wake time, request to genie heard (`None`: never measured).
    #[serde(default)]
    pub expected_wake_ms: Option<u64>,
}

/// What a power command did and what was verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ActionReport {
    pub host: HostId,
    pub action: ChassisAction,
    pub bmc: String,
    /// Chassis power the BMC reported at the end.
    pub power: PowerKnown,
    /// The host's status in the cluster model afterwards.
    pub state: HostStatus,
    /// Whether the BMC confirmed the expected state.
    pub verified: bool,
    /// Time until the BMC accepted the request.
    pub accepted_ms: u64,
    /// Time until the expected state was confirmed (or verification gave up).
    pub elapsed_ms: u64,
    /// One line: what was verified, for people.
    pub message: String,
}

/// `POST /v1/hosts/{host}/wake` (the body is optional).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct WakeRequest {
    /// Overrides `wake_boot_ms` (the wait for the genie once power is on) for this wake.
    #[serde(default)]
    pub deadline_ms: Option<u64>,
}

/// How the host came up.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum WakeMethod {
    /// It was up already: nothing sent.
    AlreadyUp,
    Wol,
    Ipmi,
}

impl From<WakeVia> for WakeMethod {
    fn from(w: WakeVia) -> Self {
        match w {
            WakeVia::Wol => Self::Wol,
            WakeVia::Ipmi => Self::Ipmi,
        }
    }
}

/// What a wake did and how long the host took to be heard.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WakeOutcome {
    pub host: HostId,
    pub method: WakeMethod,
    /// Magic packets sent by the router (raw 0x0842 frames + UDP datagrams); 0 if WoL
    /// was not used.
    pub wol_packets: u32,
    /// Why WoL could not be sent, if it could not.
    pub wol_error: Option<String>,
    /// Whether a method after the first one brought the host up.
    pub fallback: bool,
    /// From the start of the wake to the genie heard.
    pub registered_ms: u64,
    pub message: String,
    /// Genies that sent the magic packets for the router too (`wol_relay`).
    #[serde(default)]
    pub wol_relays: u32,
    /// Chassis power seen on by the BMC, ms after the working attempt was sent.
    #[serde(default)]
    pub power_seen_ms: Option<u64>,
    /// The genie heard, ms after the working attempt was sent.
    #[serde(default)]
    pub heard_ms: Option<u64>,
    /// Every attempt in order, the failed ones with their reason.
    #[serde(default)]
    pub attempts: Vec<WakeAttempt>,
    /// A wake drill of the energy mode, not a wake for need.
    #[serde(default)]
    pub drill: bool,
}

/// One method tried during a wake.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct WakeAttempt {
    pub method: WakeVia,
    /// When it was sent, ms after the wake started.
    pub started_ms: u64,
    /// Chassis power seen on, ms after it was sent.
    pub power_seen_ms: Option<u64>,
    /// The genie heard, ms after it was sent.
    pub heard_ms: Option<u64>,
    /// Why it did not work (`None`: it worked).
    pub error: Option<String>,
}

/// `POST /v1/hosts/{host}/clear` (`router power clear HOST`).
pub use crate::power::quarantine::ClearReport;

/// `POST /v1/hosts/{host}/suspend` (the body is optional).
#[derive(Debug, Default, Serialize, Deserialize)]
pub struct SuspendRequest {
    /// IPMI soft-off instead of suspend-to-RAM.
    #[serde(default)]
    pub off: bool,
    /// Suspend even with VMs running there.
    #[serde(default)]
    pub force: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SuspendMode {
    /// Suspend-to-RAM through the genie (Wake-on-LAN armed first).
    Ram,
    /// ACPI soft-off through the BMC.
    SoftOff,
}

/// What a suspend did and what was verified.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SuspendOutcome {
    pub host: HostId,
    pub mode: SuspendMode,
    /// VMs that were running there and were suspended with the host (`--force`).
    pub vms: Vec<VmId>,
    /// Chassis power the BMC reported at the end (`unknown` without a BMC).
    pub power: PowerKnown,
    pub elapsed_ms: u64,
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chassis_action_words_round_trip() {
        for a in [
            ChassisAction::On,
            ChassisAction::Off,
            ChassisAction::Soft,
            ChassisAction::Cycle,
            ChassisAction::Reset,
        ] {
            let word = a.as_str();
            assert_eq!(
                serde_json::to_string(&a).expect("serializes"),
                format!("\"{word}\"")
            );
            assert_eq!(word.parse::<ChassisAction>(), Ok(a));
            // The BMC's Display is the same word: event texts and the API agree.
            assert_eq!(PowerAction::from(a).to_string(), word);
            assert_eq!(ChassisAction::from(PowerAction::from(a)), a);
        }
        let e = "halt".parse::<ChassisAction>().expect_err("not a word");
        assert_eq!(
            e.to_string(),
            "unknown power action \"halt\": use on, off, soft, cycle or reset"
        );
    }
}
