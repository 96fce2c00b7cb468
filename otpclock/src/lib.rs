//! The kernel's clock synchronisation state, as `adjtimex(2)` reports it.
//!
//! TOTP codes are computed from the time, so a server whose clock drifts
//! refuses good codes (or accepts them a step late). [`read`] asks the
//! kernel, read-only (`modes = 0`, which needs no privilege), whether a
//! time service (chrony, systemd-timesyncd, ntpd) keeps the clock
//! synchronised and how large the kernel estimates its error.
//!
//! The clock is unsynchronised when the call returns `TIME_ERROR` or the
//! status has `STA_UNSYNC` set: the kernel sets the bit itself when no
//! time service has disciplined the clock for a while (its maximum error
//! has grown to 16 seconds). [`ClockState::decode`] holds that rule, apart
//! from the call, so it is tested with any status.
//!
//! The only unsafe code of the crate is the call itself, in [`adjtimex`].

use std::io;
use std::time::Duration;

use libc::{c_int, c_long};

/// What the kernel says about the system clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClockState {
    /// Whether a time service keeps the clock synchronised.
    pub synchronisation: Synchronisation,
    /// The kernel's maximum error of the clock (`maxerror`).
    pub max_error: Duration,
    /// The kernel's estimated error of the clock (`esterror`).
    pub estimated_error: Duration,
}

/// Whether the clock is synchronised.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Synchronisation {
    Synchronised,
    /// `adjtimex` returned `TIME_ERROR` or set `STA_UNSYNC`.
    Unsynchronised,
}

impl ClockState {
    /// The state from what `adjtimex` returned (`clock_state`, one of the
    /// `TIME_*` values) and the fields it filled in: `status` (the `STA_*`
    /// bits) and `maxerror` and `esterror` in microseconds (a negative
    /// error counts as none).
    pub fn decode(
        clock_state: c_int,
        status: c_int,
        maxerror: c_long,
        esterror: c_long,
    ) -> ClockState {
        let unsynchronised =
            clock_state == libc::TIME_ERROR || status & libc::STA_UNSYNC == libc::STA_UNSYNC;
        ClockState {
            synchronisation: if unsynchronised {
                Synchronisation::Unsynchronised
            } else {
                Synchronisation::Synchronised
            },
            max_error: micros(maxerror),
            estimated_error: micros(esterror),
        }
    }

    /// True when the clock is synchronised.
    pub fn is_synchronised(&self) -> bool {
        self.synchronisation == Synchronisation::Synchronised
    }
}

fn micros(value: c_long) -> Duration {
    Duration::from_micros(u64::try_from(value).unwrap_or(0))
}

/// Reads the clock state from the kernel; an error only when the system
/// call fails (a seccomp filter that refuses it, for one).
pub fn read() -> io::Result<ClockState> {
    let (clock_state, tx) = adjtimex()?;
    Ok(ClockState::decode(
        clock_state,
        tx.status,
        tx.maxerror,
        tx.esterror,
    ))
}

/// `adjtimex(2)` with `modes = 0`: reads, changes nothing.
#[allow(unsafe_code)] // the crate's one call into the C library
fn adjtimex() -> io::Result<(c_int, libc::timex)> {
    let mut tx = std::mem::MaybeUninit::<libc::timex>::zeroed();
    // SAFETY: `timex` is a C struct of integers, for which all-zero bytes
    // are a valid value (and `modes = 0` asks for a read only); the pointer
    // is to a live, writable, properly aligned `timex` that the kernel
    // fills in before the call returns, and it is not kept afterwards.
    let (clock_state, tx) = unsafe {
        let clock_state = libc::adjtimex(tx.as_mut_ptr());
        (clock_state, tx.assume_init())
    };
    if clock_state == -1 {
        return Err(io::Error::last_os_error());
    }
    Ok((clock_state, tx))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TIME_OK: i32 = 0;
    const TIME_INS: i32 = 1;
    const STA_PLL: i32 = 0x0001;
    const STA_NANO: i32 = 0x2000;

    #[test]
    fn a_disciplined_clock_is_synchronised() {
        let state = ClockState::decode(TIME_OK, STA_PLL | STA_NANO, 12_345, 678);
        assert_eq!(
            state,
            ClockState {
                synchronisation: Synchronisation::Synchronised,
                max_error: Duration::from_micros(12_345),
                estimated_error: Duration::from_micros(678),
            }
        );
        assert!(state.is_synchronised());
        // A leap second announced is no reason to worry.
        assert!(ClockState::decode(TIME_INS, STA_PLL, 0, 0).is_synchronised());
    }

    #[test]
    fn sta_unsync_or_time_error_is_unsynchronised() {
        // What an undisciplined kernel reports: both, and 16 s of error.
        let state = ClockState::decode(libc::TIME_ERROR, libc::STA_UNSYNC, 16_000_000, 16_000_000);
        assert_eq!(state.synchronisation, Synchronisation::Unsynchronised);
        assert_eq!(state.max_error, Duration::from_secs(16));
        // Either alone is enough.
        assert!(!ClockState::decode(TIME_OK, libc::STA_UNSYNC | STA_PLL, 0, 0).is_synchronised());
        assert!(!ClockState::decode(libc::TIME_ERROR, STA_PLL, 0, 0).is_synchronised());
    }

    #[test]
    fn a_negative_error_counts_as_none() {
        let state = ClockState::decode(TIME_OK, 0, -1, c_long::MIN);
        assert_eq!(state.max_error, Duration::ZERO);
        assert_eq!(state.estimated_error, Duration::ZERO);
    }

    #[test]
    fn reads_this_kernel() {
        // No privilege needed; the answer depends on the host's time
        // service, so only its bounds are checked here (the end-to-end test
        // compares it with adjtimex(8)): the kernel caps the maximum error
        // at 16 seconds.
        let state = read().expect("adjtimex");
        assert!(state.max_error <= Duration::from_secs(16), "{state:?}");
    }
}
