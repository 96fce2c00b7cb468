//! Property tests of the migration parsers: CSV files and
//! google-authenticator files as `otpctl import` reads them from disk.
//! Whatever the text, the parsers answer without panicking; what they
//! accept is what was written; a refusal names each bad line, and never
//! quotes a field, so a misplaced secret is not shown.

use proptest::prelude::*;

use super::*;
use crate::totp::base32;

/// A login name `valid_user` accepts.
fn users() -> impl Strategy<Value = String> {
    "[A-Za-z0-9._@][A-Za-z0-9._@-]{0,63}"
}

/// Secret bytes as an import carries them: at least 80 bits.
fn secrets() -> impl Strategy<Value = Vec<u8>> {
    proptest::collection::vec(any::<u8>(), 10..40)
}

fn algorithms() -> impl Strategy<Value = Algorithm> {
    prop_oneof![
        Just(Algorithm::Sha1),
        Just(Algorithm::Sha256),
        Just(Algorithm::Sha512)
    ]
}

/// `secret` in base32 as people write it: either case, in groups of four
/// or in one piece, padded or not.
fn written_base32(secret: &[u8]) -> impl Strategy<Value = String> {
    let plain = base32(secret).to_string();
    (any::<bool>(), any::<bool>(), any::<bool>()).prop_map(move |(lower, grouped, padded)| {
        let mut text = if grouped {
            crate::totp::grouped(&plain).to_string()
        } else {
            plain.clone()
        };
        if padded {
            while text.chars().filter(|c| *c != ' ').count() % 8 != 0 {
                text.push('=');
            }
        }
        if lower {
            text = text.to_lowercase();
        }
        text
    })
}

/// One CSV token: user, secret, and the optional columns actually written
/// (period, digits, algorithm, as many as `columns` says).
#[derive(Debug, Clone)]
struct CsvToken {
    user: String,
    secret: Vec<u8>,
    written_secret: String,
    period: u64,
    digits: u32,
    algorithm: Algorithm,
    columns: usize,
    lowercase_algorithm: bool,
}

impl CsvToken {
    fn line(&self) -> String {
        let mut fields = vec![self.user.clone(), format!(" {} ", self.written_secret)];
        let optional = [
            self.period.to_string(),
            self.digits.to_string(),
            if self.lowercase_algorithm {
                self.algorithm.as_str().to_lowercase()
            } else {
                self.algorithm.as_str().to_owned()
            },
        ];
        fields.extend(optional.into_iter().take(self.columns - 2));
        fields.join(",")
    }

    /// The parameters the parser must give: the written columns, the
    /// authenticator-app defaults for the others.
    fn params(&self) -> TokenParams {
        TokenParams {
            period: if self.columns > 2 {
                self.period
            } else {
                DEFAULT.period
            },
            digits: if self.columns > 3 {
                self.digits
            } else {
                DEFAULT.digits
            },
            algorithm: if self.columns > 4 {
                self.algorithm
            } else {
                DEFAULT.algorithm
            },
        }
    }
}

fn csv_tokens() -> impl Strategy<Value = CsvToken> {
    (
        users(),
        secrets(),
        15u64..=300,
        6u32..=8,
        algorithms(),
        2usize..=5,
        any::<bool>(),
    )
        .prop_flat_map(
            |(user, secret, period, digits, algorithm, columns, lowercase_algorithm)| {
                written_base32(&secret).prop_map(move |written_secret| CsvToken {
                    user: user.clone(),
                    secret: secret.clone(),
                    written_secret,
                    period,
                    digits,
                    algorithm,
                    columns,
                    lowercase_algorithm,
                })
            },
        )
}

/// Lines that carry no token: blank, white space, comments.
fn skipped_lines() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[ \t]{1,4}",
        "[ \t]{0,2}#[^\n\r]{0,30}",
    ]
}

/// A field of a CSV line that may or may not parse: a user, a secret in
/// several spellings, numbers, algorithm names, or any text without a
/// comma or line break.
fn fields() -> impl Strategy<Value = String> {
    prop_oneof![
        users(),
        secrets().prop_flat_map(|s| written_base32(&s)),
        "[A-Z2-7]{0,20}",
        any::<u64>().prop_map(|n| n.to_string()),
        "-?[0-9]{1,4}",
        "(?i)sha(1|256|512|384)|md5",
        "[^,\n\r]{0,16}",
    ]
}

/// Lines of fields joined by commas, some of them blank or comments.
fn csv_lines() -> impl Strategy<Value = Vec<String>> {
    proptest::collection::vec(
        prop_oneof![
            3 => proptest::collection::vec(fields(), 0..7).prop_map(|f| f.join(",")),
            1 => csv_tokens().prop_map(|t| t.line()),
            1 => skipped_lines(),
        ],
        0..12,
    )
}

/// The fields of `lines` that look like a secret: eight or more base32
/// characters (spaces, `=` and case aside). No message of the parser has
/// such a run, so any one found in a message was quoted from the file.
fn secret_like_fields(lines: &[String]) -> Vec<String> {
    lines
        .iter()
        .flat_map(|l| l.split(','))
        .map(str::trim)
        .filter(|f| {
            let cleaned: Vec<char> = f.chars().filter(|c| !" =".contains(*c)).collect();
            cleaned.len() >= 8
                && cleaned
                    .iter()
                    .all(|c| c.is_ascii_uppercase() || ('2'..='7').contains(c))
        })
        .map(str::to_owned)
        .collect()
}

/// The line an error names, if it names one.
fn line_of(error: &ImportError) -> Option<usize> {
    match error {
        ImportError::Line { line, .. } => Some(*line),
        ImportError::File(_) => None,
    }
}

/// Whether the line would be read as a token line.
fn counts(line: &str) -> bool {
    let trimmed = line.trim();
    !trimmed.is_empty() && !trimmed.starts_with('#')
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    /// Tokens written in any accepted spelling, between blank and comment
    /// lines, come back as written, in order, with the defaults for the
    /// columns left out.
    #[test]
    fn accepted_csv_tokens_are_what_was_written(
        tokens in proptest::collection::vec(csv_tokens(), 0..8),
        filler in proptest::collection::vec(skipped_lines(), 8),
    ) {
        let mut text = String::new();
        for (token, skipped) in tokens.iter().zip(&filler) {
            text.push_str(&format!("{skipped}\n{}\n", token.line()));
        }
        let parsed = parse_csv(&text);
        prop_assert!(parsed.is_ok(), "{:?} refused: {:?}", text, parsed.err());
        let parsed = parsed.unwrap_or_default();
        prop_assert_eq!(parsed.len(), tokens.len());
        for (got, token) in parsed.iter().zip(&tokens) {
            prop_assert_eq!(&got.user, &token.user);
            prop_assert_eq!(got.secret.as_slice(), token.secret.as_slice());
            prop_assert_eq!(got.params, token.params());
            prop_assert_eq!(got.last_step, None);
        }
    }

    /// Any lines: each bad line is named, by its number, once; no good line
    /// is; and no message quotes a secret-like field of the file.
    #[test]
    fn csv_refusals_name_every_bad_line_and_quote_no_secret(lines in csv_lines()) {
        let text = lines.join("\n");
        let bad: Vec<usize> = lines
            .iter()
            .enumerate()
            .filter(|(_, line)| counts(line) && parse_csv_line(line.trim()).is_err())
            .map(|(n, _)| n + 1)
            .collect();
        match parse_csv(&text) {
            Ok(tokens) => {
                prop_assert!(bad.is_empty(), "bad lines {:?} accepted", bad);
                prop_assert_eq!(tokens.len(), lines.iter().filter(|l| counts(l)).count());
            }
            Err(errors) => {
                let named: Vec<Option<usize>> = errors.iter().map(line_of).collect();
                let expected: Vec<Option<usize>> = bad.iter().copied().map(Some).collect();
                prop_assert_eq!(named, expected);
                let secrets = secret_like_fields(&lines);
                for error in &errors {
                    let message = error.to_string();
                    prop_assert!(message.starts_with("line "), "{}", message);
                    for secret in &secrets {
                        prop_assert!(!message.contains(secret.as_str()), "{} quotes {}", message, secret);
                    }
                }
            }
        }
    }

    /// A google-authenticator TOTP file gives its secret, its step size
    /// (30 s unless `" STEP_SIZE` says otherwise) and the latest of the
    /// steps `" DISALLOW_REUSE` lists, whatever order its option lines and
    /// scratch codes come in.
    #[test]
    fn google_authenticator_files_give_secret_period_and_last_used_step(
        user in users(),
        secret in secrets(),
        period in proptest::option::of(15u64..=300),
        used in proptest::option::of(proptest::collection::vec(any::<u64>(), 0..5)),
        scratch in proptest::collection::vec(10_000_000u32..100_000_000, 0..5),
        order in any::<u64>(),
    ) {
        let mut options = vec!["\" TOTP_AUTH".to_owned(), "\" RATE_LIMIT 3 30".to_owned(), "\" WINDOW_SIZE 17".to_owned()];
        if let Some(period) = period {
            options.push(format!("\" STEP_SIZE {period}"));
        }
        if let Some(used) = &used {
            let steps: Vec<String> = used.iter().map(u64::to_string).collect();
            options.push(format!("\" DISALLOW_REUSE {}", steps.join(" ")).trim_end().to_owned());
        }
        // The options in an order of the case's own, the scratch codes last.
        let turn = usize::try_from(order % 7).unwrap_or(0) % options.len();
        options.rotate_left(turn);
        if order % 2 == 1 {
            options.reverse();
        }
        let mut text = format!("{}\n", base32(&secret).as_str());
        for line in options.into_iter().chain(scratch.iter().map(u32::to_string)) {
            text.push_str(&line);
            text.push('\n');
        }
        let token = parse_google_authenticator(&user, &text);
        prop_assert!(token.is_ok(), "{:?}: {:?}", text, token.err());
        let token = token.map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(&token.user, &user);
        prop_assert_eq!(token.secret.as_slice(), secret.as_slice());
        prop_assert_eq!(token.params, TokenParams { period: period.unwrap_or(30), ..DEFAULT });
        prop_assert_eq!(token.last_step, used.and_then(|u| u.into_iter().max()));
    }

    /// Any file: a token only from a file whose first line is a base32
    /// secret and that has a `" TOTP_AUTH` line; a refusal that names a
    /// line names an option line of the file; no refusal quotes the
    /// secret.
    #[test]
    fn google_authenticator_refusals_name_an_option_line_and_quote_no_secret(
        bytes in secrets(),
        first in prop_oneof![Just(None), "[^\n]{0,20}".prop_map(Some)],
        lines in proptest::collection::vec(
            prop_oneof![
                "\" (TOTP_AUTH|HOTP_COUNTER|STEP_SIZE|DISALLOW_REUSE|RATE_LIMIT)( [^\n]{0,12}){0,3}",
                "\" (STEP_SIZE|DISALLOW_REUSE)( -?[0-9]{1,22}){0,3}",
                "[^\n]{0,20}",
            ],
            0..8,
        ),
    ) {
        let secret_line = base32(&bytes).to_string();
        let first_line = first.unwrap_or_else(|| secret_line.clone());
        let text = std::iter::once(first_line.clone()).chain(lines.iter().cloned()).collect::<Vec<_>>().join("\n");
        match parse_google_authenticator("alice", &text) {
            Ok(token) => {
                prop_assert_eq!(Some(token.secret.to_vec()), secret(first_line.trim()).map(|s| s.to_vec()));
                prop_assert!(lines.iter().any(|l| l.strip_prefix("\" ").is_some_and(|o| o.split_whitespace().next() == Some("TOTP_AUTH"))));
            }
            Err(error) => {
                if let Some(line) = line_of(&error) {
                    let named = text.lines().nth(line.saturating_sub(1));
                    prop_assert!(line >= 2 && named.is_some_and(|l| l.starts_with("\" ")), "{}: {:?}", error, named);
                }
                let message = error.to_string();
                prop_assert!(!message.contains(&secret_line), "{}", message);
                prop_assert!(!message.contains(&first_line) || first_line.chars().count() < 8, "{} quotes the first line", message);
            }
        }
    }
}
