//! A live migration recorded in flight whose router is gone: the leader that started
//! it was killed (another took over) or the router restarted. The source genie goes on
//! streaming without it (a command outlives its link), so the new router must neither
//! take the waiting destination for a failed migration's leftover and kill it (the move
//! would be lost, or worse: killed at switch-over it takes the only running copy), nor
//! start the VM anew where it was placed before the destination has reported (the
//! migrated copy may be running there already: the VM would run twice).
//!
//! The record (`VmRecord::migrating`) is stored with the destination's epoch before
//! the destination is prepared, and cleared by any new placement (the move recorded or
//! adopted, a failover) or by the end of a migration that did not move the VM. A VM
//! under a user's or the planner's migration is claimed, so the reconciler never judges
//! a migration its own router is still running.

use wisp_common::{VmId, VmRunState};

use super::reconcile::proven_off;
use crate::cluster::Model;
use crate::model::host::HostStatus;
use crate::store::InFlightMigration;

/// A record older than this is a leftover: the source genie gives up on a migration
/// after 10 minutes (and resumes the VM), and one more minute covers the routers'
/// wall clocks disagreeing.
pub const ORPHANED_AFTER_MS: u64 = 11 * 60 * 1000;

/// What the reconciler makes of a migration recorded in flight.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InFlight {
    /// The destination waits for (or is receiving) the VM: leave both copies alone.
    Streaming,
    /// The destination host has not reported to this router yet: start nothing.
    Unheard,
    /// It ended (the destination has no copy, or is off, or the record is too old):
    /// forget the record and reconcile as usual.
    Over,
    /// The destination's copy runs or is paused: the usual rules decide (adopt a
    /// completed move, leave two running copies alone).
    Usual,
}

impl Model {
    /// Judges the migration of `vm` recorded in flight, given `placed`, the state of
    /// its copy where it is placed (if seen), and the wall clock `now_ms`.
    pub fn judge_in_flight(
        &self,
        vm: &VmId,
        f: &InFlightMigration,
        placed: Option<&VmRunState>,
        now_ms: u64,
    ) -> InFlight {
        if now_ms.saturating_sub(f.since_ms) > ORPHANED_AFTER_MS {
            return InFlight::Over;
        }
        let Some(host) = self.cluster.hosts.get(&f.to) else {
            return InFlight::Over;
        };
        if proven_off(host.status()) {
            return InFlight::Over;
        }
        // What its genie reported on its live link, as the usual rules see it
        // (`Model::observed`), whatever the host's status says yet; "no copy" is
        // believed only from a host up whose genie has sent this router its list of
        // VMs (a link comes up before its first report, and a report may leave the
        // list out).
        let linked = host.link.is_some();
        let heard = linked && host.vms_reported && host.status() == HostStatus::Up;
        let copy = linked
            .then(|| host.vms.iter().find(|s| &s.id == vm))
            .flatten();
        match copy {
            Some(s) if s.epoch == f.epoch && s.state == VmRunState::Inmigrate => {
                InFlight::Streaming
            }
            Some(_) => InFlight::Usual,
            None if heard => InFlight::Over,
            // The placed copy runs: nothing would be started anyway, and whatever the
            // destination holds is judged once it reports.
            None if placed == Some(&VmRunState::Running) => InFlight::Usual,
            None => InFlight::Unheard,
        }
    }
}
