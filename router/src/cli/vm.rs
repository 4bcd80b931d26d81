//! `router vm ...`: create, start, stop, restart, delete, migrate, show.

use super::client::Api;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use clap::Subcommand;

use super::{print_or_json, Client, ClientError};
use crate::api::types::{
    CreateRequest, HostId, MigrateRequest, MigrationReport, OpReport, StopRequest, VmDetail, VmId,
    VmSpec,
};

/// A migration of a large guest over a slow link may take minutes.
const MIGRATE_TIMEOUT: Duration = Duration::from_secs(600);

#[derive(Debug, Subcommand)]
pub enum VmCmd {
    /// Define a VM and start it (on --host, or where there is room).
    Create {
        name: String,
        #[arg(long, default_value_t = 1)]
        vcpus: u32,
        /// Memory in MiB.
        #[arg(long)]
        mem: u64,
        /// Disk image on shared storage.
        #[arg(long)]
        disk: Option<PathBuf>,
        /// Kernel to boot directly.
        #[arg(long)]
        kernel: Option<PathBuf>,
        #[arg(long)]
        host: Option<HostId>,
        /// Failover order: higher restarts first.
        #[arg(long, default_value_t = 0)]
        priority: u8,
        #[arg(long)]
        json: bool,
    },
    Start {
        name: String,
        #[arg(long)]
        json: bool,
    },
    Stop {
        name: String,
        /// Do not wait for the guest to shut down.
        #[arg(long)]
        force: bool,
        #[arg(long)]
        json: bool,
    },
    Restart {
        name: String,
        #[arg(long)]
        json: bool,
    },
    Delete {
        name: String,
        #[arg(long)]
        json: bool,
    },
    /// Live-migrate to another host, showing progress.
    Migrate {
        name: String,
        #[arg(long)]
        to: HostId,
        #[arg(long)]
        json: bool,
    },
    Show {
        name: String,
        #[arg(long)]
        json: bool,
    },
}

fn op_text(r: &OpReport) -> String {
    format!("{} ({} ms)\n", r.message, r.elapsed_ms)
}

pub fn run(api: &Api, cmd: &VmCmd) -> Result<(), ClientError> {
    let c = Client::new(api, Some(Duration::from_secs(120)));
    match cmd {
        VmCmd::Create {
            name,
            vcpus,
            mem,
            disk,
            kernel,
            host,
            priority,
            json,
        } => {
            let name = VmId::new(name.as_str()).map_err(|e| ClientError::Api {
                status: 400,
                message: e.to_string(),
            })?;
            let spec = VmSpec {
                name,
                vcpus: *vcpus,
                mem_mib: *mem,
                disk: disk.clone().map(absolute),
                kernel: kernel.clone().map(absolute),
                priority: *priority,
            };
            let r: OpReport = c.post(
                "/v1/vms",
                &CreateRequest {
                    spec,
                    host: host.clone(),
                },
            )?;
            print_or_json(*json, &r, op_text)
        }
        VmCmd::Start { name, json } => {
            let r: OpReport = c.post(&format!("/v1/vms/{name}/start"), &serde_json::json!({}))?;
            print_or_json(*json, &r, op_text)
        }
        VmCmd::Stop { name, force, json } => {
            let r: OpReport = c.post(
                &format!("/v1/vms/{name}/stop"),
                &StopRequest { force: *force },
            )?;
            print_or_json(*json, &r, op_text)
        }
        VmCmd::Restart { name, json } => {
            let r: OpReport = c.post(&format!("/v1/vms/{name}/restart"), &serde_json::json!({}))?;
            print_or_json(*json, &r, op_text)
        }
        VmCmd::Delete { name, json } => {
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
                let pct = (100 * p.transferred_bytes.min(p.total_bytes))
                    .checked_div(p.total_bytes)
                    .unwrap_or(0);
                let line = format!(
                    "  {}: {} MiB sent, {} MiB remaining ({pct}%)",
                    p.status,
                    p.transferred_bytes >> 20,
                    p.remaining_bytes >> 20
                );
                if line != last {
                    eprintln!("{line}");
                    last = line;
                }
            }
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn absolute(p: PathBuf) -> PathBuf {
    if p.is_absolute() {
        p
    } else {
        std::env::current_dir().map(|d| d.join(&p)).unwrap_or(p)
    }
}
