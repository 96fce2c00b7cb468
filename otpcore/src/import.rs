//! Reading tokens kept elsewhere, for migration (`otpctl import`):
//! CSV lines `user,base32secret[,period,digits,algorithm]`, and the files
//! that google-authenticator-libpam keeps per user. Parsing only; the store
//! imports what parsed, all or nothing.

use zeroize::Zeroizing;

use crate::totp::{decode_base32, Algorithm, TokenParams};

/// A token read from a migration file.
pub struct Token {
    pub user: String,
    pub secret: Zeroizing<Vec<u8>>,
    pub params: TokenParams,
    /// The last time step (of `params.period` seconds) the file records as
    /// used; codes of it and earlier steps must stay refused.
    pub last_step: Option<u64>,
}

/// Why a line or file cannot be imported. Never quotes a field of the
/// file: a misplaced secret would be shown.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ImportError {
    #[error("line {line}: {message}")]
    Line { line: usize, message: String },
    #[error("{0}")]
    File(String),
}

const DEFAULT: TokenParams = TokenParams {
    algorithm: Algorithm::Sha1,
    digits: 6,
    period: 30,
};

/// A login name as the CLI accepts it: 1 to 64 of `A-Z a-z 0-9 . _ - @`,
/// not starting with `-`.
pub fn valid_user(user: &str) -> bool {
    !user.is_empty()
        && user.len() <= 64
        && !user.starts_with('-')
        && user
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-@".contains(c))
}

fn secret(text: &str) -> Option<Zeroizing<Vec<u8>>> {
    decode_base32(text).filter(|s| s.len() >= 10)
}

/// Parses CSV lines `user,base32secret[,period,digits,algorithm]`. Blank
/// lines and lines starting with `#` are skipped. Missing columns take the
/// authenticator-app defaults (30 s, 6 digits, SHA1). Every bad line is
/// reported; any bad line fails the whole file.
pub fn parse_csv(text: &str) -> Result<Vec<Token>, Vec<ImportError>> {
    let mut tokens = Vec::new();
    let mut errors = Vec::new();
    for (n, raw) in text.lines().enumerate() {
        let line = n + 1;
        let trimmed = raw.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        match parse_csv_line(trimmed) {
            Ok(token) => tokens.push(token),
            Err(message) => errors.push(ImportError::Line { line, message }),
        }
    }
    if errors.is_empty() {
        Ok(tokens)
    } else {
        Err(errors)
    }
}

fn parse_csv_line(line: &str) -> Result<Token, String> {
    let fields: Vec<&str> = line.split(',').map(str::trim).collect();
    if !(2..=5).contains(&fields.len()) {
        return Err(format!(
            "expected user,base32secret[,period,digits,algorithm], found {} fields",
            fields.len()
        ));
    }
    // No message quotes a field: with the columns swapped, the user column
    // holds the secret.
    let swapped = "; are the columns swapped? (expected user,base32secret)";
    let user = fields[0];
    let hint = || if secret(user).is_some() { swapped } else { "" };
    if !valid_user(user) {
        return Err(format!(
            "column 1 (user) must be 1 to 64 of A-Z a-z 0-9 . _ - @{}",
            hint()
        ));
    }
    let secret = secret(fields[1]).ok_or_else(|| {
        format!(
            "column 2 (secret) is not base32 of at least 80 bits{}",
            hint()
        )
    })?;
    let period = match fields.get(2) {
        Some(p) => p
            .parse::<u64>()
            .ok()
            .filter(|p| (15..=300).contains(p))
            .ok_or("column 3 (period) must be 15 to 300 seconds")?,
        None => DEFAULT.period,
    };
    let digits = match fields.get(3) {
        Some(d) => d
            .parse::<u32>()
            .ok()
            .filter(|d| (6..=8).contains(d))
            .ok_or("column 4 (digits) must be 6, 7 or 8")?,
        None => DEFAULT.digits,
    };
    let algorithm = match fields.get(4) {
        Some(a) => Algorithm::parse(&a.to_ascii_uppercase())
            .ok_or("column 5 (algorithm) must be SHA1, SHA256 or SHA512")?,
        None => DEFAULT.algorithm,
    };
    Ok(Token {
        user: user.to_owned(),
        secret,
        params: TokenParams {
            algorithm,
            digits,
            period,
        },
        last_step: None,
    })
}

/// Parses a google-authenticator-libpam file for `user`: the base32 secret
/// on the first line, then `" OPTION` lines and scratch codes. Only TOTP
/// files can be imported (`" TOTP_AUTH`); `" STEP_SIZE` sets the period.
/// `" DISALLOW_REUSE` lists the time steps (of the file's step size) whose
/// codes were used; the latest becomes the token's last used step.
/// Scratch codes are not carried over.
pub fn parse_google_authenticator(user: &str, text: &str) -> Result<Token, ImportError> {
    let fail = |message: &str| ImportError::File(message.to_owned());
    if !valid_user(user) {
        return Err(fail("the user name must be 1 to 64 of A-Z a-z 0-9 . _ - @"));
    }
    let mut lines = text.lines();
    let first = lines.next().ok_or_else(|| fail("the file is empty"))?;
    let secret =
        secret(first.trim()).ok_or_else(|| fail("the first line is not a base32 secret"))?;
    let mut totp = false;
    let mut period = DEFAULT.period;
    let mut last_step = None;
    for (n, line) in lines.enumerate() {
        let Some(option) = line.strip_prefix("\" ") else {
            continue;
        };
        let mut words = option.split_whitespace();
        match words.next() {
            Some("TOTP_AUTH") => totp = true,
            Some("HOTP_COUNTER") => {
                return Err(fail(
                    "counter-based (HOTP) tokens cannot be imported; issue a new token",
                ))
            }
            Some("STEP_SIZE") => {
                period = words
                    .next()
                    .and_then(|p| p.parse::<u64>().ok())
                    .filter(|p| (15..=300).contains(p))
                    .ok_or_else(|| ImportError::Line {
                        line: n + 2,
                        message: "STEP_SIZE must be 15 to 300 seconds".to_owned(),
                    })?;
            }
            Some("DISALLOW_REUSE") => {
                for word in words {
                    let step = word.parse::<u64>().map_err(|_| ImportError::Line {
                        line: n + 2,
                        message: "DISALLOW_REUSE must be followed by time step numbers only"
                            .to_owned(),
                    })?;
                    last_step = last_step.max(Some(step));
                }
            }
            _ => {}
        }
    }
    if !totp {
        return Err(fail("no \" TOTP_AUTH line: not a time-based token"));
    }
    Ok(Token {
        user: user.to_owned(),
        secret,
        params: TokenParams { period, ..DEFAULT },
        // The steps are of the file's step size, which is the token's period.
        last_step,
    })
}

#[cfg(test)]
mod proptests;

#[cfg(test)]
mod tests {
    use super::*;

    const SECRET: &str = "GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ";

    #[test]
    fn csv_lines_with_and_without_options() {
        let text = format!("# migrated\n\nalice,{SECRET}\nbob, {SECRET} ,60,8,sha256\n");
        let tokens = parse_csv(&text)
            .map_err(|e| format!("{e:?}"))
            .expect("parses");
        assert_eq!(tokens.len(), 2);
        assert_eq!(tokens[0].user, "alice");
        assert_eq!(tokens[0].params, DEFAULT);
        assert_eq!(tokens[0].secret.as_slice(), b"12345678901234567890");
        assert_eq!(
            tokens[1].params,
            TokenParams {
                algorithm: Algorithm::Sha256,
                digits: 8,
                period: 60
            }
        );
    }

    #[test]
    fn any_bad_csv_line_fails_the_file_and_names_each_line() {
        let text = format!(
            "alice,{SECRET}\nbob\ncarol,not-base32!\ndave,{SECRET},5\neve,{SECRET},30,9\n\
             frank,{SECRET},30,6,MD5\n-x,{SECRET}\n"
        );
        let errors = parse_csv(&text).err().expect("refused");
        let lines: Vec<usize> = errors
            .iter()
            .map(|e| match e {
                ImportError::Line { line, .. } => *line,
                ImportError::File(_) => 0,
            })
            .collect();
        assert_eq!(lines, [2, 3, 4, 5, 6, 7]);
        assert!(errors.iter().all(|e| !e.to_string().contains(SECRET)));
    }

    #[test]
    fn swapped_columns_never_quote_the_secret() {
        // Secrets as apps show them (groups of four) and as files keep
        // them (padded), in the user column.
        let grouped = "JBSW Y3DP EHPK 3PXP GEZD GNBV";
        let padded = "JBSWY3DPEHPK3PXP====";
        let text = format!("{grouped},alice\n{padded},bob\n{SECRET},carol\n");
        let errors = parse_csv(&text).err().expect("refused");
        assert_eq!(errors.len(), 3, "{errors:?}");
        for (error, line) in errors.iter().zip(1..) {
            let message = error.to_string();
            assert!(message.starts_with(&format!("line {line}: ")), "{message}");
            assert!(message.contains("column"), "{message}");
            for secret in [grouped, padded, SECRET] {
                for part in secret.split([' ', '=']).filter(|p| p.len() >= 4) {
                    assert!(!message.contains(part), "{message} quotes {part}");
                }
            }
            for user in ["alice", "bob", "carol"] {
                assert!(!message.contains(user), "{message} quotes {user}");
            }
        }
        assert!(
            errors.iter().all(|e| e.to_string().contains("swapped")),
            "{errors:?}"
        );
    }

    #[test]
    fn google_authenticator_files() {
        let text = format!("{SECRET}\n\" RATE_LIMIT 3 30\n\" WINDOW_SIZE 17\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n12345678\n87654321\n");
        let token = parse_google_authenticator("alice", &text)
            .map_err(|e| e.to_string())
            .expect("parses");
        assert_eq!(token.params, DEFAULT);
        let sixty = format!("{SECRET}\n\" STEP_SIZE 60\n\" TOTP_AUTH\n");
        let token = parse_google_authenticator("alice", &sixty)
            .map_err(|e| e.to_string())
            .expect("parses");
        assert_eq!(token.params.period, 60);
        let hotp = format!("{SECRET}\n\" HOTP_COUNTER 1\n");
        assert!(parse_google_authenticator("alice", &hotp).is_err());
        assert!(parse_google_authenticator("alice", "\" TOTP_AUTH\n").is_err());
        assert!(parse_google_authenticator("alice", &format!("{SECRET}\n")).is_err());
        assert!(parse_google_authenticator("bad user", &text).is_err());
    }

    #[test]
    fn google_authenticator_used_steps_become_the_last_step() {
        let text = format!(
            "{SECRET}\n\" RATE_LIMIT 3 30 1723887420\n\" DISALLOW_REUSE 57462914 57462915\n\" TOTP_AUTH\n"
        );
        let token = parse_google_authenticator("alice", &text)
            .map_err(|e| e.to_string())
            .expect("parses");
        assert_eq!(
            (token.params.period, token.last_step),
            (30, Some(57_462_915))
        );
        // The numbers are in no particular order; STEP_SIZE may come later.
        let sixty = format!(
            "{SECRET}\n\" DISALLOW_REUSE 28731458 28731456\n\" STEP_SIZE 60\n\" TOTP_AUTH\n"
        );
        let token = parse_google_authenticator("alice", &sixty)
            .map_err(|e| e.to_string())
            .expect("parses");
        assert_eq!(
            (token.params.period, token.last_step),
            (60, Some(28_731_458))
        );
        // No steps used yet.
        let fresh = format!("{SECRET}\n\" DISALLOW_REUSE\n\" TOTP_AUTH\n");
        let token = parse_google_authenticator("alice", &fresh)
            .map_err(|e| e.to_string())
            .expect("parses");
        assert_eq!(token.last_step, None);
        for bad in ["57462914 x", "-1", "5.5", "99999999999999999999999"] {
            let text = format!("{SECRET}\n\" TOTP_AUTH\n\" DISALLOW_REUSE {bad}\n");
            let err = parse_google_authenticator("alice", &text)
                .err()
                .expect("refused");
            assert!(matches!(err, ImportError::Line { line: 3, .. }), "{err}");
            assert!(!err.to_string().contains(SECRET), "{err}");
        }
        let csv = parse_csv(&format!("alice,{SECRET}\n"))
            .map_err(|e| format!("{e:?}"))
            .expect("parses");
        assert_eq!(csv[0].last_step, None);
    }
}
