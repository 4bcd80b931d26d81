//! The in-memory store for tests: it keeps what it is given, counts the writes, and
//! can fail every write as a full disk would or be slow as a bad disk is.
//!
//! Once handed to the cluster task the store belongs to the writer thread; a test that
//! wants to look at it or change its faults afterwards passes a [`SharedMemStore`]
//! (`MemStore::shared()`) and keeps a clone.

use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use super::{PersistedState, Store, StoreError};
use crate::events::Event;
use crate::model::sla::SlaBook;

/// In-memory store with injectable faults.
#[derive(Debug, Default, Clone)]
pub struct MemStore {
    pub state: Option<PersistedState>,
    pub events: Vec<Event>,
    pub sla: Option<SlaBook>,
    /// Every write fails with "no space left on device".
    pub fail_writes: bool,
    /// Each event append takes this long (a slow disk).
    pub event_delay: Duration,
    /// Each SLA write takes this long.
    pub sla_delay: Duration,
    /// Successful state writes.
    pub saves: usize,
    /// Successful event appends (batches, not events).
    pub event_appends: usize,
    /// Successful SLA writes.
    pub sla_saves: usize,
}

/// A [`MemStore`] that a test can still reach after handing it over.
pub type SharedMemStore = Arc<Mutex<MemStore>>;

impl MemStore {
    /// This store, shareable with the test.
    pub fn shared(self) -> SharedMemStore {
        Arc::new(Mutex::new(self))
    }

    fn check(&self) -> Result<(), StoreError> {
        if self.fail_writes {
            return Err(StoreError::Write {
                path: "mem".into(),
                source: std::io::Error::new(
                    std::io::ErrorKind::StorageFull,
                    "injected: no space left on device",
                ),
            });
        }
        Ok(())
    }

    fn append_now(&mut self, events: &[Event]) -> Result<(), StoreError> {
        self.check()?;
        self.event_appends += 1;
        self.events.extend_from_slice(events);
        Ok(())
    }

    fn save_sla_now(&mut self, book: &SlaBook) -> Result<(), StoreError> {
        self.check()?;
        self.sla_saves += 1;
        self.sla = Some(book.clone());
        Ok(())
    }
}

impl Store for MemStore {
    fn load(&self) -> Result<PersistedState, StoreError> {
        Ok(self.state.clone().unwrap_or_else(PersistedState::empty))
    }

    fn save(&mut self, state: &PersistedState) -> Result<(), StoreError> {
        self.check()?;
        self.saves += 1;
        self.state = Some(state.clone());
        Ok(())
    }

    fn append_events(&mut self, events: &[Event]) -> Result<(), StoreError> {
        std::thread::sleep(self.event_delay);
        self.append_now(events)
    }

    fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let start = self.events.len().saturating_sub(limit);
        Ok(self.events[start..].to_vec())
    }

    fn load_sla(&self) -> Result<SlaBook, StoreError> {
        Ok(self.sla.clone().unwrap_or_default())
    }

    fn save_sla(&mut self, book: &SlaBook) -> Result<(), StoreError> {
        std::thread::sleep(self.sla_delay);
        self.save_sla_now(book)
    }
}

/// The lock, also after a test panicked while holding it.
fn lock(m: &Mutex<MemStore>) -> MutexGuard<'_, MemStore> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// The delays are slept without the lock, so a test can look at the store meanwhile.
impl Store for SharedMemStore {
    fn load(&self) -> Result<PersistedState, StoreError> {
        lock(self).load()
    }

    fn save(&mut self, state: &PersistedState) -> Result<(), StoreError> {
        lock(self).save(state)
    }

    fn append_events(&mut self, events: &[Event]) -> Result<(), StoreError> {
        let delay = lock(self).event_delay;
        std::thread::sleep(delay);
        lock(self).append_now(events)
    }

    fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        lock(self).recent_events(limit)
    }

    fn load_sla(&self) -> Result<SlaBook, StoreError> {
        lock(self).load_sla()
    }

    fn save_sla(&mut self, book: &SlaBook) -> Result<(), StoreError> {
        let delay = lock(self).sla_delay;
        std::thread::sleep(delay);
        lock(self).save_sla_now(book)
    }
}
