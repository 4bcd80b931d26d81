//! Router redundancy: which of several routers leads, decided in etcd with a lease.
//!
//! **Campaign.** Each router runs an [`Elector`]. It reads `/wisp/<cluster>/leader`
//! every `poll`; when the key is absent it creates it in a txn (`create_revision == 0`)
//! bound to its own lease of `ttl` (2 s by default, etcd's minimum with a 1 s election
//! timeout). The key's value names the leader's API address, so followers know where
//! to forward.
//!
//! **Holding it.** The leader renews its lease every `ttl / 3` and checks that the key
//! is still its own. Its [`Fence`] yields a [`FenceToken`] (the key's create revision
//! and the lease) that every leader-only write carries as a txn compare: once the key
//! is gone or belongs to another, etcd refuses the write, whatever the deposed router
//! believes.
//!
//! **Losing it without being told.** etcd expires a lease no earlier than `ttl` after
//! it *received* the last renewal, which is after we *sent* it. So the leader counts
//! `ttl - ttl/4` from the sending of its last successful renewal, on `CLOCK_BOOTTIME`
//! (monotonic, never set by NTP, and unlike `CLOCK_MONOTONIC` it keeps counting while
//! the machine is suspended), and steps down when that runs out: before etcd can have
//! let another router in. Every etcd call of a leader is bounded by that deadline, and
//! the fence checks it on every use, so the step-down is never late by a hung request.
//!
//! **Getting it back.** If etcd was unreachable only for a while (its own leader died),
//! the lease may have survived (a new etcd leader extends every lease). A router that
//! stepped down keeps its lease id; if the key still carries it and a renewal succeeds,
//! it leads again with the same token, because nobody else can have held the key.

use std::sync::mpsc::{self, RecvTimeoutError};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tokio::sync::watch;
use tracing::{info, warn};
use wisp_common::error::chain;

use crate::store::etcd::client::{
    Cmp, EtcdClient, EtcdError, Lease, Op, OpResult, Txn, REQUEST_TIMEOUT,
};
use crate::store::etcd::{Keys, KeysError};

/// The lease TTL asked for: etcd 3.4 raises anything shorter to 1.5 election timeouts
/// (2 s with `--election-timeout 1000`), so asking less gains nothing.
pub const DEFAULT_TTL: Duration = Duration::from_secs(2);

/// How often a follower looks at the leader key: it adds at most this to a takeover.
pub const DEFAULT_POLL: Duration = Duration::from_millis(100);

/// How soon a failed renewal is tried again (within the lease's remaining time).
const RENEW_RETRY: Duration = Duration::from_millis(100);

/// Time granted to the revocation at resignation (it only speeds the takeover up).
const RESIGN_BUDGET: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum LeaderError {
    #[error(transparent)]
    Keys(#[from] KeysError),
    #[error("bad election setting: {0}")]
    BadConfig(String),
    #[error("cannot use the etcd endpoints")]
    Etcd(#[from] EtcdError),
    #[error("cannot start the election thread")]
    Spawn(#[source] std::io::Error),
}

/// A write was attempted without the lead (or after it ran out).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("not the leader any more: {reason}")]
pub struct NotLeader {
    pub reason: String,
}

/// The leading router as its key names it: where its API is, and (from routers that
/// publish them) its name and genie link, which followers hand to genies.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct LeaderInfo {
    pub api: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub link: Option<String>,
}

impl From<&str> for LeaderInfo {
    /// A leader known by its API address alone.
    fn from(api: &str) -> Self {
        Self {
            api: api.to_owned(),
            ..Self::default()
        }
    }
}

impl LeaderInfo {
    /// Its name, or its API address when it published none.
    pub fn display_name(&self) -> &str {
        self.name.as_deref().unwrap_or(&self.api)
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Role {
    /// `leader` is the leading router, when known.
    Follower { leader: Option<LeaderInfo> },
    /// `term` is the leader key's create revision: it only grows from one leadership
    /// to the next.
    Leader { term: i64 },
}

impl Role {
    pub fn is_leader(&self) -> bool {
        matches!(self, Role::Leader { .. })
    }
}

/// What makes a leader's write conditional: the leader key must still have this
/// create revision and lease when the write is applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct FenceToken {
    pub create_revision: i64,
    pub lease: i64,
}

impl FenceToken {
    /// The txn compares that hold only while this token's leadership lasts.
    pub fn compares(&self, leader_key: &str) -> Vec<Cmp> {
        vec![
            Cmp::CreateRevision(leader_key.to_owned(), self.create_revision),
            Cmp::Lease(leader_key.to_owned(), self.lease),
        ]
    }
}

#[derive(Debug, Clone, Copy)]
enum FenceState {
    None,
    /// Ours until `until` on [`clock`].
    Held {
        token: FenceToken,
        until: Duration,
    },
    Fixed(FenceToken),
}

/// The current leadership, shared by the elector and whoever writes for the leader.
#[derive(Debug, Clone)]
pub struct Fence {
    inner: Arc<Mutex<FenceState>>,
}

impl Fence {
    fn new() -> Self {
        Self {
            inner: Arc::new(Mutex::new(FenceState::None)),
        }
    }

    /// A fence that always offers `token`, whatever etcd thinks: to prove that etcd
    /// refuses a deposed leader's writes (tests), or for tools that took a token by
    /// hand.
    pub fn fixed(token: FenceToken) -> Self {
        Self {
            inner: Arc::new(Mutex::new(FenceState::Fixed(token))),
        }
    }

    /// The token to write with, if this router leads and its lease has not run out
    /// by its own clock.
    pub fn token(&self) -> Result<FenceToken, NotLeader> {
        match *self.lock() {
            FenceState::Fixed(token) => Ok(token),
            FenceState::Held { token, until } if clock() < until => Ok(token),
            FenceState::Held { .. } => Err(NotLeader {
                reason: "the lease was not renewed in time".into(),
            }),
            FenceState::None => Err(NotLeader {
                reason: "this router does not lead".into(),
            }),
        }
    }

    /// How much longer this router may act as the leader by its own clock: the token
    /// and the time left before its step-down (unbounded for a fixed fence).
    pub fn remaining(&self) -> Result<(FenceToken, Duration), NotLeader> {
        let state = *self.lock();
        let now = clock();
        match state {
            FenceState::Fixed(token) => Ok((token, Duration::MAX)),
            FenceState::Held { token, until } if now < until => Ok((token, until - now)),
            FenceState::Held { .. } => Err(NotLeader {
                reason: "the lease was not renewed in time".into(),
            }),
            FenceState::None => Err(NotLeader {
                reason: "this router does not lead".into(),
            }),
        }
    }

    /// A fence held until `for_` from now, then run out (tests of what is gated).
    pub fn held_for(token: FenceToken, for_: Duration) -> Self {
        Self {
            inner: Arc::new(Mutex::new(FenceState::Held {
                token,
                until: clock() + for_,
            })),
        }
    }

    fn set(&self, state: FenceState) {
        *self.lock() = state;
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FenceState> {
        // The state is one plain value: a panic elsewhere cannot leave it half-written.
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// `CLOCK_BOOTTIME`: monotonic and counting through suspend (see the module header).
pub fn clock() -> Duration {
    use nix::time::{clock_gettime, ClockId};
    // Linux always has CLOCK_BOOTTIME; were it to fail, MONOTONIC is the next best.
    let ts = clock_gettime(ClockId::CLOCK_BOOTTIME)
        .or_else(|_| clock_gettime(ClockId::CLOCK_MONOTONIC))
        .unwrap_or_else(|_| nix::sys::time::TimeSpec::new(0, 0));
    Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32)
}

#[derive(Debug, Clone)]
pub struct ElectorConfig {
    /// The cluster's name: the keys live under `/wisp/<cluster>/`.
    pub cluster: String,
    pub endpoints: Vec<String>,
    /// This router's API address, which followers forward to while it leads.
    pub api: String,
    /// This router's name and genie link address, which followers name to genies.
    pub name: Option<String>,
    pub link: Option<String>,
    pub ttl: Duration,
    pub poll: Duration,
    /// Per etcd request and endpoint.
    pub request_timeout: Duration,
}

impl ElectorConfig {
    pub fn new(cluster: &str, endpoints: &[String], api: &str) -> Self {
        Self {
            cluster: cluster.to_owned(),
            endpoints: endpoints.to_vec(),
            api: api.to_owned(),
            name: None,
            link: None,
            ttl: DEFAULT_TTL,
            poll: DEFAULT_POLL,
            request_timeout: REQUEST_TIMEOUT,
        }
    }
}

enum Stop {
    /// Revoke the lease, so that another router takes over at once.
    Resign,
    /// Just stop, as a killed router would: the lease runs out by itself.
    Crash,
}

/// Campaigns for the lead on its own thread until resigned or dropped. Dropping it
/// resigns; both wait for the thread (its etcd call in flight, then the revocation:
/// up to about two seconds), so async code should do it in `spawn_blocking`.
#[derive(Debug)]
pub struct Elector {
    role: watch::Receiver<Role>,
    fence: Fence,
    stop: Option<mpsc::Sender<Stop>>,
    thread: Option<JoinHandle<()>>,
}

impl Elector {
    /// Starts campaigning; returns at once (the first [`Role`] is a follower that does
    /// not know the leader yet).
    pub fn start(cfg: ElectorConfig) -> Result<Self, LeaderError> {
        let keys = Keys::new(&cfg.cluster)?;
        if cfg.ttl < Duration::from_secs(1) {
            return Err(LeaderError::BadConfig(format!(
                "the lease TTL must be at least 1 s, not {:?}",
                cfg.ttl
            )));
        }
        if cfg.poll.is_zero() || cfg.poll > cfg.ttl {
            return Err(LeaderError::BadConfig(format!(
                "the poll interval must be above 0 and at most the TTL, not {:?}",
                cfg.poll
            )));
        }
        if cfg.api.is_empty() {
            return Err(LeaderError::BadConfig(
                "the router's API address is empty".into(),
            ));
        }
        let client = EtcdClient::new(&cfg.endpoints, cfg.request_timeout)?;
        let value = serde_json::to_vec(&LeaderInfo {
            api: cfg.api.clone(),
            name: cfg.name.clone(),
            link: cfg.link.clone(),
        })
        .map_err(|e| LeaderError::BadConfig(e.to_string()))?;
        let (tx, role) = watch::channel(Role::Follower { leader: None });
        let fence = Fence::new();
        let (stop, stop_rx) = mpsc::channel();
        let run = Run {
            key: keys.leader(),
            value,
            ttl: cfg.ttl,
            poll: cfg.poll,
            client,
            tx,
            fence: fence.clone(),
            stop: stop_rx,
            lease: None,
            held: None,
        };
        let thread = std::thread::Builder::new()
            .name("wisp-elector".into())
            .spawn(move || run.run())
            .map_err(LeaderError::Spawn)?;
        Ok(Self {
            role,
            fence,
            stop: Some(stop),
            thread: Some(thread),
        })
    }

    /// This router's role, updated as it changes.
    pub fn role(&self) -> watch::Receiver<Role> {
        self.role.clone()
    }

    /// The fence for leader-only writes (see [`Fence::token`]).
    pub fn fence(&self) -> Fence {
        self.fence.clone()
    }

    /// Gives the lead up (revoking the lease, so another router takes over within its
    /// poll interval) and stops campaigning.
    pub fn resign(mut self) {
        self.stop_with(Stop::Resign);
    }

    /// Stops campaigning without a word to etcd, like a killed router: the lease runs
    /// out by itself and the fence stays valid until this router's own deadline.
    pub fn crash(mut self) {
        self.stop_with(Stop::Crash);
    }

    fn stop_with(&mut self, how: Stop) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(how);
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

impl Drop for Elector {
    fn drop(&mut self) {
        self.stop_with(Stop::Resign);
    }
}

/// The lead as this router holds it.
#[derive(Debug, Clone, Copy)]
struct Held {
    token: FenceToken,
    /// Step down at this [`clock`] reading.
    until: Duration,
    next_renew: Duration,
}

struct Run {
    key: String,
    value: Vec<u8>,
    ttl: Duration,
    poll: Duration,
    client: EtcdClient,
    tx: watch::Sender<Role>,
    fence: Fence,
    stop: mpsc::Receiver<Stop>,
    /// Our lease, possibly still alive after a step-down.
    lease: Option<Lease>,
    held: Option<Held>,
}

/// How long before etcd could expire the lease we step down.
fn margin(ttl: Duration) -> Duration {
    ttl / 4
}

impl Run {
    fn run(mut self) {
        loop {
            let wait = match self.held {
                Some(held) => self.lead(held),
                None => self.follow(),
            };
            match self.stop.recv_timeout(wait) {
                Ok(Stop::Crash) => return,
                Ok(Stop::Resign) | Err(RecvTimeoutError::Disconnected) => return self.resign(),
                Err(RecvTimeoutError::Timeout) => {}
            }
        }
    }

    fn publish(&self, role: Role) {
        self.tx.send_if_modified(|r| {
            let changed = *r != role;
            *r = role;
            changed
        });
    }

    /// Takes the lead with `token`, whose lease was last renewed (or granted) by a
    /// request sent at `sent` and has `ttl`.
    fn take_lead(&mut self, token: FenceToken, sent: Duration, ttl: Duration) {
        let until = sent + ttl - margin(ttl);
        if clock() >= until {
            return;
        }
        self.held = Some(Held {
            token,
            until,
            next_renew: sent + ttl / 3,
        });
        self.fence.set(FenceState::Held { token, until });
        info!(term = token.create_revision, key = %self.key, "this router leads");
        self.publish(Role::Leader {
            term: token.create_revision,
        });
    }

    fn step_down(&mut self, why: &str) {
        self.held = None;
        self.fence.set(FenceState::None);
        warn!(key = %self.key, "this router steps down: {why}");
        self.publish(Role::Follower { leader: None });
    }

    /// One step of a leader; returns how long to wait before the next.
    fn lead(&mut self, mut held: Held) -> Duration {
        let now = clock();
        if now >= held.until {
            self.step_down("its lease was not renewed in time");
            return Duration::ZERO;
        }
        if now < held.next_renew {
            return held.next_renew - now;
        }
        // Nothing may keep us past the deadline: every call is bounded by it.
        let bounded = self.client.bounded(held.until - now);
        let sent = clock();
        match bounded.lease_keepalive(held.token.lease) {
            Ok(Some(ttl)) => {
                held.until = sent + ttl - margin(ttl);
                held.next_renew = sent + ttl / 3;
                self.held = Some(held);
                self.fence.set(FenceState::Held {
                    token: held.token,
                    until: held.until,
                });
            }
            Ok(None) => {
                self.lease = None;
                self.step_down("etcd says its lease is gone");
                return Duration::ZERO;
            }
            Err(e) => {
                warn!(error = %chain(&e), "cannot renew the leader's lease; retrying");
                return RENEW_RETRY.min(held.until.saturating_sub(clock()));
            }
        }
        // The lease lives; make sure the key is still the one we created (an operator
        // may have deleted it).
        match self
            .client
            .bounded(held.until.saturating_sub(clock()))
            .get(&self.key)
        {
            Ok(Some(kv)) if kv.create_revision == held.token.create_revision => {}
            Ok(other) => {
                let holder = other.and_then(|kv| leader_of(&kv.value));
                self.step_down("the leader key was deleted or replaced");
                self.publish(Role::Follower { leader: holder });
                return Duration::ZERO;
            }
            // The renewal just proved the lease; the key is checked again next round.
            Err(_) => {}
        }
        held.next_renew.saturating_sub(clock())
    }

    /// One step of a follower; returns how long to wait before the next.
    fn follow(&mut self) -> Duration {
        let kv = match self.client.get(&self.key) {
            Ok(kv) => kv,
            Err(e) => {
                warn!(error = %chain(&e), "cannot read the leader key");
                self.publish(Role::Follower { leader: None });
                return self.poll;
            }
        };
        match kv {
            Some(kv) => {
                if self.lease.is_some_and(|l| l.id == kv.lease) {
                    // The key is still ours from before a step-down: lead again if the
                    // lease survived.
                    if let Some((lease, sent, ttl)) = self.renew_own() {
                        let token = FenceToken {
                            create_revision: kv.create_revision,
                            lease: lease.id,
                        };
                        self.take_lead(token, sent, ttl);
                        if self.held.is_some() {
                            return Duration::ZERO;
                        }
                    }
                    // The key names us, but we do not lead: nobody does for now
                    // (forwarding to ourselves would loop).
                    self.publish(Role::Follower { leader: None });
                    return self.poll;
                }
                self.publish(Role::Follower {
                    leader: leader_of(&kv.value),
                });
                self.poll
            }
            None => {
                self.campaign();
                if self.held.is_some() {
                    Duration::ZERO
                } else {
                    self.poll
                }
            }
        }
    }

    /// Renews the lease we kept; on success, the lease, when the renewal was sent and
    /// its TTL. Forgets the lease when etcd says it is gone.
    fn renew_own(&mut self) -> Option<(Lease, Duration, Duration)> {
        let lease = self.lease?;
        let sent = clock();
        match self.client.lease_keepalive(lease.id) {
            Ok(Some(ttl)) => Some((lease, sent, ttl)),
            Ok(None) => {
                self.lease = None;
                None
            }
            Err(e) => {
                warn!(error = %chain(&e), "cannot renew this router's lease");
                None
            }
        }
    }

    /// The key is absent: try to create it with our lease.
    fn campaign(&mut self) {
        let (lease, sent, ttl) = match self.renew_own() {
            Some(renewed) => renewed,
            None => {
                let sent = clock();
                match self.client.lease_grant(self.ttl) {
                    Ok(lease) => {
                        self.lease = Some(lease);
                        (lease, sent, lease.ttl)
                    }
                    Err(e) => {
                        warn!(error = %chain(&e), "cannot get a lease to campaign with");
                        return;
                    }
                }
            }
        };
        let txn = Txn {
            compare: vec![Cmp::CreateRevision(self.key.clone(), 0)],
            success: vec![Op::Put {
                key: self.key.clone(),
                value: self.value.clone(),
                lease: lease.id,
            }],
            failure: vec![Op::Get(crate::store::etcd::client::Range::key(
                self.key.clone(),
            ))],
        };
        match self.client.txn(&txn) {
            Ok(r) if r.succeeded => {
                let token = FenceToken {
                    create_revision: r.revision,
                    lease: lease.id,
                };
                self.take_lead(token, sent, ttl);
            }
            Ok(r) => {
                let kv = r.results.into_iter().find_map(|o| match o {
                    OpResult::Range(kvs) => kvs.into_iter().next(),
                    _ => None,
                });
                match kv {
                    // Our own create, whose answer was lost before a retry.
                    Some(kv) if kv.lease == lease.id => {
                        let token = FenceToken {
                            create_revision: kv.create_revision,
                            lease: lease.id,
                        };
                        self.take_lead(token, sent, ttl);
                    }
                    Some(kv) => self.publish(Role::Follower {
                        leader: leader_of(&kv.value),
                    }),
                    None => {}
                }
            }
            Err(e) if e.is_lease_not_found() => self.lease = None,
            Err(e) => warn!(error = %chain(&e), "cannot campaign for the lead"),
        }
    }

    fn resign(mut self) {
        let was_leader = self.held.is_some();
        self.held = None;
        self.fence.set(FenceState::None);
        if let Some(lease) = self.lease.take() {
            // Best effort: without it the lease runs out by itself.
            if let Err(e) = self.client.bounded(RESIGN_BUDGET).lease_revoke(lease.id) {
                warn!(error = %chain(&e), "cannot revoke the lease at resignation; it will run out");
            }
        }
        if was_leader {
            info!(key = %self.key, "this router resigned the lead");
        }
        self.publish(Role::Follower { leader: None });
    }
}

/// The leader key's value (a [`LeaderInfo`] in JSON).
fn leader_of(value: &[u8]) -> Option<LeaderInfo> {
    serde_json::from_slice::<LeaderInfo>(value).ok()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn a_fence_refuses_once_its_deadline_passed_and_when_not_held() {
        let token = FenceToken {
            create_revision: 5,
            lease: 9,
        };
        let f = Fence::new();
        assert!(f
            .token()
            .unwrap_err()
            .to_string()
            .contains("not the leader"));
        f.set(FenceState::Held {
            token,
            until: clock() + Duration::from_secs(60),
        });
        assert_eq!(f.token().unwrap(), token);
        f.set(FenceState::Held {
            token,
            until: clock().saturating_sub(Duration::from_millis(1)),
        });
        assert!(f
            .token()
            .unwrap_err()
            .reason
            .contains("not renewed in time"));
        assert_eq!(Fence::fixed(token).token().unwrap(), token);
    }

    #[test]
    fn the_step_down_comes_a_quarter_ttl_before_etcd_could_expire_the_lease() {
        assert_eq!(margin(Duration::from_secs(2)), Duration::from_millis(500));
    }

    #[test]
    fn bad_settings_are_refused_with_what_was_wrong() {
        let eps = vec!["127.0.0.1:2379".to_string()];
        let mut cfg = ElectorConfig::new("c1", &eps, "10.0.0.1:7070");
        cfg.ttl = Duration::from_millis(500);
        let e = Elector::start(cfg).unwrap_err().to_string();
        assert!(e.contains("TTL"), "{e}");
        let e = Elector::start(ElectorConfig::new("a/b", &eps, "x:1"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("a/b"), "{e}");
        let e = Elector::start(ElectorConfig::new("c1", &[], "x:1")).unwrap_err();
        assert!(
            matches!(e, LeaderError::Etcd(EtcdError::NoEndpoints)),
            "{e}"
        );
    }

    #[test]
    fn the_leader_value_names_the_api_and_maybe_the_name_and_link() {
        assert_eq!(
            leader_of(br#"{"api":"10.0.0.1:7070"}"#),
            Some("10.0.0.1:7070".into())
        );
        let full = leader_of(br#"{"api":"a:1","name":"r1","link":"10.0.0.1:7100"}"#).unwrap();
        assert_eq!(full.display_name(), "r1");
        assert_eq!(full.link.as_deref(), Some("10.0.0.1:7100"));
        assert_eq!(leader_of(b"garbage"), None);
    }

    #[test]
    fn boottime_moves_forward() {
        let a = clock();
        std::thread::sleep(Duration::from_millis(5));
        assert!(clock() > a);
    }
}
