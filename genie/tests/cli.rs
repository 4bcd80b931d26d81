//! The built `genie` binary: `report --once --json`, config errors, and a SIGTERM
//! shutdown that leaves a running VM alone.
#![allow(clippy::unwrap_used)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::Duration;

use common::sealed::{read_frame, write_frame};
use common::{require_qemu, spec, TestDir};
use genie::commands::Hypervisor;
use tokio::net::TcpListener;
use wisp_common::proto::{GenieMsg, Outcome, Report, RouterMsg, VmStatus, MAX_FRAME_BYTES};
use wisp_common::{HostId, VmRunState};

const BIN: &str = env!("CARGO_BIN_EXE_genie");

fn write_config(dir: &TestDir, router: &str, extra: &str) -> std::path::PathBuf {
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "genie-cli-test-cluster-secret\n").unwrap();
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
    assert_eq!(vms[0].state, VmRunState::Running);
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

async fn next_msg(s: &mut tokio::net::TcpStream) -> GenieMsg {
    tokio::time::timeout(Duration::from_secs(30), read_frame(s, MAX_FRAME_BYTES))
        .await
        .expect("genie went silent")
        .unwrap()
        .expect("genie closed the link")
}

/// Reads until the reply to `id`, returning it and the last VM list seen on the way.
async fn reply_to(s: &mut tokio::net::TcpStream, id: u64) -> Outcome {
    loop {
        match next_msg(s).await {
            GenieMsg::Reply { id: got, outcome } if got == id => return outcome,
            GenieMsg::Report(r) => {
                write_frame(s, &RouterMsg::Ack { gen: r.gen }, MAX_FRAME_BYTES)
                    .await
                    .unwrap();
            }
            _ => {}
        }
    }
}

/// Reads reports until one lists VMs satisfying `pred`.
async fn vms_until(
    s: &mut tokio::net::TcpStream,
    pred: impl Fn(&[VmStatus]) -> bool,
) -> Vec<VmStatus> {
    loop {
        if let GenieMsg::Report(r) = next_msg(s).await {
            write_frame(s, &RouterMsg::Ack { gen: r.gen }, MAX_FRAME_BYTES)
                .await
                .unwrap();
            if let Some(v) = r.vms {
                if pred(&v) {
                    return v;
                }
            }
        }
    }
}

#[tokio::test]
async fn the_binary_runs_vm_commands_from_the_router() {
    require_qemu();
    let dir = TestDir::new("cli-cmd");
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = write_config(&dir, &l.local_addr().unwrap().to_string(), "");
    let _child = Child(
        Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap()])
            .spawn()
            .unwrap(),
    );
    let (mut s, _) = tokio::time::timeout(Duration::from_secs(20), l.accept())
        .await
        .unwrap()
        .unwrap();
    let welcome = RouterMsg::Welcome {
        session: 1,
        heartbeat_ms: 200,
        metrics_ms: 1000,
        lease_ms: 0,
    };
    common::router_handshake(
        &mut s,
        b"genie-cli-test-cluster-secret",
        &HostId::new("h1").unwrap(),
        welcome,
    )
    .await
    .unwrap();
    let spec = spec("cmd1");
    let start = RouterMsg::Command {
        id: 1,
        command: wisp_common::proto::Command::StartVm {
            spec: spec.clone(),
            epoch: 9,
        },
    };
    write_frame(&mut s, &start, MAX_FRAME_BYTES).await.unwrap();
    assert_eq!(reply_to(&mut s, 1).await, Outcome::Done);
    let v = vms_until(&mut s, |v| v.iter().any(|x| x.state == VmRunState::Running)).await;
    assert_eq!(
        (v[0].id.as_str(), v[0].epoch, v[0].mem_mib, v[0].vcpus),
        ("cmd1", 9, 64, 1)
    );
    let pid = v[0].pid.unwrap();
    assert!(genie::qemu::is_our_qemu(pid, &spec.name));

    let stop = RouterMsg::Command {
        id: 2,
        command: wisp_common::proto::Command::StopVm {
            vm: spec.name.clone(),
            force: true,
            timeout_ms: 0,
        },
    };
    write_frame(&mut s, &stop, MAX_FRAME_BYTES).await.unwrap();
    assert_eq!(reply_to(&mut s, 2).await, Outcome::Done);
    assert!(!genie::qemu::is_alive(pid));
    vms_until(&mut s, |v| v.is_empty()).await;

    // A start qemu cannot do fails with qemu's own words.
    let mut bad = spec.clone();
    bad.kernel = Some("/nonexistent/k.elf".into());
    let cmd = RouterMsg::Command {
        id: 3,
        command: wisp_common::proto::Command::StartVm {
            spec: bad,
            epoch: 10,
        },
    };
    write_frame(&mut s, &cmd, MAX_FRAME_BYTES).await.unwrap();
    match reply_to(&mut s, 3).await {
        Outcome::Failed { error } => assert!(error.contains("k.elf"), "{error}"),
        o => panic!("{o:?}"),
    }
}

#[tokio::test]
async fn a_restarted_genie_that_cannot_reach_the_router_fences_after_the_persisted_lease() {
    require_qemu();
    let dir = TestDir::new("cli-lease");
    // Nobody listens on this port: the router is unreachable.
    let dead = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let cfg = write_config(&dir, &dead.to_string(), "");
    std::fs::write(dir.path().join("lease"), "1000\n").unwrap();
    let m = genie::manager::VmManager::new(
        dir.path(),
        "qemu-system-x86_64".as_ref(),
        Default::default(),
    );
    m.start(&spec("fence1"), 1).await.unwrap();
    let pid = m.statuses()[0].pid.unwrap();
    drop(m);
    let t0 = std::time::Instant::now();
    let mut child = Child(
        Command::new(BIN)
            .args(["--config", cfg.to_str().unwrap()])
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    );
    assert!(
        common::eventually(Duration::from_secs(30), || !genie::qemu::is_alive(pid)).await,
        "the genie did not self-fence"
    );
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "fenced before the lease: {:?}",
        t0.elapsed()
    );
    let _ = child.0.kill();
    let out = child.0.wait_with_output_ref();
    assert!(out.contains("SELF-FENCE"), "{out}");
}

trait StderrText {
    fn wait_with_output_ref(&mut self) -> String;
}

impl StderrText for std::process::Child {
    fn wait_with_output_ref(&mut self) -> String {
        use std::io::Read;
        let _ = self.wait();
        let mut s = String::new();
        if let Some(mut e) = self.stderr.take() {
            let _ = e.read_to_string(&mut s);
        }
        s
    }
}
