//! Benchmark of VMs on the lab, printed next to ARCHITECTURE.md's reference figures (QEMU):
//! - live migration through `router vm migrate` of idle 64 MiB and 512 MiB guests:
//!   QEMU's total time and downtime (as the router reports them), the time from the
//!   CLI request to the QMP `migrate` command (`to_migrate_command_ms`: starting the
//!   destination qemu included), the router's elapsed time and the CLI's wall time;
//! - VM create-to-running: from the `router vm create` call until QMP `query-status`
//!   on the host says `running` (over the witness socket the lab's qemu wrapper adds;
//!   the genie holds the contract socket), until the guest's counter moves (read over
//!   the same socket), and until the CLI returns.
//!
//! Medians over ROUNDS runs. Needs root and the lab (fails loudly otherwise).
//! Run: `cargo build --workspace --bins && cargo bench -p wisp-tests --bench migration`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wisp_tests::lab::{query_status, Lab, LabSpec, MigrationRow, WAIT};

const ROUNDS: usize = 5;

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

/// Create-to-running of one VM, in ms from the `router vm create` call: until QMP
/// `query-status` on the host says `running` (over the witness socket), until the
/// guest's counter leaves 0 (read over the witness socket too), and until the CLI returns.
fn create_to_running(lab: &Lab, name: &str, kernel: &str) -> (u64, u64, u64) {
    let t0 = Instant::now();
    let mut child = lab
        .spawn_router_cli(&[
            "vm", "create", name, "--mem", "64", "--kernel", kernel, "--host", "h1",
        ])
        .unwrap();
    // The CLI is waited for on its own thread, which notes when it returned.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let st = child.wait();
        let _ = tx.send((st.is_ok_and(|s| s.success()), Instant::now()));
    });
    let witness = lab.witness_qmp(1, name).unwrap();
    let ms = |at: Instant| at.duration_since(t0).as_millis() as u64;
    let (mut qmp_ms, mut counter_ms, mut cli_ms) = (None, None, None);
    loop {
        if let Ok((ok, at)) = rx.try_recv() {
            assert!(ok, "vm create {name} failed");
            cli_ms = Some(ms(at));
        }
        if qmp_ms.is_none() && query_status(&witness).is_ok_and(|s| s == "running") {
            qmp_ms = Some(ms(Instant::now()));
        }
        if counter_ms.is_none() && lab.guest_counter(1, name).is_ok_and(|c| c > 0) {
            counter_ms = Some(ms(Instant::now()));
        }
        if let (Some(q), Some(c), Some(l)) = (qmp_ms, counter_ms, cli_ms) {
            return (q, c, l);
        }
        assert!(
            t0.elapsed() < WAIT,
            "{name} never ran: QMP {qmp_ms:?}, counter {counter_ms:?}, CLI {cli_ms:?}"
        );
        std::thread::sleep(Duration::from_millis(2));
    }
}

struct MigStats {
    total: u64,
    downtime: u64,
    to_cmd: u64,
    elapsed: u64,
    wall: u64,
}

/// ROUNDS migrations of an idle `mem_mib` guest, alternating h1 -> h2 -> h1.
fn migrations(lab: &Lab, kernel: &std::path::Path, mem_mib: u64) -> MigStats {
    let name = format!("m{mem_mib}");
    lab.vm_create(&name, mem_mib, kernel, Some("h1")).unwrap();
    lab.wait_counter_above(1, &name, 0).unwrap();
    let mut rows: Vec<(MigrationRow, u64)> = Vec::new();
    for k in 0..ROUNDS {
        let (from, to) = if k % 2 == 0 { (1, "h2") } else { (2, "h1") };
        let t0 = Instant::now();
        let r = lab.vm_migrate(&name, to).unwrap();
        let wall = t0.elapsed().as_millis() as u64;
        // The next round needs the source gone and the guest counting at its new home.
        lab.wait_no_qemu(from, &name).unwrap();
        lab.wait_counter_above(3 - from, &name, 0).unwrap();
        rows.push((r, wall));
    }
    lab.router_ok(&["vm", "delete", &name]).unwrap();
    for h in 1..=2 {
        lab.wait_no_qemu(h, &name).unwrap();
    }
    let col = |f: fn(&MigrationRow) -> u64| median(rows.iter().map(|(r, _)| f(r)).collect());
    MigStats {
        total: col(|r| r.total_ms),
        downtime: col(|r| r.downtime_ms),
        to_cmd: col(|r| r.to_migrate_command_ms),
        elapsed: col(|r| r.elapsed_ms),
        wall: median(rows.iter().map(|(_, w)| *w).collect()),
    }
}

fn main() {
    // The VM lab preset: the genies run qemu through the lab's wrapper that adds a
    // witness QMP socket, so the bench can ask QEMU itself when a new VM runs.
    let lab = Lab::start_vms(LabSpec::vms(2).bench_bins()).unwrap_or_else(|e| {
        eprintln!("error: the migration bench needs the lab: {e}");
        std::process::exit(1)
    });
    let kernel = lab.guest_elf().to_owned();
    let k = kernel.to_string_lossy().into_owned();

    let (mut qmp, mut counting, mut cli) = (Vec::new(), Vec::new(), Vec::new());
    for i in 0..ROUNDS {
        let name = format!("c{i}");
        let (q, c, l) = create_to_running(&lab, &name, &k);
        qmp.push(q);
        counting.push(c);
        cli.push(l);
        lab.router_ok(&["vm", "delete", &name]).unwrap();
        lab.wait_no_qemu(1, &name).unwrap();
    }
    let small = migrations(&lab, &kernel, 64);
    let big = migrations(&lab, &kernel, 512);

    println!();
    println!("VMs on the lab: medians of {ROUNDS} runs (ms), 2 hosts, idle tick-counter guest, TCG, debug genie/router");
    let row = |name: &str, a: &str, b: &str, reference: &str| {
        println!("{name:<46} {a:>8} {b:>8}   {reference}");
    };
    row("metric", "64 MiB", "512 MiB", "reference (ARCHITECTURE.md)");
    let line = |name: &str, a: u64, b: u64, reference: &str| {
        row(name, &a.to_string(), &b.to_string(), reference);
    };
    line(
        "migration total (QEMU)",
        small.total,
        big.total,
        "64 MiB idle: 14 ms",
    );
    line(
        "migration downtime (QEMU)",
        small.downtime,
        big.downtime,
        "64 MiB idle: 2 ms",
    );
    line(
        "`router vm migrate` -> QMP migrate command",
        small.to_cmd,
        big.to_cmd,
        "-",
    );
    line(
        "`router vm migrate` -> placement recorded",
        small.elapsed,
        big.elapsed,
        "-",
    );
    line(
        "`router vm migrate` CLI wall time",
        small.wall,
        big.wall,
        "-",
    );
    row(
        "`router vm create` -> QMP query-status running",
        &median(qmp).to_string(),
        "-",
        "qemu start 100-300 ms",
    );
    row(
        "`router vm create` -> guest counter moving",
        &median(counting).to_string(),
        "-",
        "-",
    );
    row(
        "`router vm create` CLI returns",
        &median(cli).to_string(),
        "-",
        "-",
    );
}
