//! The two ways a VM ran twice through the genie link, tried against the real daemon
//! with genies played over the real protocol on loopback:
//! - a second genie registers with an existing host's name (a reinstalled server with
//!   the same config): while the host's genie is heard it is refused, with the reason,
//!   and the live one is undisturbed; once the host went quiet (a reboot that never
//!   closed its old connection) the newcomer takes the name, and the replaced
//!   connection must be closed by the router and its reports never acknowledged again,
//!   so the old genie's self-fence lease runs out (before, it was acked while its
//!   reports were dropped as stale, and its VMs ran on after the router had restarted
//!   them elsewhere);
//! - the genie's wall clock steps back (NTP): its reports must still be applied and
//!   acknowledged (before, they were dropped as "older" by their send time but still
//!   acked, the host looked silent and was fenced while its VMs ran).
#![allow(clippy::unwrap_used)]

mod support;

use std::time::Duration;

use support::rig::TestRouter;

use support::sealed::{read_frame, write_frame, Reader, Writer};
use tokio::time::Instant;
use wisp_common::proto::{GenieMsg, Report, RouterMsg, MAX_FRAME_BYTES};

const SECRET: &[u8] = b"link-safety-test-secret";

/// Generous for a loaded machine.
const DEADLINE: Duration = Duration::from_secs(20);

async fn connect(r: &TestRouter, instance: u64) -> (Reader, Writer) {
    support::genie_handshake(r.link, "h1", SECRET, instance)
        .await
        .unwrap_or_else(|e| panic!("not welcomed: {e}"))
        .stream
        .into_split()
}

async fn send(w: &mut Writer, gen: u64, sent_at_ms: u64) -> bool {
    let r = Report {
        gen,
        sent_at_ms,
        ..Default::default()
    };
    write_frame(w, &GenieMsg::Report(r), MAX_FRAME_BYTES)
        .await
        .is_ok()
}

/// What the router says next within `wait`: `Some(Ok(msg))`, `Some(Err(()))` for the
/// end of the connection, `None` for silence.
async fn next(r: &mut Reader, wait: Duration) -> Option<Result<RouterMsg, ()>> {
    match tokio::time::timeout(wait, read_frame::<_, RouterMsg>(r, MAX_FRAME_BYTES)).await {
        Err(_) => None,
        Ok(Ok(Some(m))) => Some(Ok(m)),
        Ok(_) => Some(Err(())),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_replaced_link_is_closed_and_never_acknowledged_again() {
    let r = TestRouter::builder()
        .tag("replaced")
        .secret(SECRET)
        .hosts(1)
        .start()
        .await;
    let (mut a_rd, mut a_wr) = connect(&r, 1).await;
    assert!(send(&mut a_wr, 1, wisp_common::time::unix_ms()).await);
    assert!(
        matches!(
            next(&mut a_rd, DEADLINE).await,
            Some(Ok(RouterMsg::Ack { gen: 1 }))
        ),
        "the first genie's report is acknowledged"
    );

    // The first genie goes quiet (its host rebooted without closing the connection):
    // a second genie process with the same name is refused while the first is still
    // heard, then takes over the host, and leaves.
    let until = Instant::now() + DEADLINE;
    let (b_rd, mut b_wr) = loop {
        match support::genie_handshake(r.link, "h1", SECRET, 2).await {
            Ok(w) => break w.stream.into_split(),
            Err(e) => {
                assert!(e.contains("taken by a live genie"), "{e}");
                assert!(Instant::now() < until, "never taken over: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    };
    assert!(send(&mut b_wr, 1, wisp_common::time::unix_ms()).await);
    drop((b_rd, b_wr));

    // The first genie goes on reporting: it must get no ack, and its connection must
    // be closed by the router.
    let until = Instant::now() + DEADLINE;
    let mut gen = 2;
    let closed = loop {
        assert!(Instant::now() < until, "the replaced link was never closed");
        if !send(&mut a_wr, gen, wisp_common::time::unix_ms()).await {
            break true;
        }
        gen += 1;
        match next(&mut a_rd, Duration::from_millis(100)).await {
            Some(Ok(RouterMsg::Ack { gen })) => {
                panic!("a replaced genie's report {gen} was acknowledged: its lease would never run out")
            }
            Some(Ok(_)) | None => {}
            Some(Err(())) => break true,
        }
    };
    assert!(closed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_genie_under_a_live_hosts_name_is_refused_and_the_live_one_undisturbed() {
    let r = TestRouter::builder()
        .tag("taken")
        .secret(SECRET)
        .hosts(1)
        .start()
        .await;
    let (mut a_rd, mut a_wr) = connect(&r, 1).await;
    assert!(send(&mut a_wr, 1, wisp_common::time::unix_ms()).await);
    assert!(matches!(
        next(&mut a_rd, DEADLINE).await,
        Some(Ok(RouterMsg::Ack { gen: 1 }))
    ));
    let e = match support::genie_handshake(r.link, "h1", SECRET, 2).await {
        Ok(_) => panic!("a second genie took the name of a live one"),
        Err(e) => e,
    };
    assert!(e.contains("taken by a live genie"), "{e}");
    // The live genie goes on as before: its next report is acknowledged.
    assert!(send(&mut a_wr, 2, wisp_common::time::unix_ms()).await);
    assert!(matches!(
        next(&mut a_rd, DEADLINE).await,
        Some(Ok(RouterMsg::Ack { gen: 2 }))
    ));
}

/// A host cut off goes quiet while its VMs run on. A second genie elsewhere under its
/// name would report no VMs and get them started again: it is refused for its address,
/// while the host's own genie (a reboot: a new process, the same address) is welcomed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genie_from_another_address_never_takes_a_quiet_hosts_name() {
    let r = TestRouter::builder()
        .tag("addr")
        .secret(SECRET)
        .hosts(1)
        .start()
        .await;
    let (mut a_rd, mut a_wr) = connect(&r, 1).await;
    assert!(send(&mut a_wr, 1, wisp_common::time::unix_ms()).await);
    assert!(matches!(
        next(&mut a_rd, DEADLINE).await,
        Some(Ok(RouterMsg::Ack { gen: 1 }))
    ));
    // The cut: nothing more from h1's genie, and no close. Wait until the router sees
    // h1 quiet, past the point where the live-name rule protects it.
    let api = r.api.clone();
    let quiet_since = Instant::now();
    loop {
        let api = api.clone();
        let state = tokio::task::spawn_blocking(move || {
            router::cli::Client::new(&api, None)
                .get::<serde_json::Value>("/v1/hosts")
                .map(|hs| hs[0]["state"].as_str().unwrap_or_default().to_owned())
        })
        .await
        .unwrap()
        .unwrap();
        if state != "up" {
            break;
        }
        assert!(quiet_since.elapsed() < DEADLINE, "h1 never went quiet");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let from: std::net::IpAddr = "127.0.0.2".parse().unwrap();
    let e = match support::genie_handshake_from(r.link, Some(from), "h1", SECRET, 2).await {
        Ok(_) => panic!("a genie from 127.0.0.2 took the quiet h1's name"),
        Err(e) => e,
    };
    assert!(
        e.contains("connected from 127.0.0.2") && e.contains("address is 127.0.0.1"),
        "{e}"
    );
    // The host's own new genie process, from its address, is welcomed.
    support::genie_handshake(r.link, "h1", SECRET, 3)
        .await
        .unwrap_or_else(|e| panic!("h1's own genie was refused: {e}"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_wall_clock_step_back_does_not_drop_reports() {
    let r = TestRouter::builder()
        .tag("clockstep")
        .secret(SECRET)
        .hosts(1)
        .start()
        .await;
    let (mut rd, mut wr) = connect(&r, 7).await;
    let now = wisp_common::time::unix_ms();
    // An hour back after the third report, then six seconds back again: each report's
    // generation rises, which is all that orders them.
    let times = [
        now,
        now + 200,
        now + 400,
        now - 3_600_000,
        now - 3_599_800,
        now - 3_605_800,
    ];
    for (i, t) in times.into_iter().enumerate() {
        let gen = i as u64 + 1;
        assert!(send(&mut wr, gen, t).await);
        match next(&mut rd, DEADLINE).await {
            Some(Ok(RouterMsg::Ack { gen: acked })) => assert_eq!(acked, gen),
            other => panic!("report {gen} sent at {t} was not acknowledged: {other:?}"),
        }
    }
    // A report that really is old (its generation did not rise) is dropped, not acked.
    assert!(send(&mut wr, 3, now + 10_000).await);
    match next(&mut rd, Duration::from_millis(1500)).await {
        Some(Ok(RouterMsg::Ack { gen })) => panic!("a stale generation {gen} was acknowledged"),
        Some(Err(())) => panic!("the router closed the link over a stale report"),
        _ => {}
    }
}
