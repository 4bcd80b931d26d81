//! Router takeover time on a 3-member etcd cluster (the lab's `EtcdCluster`), printed
//! next to the goal of at most 2 s.
//!
//! Each run: two routers' electors campaign; the leader crashes (stops without a word,
//! like a killed process: its lease runs out in etcd); the clock stops when the other
//! router leads. A fresh elector then replaces the crashed one for the next run.
//! For comparison, the same with a clean resignation (the lease is revoked), and the
//! time until the router leader's store writes again after etcd's own leader is killed.
//!
//! What bounds the crash figure: etcd expires the lease no earlier than its TTL (2 s,
//! etcd 3.4's minimum with a 1 s election timeout) after the dead leader's last
//! renewal, which came 0-0.67 s before the crash (renewals every TTL/3); add the
//! follower's poll (100 ms). A shorter TTL needs a shorter election timeout in etcd
//! (`--election-timeout 500` allows a 1 s lease).
//!
//! Run: `cargo bench --profile dev -p wisp-tests --bench takeover` (the figures are
//! etcd's and the timers', not the code's speed, so no release build is needed; no
//! root; needs /usr/bin/etcd).
//! `WISP_TAKEOVER_RUNS=N` changes the count.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use router::ha::leader::{Elector, ElectorConfig};
use router::store::etcd::client::{EtcdClient, REQUEST_TIMEOUT};
use router::store::etcd::EtcdStore;
use router::store::{PersistedState, Store};
use wisp_tests::bench::stats;
use wisp_tests::lab::etcd::EtcdCluster;

const DEFAULT_RUNS: usize = 10;
const WAIT: Duration = Duration::from_secs(30);

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(2));
    }
}

fn leads(e: &Elector) -> bool {
    e.role().borrow().is_leader()
}

fn main() {
    let runs = std::env::var("WISP_TAKEOVER_RUNS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(DEFAULT_RUNS);
    let dir = std::env::temp_dir().join(format!("wisp-takeover-{}", std::process::id()));
    let mut etcd = EtcdCluster::start(3, &dir).unwrap();
    let eps = etcd.endpoints();
    let start = |n: usize| {
        Elector::start(ElectorConfig::new("bench", &eps, &format!("r{n}:7070"))).unwrap()
    };

    let mut crash = Vec::new();
    let mut resign = Vec::new();
    let mut routers = vec![start(0), start(1)];
    for round in 0..runs * 2 {
        wait_until("a leader", || routers.iter().any(leads));
        // Let the follower settle into polling, as in a long-running pair.
        std::thread::sleep(Duration::from_millis(500));
        let l = usize::from(!leads(&routers[0]));
        let old = routers.remove(l);
        let t = Instant::now();
        if round % 2 == 0 {
            old.crash();
        } else {
            old.resign();
        }
        wait_until("the takeover", || leads(&routers[0]));
        let ms = t.elapsed().as_millis() as u64;
        if round % 2 == 0 {
            crash.push(ms);
        } else {
            resign.push(ms);
        }
        routers.push(start(round + 2));
    }

    // etcd's own leader dies: how long until the router leader writes again.
    let mut writes_again = Vec::new();
    for _ in 0..runs.min(5) {
        wait_until("a leader", || routers.iter().any(leads));
        let mut stores: Vec<EtcdStore> = routers
            .iter()
            .map(|r| {
                let c = EtcdClient::new(&eps, REQUEST_TIMEOUT).unwrap();
                EtcdStore::new(c, "bench", r.fence()).unwrap()
            })
            .collect();
        let victim = loop {
            if let Some(m) = etcd.leader_member() {
                break m;
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        let t = Instant::now();
        etcd.kill_member(victim).unwrap();
        wait_until("a write after etcd's leader died", || {
            stores
                .iter_mut()
                .any(|s| s.save(&PersistedState::empty()).is_ok())
        });
        writes_again.push(t.elapsed().as_millis() as u64);
        etcd.restart_member(victim).unwrap();
    }
    drop(routers);
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);

    println!("router takeover on a 3-member etcd 3.4 (TTL 2 s, poll 100 ms):");
    stats(
        "leader crashed (lease runs out)",
        crash,
        "(goal: <= 2000 ms)",
    );
    stats("leader resigned (lease revoked)", resign, "");
    stats("etcd leader killed -> writes again", writes_again, "");
}
