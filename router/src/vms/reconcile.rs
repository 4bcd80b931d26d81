//! The VM reconciler: compares desired VM state with what genies report and acts.
//!
//! - desired running, running where placed: nothing;
//! - desired running, not running, its host up: start it there (same epoch);
//! - desired running, its host proven off (down, fenced, standby): restart it on a
//!   host with room under a new fencing epoch (this is failover), highest priority
//!   first;
//! - desired running, its host unreachable or suspect: nothing. Without proof that
//!   the host is off, a restart could run the VM twice;
//! - a copy on another host with an older epoch: stale (its host was fenced and came
//!   back), dropped; a running copy with a newer epoch is a migration the router did
//!   not get to record (it crashed, or lost the source genie): adopted once the placed
//!   copy is gone or left paused in postmigrate; a newer copy still waiting for its
//!   incoming state while the placed copy runs is a failed migration's leftover: dropped;
//! - desired stopped, running: stop it.
//!
//! Idempotent and safe after a crash: every decision is taken from the stored desired
//! state and the latest reports.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tracing::debug;
use wisp_common::{HostId, VmId, VmRunState, VmSpec};

use super::{ops, placement, VmError};
use crate::cluster::state::HostStatus;
use crate::cluster::{ClusterHandle, Model, Op};
use crate::events::EventKind;
use crate::link::GenieLink;
use crate::store::Desired;

/// How often the reconciler looks: half the 1 s detection target, so a restart
/// follows a proof of failure within half a second.
pub const INTERVAL: Duration = Duration::from_millis(250);

/// Automatic starts/stops in flight at once. A failover of a full host restarts many
/// VMs; each qemu start costs a few hundred ms of CPU, and four at a time keep a
/// 2-core host responsive while still restarting ten VMs in about a second.
pub const MAX_PARALLEL: usize = 4;

/// After a failed automatic action, wait before trying that VM again, so a broken VM
/// does not hammer its genie.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// One thing to do.
#[derive(Debug)]
pub enum Action {
    Start {
        vm: VmId,
        host: HostId,
        spec: VmSpec,
        epoch: u64,
        link: GenieLink,
    },
    Stop {
        vm: VmId,
        host: HostId,
        link: GenieLink,
    },
    DropStale {
        vm: VmId,
        host: HostId,
        link: GenieLink,
    },
}

/// True for host states in which the host is known to be off.
pub fn proven_off(s: HostStatus) -> bool {
    matches!(
        s,
        HostStatus::Down | HostStatus::Fenced | HostStatus::Standby
    )
}

impl Model {
    /// Decides up to `budget` actions and claims their VMs.
    pub fn plan_vm_actions(&mut self, now: Instant, budget: usize) -> Vec<Action> {
        let mut out = Vec::new();
        let mut order: Vec<(u8, VmId)> = self
            .persisted
            .vms
            .iter()
            .map(|(id, r)| (r.spec.priority, id.clone()))
            .collect();
        // Highest priority first, then by name for determinism.
        order.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        for (_, vm) in order {
            if out.len() >= budget {
                break;
            }
            if self.ops.contains_key(&vm) || self.retry_after.get(&vm).is_some_and(|t| *t > now) {
                continue;
            }
            if let Some(a) = self.decide(&vm) {
                let op = match &a {
                    Action::Start { host, .. } => Op::Start { host: host.clone() },
                    Action::Stop { host, .. } | Action::DropStale { host, .. } => {
                        Op::Stop { host: host.clone() }
                    }
                };
                self.ops.insert(vm.clone(), op);
                out.push(a);
            }
        }
        out
    }

    fn decide(&mut self, vm: &VmId) -> Option<Action> {
        let rec = self.persisted.vms.get(vm)?.clone();
        // A host proven off runs nothing, whatever its last report said: its genie
        // link may still look open (a cut cable sends no FIN), and trusting that report
        // would keep the VM "running where placed" forever, with no failover.
        let seen: Vec<_> = self
            .observed(vm)
            .into_iter()
            .filter(|(h, _)| {
                !self
                    .cluster
                    .hosts
                    .get(h)
                    .is_some_and(|x| proven_off(x.status))
            })
            .collect();
        let placed = rec
            .host
            .as_ref()
            .and_then(|p| seen.iter().find(|(x, _)| x == p))
            .map(|(_, s)| s.state.clone());
        // Copies away from the placement: stale (older epoch), an unrecorded move, or
        // the waiting destination of a migration whose orchestration was lost.
        for (h, st) in &seen {
            if Some(h) == rec.host.as_ref() {
                continue;
            }
            // Moved: the newer copy runs (so it received the whole VM: a destination
            // only runs after a completed migration) and the placed copy is gone or is
            // the paused source QEMU leaves behind (postmigrate). A newer copy that is
            // still waiting is never adopted, even when the placed copy is not seen
            // (its genie may just be restarting): adopting it would drop the only
            // real copy as stale.
            let moved = st.state == VmRunState::Running
                && (placed.is_none() || placed == Some(VmRunState::Postmigrate));
            // A newer copy still waiting for its incoming state while the placed copy
            // runs, and no migration of this VM in flight (it is not claimed, or we
            // would not be here): it never got the VM and never will.
            if st.epoch > rec.epoch
                && st.state == VmRunState::Inmigrate
                && placed == Some(VmRunState::Running)
            {
                let link = self.link_of(h).ok()?;
                self.event(
                    EventKind::VmLost,
                    Some(h.clone()),
                    Some(vm.clone()),
                    format!(
                        "leftover destination of a failed migration of {vm} on {h} (epoch {} > {}, still waiting while {vm} runs where placed): dropping it",
                        st.epoch, rec.epoch
                    ),
                );
                return Some(Action::DropStale {
                    vm: vm.clone(),
                    host: h.clone(),
                    link,
                });
            }
            if st.epoch > rec.epoch && moved {
                let (h2, e) = (h.clone(), st.epoch);
                let vm2 = vm.clone();
                if self
                    .update(|p| {
                        if let Some(r) = p.vms.get_mut(&vm2) {
                            r.host = Some(h2);
                            r.epoch = e;
                        }
                    })
                    .is_ok()
                {
                    self.event(
                        EventKind::VmMigrated,
                        Some(h.clone()),
                        Some(vm.clone()),
                        format!("{vm} found on {h} with newer epoch {e}: placement adopted"),
                    );
                }
                return None;
            }
            if st.epoch < rec.epoch || rec.desired == Desired::Stopped {
                let link = self.link_of(h).ok()?;
                self.event(
                    EventKind::VmLost,
                    Some(h.clone()),
                    Some(vm.clone()),
                    format!(
                        "stale copy of {vm} on {h} (epoch {} < {}): dropping it, it must never resume",
                        st.epoch, rec.epoch
                    ),
                );
                return Some(Action::DropStale {
                    vm: vm.clone(),
                    host: h.clone(),
                    link,
                });
            }
        }
        let here = rec
            .host
            .as_ref()
            .and_then(|h| seen.iter().find(|(x, _)| x == h).map(|(_, s)| s.clone()));
        match rec.desired {
            Desired::Stopped => {
                let (h, st) = seen.first()?;
                if st.state == VmRunState::Stopped {
                    return None;
                }
                let link = self.link_of(h).ok()?;
                Some(Action::Stop {
                    vm: vm.clone(),
                    host: h.clone(),
                    link,
                })
            }
            Desired::Running if here.is_some() => None,
            Desired::Running => {
                let status = rec
                    .host
                    .as_ref()
                    .and_then(|h| self.cluster.hosts.get(h))
                    .map(|h| h.status);
                match (rec.host.clone(), status) {
                    (Some(h), Some(HostStatus::Up)) => {
                        let link = self.link_of(&h).ok()?;
                        Some(Action::Start {
                            vm: vm.clone(),
                            host: h,
                            spec: rec.spec,
                            epoch: rec.epoch,
                            link,
                        })
                    }
                    (None, _) | (_, None) => self.failover(vm, &rec.spec, None),
                    (Some(h), Some(s)) if proven_off(s) => self.failover(vm, &rec.spec, Some(h)),
                    // Unreachable, suspect, waking, maintenance: wait for proof.
                    _ => None,
                }
            }
        }
    }

    /// Places `vm` on a new host with a new epoch.
    fn failover(&mut self, vm: &VmId, spec: &VmSpec, from: Option<HostId>) -> Option<Action> {
        let cands = self.candidates(Some(vm));
        let host = match placement::choose(&cands, spec.resources()) {
            Ok(h) => h,
            Err(e) => {
                self.retry_after
                    .insert(vm.clone(), Instant::now() + RETRY_AFTER);
                self.event(
                    EventKind::Failover,
                    from.clone(),
                    Some(vm.clone()),
                    format!(
                        "cannot restart {vm}{}: {e}",
                        from.as_ref()
                            .map(|h| format!(" from {h}"))
                            .unwrap_or_default()
                    ),
                );
                return None;
            }
        };
        let link = self.link_of(&host).ok()?;
        let epoch = self.new_epoch().ok()?;
        let (vm2, h2) = (vm.clone(), host.clone());
        self.update(|p| {
            if let Some(r) = p.vms.get_mut(&vm2) {
                r.host = Some(h2);
                r.epoch = epoch;
            }
        })
        .ok()?;
        self.event(
            EventKind::Failover,
            Some(host.clone()),
            Some(vm.clone()),
            match &from {
                Some(f) => {
                    format!("restarting {vm} on {host} (its host {f} is proven off), epoch {epoch}")
                }
                None => format!("placing {vm} on {host}, epoch {epoch}"),
            },
        );
        Some(Action::Start {
            vm: vm.clone(),
            host,
            spec: spec.clone(),
            epoch,
            link,
        })
    }
}

/// Runs the reconciler until `shutdown`.
pub async fn run(c: ClusterHandle, mut shutdown: watch::Receiver<bool>) {
    let permits = Arc::new(Semaphore::new(MAX_PARALLEL));
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let budget = permits.available_permits();
        if budget == 0 {
            continue;
        }
        let Some(actions) = c
            .with(move |m| m.plan_vm_actions(Instant::now(), budget))
            .await
        else {
            return;
        };
        for a in actions {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let _permit = permit;
                execute(&c, a).await;
            });
        }
    }
}

async fn execute(c: &ClusterHandle, a: Action) {
    let t0 = std::time::Instant::now();
    let (vm, host, what, result) = match a {
        Action::Start {
            vm,
            host,
            spec,
            epoch,
            link,
        } => {
            let r = ops::start_on(&link, &host, spec, epoch).await;
            (vm, host, "start", r)
        }
        Action::Stop { vm, host, link } => {
            let r = ops::stop_on(&link, &host, &vm, false, false).await;
            (vm, host, "stop", r)
        }
        Action::DropStale { vm, host, link } => {
            let r = drop_stale(&link, &host, &vm).await;
            (vm, host, "drop stale copy", r)
        }
    };
    let ms = t0.elapsed().as_millis();
    debug!(%vm, %host, what, ?ms, ok = result.is_ok(), "reconciler action done");
    let failed = result.as_ref().err().map(|e| super::chain(e));
    let (vm2, host2) = (vm.clone(), host.clone());
    let _ = c
        .with(move |m| {
            m.ops.remove(&vm2);
            match failed {
                None => {
                    m.retry_after.remove(&vm2);
                    let kind = if what == "start" {
                        EventKind::VmRestarted
                    } else {
                        EventKind::VmStopped
                    };
                    m.event(
                        kind,
                        Some(host2.clone()),
                        Some(vm2.clone()),
                        format!("{what} of {vm2} on {host2} done in {ms} ms"),
                    );
                }
                Some(e) => {
                    m.retry_after
                        .insert(vm2.clone(), Instant::now() + RETRY_AFTER);
                    m.event(
                        EventKind::Error,
                        Some(host2.clone()),
                        Some(vm2.clone()),
                        format!(
                            "{what} of {vm2} on {host2} failed: {e}; retrying in {} s",
                            RETRY_AFTER.as_secs()
                        ),
                    );
                }
            }
        })
        .await;
}

async fn drop_stale(link: &GenieLink, host: &HostId, vm: &VmId) -> Result<(), VmError> {
    let cmd = wisp_common::proto::Command::DropStale {
        vms: vec![vm.clone()],
    };
    ops::run_done(link, host, vm, cmd).await
}
