//! The store in etcd, for routers that share one cluster and elect a leader
//! (`crate::ha::leader`). Keys under `/wisp/<cluster>/`:
//!
//! - `leader`: the elector's key (not written here);
//! - `state`: the [`PersistedState`] as one JSON value;
//! - `sla`: the SLA book as one JSON value;
//! - `events/<seq, 20 digits>`: one event per key, and `event_head`: the next sequence
//!   number. Only keys below the head count, so a batch split over several txns (etcd
//!   takes at most 128 operations per txn) becomes visible all at once with its last
//!   txn, which also moves the head and trims the history to the newest `keep_events`.
//!
//! Every write is a txn conditional on the writer's leadership (the [`Fence`]'s token:
//! the leader key's create revision and lease). A router that lost the lead, even one
//! that does not know it yet, is refused by etcd and gets [`StoreError::NotLeader`].
//! Reads are not conditional: a router that just took over loads what its predecessor
//! stored.
//!
//! etcd keeps every revision of every key until the history is compacted; the store
//! compacts it itself every [`COMPACT_EVERY`] revisions, keeping the newest
//! [`COMPACT_KEEP`] (the members' disk files still need an occasional
//! `etcdctl defrag`).

pub mod client;

use std::path::PathBuf;

use tracing::{debug, warn};

use self::client::{EtcdClient, EtcdError, Op, Range, Txn, MAX_TXN_OPS};
use super::{PersistedState, Store, StoreError, STATE_VERSION};
use crate::events::Event;
use crate::ha::leader::{Fence, FenceToken};
use crate::model::sla::SlaBook;

/// Events kept in etcd by default (the file store keeps them all; etcd holds its data
/// in memory, so the history there is bounded).
pub const DEFAULT_KEEP_EVENTS: u64 = 10_000;

/// The store compacts etcd's history once this many revisions passed since the last
/// compaction...
pub const COMPACT_EVERY: i64 = 10_000;
/// ...keeping this many revisions.
pub const COMPACT_KEEP: i64 = 1_000;

/// Events per txn: etcd's limit less room for the head, the trim and the compares.
const EVENTS_PER_TXN: usize = MAX_TXN_OPS - 8;

/// Keys read per request when loading events (bounds one answer's size).
const EVENTS_PER_READ: u64 = 1_000;

#[derive(Debug, thiserror::Error)]
pub enum KeysError {
    #[error("bad cluster name {name:?}: use 1 to 64 of a-z, 0-9, '-' and '_'")]
    BadCluster { name: String },
}

/// The keys of one cluster.
#[derive(Debug, Clone)]
pub struct Keys {
    prefix: String,
}

impl Keys {
    pub fn new(cluster: &str) -> Result<Self, KeysError> {
        let ok = !cluster.is_empty()
            && cluster.len() <= 64
            && cluster
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_');
        if !ok {
            return Err(KeysError::BadCluster {
                name: cluster.to_owned(),
            });
        }
        Ok(Self {
            prefix: format!("/wisp/{cluster}/"),
        })
    }

    pub fn leader(&self) -> String {
        format!("{}leader", self.prefix)
    }
    pub fn state(&self) -> String {
        format!("{}state", self.prefix)
    }
    pub fn sla(&self) -> String {
        format!("{}sla", self.prefix)
    }
    pub fn event(&self, seq: u64) -> String {
        format!("{}events/{seq:020}", self.prefix)
    }
    pub fn event_head(&self) -> String {
        format!("{}event_head", self.prefix)
    }
}

/// A [`Store`] in etcd; its writes succeed only while `fence` holds the lead.
#[derive(Debug)]
pub struct EtcdStore {
    client: EtcdClient,
    keys: Keys,
    fence: Fence,
    keep_events: u64,
    /// The event head as this leadership knows it (re-read when the token changes).
    head: Option<(FenceToken, u64)>,
    last_compacted: i64,
}

impl EtcdStore {
    pub fn new(client: EtcdClient, cluster: &str, fence: Fence) -> Result<Self, KeysError> {
        Ok(Self {
            client,
            keys: Keys::new(cluster)?,
            fence,
            keep_events: DEFAULT_KEEP_EVENTS,
            head: None,
            last_compacted: 0,
        })
    }

    /// Keeps the newest `n` events (at least 1).
    pub fn keep_events(mut self, n: u64) -> Self {
        self.keep_events = n.max(1);
        self
    }

    fn etcd_err(&self, action: String) -> impl FnOnce(EtcdError) -> StoreError {
        move |source| StoreError::Etcd { action, source }
    }

    fn token(&self, what: &str) -> Result<FenceToken, StoreError> {
        self.fence.token().map_err(|e| StoreError::NotLeader {
            what: what.to_owned(),
            reason: e.reason,
        })
    }

    /// Runs `ops` only if `token` still leads.
    fn fenced(&mut self, token: FenceToken, what: &str, ops: Vec<Op>) -> Result<i64, StoreError> {
        let txn = Txn {
            compare: token.compares(&self.keys.leader()),
            success: ops,
            failure: vec![],
        };
        let r = self
            .client
            .txn(&txn)
            .map_err(self.etcd_err(format!("store the {what}")))?;
        if !r.succeeded {
            return Err(StoreError::NotLeader {
                what: what.to_owned(),
                reason: "etcd refused the write: the leader key is gone or another router's".into(),
            });
        }
        self.maybe_compact(r.revision);
        Ok(r.revision)
    }

    fn maybe_compact(&mut self, revision: i64) {
        if self.last_compacted == 0 {
            self.last_compacted = revision;
        }
        if revision - self.last_compacted < COMPACT_EVERY {
            return;
        }
        let to = revision - COMPACT_KEEP;
        match self.client.compact(to) {
            Ok(()) => debug!(revision = to, "etcd history compacted"),
            // Not fatal: another router may have compacted further already.
            Err(e) => warn!(error = %e, "cannot compact etcd's history"),
        }
        self.last_compacted = revision;
    }

    fn read_json<T: serde::de::DeserializeOwned>(
        &self,
        key: &str,
        what: &str,
    ) -> Result<Option<T>, StoreError> {
        let Some(kv) = self
            .client
            .get(key)
            .map_err(self.etcd_err(format!("read the {what}")))?
        else {
            return Ok(None);
        };
        serde_json::from_slice(&kv.value)
            .map(Some)
            .map_err(|e| StoreError::Corrupt {
                path: PathBuf::from(format!("etcd key {key}")),
                reason: e.to_string(),
            })
    }

    /// The event head stored in etcd (0 when no event was stored yet).
    fn stored_head(&self) -> Result<u64, StoreError> {
        let key = self.keys.event_head();
        Ok(self.read_json::<u64>(&key, "event head")?.unwrap_or(0))
    }
}

impl Store for EtcdStore {
    fn load(&self) -> Result<PersistedState, StoreError> {
        let key = self.keys.state();
        let Some(state) = self.read_json::<PersistedState>(&key, "state")? else {
            return Ok(PersistedState::empty());
        };
        if state.version != STATE_VERSION {
            return Err(StoreError::Corrupt {
                path: PathBuf::from(format!("etcd key {key}")),
                reason: format!(
                    "state version {} but this router reads version {STATE_VERSION}",
                    state.version
                ),
            });
        }
        Ok(state)
    }

    fn save(&mut self, state: &PersistedState) -> Result<(), StoreError> {
        let token = self.token("state")?;
        let value = serde_json::to_vec(state).map_err(|source| StoreError::Encode {
            what: "state",
            source,
        })?;
        let key = self.keys.state();
        self.fenced(token, "state", vec![put(key, value)])?;
        Ok(())
    }

    fn append_events(&mut self, events: &[Event]) -> Result<(), StoreError> {
        if events.is_empty() {
            return Ok(());
        }
        let token = self.token("events")?;
        let head = match self.head {
            Some((t, h)) if t == token => h,
            _ => self.stored_head()?,
        };
        let chunks: Vec<&[Event]> = events.chunks(EVENTS_PER_TXN).collect();
        let mut seq = head;
        for (i, chunk) in chunks.iter().enumerate() {
            let mut ops = Vec::with_capacity(chunk.len() + 2);
            for ev in *chunk {
                let value = serde_json::to_vec(ev).map_err(|source| StoreError::Encode {
                    what: "event",
                    source,
                })?;
                ops.push(put(self.keys.event(seq), value));
                seq += 1;
            }
            if i + 1 == chunks.len() {
                // The last txn publishes the whole batch and trims the oldest.
                ops.push(put(self.keys.event_head(), seq.to_string().into_bytes()));
                if seq > self.keep_events {
                    ops.push(Op::Delete {
                        key: self.keys.event(0),
                        range_end: Some(self.keys.event(seq - self.keep_events)),
                    });
                }
            }
            // A failure part-way leaves keys at or above the stored head: invisible,
            // and overwritten by the retry, which starts from the same head.
            self.fenced(token, "events", ops)?;
        }
        self.head = Some((token, seq));
        Ok(())
    }

    fn recent_events(&self, limit: usize) -> Result<Vec<Event>, StoreError> {
        let head = self.stored_head()?;
        let mut from = head.saturating_sub(limit as u64);
        let mut out = Vec::with_capacity(limit.min(4096));
        while from < head {
            let to = (from + EVENTS_PER_READ).min(head);
            let range = Range::between(self.keys.event(from), self.keys.event(to));
            let kvs = self
                .client
                .range(&range)
                .map_err(self.etcd_err("read the events".into()))?;
            for kv in kvs {
                let ev = serde_json::from_slice(&kv.value).map_err(|e| StoreError::Corrupt {
                    path: PathBuf::from(format!("etcd key {}", kv.key)),
                    reason: e.to_string(),
                })?;
                out.push(ev);
            }
            from = to;
        }
        Ok(out)
    }

    fn load_sla(&self) -> Result<SlaBook, StoreError> {
        Ok(self
            .read_json::<SlaBook>(&self.keys.sla(), "SLA book")?
            .unwrap_or_default())
    }

    fn save_sla(&mut self, book: &SlaBook) -> Result<(), StoreError> {
        let token = self.token("SLA book")?;
        let value = serde_json::to_vec(book).map_err(|source| StoreError::Encode {
            what: "SLA book",
            source,
        })?;
        let key = self.keys.sla();
        self.fenced(token, "SLA book", vec![put(key, value)])?;
        Ok(())
    }
}

fn put(key: String, value: Vec<u8>) -> Op {
    Op::Put {
        key,
        value,
        lease: 0,
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn keys_sort_by_sequence_and_bad_cluster_names_are_refused() {
        let k = Keys::new("prod-1").unwrap();
        assert_eq!(k.leader(), "/wisp/prod-1/leader");
        assert_eq!(k.event(42), "/wisp/prod-1/events/00000000000000000042");
        assert!(k.event(9) < k.event(10) && k.event(10) < k.event(u64::MAX));
        for bad in ["", "A", "a/b", "a b", &"x".repeat(65)] {
            let e = Keys::new(bad).unwrap_err().to_string();
            assert!(e.contains(&format!("{bad:?}")), "{e}");
        }
    }

    #[test]
    fn a_store_without_the_lead_refuses_to_write_before_asking_etcd() {
        // Nothing listens on port 9: had it asked etcd, the error would say so.
        let client = EtcdClient::new(&["127.0.0.1:9".into()], client::REQUEST_TIMEOUT).unwrap();
        let fence = crate::ha::leader::Elector::start(crate::ha::leader::ElectorConfig::new(
            "c1",
            &["127.0.0.1:9".into()],
            "x:1",
        ))
        .unwrap()
        .fence();
        let mut s = EtcdStore::new(client, "c1", fence).unwrap();
        let e = s.save(&PersistedState::empty()).unwrap_err();
        assert!(matches!(e, StoreError::NotLeader { .. }), "{e}");
        assert!(e.to_string().contains("not the leader any more"), "{e}");
    }
}
