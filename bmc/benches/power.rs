//! Power-control figures next to their goals (harness = false; run with
//! `cargo bench -p wisp-bmc --bench power`). Uses real ipmi_sim BMCs on loopback
//! and a private network namespace for Wake-on-LAN; fails loudly without them.
//!
//! Goals: status latency no worse than ipmitool on the same BMC (ratio <= 1);
//! status of 3 hosts in parallel < 1 s; of 50 BMCs < 5 s; magic packet sent in < 10 ms.
//! `WISP_BENCH_BMCS` overrides the size of the large fleet (default 50).
#![allow(clippy::unwrap_used)]

use std::fs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wisp_bmc::testkit::{require, IpmiSim, Netns};
use wisp_bmc::{magic_packet, Bmc, BmcConfig, IpmiBmc, MacAddr, PowerState, WolWaker};

fn stats(mut v: Vec<Duration>) -> (Duration, Duration) {
    v.sort();
    let med = v[v.len() / 2];
    let p95 = v[((v.len() as f64 * 0.95).ceil() as usize).min(v.len()) - 1];
    (med, p95)
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn client(sim: &IpmiSim) -> Arc<IpmiBmc> {
    let mut cfg = BmcConfig::new(sim.addr(), IpmiSim::USER, sim.password());
    cfg.timeout = Duration::from_secs(10);
    Arc::new(IpmiBmc::new(cfg))
}

async fn parallel_status(bmcs: &[Arc<IpmiBmc>]) -> (Duration, usize) {
    let start = Instant::now();
    let tasks: Vec<_> = bmcs
        .iter()
        .map(|b| {
            let b = b.clone();
            tokio::spawn(async move { b.power_status().await })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        if matches!(t.await.unwrap(), Ok(PowerState::On)) {
            ok += 1;
        }
    }
    (start.elapsed(), ok)
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(run());
}

async fn run() {
    require("ipmitool", "ipmitool").unwrap();
    let fleet: usize = std::env::var("WISP_BENCH_BMCS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(50);

    // 1. Latency vs ipmitool on the same BMC, same run.
    let sim = IpmiSim::start("bench-pw", true).unwrap();
    let bmc = client(&sim);
    bmc.power_status().await.unwrap(); // open the session
    let mut warm = Vec::new();
    for _ in 0..40 {
        let t = Instant::now();
        bmc.power_status().await.unwrap();
        warm.push(t.elapsed());
    }
    let mut cold = Vec::new();
    for _ in 0..15 {
        let b = client(&sim);
        let t = Instant::now();
        b.power_status().await.unwrap();
        cold.push(t.elapsed());
        b.shutdown().await;
    }
    let mut tool = Vec::new();
    for _ in 0..15 {
        let t = Instant::now();
        let out =
            tokio::task::block_in_place(|| sim.ipmitool(&["chassis", "power", "status"])).unwrap();
        tool.push(t.elapsed());
        assert!(out.contains("is on"), "{out}");
    }
    let (wm, wp) = stats(warm);
    let (cm, cp) = stats(cold);
    let (tm, tp) = stats(tool);
    println!("IPMI status latency, one ipmi_sim BMC on loopback (goal: ratio <= 1.0 vs ipmitool)");
    println!(
        "  ipmitool -I lanplus -C 3 (new process+session)  median {:>9}  p95 {:>9}",
        ms(tm),
        ms(tp)
    );
    println!(
        "  wisp, reused session                          median {:>9}  p95 {:>9}  ratio {:.2}",
        ms(wm),
        ms(wp),
        wm.as_secs_f64() / tm.as_secs_f64()
    );
    println!(
        "  wisp, new session per call                    median {:>9}  p95 {:>9}  ratio {:.2}",
        ms(cm),
        ms(cp),
        cm.as_secs_f64() / tm.as_secs_f64()
    );
    bmc.shutdown().await;
    drop(sim);

    // 2. Parallel status: 3 hosts, then the large fleet.
    for n in [3usize, fleet] {
        let t = Instant::now();
        let sims: Vec<IpmiSim> = (0..n)
            .map(|i| IpmiSim::start(&format!("pw{i}"), true).unwrap())
            .collect();
        let started = t.elapsed();
        let bmcs: Vec<_> = sims.iter().map(client).collect();
        let (cold_t, ok1) = parallel_status(&bmcs).await;
        let (warm_t, ok2) = parallel_status(&bmcs).await;
        let goal = if n <= 3 { "1 s" } else { "5 s" };
        println!(
            "status of {n} BMCs in parallel (goal < {goal}): first (opens sessions) {} [{ok1}/{n} ok], again (reused) {} [{ok2}/{n} ok]   ({n} ipmi_sim started in {})",
            ms(cold_t),
            ms(warm_t),
            ms(started)
        );
        for b in &bmcs {
            b.shutdown().await;
        }
    }

    // 3. Magic packet: build, and build+send (raw frame + UDP) on a veth in a
    //    private namespace.
    let mac: MacAddr = "02:77:00:00:00:01".parse().unwrap();
    let n = 100_000;
    let t = Instant::now();
    let mut sum = 0usize;
    for _ in 0..n {
        sum += std::hint::black_box(magic_packet(std::hint::black_box(mac), None)).len();
    }
    let build = t.elapsed() / n;
    assert_eq!(sum, 102 * n as usize);
    let ns = Netns::new("wisp-pwb-").unwrap();
    ns.exec(
        "ip",
        &["link", "add", "wa", "type", "veth", "peer", "name", "wb"],
    )
    .unwrap();
    ns.exec("ip", &["addr", "add", "10.98.0.1/24", "dev", "wa"])
        .unwrap();
    ns.exec("ip", &["link", "set", "wa", "up"]).unwrap();
    ns.exec("ip", &["link", "set", "wb", "up"]).unwrap();
    let path = ns.path();
    let times = std::thread::spawn(move || {
        let f = fs::File::open(&path).unwrap();
        nix::sched::setns(f, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
        let mut w = WolWaker::new("wa");
        w.repeats = 1;
        (0..50)
            .map(|_| {
                let t = Instant::now();
                let r = w.wake_blocking(mac).unwrap();
                assert_eq!((r.raw_frames, r.udp_packets), (1, 1));
                t.elapsed()
            })
            .collect::<Vec<_>>()
    })
    .join()
    .unwrap();
    let (sm, sp) = stats(times);
    println!("magic packet: build {:.0} ns; build + send raw frame and UDP once (interface lookup, socket open) median {} p95 {} (goal < 10 ms)", build.as_nanos(), ms(sm), ms(sp));
}
