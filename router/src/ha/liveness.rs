//! The genies' liveness in etcd, as the leader watches it (replicated routers).
//!
//! Each genie configured with `etcd = [...]` keeps its key `/wisp/<cluster>/genies/<host>`
//! alive with a lease of its own, and kills its VMs when it cannot renew that lease
//! before a deadline of its own clock that falls before etcd can expire it
//! (`genie::liveness`). So once etcd has dropped the key, the genie has killed its VMs
//! (its kill takes milliseconds; the margin covers that and this watcher's polling):
//! for a silent host whose BMC cannot answer, "its key has been gone for
//! `lease_margin_ms`" is a proof that it runs nothing, and the fence reconciler uses it
//! ([`super::fence`]).
//!
//! Conservative on purpose: a host counts only once this watcher has *seen* its key
//! (a genie without `etcd` in its config never self-fences this way, so its absent key
//! proves nothing), and a failed read of etcd forgets every absence (nothing is known
//! while etcd does not answer; the count starts again from the next good read).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tracing::{info, warn};
use wisp_common::etcd::{genies_prefix, EtcdClient, EtcdError, Range};
use wisp_common::HostId;

/// How often the keys are read.
pub const POLL: Duration = Duration::from_millis(250);

#[derive(Debug, Default)]
struct Seen {
    /// Hosts whose key this watcher has seen at least once.
    known: HashSet<String>,
    /// When a known host's key was first found missing (since the last good read
    /// that had it).
    absent_since: HashMap<String, Instant>,
}

/// The leader's view of the genies' etcd leases; cheap to clone.
#[derive(Debug, Clone)]
pub struct GenieLiveness {
    seen: Arc<Mutex<Seen>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl GenieLiveness {
    /// Starts watching the keys of `cluster` on `client` (on a thread of its own).
    pub fn spawn(client: EtcdClient, cluster: &str) -> std::io::Result<Self> {
        let me = Self {
            seen: Arc::new(Mutex::new(Seen::default())),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        };
        let prefix = genies_prefix(cluster);
        let w = me.clone();
        std::thread::Builder::new()
            .name("wisp-genie-leases".into())
            .spawn(move || w.watch(&client, &prefix))?;
        Ok(me)
    }

    /// A view fed by hand (tests of the fence rules).
    pub fn manual() -> Self {
        Self {
            seen: Arc::new(Mutex::new(Seen::default())),
            stop: Arc::new(std::sync::atomic::AtomicBool::new(true)),
        }
    }

    /// Stops the watcher (its thread ends within one poll).
    pub fn stop(&self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// How long `host`'s liveness key has been seen missing, if this watcher saw it
    /// before and it is missing now.
    pub fn gone_for(&self, host: &HostId) -> Option<Duration> {
        self.lock()
            .absent_since
            .get(host.as_str())
            .map(|t| t.elapsed())
    }

    /// Records one read of the keys: the hosts present, or `None` for a failed read.
    pub fn observe(&self, present: Option<HashSet<String>>) {
        let mut s = self.lock();
        let Some(present) = present else {
            s.absent_since.clear();
            return;
        };
        let now = Instant::now();
        for h in &present {
            if s.absent_since.remove(h).is_some() {
                info!(host = %h, "the genie's etcd lease is back");
            }
            s.known.insert(h.clone());
        }
        let missing: Vec<String> = s
            .known
            .iter()
            .filter(|h| !present.contains(*h))
            .cloned()
            .collect();
        for h in missing {
            s.absent_since.entry(h.clone()).or_insert_with(|| {
                warn!(host = %h, "the genie's etcd lease expired");
                now
            });
        }
    }

    fn watch(&self, client: &EtcdClient, prefix: &str) {
        let range = Range::between(prefix, prefix_end(prefix));
        let mut failing = false;
        while !self.stop.load(std::sync::atomic::Ordering::Relaxed) {
            match read(client, &range, prefix) {
                Ok(p) => {
                    failing = false;
                    self.observe(Some(p));
                }
                Err(e) => {
                    if !failing {
                        warn!(error = %wisp_common::error::chain(&e), "cannot read the genies' etcd leases; no host is proven off by its lease meanwhile");
                    }
                    failing = true;
                    self.observe(None);
                }
            }
            std::thread::sleep(POLL);
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Seen> {
        self.seen.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

fn read(client: &EtcdClient, range: &Range, prefix: &str) -> Result<HashSet<String>, EtcdError> {
    Ok(client
        .range(range)?
        .into_iter()
        .filter_map(|kv| kv.key.strip_prefix(prefix).map(str::to_owned))
        .collect())
}

/// The end of the range of every key starting with `prefix` (its last byte + 1).
fn prefix_end(prefix: &str) -> String {
    let mut b = prefix.as_bytes().to_vec();
    if let Some(last) = b.last_mut() {
        *last += 1;
    }
    String::from_utf8(b).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    fn set(hosts: &[&str]) -> Option<HashSet<String>> {
        Some(hosts.iter().map(|h| h.to_string()).collect())
    }

    #[test]
    fn only_a_key_seen_then_missing_counts_and_a_failed_read_forgets() {
        let l = GenieLiveness::manual();
        let (h1, h2) = (HostId::new("h1").unwrap(), HostId::new("h2").unwrap());
        // Never seen: its absence proves nothing.
        l.observe(set(&[]));
        assert_eq!(l.gone_for(&h1), None);
        l.observe(set(&["h1", "h2"]));
        assert_eq!(l.gone_for(&h1), None);
        l.observe(set(&["h2"]));
        assert!(l.gone_for(&h1).is_some());
        assert_eq!(l.gone_for(&h2), None);
        // etcd unreachable: nothing is known, the count starts again.
        l.observe(None);
        assert_eq!(l.gone_for(&h1), None);
        l.observe(set(&["h2"]));
        assert!(l.gone_for(&h1).unwrap() < Duration::from_secs(1));
        // Back: no longer gone.
        l.observe(set(&["h1", "h2"]));
        assert_eq!(l.gone_for(&h1), None);
    }

    #[test]
    fn the_prefix_range_ends_just_after_the_prefix() {
        assert_eq!(prefix_end("/wisp/c/genies/"), "/wisp/c/genies0");
    }
}
