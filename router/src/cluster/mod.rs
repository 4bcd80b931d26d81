//! The cluster task: the one owner of the model (`crate::model`). Everyone else holds
//! a [`ClusterHandle`]: genie links send it reports, features send it typed commands
//! (`command.rs`), and readers take the snapshot it publishes, so there is no shared
//! lock to reason about.

pub mod command;

pub use crate::model::claims::{Busy, Claim, Op};
pub use crate::model::{Model, NameTaken};
pub use command::Command;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, watch};
use tokio::time::Instant;
use tracing::{debug, error, warn};
use wisp_common::proto::Report;
use wisp_common::time::unix_ms;
use wisp_common::{HostId, VmId};

use crate::config::RouterConfig;
use crate::events::{Event, EventKind};
use crate::link::GenieLink;
use crate::model::snapshot::Snapshot;
use crate::model::EVENTS_IN_MEMORY;
use crate::store::{PersistedState, Store};

/// How often host status is re-derived from report age: a tenth of the 1 s detection
/// target, so detection adds at most 100 ms to the configured thresholds.
pub const TICK: Duration = Duration::from_millis(100);

/// Queue in front of the task: 1,000 reports/s from many genies fit in well under a
/// tick; senders wait (backpressure) rather than lose reports beyond that.
const QUEUE: usize = 4096;

/// Why a genie was not registered.
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("the cluster task stopped")]
    Stopped,
    #[error(transparent)]
    NameTaken(#[from] NameTaken),
}

enum Msg {
    Connected {
        host: HostId,
        instance: u64,
        version: String,
        link: GenieLink,
        reply: oneshot::Sender<Result<u64, NameTaken>>,
    },
    Disconnected {
        host: HostId,
        session: u64,
        reason: String,
        goodbye: bool,
    },
    Report {
        host: HostId,
        session: u64,
        report: Report,
        /// Whether it was applied: only an applied report is acknowledged, since the
        /// acknowledgement renews the genie's self-fence lease.
        applied: oneshot::Sender<bool>,
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

    /// Registers an authenticated genie; returns its session number, or why not.
    pub async fn connected(
        &self,
        host: HostId,
        instance: u64,
        version: String,
        link: GenieLink,
    ) -> Result<u64, ConnectError> {
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
            .map_err(|_| ConnectError::Stopped)?;
        Ok(self.answer(rx).await.ok_or(ConnectError::Stopped)??)
    }

    /// The link `session` of `host` ended; `goodbye` when the genie closed it itself.
    pub async fn disconnected(&self, host: HostId, session: u64, reason: String, goodbye: bool) {
        let _ = self
            .tx
            .send(Msg::Disconnected {
                host,
                session,
                reason,
                goodbye,
            })
            .await;
    }

    /// Hands a report to the model; true once it was applied (current session, newer
    /// generation), false when it was dropped or the router is shutting down.
    pub async fn report(&self, host: HostId, session: u64, report: Report) -> bool {
        let (applied, rx) = oneshot::channel();
        let sent = self
            .tx
            .send(Msg::Report {
                host,
                session,
                report,
                applied,
            })
            .await;
        sent.is_ok() && self.answer(rx).await.unwrap_or(false)
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
        self.answer(rx).await
    }

    /// The cluster task's answer to a message just sent, or `None` once the task has
    /// stopped. Waiting on the reply alone is not enough: a message that entered the
    /// queue while the task was stopping may outlive the task's end without being
    /// dropped (the queue is freed only with its last sender), and its caller would
    /// wait forever; a router's shutdown hung that way (the energy task's last save).
    async fn answer<T>(&self, rx: oneshot::Receiver<T>) -> Option<T> {
        tokio::select! {
            biased;
            r = rx => r.ok(),
            _ = self.tx.closed() => None,
        }
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
    let (published, snapshot) = watch::channel(Arc::new(Snapshot::empty()));
    // Everything the model starts from is read before the writer takes the store
    // over; from then on the model answers every read from memory.
    let sla = store.load_sla().unwrap_or_else(|e| {
        error!(error = %wisp_common::error::chain(&e), "SLA history unreadable; starting a new one");
        Default::default()
    });
    let old_events = store
        .recent_events(EVENTS_IN_MEMORY)
        .unwrap_or_else(|e| {
            error!(error = %wisp_common::error::chain(&e), "event history unreadable; `router events` starts empty");
            Vec::new()
        });
    let (store, writer) = crate::store::spawn_writer(store);
    let config = Arc::new(config.clone());
    let model = Model::new(config.clone(), persisted, store, sla, old_events);
    let mut task = Task {
        model,
        published,
        events_shared: Arc::new(Vec::new()),
        events_published: None,
    };
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
            config,
            snapshot,
        },
        join,
    )
}

/// The task's own state: the model, and where its snapshots go.
struct Task {
    model: Model,
    published: watch::Sender<Arc<Snapshot>>,
    /// The event tail of the last snapshot, shared until an event arrives.
    events_shared: Arc<Vec<Event>>,
    events_published: Option<u64>,
}

impl Task {
    async fn run(mut self, mut rx: mpsc::Receiver<Msg>, mut shutdown: watch::Receiver<bool>) {
        let mut tick = tokio::time::interval(TICK);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.changed() => break,
                _ = tick.tick() => {
                    self.model.tick(Instant::now());
                    self.publish();
                }
                msg = rx.recv() => match msg {
                    Some(m) => self.handle(m),
                    None => break,
                },
            }
        }
        debug!("cluster task stopped");
    }

    fn handle(&mut self, msg: Msg) {
        // Releases first: a claim dropped before this message was sent is free now.
        self.model.apply_releases();
        let now = Instant::now();
        match msg {
            Msg::Connected {
                host,
                instance,
                version,
                link,
                reply,
            } => {
                let session = self.model.connected(host, instance, version, link, now);
                self.publish();
                let _ = reply.send(session);
            }
            Msg::Disconnected {
                host,
                session,
                reason,
                goodbye,
            } => {
                self.model
                    .disconnected(host, session, &reason, goodbye, now);
                self.publish();
            }
            // Reports are many and change only what the next tick publishes.
            Msg::Report {
                host,
                session,
                report,
                applied,
            } => {
                let _ = applied.send(self.model.report(host, session, report, now));
            }
            Msg::Run(job) => {
                let t0 = std::time::Instant::now();
                let answer = (job.run)(&mut self.model);
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
        let version = self.model.events_version;
        if self.events_published != Some(version) {
            self.events_shared = Arc::new(self.model.events.iter().cloned().collect());
            self.events_published = Some(version);
        }
        let snap = self.model.snapshot(self.events_shared.clone());
        self.published.send_replace(Arc::new(snap));
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// A message that outlives the cluster task (it entered the queue as the task
    /// stopped, and the queue is freed only with its last sender) must not leave its
    /// caller waiting forever: `run` ends with `None` once the task is gone.
    #[tokio::test]
    async fn a_command_whose_task_stopped_without_answering_ends_with_none() {
        let (tx, mut rx) = mpsc::channel(4);
        let text = "listen = \"127.0.0.1:0\"\nstate_dir = \"/nonexistent\"\nsecret_file = \"/nonexistent\"\n";
        let config = RouterConfig::parse(std::path::Path::new("router.toml"), text).unwrap();
        let (_published, snapshot) = watch::channel(Arc::new(Snapshot::empty()));
        let c = ClusterHandle {
            tx,
            inventory: Arc::new(HashSet::new()),
            config: Arc::new(config),
            snapshot,
        };
        // The "task": takes the message, keeps it (its reply channel alive), and stops.
        let task = tokio::spawn(async move {
            let kept = rx.recv().await;
            drop(rx);
            kept
        });
        let answer = tokio::time::timeout(
            std::time::Duration::from_secs(10),
            c.run(command::Inspect(|_: &mut Model| ())),
        )
        .await
        .expect("run() waited on a task that had stopped");
        assert!(answer.is_none());
        assert!(task.await.unwrap().is_some(), "the message was kept alive");
    }
}
