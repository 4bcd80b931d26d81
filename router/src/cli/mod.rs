//! The `router` command line: `serve` runs the daemon, everything else is a client
//! of the daemon's local API.

mod client;
mod console;
pub mod docs;
pub mod energy;
mod events;
mod ha;
pub mod init;
mod logging;
pub mod power;
pub mod simulate;
pub mod table;
pub mod time;
pub mod transport;
mod usage;
mod vm;
pub mod wait;

use clap::{Parser, Subcommand};
pub use client::{Api, Client, ClientError};
pub use events::events_table;
pub use logging::{init_logging, LogFormat};
pub use usage::{command, parse, Parsed};

use crate::api::types::{HostView, StatusView, VmView};

#[derive(Debug, Parser)]
#[command(
    name = "router",
    version,
    about = "wisp router: the controller of the world's smallest cloud"
)]
pub struct Cli {
    /// The router's API: `unix:/path` (or a path) for the local socket, `host:port`
    /// for TCP on loopback, `https://host:port` for TLS; TCP needs --token-file.
    #[arg(
        long,
        global = true,
        env = "WISP_API",
        default_value = DEFAULT_API
    )]
    pub api: String,
    /// File (mode 0600) holding the bearer token for a TCP API; never the token itself.
    #[arg(long, global = true, env = "WISP_TOKEN_FILE")]
    pub token_file: Option<std::path::PathBuf>,
    /// PEM certificate (or CA) to trust for an https API.
    #[arg(long, global = true, env = "WISP_CA_FILE")]
    pub ca_file: Option<std::path::PathBuf>,
    #[command(subcommand)]
    pub command: Cmd,
}

/// The API address clients use without `--api` or `WISP_API`.
pub const DEFAULT_API: &str = "unix:/run/wisp/router.sock";

/// Where `router serve` and `router check-config` look without `--config`.
pub const DEFAULT_CONFIG: &str = "/etc/wisp/router.toml";

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Run the router daemon.
    Serve {
        /// The router's config file.
        #[arg(long, short, default_value = DEFAULT_CONFIG)]
        config: std::path::PathBuf,
        /// Log lines as text or as JSON objects (for a log collector).
        #[arg(long, value_enum, env = "WISP_LOG_FORMAT", default_value_t = LogFormat::Text)]
        log_format: LogFormat,
    },
    /// Check a router.toml and the secret and password files it names, without
    /// starting anything: "ok" and exit 0, or the first problem and exit 1.
    CheckConfig {
        /// The router.toml to check.
        #[arg(default_value = DEFAULT_CONFIG)]
        file: std::path::PathBuf,
    },
    /// List servers with live metrics and link state.
    Hosts {
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// List VMs on every server.
    Vms {
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// One-paragraph summary of the cluster.
    Status {
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// VM lifecycle and live migration.
    #[command(subcommand)]
    Vm(vm::VmCmd),
    /// Per-VM availability against the 99.95 % target.
    Sla {
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Take a host out of the pool (live-migrating its VMs away) or return it.
    Maintenance {
        /// `on` evacuates the host and keeps it out of the pool; `off` returns it.
        mode: ha::OnOff,
        /// The host, by its name in router.toml.
        host: String,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Chassis power through the BMCs: status, on, off, soft, cycle, reset.
    #[command(subcommand)]
    Power(power::PowerCmd),
    /// Wake a host by its wake methods (WoL, then IPMI by default), each verified by
    /// the BMC seeing power on and then its genie heard.
    Wake {
        /// The host to wake, by its name in router.toml.
        host: String,
        /// Override the router's wake_boot_ms for this wake.
        #[arg(long)]
        deadline_ms: Option<u64>,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Put a host to sleep: suspend-to-RAM through its genie, or IPMI soft-off.
    Suspend {
        /// The host to put to sleep, by its name in router.toml.
        host: String,
        /// IPMI soft-off instead of suspend-to-RAM.
        #[arg(long)]
        off: bool,
        /// Even with VMs running there.
        #[arg(long)]
        force: bool,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Energy-saving mode: on, off, status (watts, kWh saved, last decision).
    #[command(subcommand)]
    Energy(energy::EnergyCmd),
    /// Write router.toml, the cluster secret and the BMC password files, and print
    /// every server's genie.toml (asks for what flags leave out, on a terminal).
    Init(init::InitArgs),
    /// Write the man pages (router.1, router-vm.1, ...) into a directory.
    Man {
        /// The directory (created if missing).
        #[arg(long, value_name = "DIR")]
        out: std::path::PathBuf,
    },
    /// Print the shell completion script for bash, zsh or fish.
    Completions {
        /// The shell.
        #[arg(value_enum)]
        shell: docs::Shell,
    },
    /// Replay a day of CPU traces through the planner (no daemon needed); SVG plot.
    Simulate(simulate::SimulateArgs),
    /// Recent events (detections, fences, power, migrations), filtered, or followed.
    Events(events::EventsArgs),
}

/// Runs a client subcommand, printing to stdout. `Serve` is handled by `main`.
pub fn run(cli: &Cli) -> Result<(), ClientError> {
    let api = Api::new(&cli.api, cli.token_file.as_deref(), cli.ca_file.clone()).map_err(|e| {
        ClientError::Api {
            status: 0,
            message: format!("--token-file: {}", wisp_common::error::chain(&e)),
        }
    })?;
    let c = Client::new(&api, None);
    match &cli.command {
        Cmd::Serve { .. } => unreachable!("serve is handled by main"),
        Cmd::CheckConfig { .. } => unreachable!("check-config is handled by main"),
        Cmd::Init(args) => init::run(args).map_err(|e| ClientError::Api {
            status: 0,
            message: wisp_common::error::chain(&e),
        }),
        Cmd::Man { out } => {
            let n = docs::man(out).map_err(|e| ClientError::Api {
                status: 0,
                message: wisp_common::error::chain(&e),
            })?;
            println!("{n} man pages written to {}", out.display());
            Ok(())
        }
        Cmd::Completions { shell } => {
            docs::completions(*shell);
            Ok(())
        }
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
        Cmd::Vm(cmd) => vm::run(&api, cmd),
        Cmd::Power(cmd) => power::run(&api, cmd),
        Cmd::Wake {
            host,
            deadline_ms,
            json,
        } => power::wake(&api, host, *deadline_ms, *json),
        Cmd::Suspend {
            host,
            off,
            force,
            json,
        } => power::suspend(&api, host, *off, *force, *json),
        Cmd::Energy(cmd) => energy::run(&api, cmd),
        Cmd::Simulate(args) => {
            // Runs here, not in the daemon. The CLI's one error type is the client's;
            // the message (with its causes) is what the user sees.
            let (out, text) = simulate::run(args).map_err(|e| ClientError::Api {
                status: 0,
                message: wisp_common::error::chain(&e),
            })?;
            print_or_json(args.json, &out, |_| text.clone())
        }
        Cmd::Sla { json } => ha::sla(&api, *json),
        Cmd::Maintenance { mode, host, json } => ha::maintenance(&api, *mode, host, *json),
        Cmd::Events(args) => events::run(&api, args),
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
