//! Two replicated routers (`[ha]`) on a real etcd: exactly one leads and serves the
//! API, the other answers 503 naming the leader; what the leader stored (the energy
//! mode chosen by the operator) is in etcd, and when the leader stops, the other takes
//! over within a few seconds with that state.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use router::api::types::StatusView;
use router::cli::{Client, ClientError};
use support::rig::{TestRouter, ADMIN_TOKEN};
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

/// Polls the two APIs until one of them serves the status; returns its index.
async fn leader_of(apis: &[&str]) -> usize {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        for (i, a) in apis.iter().enumerate() {
            if status(a).await.is_ok() {
                return i;
            }
        }
        assert!(tokio::time::Instant::now() < deadline, "no router leads");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_router_leads_the_other_names_it_and_takes_over_with_the_state() {
    let dir = std::env::temp_dir().join(format!("wisp-ha-etcd-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let etcd = tokio::task::spawn_blocking({
        let dir = dir.clone();
        move || EtcdCluster::start(1, &dir).unwrap()
    })
    .await
    .unwrap();
    let ha = format!(
        "[ha]\netcd = [\"{}\"]\ncluster = \"t{}\"\n",
        etcd.endpoints()[0],
        std::process::id()
    );
    let rig = TestRouter::builder()
        .tag("ha")
        .secret(SECRET)
        .hosts(1)
        .energy(&ha);
    let a = rig.start().await;
    let b = rig.start().await;
    // Over TCP: a follower serves no local socket, only its 503 naming the leader.
    let apis = [a.tcp_api.as_str(), b.tcp_api.as_str()];
    let lead = leader_of(&apis).await;
    let follow = 1 - lead;
    // The follower refuses, naming the leader's API.
    match status(apis[follow]).await {
        Err(e) => {
            let text = e.to_string();
            assert!(
                text.contains("not the leader") && text.contains(apis[lead]),
                "{text}"
            );
        }
        Ok(s) => panic!("both routers serve the API: {s:?}"),
    }
    // The operator's choice is stored by the leader, in etcd.
    energy_on(apis[lead]).await;
    assert!(status(apis[lead]).await.unwrap().energy_mode);

    // The leader stops (an upgrade): the other takes over and has the state.
    let t0 = tokio::time::Instant::now();
    let (leader, other) = if lead == 0 { (a, b) } else { (b, a) };
    leader.stop().await;
    let deadline = tokio::time::Instant::now() + WAIT;
    let s = loop {
        if let Ok(s) = status(&other.tcp_api).await {
            break s;
        }
        assert!(tokio::time::Instant::now() < deadline, "nobody took over");
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    eprintln!(
        "takeover after a leader's stop: {} ms",
        t0.elapsed().as_millis()
    );
    assert!(s.energy_mode, "the new leader lost the state: {s:?}");
    other.stop().await;
    drop(etcd);
    let _ = std::fs::remove_dir_all(&dir);
}
