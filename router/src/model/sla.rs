//! Per-VM availability accounting against the 99.95 % SLA target.
//!
//! Only unplanned downtime counts. An incident opens when a VM that should run
//! (desired running) and was seen running since it was last started on purpose is
//! known not to run, and closes when it runs again. So starting a stopped VM, a
//! restart (a stop, then a start) and a new VM that has not come up yet are not
//! outages. "Known": a VM on a host that is unreachable, or whose genie has not
//! reported since it (re)connected, is not counted yet: it may be running behind a
//! silent genie or a router that just restarted. An outage is measured from when the
//! VM was last seen running on a host that was reporting (this router's own witness),
//! else from the host's last report when the host is proven off, else from its
//! detection.
//!
//! The book remembers which copy was last seen running (host, QEMU pid, epoch): a
//! VM seen running again as that very copy never stopped, so an incident opened
//! meanwhile (a router restart, a host wrongly thought gone) is erased, not closed.
//! A VM's history goes with it when it is deleted, and a recreated VM starts afresh.
//!
//! The book is kept by the store (`state_dir/sla.json` on disk) and handed to it only
//! when something in it changes; the write happens off the cluster task.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::error;
use wisp_common::time::unix_ms;
use wisp_common::{HostId, VmId, VmRunState};

use crate::cluster::{Model, Op};
use crate::events::EventKind;
use crate::model::host::HostStatus;
use crate::store::Desired;

/// The availability target of a commercial cloud's VM SLA.
pub const TARGET: f64 = 0.9995;

/// The rolling window of the SLA figure.
pub const WINDOW_MS: u64 = 30 * 24 * 3600 * 1000;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Incident {
    pub start_ms: u64,
    pub end_ms: Option<u64>,
    pub cause: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct VmSla {
    pub created_ms: u64,
    pub first_running_ms: Option<u64>,
    pub incidents: Vec<Incident>,
    /// The copy last seen running since the VM was last started on purpose; `None`
    /// after a planned stop (so the next start is no outage) and before it first runs.
    #[serde(default)]
    pub witness: Option<Copy>,
    /// When this router last saw it running (not stored: after a restart the router
    /// knows nothing of the time it was away).
    #[serde(skip)]
    pub last_seen_ms: Option<u64>,
}

/// One running copy of a VM: the same host, process and placement epoch means the
/// guest never stopped.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Copy {
    pub host: HostId,
    pub pid: Option<u32>,
    pub epoch: u64,
}

/// Where a VM that is not seen running stands, as far as the router knows.
#[derive(Debug, Clone, PartialEq)]
pub enum Whereabouts {
    /// Its host is silent, or has not reported since its link (re)started: the VM
    /// may well be running. Nothing is counted.
    Unknown,
    /// Its host is proven off (down or fenced); its last report was at that time.
    ProvenOff {
        cause: String,
        last_report_ms: Option<u64>,
    },
    /// Its host reports, without this VM running (or it has no host).
    NotRunning { cause: String },
}

/// What the router sees of one VM on one tick.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The copy seen running, preferably on its placement.
    pub running: Option<Copy>,
    /// Desired stopped: whatever it does now is planned.
    pub stopped_on_purpose: bool,
    /// A live migration is switching it over.
    pub migrating: bool,
    pub whereabouts: Whereabouts,
}

impl VmSla {
    /// Downtime in `[from, to]` and the number of incidents touching it.
    pub fn downtime(&self, from: u64, to: u64) -> (u64, usize) {
        let mut total = 0;
        let mut n = 0;
        for i in &self.incidents {
            let s = i.start_ms.max(from);
            let e = i.end_ms.unwrap_or(to).min(to);
            if e > s {
                total += e - s;
                n += 1;
            } else if i.end_ms.is_none() && i.start_ms <= to {
                n += 1;
            }
        }
        (total, n)
    }

    /// Availability over `[from, to]`, counting only time since the VM first ran.
    pub fn availability(&self, from: u64, to: u64) -> f64 {
        let Some(first) = self.first_running_ms else {
            return 1.0;
        };
        let from = from.max(first);
        if to <= from {
            return 1.0;
        }
        let (down, _) = self.downtime(from, to);
        1.0 - down as f64 / (to - from) as f64
    }
}

impl VmSla {
    /// Updates the book from one observation at `now_ms`; returns whether anything
    /// changed that the store must keep, and a note for the event log.
    pub fn observe(&mut self, o: &Observation, now_ms: u64) -> (bool, Option<String>) {
        let mut changed = false;
        let open = self.incidents.last().is_some_and(|i| i.end_ms.is_none());
        if o.stopped_on_purpose {
            // Planned: whatever it does now, and its next start, is no outage.
            if o.running.is_some() && self.first_running_ms.is_none() {
                self.first_running_ms = Some(now_ms);
                changed = true;
            }
            return (self.planned_stop(now_ms) || changed, None);
        }
        if let Some(copy) = &o.running {
            self.last_seen_ms = Some(now_ms);
            if self.first_running_ms.is_none() {
                self.first_running_ms = Some(now_ms);
                changed = true;
            }
            let same = self.witness.as_ref() == Some(copy);
            let mut note = None;
            if open && same {
                // The very copy it was: the guest never stopped.
                self.incidents.pop();
                changed = true;
            } else if open {
                let i = self.incidents.last_mut().expect("open incident");
                i.end_ms = Some(now_ms.max(i.start_ms));
                changed = true;
                crate::metrics::registry::OUTAGE_SECONDS
                    .observe_ms(now_ms.saturating_sub(i.start_ms));
                note = Some(format!(
                    "running again after {:.1} s of downtime",
                    (now_ms.saturating_sub(i.start_ms)) as f64 / 1000.0
                ));
            }
            if !same {
                self.witness = Some(copy.clone());
                changed = true;
            }
            return (changed, note);
        }
        // Not seen since it was last started on purpose: it has not come up yet.
        if open || self.witness.is_none() || o.migrating {
            return (false, None);
        }
        let (start, cause) = match &o.whereabouts {
            Whereabouts::Unknown => return (false, None),
            Whereabouts::ProvenOff {
                cause,
                last_report_ms,
            } => (self.last_seen_ms.or(*last_report_ms), cause.clone()),
            Whereabouts::NotRunning { cause } => (self.last_seen_ms, cause.clone()),
        };
        self.incidents.push(Incident {
            start_ms: start.unwrap_or(now_ms).min(now_ms),
            end_ms: None,
            cause: cause.clone(),
        });
        (true, Some(format!("down: {cause}")))
    }
}

impl VmSla {
    /// A stop (or delete) on purpose: an open incident ends now, and the copy seen
    /// last is forgotten, so the VM's next start is no outage. Returns whether
    /// anything changed.
    pub fn planned_stop(&mut self, now_ms: u64) -> bool {
        let mut changed = false;
        if let Some(i) = self.incidents.last_mut().filter(|i| i.end_ms.is_none()) {
            i.end_ms = Some(now_ms.max(i.start_ms));
            changed = true;
        }
        if self.witness.take().is_some() {
            changed = true;
        }
        self.last_seen_ms = None;
        changed
    }
}

/// The incidents of every VM: what the store keeps as the SLA history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlaBook {
    pub vms: BTreeMap<VmId, VmSla>,
}

impl SlaBook {
    /// Keeps a history for exactly the VMs that exist (name, creation time): a
    /// deleted VM's history goes, a VM recreated under an old name starts afresh.
    /// Returns whether anything changed.
    pub fn sync(&mut self, vms: impl Iterator<Item = (VmId, u64)>) -> bool {
        let vms: BTreeMap<VmId, u64> = vms.collect();
        let before = self.vms.len();
        self.vms.retain(|vm, e| vms.get(vm) == Some(&e.created_ms));
        let mut changed = self.vms.len() != before;
        for (vm, created_ms) in vms {
            self.vms.entry(vm).or_insert_with(|| {
                changed = true;
                VmSla {
                    created_ms,
                    ..Default::default()
                }
            });
        }
        changed
    }
}

impl Model {
    /// Opens and closes incidents from the current view (called every tick).
    pub fn account_sla(&mut self, now: Instant) {
        let now_ms = unix_ms();
        let mut changed = false;
        changed |= self.sla.sync(
            self.persisted
                .vms
                .iter()
                .map(|(vm, r)| (vm.clone(), r.created_at_ms)),
        );
        let mut notes = Vec::new();
        let ids: Vec<VmId> = self.persisted.vms.keys().cloned().collect();
        for vm in ids {
            let o = self.observe_for_sla(&vm, now, now_ms);
            let e = self.sla.vms.get_mut(&vm).expect("synced above");
            let (c, note) = e.observe(&o, now_ms);
            changed |= c;
            if let Some(n) = note {
                notes.push((vm.clone(), format!("{vm} {n}")));
            }
        }
        for (vm, msg) in notes {
            self.event(EventKind::Failover, None, Some(vm), msg);
        }
        if changed {
            // Handed to the store's writer, not written here: this runs on the
            // cluster task between reports. A failed write is logged by the writer.
            if let Err(e) = self.store.save_sla(self.sla.clone()) {
                error!(error = %e, "could not store the SLA history");
            }
        }
    }

    /// Called by the stop and delete commands as they claim the VM: a stop that
    /// completes between two ticks is still seen as planned.
    pub(crate) fn sla_planned_stop(&mut self, vm: &VmId) {
        let now_ms = unix_ms();
        if self
            .sla
            .vms
            .get_mut(vm)
            .is_some_and(|e| e.planned_stop(now_ms))
        {
            if let Err(e) = self.store.save_sla(self.sla.clone()) {
                error!(error = %e, "could not store the SLA history");
            }
        }
    }

    /// What the router sees of `vm` now, for the SLA book.
    fn observe_for_sla(&self, vm: &VmId, now: Instant, now_ms: u64) -> Observation {
        let rec = &self.persisted.vms[vm];
        let seen = self.observed(vm);
        // A copy counts as running only on a host that reports now: a silent host's
        // last report says nothing of the present (its VM may have died with it).
        let reporting = |h: &HostId| {
            self.cluster.hosts.get(h).is_some_and(|e| {
                !matches!(
                    e.status(),
                    HostStatus::Suspect
                        | HostStatus::Unreachable
                        | HostStatus::Down
                        | HostStatus::Fenced
                )
            })
        };
        let running = seen
            .iter()
            .filter(|(h, s)| s.state == VmRunState::Running && reporting(h))
            .min_by_key(|(h, _)| Some(h) != rec.host.as_ref())
            .map(|(h, s)| Copy {
                host: h.clone(),
                pid: s.pid,
                epoch: s.epoch,
            });
        // A live migration pauses the guest for at most its downtime limit, but
        // reports see the switch-over only at their own period: while the
        // migration is in flight, or its destination (now the placement) has not
        // yet reported `running`, no copy may say so. That is not an outage.
        let migrating = matches!(self.claims.op(vm), Some(Op::Migrate { .. }))
            || seen
                .iter()
                .any(|(h, s)| Some(h) == rec.host.as_ref() && s.state == VmRunState::Inmigrate);
        let whereabouts = match rec.host.as_ref().and_then(|h| self.cluster.hosts.get(h)) {
            None => Whereabouts::NotRunning {
                cause: "not placed".into(),
            },
            Some(h) => match h.status() {
                s @ (HostStatus::Down | HostStatus::Fenced) => Whereabouts::ProvenOff {
                    cause: format!("host {} {}", h.cfg.name, s.as_str()),
                    last_report_ms: h
                        .report_age(now)
                        .map(|a| now_ms.saturating_sub(a.as_millis() as u64)),
                },
                HostStatus::Unreachable | HostStatus::Suspect => Whereabouts::Unknown,
                // Linked but no report from this genie yet (the router or the genie
                // just restarted): its VM list is not known.
                _ if h.link.is_none() || h.last_gen == 0 => Whereabouts::Unknown,
                s => Whereabouts::NotRunning {
                    cause: format!("not running (host {} {})", h.cfg.name, s.as_str()),
                },
            },
        };
        Observation {
            running,
            // A user's stop or delete holds a claim while the guest shuts down.
            stopped_on_purpose: rec.desired == Desired::Stopped
                || matches!(self.claims.op(vm), Some(Op::Stop { .. } | Op::Delete)),
            migrating,
            whereabouts,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn downtime_and_availability_over_windows() {
        let s = VmSla {
            created_ms: 0,
            first_running_ms: Some(1000),
            incidents: vec![
                Incident {
                    start_ms: 2000,
                    end_ms: Some(3000),
                    cause: "x".into(),
                },
                Incident {
                    start_ms: 9000,
                    end_ms: None,
                    cause: "y".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(s.downtime(0, 10_000), (2000, 2));
        assert_eq!(s.downtime(2500, 10_000), (1500, 2));
        assert_eq!(s.downtime(4000, 8000), (0, 0));
        // 2 s down out of the 9 s since it first ran.
        assert!((s.availability(0, 10_000) - (1.0 - 2.0 / 9.0)).abs() < 1e-9);
        assert_eq!(VmSla::default().availability(0, 10), 1.0);
    }

    fn copy(host: &str, pid: u32) -> Copy {
        Copy {
            host: HostId::new(host).expect("host id"),
            pid: Some(pid),
            epoch: 1,
        }
    }

    fn running(c: Copy) -> Observation {
        Observation {
            running: Some(c),
            stopped_on_purpose: false,
            migrating: false,
            whereabouts: Whereabouts::Unknown,
        }
    }

    fn absent(w: Whereabouts) -> Observation {
        Observation {
            running: None,
            stopped_on_purpose: false,
            migrating: false,
            whereabouts: w,
        }
    }

    fn reporting() -> Whereabouts {
        Whereabouts::NotRunning {
            cause: "not running (host h1 up)".into(),
        }
    }

    fn stopped() -> Observation {
        Observation {
            stopped_on_purpose: true,
            ..absent(reporting())
        }
    }

    /// Feeds `steps` (at their times) and returns the downtime booked over them all.
    fn book(s: &mut VmSla, steps: &[(u64, Observation)]) -> u64 {
        for (t, o) in steps {
            s.observe(o, *t);
        }
        s.downtime(0, u64::MAX / 2).0
    }

    #[test]
    fn a_new_vm_coming_up_is_not_down() {
        let mut s = VmSla::default();
        let steps = [
            (1000, absent(reporting())),
            (5000, absent(reporting())),
            (9000, running(copy("h1", 10))),
        ];
        assert_eq!(book(&mut s, &steps), 0);
        assert_eq!(s.first_running_ms, Some(9000));
    }

    #[test]
    fn starting_a_stopped_vm_is_not_down() {
        let mut s = VmSla::default();
        let steps = [
            (1000, running(copy("h1", 10))),
            (2000, stopped()),
            (60_000, stopped()),
            // `vm start`: desired running again, qemu not up yet.
            (61_000, absent(reporting())),
            (64_000, running(copy("h1", 11))),
        ];
        assert_eq!(book(&mut s, &steps), 0);
        assert!(s.incidents.is_empty());
    }

    /// A stop and start quicker than a tick: the stop command told the book.
    #[test]
    fn a_restart_between_two_ticks_is_not_down() {
        let mut s = VmSla::default();
        s.observe(&running(copy("h1", 10)), 1000);
        // The stale report still lists the old copy while the stop is planned.
        s.planned_stop(1050);
        let steps = [(1100, absent(reporting())), (1400, running(copy("h1", 11)))];
        assert_eq!(book(&mut s, &steps), 0);
        assert_eq!(s.witness, Some(copy("h1", 11)));
    }

    #[test]
    fn a_restart_is_not_down() {
        let mut s = VmSla::default();
        let steps = [
            (1000, running(copy("h1", 10))),
            // The stop's claim is held while the guest shuts down.
            (2000, stopped()),
            (32_000, absent(reporting())),
            (32_500, running(copy("h2", 12))),
        ];
        assert_eq!(book(&mut s, &steps), 0);
    }

    #[test]
    fn a_router_restart_is_not_down_for_a_vm_that_kept_running() {
        let mut s = VmSla::default();
        s.observe(&running(copy("h1", 10)), 1000);
        // The router stops; what it stored is read back by the next one.
        let json = serde_json::to_string(&s).expect("serialises");
        let mut s: VmSla = serde_json::from_str(&json).expect("parses");
        assert_eq!(s.last_seen_ms, None);
        let steps = [
            // Hosts unknown, then linked without a report yet.
            (3000, absent(Whereabouts::Unknown)),
            (3500, absent(Whereabouts::Unknown)),
            (3600, running(copy("h1", 10))),
        ];
        assert_eq!(book(&mut s, &steps), 0);
        // An incident an older router booked wrongly goes when the same copy shows up.
        s.incidents.push(Incident {
            start_ms: 4000,
            end_ms: None,
            cause: "not running (host h1 up)".into(),
        });
        assert!(s.observe(&running(copy("h1", 10)), 7000).0);
        assert!(s.incidents.is_empty());
    }

    #[test]
    fn a_real_outage_counts_from_the_last_sight_to_running_again() {
        let mut s = VmSla::default();
        let steps = [
            (9_000, running(copy("h1", 10))),
            (10_000, running(copy("h1", 10))),
            // h1 dies: silent (unknown) for a while, then proven off.
            (11_000, absent(Whereabouts::Unknown)),
            (15_000, absent(Whereabouts::Unknown)),
            (
                17_000,
                absent(Whereabouts::ProvenOff {
                    cause: "host h1 down".into(),
                    last_report_ms: Some(10_050),
                }),
            ),
            // The failover restarts it on h2.
            (18_000, absent(reporting())),
            (18_400, running(copy("h2", 20))),
        ];
        assert_eq!(book(&mut s, &steps), 8_400);
        assert_eq!(s.incidents.len(), 1);
        assert_eq!(s.incidents[0].end_ms, Some(18_400));
    }

    #[test]
    fn after_a_router_restart_an_outage_counts_from_the_host_report_or_detection() {
        let mut s = VmSla {
            witness: Some(copy("h1", 10)),
            first_running_ms: Some(1),
            ..Default::default()
        };
        let off = Whereabouts::ProvenOff {
            cause: "host h1 down".into(),
            last_report_ms: Some(5_000),
        };
        s.observe(&absent(off), 9_000);
        assert_eq!(s.incidents[0].start_ms, 5_000);
        let mut s = VmSla {
            witness: Some(copy("h1", 10)),
            first_running_ms: Some(1),
            ..Default::default()
        };
        s.observe(&absent(reporting()), 9_000);
        assert_eq!(s.incidents[0].start_ms, 9_000);
    }

    #[test]
    fn a_migration_is_not_down() {
        let mut s = VmSla::default();
        let migrating = Observation {
            migrating: true,
            ..absent(reporting())
        };
        let steps = [
            (1000, running(copy("h1", 10))),
            (2000, migrating),
            (2100, running(copy("h2", 30))),
        ];
        assert_eq!(book(&mut s, &steps), 0);
        assert_eq!(s.witness, Some(copy("h2", 30)));
    }

    #[test]
    fn history_goes_with_a_deleted_vm_and_a_recreated_one_starts_afresh() {
        let a = VmId::new("a").expect("vm id");
        let b = VmId::new("b").expect("vm id");
        let mut book = SlaBook::default();
        assert!(book.sync([(a.clone(), 1), (b.clone(), 1)].into_iter()));
        book.vms.get_mut(&a).expect("a").incidents.push(Incident {
            start_ms: 5,
            end_ms: Some(9),
            cause: "x".into(),
        });
        assert!(!book.sync([(a.clone(), 1), (b.clone(), 1)].into_iter()));
        // b deleted; a deleted and recreated under the same name.
        assert!(book.sync([(a.clone(), 100)].into_iter()));
        assert_eq!(book.vms.keys().collect::<Vec<_>>(), vec![&a]);
        assert!(book.vms[&a].incidents.is_empty());
        assert_eq!(book.vms[&a].created_ms, 100);
    }
}
