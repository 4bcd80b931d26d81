//! The cluster task: the one owner of the cluster model (inventory, live reports,
//! desired state, events). Everyone else holds a [`ClusterHandle`] and talks to it over
//! a channel with oneshot replies, so there is no shared lock to reason about.

pub mod state;
pub mod views;

use std::collections::{HashSet, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use wisp_common::proto::Report;
use wisp_common::time::unix_ms;
use wisp_common::{HostId, VmId};

use crate::config::RouterConfig;
use crate::events::{Event, EventKind};
use crate::link::GenieLink;
use crate::store::{PersistedState, Store};
use state::{Cluster, HostStatus, LinkEntry, Timing};
use views::{HostView, StatusView, VmView};

/// How often host status is re-derived from report age: a tenth of the 1 s detection
/// target, so detection adds at most 100 ms to the configured thresholds.
pub const TICK: Duration = Duration::from_millis(100);

/// Events kept in memory for the API (the store keeps all of them).
const EVENTS_IN_MEMORY: usize = 1000;

/// Queue in front of the task: 1,000 reports/s from many genies fit in well under a
/// tick; senders wait (backpressure) rather than lose reports beyond that.
const QUEUE: usize = 4096;

enum Msg {
    Connected {
        host: HostId,
        instance: u64,
        version: String,
        link: GenieLink,
        reply: oneshot::Sender<u64>,
    },
    Disconnected {
        host: HostId,
        session: u64,
        reason: String,
    },
    Report {
        host: HostId,
        session: u64,
        report: Report,
    },
    Record(Event),
    Hosts(oneshot::Sender<Vec<HostView>>),
    Vms(oneshot::Sender<Vec<VmView>>),
    Status(oneshot::Sender<StatusView>),
    Events {
        limit: usize,
        reply: oneshot::Sender<Vec<Event>>,
    },
}

/// Handle to the cluster task.
#[derive(Clone)]
pub struct ClusterHandle {
    tx: mpsc::Sender<Msg>,
    inventory: Arc<HashSet<HostId>>,
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle").finish_non_exhaustive()
    }
}

impl ClusterHandle {
    /// Names of the configured hosts (fixed for the life of the task).
    pub fn inventory(&self) -> Arc<HashSet<HostId>> {
        self.inventory.clone()
    }

    /// Registers an authenticated genie; returns its session number.
    pub async fn connected(
        &self,
        host: HostId,
        instance: u64,
        version: String,
        link: GenieLink,
    ) -> Option<u64> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Connected {
                host,
                instance,
                version,
                link,
                reply,
            })
            .await
            .ok()?;
        rx.await.ok()
    }

    pub async fn disconnected(&self, host: HostId, session: u64, reason: String) {
        let _ = self
            .tx
            .send(Msg::Disconnected {
                host,
                session,
                reason,
            })
            .await;
    }

    pub async fn report(&self, host: HostId, session: u64, report: Report) {
        let _ = self
            .tx
            .send(Msg::Report {
                host,
                session,
                report,
            })
            .await;
    }

    /// Records an event (kept in the store and shown by `router events`).
    pub async fn record(
        &self,
        kind: EventKind,
        host: Option<HostId>,
        vm: Option<VmId>,
        message: String,
    ) {
        let ev = Event::new(unix_ms(), kind, host, vm, message);
        let _ = self.tx.send(Msg::Record(ev)).await;
    }

    pub async fn hosts(&self) -> Option<Vec<HostView>> {
        self.ask(Msg::Hosts).await
    }

    pub async fn vms(&self) -> Option<Vec<VmView>> {
        self.ask(Msg::Vms).await
    }

    pub async fn status(&self) -> Option<StatusView> {
        self.ask(Msg::Status).await
    }

    pub async fn events(&self, limit: usize) -> Option<Vec<Event>> {
        self.ask(|reply| Msg::Events { limit, reply }).await
    }

    async fn ask<T>(&self, make: impl FnOnce(oneshot::Sender<T>) -> Msg) -> Option<T> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(make(reply)).await.ok()?;
        rx.await.ok()
    }
}

/// The task's state.
struct Task {
    cluster: Cluster,
    persisted: PersistedState,
    store: Box<dyn Store>,
    events: VecDeque<Event>,
    next_session: u64,
    started: Instant,
    reports_accepted: u64,
    reports_dropped: u64,
}

/// Starts the cluster task. It runs until `shutdown` turns true.
pub fn spawn(
    config: &RouterConfig,
    store: Box<dyn Store>,
    persisted: PersistedState,
    shutdown: watch::Receiver<bool>,
) -> (ClusterHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel(QUEUE);
    let inventory = Arc::new(config.hosts.iter().map(|h| h.name.clone()).collect());
    let mut task = Task {
        cluster: Cluster::new(&config.hosts, Timing::from_config(config)),
        persisted,
        store,
        events: VecDeque::new(),
        next_session: 1,
        started: Instant::now(),
        reports_accepted: 0,
        reports_dropped: 0,
    };
    if let Ok(old) = task.store.recent_events(EVENTS_IN_MEMORY) {
        task.events.extend(old);
    }
    task.push_event(Event::new(
        unix_ms(),
        EventKind::RouterStarted,
        None,
        None,
        format!("router started with {} hosts", config.hosts.len()),
    ));
    let join = tokio::spawn(task.run(rx, shutdown));
    (ClusterHandle { tx, inventory }, join)
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => self.on_tick(),
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
            }
        }
        debug!("cluster task stopped");
    }

    fn on_tick(&mut self) {
        let now = Instant::now();
        for t in self.cluster.tick(now) {
            match t.kind {
                EventKind::HostUp => info!(host = %t.host, "{}", t.message),
                _ => warn!(host = %t.host, "{}", t.message),
            }
            self.push_event(Event::new(unix_ms(), t.kind, Some(t.host), None, t.message));
        }
    }

    fn handle(&mut self, msg: Msg) {
        let now = Instant::now();
        match msg {
            Msg::Connected {
                host,
                instance,
                version,
                link,
                reply,
            } => {
                let session = self.next_session;
                self.next_session += 1;
                let entry = LinkEntry {
                    session,
                    instance,
                    genie_version: version,
                    handle: link,
                };
                if let Some(old) = self.cluster.connect(&host, entry, now) {
                    info!(%host, old = old.session, new = session, "genie link replaced by a new connection");
                }
                self.push_event(Event::new(
                    unix_ms(),
                    EventKind::GenieConnected,
                    Some(host),
                    None,
                    format!("genie connected (session {session}, instance {instance:x})"),
                ));
                let _ = reply.send(session);
                // Derive the new status at once rather than on the next tick.
                self.on_tick();
            }
            Msg::Disconnected {
                host,
                session,
                reason,
            } => {
                if self.cluster.disconnect(&host, session) {
                    self.push_event(Event::new(
                        unix_ms(),
                        EventKind::GenieDisconnected,
                        Some(host),
                        None,
                        format!("genie link closed: {reason}"),
                    ));
                    self.on_tick();
                }
            }
            Msg::Report {
                host,
                session,
                report,
            } => match self.cluster.apply_report(&host, session, report, now) {
                Ok(_) => self.reports_accepted += 1,
                Err(why) => {
                    self.reports_dropped += 1;
                    debug!(%host, ?why, "report dropped");
                }
            },
            Msg::Record(ev) => self.push_event(ev),
            Msg::Hosts(reply) => {
                let _ = reply.send(self.host_views(now));
            }
            Msg::Vms(reply) => {
                let _ = reply.send(self.vm_views());
            }
            Msg::Status(reply) => {
                let _ = reply.send(self.status_view());
            }
            Msg::Events { limit, reply } => {
                let start = self.events.len().saturating_sub(limit);
                let _ = reply.send(self.events.iter().skip(start).cloned().collect());
            }
        }
    }

    fn push_event(&mut self, ev: Event) {
        if let Err(e) = self.store.append_event(&ev) {
            // The event stays in memory; the operator learns the disk is the problem.
            error!(error = %e, "could not persist event");
        }
        if self.events.len() == EVENTS_IN_MEMORY {
            self.events.pop_front();
        }
        self.events.push_back(ev);
    }

    fn host_views(&self, now: Instant) -> Vec<HostView> {
        self.cluster
            .hosts
            .values()
            .map(|h| HostView {
                name: h.cfg.name.clone(),
                state: h.status,
                power: h.power,
                address: h.cfg.address.to_string(),
                last_report_age_ms: h.report_age(now).map(|a| a.as_millis() as u64),
                genie_version: h.link.as_ref().map(|l| l.genie_version.clone()),
                cpu_percent: h.metrics.as_ref().map(|m| m.cpu_percent),
                mem_total_bytes: h.metrics.as_ref().map(|m| m.mem_total_bytes),
                mem_used_bytes: h.metrics.as_ref().map(|m| m.mem_used_bytes),
                mem_available_bytes: h.metrics.as_ref().map(|m| m.mem_available_bytes),
                load_avg: h.metrics.as_ref().map(|m| m.load_avg),
                uptime_s: h.metrics.as_ref().map(|m| m.uptime_s),
                vms: if h.status == HostStatus::Up || h.status == HostStatus::Suspect {
                    h.vms.len()
                } else {
                    0
                },
            })
            .collect()
    }

    fn vm_views(&self) -> Vec<VmView> {
        let mut out = Vec::new();
        let mut seen = HashSet::new();
        for h in self.cluster.hosts.values() {
            if h.link.is_none() {
                // What an unreachable genie last said is not current.
                continue;
            }
            for v in &h.vms {
                seen.insert(v.id.clone());
                out.push(VmView {
                    name: v.id.clone(),
                    host: Some(h.cfg.name.clone()),
                    state: v.state.to_string(),
                    vcpus: v.vcpus,
                    mem_mib: v.mem_mib,
                    cpu_time_ms: Some(v.cpu_time_ms),
                    pid: v.pid,
                    qmp_socket: Some(v.qmp_socket.clone()),
                    desired: self.persisted.vms.get(&v.id).map(|r| r.desired),
                });
            }
        }
        for (id, r) in &self.persisted.vms {
            if !seen.contains(id) {
                out.push(VmView {
                    name: id.clone(),
                    host: r.host.clone(),
                    state: "not running".into(),
                    vcpus: r.spec.vcpus,
                    mem_mib: r.spec.mem_mib,
                    cpu_time_ms: None,
                    pid: None,
                    qmp_socket: None,
                    desired: Some(r.desired),
                });
            }
        }
        out.sort_by(|a, b| a.name.cmp(&b.name).then(a.host.cmp(&b.host)));
        out
    }

    fn status_view(&self) -> StatusView {
        let vms = self.vm_views();
        StatusView {
            version: env!("CARGO_PKG_VERSION").into(),
            uptime_s: self.started.elapsed().as_secs(),
            hosts_total: self.cluster.hosts.len(),
            hosts_up: self
                .cluster
                .hosts
                .values()
                .filter(|h| h.status == HostStatus::Up)
                .count(),
            vms_total: vms.len(),
            vms_running: vms.iter().filter(|v| v.state == "running").count(),
            energy_mode: self.persisted.energy_mode,
            reports_accepted: self.reports_accepted,
            reports_dropped: self.reports_dropped,
        }
    }
}
