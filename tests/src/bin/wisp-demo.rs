//! `wisp-demo`: a 3-host lab with the router, two tiny VMs and energy-saving mode on
//! short timers, so a user sees within a minute or two what the product is for: the
//! VMs packed by live migration, the emptied hosts asleep (frozen, their BMCs saying
//! off), then a new VM that needs room and a host woken for it by Wake-on-LAN. Prints
//! `router hosts`, `router vms` and `router energy status` every few seconds and tears
//! everything down on Ctrl-C or SIGTERM.
//!
//! The timers here are the demo's: production defaults (router.toml's `[energy]`:
//! a planner round every 30 s, a woken host stays up 15 min) are slower on purpose.
//!
//! It builds nothing: run `cargo build --workspace --bins` first (the lab says so if a
//! binary is missing). Needs root and the packages of ARCHITECTURE.md, Debian packages.

use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use wisp_tests::lab::{Lab, LabSpec};

const REFRESH: Duration = Duration::from_secs(3);

/// Where the demo serves the dashboard on this machine (`http://127.0.0.1:7180/`).
const DASHBOARD_PORT: u16 = 7180;

/// A round every 5 s; a VM may move again after 20 s; a host that changed power state
/// stays so at least 20 s; the planner wakes a host 5 s ahead.
const ENERGY: &str = "[energy]
enabled = false
interval_s = 5
min_awake_s = 20
min_vm_move_interval_s = 20
wake_latency_s = 5
";

/// After a host has slept this long, the demo creates a VM that needs its room.
const SLEEP_BEFORE_DEMAND: Duration = Duration::from_secs(30);

fn run(lab: &Lab, args: &[&str]) {
    println!("$ router {}", args.join(" "));
    match lab.router_cli(args) {
        Ok(out) => {
            print!("{}", String::from_utf8_lossy(&out.stdout));
            eprint!("{}", String::from_utf8_lossy(&out.stderr));
        }
        Err(e) => println!("error: {:#}", anyhow::Error::from(e)),
    }
}

fn show(lab: &Lab) {
    run(lab, &["hosts"]);
    run(lab, &["vms"]);
    run(lab, &["energy", "status"]);
    println!();
}

/// A host the router says is asleep.
fn someone_asleep(lab: &Lab) -> bool {
    lab.hosts_json()
        .map(|hs| hs.iter().any(|h| h.state == "standby"))
        .unwrap_or(false)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    println!("wisp-demo: starting a 3-host lab (namespaces, ipmi_sim BMCs, genies, router)...");
    let mut lab = Lab::start(LabSpec {
        router_extra_toml: ENERGY.to_owned(),
        ..LabSpec::default()
    })?;
    // 4 vCPUs and 256 MiB per host: every lab host sees the whole machine otherwise,
    // and nothing would ever need packing.
    lab.set_host_capacity(4, 256)?;
    println!(
        "wisp-demo: lab in {} (core namespace {})",
        lab.dir().display(),
        lab.core_ns()
    );
    // The VMs are created through the router, as a user would: it persists them,
    // places them, and keeps them running (failover included).
    lab.wait_all_up()?;
    let kernel = lab.guest_elf().to_string_lossy().into_owned();
    for (host, vm) in [("h1", "vm1"), ("h2", "vm2")] {
        run(
            &lab,
            &[
                "vm", "create", vm, "--mem", "64", "--kernel", &kernel, "--host", host,
            ],
        );
    }
    run(&lab, &["energy", "on"]);
    // The router's API (and its dashboard) listens on loopback inside the lab's core
    // namespace; a forward makes it a page this machine's browser can open.
    let api = wisp_tests::lab::configs::API_ADDR.parse()?;
    let _dashboard = match wisp_tests::browser::Forward::start(&lab.core_ns(), api, DASHBOARD_PORT)
    {
        Ok(f) => {
            println!(
                "wisp-demo: dashboard: http://{}/ (log in with the admin token in {})",
                f.local(),
                lab.admin_token_file().display()
            );
            Some(f)
        }
        Err(e) => {
            println!("wisp-demo: no dashboard: {:#}", anyhow::Error::from(e));
            None
        }
    };
    println!("wisp-demo: energy-saving mode is on: watch the VMs packed and hosts fall asleep");
    println!("wisp-demo: Ctrl-C to stop and tear everything down\n");
    let mut asleep_since: Option<Instant> = None;
    let mut demanded = false;
    loop {
        show(&lab);
        if !demanded {
            if someone_asleep(&lab) {
                let since = *asleep_since.get_or_insert_with(Instant::now);
                if since.elapsed() >= SLEEP_BEFORE_DEMAND {
                    // 192 MiB more leaves the awake hosts (2 x 256 MiB, 128 used) short
                    // of their N+1 reserve (a host's 256 MiB free): the planner wakes a
                    // sleeping host ahead of need.
                    println!(
                        "wisp-demo: demand rises: a 192 MiB VM; a sleeping host will be woken"
                    );
                    run(
                        &lab,
                        &["vm", "create", "big", "--mem", "192", "--kernel", &kernel],
                    );
                    demanded = true;
                }
            } else {
                asleep_since = None;
            }
        }
        tokio::select! {
            _ = tokio::time::sleep(REFRESH) => {}
            _ = int.recv() => break,
            _ = term.recv() => break,
        }
    }
    println!("wisp-demo: tearing down...");
    drop(lab);
    println!("wisp-demo: done");
    Ok(())
}
