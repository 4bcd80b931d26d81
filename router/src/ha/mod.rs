//! High availability: proving silent hosts off (fencing), maintenance mode, and SLA
//! accounting. Restarting the VMs of a proven-off host is the VM reconciler's job
//! (`vms::reconcile`): it acts only on hosts this module has marked down or fenced.

pub mod api;
mod commands;
pub mod fence;
pub mod follower;
pub mod forward;
pub mod gate;
pub mod leader;
pub mod liveness;
pub mod maintenance;
pub mod replicated;
pub mod status;
