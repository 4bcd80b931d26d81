//! Router CPU per 1,000 reports/s: the real `router` binary as a child process, fed by
//! protocol-speaking genies played by this process on loopback; CPU read from
//! /proc/<pid>/stat. Printed next to the goal.
#![allow(clippy::unwrap_used)]

#[path = "../tests/support/mod.rs"]
mod support;

use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use support::sealed::{read_frame, write_frame};
use wisp_common::proto::{
    GenieMsg, HostMetrics, NetCounters, Report, RouterMsg, VmStatus, MAX_FRAME_BYTES,
};
use wisp_common::secret::Secret;
use wisp_common::{VmId, VmRunState};

/// Our own goal: the router should spend at most 5 % of one core per 1,000 reports/s,
/// so one controller follows ~100 servers at 5 reports/s each with a few % of a core.
const GOAL_CPU_PCT_PER_1000: f64 = 5.0;
const GENIES: usize = 20;
const MEASURE: Duration = Duration::from_secs(8);

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn cpu_ticks(pid: u32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &s[s.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap()
}

fn full_report(gen: u64, host: usize) -> Report {
    Report {
        gen,
        sent_at_ms: wisp_common::time::unix_ms(),
        metrics: Some(HostMetrics {
            cpu_percent: 12.0,
            per_cpu_percent: vec![10.0; 16],
            mem_total_bytes: 64 << 30,
            mem_used_bytes: 20 << 30,
            mem_available_bytes: 44 << 30,
            load_avg: [1.0, 1.1, 1.2],
            uptime_s: 1000,
            net: vec![NetCounters {
                iface: "eth0".into(),
                rx_bytes: 1,
                tx_bytes: 2,
            }],
        }),
        vms: Some(
            (0..8)
                .map(|i| VmStatus {
                    id: VmId::new(format!("vm{host}-{i}")).unwrap(),
                    state: VmRunState::Running,
                    vcpus: 2,
                    mem_mib: 2048,
                    cpu_time_ms: gen,
                    pid: Some(1000 + i),
                    qmp_socket: format!("/var/lib/wisp/vms/vm{host}-{i}.qmp").into(),
                    epoch: 1,
                })
                .collect(),
        ),
        ..Default::default()
    }
}

async fn genie(addr: String, host: usize, secret: Secret, rate: f64, until: Instant) -> u64 {
    let s = support::genie_handshake(
        addr.parse().unwrap(),
        &format!("h{host}"),
        secret.expose(),
        host as u64,
    )
    .await
    .unwrap_or_else(|e| panic!("not welcomed: {e}"))
    .stream;
    let (mut rd, mut wr) = s.into_split();
    // Drain acks so the router never blocks on a full socket.
    tokio::spawn(async move {
        while let Ok(Some(_)) = read_frame::<_, RouterMsg>(&mut rd, MAX_FRAME_BYTES).await {}
    });
    let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / rate));
    let mut gen = 0;
    while Instant::now() < until {
        tick.tick().await;
        gen += 1;
        // Like a real genie: one full report per five heartbeats.
        let r = if gen % 5 == 0 {
            full_report(gen, host)
        } else {
            Report {
                gen,
                sent_at_ms: wisp_common::time::unix_ms(),
                metrics: None,
                vms: None,
                ..Default::default()
            }
        };
        write_frame(&mut wr, &GenieMsg::Report(r), MAX_FRAME_BYTES)
            .await
            .unwrap();
    }
    gen
}

fn main() {
    let dir = std::env::temp_dir().join(format!("wisp-bench-reports-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let secret_path = dir.join("secret");
    std::fs::File::create(&secret_path)
        .unwrap()
        .write_all(b"bench-secret")
        .unwrap();
    std::fs::set_permissions(&secret_path, std::fs::Permissions::from_mode(0o600)).unwrap();
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let api_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let mut cfg = format!(
        "listen = \"127.0.0.1:{port}\"\napi = \"127.0.0.1:{api_port}\"\nstate_dir = \"{}\"\nsecret_file = \"{}\"\n",
        dir.join("state").display(),
        secret_path.display()
    );
    for i in 0..GENIES {
        cfg.push_str(&format!(
            "[[host]]\nname = \"h{i}\"\nmac = \"02:00:00:00:{:02x}:{:02x}\"\naddress = \"127.0.0.1\"\n",
            i / 256,
            i % 256
        ));
    }
    std::fs::write(dir.join("router.toml"), cfg).unwrap();
    let child = Command::new(env!("CARGO_BIN_EXE_router"))
        .args(["serve", "--config"])
        .arg(dir.join("router.toml"))
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let router = Kill(child);
    let pid = router.0.id();
    let addr = format!("127.0.0.1:{port}");
    let deadline = Instant::now() + Duration::from_secs(20);
    while std::net::TcpStream::connect(&addr).is_err() {
        assert!(Instant::now() < deadline, "router did not start");
        std::thread::sleep(Duration::from_millis(20));
    }
    let hz = 100.0; // USER_HZ on Linux
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    println!("router CPU per report rate ({GENIES} genies, 1 in 5 reports full with 8 VMs, {MEASURE:?} each)");
    println!(
        "{:>12} {:>12} {:>16} {:>22}",
        "reports/s", "router CPU", "per 1000/s", "goal per 1000/s"
    );
    for total_rate in [1000.0, 5000.0] {
        let per = total_rate / GENIES as f64;
        let until = Instant::now() + MEASURE + Duration::from_secs(1);
        let secret = Secret::from_bytes(b"bench-secret".to_vec());
        let handles: Vec<_> = (0..GENIES)
            .map(|i| rt.spawn(genie(addr.clone(), i, secret.clone(), per, until)))
            .collect();
        // Skip the first second (handshakes, warm-up).
        std::thread::sleep(Duration::from_secs(1));
        let (c0, t0) = (cpu_ticks(pid), Instant::now());
        std::thread::sleep(MEASURE);
        let (c1, t1) = (cpu_ticks(pid), Instant::now());
        let sent: u64 = rt.block_on(async {
            let mut n = 0;
            for h in handles {
                n += h.await.unwrap();
            }
            n
        });
        let cpu_pct = (c1 - c0) as f64 / hz / (t1 - t0).as_secs_f64() * 100.0;
        let achieved = sent as f64 / (MEASURE.as_secs_f64() + 1.0);
        let per_1000 = cpu_pct / (achieved / 1000.0);
        println!(
            "{achieved:>12.0} {:>11.2}% {:>15.2}% {:>21.1}% {}",
            cpu_pct,
            per_1000,
            GOAL_CPU_PCT_PER_1000,
            if per_1000 <= GOAL_CPU_PCT_PER_1000 {
                "PASS"
            } else {
                "MISS"
            }
        );
    }
    drop(router);
    let _ = std::fs::remove_dir_all(&dir);
}
