//! The fence reconciler: turns "this host went silent" into a proof that it is off,
//! because no VM may be restarted elsewhere while it might still run (never run a VM
//! twice).
//!
//! For every suspect or unreachable host:
//! - its BMC says chassis power off → the host is `down` (proven off);
//! - its BMC says on, the host is unreachable and has VMs → power it off over IPMI,
//!   verify off, mark `fenced`. How it went quiet decides when: a genie that closed
//!   its link itself may be restarting, so it gets `genie_grace_ms` to come back; a
//!   host that went silent (link left open, or closed by us) is cut off or hung, and is
//!   fenced as soon as it is unreachable;
//! - its BMC does not answer (or it has none) → the only proof left is the genie's
//!   self-fence lease: once `lease_ms + lease_margin_ms` have passed since its last
//!   report, its genie has killed its VMs, so the host counts as `fenced`; before
//!   that, and always when the lease is disabled, nothing happens and a loud
//!   `fence_refused` event says what proof is missing. With replicated routers and
//!   genies that keep a liveness lease in etcd, the proof is instead that the genie's
//!   etcd key has been gone for `lease_margin_ms` ([`super::liveness`]).
//!
//! The router suspects itself first: when more than half of the hosts that should be
//! up vanish together, the likely fault is the router's own network, so it fences
//! nobody (a BMC's "off" is still accepted: that is a proof, not an action). Hosts cut
//! off at one instant fall silent with their last reports up to a heartbeat apart, so
//! when one is already unreachable, a host silent for nearly as long counts as
//! vanished with it. Once the suspicion is over, a host still silent gets the time a
//! cut-off genie needs to reconnect before it is powered off.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use wisp_bmc::{Bmc, PowerAction, PowerState};
use wisp_common::error::chain;
use wisp_common::wait::until;
use wisp_common::HostId;

use super::commands::{ApplyVerdict, FenceWork};
use crate::cluster::{ClusterHandle, Model};
use crate::events::EventKind;
use crate::model::host::{HostEvent, HostStatus, OffProof, PowerKnown};
use crate::power::PowerPlane;
use crate::store::Desired;

/// How often silent hosts are looked at: a tenth of the 1 s detection target.
pub const INTERVAL: Duration = Duration::from_millis(100);

/// A silent host's BMC is asked again at most this often (a status call costs a few
/// ms; this bounds the load when many hosts are silent for long).
pub const BMC_RECHECK: Duration = Duration::from_millis(500);

/// How long a chassis may take to report off after we powered it off.
pub const POWER_OFF_VERIFY: Duration = Duration::from_secs(10);

/// How often the BMC is asked whether a host we powered off is off yet.
const POWER_OFF_POLL: Duration = Duration::from_millis(100);

/// With fewer hosts than this, "most hosts vanished" says nothing about the router.
pub const SELF_SUSPICION_MIN_HOSTS: usize = 3;

/// Timing rules, from the config.
#[derive(Debug, Clone)]
pub struct FenceRules {
    pub genie_grace: Duration,
    /// Zero when self-fencing is disabled.
    pub lease: Duration,
    pub lease_margin: Duration,
    /// The genies' etcd leases (replicated routers); when given, they replace the
    /// router-granted lease as the proof without a BMC.
    pub liveness: Option<super::liveness::GenieLiveness>,
}

/// A host to look at.
#[derive(Debug, Clone)]
pub struct Work {
    pub host: HostId,
    pub status: HostStatus,
    pub since_report: Duration,
    pub has_vms: bool,
    /// False while the router suspects itself.
    pub may_fence: bool,
    /// The host gets the genie grace before it is powered off: its genie closed its
    /// link itself (it may be restarting), or its silence began in the router's own
    /// network fault. A host that went silent on its own (link left open, or closed by
    /// us) gets none: a cut or hung host is fenced at once.
    pub grace: bool,
    /// Silent because of the router (its own network fault, or its restart): the grace
    /// is at least the time a cut-off genie needs to reconnect
    /// ([`wisp_common::proto::GENIE_RECONNECT_WITHIN`]).
    pub silent_by_router: bool,
}

/// The verdict on one host, applied in the cluster task.
#[derive(Debug, Clone, PartialEq)]
pub enum Verdict {
    /// BMC reports chassis power off.
    Off,
    /// We powered it off and the BMC confirms.
    Fenced { after_ms: u64 },
    /// Lease expired and no BMC answer: its genie has killed its VMs.
    LeaseExpired { silent_ms: u64, bmc_error: String },
    /// Powered on; nothing to do yet (grace period, or no VMs).
    OnWaiting,
    /// No proof available now; the reason says what is missing.
    NoProof { reason: String },
}

impl Model {
    /// Hosts needing a verdict. Also raises (once) the router's self-suspicion.
    pub fn fence_work(&mut self, now: Instant) -> Vec<Work> {
        let expected: Vec<_> = self
            .cluster
            .hosts
            .values()
            .filter(|h| {
                matches!(
                    h.status(),
                    HostStatus::Up | HostStatus::Suspect | HostStatus::Unreachable
                )
            })
            .collect();
        // Reports of hosts cut off together stop up to a heartbeat apart: the first may
        // turn unreachable before the others are even suspect. So while some host is
        // unreachable (about to be fenced), a host silent for a heartbeat less than
        // the suspect threshold counts as vanished too. A healthy host is never silent
        // much over one heartbeat; when the threshold leaves no room above that, only
        // statuses count.
        let (hb, suspect_after) = (self.config.heartbeat_ms, self.config.suspect_after_ms);
        let quiet_after =
            (suspect_after > 2 * hb).then(|| Duration::from_millis(suspect_after - hb));
        let about_to_fence = expected
            .iter()
            .any(|h| h.status() == HostStatus::Unreachable && h.last_report.is_some());
        let gone = |h: &&&crate::model::host::HostEntry| {
            h.status() != HostStatus::Up
                || (about_to_fence
                    && quiet_after.is_some_and(|q| h.report_age(now).is_some_and(|a| a >= q)))
        };
        let vanished = expected.iter().filter(gone).count();
        // Hosts that never reported since the router started do not count as vanished:
        // at start-up every host is unreachable until its genie connects.
        let vanished_after_report = expected
            .iter()
            .filter(gone)
            .filter(|h| h.last_report.is_some())
            .count();
        let suspect_self = expected.len() >= SELF_SUSPICION_MIN_HOSTS
            && vanished_after_report * 2 > expected.len();
        if suspect_self && !self.self_suspect {
            self.event(
                EventKind::FenceRefused,
                None,
                None,
                format!(
                    "{vanished} of {} hosts vanished at once: the router's own network is the likely fault; fencing nobody until they come back",
                    expected.len()
                ),
            );
        } else if !suspect_self && self.self_suspect {
            self.event(
                EventKind::HostUp,
                None,
                None,
                "most hosts are back: fencing is allowed again".into(),
            );
        }
        self.self_suspect = suspect_self;
        let placed: HashSet<HostId> = self
            .persisted
            .vms
            .values()
            .filter(|r| r.desired == Desired::Running)
            .filter_map(|r| r.host.clone())
            .collect();
        self.cluster
            .hosts
            .values()
            .filter(|h| matches!(h.status(), HostStatus::Suspect | HostStatus::Unreachable))
            .filter(|h| h.last_report.is_some() || h.power() != PowerKnown::Off)
            // A host being put to sleep goes silent on purpose: the flag is stored
            // before the suspend is sent.
            .filter(|h| {
                !self
                    .persisted
                    .hosts
                    .get(&h.cfg.name)
                    .is_some_and(|r| r.standby || r.maintenance)
            })
            .map(|h| Work {
                host: h.cfg.name.clone(),
                status: h.status(),
                // Never heard since this router started: its genie has been without a
                // router at least that long (the previous one was gone by then). Not
                // "forever": a BMC that does not answer right after a router restart
                // must not look like an expired lease.
                since_report: h
                    .report_age(now)
                    .unwrap_or_else(|| now.saturating_duration_since(self.started)),
                has_vms: placed.contains(&h.cfg.name) || !h.vms.is_empty(),
                may_fence: !suspect_self,
                // A genie that said goodbye may be restarting; one never heard since
                // this router started was silent because the router was away (a
                // restart, an upgrade): both get the grace to reconnect.
                grace: (h.link.is_none() && h.said_goodbye) || h.last_report.is_none(),
                silent_by_router: h.last_report.is_none(),
            })
            .collect()
    }

    /// Applies a verdict if the host is still silent (the state machine ignores a
    /// proof for a host that came back meanwhile).
    pub fn apply_verdict(&mut self, host: &HostId, v: &Verdict) {
        let started = self.started;
        let Some(h) = self.cluster.hosts.get(host) else {
            return;
        };
        let proof = match v {
            Verdict::Off => OffProof::BmcOff,
            Verdict::Fenced { after_ms } => OffProof::PoweredOff {
                after_ms: *after_ms,
            },
            Verdict::LeaseExpired {
                silent_ms,
                bmc_error,
            } => {
                // The host may have reported while its BMC was being asked: the lease
                // proof holds only if it has really been silent that long.
                let now = Instant::now();
                let silent = h
                    .report_age(now)
                    .unwrap_or_else(|| now.saturating_duration_since(started));
                if silent < Duration::from_millis(*silent_ms) {
                    return;
                }
                OffProof::LeaseExpired {
                    silent_ms: *silent_ms,
                    bmc_error: bmc_error.clone(),
                }
            }
            Verdict::OnWaiting => {
                self.host_event(host, HostEvent::SeenOn);
                return;
            }
            Verdict::NoProof { reason } => {
                if matches!(h.status(), HostStatus::Suspect | HostStatus::Unreachable) {
                    let msg = format!(
                        "no proof that host {host} is off, so its VMs are NOT restarted: {reason}"
                    );
                    self.event(EventKind::FenceRefused, Some(host.clone()), None, msg);
                }
                return;
            }
        };
        self.host_event(host, HostEvent::ProvenOff(proof));
    }
}

/// Decides the verdict for one host (the BMC calls happen here, off the cluster task).
pub async fn judge(w: &Work, bmc: Option<Arc<dyn Bmc>>, rules: FenceRules) -> Verdict {
    let t_judge = Instant::now();
    let lease_verdict = |bmc_error: String| {
        // The silence went on while the BMC did not answer (a timeout takes seconds):
        // judge the lease on the silence now, not when the work was listed, or every
        // dead BMC would add one timeout to the failover.
        let since_report = w.since_report.saturating_add(t_judge.elapsed());
        if !w.may_fence || !w.has_vms {
            return Verdict::NoProof {
                reason: format!("BMC: {bmc_error}"),
            };
        }
        if let Some(l) = &rules.liveness {
            return match l.gone_for(&w.host) {
                // The key vanished while the host still reported: that key was not
                // this genie's (another process claimed the name and put its own,
                // which then expired), and this genie has not self-fenced.
                Some(gone) if gone > since_report => Verdict::NoProof {
                    reason: format!(
                        "BMC: {bmc_error}; its etcd lease key went missing {} ms ago, before the host fell silent {} ms ago: it was not this genie's lease, so it proves nothing",
                        gone.as_millis(),
                        since_report.as_millis()
                    ),
                },
                Some(gone) if gone >= rules.lease_margin => Verdict::LeaseExpired {
                    silent_ms: since_report.as_millis() as u64,
                    bmc_error: format!(
                        "{bmc_error}; its genie's etcd lease expired {} ms ago",
                        gone.as_millis()
                    ),
                },
                Some(gone) => Verdict::NoProof {
                    reason: format!(
                        "BMC: {bmc_error}; its genie's etcd lease expired {} ms ago, waiting {} ms for its self-fence",
                        gone.as_millis(),
                        rules.lease_margin.as_millis()
                    ),
                },
                None => Verdict::NoProof {
                    reason: format!(
                        "BMC: {bmc_error}; its genie's etcd lease has not expired (or was never seen), so its VMs may still run"
                    ),
                },
            };
        }
        if rules.lease.is_zero() {
            return Verdict::NoProof {
                reason: format!("BMC: {bmc_error}; self-fencing is disabled (lease_ms = 0), so only a BMC answer can prove it off"),
            };
        }
        let needed = rules.lease + rules.lease_margin;
        if since_report >= needed {
            Verdict::LeaseExpired {
                silent_ms: since_report.as_millis() as u64,
                bmc_error,
            }
        } else {
            Verdict::NoProof {
                reason: format!(
                    "BMC: {bmc_error}; waiting for its self-fence lease to expire ({} ms of {} ms)",
                    since_report.as_millis(),
                    needed.as_millis()
                ),
            }
        }
    };
    let Some(bmc) = bmc else {
        return lease_verdict("none configured".into());
    };
    match bmc.power_status().await {
        Ok(PowerState::Off) => Verdict::Off,
        Err(e) => lease_verdict(chain(&e)),
        Ok(PowerState::On) => {
            let grace = if w.silent_by_router {
                rules
                    .genie_grace
                    .max(wisp_common::proto::GENIE_RECONNECT_WITHIN)
            } else if w.grace {
                rules.genie_grace
            } else {
                Duration::ZERO
            };
            if !w.may_fence
                || !w.has_vms
                || w.status != HostStatus::Unreachable
                || w.since_report < grace
            {
                return Verdict::OnWaiting;
            }
            let t0 = Instant::now();
            if let Err(e) = bmc.power(PowerAction::Off).await {
                return Verdict::NoProof {
                    reason: format!("power-off over IPMI failed: {}", chain(&e)),
                };
            }
            // Only the BMC's "off" proves it; an error or "on" is asked again.
            let off = until(
                t0 + POWER_OFF_VERIFY,
                POWER_OFF_POLL,
                format!("the BMC of {} to report off", w.host),
                || async { matches!(bmc.power_status().await, Ok(PowerState::Off)).then_some(()) },
            )
            .await;
            match off {
                Ok(()) => Verdict::Fenced {
                    after_ms: t0.elapsed().as_millis() as u64,
                },
                Err(_) => Verdict::NoProof {
                    reason: format!(
                        "powered off over IPMI but the BMC did not report off within {} s",
                        POWER_OFF_VERIFY.as_secs()
                    ),
                },
            }
        }
    }
}

/// Counts a host's silence from the end of the router's last self-suspicion at the
/// earliest (see `run`), and records `now` as suspected if any work says so.
pub fn silence_since_suspicion(
    mut work: Vec<Work>,
    suspected_at: &mut Option<Instant>,
    now: Instant,
) -> Vec<Work> {
    if work.iter().any(|w| !w.may_fence) {
        *suspected_at = Some(now);
    }
    if let Some(t) = *suspected_at {
        for w in &mut work {
            let since = now.duration_since(t);
            if since < w.since_report {
                // Silent because of the router: a fresh grace, however it went quiet,
                // long enough for a genie cut off all that time to reconnect.
                w.since_report = since;
                w.grace = true;
                w.silent_by_router = true;
            }
        }
    }
    work
}

/// Runs the fence reconciler until `shutdown`.
pub async fn run(
    c: ClusterHandle,
    power: Arc<PowerPlane>,
    rules: FenceRules,
    mut shutdown: watch::Receiver<bool>,
) {
    let mut tick = tokio::time::interval(INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_flight: HashSet<HostId> = HashSet::new();
    let mut last_check: std::collections::HashMap<HostId, Instant> = Default::default();
    // "No proof" is said once per host per silence, not ten times a second.
    let mut warned: HashSet<HostId> = HashSet::new();
    let (done_tx, mut done_rx) = mpsc::channel::<HostId>(64);
    // When the router last suspected itself. A host silent through that suspicion was
    // silent because of the router's own network: once it is over, every host gets a
    // fresh grace (and lease) period to report, or a host whose genie reconnects a
    // little later than the others would be powered off at once.
    let mut suspected_at: Option<Instant> = None;
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            Some(h) = done_rx.recv() => { in_flight.remove(&h); continue; }
            _ = tick.tick() => {}
        }
        let Some(work) = c.run(FenceWork).await else {
            return;
        };
        let silent: HashSet<HostId> = work.iter().map(|w| w.host.clone()).collect();
        warned.retain(|h| silent.contains(h));
        let now = Instant::now();
        let work = silence_since_suspicion(work, &mut suspected_at, now);
        for w in work {
            if in_flight.contains(&w.host)
                || last_check
                    .get(&w.host)
                    .is_some_and(|t| now.duration_since(*t) < BMC_RECHECK)
            {
                continue;
            }
            last_check.insert(w.host.clone(), now);
            in_flight.insert(w.host.clone());
            let first_warning = !warned.contains(&w.host);
            let (c, bmc, done) = (c.clone(), power.bmc(&w.host), done_tx.clone());
            let host = w.host.clone();
            let host_for_mark = w.host.clone();
            let rules = rules.clone();
            tokio::spawn(async move {
                let v = judge(&w, bmc, rules).await;
                if first_warning || !matches!(v, Verdict::NoProof { .. }) {
                    c.run(ApplyVerdict {
                        host: host.clone(),
                        verdict: v,
                    })
                    .await;
                }
                let _ = done.send(host).await;
            });
            if first_warning {
                // Marked now; a host that gets another verdict leaves the silent set
                // and the mark is dropped with it.
                warned.insert(host_for_mark);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use wisp_bmc::{FakeBmc, FakeBmcFault};

    fn rules() -> FenceRules {
        FenceRules {
            genie_grace: Duration::from_secs(5),
            lease: Duration::from_secs(3),
            lease_margin: Duration::from_secs(1),
            liveness: None,
        }
    }

    fn work(status: HostStatus, silent_ms: u64, has_vms: bool, may_fence: bool) -> Work {
        Work {
            host: HostId::new("h1").unwrap(),
            status,
            since_report: Duration::from_millis(silent_ms),
            has_vms,
            may_fence,
            grace: false,
            silent_by_router: false,
        }
    }

    fn fake(p: PowerState) -> Arc<FakeBmc> {
        Arc::new(
            FakeBmc::new("127.0.0.1:623".parse().unwrap(), p)
                .with_timeout(Duration::from_millis(200)),
        )
    }

    #[tokio::test]
    async fn silence_through_a_self_suspicion_does_not_count_against_a_host() {
        let mut at = None;
        let t0 = Instant::now();
        // Suspected: every host silent for long, but nobody may be fenced.
        let w = silence_since_suspicion(
            vec![work(HostStatus::Unreachable, 20_000, true, false)],
            &mut at,
            t0,
        );
        assert_eq!(w[0].since_report, Duration::ZERO);
        // Suspicion over 2 s ago: a host still silent has been silent 2 s as far as
        // its grace goes, not the 22 s since its last report.
        let w = silence_since_suspicion(
            vec![work(HostStatus::Unreachable, 22_000, true, true)],
            &mut at,
            t0 + Duration::from_secs(2),
        );
        assert_eq!(w[0].since_report, Duration::from_secs(2));
        assert!(
            matches!(
                judge(&w[0], Some(fake(PowerState::On)), rules()).await,
                Verdict::OnWaiting
            ),
            "inside the fresh grace"
        );
        // Past the genie grace (5 s) but not past the time a genie cut off all along
        // needs to reconnect (a connect attempt timing out, then its backoff): waiting.
        let reconnect = wisp_common::proto::GENIE_RECONNECT_WITHIN;
        assert!(reconnect > rules().genie_grace, "{reconnect:?}");
        let w = silence_since_suspicion(
            vec![work(HostStatus::Unreachable, 30_000, true, true)],
            &mut at,
            t0 + rules().genie_grace + Duration::from_millis(500),
        );
        assert!(w[0].silent_by_router);
        assert!(
            matches!(
                judge(&w[0], Some(fake(PowerState::On)), rules()).await,
                Verdict::OnWaiting
            ),
            "a genie cut off by the router's fault may still be reconnecting"
        );
        let w = silence_since_suspicion(
            vec![work(HostStatus::Unreachable, 40_000, true, true)],
            &mut at,
            t0 + reconnect + Duration::from_millis(100),
        );
        assert!(
            matches!(
                judge(&w[0], Some(fake(PowerState::On)), rules()).await,
                Verdict::Fenced { .. }
            ),
            "silent past that: fenced"
        );
        // Without a suspicion, silence counts from the report.
        let mut never = None;
        let w = silence_since_suspicion(
            vec![work(HostStatus::Unreachable, 7_000, true, true)],
            &mut never,
            Instant::now(),
        );
        assert_eq!(w[0].since_report, Duration::from_secs(7));
    }

    #[tokio::test]
    async fn bmc_off_is_proof_even_while_the_router_suspects_itself() {
        let b = fake(PowerState::Off);
        let v = judge(
            &work(HostStatus::Suspect, 100, true, false),
            Some(b.clone()),
            rules(),
        )
        .await;
        assert_eq!(v, Verdict::Off);
        assert!(b.actions().is_empty(), "a proof needs no action");
    }

    #[tokio::test]
    async fn powered_on_host_is_fenced_only_after_the_genie_grace() {
        let b = fake(PowerState::On);
        let mut w = work(HostStatus::Unreachable, 1000, true, true);
        w.grace = true;
        assert_eq!(
            judge(&w, Some(b.clone()), rules()).await,
            Verdict::OnWaiting
        );
        assert!(b.actions().is_empty());
        w.since_report = Duration::from_millis(6000);
        assert!(matches!(
            judge(&w, Some(b.clone()), rules()).await,
            Verdict::Fenced { .. }
        ));
        assert_eq!(b.actions(), vec![PowerAction::Off]);
    }

    /// A host that went silent without closing its link (a cut cable, a hang) is
    /// powered off as soon as it is unreachable: no grace for a restart it is not
    /// doing.
    #[tokio::test]
    async fn a_silent_host_is_fenced_without_the_genie_grace() {
        let b = fake(PowerState::On);
        let w = work(HostStatus::Unreachable, 700, true, true);
        assert!(!w.grace);
        assert!(matches!(
            judge(&w, Some(b.clone()), rules()).await,
            Verdict::Fenced { .. }
        ));
        assert_eq!(b.actions(), vec![PowerAction::Off]);
        // Still only suspect: not yet.
        let b = fake(PowerState::On);
        let w = work(HostStatus::Suspect, 700, true, true);
        assert_eq!(
            judge(&w, Some(b.clone()), rules()).await,
            Verdict::OnWaiting
        );
        assert!(b.actions().is_empty());
    }

    #[tokio::test]
    async fn nobody_is_powered_off_without_vms_or_under_self_suspicion() {
        let b = fake(PowerState::On);
        for w in [
            work(HostStatus::Unreachable, 60_000, false, true),
            work(HostStatus::Unreachable, 60_000, true, false),
            work(HostStatus::Suspect, 60_000, true, true),
        ] {
            assert_eq!(
                judge(&w, Some(b.clone()), rules()).await,
                Verdict::OnWaiting,
                "{w:?}"
            );
        }
        assert!(b.actions().is_empty());
    }

    #[tokio::test]
    async fn dead_bmc_means_waiting_for_the_lease_and_saying_why() {
        let b = fake(PowerState::On);
        b.set_fault(FakeBmcFault::Silent);
        let v = judge(
            &work(HostStatus::Unreachable, 2000, true, true),
            Some(b.clone()),
            rules(),
        )
        .await;
        match v {
            Verdict::NoProof { reason } => assert!(
                reason.contains("lease") && reason.contains("127.0.0.1:623"),
                "{reason}"
            ),
            other => panic!("{other:?}"),
        }
        let v = judge(
            &work(HostStatus::Unreachable, 4500, true, true),
            Some(b.clone()),
            rules(),
        )
        .await;
        // The silence is judged when the BMC gave up (after its 200 ms timeout).
        assert!(
            matches!(v, Verdict::LeaseExpired { silent_ms, .. } if silent_ms >= 4700),
            "{v:?}"
        );
        // The lease proves nothing when the router itself is suspect.
        let v = judge(
            &work(HostStatus::Unreachable, 60_000, true, false),
            Some(b.clone()),
            rules(),
        )
        .await;
        assert!(matches!(v, Verdict::NoProof { .. }), "{v:?}");
        // Self-fencing disabled: no proof ever without the BMC.
        let no_lease = FenceRules {
            lease: Duration::ZERO,
            ..rules()
        };
        let v = judge(
            &work(HostStatus::Unreachable, 600_000, true, true),
            None,
            no_lease,
        )
        .await;
        match v {
            Verdict::NoProof { reason } => assert!(reason.contains("disabled"), "{reason}"),
            other => panic!("{other:?}"),
        }
        assert!(b.actions().is_empty());
    }

    #[tokio::test]
    async fn with_genie_leases_in_etcd_only_a_key_gone_for_the_margin_is_proof() {
        let l = crate::ha::liveness::GenieLiveness::manual();
        let etcd = FenceRules {
            lease: Duration::ZERO,
            lease_margin: Duration::from_millis(200),
            liveness: Some(l.clone()),
            ..rules()
        };
        let w = work(HostStatus::Unreachable, 600_000, true, true);
        let judged = || judge(&w, None, etcd.clone());
        let seen = |hosts: &[&str]| Some(hosts.iter().map(|h| h.to_string()).collect());
        // Never seen (a genie without etcd): however long the silence, no proof.
        l.observe(seen(&[]));
        assert!(matches!(judged().await, Verdict::NoProof { .. }));
        // Seen, still there: no proof.
        l.observe(seen(&["h1"]));
        match judged().await {
            Verdict::NoProof { reason } => assert!(reason.contains("has not expired"), "{reason}"),
            other => panic!("{other:?}"),
        }
        // Gone, but not for the margin yet.
        l.observe(seen(&[]));
        match judged().await {
            Verdict::NoProof { reason } => assert!(reason.contains("waiting"), "{reason}"),
            other => panic!("{other:?}"),
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(matches!(judged().await, Verdict::LeaseExpired { .. }));
        // etcd unreadable: the proof is withdrawn.
        l.observe(None);
        assert!(matches!(judged().await, Verdict::NoProof { .. }));
    }

    #[tokio::test]
    async fn a_key_gone_before_the_host_fell_silent_proves_nothing() {
        // A second genie under h1's name put h1's key on its own lease, then left:
        // the key expired while h1's genie still reported (and kept its VMs).
        let l = crate::ha::liveness::GenieLiveness::manual();
        let etcd = FenceRules {
            lease: Duration::ZERO,
            lease_margin: Duration::from_millis(200),
            liveness: Some(l.clone()),
            ..rules()
        };
        l.observe(Some(["h1".to_string()].into()));
        l.observe(Some(Default::default()));
        tokio::time::sleep(Duration::from_millis(450)).await;
        // h1 went silent 300 ms ago, after its key had gone: no proof.
        let w = work(HostStatus::Unreachable, 300, true, true);
        match judge(&w, None, etcd.clone()).await {
            Verdict::NoProof { reason } => {
                assert!(reason.contains("not this genie's lease"), "{reason}")
            }
            other => panic!("{other:?}"),
        }
        // Silent for longer than the key has been gone: the usual proof.
        let w = work(HostStatus::Unreachable, 600_000, true, true);
        assert!(matches!(
            judge(&w, None, etcd).await,
            Verdict::LeaseExpired { .. }
        ));
    }
}

#[cfg(test)]
mod restart_tests {
    #![allow(clippy::unwrap_used)]
    use wisp_common::{HostId, VmId, VmSpec};

    use crate::cluster::Model;
    use crate::model::host::HostStatus;
    use crate::store::{Desired, PersistedState, VmRecord};

    /// Three hosts cut off from the router at one instant, their last reports up to a
    /// heartbeat apart (200 ms here, suspect after 600, unreachable after 700): when
    /// the first turns unreachable the others are not even suspect yet. They count as
    /// vanished with it, so the router suspects itself and fences nobody. One host
    /// silent while the others report is fenced as before.
    #[tokio::test]
    async fn hosts_falling_silent_a_heartbeat_apart_vanish_together() {
        use crate::link::GenieLink;
        use crate::model::host::{HostEvent, LinkEntry};
        let mut text = String::from(
            "listen = \"127.0.0.1:0\"\nstate_dir = \"/nonexistent\"\nsecret_file = \"/nonexistent\"\n\
             heartbeat_ms = 200\nsuspect_after_ms = 600\nunreachable_after_ms = 700\n",
        );
        let mut persisted = PersistedState::empty();
        for i in 1..=3 {
            text += &format!(
                "[[host]]\nname = \"h{i}\"\nmac = \"02:00:00:00:00:0{i}\"\naddress = \"10.0.0.{i}\"\n"
            );
            let vm = VmId::new(format!("vm{i}")).unwrap();
            persisted.vms.insert(
                vm.clone(),
                VmRecord {
                    spec: VmSpec::new(vm, 1, 64),
                    desired: Desired::Running,
                    host: Some(HostId::new(format!("h{i}")).unwrap()),
                    epoch: i,
                    created_at_ms: 0,
                    migrating: None,
                },
            );
        }
        let mut m = Model::for_test(&text, persisted);
        let t0 = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        // Each host up, then last heard `age` ms before `t0`.
        let silent_for = |m: &mut Model, ages: [u64; 3]| {
            for (i, age) in ages.into_iter().enumerate() {
                let timing = m.cluster.timing;
                let e = m
                    .cluster
                    .hosts
                    .get_mut(&HostId::new(format!("h{}", i + 1)).unwrap())
                    .unwrap();
                e.link = Some(LinkEntry {
                    session: 1,
                    instance: 1,
                    genie_version: "test".into(),
                    handle: GenieLink::detached(),
                });
                e.last_report = Some(t0 - std::time::Duration::from_millis(age));
                e.apply(HostEvent::Liveness {
                    age: Some(std::time::Duration::ZERO),
                    timing,
                });
            }
            m.tick(t0);
            let statuses: Vec<HostStatus> = m.cluster.hosts.values().map(|h| h.status()).collect();
            (statuses, m.fence_work(t0))
        };
        let (statuses, work) = silent_for(&mut m, [750, 560, 520]);
        assert_eq!(
            statuses,
            [HostStatus::Unreachable, HostStatus::Up, HostStatus::Up],
            "the staggered moment this test is about"
        );
        assert_eq!(work.len(), 1, "{work:?}");
        assert!(!work[0].may_fence, "h2 and h3 went quiet with h1: {work:?}");
        assert!(m.self_suspect);

        // The others report: h1 alone is silent, and may be fenced.
        let (statuses, work) = silent_for(&mut m, [900, 150, 80]);
        assert_eq!(
            statuses,
            [HostStatus::Unreachable, HostStatus::Up, HostStatus::Up]
        );
        assert!(work[0].may_fence, "{work:?}");
        assert!(!m.self_suspect);
    }

    /// Right after a router (re)start no genie has reported yet: every host with VMs
    /// is unreachable, and its silence is the router's. Each must get the genie grace,
    /// or a router restart would power off every host (the BMC says "on", the host is
    /// unreachable, it has VMs). A host that went silent while this router ran does
    /// not get it.
    #[tokio::test]
    async fn hosts_not_heard_since_a_router_start_get_the_genie_grace() {
        let text = "listen = \"127.0.0.1:0\"\nstate_dir = \"/nonexistent\"\nsecret_file = \"/nonexistent\"\n\
                    [[host]]\nname = \"h1\"\nmac = \"02:00:00:00:00:01\"\naddress = \"10.0.0.1\"\n";
        let mut persisted = PersistedState::empty();
        let vm = VmId::new("vm1").unwrap();
        persisted.vms.insert(
            vm.clone(),
            VmRecord {
                spec: VmSpec::new(vm, 1, 64),
                desired: Desired::Running,
                host: Some(HostId::new("h1").unwrap()),
                epoch: 1,
                created_at_ms: 0,
                migrating: None,
            },
        );
        let mut m = Model::for_test(text, persisted);
        let later = tokio::time::Instant::now() + std::time::Duration::from_secs(2);
        m.tick(later);
        let work = m.fence_work(later);
        assert_eq!(work.len(), 1, "{work:?}");
        assert_eq!(work[0].status, HostStatus::Unreachable);
        assert!(work[0].has_vms);
        assert!(
            work[0].grace,
            "never heard since the router started: {work:?}"
        );
    }
}
