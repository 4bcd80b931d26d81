//! wisp-sim: the trace simulator. It replays CPU traces (PlanetLab, in CloudSim's format)
//! through the same `wisp_planner::plan()` the daemon runs, with a simulated clock, and
//! reports CloudSim's metrics. It lives outside the planner so that the planner stays
//! pure: only [`trace`] reads files here, and [`render_svg`] returns a `String`.
//!
//! `router simulate` calls: [`load_planetlab_day`], then [`simulate`] with
//! [`Scenario::cloudsim`] or [`Scenario::realistic`] and `scenario.default_policy()`,
//! prints the [`SimReport`] (it implements `Display`) and writes [`render_svg`].

pub mod baseline;
mod engine;
mod report;
mod scenario;
mod sleep;
mod svg;
pub mod synth;
pub mod trace;

pub use engine::simulate;
pub use report::{SimReport, StepSample};
pub use scenario::{Accounting, DepthMode, DepthSpec, HostType, Scenario, SleepSpec, VmType};
pub use svg::{render_svg, render_svg_with, Reference};
pub use synth::{synth_day, SynthDay};
pub use trace::{load_planetlab_day, TraceError, Workload};
