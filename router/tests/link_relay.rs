//! The attack of issue 12: a relay that does not know the cluster secret passes the
//! handshake through, then injects, replays or alters frames. Every such frame closes
//! the link (the router's event log says why), and nothing it carried is applied: no
//! fake VM shows up, the played genie sees the relay's command refused.
#![allow(clippy::unwrap_used)]

mod support;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use router::api::types::{HostView, VmView};
use router::cli::Client;
use support::rig::TestRouter;
use support::sealed::{read_frame, write_frame};
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, Mutex};
use wisp_common::proto::frame::{self, FrameError};
use wisp_common::proto::{Command, GenieMsg, Report, RouterMsg, VmStatus, MAX_FRAME_BYTES};
use wisp_common::{VmId, VmRunState};

const SECRET: &[u8] = b"link-relay-test-secret-0123";
const WAIT: Duration = Duration::from_secs(30);

type Shared = Arc<Mutex<OwnedWriteHalf>>;

/// One relayed connection: both writers (to inject) and the genie's frames as seen.
struct Relayed {
    to_router: Shared,
    to_genie: Shared,
    /// Every frame body the genie sent, in order.
    from_genie: mpsc::UnboundedReceiver<Vec<u8>>,
}

/// A frame-aware relay in front of `router`: forwards whole frames both ways and hands
/// each connection's writers to the test.
async fn relay(router: SocketAddr) -> (SocketAddr, mpsc::UnboundedReceiver<Relayed>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(async move {
        while let Ok((genie, _)) = l.accept().await {
            let up = TcpStream::connect(router).await.unwrap();
            let (grd, gwr) = genie.into_split();
            let (urd, uwr) = up.into_split();
            let (to_router, to_genie) = (Arc::new(Mutex::new(uwr)), Arc::new(Mutex::new(gwr)));
            let (seen_tx, seen) = mpsc::unbounded_channel();
            forward(grd, to_router.clone(), Some(seen_tx));
            forward(urd, to_genie.clone(), None);
            let _ = tx.send(Relayed {
                to_router,
                to_genie,
                from_genie: seen,
            });
        }
    });
    (addr, rx)
}

fn forward(
    mut from: tokio::net::tcp::OwnedReadHalf,
    to: Shared,
    seen: Option<mpsc::UnboundedSender<Vec<u8>>>,
) {
    tokio::spawn(async move {
        while let Ok(Some(body)) = frame::read_body(&mut from, 2 * MAX_FRAME_BYTES).await {
            if let Some(s) = &seen {
                let _ = s.send(body.clone());
            }
            if frame::write_body(&mut *to.lock().await, &body, 2 * MAX_FRAME_BYTES)
                .await
                .is_err()
            {
                return;
            }
        }
    });
}

async fn get<T: serde::de::DeserializeOwned + Send + 'static>(api: &str, path: &'static str) -> T {
    let api = api.to_owned();
    tokio::task::spawn_blocking(move || Client::new(&api, None).get(path).unwrap())
        .await
        .unwrap()
}

/// Polls the events until one of host h1's link closing names `needle`.
async fn wait_closed_because(api: &str, needle: &str) -> String {
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let evs: Vec<router::events::Event> = get(api, "/v1/events?limit=200").await;
        if let Some(e) = evs.iter().find(|e| {
            e.kind == router::events::EventKind::GenieDisconnected && e.message.contains(needle)
        }) {
            return e.message.clone();
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no link closed because of {needle:?}: {evs:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn report(gen: u64, vms: Option<Vec<VmStatus>>) -> GenieMsg {
    GenieMsg::Report(Report {
        gen,
        sent_at_ms: wisp_common::time::unix_ms(),
        vms,
        ..Default::default()
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relay_without_the_secret_cannot_inject_replay_or_alter_frames() {
    let r = TestRouter::builder()
        .tag("relay")
        .secret(SECRET)
        .hosts(1)
        .start()
        .await;
    let (relay_addr, mut conns) = relay(r.link).await;

    // The handshake passes through the relay: it only copies frames.
    let g = support::genie_handshake(relay_addr, "h1", SECRET, 7)
        .await
        .unwrap();
    let relayed = conns.recv().await.unwrap();
    let (mut rd, mut wr) = g.stream.into_split();
    write_frame(&mut wr, &report(1, Some(vec![])), MAX_FRAME_BYTES)
        .await
        .unwrap();
    let ack: Option<RouterMsg> = read_frame(&mut rd, MAX_FRAME_BYTES).await.unwrap();
    assert_eq!(ack, Some(RouterMsg::Ack { gen: 1 }));

    // Toward the genie: a StartVm the router never sent. The genie refuses it.
    let forged = RouterMsg::Command {
        id: 1,
        command: Command::StopVm {
            vm: VmId::new("victim").unwrap(),
            force: true,
            timeout_ms: 0,
        },
    };
    frame::write_frame(
        &mut *relayed.to_genie.lock().await,
        &forged,
        MAX_FRAME_BYTES,
    )
    .await
    .unwrap();
    let got: Result<Option<RouterMsg>, FrameError> = read_frame(&mut rd, MAX_FRAME_BYTES).await;
    assert!(matches!(got, Err(FrameError::Forged { .. })), "{got:?}");

    // Toward the router: a report with a fake VM. The router closes the link, says
    // why, and never shows the VM.
    let fake = VmStatus {
        id: VmId::new("fake").unwrap(),
        state: VmRunState::Running,
        vcpus: 1,
        mem_mib: 64,
        cpu_time_ms: 0,
        pid: Some(1),
        qmp_socket: "/nonexistent".into(),
        epoch: 0,
    };
    frame::write_frame(
        &mut *relayed.to_router.lock().await,
        &report(2, Some(vec![fake])),
        MAX_FRAME_BYTES,
    )
    .await
    .unwrap();
    let why = wait_closed_because(&r.api, "failed authentication").await;
    assert!(why.contains("bad frame"), "{why}");
    let vms: Vec<VmView> = get(&r.api, "/v1/vms").await;
    assert!(vms.iter().all(|v| v.name.as_str() != "fake"), "{vms:?}");
    drop((rd, wr));

    // A replay: the relay sends the genie's own last report again.
    let g = support::genie_handshake(relay_addr, "h1", SECRET, 8)
        .await
        .unwrap();
    let mut relayed2 = conns.recv().await.unwrap();
    let (_rd, mut wr) = g.stream.into_split();
    write_frame(&mut wr, &report(1, Some(vec![])), MAX_FRAME_BYTES)
        .await
        .unwrap();
    // Hello and Auth went by first; then the sealed report.
    let mut last = None;
    for _ in 0..3 {
        last = Some(
            tokio::time::timeout(WAIT, relayed2.from_genie.recv())
                .await
                .unwrap()
                .unwrap(),
        );
    }
    frame::write_body(
        &mut *relayed2.to_router.lock().await,
        &last.unwrap(),
        2 * MAX_FRAME_BYTES,
    )
    .await
    .unwrap();
    let why = wait_closed_because(&r.api, "replayed").await;
    assert!(why.contains("sequence number 0 where 1 was due"), "{why}");

    // An altered frame: one bit of a sealed report flipped on the way.
    let g = support::genie_handshake(relay_addr, "h1", SECRET, 9)
        .await
        .unwrap();
    let mut relayed3 = conns.recv().await.unwrap();
    let (_rd, mut wr) = g.stream.into_split();
    write_frame(&mut wr, &report(1, Some(vec![])), MAX_FRAME_BYTES)
        .await
        .unwrap();
    let mut body = Vec::new();
    for _ in 0..3 {
        body = tokio::time::timeout(WAIT, relayed3.from_genie.recv())
            .await
            .unwrap()
            .unwrap();
    }
    body[12] ^= 0x01;
    // Sent as the next frame (number 1) would be: it still fails its MAC.
    frame::write_body(
        &mut *relayed3.to_router.lock().await,
        &body,
        2 * MAX_FRAME_BYTES,
    )
    .await
    .unwrap();
    // The second link closed for a failed MAC (the first was the injection).
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let evs: Vec<router::events::Event> = get(&r.api, "/v1/events?limit=500").await;
        let n = evs
            .iter()
            .filter(|e| {
                e.kind == router::events::EventKind::GenieDisconnected
                    && e.message.contains("failed authentication")
            })
            .count();
        if n >= 2 {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "{evs:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let hosts: Vec<HostView> = get(&r.api, "/v1/hosts").await;
    assert!(hosts.iter().all(|h| h.vms == 0), "{hosts:?}");
    r.stop().await;
}
