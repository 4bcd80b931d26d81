//! wisp-tests: the lab and the end-to-end scenarios.
//!
//! [`lab`] builds a small cluster out of real parts on one machine: network
//! namespaces on a bridge, an `ipmi_sim` BMC per host, a Wake-on-LAN listener, real
//! genies, the router and real `qemu-system-x86_64` VMs. [`wol`] and [`pcap`] are the
//! pure parsers the lab's helper binaries and tests share.

pub mod bench;
pub mod browser;
pub mod faults;
pub mod lab;
pub mod pcap;
pub mod wol;
