//! `wisp-demo`: a 3-host lab with the router and two tiny VMs; prints `router hosts`
//! and `router vms` every few seconds and tears everything down on Ctrl-C or SIGTERM.
//!
//! It builds nothing: run `cargo build --workspace --bins` first (the lab says so if a
//! binary is missing). Needs root and the packages of ARCHITECTURE.md, Debian packages.

use std::time::Duration;

use anyhow::{Context, Result};
use tokio::signal::unix::{signal, SignalKind};
use wisp_tests::lab::{Lab, LabSpec};

const REFRESH: Duration = Duration::from_secs(3);

fn show(lab: &Lab) {
    for args in [["hosts"], ["vms"]] {
        println!("$ router {}", args.join(" "));
        match lab.router_cli(&args) {
            Ok(out) => {
                print!("{}", String::from_utf8_lossy(&out.stdout));
                eprint!("{}", String::from_utf8_lossy(&out.stderr));
            }
            Err(e) => println!("error: {:#}", anyhow::Error::from(e)),
        }
    }
    println!();
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<()> {
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;

    println!("wisp-demo: starting a 3-host lab (namespaces, ipmi_sim BMCs, genies, router)...");
    let lab = Lab::start(LabSpec::default())?;
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
        let args = [
            "vm", "create", vm, "--mem", "64", "--kernel", &kernel, "--host", host,
        ];
        println!("$ router {}", args.join(" "));
        let out = lab
            .router_cli(&args)
            .with_context(|| format!("creating {vm} on {host}"))?;
        print!("{}", String::from_utf8_lossy(&out.stdout));
        eprint!("{}", String::from_utf8_lossy(&out.stderr));
    }
    println!("wisp-demo: Ctrl-C to stop and tear everything down\n");
    loop {
        show(&lab);
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
