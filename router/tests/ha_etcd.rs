//! Two replicated routers (`[ha]`) on a real etcd: exactly one leads; the other
//! forwards the API to it and says so in its status, and turns genies away naming
//! the leader, whom a real genie (the genie crate's link, with fakes for its
//! hypervisor) then follows, though only the follower is in its list. What the leader
//! stored (the energy mode chosen through the follower) is in etcd; when the leader
//! stops, the other takes over with that state, the genie reconnects to it, and
//! nothing was stopped or killed on the genie's side.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use genie::fakes::{FakeFence, FakeHypervisor, FakePower};
use genie::link::{random_instance, Link, LinkConfig};
use genie::metrics::SysinfoMetrics;
use genie::report::Reporter;
use router::api::types::StatusView;
use router::cli::{Client, ClientError};
use support::rig::{TestRouter, ADMIN_TOKEN};
use tokio::sync::{watch, Notify};
use wisp_common::secret::Secret;
use wisp_common::HostId;
use wisp_tests::lab::etcd::EtcdCluster;

const SECRET: &[u8] = b"ha-etcd-test-secret-0123";

/// Generous on a loaded machine: a takeover waits out a 2 s lease.
const WAIT: Duration = Duration::from_secs(30);

async fn status(api: &str) -> Result<StatusView, ClientError> {
    let api = api.to_owned();
    tokio::task::spawn_blocking(move || {
        Client::new(&api, None)
            .with_token(ADMIN_TOKEN)
            .get("/v1/status")
    })
    .await
    .unwrap()
}

async fn energy_on(api: &str) {
    let api = api.to_owned();
    tokio::task::spawn_blocking(move || {
        let _: serde_json::Value = Client::new(&api, None)
            .with_token(ADMIN_TOKEN)
            .post("/v1/energy", &serde_json::json!({"on": true}))
            .unwrap();
    })
    .await
    .unwrap();
}

/// Polls until `ok` holds for the status at `api`; returns it.
async fn wait_status(api: &str, what: &str, ok: impl Fn(&StatusView) -> bool) -> StatusView {
    let deadline = tokio::time::Instant::now() + WAIT;
    let mut last: String;
    loop {
        match status(api).await {
            Ok(s) if ok(&s) => return s,
            Ok(s) => last = format!("{s:?}"),
            Err(e) => last = e.to_string(),
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{what}: last status at {api}: {last}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls the APIs until one of them says it leads; returns its index.
async fn leader_of(apis: &[&str]) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for (i, a) in apis.iter().enumerate() {
            if status(a).await.is_ok_and(|s| s.role == "leader") {
                return i;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no router leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A real genie link for host h1 that knows only `routers`.
fn genie(routers: Vec<String>) -> (watch::Sender<bool>, FakeHypervisor, FakeFence) {
    let hv = FakeHypervisor::default();
    let fence = FakeFence {
        vms: 1,
        ..Default::default()
    };
    let lease = genie::lease::spawn(0, None, fence.clone()).unwrap();
    let link = Link::new(
        LinkConfig {
            host: HostId::new("h1").unwrap(),
            routers,
            secret: Secret::from_bytes(SECRET.to_vec()),
            heartbeat_ms: 200,
            metrics_ms: 1000,
            address: None,
            instance: random_instance(),
        },
        Reporter::new(SysinfoMetrics::new().unwrap()),
        hv.clone(),
        FakePower::default(),
        lease,
        Arc::new(Notify::new()),
    );
    let (stop, rx) = watch::channel(false);
    tokio::spawn(link.run(rx));
    (stop, hv, fence)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_follower_forwards_and_names_the_leader_and_the_genie_follows_through_a_takeover() {
    let dir = std::env::temp_dir().join(format!("wisp-ha-etcd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let etcd = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || EtcdCluster::start(1, &dir).unwrap()
    })
    .await
    .unwrap();
    // Issue 10 spells the table `[cluster]`; `[ha]` is the same.
    let ha = |table: &str, name: &str| {
        TestRouter::builder()
            .tag("ha")
            .secret(SECRET)
            .hosts(1)
            .energy(&format!(
                "[{table}]\netcd = [\"{}\"]\ncluster = \"t{}\"\nname = \"{name}\"\n",
                etcd.endpoints()[0],
                std::process::id()
            ))
    };
    let a = ha("ha", "ra").start().await;
    let b = ha("cluster", "rb").start().await;
    // Over TCP with the admin token (the local sockets: ha_follower.rs).
    let apis = [a.tcp_api.as_str(), b.tcp_api.as_str()];
    let names = ["ra", "rb"];
    let lead = leader_of(&apis).await;
    let follow = 1 - lead;

    // The follower forwards, and its status says who is who.
    let s = wait_status(apis[follow], "the follower to know the leader", |s| {
        s.leader.is_some()
    })
    .await;
    assert_eq!(s.role, "follower", "{s:?}");
    assert_eq!(s.leader.as_deref(), Some(names[lead]), "{s:?}");
    let s = status(apis[lead]).await.unwrap();
    assert_eq!(
        (s.role.as_str(), s.leader.as_deref()),
        ("leader", Some(names[lead]))
    );
    // A write through the follower reaches the leader, which stores it in etcd.
    energy_on(apis[follow]).await;
    assert!(status(apis[lead]).await.unwrap().energy_mode);

    // A genie that lists only the follower is turned away to the leader.
    let links = [a.link.to_string(), b.link.to_string()];
    let (genie_stop, hv, fence) = genie(vec![links[follow].clone()]);
    wait_status(apis[lead], "the genie to reach the leader", |s| {
        s.hosts_up == 1
    })
    .await;

    // The leader stops (an upgrade): the other takes over with the state, and the
    // genie, whose only router now leads, reconnects to it.
    let t0 = tokio::time::Instant::now();
    let (leader, other) = if lead == 0 { (a, b) } else { (b, a) };
    leader.stop().await;
    let s = wait_status(&other.tcp_api, "the other router to take over", |s| {
        s.role == "leader"
    })
    .await;
    eprintln!(
        "takeover after a leader's stop: {} ms",
        t0.elapsed().as_millis()
    );
    assert!(s.energy_mode, "the new leader lost the state: {s:?}");
    assert_eq!(s.leader.as_deref(), Some(names[follow]));
    wait_status(
        &other.tcp_api,
        "the genie to reconnect to the new leader",
        |s| s.hosts_up == 1,
    )
    .await;
    eprintln!(
        "genie reconnected to the new leader: {} ms after the stop",
        t0.elapsed().as_millis()
    );
    // Nothing on the genie's side was stopped or killed along the way.
    assert_eq!(fence.kills.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert!(
        !hv.calls()
            .iter()
            .any(|c| c.starts_with("stop") || c.starts_with("kill")),
        "{:?}",
        hv.calls()
    );
    let _ = genie_stop.send(true);
    other.stop().await;
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn with_no_leader_known_a_follower_answers_503_saying_so_and_turns_genies_away() {
    // An etcd that is not there: the router campaigns in vain and never leads.
    let rig = TestRouter::builder()
        .tag("ha-none")
        .secret(SECRET)
        .hosts(1)
        .energy("[ha]\netcd = [\"127.0.0.1:9\"]\nname = \"lonely\"\n");
    let r = rig.start().await;
    let e = status(&r.tcp_api).await.unwrap_err().to_string();
    assert!(
        e.contains("lonely is not the leader") && e.contains("no leader is known"),
        "{e}"
    );
    let err = support::genie_handshake(r.link, "h1", SECRET, 1)
        .await
        .unwrap_err();
    assert!(
        err.contains("not the leader") && err.contains("no leader is known"),
        "{err}"
    );
    r.stop().await;
}

/// A genie's liveness lease in etcd against the leader's watcher, on a 3-member etcd:
/// the genie reaches etcd through member 0 only; freezing that member cuts it off (as
/// a host cut from the network), while the router still reads members 1 and 2. The
/// genie must kill its VMs (here a fake that counts) before the watcher ever sees its
/// key gone, which is the leader's proof that the host runs nothing.
#[test]
fn a_cut_off_genie_self_fences_before_the_leader_sees_its_etcd_lease_gone() {
    use genie::liveness::{LivenessConfig, REQUEST};
    use router::ha::liveness::GenieLiveness;
    use std::sync::atomic::Ordering;
    use std::time::Instant;
    use wisp_common::etcd::EtcdClient;

    let dir = std::env::temp_dir().join(format!("wisp-ha-live-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let etcd = EtcdCluster::start(3, &dir).unwrap();
    let eps = etcd.endpoints();
    let ttl = Duration::from_secs(2);
    let fence = FakeFence {
        vms: 1,
        ..Default::default()
    };
    let local = genie::liveness::local_deadline(ttl).as_millis() as u64;
    let lease = genie::lease::spawn(local, None, fence.clone()).unwrap();
    let _live = genie::liveness::spawn(
        LivenessConfig {
            endpoints: vec![eps[0].clone()],
            cluster: "c1".into(),
            host: HostId::new("h1").unwrap(),
            instance: 7,
            ttl,
        },
        lease,
        Arc::new(fence.clone()),
    )
    .unwrap();
    let watcher = GenieLiveness::spawn(EtcdClient::new(&eps[1..], REQUEST).unwrap(), "c1").unwrap();
    let h1 = HostId::new("h1").unwrap();
    let key = wisp_common::etcd::genie_key("c1", "h1");
    let reader = EtcdClient::new(&eps[1..], REQUEST).unwrap();
    let deadline = Instant::now() + WAIT;
    while reader.get(&key).unwrap().is_none() {
        assert!(Instant::now() < deadline, "the genie never registered");
        std::thread::sleep(Duration::from_millis(20));
    }
    // Renewals keep it alive well past a TTL; nothing is killed.
    std::thread::sleep(ttl * 2);
    assert!(reader.get(&key).unwrap().is_some());
    assert_eq!(fence.kills.load(Ordering::SeqCst), 0);
    assert_eq!(watcher.gone_for(&h1), None);

    let t0 = Instant::now();
    etcd.freeze_member(0).unwrap();
    let mut killed_at = None;
    let gone_at = loop {
        if killed_at.is_none() && fence.kills.load(Ordering::SeqCst) > 0 {
            killed_at = Some(t0.elapsed());
        }
        if watcher.gone_for(&h1).is_some() {
            break t0.elapsed();
        }
        assert!(t0.elapsed() < WAIT, "the leader never saw the lease expire");
        std::thread::sleep(Duration::from_millis(5));
    };
    eprintln!("cut off at 0: genie self-fenced at {killed_at:?}, leader saw the lease gone at {gone_at:?}");
    let killed_at =
        killed_at.expect("the leader saw the lease gone before the genie killed its VMs");
    assert!(killed_at < gone_at);
    etcd.thaw_member(0).unwrap();
    watcher.stop();
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}
