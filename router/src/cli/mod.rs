//! The `router` command line: `serve` runs the daemon, everything else is a client
//! of the daemon's local API.

mod client;
mod console;
pub mod energy;
mod ha;
pub mod power;
pub mod simulate;
pub mod table;
mod vm;

use clap::{Parser, Subcommand};
pub use client::{Client, ClientError};

use crate::api::types::{Event, HostView, StatusView, VmView};

#[derive(Debug, Parser)]
#[command(
    name = "router",
    version,
    about = "wisp router: the controller of the world's smallest cloud"
)]
pub struct Cli {
    /// Address of the router's API.
    #[arg(
        long,
        global = true,
        env = "WISP_API",
        default_value = "127.0.0.1:7101"
    )]
    pub api: String,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the router daemon.
    Serve {
        #[arg(long, short)]
        config: std::path::PathBuf,
    },
    /// Check a router.toml and the secret and password files it names, without
    /// starting anything: "ok" and exit 0, or the first problem and exit 1.
    CheckConfig {
        /// The router.toml to check.
        file: std::path::PathBuf,
    },
    /// List servers with live metrics and link state.
    Hosts {
        #[arg(long)]
        json: bool,
    },
    /// List VMs on every server.
    Vms {
        #[arg(long)]
        json: bool,
    },
    /// One-paragraph summary of the cluster.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// VM lifecycle and live migration.
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// Per-VM availability against the 99.95 % target.
    Sla {
        #[arg(long)]
        json: bool,
    },
    /// Take a host out of the pool (live-migrating its VMs away) or return it.
    Maintenance {
        mode: ha::OnOff,
        host: String,
        #[arg(long)]
        json: bool,
    },
    /// Chassis power through the BMCs: status, on, off, soft, cycle, reset.
    #[command(subcommand)]
    Power(power::PowerCmd),
    /// Wake a host by its wake methods (WoL, then IPMI by default), each verified by
    /// the BMC seeing power on and then its genie heard.
    Wake {
        host: String,
        /// Override the router's wake_boot_ms for this wake.
        #[arg(long)]
        deadline_ms: Option<u64>,
        #[arg(long)]
        json: bool,
    },
    /// Put a host to sleep: suspend-to-RAM through its genie, or IPMI soft-off.
    Suspend {
        host: String,
        /// IPMI soft-off instead of suspend-to-RAM.
        #[arg(long)]
        off: bool,
        /// Even with VMs running there.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    /// Energy-saving mode: on, off, status (watts, kWh saved, last decision).
    #[command(subcommand)]
    Energy(energy::EnergyCmd),
    /// Replay a day of CPU traces through the planner (no daemon needed); SVG plot.
    Simulate(simulate::SimulateArgs),
    /// Recent events (detections, fences, power, migrations).
    Events {
        #[arg(long, default_value_t = 50)]
        limit: usize,
        #[arg(long)]
        json: bool,
    },
}

/// Runs a client subcommand, printing to stdout. `Serve` is handled by `main`.
pub fn run(cli: &Cli) -> Result<(), ClientError> {
    let c = Client::new(&cli.api, None);
    match &cli.command {
        Cmd::Serve { .. } => unreachable!("serve is handled by main"),
        Cmd::CheckConfig { .. } => unreachable!("check-config is handled by main"),
        Cmd::Hosts { json } => {
            let hosts: Vec<HostView> = c.get("/v1/hosts")?;
            print_or_json(*json, &hosts, |h| hosts_table(h))
        }
        Cmd::Vms { json } => {
            let vms: Vec<VmView> = c.get("/v1/vms")?;
            print_or_json(*json, &vms, |v| vms_table(v))
        }
        Cmd::Status { json } => {
            let s: StatusView = c.get("/v1/status")?;
            print_or_json(*json, &s, |s| {
                format!(
                    "wisp router {}, up {} s\nhosts: {} of {} up\nvms:   {} of {} running\nenergy mode: {}\nreports: {} accepted, {} dropped as stale\n",
                    s.version,
                    s.uptime_s,
                    s.hosts_up,
                    s.hosts_total,
                    s.vms_running,
                    s.vms_total,
                    if s.energy_mode { "on" } else { "off" },
                    s.reports_accepted,
                    s.reports_dropped
                ) + &match (s.role.as_str(), &s.leader) {
                    ("single", _) => String::new(),
                    (role, Some(l)) => format!("role: {role} (leader {l})\n"),
                    (role, None) => format!("role: {role} (no leader known)\n"),
                }
            })
        }
        Cmd::Vm(cmd) => vm::run(&cli.api, cmd),
        Cmd::Power(cmd) => power::run(&cli.api, cmd),
        Cmd::Wake {
            host,
            deadline_ms,
            json,
        } => power::wake(&cli.api, host, *deadline_ms, *json),
        Cmd::Suspend {
            host,
            off,
            force,
            json,
        } => power::suspend(&cli.api, host, *off, *force, *json),
        Cmd::Energy(cmd) => energy::run(&cli.api, cmd),
        Cmd::Simulate(args) => {
            // Runs here, not in the daemon. The CLI's one error type is the client's;
            // the message (with its causes) is what the user sees.
            let (out, text) = simulate::run(args).map_err(|e| ClientError::Api {
                status: 0,
                message: wisp_common::error::chain(&e),
            })?;
            print_or_json(args.json, &out, |_| text.clone())
        }
        Cmd::Sla { json } => ha::sla(&cli.api, *json),
        Cmd::Maintenance { mode, host, json } => ha::maintenance(&cli.api, *mode, host, *json),
        Cmd::Events { limit, json } => {
            let evs: Vec<Event> = c.get(&format!("/v1/events?limit={limit}"))?;
            print_or_json(*json, &evs, |e| events_table(e))
        }
    }
}

pub(crate) fn print_or_json<T: serde::Serialize>(
    json: bool,
    v: &T,
    text: impl Fn(&T) -> String,
) -> Result<(), ClientError> {
    if json {
        println!(
            "{}",
            serde_json::to_string_pretty(v).expect("views serialise")
        );
    } else {
        print!("{}", text(v));
    }
    Ok(())
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "-".into())
}

pub fn hosts_table(hosts: &[HostView]) -> String {
    let rows: Vec<Vec<String>> = hosts
        .iter()
        .map(|h| {
            vec![
                h.name.to_string(),
                match h.quarantine {
                    Some(_) => format!("{},quarantined", h.state),
                    None => h.state.as_str().into(),
                },
                h.power.as_str().into(),
                h.address.clone(),
                opt(h.cpu_percent, |c| format!("{c:.1}%")),
                match (h.mem_used_bytes, h.mem_total_bytes) {
                    (Some(u), Some(t)) => format!("{}/{}", table::bytes(u), table::bytes(t)),
                    _ => "-".into(),
                },
                opt(h.load_avg, |l| {
                    format!("{:.2} {:.2} {:.2}", l[0], l[1], l[2])
                }),
                h.vms.to_string(),
                match (&h.accel, h.cpu_model_ok) {
                    (Some(a), Some(false)) => format!("{a},no-cpu-model"),
                    (Some(a), _) => a.clone(),
                    (None, _) => "-".into(),
                },
                if h.sleep.is_empty() {
                    "-".into()
                } else {
                    h.sleep.join("+")
                },
                opt(h.last_report_age_ms, |a| format!("{a} ms")),
            ]
        })
        .collect();
    table::render(
        &[
            "HOST",
            "STATE",
            "POWER",
            "ADDRESS",
            "CPU",
            "MEM",
            "LOAD",
            "VMS",
            "ACCEL",
            "SLEEP",
            "LAST REPORT",
        ],
        &rows,
    )
}

pub fn vms_table(vms: &[VmView]) -> String {
    let rows: Vec<Vec<String>> = vms
        .iter()
        .map(|v| {
            vec![
                v.name.to_string(),
                opt(v.host.as_ref(), |h| h.to_string()),
                v.state.to_string(),
                opt(v.desired, |d| d.to_string()),
                v.vcpus.to_string(),
                format!("{} MiB", v.mem_mib),
                opt(v.cpu_time_ms, |t| format!("{:.1} s", t as f64 / 1000.0)),
                opt(v.pid, |p| p.to_string()),
            ]
        })
        .collect();
    table::render(
        &[
            "VM", "HOST", "STATE", "DESIRED", "VCPUS", "MEMORY", "CPU TIME", "PID",
        ],
        &rows,
    )
}

pub fn events_table(evs: &[Event]) -> String {
    let rows: Vec<Vec<String>> = evs
        .iter()
        .map(|e| {
            vec![
                format_ms(e.at_ms),
                e.kind.as_str().into(),
                opt(e.host.as_ref(), |h| h.to_string()),
                opt(e.vm.as_ref(), |v| v.to_string()),
                e.message.clone(),
            ]
        })
        .collect();
    table::render(&["TIME (UTC)", "EVENT", "HOST", "VM", "MESSAGE"], &rows)
}

/// `HH:MM:SS.mmm` of a Unix-ms timestamp (UTC): events are read within a day.
pub(crate) fn format_ms(ms: u64) -> String {
    let s = ms / 1000;
    format!(
        "{:02}:{:02}:{:02}.{:03}",
        (s / 3600) % 24,
        (s / 60) % 60,
        s % 60,
        ms % 1000
    )
}
