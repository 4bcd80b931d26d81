//! Wake-on-LAN: MAC addresses, the magic packet, the `Waker` trait and its errors.
//! The real sender is in `send.rs`.

mod send;

use std::fmt;
use std::time::Duration;

pub use send::{WolWaker, DEFAULT_BURST, DEFAULT_BURST_GAP};

use crate::bmc::BoxFuture;

pub use wisp_common::mac::{MacAddr, MacParseError};

/// The magic packet payload: 6 × 0xFF, 16 × the target MAC (102 bytes), then the
/// optional 6-byte SecureOn password (108 bytes).
pub fn magic_packet(mac: MacAddr, secureon: Option<[u8; 6]>) -> Vec<u8> {
    let mut p = Vec::with_capacity(108);
    p.extend_from_slice(&[0xff; 6]);
    for _ in 0..16 {
        p.extend_from_slice(&mac.0);
    }
    if let Some(pw) = secureon {
        p.extend_from_slice(&pw);
    }
    p
}

/// What one `wake` sent: per kind, how many packets of the burst the kernel accepted
/// (so a burst of 3 with one failed raw send reports `raw_frames: 2`). At least one
/// packet left, or `wake` returns an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WakeReport {
    pub mac: MacAddr,
    /// Raw Ethernet frames (EtherType 0x0842) sent.
    pub raw_frames: u32,
    /// UDP datagrams sent to the broadcast address, port 9.
    pub udp_packets: u32,
    pub elapsed: Duration,
}

/// Wake-on-LAN failures; each names the interface and what failed.
#[derive(Debug, thiserror::Error)]
pub enum WakeError {
    #[error("wake {mac}: interface {interface:?} not found or has no MAC address")]
    Interface { mac: MacAddr, interface: String },
    #[error("wake {mac}: cannot open a raw socket on {interface} (needs root or CAP_NET_RAW)")]
    Raw {
        mac: MacAddr,
        interface: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wake {mac}: UDP broadcast to {target} failed")]
    Udp {
        mac: MacAddr,
        target: String,
        #[source]
        source: std::io::Error,
    },
    #[error("wake {mac}: no magic packet could be sent on {interface}")]
    NothingSent { mac: MacAddr, interface: String },
    #[error("wake {mac}: the sending thread failed")]
    Join {
        mac: MacAddr,
        #[source]
        source: tokio::task::JoinError,
    },
}

/// Sends wake-up requests. Sending is all it does: verifying that the host came up
/// (its genie registers) and falling back to IPMI power-on is the router's job.
pub trait Waker: Send + Sync + fmt::Debug {
    fn wake(&self, mac: MacAddr) -> BoxFuture<'_, Result<WakeReport, WakeError>>;
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn magic_packet_layout() {
        let mac: MacAddr = "02:77:00:00:00:01".parse().unwrap();
        let p = magic_packet(mac, None);
        assert_eq!(p.len(), 102);
        assert_eq!(&p[..6], &[0xff; 6]);
        for i in 0..16 {
            assert_eq!(&p[6 + 6 * i..12 + 6 * i], &mac.0);
        }
        let p = magic_packet(mac, Some([1, 2, 3, 4, 5, 6]));
        assert_eq!(p.len(), 108);
        assert_eq!(&p[102..], &[1, 2, 3, 4, 5, 6]);
    }

    #[test]
    fn parses_and_prints_macs() {
        let mac: MacAddr = "02-77-00-0A-00-ff".parse().unwrap();
        assert_eq!(mac.to_string(), "02:77:00:0a:00:ff");
        assert!("02:77:00:00:00".parse::<MacAddr>().is_err());
        assert!("02:77:00:00:00:zz".parse::<MacAddr>().is_err());
        assert!("002:77:00:00:00:01".parse::<MacAddr>().is_err());
    }
}
