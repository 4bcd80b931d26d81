//! The hosts of the model: the inventory, each genie's link and what it last reported
//! (stale and reordered reports dropped), with every status change left to the host
//! state machine (`host.rs`). Pure: `now` comes in as an argument.

use std::collections::BTreeMap;
use std::time::Duration;

use tokio::time::Instant;
use wisp_common::proto::Report;
use wisp_common::HostId;

use crate::config::{HostConfig, RouterConfig};
pub use crate::model::host::{
    HostEntry, HostEvent, HostStatus, LinkEntry, OffProof, PowerKnown, Timing, Transition,
};

/// Why a report was not applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportRejected {
    UnknownHost,
    /// From a connection that has since been replaced or closed.
    StaleSession,
    /// Generation not above the last accepted one, or time going backwards.
    Stale {
        gen: u64,
        last_gen: u64,
    },
}

impl Timing {
    pub fn from_config(c: &RouterConfig) -> Self {
        Self {
            suspect_after: Duration::from_millis(c.suspect_after_ms),
            unreachable_after: Duration::from_millis(c.unreachable_after_ms),
        }
    }
}

/// A genie named a host whose link is live with another genie process: two servers
/// claim one name (a reinstalled machine with the old one's config). Taking the
/// newcomer would drop the live genie's reports (its VMs unseen, restarted elsewhere
/// while still running), so it is refused and the live one left alone.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "host {host} is taken by a live genie (instance {live:x}, heard {heard_ms} ms ago); \
     refusing genie instance {newcomer:x} under the same name"
)]
pub struct NameTaken {
    pub host: HostId,
    pub live: u64,
    pub newcomer: u64,
    pub heard_ms: u64,
}

#[derive(Debug)]
pub struct Cluster {
    pub hosts: BTreeMap<HostId, HostEntry>,
    pub timing: Timing,
}

impl Cluster {
    pub fn new(inventory: &[HostConfig], timing: Timing) -> Self {
        let hosts = inventory
            .iter()
            .map(|h| (h.name.clone(), HostEntry::new(h.clone())))
            .collect();
        Self { hosts, timing }
    }

    /// A genie authenticated: it becomes the host's link, replacing any older one of
    /// the same genie process (it reconnected) or a quiet one (not heard within
    /// `suspect_after`: a restarted or rebooted host whose old connection never
    /// closed). A different genie process while the link is live is refused
    /// ([`NameTaken`]). Returns the replaced link (to be closed) if any; `Ok(None)`
    /// for a host not in the inventory (the handshake refuses those first).
    pub fn connect(
        &mut self,
        host: &HostId,
        link: LinkEntry,
        now: Instant,
    ) -> Result<Option<LinkEntry>, NameTaken> {
        let suspect_after = self.timing.suspect_after;
        let Some(h) = self.hosts.get_mut(host) else {
            return Ok(None);
        };
        if let (Some(old), Some(age)) = (&h.link, h.report_age(now)) {
            if old.instance != link.instance && age < suspect_after {
                return Err(NameTaken {
                    host: host.clone(),
                    live: old.instance,
                    newcomer: link.instance,
                    heard_ms: age.as_millis() as u64,
                });
            }
        }
        if h.last_instance != Some(link.instance) {
            // A new genie process: its generation counter starts again.
            h.last_gen = 0;
            h.last_instance = Some(link.instance);
        }
        // A fresh link counts as a report: the genie is alive right now.
        h.last_report = Some(now);
        h.said_goodbye = false;
        Ok(h.link.replace(link))
    }

    /// The link `session` of `host` closed. True if it was the current one.
    pub fn disconnect(&mut self, host: &HostId, session: u64) -> bool {
        match self.hosts.get_mut(host) {
            Some(h) if h.link.as_ref().map(|l| l.session) == Some(session) => {
                h.link = None;
                true
            }
            _ => false,
        }
    }

    /// Applies a report if it is current; returns whether the VM list changed.
    pub fn apply_report(
        &mut self,
        host: &HostId,
        session: u64,
        report: Report,
        now: Instant,
    ) -> Result<bool, ReportRejected> {
        let h = self
            .hosts
            .get_mut(host)
            .ok_or(ReportRejected::UnknownHost)?;
        if h.link.as_ref().map(|l| l.session) != Some(session) {
            h.dropped_reports += 1;
            return Err(ReportRejected::StaleSession);
        }
        // Ordered by the generation alone (per genie instance, reset by `connect`): the
        // send time is the genie's wall clock, which steps (NTP), so a report sent
        // "earlier" after a step back is still the newest.
        if report.gen <= h.last_gen {
            h.dropped_reports += 1;
            return Err(ReportRejected::Stale {
                gen: report.gen,
                last_gen: h.last_gen,
            });
        }
        h.last_gen = report.gen;
        h.last_report = Some(now);
        h.apply(HostEvent::Reported);
        if let Some(m) = report.metrics {
            h.metrics = Some(m);
        }
        if let Some(c) = report.power {
            h.power_caps = Some(*c);
        }
        if let Some(v) = report.virt {
            h.virt = Some(*v);
        }
        let mut changed = false;
        if let Some(vms) = report.vms {
            changed = vms != h.vms;
            h.vms = vms;
            h.vms_reported = true;
        }
        Ok(changed)
    }

    /// Re-derives every host's status from report age (see `HostEvent::Liveness`).
    pub fn tick(&mut self, now: Instant) -> Vec<Transition> {
        let timing = self.timing;
        let mut out = Vec::new();
        for h in self.hosts.values_mut() {
            let age = h.report_age(now);
            out.extend(h.apply(HostEvent::Liveness { age, timing }));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events::EventKind;
    use crate::link::GenieLink;

    fn cfg(name: &str) -> HostConfig {
        HostConfig {
            name: HostId::new(name).unwrap(),
            mac: "02:00:00:00:00:01".parse().unwrap(),
            address: "10.0.0.1".parse().unwrap(),
            bmc: None,
            bmc_user: None,
            bmc_password_file: None,
            vcpus: None,
            mem_mib: None,
            wake: None,
        }
    }

    fn timing() -> Timing {
        Timing {
            suspect_after: Duration::from_millis(600),
            unreachable_after: Duration::from_millis(1000),
        }
    }

    fn link(session: u64, instance: u64) -> LinkEntry {
        LinkEntry {
            session,
            instance,
            genie_version: "t".into(),
            handle: GenieLink::detached(),
        }
    }

    fn report(gen: u64, at: u64) -> Report {
        Report {
            gen,
            sent_at_ms: at,
            metrics: None,
            vms: None,
            ..Default::default()
        }
    }

    #[test]
    fn stale_and_reordered_reports_are_dropped() {
        let h1 = HostId::new("h1").unwrap();
        let mut c = Cluster::new(&[cfg("h1")], timing());
        let t0 = Instant::now();
        c.connect(&h1, link(1, 77), t0).unwrap();
        assert!(c.apply_report(&h1, 1, report(1, 10), t0).is_ok());
        assert!(c.apply_report(&h1, 1, report(3, 30), t0).is_ok());
        assert_eq!(
            c.apply_report(&h1, 1, report(2, 20), t0),
            Err(ReportRejected::Stale {
                gen: 2,
                last_gen: 3
            })
        );
        assert_eq!(
            c.apply_report(&h1, 9, report(4, 40), t0),
            Err(ReportRejected::StaleSession)
        );
        // Same instance reconnecting keeps its generation floor.
        c.connect(&h1, link(2, 77), t0).unwrap();
        assert!(c.apply_report(&h1, 2, report(3, 50), t0).is_err());
        // A new genie instance (the old one restarted: its link closed) starts over at
        // gen 1.
        assert!(c.disconnect(&h1, 2));
        c.connect(&h1, link(3, 78), t0).unwrap();
        assert!(c.apply_report(&h1, 3, report(1, 5), t0).is_ok());
        assert_eq!(
            c.apply_report(&h1, 1, report(99, 99), t0),
            Err(ReportRejected::StaleSession)
        );
        let unknown = HostId::new("zz").unwrap();
        assert_eq!(
            c.apply_report(&unknown, 1, report(1, 1), t0),
            Err(ReportRejected::UnknownHost)
        );
    }

    #[test]
    fn status_follows_report_age_and_link() {
        let h1 = HostId::new("h1").unwrap();
        let mut c = Cluster::new(&[cfg("h1")], timing());
        let t0 = Instant::now();
        assert!(c.tick(t0).is_empty(), "starts unreachable, no event");
        c.connect(&h1, link(1, 1), t0).unwrap();
        let tr = c.tick(t0);
        assert_eq!(tr[0].kind, EventKind::HostUp);
        assert!(c.tick(t0 + Duration::from_millis(500)).is_empty());
        assert_eq!(
            c.tick(t0 + Duration::from_millis(700))[0].kind,
            EventKind::HostSuspect
        );
        c.apply_report(&h1, 1, report(1, 1), t0 + Duration::from_millis(800))
            .unwrap();
        assert_eq!(
            c.tick(t0 + Duration::from_millis(800))[0].kind,
            EventKind::HostUp
        );
        assert_eq!(
            c.tick(t0 + Duration::from_millis(1900))[0].kind,
            EventKind::HostUnreachable
        );
        // A closed link is unreachable at once, without waiting for the age.
        c.apply_report(&h1, 1, report(2, 2), t0 + Duration::from_millis(2000))
            .unwrap();
        c.tick(t0 + Duration::from_millis(2000));
        assert!(c.disconnect(&h1, 1));
        let tr = c.tick(t0 + Duration::from_millis(2001));
        assert_eq!(tr[0].kind, EventKind::HostUnreachable);
        assert!(tr[0].message.contains("link closed"), "{}", tr[0].message);
    }

    #[test]
    fn a_second_genie_under_a_live_hosts_name_is_refused_and_the_live_one_kept() {
        let h1 = HostId::new("h1").unwrap();
        let mut c = Cluster::new(&[cfg("h1")], timing());
        let t0 = Instant::now();
        c.connect(&h1, link(1, 77), t0).unwrap();
        let t1 = t0 + Duration::from_millis(300);
        c.apply_report(&h1, 1, report(1, 1), t1).unwrap();
        // Another genie process claims h1 while h1's genie is heard: refused.
        let t2 = t1 + Duration::from_millis(200);
        let e = c.connect(&h1, link(2, 99), t2).unwrap_err();
        assert_eq!(
            e,
            NameTaken {
                host: h1.clone(),
                live: 77,
                newcomer: 99,
                heard_ms: 200
            }
        );
        assert!(e.to_string().contains("taken by a live genie"), "{e}");
        // The live link is untouched: its reports still apply.
        assert_eq!(c.hosts[&h1].link.as_ref().unwrap().session, 1);
        c.apply_report(&h1, 1, report(2, 2), t2).unwrap();
        // The live genie itself reconnecting (same instance) replaces its link.
        let old = c.connect(&h1, link(3, 77), t2).unwrap().unwrap();
        assert_eq!(old.session, 1);
        // Once h1 is quiet past suspect_after (a rebooted host whose old connection
        // never closed), a new genie process is taken.
        let t3 = t2 + Duration::from_millis(700);
        let old = c.connect(&h1, link(4, 99), t3).unwrap().unwrap();
        assert_eq!(old.session, 3);
        c.apply_report(&h1, 4, report(1, 3), t3).unwrap();
    }
}
