//! The cluster task's door to the API's views: the projections live in
//! `crate::api::views` and the shapes in `crate::api::types`; these methods remain only
//! because the task's `Hosts`/`Vms`/`Status` messages call them.

use tokio::time::Instant;

use super::Model;
pub use crate::api::types::{HostView, StatusView, VmView};

impl Model {
    pub fn host_views(&self, now: Instant) -> Vec<HostView> {
        crate::api::views::host_views(self, now)
    }

    pub fn vm_views(&self) -> Vec<VmView> {
        crate::api::views::vm_views(self)
    }

    pub fn status_view(&self) -> StatusView {
        crate::api::views::status_view(self)
    }
}
