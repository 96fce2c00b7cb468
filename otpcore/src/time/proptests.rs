//! Property tests of the dates otpctl reads (`audit --since`): every time
//! up to year 9999 is read back from how it is written, a date is its
//! midnight, and any text is read or refused without a panic.

use proptest::prelude::*;

use super::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(1024))]

    /// Every time RFC 3339 can write is read back as itself.
    #[test]
    fn written_times_are_read_back(t in 0..=LAST) {
        prop_assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
    }

    /// `YYYY-MM-DD` is that day's midnight, UTC.
    #[test]
    fn a_date_is_its_midnight(t in 0..=LAST) {
        let written = rfc3339(t);
        let (date, _) = written.split_once('T').unwrap_or((&written, ""));
        prop_assert_eq!(parse_rfc3339(date), Some(t - t % 86_400));
    }

    /// Any text: a time no later than the last second of year 9999 (a
    /// leap second aside), or nothing.
    #[test]
    fn any_text_is_a_time_within_range_or_nothing(
        text in prop_oneof![
            "\\PC{0,24}",
            "-?[0-9]{1,20}-[0-9]{1,3}-[0-9]{1,3}(T[0-9]{1,3}:[0-9]{1,3}:[0-9]{1,3}Z?)?",
        ],
    ) {
        if let Some(t) = parse_rfc3339(&text) {
            prop_assert!(t <= LAST + 60, "{:?} is {}", text, t);
            // The year written, or the next one after a leap second on
            // 31 December.
            let written = text.split('-').next().and_then(|y| y.parse::<u64>().ok());
            let read = rfc3339(t).get(..4).and_then(|y| y.parse::<u64>().ok());
            prop_assert!(
                written.is_some_and(|y| read == Some(y) || read == Some(y + 1)),
                "{:?} is {}", text, rfc3339(t)
            );
        }
    }
}
