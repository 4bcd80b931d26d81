//! `router vm ...`: create, start, stop, restart, delete, migrate, show.

use super::client::Api;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;

use super::wait::Waiting;
use super::{print_or_json, Client, ClientError};
use wisp_common::proto::MigrationProgress;

use crate::api::types::{
    CreateRequest, HostId, MigrateRequest, MigrationReport, OpReport, StopRequest, VmDetail, VmId,
    VmSpec,
};
use crate::vms::console::ConsoleLog;
use crate::vms::NicRequest;
use wisp_common::DiskFormat;

/// A migration of a large guest over a slow link may take minutes.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Define a VM and start it (on --host, or where there is room).
    Create {
        /// The VM's name.
        name: String,
        /// Virtual CPUs.
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory in MiB.
        #[arg(long)]
        mem: u64,
        /// Disk image on shared storage.
        #[arg(long)]
        disk: Option<PathBuf>,
        /// Disk format: raw or qcow2 (default: read from the image's header).
        #[arg(long, value_parser = parse_format)]
        disk_format: Option<DiskFormat>,
        /// Kernel to boot directly.
        #[arg(long)]
        kernel: Option<PathBuf>,
        /// Initramfs for --kernel.
        #[arg(long, requires = "kernel")]
        initrd: Option<PathBuf>,
        /// Kernel command line for --kernel.
        #[arg(long, requires = "kernel")]
        append: Option<String>,
        /// A virtio NIC on a network named in the hosts' genie.toml: NET or
        /// NET,mac=02:xx:xx:xx:xx:xx (generated when not given). Repeatable.
        #[arg(long = "nic", value_parser = parse_nic)]
        nics: Vec<NicRequest>,
        /// The host to start it on (default: one with room).
        #[arg(long)]
        host: Option<HostId>,
        /// Failover order: higher restarts first.
        #[arg(long, default_value_t = 0)]
        priority: u8,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Start a stopped VM where it was placed (or where there is room).
    Start {
        /// The VM's name.
        name: String,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop a VM (ACPI shutdown, then kill after 30 s) and keep it stopped.
    Stop {
        /// The VM's name.
        name: String,
        /// Do not wait for the guest to shut down.
        #[arg(long)]
        force: bool,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop a VM, then start it again.
    Restart {
        /// The VM's name.
        name: String,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Stop a VM and forget it (its disk is left alone).
    Delete {
        /// The VM's name.
        name: String,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Live-migrate to another host, showing progress.
    Migrate {
        /// The VM's name.
        name: String,
        /// The destination host.
        #[arg(long)]
        to: HostId,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// A VM's state, spec, placement, operation in progress and recent events.
    Show {
        /// The VM's name.
        name: String,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// The VM's serial console, interactive (Ctrl-] leaves); `--log` prints the tail of
    /// its log instead (kept by the genie of its host).
    Console {
        /// The VM's name.
        name: String,
        /// Print the console log's tail.
        #[arg(long)]
        log: bool,
        /// How much of the tail, in bytes (at most 256 KiB).
        #[arg(long, default_value_t = 65536)]
        bytes: u64,
        /// Print `{vm, host, text}` as JSON.
        #[arg(long)]
        json: bool,
    },
}

/// What a stop waits for: the guest's own shutdown, bounded by the router's grace.
fn stop_wait(name: &str, force: bool) -> String {
    if force {
        format!("stopping {name}: waiting for QEMU to exit")
    } else {
        format!("stopping {name}: waiting up to {} s for the guest to shut down (ACPI), then killing it", crate::vms::GRACEFUL_STOP_MS / 1000)
    }
}

/// The router's message says what was done and how long it took.
fn op_text(r: &OpReport) -> String {
    format!("{}\n", r.message)
}

pub fn run(api: &Api, cmd: &VmCmd) -> Result<(), ClientError> {
    let c = Client::new(api, Some(Duration::from_secs(120)));
    match cmd {
        VmCmd::Create {
            name,
            vcpus,
            mem,
            disk,
            disk_format,
            kernel,
            initrd,
            append,
            nics,
            host,
            priority,
            json,
        } => {
            let name = VmId::new(name.as_str()).map_err(|e| ClientError::Api {
                status: 400,
                message: e.to_string(),
            })?;
            let mut spec = VmSpec::new(name, *vcpus, *mem);
            spec.disk = disk.clone().map(absolute);
            spec.disk_format = *disk_format;
            spec.kernel = kernel.clone().map(absolute);
            spec.initrd = initrd.clone().map(absolute);
            spec.append = append.clone();
            spec.priority = *priority;
            let r: OpReport = c.post(
                "/v1/vms",
                &CreateRequest {
                    spec,
                    host: host.clone(),
                    nics: nics.clone(),
                },
            )?;
            print_or_json(*json, &r, op_text)
        }
        VmCmd::Start { name, json } => {
            let r: OpReport = c.post(&format!("/v1/vms/{name}/start"), &serde_json::json!({}))?;
            print_or_json(*json, &r, op_text)
        }
        VmCmd::Stop { name, force, json } => {
            let _w = Waiting::start(stop_wait(name, *force), *json);
            let r: OpReport = c.post(
                &format!("/v1/vms/{name}/stop"),
                &StopRequest { force: *force },
            )?;
            print_or_json(*json, &r, op_text)
        }
        VmCmd::Restart { name, json } => {
            let _w = Waiting::start(
                format!("{}, then starting it", stop_wait(name, false)),
                *json,
            );
            let r: OpReport = c.post(&format!("/v1/vms/{name}/restart"), &serde_json::json!({}))?;
            print_or_json(*json, &r, op_text)
        }
        VmCmd::Delete { name, json } => {
            let _w = Waiting::start(stop_wait(name, true), *json);
            let r: OpReport = c.delete(&format!("/v1/vms/{name}"))?;
            print_or_json(*json, &r, op_text)
        }
        VmCmd::Show { name, json } => {
            let d: VmDetail = c.get(&format!("/v1/vms/{name}"))?;
            print_or_json(*json, &d, |d| {
                let mut s = super::vms_table(&d.views);
                if let Some(r) = &d.record {
                    s.push_str(&format!(
                        "spec: {} vCPU, {} MiB, priority {}, kernel {}, disk {}\nplacement: {} (epoch {}), desired {}\n",
                        r.spec.vcpus,
                        r.spec.mem_mib,
                        r.spec.priority,
                        r.spec.kernel.as_ref().map(|p| p.display().to_string()).unwrap_or("-".into()),
                        r.spec.disk.as_ref().map(|p| p.display().to_string()).unwrap_or("-".into()),
                        r.host.as_ref().map(|h| h.to_string()).unwrap_or("-".into()),
                        r.epoch,
                        r.desired
                    ));
                }
                if let Some(r) = &d.record {
                    for (i, n) in r.spec.nics.iter().enumerate() {
                        s.push_str(&format!("nic{i}: network {}, mac {}\n", n.network, n.mac));
                    }
                    if let Some(cpu) = &r.spec.cpu_model {
                        s.push_str(&format!("cpu model: {cpu}\n"));
                    }
                }
                if let Some(op) = &d.op {
                    s.push_str(&format!("in progress: {op}\n"));
                }
                if !d.events.is_empty() {
                    s.push('\n');
                    s.push_str(&super::events_table(&d.events));
                }
                s
            })
        }
        VmCmd::Console {
            name,
            log,
            bytes,
            json,
        } => {
            if !*log {
                return super::console::attach(api, name);
            }
            let r: ConsoleLog = c.get(&format!("/v1/vms/{name}/console?bytes={bytes}"))?;
            print_or_json(*json, &r, |r| r.text.clone())
        }
        VmCmd::Migrate { name, to, json } => {
            let done = Arc::new(AtomicBool::new(false));
            let watcher = (!*json).then(|| {
                let (api, name, done) = (api.to_owned(), name.clone(), done.clone());
                std::thread::spawn(move || show_progress(&api, &name, &done))
            });
            let c = Client::new(api, Some(MIGRATE_TIMEOUT));
            let r: Result<MigrationReport, _> = c.post(
                &format!("/v1/vms/{name}/migrate"),
                &MigrateRequest { to: to.clone() },
            );
            done.store(true, Ordering::Relaxed);
            if let Some(w) = watcher {
                let _ = w.join();
            }
            let r = r?;
            print_or_json(*json, &r, |r| {
                format!(
                    "{} migrated {} -> {}: total {} ms, downtime {} ms (migrate command sent after {} ms, placement recorded after {} ms)\n",
                    r.vm, r.from, r.to, r.total_ms, r.downtime_ms, r.to_migrate_command_ms, r.elapsed_ms
                )
            })
        }
    }
}

/// Prints migration progress lines to stderr until `done`.
fn show_progress(api: &Api, name: &str, done: &AtomicBool) {
    let c = Client::new(api, Some(Duration::from_secs(2)));
    let mut last = String::new();
    while !done.load(Ordering::Relaxed) {
        if let Ok(d) = c.get::<VmDetail>(&format!("/v1/vms/{name}")) {
            if let Some(p) = d.migration {
                let line = progress_line(&p);
                if line != last {
                    eprintln!("{line}");
                    last = line;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn parse_format(s: &str) -> Result<DiskFormat, String> {
    s.parse()
}

/// `NET` or `NET,mac=MAC`.
fn parse_nic(s: &str) -> Result<NicRequest, String> {
    let mut parts = s.split(',');
    let network = parts.next().unwrap_or_default().to_owned();
    if network.is_empty() || network.contains('=') {
        return Err(format!("{s:?}: expected NET or NET,mac=MAC"));
    }
    let mut mac = None;
    for p in parts {
        match p.split_once('=') {
            Some(("mac", m)) => mac = Some(m.parse().map_err(|e| format!("{e}"))?),
            _ => return Err(format!("{s:?}: unknown NIC option {p:?} (only mac=...)")),
        }
    }
    Ok(NicRequest { network, mac })
}

/// One progress line. The share done is `total - remaining`: QEMU's `transferred`
/// leaves out zero pages (sent as a flag, not as bytes), so a mostly empty guest
/// would sit at 0 % until the end.
fn progress_line(p: &MigrationProgress) -> String {
    let done = p.total_bytes.saturating_sub(p.remaining_bytes);
    let pct = (100 * done).checked_div(p.total_bytes).unwrap_or(0);
    format!(
        "  {}: {pct}% of {} MiB done ({} MiB sent, {} MiB remaining)",
        p.status,
        p.total_bytes >> 20,
        p.transferred_bytes >> 20,
        p.remaining_bytes >> 20
    )
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A guest of zero pages: little is sent, yet most is done.
    #[test]
    fn progress_counts_zero_pages_as_done() {
        let p = MigrationProgress {
            status: "active".into(),
            transferred_bytes: 16 << 20,
            remaining_bytes: 512 << 20,
            total_bytes: 2048 << 20,
        };
        let l = progress_line(&p);
        assert!(l.contains("75% of 2048 MiB done"), "{l}");
        assert!(l.contains("16 MiB sent, 512 MiB remaining"), "{l}");
        let empty = MigrationProgress {
            status: "setup".into(),
            transferred_bytes: 0,
            remaining_bytes: 0,
            total_bytes: 0,
        };
        assert!(progress_line(&empty).contains("0% of 0 MiB"));
    }
}
