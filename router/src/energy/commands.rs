//! The energy reconciler's commands to the cluster task: what it observes of the
//! cluster each sample, the configured mode it applies at start, the wake requests it
//! has served or dropped, and the last check before a host is put to sleep. Wakes,
//! migrations and suspends happen off the task, through the power and VM code.

use tracing::warn;
use wisp_common::{HostId, VmRunState};

use super::view::{observe, Observed};
use crate::cluster::{Command, Model, Op};
use crate::store::StoredBook;

/// What the planner and the energy status need of the cluster now (see [`observe`]).
pub(crate) struct Observe;

impl Command for Observe {
    type Output = Observed;
    const NAME: &'static str = "observe for energy";
    fn apply(self, m: &mut Model) -> Self::Output {
        observe(m)
    }
}

/// Applies `[energy] enabled` unless the operator chose the mode (the choice is stored
/// with the mode, `PersistedState::energy_chosen`). A store failure is logged and the
/// stored mode stays.
pub(crate) struct ApplyEnergyDefault {
    pub enabled: bool,
}

impl Command for ApplyEnergyDefault {
    type Output = ();
    const NAME: &'static str = "apply the configured energy mode";
    fn apply(self, m: &mut Model) -> Self::Output {
        let want = self.enabled;
        if !m.persisted.energy_chosen && m.persisted.energy_mode != want {
            if let Err(e) = m.update(|p| p.energy_mode = want) {
                warn!(error = %e, "could not store the configured energy mode");
            }
        }
    }
}

/// The energy book's totals as last stored (`None`: never stored).
pub(crate) struct LoadBook;

impl Command for LoadBook {
    type Output = Option<StoredBook>;
    const NAME: &'static str = "load the energy book";
    fn apply(self, m: &mut Model) -> Self::Output {
        m.persisted.energy_book
    }
}

/// Stores the energy book's totals. A store failure is logged; the book stays in
/// memory and the next save tries again.
pub(crate) struct SaveBook(pub StoredBook);

impl Command for SaveBook {
    type Output = ();
    const NAME: &'static str = "store the energy book";
    fn apply(self, m: &mut Model) -> Self::Output {
        if let Err(e) = m.update(|p| p.energy_book = Some(self.0)) {
            warn!(error = %e, "could not store the energy book");
        }
    }
}

/// Removes `hosts` from the wake requests (`Model::wake_wanted`): served by a finished
/// plan, or dropped because they cannot be woken (already up, or failed: not ours to
/// wake).
pub(crate) struct ForgetWakeRequests {
    pub hosts: Vec<HostId>,
}

impl Command for ForgetWakeRequests {
    type Output = ();
    const NAME: &'static str = "forget wake requests";
    fn apply(self, m: &mut Model) -> Self::Output {
        for h in &self.hosts {
            m.wake_wanted.remove(h);
        }
    }
}

/// Why `host` must not be put to sleep now, or `None` when it is empty by every account:
/// not in maintenance, no VM reported running, none placed there, no start or migration
/// to or from it in flight. The plan was made on an older view; this is the check at
/// the moment of acting. `None` also for a host not in the inventory.
pub(crate) struct SleepBlocker {
    pub host: HostId,
}

impl Command for SleepBlocker {
    type Output = Option<String>;
    const NAME: &'static str = "check a host is empty";
    fn apply(self, m: &mut Model) -> Self::Output {
        let h = self.host;
        let e = m.cluster.hosts.get(&h)?;
        let flags = m.persisted.hosts.get(&h);
        if flags.is_some_and(|f| f.maintenance) {
            return Some("it is in maintenance".to_owned());
        }
        if e.vms.iter().any(|v| v.state != VmRunState::Stopped) {
            return Some(format!("its genie reports {} VM(s)", e.vms.len()));
        }
        let placed = m
            .persisted
            .vms
            .values()
            .filter(|r| r.host.as_ref() == Some(&h))
            .count();
        if placed > 0 {
            return Some(format!("{placed} VM(s) are placed there"));
        }
        if m.claims.iter().any(|(_, op)| match op {
            Op::Migrate { to, from } => to == &h || from == &h,
            Op::Start { host } => host == &h,
            _ => false,
        }) {
            return Some("an operation on it is in flight".to_owned());
        }
        None
    }
}

/// The operator chose the energy mode: stored with the choice itself, so the config
/// default no longer applies, and recorded as an event.
pub(crate) struct ChooseEnergyMode {
    pub on: bool,
}

impl Command for ChooseEnergyMode {
    type Output = Result<(), crate::store::StoreError>;
    const NAME: &'static str = "choose the energy mode";
    fn apply(self, m: &mut Model) -> Self::Output {
        let on = self.on;
        m.update(|p| {
            p.energy_mode = on;
            p.energy_chosen = true;
        })?;
        m.event(
            crate::events::EventKind::Power,
            None,
            None,
            format!("energy mode turned {}", if on { "on" } else { "off" }),
        );
        Ok(())
    }
}
