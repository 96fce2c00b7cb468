//! The clock watch: TOTP codes are computed from the time, so otpd reads
//! the kernel's clock synchronisation state ([`otpclock`]) at start and
//! every minute, records it for `/metrics`, and says in the log when it
//! changes: a warning when the clock is not synchronised (at start, and
//! each time it turns so) or cannot be read, an info line when it is
//! synchronised (at start, and when it is back).

use std::io;
use std::pin::pin;
use std::sync::Arc;
use std::time::Duration;

use otpclock::ClockState;

use crate::daemon::{Daemon, Shutdown};

/// How often the clock state is read.
const EVERY: Duration = Duration::from_secs(60);

/// What a reading says, as far as the log is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Seen {
    Synchronised,
    Unsynchronised,
    Unreadable,
}

impl Seen {
    fn of(reading: &io::Result<ClockState>) -> Seen {
        match reading {
            Ok(state) if state.is_synchronised() => Seen::Synchronised,
            Ok(_) => Seen::Unsynchronised,
            Err(_) => Seen::Unreadable,
        }
    }
}

/// The log line for `reading` when it differs from the `last` one seen
/// (`None`: the first reading); `None` when nothing changed.
fn change(last: Option<Seen>, reading: &io::Result<ClockState>) -> Option<(log::Level, String)> {
    let seen = Seen::of(reading);
    if last == Some(seen) {
        return None;
    }
    Some(match reading {
        Ok(state) if state.is_synchronised() => (
            log::Level::Info,
            format!(
                "clock: the system clock is {}synchronised (maximum error {:.3} s)",
                if last.is_some() { "again " } else { "" },
                state.max_error.as_secs_f64()
            ),
        ),
        Ok(state) => (
            log::Level::Warn,
            format!(
                "clock: the system clock is not synchronised (maximum error {:.3} s): \
                 codes are checked against it, so a drifting clock refuses good codes; \
                 check the time service (chronyc tracking, timedatectl timesync-status)",
                state.max_error.as_secs_f64()
            ),
        ),
        Err(e) => (
            log::Level::Warn,
            format!("clock: cannot read the clock's synchronisation state: {e}"),
        ),
    })
}

/// Reads the clock state now and every minute until `shutdown`.
pub async fn watch(daemon: Arc<Daemon>, shutdown: Shutdown) {
    let mut stop = pin!(shutdown.wait());
    let mut last = None;
    loop {
        let reading = otpclock::read();
        daemon.metrics().clock(&reading);
        if let Some((level, line)) = change(last, &reading) {
            log::log!(level, "{line}");
        }
        last = Some(Seen::of(&reading));
        tokio::select! {
            () = &mut stop => return,
            () = tokio::time::sleep(EVERY) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STA_UNSYNC: i32 = 0x0040;

    fn synchronised() -> io::Result<ClockState> {
        Ok(ClockState::decode(0, 0, 20_000, 100))
    }

    fn unsynchronised() -> io::Result<ClockState> {
        Ok(ClockState::decode(5, STA_UNSYNC, 16_000_000, 16_000_000))
    }

    fn unreadable() -> io::Result<ClockState> {
        Err(io::Error::from_raw_os_error(1))
    }

    #[test]
    fn the_first_reading_is_always_told() {
        let (level, line) = change(None, &unsynchronised()).expect("a warning");
        assert_eq!(level, log::Level::Warn);
        assert!(
            line.contains("not synchronised (maximum error 16.000 s)"),
            "{line}"
        );
        let (level, line) = change(None, &synchronised()).expect("an info line");
        assert_eq!(level, log::Level::Info);
        assert_eq!(
            line,
            "clock: the system clock is synchronised (maximum error 0.020 s)"
        );
    }

    #[test]
    fn a_change_is_told_once() {
        let mut last = None;
        let mut told = Vec::new();
        for reading in [
            synchronised(),
            synchronised(),
            unsynchronised(),
            unsynchronised(),
            unsynchronised(),
            synchronised(),
            unreadable(),
            unreadable(),
            synchronised(),
        ] {
            told.push(change(last, &reading).map(|(level, _)| level));
            last = Some(Seen::of(&reading));
        }
        use log::Level::{Info, Warn};
        assert_eq!(
            told,
            [
                Some(Info),
                None,
                Some(Warn),
                None,
                None,
                Some(Info),
                Some(Warn),
                None,
                Some(Info)
            ]
        );
        let back = change(Some(Seen::Unsynchronised), &synchronised()).expect("told");
        assert!(back.1.contains("is again synchronised"), "{}", back.1);
        let failed = change(Some(Seen::Synchronised), &unreadable()).expect("told");
        assert!(failed.1.contains("cannot read"), "{}", failed.1);
    }
}
