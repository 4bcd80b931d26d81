//! `migration_ports` against real qemu: incoming migrations listen inside a tiny
//! configured range (witnessed by `ss -ltnp`, not by the genie's own word), two at
//! once get different ports, a full range fails the prepare naming the range and
//! leaves no qemu behind, and a cancelled incoming frees its port.
#![allow(clippy::unwrap_used)]

mod common;

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use common::{eventually, require_qemu, spec, TestDir};
use genie::commands::{chain, Hypervisor};
use genie::launch::VmOptions;
use genie::manager::VmManager;
use genie::ports::PortRange;
use genie::qemu::{self, VmPaths};
use tokio::sync::Notify;

const LONG: Duration = Duration::from_secs(30);
const LOCAL: &str = "127.0.0.1";

fn manager(dir: &TestDir, range: PortRange) -> VmManager {
    let opts = VmOptions {
        migration_ports: range,
        ..VmOptions::default()
    };
    VmManager::with_options(
        dir.path(),
        "qemu-system-x86_64".as_ref(),
        Arc::new(Notify::new()),
        opts,
        None,
    )
}

/// Two neighbouring ports on 127.0.0.1 that were free a moment ago, searched from
/// `from` (each test searches its own stretch, so tests running at once do not meet),
/// with listeners holding them.
fn port_pair(from: u16) -> (u16, TcpListener, TcpListener) {
    for p in (from..from + 2000).step_by(3) {
        if let (Ok(a), Ok(b)) = (
            TcpListener::bind((LOCAL, p)),
            TcpListener::bind((LOCAL, p + 1)),
        ) {
            return (p, a, b);
        }
    }
    panic!("no two free neighbouring ports from {from} on");
}

/// The pid listening on 127.0.0.1:`port`, as `ss -ltnp` reports it; None when
/// nobody listens there.
fn listener_pid(port: u16) -> Option<u32> {
    let out = std::process::Command::new("ss")
        .args(["-ltnpH"])
        .output()
        .expect("ss (iproute2) is required for this test");
    assert!(out.status.success(), "ss failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let want = format!("{LOCAL}:{port}");
    let line = text
        .lines()
        .find(|l| l.split_whitespace().nth(3) == Some(want.as_str()))?;
    let pid = line.split("pid=").nth(1)?.split([',', ')']).next()?;
    Some(pid.parse().unwrap())
}

fn port_of(uri: &str) -> u16 {
    assert!(uri.starts_with("tcp:127.0.0.1:"), "{uri}");
    uri.rsplit(':').next().unwrap().parse().unwrap()
}

fn qemu_pid(dir: &TestDir, vm: &str) -> u32 {
    let s = spec(vm);
    qemu::read_pid(&VmPaths::new(dir.path(), &s.name).pid).unwrap()
}

#[tokio::test]
async fn incoming_migrations_listen_inside_the_range_and_a_full_range_fails_clearly() {
    require_qemu();
    let (first, a, b) = port_pair(41000);
    drop((a, b));
    let range = PortRange::new(first, first + 1).unwrap();
    let dir = TestDir::new("ports");
    let m = manager(&dir, range);
    let local = LOCAL.parse().unwrap();

    // Two incoming migrations at once: each its own port of the range.
    let (sa, sb) = (spec("pa"), spec("pb"));
    let (ua, ub) = tokio::join!(
        m.prepare_incoming(&sa, 1, local),
        m.prepare_incoming(&sb, 1, local)
    );
    let (pa, pb) = (port_of(&ua.unwrap()), port_of(&ub.unwrap()));
    assert!(
        range.contains(pa) && range.contains(pb),
        "{pa} {pb} in {range}"
    );
    assert_ne!(pa, pb);
    assert_eq!(listener_pid(pa), Some(qemu_pid(&dir, "pa")));
    assert_eq!(listener_pid(pb), Some(qemu_pid(&dir, "pb")));

    // The range is full: the prepare fails naming it, and its qemu is gone.
    let sc = spec("pc");
    let e = m.prepare_incoming(&sc, 1, local).await.unwrap_err();
    // What the router is told (the error with its causes).
    let e = chain(&e);
    let want = format!("all 2 ports of migration_ports {range} are in use on 127.0.0.1");
    assert!(e.contains(&want) && e.contains("pc"), "{e}");
    assert!(
        m.statuses().iter().all(|s| s.id.as_str() != "pc"),
        "{:?}",
        m.statuses()
    );
    assert!(!VmPaths::new(dir.path(), &sc.name).pid.exists());

    // A cancelled incoming frees its port, and the next prepare gets it.
    m.cancel_incoming(&sa.name).await.unwrap();
    assert!(
        eventually(LONG, || listener_pid(pa).is_none()).await,
        "port {pa} still listened on after the cancel"
    );
    let pc = port_of(&m.prepare_incoming(&sc, 1, local).await.unwrap());
    assert_eq!(pc, pa);
    assert_eq!(listener_pid(pc), Some(qemu_pid(&dir, "pc")));
    for vm in [&sb.name, &sc.name] {
        m.cancel_incoming(vm).await.unwrap();
    }
    assert!(
        eventually(LONG, || listener_pid(pa).is_none()
            && listener_pid(pb).is_none())
        .await,
        "the range is still listened on after every cancel"
    );
}

#[tokio::test]
async fn ports_held_by_other_programs_fail_the_prepare_then_a_freed_one_is_used() {
    require_qemu();
    let (first, a, b) = port_pair(45000);
    let range = PortRange::new(first, first + 1).unwrap();
    let dir = TestDir::new("ports-busy");
    let m = manager(&dir, range);
    let local = LOCAL.parse().unwrap();
    let s = spec("busy1");
    let e = m.prepare_incoming(&s, 1, local).await.unwrap_err();
    // What the router is told (the error with its causes).
    let e = chain(&e);
    assert!(
        e.contains(&format!(
            "all 2 ports of migration_ports {first}-{} are in use on 127.0.0.1",
            first + 1
        )),
        "{e}"
    );
    assert!(m.statuses().is_empty(), "{:?}", m.statuses());
    assert!(!VmPaths::new(dir.path(), &s.name).pid.exists());

    // The other program lets go of the second port: the prepare finds it.
    drop(b);
    let p = port_of(&m.prepare_incoming(&s, 1, local).await.unwrap());
    assert_eq!(p, first + 1);
    assert_eq!(listener_pid(p), Some(qemu_pid(&dir, "busy1")));
    assert_eq!(listener_pid(first), Some(std::process::id()));
    m.cancel_incoming(&s.name).await.unwrap();
    drop(a);
}
