//! HOTP (RFC 4226) and TOTP (RFC 6238) arithmetic. Time is always a
//! parameter: nothing here reads a clock.

use serde::{Deserialize, Serialize};
use subtle::ConstantTimeEq;
use totp_rs::TOTP;
use zeroize::Zeroizing;

/// The HMAC hash a token uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Algorithm {
    #[serde(rename = "SHA1")]
    Sha1,
    #[serde(rename = "SHA256")]
    Sha256,
    #[serde(rename = "SHA512")]
    Sha512,
}

impl Algorithm {
    /// The name used in otpauth URIs, the database and the config.
    pub fn as_str(self) -> &'static str {
        match self {
            Algorithm::Sha1 => "SHA1",
            Algorithm::Sha256 => "SHA256",
            Algorithm::Sha512 => "SHA512",
        }
    }

    /// Parses the names `as_str` produces.
    pub fn parse(name: &str) -> Option<Self> {
        match name {
            "SHA1" => Some(Algorithm::Sha1),
            "SHA256" => Some(Algorithm::Sha256),
            "SHA512" => Some(Algorithm::Sha512),
            _ => None,
        }
    }

    /// Secret length recommended for this hash: its output size.
    pub fn secret_len(self) -> usize {
        match self {
            Algorithm::Sha1 => 20,
            Algorithm::Sha256 => 32,
            Algorithm::Sha512 => 64,
        }
    }

    fn to_totp_rs(self) -> totp_rs::Algorithm {
        match self {
            Algorithm::Sha1 => totp_rs::Algorithm::SHA1,
            Algorithm::Sha256 => totp_rs::Algorithm::SHA256,
            Algorithm::Sha512 => totp_rs::Algorithm::SHA512,
        }
    }
}

/// What, besides the secret, defines a token's codes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TokenParams {
    pub algorithm: Algorithm,
    /// 6 to 8.
    pub digits: u32,
    /// Seconds per time step, at least 1.
    pub period: u64,
}

fn generator(secret: &[u8], algorithm: Algorithm, digits: u32, step: u64) -> TOTP {
    TOTP::new_unchecked(
        algorithm.to_totp_rs(),
        digits as usize,
        0,
        step,
        secret.to_vec(),
    )
}

/// RFC 4226 HOTP value for `counter`.
pub fn hotp(secret: &[u8], counter: u64, digits: u32, algorithm: Algorithm) -> Zeroizing<String> {
    // A one-second TOTP at time `counter` is HOTP at that counter.
    Zeroizing::new(generator(secret, algorithm, digits, 1).generate(counter))
}

impl TokenParams {
    /// The time step that contains `unix_time`.
    pub fn step_at(&self, unix_time: u64) -> u64 {
        unix_time / self.period.max(1)
    }

    /// The code of time step `step`.
    pub fn code_for_step(&self, secret: &[u8], step: u64) -> Zeroizing<String> {
        hotp(secret, step, self.digits, self.algorithm)
    }

    /// The code shown at `unix_time`.
    pub fn code_at(&self, secret: &[u8], unix_time: u64) -> Zeroizing<String> {
        self.code_for_step(secret, self.step_at(unix_time))
    }

    /// The time step within `window` steps of `unix_time` whose code is
    /// `code`, earliest first. Every candidate is compared in constant time,
    /// so the answer's timing does not depend on which step (if any) matched.
    pub fn matching_step(
        &self,
        secret: &[u8],
        code: &str,
        unix_time: u64,
        window: u64,
    ) -> Option<u64> {
        let now = self.step_at(unix_time);
        first_match(
            now.saturating_sub(window)..=now.saturating_add(window),
            code,
            self.digits,
            |step| self.code_for_step(secret, step),
        )
    }
}

/// Whether `code` has the form of a code of `digits` digits.
pub(crate) fn is_code(code: &str, digits: u32) -> bool {
    code.len() == digits as usize && code.bytes().all(|b| b.is_ascii_digit())
}

/// The first of `candidates` whose code (`code_of`) is `code`. Every
/// candidate is compared in constant time, so the answer's timing does not
/// depend on which one (if any) matched.
pub(crate) fn first_match(
    candidates: impl IntoIterator<Item = u64>,
    code: &str,
    digits: u32,
    code_of: impl Fn(u64) -> Zeroizing<String>,
) -> Option<u64> {
    if !is_code(code, digits) {
        return None;
    }
    let mut found = None;
    for candidate in candidates {
        let equal: bool = code_of(candidate).as_bytes().ct_eq(code.as_bytes()).into();
        if equal && found.is_none() {
            found = Some(candidate);
        }
    }
    found
}

/// RFC 4648 base32 without padding, as authenticator apps expect it.
pub fn base32(secret: &[u8]) -> Zeroizing<String> {
    Zeroizing::new(data_encoding::BASE32_NOPAD.encode(secret))
}

/// Decodes base32 as people and other tools write it: any case, with or
/// without padding, spaces and hyphens ignored.
pub fn decode_base32(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    let cleaned: Zeroizing<String> = Zeroizing::new(
        text.chars()
            .filter(|c| !c.is_whitespace() && *c != '-' && *c != '=')
            .map(|c| c.to_ascii_uppercase())
            .collect(),
    );
    data_encoding::BASE32_NOPAD
        .decode(cleaned.as_bytes())
        .ok()
        .filter(|s| !s.is_empty())
        .map(Zeroizing::new)
}

/// The base32 secret in groups of four, for typing by hand.
pub fn grouped(base32: &str) -> Zeroizing<String> {
    let chars: Vec<char> = base32.chars().collect();
    Zeroizing::new(
        chars
            .chunks(4)
            .map(|c| c.iter().collect::<String>())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

fn uri_escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for b in text.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The Key URI Format understood by authenticator apps:
/// `otpauth://totp/ISSUER:ACCOUNT?secret=…&issuer=…&algorithm=…&digits=…&period=…`.
pub fn otpauth_uri(
    issuer: &str,
    account: &str,
    secret: &[u8],
    params: &TokenParams,
) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "otpauth://totp/{}:{}?secret={}&issuer={}&algorithm={}&digits={}&period={}",
        uri_escape(issuer),
        uri_escape(account),
        base32(secret).as_str(),
        uri_escape(issuer),
        params.algorithm.as_str(),
        params.digits,
        params.period
    ))
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    const RFC_SHA1: &[u8] = b"12345678901234567890";
    const RFC_SHA256: &[u8] = b"12345678901234567890123456789012";
    const RFC_SHA512: &[u8] = b"1234567890123456789012345678901234567890123456789012345678901234";

    #[test]
    fn rfc4226_appendix_d() {
        let expected = [
            "755224", "287082", "359152", "969429", "338314", "254676", "287922", "162583",
            "399871", "520489",
        ];
        for (counter, code) in expected.iter().enumerate() {
            assert_eq!(
                hotp(RFC_SHA1, counter as u64, 6, Algorithm::Sha1).as_str(),
                *code
            );
        }
    }

    #[test]
    fn rfc6238_appendix_b() {
        let table: [(u64, &str, &str, &str); 6] = [
            (59, "94287082", "46119246", "90693936"),
            (1111111109, "07081804", "68084774", "25091201"),
            (1111111111, "14050471", "67062674", "99943326"),
            (1234567890, "89005924", "91819424", "93441116"),
            (2000000000, "69279037", "90698825", "38618901"),
            (20000000000, "65353130", "77737706", "47863826"),
        ];
        for (time, sha1, sha256, sha512) in table {
            for (secret, algorithm, code) in [
                (RFC_SHA1, Algorithm::Sha1, sha1),
                (RFC_SHA256, Algorithm::Sha256, sha256),
                (RFC_SHA512, Algorithm::Sha512, sha512),
            ] {
                let params = TokenParams {
                    algorithm,
                    digits: 8,
                    period: 30,
                };
                assert_eq!(
                    params.code_at(secret, time).as_str(),
                    code,
                    "{time} {algorithm:?}"
                );
            }
        }
    }

    #[test]
    fn matching_step_honours_window_and_format() {
        let params = TokenParams {
            algorithm: Algorithm::Sha1,
            digits: 6,
            period: 60,
        };
        let now = 1_700_000_000;
        let step = params.step_at(now);
        let previous = params.code_for_step(RFC_SHA1, step - 1);
        assert_eq!(
            params.matching_step(RFC_SHA1, &previous, now, 1),
            Some(step - 1)
        );
        assert_eq!(params.matching_step(RFC_SHA1, &previous, now, 0), None);
        let far = params.code_for_step(RFC_SHA1, step + 3);
        assert_eq!(params.matching_step(RFC_SHA1, &far, now, 1), None);
        assert_eq!(params.matching_step(RFC_SHA1, "12345", now, 1), None);
        assert_eq!(params.matching_step(RFC_SHA1, "12a456", now, 1), None);
    }

    #[test]
    fn base32_round_trip_and_grouping() {
        let encoded = base32(RFC_SHA1);
        assert_eq!(encoded.as_str(), "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ");
        let spaced = grouped(&encoded);
        assert_eq!(spaced.as_str(), "GEZD GNBV GY3T QOJQ GEZD GNBV GY3T QOJQ");
        let back = decode_base32(&spaced.to_lowercase()).map(|s| s.to_vec());
        assert_eq!(back.as_deref(), Some(RFC_SHA1));
        assert!(decode_base32("not base32!").is_none());
        assert!(decode_base32("").is_none());
    }

    #[test]
    fn otpauth_uri_carries_every_parameter() {
        let params = TokenParams {
            algorithm: Algorithm::Sha256,
            digits: 8,
            period: 60,
        };
        let uri = otpauth_uri("Example Corp", "alice@host", RFC_SHA1, &params);
        assert_eq!(
            uri.as_str(),
            "otpauth://totp/Example%20Corp:alice%40host?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ\
             &issuer=Example%20Corp&algorithm=SHA256&digits=8&period=60"
        );
    }
}
