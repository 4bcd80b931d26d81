//! Best-fit index over destination hosts, by efficiency tier: find the host with the
//! least (or most) free CPU that still fits a VM, in O(log n) per tier, so planning
//! 10,000 hosts stays fast. Tier 0 holds the most efficient hosts (MIPS per watt at full
//! load); searches try tier 0 first, so VMs gather on the hosts that serve a MIPS for the
//! fewest watts, and the less efficient ones are left to be emptied.

use std::collections::BTreeSet;

/// Free CPU in thousandths of a unit: integer keys order exactly and hash cheaply.
fn key(free: f64) -> i64 {
    (free * 1000.0).floor() as i64
}

fn lo_key(need: f64) -> i64 {
    (need * 1000.0).ceil() as i64
}

#[derive(Debug, Default)]
pub(crate) struct FitIndex {
    /// (tier, free key, host).
    set: BTreeSet<(u16, i64, u32)>,
    /// Tier of each host (fixed).
    tier: Vec<u16>,
    /// The distinct tiers, best first.
    tiers: Vec<u16>,
    /// The key each host is filed under, if it is in the index.
    filed: Vec<Option<i64>>,
}

impl FitIndex {
    /// An index over hosts whose tiers are `tier` (0 = most efficient).
    pub(crate) fn new(tier: Vec<u16>) -> Self {
        let mut tiers = tier.clone();
        tiers.sort_unstable();
        tiers.dedup();
        Self {
            set: BTreeSet::new(),
            filed: vec![None; tier.len()],
            tier,
            tiers,
        }
    }

    pub(crate) fn tier(&self, h: u32) -> u16 {
        self.tier[h as usize]
    }

    /// Files (or re-files) host `h` with `free` CPU (negative when above target: such a
    /// host can still take a VM when squeezing up to `upper`).
    pub(crate) fn update(&mut self, h: u32, free: f64) {
        self.remove(h);
        let k = key(free);
        self.set.insert((self.tier[h as usize], k, h));
        self.filed[h as usize] = Some(k);
    }

    pub(crate) fn remove(&mut self, h: u32) {
        if let Some(k) = self.filed[h as usize].take() {
            self.set.remove(&(self.tier[h as usize], k, h));
        }
    }

    /// The tiers present, best first.
    pub(crate) fn tier_list(&self) -> &[u16] {
        &self.tiers
    }

    /// Hosts of tier `t` with at least `need` free CPU, roomiest first.
    pub(crate) fn roomiest_in_tier(&self, t: u16, need: f64) -> impl Iterator<Item = u32> + '_ {
        self.set
            .range((t, lo_key(need), 0)..=(t, i64::MAX, u32::MAX))
            .rev()
            .map(|&(_, _, h)| h)
    }

    /// Hosts of tier `t` with at least `need` free CPU, tightest first.
    pub(crate) fn tightest_in_tier(&self, t: u16, need: f64) -> impl Iterator<Item = u32> + '_ {
        self.set
            .range((t, lo_key(need), 0)..=(t, i64::MAX, u32::MAX))
            .map(|&(_, _, h)| h)
    }
}

/// Tier of each host: 0 for the most efficient (MIPS per watt at full load), then one
/// tier per 5 % less; all 0 when `by_efficiency` is false. The 5 % steps keep the number
/// of tiers small even when every host has its own power model.
pub(crate) fn tiers(eff: &[f64], by_efficiency: bool) -> Vec<u16> {
    let best = eff.iter().copied().fold(0.0f64, f64::max);
    eff.iter()
        .map(|&e| {
            if !by_efficiency || best <= 0.0 || e <= 0.0 {
                return 0;
            }
            let t = ((best / e).ln() / 1.05f64.ln() + 1e-9).floor();
            t.clamp(0.0, u16::MAX as f64) as u16
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tightest_first() {
        let mut ix = FitIndex::new(vec![0; 4]);
        ix.update(0, 10.0);
        ix.update(1, 3.0);
        ix.update(2, 5.0);
        ix.update(3, -2.0);
        assert_eq!(ix.tightest_in_tier(0, 4.0).collect::<Vec<_>>(), vec![2, 0]);
        assert_eq!(ix.tightest_in_tier(0, -3.0).next(), Some(3));
        ix.update(2, 1.0);
        assert_eq!(ix.tightest_in_tier(0, 4.0).next(), Some(0));
        ix.remove(0);
        assert_eq!(ix.tightest_in_tier(0, 4.0).next(), None);
        assert_eq!(ix.roomiest_in_tier(0, 0.5).collect::<Vec<_>>(), vec![1, 2]);
        ix.remove(3);
    }

    #[test]
    fn tiers_are_separate_and_listed_best_first() {
        // Hosts 0 and 2 efficient (tier 0), 1 and 3 not (tier 4).
        let mut ix = FitIndex::new(vec![4, 0, 4, 0]);
        for (h, free) in [(0, 10.0), (1, 3.0), (2, 5.0), (3, 20.0)] {
            ix.update(h, free);
        }
        assert_eq!(ix.tier_list(), &[0, 4]);
        assert_eq!(ix.tier(2), 4);
        assert_eq!(ix.tightest_in_tier(0, 2.0).collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(ix.roomiest_in_tier(4, 2.0).collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(ix.roomiest_in_tier(4, 12.0).next(), None);
    }

    #[test]
    fn tiers_step_by_five_percent() {
        // G5 (5320 MIPS / 135 W) and G4 (3720 / 117): the G4 is 19 % less efficient.
        let t = tiers(&[5320.0 / 135.0, 3720.0 / 117.0, 5320.0 / 135.0], true);
        assert_eq!(t, vec![0, 4, 0]);
        assert_eq!(tiers(&[1.0, 2.0], false), vec![0, 0]);
    }
}
