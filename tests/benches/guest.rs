//! Benchmark of the real Linux guest on the lab network (issue 11):
//! - ping replies lost across a live migration: `ping -i 0.1` (10/s) from the core
//!   namespace for 5 s, a `router vm migrate` started 1 s in; goal at most 1 lost;
//! - boot-to-ping: from the `router vm create` call until the guest first answers ping
//!   (Debian's kernel unpacked to vmlinux, under TCG).
//!
//! `WISP_DOWNTIME_LIMIT_MS=N` sets the router's `[migration] downtime_limit_ms`.
//!
//! Needs root, the lab, linux-image-amd64 and busybox-static (fails loudly otherwise).
//! Run: `cargo build --workspace --bins && cargo bench -p wisp-tests --bench guest`.
#![allow(clippy::unwrap_used)]

use std::process::Stdio;
use std::time::{Duration, Instant};

use wisp_tests::bench::stats;
use wisp_tests::lab::{cmd, Lab, LabSpec};

const MIGRATIONS: usize = 6;
const BOOTS: usize = 3;
const IP: &str = "10.77.0.200";
const BOOT_DEADLINE: Duration = Duration::from_secs(240);

/// Milliseconds from `t0` until the guest first answers a ping.
fn until_ping(lab: &Lab, t0: Instant) -> u64 {
    while !lab.ping_from_core(IP) {
        assert!(t0.elapsed() < BOOT_DEADLINE, "no ping from {IP}");
        std::thread::sleep(Duration::from_millis(100));
    }
    t0.elapsed().as_millis() as u64
}

/// (transmitted, received) from ping's summary line.
fn ping_counts(out: &str) -> (u64, u64) {
    let line = out
        .lines()
        .find(|l| l.contains("packets transmitted"))
        .unwrap_or_else(|| panic!("no ping summary in {out}"));
    let n: Vec<u64> = line
        .split(|c: char| !c.is_ascii_digit())
        .filter_map(|w| w.parse().ok())
        .collect();
    (n[0], n[1])
}

fn main() {
    // `WISP_DOWNTIME_LIMIT_MS=N` runs the series with router.toml's
    // `[migration] downtime_limit_ms = N` instead of its default (300).
    let extra = std::env::var("WISP_DOWNTIME_LIMIT_MS")
        .ok()
        .map(|n| format!("[migration]\ndowntime_limit_ms = {n}\n"))
        .unwrap_or_default();
    let lab =
        Lab::start_vms(LabSpec::vms(2).bench_bins().router_toml(&extra)).unwrap_or_else(|e| {
            panic!("the guest bench needs root, the lab and the guest packages: {e}")
        });
    println!("Linux guest on the lab network ({MIGRATIONS} migrations, {BOOTS} boots)");

    let mut boot = Vec::new();
    for i in 0..BOOTS {
        let name = format!("b{i}");
        let t0 = Instant::now();
        lab.create_linux_vm(&name, &format!("{IP}/24"), Some("h1"))
            .unwrap();
        boot.push(until_ping(&lab, t0));
        lab.router_ok(&["vm", "delete", &name]).unwrap();
        // The next guest has the same address and a new MAC.
        let _ = lab.exec_in(&lab.core_ns(), "ip", &["neigh", "flush", "to", IP]);
    }

    lab.create_linux_vm("g1", &format!("{IP}/24"), Some("h1"))
        .unwrap();
    until_ping(&lab, Instant::now());
    let mut lost = Vec::new();
    let mut downtime = Vec::new();
    for i in 0..MIGRATIONS {
        let to = if i % 2 == 0 { "h2" } else { "h1" };
        let mut c = cmd::in_ns(&lab.core_ns(), "ping");
        c.args(["-n", "-i", "0.1", "-c", "50", "-W", "1", IP])
            .stdout(Stdio::piped())
            .stderr(Stdio::null());
        let ping = c.spawn().unwrap();
        std::thread::sleep(Duration::from_secs(1));
        let m = lab.vm_migrate("g1", to).unwrap();
        downtime.push(m.downtime_ms);
        let out = ping.wait_with_output().unwrap();
        let (sent, got) = ping_counts(&String::from_utf8_lossy(&out.stdout));
        lost.push(sent - got);
    }
    lost.sort_unstable();
    println!(
        "{:<44} median {:>6}     max {:>6}     (n={MIGRATIONS}) goal: at most 1 lost; each {:?}",
        "ping replies lost across a live migration",
        lost[lost.len() / 2],
        lost[lost.len() - 1],
        lost
    );
    stats(
        "QEMU downtime of those migrations",
        downtime,
        "(router's report)",
    );
    stats(
        "boot to first ping (create call to reply)",
        boot,
        "vmlinux under TCG; reference 4-5 s, bzImage ~10 s (ARCHITECTURE.md, Guests)",
    );
}
