//! Room for connections still in their handshake: [`MAX_HANDSHAKES`] in total and
//! [`MAX_PER_SOURCE`] from any one address, so one flooding source can neither take
//! the descriptors genies need nor the slots of the other sources (issue 12: 2,500
//! idle connections delayed every genie's registration by seconds).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Connections in their handshake at once. A real genie needs a slot for a few
/// milliseconds, so a few hundred cover a whole data centre reconnecting.
pub const MAX_HANDSHAKES: usize = 256;
/// Of those, from one address: a server runs one genie; a few more allow for NAT and
/// for a genie's reconnect while its old connection times out.
pub const MAX_PER_SOURCE: usize = 16;

/// The slots of one listener.
#[derive(Debug, Clone)]
pub struct Slots {
    total: Arc<Semaphore>,
    // A map of small counters, touched once per connection start and end.
    per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection's slot, given back on drop.
#[derive(Debug)]
pub struct Slot {
    _permit: OwnedSemaphorePermit,
    ip: IpAddr,
    per_source: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        if let Ok(mut m) = self.per_source.lock() {
            if let Some(n) = m.get_mut(&self.ip) {
                *n -= 1;
                if *n == 0 {
                    m.remove(&self.ip);
                }
            }
        }
    }
}

impl Default for Slots {
    fn default() -> Self {
        Self {
            total: Arc::new(Semaphore::new(MAX_HANDSHAKES)),
            per_source: Arc::new(Mutex::new(HashMap::new())),
        }
    }
}

impl Slots {
    /// A slot for a connection from `ip`, or why there is none.
    pub fn take(&self, ip: IpAddr) -> Result<Slot, String> {
        let permit =
            self.total.clone().try_acquire_owned().map_err(|_| {
                format!("more than {MAX_HANDSHAKES} connections in their handshake")
            })?;
        let mut m = self
            .per_source
            .lock()
            .map_err(|_| "handshake slots unavailable".to_string())?;
        let n = m.entry(ip).or_insert(0);
        if *n >= MAX_PER_SOURCE {
            return Err(format!(
                "more than {MAX_PER_SOURCE} connections from {ip} in their handshake"
            ));
        }
        *n += 1;
        Ok(Slot {
            _permit: permit,
            ip,
            per_source: self.per_source.clone(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn per_source_and_total_caps_and_slots_come_back() {
        let s = Slots::default();
        let a = IpAddr::from([10, 0, 0, 1]);
        let held: Vec<Slot> = (0..MAX_PER_SOURCE).map(|_| s.take(a).unwrap()).collect();
        let e = s.take(a).unwrap_err();
        assert!(e.contains("from 10.0.0.1"), "{e}");
        // Another source is not affected.
        let b = s.take(IpAddr::from([10, 0, 0, 2])).unwrap();
        drop(held);
        let again = s.take(a).unwrap();
        drop((again, b));
        // The total: 256 sources of one connection each fill it.
        let many: Vec<Slot> = (0..MAX_HANDSHAKES)
            .map(|i| {
                s.take(IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]))
                    .unwrap()
            })
            .collect();
        let e = s.take(IpAddr::from([10, 2, 0, 1])).unwrap_err();
        assert!(e.contains("256"), "{e}");
        drop(many);
        assert!(s.per_source.lock().unwrap().is_empty());
    }
}
