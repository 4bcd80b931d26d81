//! Polling until a deadline, written once: ask again every `period` until the answer
//! is there or time is up, then say what was waited for and for how long.
//!
//! Time is tokio's, so tests drive it with `tokio::time::pause()`. Use this where
//! only asking again works (a process table, a BMC's power state); where a change is
//! announced (a `watch` channel), wait for the announcement instead.

use std::fmt::Display;
use std::future::Future;
use std::time::Duration;

use tokio::time::Instant;

/// The deadline passed before the condition held.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("gave up after {waited_ms} ms waiting for {what}")]
pub struct TimedOut {
    /// What was waited for, as the caller described it ("qemu pid 42 to exit").
    pub what: String,
    pub waited_ms: u64,
}

/// Calls `check` until it returns `Some`, sleeping `period` between calls (never past
/// `deadline`). After the deadline there is one last call, so a condition that became
/// true during the final sleep still counts. `what` names the condition in the error.
pub async fn until<T, F, Fut>(
    deadline: Instant,
    period: Duration,
    what: impl Display,
    mut check: F,
) -> Result<T, TimedOut>
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let started = Instant::now();
    loop {
        if let Some(v) = check().await {
            return Ok(v);
        }
        let now = Instant::now();
        if now >= deadline {
            return Err(TimedOut {
                what: what.to_string(),
                waited_ms: u64::try_from(now.duration_since(started).as_millis())
                    .unwrap_or(u64::MAX),
            });
        }
        tokio::time::sleep(period.min(deadline - now)).await;
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use std::cell::Cell;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn returns_the_answer_as_soon_as_it_is_there() {
        let calls = Cell::new(0);
        let t0 = Instant::now();
        let v = until(
            t0 + Duration::from_secs(5),
            Duration::from_millis(100),
            "x",
            || {
                calls.set(calls.get() + 1);
                let n = calls.get();
                async move { (n == 3).then_some(n) }
            },
        )
        .await
        .unwrap();
        assert_eq!(v, 3);
        assert_eq!(t0.elapsed(), Duration::from_millis(200));
    }

    #[tokio::test(start_paused = true)]
    async fn times_out_at_the_deadline_and_says_what_it_waited_for() {
        let calls = Cell::new(0);
        let t0 = Instant::now();
        let e = until(
            t0 + Duration::from_millis(250),
            Duration::from_millis(100),
            "qemu pid 42 to exit",
            || {
                calls.set(calls.get() + 1);
                async { None::<()> }
            },
        )
        .await
        .unwrap_err();
        // Checks at 0, 100, 200 and a last one at the deadline (250), not beyond.
        assert_eq!(calls.get(), 4);
        assert_eq!(t0.elapsed(), Duration::from_millis(250));
        assert_eq!(
            e.to_string(),
            "gave up after 250 ms waiting for qemu pid 42 to exit"
        );
    }
}
