//! Best-fit index over destination hosts: find the host with the least free CPU that
//! still fits a VM, in O(log n), so planning 10,000 hosts stays fast.

use std::collections::BTreeSet;

/// Free CPU in thousandths of a unit: integer keys order exactly and hash cheaply.
fn key(free: f64) -> i64 {
    (free * 1000.0).floor() as i64
}

#[derive(Debug, Default)]
pub(crate) struct FitIndex {
    set: BTreeSet<(i64, u32)>,
    /// The key each host is filed under, if it is in the index.
    filed: Vec<Option<i64>>,
}

impl FitIndex {
    pub(crate) fn new(hosts: usize) -> Self {
        Self {
            set: BTreeSet::new(),
            filed: vec![None; hosts],
        }
    }

    /// Files (or re-files) host `h` with `free` CPU (negative when above target: such a
    /// host can still take a VM when squeezing up to `upper`).
    pub(crate) fn update(&mut self, h: u32, free: f64) {
        self.remove(h);
        let k = key(free);
        self.set.insert((k, h));
        self.filed[h as usize] = Some(k);
    }

    pub(crate) fn remove(&mut self, h: u32) {
        if let Some(k) = self.filed[h as usize].take() {
            self.set.remove(&(k, h));
        }
    }

    /// Hosts with at least `need` free CPU, roomiest first.
    pub(crate) fn fitting_roomiest(&self, need: f64) -> impl Iterator<Item = u32> + '_ {
        let lo = (need * 1000.0).ceil() as i64;
        self.set.range((lo, 0)..).rev().map(|&(_, h)| h)
    }

    /// Hosts with at least `need` free CPU, tightest first.
    pub(crate) fn fitting(&self, need: f64) -> impl Iterator<Item = u32> + '_ {
        let lo = (need * 1000.0).ceil() as i64;
        self.set.range((lo, 0)..).map(|&(_, h)| h)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tightest_first() {
        let mut ix = FitIndex::new(4);
        ix.update(0, 10.0);
        ix.update(1, 3.0);
        ix.update(2, 5.0);
        ix.update(3, -2.0);
        assert_eq!(ix.fitting(4.0).collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(ix.fitting(-3.0).next(), Some(3));
        ix.update(2, 1.0);
        assert_eq!(ix.fitting(4.0).next(), Some(0));
        ix.remove(0);
        assert_eq!(ix.fitting(4.0).next(), None);
        assert_eq!(ix.fitting(0.5).collect::<Vec<_>>(), vec![2, 1]);
        ix.remove(3);
    }
}
