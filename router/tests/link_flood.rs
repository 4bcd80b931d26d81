//! The genie link's accept path under abuse (issue 12): a flood of connect-and-close
//! while a genie reports leaves that host up (refusals are counted, not each written
//! as an event), and a thousand connections that each send most of a frame before
//! authenticating cost the router a bounded amount of memory.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use router::api::types::HostView;
use router::cli::Client;
use support::rig::TestRouter;
use support::sealed::write_frame;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use wisp_common::proto::{GenieMsg, Report, MAX_FRAME_BYTES};

const SECRET: &[u8] = b"link-flood-test-secret-0123";

async fn hosts(api: &str) -> Vec<HostView> {
    let api = api.to_owned();
    tokio::task::spawn_blocking(move || Client::new(&api, None).get("/v1/hosts").unwrap())
        .await
        .unwrap()
}

/// The resident memory of this process (the rig's router runs in it), bytes.
fn rss() -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap();
    let kb: u64 = s
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    kb * 1024
}

/// A genie reporting every 100 ms until dropped.
async fn reporting_genie(r: &TestRouter) -> tokio::task::JoinHandle<()> {
    let g = support::genie_handshake(r.link, "h1", SECRET, 3)
        .await
        .unwrap();
    let (_rd, mut wr) = g.stream.into_split();
    tokio::spawn(async move {
        let _rd = _rd;
        for gen in 1.. {
            let rep = GenieMsg::Report(Report {
                gen,
                sent_at_ms: wisp_common::time::unix_ms(),
                vms: Some(vec![]),
                ..Default::default()
            });
            if write_frame(&mut wr, &rep, MAX_FRAME_BYTES).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
}

async fn wait_up(api: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hosts(api).await[0].state.as_str() != "up" {
        assert!(tokio::time::Instant::now() < deadline, "h1 never came up");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_connect_and_close_flood_leaves_a_reporting_host_up() {
    let r = TestRouter::builder()
        .tag("flood")
        .secret(SECRET)
        .hosts(1)
        .start()
        .await;
    let genie = reporting_genie(&r).await;
    wait_up(&r.api).await;
    // The flood, while a sampler watches h1's state.
    let link = r.link;
    let flood = tokio::spawn(async move {
        for _ in 0..1000 {
            if let Ok(s) = TcpStream::connect(link).await {
                drop(s);
            }
        }
    });
    let mut states = std::collections::BTreeSet::new();
    while !flood.is_finished() {
        states.insert(hosts(&r.api).await[0].state.as_str().to_owned());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    flood.await.unwrap();
    // And for a second after, while the last handshakes end.
    for _ in 0..20 {
        states.insert(hosts(&r.api).await[0].state.as_str().to_owned());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(states.into_iter().collect::<Vec<_>>(), ["up"]);
    // One refusal is told at once; the rest wait for the minute's summary.
    let evs: Vec<router::events::Event> = {
        let api = r.api.clone();
        tokio::task::spawn_blocking(move || {
            Client::new(&api, None)
                .get("/v1/events?limit=2000")
                .unwrap()
        })
        .await
        .unwrap()
    };
    let refusals = evs
        .iter()
        .filter(|e| e.kind == router::events::EventKind::GenieRefused)
        .count();
    assert!(refusals <= 1, "{refusals} refusal events: {evs:?}");
    genie.abort();
    r.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_thousand_nearly_complete_frames_cost_bounded_memory() {
    let r = TestRouter::builder()
        .tag("frames")
        .secret(SECRET)
        .hosts(1)
        .start()
        .await;
    let genie = reporting_genie(&r).await;
    wait_up(&r.api).await;
    let before = rss();
    let link = r.link;
    // Half announce a 1 MiB Hello (refused at its length) and send 64 KiB of it; half
    // send all but the last byte of a 4,000-byte frame (under the handshake limit)
    // and hold it.
    let mut held = Vec::new();
    for i in 0..1000 {
        let Ok(mut s) = TcpStream::connect(link).await else {
            continue;
        };
        if i % 2 == 0 {
            let _ = s
                .write_all(&(MAX_FRAME_BYTES as u32 - 1).to_be_bytes())
                .await;
            let _ = s.write_all(&vec![b'x'; 64 << 10]).await;
        } else {
            let _ = s.write_all(&4000u32.to_be_bytes()).await;
            let _ = s.write_all(&vec![b'x'; 3999]).await;
        }
        held.push(s);
    }
    let after = rss();
    let grew = after.saturating_sub(before);
    eprintln!(
        "RSS {} MB before, {} MB with 1,000 half-sent frames",
        before >> 20,
        after >> 20
    );
    assert!(grew < 64 << 20, "RSS grew by {} MB", grew >> 20);
    // The reporting host never noticed.
    assert_eq!(hosts(&r.api).await[0].state.as_str(), "up");
    drop(held);
    genie.abort();
    r.stop().await;
}

/// 2,500 idle connections from one address (each held open, never sending) cannot
/// keep a genie on another address from registering: that source gets its few
/// handshake slots, the rest are closed at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_from_one_source_do_not_delay_a_genie_from_another() {
    let r = TestRouter::builder()
        .tag("idle")
        .secret(SECRET)
        .hosts(1)
        .start()
        .await;
    let mut idle = Vec::new();
    for _ in 0..2500 {
        let s = tokio::net::TcpSocket::new_v4().unwrap();
        s.bind("127.0.0.2:0".parse().unwrap()).unwrap();
        if let Ok(c) = s.connect(r.link).await {
            idle.push(c);
        }
    }
    // The genie (from 127.0.0.1) is welcomed within its own handshake timeout.
    let t = std::time::Instant::now();
    let g = support::genie_handshake(r.link, "h1", SECRET, 11).await;
    assert!(g.is_ok(), "{:?}", g.err());
    eprintln!(
        "genie welcomed in {} ms beside {} idle connections",
        t.elapsed().as_millis(),
        idle.len()
    );
    drop(idle);
    r.stop().await;
}
