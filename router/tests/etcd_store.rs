//! The etcd client, the elector and the etcd store against a real single etcd member
//! (Debian's etcd 3.4, started by each test on its own loopback ports and temp dir;
//! the test fails loudly when `/usr/bin/etcd` is missing).
#![allow(clippy::unwrap_used)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use router::events::{Event, EventKind};
use router::ha::leader::{Elector, ElectorConfig, Fence, FenceToken, Role};
use router::model::sla::SlaBook;
use router::store::etcd::client::{Cmp, EtcdClient, EtcdError, Op, Range, Txn, REQUEST_TIMEOUT};
use router::store::etcd::EtcdStore;
use router::store::{PersistedState, Store, StoreError};
use wisp_tests::lab::etcd::EtcdCluster;

/// Generous: the machine is a loaded 2-core box.
const WAIT: Duration = Duration::from_secs(30);

/// A temp dir removed at the end of the test (kept when `WISP_LAB_KEEP=1`).
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

fn one_member(name: &str) -> (EtcdCluster, TempDir) {
    let dir = TempDir::new(name);
    let cluster = EtcdCluster::start(1, &dir.0).unwrap();
    (cluster, dir)
}

fn wait_for(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn wait_leader(e: &Elector) -> i64 {
    let role = e.role();
    wait_for("a leader", || role.borrow().is_leader());
    let r = role.borrow().clone();
    match r {
        Role::Leader { term } => term,
        r => panic!("{r:?}"),
    }
}

fn ev(i: u64) -> Event {
    Event::new(i, EventKind::Power, None, None, format!("e{i}"))
}

#[test]
fn the_client_reads_writes_and_compares_on_a_real_etcd() {
    let (etcd, _dir) = one_member("client");
    let c = EtcdClient::new(&etcd.endpoints(), REQUEST_TIMEOUT).unwrap();

    assert_eq!(c.get("/t/a").unwrap(), None);
    let rev = c.put("/t/a", b"one", 0).unwrap();
    let kv = c.get("/t/a").unwrap().unwrap();
    assert_eq!(
        (kv.value.as_slice(), kv.mod_revision, kv.create_revision),
        (&b"one"[..], rev, rev)
    );

    // A txn on the mod revision: the first wins, the stale one fails and reads back.
    let cas = |expect: i64, v: &[u8]| Txn {
        compare: vec![Cmp::ModRevision("/t/a".into(), expect)],
        success: vec![Op::Put {
            key: "/t/a".into(),
            value: v.to_vec(),
            lease: 0,
        }],
        failure: vec![Op::Get(Range::key("/t/a"))],
    };
    let r = c.txn(&cas(rev, b"two")).unwrap();
    assert!(r.succeeded);
    assert!(r.revision > rev);
    let r = c.txn(&cas(rev, b"three")).unwrap();
    assert!(!r.succeeded);
    assert_eq!(c.get("/t/a").unwrap().unwrap().value, b"two");

    // Ranges: [start, end), newest first with a limit.
    for i in 0..5 {
        c.put(&format!("/t/r/{i}"), i.to_string().as_bytes(), 0)
            .unwrap();
    }
    let all = c.range(&Range::between("/t/r/", "/t/r0")).unwrap();
    assert_eq!(all.len(), 5);
    let newest = c
        .range(&Range {
            limit: 2,
            descending: true,
            ..Range::between("/t/r/", "/t/r0")
        })
        .unwrap();
    let keys: Vec<&str> = newest.iter().map(|k| k.key.as_str()).collect();
    assert_eq!(keys, ["/t/r/4", "/t/r/3"]);

    // Leases: etcd 3.4 raises a 1 s TTL to its minimum, 2 s with a 1 s election
    // timeout; a revoked lease is gone for keepalive, revoke and put.
    let lease = c.lease_grant(Duration::from_secs(1)).unwrap();
    assert_eq!(lease.ttl, Duration::from_secs(2));
    c.put("/t/leased", b"x", lease.id).unwrap();
    assert_eq!(c.get("/t/leased").unwrap().unwrap().lease, lease.id);
    assert_eq!(
        c.lease_keepalive(lease.id).unwrap(),
        Some(Duration::from_secs(2))
    );
    assert!(c.lease_revoke(lease.id).unwrap());
    assert_eq!(
        c.get("/t/leased").unwrap(),
        None,
        "revoking deletes the lease's keys"
    );
    assert_eq!(c.lease_keepalive(lease.id).unwrap(), None);
    assert!(!c.lease_revoke(lease.id).unwrap());
    let e = c.put("/t/leased", b"x", lease.id).unwrap_err();
    assert!(e.is_lease_not_found(), "{e}");

    // Compaction drops old revisions; compacting twice to the same one is refused.
    let now = c.put("/t/a", b"four", 0).unwrap();
    c.compact(now - 1).unwrap();
    assert!(c.compact(now - 1).is_err());
    assert_eq!(c.get("/t/a").unwrap().unwrap().value, b"four");

    // A refused request names the endpoint and the key.
    let too_many = Txn {
        success: (0..130)
            .map(|i| Op::Put {
                key: format!("/t/many/{i}"),
                value: vec![],
                lease: 0,
            })
            .collect(),
        ..Default::default()
    };
    match c.txn(&too_many).unwrap_err() {
        e @ EtcdError::Server { code: 3, .. } => {
            let s = e.to_string();
            assert!(
                s.contains("too many operations") && s.contains("/t/many/0"),
                "{s}"
            );
            assert!(s.contains(&etcd.endpoints()[0]), "{s}");
        }
        e => panic!("{e}"),
    }
}

#[test]
fn a_lease_runs_out_about_its_ttl_after_the_last_renewal() {
    let (etcd, _dir) = one_member("expiry");
    let c = EtcdClient::new(&etcd.endpoints(), REQUEST_TIMEOUT).unwrap();
    let lease = c.lease_grant(Duration::from_secs(2)).unwrap();
    c.put("/t/l", b"x", lease.id).unwrap();
    let renewed = Instant::now();
    c.lease_keepalive(lease.id).unwrap().unwrap();
    wait_for("the leased key to vanish", || {
        c.get("/t/l").unwrap().is_none()
    });
    let after = renewed.elapsed();
    // Never before the TTL: the elector's safety rests on it.
    assert!(after >= Duration::from_secs(2), "gone after {after:?}");
    println!("lease of 2 s gone {after:?} after its last renewal");
}

#[test]
fn a_dead_endpoint_is_skipped_for_the_next() {
    let (etcd, _dir) = one_member("failover");
    // Port 9 refuses at once; the live member answers.
    let mut eps = vec!["127.0.0.1:9".to_string()];
    eps.extend(etcd.endpoints());
    let c = EtcdClient::new(&eps, REQUEST_TIMEOUT).unwrap();
    c.put("/t/f", b"ok", 0).unwrap();
    assert_eq!(c.get("/t/f").unwrap().unwrap().value, b"ok");
}

#[test]
fn the_store_writes_while_leading_and_a_stale_token_is_refused_by_etcd() {
    let (etcd, _dir) = one_member("store");
    let eps = etcd.endpoints();
    let a = Elector::start(ElectorConfig::new("c1", &eps, "10.0.0.1:7070")).unwrap();
    let term = wait_leader(&a);
    let client = EtcdClient::new(&eps, REQUEST_TIMEOUT).unwrap();
    let mut store = EtcdStore::new(client.clone(), "c1", a.fence())
        .unwrap()
        .keep_events(250);

    assert_eq!(store.load().unwrap(), PersistedState::empty());
    let state = PersistedState {
        next_epoch: 42,
        energy_mode: true,
        ..PersistedState::empty()
    };
    store.save(&state).unwrap();
    assert_eq!(store.load().unwrap(), state);

    // 300 events in one batch (three txns) then 10 more: the newest 250 are kept, in
    // order.
    let batch: Vec<Event> = (0..300).map(ev).collect();
    store.append_events(&batch).unwrap();
    store
        .append_events(&(300..310).map(ev).collect::<Vec<_>>())
        .unwrap();
    let got: Vec<u64> = store
        .recent_events(1000)
        .unwrap()
        .iter()
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(got, (60..310).collect::<Vec<_>>());
    let got: Vec<u64> = store
        .recent_events(3)
        .unwrap()
        .iter()
        .map(|e| e.at_ms)
        .collect();
    assert_eq!(got, vec![307, 308, 309]);
    let stored = client
        .range(&Range::between("/wisp/c1/events/", "/wisp/c1/events0"))
        .unwrap();
    assert_eq!(stored.len(), 250, "older events are trimmed");

    assert_eq!(store.load_sla().unwrap(), SlaBook::default());
    let mut book = SlaBook::default();
    book.vms
        .insert(wisp_common::VmId::new("vm1").unwrap(), Default::default());
    store.save_sla(&book).unwrap();
    assert_eq!(store.load_sla().unwrap(), book);

    // A token that is not the leader key's (a deposed leader's): etcd refuses it.
    let stale = Fence::fixed(FenceToken {
        create_revision: term - 1,
        lease: a.fence().token().unwrap().lease,
    });
    let mut deposed = EtcdStore::new(client.clone(), "c1", stale).unwrap();
    let e = deposed.save(&PersistedState::empty()).unwrap_err();
    assert!(matches!(e, StoreError::NotLeader { .. }), "{e}");
    assert!(e.to_string().contains("not the leader any more"), "{e}");
    assert!(deposed.append_events(&[ev(1)]).is_err());
    assert_eq!(
        store.load().unwrap(),
        state,
        "the refused write changed nothing"
    );

    // Resigning ends the leader's writes at once.
    a.resign();
    let e = store.save(&state).unwrap_err();
    assert!(matches!(e, StoreError::NotLeader { .. }), "{e}");
}

#[test]
fn a_resigning_leader_hands_over_within_a_poll_and_followers_know_the_leader() {
    let (etcd, _dir) = one_member("resign");
    let eps = etcd.endpoints();
    let a = Elector::start(ElectorConfig::new("c1", &eps, "10.0.0.1:7070")).unwrap();
    let term_a = wait_leader(&a);
    let b = Elector::start(ElectorConfig::new("c1", &eps, "10.0.0.2:7070")).unwrap();
    let rb = b.role();
    wait_for("b to know a leads", || {
        *rb.borrow()
            == Role::Follower {
                leader: Some("10.0.0.1:7070".into()),
            }
    });
    let t = Instant::now();
    a.resign();
    let term_b = wait_leader(&b);
    println!("handover after resignation: {:?}", t.elapsed());
    assert!(term_b > term_a, "terms grow: {term_a} then {term_b}");
}

#[test]
fn a_corrupt_state_in_etcd_is_reported_with_its_key() {
    let (etcd, _dir) = one_member("corrupt");
    let client = EtcdClient::new(&etcd.endpoints(), REQUEST_TIMEOUT).unwrap();
    client.put("/wisp/c1/state", b"{not json", 0).unwrap();
    let store = EtcdStore::new(
        client,
        "c1",
        Fence::fixed(FenceToken {
            create_revision: 1,
            lease: 1,
        }),
    )
    .unwrap();
    let e = store.load().unwrap_err().to_string();
    assert!(e.contains("/wisp/c1/state") && e.contains("corrupt"), "{e}");
}
