//! Waking by the fastest proven path, against fake BMCs and a fake waker, with genies
//! played by the test over the real protocol on loopback: WoL lost and IPMI tried as
//! soon as the power proof is overdue, a dead BMC and WoL alone, a relay by another
//! genie, a host that wakes by neither (quarantined, kept from the energy planner,
//! cleared by the operator through the API), and measured times kept in the store.
#![allow(clippy::unwrap_used)]

mod support;

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use router::api::types::{ClearReport, HostView, PowerStatusRow, WakeMethod, WakeVia};
use router::cluster::ClusterHandle;
use router::events::EventKind;
use router::model::host::HostStatus;
use router::power::quarantine::QuarantineError;
use router::power::wake::wake;
use router::power::{PowerError, PowerPlane};
use router::store::{FileStore, Store};
use support::sealed::{read_frame, write_frame};
use tokio::sync::watch;
use wisp_bmc::{FakeBmcFault, PowerAction, PowerState};
use wisp_common::proto::{Command, GenieMsg, Outcome, Report, RouterMsg, MAX_FRAME_BYTES};
use wisp_common::HostId;

const SECRET: &[u8] = b"wake-test-secret";
/// The rig's power-proof wait: short so a lost magic packet costs a second.
const PROOF_MS: u64 = 1000;
/// The boot wait the tests pass: far above what any path here needs.
const BOOT: Duration = Duration::from_secs(60);

use support::power_rig::{h, mac, PowerRig as Rig};

/// Fake BMCs (`power` per host) and a fake waker; `extra` is router.toml text before
/// the hosts.
async fn rig(tag: &str, power: &[PowerState], extra: &str) -> Rig {
    support::power_rig::power_rig(
        tag,
        SECRET,
        power,
        &format!("wake_power_proof_ms = {PROOF_MS}\n{extra}"),
        Duration::from_millis(300),
    )
    .await
}

/// A new genie "process" each call.
fn instance() -> u64 {
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// Plays a genie for `host` that reports every 100 ms, answers `SendWol` by calling
/// `relayed` (Done) and refuses everything else; runs until the test ends.
async fn genie(link: SocketAddr, host: &str, relayed: Option<watch::Sender<u32>>) {
    let s = support::genie_handshake(link, host, SECRET, instance())
        .await
        .unwrap_or_else(|e| panic!("not welcomed: {e}"))
        .stream;
    let (mut rd, mut wr) = s.into_split();
    let (tx, mut rx) = tokio::sync::mpsc::channel::<GenieMsg>(16);
    tokio::spawn(async move {
        while let Ok(Some(m)) = read_frame::<_, RouterMsg>(&mut rd, MAX_FRAME_BYTES).await {
            if let RouterMsg::Command { id, command } = m {
                let suspend = command == Command::Suspend;
                let outcome = match (command, &relayed) {
                    (Command::SendWol(r), Some(count)) if r.burst == 3 => {
                        count.send_modify(|n| *n += 1);
                        Outcome::Done
                    }
                    (Command::Suspend, _) => Outcome::Done,
                    _ => Outcome::Failed {
                        error: "not in this fake".into(),
                    },
                };
                let _ = tx.send(GenieMsg::Reply { id, outcome }).await;
                if suspend {
                    // Asleep: the reply goes out, then the host is silent.
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
                gen += 1;
                let r = Report { gen, sent_at_ms: wisp_common::time::unix_ms(), ..Default::default() };
                if write_frame(&mut wr, &GenieMsg::Report(r), MAX_FRAME_BYTES).await.is_err() { break; }
            }
            m = rx.recv() => match m {
                Some(m) => { let _ = write_frame(&mut wr, &m, MAX_FRAME_BYTES).await; }
                None => break,
            }
        }
    }
}

/// Boots host `name`'s genie once `cond` holds (polled every 20 ms).
fn boot_when(r: &Rig, name: &str, cond: impl Fn() -> bool + Send + 'static) {
    let (link, name) = (r.link, name.to_owned());
    tokio::spawn(async move {
        while !cond() {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        genie(link, &name, None).await;
    });
}

async fn wait_up(c: &ClusterHandle, host: &str) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while c.snapshot().host(&h(host)).unwrap().status != HostStatus::Up {
        assert!(tokio::time::Instant::now() < deadline, "{host} never up");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn has_event(c: &ClusterHandle, kind: EventKind, host: &str, words: &str) -> bool {
    c.events(1000)
        .iter()
        .any(|e| e.kind == kind && e.host == Some(h(host)) && e.message.contains(words))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_magic_packet_moves_to_ipmi_once_the_power_proof_is_overdue() {
    let r = rig("wol-lost", &[PowerState::Off], "").await;
    // The host boots only on IPMI power-on: the magic packets are lost.
    let bmc = r.bmcs["h1"].clone();
    boot_when(&r, "h1", move || bmc.power_state() == PowerState::On);
    let t = Instant::now();
    let w = wake(&r.cluster, &r.power, &h("h1"), BOOT).await.unwrap();
    let took = t.elapsed();
    assert_eq!(w.method, WakeMethod::Ipmi, "{w:?}");
    assert!(w.fallback);
    assert_eq!(r.waker.wakes(), [mac(1)], "WoL was tried first");
    assert_eq!(r.bmcs["h1"].actions(), [PowerAction::On]);
    // IPMI went out right after the power proof was overdue, not after a boot wait.
    assert_eq!(w.attempts.len(), 2, "{w:?}");
    let (wol, ipmi) = (&w.attempts[0], &w.attempts[1]);
    assert_eq!((wol.method, ipmi.method), (WakeVia::Wol, WakeVia::Ipmi));
    let e = wol.error.as_deref().unwrap();
    assert!(e.contains("still reported power off"), "{e}");
    assert!(
        ipmi.started_ms >= PROOF_MS && ipmi.started_ms < PROOF_MS + 3000,
        "IPMI sent {} ms after the start",
        ipmi.started_ms
    );
    assert!(ipmi.error.is_none() && ipmi.heard_ms.is_some());
    // The fake host boots the moment its BMC says on: its genie may be heard before
    // the router's next BMC poll sees the power (CI saw it 3 ms after the IPMI
    // attempt). Either proves the wake; the outcome says which came first.
    let power_seen = w.power_seen_ms.is_some();
    assert!(
        power_seen || w.message.contains("chassis power not seen"),
        "{w:?}"
    );
    assert!(
        took < BOOT / 6,
        "took {took:?}, the boot deadline is {BOOT:?}"
    );
    assert!(
        w.message.contains("IPMI power-on (fallback"),
        "{}",
        w.message
    );
    assert_eq!(
        has_event(&r.cluster, EventKind::Wake, "h1", "chassis power on"),
        power_seen
    );
    assert!(has_event(
        &r.cluster,
        EventKind::Wake,
        "h1",
        "trying the next method"
    ));
    assert_eq!(
        r.cluster.snapshot().host(&h("h1")).unwrap().status,
        HostStatus::Up
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_bmc_leaves_wol_to_do_it_and_the_time_is_stored() {
    let r = rig("bmc-down", &[PowerState::Off], "").await;
    r.bmcs["h1"].set_fault(FakeBmcFault::Refused);
    let waker = r.waker.clone();
    boot_when(&r, "h1", move || !waker.wakes().is_empty());
    let w = wake(&r.cluster, &r.power, &h("h1"), BOOT).await.unwrap();
    assert_eq!(w.method, WakeMethod::Wol, "{w:?}");
    assert!(!w.fallback);
    assert_eq!(w.attempts.len(), 1);
    assert_eq!(w.power_seen_ms, None, "a dead BMC proves nothing");
    assert!(r.bmcs["h1"].actions().is_empty(), "no IPMI sent");
    assert!(has_event(
        &r.cluster,
        EventKind::Wake,
        "h1",
        "BMC not reachable"
    ));

    // Measured and stored: in the snapshot, the hosts view, and on disk.
    let snap = r.cluster.snapshot();
    let hs = snap.host(&h("h1")).unwrap();
    assert_eq!(hs.expected_wake_ms(), Some(w.registered_ms));
    assert_eq!(hs.wake.methods[&WakeVia::Wol].ms.len(), 1);
    let view = &router::api::views::host_views(&snap)[0];
    assert_eq!(view.expected_wake_ms, Some(w.registered_ms));
    assert!(view.wake_ms.contains_key(&WakeVia::Wol));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let stored = FileStore::open(&r.state_dir).unwrap().load().unwrap();
        let b = stored.hosts.get(&h("h1")).map(|x| x.wake.clone());
        if b.is_some_and(|b| b.expected_ms() == Some(w.registered_ms)) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "never stored");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_genie_relays_the_magic_packets_when_the_router_cannot() {
    let r = rig("relay", &[PowerState::Off, PowerState::On], "").await;
    // h2 is up and relays; the router's own sender fails.
    let (count, seen) = watch::channel(0u32);
    tokio::spawn(genie(r.link, "h2", Some(count)));
    wait_up(&r.cluster, "h2").await;
    r.waker.set_fail(true);
    let relayed = seen.clone();
    boot_when(&r, "h1", move || *relayed.borrow() > 0);
    let w = wake(&r.cluster, &r.power, &h("h1"), BOOT).await.unwrap();
    assert_eq!(w.method, WakeMethod::Wol, "{w:?}");
    assert_eq!(w.wol_relays, 1, "{w:?}");
    assert_eq!(w.wol_packets, 0);
    assert!(w.wol_error.is_some());
    assert!(w.message.contains("relayed by 1 genie"), "{}", w.message);
    assert_eq!(*seen.borrow(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_that_wakes_by_neither_is_quarantined_until_cleared() {
    let r = rig("neither", &[PowerState::Off, PowerState::Off], "").await;
    // h1 never boots: WoL does nothing, IPMI turns the power on but no genie comes.
    let t = Instant::now();
    let e = wake(&r.cluster, &r.power, &h("h1"), Duration::from_millis(1500))
        .await
        .unwrap_err();
    let text = e.to_string();
    assert!(matches!(e, PowerError::WakeFailed { .. }), "{text}");
    assert!(
        text.contains("wol: the BMC still reported power off")
            && text.contains("ipmi: genie not heard within")
            && text.contains("power seen on after")
            && text.contains("quarantined until `router power clear h1`"),
        "{text}"
    );
    assert!(t.elapsed() < Duration::from_secs(15), "{:?}", t.elapsed());
    let snap = r.cluster.snapshot();
    let q = snap.host(&h("h1")).unwrap().quarantine.clone().unwrap();
    assert!(q.contains("failed to wake by every method"), "{q}");
    assert!(has_event(&r.cluster, EventKind::Error, "h1", "quarantined"));

    // The energy planner sees it as unavailable: never chosen to sleep or to wake.
    let mut o = router::energy::view::ObservedHost {
        id: h("h1"),
        status: HostStatus::Standby,
        linked: false,
        maintenance: false,
        standby: true,
        quarantined: true,
        cpus: Some(2),
        cpu_percent: None,
        vcpus: 8,
        mem_mib: 4096,
        vms: vec![],
        depth: None,
        can_ram: true,
        expected_wake_ms: None,
    };
    assert_eq!(
        router::energy::view::power_state(&o),
        wisp_planner::PlanPower::Unavailable
    );
    assert!(!router::energy::view::power_state(&o).wakeable());
    o.quarantined = false;
    assert_eq!(
        router::energy::view::power_state(&o),
        wisp_planner::PlanPower::Asleep
    );

    // Shown by the API (hosts, power status) and cleared only through it.
    // The API on a Unix socket, as the CLI reaches it locally (no token).
    let sock = std::env::temp_dir().join(format!("wisp-wake-api-{}.sock", std::process::id()));
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
    let (hosts, rows, cleared, again, unknown, hosts_after) =
        tokio::task::spawn_blocking(move || {
            let c = router::cli::Client::new(&api, None);
            let hosts: Vec<HostView> = c.get("/v1/hosts").unwrap();
            let rows: Vec<PowerStatusRow> = c.get("/v1/power/h1").unwrap();
            let cleared: ClearReport = c
                .post("/v1/hosts/h1/clear", &serde_json::json!({}))
                .unwrap();
            let again = c
                .post::<_, serde_json::Value>("/v1/hosts/h1/clear", &serde_json::json!({}))
                .unwrap_err();
            let unknown = c
                .post::<_, serde_json::Value>("/v1/hosts/zz/clear", &serde_json::json!({}))
                .unwrap_err();
            let hosts_after: Vec<HostView> = c.get("/v1/hosts").unwrap();
            (hosts, rows, cleared, again, unknown, hosts_after)
        })
        .await
        .unwrap();
    let h1 = hosts.iter().find(|x| x.name == h("h1")).unwrap();
    assert_eq!(h1.quarantine.as_deref(), Some(q.as_str()));
    assert!(hosts
        .iter()
        .find(|x| x.name == h("h2"))
        .unwrap()
        .quarantine
        .is_none());
    assert!(router::cli::hosts_table(&hosts).contains(",quarantined"));
    assert_eq!(rows[0].quarantine.as_deref(), Some(q.as_str()));
    assert!(router::cli::power::status_text(&rows).contains("Quarantined: "));
    assert_eq!(cleared.was, q);
    assert!(
        cleared.message.contains("quarantine cleared"),
        "{}",
        cleared.message
    );
    assert!(
        matches!(&again, router::cli::ClientError::Api { status: 409, message } if message.contains("not quarantined")),
        "{again}"
    );
    assert!(
        matches!(unknown, router::cli::ClientError::Api { status: 404, .. }),
        "{unknown}"
    );
    assert!(hosts_after.iter().all(|x| x.quarantine.is_none()));
    assert!(has_event(
        &r.cluster,
        EventKind::Power,
        "h1",
        "quarantine cleared"
    ));
    // The clear is stored too.
    let stored = FileStore::open(&r.state_dir).unwrap().load().unwrap();
    assert!(stored.hosts[&h("h1")].quarantine.is_none());
    // And the library call refuses the same way.
    let e = router::power::quarantine::clear(&r.cluster, &h("h2"))
        .await
        .unwrap_err();
    assert!(matches!(e, QuarantineError::NotQuarantined { .. }), "{e}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_awake_host_is_told_so_and_nothing_is_sent() {
    let r = rig("awake", &[PowerState::On], "").await;
    tokio::spawn(genie(r.link, "h1", None));
    wait_up(&r.cluster, "h1").await;
    let w = wake(&r.cluster, &r.power, &h("h1"), BOOT).await.unwrap();
    assert_eq!(w.method, WakeMethod::AlreadyUp);
    assert!(w.message.contains("already up"), "{}", w.message);
    assert!(w.attempts.is_empty());
    assert!(r.waker.wakes().is_empty() && r.bmcs["h1"].actions().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_way_to_wake_is_a_clear_refusal_not_a_quarantine() {
    let r = rig("nopath", &[PowerState::Off], "").await;
    let bare = PowerPlane::new(HashMap::new(), None, HashMap::new());
    let e = wake(&r.cluster, &bare, &h("h1"), BOOT).await.unwrap_err();
    assert!(matches!(e, PowerError::NoWakePath { .. }), "{e}");
    assert_eq!(e.status(), 400);
    let snap = r.cluster.snapshot();
    let hs = snap.host(&h("h1")).unwrap();
    assert!(hs.quarantine.is_none());
    assert_ne!(hs.status, HostStatus::Waking, "nothing was started");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_drill_goes_in_its_rotation_order_and_is_recorded() {
    let r = rig("drill", &[PowerState::Off], "").await;
    let opts = router::power::wake::WakeOpts {
        boot: Some(BOOT),
        methods: Some(vec![WakeVia::Ipmi, WakeVia::Wol]),
        drill: true,
    };
    let bmc = r.bmcs["h1"].clone();
    boot_when(&r, "h1", move || bmc.power_state() == PowerState::On);
    let w = router::power::wake::wake_with(&r.cluster, &r.power, &h("h1"), opts)
        .await
        .unwrap();
    assert_eq!(w.method, WakeMethod::Ipmi);
    assert!(w.drill && !w.fallback);
    assert!(r.waker.wakes().is_empty(), "WoL never needed");
    let snap = r.cluster.snapshot();
    let b = &snap.host(&h("h1")).unwrap().wake;
    assert!(b.drilled_ms.contains_key(&WakeVia::Ipmi), "{b:?}");
    assert!(!b.drilled_ms.contains_key(&WakeVia::Wol), "{b:?}");
    assert!(has_event(
        &r.cluster,
        EventKind::Wake,
        "h1",
        "drill: wake 1/2 by ipmi"
    ));
}

fn parse(host_extra: &str, top: &str) -> Result<router::config::RouterConfig, String> {
    let text = format!(
        "listen = \"127.0.0.1:1\"\nstate_dir = \"/x\"\nsecret_file = \"/s\"\n{top}\n\
         [[host]]\nname = \"h1\"\nmac = \"02:00:00:00:00:01\"\naddress = \"10.0.0.1\"\n{host_extra}\n"
    );
    router::config::RouterConfig::parse(std::path::Path::new("r.toml"), &text)
        .map_err(|e| e.to_string())
}

#[test]
fn wake_lists_are_checked_by_host_and_key() {
    let bmc = "bmc = \"10.0.1.1\"\nbmc_password_file = \"/p\"";
    let c = parse(&format!("{bmc}\nwake = [\"ipmi\", \"wol\"]"), "").unwrap();
    assert_eq!(
        c.hosts[0].wake.as_deref(),
        Some(&[WakeVia::Ipmi, WakeVia::Wol][..])
    );
    assert!(c.wol_relay, "relay on by default");
    assert_eq!(
        (
            c.wake_power_proof_ms,
            c.wake_boot_ms,
            c.wake_resume_ms,
            c.drill_after_s
        ),
        (5000, 180_000, 30_000, 604_800)
    );
    // The older name of the boot wait still reads.
    assert_eq!(
        parse("", "wake_deadline_ms = 3000").unwrap().wake_boot_ms,
        3000
    );
    for (host, top, words) in [
        ("wake = [\"wol\", \"magic\"]", "", "host[0].wake"),
        ("wake = []", "", "host h1: an empty wake list"),
        ("wake = [\"ipmi\"]", "", "host h1: ipmi needs a bmc"),
        (
            "wake = [\"wol\", \"wol\"]",
            "",
            "host h1: wol is listed twice",
        ),
        (
            "wake = [\"wol\"]",
            "wol_relay = false",
            "host h1: wol needs wol_interface",
        ),
        ("", "wake_power_proof_ms = 0", "wake_power_proof_ms"),
    ] {
        let e = parse(host, top).unwrap_err();
        assert!(
            e.contains("r.toml") && e.contains(words),
            "{host} {top}: {e}"
        );
    }
    let e = parse("wake = [\"wol\", \"magic\"]", "").unwrap_err();
    assert!(e.contains("magic"), "{e}");
}

/// An energy actuator that does nothing: the planner's own moves are not under test.
struct Idle;

impl router::energy::executor::Actuator for Idle {
    async fn wake(&self, h: HostId) -> Result<String, router::energy::executor::ExecError> {
        Ok(format!("{h} (idle)"))
    }
    async fn migrate(
        &self,
        vm: wisp_common::VmId,
        _to: HostId,
    ) -> Result<String, router::energy::executor::ExecError> {
        Ok(format!("{vm} (idle)"))
    }
    async fn sleep(
        &self,
        h: HostId,
        _depth: Option<wisp_planner::SleepDepth>,
    ) -> Result<String, router::energy::executor::ExecError> {
        Ok(format!("{h} (idle)"))
    }
    async fn deepen(&self, h: HostId) -> Result<String, router::energy::executor::ExecError> {
        Ok(format!("{h} (idle)"))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_host_asleep_past_drill_after_s_is_drilled_in_energy_mode() {
    let r = rig(
        "drill-task",
        &[PowerState::On],
        "drill_after_s = 1\n[energy]\nenabled = true\ninterval_s = 3600\n",
    )
    .await;
    let (stop, rx) = watch::channel(false);
    let cfg = r.dir.config();
    let _energy = router::energy::spawn_with(r.cluster.clone(), Arc::new(Idle), &cfg, rx.clone());
    tokio::spawn(genie(r.link, "h1", None));
    wait_up(&r.cluster, "h1").await;
    router::power::suspend::suspend(
        &r.cluster,
        &r.power,
        &h("h1"),
        router::api::types::SuspendMode::Ram,
        false,
        Duration::from_secs(10),
    )
    .await
    .unwrap();
    assert_eq!(
        r.cluster.snapshot().host(&h("h1")).unwrap().status,
        HostStatus::Standby
    );
    let waker = r.waker.clone();
    boot_when(&r, "h1", move || !waker.wakes().is_empty());
    tokio::spawn(router::power::drill::run(
        r.cluster.clone(),
        r.power.clone(),
        || false,
        rx,
    ));
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let snap = r.cluster.snapshot();
        let hs = snap.host(&h("h1")).unwrap();
        if hs.wake.drilled_ms.contains_key(&WakeVia::Wol) && hs.status == HostStatus::Up {
            assert!(hs.expected_wake_ms().is_some());
            break;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "no drill: {:?}",
            hs.wake
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(r.waker.wakes(), [mac(1)], "WoL's turn first");
    assert!(has_event(
        &r.cluster,
        EventKind::Wake,
        "h1",
        "wake drill of h1"
    ));
    assert!(has_event(
        &r.cluster,
        EventKind::Wake,
        "h1",
        "(drill) woke by Wake-on-LAN"
    ));
    let _ = stop.send(true);
}
