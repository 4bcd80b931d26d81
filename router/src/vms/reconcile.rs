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
//! - desired stopped, running: stop it;
//! - a migration recorded in flight whose router is gone (a takeover, a restart):
//!   its waiting destination is left to the source genie, and nothing is started
//!   before the destination host has reported (`inflight.rs`).
//!
//! Idempotent and safe after a crash: every decision is taken from the stored desired
//! state and the latest reports.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{watch, Semaphore};
use tokio::time::Instant;
use tracing::debug;
use wisp_common::{HostId, VmId, VmRunState, VmSpec};

use super::inflight::InFlight;
use super::{ops, placement, VmError};
use crate::cluster::{Claim, ClusterHandle, Model, Op};
use crate::events::EventKind;
use crate::link::GenieLink;
use crate::model::host::HostStatus;
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

/// After a successful action, how long its VM is left alone until the genie's report
/// shows the effect: genies report a VM's change at once, and 2 s covers that report
/// on a loaded host without delaying the reaction to a VM that dies right after.
pub const SEEN_AFTER: Duration = Duration::from_secs(2);

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
    /// Decides up to `budget` actions and claims their VMs (each claim is released
    /// when it is dropped, after its action or with it).
    /// `now_ms` is the wall clock, for the age of a migration recorded in flight.
    pub fn plan_vm_actions(
        &mut self,
        now: Instant,
        now_ms: u64,
        budget: usize,
    ) -> Vec<(Action, Claim)> {
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
            if self.claims.is_held(&vm) || self.retry_after.get(&vm).is_some_and(|t| *t > now) {
                continue;
            }
            if let Some(a) = self.decide(&vm, now_ms) {
                let op = match &a {
                    Action::Start { host, .. } => Op::Start { host: host.clone() },
                    Action::Stop { host, .. } | Action::DropStale { host, .. } => Op::Stop {
                        host: Some(host.clone()),
                    },
                };
                match self.claim(&vm, op) {
                    Ok(claim) => out.push((a, claim)),
                    // Not held a moment ago and the task is single-threaded: cannot
                    // happen, but a busy VM is simply left for the next pass.
                    Err(_) => continue,
                }
            }
        }
        out
    }

    fn decide(&mut self, vm: &VmId, now_ms: u64) -> Option<Action> {
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
                    .is_some_and(|x| proven_off(x.status()))
            })
            .collect();
        let placed = rec
            .host
            .as_ref()
            .and_then(|p| seen.iter().find(|(x, _)| x == p))
            .map(|(_, s)| s.state.clone());
        // A migration its router did not live to end (inflight.rs).
        if let Some(f) = &rec.migrating {
            match self.judge_in_flight(vm, f, placed.as_ref(), now_ms) {
                InFlight::Streaming | InFlight::Unheard => return None,
                InFlight::Over => {
                    // Not stored: judged again next pass, and the usual rules are
                    // right for an ended migration meanwhile.
                    if let Err(e) = self.end_in_flight(vm) {
                        debug!(%vm, error = %e, "cannot forget an ended migration yet");
                    }
                }
                InFlight::Usual => {}
            }
        }
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
                return self.drop_copy(vm, h, format!(
                        "leftover destination of a failed migration of {vm} on {h} (epoch {} > {}, still waiting while {vm} runs where placed): dropping it",
                        st.epoch, rec.epoch
                    ));
            }
            if st.epoch > rec.epoch && moved {
                let e = st.epoch;
                if self.set_placement(vm, h, e).is_ok() {
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
                return self.drop_copy(vm, h, format!(
                        "stale copy of {vm} on {h} (epoch {} < {}): dropping it, it must never resume",
                        st.epoch, rec.epoch
                    ));
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
                    .map(|h| h.status());
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

    /// Drops the copy of `vm` on `host`, saying why: it must never resume.
    fn drop_copy(&mut self, vm: &VmId, host: &HostId, why: String) -> Option<Action> {
        let link = self.link_of(host).ok()?;
        self.event(EventKind::VmLost, Some(host.clone()), Some(vm.clone()), why);
        Some(Action::DropStale {
            vm: vm.clone(),
            host: host.clone(),
            link,
        })
    }

    /// Places `vm` on a new host with a new epoch.
    fn failover(&mut self, vm: &VmId, spec: &VmSpec, from: Option<HostId>) -> Option<Action> {
        let cands = self.candidates(Some(vm));
        let host = match placement::choose(&cands, spec.resources()) {
            Ok(h) => h,
            Err(e) => {
                self.retry_after
                    .insert(vm.clone(), Instant::now() + RETRY_AFTER);
                let waking = self
                    .want_wake_for_room(spec)
                    .map(|h| format!("; waking standby host {h} for it"))
                    .unwrap_or_default();
                self.event(
                    EventKind::Failover,
                    from.clone(),
                    Some(vm.clone()),
                    format!(
                        "cannot restart {vm}{}: {e}{waking}",
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
        self.set_placement(vm, &host, epoch).ok()?;
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
        let Some(actions) = c.run(super::commands::PlanActions { budget }).await else {
            return;
        };
        // An action without a permit is dropped with its claim, so its VM is free for
        // the next pass.
        for (a, claim) in actions {
            let Ok(permit) = permits.clone().try_acquire_owned() else {
                break;
            };
            let c = c.clone();
            tokio::spawn(async move {
                let _permit = permit;
                execute(&c, a, claim).await;
            });
        }
    }
}

async fn execute(c: &ClusterHandle, a: Action, claim: Claim) {
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
    let _ = c
        .run(super::commands::ActionDone {
            vm,
            host,
            what,
            ms,
            failed,
            claim,
        })
        .await;
}

async fn drop_stale(link: &GenieLink, host: &HostId, vm: &VmId) -> Result<(), VmError> {
    let cmd = wisp_common::proto::Command::DropStale {
        vms: vec![vm.clone()],
    };
    ops::run_done(link, host, vm, cmd).await
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::cluster::command::Inspect;
    use crate::config::RouterConfig;
    use crate::model::host::{HostEvent, LinkEntry};
    use crate::store::{MemStore, PersistedState, Store, VmRecord};
    use wisp_common::proto::VmStatus;

    fn h(n: &str) -> HostId {
        HostId::new(n).unwrap()
    }

    /// A cluster task with h1 and h2 and one VM placed on h1 at epoch 1.
    async fn cluster() -> (ClusterHandle, watch::Sender<bool>) {
        let text = "listen = \"127.0.0.1:1\"\nstate_dir = \"/nonexistent/wisp-reconcile-unit\"\n\
                    secret_file = \"/nonexistent/secret\"\n\
                    [[host]]\nname = \"h1\"\nmac = \"02:00:00:00:00:01\"\naddress = \"127.0.0.1\"\n\
                    [[host]]\nname = \"h2\"\nmac = \"02:00:00:00:00:02\"\naddress = \"127.0.0.1\"\n";
        let config = RouterConfig::parse(std::path::Path::new("router.toml"), text).unwrap();
        let vm = VmId::new("vm1").unwrap();
        let mut state = PersistedState {
            version: crate::store::STATE_VERSION,
            next_epoch: 3,
            ..Default::default()
        };
        state.vms.insert(
            vm.clone(),
            VmRecord {
                spec: VmSpec::new(vm, 1, 64),
                desired: Desired::Running,
                host: Some(h("h1")),
                epoch: 1,
                created_at_ms: 0,
                migrating: None,
            },
        );
        let store = MemStore {
            state: Some(state),
            ..Default::default()
        };
        let persisted = store.load().unwrap();
        let (stop, rx) = watch::channel(false);
        let (c, _task) = crate::cluster::spawn(&config, Box::new(store), persisted, rx);
        (c, stop)
    }

    /// Host `host` up with a live link, reporting vm1 in `state` at `epoch` (or
    /// nothing; or unreachable with no link when `linked` is false).
    fn report(m: &mut Model, host: &str, linked: bool, vm: Option<(VmRunState, u64)>) {
        let timing = m.cluster.timing;
        let e = m.cluster.hosts.get_mut(&h(host)).unwrap();
        e.link = linked.then(|| LinkEntry {
            session: 1,
            instance: 1,
            genie_version: "test".into(),
            handle: GenieLink::detached(),
        });
        // Up when linked and just heard, unreachable without a link.
        e.last_report = linked.then(Instant::now);
        e.vms_reported = linked;
        e.apply(HostEvent::Liveness {
            age: Some(std::time::Duration::ZERO),
            timing,
        });
        e.vms = vm
            .map(|(state, epoch)| VmStatus {
                id: VmId::new("vm1").unwrap(),
                state,
                vcpus: 1,
                mem_mib: 64,
                cpu_time_ms: 0,
                pid: Some(1),
                qmp_socket: "/x/vm1.qmp".into(),
                epoch,
            })
            .into_iter()
            .collect();
    }

    /// What the reconciler does in one pass: (action, host), and the placement after.
    fn pass(m: &mut Model) -> (Vec<(&'static str, HostId)>, Option<HostId>, u64) {
        // Each pass starts with no VM held: the claims of the last one are dropped.
        m.apply_releases();
        let acts = m
            .plan_vm_actions(Instant::now(), 1_000_000, MAX_PARALLEL)
            .into_iter()
            .map(|(a, _claim)| match a {
                Action::Start { host, .. } => ("start", host),
                Action::Stop { host, .. } => ("stop", host),
                Action::DropStale { host, .. } => ("drop", host),
            })
            .collect();
        let r = &m.persisted.vms[&VmId::new("vm1").unwrap()];
        (acts, r.host.clone(), r.epoch)
    }

    #[tokio::test]
    async fn a_completed_unrecorded_migration_is_adopted_and_its_source_dropped() {
        let (c, _stop) = cluster().await;
        let (first, second) = c
            .run(Inspect(|m: &mut Model| {
                // QEMU left the source paused in postmigrate; the destination runs.
                report(m, "h1", true, Some((VmRunState::Postmigrate, 1)));
                report(m, "h2", true, Some((VmRunState::Running, 2)));
                (pass(m), pass(m))
            }))
            .await
            .unwrap();
        assert_eq!(
            first,
            (vec![], Some(h("h2")), 2),
            "adopted, nothing done yet"
        );
        assert_eq!(second, (vec![("drop", h("h1"))], Some(h("h2")), 2));
    }

    #[tokio::test]
    async fn a_running_copy_is_adopted_when_its_source_is_gone() {
        let (c, _stop) = cluster().await;
        let r = c
            .run(Inspect(|m: &mut Model| {
                report(m, "h1", true, None);
                report(m, "h2", true, Some((VmRunState::Running, 2)));
                pass(m)
            }))
            .await
            .unwrap();
        assert_eq!(r, (vec![], Some(h("h2")), 2));
    }

    #[tokio::test]
    async fn a_waiting_destination_is_never_adopted_even_while_the_source_is_unseen() {
        let (c, _stop) = cluster().await;
        let r = c
            .run(Inspect(|m: &mut Model| {
                // The source genie is restarting: its VM is not reported for a moment.
                report(m, "h1", false, None);
                report(m, "h2", true, Some((VmRunState::Inmigrate, 2)));
                pass(m)
            }))
            .await
            .unwrap();
        assert_eq!(
            r,
            (vec![], Some(h("h1")), 1),
            "nothing moves, nothing dropped"
        );
    }

    #[tokio::test]
    async fn a_waiting_destination_beside_a_running_source_is_dropped() {
        let (c, _stop) = cluster().await;
        let r = c
            .run(Inspect(|m: &mut Model| {
                report(m, "h1", true, Some((VmRunState::Running, 1)));
                report(m, "h2", true, Some((VmRunState::Inmigrate, 2)));
                pass(m)
            }))
            .await
            .unwrap();
        assert_eq!(r, (vec![("drop", h("h2"))], Some(h("h1")), 1));
    }

    /// Records a migration of vm1 to h2 under epoch 2, planned at `since_ms`.
    fn in_flight(m: &mut Model, since_ms: u64) {
        m.persisted
            .vms
            .get_mut(&VmId::new("vm1").unwrap())
            .unwrap()
            .migrating = Some(crate::store::InFlightMigration {
            to: h("h2"),
            epoch: 2,
            since_ms,
        });
    }

    fn migrating(m: &Model) -> bool {
        m.persisted.vms[&VmId::new("vm1").unwrap()]
            .migrating
            .is_some()
    }

    #[tokio::test]
    async fn a_destination_of_a_migration_recorded_in_flight_is_left_streaming() {
        let (c, _stop) = cluster().await;
        let r = c
            .run(Inspect(|m: &mut Model| {
                // The router that started it is gone; the source genie still streams.
                in_flight(m, 999_000);
                report(m, "h1", true, Some((VmRunState::Running, 1)));
                report(m, "h2", true, Some((VmRunState::Inmigrate, 2)));
                (pass(m), migrating(m))
            }))
            .await
            .unwrap();
        assert_eq!(r, ((vec![], Some(h("h1")), 1), true));
    }

    #[tokio::test]
    async fn nothing_starts_before_the_destination_of_a_migration_in_flight_reports() {
        let (c, _stop) = cluster().await;
        let r = c
            .run(Inspect(|m: &mut Model| {
                // The source quit after the move; the destination's genie has not
                // reconnected to this router yet. Starting vm1 on h1 would run it twice.
                in_flight(m, 999_000);
                report(m, "h1", true, None);
                report(m, "h2", false, None);
                let before = pass(m);
                // Linked, but its first report left the VM list out: no news.
                report(m, "h2", true, None);
                m.cluster.hosts.get_mut(&h("h2")).unwrap().vms_reported = false;
                let no_list = (pass(m), migrating(m));
                // It reports the moved copy: adopted, the record gone.
                report(m, "h2", true, Some((VmRunState::Running, 2)));
                (before, pass(m), migrating(m), no_list)
            }))
            .await
            .unwrap();
        assert_eq!(r.0, (vec![], Some(h("h1")), 1), "nothing started");
        assert_eq!(
            r.3,
            ((vec![], Some(h("h1")), 1), true),
            "a report without VMs"
        );
        assert_eq!(r.1, (vec![], Some(h("h2")), 2), "adopted");
        assert!(!r.2, "the record outlived the move");
    }

    #[tokio::test]
    async fn a_migration_in_flight_that_ended_or_is_too_old_is_forgotten() {
        let (c, _stop) = cluster().await;
        let r = c
            .run(Inspect(|m: &mut Model| {
                // Too old: the waiting destination is a leftover after all.
                in_flight(m, 1_000_000 - super::super::inflight::ORPHANED_AFTER_MS - 1);
                report(m, "h1", true, Some((VmRunState::Running, 1)));
                report(m, "h2", true, Some((VmRunState::Inmigrate, 2)));
                let old = (pass(m), migrating(m));
                // The destination reports no copy: the migration failed and is over.
                in_flight(m, 999_000);
                report(m, "h2", true, None);
                let over = (pass(m), migrating(m));
                (old, over)
            }))
            .await
            .unwrap();
        assert_eq!(r.0, ((vec![("drop", h("h2"))], Some(h("h1")), 1), false));
        assert_eq!(r.1, ((vec![], Some(h("h1")), 1), false));
    }

    #[tokio::test]
    async fn two_running_copies_are_left_alone_rather_than_guessed_at() {
        let (c, _stop) = cluster().await;
        let r = c
            .run(Inspect(|m: &mut Model| {
                report(m, "h1", true, Some((VmRunState::Running, 1)));
                report(m, "h2", true, Some((VmRunState::Running, 2)));
                pass(m)
            }))
            .await
            .unwrap();
        assert_eq!(r, (vec![], Some(h("h1")), 1));
    }

    fn set_virt(m: &mut Model, host: &str, models: &[&str], nets: &[&str]) {
        m.cluster.hosts.get_mut(&h(host)).unwrap().virt = Some(wisp_common::proto::VirtCaps {
            accel: "kvm".into(),
            cpu_models: Some(models.iter().map(|s| s.to_string()).collect()),
            networks: nets.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        });
    }

    fn candidate_names(m: &Model) -> Vec<String> {
        let mut v: Vec<String> = m
            .candidates(Some(&VmId::new("vm1").unwrap()))
            .into_iter()
            .map(|c| c.host.to_string())
            .collect();
        v.sort();
        v
    }

    #[tokio::test]
    async fn a_host_is_woken_for_room_only_if_the_vm_may_run_there() {
        let (c, _stop) = cluster().await;
        let seen = c
            .run(Inspect(|m: &mut Model| {
                let vm = VmId::new("vm1").unwrap();
                report(m, "h2", true, None);
                set_virt(m, "h2", &["Nehalem"], &["wan"]);
                let h2 = m.cluster.hosts.get_mut(&h("h2")).unwrap();
                h2.apply(crate::model::host::HostEvent::SleepRequested);
                h2.apply(crate::model::host::HostEvent::SleepVerified);
                let asleep = h2.status();
                let mut spec = m.persisted.vms[&vm].spec.clone();
                spec.nics = vec![wisp_common::NicSpec {
                    network: "lan".into(),
                    mac: "02:00:00:00:00:09".parse().unwrap(),
                }];
                let without_lan = m.want_wake_for_room(&spec);
                set_virt(m, "h2", &["Nehalem"], &["lan"]);
                (asleep, without_lan, m.want_wake_for_room(&spec))
            }))
            .await
            .unwrap();
        assert_eq!(seen.0, crate::model::host::HostStatus::Standby);
        assert_eq!(seen.1, None, "h2 lacks lan: waking it would not help");
        assert_eq!(seen.2, Some(h("h2")));
    }

    #[tokio::test]
    async fn hosts_without_the_cpu_model_or_a_nic_network_get_no_vms() {
        let (c, _stop) = cluster().await;
        let seen = c
            .run(Inspect(|m: &mut Model| {
                let vm = VmId::new("vm1").unwrap();
                report(m, "h1", true, None);
                report(m, "h2", true, None);
                m.persisted.vms.get_mut(&vm).unwrap().spec.nics = vec![wisp_common::NicSpec {
                    network: "lan".into(),
                    mac: "02:00:00:00:00:09".parse().unwrap(),
                }];
                // The default cluster model is Nehalem: h2 lacks it, then lan, then neither.
                set_virt(m, "h1", &["Nehalem"], &["lan"]);
                set_virt(m, "h2", &["qemu64"], &["lan"]);
                let a = candidate_names(m);
                set_virt(m, "h2", &["Nehalem"], &["wan"]);
                let b = candidate_names(m);
                // The energy planner is told the same: vm1 may run on h1 only.
                let only_on = |m: &Model| {
                    crate::energy::view::observe(m)
                        .vms
                        .into_iter()
                        .find(|v| v.id == vm)
                        .unwrap()
                        .only_on
                };
                let b_energy = only_on(m);
                set_virt(m, "h2", &["Nehalem", "qemu64"], &["lan", "wan"]);
                let c = (candidate_names(m), only_on(m));
                // A VM created under an older cluster model keeps it: h1 lacks it.
                m.persisted.vms.get_mut(&vm).unwrap().spec.cpu_model = Some("qemu64".into());
                (a, b, b_energy, c, candidate_names(m), only_on(m))
            }))
            .await
            .unwrap();
        assert_eq!(seen.0, vec!["h1"]);
        assert_eq!(seen.1, vec!["h1"]);
        assert_eq!(seen.2, Some(vec![h("h1")]));
        assert_eq!(seen.3, (vec!["h1".to_string(), "h2".to_string()], None));
        assert_eq!(seen.4, vec!["h2"]);
        assert_eq!(seen.5, Some(vec![h("h2")]));
    }
}
