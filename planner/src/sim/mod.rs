//! The trace simulator: replays CPU traces through `plan()` with a simulated clock.
//!
//! `router simulate` calls: [`load_planetlab_day`], then [`simulate`] with
//! [`Scenario::cloudsim`] or [`Scenario::realistic`] and `scenario.default_policy()`,
//! prints the [`SimReport`] (it implements `Display`) and writes [`render_svg`].

pub mod baseline;
mod engine;
mod report;
mod scenario;
mod svg;
pub mod trace;

pub use engine::simulate;
pub use report::{SimReport, StepSample};
pub use scenario::{Accounting, HostType, Scenario, VmType};
pub use svg::render_svg;
pub use trace::{load_planetlab_day, TraceError, Workload};
