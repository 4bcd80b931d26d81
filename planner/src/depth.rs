//! How deep each sleeping host sleeps: suspend-to-RAM (S3) or soft-off (S5).
//!
//! S3 keeps a few watts on (RAM refresh, NIC) and wakes in seconds; S5 draws only what
//! the BMC needs but wakes through a full boot (minutes). A host the cluster will need
//! soon should be in S3, so that a burst waits seconds, not minutes, for room; a host it
//! will not need for hours should be off. `choose` decides per sleeping host, purely from
//! its input (no clock, no I/O); the router carries it out (S3 → S5 by an IPMI power-off
//! of the suspended host) and shows `why` to users.
//!
//! The rule: keep in S3 as many hosts as the cluster may need soon, the quickest to give
//! room first:
//! * the capacity missing between the recent peak of predicted demand and what the
//!   running hosts hold (at the planner's `target`), in hosts;
//! * plus the hosts the recent swings needed (the most hosts running minus the fewest,
//!   over the caller's look-back);
//! * plus the failover reserve (a failed host's VMs restart on woken hosts).
//!
//! Every other host goes to S5, except that a host already in S3 that fell out of that
//! set stays there until it has been unneeded for `s3_grace_s` (powering it off and
//! booting it an hour later costs more than the watts saved). The caller keeps, per
//! host, since when it is unneeded: from when it went to sleep, restarted whenever a
//! choice says `needed`. Hosts that cannot suspend to RAM always get S5; a
//! host already in S5 stays there (bringing it to S3 needs a full boot). A host whose
//! measured S3 wake is not faster than its S5 wake gets S5: S3 would cost watts for
//! nothing.

use serde::{Deserialize, Serialize};

use crate::model::HostIx;

/// How deep a sleeping host sleeps.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum SleepDepth {
    /// Suspend to RAM (ACPI S3).
    Suspend,
    /// Soft-off (ACPI S5).
    Off,
}

impl SleepDepth {
    pub fn label(self) -> &'static str {
        match self {
            SleepDepth::Suspend => "S3",
            SleepDepth::Off => "S5",
        }
    }
}

/// One host that sleeps now or is about to.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthHost {
    pub host: HostIx,
    /// CPU capacity (same unit as the demand figures of `DepthInput`).
    pub cpu: f64,
    /// Capacity per watt at full load: the planner wakes the most efficient hosts first,
    /// so those are the ones worth keeping quick to wake.
    pub mips_per_watt: f64,
    /// False when the host cannot suspend to RAM (no S3 in firmware, or it failed).
    pub can_suspend: bool,
    /// Seconds to wake from S3 and from S5: measured when known, else the configured
    /// typical figures.
    pub wake_s3_s: f64,
    pub wake_s5_s: f64,
    /// Its depth now; `None` for a host going to sleep in this round.
    pub current: Option<SleepDepth>,
    /// Since when it sleeps without having been counted `needed` (same clock as
    /// `DepthInput::now_s`): the later of when it went to sleep and the last choice that
    /// said `needed`. Ignored when `current` is `None`.
    pub unneeded_since_s: f64,
}

/// What the cluster looks like, as far as sleep depth is concerned.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthInput {
    pub now_s: f64,
    /// Hosts asleep or going to sleep now.
    pub hosts: Vec<DepthHost>,
    /// Capacity of the running hosts.
    pub running_cpu: f64,
    /// Highest total predicted demand over the look-back (e.g. the last 2 hours).
    pub recent_peak_demand: f64,
    /// Most running hosts minus fewest running hosts over the look-back.
    pub swing_hosts: usize,
    /// The planner's failover reserve (`Policy::reserve_hosts`).
    pub reserve_hosts: u32,
    /// The planner fills hosts up to this fraction of capacity (`Policy::target`).
    pub target: f64,
    /// A host in S3 outside the needed set is powered off once it has been unneeded this
    /// long.
    pub s3_grace_s: f64,
}

/// The depth for one host and why, in one sentence for users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DepthChoice {
    pub host: HostIx,
    pub depth: SleepDepth,
    /// Among the hosts the cluster may need soon (the caller restarts the host's
    /// `unneeded_since_s` then).
    pub needed: bool,
    pub why: String,
}

/// How many sleeping hosts to keep quick to wake (see the module header).
pub fn hosts_needed_soon(input: &DepthInput) -> usize {
    let short = (input.recent_peak_demand - input.target * input.running_cpu).max(0.0);
    let mut caps: Vec<f64> = input
        .hosts
        .iter()
        .filter(|h| h.cpu > 0.0)
        .map(|h| h.cpu * input.target.max(1e-9))
        .collect();
    // Count with the biggest hosts first: the smallest number that could cover the gap.
    caps.sort_by(|a, b| b.total_cmp(a));
    let mut room = 0.0;
    let mut for_peak = 0;
    for c in caps {
        if room >= short - 1e-9 {
            break;
        }
        room += c;
        for_peak += 1;
    }
    for_peak + input.swing_hosts + input.reserve_hosts as usize
}

/// Chooses the depth of every host in `input.hosts`, in the same order.
pub fn choose(input: &DepthInput) -> Vec<DepthChoice> {
    let need = hosts_needed_soon(input);
    // The hosts that would be woken first: most efficient (the planner's wake order),
    // then the quickest from S3, then by index for a stable answer. Hosts already off
    // or unable to suspend cannot be quick, so they do not take a place in the set.
    let mut order: Vec<usize> = (0..input.hosts.len())
        .filter(|&i| {
            let h = &input.hosts[i];
            h.can_suspend && h.current != Some(SleepDepth::Off) && h.wake_s3_s < h.wake_s5_s
        })
        .collect();
    order.sort_by(|&a, &b| {
        let (ha, hb) = (&input.hosts[a], &input.hosts[b]);
        hb.mips_per_watt
            .total_cmp(&ha.mips_per_watt)
            .then(ha.wake_s3_s.total_cmp(&hb.wake_s3_s))
            .then(ha.host.cmp(&hb.host))
    });
    let mut hot = vec![false; input.hosts.len()];
    for &i in order.iter().take(need) {
        hot[i] = true;
    }
    input
        .hosts
        .iter()
        .zip(hot)
        .map(|(h, hot)| {
            let (depth, why) = one(input, h, hot, need);
            DepthChoice {
                host: h.host,
                depth,
                needed: hot,
                why,
            }
        })
        .collect()
}

fn one(input: &DepthInput, h: &DepthHost, hot: bool, need: usize) -> (SleepDepth, String) {
    if !h.can_suspend {
        return (
            SleepDepth::Off,
            "It cannot suspend to RAM, so it sleeps powered off (S5).".into(),
        );
    }
    if h.current == Some(SleepDepth::Off) {
        return (
            SleepDepth::Off,
            "It is already powered off (S5); it stays off until it is needed, since \
             suspending it would take a full boot first."
                .into(),
        );
    }
    if h.wake_s3_s >= h.wake_s5_s {
        return (
            SleepDepth::Off,
            format!(
                "Its measured wake from suspend ({:.0} s) is no quicker than a boot \
                 ({:.0} s), so it sleeps powered off (S5).",
                h.wake_s3_s, h.wake_s5_s
            ),
        );
    }
    if hot {
        return (
            SleepDepth::Suspend,
            format!(
                "The cluster may need {need} more host{} soon (recent peak, swings and \
                 reserve); this one is among the first to wake, so it stays suspended \
                 (S3, wakes in {:.0} s).",
                if need == 1 { "" } else { "s" },
                h.wake_s3_s
            ),
        );
    }
    let unneeded = if h.current.is_some() {
        (input.now_s - h.unneeded_since_s).max(0.0)
    } else {
        0.0
    };
    if h.current == Some(SleepDepth::Suspend) && unneeded < input.s3_grace_s {
        return (
            SleepDepth::Suspend,
            format!(
                "Not expected to be needed soon, but only for {:.0} min of the {:.0} min \
                 after which a suspended host is powered off, so it stays suspended (S3).",
                unneeded / 60.0,
                input.s3_grace_s / 60.0
            ),
        );
    }
    let why = if h.current == Some(SleepDepth::Suspend) {
        format!(
            "Suspended and unneeded for {:.0} min, and not among the {need} host{} the \
             cluster may need soon, so it is powered off (S3 to S5) to save standby power; \
             it would wake in {:.0} s.",
            unneeded / 60.0,
            if need == 1 { "" } else { "s" },
            h.wake_s5_s
        )
    } else {
        format!(
            "Not among the {need} host{} the cluster may need soon, so it sleeps powered \
             off (S5); it would wake in {:.0} s.",
            if need == 1 { "" } else { "s" },
            h.wake_s5_s
        )
    };
    (SleepDepth::Off, why)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn host(i: u32, eff: f64, current: Option<SleepDepth>, since: f64) -> DepthHost {
        DepthHost {
            host: HostIx(i),
            cpu: 100.0,
            mips_per_watt: eff,
            can_suspend: true,
            wake_s3_s: 15.0,
            wake_s5_s: 150.0,
            current,
            unneeded_since_s: since,
        }
    }

    fn input(hosts: Vec<DepthHost>, peak: f64, swing: usize, reserve: u32) -> DepthInput {
        DepthInput {
            now_s: 10_000.0,
            hosts,
            running_cpu: 1000.0,
            recent_peak_demand: peak,
            swing_hosts: swing,
            reserve_hosts: reserve,
            target: 1.0,
            s3_grace_s: 3600.0,
        }
    }

    fn depths(c: &[DepthChoice]) -> Vec<&'static str> {
        c.iter().map(|c| c.depth.label()).collect()
    }

    #[test]
    fn hosts_needed_soon_table() {
        // (peak demand, swing, reserve) -> hosts (running 1000, hosts of 100 at target 1).
        let cases = [
            (800.0, 0, 0, 0),
            (1000.0, 0, 0, 0),
            (1001.0, 0, 0, 1),
            (1150.0, 0, 0, 2),
            (1150.0, 2, 1, 5),
            (900.0, 3, 1, 4),
            (5000.0, 0, 0, 4), // only 4 sleeping hosts: the gap cannot be covered
        ];
        for (peak, swing, reserve, want) in cases {
            let hs = (0..4).map(|i| host(i, 1.0, None, 0.0)).collect();
            let got = hosts_needed_soon(&input(hs, peak, swing, reserve));
            assert_eq!(got, want, "peak {peak} swing {swing} reserve {reserve}");
        }
    }

    #[test]
    fn most_efficient_hosts_stay_suspended_the_rest_power_off() {
        // Need 2 (one reserve, one swing); host 2 and host 0 are the most efficient.
        let hs = vec![
            host(0, 2.0, None, 0.0),
            host(1, 1.0, None, 0.0),
            host(2, 3.0, None, 0.0),
            host(3, 1.0, None, 0.0),
        ];
        let c = choose(&input(hs, 500.0, 1, 1));
        assert_eq!(depths(&c), ["S3", "S5", "S3", "S5"]);
        let needed: Vec<bool> = c.iter().map(|c| c.needed).collect();
        assert_eq!(needed, [true, false, true, false]);
        assert!(c[0].why.contains("2 more hosts"), "{}", c[0].why);
        assert!(c[1].why.contains("S5"), "{}", c[1].why);
        assert_eq!(c.iter().map(|c| c.host.0).collect::<Vec<_>>(), [0, 1, 2, 3]);
    }

    #[test]
    fn capability_measured_wake_and_current_depth_table() {
        // Need 3, so every host would be hot if it could be.
        let mut no_s3 = host(0, 9.0, None, 0.0);
        no_s3.can_suspend = false;
        let mut slow_s3 = host(1, 9.0, None, 0.0);
        slow_s3.wake_s3_s = 200.0; // measured: no quicker than a boot
        let already_off = host(2, 9.0, Some(SleepDepth::Off), 0.0);
        let fine = host(3, 1.0, None, 0.0);
        let c = choose(&input(vec![no_s3, slow_s3, already_off, fine], 500.0, 3, 0));
        assert_eq!(depths(&c), ["S5", "S5", "S5", "S3"]);
        assert!(c[0].why.contains("cannot suspend"), "{}", c[0].why);
        assert!(c[1].why.contains("200 s"), "{}", c[1].why);
        assert!(c[2].why.contains("already powered off"), "{}", c[2].why);
        // The places the unsuitable hosts could not take go to the next host.
        assert!(c[3].why.contains("3 more hosts"), "{}", c[3].why);
    }

    #[test]
    fn suspended_host_is_powered_off_after_the_grace() {
        // Nothing needed: hosts unneeded for 10 min stay in S3, for 2 h go to S5.
        let now = 10_000.0;
        let hs = vec![
            host(0, 1.0, Some(SleepDepth::Suspend), now - 600.0),
            host(1, 1.0, Some(SleepDepth::Suspend), now - 7200.0),
            host(2, 1.0, None, 0.0),
        ];
        let c = choose(&input(hs, 500.0, 0, 0));
        assert_eq!(depths(&c), ["S3", "S5", "S5"]);
        assert!(c[0].why.contains("10 min"), "{}", c[0].why);
        assert!(c[1].why.contains("S3 to S5"), "{}", c[1].why);
        assert!(c[1].why.contains("120 min"), "{}", c[1].why);
    }

    #[test]
    fn a_needed_host_stays_suspended_however_long_it_slept() {
        let hs = vec![host(0, 1.0, Some(SleepDepth::Suspend), -1e6)];
        let c = choose(&input(hs, 500.0, 0, 1));
        assert_eq!(depths(&c), ["S3"]);
        assert!(c[0].why.contains("1 more host soon"), "{}", c[0].why);
    }

    #[test]
    fn empty_input_gives_nothing() {
        assert!(choose(&input(Vec::new(), 0.0, 2, 1)).is_empty());
    }
}
