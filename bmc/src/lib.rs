//! wisp-bmc: switching servers on and off over IPMI and waking them with magic packets.
//!
//! Two narrow traits carry every external power effect of the router:
//! - [`Bmc`]: one server's baseboard management controller. The real one is
//!   [`IpmiBmc`] (IPMI 2.0 LAN, RMCP+ cipher suite 3, on top of `ipmi-rs`); [`FakeBmc`]
//!   injects faults and counts what was done.
//! - [`Waker`]: Wake-on-LAN. The real one is [`WolWaker`] (raw EtherType 0x0842 frame
//!   plus UDP broadcast to port 9, with `pnet`); [`FakeWaker`] counts wakes.
//!
//! Both are object-safe (`Arc<dyn Bmc>`, `Arc<dyn Waker>`) and return boxed futures;
//! blocking I/O never runs on the async runtime. The optional `testkit` feature adds an
//! `ipmi_sim` launcher and namespace helpers for tests and the lab.

pub mod bmc;
#[cfg(any(test, feature = "fake"))]
pub mod fake;
pub mod ipmi;
pub mod wol;

#[cfg(feature = "testkit")]
pub mod testkit;

pub use bmc::{Bmc, BmcConfig, BmcError, BoxFuture, PowerAction, PowerState};
#[cfg(any(test, feature = "fake"))]
pub use fake::{FakeBmc, FakeBmcFault, FakeWaker};
pub use ipmi::IpmiBmc;
pub use wol::{magic_packet, MacAddr, WakeError, WakeReport, Waker, WolWaker};
