//! `router sla` and `router maintenance on|off HOST`.

use super::client::Api;
use std::time::Duration;

use clap::ValueEnum;

use super::wait::Waiting;
use super::{print_or_json, table, Client, ClientError};
use crate::api::types::{MaintenanceReport, MaintenanceRequest, SlaReport};

#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum OnOff {
    On,
    Off,
}

pub fn sla(api: &Api, json: bool) -> Result<(), ClientError> {
    let r: SlaReport = Client::new(api, None).get("/v1/sla")?;
    print_or_json(json, &r, |r| {
        let rows: Vec<Vec<String>> = r
            .vms
            .iter()
            .map(|v| {
                vec![
                    v.vm.to_string(),
                    format!("{:.4}%", v.availability_30d * 100.0),
                    format!("{:.1}", v.downtime_30d_s + 0.0),
                    v.incidents_30d.to_string(),
                    format!("{:.4}%", v.availability_total * 100.0),
                    format!("{:.1}", v.downtime_total_s + 0.0),
                    if v.down_now {
                        "down".into()
                    } else {
                        "up".into()
                    },
                    if v.meets_target {
                        "yes".into()
                    } else {
                        "NO".into()
                    },
                ]
            })
            .collect();
        let mut s = table::render(
            &[
                "VM",
                "AVAIL 30D",
                "DOWN 30D (s)",
                "INCIDENTS",
                "AVAIL TOTAL",
                "DOWN TOTAL (s)",
                "NOW",
                "MEETS 99.95%",
            ],
            &rows,
        );
        s.push_str(&format!(
            "\ncluster (30 days): mean availability {:.4}% against the {:.2}% target, {} of VM downtime in {}\n",
            r.cluster_availability_30d * 100.0,
            r.target * 100.0,
            table::secs(r.cluster_downtime_30d_s),
            table::count(r.cluster_incidents_30d as u64, "incident", "incidents")
        ));
        s
    })
}

pub fn maintenance(api: &Api, mode: OnOff, host: &str, json: bool) -> Result<(), ClientError> {
    // Evacuating a host is a series of live migrations.
    let c = Client::new(api, Some(Duration::from_secs(1800)));
    let _w = Waiting::start(
        match mode {
            OnOff::On => format!("maintenance on {host}: live-migrating its VMs away"),
            OnOff::Off => format!("maintenance off {host}: returning it to the pool"),
        },
        json,
    );
    let r: MaintenanceReport = c.post(
        &format!("/v1/hosts/{host}/maintenance"),
        &MaintenanceRequest {
            on: matches!(mode, OnOff::On),
        },
    )?;
    print_or_json(json, &r, |r| {
        let mut s = String::new();
        for m in &r.migrated {
            s.push_str(&format!(
                "  {} -> {}: total {} ms, downtime {} ms\n",
                m.vm, m.to, m.total_ms, m.downtime_ms
            ));
        }
        for (vm, why) in &r.failed {
            s.push_str(&format!("  {vm}: NOT moved: {why}\n"));
        }
        s.push_str(&r.message);
        s.push('\n');
        s
    })
}
