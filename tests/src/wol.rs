//! Recognising Wake-on-LAN magic packets in raw Ethernet frames.
//!
//! A magic payload is six 0xFF bytes followed by the target MAC sixteen times. It
//! arrives either as the payload of an EtherType 0x0842 frame (`etherwake`) or of a
//! UDP datagram to port 9 (`wakeonlan`, most tools), possibly broadcast.

use std::fmt;

/// How a magic packet was carried.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WakeMethod {
    EtherType0842,
    Udp9,
}

impl fmt::Display for WakeMethod {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            WakeMethod::EtherType0842 => "ethertype-0x0842",
            WakeMethod::Udp9 => "udp-9",
        })
    }
}

/// The MAC a magic payload wakes, if `p` starts with one.
pub fn parse_magic(p: &[u8]) -> Option<[u8; 6]> {
    if p.len() < 102 || p[..6] != [0xff; 6] {
        return None;
    }
    let mac: [u8; 6] = p[6..12].try_into().ok()?;
    (1..16)
        .all(|i| p[6 + i * 6..12 + i * 6] == mac)
        .then_some(mac)
}

/// The target MAC and carrier of a magic packet inside Ethernet frame `f`.
pub fn parse_frame(f: &[u8]) -> Option<([u8; 6], WakeMethod)> {
    if f.len() < 14 {
        return None;
    }
    match u16::from_be_bytes([f[12], f[13]]) {
        0x0842 => parse_magic(&f[14..]).map(|m| (m, WakeMethod::EtherType0842)),
        0x0800 => {
            let ip = &f[14..];
            if ip.len() < 20 || ip[0] >> 4 != 4 || ip[9] != 17 {
                return None;
            }
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let udp = ip.get(ihl..)?;
            if udp.len() < 8 || u16::from_be_bytes([udp[2], udp[3]]) != 9 {
                return None;
            }
            parse_magic(&udp[8..]).map(|m| (m, WakeMethod::Udp9))
        }
        _ => None,
    }
}

/// Builds a magic payload for `mac` (for tests and for senders).
pub fn magic_payload(mac: [u8; 6]) -> Vec<u8> {
    let mut p = vec![0xff; 6];
    for _ in 0..16 {
        p.extend_from_slice(&mac);
    }
    p
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0x77, 0, 0, 1, 2];

    fn eth(ethertype: u16, payload: &[u8]) -> Vec<u8> {
        let mut f = vec![0xff; 6];
        f.extend_from_slice(&[2, 0, 0, 0, 0, 1]);
        f.extend_from_slice(&ethertype.to_be_bytes());
        f.extend_from_slice(payload);
        f
    }

    #[test]
    fn ethertype_0842() {
        let f = eth(0x0842, &magic_payload(MAC));
        assert_eq!(parse_frame(&f), Some((MAC, WakeMethod::EtherType0842)));
    }

    #[test]
    fn udp_port_9_and_not_other_ports() {
        let mut ip = vec![
            0x45, 0, 0, 0, 0, 0, 0, 0, 64, 17, 0, 0, 10, 77, 0, 1, 10, 77, 0, 255,
        ];
        let mut udp = vec![0x30, 0x39, 0, 9, 0, 0, 0, 0];
        udp.extend_from_slice(&magic_payload(MAC));
        let mut ok = ip.clone();
        ok.extend_from_slice(&udp);
        assert_eq!(
            parse_frame(&eth(0x0800, &ok)),
            Some((MAC, WakeMethod::Udp9))
        );
        udp[3] = 7;
        ip.extend_from_slice(&udp);
        assert_eq!(parse_frame(&eth(0x0800, &ip)), None);
    }

    #[test]
    fn rejects_broken_repetitions() {
        let mut p = magic_payload(MAC);
        p[50] ^= 1;
        assert_eq!(parse_frame(&eth(0x0842, &p)), None);
        assert_eq!(parse_frame(&eth(0x0842, &p[..90])), None);
    }
}
