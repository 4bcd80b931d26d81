//! The one host state machine. A host's status (up, suspect, unreachable, down,
//! fenced, standby, waking, maintenance) and its known chassis power change only here,
//! through [`HostEntry::apply`]: the link, the fence reconciler, the power commands and
//! maintenance each describe what happened as a [`HostEvent`] and never assign a field.
//! Rules such as "maintenance is left only by the operator" or "a host put to sleep
//! stays asleep while it is silent" are therefore written once, and the table test at
//! the bottom is their specification.
//!
//! Pure: no clock (report age comes in with the event), no I/O.

use std::time::Duration;

use tokio::time::Instant;
use wisp_common::proto::{HostMetrics, PowerCaps, VmStatus};
use wisp_common::HostId;

use crate::config::HostConfig;
use crate::events::EventKind;
use crate::link::GenieLink;

/// What the router believes about a host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum HostStatus {
    /// Reporting.
    Up,
    /// Missed heartbeats; not yet declared unreachable.
    Suspect,
    /// No genie link: the host may be up with a dead genie, or off.
    Unreachable,
    /// Proven off (BMC reports chassis power off).
    Down,
    /// Powered off by us to fence it; its VMs may be restarted elsewhere.
    Fenced,
    /// Asleep on purpose (energy saving); wakes on demand.
    Standby,
    /// Wake requested; waiting for its genie to register.
    Waking,
    /// Taken out of the pool by an operator.
    Maintenance,
}

impl HostStatus {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::Up => "up",
            Self::Suspect => "suspect",
            Self::Unreachable => "unreachable",
            Self::Down => "down",
            Self::Fenced => "fenced",
            Self::Standby => "standby",
            Self::Waking => "waking",
            Self::Maintenance => "maintenance",
        }
    }
}

impl std::fmt::Display for HostStatus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Chassis power as last learned (from the BMC or implied by a live genie).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum PowerKnown {
    On,
    Off,
    Unknown,
}

impl PowerKnown {
    pub fn as_str(&self) -> &'static str {
        match self {
            Self::On => "on",
            Self::Off => "off",
            Self::Unknown => "unknown",
        }
    }
}

impl std::fmt::Display for PowerKnown {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The live genie connection of a host.
#[derive(Debug, Clone)]
pub struct LinkEntry {
    pub session: u64,
    pub instance: u64,
    pub genie_version: String,
    pub handle: GenieLink,
}

/// Timing rules for deriving status from report age.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    pub suspect_after: Duration,
    pub unreachable_after: Duration,
}

/// How a silent host was proven off (the fence reconciler's verdicts).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OffProof {
    /// Its BMC reports chassis power off.
    BmcOff,
    /// We powered it off over IPMI and verified it off.
    PoweredOff { after_ms: u64 },
    /// Silent beyond its self-fence lease (its genie has killed its VMs); the BMC
    /// could not be asked.
    LeaseExpired { silent_ms: u64, bmc_error: String },
}

/// Something that happened to a host.
#[derive(Debug, Clone, PartialEq)]
pub enum HostEvent<'a> {
    /// The periodic look at the link and the age of the last report.
    Liveness {
        age: Option<Duration>,
        timing: Timing,
    },
    /// The genie reported: the host is powered.
    Reported,
    /// Chassis power learned from `source` (e.g. "BMC 10.0.0.1:623"); recorded with an
    /// event when it changes.
    PowerLearned { power: PowerKnown, source: &'a str },
    /// The BMC says on while we wait for the genie: power on, quietly.
    SeenOn,
    /// The fence reconciler proved a silent host off.
    ProvenOff(OffProof),
    /// An operator turned maintenance on or off.
    MaintenanceSet { on: bool },
    /// A wake was started.
    WakeRequested,
    /// The wake worked (the genie registered).
    Woken,
    /// The wake failed; `bmc_says_off` when its BMC still reports power off.
    WakeFailed { bmc_says_off: bool },
    /// We asked the host to sleep (suspend to RAM or soft-off): from now on its
    /// silence is expected, and it becomes `Standby` as soon as it is silent.
    SleepRequested,
    /// The sleep we asked for failed or was not verified: silence is a failure again.
    SleepAbandoned,
    /// A suspend or soft-off we asked for was verified.
    SleepVerified,
    /// At router start, from the stored operator flags.
    Restored { maintenance: bool, standby: bool },
}

/// A change worth an event.
#[derive(Debug, Clone, PartialEq)]
pub struct Transition {
    pub host: HostId,
    pub kind: EventKind,
    pub message: String,
}

/// One host: its configuration, its link, what its genie last reported, and the state
/// this module owns.
#[derive(Debug)]
pub struct HostEntry {
    pub cfg: HostConfig,
    pub link: Option<LinkEntry>,
    /// Instance and generation of the last accepted report.
    pub last_instance: Option<u64>,
    pub last_gen: u64,
    pub last_report: Option<Instant>,
    pub metrics: Option<HostMetrics>,
    pub vms: Vec<VmStatus>,
    /// `vms` came from this genie's own list since this router started (a report
    /// may leave the list out): until then, a VM missing from `vms` says nothing.
    pub vms_reported: bool,
    /// What the host can do about sleeping and waking, as its genie last said.
    pub power_caps: Option<PowerCaps>,
    /// How it runs VMs (accelerator, CPU models), as its genie last said.
    pub virt: Option<wisp_common::proto::VirtCaps>,
    /// Its last link was closed by the genie itself (a restart says goodbye; a cut
    /// cable, a power loss or a hang does not). Cleared by a new link.
    pub said_goodbye: bool,
    status: HostStatus,
    power: PowerKnown,
    /// Put to sleep on purpose (from the request until a wake or a failed suspend):
    /// silence is expected, never a failure.
    sleep_intent: bool,
    /// Reports dropped as stale or reordered (for diagnostics).
    pub dropped_reports: u64,
}

impl HostEntry {
    pub fn new(cfg: HostConfig) -> Self {
        Self {
            cfg,
            link: None,
            last_instance: None,
            last_gen: 0,
            last_report: None,
            metrics: None,
            vms: Vec::new(),
            vms_reported: false,
            power_caps: None,
            virt: None,
            said_goodbye: false,
            status: HostStatus::Unreachable,
            power: PowerKnown::Unknown,
            sleep_intent: false,
            dropped_reports: 0,
        }
    }

    pub fn status(&self) -> HostStatus {
        self.status
    }

    pub fn power(&self) -> PowerKnown {
        self.power
    }

    /// Put to sleep on purpose and not woken since.
    pub fn asleep_on_purpose(&self) -> bool {
        self.sleep_intent
    }

    pub fn report_age(&self, now: Instant) -> Option<Duration> {
        self.last_report.map(|t| now.saturating_duration_since(t))
    }

    /// Applies `ev`; returns what changed that deserves an event, in order.
    pub fn apply(&mut self, ev: HostEvent<'_>) -> Vec<Transition> {
        let id = self.cfg.name.clone();
        let mut out = Vec::new();
        let mut emit = |kind, message| {
            out.push(Transition {
                host: id.clone(),
                kind,
                message,
            })
        };
        match ev {
            HostEvent::Liveness { age, timing } => {
                let linked = self.link.is_some();
                let fresh = linked && age.is_some_and(|a| a < timing.suspect_after);
                let next = match self.status {
                    // Only the operator ends maintenance.
                    HostStatus::Maintenance => HostStatus::Maintenance,
                    // Asked to sleep: silence is what we wait for (a frozen host's
                    // link may stay open), so it goes straight to standby.
                    HostStatus::Up | HostStatus::Suspect | HostStatus::Unreachable
                        if self.sleep_intent && !fresh =>
                    {
                        HostStatus::Standby
                    }
                    // Still heard after the request: the host has not gone yet.
                    HostStatus::Up if self.sleep_intent => HostStatus::Up,
                    // States reached on purpose or by proof are left only when the
                    // genie is heard again: silence is what they expect.
                    HostStatus::Standby
                    | HostStatus::Waking
                    | HostStatus::Down
                    | HostStatus::Fenced
                        if !fresh =>
                    {
                        self.status
                    }
                    _ if fresh => HostStatus::Up,
                    _ if !linked => HostStatus::Unreachable,
                    _ => match age {
                        Some(a) if a < timing.unreachable_after => HostStatus::Suspect,
                        _ => HostStatus::Unreachable,
                    },
                };
                if next != self.status {
                    let age_txt = age
                        .map(|a| format!("{} ms", a.as_millis()))
                        .unwrap_or_else(|| "never".into());
                    let host = &self.cfg.name;
                    match next {
                        HostStatus::Up if self.status == HostStatus::Standby => {
                            // Heard while asleep without a wake: it woke by itself
                            // (a power button, a BIOS timer, a resume we missed).
                            self.sleep_intent = false;
                            emit(
                                EventKind::HostUp,
                                format!("host {host} is up: heard again while asleep, without a wake from us"),
                            )
                        }
                        HostStatus::Up => emit(EventKind::HostUp, format!("host {host} is up")),
                        HostStatus::Standby => emit(
                            EventKind::Power,
                            format!("host {host} is silent as asked: asleep (last report {age_txt} ago)"),
                        ),
                        HostStatus::Suspect => emit(
                            EventKind::HostSuspect,
                            format!("host {host} missed heartbeats (last report {age_txt} ago)"),
                        ),
                        _ => emit(
                            EventKind::HostUnreachable,
                            format!(
                                "host {host} unreachable: {} (last report {age_txt} ago)",
                                if linked {
                                    "no reports"
                                } else {
                                    "genie link closed"
                                }
                            ),
                        ),
                    }
                    self.status = next;
                }
            }
            HostEvent::Reported | HostEvent::SeenOn => {
                self.power = PowerKnown::On;
            }
            HostEvent::Woken => {
                self.power = PowerKnown::On;
                self.sleep_intent = false;
                if self.status == HostStatus::Waking && self.link.is_some() {
                    self.status = HostStatus::Up;
                }
            }
            HostEvent::PowerLearned { power, source } => {
                let changed = self.power != power;
                self.power = power;
                // Only a host that is merely missing becomes Down: states chosen on
                // purpose (standby, fenced, maintenance) and a wake in progress keep
                // theirs, and a live genie outranks a BMC.
                let to_down = power == PowerKnown::Off
                    && self.link.is_none()
                    && matches!(
                        self.status,
                        HostStatus::Up | HostStatus::Suspect | HostStatus::Unreachable
                    );
                let host = &self.cfg.name;
                if changed {
                    emit(
                        EventKind::Power,
                        format!("host {host}: chassis power {power} ({source})"),
                    );
                }
                if to_down {
                    self.status = HostStatus::Down;
                    emit(
                        EventKind::HostDown,
                        format!(
                            "host {host} is down: chassis power off ({source}) and no genie connected"
                        ),
                    );
                }
            }
            HostEvent::ProvenOff(proof) => {
                // A proof counts only for a host that is still silent: one that came
                // back (or was put in maintenance) meanwhile keeps its state.
                if !matches!(self.status, HostStatus::Suspect | HostStatus::Unreachable) {
                    return out;
                }
                let host = &self.cfg.name;
                let (status, power, kind, msg) = match proof {
                    OffProof::BmcOff => (
                        HostStatus::Down,
                        PowerKnown::Off,
                        EventKind::HostDown,
                        format!("host {host} is down: its BMC reports chassis power off"),
                    ),
                    OffProof::PoweredOff { after_ms } => (
                        HostStatus::Fenced,
                        PowerKnown::Off,
                        EventKind::HostFenced,
                        format!("host {host} fenced: powered off over IPMI and verified off in {after_ms} ms"),
                    ),
                    OffProof::LeaseExpired { silent_ms, bmc_error } => (
                        HostStatus::Fenced,
                        PowerKnown::Unknown,
                        EventKind::HostFenced,
                        format!(
                            "host {host} fenced by lease: silent for {silent_ms} ms, beyond its self-fence lease; its genie has killed its VMs (BMC: {bmc_error})"
                        ),
                    ),
                };
                self.status = status;
                self.power = power;
                // Proven off: its VMs are not running, whatever its last report said
                // (a cut link may never close, so that report would otherwise stay).
                self.vms.clear();
                emit(kind, msg);
            }
            HostEvent::SleepRequested => {
                self.sleep_intent = true;
            }
            HostEvent::SleepAbandoned => {
                self.sleep_intent = false;
                // Re-derived from the link on the next look.
                if self.status == HostStatus::Standby {
                    self.status = HostStatus::Unreachable;
                }
            }
            HostEvent::MaintenanceSet { on } => {
                // Off: unreachable until the next liveness look re-derives it.
                self.status = if on {
                    HostStatus::Maintenance
                } else {
                    HostStatus::Unreachable
                };
            }
            HostEvent::WakeRequested => {
                let awake = self.link.is_some() && self.status == HostStatus::Up;
                if !awake && self.status != HostStatus::Maintenance {
                    self.status = HostStatus::Waking;
                }
            }
            HostEvent::WakeFailed { bmc_says_off } => {
                if self.status == HostStatus::Waking {
                    self.status = if bmc_says_off {
                        HostStatus::Down
                    } else {
                        HostStatus::Unreachable
                    };
                }
            }
            HostEvent::SleepVerified => {
                self.sleep_intent = true;
                if self.status != HostStatus::Maintenance {
                    self.status = HostStatus::Standby;
                }
            }
            HostEvent::Restored {
                maintenance,
                standby,
            } => {
                if maintenance {
                    self.status = HostStatus::Maintenance;
                } else if standby {
                    self.status = HostStatus::Standby;
                }
                self.sleep_intent = standby;
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use HostStatus::*;

    fn entry(status: HostStatus, linked: bool) -> HostEntry {
        let mut h = HostEntry::new(HostConfig {
            name: HostId::new("h1").unwrap(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            address: "10.0.0.1".parse().unwrap(),
            bmc: None,
            bmc_user: None,
            bmc_password_file: None,
            vcpus: None,
            mem_mib: None,
            wake: None,
        });
        h.status = status;
        h.link = linked.then(|| LinkEntry {
            session: 1,
            instance: 1,
            genie_version: "t".into(),
            handle: GenieLink::detached(),
        });
        h
    }

    const T: Timing = Timing {
        suspect_after: Duration::from_millis(500),
        unreachable_after: Duration::from_millis(700),
    };

    fn live(ms: u64) -> HostEvent<'static> {
        HostEvent::Liveness {
            age: Some(Duration::from_millis(ms)),
            timing: T,
        }
    }

    const ALL: [HostStatus; 8] = [
        Up,
        Suspect,
        Unreachable,
        Down,
        Fenced,
        Standby,
        Waking,
        Maintenance,
    ];

    /// The specification: (from, linked, event) -> to.
    #[test]
    fn transitions_table() {
        let off = |s| HostEvent::PowerLearned {
            power: PowerKnown::Off,
            source: s,
        };
        let fenced = HostEvent::ProvenOff(OffProof::PoweredOff { after_ms: 5 });
        #[rustfmt::skip]
        let table: Vec<(HostStatus, bool, HostEvent<'static>, HostStatus)> = vec![
            // Liveness: fresh reports bring every state but maintenance up.
            (Up, true, live(100), Up),
            (Suspect, true, live(100), Up),
            (Unreachable, true, live(100), Up),
            (Down, true, live(100), Up),
            (Fenced, true, live(100), Up),
            (Standby, true, live(100), Up),
            (Waking, true, live(100), Up),
            (Maintenance, true, live(100), Maintenance),
            // Ageing reports: suspect, then unreachable; a closed link at once.
            (Up, true, live(600), Suspect),
            (Up, true, live(800), Unreachable),
            (Suspect, true, live(800), Unreachable),
            (Up, false, live(100), Unreachable),
            (Up, true, HostEvent::Liveness { age: None, timing: T }, Unreachable),
            // Silence is expected by states reached on purpose or by proof.
            (Standby, false, live(60_000), Standby),
            (Standby, true, live(60_000), Standby),
            (Waking, false, live(60_000), Waking),
            (Down, false, live(60_000), Down),
            (Fenced, false, live(60_000), Fenced),
            (Maintenance, false, live(60_000), Maintenance),
            // A BMC saying off makes only a merely missing, unlinked host Down.
            (Unreachable, false, off("BMC"), Down),
            (Suspect, false, off("BMC"), Down),
            (Up, false, off("BMC"), Down),
            (Suspect, true, off("BMC"), Suspect),
            (Standby, false, off("BMC"), Standby),
            (Fenced, false, off("BMC"), Fenced),
            (Waking, false, off("BMC"), Waking),
            (Maintenance, false, off("BMC"), Maintenance),
            // Fencing proofs count only for a host still silent.
            (Suspect, true, fenced.clone(), Fenced),
            (Unreachable, false, fenced.clone(), Fenced),
            (Unreachable, false, HostEvent::ProvenOff(OffProof::BmcOff), Down),
            (Up, true, fenced.clone(), Up),
            (Maintenance, false, fenced.clone(), Maintenance),
            (Standby, false, fenced.clone(), Standby),
            (Down, false, fenced, Down),
            // Maintenance: the operator's switch.
            (Up, true, HostEvent::MaintenanceSet { on: true }, Maintenance),
            (Standby, false, HostEvent::MaintenanceSet { on: true }, Maintenance),
            (Maintenance, true, HostEvent::MaintenanceSet { on: false }, Unreachable),
            // Wake and sleep.
            (Standby, false, HostEvent::WakeRequested, Waking),
            (Down, false, HostEvent::WakeRequested, Waking),
            (Up, true, HostEvent::WakeRequested, Up),
            (Maintenance, false, HostEvent::WakeRequested, Maintenance),
            (Waking, false, HostEvent::WakeFailed { bmc_says_off: true }, Down),
            (Waking, false, HostEvent::WakeFailed { bmc_says_off: false }, Unreachable),
            (Up, true, HostEvent::WakeFailed { bmc_says_off: true }, Up),
            (Up, true, HostEvent::SleepVerified, Standby),
            (Unreachable, false, HostEvent::SleepVerified, Standby),
            (Maintenance, false, HostEvent::SleepVerified, Maintenance),
            // Restored flags at start: maintenance wins over standby.
            (Unreachable, false, HostEvent::Restored { maintenance: true, standby: true }, Maintenance),
            (Unreachable, false, HostEvent::Restored { maintenance: false, standby: true }, Standby),
            (Unreachable, false, HostEvent::Restored { maintenance: false, standby: false }, Unreachable),
        ];
        for (from, linked, ev, want) in table {
            let mut h = entry(from, linked);
            let what = format!("{from:?} (linked {linked}) + {ev:?}");
            h.apply(ev);
            assert_eq!(h.status(), want, "{what}");
        }
    }

    /// Put to sleep on purpose: silence is standby at once (never suspect, never
    /// unreachable, whether the link stays open or not), being heard before the host
    /// freezes changes nothing, and only a wake, a failed suspend or the host being
    /// heard while asleep ends it.
    #[test]
    fn a_host_asked_to_sleep_is_never_failed_while_silent() {
        #[rustfmt::skip]
        let table: Vec<(HostStatus, bool, HostEvent<'static>, HostStatus, bool)> = vec![
            // (from, linked, event, to, intent after)
            (Up, true, live(100), Up, true),
            (Up, true, live(600), Standby, true),
            (Up, true, live(60_000), Standby, true),
            (Up, false, live(100), Standby, true),
            (Suspect, true, live(800), Standby, true),
            (Unreachable, false, live(800), Standby, true),
            (Standby, true, live(60_000), Standby, true),
            (Standby, false, live(3_600_000), Standby, true),
            // The BMC saying off does not make it down; a fence proof does not apply.
            (Standby, false, HostEvent::PowerLearned { power: PowerKnown::Off, source: "BMC" }, Standby, true),
            (Standby, false, HostEvent::ProvenOff(OffProof::BmcOff), Standby, true),
            // Heard again while asleep without a wake: up, intent gone.
            (Standby, true, live(100), Up, false),
            // A wake: waking, then up once woken.
            (Standby, false, HostEvent::WakeRequested, Waking, true),
            (Waking, true, HostEvent::Woken, Up, false),
            // A failed suspend: silence is a failure again.
            (Standby, false, HostEvent::SleepAbandoned, Unreachable, false),
            (Up, true, HostEvent::SleepAbandoned, Up, false),
        ];
        for (from, linked, ev, want, intent) in table {
            let mut h = entry(from, linked);
            h.apply(HostEvent::SleepRequested);
            let what = format!("{from:?} (linked {linked}, asked to sleep) + {ev:?}");
            h.apply(ev);
            assert_eq!(
                (h.status(), h.asleep_on_purpose()),
                (want, intent),
                "{what}"
            );
        }
        // Without the request the same silence is a failure.
        let mut h = entry(Up, true);
        h.apply(live(60_000));
        assert_eq!(h.status(), Unreachable);
        // A router restart with the stored flag restores the intent.
        let mut h = entry(Unreachable, false);
        h.apply(HostEvent::Restored {
            maintenance: false,
            standby: true,
        });
        assert!(h.asleep_on_purpose());
        h.apply(live(60_000));
        assert_eq!(h.status(), Standby);
    }

    #[test]
    fn power_events_say_what_changed_and_only_then() {
        let mut h = entry(Unreachable, false);
        let tr = h.apply(HostEvent::PowerLearned {
            power: PowerKnown::Off,
            source: "BMC 10.0.0.9:623",
        });
        let kinds: Vec<_> = tr.iter().map(|t| t.kind).collect();
        assert_eq!(kinds, vec![EventKind::Power, EventKind::HostDown]);
        assert!(tr[0]
            .message
            .contains("chassis power off (BMC 10.0.0.9:623)"));
        // Learning the same again says nothing.
        assert!(h
            .apply(HostEvent::PowerLearned {
                power: PowerKnown::Off,
                source: "BMC"
            })
            .is_empty());
        assert_eq!(h.power(), PowerKnown::Off);
        // A report means power on, quietly.
        h.apply(HostEvent::Reported);
        assert_eq!(h.power(), PowerKnown::On);
    }

    #[test]
    fn proofs_set_power_clear_vms_and_say_how() {
        for (proof, status, power) in [
            (OffProof::BmcOff, Down, PowerKnown::Off),
            (
                OffProof::PoweredOff { after_ms: 40 },
                Fenced,
                PowerKnown::Off,
            ),
            (
                OffProof::LeaseExpired {
                    silent_ms: 4000,
                    bmc_error: "timeout".into(),
                },
                Fenced,
                PowerKnown::Unknown,
            ),
        ] {
            let mut h = entry(Unreachable, false);
            h.vms.push(VmStatus {
                id: wisp_common::VmId::new("vm1").unwrap(),
                state: wisp_common::VmRunState::Running,
                vcpus: 1,
                mem_mib: 64,
                cpu_time_ms: 0,
                pid: Some(1),
                qmp_socket: "/x".into(),
                epoch: 1,
            });
            let tr = h.apply(HostEvent::ProvenOff(proof.clone()));
            assert_eq!((h.status(), h.power()), (status, power), "{proof:?}");
            assert!(h.vms.is_empty(), "a host proven off runs nothing");
            assert_eq!(tr.len(), 1, "{proof:?}");
        }
    }

    #[test]
    fn liveness_events_name_the_cause() {
        let mut h = entry(Up, false);
        let tr = h.apply(live(100));
        assert_eq!(tr[0].kind, EventKind::HostUnreachable);
        assert!(
            tr[0].message.contains("genie link closed"),
            "{}",
            tr[0].message
        );
        let mut h = entry(Up, true);
        let tr = h.apply(live(900));
        assert!(tr[0].message.contains("no reports"), "{}", tr[0].message);
        // No change, no event, from any state.
        for s in ALL {
            let mut h = entry(s, true);
            h.apply(live(100));
            assert!(h.apply(live(100)).is_empty(), "{s:?}");
        }
    }
}
