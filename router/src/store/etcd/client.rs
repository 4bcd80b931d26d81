//! The etcd client the router uses: `wisp_common::etcd`, shared with the genie (its
//! liveness lease).

pub use wisp_common::etcd::*;
