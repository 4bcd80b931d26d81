//! A read-only copy of the model, published by the cluster task on every tick and
//! after every command, so readers (the API's views, `router vm show`) never queue
//! behind the genie reports the task is applying. Reports themselves do not publish:
//! at up to thousands per second that would copy the model for nothing; the next tick
//! (at most `crate::cluster::TICK` later) carries them.

use std::collections::BTreeMap;
use std::sync::Arc;

use tokio::time::Instant;
use wisp_common::proto::{HostMetrics, MigrationProgress, VmStatus};
use wisp_common::{HostId, VmId};

use super::claims::Op;
use super::Model;
use crate::events::Event;
use crate::model::host::{HostStatus, PowerKnown};
use crate::store::VmRecord;

/// One host as the model saw it.
#[derive(Debug, Clone)]
pub struct HostSnap {
    pub name: HostId,
    pub address: String,
    pub status: HostStatus,
    pub power: PowerKnown,
    /// Age of the last report when the snapshot was taken.
    pub report_age_ms: Option<u64>,
    /// Set while a genie is connected.
    pub genie_version: Option<String>,
    pub metrics: Option<HostMetrics>,
    /// What its genie last reported (kept even when the link is gone: readers decide).
    pub vms: Vec<VmStatus>,
    /// The operator's and the energy planner's stored flags.
    pub maintenance: bool,
    pub standby: bool,
    /// Why it is quarantined (failed to wake by every method), if it is.
    pub quarantine: Option<String>,
    /// Its measured wake times and drills.
    pub wake: crate::power::wake::book::WakeBook,
    /// What the host can do about sleeping and waking, as its genie last said.
    pub power_caps: Option<wisp_common::proto::PowerCaps>,
    /// How it runs VMs, as its genie last said.
    pub virt: Option<wisp_common::proto::VirtCaps>,
    /// Whether it can give guests the cluster's CPU model (None: not known).
    pub cpu_model_ok: Option<bool>,
    /// When its current sleep was verified (wall clock, ms), as stored.
    pub slept_at_ms: Option<u64>,
}

impl HostSnap {
    pub fn linked(&self) -> bool {
        self.genie_version.is_some()
    }

    /// How long a wake of this host is expected to take (median of its measured
    /// wakes, request to genie heard); `None` before the first. For the energy
    /// planner's reserve.
    pub fn expected_wake_ms(&self) -> Option<u64> {
        self.wake.expected_ms()
    }
}

/// The model at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken_at: Instant,
    pub router_started: Instant,
    pub hosts: Vec<HostSnap>,
    pub records: BTreeMap<VmId, VmRecord>,
    pub ops: BTreeMap<VmId, Op>,
    pub progress: BTreeMap<VmId, MigrationProgress>,
    /// The events kept in memory, oldest first (shared between snapshots until a new
    /// event arrives).
    pub events: Arc<Vec<Event>>,
    pub energy_mode: bool,
    pub reports_accepted: u64,
    pub reports_dropped: u64,
    /// The cluster's guest CPU model (router.toml `cpu_model`).
    pub cpu_model: String,
}

impl Snapshot {
    /// An empty snapshot, for the moment before the task publishes its first.
    pub fn empty() -> Self {
        let now = Instant::now();
        Self {
            taken_at: now,
            router_started: now,
            hosts: Vec::new(),
            records: BTreeMap::new(),
            ops: BTreeMap::new(),
            progress: BTreeMap::new(),
            events: Arc::new(Vec::new()),
            energy_mode: false,
            reports_accepted: 0,
            reports_dropped: 0,
            cpu_model: String::new(),
        }
    }

    /// One host, by name.
    pub fn host(&self, name: &HostId) -> Option<&HostSnap> {
        self.hosts.iter().find(|h| &h.name == name)
    }

    /// The newest `limit` events, oldest first.
    pub fn recent_events(&self, limit: usize) -> Vec<Event> {
        let start = self.events.len().saturating_sub(limit);
        self.events[start..].to_vec()
    }

    /// The newest `limit` events about `vm`, oldest first.
    pub fn vm_events(&self, vm: &VmId, limit: usize) -> Vec<Event> {
        let mut evs: Vec<Event> = self
            .events
            .iter()
            .rev()
            .filter(|e| e.vm.as_ref() == Some(vm))
            .take(limit)
            .cloned()
            .collect();
        evs.reverse();
        evs
    }
}

impl Model {
    /// Takes a snapshot now. `events` is the shared copy of the event tail, rebuilt by
    /// the caller only when events changed.
    pub(crate) fn snapshot(&self, events: Arc<Vec<Event>>) -> Snapshot {
        let now = Instant::now();
        Snapshot {
            taken_at: now,
            router_started: self.started,
            hosts: self
                .cluster
                .hosts
                .values()
                .map(|h| HostSnap {
                    name: h.cfg.name.clone(),
                    address: h.cfg.address.to_string(),
                    status: h.status(),
                    power: h.power(),
                    report_age_ms: h.report_age(now).map(|a| a.as_millis() as u64),
                    genie_version: h.link.as_ref().map(|l| l.genie_version.clone()),
                    metrics: h.metrics.clone(),
                    vms: h.vms.clone(),
                    maintenance: self
                        .persisted
                        .hosts
                        .get(&h.cfg.name)
                        .is_some_and(|r| r.maintenance),
                    standby: self
                        .persisted
                        .hosts
                        .get(&h.cfg.name)
                        .is_some_and(|r| r.standby),
                    quarantine: self
                        .persisted
                        .hosts
                        .get(&h.cfg.name)
                        .and_then(|r| r.quarantine.as_ref().map(|q| q.reason.clone())),
                    wake: self
                        .persisted
                        .hosts
                        .get(&h.cfg.name)
                        .map(|r| r.wake.clone())
                        .unwrap_or_default(),
                    power_caps: h.power_caps.clone(),
                    virt: h.virt.clone(),
                    cpu_model_ok: h
                        .virt
                        .as_ref()
                        .map(|v| v.can_run_cpu(&self.config.cpu_model)),
                    slept_at_ms: self
                        .persisted
                        .hosts
                        .get(&h.cfg.name)
                        .and_then(|r| r.slept_at_ms),
                })
                .collect(),
            records: self.persisted.vms.clone(),
            ops: self
                .claims
                .iter()
                .map(|(vm, op)| (vm.clone(), op.clone()))
                .collect(),
            progress: self
                .progress
                .iter()
                .map(|(vm, p)| (vm.clone(), p.clone()))
                .collect(),
            events,
            energy_mode: self.persisted.energy_mode,
            reports_accepted: self.reports_accepted,
            reports_dropped: self.reports_dropped,
            cpu_model: self.config.cpu_model.clone(),
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::time::Duration;

    use tokio::sync::watch;

    use super::*;
    use crate::cluster::{ClusterHandle, Command};
    use crate::config::RouterConfig;
    use crate::events::EventKind;
    use crate::store::{MemStore, Store};

    fn cluster() -> (ClusterHandle, watch::Sender<bool>) {
        let text = "listen = \"127.0.0.1:1\"\nstate_dir = \"/nonexistent/wisp-snap-unit\"\n\
                    secret_file = \"/nonexistent/secret\"\n\
                    [[host]]\nname = \"h1\"\nmac = \"02:00:00:00:00:01\"\naddress = \"127.0.0.1\"\n";
        let config = RouterConfig::parse(std::path::Path::new("router.toml"), text).unwrap();
        let store = MemStore::default();
        let persisted = store.load().unwrap();
        let (stop, rx) = watch::channel(false);
        let (c, _task) = crate::cluster::spawn(&config, Box::new(store), persisted, rx);
        (c, stop)
    }

    /// Holds the cluster task for a while, as a slow command (or a burst of reports)
    /// would.
    struct Stall(Duration);

    impl Command for Stall {
        type Output = ();
        const NAME: &'static str = "stall (test)";
        fn apply(self, _m: &mut Model) {
            std::thread::sleep(self.0);
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn reads_do_not_wait_for_a_busy_cluster_task() {
        let (c, _stop) = cluster();
        assert_eq!(c.snapshot().hosts.len(), 1, "published at start");
        let busy = tokio::spawn({
            let c = c.clone();
            async move { c.run(Stall(Duration::from_millis(800))).await }
        });
        // Give the task time to start the stall, then read while it is held.
        tokio::time::sleep(Duration::from_millis(100)).await;
        let t0 = std::time::Instant::now();
        let hosts = crate::api::views::host_views(&c.snapshot());
        let status = crate::api::views::status_view(&c.snapshot());
        let took = t0.elapsed();
        assert!(!busy.is_finished(), "the stall ended before the reads");
        assert_eq!((hosts.len(), status.hosts_total), (1, 1));
        assert!(
            took < Duration::from_millis(300),
            "reads waited {took:?} for the busy task"
        );
        busy.await.unwrap();
    }

    #[tokio::test]
    async fn a_caller_reads_its_own_change_after_the_answer() {
        let (c, _stop) = cluster();
        for i in 0..50 {
            let msg = format!("event {i}");
            c.record(EventKind::Power, None, None, msg.clone()).await;
            let last = c.events(1);
            assert_eq!(last[0].message, msg, "the snapshot lagged its writer");
        }
    }
}
