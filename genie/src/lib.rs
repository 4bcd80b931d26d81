//! genie: the wisp agent on every server. It reports host metrics and the state of the
//! host's QEMU VMs to the router, runs the router's commands (start, stop, migrate,
//! suspend, …), and self-fences when it loses the router for longer than its lease.
//!
//! A library so tests and benches can drive the modules; `main.rs` is a thin CLI.

pub mod accel;
pub mod commands;
pub mod config;
pub mod console;
pub mod console_session;
pub mod downtime;
#[cfg(any(test, feature = "fake"))]
pub mod fakes;
pub mod host_sleep;
pub mod images;
pub mod launch;
pub mod lease;
pub mod link;
pub mod liveness;
pub mod manager;
pub mod metrics;
pub mod ports;
pub mod power_caps;
pub mod qemu;
pub mod qmp;
pub mod report;
pub mod resume;
pub mod taps;
pub mod vm_task;
pub mod wol_relay;
