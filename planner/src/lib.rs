//! wisp-planner: the pure consolidation planner and the trace simulator.
//!
//! * [`plan`] turns a [`ClusterView`] (hosts, VMs, demand history, `now`) and a
//!   [`Policy`] into a [`Plan`]: ordered migrations in batches, hosts to wake, hosts to
//!   put to sleep. It does no I/O and reads no clock.
//! * [`check`] applies a plan to a view and states the invariants (no overcommit, the
//!   failover reserve).
//! * [`sim`] replays CPU traces (PlanetLab, in CloudSim's format) through the same
//!   `plan()` with a simulated clock and reports CloudSim's metrics; only
//!   [`sim::trace`] reads files, and [`sim::render_svg`] returns a `String`.

pub mod check;
pub mod model;
pub mod plan;
pub mod policy;
pub mod power;
pub mod predict;
pub mod sim;

pub use model::{ClusterView, HostIx, HostView, PowerState, VmIx, VmView};
pub use plan::plan;
pub use plan::types::{Migration, MoveReason, Placement, Plan};
pub use policy::{Policy, Prediction};
pub use power::PowerModel;
