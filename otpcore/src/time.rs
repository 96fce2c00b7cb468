//! Calendar formatting of Unix times, without a clock.

/// Civil date (year, month, day) of a count of days since 1970-01-01
/// (Howard Hinnant's days-to-civil algorithm).
fn civil(days: i64) -> (i64, u32, u32) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let month = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day)
}

/// `unix` seconds as RFC 3339 UTC: `2026-11-27T20:00:00Z`. Times past
/// year 9999 show as 9999-12-31T23:59:59Z.
pub fn rfc3339(unix: u64) -> String {
    let secs = i64::try_from(unix.min(LAST)).unwrap_or(0);
    let (y, m, d) = civil(secs.div_euclid(86_400));
    let t = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}Z",
        t / 3600,
        t / 60 % 60,
        t % 60
    )
}

/// 9999-12-31T23:59:59Z, the last time RFC 3339 can write.
const LAST: u64 = 253_402_300_799;

/// Parses `YYYY-MM-DD` or RFC 3339 UTC (`…T…Z`) into Unix seconds; years
/// 1970 to 9999.
pub fn parse_rfc3339(text: &str) -> Option<u64> {
    let (date, time) = match text.split_once('T') {
        Some((d, t)) => (d, Some(t.strip_suffix('Z')?)),
        None => (text, None),
    };
    let mut parts = date.splitn(3, '-').map(|p| p.parse::<i64>().ok());
    let (y, m, d) = (parts.next()??, parts.next()??, parts.next()??);
    if !(1970..=9999).contains(&y) || !(1..=12).contains(&m) || !(1..=31).contains(&d) {
        return None;
    }
    let seconds = match time {
        Some(t) => {
            let mut hms = t.splitn(3, ':').map(|p| p.parse::<i64>().ok());
            let (h, mi, s) = (hms.next()??, hms.next()??, hms.next()??);
            if !(0..24).contains(&h) || !(0..60).contains(&mi) || !(0..61).contains(&s) {
                return None;
            }
            h * 3600 + mi * 60 + s
        }
        None => 0,
    };
    // Inverse of `civil` (days-from-civil).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y.rem_euclid(400);
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    u64::try_from(days * 86_400 + seconds).ok()
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_dates() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_111_111_109), "2005-03-18T01:58:29Z");
        assert_eq!(rfc3339(951_782_400), "2000-02-29T00:00:00Z");
        assert_eq!(rfc3339(2_000_000_000), "2033-05-18T03:33:20Z");
    }

    #[test]
    fn parse_round_trips() {
        for t in [0, 951_782_400, 1_111_111_109, 1_800_000_000, 4_102_444_800] {
            assert_eq!(parse_rfc3339(&rfc3339(t)), Some(t));
        }
        assert_eq!(parse_rfc3339("2000-02-29"), Some(951_782_400));
        assert_eq!(parse_rfc3339("2000-13-01"), None);
        assert_eq!(parse_rfc3339("yesterday"), None);
    }

    #[test]
    fn extreme_times_neither_overflow_nor_wrap() {
        assert_eq!(rfc3339(LAST), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(u64::MAX), "9999-12-31T23:59:59Z");
        assert_eq!(rfc3339(1 << 63), "9999-12-31T23:59:59Z");
        assert_eq!(parse_rfc3339("9999-12-31T23:59:59Z"), Some(LAST));
        for text in [
            "9223372036854775807-01-01",
            "-9223372036854775808-01-01",
            "10000-01-01",
            "1969-12-31",
        ] {
            assert_eq!(parse_rfc3339(text), None, "{text}");
        }
    }
}
