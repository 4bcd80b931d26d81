//! Names and addresses of one lab, unique per lab so parallel tests never collide.
//!
//! The tag is the process id (hex) plus a per-process counter. Namespaces are
//! `wl<tag>-core`, `wl<tag>-h<i>` and `wl<tag>-b<i>`. Interface names live inside
//! those namespaces (`br0`, `h<i>`/`b<i>` bridge ports, `eth0`), so they never clash
//! across labs and stay within the kernel's 15 characters.
//!
//! Every lab uses the same subnet, 10.77.0.0/24, because its namespaces are its own:
//! router `.1`, host i `.10+i`, BMC i `.100+i`. Host i's MAC is
//! `02:77:00:00:<lab byte>:<i>` (locally administered; the lab byte is the counter, so
//! MACs also differ between labs of one process, which helps reading captures).

use std::net::Ipv4Addr;
use std::sync::atomic::{AtomicU32, Ordering};

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// Most hosts a lab can have (addresses .11..=.99 and .101..=.199).
pub const MAX_HOSTS: usize = 89;

/// The names of one lab.
#[derive(Debug, Clone)]
pub struct Names {
    pub tag: String,
    lab_byte: u8,
}

impl Names {
    /// A fresh, process-unique set of names.
    pub fn fresh() -> Self {
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        Self {
            tag: format!("{:x}x{n}", std::process::id()),
            lab_byte: (n & 0xff) as u8,
        }
    }

    pub fn core_ns(&self) -> String {
        format!("wl{}-core", self.tag)
    }
    /// Host `i` (1-based).
    pub fn host_ns(&self, i: usize) -> String {
        format!("wl{}-h{i}", self.tag)
    }
    pub fn bmc_ns(&self, i: usize) -> String {
        format!("wl{}-b{i}", self.tag)
    }
    pub fn host_name(i: usize) -> String {
        format!("h{i}")
    }
    pub fn host_mac(&self, i: usize) -> [u8; 6] {
        [0x02, 0x77, 0, 0, self.lab_byte, i as u8]
    }
    pub fn router_ip() -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, 1)
    }
    pub fn broadcast_ip() -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, 255)
    }
    pub fn host_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, 10 + i as u8)
    }
    pub fn bmc_ip(i: usize) -> Ipv4Addr {
        Ipv4Addr::new(10, 77, 0, 100 + i as u8)
    }
}

/// The tag and creator PID of a lab namespace name (`wl<pid hex>x<n>-<role>`).
pub fn parse_ns(name: &str) -> Option<(String, u32)> {
    let rest = name.strip_prefix("wl")?;
    let (tag, _role) = rest.split_once('-')?;
    let (pid, n) = tag.split_once('x')?;
    n.parse::<u32>().ok()?;
    Some((tag.to_owned(), u32::from_str_radix(pid, 16).ok()?))
}

/// `02:77:00:00:01:02` form.
pub fn mac_string(mac: &[u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_short() {
        let a = Names::fresh();
        let b = Names::fresh();
        assert_ne!(a.core_ns(), b.core_ns());
        assert_ne!(a.host_mac(1), b.host_mac(1));
        assert_eq!(mac_string(&[2, 0x77, 0, 0, 1, 0x0a]), "02:77:00:00:01:0a");
        assert_eq!(Names::host_ip(3).to_string(), "10.77.0.13");
        assert_eq!(Names::bmc_ip(3).to_string(), "10.77.0.103");
        let (tag, pid) = parse_ns(&a.host_ns(2)).unwrap();
        assert_eq!((tag, pid), (a.tag.clone(), std::process::id()));
        assert_eq!(parse_ns("wlan0-x"), None);
    }
}
