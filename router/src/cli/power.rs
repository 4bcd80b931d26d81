//! `router power status|on|off|soft|cycle|reset|clear`, `router wake`, `router suspend`.
//! Output reads like ipmitool's (`Chassis Power is on`), a table for many hosts,
//! `--json` for scripts; every command says what was verified and how long it took.

use super::client::Api;
use std::time::Duration;

use clap::Subcommand;

use super::wait::Waiting;
use super::{print_or_json, table, Client, ClientError};
use crate::api::types::{
    ActionReport, ChassisAction, ClearReport, PowerStatusRow, SuspendOutcome, SuspendRequest,
    WakeOutcome, WakeRequest,
};

/// A BMC call is bounded by its own timeout (5 s with retries); verification by
/// `power_verify_ms`; a wake by `wake_boot_ms` per method. The client waits longer than
/// any of them so the router, not the HTTP client, reports what happened.
const POWER_TIMEOUT: Duration = Duration::from_secs(15 * 60);

#[derive(Debug, Subcommand)]
pub enum PowerCmd {
    /// Chassis power from the BMC (every host, in parallel, when HOST is omitted).
    Status {
        /// The host, by its name in router.toml (all hosts when omitted).
        host: Option<String>,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Power up.
    On {
        /// The host, by its name in router.toml.
        host: String,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Hard power down.
    Off {
        /// The host, by its name in router.toml.
        host: String,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// ACPI soft shutdown.
    Soft {
        /// The host, by its name in router.toml.
        host: String,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Power down, then up.
    Cycle {
        /// The host, by its name in router.toml.
        host: String,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Hard reset.
    Reset {
        /// The host, by its name in router.toml.
        host: String,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
    /// Clear a host's quarantine (it failed to wake by every method), so the energy
    /// mode may use it again.
    Clear {
        /// The host, by its name in router.toml.
        host: String,
        /// Print JSON (the shapes in docs/CONTRACTS.md) instead of text.
        #[arg(long)]
        json: bool,
    },
}

/// One host like ipmitool, many as a table.
pub fn status_text(rows: &[PowerStatusRow]) -> String {
    if let [r] = rows {
        return match &r.error {
            None => format!(
                "Chassis Power is {}\n({}: BMC {}, {} ms; host {})\n{}",
                r.power,
                r.host,
                r.bmc.as_deref().unwrap_or("-"),
                r.elapsed_ms,
                r.state.as_str(),
                notes(r)
            ),
            Some(e) => format!("Error: {e} ({} ms)\n", r.elapsed_ms),
        };
    }
    let body: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            vec![
                r.host.to_string(),
                r.power.as_str().into(),
                r.state.as_str().into(),
                r.bmc.clone().unwrap_or_else(|| "-".into()),
                format!("{} ms", r.elapsed_ms),
                r.expected_wake_ms
                    .map(|w| format!("{w} ms"))
                    .unwrap_or_else(|| "-".into()),
                match (&r.error, &r.quarantine) {
                    (Some(e), Some(q)) => format!("{e}; quarantined: {q}"),
                    (Some(e), None) => e.clone(),
                    (None, Some(q)) => format!("quarantined: {q}"),
                    (None, None) => String::new(),
                },
            ]
        })
        .collect();
    table::render(
        &["HOST", "POWER", "STATE", "BMC", "TIME", "WAKE", "ERROR"],
        &body,
    )
}

/// A status is a failed command when any BMC did not answer: a script checking
/// power must not read "off" into silence. The rows were printed already.
pub fn failed(rows: &[PowerStatusRow]) -> Option<ClientError> {
    let bad: Vec<&PowerStatusRow> = rows.iter().filter(|r| r.error.is_some()).collect();
    match bad.as_slice() {
        [] => None,
        [one] if rows.len() == 1 => Some(ClientError::Api {
            status: 502,
            message: one.error.clone().unwrap_or_default(),
        }),
        _ => Some(ClientError::Api {
            status: 502,
            message: format!(
                "{} of {} BMCs did not answer: {}",
                bad.len(),
                rows.len(),
                bad.iter()
                    .map(|r| r.host.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }),
    }
}

/// The quarantine and measured wake time of one host, a line each.
fn notes(r: &PowerStatusRow) -> String {
    let mut s = String::new();
    if let Some(w) = r.expected_wake_ms {
        s.push_str(&format!("Wakes in about {w} ms (median measured)\n"));
    }
    if let Some(q) = &r.quarantine {
        s.push_str(&format!(
            "Quarantined: {q} (router power clear {})\n",
            r.host
        ));
    }
    s
}

pub fn run(api: &Api, cmd: &PowerCmd) -> Result<(), ClientError> {
    let c = Client::new(api, Some(POWER_TIMEOUT));
    let (action, host, json) = match cmd {
        PowerCmd::Status { host, json } => {
            let path = match host {
                Some(h) => format!("/v1/power/{h}"),
                None => "/v1/power".into(),
            };
            let rows: Vec<PowerStatusRow> = c.get(&path)?;
            print_or_json(*json, &rows, |r| status_text(r))?;
            return match failed(&rows) {
                Some(e) => Err(e),
                None => Ok(()),
            };
        }
        PowerCmd::Clear { host, json } => {
            let r: ClearReport =
                c.post(&format!("/v1/hosts/{host}/clear"), &serde_json::json!({}))?;
            return print_or_json(*json, &r, |r| format!("{}\n", r.message));
        }
        PowerCmd::On { host, json } => (ChassisAction::On, host, json),
        PowerCmd::Off { host, json } => (ChassisAction::Off, host, json),
        PowerCmd::Soft { host, json } => (ChassisAction::Soft, host, json),
        PowerCmd::Cycle { host, json } => (ChassisAction::Cycle, host, json),
        PowerCmd::Reset { host, json } => (ChassisAction::Reset, host, json),
    };
    let _w = Waiting::start(
        format!("power {action} {host}: waiting for the BMC to confirm"),
        *json,
    );
    let r: ActionReport = c.post(
        &format!("/v1/power/{host}/{action}"),
        &serde_json::json!({}),
    )?;
    print_or_json(*json, &r, |r| {
        format!("{}\n(total {} ms)\n", r.message, r.elapsed_ms)
    })
}

pub fn wake(
    api: &Api,
    host: &str,
    deadline_ms: Option<u64>,
    json: bool,
) -> Result<(), ClientError> {
    let c = Client::new(api, Some(POWER_TIMEOUT));
    let _w = Waiting::start(
        format!("waking {host}: waiting for its BMC to see power on, then for its genie to report"),
        json,
    );
    let r: WakeOutcome = c.post(
        &format!("/v1/hosts/{host}/wake"),
        &WakeRequest { deadline_ms },
    )?;
    print_or_json(json, &r, |r| format!("{}\n", r.message))
}

pub fn suspend(
    api: &Api,
    host: &str,
    off: bool,
    force: bool,
    json: bool,
) -> Result<(), ClientError> {
    let c = Client::new(api, Some(POWER_TIMEOUT));
    let how = if off {
        "IPMI soft-off"
    } else {
        "suspend-to-RAM"
    };
    let _w = Waiting::start(
        format!(
            "putting {host} to sleep ({how}): waiting for it to fall silent and its BMC to confirm"
        ),
        json,
    );
    let r: SuspendOutcome = c.post(
        &format!("/v1/hosts/{host}/suspend"),
        &SuspendRequest { off, force },
    )?;
    print_or_json(json, &r, |r| format!("{}\n", r.message))
}
