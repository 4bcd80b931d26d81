//! The router's model as plain data: hosts (with the one host state machine), the
//! desired world as stored, claims, migration progress, SLA accounting and the recent
//! events. No I/O and no clock of its own (`now` comes in); the cluster task owns the
//! one instance and changes it only through typed commands (`crate::cluster::command`),
//! and readers get a [`snapshot::Snapshot`] of it.
//!
//! Its fields are crate-visible so that each feature's commands can do their work in
//! one step; nothing outside the crate (tests, benches) can reach them.

pub mod claims;
pub mod host;
pub mod hosts;
pub mod sla;
pub mod snapshot;

use std::collections::VecDeque;
use std::sync::Arc;

use tokio::time::Instant;
use tracing::{debug, error, info, warn};
use wisp_common::proto::{Report, ResumeSign};
use wisp_common::time::unix_ms;
use wisp_common::{HostId, VmId};

use crate::config::RouterConfig;
use crate::events::{Event, EventKind};
use crate::link::GenieLink;
use crate::store::{PersistedState, StoreHandle};
use claims::{Busy, Claim, Claims, Op};
use host::{HostEvent, HostStatus, LinkEntry, Timing};
use hosts::Cluster;
pub use hosts::NameTaken;

/// Events kept in memory for the API (the store keeps all of them).
pub const EVENTS_IN_MEMORY: usize = 1000;

/// The cluster model: the state the cluster task owns.
pub struct Model {
    pub(crate) config: Arc<RouterConfig>,
    pub(crate) cluster: Cluster,
    /// The desired world, as last stored.
    pub(crate) persisted: PersistedState,
    /// The way to the store's writer (fsyncs never run on this task). Crate-visible
    /// so the SLA accounting can hand its book over.
    pub(crate) store: StoreHandle,
    pub(crate) events: VecDeque<Event>,
    /// Operations in flight per VM (start, stop, migrate, delete): a VM has at most
    /// one, so two actors never act on it at once. Released by dropping the guard.
    pub(crate) claims: claims::Claims,
    /// Latest progress of migrations in flight, for `router vm show`.
    pub(crate) progress: std::collections::HashMap<VmId, wisp_common::proto::MigrationProgress>,
    /// Hosts that should be woken (no room for a VM, reserve short); served by the
    /// power code.
    pub(crate) wake_wanted: std::collections::BTreeSet<HostId>,
    /// True while most hosts vanished at once: the router fences nobody.
    pub(crate) self_suspect: bool,
    /// Per-VM availability accounting.
    pub(crate) sla: sla::SlaBook,
    /// VMs whose last automatic action failed, and when to try again.
    pub(crate) retry_after: std::collections::HashMap<VmId, Instant>,
    /// The next genie session number.
    next_session: u64,
    pub(crate) started: Instant,
    pub(crate) reports_accepted: u64,
    pub(crate) reports_dropped: u64,
    /// Bumped by every new event, so the publisher copies the event tail only when
    /// it changed.
    pub(crate) events_version: u64,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("hosts", &self.cluster.hosts.len())
            .field("vms", &self.persisted.vms.len())
            .finish_non_exhaustive()
    }
}

impl Model {
    /// The model a router starts with: its config, the stored desired state and SLA
    /// book, the last events, and the operators' stored host flags applied.
    pub fn new(
        config: Arc<RouterConfig>,
        persisted: PersistedState,
        store: StoreHandle,
        sla: sla::SlaBook,
        old_events: Vec<Event>,
    ) -> Self {
        let hosts = config.hosts.len();
        let mut m = Model {
            cluster: Cluster::new(&config.hosts, Timing::from_config(&config)),
            config,
            persisted,
            store,
            events: VecDeque::new(),
            claims: Claims::new(),
            progress: Default::default(),
            wake_wanted: Default::default(),
            self_suspect: false,
            sla,
            retry_after: Default::default(),
            next_session: 1,
            started: Instant::now(),
            reports_accepted: 0,
            reports_dropped: 0,
            events_version: 0,
        };
        for (id, rec) in &m.persisted.hosts {
            if let Some(h) = m.cluster.hosts.get_mut(id) {
                h.apply(HostEvent::Restored {
                    maintenance: rec.maintenance,
                    standby: rec.standby,
                });
            }
        }
        let skip = old_events.len().saturating_sub(EVENTS_IN_MEMORY);
        m.events.extend(old_events.into_iter().skip(skip));
        m.push_event(Event::new(
            unix_ms(),
            EventKind::RouterStarted,
            None,
            None,
            format!("router started with {hosts} hosts"),
        ));
        m
    }

    /// The periodic look: availability accounting, and every host's status from its
    /// link and report age.
    pub fn tick(&mut self, now: Instant) {
        self.apply_releases();
        self.account_sla(now);
        for t in self.cluster.tick(now) {
            match t.kind {
                EventKind::HostUp => info!(host = %t.host, "{}", t.message),
                _ => warn!(host = %t.host, "{}", t.message),
            }
            self.push_event(Event::new(unix_ms(), t.kind, Some(t.host), None, t.message));
        }
        self.forget_sleep_of_hosts_awake_on_their_own();
    }

    /// A host heard while asleep, without a wake from us, has lost its sleep intent
    /// (host.rs); its stored `standby` flag goes too, or placement would keep avoiding
    /// a running host and a router restart would think it asleep.
    fn forget_sleep_of_hosts_awake_on_their_own(&mut self) {
        let awake: Vec<HostId> = self
            .cluster
            .hosts
            .values()
            .filter(|h| h.status() == HostStatus::Up && !h.asleep_on_purpose())
            .filter(|h| {
                self.persisted
                    .hosts
                    .get(&h.cfg.name)
                    .is_some_and(|r| r.standby || r.depth.is_some())
            })
            .map(|h| h.cfg.name.clone())
            .collect();
        for h in awake {
            // A store failure is logged by `update`; the next tick tries again.
            let _ = self.update(|p| {
                let r = p.hosts.entry(h.clone()).or_default();
                r.standby = false;
                r.depth = None;
                r.slept_at_ms = None;
            });
        }
    }

    /// A genie authenticated: it becomes the host's link. Returns its session number,
    /// or why it is refused (another genie holds the name; see `Cluster::connect`).
    pub fn connected(
        &mut self,
        host: HostId,
        instance: u64,
        version: String,
        link: GenieLink,
        now: Instant,
    ) -> Result<u64, NameTaken> {
        let session = self.next_session;
        self.next_session += 1;
        let entry = LinkEntry {
            session,
            instance,
            genie_version: version,
            handle: link,
        };
        if let Some(old) = self.cluster.connect(&host, entry, now)? {
            info!(%host, old = old.session, new = session, "genie link replaced by a new connection");
        }
        self.push_event(Event::new(
            unix_ms(),
            EventKind::GenieConnected,
            Some(host),
            None,
            format!("genie connected (session {session}, instance {instance:x})"),
        ));
        // Derive the new status at once rather than on the next tick.
        self.tick(now);
        Ok(session)
    }

    /// The link `session` of `host` closed (ignored if it was replaced meanwhile).
    pub fn disconnected(
        &mut self,
        host: HostId,
        session: u64,
        reason: &str,
        goodbye: bool,
        now: Instant,
    ) {
        if self.cluster.disconnect(&host, session) {
            if let Some(h) = self.cluster.hosts.get_mut(&host) {
                h.said_goodbye = goodbye;
            }
            self.push_event(Event::new(
                unix_ms(),
                EventKind::GenieDisconnected,
                Some(host),
                None,
                format!("genie link closed: {reason}"),
            ));
            self.tick(now);
        }
    }

    /// Applies a genie report if it is current; counts it either way. True if applied.
    pub fn report(&mut self, host: HostId, session: u64, report: Report, now: Instant) -> bool {
        let resumed = report.resumed;
        match self.cluster.apply_report(&host, session, report, now) {
            Ok(_) => {
                self.reports_accepted += 1;
                if let Some(r) = resumed {
                    let how = match r.how {
                        ResumeSign::BoottimeJump => "the kernel was suspended",
                        ResumeSign::HeartbeatGap => "its genie was frozen",
                    };
                    self.event(
                        EventKind::Power,
                        Some(host),
                        None,
                        format!("genie resumed after {} ms away ({how})", r.away_ms),
                    );
                }
                true
            }
            Err(why) => {
                self.reports_dropped += 1;
                debug!(%host, ?why, "report dropped");
                false
            }
        }
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
        self.claims.apply_releases();
    }

    /// Holds `vm` for `op` until the returned guard drops.
    pub fn claim(&mut self, vm: &VmId, op: Op) -> Result<Claim, Busy> {
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
                warn!(
                    host = host.as_ref().map_or("-", |h| h.as_str()),
                    vm = vm.as_ref().map_or("-", |v| v.as_str()),
                    "{message}"
                )
            }
            _ => {
                info!(
                    host = host.as_ref().map_or("-", |h| h.as_str()),
                    vm = vm.as_ref().map_or("-", |v| v.as_str()),
                    "{message}"
                )
            }
        }
        self.push_event(Event::new(unix_ms(), kind, host, vm, message));
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
        // async would reach every command (store header).
        if let Err(e) = self.store.commit_blocking(self.persisted.clone()) {
            self.persisted = before;
            error!(error = %e, "could not store the router state; change rolled back");
            return Err(e);
        }
        Ok(r)
    }

    pub(crate) fn push_event(&mut self, ev: Event) {
        // Queued for the writer, never waited for: a report must not wait behind an
        // event's fsync. The writer logs a failed write and keeps the event for a
        // retry; here it stays in memory either way.
        if let Err(e) = self.store.append_event(ev.clone()) {
            error!(error = %e, "could not persist event");
        }
        if self.events.len() == EVENTS_IN_MEMORY {
            self.events.pop_front();
        }
        self.events_version += 1;
        self.events.push_back(ev);
    }
}

#[cfg(test)]
impl Model {
    /// Unit tests: a model on `toml` (router.toml text, read as `router.toml`) and
    /// `persisted`, its store in memory.
    pub(crate) fn for_test(toml: &str, persisted: crate::store::PersistedState) -> Self {
        #[allow(clippy::unwrap_used)]
        let cfg =
            crate::config::RouterConfig::parse(std::path::Path::new("router.toml"), toml).unwrap();
        let (store, _writer) =
            crate::store::spawn_writer(Box::new(crate::store::MemStore::default()));
        Model::new(
            Arc::new(cfg),
            persisted,
            store,
            Default::default(),
            Vec::new(),
        )
    }
}
