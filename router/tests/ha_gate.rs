//! The leader's fence check on the genie link, against the real router term
//! (`daemon::run_term`, as a replicated router's leader runs it) and a genie played
//! over the real protocol: once the term's fence has run out, the router sends the
//! genie nothing, not the command it decided on afterwards (a VM start), not an ack
//! (which would renew the genie's lease), and welcomes no genie; with a valid fence
//! the same request does reach the genie.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use router::daemon::{run_term, Term};
use router::ha::gate::Gate;
use router::ha::leader::{Fence, FenceToken};
use router::store::{FileStore, Store};
use support::rig::TestRouter;
use support::sealed::{read_frame, write_frame, SealedStream};
use tokio::net::TcpListener;
use tokio::sync::watch;
use wisp_common::proto::{Command, GenieMsg, HostMetrics, Report, RouterMsg, MAX_FRAME_BYTES};

const SECRET: &[u8] = b"ha-gate-test-secret-0123";
const TOKEN: FenceToken = FenceToken {
    create_revision: 3,
    lease: 5,
};
const WAIT: Duration = Duration::from_secs(20);

struct Leader {
    link: std::net::SocketAddr,
    api: String,
    fence: Fence,
    _stop: watch::Sender<bool>,
    _dir: support::rig::RigDir,
}

/// A leader's term whose fence holds for `term`; hosts stay "up" through a long
/// silence, so only the fence stops the router from acting.
async fn leader(term: Duration) -> Leader {
    let dir = TestRouter::builder()
        .tag("gate")
        .secret(SECRET)
        .hosts(1)
        .energy("suspect_after_ms = 60000\nunreachable_after_ms = 120000\n")
        .dir();
    let config = dir.config();
    let store = FileStore::open(&dir.path().join("state")).unwrap();
    let persisted = store.load().unwrap();
    let link = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let api = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (link_addr, api_addr) = (link.local_addr().unwrap(), api.local_addr().unwrap());
    let fence = Fence::held_for(TOKEN, term);
    let (stop, rx) = watch::channel(false);
    let t = Term {
        gate: Gate::fenced(fence.clone()),
        leader_name: Some("r1".into()),
        liveness: None,
    };
    tokio::spawn(async move {
        run_term(config, link, api, Box::new(store), persisted, t, rx)
            .await
            .unwrap()
    });
    Leader {
        link: link_addr,
        api: api_addr.to_string(),
        fence,
        _stop: stop,
        _dir: dir,
    }
}

/// A played genie for h1, welcomed, that has sent one full report.
async fn genie(l: &Leader) -> SealedStream {
    let mut s = support::genie_handshake(l.link, "h1", SECRET, 7)
        .await
        .unwrap()
        .stream;
    let r = Report {
        gen: 1,
        sent_at_ms: wisp_common::time::unix_ms(),
        metrics: Some(HostMetrics {
            per_cpu_percent: vec![1.0; 8],
            mem_total_bytes: 8 << 30,
            mem_available_bytes: 7 << 30,
            ..Default::default()
        }),
        vms: Some(vec![]),
        ..Default::default()
    };
    write_frame(&mut s, &GenieMsg::Report(r), MAX_FRAME_BYTES)
        .await
        .unwrap();
    s
}

/// The next frame from the router, `None` when it closed the link.
async fn next(s: &mut SealedStream) -> Option<RouterMsg> {
    tokio::time::timeout(WAIT, read_frame::<_, RouterMsg>(s, MAX_FRAME_BYTES))
        .await
        .expect("the router neither wrote nor closed")
        .ok()
        .flatten()
}

/// Asks the router to create vm1 on h1, in the background (the answer does not
/// matter: what reaches the genie does).
fn create_vm(api: &str) {
    let api = api.to_owned();
    tokio::task::spawn_blocking(move || {
        let _ = router::cli::Client::new(&api, Some(Duration::from_secs(30)))
            .with_token(support::rig::ADMIN_TOKEN)
            .post::<_, serde_json::Value>(
                "/v1/vms",
                &serde_json::json!({
                    "spec": {"name": "vm1", "vcpus": 1, "mem_mib": 64},
                    "host": "h1",
                }),
            );
    });
}

async fn wait_up(api: &str) {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let api2 = api.to_owned();
        let up = tokio::task::spawn_blocking(move || {
            router::cli::Client::new(&api2, None)
                .with_token(support::rig::ADMIN_TOKEN)
                .get::<router::api::types::StatusView>("/v1/status")
                .map(|s| s.hosts_up)
        })
        .await
        .unwrap();
        if up.is_ok_and(|n| n == 1) {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "h1 never came up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn within_the_term_the_command_reaches_the_genie() {
    let l = leader(Duration::from_secs(120)).await;
    let mut g = genie(&l).await;
    assert!(matches!(
        next(&mut g).await,
        Some(RouterMsg::Ack { gen: 1 })
    ));
    wait_up(&l.api).await;
    create_vm(&l.api);
    loop {
        match next(&mut g).await {
            Some(RouterMsg::Command {
                command: Command::StartVm { .. },
                ..
            }) => break,
            Some(_) => continue,
            None => panic!("the link closed before the command came"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_term_ran_out_nothing_is_sent_to_a_genie() {
    let l = leader(Duration::from_millis(1500)).await;
    let mut g = genie(&l).await;
    assert!(matches!(
        next(&mut g).await,
        Some(RouterMsg::Ack { gen: 1 })
    ));
    wait_up(&l.api).await;
    // The term ends between the router's last act and its next decision.
    let deadline = tokio::time::Instant::now() + WAIT;
    while l.fence.remaining().is_ok() {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    // The router still believes h1 is up and decides to start vm1 there; the send
    // is refused by the fence, which closes the link: the genie gets no command.
    create_vm(&l.api);
    while let Some(m) = next(&mut g).await {
        assert!(
            !matches!(m, RouterMsg::Command { .. } | RouterMsg::Ack { .. }),
            "a deposed leader sent {m:?}"
        );
    }
    // It was the fence that closed the link (not the idle limit), and the router
    // says so.
    let api = l.api.clone();
    let events = tokio::task::spawn_blocking(move || {
        router::cli::Client::new(&api, None)
            .with_token(support::rig::ADMIN_TOKEN)
            .get::<serde_json::Value>("/v1/events?limit=100")
            .unwrap()
    })
    .await
    .unwrap()
    .to_string();
    assert!(events.contains("not the leader any more"), "{events}");
    // And a new genie gets no welcome.
    let err = support::genie_handshake(l.link, "h1", SECRET, 8)
        .await
        .unwrap_err();
    assert!(err.contains("closed"), "{err}");
}
