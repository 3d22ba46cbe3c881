//! Wall-clock time in milliseconds since the Unix epoch.
//!
//! Expiry times are absolute wall-clock instants (they are logged and replicated as such), so
//! every TTL decision in the node goes through this one function.

use std::time::{SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch. A clock set before 1970 reads as 0.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}
