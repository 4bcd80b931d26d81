//! Footprint of the release genie at default rates against an in-process router stub:
//! RSS (goal ≤ 10 MB) and CPU share of one core (goal ≤ 0.5 %), plus the cost of
//! encoding and decoding one full report.
//!
//! Run: `cargo bench -p genie --bench footprint` (env BENCH_SECS overrides the 15 s).

#[path = "../tests/common/sealed.rs"]
mod sealed;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use genie::commands::Hypervisor;
use genie::lease::Fence;
use genie::metrics::{MetricsSource, SysinfoMetrics};
use sealed::{read_frame, write_frame};
use tokio::net::TcpListener;
use wisp_common::proto::frame::{decode, encode};
use wisp_common::proto::handshake::{self, Welcome};
use wisp_common::proto::{GenieMsg, Report, RouterMsg, VmStatus, MAX_FRAME_BYTES};
use wisp_common::secret::Secret;
use wisp_common::{VmId, VmRunState};

// A cluster secret must hold at least 16 bytes.
const SECRET: &[u8] = b"bench-secret-of-32-bytes-0123456";

fn main() {
    let secs: u64 = std::env::var("BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(15);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(footprint(secs, 0));
    rt.block_on(footprint(secs, 2));
    codec();
}

/// Router stub: handshake with default rates, then read reports and Ack each one.
async fn stub(
    l: TcpListener,
    reports: std::sync::Arc<std::sync::atomic::AtomicU64>,
    running: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    let secret = Secret::from_bytes(SECRET.to_vec());
    let (mut s, peer) = l.accept().await.expect("genie connects");
    let greeted = handshake::accept(&mut s, peer, &secret, |_| true)
        .await
        .expect("genie authenticates");
    // Every frame after the handshake is sealed, the Welcome first.
    sealed::register(&s, greeted.keys);
    let welcome: RouterMsg = Welcome {
        session: 1,
        heartbeat_ms: 200,
        metrics_ms: 1000,
        lease_ms: 3000,
    }
    .into();
    write_frame(&mut s, &welcome, MAX_FRAME_BYTES)
        .await
        .expect("welcome");
    while let Ok(Some(m)) = read_frame::<_, GenieMsg>(&mut s, MAX_FRAME_BYTES).await {
        if let GenieMsg::Report(r) = m {
            reports.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if let Some(v) = &r.vms {
                let n = v.iter().filter(|s| s.state == VmRunState::Running).count();
                running.store(n as u64, std::sync::atomic::Ordering::Relaxed);
            }
            if write_frame(&mut s, &RouterMsg::Ack { gen: r.gen }, MAX_FRAME_BYTES)
                .await
                .is_err()
            {
                return;
            }
        }
    }
}

fn proc_stat_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("genie alive");
    let f: Vec<&str> = s[s.rfind(')').expect("comm") + 1..]
        .split_whitespace()
        .collect();
    f[11].parse::<u64>().expect("utime") + f[12].parse::<u64>().expect("stime")
}

fn rss_kib(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("genie alive");
    s.lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("VmRSS")
}

async fn footprint(secs: u64, n_vms: usize) {
    let bin = env!("CARGO_BIN_EXE_genie");
    let dir = std::env::temp_dir().join(format!("genie-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(dir.join("vms")).expect("temp dir");
    let secret = dir.join("secret");
    std::fs::write(&secret, SECRET).expect("secret");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).expect("chmod");
    let l = TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let cfg = dir.join("genie.toml");
    std::fs::write(
        &cfg,
        format!(
            "host = \"bench\"\nrouter = \"{}\"\nsecret_file = \"{}\"\nvm_dir = \"{}\"\n",
            l.local_addr().expect("addr"),
            secret.display(),
            dir.join("vms").display()
        ),
    )
    .expect("config");
    // VMs for the genie to watch, started before it like a genie restart would find them.
    let vm_dir = dir.join("vms");
    let vms =
        genie::manager::VmManager::new(&vm_dir, "qemu-system-x86_64".as_ref(), Default::default());
    for i in 0..n_vms {
        let spec = wisp_common::VmSpec::new(VmId::new(format!("bench{i}")).expect("id"), 1, 64);
        vms.start(&spec, 1)
            .await
            .expect("qemu-system-x86_64 must be installed for the VM phase");
    }
    // QEMU serves one QMP client at a time: hand the sockets over to the genie.
    drop(vms);
    let reports = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    let running = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(0));
    tokio::spawn(stub(l, reports.clone(), running.clone()));
    let mut child = Command::new(bin)
        .args(["--config", cfg.to_str().expect("utf-8 path")])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .expect("start genie");
    let pid = child.id();
    // Warm-up: connect, first reports, allocator settles.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let (t0, c0, r0) = (
        Instant::now(),
        proc_stat_ticks(pid),
        reports.load(std::sync::atomic::Ordering::Relaxed),
    );
    let mut max_rss = 0;
    while t0.elapsed() < Duration::from_secs(secs) {
        max_rss = max_rss.max(rss_kib(pid));
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let (el, c1, r1) = (
        t0.elapsed(),
        proc_stat_ticks(pid),
        reports.load(std::sync::atomic::Ordering::Relaxed),
    );
    let _ = child.kill();
    let _ = child.wait();
    let killer =
        genie::manager::VmManager::new(&vm_dir, "qemu-system-x86_64".as_ref(), Default::default());
    killer.kill_all();
    let _ = std::fs::remove_dir_all(&dir);
    // /proc CPU times are in USER_HZ = 100 ticks per second.
    let cpu_pct = (c1 - c0) as f64 * 10.0 / el.as_millis() as f64 * 100.0;
    println!(
        "genie footprint over {:.1} s at default rates (heartbeat 200 ms, full report 1 s), {n_vms} idle VMs:",
        el.as_secs_f64()
    );
    println!(
        "  reports received      {:>8.1} /s",
        (r1 - r0) as f64 / el.as_secs_f64()
    );
    println!(
        "  VMs reported running  {:>8}",
        running.load(std::sync::atomic::Ordering::Relaxed)
    );
    println!(
        "  max RSS               {:>8.1} MB   (goal <= 10 MB)",
        max_rss as f64 / 1024.0
    );
    println!(
        "  CPU share of one core {:>8.3} %    (goal <= 0.5 %; resolution {:.3} %)",
        cpu_pct,
        1000.0 / el.as_millis() as f64
    );
}

fn codec() {
    let mut m = SysinfoMetrics::new().expect("sysinfo");
    let metrics = m.sample().expect("sample");
    let vms: Vec<VmStatus> = (0..20)
        .map(|i| VmStatus {
            id: VmId::new(format!("vm-{i}")).expect("id"),
            state: VmRunState::Running,
            vcpus: 2,
            mem_mib: 2048,
            cpu_time_ms: 123_456,
            pid: Some(10_000 + i),
            qmp_socket: format!("/var/lib/wisp/vms/vm-{i}.qmp").into(),
            epoch: 7,
        })
        .collect();
    let msg = GenieMsg::Report(Report {
        gen: 1,
        sent_at_ms: 1_700_000_000_000,
        metrics: Some(metrics),
        vms: Some(vms),
        ..Default::default()
    });
    let n = 20_000u32;
    let mut bytes = 0;
    let t = Instant::now();
    for _ in 0..n {
        let f = encode(&msg, MAX_FRAME_BYTES).expect("encode");
        bytes = f.len();
        let back: GenieMsg = decode(&f[4..]).expect("decode");
        std::hint::black_box(back);
    }
    let per = t.elapsed() / n;
    println!("full report with host metrics and 20 VMs: {bytes} bytes, encode+decode {:.1} µs per report", per.as_nanos() as f64 / 1000.0);
}
