//! The store seen from the cluster task: a failed commit rolls the change back and a
//! failed event is kept, and reports are applied promptly while the store is slow.

#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use tokio::sync::watch;
use wisp_common::proto::Report;
use wisp_common::HostId;

use super::{MemStore, SharedMemStore, Store, StoreError};
use crate::cluster::command::Inspect;
use crate::cluster::{ClusterHandle, Model};
use crate::config::RouterConfig;
use crate::events::EventKind;
use crate::link::GenieLink;

/// A cluster task with one host, `h1`, on `store`.
fn cluster(store: SharedMemStore) -> (ClusterHandle, watch::Sender<bool>) {
    let text = "listen = \"127.0.0.1:1\"\nstate_dir = \"/nonexistent/wisp-store-unit\"\n\
                secret_file = \"/nonexistent/secret\"\n\
                [[host]]\nname = \"h1\"\nmac = \"02:00:00:00:00:01\"\naddress = \"127.0.0.1\"\n";
    let config = RouterConfig::parse(std::path::Path::new("router.toml"), text).unwrap();
    let persisted = store.load().unwrap();
    let (stop, rx) = watch::channel(false);
    let (c, _task) = crate::cluster::spawn(&config, Box::new(store), persisted, rx);
    (c, stop)
}

fn messages(store: &SharedMemStore) -> Vec<String> {
    let m = store.lock().unwrap();
    m.events.iter().map(|e| e.message.clone()).collect()
}

#[tokio::test]
async fn disk_full_rolls_the_change_back_and_loses_no_event() {
    let mem = MemStore::default().shared();
    let (c, _stop) = cluster(mem.clone());
    c.run(Inspect(|m: &mut Model| m.update(|p| p.next_epoch = 5)))
        .await
        .unwrap()
        .unwrap();
    let store = c
        .run(Inspect(|m: &mut Model| m.store.clone()))
        .await
        .unwrap();

    mem.lock().unwrap().fail_writes = true;
    let (result, epoch) = c
        .run(Inspect(|m: &mut Model| {
            let r = m.update(|p| p.next_epoch = 6);
            (
                r.map_err(|e| wisp_common::error::chain(&e)),
                m.persisted.next_epoch,
            )
        }))
        .await
        .unwrap();
    let e = result.unwrap_err();
    assert!(e.contains("no space left"), "{e}");
    assert_eq!(epoch, 5, "the change is rolled back in memory");
    assert_eq!(mem.lock().unwrap().state.as_ref().unwrap().next_epoch, 5);

    c.record(
        EventKind::Power,
        None,
        None,
        "while the disk is full".into(),
    )
    .await;
    let shown = c.events(1);
    assert_eq!(shown[0].message, "while the disk is full", "kept in memory");
    // (Host status events of the tick may be waiting too.)
    assert!(matches!(
        store.flush().await,
        Err(StoreError::Unwritten { events, .. }) if events >= 1
    ));
    assert!(!messages(&mem).contains(&"while the disk is full".to_string()));

    // Space again: the kept event is written, and commits work.
    mem.lock().unwrap().fail_writes = false;
    store.flush().await.unwrap();
    assert!(messages(&mem).contains(&"while the disk is full".to_string()));
    c.run(Inspect(|m: &mut Model| m.update(|p| p.next_epoch = 7)))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(mem.lock().unwrap().state.as_ref().unwrap().next_epoch, 7);
}

/// Event appends and SLA writes take 500 ms each; reports must not wait for them.
#[tokio::test]
async fn reports_are_applied_promptly_while_the_store_is_slow() {
    const SLOW: Duration = Duration::from_millis(500);
    let mem = MemStore {
        event_delay: SLOW,
        sla_delay: SLOW,
        ..Default::default()
    }
    .shared();
    let (c, _stop) = cluster(mem.clone());
    let h1 = HostId::new("h1").unwrap();
    let session = c
        .connected(h1.clone(), 1, "test".into(), GenieLink::detached())
        .await
        .unwrap();
    let t = Instant::now();
    for i in 0..5 {
        c.record(EventKind::Power, None, None, format!("slow {i}"))
            .await;
    }
    c.run(Inspect(|m: &mut Model| {
        m.store.save_sla(m.sla.clone()).unwrap()
    }))
    .await
    .unwrap();

    for gen in 1..=50 {
        let report = Report {
            gen,
            sent_at_ms: gen,
            metrics: None,
            vms: None,
            ..Default::default()
        };
        c.report(h1.clone(), session, report).await;
    }
    let accepted = c
        .run(Inspect(|m: &mut Model| m.reports_accepted))
        .await
        .unwrap();
    let took = t.elapsed();
    assert_eq!(accepted, 50);
    // With the writes on the cluster task the reports would wait for at least
    // 6 × 500 ms (five records, the SLA book).
    assert!(took < SLOW / 2, "reports waited {took:?} behind the store");

    // Nothing was lost, and the queued events shared appends.
    let store = c
        .run(Inspect(|m: &mut Model| m.store.clone()))
        .await
        .unwrap();
    store.flush().await.unwrap();
    let got = messages(&mem);
    let slow: Vec<&String> = got.iter().filter(|m| m.starts_with("slow")).collect();
    assert_eq!(slow, ["slow 0", "slow 1", "slow 2", "slow 3", "slow 4"]);
    let m = mem.lock().unwrap();
    assert!(m.event_appends < got.len(), "{} appends", m.event_appends);
    assert_eq!(m.sla_saves, 1);
}
