//! The cluster task: the one owner of the cluster model (inventory, live reports,
//! desired state, events). Everyone else holds a [`ClusterHandle`] and talks to it over
//! a channel with oneshot replies, so there is no shared lock to reason about.

pub mod claims;
pub mod command;
pub mod snapshot;
pub mod state;

pub use claims::{Busy, Claim, Op};
pub use command::Command;

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
use crate::store::{PersistedState, Store, StoreHandle};
use snapshot::Snapshot;
use state::{Cluster, HostEvent, HostStatus, LinkEntry, Timing};

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
    /// A typed command (see `command.rs`): the only way features reach the model.
    Run(command::Job),
}

/// Handle to the cluster task.
#[derive(Clone)]
pub struct ClusterHandle {
    tx: mpsc::Sender<Msg>,
    inventory: Arc<HashSet<HostId>>,
    /// The configuration the task was started with (fixed for its life).
    config: Arc<RouterConfig>,
    snapshot: watch::Receiver<Arc<Snapshot>>,
}

impl std::fmt::Debug for ClusterHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterHandle").finish_non_exhaustive()
    }
}

impl ClusterHandle {
    /// The router's configuration (fixed for the life of the task).
    pub fn config(&self) -> &RouterConfig {
        &self.config
    }

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

    /// Records an event (kept in the store and shown by `router events`); returns once
    /// it is in the model, so a read after it shows it.
    pub async fn record(
        &self,
        kind: EventKind,
        host: Option<HostId>,
        vm: Option<VmId>,
        message: String,
    ) {
        let ev = Event::new(unix_ms(), kind, host, vm, message);
        let _ = self.run(RecordEvent(ev)).await;
    }

    /// The model as last published (on every tick and after every command): reads
    /// from it never wait for the cluster task.
    pub fn snapshot(&self) -> Arc<Snapshot> {
        self.snapshot.borrow().clone()
    }

    /// The newest `limit` events, oldest first.
    pub fn events(&self, limit: usize) -> Vec<Event> {
        self.snapshot().recent_events(limit)
    }

    /// Runs `cmd` on the model inside the cluster task and returns its output
    /// (`None` once the task has stopped).
    pub async fn run<C: Command>(&self, cmd: C) -> Option<C::Output> {
        let (reply, rx) = oneshot::channel();
        self.tx
            .send(Msg::Run(command::Job::new(cmd, reply)))
            .await
            .ok()?;
        rx.await.ok()
    }
}

/// The cluster model: the state the cluster task owns.
pub struct Model {
    pub config: Arc<RouterConfig>,
    pub cluster: Cluster,
    /// The desired world, as last stored.
    pub persisted: PersistedState,
    /// The way to the store's writer (fsyncs never run on this task). Crate-visible
    /// so the SLA accounting can hand its book over.
    pub(crate) store: StoreHandle,
    pub events: VecDeque<Event>,
    /// Operations in flight per VM (start, stop, migrate, delete): a VM has at most
    /// one, so two actors never act on it at once. Released by dropping the guard.
    pub claims: claims::Claims,
    releases: mpsc::UnboundedReceiver<claims::Release>,
    /// Latest progress of migrations in flight, for `router vm show`.
    pub progress: std::collections::HashMap<VmId, wisp_common::proto::MigrationProgress>,
    /// Hosts that should be woken (no room for a VM, reserve short); served by the
    /// power code.
    pub wake_wanted: std::collections::BTreeSet<HostId>,
    /// True while most hosts vanished at once: the router fences nobody.
    pub self_suspect: bool,
    /// Per-VM availability accounting.
    pub sla: crate::ha::sla::SlaBook,
    /// VMs whose last automatic action failed, and when to try again.
    pub retry_after: std::collections::HashMap<VmId, Instant>,
    next_session: u64,
    pub started: Instant,
    pub reports_accepted: u64,
    pub reports_dropped: u64,
    /// Where snapshots are published, and the event tail they share until it changes.
    published: watch::Sender<Arc<Snapshot>>,
    events_shared: Arc<Vec<Event>>,
    events_changed: bool,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("hosts", &self.cluster.hosts.len())
            .field("vms", &self.persisted.vms.len())
            .finish_non_exhaustive()
    }
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
    let (claims, releases) = claims::Claims::new();
    let (published, snapshot) = watch::channel(Arc::new(Snapshot::empty()));
    // Everything the model starts from is read before the writer takes the store
    // over; from then on the model answers every read from memory.
    let sla = store.load_sla().unwrap_or_else(|e| {
        error!(error = %wisp_common::error::chain(&e), "SLA history unreadable; starting a new one");
        Default::default()
    });
    let old_events = store.recent_events(EVENTS_IN_MEMORY);
    let (store, writer) = crate::store::spawn_writer(store);
    let mut task = Model {
        config: Arc::new(config.clone()),
        claims,
        releases,
        progress: Default::default(),
        retry_after: Default::default(),
        wake_wanted: Default::default(),
        sla,
        self_suspect: false,
        cluster: Cluster::new(&config.hosts, Timing::from_config(config)),
        persisted,
        store,
        events: VecDeque::new(),
        next_session: 1,
        started: Instant::now(),
        reports_accepted: 0,
        reports_dropped: 0,
        published,
        events_shared: Arc::new(Vec::new()),
        events_changed: true,
    };
    for (id, rec) in &task.persisted.hosts {
        if let Some(h) = task.cluster.hosts.get_mut(id) {
            h.apply(HostEvent::Restored {
                maintenance: rec.maintenance,
                standby: rec.standby,
            });
        }
    }
    if let Ok(old) = old_events {
        task.events.extend(old);
    }
    task.push_event(Event::new(
        unix_ms(),
        EventKind::RouterStarted,
        None,
        None,
        format!("router started with {} hosts", config.hosts.len()),
    ));
    task.publish();
    let join = tokio::spawn(async move {
        task.run(rx, shutdown).await;
        // The model and its store handle are gone: the writer writes what is queued
        // and stops. Waiting for it means a clean shutdown loses no event.
        if let Err(e) = writer.await {
            error!(error = %e, "the store writer failed");
        }
    });
    (
        ClusterHandle {
            tx,
            inventory,
            config: Arc::new(config.clone()),
            snapshot,
        },
        join,
    )
}

impl Model {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    self.on_tick();
                    self.publish();
                }
                msg = rx.recv() => match msg {
                    // Reports are many and change only what the next tick publishes.
                    Some(m @ Msg::Report { .. }) => self.handle(m),
                    Some(m) => {
                        self.handle(m);
                        self.publish();
                    }
                    None => break,
                },
            }
        }
        debug!("cluster task stopped");
    }

    fn on_tick(&mut self) {
        self.apply_releases();
        let now = Instant::now();
        self.account_sla(now);
        for t in self.cluster.tick(now) {
            match t.kind {
                EventKind::HostUp => info!(host = %t.host, "{}", t.message),
                _ => warn!(host = %t.host, "{}", t.message),
            }
            self.push_event(Event::new(unix_ms(), t.kind, Some(t.host), None, t.message));
        }
    }

    fn handle(&mut self, msg: Msg) {
        // Releases first: a claim dropped before this message was sent is free now.
        self.apply_releases();
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
            Msg::Run(job) => {
                let t0 = std::time::Instant::now();
                let answer = (job.run)(self);
                let took = t0.elapsed();
                if took > command::SLOW_COMMAND {
                    warn!(
                        command = job.name,
                        ms = took.as_millis() as u64,
                        "a command held the cluster task; reports waited"
                    );
                }
                // Publish first, then answer: the caller's next read sees its change.
                self.publish();
                answer();
            }
        }
    }

    /// Publishes a snapshot of the model for readers.
    fn publish(&mut self) {
        if self.events_changed {
            self.events_shared = Arc::new(self.events.iter().cloned().collect());
            self.events_changed = false;
        }
        let snap = self.snapshot(self.events_shared.clone());
        self.published.send_replace(Arc::new(snap));
    }

    /// Applies `ev` to `host`'s state machine and records what it says as events.
    /// Returns the host's status afterwards (`None` for a host not in the inventory).
    pub fn host_event(&mut self, host: &HostId, ev: HostEvent<'_>) -> Option<HostStatus> {
        let h = self.cluster.hosts.get_mut(host)?;
        let transitions = h.apply(ev);
        let status = h.status();
        for t in transitions {
            self.event(t.kind, Some(t.host), None, t.message);
        }
        Some(status)
    }

    /// Applies the releases of dropped claims.
    pub fn apply_releases(&mut self) {
        while let Ok(r) = self.releases.try_recv() {
            self.claims.release(r);
        }
    }

    /// Holds `vm` for `op` until the returned guard drops.
    pub fn claim(&mut self, vm: &VmId, op: Op) -> Result<Claim, Busy> {
        self.apply_releases();
        self.claims.claim(vm, op)
    }

    /// Records an event now.
    pub fn event(
        &mut self,
        kind: EventKind,
        host: Option<HostId>,
        vm: Option<VmId>,
        message: String,
    ) {
        match kind {
            EventKind::Error
            | EventKind::FenceRefused
            | EventKind::MigrationFailed
            | EventKind::VmLost => {
                warn!(host = ?host.as_ref().map(|h| h.as_str()), vm = ?vm.as_ref().map(|v| v.as_str()), "{message}")
            }
            _ => {
                info!(host = ?host.as_ref().map(|h| h.as_str()), vm = ?vm.as_ref().map(|v| v.as_str()), "{message}")
            }
        }
        self.push_event(Event::new(unix_ms(), kind, host, vm, message));
    }

    /// Stores the desired world. On failure the caller must undo its change: nothing
    /// is acknowledged that was not stored.
    pub fn save(&mut self) -> Result<(), crate::store::StoreError> {
        self.store.commit_blocking(self.persisted.clone())
    }

    /// Changes the persisted state with `f` and stores it; on a store failure the
    /// change is rolled back and the error returned.
    pub fn update<R>(
        &mut self,
        f: impl FnOnce(&mut PersistedState) -> R,
    ) -> Result<R, crate::store::StoreError> {
        let before = self.persisted.clone();
        let r = f(&mut self.persisted);
        // Waits for the write (done by the store's writer): the caller acts on the
        // change at once (a placement, an epoch, an API reply), so it must be on disk
        // first. The trade-off: the reports queued meanwhile wait for this one write,
        // as they did before; they no longer wait for event or SLA writes. Making this
        // async would reach every caller inside `ClusterHandle::with` (store header).
        if let Err(e) = self.store.commit_blocking(self.persisted.clone()) {
            self.persisted = before;
            error!(error = %e, "could not store the router state; change rolled back");
            return Err(e);
        }
        Ok(r)
    }

    fn push_event(&mut self, ev: Event) {
        // Queued for the writer, never waited for: a report must not wait behind an
        // event's fsync. The writer logs a failed write and keeps the event for a
        // retry; here it stays in memory either way.
        if let Err(e) = self.store.append_event(ev.clone()) {
            error!(error = %e, "could not persist event");
        }
        if self.events.len() == EVENTS_IN_MEMORY {
            self.events.pop_front();
        }
        self.events_changed = true;
        self.events.push_back(ev);
    }
}

/// Records an event as it is (the message already says what happened).
struct RecordEvent(Event);

impl Command for RecordEvent {
    type Output = ();
    const NAME: &'static str = "record an event";

    fn apply(self, m: &mut Model) {
        m.push_event(self.0);
    }
}
