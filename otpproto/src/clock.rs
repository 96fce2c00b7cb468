//! The time as the programs of otpd count it: whole seconds since
//! 1970-01-01 00:00:00 UTC, the unit of TOTP steps, link expiries and the
//! audit trail.

use std::time::{SystemTime, UNIX_EPOCH};

/// Seconds since the epoch by the system clock. A clock set before 1970
/// reads 0 (the count saturates rather than panics); the seconds of any
/// later date fit in a `u64`.
pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs())
}

#[cfg(test)]
#[allow(clippy::expect_used)]
mod tests {
    use super::*;

    fn system_seconds() -> u64 {
        let since = SystemTime::now().duration_since(UNIX_EPOCH);
        since
            .expect("the test machine's clock is past 1970")
            .as_secs()
    }

    #[test]
    fn agrees_with_the_system_clock() {
        let before = system_seconds();
        let now = unix_now();
        let after = system_seconds();
        assert!(before <= now && now <= after, "{before} {now} {after}");
        // 2020-01-01: any machine running the tests is past it.
        assert!(now > 1_577_836_800);
    }
}
