//! The port range incoming live migrations listen on (genie.toml `migration_ports`),
//! and the choice of a free port in it.
//!
//! A fixed range lets an operator open the firewall for migrations with one rule.
//! Which port of the range is free is only known by trying: QEMU binds it
//! (`migrate-incoming`), and an "address in use" answer moves on to the next port.
//! Each prepare starts at a rotating offset, so concurrent prepares on one host
//! usually try different ports first; when two do meet, the loser gets "in use" and
//! moves on. Nothing is reserved here: the port is QEMU's listener, which closes when
//! the migration ends or its qemu is killed (a cancelled incoming).

use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};

use serde::Deserialize;

/// The default range: 64 ports at the start of IANA's dynamic range.
pub const DEFAULT_MIGRATION_PORTS: PortRange = PortRange {
    start: 49152,
    end: 49215,
};
/// Ports below this are the system's well-known services, not a place for migrations.
pub const MIN_PORT: u16 = 1024;
/// More ports than this is a typo (or a firewall left wide open); each prepare may
/// try every one of them.
pub const MAX_PORTS: u32 = 1024;

/// An inclusive range of TCP ports, `start..=end` (one port when they are equal).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PortRange {
    start: u16,
    end: u16,
}

/// Why a `migration_ports` value was refused; each names the value as written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PortRangeError {
    #[error("{value:?} is not a port or a port range (write \"49152-49215\" or \"49152\")")]
    Syntax { value: String },
    #[error("{value:?}: port 0 is not a port (the kernel reads it as \"any port\")")]
    Zero { value: String },
    #[error("{value:?}: the range starts at {start}, after its end {end}")]
    Reversed { value: String, start: u16, end: u16 },
    #[error(
        "{value:?}: ports below {MIN_PORT} belong to the system's well-known services; \
         use ports {MIN_PORT} to 65535"
    )]
    WellKnown { value: String },
    #[error("{value:?} is {count} ports; at most {MAX_PORTS} (each prepare may try them all)")]
    TooMany { value: String, count: u32 },
}

impl PortRange {
    /// `start..=end`, checked as a `migration_ports` value is.
    pub fn new(start: u16, end: u16) -> Result<Self, PortRangeError> {
        let value = if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        };
        Self::checked(value, start, end)
    }

    fn checked(value: String, start: u16, end: u16) -> Result<Self, PortRangeError> {
        if start == 0 || end == 0 {
            return Err(PortRangeError::Zero { value });
        }
        if start > end {
            return Err(PortRangeError::Reversed { value, start, end });
        }
        if start < MIN_PORT {
            return Err(PortRangeError::WellKnown { value });
        }
        let count = u32::from(end - start) + 1;
        if count > MAX_PORTS {
            return Err(PortRangeError::TooMany { value, count });
        }
        Ok(Self { start, end })
    }

    pub fn start(&self) -> u16 {
        self.start
    }

    pub fn end(&self) -> u16 {
        self.end
    }

    /// How many ports (at least 1).
    pub fn len(&self) -> u32 {
        u32::from(self.end - self.start) + 1
    }

    /// Never empty; here because clippy wants it next to `len`.
    pub fn is_empty(&self) -> bool {
        false
    }

    pub fn contains(&self, port: u16) -> bool {
        (self.start..=self.end).contains(&port)
    }

    /// The `i`-th port, wrapping around the range.
    fn nth(&self, i: u32) -> u16 {
        // len() <= MAX_PORTS, so the offset fits in a u16.
        self.start + (i % self.len()) as u16
    }
}

impl Default for PortRange {
    fn default() -> Self {
        DEFAULT_MIGRATION_PORTS
    }
}

impl fmt::Display for PortRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.start == self.end {
            write!(f, "{}", self.start)
        } else {
            write!(f, "{}-{}", self.start, self.end)
        }
    }
}

impl FromStr for PortRange {
    type Err = PortRangeError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let syntax = || PortRangeError::Syntax {
            value: s.to_owned(),
        };
        let port = |p: &str| {
            let p = p.trim();
            // u16's parser takes a leading '+'; a port is digits only.
            if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) {
                return Err(syntax());
            }
            p.parse::<u16>().map_err(|_| syntax())
        };
        let (start, end) = match s.split_once('-') {
            Some((a, b)) => (port(a)?, port(b)?),
            None => {
                let p = port(s)?;
                (p, p)
            }
        };
        Self::checked(s.to_owned(), start, end)
    }
}

/// `"49152-49215"`, `"49152"` or `49152`.
impl<'de> Deserialize<'de> for PortRange {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Text(String),
            Port(i64),
        }
        let text = match Raw::deserialize(d) {
            Ok(Raw::Text(s)) => s,
            Ok(Raw::Port(p)) => p.to_string(),
            Err(_) => {
                return Err(serde::de::Error::custom(
                    "expected a port range as a string (\"49152-49215\") or a port",
                ))
            }
        };
        text.parse().map_err(serde::de::Error::custom)
    }
}

/// One try at a port, as the listener reports it.
#[derive(Debug)]
pub enum Attempt<E> {
    /// Somebody else listens there (or holds it): try the next port.
    InUse,
    /// Anything else (the address is not ours, qemu died): no other port will fare
    /// better, so the prepare fails with this.
    Failed(E),
}

/// Every port of the range answered "in use".
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("all {count} ports of migration_ports {range} are in use on {addr}", count = range.len())]
pub struct Exhausted {
    pub range: PortRange,
    pub addr: IpAddr,
}

/// Why [`PortPicker::pick`] found no port.
#[derive(Debug)]
pub enum PickError<E> {
    Exhausted(Exhausted),
    Failed(E),
}

/// Chooses ports of one range, starting each pick one port further on.
#[derive(Debug, Default)]
pub struct PortPicker {
    range: PortRange,
    next: AtomicU32,
}

impl PortPicker {
    pub fn new(range: PortRange) -> Self {
        Self {
            range,
            next: AtomicU32::new(0),
        }
    }

    pub fn range(&self) -> PortRange {
        self.range
    }

    /// Tries the ports of the range on `addr` with `listen`, from this pick's offset
    /// on and wrapping around, each once; returns the first port `listen` took.
    pub async fn pick<E, F, Fut>(&self, addr: IpAddr, mut listen: F) -> Result<u16, PickError<E>>
    where
        F: FnMut(u16) -> Fut,
        Fut: Future<Output = Result<(), Attempt<E>>>,
    {
        let len = self.range.len();
        // Wrapping is harmless: only the offset modulo the length matters, and
        // 2^32 is not a multiple of every length, which merely skips a port once.
        let first = self.next.fetch_add(1, Ordering::Relaxed) % len;
        for i in 0..len {
            let port = self.range.nth(first + i);
            match listen(port).await {
                Ok(()) => return Ok(port),
                Err(Attempt::InUse) => {
                    tracing::debug!(port, "migration port in use, trying the next");
                }
                Err(Attempt::Failed(e)) => return Err(PickError::Failed(e)),
            }
        }
        Err(PickError::Exhausted(Exhausted {
            range: self.range,
            addr,
        }))
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;
    use std::collections::HashSet;
    use std::sync::Mutex;

    fn r(s: &str) -> PortRange {
        s.parse().unwrap()
    }

    #[test]
    fn ranges_and_single_ports_parse_and_print() {
        assert_eq!(r("49152-49215"), DEFAULT_MIGRATION_PORTS);
        assert_eq!(PortRange::default().len(), 64);
        assert_eq!(r("49152-49215").to_string(), "49152-49215");
        assert_eq!(
            (r("5000").start(), r("5000").end(), r("5000").len()),
            (5000, 5000, 1)
        );
        assert_eq!(r("5000").to_string(), "5000");
        assert_eq!(r(" 6000 - 6001 ").len(), 2);
        assert_eq!(r("65535").len(), 1);
        assert!(r("6000-6001").contains(6001) && !r("6000-6001").contains(6002));
        assert_eq!(PortRange::new(7000, 7003).unwrap(), r("7000-7003"));
    }

    #[test]
    fn bad_values_are_refused_naming_the_value() {
        for (bad, says) in [
            ("", "not a port"),
            ("abc", "not a port"),
            ("49152-", "not a port"),
            ("-49152", "not a port"),
            ("+5000", "not a port"),
            ("1-2-3", "not a port"),
            ("70000", "not a port"),
            ("5000:5010", "not a port"),
            ("0", "port 0"),
            ("0-100", "port 0"),
            ("6000-5000", "after its end 5000"),
            ("80", "well-known"),
            ("1000-2000", "well-known"),
            ("2000-4000", "at most 1024"),
        ] {
            let e = bad.parse::<PortRange>().unwrap_err().to_string();
            assert!(e.contains(says), "{bad:?}: {e}");
            assert!(e.contains(&format!("{bad:?}")), "{bad:?}: {e}");
        }
        assert!(PortRange::new(3000, 2000).is_err());
    }

    const ADDR: IpAddr = IpAddr::V4(std::net::Ipv4Addr::LOCALHOST);

    /// A fake host: `busy` ports answer in use, a taken port stays taken; records tries.
    struct FakePorts {
        busy: Mutex<HashSet<u16>>,
        tried: Mutex<Vec<u16>>,
    }

    impl FakePorts {
        fn new(busy: &[u16]) -> Self {
            Self {
                busy: Mutex::new(busy.iter().copied().collect()),
                tried: Mutex::new(Vec::new()),
            }
        }
        async fn listen(&self, port: u16) -> Result<(), Attempt<String>> {
            self.tried.lock().unwrap().push(port);
            if self.busy.lock().unwrap().insert(port) {
                Ok(())
            } else {
                Err(Attempt::InUse)
            }
        }
        fn release(&self, port: u16) {
            self.busy.lock().unwrap().remove(&port);
        }
        fn tried(&self) -> Vec<u16> {
            std::mem::take(&mut *self.tried.lock().unwrap())
        }
    }

    #[tokio::test]
    async fn each_pick_starts_one_port_further_and_wraps() {
        let p = PortPicker::new(r("6000-6002"));
        let host = FakePorts::new(&[]);
        let mut got = Vec::new();
        for _ in 0..4 {
            let port = p.pick(ADDR, |port| host.listen(port)).await.unwrap();
            got.push(port);
            // The migration ended: QEMU closed its listener.
            host.release(port);
        }
        assert_eq!(got, [6000, 6001, 6002, 6000]);
        assert_eq!(host.tried(), [6000, 6001, 6002, 6000]);
    }

    #[tokio::test]
    async fn busy_ports_are_skipped_and_concurrent_migrations_get_different_ports() {
        let p = PortPicker::new(r("6000-6003"));
        // Another program holds 6001.
        let host = FakePorts::new(&[6001]);
        let mut held = Vec::new();
        for _ in 0..3 {
            held.push(p.pick(ADDR, |port| host.listen(port)).await.unwrap());
        }
        // Nothing released: three migrations at once.
        assert_eq!(held, [6000, 6002, 6003]);
        assert_eq!(host.tried(), [6000, 6001, 6002, 6002, 6003]);
        // The first one finished: its port is free again and found by wrapping around.
        host.release(6000);
        assert_eq!(p.pick(ADDR, |port| host.listen(port)).await.unwrap(), 6000);
        assert_eq!(host.tried(), [6003, 6000]);
    }

    #[tokio::test]
    async fn all_busy_fails_naming_the_range_after_trying_each_port_once() {
        let p = PortPicker::new(r("6000-6001"));
        let host = FakePorts::new(&[6000, 6001]);
        let Err(PickError::Exhausted(e)) = p.pick(ADDR, |port| host.listen(port)).await else {
            panic!("expected exhaustion");
        };
        assert_eq!(
            e.to_string(),
            "all 2 ports of migration_ports 6000-6001 are in use on 127.0.0.1"
        );
        assert_eq!(host.tried(), [6000, 6001]);
        let d = PortPicker::new(PortRange::default());
        let all: HashSet<u16> = (49152..=49215).collect();
        let host = FakePorts::new(&all.iter().copied().collect::<Vec<_>>());
        let Err(PickError::Exhausted(e)) = d.pick(ADDR, |port| host.listen(port)).await else {
            panic!("expected exhaustion");
        };
        assert!(
            e.to_string()
                .starts_with("all 64 ports of migration_ports 49152-49215 are in use"),
            "{e}"
        );
        assert_eq!(host.tried().into_iter().collect::<HashSet<_>>(), all);
    }

    #[tokio::test]
    async fn another_failure_stops_at_once() {
        let p = PortPicker::new(r("6000-6009"));
        let mut tries = 0;
        let r = p
            .pick(ADDR, |_| {
                tries += 1;
                async { Err::<(), _>(Attempt::Failed("cannot assign requested address")) }
            })
            .await;
        assert!(matches!(
            r,
            Err(PickError::Failed("cannot assign requested address"))
        ));
        assert_eq!(tries, 1);
    }
}
