//! An Ethernet MAC address, written `02:77:00:00:00:01`: the one type for a MAC across
//! wisp (router.toml's hosts, Wake-on-LAN frames, the lab).

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

/// Six bytes, shown as lowercase hex octets separated by colons.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct MacAddr(pub [u8; 6]);

impl fmt::Display for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

impl fmt::Debug for MacAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "MacAddr({self})")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid MAC address {input:?}: expected six hex octets like 02:77:00:00:00:01")]
pub struct MacParseError {
    pub input: String,
}

impl FromStr for MacAddr {
    type Err = MacParseError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = || MacParseError {
            input: s.to_owned(),
        };
        let parts: Vec<&str> = s.split([':', '-']).collect();
        if parts.len() != 6 {
            return Err(err());
        }
        let mut out = [0u8; 6];
        for (o, p) in out.iter_mut().zip(parts) {
            if p.len() != 2 {
                return Err(err());
            }
            *o = u8::from_str_radix(p, 16).map_err(|_| err())?;
        }
        Ok(MacAddr(out))
    }
}

impl Serialize for MacAddr {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for MacAddr {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d)?
            .parse()
            .map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn parses_both_separators_and_prints_colons() {
        let m: MacAddr = "02-77-00-00-00-0A".parse().unwrap();
        assert_eq!(m.to_string(), "02:77:00:00:00:0a");
        assert_eq!(m, "02:77:00:00:00:0a".parse().unwrap());
    }

    #[test]
    fn rejects_what_is_not_six_hex_octets() {
        for bad in [
            "",
            "02:77:00:00:00",
            "02:77:00:00:00:0g",
            "2:77:00:00:00:01",
            "02:77:00:00:00:01:02",
        ] {
            let e = bad.parse::<MacAddr>().unwrap_err();
            assert!(e.to_string().contains("six hex octets"), "{bad}: {e}");
        }
    }

    #[test]
    fn json_is_the_written_form() {
        let m: MacAddr = serde_json::from_str("\"02:77:00:00:00:01\"").unwrap();
        assert_eq!(serde_json::to_string(&m).unwrap(), "\"02:77:00:00:00:01\"");
        assert!(serde_json::from_str::<MacAddr>("\"nope\"").is_err());
    }
}
