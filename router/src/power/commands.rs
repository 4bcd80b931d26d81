//! The power plane's commands to the cluster task: what `router power`, `suspend` and
//! `wake` read from the model while they wait for a host, and what they record in it
//! once the BMC or the genie has shown the result. The BMC and genie calls themselves
//! happen off the task, in the callers.

use wisp_bmc::PowerState;
use wisp_common::{HostId, VmId, VmRunState};

use super::status::{known, BmcAnswer};
use super::suspend::SuspendMode;
use super::wait::ms;
use super::PowerError;
use crate::api::types::PowerStatusRow;
use crate::cluster::{Command, Model};
use crate::events::EventKind;
use crate::link::GenieLink;
use crate::model::host::{HostEvent, HostStatus, PowerKnown};
use crate::store::StoreError;
use crate::vms::VmError;
use wisp_common::error::chain;

/// The genie session `host` has now: `None` for a host not in the inventory,
/// `Some(None)` while no genie is connected. Callers tell a new registration from an
/// old link by it, and a host going quiet by its link closing or being replaced.
pub(crate) struct GenieSession {
    pub host: HostId,
}

impl Command for GenieSession {
    type Output = Option<Option<u64>>;
    const NAME: &'static str = "read a genie session";
    fn apply(self, m: &mut Model) -> Self::Output {
        m.cluster
            .hosts
            .get(&self.host)
            .map(|e| e.link.as_ref().map(|l| l.session))
    }
}

/// Records the chassis power a power action was verified to end in (which may make the
/// host `Down`, see `mark.rs`) and the action's `Power` event, in that order. Returns
/// the host's status afterwards.
pub(crate) struct RecordPowerAction {
    pub host: HostId,
    pub power: PowerKnown,
    /// Where the power state was learned ("BMC 10.77.0.101:623, after power off").
    pub source: String,
    pub message: String,
}

impl Command for RecordPowerAction {
    type Output = Option<HostStatus>;
    const NAME: &'static str = "record a power action";
    fn apply(self, m: &mut Model) -> Self::Output {
        let st = m.mark_power(&self.host, self.power, &self.source);
        m.event(EventKind::Power, Some(self.host), None, self.message);
        st
    }
}

/// Records the BMCs' answers to `router power status`, one row per answer in the given
/// order. A host whose BMC could not be asked keeps its status: no answer is no proof.
pub(crate) struct RecordPowerStatus {
    pub answers: Vec<BmcAnswer>,
}

impl Command for RecordPowerStatus {
    type Output = Vec<PowerStatusRow>;
    const NAME: &'static str = "record BMC power answers";
    fn apply(self, m: &mut Model) -> Self::Output {
        self.answers
            .into_iter()
            .map(|a| {
                let BmcAnswer {
                    host,
                    bmc,
                    answer,
                    took,
                } = a;
                let (power, error) = match answer {
                    Some(Ok(p)) => (known(p), None),
                    Some(Err(e)) => (PowerKnown::Unknown, Some(chain(&e))),
                    None => (
                        PowerKnown::Unknown,
                        Some(PowerError::NoBmc { host: host.clone() }.to_string()),
                    ),
                };
                let state = if power == PowerKnown::Unknown {
                    m.cluster.hosts.get(&host).map(|h| h.status())
                } else {
                    let src = format!("BMC {}", bmc.as_deref().unwrap_or("?"));
                    m.mark_power(&host, power, &src)
                };
                let rec = m.persisted.hosts.get(&host);
                PowerStatusRow {
                    state: state.unwrap_or(HostStatus::Unreachable),
                    quarantine: rec.and_then(|r| r.quarantine.as_ref().map(|q| q.reason.clone())),
                    expected_wake_ms: rec.and_then(|r| r.wake.expected_ms()),
                    host,
                    bmc,
                    power,
                    error,
                    elapsed_ms: ms(took),
                }
            })
            .collect()
    }
}

/// What [`PrepareSuspend`] hands the suspend code.
pub(crate) struct Prepared {
    /// The genie link to send the suspend on (`Ram` only).
    pub link: Option<GenieLink>,
    /// The genie session before the suspend: the host is quiet once it is gone.
    pub session: Option<u64>,
    /// VMs running there (suspended with the host: only when forced).
    pub vms: Vec<VmId>,
}

/// Checks that `host` may be put to sleep (no running VMs unless forced; a genie to ask
/// for `Ram`) and sets its persisted `standby` flag, in one step. The flag is stored
/// before anything is sent, so the failover code never takes the host going quiet for
/// a failure.
pub(crate) struct PrepareSuspend {
    pub host: HostId,
    pub mode: SuspendMode,
    pub force: bool,
}

impl Command for PrepareSuspend {
    type Output = Result<Prepared, PowerError>;
    const NAME: &'static str = "prepare a suspend";
    fn apply(self, m: &mut Model) -> Self::Output {
        let h = self.host;
        let Some(entry) = m.cluster.hosts.get(&h) else {
            return Err(PowerError::UnknownHost {
                host: h.to_string(),
            });
        };
        let session = entry.link.as_ref().map(|l| l.session);
        // Never a depth the host lacks (unknown abilities are not held against it).
        if let (SuspendMode::Ram, Some(c)) = (self.mode, &entry.power_caps) {
            if !c.sleep_states.is_empty() && !c.can_suspend_to_ram() {
                return Err(PowerError::NoRamSuspend {
                    host: h,
                    offers: c.sleep_states.join(" "),
                });
            }
        }
        let vms = running_vms(m, &h);
        if !vms.is_empty() && !self.force {
            return Err(PowerError::VmsRunning {
                host: h,
                count: vms.len(),
                vms,
            });
        }
        let link = match self.mode {
            SuspendMode::Ram => Some(m.link_of(&h).map_err(|e| match e {
                VmError::HostNotUp { host, state } => PowerError::NotUp {
                    host,
                    state: state.to_string(),
                },
                other => PowerError::Genie {
                    host: h.clone(),
                    message: other.to_string(),
                },
            })?),
            SuspendMode::SoftOff => None,
        };
        set_standby(m, &h, true)?;
        m.host_event(&h, HostEvent::SleepRequested);
        Ok(Prepared { link, session, vms })
    }
}

/// Whether `host`, asked to sleep, has gone silent: `Some(how)` once its status is
/// `Standby` (no report for the suspect time) or its link is gone. A new session is
/// not silence: the host came back (or rebooted instead of sleeping).
pub(crate) struct Silent {
    pub host: HostId,
    /// The session the suspend was sent on.
    pub session: Option<u64>,
}

impl Command for Silent {
    type Output = Option<String>;
    const NAME: &'static str = "check a host went silent";
    fn apply(self, m: &mut Model) -> Self::Output {
        let e = m.cluster.hosts.get(&self.host)?;
        match &e.link {
            None => Some("genie link closed".into()),
            Some(l) if Some(l.session) != self.session => None,
            Some(_) if e.status() == HostStatus::Standby => Some(format!(
                "silent (no report for {} ms, link left open)",
                e.report_age(tokio::time::Instant::now())
                    .map(|a| a.as_millis())
                    .unwrap_or_default()
            )),
            Some(_) => None,
        }
    }
}

/// Records a suspend verified quiet: the BMC's final answer (if any), then the host's
/// `SleepVerified` (it becomes `Standby`), then the `Power` event. The router closes
/// its end of a link a frozen host left open: that host will reconnect when it
/// resumes, and a dead socket must not stay in the table.
pub(crate) struct RecordSleep {
    pub host: HostId,
    pub mode: SuspendMode,
    pub power: Option<PowerState>,
    pub message: String,
}

impl Command for RecordSleep {
    type Output = ();
    const NAME: &'static str = "record a verified sleep";
    fn apply(self, m: &mut Model) -> Self::Output {
        if let Some(p) = self.power {
            m.mark_power(&self.host, known(p), "BMC, after suspend");
        }
        m.host_event(&self.host, HostEvent::SleepVerified);
        let mode = self.mode;
        // A store failure is logged by `update`: the depth is then unknown, which the
        // energy code treats as suspended (a power-off of an off host is harmless).
        let _ = m.update(|p| {
            let r = p.hosts.entry(self.host.clone()).or_default();
            r.depth = Some(mode);
            r.slept_at_ms = Some(wisp_common::time::unix_ms());
        });
        let open = m
            .cluster
            .hosts
            .get(&self.host)
            .and_then(|e| e.link.as_ref().map(|l| l.session));
        if let Some(session) = open {
            if m.cluster.disconnect(&self.host, session) {
                m.event(
                    EventKind::GenieDisconnected,
                    Some(self.host.clone()),
                    None,
                    format!("the router closed its end of the link of sleeping host {} (session {session})", self.host),
                );
            }
        }
        m.event(EventKind::Power, Some(self.host), None, self.message);
    }
}

/// Records a suspend that failed or was not verified: the `standby` flag is cleared
/// (not asleep as far as we know, so it must not be treated as standby) and an `Error`
/// event says why.
pub(crate) struct RecordSuspendFailure {
    pub host: HostId,
    pub message: String,
}

impl Command for RecordSuspendFailure {
    type Output = ();
    const NAME: &'static str = "record a failed suspend";
    fn apply(self, m: &mut Model) -> Self::Output {
        // A store failure is logged by `Model::update`; the error event goes out anyway.
        let _ = set_standby(m, &self.host, false);
        m.host_event(&self.host, HostEvent::SleepAbandoned);
        m.event(EventKind::Error, Some(self.host), None, self.message);
    }
}

/// Marks `host` as being woken unless it is already up with its genie connected (see
/// `HostEvent::WakeRequested`). `Some(true)`: already up, nothing to send; `None`: not
/// in the inventory.
pub(crate) struct StartWake {
    pub host: HostId,
}

impl Command for StartWake {
    type Output = Option<bool>;
    const NAME: &'static str = "start a wake";
    fn apply(self, m: &mut Model) -> Self::Output {
        let e = m.cluster.hosts.get_mut(&self.host)?;
        if e.link.is_some() && e.status() == HostStatus::Up {
            return Some(true);
        }
        e.apply(HostEvent::WakeRequested);
        Some(false)
    }
}

/// Records a verified wake: the host's `Woken`, then its `standby` flag cleared (stored
/// only when it was set), then the `Wake` event. Returns the store's answer: the flag
/// must be cleared on disk or a router restart would think the host still asleep.
pub(crate) struct RecordWake {
    pub host: HostId,
    pub message: String,
}

impl Command for RecordWake {
    type Output = Result<(), StoreError>;
    const NAME: &'static str = "record a wake";
    fn apply(self, m: &mut Model) -> Self::Output {
        let h = self.host;
        m.host_event(&h, HostEvent::Woken);
        let was = m
            .persisted
            .hosts
            .get(&h)
            .is_some_and(|r| r.standby || r.depth.is_some());
        let stored = if was {
            m.update(|p| {
                let r = p.hosts.entry(h.clone()).or_default();
                r.standby = false;
                r.depth = None;
                r.slept_at_ms = None;
            })
        } else {
            Ok(())
        };
        m.event(EventKind::Wake, Some(h), None, self.message);
        stored
    }
}

/// Records a wake that failed on every path: the BMC's answer (if any), then the host's
/// `WakeFailed` (`Down` when the BMC says off, else `Unreachable`), then the `Error`
/// event.
pub(crate) struct RecordWakeFailure {
    pub host: HostId,
    /// What the BMC said after the last attempt.
    pub seen: Option<PowerState>,
    pub message: String,
}

impl Command for RecordWakeFailure {
    type Output = ();
    const NAME: &'static str = "record a failed wake";
    fn apply(self, m: &mut Model) -> Self::Output {
        let h = self.host;
        if let Some(p) = self.seen {
            m.mark_power(&h, known(p), "BMC, after a failed wake");
        }
        m.host_event(
            &h,
            HostEvent::WakeFailed {
                bmc_says_off: self.seen == Some(PowerState::Off),
            },
        );
        m.event(EventKind::Error, Some(h), None, self.message);
    }
}

/// VMs with a live qemu on `host`, as its genie last reported.
fn running_vms(m: &Model, host: &HostId) -> Vec<VmId> {
    m.cluster
        .hosts
        .get(host)
        .map(|h| {
            h.vms
                .iter()
                .filter(|v| !matches!(v.state, VmRunState::Stopped))
                .map(|v| v.id.clone())
                .collect()
        })
        .unwrap_or_default()
}

fn set_standby(m: &mut Model, host: &HostId, on: bool) -> Result<(), PowerError> {
    m.update(|p| p.hosts.entry(host.clone()).or_default().standby = on)
        .map(|_| ())
        .map_err(PowerError::Store)
}
