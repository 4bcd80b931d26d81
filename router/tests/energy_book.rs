//! The energy book (kWh used, kWh with every host on, the time they cover) survives a
//! router restart: the real daemon on loopback with a genie played over the real
//! protocol, stopped and started again on the same state directory.
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use router::cli::Client;
use router::energy::{EnergyStatus, BOOK_SAVE_S};
use support::rig::TestRouter;
use support::sealed::write_frame;
use wisp_common::proto::{GenieMsg, Report, MAX_FRAME_BYTES};

const SECRET: &[u8] = b"energy-book-test-secret";

async fn energy(api: &str) -> EnergyStatus {
    let api = api.to_owned();
    tokio::task::spawn_blocking(move || Client::new(&api, None).get("/v1/energy").unwrap())
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_energy_book_survives_a_router_restart() {
    let rig = TestRouter::builder().tag("book").secret(SECRET).hosts(1);
    let dir = rig.dir();
    let r = rig.start_in(&dir).await;
    // A reporting host draws its idle watts in the book.
    let mut s = support::genie_handshake(r.link, "h1", SECRET, 5)
        .await
        .unwrap()
        .stream;
    let genie = tokio::spawn(async move {
        for gen in 1.. {
            let rep = Report {
                gen,
                sent_at_ms: wisp_common::time::unix_ms(),
                ..Default::default()
            };
            if write_frame(&mut s, &GenieMsg::Report(rep), MAX_FRAME_BYTES)
                .await
                .is_err()
            {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    // Past the first save (generous: the machine may be loaded).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    let before = loop {
        let st = energy(&r.api).await;
        if st.accounted_s > BOOK_SAVE_S + 1.0 && st.used_kwh > 0.0 {
            break st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the book never grew: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    genie.abort();
    r.stop().await;

    let r = rig.start_in(&dir).await;
    // The status is published from the energy task's first sample on.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    let after = loop {
        let st = energy(&r.api).await;
        if st.accounted_s > 0.0 {
            break st;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no energy status: {st:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert!(
        after.accounted_s >= BOOK_SAVE_S - 1.0 && after.used_kwh > 0.0 && after.all_on_kwh > 0.0,
        "the book was lost in the restart: before {before:?}, after {after:?}"
    );
    // What was stored is at most what was shown before the stop.
    assert!(
        after.used_kwh <= before.used_kwh + 1e-9,
        "{before:?} {after:?}"
    );
    r.stop().await;
}
