//! Router redundancy on a 3-member etcd cluster (the lab's `EtcdCluster`: real etcd
//! 3.4 processes on loopback), trying to break the election and the fenced store:
//! two routers must never both lead, a crashed or cut-off leader must be replaced
//! only after it stopped writing, a deposed leader's writes must be refused by etcd,
//! and etcd losing its own leader must not stop the router leader's writes for long.
//!
//! "Leads" here is the strict sense: the router's [`Fence`] yields a token (its lease
//! is live by its own clock). The samples are taken every few milliseconds.
//!
//! Needs `/usr/bin/etcd` (Debian's etcd-server); fails loudly without it. No root.
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use router::ha::leader::{Elector, ElectorConfig, Fence, Role};
use router::store::etcd::client::{EtcdClient, REQUEST_TIMEOUT};
use router::store::etcd::EtcdStore;
use router::store::{PersistedState, Store, StoreError};
use wisp_tests::lab::etcd::EtcdCluster;

/// Generous: elections and lease expiries on a loaded 2-core machine.
const WAIT: Duration = Duration::from_secs(30);

const SAMPLE: Duration = Duration::from_millis(5);

struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> Self {
        let p = std::env::temp_dir().join(format!("wisp-etcd-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        Self(p)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        if std::env::var_os("WISP_LAB_KEEP").is_none() {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }
}

fn three(name: &str) -> (EtcdCluster, TempDir) {
    let dir = TempDir::new(name);
    let etcd = EtcdCluster::start(3, &dir.0).unwrap();
    (etcd, dir)
}

fn elector(eps: &[String], api: &str) -> Elector {
    Elector::start(ElectorConfig::new("c1", eps, api)).unwrap()
}

fn store(eps: &[String], fence: Fence) -> EtcdStore {
    let client = EtcdClient::new(eps, REQUEST_TIMEOUT).unwrap();
    EtcdStore::new(client, "c1", fence).unwrap()
}

fn state(epoch: u64) -> PersistedState {
    PersistedState {
        next_epoch: epoch,
        ..PersistedState::empty()
    }
}

/// Samples the fences until `done` holds or `WAIT` passes; fails at once if two
/// fences yield a token at the same time. Returns how many samples had a leader.
fn watch_fences(what: &str, fences: &[&Fence], mut done: impl FnMut() -> bool) -> (usize, usize) {
    let deadline = Instant::now() + WAIT;
    let (mut samples, mut led) = (0, 0);
    loop {
        let holders: Vec<usize> = (0..fences.len())
            .filter(|&i| fences[i].token().is_ok())
            .collect();
        assert!(
            holders.len() <= 1,
            "{what}: routers {holders:?} lead at once"
        );
        samples += 1;
        led += usize::from(holders.len() == 1);
        if done() {
            return (samples, led);
        }
        assert!(Instant::now() < deadline, "{what}: timed out");
        std::thread::sleep(SAMPLE);
    }
}

fn leads(e: &Elector) -> bool {
    e.role().borrow().is_leader()
}

/// Which of the two leads once one does.
fn first_leader(a: &Elector, b: &Elector) -> usize {
    let (fa, fb) = (a.fence(), b.fence());
    watch_fences("the first election", &[&fa, &fb], || leads(a) || leads(b));
    if leads(a) {
        0
    } else {
        1
    }
}

#[test]
fn two_routers_never_lead_together_and_a_crashed_leader_is_replaced_after_its_lease() {
    let (etcd, _dir) = three("crash");
    let eps = etcd.endpoints();
    let mut routers = vec![
        elector(&eps, "10.0.0.1:7070"),
        elector(&eps, "10.0.0.2:7070"),
    ];
    let l = first_leader(&routers[0], &routers[1]);
    let f = 1 - l;
    let fences = [routers[0].fence(), routers[1].fence()];

    // A few seconds of steady state: renewals every ~0.7 s, polls every 0.1 s.
    let t = Instant::now();
    let (samples, led) = watch_fences("steady state", &[&fences[0], &fences[1]], || {
        t.elapsed() > Duration::from_secs(4)
    });
    assert!(
        led * 10 >= samples * 9,
        "a leader in only {led} of {samples} samples"
    );
    assert!(leads(&routers[l]) && !leads(&routers[f]));
    let api = if l == 0 {
        "10.0.0.1:7070"
    } else {
        "10.0.0.2:7070"
    };
    assert_eq!(
        *routers[f].role().borrow(),
        Role::Follower {
            leader: Some(api.into())
        }
    );

    // The leader stores a state, then dies without a word.
    let mut old_store = store(&eps, fences[l].clone());
    old_store.save(&state(77)).unwrap();
    let old_token = fences[l].token().unwrap();
    let crashed = routers.remove(l);
    let t = Instant::now();
    crashed.crash();
    let follower = &routers[0];
    watch_fences("takeover", &[&fences[0], &fences[1]], || leads(follower));
    println!("takeover after a crash: {:?}", t.elapsed());

    // The deposed leader's writes are refused: by its own clock, and by etcd for its
    // old token.
    let e = old_store.save(&state(1)).unwrap_err();
    assert!(matches!(e, StoreError::NotLeader { .. }), "{e}");
    let mut stale = store(&eps, Fence::fixed(old_token));
    let e = stale.save(&state(1)).unwrap_err();
    assert!(matches!(e, StoreError::NotLeader { .. }), "{e}");
    assert!(e.to_string().contains("etcd refused"), "{e}");

    // The new leader loads what the old one stored, and writes on.
    let mut new_store = store(&eps, follower.fence());
    assert_eq!(new_store.load().unwrap(), state(77));
    new_store.save(&state(78)).unwrap();
    assert_eq!(new_store.load().unwrap(), state(78));
}

#[test]
fn a_leader_cut_off_from_etcd_steps_down_before_another_takes_over() {
    let (etcd, _dir) = three("cutoff");
    let eps = etcd.endpoints();
    // A reaches etcd only through member 0, B only through members 1 and 2: freezing
    // member 0 cuts A off (its requests hang, as across a broken network) while the
    // other two keep a quorum.
    let a = elector(&eps[..1], "10.0.0.1:7070");
    let (fa, ra) = (a.fence(), a.role());
    watch_fences("a leads", &[&fa], || ra.borrow().is_leader());
    let b = elector(&eps[1..], "10.0.0.2:7070");
    let fb = b.fence();
    let rb = b.role();
    watch_fences("b follows a", &[&fa, &fb], || {
        *rb.borrow()
            == Role::Follower {
                leader: Some("10.0.0.1:7070".into()),
            }
    });
    let mut a_store = store(&eps[..1], fa.clone());
    a_store.save(&state(5)).unwrap();
    let a_token = fa.token().unwrap();

    let t = Instant::now();
    etcd.freeze_member(0).unwrap();
    // The step-down comes first, by A's own clock; B leads only after A's lease ran
    // out in etcd. The sampler fails if both hold a token at any moment.
    watch_fences("b takes over", &[&fa, &fb], || rb.borrow().is_leader());
    println!("takeover from a cut-off leader: {:?}", t.elapsed());
    assert!(!ra.borrow().is_leader(), "a stepped down");
    assert!(matches!(
        a_store.save(&state(6)).unwrap_err(),
        StoreError::NotLeader { .. }
    ));

    // Member 0 comes back: A follows B, and its old token is refused by etcd.
    etcd.thaw_member(0).unwrap();
    watch_fences("a follows b", &[&fa, &fb], || {
        *ra.borrow()
            == Role::Follower {
                leader: Some("10.0.0.2:7070".into()),
            }
    });
    let mut stale = store(&eps, Fence::fixed(a_token));
    assert!(matches!(
        stale.save(&state(6)).unwrap_err(),
        StoreError::NotLeader { .. }
    ));
    let mut b_store = store(&eps[1..], fb.clone());
    assert_eq!(b_store.load().unwrap(), state(5));
    b_store.save(&state(7)).unwrap();
}

#[test]
fn writes_continue_when_etcd_loses_its_leader() {
    let (mut etcd, _dir) = three("etcdleader");
    let eps = etcd.endpoints();
    let a = elector(&eps, "10.0.0.1:7070");
    let b = elector(&eps, "10.0.0.2:7070");
    let (fa, fb) = (a.fence(), b.fence());
    let l = first_leader(&a, &b);
    let mut stores = [store(&eps, fa.clone()), store(&eps, fb.clone())];
    stores[l].save(&state(10)).unwrap();

    for round in 0..2 {
        let victim = {
            let deadline = Instant::now() + WAIT;
            loop {
                if let Some(m) = etcd.leader_member() {
                    break m;
                }
                assert!(Instant::now() < deadline, "etcd has no leader");
                std::thread::sleep(Duration::from_millis(50));
            }
        };
        let t = Instant::now();
        etcd.kill_member(victim).unwrap();
        // Some router leads again (the same one, usually) and its write lands.
        let mut written = None;
        let epoch = 11 + round;
        watch_fences("a write after etcd's leader died", &[&fa, &fb], || {
            for (i, s) in stores.iter_mut().enumerate() {
                if s.save(&state(epoch)).is_ok() {
                    written = Some(i);
                    return true;
                }
            }
            false
        });
        let who = written.unwrap();
        println!(
            "round {round}: etcd leader m{victim} killed; router {who} (leader before: {l}) wrote again after {:?}",
            t.elapsed()
        );
        assert_eq!(stores[who].load().unwrap(), state(epoch));
        etcd.restart_member(victim).unwrap();
    }
}

#[test]
fn three_routers_churning_never_lead_together() {
    let (etcd, _dir) = three("churn");
    let eps = etcd.endpoints();
    let mut routers: Vec<Elector> = (0..3)
        .map(|i| elector(&eps, &format!("10.0.0.{i}:7070")))
        .collect();
    // Every fence ever handed out stays watched: a crashed router's fence lives on
    // until its own deadline, and must be dead before anyone else leads.
    let mut fences: Vec<Fence> = routers.iter().map(Elector::fence).collect();
    for round in 0..6 {
        let refs: Vec<&Fence> = fences.iter().collect();
        watch_fences("a leader", &refs, || routers.iter().any(leads));
        let l = routers.iter().position(leads).unwrap();
        let old = routers.remove(l);
        // Alternate the ways a leader goes away.
        if round % 2 == 0 {
            old.crash();
        } else {
            old.resign();
        }
        let refs: Vec<&Fence> = fences.iter().collect();
        watch_fences("the next leader", &refs, || routers.iter().any(leads));
        let fresh = elector(&eps, &format!("10.0.1.{round}:7070"));
        fences.push(fresh.fence());
        routers.push(fresh);
    }
}

#[test]
fn when_all_of_etcd_goes_away_the_leader_steps_down_and_one_leads_after() {
    let (mut etcd, _dir) = three("alldown");
    let eps = etcd.endpoints();
    let a = elector(&eps, "10.0.0.1:7070");
    let b = elector(&eps, "10.0.0.2:7070");
    let (fa, fb) = (a.fence(), b.fence());
    let l = first_leader(&a, &b);
    let leader = if l == 0 { &a } else { &b };
    let mut s = store(&eps, leader.fence());
    s.save(&state(3)).unwrap();

    for m in 0..3 {
        etcd.kill_member(m).unwrap();
    }
    // Nobody can renew: the leader steps down by its own clock.
    watch_fences("the leader to step down", &[&fa, &fb], || {
        !leads(&a) && !leads(&b)
    });
    assert!(matches!(
        s.save(&state(4)).unwrap_err(),
        StoreError::NotLeader { .. }
    ));

    for m in 0..3 {
        etcd.start_member(m).unwrap();
    }
    etcd.wait_healthy(WAIT).unwrap();
    // etcd extends every lease when it gets a leader again: the old leader usually
    // takes its key back; either way exactly one leads, and the state survived.
    watch_fences("a leader after etcd came back", &[&fa, &fb], || {
        leads(&a) || leads(&b)
    });
    let now = if leads(&a) { &a } else { &b };
    let mut s = store(&eps, now.fence());
    assert_eq!(s.load().unwrap(), state(3));
    s.save(&state(4)).unwrap();
    println!(
        "after etcd came back, router {} leads (router {l} led before)",
        usize::from(leads(&b))
    );
}
