//! Wall-clock timestamps on the wire: milliseconds since the Unix epoch.
//!
//! Only edges call this; logic that needs time takes it as an argument so tests can
//! choose it.

use std::time::{SystemTime, UNIX_EPOCH};

/// Now, in milliseconds since the Unix epoch (0 if the clock is before 1970).
pub fn unix_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
