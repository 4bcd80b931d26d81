//! The genie's link against an in-test router stub on 127.0.0.1 that speaks
//! `wisp_common::proto` the way the router does.
#![allow(clippy::unwrap_used)]

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::sealed::{read_frame, write_frame};
use genie::fakes::FakeFence;
use genie::fakes::{fake_status, FakeHypervisor, FakePower};
use genie::lease;
use genie::link::{random_instance, Link, LinkConfig};
use genie::metrics::SysinfoMetrics;
use genie::report::Reporter;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{watch, Notify};
use wisp_common::proto::{
    Command, GenieMsg, Outcome, PowerCaps, Report, RouterMsg, MAX_FRAME_BYTES,
};
use wisp_common::secret::Secret;
use wisp_common::{HostId, VmId, VmRunState, VmSpec};

const LONG: Duration = Duration::from_secs(20);

/// Log lines captured from the genie under test.
#[derive(Clone, Default)]
struct Logs(Arc<Mutex<Vec<u8>>>);

impl Write for Logs {
    fn write(&mut self, b: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(b);
        Ok(b.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Logs {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock().unwrap()).into_owned()
    }
    fn install(&self) -> tracing::subscriber::DefaultGuard {
        let me = self.clone();
        let sub = tracing_subscriber::fmt()
            .with_writer(move || me.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::DEBUG)
            .finish();
        tracing::subscriber::set_default(sub)
    }
}

struct Genie {
    stop: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
    hv: FakeHypervisor,
    power: FakePower,
    changes: Arc<Notify>,
}

fn host() -> HostId {
    HostId::new("h1").unwrap()
}

async fn start_genie(router: String, secret: &[u8]) -> Genie {
    start_genie_fenced(router, secret, FakeFence::default()).await
}

async fn start_genie_fenced(router: String, secret: &[u8], fence: FakeFence) -> Genie {
    let hv = FakeHypervisor::default();
    let power = FakePower::default();
    *power.caps.lock().unwrap() = caps(&["freeze", "mem"]);
    let changes = Arc::new(Notify::new());
    let lease = lease::spawn(0, None, fence).unwrap();
    let link = Link::new(
        LinkConfig {
            host: host(),
            routers: vec![router],
            secret: Secret::from_bytes(secret.to_vec()),
            heartbeat_ms: 200,
            metrics_ms: 1000,
            address: None,
            instance: random_instance(),
        },
        Reporter::new(SysinfoMetrics::new().unwrap()),
        hv.clone(),
        power.clone(),
        lease,
        changes.clone(),
    );
    let (stop, rx) = watch::channel(false);
    let task = tokio::spawn(link.run(rx));
    Genie {
        stop,
        task,
        hv,
        power,
        changes,
    }
}

fn caps(states: &[&str]) -> PowerCaps {
    PowerCaps {
        sleep_states: states.iter().map(|s| s.to_string()).collect(),
        ..Default::default()
    }
}

async fn handshake(s: &mut TcpStream, secret: &[u8], answer: RouterMsg) -> Option<u64> {
    common::router_handshake(s, secret, &host(), answer).await
}

fn welcome(heartbeat_ms: u64, metrics_ms: u64) -> RouterMsg {
    RouterMsg::Welcome {
        session: 1,
        heartbeat_ms,
        metrics_ms,
        lease_ms: 0,
    }
}

async fn next_msg(s: &mut TcpStream) -> GenieMsg {
    tokio::time::timeout(LONG, read_frame(s, MAX_FRAME_BYTES))
        .await
        .expect("genie went silent")
        .unwrap()
        .expect("genie closed the link")
}

async fn next_report(s: &mut TcpStream) -> Report {
    loop {
        if let GenieMsg::Report(r) = next_msg(s).await {
            return r;
        }
    }
}

#[tokio::test]
async fn handshake_then_heartbeats_and_full_reports_at_the_welcomed_rates() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let g = start_genie(l.local_addr().unwrap().to_string(), b"cluster").await;
    let (mut s, _) = l.accept().await.unwrap();
    handshake(&mut s, b"cluster", welcome(50, 250))
        .await
        .unwrap();
    let t0 = std::time::Instant::now();
    let (mut heartbeats, mut fulls, mut last_gen) = (0u32, 0u32, 0u64);
    let mut mem_total = 0;
    while t0.elapsed() < Duration::from_millis(1500) {
        let r = next_report(&mut s).await;
        assert!(
            r.gen > last_gen,
            "gen must strictly increase: {} after {last_gen}",
            r.gen
        );
        last_gen = r.gen;
        assert!(r.sent_at_ms > 0);
        match (&r.metrics, &r.vms) {
            (None, None) => heartbeats += 1,
            (Some(m), Some(_)) => {
                fulls += 1;
                mem_total = m.mem_total_bytes;
            }
            _ => {}
        }
    }
    // 1.5 s at 50 ms / 250 ms would be 30 / 6; a loaded machine gets fewer, never more
    // full reports than heartbeats.
    assert!(heartbeats >= 8, "heartbeats {heartbeats}");
    assert!(fulls >= 2, "full reports {fulls}");
    assert!(
        heartbeats > 2 * fulls,
        "heartbeats {heartbeats} full {fulls}"
    );
    assert!(mem_total > 0);
    println!("in 1.5 s: {heartbeats} heartbeats, {fulls} full reports");
    g.stop.send(true).unwrap();
    tokio::time::timeout(LONG, g.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn commands_are_answered_vm_changes_reported_and_gen_survives_reconnect() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let g = start_genie(l.local_addr().unwrap().to_string(), b"cluster").await;
    let (mut s, _) = l.accept().await.unwrap();
    let instance = handshake(&mut s, b"cluster", welcome(200, 1000))
        .await
        .unwrap();
    let spec = VmSpec::new(VmId::new("vm1").unwrap(), 1, 64);
    let cmd = RouterMsg::Command {
        id: 77,
        command: Command::StartVm { spec, epoch: 4 },
    };
    write_frame(&mut s, &cmd, MAX_FRAME_BYTES).await.unwrap();
    let mut gen = 0;
    loop {
        match next_msg(&mut s).await {
            GenieMsg::Reply { id, outcome } => {
                assert_eq!((id, outcome), (77, Outcome::Done));
                break;
            }
            GenieMsg::Report(r) => {
                assert!(r.gen > gen);
                gen = r.gen;
            }
            m => panic!("{m:?}"),
        }
    }
    assert_eq!(g.hv.calls(), vec!["start vm1 epoch 4"]);

    // A VM changes state: a VM report goes out at once (well before the next full one).
    g.hv.vms.lock().unwrap()[0] = fake_status(&VmId::new("vm1").unwrap(), VmRunState::Paused);
    g.changes.notify_one();
    loop {
        let r = next_report(&mut s).await;
        gen = r.gen;
        if r.metrics.is_none() {
            if let Some(v) = r.vms {
                assert_eq!(v[0].state, VmRunState::Paused);
                break;
            }
        }
    }

    // The router drops the link: the genie reconnects as the same instance, gen goes on.
    drop(s);
    let (mut s, _) = tokio::time::timeout(LONG, l.accept())
        .await
        .unwrap()
        .unwrap();
    let instance2 = handshake(&mut s, b"cluster", welcome(200, 1000))
        .await
        .unwrap();
    assert_eq!(instance, instance2);
    let r = next_report(&mut s).await;
    assert!(r.gen > gen, "gen {} after reconnect, was {gen}", r.gen);
    g.stop.send(true).unwrap();
    tokio::time::timeout(LONG, g.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn a_router_with_another_secret_is_refused_and_gets_no_reports() {
    let logs = Logs::default();
    let _guard = logs.install();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let g = start_genie(l.local_addr().unwrap().to_string(), b"cluster").await;
    for _ in 0..2 {
        let (mut s, _) = tokio::time::timeout(LONG, l.accept())
            .await
            .unwrap()
            .unwrap();
        // The impostor's proof fails: the genie hangs up without Auth or any report.
        assert_eq!(
            handshake(&mut s, b"not-the-secret", welcome(50, 50)).await,
            None
        );
    }
    let text = logs.text();
    assert!(text.contains("ERROR"), "{text}");
    assert!(
        text.contains("failed to prove the cluster secret"),
        "{text}"
    );
    assert!(
        !text.contains("not-the-secret") && !text.contains("cluster\""),
        "secret leaked: {text}"
    );
    g.stop.send(true).unwrap();
    tokio::time::timeout(LONG, g.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn refused_is_surfaced_and_malformed_frames_cause_a_reconnect() {
    let logs = Logs::default();
    let _guard = logs.install();
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let g = start_genie(l.local_addr().unwrap().to_string(), b"cluster").await;
    let (mut s, _) = l.accept().await.unwrap();
    let reason = "host h1 is in maintenance";
    handshake(
        &mut s,
        b"cluster",
        RouterMsg::Refused {
            reason: reason.into(),
        },
    )
    .await
    .unwrap();
    // The genie retries; this time welcome it, then send garbage.
    let (mut s, _) = tokio::time::timeout(LONG, l.accept())
        .await
        .unwrap()
        .unwrap();
    handshake(&mut s, b"cluster", welcome(200, 1000))
        .await
        .unwrap();
    s.write_all(&5u32.to_be_bytes()).await.unwrap();
    s.write_all(b"{oops").await.unwrap();
    let (mut s2, _) = tokio::time::timeout(LONG, l.accept())
        .await
        .unwrap()
        .unwrap();
    handshake(&mut s2, b"cluster", welcome(200, 1000))
        .await
        .unwrap();
    let text = logs.text();
    assert!(text.contains(reason) && text.contains("refused"), "{text}");
    // After the handshake every frame is sealed: garbage is a frame that fails its
    // authentication, which the genie logs as such before it reconnects.
    assert!(text.contains("failed authentication"), "{text}");
    g.stop.send(true).unwrap();
    tokio::time::timeout(LONG, g.task).await.unwrap().unwrap();
}

#[tokio::test]
async fn acks_keep_the_welcomed_lease_and_router_silence_fences() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let fence = FakeFence {
        vms: 1,
        ..Default::default()
    };
    let g = start_genie_fenced(
        l.local_addr().unwrap().to_string(),
        b"cluster",
        fence.clone(),
    )
    .await;
    let (mut s, _) = l.accept().await.unwrap();
    let w = RouterMsg::Welcome {
        session: 1,
        heartbeat_ms: 50,
        metrics_ms: 1000,
        lease_ms: 600,
    };
    handshake(&mut s, b"cluster", w).await.unwrap();
    // Ack every report for 1.5 s (well past the lease): no fence.
    let t0 = std::time::Instant::now();
    while t0.elapsed() < Duration::from_millis(1500) {
        let r = next_report(&mut s).await;
        write_frame(&mut s, &RouterMsg::Ack { gen: r.gen }, MAX_FRAME_BYTES)
            .await
            .unwrap();
    }
    assert_eq!(
        fence.kills.load(std::sync::atomic::Ordering::SeqCst),
        0,
        "acked genie must not fence"
    );
    // The router goes silent but keeps the socket open: the genie must fence.
    let silent = std::time::Instant::now();
    let drain = tokio::spawn(async move {
        while let Ok(Some(_)) = read_frame::<_, GenieMsg>(&mut s, MAX_FRAME_BYTES).await {}
    });
    assert!(
        common::eventually(LONG, || fence
            .kills
            .load(std::sync::atomic::Ordering::SeqCst)
            > 0)
        .await,
        "no self-fence after router silence"
    );
    assert!(
        silent.elapsed() >= Duration::from_millis(500),
        "fenced too early: {:?}",
        silent.elapsed()
    );
    g.stop.send(true).unwrap();
    tokio::time::timeout(LONG, g.task).await.unwrap().unwrap();
    drain.abort();
}

#[tokio::test]
async fn power_abilities_go_out_on_each_link_and_when_they_change() {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let g = start_genie(l.local_addr().unwrap().to_string(), b"cluster").await;
    let (mut s, _) = l.accept().await.unwrap();
    handshake(&mut s, b"cluster", welcome(50, 100))
        .await
        .unwrap();
    // Once learned, a full report carries them, then no report until they change.
    let mut r = next_report(&mut s).await;
    while r.power.is_none() {
        r = next_report(&mut s).await;
    }
    assert_eq!(r.power.as_deref(), Some(&caps(&["freeze", "mem"])));
    assert!(r.metrics.is_some(), "power goes with a full report");
    let mut fulls = 0;
    while fulls < 3 {
        let r = next_report(&mut s).await;
        assert!(r.power.is_none(), "unchanged abilities sent again: {r:?}");
        fulls += u32::from(r.metrics.is_some());
    }
    // Arming WoL (the Suspend command) makes the genie learn them again; what changed
    // goes out with the next full report.
    let learned = g.power.learned.load(std::sync::atomic::Ordering::SeqCst);
    *g.power.caps.lock().unwrap() = caps(&["freeze", "mem", "disk"]);
    let cmd = RouterMsg::Command {
        id: 5,
        command: Command::Suspend,
    };
    write_frame(&mut s, &cmd, MAX_FRAME_BYTES).await.unwrap();
    loop {
        let r = next_report(&mut s).await;
        if let Some(p) = r.power {
            assert_eq!(*p, caps(&["freeze", "mem", "disk"]));
            break;
        }
    }
    assert!(g.power.learned.load(std::sync::atomic::Ordering::SeqCst) > learned);
    assert_eq!(g.power.calls(), vec!["arm_wol", "suspend"]);
    // A new link gets them again in its first report, unchanged or not.
    drop(s);
    let (mut s, _) = tokio::time::timeout(LONG, l.accept())
        .await
        .unwrap()
        .unwrap();
    handshake(&mut s, b"cluster", welcome(50, 100))
        .await
        .unwrap();
    let r = next_report(&mut s).await;
    assert!(
        r.metrics.is_some() && r.vms.is_some(),
        "first report is full: {r:?}"
    );
    assert_eq!(r.power.as_deref(), Some(&caps(&["freeze", "mem", "disk"])));
    assert_eq!(r.resumed, None, "a plain reconnect is no resume");
    g.stop.send(true).unwrap();
    tokio::time::timeout(LONG, g.task).await.unwrap().unwrap();
}
