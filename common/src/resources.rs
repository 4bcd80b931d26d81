//! Resource amounts: what a VM asks for and what a host offers.

use serde::{Deserialize, Serialize};

/// vCPUs and memory. Memory in MiB because that is QEMU's unit for `-m`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resources {
    pub vcpus: u32,
    pub mem_mib: u64,
}

impl Resources {
    pub fn new(vcpus: u32, mem_mib: u64) -> Self {
        Self { vcpus, mem_mib }
    }

    /// True when `self` fits inside `room` on every axis.
    pub fn fits_in(&self, room: &Resources) -> bool {
        self.vcpus <= room.vcpus && self.mem_mib <= room.mem_mib
    }

    pub fn saturating_sub(&self, other: &Resources) -> Resources {
        Resources {
            vcpus: self.vcpus.saturating_sub(other.vcpus),
            mem_mib: self.mem_mib.saturating_sub(other.mem_mib),
        }
    }
}

impl std::ops::Add for Resources {
    type Output = Resources;
    fn add(self, o: Resources) -> Resources {
        Resources {
            vcpus: self.vcpus + o.vcpus,
            mem_mib: self.mem_mib + o.mem_mib,
        }
    }
}

impl std::iter::Sum for Resources {
    fn sum<I: Iterator<Item = Resources>>(iter: I) -> Resources {
        iter.fold(Resources::default(), |a, b| a + b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fits_and_sums() {
        let room = Resources::new(4, 1024);
        assert!(Resources::new(4, 1024).fits_in(&room));
        assert!(!Resources::new(5, 10).fits_in(&room));
        let total: Resources = [Resources::new(1, 100), Resources::new(2, 200)]
            .into_iter()
            .sum();
        assert_eq!(total, Resources::new(3, 300));
        assert_eq!(
            room.saturating_sub(&Resources::new(9, 9)),
            Resources::new(0, 1015)
        );
    }
}
