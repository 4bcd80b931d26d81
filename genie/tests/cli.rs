//! The built `genie` binary: `report --once --json`, config errors, and a SIGTERM
//! shutdown that leaves a running VM alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::{require_qemu, spec, TestDir};
use tokio::net::TcpListener;
use wisp_common::proto::frame::read_frame;
use wisp_common::proto::{GenieMsg, Report, MAX_FRAME_BYTES};

const BIN: &str = env!("CARGO_BIN_EXE_genie");

fn write_config(dir: &TestDir, router: &str, extra: &str) -> std::path::PathBuf {
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "cluster\n").unwrap();
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    // vm_dir is the test dir itself, so its guard kills the test's qemus.
    let vm_dir = dir.path();
    let cfg = dir.path().join("genie.toml");
    std::fs::write(
        &cfg,
        format!(
            "host = \"h1\"\nrouter = \"{router}\"\nsecret_file = \"{}\"\nvm_dir = \"{}\"\n{extra}",
            secret.display(),
            vm_dir.display()
        ),
    )
    .unwrap();
    cfg
}

/// True when a fresh QMP client gets the greeting (nobody else holds the monitor).
fn genie_qmp_free(sock: &std::path::Path) -> bool {
    use std::io::{BufRead, BufReader};
    let Ok(s) = std::os::unix::net::UnixStream::connect(sock) else {
        return false;
    };
    s.set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).is_ok() && line.contains("QMP")
}

/// Kills the child on drop so a failing test leaves no genie behind.
struct Child(std::process::Child);
impl Drop for Child {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[tokio::test]
async fn report_once_json_includes_metrics_and_running_vms() {
    require_qemu();
    let dir = TestDir::new("cli-report");
    let cfg = write_config(&dir, "127.0.0.1:1", "");
    // A VM in vm_dir must show up in the one-shot report.
    let vm_dir = dir.path();
    let m =
        genie::manager::VmManager::new(vm_dir, "qemu-system-x86_64".as_ref(), Default::default());
    m.start(&spec("rep1"), 3).await.unwrap();
    // QEMU serves one QMP client at a time: release ours, as a stopped genie would.
    drop(m);
    let sock = vm_dir.join("rep1.qmp");
    assert!(
        common::eventually(Duration::from_secs(20), || genie_qmp_free(&sock)).await,
        "our QMP connection was not released"
    );
    let out = Command::new(BIN)
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "report",
            "--once",
            "--json",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let r: Report = serde_json::from_slice(&out.stdout).unwrap();
    let metrics = r.metrics.unwrap();
    assert!(metrics.mem_total_bytes > 0);
    assert!(!metrics.per_cpu_percent.is_empty());
    let vms = r.vms.unwrap();
    assert_eq!(vms.len(), 1, "{vms:?}");
    assert_eq!(vms[0].id.as_str(), "rep1");
    assert_eq!(vms[0].state, wisp_common::VmRunState::Running);
    assert_eq!((vms[0].mem_mib, vms[0].epoch), (64, 3));
    // `dir`'s guard kills the qemu.
}

#[test]
fn config_errors_name_file_and_key_on_one_line() {
    let dir = TestDir::new("cli-cfg");
    let cfg = write_config(&dir, "127.0.0.1:1", "heartbeat_msec = 5\n");
    let out = Command::new(BIN)
        .args([
            "--config",
            cfg.to_str().unwrap(),
            "report",
            "--once",
            "--json",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.starts_with("error: ") && err.contains("genie.toml") && err.contains("heartbeat_msec"),
        "{err}"
    );
}

#[tokio::test]
async fn sigterm_closes_the_link_and_leaves_vms_running() {
    require_qemu();
    let dir = TestDir::new("cli-term");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = write_config(&dir, &l.local_addr().unwrap().to_string(), "");
    let vm_dir = dir.path();
    let m =
        genie::manager::VmManager::new(vm_dir, "qemu-system-x86_64".as_ref(), Default::default());
    m.start(&spec("keep1"), 1).await.unwrap();
    let pid = m.statuses()[0].pid.unwrap();
    let child = Child(
        Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(20), l.accept())
        .await
        .unwrap()
        .unwrap();
    let hello: GenieMsg = read_frame(&mut s, MAX_FRAME_BYTES).await.unwrap().unwrap();
    assert!(matches!(hello, GenieMsg::Hello { .. }), "{hello:?}");
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.0.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    let mut child = child;
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let status = loop {
        if let Some(st) = child.0.try_wait().unwrap() {
            break st;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "genie ignored SIGTERM"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(status.success(), "{status}");
    // The link is closed...
    let end: Option<GenieMsg> = read_frame(&mut s, MAX_FRAME_BYTES).await.unwrap_or(None);
    assert!(end.is_none());
    // ...and the VM untouched.
    assert!(genie::qemu::is_our_qemu(pid, &spec("keep1").name));
    m.delete(&spec("keep1").name).await.unwrap();
}
