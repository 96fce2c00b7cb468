//! TOTP codes through oathtool (the phone), and the clock.

use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::process::{assert_success, stdout};

/// Normalises a base32 secret for oathtool: no spaces or hyphens, upper
/// case, padded to a multiple of eight characters.
pub fn normalize_base32(secret: &str) -> String {
    let mut s: String = secret
        .chars()
        .filter(|c| !matches!(c, ' ' | '-' | '='))
        .map(|c| c.to_ascii_uppercase())
        .collect();
    let padding = (8 - s.len() % 8) % 8;
    for _ in 0..padding {
        s.push('=');
    }
    s
}

/// The current TOTP code (SHA1, 6 digits) for `secret` with a `period` of
/// 60 or 30 seconds, as `oathtool --totp=SHA1 -s PERIOD -b SECRET` prints it.
pub fn oathtool_code(secret: &str, period: u64) -> String {
    oathtool_code_at(secret, period, now_unix())
}

/// A 6-digit code that is neither the current 60-second nor the current
/// 30-second code of `secret`.
pub fn wrong_code(secret: &str) -> String {
    let right60 = oathtool_code(secret, 60);
    let right30 = oathtool_code(secret, 30);
    (1..10u8)
        .map(|shift| {
            right60
                .bytes()
                .map(|b| char::from(b'0' + (b - b'0' + shift) % 10))
                .collect::<String>()
        })
        .find(|c| *c != right60 && *c != right30)
        .expect("some shifted code differs")
}

/// Seconds since the epoch, as otpd counts them.
pub use otpproto::clock::unix_now as now_unix;

/// Sleeps into the next time step when fewer than 4 seconds of the current
/// `period`-second step remain, so a code computed now is still current
/// when the daemon checks it.
pub fn wait_for_fresh_step(period: u64) {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs_f64();
    let into = now % period as f64;
    if into > period as f64 - 4.0 {
        std::thread::sleep(Duration::from_secs_f64(period as f64 - into + 0.5));
    }
}

/// Parses an RFC 3339 UTC time (`2026-11-27T20:00:00Z`, optionally with
/// fractional seconds or `+00:00`) into seconds since the epoch.
pub fn parse_rfc3339_utc(text: &str) -> Option<i64> {
    let (date, time) = text.split_once(['T', 't'])?;
    let time = time
        .strip_suffix(['Z', 'z'])
        .or_else(|| time.strip_suffix("+00:00"))?;
    let mut d = date.split('-').map(|p| p.parse::<i64>().ok());
    let (y, m, day) = (d.next()??, d.next()??, d.next()??);
    let time = time.split('.').next()?;
    let mut t = time.split(':').map(|p| p.parse::<i64>().ok());
    let (hh, mm, ss) = (t.next()??, t.next()??, t.next()??);
    if !(1..=12).contains(&m) || !(1..=31).contains(&day) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from civil (Howard Hinnant's algorithm).
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// The TOTP code (SHA1, 6 digits) of `secret` at `at` seconds since the
/// epoch, as `oathtool --totp=SHA1 -s PERIOD -N @AT -b SECRET` prints it.
pub fn oathtool_code_at(secret: &str, period: u64, at: u64) -> String {
    let output = Command::new("oathtool")
        .arg("--totp=SHA1")
        .arg("-s")
        .arg(period.to_string())
        .arg("-N")
        .arg(format!("@{at}"))
        .arg("-b")
        .arg(normalize_base32(secret))
        .output()
        .expect("run oathtool");
    assert_success(&output, "oathtool");
    let code = stdout(&output).trim().to_owned();
    assert!(
        code.len() == 6 && code.bytes().all(|b| b.is_ascii_digit()),
        "oathtool printed {code:?}"
    );
    code
}

/// A google-authenticator file at `path` made by Debian's
/// `google-authenticator` (time-based, 30 s, codes used once, no
/// questions); its secret from the first line.
pub fn google_authenticator_file(path: &std::path::Path) -> String {
    let output = Command::new("google-authenticator")
        .args(["-t", "-d", "-f", "-r", "3", "-R", "30", "-w", "3", "-s"])
        .arg(path)
        .args(["-Q", "NONE", "-q"])
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run google-authenticator (libpam-google-authenticator)");
    assert_success(&output, "google-authenticator");
    let text = std::fs::read_to_string(path).expect("read the google-authenticator file");
    assert!(text.contains("\" TOTP_AUTH"), "{text}");
    text.lines().next().expect("first line").trim().to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339() {
        assert_eq!(parse_rfc3339_utc("1970-01-01T00:00:00Z"), Some(0));
        assert_eq!(
            parse_rfc3339_utc("2026-11-27T20:00:00Z"),
            Some(1_795_809_600)
        );
        assert_eq!(
            parse_rfc3339_utc("2000-03-01T00:00:00.5+00:00"),
            Some(951_868_800)
        );
        assert_eq!(parse_rfc3339_utc("2026-11-27 20:00"), None);
    }

    #[test]
    fn base32_padding() {
        assert_eq!(normalize_base32("jbsw y3dp"), "JBSWY3DP");
        assert_eq!(
            normalize_base32("JBSWY3DPEHPK3PXPJBSWY3DPEH"),
            "JBSWY3DPEHPK3PXPJBSWY3DPEH======"
        );
    }
}
