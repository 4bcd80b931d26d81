//! `router energy on|off|status`.

use super::client::Api;
use clap::Subcommand;

use super::{print_or_json, table, Client, ClientError};
use crate::api::types::{EnergyRequest, EnergyStatus, HostId};

#[derive(Debug, Subcommand)]
pub enum EnergyCmd {
    /// Turn energy-saving mode on: pack VMs, put emptied hosts to sleep, wake ahead of need.
    On {
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Turn it off (sleeping hosts stay asleep until needed or woken).
    Off {
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Hosts awake and asleep, watts now, kWh saved, the planner's last decision.
    Status {
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
}

pub fn run(api: &Api, cmd: &EnergyCmd) -> Result<(), ClientError> {
    let c = Client::new(api, None);
    let (st, json): (EnergyStatus, bool) = match cmd {
        EnergyCmd::On { json } => (c.post("/v1/energy", &EnergyRequest { on: true })?, *json),
        EnergyCmd::Off { json } => (c.post("/v1/energy", &EnergyRequest { on: false })?, *json),
        EnergyCmd::Status { json } => (c.get("/v1/energy")?, *json),
    };
    print_or_json(json, &st, status_text)
}

pub fn status_text(s: &EnergyStatus) -> String {
    let mut out = format!(
        "energy mode: {} (planner every {} s)\n",
        if s.enabled { "on" } else { "off" },
        s.interval_s
    );
    let rows: Vec<Vec<String>> = s
        .hosts
        .iter()
        .map(|h| {
            vec![
                h.host.to_string(),
                h.state.as_str().into(),
                h.power.as_str().into(),
                h.vms.to_string(),
                h.watts
                    .map(|w| format!("{w:.0} W"))
                    .unwrap_or_else(|| "-".into()),
                h.depth.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    out.push_str(&table::render(
        &["HOST", "STATE", "POWER", "VMS", "WATTS", "DEPTH"],
        &rows,
    ));
    for h in s.hosts.iter().filter(|h| h.power.is_asleep()) {
        if let Some(why) = &h.depth_why {
            out.push_str(&format!("{}: {why}\n", h.host));
        }
    }
    out.push_str(&format!(
        "\nawake {}, asleep {}\nnow {:.0} W (all hosts on: {:.0} W; watts from {})\nsince start ({:.0} s): used {:.4} kWh, all on {:.4} kWh, saved {:.4} kWh\n",
        s.awake,
        s.asleep,
        s.watts_now,
        s.watts_all_on,
        match s.power_source.as_str() {
            "model" => "the power model",
            other => other,
        },
        s.accounted_s,
        s.used_kwh,
        s.all_on_kwh,
        s.saved_kwh
    ));
    for w in &s.waiting {
        out.push_str(&format!("waiting: {w}\n"));
    }
    match &s.last {
        None => out.push_str("last decision: none yet\n"),
        Some(d) => {
            let names = |v: &[HostId]| {
                if v.is_empty() {
                    "-".to_owned()
                } else {
                    v.iter().map(|h| h.as_str()).collect::<Vec<_>>().join(", ")
                }
            };
            out.push_str(&format!(
                "last decision ({}): {} migration(s) in {} batch(es), wake {}, sleep {}\n  reason: {}\n  outcome: {}\n",
                super::time::rfc3339(d.at_ms),
                d.migrations,
                d.batches,
                names(&d.wake),
                names(&d.sleep),
                d.reason,
                d.outcome.as_deref().unwrap_or(if s.executing { "executing" } else { "-" })
            ));
        }
    }
    out
}
