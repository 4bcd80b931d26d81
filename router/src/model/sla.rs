//! Per-VM availability accounting against the 99.95 % SLA target.
//!
//! An incident opens when a VM that should run (desired running, and it ran at least
//! once) is known not to run, and closes when it runs again. "Known": a VM on a host
//! that is merely unreachable is not counted yet (it may be running behind a crashed
//! genie); once the host is proven off, the incident is backdated to the host's last
//! report, so a failover's whole outage is counted. Planned stops are not downtime.
//!
//! The book is kept by the store (`state_dir/sla.json` on disk) and handed to it only
//! when an incident opens or closes; the write happens off the cluster task.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tokio::time::Instant;
use tracing::error;
use wisp_common::time::unix_ms;
use wisp_common::VmId;

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

/// The incidents of every VM: what the store keeps as the SLA history.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SlaBook {
    pub vms: BTreeMap<VmId, VmSla>,
}

impl Model {
    /// Opens and closes incidents from the current view (called every tick).
    pub fn account_sla(&mut self, now: Instant) {
        let now_ms = unix_ms();
        let mut changed = false;
        let mut notes = Vec::new();
        let ids: Vec<VmId> = self.persisted.vms.keys().cloned().collect();
        for vm in ids {
            let rec = &self.persisted.vms[&vm];
            let seen = self.observed(&vm);
            let running = seen
                .iter()
                .any(|(_, s)| s.state == wisp_common::VmRunState::Running);
            // A live migration pauses the guest for at most its downtime limit, but
            // reports see the switch-over only at their own period: while the
            // migration is in flight, or its destination (now the placement) has not
            // yet reported `running`, no copy may say so. That is not an outage.
            let migrating = matches!(self.claims.op(&vm), Some(Op::Migrate { .. }))
                || seen.iter().any(|(h, s)| {
                    Some(h) == rec.host.as_ref() && s.state == wisp_common::VmRunState::Inmigrate
                });
            let placed = rec.host.as_ref().and_then(|h| self.cluster.hosts.get(h));
            let status = placed.map(|h| h.status());
            let last_report_ms = placed
                .and_then(|h| h.report_age(now))
                .map(|a| now_ms.saturating_sub(a.as_millis() as u64));
            let desired = rec.desired;
            let created = rec.created_at_ms;
            let e = self.sla.vms.entry(vm.clone()).or_insert_with(|| VmSla {
                created_ms: created,
                ..Default::default()
            });
            let open = e.incidents.last().is_some_and(|i| i.end_ms.is_none());
            if running || desired == Desired::Stopped {
                if running && e.first_running_ms.is_none() {
                    e.first_running_ms = Some(now_ms);
                    changed = true;
                }
                if open {
                    let i = e.incidents.last_mut().expect("open incident");
                    i.end_ms = Some(now_ms);
                    changed = true;
                    if running {
                        notes.push((
                            vm.clone(),
                            format!(
                                "{vm} running again after {:.1} s of downtime",
                                (now_ms - i.start_ms) as f64 / 1000.0
                            ),
                        ));
                    }
                }
                continue;
            }
            if open || e.first_running_ms.is_none() || migrating {
                continue;
            }
            let (start, cause) = match status {
                // Maybe running behind a silent genie: not counted until proven.
                Some(HostStatus::Unreachable | HostStatus::Suspect) => continue,
                Some(s @ (HostStatus::Down | HostStatus::Fenced)) => (
                    last_report_ms.unwrap_or(now_ms).min(now_ms),
                    format!(
                        "host {} {}",
                        rec.host.as_ref().map(|h| h.as_str()).unwrap_or("-"),
                        s.as_str()
                    ),
                ),
                Some(s) => (now_ms, format!("not running (host {})", s.as_str())),
                None => (now_ms, "not placed".to_string()),
            };
            e.incidents.push(Incident {
                start_ms: start,
                end_ms: None,
                cause: cause.clone(),
            });
            changed = true;
            notes.push((vm.clone(), format!("{vm} down: {cause}")));
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
        };
        assert_eq!(s.downtime(0, 10_000), (2000, 2));
        assert_eq!(s.downtime(2500, 10_000), (1500, 2));
        assert_eq!(s.downtime(4000, 8000), (0, 0));
        // 2 s down out of the 9 s since it first ran.
        assert!((s.availability(0, 10_000) - (1.0 - 2.0 / 9.0)).abs() < 1e-9);
        assert_eq!(VmSla::default().availability(0, 10), 1.0);
    }
}
