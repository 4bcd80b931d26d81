//! Benchmark of VMs on the lab, printed as a table next to LAB.md's reference figures:
//! - live migration through `router vm migrate` of idle 64 MiB and 512 MiB guests:
//!   QEMU's total time and downtime (as the router reports them), the time from the
//!   CLI request to the QMP `migrate` command (`to_migrate_command_ms`: starting the
//!   destination qemu included), the router's elapsed time and the CLI's wall time;
//! - VM create-to-running: from the `router vm create` call until the guest executes
//!   (its counter, read from the qemu's memory, leaves 0). The genie holds the VM's
//!   only QMP socket, so `query-status` on the host is not available to a witness;
//!   a guest that counts is running by definition. The CLI's own return is shown too.
//!
//! Medians over ROUNDS runs. Needs root and the lab (fails loudly otherwise).
//! Run: `cargo build --workspace --bins && cargo bench -p wisp-tests --bench migration`.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use wisp_tests::lab::vm_ext::MigrationRow;
use wisp_tests::lab::{poll, Lab, LabSpec, WAIT};

const ROUNDS: usize = 5;

/// Benches build in release, but `cargo build --workspace --bins` builds debug
/// binaries: use those unless `WISP_BIN_DIR` says otherwise.
fn bin_dir() -> Option<std::path::PathBuf> {
    if std::env::var_os("WISP_BIN_DIR").is_some() {
        return None;
    }
    let exe = std::env::current_exe().ok()?;
    // <target>/release/deps/migration-xxx -> <target>/debug
    Some(exe.parent()?.parent()?.parent()?.join("debug"))
}

fn median(mut v: Vec<u64>) -> u64 {
    v.sort_unstable();
    v[v.len() / 2]
}

fn wait_all_up(lab: &Lab) {
    poll(WAIT, "every host up with metrics", |last| {
        let rows = lab.hosts_json().unwrap();
        *last = format!("{rows:?}");
        (rows.len() == lab.hosts().len()
            && rows
                .iter()
                .all(|h| h.state == "up" && h.mem_total_bytes.is_some_and(|m| m > 0)))
        .then_some(())
    })
    .unwrap();
}

/// Create-to-running of one VM: (ms until the guest counts, ms until the CLI returns).
fn create_to_running(lab: &Lab, name: &str, kernel: &str) -> (u64, u64) {
    let t0 = Instant::now();
    let mut child = lab
        .spawn_router_cli(&[
            "vm", "create", name, "--mem", "64", "--kernel", kernel, "--host", "h1",
        ])
        .unwrap();
    let mut cli_ms = None;
    let running_ms = loop {
        if cli_ms.is_none() {
            if let Some(st) = child.try_wait().unwrap() {
                assert!(st.success(), "vm create {name} failed");
                cli_ms = Some(t0.elapsed().as_millis() as u64);
            }
        }
        if lab.guest_counter(1, name).is_ok_and(|c| c > 0) {
            break t0.elapsed().as_millis() as u64;
        }
        assert!(t0.elapsed() < WAIT, "{name} never ran");
        std::thread::sleep(Duration::from_millis(2));
    };
    let cli_ms = cli_ms.unwrap_or_else(|| {
        let st = child.wait().unwrap();
        assert!(st.success(), "vm create {name} failed");
        t0.elapsed().as_millis() as u64
    });
    (running_ms, cli_ms)
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
    let lab = Lab::start(LabSpec {
        hosts: 2,
        wol_listener: false,
        bin_dir: bin_dir(),
        ..LabSpec::default()
    })
    .unwrap_or_else(|e| {
        eprintln!("error: the migration bench needs the lab: {e}");
        std::process::exit(1)
    });
    wait_all_up(&lab);
    let kernel = lab.guest_elf().to_owned();
    let k = kernel.to_string_lossy().into_owned();

    let mut running = Vec::new();
    let mut cli = Vec::new();
    for i in 0..ROUNDS {
        let name = format!("c{i}");
        let (r, c) = create_to_running(&lab, &name, &k);
        running.push(r);
        cli.push(c);
        lab.router_ok(&["vm", "delete", &name]).unwrap();
        lab.wait_no_qemu(1, &name).unwrap();
    }
    let small = migrations(&lab, &kernel, 64);
    let big = migrations(&lab, &kernel, 512);

    println!();
    println!("VMs on the lab: medians of {ROUNDS} runs (ms), 2 hosts, idle counter guest, TCG");
    let row = |name: &str, a: &str, b: &str, reference: &str| {
        println!("{name:<46} {a:>8} {b:>8}   {reference}");
    };
    row("metric", "64 MiB", "512 MiB", "reference (LAB.md)");
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
        "`router vm create` -> guest running",
        &median(running).to_string(),
        "-",
        "qemu start 100-300 ms",
    );
    row(
        "`router vm create` CLI returns",
        &median(cli).to_string(),
        "-",
        "-",
    );
}
