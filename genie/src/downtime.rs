//! The switch-over pause a live migration is allowed, raised step by step.
//!
//! QEMU pauses the guest for the final copy once the memory still dirty fits in the
//! allowed downtime at the bandwidth it measures. A short limit loses the fewest
//! packets (an idle guest fits 30 ms after two or three passes over its memory), but
//! a guest that dirties memory faster than the link copies it never fits a short one.
//! So the limit starts short and doubles with each further pass, up to the configured
//! most (`[migration] downtime_limit_ms`), as OpenStack's downtime steps do.

/// The first limit, when the configured most allows it.
pub const START_MS: u64 = 30;
/// Passes over memory at the first limit before it starts to rise.
const PATIENT_PASSES: u64 = 3;

/// The limit to ask for after `passes` passes over memory (QEMU's
/// `dirty-sync-count`), with `max_ms` the most allowed (0: QEMU's default, untouched).
pub fn limit_after(passes: u64, max_ms: u64) -> u64 {
    if max_ms == 0 {
        return 0;
    }
    let steps = passes.saturating_sub(PATIENT_PASSES).min(32) as u32;
    START_MS
        .min(max_ms)
        .saturating_mul(1u64 << steps)
        .min(max_ms)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn starts_short_doubles_after_a_few_passes_and_stops_at_the_most() {
        let seq: Vec<u64> = (0..10).map(|p| limit_after(p, 300)).collect();
        assert_eq!(seq, [30, 30, 30, 30, 60, 120, 240, 300, 300, 300]);
        // A most below the start is the start; 0 leaves QEMU's default.
        assert_eq!(limit_after(0, 10), 10);
        assert_eq!(limit_after(9, 10), 10);
        assert_eq!(limit_after(5, 0), 0);
        // No overflow however long it goes.
        assert_eq!(limit_after(u64::MAX, u64::MAX), 30u64 << 32);
    }
}
