//! wisp-planner: the pure consolidation planner.
//!
//! * [`plan`] turns a [`ClusterView`] (hosts, VMs, demand history, `now`) and a
//!   [`Policy`] into a [`Plan`]: ordered migrations in batches, hosts to wake, hosts to
//!   put to sleep. It does no I/O and reads no clock.
//! * [`check`] applies a plan to a view and states the invariants (no overcommit, the
//!   failover reserve).
//! * [`depth`] chooses how deep each sleeping host sleeps (S3 or S5) and says why.
//! * [`policy`], [`power`] and [`predict`]: the knobs, the host power model and the
//!   demand prediction the planner uses.
//!
//! The whole crate reads no file and pulls in no tokio: the daemon, the simulator (`wisp-sim`, its own crate so
//! that trace files and SVG stay out of here) and the benchmarks call the same `plan()`.

pub mod check;
pub mod depth;
pub mod model;
pub mod plan;
pub mod policy;
pub mod predict;
pub mod watts;

pub use depth::{DepthChoice, DepthHost, DepthInput, SleepDepth};
pub use model::{ClusterView, HostIx, PlanHost, PlanPower, PlanVm, VmIx};
pub use plan::plan;
pub use plan::types::{Migration, MoveReason, Placement, Plan};
pub use policy::{Policy, Prediction};
pub use watts::PowerModel;
