//! Noticing that this host (or this process) was away: suspended to RAM, or frozen.
//!
//! After a suspend the genie's TCP connection is dead or half-dead (the router gave up
//! on it meanwhile), and waiting for TCP to find out takes minutes. So the link samples
//! two clocks at a steady rate and, when a sample shows it was away, drops the
//! connection and reconnects at once. Two signs:
//!
//! - **BOOTTIME jump.** CLOCK_MONOTONIC stops while the kernel is suspended,
//!   CLOCK_BOOTTIME keeps counting. Between two ticks both advance by the same amount
//!   (to the microsecond) unless the kernel slept in between, so a difference of
//!   [`BOOTTIME_JUMP_MIN`] is a suspend beyond doubt.
//! - **Heartbeat gap.** The sampling loop runs on the genie's (single-threaded) runtime
//!   at the heartbeat period; if two samples are further apart than
//!   [`gap_threshold`] — `max(5 × period, 2 s)` — the process was frozen with its clocks
//!   running (SIGSTOP, a cgroup freezer, a VM host pausing this machine) or its runtime
//!   was stalled for that long. Either way its link cannot be trusted: the router has
//!   heard nothing for that long. 5 periods stays clear of scheduling jitter on a loaded
//!   machine (a missed tick or two is common, five in a row is not); the 2 s floor keeps
//!   a fast heartbeat (e.g. 50 ms in tests) from turning a short stall (a slow /proc
//!   read, swap) into a reconnect, and is still well below the router's suspect
//!   timeouts, so the reconnect happens before the router would act on the silence.

use std::time::Duration;

use wisp_common::proto::{ResumeSign, Resumed};

/// BOOTTIME ahead of MONOTONIC by this much between two ticks is a kernel suspend.
/// Both clocks tick together otherwise; the slack only absorbs the sampling itself.
pub const BOOTTIME_JUMP_MIN: Duration = Duration::from_millis(500);
/// Floor of the heartbeat-gap threshold (see the module comment).
pub const GAP_FLOOR: Duration = Duration::from_secs(2);
/// Multiple of the sampling period that counts as a gap.
pub const GAP_PERIODS: u32 = 5;

/// One reading of both clocks, in ms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockSample {
    pub monotonic_ms: u64,
    pub boottime_ms: u64,
}

/// The heartbeat-gap threshold for a sampling `period`: `max(5 × period, 2 s)`.
pub fn gap_threshold(period: Duration) -> Duration {
    (period * GAP_PERIODS).max(GAP_FLOOR)
}

/// Decides from two consecutive samples whether the host or process was away.
/// A kernel suspend wins over a gap (it is the more specific sign); `away_ms` is the
/// BOOTTIME jump beyond MONOTONIC for a suspend, the whole gap for a freeze.
pub fn detect(prev: ClockSample, now: ClockSample, period: Duration) -> Option<Resumed> {
    let mono = now.monotonic_ms.saturating_sub(prev.monotonic_ms);
    let boot = now.boottime_ms.saturating_sub(prev.boottime_ms);
    let jump = boot.saturating_sub(mono);
    if jump >= ms(BOOTTIME_JUMP_MIN) {
        return Some(Resumed {
            away_ms: jump,
            how: ResumeSign::BoottimeJump,
        });
    }
    if mono >= ms(gap_threshold(period)) {
        return Some(Resumed {
            away_ms: mono,
            how: ResumeSign::HeartbeatGap,
        });
    }
    None
}

fn ms(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
}

/// Reads CLOCK_MONOTONIC and CLOCK_BOOTTIME now.
pub fn sample_clocks() -> ClockSample {
    use nix::time::{clock_gettime, ClockId};
    let read = |id| {
        // Both clocks exist on every Linux since 2.6.39; a failure would be a kernel bug,
        // and 0 makes detect() see no change rather than a false resume.
        clock_gettime(id)
            .map(|t| {
                let (s, ns) = (t.tv_sec().max(0) as u64, t.tv_nsec().max(0) as u64);
                s.saturating_mul(1000).saturating_add(ns / 1_000_000)
            })
            .unwrap_or(0)
    };
    ClockSample {
        monotonic_ms: read(ClockId::CLOCK_MONOTONIC),
        boottime_ms: read(ClockId::CLOCK_BOOTTIME),
    }
}

/// Samples the clocks at every tick of the link's own loop and remembers the last
/// sample; `tick` says whether the time since the previous one was an absence.
#[derive(Debug)]
pub struct ResumeDetector {
    period: Duration,
    last: ClockSample,
}

impl ResumeDetector {
    pub fn new(period: Duration) -> Self {
        Self {
            period,
            last: sample_clocks(),
        }
    }

    /// The sampling period the thresholds are computed for.
    pub fn period(&self) -> Duration {
        self.period
    }

    pub fn tick(&mut self) -> Option<Resumed> {
        self.observe(sample_clocks())
    }

    /// `tick` with a given sample (tests).
    pub fn observe(&mut self, now: ClockSample) -> Option<Resumed> {
        let r = detect(self.last, now, self.period);
        self.last = now;
        r
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HB: Duration = Duration::from_millis(200);

    fn s(monotonic_ms: u64, boottime_ms: u64) -> ClockSample {
        ClockSample {
            monotonic_ms,
            boottime_ms,
        }
    }

    #[test]
    fn threshold_is_five_periods_but_at_least_two_seconds() {
        assert_eq!(gap_threshold(HB), Duration::from_secs(2));
        assert_eq!(
            gap_threshold(Duration::from_millis(50)),
            Duration::from_secs(2)
        );
        assert_eq!(
            gap_threshold(Duration::from_secs(1)),
            Duration::from_secs(5)
        );
    }

    #[test]
    fn a_kernel_suspend_is_a_boottime_jump_measured_beyond_monotonic() {
        // Monotonic moved one period, boottime 30 s more: 30 s asleep.
        let r = detect(s(1000, 5000), s(1200, 35_200), HB).unwrap();
        assert_eq!(r.how, ResumeSign::BoottimeJump);
        assert_eq!(r.away_ms, 30_000);
        // A jump that also came with a long gap is still a suspend.
        let r = detect(s(1000, 5000), s(4000, 40_000), HB).unwrap();
        assert_eq!(r.how, ResumeSign::BoottimeJump);
        assert_eq!(r.away_ms, 32_000);
    }

    #[test]
    fn a_frozen_process_is_a_heartbeat_gap() {
        // Both clocks ran 4 s while the loop did not run (SIGSTOP).
        let r = detect(s(1000, 5000), s(5000, 9000), HB).unwrap();
        assert_eq!(r.how, ResumeSign::HeartbeatGap);
        assert_eq!(r.away_ms, 4000);
        // Exactly at the threshold counts.
        let r = detect(s(0, 0), s(2000, 2000), HB).unwrap();
        assert_eq!(r.how, ResumeSign::HeartbeatGap);
    }

    #[test]
    fn normal_jitter_is_no_resume() {
        let mut d = ResumeDetector {
            period: HB,
            last: s(0, 100),
        };
        // Late ticks on a loaded machine (up to 1.9 s, i.e. 9 periods missed at 200 ms),
        // and a few ms of skew between the two clock reads, in both directions.
        let mut t = 0;
        for (step, skew) in [
            (200, 0),
            (350, 3),
            (1900, 0),
            (5, 0),
            (0, 0),
            (400, 499),
            (1999, 1),
        ] {
            t += step;
            let r = d.observe(s(t, 100 + t + skew));
            assert_eq!(r, None, "step {step} skew {skew}");
            // Skew is per reading, not cumulative.
            d.last = s(t, 100 + t);
        }
        // Clocks that go nowhere or backwards (a failed read) are no resume either.
        assert_eq!(detect(s(500, 500), s(0, 0), HB), None);
    }

    #[test]
    fn the_detector_remembers_its_last_sample() {
        let mut d = ResumeDetector {
            period: HB,
            last: s(0, 0),
        };
        assert_eq!(d.observe(s(200, 200)), None);
        assert!(d.observe(s(3000, 3000)).is_some());
        // The absence is reported once; the next normal tick is quiet again.
        assert_eq!(d.observe(s(3200, 3200)), None);
        // The real clocks: two samples in a row are no resume.
        let mut real = ResumeDetector::new(HB);
        assert_eq!(real.tick(), None);
        assert_eq!(real.period(), HB);
    }
}
