//! What the router tells a monitoring system: `GET /metrics` in Prometheus' text
//! format (hosts by state and power, VMs by state, failovers, fences, detection and
//! outage latencies, IPMI latency, migrations, watts and energy saved, refused
//! connections, events by kind) and `GET /health` (200 while the cluster task
//! answers). Both are read-only; they sit on the API listener with the other routes,
//! so its access rules (loopback, or a read token over TCP) apply to them too.
//! The same liveness check feeds systemd's watchdog ([`health::watchdog`]).

pub mod bmc;
mod commands;
pub mod health;
pub mod registry;
pub mod render;
pub mod sampler;

use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::get;
use axum::Router;

use crate::api::views::vm_views;
use crate::cluster::ClusterHandle;
use crate::energy::EnergyHandle;
use crate::model::host::{HostStatus, PowerKnown};
use registry as r;
use render::Exposition;

pub use registry::refused_connection;

/// What the metrics routes read.
#[derive(Debug, Clone)]
pub struct MetricsState {
    pub cluster: ClusterHandle,
    pub energy: Option<EnergyHandle>,
}

/// `/metrics` and `/health` (merge into the API's router).
pub fn routes(cluster: ClusterHandle, energy: Option<EnergyHandle>) -> Router {
    Router::new()
        .route("/metrics", get(metrics))
        .route("/health", get(health::health))
        .with_state(MetricsState { cluster, energy })
}

async fn metrics(State(s): State<MetricsState>) -> impl IntoResponse {
    (
        [(CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")],
        scrape(&s),
    )
}

const HOST_STATES: &[HostStatus] = &[
    HostStatus::Up,
    HostStatus::Suspect,
    HostStatus::Unreachable,
    HostStatus::Down,
    HostStatus::Fenced,
    HostStatus::Standby,
    HostStatus::Waking,
    HostStatus::Maintenance,
];

/// The whole exposition, from the latest snapshot and the registry.
pub fn scrape(s: &MetricsState) -> String {
    let snap = s.cluster.snapshot();
    let mut e = Exposition::default();
    let mut host_rows = Vec::new();
    for st in HOST_STATES {
        for p in [PowerKnown::On, PowerKnown::Off, PowerKnown::Unknown] {
            let n = snap
                .hosts
                .iter()
                .filter(|h| h.status == *st && h.power == p)
                .count();
            host_rows.push((
                vec![("state", st.as_str()), ("power", p.as_str())],
                n as f64,
            ));
        }
    }
    e.gauges(
        "wisp_hosts",
        "Hosts by state and chassis power as the router knows them.",
        &host_rows,
    );
    let vms = vm_views(&snap);
    let mut by_state: std::collections::BTreeMap<String, usize> = Default::default();
    for st in ["running", "not running"] {
        by_state.insert(st.into(), 0);
    }
    for v in &vms {
        *by_state.entry(v.state.as_str().to_owned()).or_insert(0) += 1;
    }
    let vm_rows: Vec<(Vec<(&str, &str)>, f64)> = by_state
        .iter()
        .map(|(k, n)| (vec![("state", k.as_str())], *n as f64))
        .collect();
    e.gauges(
        "wisp_vms",
        "VMs by state (as reported by their genies).",
        &vm_rows,
    );
    let events = r::EVENTS.values();
    let count = |kinds: &[&str]| -> f64 {
        events
            .iter()
            .filter(|(k, _)| kinds.contains(k))
            .map(|(_, n)| *n as f64)
            .sum::<f64>()
    };
    e.counter_value(
        "wisp_failovers_total",
        "VMs restarted by the reconciler after their copy was lost (failover or crash).",
        count(&["vm_restarted"]),
    );
    e.counter_value(
        "wisp_fences_total",
        "Hosts proven off or fenced (BMC power off, or the self-fence lease) since start.",
        count(&["host_fenced", "host_down"]),
    );
    e.counter_value(
        "wisp_fence_refusals_total",
        "Failovers refused for want of a proof that the silent host is off.",
        count(&["fence_refused"]),
    );
    e.histogram(
        "wisp_detection_seconds",
        "How long a host had been silent when the router declared it unreachable.",
        &r::DETECTION_SECONDS,
    );
    e.histogram(
        "wisp_vm_outage_seconds",
        "Unplanned VM downtime per incident, from its last sight to running again (failover latency).",
        &r::OUTAGE_SECONDS,
    );
    e.histogram(
        "wisp_ipmi_request_seconds",
        "Latency of IPMI requests to BMCs (status and chassis control, with retries).",
        &r::IPMI_SECONDS,
    );
    e.counter(
        "wisp_ipmi_errors_total",
        "IPMI requests that failed (timeout, refused, authentication).",
        &r::IPMI_ERRORS,
    );
    e.counter(
        "wisp_migrations_total",
        "Live migrations completed.",
        &r::MIGRATIONS_OK,
    );
    e.counter(
        "wisp_migrations_failed_total",
        "Live migrations that failed (the VM stayed on its source).",
        &r::MIGRATIONS_FAILED,
    );
    e.counter(
        "wisp_migration_bytes_total",
        "Bytes sent by completed live migrations.",
        &r::MIGRATION_BYTES,
    );
    e.histogram(
        "wisp_migration_downtime_seconds",
        "Guest downtime of completed live migrations, as QEMU measured it.",
        &r::MIGRATION_DOWNTIME_SECONDS,
    );
    e.histogram(
        "wisp_migration_duration_seconds",
        "Total time of completed live migrations, as QEMU measured it.",
        &r::MIGRATION_SECONDS,
    );
    if let Some(energy) = &s.energy {
        let st = energy.status();
        e.gauge(
            "wisp_power_watts",
            "Power drawn by the cluster's hosts now (measured or from the power model).",
            st.watts_now,
        );
        e.gauge(
            "wisp_power_all_on_watts",
            "Power the hosts would draw with every host on.",
            st.watts_all_on,
        );
        e.counter_value(
            "wisp_energy_saved_joules_total",
            "Energy saved against all hosts on since the router started (kWh x 3.6e6).",
            st.saved_kwh * 3.6e6,
        );
        e.gauge(
            "wisp_energy_mode",
            "1 while energy-saving mode is on.",
            f64::from(u8::from(snap.energy_mode)),
        );
    }
    e.labeled(
        "wisp_refused_connections_total",
        "Connections refused at an accept path, by listener.",
        "listener",
        &r::REFUSED_CONNECTIONS,
    );
    e.labeled(
        "wisp_events_total",
        "Events recorded since the router started, by kind.",
        "kind",
        &r::EVENTS,
    );
    e.counter_value(
        "wisp_reports_accepted_total",
        "Genie reports applied.",
        snap.reports_accepted as f64,
    );
    e.counter_value(
        "wisp_reports_dropped_total",
        "Genie reports dropped as stale or reordered.",
        snap.reports_dropped as f64,
    );
    e.gauge(
        "wisp_router_uptime_seconds",
        "Seconds since this router started.",
        snap.taken_at
            .saturating_duration_since(snap.router_started)
            .as_secs_f64(),
    );
    e.finish()
}
