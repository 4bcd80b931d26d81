//! wisp-common: what the genie and the router must agree on.
//!
//! Typed ids, resource amounts, the VM spec, the versioned wire protocol with its
//! framing and authentication, secrets read from files, and TOML config loading with
//! errors that name the file and the key, and polling until a deadline. Nothing here
//! does network or process I/O beyond reading and writing the stream it is handed.

pub mod config;
pub mod error;
#[cfg(feature = "etcd")]
pub mod etcd;
pub mod ids;
pub mod mac;
pub mod proto;
pub mod resources;
pub mod secret;
pub mod time;
pub mod vm;
pub mod wait;

pub use ids::{HostId, IdError, VmId};
pub use mac::{MacAddr, MacParseError};
pub use resources::Resources;
pub use vm::{DiskFormat, NicSpec, VmRunState, VmSpec};
