//! `WolWaker`: sends the magic packet as a raw Ethernet frame (EtherType 0x0842, to
//! ff:ff:ff:ff:ff:ff, from the interface's MAC) with pnet, and as a UDP broadcast to
//! port 9 on the interface's subnet, in a short burst of each ([`DEFAULT_BURST`]
//! rounds, [`DEFAULT_BURST_GAP`] apart, one frame of each kind per round). Both paths,
//! because NICs and switches differ in which one they pass or honour; a burst, because
//! nobody retransmits a lost frame and a switch may still be relearning the sleeping
//! port. The report counts what the kernel accepted, per kind. Blocking work runs on
//! `spawn_blocking`; `wake_blocking` is the same thing for a caller that must stay
//! on its own thread (e.g. one that entered a network namespace with setns).

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use pnet::datalink::{self, Channel, NetworkInterface};

use super::{magic_packet, MacAddr, WakeError, WakeReport, Waker};
use crate::bmc::BoxFuture;

/// EtherType of Wake-on-LAN frames (what `etherwake` sends).
pub const ETHERTYPE_WOL: u16 = 0x0842;
/// The discard port, where WoL tools traditionally send the UDP form.
pub const WOL_UDP_PORT: u16 = 9;
/// Rounds in a burst unless configured otherwise.
pub const DEFAULT_BURST: u32 = 3;
/// Pause between two rounds of a burst: long enough that a switch or NIC busy with
/// one frame sees the next, short enough that a burst of 3 takes well under 0.1 s.
pub const DEFAULT_BURST_GAP: Duration = Duration::from_millis(20);

/// A real waker bound to one interface (router.toml `wol_interface`).
#[derive(Debug, Clone)]
pub struct WolWaker {
    /// The NIC on the hosts' L2 segment.
    pub interface: String,
    /// UDP target; default: the interface's first IPv4 subnet broadcast, port 9.
    pub broadcast: Option<SocketAddr>,
    /// How many times each form is sent: the burst (a lost frame is not
    /// retransmitted by anyone else). Default [`DEFAULT_BURST`]; 0 counts as 1.
    pub repeats: u32,
    /// Pause between two rounds of the burst. Default [`DEFAULT_BURST_GAP`].
    pub interval: Duration,
    /// Optional SecureOn password appended to the packet.
    pub secureon: Option<[u8; 6]>,
}

impl WolWaker {
    pub fn new(interface: impl Into<String>) -> Self {
        Self {
            interface: interface.into(),
            broadcast: None,
            repeats: DEFAULT_BURST,
            interval: DEFAULT_BURST_GAP,
            secureon: None,
        }
    }

    /// The same waker with a burst of `count` rounds, `gap` apart.
    pub fn with_burst(mut self, count: u32, gap: Duration) -> Self {
        self.repeats = count;
        self.interval = gap;
        self
    }

    fn find_interface(&self, mac: MacAddr) -> Result<(NetworkInterface, [u8; 6]), WakeError> {
        let iface = datalink::interfaces()
            .into_iter()
            .find(|i| i.name == self.interface)
            .ok_or_else(|| WakeError::Interface {
                mac,
                interface: self.interface.clone(),
            })?;
        let src = iface.mac.ok_or_else(|| WakeError::Interface {
            mac,
            interface: self.interface.clone(),
        })?;
        let src = src.octets();
        Ok((iface, src))
    }

    /// The UDP target: the configured one, else the interface's own IPv4 broadcast,
    /// else that of the bridge it is a port of. On a server whose address sits on a
    /// bridge (`br0` with the NIC `eth0` as its uplink, as for VM networking), the NIC
    /// is what `wol_interface` names (ethtool arms WoL there) but has no address itself.
    fn udp_target(&self, iface: &NetworkInterface) -> Option<SocketAddr> {
        self.broadcast
            .or_else(|| ipv4_broadcast(iface))
            .or_else(|| {
                let master = bridge_master(&iface.name)?;
                datalink::interfaces()
                    .into_iter()
                    .find(|i| i.name == master)
                    .and_then(|m| ipv4_broadcast(&m))
            })
    }

    /// Sends the packets from the calling thread (blocking for up to
    /// `repeats × interval`). Ok when at least one packet left.
    pub fn wake_blocking(&self, mac: MacAddr) -> Result<WakeReport, WakeError> {
        let start = Instant::now();
        let payload = magic_packet(mac, self.secureon);
        let (iface, src) = self.find_interface(mac)?;

        let mut frame = Vec::with_capacity(14 + payload.len());
        frame.extend_from_slice(&[0xff; 6]);
        frame.extend_from_slice(&src);
        frame.extend_from_slice(&ETHERTYPE_WOL.to_be_bytes());
        frame.extend_from_slice(&payload);

        let mut raw_err = None;
        let mut raw_tx = match datalink::channel(&iface, datalink::Config::default()) {
            Ok(Channel::Ethernet(tx, _rx)) => Some(tx),
            Ok(_) => {
                raw_err = Some(std::io::Error::other("unsupported datalink channel type"));
                None
            }
            Err(e) => {
                raw_err = Some(e);
                None
            }
        };

        let target = self.udp_target(&iface);
        if target.is_none() {
            // Counted as 0 UDP packets below; say why, or the count looks like a loss.
            tracing::warn!(interface = %self.interface, %mac,
                "no IPv4 broadcast address on the interface: magic packets go as raw frames only");
        }
        let mut udp_err = None;
        let udp = target.and_then(|t| {
            let s = UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))
                .and_then(|s| s.set_broadcast(true).map(|_| s));
            match s {
                Ok(s) => Some((s, t)),
                Err(e) => {
                    udp_err = Some((t.to_string(), e));
                    None
                }
            }
        });

        let (mut raw_frames, mut udp_packets) = (0, 0);
        for i in 0..self.repeats.max(1) {
            if i > 0 {
                std::thread::sleep(self.interval);
            }
            if let Some(tx) = raw_tx.as_mut() {
                match tx.send_to(&frame, None) {
                    Some(Ok(())) => raw_frames += 1,
                    Some(Err(e)) => raw_err = Some(e),
                    None => raw_err = Some(std::io::Error::other("frame not sent")),
                }
            }
            if let Some((s, t)) = udp.as_ref() {
                match s.send_to(&payload, t) {
                    Ok(_) => udp_packets += 1,
                    Err(e) => udp_err = Some((t.to_string(), e)),
                }
            }
        }
        if raw_frames == 0 && udp_packets == 0 {
            return Err(match (raw_err, udp_err) {
                (Some(source), _) => WakeError::Raw {
                    mac,
                    interface: self.interface.clone(),
                    source,
                },
                (None, Some((target, source))) => WakeError::Udp {
                    mac,
                    target,
                    source,
                },
                (None, None) => WakeError::NothingSent {
                    mac,
                    interface: self.interface.clone(),
                },
            });
        }
        if let Some(e) = raw_err.filter(|_| raw_frames == 0) {
            tracing::warn!(interface = %self.interface, %mac, error = %e, "raw WoL frame not sent; UDP form was");
        }
        if let Some((t, e)) = udp_err.filter(|_| udp_packets == 0) {
            tracing::warn!(interface = %self.interface, %mac, target = %t, error = %e, "UDP WoL packet not sent; raw frame was");
        }
        Ok(WakeReport {
            mac,
            raw_frames,
            udp_packets,
            elapsed: start.elapsed(),
        })
    }
}

/// The first IPv4 subnet broadcast of `iface`, port 9.
fn ipv4_broadcast(iface: &NetworkInterface) -> Option<SocketAddr> {
    iface
        .ips
        .iter()
        .find_map(|n| match (n.ip(), n.broadcast()) {
            (IpAddr::V4(_), IpAddr::V4(b)) => Some(SocketAddr::from((b, WOL_UDP_PORT))),
            _ => None,
        })
}

/// The bridge (or bond) `name` is enslaved to, from sysfs: `/sys/class/net/NAME/master`
/// is a symlink to the master's directory.
fn bridge_master(name: &str) -> Option<String> {
    let link = std::fs::read_link(format!("/sys/class/net/{name}/master")).ok()?;
    link.file_name()?.to_str().map(str::to_owned)
}

impl Waker for WolWaker {
    fn wake(&self, mac: MacAddr) -> BoxFuture<'_, Result<WakeReport, WakeError>> {
        let this = self.clone();
        Box::pin(async move {
            tokio::task::spawn_blocking(move || this.wake_blocking(mac))
                .await
                .map_err(|source| WakeError::Join { mac, source })?
        })
    }
}
