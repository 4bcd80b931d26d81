//! The router's power commands against fake BMCs and a fake waker, with genies played
//! by the test over the real protocol on loopback: parallel status, a verified
//! power-off that marks the host down, suspend refused with VMs, suspend-to-RAM and a
//! Wake-on-LAN wake, the IPMI fallback, a wake that fails, and the HTTP API.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use router::api::types::{PowerStatusRow, SuspendMode, WakeMethod};
use router::cluster::ClusterHandle;
use router::events::EventKind;
use router::model::host::{HostStatus, PowerKnown};
use router::power::suspend::suspend;
use router::power::wake::wake;
use router::power::{PowerError, PowerPlane};
use support::sealed::{read_frame, write_frame};
use tokio::sync::watch;
use wisp_bmc::{Bmc, FakeBmcFault, PowerAction, PowerState};
use wisp_common::proto::{
    Command, GenieMsg, Outcome, Report, RouterMsg, VmStatus, MAX_FRAME_BYTES,
};
use wisp_common::{VmId, VmRunState};

const SECRET: &[u8] = b"power-test-secret";

use support::power_rig::{h, mac, PowerRig as Rig};

/// Fake BMCs (`power` per host) and a fake waker.
async fn rig(tag: &str, power: &[PowerState]) -> Rig {
    support::power_rig::power_rig(tag, SECRET, power, "", Duration::from_millis(500)).await
}

/// Plays a genie until its host "loses power" (`alive` turns false) or it is asked
/// to suspend (it replies, then goes away like a suspended host).
async fn genie(link: SocketAddr, host: &str, vms: Vec<&str>, alive: watch::Receiver<bool>) {
    let s = support::genie_handshake(link, host, SECRET, rand_instance())
        .await
        .unwrap_or_else(|e| panic!("not welcomed: {e}"))
        .stream;
    let vms: Vec<VmStatus> = vms
        .into_iter()
        .map(|v| VmStatus {
            id: VmId::new(v).unwrap(),
            state: VmRunState::Running,
            vcpus: 1,
            mem_mib: 64,
            cpu_time_ms: 0,
            pid: Some(1),
            qmp_socket: format!("/nonexistent/{v}.qmp").into(),
            epoch: 1,
        })
        .collect();
    let (mut rd, mut wr) = s.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<GenieMsg>(16);
    let reader = tokio::spawn(async move {
        while let Ok(Some(m)) = read_frame::<_, RouterMsg>(&mut rd, MAX_FRAME_BYTES).await {
            if let RouterMsg::Command { id, command } = m {
                let outcome = match command {
                    Command::Suspend => Outcome::Done,
                    _ => Outcome::Failed {
                        error: "not in this fake".into(),
                    },
                };
                let suspend = outcome == Outcome::Done;
                let _ = tx.send(GenieMsg::Reply { id, outcome }).await;
                if suspend {
                    return;
                }
            }
        }
    });
    let mut gen = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    loop {
        tokio::select! {
            _ = tick.tick() => {
                if !*alive.borrow() { break; }
                gen += 1;
                let r = Report { gen, sent_at_ms: wisp_common::time::unix_ms(), metrics: None, vms: Some(vms.clone()), ..Default::default() };
                if write_frame(&mut wr, &GenieMsg::Report(r), MAX_FRAME_BYTES).await.is_err() { break; }
            }
            m = rx.recv() => match m {
                Some(m) => {
                    let _ = write_frame(&mut wr, &m, MAX_FRAME_BYTES).await;
                    // Suspended: the host goes quiet (link closes).
                    break;
                }
                None => break,
            }
        }
    }
    reader.abort();
}

/// A new genie "process" each call: a fresh instance number.
fn rand_instance() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Runs a genie for host `name` that dies when its fake BMC reports power off.
fn spawn_powered_genie(r: &Rig, name: &str, vms: Vec<&'static str>) {
    let (tx, rx) = watch::channel(true);
    let bmc = r.bmcs[name].clone();
    let (link, name2) = (r.link, name.to_owned());
    tokio::spawn(async move {
        while !tx.is_closed() {
            if bmc.power_state() == PowerState::Off {
                let _ = tx.send(false);
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    });
    tokio::spawn(async move { genie(link, &name2, vms, rx).await });
}

async fn status_of(c: &ClusterHandle, host: &str) -> (HostStatus, PowerKnown, bool) {
    let snap = c.snapshot();
    let e = snap.host(&h(host)).unwrap();
    (e.status, e.power, e.standby)
}

async fn wait_status(c: &ClusterHandle, host: &str, want: HostStatus) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let (s, _, _) = status_of(c, host).await;
        if s == want {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{host} never became {want:?} (is {s:?})"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn events(c: &ClusterHandle) -> Vec<router::events::Event> {
    c.events(1000)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn status_asks_every_bmc_and_records_proven_off_as_down() {
    let r = rig("status", &[PowerState::On, PowerState::Off, PowerState::On]).await;
    r.bmcs["h3"].set_fault(FakeBmcFault::Silent);
    spawn_powered_genie(&r, "h1", vec![]);
    wait_status(&r.cluster, "h1", HostStatus::Up).await;

    let rows = router::power::status::status(&r.cluster, &r.power, None)
        .await
        .unwrap();
    let names: Vec<&str> = rows.iter().map(|x| x.host.as_str()).collect();
    assert_eq!(names, ["h1", "h2", "h3"]);
    assert_eq!(
        (rows[0].power, rows[0].state),
        (PowerKnown::On, HostStatus::Up)
    );
    assert_eq!(
        (rows[1].power, rows[1].state),
        (PowerKnown::Off, HostStatus::Down)
    );
    assert_eq!(rows[2].power, PowerKnown::Unknown);
    let err = rows[2].error.as_deref().unwrap();
    assert!(
        err.contains("127.0.0.103:623") && err.contains("no answer"),
        "{err}"
    );
    assert!(rows[0].error.is_none() && rows[1].error.is_none());
    for b in r.bmcs.values() {
        assert_eq!(b.status_calls(), 1, "each BMC asked once");
    }
    // The silent BMC did not change what the router believes about h3.
    assert_eq!(status_of(&r.cluster, "h3").await.1, PowerKnown::Unknown);
    let evs = events(&r.cluster).await;
    assert!(evs
        .iter()
        .any(|e| e.kind == EventKind::HostDown && e.host == Some(h("h2"))));

    let e = router::power::status::status(&r.cluster, &r.power, Some(vec![h("zz")]))
        .await
        .unwrap_err();
    assert!(matches!(e, PowerError::UnknownHost { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn power_off_is_verified_and_marks_the_host_down_then_on_again() {
    let r = rig("off", &[PowerState::On]).await;
    spawn_powered_genie(&r, "h1", vec![]);
    wait_status(&r.cluster, "h1", HostStatus::Up).await;
    let rep = router::power::actions::power_action(
        &r.cluster,
        &r.power,
        &h("h1"),
        PowerAction::Off,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert!(rep.verified);
    assert_eq!((rep.power, rep.state), (PowerKnown::Off, HostStatus::Down));
    assert!(rep.message.contains("reports power off"), "{}", rep.message);
    assert_eq!(r.bmcs["h1"].actions(), [PowerAction::Off]);

    let rep = router::power::actions::power_action(
        &r.cluster,
        &r.power,
        &h("h1"),
        PowerAction::On,
        Duration::from_secs(20),
    )
    .await
    .unwrap();
    assert_eq!(rep.power, PowerKnown::On);
    // Down is left only when the genie reports again.
    assert_eq!(rep.state, HostStatus::Down);
    spawn_powered_genie(&r, "h1", vec![]);
    wait_status(&r.cluster, "h1", HostStatus::Up).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bmc_errors_name_the_bmc_and_leave_the_state_alone() {
    let r = rig("bmcerr", &[PowerState::On, PowerState::On]).await;
    r.bmcs["h1"].set_fault(FakeBmcFault::WrongPassword);
    r.bmcs["h2"].set_fault(FakeBmcFault::Silent);
    for (host, words) in [("h1", "authentication failed"), ("h2", "no answer")] {
        let e = router::power::actions::power_action(
            &r.cluster,
            &r.power,
            &h(host),
            PowerAction::Off,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        let text = router::vms::chain(&e);
        assert!(text.contains(words) && text.contains(":623"), "{text}");
        assert!(matches!(e, PowerError::Bmc { .. }));
        assert_eq!(status_of(&r.cluster, host).await.1, PowerKnown::Unknown);
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_is_refused_with_vms_and_names_them() {
    let r = rig("refuse", &[PowerState::On]).await;
    spawn_powered_genie(&r, "h1", vec!["vm1", "vm2"]);
    wait_status(&r.cluster, "h1", HostStatus::Up).await;
    // Wait for the VM list to arrive.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while r.cluster.snapshot().host(&h("h1")).unwrap().vms.len() < 2 {
        assert!(tokio::time::Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let e = suspend(
        &r.cluster,
        &r.power,
        &h("h1"),
        SuspendMode::Ram,
        false,
        Duration::from_secs(10),
    )
    .await
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "host h1 runs 2 VM(s): vm1, vm2; migrate or stop them first, or pass --force"
    );
    let (st, _, standby) = status_of(&r.cluster, "h1").await;
    assert_eq!((st, standby), (HostStatus::Up, false));

    // --force suspends anyway and says so.
    let out = suspend(
        &r.cluster,
        &r.power,
        &h("h1"),
        SuspendMode::Ram,
        true,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(out.vms.len(), 2);
    assert!(out.message.contains("forced"), "{}", out.message);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_to_ram_then_wake_by_wol_clears_standby() {
    let r = rig("ram", &[PowerState::On]).await;
    spawn_powered_genie(&r, "h1", vec![]);
    wait_status(&r.cluster, "h1", HostStatus::Up).await;
    let out = suspend(
        &r.cluster,
        &r.power,
        &h("h1"),
        SuspendMode::Ram,
        false,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert!(out.message.contains("genie link closed"), "{}", out.message);
    let (st, _, standby) = status_of(&r.cluster, "h1").await;
    assert_eq!((st, standby), (HostStatus::Standby, true));

    // The "host" boots when the magic packet arrives.
    let (waker, link) = (r.waker.clone(), r.link);
    tokio::spawn(async move {
        while waker.wakes().is_empty() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_tx, rx) = watch::channel(true);
        genie(link, "h1", vec![], rx).await;
    });
    let w = wake(&r.cluster, &r.power, &h("h1"), Duration::from_secs(20))
        .await
        .unwrap();
    assert_eq!(w.method, WakeMethod::Wol);
    assert!(!w.fallback && w.wol_packets == 2);
    assert_eq!(r.waker.wakes(), [mac(1)]);
    assert!(r.bmcs["h1"].actions().is_empty(), "no IPMI needed");
    assert!(w.message.contains("Wake-on-LAN"), "{}", w.message);
    let (st, power, standby) = status_of(&r.cluster, "h1").await;
    assert_eq!(
        (st, power, standby),
        (HostStatus::Up, PowerKnown::On, false)
    );

    // A wake of an up host sends nothing.
    let w = wake(&r.cluster, &r.power, &h("h1"), Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(w.method, WakeMethod::AlreadyUp);
    assert_eq!(r.waker.wakes().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wake_falls_back_to_ipmi_when_wol_does_nothing() {
    let r = rig("fallback", &[PowerState::Off]).await;
    // The host boots only on IPMI power-on.
    let (bmc, link) = (r.bmcs["h1"].clone(), r.link);
    tokio::spawn(async move {
        while bmc.power_state() == PowerState::Off {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let (_tx, rx) = watch::channel(true);
        genie(link, "h1", vec![], rx).await;
    });
    let w = wake(&r.cluster, &r.power, &h("h1"), Duration::from_millis(500))
        .await
        .unwrap();
    assert_eq!(w.method, WakeMethod::Ipmi);
    assert!(w.fallback);
    assert_eq!(r.waker.wakes(), [mac(1)], "WoL was tried first");
    assert_eq!(r.bmcs["h1"].actions(), [PowerAction::On]);
    assert!(
        w.message.contains("IPMI power-on (fallback"),
        "{}",
        w.message
    );
    assert_eq!(status_of(&r.cluster, "h1").await.0, HostStatus::Up);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_never_wakes_is_marked_and_reported() {
    let r = rig("nowake", &[PowerState::Off]).await;
    r.waker.set_fail(true);
    let e = wake(&r.cluster, &r.power, &h("h1"), Duration::from_millis(300))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, PowerError::WakeFailed { .. }), "{text}");
    assert!(
        text.contains("wol: magic packets not sent") && text.contains("ipmi: genie not heard"),
        "{text}"
    );
    // The fake BMC turned "on" but no genie came: not proven off, so unreachable.
    assert_eq!(status_of(&r.cluster, "h1").await.0, HostStatus::Unreachable);
    assert!(events(&r.cluster)
        .await
        .iter()
        .any(|e| e.kind == EventKind::Error && e.message.contains("failed to wake")));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn soft_off_suspend_needs_the_bmc_to_confirm_off() {
    let r = rig("softoff", &[PowerState::On]).await;
    spawn_powered_genie(&r, "h1", vec![]);
    wait_status(&r.cluster, "h1", HostStatus::Up).await;
    let out = suspend(
        &r.cluster,
        &r.power,
        &h("h1"),
        SuspendMode::SoftOff,
        false,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(out.power, PowerKnown::Off);
    assert_eq!(r.bmcs["h1"].actions(), [PowerAction::Soft]);
    let (st, power, standby) = status_of(&r.cluster, "h1").await;
    assert_eq!(
        (st, power, standby),
        (HostStatus::Standby, PowerKnown::Off, true)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn api_serves_power_status_and_errors() {
    let r = rig("api", &[PowerState::On, PowerState::Off]).await;
    // The API on a Unix socket, as the CLI reaches it locally (no token).
    let sock = std::env::temp_dir().join(format!("wisp-power-api-{}.sock", std::process::id()));
    let api = format!("unix:{}", sock.display());
    let (_stop, rx) = watch::channel(false);
    router::api::serve_local(
        &sock,
        router::api::ApiState {
            cluster: r.cluster.clone(),
            power: r.power.clone(),
        },
        rx,
    )
    .unwrap();
    let a = api.clone();
    let (all, one, bad, unknown) = tokio::task::spawn_blocking(move || {
        let c = router::cli::Client::new(&a, None);
        let all: Vec<PowerStatusRow> = c.get("/v1/power").unwrap();
        let one: Vec<PowerStatusRow> = c.get("/v1/power/h2").unwrap();
        let bad = c
            .post::<_, serde_json::Value>("/v1/power/h1/explode", &serde_json::json!({}))
            .unwrap_err();
        let unknown = c
            .post::<_, serde_json::Value>("/v1/hosts/zz/wake", &serde_json::json!({}))
            .unwrap_err();
        (all, one, bad, unknown)
    })
    .await
    .unwrap();
    assert_eq!(all.len(), 2);
    assert_eq!(one.len(), 1);
    let text = router::cli::power::status_text(&one);
    assert!(text.starts_with("Chassis Power is off\n"), "{text}");
    let table = router::cli::power::status_text(&all);
    assert!(
        table.starts_with("HOST") && table.contains("h1  ") && table.contains("on"),
        "{table}"
    );
    assert!(
        matches!(bad, router::cli::ClientError::Api { status: 400, .. }),
        "{bad}"
    );
    assert!(
        matches!(unknown, router::cli::ClientError::Api { status: 404, .. }),
        "{unknown}"
    );
}

/// Plays a genie whose host freezes on a suspend, as suspend-to-RAM does: it replies,
/// then sends nothing more and never closes its socket. Returns when the router
/// closes its end (true) or after `give_up` (false).
async fn frozen_genie(link: SocketAddr, host: &str, give_up: Duration) -> bool {
    let s = support::genie_handshake(link, host, SECRET, rand_instance())
        .await
        .unwrap_or_else(|e| panic!("not welcomed: {e}"))
        .stream;
    let (mut rd, mut wr) = s.into_split();
    let frozen = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut gen = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(100));
    let deadline = tokio::time::Instant::now() + give_up;
    loop {
        tokio::select! {
            _ = tick.tick(), if !frozen.load(std::sync::atomic::Ordering::SeqCst) => {
                gen += 1;
                let r = Report { gen, sent_at_ms: wisp_common::time::unix_ms(), ..Default::default() };
                write_frame(&mut wr, &GenieMsg::Report(r), MAX_FRAME_BYTES).await.unwrap();
            }
            m = read_frame::<_, RouterMsg>(&mut rd, MAX_FRAME_BYTES) => match m {
                Ok(Some(RouterMsg::Command { id, command: Command::Suspend })) => {
                    let reply = GenieMsg::Reply { id, outcome: Outcome::Done };
                    write_frame(&mut wr, &reply, MAX_FRAME_BYTES).await.unwrap();
                    frozen.store(true, std::sync::atomic::Ordering::SeqCst);
                }
                Ok(Some(_)) => {}
                // EOF or a reset: the router let go of the link.
                Ok(None) | Err(_) => return true,
            },
            _ = tokio::time::sleep_until(deadline) => return false,
        }
    }
}

/// Suspend-to-RAM freezes a host with its connection open: the router verifies the
/// suspend by silence, never counts the host as suspect, unreachable or down, closes
/// its end of the link, and keeps it in standby for as long as it is silent.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_host_is_asleep_not_failed_and_its_link_is_closed_by_us() {
    let r = rig("frozen", &[PowerState::On]).await;
    let link = r.link;
    let closed =
        tokio::spawn(async move { frozen_genie(link, "h1", Duration::from_secs(60)).await });
    wait_status(&r.cluster, "h1", HostStatus::Up).await;
    // The fake BMC reports S3 as off, as the lab's and many real BMCs do.
    let bmc = r.bmcs["h1"].clone();
    let out = {
        let (c, p) = (r.cluster.clone(), r.power.clone());
        let s = tokio::spawn(async move {
            suspend(
                &c,
                &p,
                &h("h1"),
                SuspendMode::Ram,
                false,
                Duration::from_secs(20),
            )
            .await
        });
        // The host is frozen now; its BMC says off from here on.
        while !closed.is_finished()
            && r.cluster
                .snapshot()
                .host(&h("h1"))
                .unwrap()
                .report_age_ms
                .unwrap_or(0)
                < 300
        {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        bmc.power(PowerAction::Off).await.unwrap();
        s.await.unwrap().unwrap()
    };
    assert!(out.message.contains("silent"), "{}", out.message);
    assert!(out.message.contains("reports power off"), "{}", out.message);
    assert!(
        closed.await.unwrap(),
        "the router must close its end of a frozen host's link"
    );
    let (st, _, standby) = status_of(&r.cluster, "h1").await;
    assert_eq!((st, standby), (HostStatus::Standby, true));
    // When it fell asleep is stored (wake drills count from it across restarts).
    let slept = r.cluster.snapshot().host(&h("h1")).unwrap().slept_at_ms;
    assert!(
        slept.is_some_and(|t| t <= wisp_common::time::unix_ms()),
        "{slept:?}"
    );
    // Silent far beyond unreachable_after and the lease: still asleep, never failed.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let (st, _, _) = status_of(&r.cluster, "h1").await;
    assert_eq!(st, HostStatus::Standby);
    let bad: Vec<_> = events(&r.cluster)
        .await
        .into_iter()
        .filter(|e| e.host.as_ref().is_some_and(|x| x.as_str() == "h1"))
        .filter(|e| {
            matches!(
                e.kind,
                EventKind::HostSuspect
                    | EventKind::HostUnreachable
                    | EventKind::HostDown
                    | EventKind::HostFenced
                    | EventKind::Error
            )
        })
        .map(|e| e.message)
        .collect();
    assert!(
        bad.is_empty(),
        "a host asleep on purpose was taken for failed: {bad:?}"
    );
}

/// A host nothing could wake again (no BMC, no Wake-on-LAN path) is not put to sleep:
/// a clear refusal and nothing sent; the host stays up and not flagged asleep.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn suspend_without_a_way_to_wake_is_refused_before_anything_is_sent() {
    let r = rig("nowake", &[PowerState::On]).await;
    spawn_powered_genie(&r, "h1", vec![]);
    wait_status(&r.cluster, "h1", HostStatus::Up).await;
    let bare = PowerPlane::new(HashMap::new(), None, HashMap::new());
    for mode in [SuspendMode::Ram, SuspendMode::SoftOff] {
        let e = suspend(
            &r.cluster,
            &bare,
            &h("h1"),
            mode,
            false,
            Duration::from_secs(5),
        )
        .await
        .unwrap_err();
        assert!(
            matches!(e, PowerError::NoWakePath { .. } | PowerError::NoBmc { .. }),
            "{mode:?}: {e}"
        );
        assert!(e.to_string().contains("h1"), "{e}");
    }
    // Still reporting (the fake genie stops at a Suspend), not asleep.
    tokio::time::sleep(Duration::from_millis(800)).await;
    let (st, _, standby) = status_of(&r.cluster, "h1").await;
    assert_eq!((st, standby), (HostStatus::Up, false));
}
