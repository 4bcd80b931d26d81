//! The writer: the one owner of the store backend, on a blocking thread of its own, fed
//! by a channel from [`StoreHandle`]s. It exists so that no fsync runs on the cluster
//! task, which also applies about a thousand genie reports per second.
//!
//! Each time it wakes it takes everything queued, then: writes the commits in order
//! (each one answered: someone waits for it), appends all queued events in one batch
//! (one fsync), writes the newest SLA book only, and answers flushes last. Events and
//! SLA books that could not be written are kept and retried with the next batch, or
//! after [`RETRY`] when nothing new arrives; the first failure is logged as an error,
//! the recovery as info. When every handle is gone it writes what is left and stops.

use std::collections::VecDeque;
use std::sync::mpsc::{self, RecvTimeoutError};
use std::time::Duration;

use tokio::sync::oneshot;
use tracing::{debug, error, info};
use wisp_common::error::chain;

use super::{PersistedState, Store, StoreError};
use crate::events::Event;
use crate::model::sla::SlaBook;

/// How soon unwritten events or an unwritten SLA book are tried again when nothing new
/// arrives: often enough that a freed disk catches up within seconds, rarely enough
/// that a full one is not hammered.
pub const RETRY: Duration = Duration::from_secs(5);

/// Unwritten events kept for a retry. A full disk that stays full must not eat the
/// router's memory; at a few hundred bytes an event this is a few megabytes, hours of
/// a busy cluster's history. Beyond it the oldest are dropped, and the log says so.
pub const MAX_UNWRITTEN_EVENTS: usize = 10_000;

/// Commands taken per wake-up at most, so that a flood of events cannot hold back the
/// answer to a commit for long.
const MAX_BATCH: usize = 10_000;

type Reply = Result<(), StoreError>;

/// Where the answer to a commit or flush goes: an async caller awaits a oneshot; a
/// caller on the cluster task blocks on a std channel (a tokio oneshot's blocking
/// receive panics inside the runtime).
enum Ack {
    Blocking(mpsc::SyncSender<Reply>),
    Async(oneshot::Sender<Reply>),
}

impl Ack {
    fn send(self, r: Reply) {
        // The caller may have given up waiting (shutdown): nothing left to tell.
        match self {
            Ack::Blocking(tx) => {
                let _ = tx.send(r);
            }
            Ack::Async(tx) => {
                let _ = tx.send(r);
            }
        }
    }
}

enum Cmd {
    Commit {
        state: Box<PersistedState>,
        ack: Ack,
    },
    Event(Event),
    Sla(Box<SlaBook>),
    Flush(Ack),
}

/// A cheap, cloneable way to the writer. The writer stops when the last handle is
/// dropped, after writing what was queued.
#[derive(Debug, Clone)]
pub struct StoreHandle {
    tx: mpsc::Sender<Cmd>,
}

/// Starts the writer on a blocking thread; the join handle completes when it has
/// written everything and stopped (after the last [`StoreHandle`] is dropped).
///
/// Must be called inside a tokio runtime.
pub fn spawn_writer(backend: Box<dyn Store>) -> (StoreHandle, tokio::task::JoinHandle<()>) {
    let (tx, rx) = mpsc::channel();
    let join = tokio::task::spawn_blocking(move || Writer::new(backend).run(rx));
    (StoreHandle { tx }, join)
}

impl StoreHandle {
    fn send(&self, cmd: Cmd) -> Result<(), StoreError> {
        self.tx.send(cmd).map_err(|_| StoreError::WriterGone)
    }

    /// Stores `state` and returns once it is durable (or with the reason it is not).
    pub async fn commit(&self, state: PersistedState) -> Result<(), StoreError> {
        let (ack, rx) = oneshot::channel();
        self.send(Cmd::Commit {
            state: Box::new(state),
            ack: Ack::Async(ack),
        })?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }

    /// [`Self::commit`] for synchronous code (the cluster task's `Model::update`):
    /// blocks the calling thread until the write is done. On a multi-threaded runtime
    /// the thread's other tasks move to other workers meanwhile.
    pub fn commit_blocking(&self, state: PersistedState) -> Result<(), StoreError> {
        let (ack, rx) = mpsc::sync_channel(1);
        self.send(Cmd::Commit {
            state: Box::new(state),
            ack: Ack::Blocking(ack),
        })?;
        wait_blocking(|| rx.recv()).map_err(|_| StoreError::WriterGone)?
    }

    /// Queues `event` for appending and returns at once. An error only means the
    /// writer is gone; a failed write is logged (and retried) by the writer.
    pub fn append_event(&self, event: Event) -> Result<(), StoreError> {
        self.send(Cmd::Event(event))
    }

    /// Queues `book` to replace the stored SLA book and returns at once (see
    /// [`Self::append_event`]).
    pub fn save_sla(&self, book: SlaBook) -> Result<(), StoreError> {
        self.send(Cmd::Sla(Box::new(book)))
    }

    /// Waits until everything sent before was written; the error says what is not.
    pub async fn flush(&self) -> Result<(), StoreError> {
        let (ack, rx) = oneshot::channel();
        self.send(Cmd::Flush(Ack::Async(ack)))?;
        rx.await.map_err(|_| StoreError::WriterGone)?
    }
}

/// Runs `f`, which blocks, without stalling the runtime's other tasks where the
/// runtime allows it (`block_in_place` exists only on the multi-threaded runtime).
fn wait_blocking<T>(f: impl FnOnce() -> T) -> T {
    use tokio::runtime::{Handle, RuntimeFlavor};
    match Handle::try_current() {
        Ok(h) if h.runtime_flavor() == RuntimeFlavor::MultiThread => tokio::task::block_in_place(f),
        _ => f(),
    }
}

struct Writer {
    backend: Box<dyn Store>,
    /// Events not yet written, oldest first.
    events: VecDeque<Event>,
    /// The newest SLA book not yet written.
    sla: Option<Box<SlaBook>>,
    events_failing: bool,
    sla_failing: bool,
    /// Events dropped because too many were unwritten.
    dropped: u64,
}

impl Writer {
    fn new(backend: Box<dyn Store>) -> Self {
        Self {
            backend,
            events: VecDeque::new(),
            sla: None,
            events_failing: false,
            sla_failing: false,
            dropped: 0,
        }
    }

    fn run(mut self, rx: mpsc::Receiver<Cmd>) {
        loop {
            let first = if self.events.is_empty() && self.sla.is_none() {
                match rx.recv() {
                    Ok(cmd) => Some(cmd),
                    Err(_) => break,
                }
            } else {
                match rx.recv_timeout(RETRY) {
                    Ok(cmd) => Some(cmd),
                    Err(RecvTimeoutError::Timeout) => None,
                    Err(RecvTimeoutError::Disconnected) => break,
                }
            };
            let mut commits = Vec::new();
            let mut flushes = Vec::new();
            let queued = std::iter::from_fn(|| rx.try_recv().ok());
            for cmd in first.into_iter().chain(queued).take(MAX_BATCH) {
                match cmd {
                    Cmd::Commit { state, ack } => commits.push((state, ack)),
                    Cmd::Event(ev) => self.queue_event(ev),
                    Cmd::Sla(book) => self.sla = Some(book),
                    Cmd::Flush(ack) => flushes.push(ack),
                }
            }
            // Commits first: a caller waits for each (the cluster task, between
            // reports); events and SLA books are history nobody waits for. Only their
            // order among themselves is kept.
            for (state, ack) in commits {
                ack.send(self.backend.save(&state));
            }
            self.write_events();
            self.write_sla();
            for ack in flushes {
                ack.send(self.behind());
            }
        }
        // Every handle is gone (the router stops): a last try, then say what is lost.
        self.write_events();
        self.write_sla();
        if let Err(e) = self.behind() {
            error!(error = %e, "the router stops with history the store could not take; it is lost");
        }
        debug!("store writer stopped");
    }

    fn queue_event(&mut self, ev: Event) {
        if self.events.len() == MAX_UNWRITTEN_EVENTS {
            self.events.pop_front();
            self.dropped += 1;
            // The first drop, then every thousandth: loud, but not a line per event.
            if self.dropped % 1000 == 1 {
                error!(
                    dropped = self.dropped,
                    "events could not be stored for too long; the oldest unwritten ones are dropped"
                );
            }
        }
        self.events.push_back(ev);
    }

    fn write_events(&mut self) {
        if self.events.is_empty() {
            return;
        }
        let n = self.events.len();
        match self.backend.append_events(self.events.make_contiguous()) {
            Ok(()) => {
                self.events.clear();
                if self.events_failing {
                    self.events_failing = false;
                    info!(
                        events = n,
                        "events are stored again; the delayed ones are written"
                    );
                }
            }
            Err(e) if self.events_failing => {
                debug!(error = %chain(&e), unwritten = n, "events still cannot be stored");
            }
            Err(e) => {
                self.events_failing = true;
                error!(
                    error = %chain(&e),
                    unwritten = n,
                    "could not store events; they are kept in memory and retried"
                );
            }
        }
    }

    fn write_sla(&mut self) {
        let Some(book) = &self.sla else { return };
        match self.backend.save_sla(book) {
            Ok(()) => {
                self.sla = None;
                if self.sla_failing {
                    self.sla_failing = false;
                    info!("the SLA history is stored again");
                }
            }
            Err(e) if self.sla_failing => {
                debug!(error = %chain(&e), "the SLA history still cannot be stored");
            }
            Err(e) => {
                self.sla_failing = true;
                error!(
                    error = %chain(&e),
                    "could not store the SLA history; it is kept in memory and retried"
                );
            }
        }
    }

    /// What is still unwritten, as an error.
    fn behind(&self) -> Reply {
        if self.events.is_empty() && self.sla.is_none() {
            return Ok(());
        }
        Err(StoreError::Unwritten {
            events: self.events.len(),
            sla_books: usize::from(self.sla.is_some()),
        })
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use crate::events::EventKind;
    use crate::store::MemStore;

    fn ev(at_ms: u64) -> Event {
        Event::new(at_ms, EventKind::Power, None, None, format!("e{at_ms}"))
    }

    fn state(epoch: u64) -> PersistedState {
        PersistedState {
            next_epoch: epoch,
            ..PersistedState::empty()
        }
    }

    #[tokio::test]
    async fn events_commits_and_sla_keep_their_order() {
        let mem = MemStore::default().shared();
        let (store, done) = spawn_writer(Box::new(mem.clone()));
        for i in 0..500 {
            store.append_event(ev(i)).unwrap();
            if i % 100 == 0 {
                store.commit(state(i + 1)).await.unwrap();
                let mut book = SlaBook::default();
                book.vms.insert(
                    wisp_common::VmId::new(format!("vm{i}")).unwrap(),
                    Default::default(),
                );
                store.save_sla(book).unwrap();
            }
        }
        store.flush().await.unwrap();
        {
            let m = mem.lock().unwrap();
            let got: Vec<u64> = m.events.iter().map(|e| e.at_ms).collect();
            assert_eq!(got, (0..500).collect::<Vec<_>>());
            assert_eq!(m.state.as_ref().unwrap().next_epoch, 401);
            assert_eq!(m.saves, 5);
            let sla = m.sla.as_ref().unwrap();
            assert!(sla
                .vms
                .contains_key(&wisp_common::VmId::new("vm400").unwrap()));
            // Fewer appends than events: queued events share one fsync.
            assert!(m.event_appends <= 500);
        }
        drop(store);
        done.await.unwrap();
    }

    #[tokio::test]
    async fn a_failed_commit_is_reported_and_failed_events_are_kept_until_written() {
        let mem = MemStore::default().shared();
        let (store, done) = spawn_writer(Box::new(mem.clone()));
        store.commit(state(2)).await.unwrap();
        mem.lock().unwrap().fail_writes = true;

        let e = store.commit(state(3)).await.unwrap_err();
        assert!(
            wisp_common::error::chain(&e).contains("no space left"),
            "{e}"
        );
        // Also from synchronous code.
        assert!(store.commit_blocking(state(3)).is_err());
        for i in 0..3 {
            store.append_event(ev(i)).unwrap();
        }
        store.save_sla(SlaBook::default()).unwrap();
        match store.flush().await {
            Err(StoreError::Unwritten {
                events: 3,
                sla_books: 1,
            }) => {}
            other => panic!("{other:?}"),
        }
        assert_eq!(mem.lock().unwrap().state.as_ref().unwrap().next_epoch, 2);

        // The disk is freed: the kept events go out first, in order, then the new one.
        mem.lock().unwrap().fail_writes = false;
        store.append_event(ev(3)).unwrap();
        store.flush().await.unwrap();
        {
            let m = mem.lock().unwrap();
            let got: Vec<u64> = m.events.iter().map(|e| e.at_ms).collect();
            assert_eq!(got, vec![0, 1, 2, 3]);
            assert_eq!(m.sla_saves, 1);
        }
        drop(store);
        done.await.unwrap();
    }

    #[tokio::test]
    async fn a_commit_does_not_wait_behind_queued_slow_events() {
        let mem = MemStore {
            event_delay: Duration::from_millis(200),
            ..Default::default()
        }
        .shared();
        let (store, done) = spawn_writer(Box::new(mem.clone()));
        // One append in progress and ten queued behind it; the queued ten are one batch.
        store.append_event(ev(0)).unwrap();
        tokio::time::sleep(Duration::from_millis(20)).await;
        for i in 1..=10 {
            store.append_event(ev(i)).unwrap();
        }
        let t = std::time::Instant::now();
        store.commit(state(5)).await.unwrap();
        // At most the append in progress (200 ms), not eleven of them.
        assert!(
            t.elapsed() < Duration::from_millis(1000),
            "{:?}",
            t.elapsed()
        );
        store.flush().await.unwrap();
        assert_eq!(mem.lock().unwrap().events.len(), 11);
        assert!(mem.lock().unwrap().event_appends <= 3);
        drop(store);
        done.await.unwrap();
    }

    #[tokio::test]
    async fn the_writer_writes_what_is_queued_before_it_stops() {
        let mem = MemStore {
            event_delay: Duration::from_millis(50),
            ..Default::default()
        }
        .shared();
        let (store, done) = spawn_writer(Box::new(mem.clone()));
        for i in 0..20 {
            store.append_event(ev(i)).unwrap();
        }
        drop(store);
        done.await.unwrap();
        assert_eq!(mem.lock().unwrap().events.len(), 20);
    }
}
