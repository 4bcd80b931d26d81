//! The genie against real qemu: QMP, start/stop, rediscovery after a genie restart,
//! live migration on 127.0.0.1 and a failed migration that keeps the source running.
#![allow(clippy::unwrap_used)]

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{eventually, require_qemu, spec, TestDir};
use genie::commands::Hypervisor;
use genie::manager::VmManager;
use genie::qemu::{self, VmPaths};
use genie::qmp::{self, Qmp};
use tokio::sync::{mpsc, Notify};
use wisp_common::{VmId, VmRunState};

const LONG: Duration = Duration::from_secs(30);

fn manager(dir: &TestDir) -> VmManager {
    VmManager::new(
        dir.path(),
        "qemu-system-x86_64".as_ref(),
        Arc::new(Notify::new()),
    )
}

fn state_of(m: &VmManager, vm: &str) -> Option<VmRunState> {
    m.statuses()
        .into_iter()
        .find(|s| s.id.as_str() == vm)
        .map(|s| s.state)
}

#[tokio::test]
async fn qmp_client_talks_to_a_real_qemu() {
    require_qemu();
    let dir = TestDir::new("qmp");
    let s = spec("q1");
    let paths = VmPaths::new(dir.path(), &s.name);
    let args = qemu::command_line(&qemu::Launch::bare(&s), &paths, false);
    qemu::start("qemu-system-x86_64".as_ref(), &s.name, &args, &paths)
        .await
        .unwrap();
    let mut q = Qmp::connect(&paths.qmp).await.unwrap();
    assert_eq!(
        qmp::query_status(&mut q).await.unwrap(),
        VmRunState::Running
    );
    assert_eq!(qmp::query_size(&mut q).await.unwrap(), (1, 64));
    let e = q
        .execute("no-such-command", None)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("no-such-command"), "{e}");
    // The connection survives a failed command.
    q.execute("stop", None).await.unwrap();
    assert_eq!(qmp::query_status(&mut q).await.unwrap(), VmRunState::Paused);
    let ev = tokio::time::timeout(LONG, q.next_event())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(ev.name, "STOP");
    let pid = qemu::read_pid(&paths.pid).unwrap();
    assert!(qemu::is_our_qemu(pid, &s.name));
    let _ = q.execute("quit", None).await;
    assert!(qemu::wait_gone(pid, LONG).await, "qemu did not quit");
}

#[tokio::test]
async fn start_stop_and_rediscovery_after_genie_restart() {
    require_qemu();
    let dir = TestDir::new("life");
    let m = manager(&dir);
    let s = spec("vm1");
    m.start(&s, 5).await.unwrap();
    let st = m.statuses();
    assert_eq!(st.len(), 1);
    assert_eq!(st[0].state, VmRunState::Running);
    assert_eq!((st[0].vcpus, st[0].mem_mib, st[0].epoch), (1, 64, 5));
    let pid = st[0].pid.unwrap();
    assert!(qemu::is_our_qemu(pid, &s.name));
    // Starting again is idempotent: same qemu.
    m.start(&s, 5).await.unwrap();
    assert_eq!(m.statuses()[0].pid, Some(pid));

    // "Restart" the genie: drop the manager, make a new one on the same vm_dir.
    drop(m);
    let m2 = manager(&dir);
    assert_eq!(m2.scan(), 1);
    m2.settle(LONG).await;
    let st = m2.statuses();
    assert_eq!(st.len(), 1, "{st:?}");
    assert_eq!(st[0].pid, Some(pid), "rediscovered the same qemu");
    assert_eq!(st[0].state, VmRunState::Running);
    assert_eq!(st[0].epoch, 5);
    assert!(qemu::is_alive(pid), "the restart must not disturb the VM");

    // Stop: the BIOS-only guest ignores ACPI powerdown, so this exercises the quit path.
    m2.stop(&s.name, false, Duration::from_millis(300))
        .await
        .unwrap();
    assert!(!qemu::is_alive(pid));
    assert!(
        eventually(LONG, || m2.statuses().is_empty()).await,
        "{:?}",
        m2.statuses()
    );
    assert!(dir.path().join("vm1.json").exists(), "stop keeps the spec");
    m2.delete(&s.name).await.unwrap();
    assert!(!dir.path().join("vm1.json").exists());
}

#[tokio::test]
async fn a_dead_qemu_is_unreachable_then_forgotten_and_start_failures_are_clear() {
    require_qemu();
    let dir = TestDir::new("dead");
    let m = manager(&dir);
    m.start(&spec("vm2"), 1).await.unwrap();
    let pid = m.statuses()[0].pid.unwrap();
    assert!(qemu::kill(pid, &VmId::new("vm2").unwrap()));
    assert!(
        eventually(LONG, || m.statuses().is_empty()).await,
        "{:?}",
        m.statuses()
    );

    // A spec qemu cannot run: the error carries qemu's own words from the log.
    let mut bad = spec("vm3");
    bad.kernel = Some("/nonexistent/kernel.elf".into());
    let e = m.start(&bad, 1).await.unwrap_err().to_string();
    assert!(e.contains("vm3") && e.contains("kernel"), "{e}");
}

#[tokio::test]
async fn live_migration_between_two_qemus_on_loopback() {
    require_qemu();
    let src_dir = TestDir::new("msrc");
    let dst_dir = TestDir::new("mdst");
    let src = manager(&src_dir);
    let dst = manager(&dst_dir);
    let s = spec("mig1");
    src.start(&s, 1).await.unwrap();
    let src_pid = src.statuses()[0].pid.unwrap();
    let uri = dst
        .prepare_incoming(&s, 2, "127.0.0.1".parse().unwrap())
        .await
        .unwrap();
    assert!(uri.starts_with("tcp:127.0.0.1:"), "{uri}");
    // The default migration_ports.
    let port: u16 = uri.rsplit(':').next().unwrap().parse().unwrap();
    assert!((49152..=49215).contains(&port), "{uri}");
    assert_eq!(state_of(&dst, "mig1"), Some(VmRunState::Inmigrate));

    let (ptx, mut prx) = mpsc::channel(1024);
    let (total_ms, downtime_ms) = src.migrate(&s.name, &uri, 1000, 300, &ptx).await.unwrap();
    drop(ptx);
    let mut last = None;
    while let Some(p) = prx.recv().await {
        last = Some(p);
    }
    assert_eq!(last.unwrap().status, "completed");
    assert!(total_ms > 0, "total {total_ms} ms");
    println!("migration: total {total_ms} ms, downtime {downtime_ms} ms");
    assert!(
        qemu::wait_gone(src_pid, LONG).await,
        "source qemu must be gone"
    );
    assert!(!src_dir.path().join("mig1.qmp").exists());
    assert!(src.statuses().is_empty());
    assert!(
        eventually(LONG, || state_of(&dst, "mig1") == Some(VmRunState::Running)).await,
        "destination not running: {:?}",
        dst.statuses()
    );
    assert_eq!(dst.statuses()[0].epoch, 2);
    // The destination qemu closed its listener once the migration was in: the port
    // can be bound again.
    assert!(
        eventually(LONG, || std::net::TcpListener::bind(("127.0.0.1", port))
            .is_ok())
        .await,
        "port {port} still held after the migration"
    );
}

#[tokio::test]
async fn migration_to_a_dead_port_fails_and_the_source_keeps_running() {
    require_qemu();
    let dir = TestDir::new("mfail");
    let m = manager(&dir);
    let s = spec("mig2");
    m.start(&s, 1).await.unwrap();
    let pid = m.statuses()[0].pid.unwrap();
    // A port that was free a moment ago: nobody listens there.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let (ptx, _prx) = mpsc::channel(1024);
    let e = m
        .migrate(&s.name, &format!("tcp:{dead}"), 0, 0, &ptx)
        .await
        .unwrap_err()
        .to_string();
    assert!(e.contains("mig2"), "{e}");
    assert!(qemu::is_alive(pid));
    assert!(
        eventually(LONG, || state_of(&m, "mig2") == Some(VmRunState::Running)).await,
        "{:?}",
        m.statuses()
    );
}
