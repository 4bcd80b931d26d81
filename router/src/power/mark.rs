//! The one rule for what a learned chassis power state does to the cluster model,
//! shared by the power commands and the failover code: record `PowerKnown` (with an
//! event when it changes), and call a host `Down` (proven off) when the BMC confirms
//! power off and no genie is connected.

use wisp_common::HostId;

use crate::cluster::Model;
use crate::model::host::{HostEvent, HostStatus, PowerKnown};

impl Model {
    /// Records that `host`'s chassis power is `power`, learned from `source` (e.g.
    /// "BMC 10.77.0.101:623"). Returns the host's status afterwards (`None` for an
    /// unknown host). The rule (which states become `Down`) is the host state
    /// machine's: see `HostEvent::PowerLearned`.
    pub fn mark_power(
        &mut self,
        host: &HostId,
        power: PowerKnown,
        source: &str,
    ) -> Option<HostStatus> {
        self.host_event(host, HostEvent::PowerLearned { power, source })
    }
}
