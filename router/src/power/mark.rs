//! The one rule for what a learned chassis power state does to the cluster model,
//! shared by the power commands and the failover code: record `PowerKnown` (with an
//! event when it changes), and call a host `Down` (proven off) when the BMC confirms
//! power off and no genie is connected.

use wisp_common::HostId;

use crate::cluster::state::{HostStatus, PowerKnown};
use crate::cluster::Model;
use crate::events::EventKind;

impl Model {
    /// Records that `host`'s chassis power is `power`, learned from `source` (e.g.
    /// "BMC 10.77.0.101:623"). Returns the host's status afterwards (`None` for an
    /// unknown host).
    ///
    /// Only a host that is merely missing (`Up`/`Suspect`/`Unreachable` without a
    /// link) becomes `Down`: states someone chose on purpose (`Standby`, `Fenced`,
    /// `Maintenance`) and a wake in progress (`Waking`) keep theirs, and `tick()` leaves
    /// `Down` only when the genie reports again.
    pub fn mark_power(
        &mut self,
        host: &HostId,
        power: PowerKnown,
        source: &str,
    ) -> Option<HostStatus> {
        let h = self.cluster.hosts.get_mut(host)?;
        let power_changed = h.power != power;
        h.power = power;
        let to_down = power == PowerKnown::Off
            && h.link.is_none()
            && matches!(
                h.status,
                HostStatus::Up | HostStatus::Suspect | HostStatus::Unreachable
            );
        if to_down {
            h.status = HostStatus::Down;
        }
        let status = h.status;
        if power_changed {
            let word = match power {
                PowerKnown::On => "on",
                PowerKnown::Off => "off",
                PowerKnown::Unknown => "unknown",
            };
            self.event(
                EventKind::Power,
                Some(host.clone()),
                None,
                format!("host {host}: chassis power {word} ({source})"),
            );
        }
        if to_down {
            self.event(
                EventKind::HostDown,
                Some(host.clone()),
                None,
                format!("host {host} is down: chassis power off ({source}) and no genie connected"),
            );
        }
        Some(status)
    }
}
