//! Wake drills: in energy mode, a host asleep longer than `drill_after_s` is woken
//! while the cluster is quiet, by the next method of its rotation, so a wake path that
//! broke while nobody needed it is found before the day it is needed. The time is
//! recorded per method (`wake/book.rs`); a failed method makes the drill go on with the
//! next; all failing quarantines the host (`quarantine.rs`). A woken host is left to
//! the energy planner, which puts it back to sleep. One drill at a time.
//!
//! "Quiet" means: energy mode on, no VM operation in flight, no host waking, no
//! alarm (a host suspect or unreachable that is neither quarantined nor in
//! maintenance), no energy plan executing and no drill running.
//!
//! The decision is [`drill_due`], pure and table-tested; [`run`] is the task that
//! feeds it from the published snapshot. How long a host has been asleep is counted
//! by the task from the moment it saw the host in standby (not stored: after a router
//! restart the count starts again, which only delays a drill).

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;
use wisp_common::HostId;

use super::wake::{usable_methods, wake_with, WakeOpts};
use super::PowerPlane;
use crate::cluster::ClusterHandle;
use crate::config::WakeVia;
use crate::events::EventKind;
use crate::model::host::HostStatus;

/// How often the drill task looks: drills are due after days, so a few seconds of
/// delay cost nothing, and a snapshot read is cheap.
pub const DRILL_TICK: Duration = Duration::from_secs(2);

/// One host as the drill chooser sees it.
#[derive(Debug, Clone, PartialEq)]
pub struct DrillHost {
    pub host: HostId,
    /// How long it has been asleep (`None`: not asleep).
    pub asleep_for: Option<Duration>,
    /// Its wake methods in policy order (only the usable ones).
    pub methods: Vec<WakeVia>,
    /// When each method was last drilled (unix ms).
    pub drilled_ms: BTreeMap<WakeVia, u64>,
    pub quarantined: bool,
    pub maintenance: bool,
}

/// Whether the cluster is quiet enough for a drill.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Quiet {
    pub energy_mode: bool,
    pub ops_in_flight: usize,
    pub waking: usize,
    pub alarms: usize,
    /// An energy plan (or the failover code's wake) is executing.
    pub executing: bool,
}

impl Quiet {
    pub fn is_quiet(&self) -> bool {
        self.energy_mode
            && self.ops_in_flight == 0
            && self.waking == 0
            && self.alarms == 0
            && !self.executing
    }
}

/// A drill to run: the host, the method whose turn it is, and the order to try them
/// (that method first, then the rest of the rotation).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Drill {
    pub host: HostId,
    pub method: WakeVia,
    pub order: Vec<WakeVia>,
}

/// The drill due now, if any: among hosts asleep at least `after`, not quarantined
/// and not in maintenance, the one asleep longest (then by name); its method is the
/// one drilled longest ago (never drilled first, ties in policy order).
pub fn drill_due(quiet: &Quiet, hosts: &[DrillHost], after: Duration) -> Option<Drill> {
    if !quiet.is_quiet() {
        return None;
    }
    let h = hosts
        .iter()
        .filter(|h| !h.quarantined && !h.maintenance && !h.methods.is_empty())
        .filter(|h| h.asleep_for.is_some_and(|a| a >= after))
        .max_by(|a, b| {
            a.asleep_for
                .cmp(&b.asleep_for)
                .then_with(|| b.host.cmp(&a.host))
        })?;
    let (i, method) = h
        .methods
        .iter()
        .enumerate()
        .min_by_key(|(i, m)| (h.drilled_ms.get(m).copied().unwrap_or(0), *i))
        .map(|(i, m)| (i, *m))?;
    let mut order = h.methods[i..].to_vec();
    order.extend_from_slice(&h.methods[..i]);
    Some(Drill {
        host: h.host.clone(),
        method,
        order,
    })
}

/// Runs drills until `shutdown`; `executing` says whether the energy mode is carrying
/// out a plan right now.
pub async fn run(
    cluster: ClusterHandle,
    power: Arc<PowerPlane>,
    executing: impl Fn() -> bool + Send + 'static,
    mut shutdown: watch::Receiver<bool>,
) {
    let after = Duration::from_secs(cluster.config().drill_after_s);
    let relay = cluster.config().wol_relay;
    let mut asleep_since: HashMap<HostId, Instant> = HashMap::new();
    let mut tick = tokio::time::interval(DRILL_TICK);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.changed() => return,
            _ = tick.tick() => {}
        }
        let snap = cluster.snapshot();
        let now = Instant::now();
        asleep_since.retain(|h, _| {
            snap.host(h)
                .is_some_and(|s| s.status == HostStatus::Standby)
        });
        let mut quiet = Quiet {
            energy_mode: snap.energy_mode,
            ops_in_flight: snap.ops.len(),
            executing: executing(),
            ..Default::default()
        };
        let mut hosts = Vec::new();
        for s in &snap.hosts {
            let quarantined = s.quarantine.is_some();
            match s.status {
                HostStatus::Waking => quiet.waking += 1,
                HostStatus::Suspect | HostStatus::Unreachable if !quarantined && !s.maintenance => {
                    quiet.alarms += 1
                }
                HostStatus::Standby => {
                    asleep_since.entry(s.name.clone()).or_insert(now);
                }
                _ => {}
            }
            let Some(cfg) = cluster.config().host(&s.name) else {
                continue;
            };
            let methods = usable_methods(&power, relay, &s.name, cfg.wake.as_deref());
            hosts.push(DrillHost {
                host: s.name.clone(),
                // The stored time of its sleep survives a router restart; the time
                // this task saw it asleep first is the fallback (a sleep stored by an
                // older router).
                asleep_for: s
                    .slept_at_ms
                    .filter(|_| s.status == HostStatus::Standby)
                    .map(|t| Duration::from_millis(wisp_common::time::unix_ms().saturating_sub(t)))
                    .or_else(|| asleep_since.get(&s.name).map(|t| now - *t)),
                methods,
                drilled_ms: s.wake.drilled_ms.clone(),
                quarantined,
                maintenance: s.maintenance,
            });
        }
        let Some(d) = drill_due(&quiet, &hosts, after) else {
            continue;
        };
        let asleep = hosts
            .iter()
            .find(|h| h.host == d.host)
            .and_then(|h| h.asleep_for)
            .unwrap_or_default();
        let msg = format!(
            "wake drill of {}: asleep for {} s (drill_after_s = {}); waking it by {} (rotation {})",
            d.host,
            asleep.as_secs(),
            after.as_secs(),
            d.method,
            d.order
                .iter()
                .map(|m| m.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        );
        info!("{msg}");
        cluster
            .record(EventKind::Wake, Some(d.host.clone()), None, msg)
            .await;
        let opts = WakeOpts {
            boot: None,
            methods: Some(d.order.clone()),
            drill: true,
        };
        // The wake records its own result (events, times, quarantine).
        let _ = wake_with(&cluster, &power, &d.host, opts).await;
        asleep_since.remove(&d.host);
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use WakeVia::{Ipmi, Wol};

    const DAY: Duration = Duration::from_secs(86_400);

    fn quiet() -> Quiet {
        Quiet {
            energy_mode: true,
            ..Default::default()
        }
    }

    fn host(name: &str, asleep_days: Option<u64>, drilled: &[(WakeVia, u64)]) -> DrillHost {
        DrillHost {
            host: HostId::new(name).unwrap(),
            asleep_for: asleep_days.map(|d| DAY * d as u32),
            methods: vec![Wol, Ipmi],
            drilled_ms: drilled.iter().copied().collect(),
            quarantined: false,
            maintenance: false,
        }
    }

    /// The chooser's answer: host, method, order.
    type Due = Option<(String, WakeVia, Vec<WakeVia>)>;

    fn due(q: Quiet, hosts: &[DrillHost]) -> Due {
        drill_due(&q, hosts, DAY * 7).map(|d| (d.host.to_string(), d.method, d.order))
    }

    /// The specification: (quiet, hosts) -> drill.
    #[test]
    fn chooser_table() {
        let some = |h: &str, m, o: &[WakeVia]| Some((h.to_owned(), m, o.to_vec()));
        let mut quarantined = host("h1", Some(30), &[]);
        quarantined.quarantined = true;
        let mut maint = host("h1", Some(30), &[]);
        maint.maintenance = true;
        let mut no_methods = host("h1", Some(30), &[]);
        no_methods.methods.clear();
        let mut ipmi_only = host("h1", Some(8), &[]);
        ipmi_only.methods = vec![Ipmi];
        let busy = |f: fn(&mut Quiet)| {
            let mut q = quiet();
            f(&mut q);
            q
        };
        #[rustfmt::skip]
        let table: Vec<(&str, Quiet, Vec<DrillHost>, Due)> = vec![
            ("never drilled: first method of the policy",
             quiet(), vec![host("h1", Some(8), &[])], some("h1", Wol, &[Wol, Ipmi])),
            ("asleep less than drill_after_s: nothing",
             quiet(), vec![host("h1", Some(6), &[])], None),
            ("exactly drill_after_s: due",
             quiet(), vec![host("h1", Some(7), &[])], some("h1", Wol, &[Wol, Ipmi])),
            ("awake: nothing",
             quiet(), vec![host("h1", None, &[])], None),
            ("wol drilled before: ipmi's turn, then wol",
             quiet(), vec![host("h1", Some(8), &[(Wol, 5)])], some("h1", Ipmi, &[Ipmi, Wol])),
            ("both drilled: the older one",
             quiet(), vec![host("h1", Some(8), &[(Wol, 9), (Ipmi, 5)])], some("h1", Ipmi, &[Ipmi, Wol])),
            ("both drilled, ipmi more recently: wol",
             quiet(), vec![host("h1", Some(8), &[(Wol, 5), (Ipmi, 9)])], some("h1", Wol, &[Wol, Ipmi])),
            ("the host asleep longest first",
             quiet(), vec![host("h1", Some(8), &[]), host("h2", Some(20), &[])], some("h2", Wol, &[Wol, Ipmi])),
            ("equal: by name",
             quiet(), vec![host("h2", Some(8), &[]), host("h1", Some(8), &[])], some("h1", Wol, &[Wol, Ipmi])),
            ("quarantined: never",
             quiet(), vec![quarantined], None),
            ("maintenance: never",
             quiet(), vec![maint], None),
            ("no usable method: never",
             quiet(), vec![no_methods], None),
            ("a single method",
             quiet(), vec![ipmi_only], some("h1", Ipmi, &[Ipmi])),
            ("energy mode off: never",
             Quiet::default(), vec![host("h1", Some(30), &[])], None),
            ("an operation in flight",
             busy(|q| q.ops_in_flight = 1), vec![host("h1", Some(30), &[])], None),
            ("a host waking (or a drill running)",
             busy(|q| q.waking = 1), vec![host("h1", Some(30), &[])], None),
            ("an alarm",
             busy(|q| q.alarms = 1), vec![host("h1", Some(30), &[])], None),
            ("an energy plan executing",
             busy(|q| q.executing = true), vec![host("h1", Some(30), &[])], None),
        ];
        for (what, q, hosts, want) in table {
            assert_eq!(due(q, &hosts), want, "{what}");
        }
    }
}
